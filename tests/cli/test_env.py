"""`vaultd env` (DESIGN 14): `eval "$(vaultd env --service openai)"` in a real bash, then
the official openai SDK in that shell reaches the fake upstream through a real daemon."""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv, run_process, stop, vaultd_argv
from tests.support.providers import Call, provider_app

KEY = "sk-proj-ENVenvENVenvENVenv000042"
# What a user's shell profile may hold: real keys, one of another service.
PARENT_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-PARENTparentPARENT0001",
    "OPENAI_API_KEY": "sk-proj-PARENTparentPARENT0003",
}
SDK_SCRIPT = """
import json, os, openai
client = openai.OpenAI()
answer = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
)
client.close()
print(json.dumps({
    "answer": [answer.choices[0].message.content, answer.usage.total_tokens],
    "token": os.environ["OPENAI_API_KEY"],
    "base_url": os.environ["OPENAI_BASE_URL"],
    "anthropic": os.environ.get("ANTHROPIC_API_KEY"),
}))
"""


@dataclass
class Rig:
    env: DaemonEnv
    calls: list[Call]

    def sessions(self) -> list[tuple[str, str, int, int | None, int | None]]:
        """Every session: id, name, created_at, expires_at, revoked_at."""
        db = Path(self.env.vars["XDG_DATA_HOME"]) / "vaultd" / "vault.db"
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute(
                "SELECT id, name, created_at, expires_at, revoked_at FROM sessions"
            ).fetchall()
        finally:
            conn.close()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


@pytest.fixture
async def rig(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Rig]:
    calls: list[Call] = []
    upstream = await aiohttp_server(provider_app(calls), host="127.0.0.1")
    env = DaemonEnv(tmp_path, f'[services.openai]\nbase_url = "http://127.0.0.1:{upstream.port}"\n')
    await env.check("init")
    await env.check("add", "openai", "primary", stdin=f"{KEY}\n".encode())
    daemon, log = env.start()
    try:
        await env.up()
        yield Rig(env, calls)
    finally:
        assert stop(daemon) == 0, log.read_text()
    assert KEY not in log.read_text()


async def bash(rig: Rig, script: str) -> tuple[int, str, str]:
    """``script`` in a real bash, ``$VAULTD`` the vaultd under test, the parent's keys set."""
    return await run_process(
        ["bash", "--norc", "--noprofile", "-c", script],
        {**rig.env.vars, **PARENT_KEYS, "VAULTD": shlex.join(vaultd_argv())},
        cwd=rig.env.tmp,
    )


async def test_eval_env_then_the_openai_sdk_reaches_the_upstream_through_the_proxy(
    rig: Rig, tmp_path: Path
) -> None:
    (tmp_path / "agent.py").write_text(SDK_SCRIPT)
    script = (
        "set -e\n"
        'lines="$($VAULTD env --service openai 2>env.stderr)"\n'
        'printf "%s\\n" "$lines" > env.stdout\n'
        'eval "$lines"\n'
        f"{shlex.quote(sys.executable)} agent.py\n"
    )
    code, out, err = await bash(rig, script)
    assert code == 0, err + (tmp_path / "env.stderr").read_text()
    seen = json.loads(out)
    assert seen["answer"] == ["Hello there!", 20]
    # The real key went upstream from the daemon; the shell held a token only.
    (call,) = rig.calls
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert seen["token"].startswith("fn_sess_")
    assert seen["base_url"] == f"{rig.env.base_url}/proxy/openai/v1"
    # The parent's key of a service the session does not cover is gone, as under run.
    assert seen["anthropic"] is None

    printed = (tmp_path / "env.stdout").read_text()
    lines = printed.splitlines()
    assert lines and all(line.startswith(("export ", "unset ")) for line in lines), printed
    assert f"export OPENAI_API_KEY={seen['token']}" in lines
    assert f"export OPENAI_BASE_URL={seen['base_url']}" in lines
    assert "unset ANTHROPIC_API_KEY" in lines and "unset GITHUB_TOKEN" in lines
    assert "unset OPENAI_API_KEY" not in lines
    for secret in (KEY, *PARENT_KEYS.values()):
        assert secret not in printed

    # stderr: which variables were unset, how long the token lives, how to revoke it.
    told = (tmp_path / "env.stderr").read_text()
    assert seen["token"] not in told and KEY not in told
    assert "vaultd env: unsetting ANTHROPIC_API_KEY" in told
    ((session_id, name, created, expires, revoked),) = rig.sessions()
    assert name == "vaultd env" and revoked is None
    assert expires is not None and expires - created == 8 * 3600  # [sessions] default_ttl
    assert f"session {session_id} expires in 8 h" in told
    assert f"vaultd session revoke {session_id}" in told

    # The token outlives vaultd env, until it is revoked.
    # (From a thread: the upstream answers on this test's event loop.)
    models = ("GET", "/proxy/openai/v1/models", seen["token"])
    status, _ = await asyncio.to_thread(rig.env.request, *models)
    assert status == 200
    await rig.env.check("session", "revoke", session_id)
    status, _ = await asyncio.to_thread(rig.env.request, *models)
    assert status == 401


async def test_env_follows_runs_rules_and_warnings(rig: Rig) -> None:
    # Asked by name, a service without a base-URL variable gets its token, with run's
    # warning; a service without a key is warned about; --ttl caps the session.
    code, out, err = await bash(rig, "$VAULTD env --service github --ttl 1h --max-requests 5")
    assert code == 0, err
    assert "export GITHUB_TOKEN=fn_sess_" in out and "unset OPENAI_API_KEY" in out
    assert "vaultd env: github has no base-URL variable" in err
    assert "vaultd env: github has no default key" in err
    ((_id, _name, created, expires, _revoked),) = rig.sessions()
    assert expires is not None and expires - created == 3600
    # Without --service: the services with a default key (openai here), as run picks.
    code, out, err = await bash(rig, "$VAULTD env")
    assert code == 0, err
    assert "export OPENAI_API_KEY=fn_sess_" in out and "GITHUB_TOKEN=" not in out


async def test_env_without_the_daemon_is_one_line_and_mints_nothing(rig: Rig) -> None:
    code, out, err = await bash(rig, "VAULTD_URL=http://127.0.0.1:9 $VAULTD env --service openai")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "is not reachable" in err, err
    assert rig.sessions() == []


async def test_env_refuses_a_service_the_daemon_lacks_and_revokes_what_it_minted(
    rig: Rig,
) -> None:
    config = rig.env.config_file
    config.write_text(config.read_text() + '\n[services.acme]\nbase_url = "https://acme.test"\n')
    code, out, err = await bash(rig, "$VAULTD env --service acme")
    assert code == 1 and out == "", err
    assert "the daemon has no service 'acme'" in err
    ((_id, _name, _created, _expires, revoked),) = rig.sessions()
    assert revoked is not None
