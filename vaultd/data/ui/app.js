/* vaultd's page: logs in with the token in its URL's fragment, then shows what
 * the JSON API says.
 *
 * Rules this file keeps, because the data comes from local clients and may
 * hold anything (a credential named <script>...):
 * - every value reaches the page as text: textContent, createTextNode,
 *   setAttribute on data-, aria- and class attributes; never a property or
 *   call that parses markup, and never a URL or a style from data;
 * - the token lives in sessionStorage (this origin, this tab) and in the
 *   Authorization header of the API calls, nowhere else: no cookie, no URL,
 *   no log line.
 */
(function () {
  "use strict";

  const TOKEN_KEY = "vaultd-token";
  // The first characters of a token, as the API shows them (key_prefix).
  const KEY_PREFIX_LEN = 12;
  const DAY = 86400;
  const VIEWS = ["overview", "credentials", "sessions", "usage", "audit"];
  const AUDIT_STEP = 200;
  const AUDIT_MAX = 1000;
  // A daily limit this much used is worth a look (the overview's "needs attention").
  const NEAR_CAP = 0.8;
  const EXPIRY_WARNING_DAYS = 14;
  // [limit's name, the use it bounds, the word for it]
  const SESSION_LIMITS = [
    ["max_requests", "requests", "requests"],
    ["max_tokens", "tokens", "tokens"],
    ["max_cost_usd", "cost_usd", "spend"],
  ];
  const DAILY_LIMITS = [
    ["max_requests_per_day", "requests", "requests"],
    ["max_tokens_per_day", "tokens", "tokens"],
    ["max_cost_usd_per_day", "cost_usd", "spend"],
  ];
  // The numbers of a GET /api/usage group.
  const USAGE_FIELDS = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "unmetered_requests",
    "unpriced_requests",
  ];
  const USAGE_NONE = {
    session: "(no session)",
    credential: "(no credential)",
    model: "(no model: unmetered)",
    service: "(none)",
  };
  const DASH = "\u2014";

  let auditLimit = AUDIT_STEP;
  // Each render gets a number; a slower, older one does not draw over a newer one.
  let renderCount = 0;

  class LoginNeeded extends Error {}

  // -- the token ------------------------------------------------------------

  /* #token=... from `vaultd ui`: kept in sessionStorage, then taken out of the
   * address bar and the history entry, so it is not in a bookmark, a shared
   * screen or the history. */
  function takeToken() {
    const hash = window.location.hash;
    if (!hash.startsWith("#token=")) return;
    const value = hash.slice("#token=".length);
    if (/^[A-Za-z0-9_-]{1,200}$/.test(value)) {
      sessionStorage.setItem(TOKEN_KEY, value);
    }
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  // -- the API --------------------------------------------------------------

  async function api(path, params, method) {
    const held = token();
    if (!held) throw new LoginNeeded("none");
    const query = new URLSearchParams();
    Object.entries(params || {}).forEach(([key, value]) => {
      if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
    });
    const url = query.toString() ? path + "?" + query.toString() : path;
    let response;
    try {
      response = await fetch(url, {
        method: method || "GET",
        headers: { Authorization: "Bearer " + held, Accept: "application/json" },
        credentials: "omit",
        cache: "no-store",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
    } catch (error) {
      throw new Error("the daemon did not answer: is vaultd serve running?");
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw new LoginNeeded("expired");
    }
    if (!response.ok) {
      let detail = "";
      try {
        detail = (await response.json()).detail || "";
      } catch (error) {
        detail = "";
      }
      throw new Error("the daemon answered " + response.status + (detail ? ": " + detail : ""));
    }
    return response.status === 204 ? null : response.json();
  }

  // -- building the page, as text only -------------------------------------

  /* An element; `attrs` may set class, data-*, aria-*, scope, type and the
   * like (never an event handler, a URL or a style); children are nodes or
   * strings, and strings become text nodes. */
  function el(tag, attrs, children) {
    const element = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (/^(on|href|src|style|action|formaction)/i.test(key)) {
        throw new Error("el() does not set " + key);
      }
      if (value !== undefined && value !== null) element.setAttribute(key, String(value));
    });
    (children || []).forEach((child) => {
      if (child === null || child === undefined) return;
      element.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return element;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function setValue(id, text, value) {
    const element = byId(id);
    element.textContent = text;
    element.setAttribute("data-value", String(value));
  }

  function fillRows(table, rows, emptyText, columns) {
    const body = table.querySelector("tbody");
    if (rows.length) {
      body.replaceChildren(...rows);
    } else {
      const cell = el("td", { colspan: columns, class: "empty" }, [emptyText]);
      body.replaceChildren(el("tr", {}, [cell]));
    }
  }

  function numberCell(text, value) {
    return el("td", { class: "num", "data-value": value }, [text]);
  }

  function lineList(lines) {
    return el("div", { class: "lines" }, lines.map((line) => el("div", {}, [line])));
  }

  // -- formatting -----------------------------------------------------------

  const integer = new Intl.NumberFormat("en-US");

  function fmtInt(n) {
    return integer.format(n);
  }

  // Cents for dollars; down to a millionth (the API's precision) below a cent.
  function fmtUSD(x) {
    const digits = x === 0 || x >= 1 ? 2 : x >= 0.01 ? 4 : 6;
    const shown = { minimumFractionDigits: 2, maximumFractionDigits: digits };
    return "$" + x.toLocaleString("en-US", shown);
  }

  // An axis's label: as many decimals as its step needs ($0.50, $0.005), two at least.
  function fmtUSDTick(value, step) {
    const digits = Math.max(2, Math.min(8, -Math.floor(Math.log10(step))));
    return "$" + value.toFixed(digits);
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // Local time, to the second.
  function fmtTime(seconds) {
    const d = new Date(seconds * 1000);
    const day = [d.getFullYear(), pad(d.getMonth() + 1), pad(d.getDate())].join("-");
    return day + " " + [pad(d.getHours()), pad(d.getMinutes()), pad(d.getSeconds())].join(":");
  }

  function fmtSpan(seconds) {
    if (seconds < 90) return Math.max(1, Math.round(seconds)) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 2 * DAY) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / DAY) + " d";
  }

  function nowSeconds() {
    return Math.floor(Date.now() / 1000);
  }

  function fmtAgo(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    return fmtSpan(Math.max(0, nowSeconds() - seconds)) + " ago";
  }

  function fmtExpiry(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const left = seconds - nowSeconds();
    return left > 0 ? "in " + fmtSpan(left) : "expired " + fmtSpan(-left) + " ago";
  }

  function startOfUtcDay(seconds) {
    return Math.floor(seconds / DAY) * DAY;
  }

  function utcDate(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 10);
  }

  // -- names for ids --------------------------------------------------------

  function credentialNames(credentials) {
    return new Map(credentials.map((c) => [c.id, c.service + "/" + c.name]));
  }

  function sessionNames(sessions) {
    return new Map(sessions.map((s) => [s.id, s.name]));
  }

  // A group's or a row's name: its id's name, or the id itself once the record is gone.
  function nameOf(names, id, none) {
    if (id === null || id === undefined) return none;
    return names.has(id) ? names.get(id) : id.slice(0, 8) + "\u2026 (gone)";
  }

  function byKey(groups) {
    return new Map(groups.map((g) => [g.key, g]));
  }

  function zeroGroup(key) {
    const group = { key: key };
    USAGE_FIELDS.forEach((field) => {
      group[field] = 0;
    });
    return group;
  }

  // -- what is used against which limit -------------------------------------

  function usedOf(group) {
    const g = group || zeroGroup(null);
    return { requests: g.requests, tokens: g.input_tokens + g.output_tokens, cost_usd: g.cost_usd };
  }

  function fmtAmount(kind, value) {
    return kind === "cost_usd" ? fmtUSD(value) : fmtInt(value);
  }

  /* Lines such as "12 / 100 requests" for each limit set, the plain use where
   * none is, and the largest share of a limit used (0 to 1 and over). */
  function againstLimits(limits, used, table) {
    const lines = [];
    let worst = 0;
    table.forEach(([name, kind, word]) => {
      const max = limits ? limits[name] : null;
      const value = used[kind];
      if (max !== null && max !== undefined) {
        worst = Math.max(worst, value / max);
        lines.push(fmtAmount(kind, value) + " / " + fmtAmount(kind, max) + " " + word);
      } else {
        lines.push(fmtAmount(kind, value) + " " + word);
      }
    });
    return { lines: lines, worst: worst };
  }

  // -- the views: each loads what it needs, then returns how to draw it -----

  async function overview() {
    const today = startOfUtcDay(nowSeconds());
    const first = today - 29 * DAY;
    const [days, todayByCredential, credentials] = await Promise.all([
      api("/api/usage", { by: "day", since: first }),
      api("/api/usage", { by: "credential", since: today }),
      api("/api/credentials"),
    ]);
    return () => {
      const found = byKey(days);
      const series = [];
      for (let i = 0; i < 30; i++) {
        const key = utcDate(first + i * DAY);
        series.push(found.get(key) || zeroGroup(key));
      }
      const now = series[series.length - 1];
      setValue("today-requests", fmtInt(now.requests), now.requests);
      setValue("today-cost", fmtUSD(now.cost_usd), now.cost_usd);
      setValue(
        "today-tokens",
        fmtInt(now.input_tokens) + " / " + fmtInt(now.output_tokens),
        now.input_tokens + "/" + now.output_tokens
      );
      setValue("today-unmetered", fmtInt(now.unmetered_requests), now.unmetered_requests);
      const point = (g, value, text) => ({
        key: g.key,
        label: g.key.slice(5),
        value: value,
        title: g.key + ": " + text,
      });
      window.VaultdChart.columns(
        byId("chart-cost"),
        series.map((g) => point(g, g.cost_usd, fmtUSD(g.cost_usd))),
        {
          label: "Spend per day over the last 30 days",
          tickFormat: fmtUSDTick,
          tickEvery: 5,
          emptyText: "No spend in the last 30 days.",
        }
      );
      window.VaultdChart.columns(
        byId("chart-requests"),
        series.map((g) => point(g, g.requests, fmtInt(g.requests) + " requests")),
        {
          label: "Requests per day over the last 30 days",
          tickFormat: fmtInt,
          integer: true,
          tickEvery: 5,
          emptyText: "No requests in the last 30 days.",
        }
      );
      const rows = series
        .slice()
        .reverse()
        .map((g) =>
          el("tr", { "data-key": g.key }, [
            el("th", { scope: "row" }, [g.key]),
            numberCell(fmtInt(g.requests), g.requests),
            numberCell(fmtInt(g.input_tokens), g.input_tokens),
            numberCell(fmtInt(g.output_tokens), g.output_tokens),
            numberCell(fmtUSD(g.cost_usd), g.cost_usd),
          ])
        );
      fillRows(byId("days-table"), rows, "", 5);
      drawAttention(credentials, byKey(todayByCredential));
    };
  }

  function attentionReasons(credential, todayUse) {
    const reasons = [];
    const use = againstLimits(credential.limits, usedOf(todayUse), DAILY_LIMITS);
    if (credential.limits && use.worst >= NEAR_CAP) {
      reasons.push(Math.round(use.worst * 100) + "% of a daily limit used today");
    }
    const expires = credential.expires_at;
    if (expires !== null && expires !== undefined) {
      if (expires <= nowSeconds()) reasons.push("expired " + fmtAgo(expires));
      else if (expires - nowSeconds() < EXPIRY_WARNING_DAYS * DAY) {
        reasons.push("expires " + fmtExpiry(expires));
      }
    }
    return reasons;
  }

  function drawAttention(credentials, todayUse) {
    const rows = [];
    credentials.forEach((c) => {
      const reasons = attentionReasons(c, todayUse.get(c.id));
      if (reasons.length) {
        rows.push(
          el("tr", { "data-id": c.id }, [
            el("th", { scope: "row" }, [c.service + "/" + c.name]),
            el("td", {}, [reasons.join("; ")]),
          ])
        );
      }
    });
    const none = "Nothing: every credential is well within its limits and dates.";
    fillRows(byId("attention-table"), rows, none, 2);
  }

  async function credentials() {
    const today = startOfUtcDay(nowSeconds());
    const [list, todayByCredential] = await Promise.all([
      api("/api/credentials"),
      api("/api/usage", { by: "credential", since: today }),
    ]);
    return () => {
      const todayUse = byKey(todayByCredential);
      const rows = list.map((c) => {
        const used = usedOf(todayUse.get(c.id));
        const use = againstLimits(c.limits, used, DAILY_LIMITS);
        const metadata = Object.entries(c.metadata || {}).map(([k, v]) => k + " = " + v);
        const name = [c.name];
        if (c.is_default) name.push(el("span", { class: "tag" }, ["default"]));
        if (c.source && c.source !== "local") {
          name.push(el("span", { class: "tag" }, ["from " + c.source]));
        }
        return el("tr", { "data-id": c.id, class: use.worst >= NEAR_CAP ? "warn" : null }, [
          el("td", {}, [c.service]),
          el("th", { scope: "row", class: "name" }, name),
          el("td", {}, [c.type || ""]),
          el("td", {}, [el("code", {}, [c.hint || DASH])]),
          el("td", { class: "meta" }, [metadata.length ? lineList(metadata) : DASH]),
          el("td", {}, [fmtAgo(c.last_used_at)]),
          numberCell(fmtInt(c.use_count || 0), c.use_count || 0),
          el("td", {}, [fmtExpiry(c.expires_at)]),
          el("td", { class: "today", "data-requests": used.requests }, [lineList(use.lines)]),
        ]);
      });
      fillRows(byId("credentials-table"), rows, "No credentials yet: vaultd add SERVICE NAME.", 9);
    };
  }

  function policyLines(policy) {
    if (!policy) return ["none"];
    const lines = [];
    ["allow", "deny", "models"].forEach((key) => {
      if (policy[key] && policy[key].length) lines.push(key + " " + policy[key].join(", "));
    });
    if (policy.credential) lines.push("credential " + policy.credential);
    return lines.length ? lines : ["none"];
  }

  function sessionRow(s, own) {
    const used = s.used || { requests: 0, tokens: 0, cost_usd: 0 };
    const use = againstLimits(s.limits, used, SESSION_LIMITS);
    const limits = s.limits || {};
    if (limits.rpm) use.lines.push("at most " + fmtInt(limits.rpm) + " a minute");
    if (limits.concurrency) use.lines.push("at most " + fmtInt(limits.concurrency) + " at once");
    const name = [s.name, el("div", { class: "sub" }, [el("code", {}, [s.key_prefix + "\u2026"])])];
    if (own) name.push(el("span", { class: "tag" }, ["this page"]));
    let action = null;
    if (s.status === "active") {
      action = el(
        "button",
        { type: "button", class: "danger", "data-revoke": s.id, "aria-label": "Revoke " + s.name },
        ["Revoke"]
      );
      action.addEventListener("click", () => revoke(s, own, action));
    }
    return el("tr", { "data-id": s.id, class: s.status === "active" ? null : "ended" }, [
      el("th", { scope: "row", class: "name" }, name),
      el("td", {}, [el("span", { class: "status status-" + s.status }, [s.status])]),
      el("td", {}, [lineList([s.scopes.join(", "), "services: " + s.services.join(", ")])]),
      el("td", {}, [fmtAgo(s.last_used_at)]),
      el("td", {}, [fmtExpiry(s.expires_at)]),
      el("td", { "data-requests": used.requests }, [lineList(use.lines)]),
      el("td", { class: "policy" }, [lineList(policyLines(s.policy))]),
      el("td", {}, [action]),
    ]);
  }

  async function sessions() {
    const list = await api("/api/sessions");
    return () => {
      const mine = (token() || "").slice(0, KEY_PREFIX_LEN);
      const rank = { active: 0, expired: 1, revoked: 2 };
      const sorted = list
        .slice()
        .sort((a, b) => rank[a.status] - rank[b.status] || b.created_at - a.created_at);
      const rows = sorted.map((s) => sessionRow(s, s.key_prefix === mine));
      fillRows(byId("sessions-table"), rows, "No sessions.", 8);
    };
  }

  async function revoke(session, own, button) {
    const question = own
      ? "Revoke the session this page uses? The page will then need vaultd ui again."
      : "Revoke the session \u201c" + session.name + "\u201d? Its next request will be refused.";
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      await api("/api/sessions/" + encodeURIComponent(session.id), null, "DELETE");
      if (own) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin("You revoked this page's own session.");
        return;
      }
      await render();
    } catch (error) {
      button.disabled = false;
      failed(error);
    }
  }

  function periodSince(period) {
    const now = nowSeconds();
    if (period === "today") return startOfUtcDay(now);
    if (period === "7d") return now - 7 * DAY;
    if (period === "30d") return now - 30 * DAY;
    return null;
  }

  async function usage() {
    const by = byId("usage-by").value;
    const since = periodSince(byId("usage-period").value);
    const [groups, sessionList, credentialList] = await Promise.all([
      api("/api/usage", { by: by, since: since }),
      by === "session" ? api("/api/sessions") : [],
      by === "credential" ? api("/api/credentials") : [],
    ]);
    return () => {
      const names = by === "session" ? sessionNames(sessionList) : credentialNames(credentialList);
      const label = (key) => {
        if (by === "session" || by === "credential") return nameOf(names, key, USAGE_NONE[by]);
        return key === null ? USAGE_NONE[by] : key;
      };
      byId("usage-key-header").textContent = by.charAt(0).toUpperCase() + by.slice(1);
      // Spend when there is any; requests otherwise (a service that is not metered).
      const byCost = groups.some((g) => g.cost_usd > 0);
      const what = (byCost ? "Spend" : "Requests") + " by " + by;
      byId("usage-chart-title").textContent = what;
      const measure = (g) => (byCost ? g.cost_usd : g.requests);
      const top = groups
        .slice()
        .sort((a, b) => measure(b) - measure(a))
        .slice(0, 12);
      window.VaultdChart.bars(
        byId("chart-usage"),
        top.map((g) => {
          const text = byCost ? fmtUSD(g.cost_usd) : fmtInt(g.requests) + " requests";
          const key = g.key === null ? "" : g.key;
          const name = label(g.key);
          return { key: key, label: name, value: measure(g), title: name + ": " + text };
        }),
        { label: what, format: byCost ? fmtUSD : fmtInt, emptyText: "No use in this period." }
      );
      const cells = (g) =>
        USAGE_FIELDS.map((field) => {
          const text = field === "cost_usd" ? fmtUSD(g[field]) : fmtInt(g[field]);
          return numberCell(text, g[field]);
        });
      const total = zeroGroup(null);
      const rows = groups.map((g) => {
        USAGE_FIELDS.forEach((field) => {
          total[field] += g[field];
        });
        const head = el("th", { scope: "row" }, [label(g.key)]);
        return el("tr", { "data-key": g.key === null ? "" : g.key }, [head, ...cells(g)]);
      });
      fillRows(byId("usage-table"), rows, "No use in this period.", 8);
      const foot = byId("usage-table").querySelector("tfoot");
      if (groups.length) {
        const head = el("th", { scope: "row" }, ["Total"]);
        foot.replaceChildren(el("tr", {}, [head, ...cells(total)]));
      } else {
        foot.replaceChildren();
      }
    };
  }

  function fillSelect(select, options) {
    const chosen = select.value;
    select.replaceChildren(select.options[0]);
    options.forEach(([value, text]) => select.appendChild(el("option", { value: value }, [text])));
    select.value = options.some(([value]) => value === chosen) ? chosen : "";
  }

  function auditRow(e, sessions, credentials) {
    const status = [String(e.status)];
    if (e.refusal !== null && e.refusal !== undefined) {
      status.push(el("span", { class: "tag refused-tag" }, ["refused: " + e.refusal]));
    }
    const metered = e.input_tokens !== null && e.input_tokens !== undefined;
    const priced = e.cost_usd !== null && e.cost_usd !== undefined;
    return el("tr", { "data-id": e.id, class: e.refusal ? "refused" : null }, [
      el("td", { class: "nowrap" }, [fmtTime(e.at)]),
      el("td", {}, [e.service]),
      el("td", {}, [nameOf(sessions, e.session_id, DASH)]),
      el("td", {}, [nameOf(credentials, e.credential_id, DASH)]),
      el("td", { class: "path" }, [el("code", {}, [e.method + " " + e.path])]),
      el("td", { class: "num", "data-value": e.status }, status),
      el("td", {}, [e.model || DASH]),
      numberCell(
        metered ? fmtInt(e.input_tokens) + " / " + fmtInt(e.output_tokens) : DASH,
        metered ? e.input_tokens + "/" + e.output_tokens : ""
      ),
      numberCell(priced ? fmtUSD(e.cost_usd) : DASH, priced ? e.cost_usd : ""),
      numberCell(Math.round(e.duration_ms) + " ms", e.duration_ms),
    ]);
  }

  async function audit() {
    const status = byId("audit-status").value;
    const query = {
      service: byId("audit-service").value,
      session_id: byId("audit-session").value,
      status: status === "refused" ? "" : status,
      refused: status === "refused" ? "true" : "",
      since: byId("audit-since").value,
      limit: auditLimit,
    };
    const [entries, services, sessionList, credentialList] = await Promise.all([
      api("/api/audit", query),
      api("/api/services"),
      api("/api/sessions"),
      api("/api/credentials"),
    ]);
    return () => {
      fillSelect(
        byId("audit-service"),
        services.map((s) => [s.name, s.name])
      );
      fillSelect(
        byId("audit-session"),
        sessionList.map((s) => [s.id, s.name + " (" + s.key_prefix + "\u2026, " + s.status + ")"])
      );
      const sessionsById = sessionNames(sessionList);
      const credentialsById = credentialNames(credentialList);
      const rows = entries.map((e) => auditRow(e, sessionsById, credentialsById));
      fillRows(byId("audit-table"), rows, "No requests match.", 10);
      const more = entries.length >= auditLimit && auditLimit < AUDIT_MAX;
      byId("audit-count").textContent =
        fmtInt(entries.length) +
        (entries.length === 1 ? " request" : " requests") +
        (more ? ", newest first; more are kept" : ", newest first");
      byId("audit-more").hidden = !more;
    };
  }

  const LOADERS = { overview, credentials, sessions, usage, audit };

  // -- showing a view, the login, an error ----------------------------------

  function currentView() {
    const name = window.location.hash.slice(1);
    return VIEWS.includes(name) ? name : "overview";
  }

  function showOnly(id) {
    document.querySelectorAll(".view").forEach((section) => {
      section.hidden = section.id !== id;
    });
  }

  function showLogin(reason) {
    showOnly("login");
    byId("login-reason").textContent = reason;
    document.body.setAttribute("data-state", "login");
  }

  function failed(error) {
    if (error instanceof LoginNeeded) {
      showLogin(
        error.message === "expired"
          ? "This page's session has expired or was revoked: run vaultd ui again."
          : "This page has no session yet."
      );
      return;
    }
    const notice = byId("notice");
    notice.textContent = "Could not load this view: " + error.message;
    notice.hidden = false;
    document.body.setAttribute("data-state", "error");
  }

  async function render() {
    const mine = ++renderCount;
    const view = currentView();
    byId("notice").hidden = true;
    document.body.setAttribute("data-state", "loading");
    document.body.setAttribute("data-view", view);
    document.querySelectorAll("[data-nav]").forEach((link) => {
      if (link.getAttribute("data-nav") === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    });
    try {
      const draw = await LOADERS[view]();
      if (mine !== renderCount) return;
      showOnly("view-" + view);
      draw();
      document.body.setAttribute("data-state", "ready");
    } catch (error) {
      if (mine === renderCount) failed(error);
    }
  }

  takeToken();
  window.addEventListener("hashchange", render);
  byId("refresh").addEventListener("click", render);
  ["usage-by", "usage-period"].forEach((id) => byId(id).addEventListener("change", render));
  ["audit-service", "audit-session", "audit-status", "audit-since"].forEach((id) => {
    byId(id).addEventListener("change", () => {
      auditLimit = AUDIT_STEP;
      render();
    });
  });
  byId("audit-more").addEventListener("click", () => {
    auditLimit = Math.min(auditLimit + AUDIT_STEP, AUDIT_MAX);
    render();
  });
  // Forms never submit: there is nothing to send them to (CSP form-action 'none').
  document.querySelectorAll("form").forEach((form) => {
    form.addEventListener("submit", (event) => event.preventDefault());
  });
  render();
})();
