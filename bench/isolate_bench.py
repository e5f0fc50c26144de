"""What ``vaultd run --isolate`` adds to a command's start: wall time of ``vaultd run -- true``
against ``vaultd run --isolate -- true`` (and ``--net proxy-only``), one vault, one daemon.

Runs alternate (plain, isolate, proxy-only, plain, ...) so that drift hits all
alike; prints the median and the spread of each, and the medians' differences
(the target: at most 50 ms more with --isolate).

Usage: .venv/bin/python bench/isolate_bench.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script from bench/, beside the proxy bench and its port helpers.
from proxy_bench import free_port, wait_port

KEY = "sk-proj-BENCHisolate0123456789abcdefgh"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vaultd-isolate-bench-"))
    os.chmod(home, 0o700)
    port = free_port()
    config = home / "config.toml"
    config.write_text(f"[server]\nport = {port}\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "VAULTD_CONFIG": str(config),
    }
    vaultd = str(Path(sys.executable).with_name("vaultd"))
    daemon = None
    try:
        subprocess.run([vaultd, "init"], env=env, check=True, capture_output=True)
        subprocess.run(
            [vaultd, "add", "openai", "bench"],
            env=env,
            check=True,
            input=f"{KEY}\n".encode(),
            capture_output=True,
        )
        daemon = subprocess.Popen(
            [vaultd, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(port)
        base = [vaultd, "run", "--service", "openai"]
        variants = {
            "run": [*base, "--", "true"],
            "run --isolate": [*base, "--isolate", "--", "true"],
            "run --isolate --net proxy-only": [
                *base,
                "--isolate",
                "--net",
                "proxy-only",
                "--",
                "true",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for argv in variants.values():  # warm up: page cache, pyc files
            timed(argv, env, home)
        for _ in range(args.runs):
            for name, argv in variants.items():
                times[name].append(timed(argv, env, home))
        print(f"wall time of vaultd run, ms (median of {args.runs} alternated runs; min-max)")
        plain = statistics.median(times["run"])
        for name, values in times.items():
            median = statistics.median(values)
            extra = "" if name == "run" else f"   +{median - plain:.1f} ms over plain run"
            print(f"  {name:<32} {median:7.1f}  ({min(values):.1f}-{max(values):.1f}){extra}")
        print("  (target: --isolate adds at most 50 ms)")
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
