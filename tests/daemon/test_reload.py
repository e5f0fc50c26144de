"""Issue 17, items 3 and 4: a running daemon reads its edited config on SIGHUP, and
clients find it on the config's port.

A real `vaultd serve` on the port its config names (no VAULTD_URL anywhere),
real CLI processes, a fake upstream for each base_url. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.support.daemon import DaemonEnv, free_port, stop
from tests.support.http import bearer
from tests.support.upstream import Seen, upstream_app
from vaultd.cli.child import check_daemon_services
from vaultd.config import load_config, reload_config
from vaultd.daemon.reload import changes, keeping_restart_keys
from vaultd.errors import VaultdError

OPENAI_SECRET = "sk-proj-RELOADreloadRELOAD000001"
OTHER_SECRET = "sk-other-RELOADreloadRELOAD0002"
# A header value in the config: not a secret vaultd guards, but private enough
# that no log line may repeat it.
PRIVATE = "org-PRIVATEheaderVALUE77"
StartServer = Callable[..., Awaitable[TestServer]]


async def upstream(aiohttp_server: StartServer) -> tuple[str, list[Seen]]:
    seen: list[Seen] = []
    server = await aiohttp_server(upstream_app(seen), host="127.0.0.1", access_log=None)
    return f"http://127.0.0.1:{server.port}", seen


def config_text(env: DaemonEnv, openai_url: str, extra: str = "") -> str:
    return (
        f"[server]\nport = {env.port}\n{extra}"
        f'[services.openai]\nbase_url = "{openai_url}"\nheaders = {{ "x-org" = "{PRIVATE}" }}\n'
    )


async def wait_for_line(log: Path, text: str, count: int = 1) -> list[str]:
    """The daemon's log lines once ``count`` of them contain ``text`` (at most 20 s)."""
    for _ in range(200):
        lines = [line for line in log.read_text().splitlines() if text in line]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.1)
    pytest.fail(f"no {text!r} in the daemon's log: {log.read_text()}")


async def doctor(env: DaemonEnv) -> dict[str, str]:
    proc = await env.spawn("doctor", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, out.decode() + err.decode()
    return {line.split(":", 1)[0][5:]: line for line in out.decode().splitlines() if line[4] == " "}


async def get(client: aiohttp.ClientSession, env: DaemonEnv, path: str, token: str) -> int:
    async with client.get(f"{env.base_url}{path}", headers=bearer(token)) as resp:
        await resp.read()
        return resp.status


async def test_sighup_reloads_the_config_and_doctor_tells(
    tmp_path: Path, aiohttp_server: StartServer
) -> None:
    old_url, old_seen = await upstream(aiohttp_server)
    new_url, new_seen = await upstream(aiohttp_server)
    env = DaemonEnv(tmp_path)
    env.config_file.write_text(config_text(env, old_url))
    vaultd = env.check
    await vaultd("init")
    await vaultd("add", "openai", "main", stdin=f"{OPENAI_SECRET}\n".encode())
    token = (await vaultd("session", "create", "--service", "*")).strip()
    proc, log = env.start()
    try:
        await env.up()
        # No VAULTD_URL: doctor finds the daemon on the config's port (item 4).
        lines = await doctor(env)
        assert (
            lines["daemon"].startswith("ok   daemon: vaultd ") and env.base_url in lines["daemon"]
        )
        assert lines["daemon config"] == (
            f"ok   daemon config: the daemon runs with {env.config_file}"
        )
        async with aiohttp.ClientSession() as client:
            assert await get(client, env, "/proxy/openai/v1/models", token) == 200
            assert old_seen[-1].headers["Authorization"] == f"Bearer {OPENAI_SECRET}"

            # The user edits the config: a new base_url, a new service, a bigger
            # body limit, and a key only a restart applies.
            env.config_file.write_text(
                config_text(env, new_url, extra='idle_timeout = "90s"\n')
                + '[proxy]\nmax_request_body = "64MiB"\n'
                + f'[services.otherllm]\nbase_url = "{new_url}"\n'
            )
            await vaultd("add", "otherllm", "main", stdin=f"{OTHER_SECRET}\n".encode())
            other = (await vaultd("session", "create", "--service", "otherllm")).strip()
            # Not read yet: doctor says so, and the new service is refused before use.
            lines = await doctor(env)
            assert lines["daemon config"] == (
                f"warn daemon config: the daemon runs with an older version of {env.config_file}:"
                " reload it (systemctl --user reload vaultd, or kill -HUP the daemon's pid)"
            )
            with pytest.raises(VaultdError) as refused:
                await asyncio.to_thread(check_daemon_services, env.base_url, other, ["otherllm"])
            assert str(refused.value) == (
                "the daemon has no service 'otherllm' (added to the config since it last read"
                " it?): reload it (systemctl --user reload vaultd, or kill -HUP the daemon's"
                " pid) and run again"
            )
            assert await get(client, env, "/proxy/otherllm/v1/models", other) == 404

            proc.send_signal(signal.SIGHUP)
            (reloaded,) = await wait_for_line(log, "config reloaded from")
            assert proc.poll() is None  # SIGHUP no longer ends the daemon
            assert reloaded.endswith(
                f"config reloaded from {env.config_file}: changed [proxy] max_request_body,"
                " [services.openai]; added [services.otherllm]"
            )
            (restart,) = await wait_for_line(log, "only a restart applies")
            assert "[server] idle_timeout changed" in restart

            # The next requests go where the file now says.
            assert await get(client, env, "/proxy/openai/v1/models", token) == 200
            assert new_seen[-1].headers["Authorization"] == f"Bearer {OPENAI_SECRET}"
            assert await get(client, env, "/proxy/otherllm/v1/models", other) == 200
            assert new_seen[-1].headers["Authorization"] == f"Bearer {OTHER_SECRET}"
            assert len(old_seen) == 1
            await asyncio.to_thread(check_daemon_services, env.base_url, other, ["otherllm"])
            lines = await doctor(env)
            assert lines["daemon config"] == (
                f"warn daemon config: {env.config_file} changed [server] idle_timeout, which"
                " only a restart of the daemon applies (systemctl --user restart vaultd)"
            )

            # A broken file: one line why, and the daemon goes on as it was.
            text = env.config_file.read_text()
            env.config_file.write_text(text + "[proxy]\nread_timeout = 5\n")  # a table twice
            proc.send_signal(signal.SIGHUP)
            (refusal,) = await wait_for_line(log, "config not reloaded")
            assert "is not valid TOML" in refusal
            assert await get(client, env, "/proxy/openai/v1/models", token) == 200
            assert len(new_seen) == 3 and proc.poll() is None
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = log.read_text()
    assert PRIVATE not in text and new_url not in text and OPENAI_SECRET not in text
    assert len([line for line in text.splitlines() if "config" in line]) == 3
    assert "Traceback" not in text


def test_reload_tells_systemd_and_changes_nothing_when_nothing_changed(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path, '[sessions]\ndefault_ttl = "1h"\n')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(20)
        proc, log = env.start(NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
        try:
            assert notify.recv(4096).startswith(b"READY=1\n")
            for count in (1, 2):
                proc.send_signal(signal.SIGHUP)
                # sd_notify(3)'s reload protocol, as Type=notify-reload expects it too.
                reloading = notify.recv(4096).decode().splitlines()
                assert reloading[0] == "RELOADING=1"
                assert reloading[1].startswith("MONOTONIC_USEC=")
                assert notify.recv(4096) == b"READY=1"
                lines = [line for line in log.read_text().splitlines() if "config" in line]
                assert len(lines) == count
                assert lines[-1].endswith(
                    f"config reloaded from {env.config_file}: nothing changed"
                )
            assert proc.poll() is None
            assert stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


async def test_a_changed_port_needs_a_restart_and_clients_follow_the_file(tmp_path: Path) -> None:
    env = DaemonEnv(tmp_path)
    proc, log = env.start()
    try:
        await env.up()
        first = env.port
        env.port = free_port()
        env.config_file.write_text(f"[server]\nport = {env.port}\n")
        proc.send_signal(signal.SIGHUP)
        (line,) = await wait_for_line(log, "only a restart applies")
        assert "[server] port changed" in line
        # Still where it started.
        env.port = first
        assert env.request("GET", "/healthz")[0] == 200
        lines = await doctor(env)
        # ...while clients look where the file says, and say so.
        assert lines["daemon"].startswith("warn daemon: the vaultd daemon is not reachable at ")
        assert "start it with: vaultd serve" in lines["daemon"]
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


CHILD = "import os; print(os.environ['OPENAI_BASE_URL'])"


async def test_run_finds_the_daemon_on_the_config_port_and_refuses_what_it_lacks(
    tmp_path: Path,
) -> None:
    env = DaemonEnv(tmp_path)
    await env.check("init")
    await env.check("add", "openai", "main", stdin=f"{OPENAI_SECRET}\n".encode())
    proc, _ = env.start()
    try:
        await env.up()
        out = await env.check("run", "--service", "openai", "--", sys.executable, "-c", CHILD)
        assert out.strip() == f"{env.base_url}/proxy/openai/v1"

        env.config_file.write_text(
            f'[server]\nport = {env.port}\n[services.otherllm]\nbase_url = "http://127.0.0.1:9"\n'
        )
        await env.check("add", "otherllm", "main", stdin=f"{OTHER_SECRET}\n".encode())
        ran = await env.spawn(
            "run",
            "--service",
            "otherllm",
            "--",
            sys.executable,
            "-c",
            "print('ran')",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(ran.communicate(), timeout=60)
        assert (ran.returncode, stdout) == (1, b"")
        assert stderr.decode().strip() == (
            "Error: the daemon has no service 'otherllm' (added to the config since it last"
            " read it?): reload it (systemctl --user reload vaultd, or kill -HUP the daemon's"
            " pid) and run again"
        )
        listed = json.loads(await env.check("session", "list", "--json"))
        assert listed == []  # its session was revoked
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_changes_name_settings_and_tables_never_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[proxy]\nbody_timeout = "5s"\n[services.gone]\nbase_url = "http://127.0.0.1:9"\n'
        f'[services.openai]\nheaders = {{ "x-org" = "{PRIVATE}" }}\n'
    )
    old = load_config(str(path))
    path.write_text(
        '[services.openai]\nheaders = { "x-org" = "org-other" }\n'
        '[prices."openai/gpt-x"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n'
        '[server]\nport = 4001\nallowed_hosts = ["vaultd.test"]\n'
    )
    effective, pending = keeping_restart_keys(old, reload_config(old))
    assert pending == ("[server] port",)
    assert effective.port == old.port and effective.allowed_hosts == ("vaultd.test",)
    assert changes(old, effective) == (
        "changed [server] allowed_hosts, [proxy] body_timeout, [services.openai];"
        ' added [prices."openai/gpt-x"]; removed [services.gone]'
    )
