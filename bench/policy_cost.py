"""What a session's request policy costs the proxy, in CPU instructions per proxied request.

Issue 13's target: a session with 5 rules and a model allow-list costs at most
3% of throughput at 64 connections against a session without a policy.
``proxy_bench.py --only policy`` measures that by wall time, but on a small
shared machine its A/A control (two tokens alike) spreads by 5 to 15%: it
cannot resolve 3%. Instructions executed by the daemon can: valgrind's
callgrind counts them the same however busy the machine is, and for a
process that spends its time in the interpreter they follow its CPU time
closely (a count, not a time: cache misses and stalls are not in it).

Each run: a fresh copy of one vault (two sessions, ``proxy_bench``'s: one
without a policy, one with ``POLICY_FLAGS``), a fresh ``vaultd serve`` under
callgrind (``PYTHONHASHSEED`` fixed, fast paths as by default), and ``N`` POST
chat completions (``CHAT_JSON``, whose model the policy allows) from a client
in another process, the first ``SERIAL`` one at a time and the rest over ``C``
keep-alive connections, every answer checked (200, the fake upstream's body);
then SIGTERM and the daemon's total count. The median run with no request
(start and stop) is subtracted, so that start-up does not dilute the figures.
Rounds alternate (baseline, no policy, policy); the figures are the medians.

The usage writer flushes every ``usage_flush_interval``, a wall-clock period:
under callgrind (some 50 times slower) it would flush 50 times as often per
request as the daemon really does, and how often would vary from run to run.
So here it flushes once, at shutdown (``--flush`` to change it).

``--compare metering`` measures metering's cost the same way, as
``proxy_bench``'s throughput runs see it: the same upstream served as
``openai`` (metered, ``usage = "openai"``) and as ``unmetered`` (``usage =
"none"``), one session, ``GET /v1/models`` (whose fake answer is a chat
completion with usage; ``--method POST`` sends ``CHAT_JSON`` to
``/v1/chat/completions`` instead).

Usage: .venv/bin/python bench/policy_cost.py [--requests 2000] [--connections 64]
       [--rounds 3] [--keep DIR]   (DIR keeps callgrind.out.* for callgrind_annotate)
       [--compare metering [--method GET|POST]]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Run as a script from bench/, beside the proxy bench: its fake upstream, its
# vault and sessions, its request body.
from proxy_bench import (
    CHAT_JSON,
    POLICY_FLAGS,
    UpstreamProtocol,
    bench_home,
    bench_sessions,
    free_port,
    start,
    wait_port,
)

PATH = "/proxy/openai/v1/chat/completions"
KINDS = ("baseline", "none", "policy")
# --compare metering: the service each kind is proxied as (proxy_bench's two).
METERING_KINDS = ("baseline", "unmetered", "metered")
METERING_SERVICE = {"unmetered": "unmetered", "metered": "openai"}
# The first requests of a run, one at a time: which code path makes the first
# instances of a class fixes how CPython lays out their attributes for the whole
# run, and under concurrency that varied (once in a few runs, 1.5% more).
SERIAL = 16


async def client(
    port: int,
    token: str,
    requests: int,
    connections: int,
    path: str = PATH,
    body: bytes | None = CHAT_JSON,
) -> None:
    """``requests`` POSTs of ``body`` to ``path`` (None: GETs): the first ``SERIAL``
    one at a time, the rest over ``connections`` keep-alive connections."""
    import aiohttp

    url = f"http://127.0.0.1:{port}{path}"
    method = "GET" if body is None else "POST"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    left = requests
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(count: int) -> None:
            nonlocal left
            while left > count:
                left -= 1
                async with session.request(method, url, headers=headers, data=body) as resp:
                    answer = await resp.read()
                if resp.status != 200 or answer != UpstreamProtocol.BODY:
                    raise SystemExit(f"vaultd answered {resp.status}: {answer[:300]!r}")

        await worker(max(0, requests - SERIAL))
        await asyncio.gather(*(worker(0) for _ in range(connections)))


def instructions(out_file: Path) -> int:
    """The total instruction count of a callgrind output file."""
    match = re.search(r"^(?:summary|totals): (\d+)", out_file.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no total in {out_file}")
    return int(match.group(1))


def counted_run(
    template: Path,
    env: dict[str, str],
    port: int,
    token: str,
    requests: int,
    connections: int,
    keep_as: Path | None = None,
    *,
    counted: bool = True,
    path: str = PATH,
    body: bytes | None = CHAT_JSON,
) -> int:
    """Instructions of one ``vaultd serve``, from start to exit, serving ``requests``
    (its callgrind output copied to ``keep_as``, if given); not ``counted``: 0, a
    run outside valgrind."""
    home = Path(tempfile.mkdtemp(prefix="vaultd-cost-"))
    try:
        shutil.copytree(template, home, dirs_exist_ok=True)
        run_env = {**env, "HOME": str(home), "VAULTD_CONFIG": str(home / "config.toml")}
        out, log = home / "callgrind.out", home / "valgrind.log"
        with log.open("wb") as log_file:
            callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            daemon = subprocess.Popen(
                [*(callgrind if counted else []), sys.executable, "-m", "vaultd", "serve"],
                env=run_env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            try:
                wait_port(port, timeout=600)
                if requests:
                    asyncio.run(client(port, token, requests, connections, path, body))
                daemon.send_signal(signal.SIGTERM)
                code = daemon.wait(timeout=1200)
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()
        if code != 0:
            raise SystemExit(f"vaultd exited {code}:\n{log.read_text()[-3000:]}")
        if not counted:
            return 0
        if keep_as is not None:
            shutil.copy(out, keep_as)
        return instructions(out)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def spread(values: list[float]) -> str:
    mid = statistics.median(values)
    return f"median {mid:>10,.0f}   range {min(values):,.0f}-{max(values):,.0f} " + (
        f"(±{(max(values) - min(values)) / 2 / mid * 100:.2f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", "-n", type=int, default=2000)
    parser.add_argument("--connections", "-c", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast-paths", default="auto", help="VAULTD_FAST_PATHS (default auto)")
    parser.add_argument("--flush", default="1h", help="usage_flush_interval (default 1h)")
    parser.add_argument("--keep", type=Path, help="copy each callgrind output file here")
    parser.add_argument(
        "--compare",
        choices=["policy", "metering"],
        default="policy",
        help="policy: a session's policy against none; metering: metered against unmetered",
    )
    parser.add_argument(
        "--method",
        choices=["GET", "POST"],
        default="GET",
        help="--compare metering: GET /v1/models as proxy_bench's throughput runs "
        "(default), or POST CHAT_JSON to /v1/chat/completions",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    metering = args.compare == "metering"
    kinds = METERING_KINDS if metering else KINDS

    up_port, vaultd_port = free_port(), free_port()
    template, env = bench_home(
        f'[services.openai]\nbase_url = "http://127.0.0.1:{up_port}"\n'
        f'[services.unmetered]\nbase_url = "http://127.0.0.1:{up_port}"\nusage = "none"\n'
        f'[server]\nport = {vaultd_port}\n[proxy]\nusage_flush_interval = "{args.flush}"\n',
        args.fast_paths,
    )
    env["PYTHONHASHSEED"] = "0"  # the same str hashes, dict layouts and set orders each run
    upstream = start([sys.executable, str(Path(__file__).with_name("proxy_bench.py")),
                      "--role", "upstream", "--port", str(up_port)])  # fmt: skip
    try:
        plain, policed = bench_sessions(env, ("openai", "unmetered"))
        wait_port(up_port)
        # Once outside valgrind first: the modules compiled since they last
        # changed, so that no counted run compiles them.
        counted_run(template, env, vaultd_port, plain, 0, 1, counted=False)
        # Metering: each kind's own warm run (SERIAL requests) is its baseline, so
        # that what its first requests load once (the price data, say) is not
        # counted as per-request cost, however many requests a run makes.
        runs = [(kind, 0 if kind == "baseline" else args.requests) for kind in kinds]
        if metering:
            runs = [(f"{kind}{suffix}", n) for kind in kinds[1:]
                    for suffix, n in ((" warm", SERIAL), ("", args.requests))]  # fmt: skip
        totals: dict[str, list[int]] = {label: [] for label, _ in runs}
        tail: str = "/v1/chat/completions"
        body: bytes | None = CHAT_JSON
        if metering and args.method == "GET":
            tail, body = "/v1/models", None
        what = f"{'GET' if body is None else 'POST'} {tail}"
        print(
            f"callgrind, {args.requests} {what} per run at "
            f"{args.connections} connections, {args.rounds} rounds (total instructions)\n"
            + ("  metered (openai) against unmetered (usage none)" if metering else
               f"  policy: {' '.join(POLICY_FLAGS)}")
        )  # fmt: skip
        for i in range(args.rounds):
            for label, n in runs:
                kind = label.split()[0]
                token = policed if kind == "policy" else plain
                path = f"/proxy/{METERING_SERVICE.get(kind, 'openai')}{tail}"
                name = label.replace(" ", "-")
                keep = args.keep / f"callgrind.out.{name}.{i + 1}" if args.keep else None
                total = counted_run(
                    template, env, vaultd_port, token, n, args.connections, keep,
                    path=path, body=body,
                )  # fmt: skip
                totals[label].append(total)
                print(f"  round {i + 1} {label:>14}: {total:>15,}", flush=True)
    finally:
        upstream.kill()
        upstream.wait()
        shutil.rmtree(template, ignore_errors=True)

    if metering:
        counted = args.requests - SERIAL
        per = {}
        for kind in kinds[1:]:
            pairs = zip(totals[kind], totals[f"{kind} warm"], strict=True)
            per[kind] = [(total - warm) / counted for total, warm in pairs]
        print(f"\ninstructions per request (each run less its kind's {SERIAL}-request warm run)")
        print(f"  unmetered        {spread(per['unmetered'])}")
        print(f"  metered          {spread(per['metered'])}")
        plain_kind, other, target = "unmetered", "metered", "none: see proxy_bench's 0.95x of naive"
    else:
        base = statistics.median(totals["baseline"])
        per = {kind: [(t - base) / args.requests for t in totals[kind]] for kind in kinds[1:]}
        baseline = spread([float(t) for t in totals["baseline"]])
        print(f"\ninstructions per request (baseline {baseline})")
        print(f"  no policy        {spread(per['none'])}")
        print(f"  5 rules + models {spread(per['policy'])}")
        plain_kind, other, target = "none", "policy", "<= +3%"
    ratio = statistics.median(per[other]) / statistics.median(per[plain_kind])
    paired = [p / n for p, n in zip(per[other], per[plain_kind], strict=True)]
    print(
        f"  {other} / {plain_kind} {ratio:.4f}: cost {(ratio - 1) * 100:+.2f}%   "
        f"(per round {' '.join(f'{(r - 1) * 100:+.2f}%' for r in paired)}; target {target})"
    )


if __name__ == "__main__":
    main()
