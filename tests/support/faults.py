"""A real daemon, a fake upstream, CLI writers and proxy traffic, for fault tests.

Shared by tests/store/test_crash.py, tests/store/test_concurrency.py and test_soak.py, so
that the soak measures exactly what the tests check. Nothing here asserts:
every check returns its problems as text, and callers decide (a test fails, the
soak counts them and fails).

The model of the vault is a set of named slots in one service (``writes``).
Each slot holds the secrets it *may* hold now: one value after an
acknowledged write (the CLI exited 0), the value before and the value after
while a write whose process was killed is unresolved (it may or may not have
committed). A slot with an unresolved write takes no further writes until the
vault has been read back, which turns it into one value again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.daemon import DaemonEnv, vaultd_argv
from tests.support.upstream import Seen
from vaultd.config import Config, load_config
from vaultd.core.vault import open_vault
from vaultd.errors import CryptoError

TRAFFIC_SERVICE = "openai"
TRAFFIC_NAME = "traffic"
TRAFFIC_SECRET = "sk-proj-TRAFFICkey0123456789abcdef"
WRITE_SERVICE = "writes"
# What a user could see when SQLite gives up waiting for a lock.
LOCK_ERRORS = ("database is locked", "database table is locked", "SQLITE_BUSY")

# `vaultd serve` with a flush interval below one second, which the config
# cannot express (it takes whole seconds): the crash test needs a short one so
# that "lost at most one interval" is a tight bound. Everything else is the
# daemon's own start-up path (vaultd.daemon.server.serve: umask, lock, signals).
_SERVE_WITH_INTERVAL = """
import dataclasses, sys
from vaultd.config import load_config
from vaultd.daemon.server import serve
config = dataclasses.replace(load_config(), usage_flush_interval=float(sys.argv[1]))
sys.exit(serve(config))
"""


def lock_error_in(text: str) -> bool:
    return any(marker in text for marker in LOCK_ERRORS)


@dataclass
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        last = self.stderr.strip().splitlines()[-1:] or [""]
        return f"vaultd {' '.join(self.args)}: exit {self.returncode}: {last[0]}"


class Child:
    """A subprocess, signalled through a pidfd rather than ``Process.kill()``.

    ``Process.kill()`` ends in ``Popen.send_signal``, which polls first
    (bpo-38630); that poll reaps a child that has just exited before asyncio's
    watcher thread can, and the watcher then reports exit 255 ("Unknown child
    process pid"). Here that turned an acknowledged write into a failed one. A
    pidfd names this one process, dead or alive, until closed, and signalling
    it reaps nothing. Opened right after the spawn: a vaultd process lives far
    longer than that.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._fd: int | None = os.pidfd_open(proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int = signal.SIGKILL) -> None:
        if self._fd is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._fd, sig)

    async def wait(self) -> int:
        code = await self.proc.wait()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return code


class Rig:
    """One vault on disk (kept across daemon restarts), its config, and the daemon."""

    def __init__(self, root: Path, upstream_url: str, *, flush_interval: float | None) -> None:
        # The environment of tests/daemon/test_serve_process.py: HOME and the XDG
        # directories under root, a free loopback port.
        self.env = DaemonEnv(root)
        self.root = root
        self.flush_interval = flush_interval
        (root / "config.toml").write_text(
            f"[server]\nport = {self.env.port}\n"
            '[proxy]\nread_timeout = "30s"\n'
            f'[services.{TRAFFIC_SERVICE}]\nbase_url = "{upstream_url}"\n'
            f'[services.{WRITE_SERVICE}]\nbase_url = "{upstream_url}"\n'
        )
        self.daemon: Child | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env.port}"

    def config(self) -> Config:
        return load_config(env=self.env.vars)

    async def spawn_cli(self, *args: str) -> Child:
        proc = await self.env.spawn(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return Child(proc)

    async def cli(self, *args: str, stdin: str = "", timeout: float = 60) -> CliResult:
        proc = await self.spawn_cli(*args)
        return await finish(proc, args, stdin, timeout)

    async def setup(self) -> str:
        """A new vault with the traffic key; a proxy-only token for every service."""
        for args, stdin in (
            (("init",), ""),
            (("add", TRAFFIC_SERVICE, TRAFFIC_NAME), TRAFFIC_SECRET + "\n"),
        ):
            result = await self.cli(*args, stdin=stdin)
            if result.returncode != 0:
                raise RuntimeError(result.describe())
        made = await self.cli("session", "create", "--scope", "proxy", "--ttl", "never")
        if made.returncode != 0:
            raise RuntimeError(made.describe())
        return made.stdout.strip()

    async def start_daemon(self) -> Child:
        self.starts += 1
        log = self.root / f"daemon-{self.starts:03d}.stderr"
        if self.flush_interval is None:
            argv = vaultd_argv("serve")
        else:
            argv = [sys.executable, "-c", _SERVE_WITH_INTERVAL, str(self.flush_interval)]
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env.vars,
                cwd=self.root,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        self.daemon = Child(proc)
        return self.daemon

    def daemon_log(self, start: int | None = None) -> str:
        number = self.starts if start is None else start
        path = self.root / f"daemon-{number:03d}.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_healthy(self, timeout: float = 30) -> None:
        assert self.daemon is not None
        proc = self.daemon.proc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as client:
            while loop.time() < deadline:
                if proc.returncode is not None:
                    raise RuntimeError(f"daemon exited {proc.returncode}: {self.daemon_log()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with client.get(f"{self.base_url}/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.03)
        raise RuntimeError(f"daemon not healthy after {timeout}s: {self.daemon_log()}")

    async def kill_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.signal(signal.SIGKILL)
            await self.daemon.wait()

    async def stop_daemon(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd stops it: drain, flush, exit 0."""
        assert self.daemon is not None
        self.daemon.signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.daemon.wait(), timeout)
        finally:
            await self.kill_daemon()


async def finish(child: Child, args: tuple[str, ...], stdin: str, timeout: float) -> CliResult:
    try:
        out, err = await asyncio.wait_for(child.proc.communicate(stdin.encode()), timeout)
    except (BrokenPipeError, ConnectionResetError):
        # Killed before it read its stdin.
        out, err = b"", b""
    except TimeoutError:
        child.signal(signal.SIGKILL)
        await child.wait()
        raise
    code = await child.wait()
    return CliResult(args, code, out.decode(errors="replace"), err.decode(errors="replace"))


def daemon_log_problems(text: str) -> list[str]:
    """Lines of a daemon log that mean a fault was mishandled rather than survived."""
    bad = (" ERROR ", "Traceback", "usage flush failed", *LOCK_ERRORS)
    return [line for line in text.splitlines() if any(b in line for b in bad)]


# -- the vault as the CLI promised it ------------------------------------------------------


@dataclass
class Slot:
    name: str
    possible: set[str | None] = field(default_factory=lambda: {None})  # None: absent
    busy: bool = False
    # What a killed, unresolved write would have left (one item), for the figures.
    killed_write: list[str | None] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return len(self.possible) == 1

    @property
    def value(self) -> str | None:
        return next(iter(self.possible))


@dataclass
class WriteCounts:
    acknowledged: Counter[str] = field(default_factory=Counter)  # verb -> exit 0
    killed: Counter[str] = field(default_factory=Counter)  # verb -> SIGKILLed by us
    killed_landed: int = 0  # killed writes that had committed all the same
    lost: int = 0  # acknowledged writes the vault no longer shows
    labels: dict[str | None, str] = field(default_factory=dict)  # secret -> "rotate #12"

    def label(self, secret: str | None) -> str:
        """A secret as the write that stored it, for messages (never the value)."""
        if secret is None:
            return "absent"
        return self.labels.get(secret, "a secret no writer stored")


class Writers:
    """Lanes of CLI processes adding, rotating and removing credentials in ``slots``.

    Each process may be SIGKILLed at a random moment of its life, and every
    running one is killed by ``kill_all`` (the end of a round).
    """

    def __init__(self, rig: Rig, rng: random.Random, slots: list[Slot], counts: WriteCounts):
        self.rig = rig
        self.rng = rng
        self.slots = slots
        self.counts = counts
        self.failures: list[str] = []
        self.running: set[Child] = set()
        self.stopped = asyncio.Event()
        self._serial = 0

    def _secret(self, verb: str) -> str:
        self._serial += 1
        secret = f"sk-crash-{self._serial:06d}-{self.rng.getrandbits(64):016x}"
        self.counts.labels[secret] = f"{verb} #{self._serial}"
        return secret

    async def lane(self, kill_chance: float, max_kill_delay: float) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopped.is_set():
            free = [s for s in self.slots if s.settled and not s.busy]
            if not free:
                # Every slot is taken or unresolved until the next read-back.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), 0.05)
                continue
            slot = self.rng.choice(free)
            before = slot.value
            if before is None:
                verb, after = "add", self._secret("add")
                args: tuple[str, ...] = ("add", WRITE_SERVICE, slot.name, "--json")
            elif self.rng.random() < 0.7:
                verb, after = "rotate", self._secret("rotate")
                args = ("rotate", f"{WRITE_SERVICE}/{slot.name}", "--json")
            else:
                verb, after = "rm", None
                args = ("rm", f"{WRITE_SERVICE}/{slot.name}", "--yes")
            kill_delay = (
                self.rng.uniform(0, max_kill_delay) if self.rng.random() < kill_chance else None
            )
            slot.busy = True
            try:
                child = await self.rig.spawn_cli(*args)
                self.running.add(child)
                if self.stopped.is_set():
                    child.signal()  # spawned as the round ended: it dies with the rest
                timer = None if kill_delay is None else loop.call_later(kill_delay, child.signal)
                result = await finish(child, args, "" if after is None else after + "\n", 60)
                if timer is not None:
                    timer.cancel()
                self.running.discard(child)
                if result.returncode == 0:
                    slot.possible = {after}
                    self.counts.acknowledged[verb] += 1
                    if lock_error_in(result.stderr) or "Traceback" in result.stderr:
                        self.failures.append(result.describe())
                elif result.returncode == -signal.SIGKILL:
                    slot.possible = {before, after}
                    slot.killed_write = [after]
                    self.counts.killed[verb] += 1
                else:
                    # A write that reported failure must not have happened: the
                    # slot stays as it was, and the read-back will say if not.
                    self.failures.append(result.describe())
            finally:
                slot.busy = False

    def kill_all(self) -> None:
        self.stopped.set()
        for child in list(self.running):
            child.signal()


# -- reading the vault back (the daemon is not running) ---------------------------------------


@dataclass
class VaultState:
    integrity: list[str]
    secrets: dict[str, str | None]  # every credential of WRITE_SERVICE; None: does not open
    use_count: int  # of the traffic credential
    audited: set[str]  # request ids of its successful proxied calls in the audit table


def read_vault(config: Config) -> VaultState:
    """What is on disk, through vaultd's own code (the same checks every command makes)."""
    with open_vault(config) as vault:
        integrity = [str(r[0]) for r in vault.db.execute("PRAGMA integrity_check").fetchall()]
        dek = vault.unlock()
        secrets: dict[str, str | None] = {}
        for credential in vault.credentials.list(service=WRITE_SERVICE):
            try:
                secrets[credential.name] = vault.credentials.reveal(dek, credential)
            except CryptoError:
                secrets[credential.name] = None
        traffic = vault.credentials.find(TRAFFIC_SERVICE, TRAFFIC_NAME)
        if traffic is None:
            return VaultState(integrity, secrets, -1, set())
        audited = {
            str(row[0])
            for row in vault.db.execute(
                "SELECT request_id FROM audit WHERE credential_id = ? AND status < 400",
                [traffic.id],
            )
        }
        return VaultState(integrity, secrets, traffic.use_count, audited)


def reconcile(state: VaultState, slots: Iterable[Slot], counts: WriteCounts) -> list[str]:
    """Check the read-back against what may be there; settle every slot to what is."""
    problems: list[str] = []
    if state.integrity != ["ok"]:
        problems.append(f"integrity_check: {'; '.join(state.integrity[:3])}")
    if state.use_count < 0:
        problems.append(f"the acknowledged credential {TRAFFIC_SERVICE}/{TRAFFIC_NAME} is gone")
    known = set()
    for slot in slots:
        known.add(slot.name)
        present = slot.name in state.secrets
        actual = state.secrets.get(slot.name)
        if present and actual is None:
            problems.append(f"{WRITE_SERVICE}/{slot.name} does not open")
            counts.lost += 1
            continue
        if actual not in slot.possible:
            counts.lost += 1
            problems.append(
                f"{WRITE_SERVICE}/{slot.name} holds {counts.label(actual)}, expected "
                + " or ".join(sorted(counts.label(s) for s in slot.possible))
            )
        if slot.killed_write and slot.killed_write[0] == actual:
            counts.killed_landed += 1
        slot.killed_write = []
        slot.possible = {actual}
    for stray in sorted(set(state.secrets) - known):
        problems.append(f"{WRITE_SERVICE}/{stray} exists but was never written")
    return problems


# -- proxy traffic -----------------------------------------------------------------------------


@dataclass
class Traffic:
    """Clients of the proxy using the traffic key: plain calls and SSE streams."""

    base_url: str
    token: str
    plain: int = 3
    sse: int = 1
    sse_events: int = 5
    sse_gap: float = 0.05
    ok: list[tuple[float, str]] = field(default_factory=list)  # (answered at, request id)
    ok_sse: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when, kind)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: aiohttp.ClientSession | None = None

    def start(self) -> None:
        # No retries, no keep-alive reuse across a restart: one session per daemon life.
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for i in range(self.plain):
            self._tasks.append(asyncio.create_task(self._run(f"/v1/traffic/{i}", sse=False)))
        for i in range(self.sse):
            query = f"?n={self.sse_events}&gap={self.sse_gap}&c={i}"
            self._tasks.append(asyncio.create_task(self._run("/v1/sse" + query, sse=True)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _run(self, path: str, *, sse: bool) -> None:
        loop = asyncio.get_running_loop()
        assert self._client is not None
        url = f"{self.base_url}/proxy/{TRAFFIC_SERVICE}{path}"
        headers = {"Authorization": f"Bearer {self.token}"}
        while True:
            try:
                async with self._client.get(url, headers=headers) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        self.errors.append((loop.time(), f"HTTP {resp.status}"))
                    elif sse and body.count(b"data: ") != self.sse_events:
                        self.errors.append((loop.time(), "SSE stream cut short"))
                    else:
                        self.ok.append((loop.time(), resp.headers["X-Request-Id"]))
                        self.ok_sse += sse
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.errors.append((loop.time(), type(exc).__name__))
                await asyncio.sleep(0.02)  # the daemon is down: do not spin

    def errors_before(self, when: float) -> list[str]:
        return [kind for at, kind in self.errors if at < when]


def upstream_count(seen: list[Seen]) -> int:
    """Calls the upstream received with the traffic key (the ground truth of use)."""
    wanted = f"Bearer {TRAFFIC_SECRET}"
    return sum(1 for item in seen if item.headers.get("Authorization") == wanted)


@dataclass
class UsageFigures:
    served: int  # answered 200 to the client during this daemon life
    received: int  # upstream calls with the traffic key during it
    counted: int  # use_count increase
    lost: int  # received - counted
    in_flight: int  # received but never answered whole (killed mid-call)
    oldest_lost_age: float  # seconds before the kill the oldest uncounted answer was given
    served_last_interval: int  # answers in the last flush interval before the kill


def check_usage(
    before: VaultState,
    after: VaultState,
    traffic: Traffic,
    received: int,
    *,
    killed_at: float | None,
    interval: float,
    slack: float,
) -> tuple[list[str], UsageFigures]:
    """Usage counters against what the upstream and the clients saw.

    Write-behind loses, in a kill -9, the batch not yet committed: the calls
    recorded since the last committed flush took its batch. The flusher takes
    a batch every ``interval`` plus the time a flush takes, so every answer
    given more than ``interval + slack`` before the kill must be counted
    (``slack`` covers the flush's own write and scheduling delays on a busy
    machine). The calls counted are checked one by one: a call is counted
    exactly when its audit row (same transaction) is there, and its request id
    says which answer it was. Calls in flight at the kill may go either way.
    Without a kill (SIGTERM) nothing may be lost.
    """
    problems: list[str] = []
    counted = after.use_count - before.use_count
    new_rows = after.audited - before.audited
    if counted != len(new_rows):
        problems.append(
            f"use_count rose by {counted} but {len(new_rows)} audit rows were added:"
            " the counter and the audit log are not written together"
        )
    if counted > received:
        problems.append(f"use_count rose by {counted}, more than the {received} calls made")
    lost_ages = [
        (killed_at if killed_at is not None else at) - at
        for at, request_id in traffic.ok
        if request_id not in after.audited
    ]
    window = interval + slack
    if killed_at is None:
        if lost_ages or counted != received:
            problems.append(
                f"after a clean stop {len(lost_ages)} answered calls are unaudited and"
                f" use_count rose by {counted} for {received} calls"
            )
    else:
        late = [age for age in lost_ages if age > window]
        if late:
            problems.append(
                f"{len(late)} calls answered up to {max(late):.3f}s before the kill were"
                f" never counted; the bound is one flush interval ({interval}s) + {slack}s"
            )
    cutoff = (killed_at or 0.0) - interval
    figures = UsageFigures(
        served=len(traffic.ok),
        received=received,
        counted=counted,
        lost=received - counted,
        in_flight=max(0, received - len(traffic.ok)),
        oldest_lost_age=max(lost_ages, default=0.0),
        served_last_interval=sum(1 for at, _ in traffic.ok if at >= cutoff),
    )
    if killed_at is not None and figures.lost > figures.in_flight + sum(
        1 for at, _ in traffic.ok if at >= killed_at - window
    ):
        problems.append(f"{figures.lost} uses lost: more than the bound allows ({figures})")
    return problems, figures


async def check_via_proxy(
    base_url: str, token: str, slots: Iterable[Slot], seen: list[Seen], tag: str
) -> list[str]:
    """Each settled slot through the daemon: the upstream must get exactly that secret.

    The strongest check that a secret opens: the daemon decrypts it and the
    recording upstream sees the real key; an absent slot must be a 404.
    """
    problems: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        for slot in slots:
            path = f"/verify/{slot.name}?tag={tag}"
            headers = {"Authorization": f"Bearer {token}", "X-Vaultd-Credential": slot.name}
            async with client.get(f"{base_url}/proxy/{WRITE_SERVICE}{path}", headers=headers) as r:
                await r.read()
                status = r.status
            if slot.value is None:
                if status != 404:
                    problems.append(
                        f"{WRITE_SERVICE}/{slot.name} was removed but proxies ({status})"
                    )
                continue
            got = [s.headers.get("Authorization") for s in seen if s.path_qs == path]
            if status != 200 or got != [f"Bearer {slot.value}"]:
                problems.append(
                    f"{WRITE_SERVICE}/{slot.name}: proxy answered {status}; the upstream"
                    f" {'got another key' if got else 'got nothing'}"
                )
    return problems


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def environ_seed(var: str) -> int:
    """The seed from ``var``, or a fresh one (printed by the caller to replay the run)."""
    text = os.environ.get(var, "").strip()
    return int(text) if text else random.SystemRandom().randrange(2**32)
