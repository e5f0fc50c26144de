"""Issue 17, items 7 and 11: what `vaultd run` did to a new user, done as they did it.

A real `vaultd serve` with an OpenAI key in front of a fake upstream, and
`vaultd run` as a process of its own: its exit status, what it says on
stderr, what the command got, and what was minted (nothing, where nothing
ran).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.served import KEY, Served, StartServer, served_openai

# What a user's shell profile may hold: real keys of several services.
PARENT_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-PARENTparentPARENT0001",
    "GITHUB_TOKEN": "ghp_PARENTparentPARENTparent0002",
    "OPENAI_API_KEY": "sk-proj-PARENTparentPARENT0003",
}
SHOW_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


@pytest.fixture
async def served(tmp_path: Path, aiohttp_server: StartServer) -> AsyncIterator[Served]:
    async with served_openai(tmp_path, aiohttp_server) as running:
        yield running


async def vaultd(
    served: Served, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    return await served.vaultd(*args, env=env)


# -- item 7: a mistyped option of run's is not a command ----------------------


@pytest.mark.parametrize(
    ("args", "typo", "meant"),
    [
        (("--servce", "openai", "--", "touch", "MARKER"), "--servce", "--service"),
        (("--isolat", "touch", "MARKER"), "--isolat", "--isolate"),
        (("--service", "openai", "--max-request", "3", "touch", "MARKER"), "--max-request", None),
        (("--ttl=1h", "--nmae=x", "touch", "MARKER"), "--nmae", "--name"),
    ],
)
async def test_a_mistyped_option_is_a_usage_error_listing_runs_options(
    served: Served, tmp_path: Path, args: tuple[str, ...], typo: str, meant: str | None
) -> None:
    marker = tmp_path / "ran"
    argv = [str(marker) if word == "MARKER" else word for word in args]
    code, out, err = await vaultd(served, "run", *argv)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Error: no such option: {typo}"), err
    if meant is not None:
        assert f"(did you mean {meant}?)" in last
    for option in ("--service", "--ttl", "--name", "--isolate", "--max-requests", "--policy"):
        assert option in last
    assert "Usage: vaultd run [OPTIONS] COMMAND..." in err
    assert "command not found" not in err and "Traceback" not in err
    # Nothing ran, nothing was minted.
    assert not marker.exists() and out == ""
    assert served.sessions() == []


async def test_an_option_after_the_command_or_after_the_separator_is_the_commands(
    served: Served,
) -> None:
    code, out, err = await vaultd(
        served,
        "run",
        "--service",
        "openai",
        sys.executable,
        "-c",
        "import sys; print(sys.argv)",
        "--servce",
    )
    assert (code, out.strip(), err) == (0, "['-c', '--servce']", "")
    # After --, a word like an option is what the user asked to run.
    code, out, err = await vaultd(served, "run", "--", "--servce")
    assert (code, err) == (127, "Error: command not found: --servce\n")


# -- item 11: a command that cannot start exits as a shell says ----------------


async def test_a_command_that_cannot_start_exits_127_or_126_and_mints_nothing(
    served: Served, tmp_path: Path
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    for argv, status, line in (
        (["no-such-program-xyz"], 127, "Error: command not found: no-such-program-xyz"),
        ([str(tmp_path / "missing.sh")], 127, f"Error: command not found: {tmp_path}/missing.sh"),
        ([str(script)], 126, f"Error: cannot run {script}: permission denied"),
        ([str(tmp_path)], 126, f"Error: cannot run {tmp_path}: is a directory"),
    ):
        code, out, err = await vaultd(served, "run", "--service", "openai", "--", *argv)
        assert (code, out, err) == (status, "", line + "\n")
    assert served.sessions() == []
    # Made executable, the same script runs.
    script.chmod(0o755)
    code, out, err = await vaultd(served, "run", "--", str(script))
    assert (code, out, err) == (0, "ran\n", "")


async def test_a_service_without_a_default_key_starts_with_a_warning(served: Served) -> None:
    code, out, err = await vaultd(
        served,
        *("run", "--service", "anthropic", "--", sys.executable, "-c"),
        "import os; print(os.environ['ANTHROPIC_API_KEY'][:8])",
    )
    assert code == 0, err
    assert out.strip() == "fn_sess_"
    assert err == (
        "vaultd run: anthropic has no default key, so its requests will fail: add one "
        "(vaultd add anthropic NAME) or choose one (vaultd default anthropic/NAME)\n"
    )
    # A key pinned by --credential that the service lacks: the same warning, for it.
    code, out, err = await vaultd(
        served, "run", "--service", "openai", "--credential", "nope", "--", "true"
    )
    assert code == 0, err
    assert err == (
        "vaultd run: openai has no key named 'nope' (--credential), so its requests will fail\n"
    )
    # Where the key is there, not a word.
    code, out, err = await vaultd(served, "run", "--service", "openai", "--", "true")
    assert (code, err) == (0, "")


async def test_real_keys_in_the_parent_environment_do_not_reach_the_command(
    served: Served,
) -> None:
    parent = {**PARENT_KEYS, "UNRELATED": "kept"}
    code, out, err = await vaultd(
        served, "run", "--service", "openai", "--", sys.executable, "-c", SHOW_ENV, env=parent
    )
    assert code == 0, err
    child = json.loads(out)
    assert child["OPENAI_API_KEY"].startswith("fn_sess_")
    assert "ANTHROPIC_API_KEY" not in child and "GITHUB_TOKEN" not in child
    assert child["UNRELATED"] == "kept"
    # Said once, by name only.
    assert err == (
        "vaultd run: not passing on ANTHROPIC_API_KEY, GITHUB_TOKEN (keys of services this "
        "session does not cover; add them with vaultd add, or name their service with "
        "--service)\n"
    )
    for value in PARENT_KEYS.values():
        assert value not in out + err
    assert KEY not in out + err
    # The same without --service: every service with a default key is covered, the rest not.
    code, out, err = await vaultd(served, "run", "--", sys.executable, "-c", SHOW_ENV, env=parent)
    assert code == 0, err
    child = json.loads(out)
    assert child["OPENAI_API_KEY"].startswith("fn_sess_")
    assert "ANTHROPIC_API_KEY" not in child and "GITHUB_TOKEN" not in child
    assert err.count("\n") == 1 and "ANTHROPIC_API_KEY, GITHUB_TOKEN" in err


async def test_a_run_is_named_by_its_first_two_words_or_its_name(
    served: Served, tmp_path: Path
) -> None:
    train = tmp_path / "project" / "train.py"
    train.parent.mkdir()
    train.write_text(
        "import os, urllib.request\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "request = urllib.request.Request(os.environ['OPENAI_BASE_URL'] + '/models',\n"
        "    headers={'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']})\n"
        "opener.open(request, timeout=10).read()\n"
    )
    secret = "hunter2-SECRETARG"
    # Stand-ins for tools this machine may not have.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gh", "npm"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    path = {"PATH": f"{bin_dir}:{served.env.vars['PATH']}"}
    for argv, name_args in (
        ([sys.executable, str(train), f"--password={secret}"], []),
        ([sys.executable, "-c", f"print('{secret}')"], []),
        (["env", f"PASSWORD={secret}", "true"], []),
        (["true", f"--password={secret}"], []),
        (["gh", "ghp_" + "A1b2C3d4" * 4 + "e5F6"], []),
        (["npm", "run"], []),
        (["true", secret], ["--name", "nightly eval"]),
    ):
        code, _out, err = await vaultd(
            served, "run", *name_args, "--service", "openai", "--", *argv, env=path
        )
        assert code == 0, err
    python = Path(sys.executable).name
    names = [name for _prefix, name, _expires, _revoked in served.sessions()]
    assert names == [
        f"run: {python} train.py",
        f"run: {python} -c",
        "run: env",
        "run: true",
        "run: gh",
        "run: npm run",
        "nightly eval",
    ]
    # What the user reads: the audit names the run that made the call.
    for _ in range(50):  # the daemon writes audit rows every second
        code, out, err = await vaultd(served, "audit", "--json")
        if json.loads(out):
            break
        await asyncio.sleep(0.2)
    code, table, err = await vaultd(served, "audit")
    assert code == 0, err
    assert f"run: {python} train.py" in table
    code, listing, err = await vaultd(served, "session", "list", "--all")
    assert secret not in table + listing
