"""Real ``vaultd`` processes for the tests: the command line, a home of their own, a port.

Every test that starts ``vaultd serve`` or runs a verb as a process does it
through ``vaultd_argv`` and ``DaemonEnv``, so that all of them run the very
vaultd under test, the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import vaultd


def vaultd_argv(*args: str) -> list[str]:
    """The command line of ``vaultd ARGS``, run by this Python (the vaultd under test)."""
    return [sys.executable, "-m", "vaultd", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_process(
    argv: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[int, str, str]:
    """``argv`` as a process of its own (stdin empty, at most 60 s): exit status,
    stdout, stderr. How every test runs a command as a user would."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_vaultd(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``vaultd ARGS`` (the vaultd under test) as a process, in ``env``."""
    return await run_process(vaultd_argv(*args), env)


class DaemonEnv:
    """A home, a config and a free port under ``tmp_path`` for ``vaultd`` processes."""

    def __init__(self, tmp_path: Path, config: str = "") -> None:
        self.tmp = tmp_path
        self.port = free_port()
        home = tmp_path / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        self.config_file = tmp_path / "config.toml"
        self.config_file.write_text(f"[server]\nport = {self.port}\n{config}")
        self.vars = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # A daemon killed by a signal (SIGSEGV, SIGBUS) leaves its Python
            # stack in its log, where the tests that read it can show it.
            "PYTHONFAULTHANDLER": "1",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "VAULTD_CONFIG": str(self.config_file),
            "PYTHONUNBUFFERED": "1",
            # The very vaultd this process imported, whatever checkout runs
            # the tests (an editable install may point at another).
            "PYTHONPATH": str(Path(vaultd.__file__).resolve().parent.parent),
        }

    def vaultd(self, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        """``vaultd ARGS`` with ``input`` as its stdin (never the test runner's)."""
        return subprocess.run(
            vaultd_argv(*args),
            env=self.vars,
            cwd=self.tmp,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, name: str = "daemon", **extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.stderr"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                vaultd_argv("serve"),
                env={**self.vars, **extra},
                cwd=self.tmp,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return proc, log

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def spawn(self, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
        """``vaultd ARGS`` as an asyncio child (pipes as ``kwargs`` say), in this environment."""
        kwargs.setdefault("env", self.vars)
        kwargs.setdefault("cwd", self.tmp)
        return await asyncio.create_subprocess_exec(*vaultd_argv(*args), **kwargs)

    async def check(self, *args: str, stdin: bytes = b"") -> str:
        """``vaultd ARGS`` as an asyncio child that must exit 0: its stdout."""
        proc = await self.spawn(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def up(self) -> None:
        """Until ``/healthz`` answers 200 (at most 30 s)."""
        import aiohttp

        async with aiohttp.ClientSession() as client:
            for _ in range(300):
                try:
                    async with client.get(f"{self.base_url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail("the daemon did not come up")

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310 (loopback)
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_healthy(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        for _ in range(200):  # at most ~20 s
            if proc.poll() is not None:
                pytest.fail(f"daemon exited with {proc.returncode}: {log.read_text()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"daemon never became healthy: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise
