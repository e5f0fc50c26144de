"""Process hygiene: every `vaultd` process disables core dumps and is not dumpable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import ctypes, resource, sys\n"
    "from vaultd.cli import main as cli\n"
    "sys.argv = ['vaultd', 'services']\n"
    "try:\n"
    "    cli.main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "PR_GET_DUMPABLE = 3\n"
    "dumpable = ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)\n"
    "print(resource.getrlimit(resource.RLIMIT_CORE), dumpable)\n"
)


def test_cli_main_hardens_the_process(isolated_home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={"HOME": str(isolated_home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(0, 0) 0", result.stdout
