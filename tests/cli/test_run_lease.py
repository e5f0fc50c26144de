"""Issue 17, item 6: a `vaultd run` session is a lease, renewed while its command lives.

As a user meets it: a real `vaultd serve`, a real `vaultd run` process, the
command's token used through the proxy towards a fake upstream. The lease is
shortened to a few seconds with ``VAULTD_RUN_LEASE`` (tests only), so that
"within minutes" becomes "within seconds"; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.served import KEY, Served, StartServer, served_openai
from vaultd.cli.lease import LEASE_ENV
from vaultd.isolation.check import problems

LEASE = 3


def lease_env(served: Served, lease: int = LEASE) -> dict[str, str]:
    return {**served.env.vars, LEASE_ENV: str(lease)}


@pytest.fixture
async def served(tmp_path: Path, aiohttp_server: StartServer) -> AsyncIterator[Served]:
    async with served_openai(tmp_path, aiohttp_server) as running:
        yield running


def session_of(served: Served, token: str) -> tuple[str, int | None, int | None]:
    """The name, expires_at and revoked_at of ``token``'s session."""
    [row] = [row for row in served.sessions() if row[0] == token[:12]]
    return row[1], row[2], row[3]


async def wait_for_file(path: Path, proc: asyncio.subprocess.Process) -> str:
    for _ in range(300):  # at most 30 s
        if path.exists():
            return path.read_text()
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    pytest.fail(f"{path.name} never appeared (vaultd run exited {proc.returncode})")


async def test_a_killed_run_leaves_a_token_that_dies_within_the_lease(
    served: Served, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    # A file, not a pipe: the orphaned command would hold a pipe open, and
    # asyncio's wait() waits for its pipes to close.
    err_file = tmp_path / "run.stderr"
    # The command keeps running: only `vaultd run` is killed, so nothing revokes the token.
    script = f'printf %s "$OPENAI_API_KEY" > {token_file}.part && mv {token_file}.part {token_file}'
    with err_file.open("wb") as run_stderr:
        run = await served.env.spawn(
            *("run", "--service", "openai", "--", "sh", "-c", f"{script}; exec sleep 60"),
            env=lease_env(served),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=run_stderr,
            # Its own process group, so that the orphaned command can be ended afterwards.
            start_new_session=True,
        )
    try:
        token = await wait_for_file(token_file, run)
        assert token.startswith("fn_sess_")
        async with aiohttp.ClientSession() as client:
            assert (await served.status(client, token))[0] == 200
            # Longer than a lease: the live `vaultd run` renewed it.
            await asyncio.sleep(LEASE + 1.5)
            assert (await served.status(client, token))[0] == 200
            run.kill()  # SIGKILL: no chance to revoke
            await run.wait()
            killed_at = time.monotonic()
            # Still its lease, then never again.
            assert (await served.status(client, token))[0] == 200
            while True:
                status, body = await served.status(client, token)
                if status != 200:
                    break
                assert time.monotonic() - killed_at < LEASE + 5, "the token outlived its lease"
                await asyncio.sleep(0.2)
        assert status == 401 and "expired" in body, body
        name, expires_at, revoked_at = session_of(served, token)
        # Ended by its lease running out, nothing else.
        assert revoked_at is None and expires_at is not None and expires_at <= time.time()
        assert name == "run: sh -c"
        listing = await served.env.check("session", "list", "--all")
        assert "expired" in listing and token[:12] in listing and token not in listing
        # Every call went upstream with the real key, none with the token.
        assert {s.headers["Authorization"] for s in served.seen} == {f"Bearer {KEY}"}
    finally:
        # The orphaned `sleep 60`, by the process group this test made.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        if run.returncode is None:
            await run.wait()
    err = err_file.read_text()
    assert KEY not in err and token not in err


CALLER = """
import json, os, sys, time, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
url = os.environ["OPENAI_BASE_URL"] + "/models"
headers = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
start, seen = time.monotonic(), []
while time.monotonic() - start < float(sys.argv[1]):
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            seen.append([round(time.monotonic() - start, 2), reply.status])
    except urllib.error.HTTPError as exc:
        seen.append([round(time.monotonic() - start, 2), exc.code])
    time.sleep(0.5)
print(json.dumps(seen))
"""


async def run_caller(
    served: Served, seconds: float, *flags: str
) -> tuple[int, list[list[float]], str]:
    proc = await served.env.spawn(
        *("run", *flags, "--service", "openai", "--", sys.executable, "-c", CALLER),
        str(seconds),
        env=lease_env(served),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out or b"[]"), err.decode()


async def test_a_command_outliving_many_leases_keeps_working(served: Served) -> None:
    # --ttl never: accepted as by `session create`, and the same as no --ttl.
    code, calls, err = await run_caller(served, 3 * LEASE + 1, "--ttl", "never")
    assert code == 0, err
    assert err == ""
    assert calls[-1][0] > 3 * LEASE and {status for _, status in calls} == {200}
    # Revoked when it exited, as before.
    [(_prefix, _name, _expires_at, revoked_at)] = served.sessions()
    assert revoked_at is not None


async def test_ttl_caps_the_lease_under_a_live_command(served: Served) -> None:
    cap = 2 * LEASE
    code, calls, err = await run_caller(served, cap + 3, "--ttl", f"{cap}s")
    assert code == 0, err
    statuses = [status for _, status in calls]
    # Renewed past the first lease, up to the cap; expired after it, though
    # still running (times from the command's start, a little after the mint).
    assert statuses[0] == 200 and statuses[-1] == 401, calls
    assert max(t for t, status in calls if status == 200) >= LEASE + 0.5, calls
    assert min(t for t, status in calls if status == 401) <= cap + 1.5, calls
    assert statuses == sorted(statuses), calls  # never valid again once expired


async def test_a_ttl_longer_than_max_ttl_is_refused(served: Served) -> None:
    served.env.config_file.write_text(
        served.env.config_file.read_text() + '[sessions]\ndefault_ttl = "1h"\nmax_ttl = "2h"\n'
    )
    code, calls, err = await run_caller(served, 0, "--ttl", "3h")
    assert (code, calls) == (1, [])
    assert err.strip() == "Error: --ttl 3h: must be at most 2h (the [sessions] max_ttl)"


async def test_an_isolated_command_is_renewed_too(served: Served) -> None:
    """The renewal thread lives in `vaultd run`, which forks the sandbox with a
    preexec_fn (Landlock): the fork must neither hang nor break the lease."""
    missing = problems("all")
    if missing:
        pytest.skip("--isolate cannot run here: " + "; ".join(missing))
    code, calls, err = await run_caller(served, 2 * LEASE + 1, "--isolate")
    assert code == 0, err
    assert calls[-1][0] > 2 * LEASE and {status for _, status in calls} == {200}


async def test_a_lease_revoked_by_hand_is_not_renewed_and_says_so(served: Served) -> None:
    proc = await served.env.spawn(
        *("run", "--service", "openai", "--", sys.executable, "-c", CALLER),
        str(2 * LEASE),
        env=lease_env(served),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    communicating = asyncio.ensure_future(proc.communicate())
    for _ in range(300):  # at most 30 s for the session to be minted
        if served.sessions():
            break
        await asyncio.sleep(0.1)
    [(prefix, _name, _expires_at, _revoked_at)] = served.sessions()
    await asyncio.sleep(1)
    await served.env.check("session", "revoke", prefix)
    out, err = await asyncio.wait_for(communicating, timeout=60)
    assert proc.returncode == 0, err
    statuses = [status for _, status in json.loads(out)]
    # Revoked means revoked: the renewals that followed did not bring it back.
    assert statuses[0] == 200 and statuses[-1] == 401 and statuses == sorted(statuses)
    assert err.decode() == (
        "vaultd run: the session was revoked (vaultd session revoke); "
        "the command's token no longer works\n"
    )
