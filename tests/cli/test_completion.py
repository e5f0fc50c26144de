"""`vaultd completion SHELL`: click's completion script, working in a real shell.

The bash test sources the script in a real bash and drives the function it
registers as bash does on TAB, with the venv's `vaultd` script first on PATH
(as an installed vaultd runs), so the script's callback reaches this vaultd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vaultd
from tests.support.daemon import vaultd_argv

BIN = Path(sys.executable).parent


def _shell_env(tmp_path: Path) -> dict[str, str]:
    if not (BIN / "vaultd").exists():
        pytest.skip(f"no vaultd script beside {sys.executable} (not a venv with vaultd installed)")
    home = tmp_path / "shell-home"
    home.mkdir(mode=0o700)
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        # The vaultd under test, whatever the venv's editable install points at.
        "PYTHONPATH": str(Path(vaultd.__file__).resolve().parent.parent),
    }


def _complete(env: dict[str, str], *words: str) -> list[str]:
    """What bash offers for ``words`` (the last one being completed), as TAB would."""
    script = (
        'eval "$(vaultd completion bash)"\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
        # As bash calls it: the command, the word being completed, the word before it.
        '_vaultd_completion vaultd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script, "bash", *words],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_se_to_session_serve_and_services(tmp_path: Path) -> None:
    env = _shell_env(tmp_path)
    assert sorted(_complete(env, "vaultd", "se")) == ["serve", "services", "session"]
    # Subcommands and options too, from the same script.
    assert "revoke" in _complete(env, "vaultd", "session", "")
    assert "--service" in _complete(env, "vaultd", "env", "--")
    # Completing never made a vault.
    assert not (tmp_path / "shell-home" / ".local").exists()


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "#compdef vaultd"), ("fish", "complete")])
def test_zsh_and_fish_scripts_are_printed_and_parse(
    tmp_path: Path, shell: str, marker: str
) -> None:
    done = subprocess.run(
        vaultd_argv("completion", shell), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout and "_VAULTD_COMPLETE" in done.stdout
    if shutil.which(shell):
        script = tmp_path / f"vaultd.{shell}"
        script.write_text(done.stdout)
        checked = subprocess.run(
            [shell, "-n", str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert checked.returncode == 0, checked.stderr


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = subprocess.run(
        vaultd_argv("completion", "tcsh"), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in done.stderr
