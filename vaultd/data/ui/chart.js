/* vaultd's charts: plain SVG built with DOM calls, no library.
 *
 * Two shapes cover what the page draws: columns over days (spend, requests)
 * and horizontal bars over named groups (a session, a credential, a model).
 * A maintained charting library would be many times this size for the same
 * two pictures, and more code to trust next to the user's keys. Every label
 * is set with textContent, never parsed as markup: names come from local
 * clients and may hold anything.
 */
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 720;

  function node(name, attrs, text) {
    const element = document.createElementNS(SVG, name);
    Object.entries(attrs).forEach(([key, value]) => element.setAttribute(key, String(value)));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function titled(element, title) {
    // A <title> child: the browser's tooltip, and the name screen readers read.
    element.appendChild(node("title", {}, title));
    return element;
  }

  function chart(height, label) {
    return node("svg", {
      viewBox: "0 0 " + WIDTH + " " + height,
      role: "img",
      class: "chart",
      "aria-label": label,
    });
  }

  // A round step for about `parts` grid lines up to `max`: 1, 2 or 5 times a power of ten.
  function niceStep(max, parts) {
    const raw = max / parts;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].find((m) => m * power >= raw) * power;
  }

  function clip(text, length) {
    return text.length > length ? text.slice(0, length - 1) + "\u2026" : text;
  }

  function empty(target, message) {
    const p = document.createElement("p");
    p.className = "chart-empty";
    p.textContent = message;
    target.replaceChildren(p);
  }

  function largest(points) {
    return points.reduce((max, p) => Math.max(max, p.value), 0);
  }

  /* Columns: one per point ({key, label, value, title}), over a value axis.
   * options: {label: the chart's accessible name, tickFormat: (value, step) ->
   * text for the axis, integer: whole steps only, tickEvery: label every nth
   * column, emptyText}. */
  function columns(target, points, options) {
    const height = 220;
    const left = 64;
    const top = 10;
    const plotWidth = WIDTH - left - 8;
    const plotHeight = height - top - 24;
    const max = largest(points);
    if (!(max > 0)) {
      empty(target, options.emptyText);
      return;
    }
    // Counts step by whole numbers: no "0.5 requests" on the axis.
    const step = options.integer ? Math.max(1, niceStep(max, 4)) : niceStep(max, 4);
    const ceiling = Math.ceil(max / step) * step;
    const svg = chart(height, options.label);
    // Counted in steps, not summed: adding 0.1 ten times is not 1.
    for (let n = 0; n * step <= ceiling + step / 2; n++) {
      const y = top + plotHeight - ((n * step) / ceiling) * plotHeight;
      svg.appendChild(node("line", { x1: left, x2: WIDTH - 8, y1: y, y2: y, class: "grid" }));
      const attrs = { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" };
      svg.appendChild(node("text", attrs, options.tickFormat(n * step, step)));
    }
    const slot = plotWidth / points.length;
    const every = options.tickEvery || 1;
    points.forEach((point, i) => {
      const h = (point.value / ceiling) * plotHeight;
      const x = left + i * slot + slot * 0.15;
      const bar = node("rect", {
        x: x.toFixed(1),
        y: (top + plotHeight - h).toFixed(1),
        width: (slot * 0.7).toFixed(1),
        // At least a pixel for anything at all: a small day is not an empty one.
        height: Math.max(h, point.value > 0 ? 1 : 0).toFixed(1),
        class: "bar",
        "data-key": point.key,
        "data-value": point.value,
      });
      svg.appendChild(titled(bar, point.title));
      if (i % every === 0 || i === points.length - 1) {
        const attrs = { x: (x + slot * 0.35).toFixed(1), y: height - 6, class: "axis" };
        svg.appendChild(node("text", { ...attrs, "text-anchor": "middle" }, point.label));
      }
    });
    target.replaceChildren(svg);
  }

  /* Horizontal bars: one per item ({key, label, value, title}), in the order
   * given. options: {label, format: value -> text, emptyText}. */
  function bars(target, items, options) {
    const row = 26;
    const labelWidth = 230;
    const plotWidth = WIDTH - labelWidth - 96;
    const max = largest(items);
    if (!(max > 0)) {
      empty(target, options.emptyText);
      return;
    }
    const svg = chart(items.length * row + 4, options.label);
    items.forEach((item, i) => {
      const y = i * row + 2;
      const w = Math.max((item.value / max) * plotWidth, item.value > 0 ? 1 : 0);
      const group = node("g", { "data-key": item.key, "data-value": item.value });
      titled(group, item.title);
      const label = { x: labelWidth - 8, y: y + 17, class: "label", "text-anchor": "end" };
      group.appendChild(node("text", label, clip(item.label, 30)));
      const bar = { x: labelWidth, y: y + 4, width: w.toFixed(1), height: row - 8, class: "bar" };
      group.appendChild(node("rect", bar));
      const value = { x: (labelWidth + w + 6).toFixed(1), y: y + 17, class: "value" };
      group.appendChild(node("text", value, options.format(item.value)));
      svg.appendChild(group);
    });
    target.replaceChildren(svg);
  }

  window.VaultdChart = { columns, bars };
})();
