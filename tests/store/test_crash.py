"""kill -9 of a real daemon under proxy traffic, and of CLI writers beside it, round after round.

Each round starts ``vaultd serve`` on the same vault (so damage would pile up),
sends proxied calls and SSE streams through it while CLI processes add,
rotate and remove credentials, then SIGKILLs the daemon and every writer
still running at one random moment (some rounds while the daemon is still
starting; writers are also killed at random moments of their own). With
everything dead, the vault is read back through vaultd's own code:

* ``PRAGMA integrity_check`` says ok;
* every add or rotate the CLI acknowledged (exit 0) is there and opens to the
  secret last acknowledged, every acknowledged rm is gone; a write whose
  process was killed may have landed or not, nothing else is allowed;
* the next daemon proxies each credential with exactly that secret (the
  recording upstream sees the key);
* the traffic key's ``use_count`` lost at most one flush interval: see
  ``tests.support.faults.check_usage`` for the bound and why it holds.

A last daemon life ends with SIGTERM, after which nothing may be lost.

Seeded and bounded: the seed is printed (replay with ``VAULTD_CRASH_SEED``);
rounds run for ``VAULTD_CRASH_SECONDS`` (default 14) and at most
``VAULTD_CRASH_ROUNDS``. ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.faults import (
    Rig,
    Slot,
    Traffic,
    UsageFigures,
    VaultState,
    WriteCounts,
    Writers,
    check_usage,
    check_via_proxy,
    daemon_log_problems,
    environ_seed,
    read_vault,
    reconcile,
    upstream_count,
)
from tests.support.upstream import StartUpstream, Upstream

SEED = environ_seed("VAULTD_CRASH_SEED")
SECONDS = float(os.environ.get("VAULTD_CRASH_SECONDS", "14"))
MAX_ROUNDS = int(os.environ.get("VAULTD_CRASH_ROUNDS", "200"))
MIN_ROUNDS = 3  # even on a machine so slow that the time runs out first

FLUSH_INTERVAL = 0.2  # seconds
# Beyond the interval: the flush's own write and a loaded machine's scheduling.
FLUSH_SLACK = 0.3
SLOTS = 10
LANES = 3  # CLI writers running at once
WRITER_KILL_CHANCE = 0.15
WRITER_KILL_DELAY = 0.25  # a CLI write takes ~0.15 s: this spans its whole life
STARTUP_KILL_CHANCE = 0.2


@dataclass
class Tally:
    rounds: int = 0
    startup_kills: int = 0
    writes: WriteCounts = field(default_factory=WriteCounts)
    usage: list[UsageFigures] = field(default_factory=list)

    def oldest_lost(self) -> float:
        return max((f.oldest_lost_age for f in self.usage), default=0.0)

    def summary(self) -> str:
        w = self.writes
        lost_uses = sum(f.lost for f in self.usage)
        return (
            f"seed {SEED}: {self.rounds} rounds of kill -9 survived"
            f" ({self.startup_kills} during start-up);"
            f" writes acknowledged {sum(w.acknowledged.values())} {dict(w.acknowledged)},"
            f" killed unacknowledged {sum(w.killed.values())}"
            f" ({w.killed_landed} of them had committed), lost {w.lost};"
            f" calls served {sum(f.served for f in self.usage)},"
            f" uses lost {lost_uses} (in flight at the kill"
            f" {sum(f.in_flight for f in self.usage)}),"
            f" oldest uncounted answer {self.oldest_lost():.3f}s before its kill"
            f" (interval {FLUSH_INTERVAL}s)"
        )


async def one_life(
    rig: Rig,
    upstream: Upstream,
    token: str,
    rng: random.Random,
    slots: list[Slot],
    tally: Tally,
    before: VaultState,
    *,
    clean_stop: bool = False,
) -> tuple[list[str], VaultState]:
    """Start the daemon, load it, end it (kill -9, or SIGTERM), read the vault back."""
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    upstream.seen.clear()
    writers = Writers(rig, rng, slots, tally.writes)
    traffic = Traffic(rig.base_url, token)
    in_startup = not clean_stop and rng.random() < STARTUP_KILL_CHANCE
    kill_chance = 0.0 if clean_stop else WRITER_KILL_CHANCE
    await rig.start_daemon()
    if in_startup:
        tally.startup_kills += 1
        lanes = [writers.lane(kill_chance, WRITER_KILL_DELAY) for _ in range(LANES)]
        running = [asyncio.create_task(lane) for lane in lanes]
        await asyncio.sleep(rng.uniform(0.0, 0.4))
    else:
        await rig.wait_healthy()
        # What the last read-back found, as the restarted daemon injects it.
        problems += await check_via_proxy(
            rig.base_url, token, slots, upstream.seen, f"{rig.starts}"
        )
        traffic.start()
        lanes = [writers.lane(kill_chance, WRITER_KILL_DELAY) for _ in range(LANES)]
        running = [asyncio.create_task(lane) for lane in lanes]
        await asyncio.sleep(rng.uniform(0.3, 1.2))

    killed_at: float | None = loop.time()
    end = loop.time()  # calls failing after this are the end's doing
    if clean_stop:
        writers.stopped.set()
        await asyncio.gather(*running)
        killed_at = None
        end = loop.time()
        code = await rig.stop_daemon()  # traffic still running: SIGTERM drains it
        if code != 0:
            problems.append(f"SIGTERM: the daemon exited {code}")
    else:
        assert rig.daemon is not None
        rig.daemon.signal()
        writers.kill_all()
        await rig.kill_daemon()
        await asyncio.gather(*running)
    await traffic.stop()
    await asyncio.sleep(0.05)  # the upstream handles what reached it before the end

    after = read_vault(rig.config())
    problems += reconcile(after, slots, tally.writes)
    problems += writers.failures
    problems += [f"proxy before the kill: {kind}" for kind in traffic.errors_before(end)][:5]
    usage_problems, figures = check_usage(
        before,
        after,
        traffic,
        upstream_count(upstream.seen),
        killed_at=killed_at,
        interval=FLUSH_INTERVAL,
        slack=FLUSH_SLACK,
    )
    problems += usage_problems
    problems += [f"daemon log: {line}" for line in daemon_log_problems(rig.daemon_log())]
    tally.usage.append(figures)
    return problems, after


@pytest.mark.timeout(SECONDS + 120)
async def test_kill_9_daemon_and_writers_round_after_round(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    print(f"crash test seed {SEED} (replay with VAULTD_CRASH_SEED={SEED})")
    rng = random.Random(SEED)
    upstream = await start_upstream()
    loop = asyncio.get_running_loop()
    root = tmp_path / "crash"
    root.mkdir()
    rig = Rig(root, upstream.url, flush_interval=FLUSH_INTERVAL)
    try:
        token = await rig.setup()
        slots = [Slot(f"w{i:02d}") for i in range(SLOTS)]
        tally = Tally()
        state = read_vault(rig.config())
        deadline = loop.time() + SECONDS
        problems: list[str] = []
        while not problems and tally.rounds < MAX_ROUNDS:
            if tally.rounds >= MIN_ROUNDS and loop.time() >= deadline:
                break
            tally.rounds += 1
            found, state = await one_life(rig, upstream, token, rng, slots, tally, state)
            problems += [f"round {tally.rounds}: {p}" for p in found]
        if not problems:
            found, state = await one_life(
                rig, upstream, token, rng, slots, tally, state, clean_stop=True
            )
            problems += [f"after SIGTERM: {p}" for p in found]
        print(tally.summary())
        assert not problems, tally.summary() + "\n" + "\n".join(problems[:20])
        assert sum(tally.writes.acknowledged.values()) > 0
    finally:
        await rig.kill_daemon()  # a failed check must not leave it running
