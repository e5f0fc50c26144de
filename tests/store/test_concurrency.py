"""Eight CLI writers at once, beside a daemon that proxies, writes usage and takes API writes.

The daemon (a real ``vaultd serve``, flushing usage ten times a second) serves
proxied calls and SSE streams the whole time, and an API client adds,
rotates and deletes credentials through it. Meanwhile waves of eight
``vaultd`` processes start together: add, rotate, session create, then rm or
default, then session revoke or add. Every process must exit 0 with no "database is
locked" (nor any other error) on its stderr, every API write must succeed,
and every write must land: read back from disk after the daemon's SIGTERM,
proxied with exactly the secret last written, tokens working or revoked as
told, and every proxied call counted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.support.faults import (
    WRITE_SERVICE,
    CliResult,
    Rig,
    Slot,
    Traffic,
    WriteCounts,
    check_usage,
    check_via_proxy,
    daemon_log_problems,
    lock_error_in,
    read_vault,
    reconcile,
    upstream_count,
)
from tests.support.http import bearer
from tests.support.upstream import StartUpstream

WRITERS = 8


def secret(tag: str) -> str:
    return f"sk-conc-{tag}-0123456789abcdef"


class ApiWriter:
    """Adds, rotates and deletes credentials through the daemon's API until stopped."""

    def __init__(self, base_url: str, token: str, slots: list[Slot]) -> None:
        self.base_url = base_url
        self.headers = bearer(token)
        self.slots = slots
        self.problems: list[str] = []
        self.writes = 0
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(
            base_url=self.base_url, headers=self.headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as client:
            n = 0
            while not self.stopped.is_set() and n < 200:
                name = f"api-{n:03d}"
                slot = Slot(name)
                self.slots.append(slot)
                body = {"service": WRITE_SERVICE, "name": name, "secret": secret(f"{name}-a")}
                async with client.post("/api/credentials", json=body) as resp:
                    created = await self.expect(resp, 201, f"POST {name}")
                if created is None:
                    return
                slot.possible = {body["secret"]}
                new = {"secret": secret(f"{name}-b")}
                async with client.patch(f"/api/credentials/{created['id']}", json=new) as resp:
                    if await self.expect(resp, 200, f"PATCH {name}") is None:
                        return
                slot.possible = {new["secret"]}
                if n % 3 == 2:
                    async with client.delete(f"/api/credentials/{created['id']}") as resp:
                        if await self.expect(resp, 204, f"DELETE {name}") is None:
                            return
                    slot.possible = {None}
                self.writes += 2 + (n % 3 == 2)
                n += 1

    async def expect(
        self, resp: aiohttp.ClientResponse, status: int, what: str
    ) -> dict[str, str] | None:
        """The JSON body ({} if none), or None (and a problem) on another status."""
        text = await resp.text()
        if resp.status != status:
            self.problems.append(f"API {what}: {resp.status} {text[:200]}")
            return None
        parsed: dict[str, str] = json.loads(text) if text else {}
        return parsed


def waves(session_ids: dict[int, str]) -> list[list[tuple[tuple[str, ...], str]]]:
    """Per wave, the (argv, stdin) of each of the eight writers; writer i owns c<i> and d<i>."""
    ref = f"{WRITE_SERVICE}/"
    lanes = range(WRITERS)
    return [
        [(("add", WRITE_SERVICE, f"c{i}", "--json"), secret(f"c{i}-a") + "\n") for i in lanes],
        [(("rotate", f"{ref}c{i}", "--json"), secret(f"c{i}-b") + "\n") for i in lanes],
        [(("session", "create", "--name", f"w{i}", "--scope", "proxy"), "") for i in lanes],
        [
            (("rm", f"{ref}c{i}", "--yes"), "") if i % 2 else (("default", f"{ref}c{i}"), "")
            for i in lanes
        ],
        [
            (("session", "revoke", session_ids.get(i, "none")), "")
            if i % 2
            else (("add", WRITE_SERVICE, f"d{i}"), secret(f"d{i}-a") + "\n")
            for i in lanes
        ],
    ]


@pytest.mark.timeout(180)
async def test_eight_cli_writers_beside_a_busy_daemon(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    upstream = await start_upstream()
    (tmp_path / "conc").mkdir()
    rig = Rig(tmp_path / "conc", upstream.url, flush_interval=0.1)
    try:
        token = await rig.setup()
        admin = await rig.cli("session", "create", "--scope", "admin", "--ttl", "1h")
        assert admin.returncode == 0, admin.describe()

        await rig.start_daemon()
        await rig.wait_healthy()
        before = read_vault(rig.config())
        upstream.seen.clear()
        traffic = Traffic(rig.base_url, token, plain=1, sse=1)
        traffic.start()
        api_slots: list[Slot] = []
        api = ApiWriter(rig.base_url, admin.stdout.strip(), api_slots)
        api_task = asyncio.create_task(api.run())

        results: list[CliResult] = []
        session_ids: dict[int, str] = {}
        tokens: dict[int, str] = {}
        for number in range(len(waves({}))):
            wave = waves(session_ids)[number]
            done = await asyncio.gather(*(rig.cli(*argv, stdin=stdin) for argv, stdin in wave))
            results += done
            if number == 2:  # session create: the token on stdout, the id on stderr
                for i, result in enumerate(done):
                    tokens[i] = result.stdout.strip()
                    session_ids[i] = result.stderr.split()[1] if result.stderr else "none"

        api.stopped.set()
        await api_task
        failed = [r.describe() for r in results if r.returncode != 0]
        locked = [
            r.describe() for r in results if lock_error_in(r.stderr) or "Traceback" in r.stderr
        ]
        assert not failed and not locked, "\n".join(failed + locked)
        assert not api.problems, api.problems
        assert len(results) == 5 * WRITERS

        # What every writer was told, checked through the daemon: the upstream
        # gets the secret last written, removed ones are 404s.
        expected: dict[str, str | None] = {}
        for i in range(WRITERS):
            expected[f"c{i}"] = None if i % 2 else secret(f"c{i}-b")
            expected[f"d{i}"] = None if i % 2 else secret(f"d{i}-a")
        slots = [Slot(name, {value}) for name, value in expected.items()] + api_slots
        problems = await check_via_proxy(rig.base_url, token, slots, upstream.seen, "final")
        async with aiohttp.ClientSession() as client:
            for i, lane_token in tokens.items():
                url = f"{rig.base_url}/proxy/{WRITE_SERVICE}/who/{i}"
                async with client.get(url, headers=bearer(lane_token)) as r:
                    # Odd writers revoked their session; even ones' still works.
                    if r.status != (401 if i % 2 else 200):
                        problems.append(f"writer {i}'s token: {r.status}")

        stopped_at = asyncio.get_running_loop().time()
        assert await rig.stop_daemon() == 0
        await traffic.stop()
        await asyncio.sleep(0.05)
        after = read_vault(rig.config())
        counts = WriteCounts()
        problems += reconcile(after, slots, counts)
        usage_problems, figures = check_usage(
            before,
            after,
            traffic,
            upstream_count(upstream.seen),
            killed_at=None,
            interval=0.1,
            slack=0,
        )
        problems += usage_problems
        problems += [f"proxy: {kind}" for kind in traffic.errors_before(stopped_at)][:5]
        problems += daemon_log_problems(rig.daemon_log())
        print(
            f"{len(results)} CLI writes by {WRITERS} processes at once, {api.writes} API writes,"
            f" {figures.served} proxied calls; all landed"
        )
        assert not problems, "\n".join(problems)
    finally:
        await rig.kill_daemon()  # a failed check must not leave it running
