"""`vaultd run` as a real process against vaultd, and the audit trail it leaves."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time

from click.testing import CliRunner

from tests.support.daemon import run_vaultd
from tests.support.upstream import ANTHROPIC_KEY, OPENAI_KEY, Proxy
from vaultd.cli.main import cli
from vaultd.proxy.routes import USAGE
from vaultd.services import BUILTINS

CHILD = """
import json, os, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(
    os.environ["OPENAI_BASE_URL"] + "/models",
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]},
)
with opener.open(req, timeout=10) as reply:
    body = json.loads(reply.read())
print(json.dumps({
    "status": reply.status,
    "path": body["path_qs"],
    "key_prefix": os.environ["OPENAI_API_KEY"][:8],
    "anthropic": os.environ.get("ANTHROPIC_API_KEY"),
    "env_has_real_key": any(k in v for v in os.environ.values() for k in KEYS),
}))
sys.exit(7)
""".replace("KEYS", repr((OPENAI_KEY, ANTHROPIC_KEY)))


# Keys in the environment running the tests would be taken out of the
# command's, and named on stderr: these tests start from none.
TOKEN_VARS = {s.env_key for s in BUILTINS.values() if s.env_key}


def env_for(proxy: Proxy) -> dict[str, str]:
    assert proxy.config.config_file is not None
    return {
        **{k: v for k, v in os.environ.items() if k not in TOKEN_VARS},
        "VAULTD_CONFIG": str(proxy.config.config_file),
        "VAULTD_URL": proxy.url("/").rstrip("/"),
    }


async def test_run_sets_env_proxies_and_revokes(proxy: Proxy) -> None:
    code, out, err = await run_vaultd(
        env_for(proxy), "run", "--service", "openai", "--", sys.executable, "-c", CHILD
    )
    assert code == 7, err  # the command's own exit status
    report = json.loads(out)
    assert report == {
        "status": 200,
        "path": "/v1/models",
        "key_prefix": "fn_sess_",
        "anthropic": None,  # only the services asked for
        "env_has_real_key": False,
    }
    assert proxy.upstream.seen[-1].headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    conn = sqlite3.connect(proxy.config.db_path)
    rows = conn.execute(
        "SELECT scopes, services, revoked_at FROM sessions WHERE name LIKE 'run:%'"
    ).fetchall()
    conn.close()
    assert len(rows) == 1
    scopes, services, revoked_at = rows[0]
    assert json.loads(scopes) == ["proxy"] and json.loads(services) == ["openai"]
    assert revoked_at is not None
    assert OPENAI_KEY not in out + err


async def test_run_warns_where_a_tool_cannot_be_pointed_at_the_proxy(proxy: Proxy) -> None:
    code, out, err = await run_vaultd(
        env_for(proxy),
        "run",
        *("--service", "openai", "--service", "github"),
        "--",
        *(sys.executable, "-c", "import os; print(os.environ['GITHUB_TOKEN'][:8])"),
    )
    assert code == 0, err
    assert out.strip() == "fn_sess_"
    assert "github has no base-URL variable" in err and "/proxy/github" in err
    assert "openai has no" not in err
    # Not asked for by name: not set at all.
    code, out, err = await run_vaultd(
        env_for(proxy),
        "run",
        "--",
        *(sys.executable, "-c", "import os; print(os.environ.get('GITHUB_TOKEN'))"),
    )
    assert (code, out.strip(), err) == (0, "None", "")


async def test_run_without_daemon_is_one_line(proxy: Proxy, unused_tcp_port: int) -> None:
    env = {**env_for(proxy), "VAULTD_URL": f"http://127.0.0.1:{unused_tcp_port}"}
    code, out, err = await run_vaultd(env, "run", "--", sys.executable, "-c", "print('ran')")
    assert code == 1
    assert "ran" not in out
    assert err.count("\n") == 1 and "not reachable" in err and "vaultd serve" in err


async def test_run_unknown_command_is_one_line(proxy: Proxy) -> None:
    code, _out, err = await run_vaultd(env_for(proxy), "run", "--", "no-such-program-xyz")
    assert code == 127  # as a shell exits (issue 17, item 11)
    assert err.strip() == "Error: command not found: no-such-program-xyz"


async def test_audit_lists_proxied_requests(proxy: Proxy) -> None:
    for path in ("/proxy/openai/v1/models?secret=1", "/proxy/github/user"):
        resp = await proxy.client.get(path, headers=proxy.auth())
        assert resp.status == 200
    # Refused before any session is known: not audited (so no local process
    # without a token can push real rows out), only logged as a failed request.
    resp = await proxy.client.get("/proxy/openai/x", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    no_proxy = proxy.mint(name="reader", scopes=["read"])
    resp = await proxy.client.get("/proxy/openai/x", headers=proxy.auth(no_proxy))
    assert resp.status == 403

    runner = CliRunner()
    config = str(proxy.config.config_file)
    deadline = time.monotonic() + 5
    entries: list[dict[str, object]] = []
    while len(entries) < 3:
        assert time.monotonic() < deadline, "audit rows were not flushed in time"
        await asyncio.sleep(0.1)
        result = await asyncio.to_thread(
            runner.invoke, cli, ["--config", config, "audit", "--json"]
        )
        assert result.exit_code == 0, result.output
        entries = json.loads(result.stdout)
    newest, middle, oldest = entries
    assert (oldest["service"], oldest["path"], oldest["status"]) == ("openai", "/v1/models", 200)
    assert oldest["credential_id"] == proxy.keys["openai/primary"]
    assert (middle["service"], middle["path"]) == ("github", "/user")
    # The refusal of a valid session is audited, with that session.
    assert newest["status"] == 403 and newest["session_id"] not in (None, oldest["session_id"])
    assert 401 not in [e["status"] for e in entries]
    only = json.loads(
        runner.invoke(cli, ["--config", config, "audit", "--service", "github", "--json"]).stdout
    )
    assert [e["service"] for e in only] == ["github"]
    table = runner.invoke(cli, ["--config", config, "audit", "--since", "1h"]).stdout
    assert "openai/primary" in table and "/v1/models" in table
    assert "secret=1" not in table + json.dumps(entries)


async def test_audit_api_filters_and_refuses_bad_params(proxy: Proxy) -> None:
    await proxy.client.get("/proxy/openai/a", headers=proxy.auth())
    await proxy.client.get("/proxy/github/b", headers=proxy.auth())
    await proxy.client.app[USAGE].flush()
    resp = await proxy.client.get("/api/audit", headers=proxy.auth())
    assert resp.status == 200
    rows = await resp.json()
    assert [(r["service"], r["path"]) for r in rows] == [("github", "/b"), ("openai", "/a")]
    resp = await proxy.client.get(
        "/api/audit",
        params={
            "service": "openai",
            "since": "1h",
            "limit": "1",
            "credential_id": proxy.keys["openai/primary"],
        },
        headers=proxy.auth(),
    )
    assert [r["path"] for r in await resp.json()] == ["/a"]
    for params in (
        {"limit": "0"},
        {"limit": "1001"},
        {"since": "soon"},
        {"since": "999999999999w" * 16},
        {"credential_id": "x"},
        {"service": "Bad Name"},
        {"bogus": "1"},
    ):
        resp = await proxy.client.get("/api/audit", params=params, headers=proxy.auth())
        assert resp.status == 422, params
        assert resp.content_type == "application/problem+json"
    assert (await proxy.client.get("/api/audit")).status == 401
    proxy_only = proxy.mint(scopes=["proxy"])
    assert (await proxy.client.get("/api/audit", headers=proxy.auth(proxy_only))).status == 403
