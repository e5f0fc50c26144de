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


# -- `vaultd systemd-unit` (issue 17, item 12) ---------------------------------


def test_the_packaged_unit_is_the_shipped_one() -> None:
    """What `vaultd systemd-unit` starts from is systemd/vaultd.service, byte for byte."""
    from vaultd.cli.unit import shipped_unit

    assert shipped_unit() == UNIT.read_text()


def generated(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    from tests.support.daemon import DaemonEnv

    daemon_env = DaemonEnv(tmp_path)
    return subprocess.run(
        [str(Path(sys.executable).with_name("vaultd")), "systemd-unit"],
        env={**daemon_env.vars, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(
    not (Path(sys.executable).parent / "vaultd").exists(),
    reason="no vaultd executable beside the interpreter",
)
def test_systemd_unit_prints_the_shipped_unit_running_this_vaultd(tmp_path: Path) -> None:
    # As a user's shell has it: the config where the service reads it.
    config = tmp_path / "home" / ".config" / "vaultd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("")
    result = generated(tmp_path, VAULTD_CONFIG=str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    exe = Path(sys.executable).parent / "vaultd"
    lines = result.stdout.splitlines()
    shipped = UNIT.read_text().splitlines()
    assert len(lines) == len(shipped)
    changed = [(a, b) for a, b in zip(shipped, lines, strict=True) if a != b]
    # Only ExecStart: every hardening line as the tests above check it.
    assert changed == [("ExecStart=%h/.local/bin/vaultd serve", f"ExecStart={exe} serve")]
    # It names a vaultd that runs.
    version = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("vaultd")


def test_systemd_unit_warns_when_the_service_would_not_find_the_vault(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    result = generated(tmp_path, VAULTD_DATA_DIR=str(elsewhere))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# vaultd as a systemd user service.")
    warnings = result.stderr.splitlines()
    # DaemonEnv's config is not ~/.config/vaultd/config.toml either.
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith("vaultd systemd-unit: warning: the unit's service reads ")
    assert warnings[1] == (
        f"vaultd systemd-unit: warning: the vault here is in {elsewhere}, but the unit's "
        f"service may write only {tmp_path / 'home' / '.local' / 'share' / 'vaultd'}: "
        "change ReadWritePaths= (and the config's [storage] data_dir) to match"
    )


@pytest.mark.parametrize(
    ("word", "executable", "written"),
    [
        ("/home/u/.venv/bin/vaultd", True, "/home/u/.venv/bin/vaultd"),
        ("/home/u/my tools/bin/vaultd", True, '"/home/u/my tools/bin/vaultd"'),
        ("/opt/100%/vaultd", True, '"/opt/100%%/vaultd"'),
        # A variable is expanded in arguments only.
        ("/opt/$HOME/vaultd", True, '"/opt/$HOME/vaultd"'),
        ("$HOME", False, '"$$HOME"'),
        ('a"b\\c', False, '"a\\"b\\\\c"'),
    ],
)
def test_a_word_is_written_so_that_systemd_reads_it_back(
    word: str, executable: bool, written: str
) -> None:
    from vaultd.cli.unit import unit_word

    assert unit_word(word, executable=executable) == written


def test_an_executable_systemd_would_refuse_is_one_line() -> None:
    from vaultd.cli.unit import unit_word
    from vaultd.errors import VaultdError

    for path in ('/opt/a"b/vaultd', "/opt/a\\b/vaultd", "/opt/it's/vaultd"):
        with pytest.raises(VaultdError, match="refuses quotes and backslashes"):
            unit_word(path, executable=True)
    with pytest.raises(VaultdError, match="control characters"):
        unit_word("/opt/a\nb/vaultd", executable=True)


def test_a_python_without_a_vaultd_script_is_run_as_a_module(tmp_path: Path) -> None:
    from vaultd.cli.unit import this_vaultd, unit_text

    python = tmp_path / "py env" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert this_vaultd(str(python)) == [str(python), "-P", "-m", "vaultd"]
    text = unit_text(this_vaultd(str(python)))
    assert f'ExecStart="{python}" -P -m vaultd serve' in text.splitlines()


@needs_analyze
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "vaultd").exists(),
    reason="no vaultd executable beside the interpreter",
)
def test_the_printed_unit_scores_and_verifies_as_the_shipped_one(tmp_path: Path) -> None:
    result = generated(tmp_path)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "printed" / "vaultd.service"
    unit.parent.mkdir()
    unit.write_text(result.stdout)
    assert exposure(unit) == exposure(UNIT)


@needs_analyze
def test_systemd_reads_an_odd_path_back_as_it_was(tmp_path: Path) -> None:
    """Quoted and escaped as ``unit_word`` does, a path with spaces, ``%`` and ``$``
    names that very executable to systemd itself."""
    from vaultd.cli.unit import unit_text

    exe = tmp_path / "my tools" / "100% $HOME" / "vaultd"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "units" / "vaultd.service"
    unit.parent.mkdir()
    unit.write_text(unit_text([str(exe)]))
    result = subprocess.run(
        [str(ANALYZE), "verify", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "Unknown key" in verify(tmp_path, "[Service]\nExecStart=/bin/true\nBogusKey=1\n").stderr:
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    else:
        pytest.skip("systemd-analyze verify does not work offline here")
