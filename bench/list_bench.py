"""How long `vaultd list` takes over 100 credentials, as a user feels it.

Runs the installed `vaultd` as a real process (import time included) against a
throw-away vault, several times, and prints the median and spread of wall time.
Usage: .venv/bin/python bench/list_bench.py [--credentials 100] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def vaultd_command() -> list[str]:
    exe = Path(sys.executable).with_name("vaultd")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vaultd")
    if found:
        return [found]
    return [sys.executable, "-m", "vaultd"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="vaultd-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "VAULTD_"))}
    env["HOME"] = str(home)
    cmd = vaultd_command()
    try:
        subprocess.run([*cmd, "init"], env=env, check=True, capture_output=True)
        # Fill the vault through the library: 100 `vaultd add` processes would
        # only measure process start-up a hundred times.
        fill = (
            "import sys\n"
            "from vaultd.config import load_config\n"
            "from vaultd.core.vault import open_vault\n"
            "with open_vault(load_config()) as v:\n"
            "    dek = v.unlock()\n"
            "    for i in range(int(sys.argv[1])):\n"
            "        v.credentials.add(dek, service=('openai', 'github', 'anthropic')[i % 3],\n"
            "            name=f'key-{i}', secret=f'sk-bench-{i:04d}-abcdefghijklmnopqrstuvwxyz',\n"
            "            metadata={'team': 'bench', 'n': str(i)})\n"
        )
        subprocess.run([sys.executable, "-c", fill, str(args.credentials)], env=env, check=True)
        timings: list[float] = []
        for _ in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run([*cmd, "list"], env=env, capture_output=True, check=True)
            timings.append((time.perf_counter() - start) * 1000)
        rows = len(done.stdout.splitlines()) - 1
        assert rows == args.credentials, f"expected {args.credentials} rows, got {rows}"
        timings.sort()
        print(f"vaultd list over {args.credentials} credentials, {args.runs} runs (wall, ms):")
        print(
            f"  median {statistics.median(timings):.1f}  min {timings[0]:.1f}"
            f"  max {timings[-1]:.1f}  target < 250"
        )
        started = time.perf_counter()
        subprocess.run([*cmd, "list", "--json"], env=env, capture_output=True, check=True)
        print(f"  list --json once: {(time.perf_counter() - started) * 1000:.1f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
