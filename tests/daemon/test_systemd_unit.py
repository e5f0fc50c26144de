"""systemd/vaultd.service: required settings, exposure score, and a clean verify."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "vaultd.service"
SOCKET = UNIT.with_name("vaultd.socket")
MAX_EXPOSURE = 2.0
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_unit_has_the_contracted_settings() -> None:
    s = settings()
    assert s["Type"] == ["notify"]
    assert s["ExecStart"][0].endswith("vaultd serve")
    # `systemctl --user reload vaultd` reloads the config (issue 17, item 3).
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["UMask"] == ["0077"]
    assert s["LimitCORE"] == ["0"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ProtectHome"] == ["read-only"]
    assert s["ReadWritePaths"] == ["%h/.local/share/vaultd"]
    assert s["MemoryDenyWriteExecute"] == ["yes"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["CapabilityBoundingSet"] == [""]
    # HTTPS upstreams need the internet families; nothing else.
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "IPAddressDeny" not in s and "PrivateNetwork" not in s
    assert s["WantedBy"] == ["default.target"]


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
def test_exposure_is_at_most_2() -> None:
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}"


@needs_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    """The parser reads a real score: an unhardened unit scores far above 2.0."""
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    assert exposure(bare) > MAX_EXPOSURE


def verify(
    tmp_path: Path, text: str, socket_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    # ExecStart must name an existing executable for verify: use this venv's vaultd.
    exe = Path(sys.executable).parent / "vaultd"
    unit = tmp_path / "vaultd.service"
    unit.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={exe}", text))
    units = [str(unit)]
    if socket_text is not None:
        (tmp_path / "vaultd.socket").write_text(socket_text)
        units.insert(0, str(tmp_path / "vaultd.socket"))
    return subprocess.run(
        [ANALYZE, "verify", "--no-pager", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_analyze
def test_verify_reports_nothing(tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "vaultd").exists():
        pytest.skip("no vaultd executable beside the interpreter")
    probe = verify(tmp_path, UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilegez="))
    if "Unknown key" not in probe.stderr:
        pytest.skip(f"systemd-analyze verify does not work offline here: {probe.stderr[:200]}")
    result = verify(tmp_path, UNIT.read_text(), SOCKET.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_socket_listens_on_loopback_only() -> None:
    lines = [line.strip() for line in SOCKET.read_text().splitlines()]
    assert [line for line in lines if line.startswith("Listen")] == ["ListenStream=127.0.0.1:3978"]
    assert "Accept=no" in lines
