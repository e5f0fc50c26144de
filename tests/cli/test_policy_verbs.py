"""Request policies from the command line (DESIGN 11), on a real database file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import CLI


def sessions(cli: CLI) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(cli.ok("session", "list", "--json").stdout)
    return listed


def write_config(cli: CLI, text: str) -> None:
    path = cli.home / ".config" / "vaultd" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_session_create_stores_the_policy_its_flags_describe(initialised: CLI) -> None:
    created = initialised.ok(
        "session",
        "create",
        "--allow",
        "post /v1/chat/completions",
        "--allow",
        "GET,HEAD /v1/models/*",
        "--deny",
        "* /v1/files/**",
        "--model",
        "gpt-4o-mini",
        "--model",
        "claude-*",
        "--credential",
        "primary",
    )
    assert created.stdout.strip().startswith("fn_sess_")
    # Said on stderr, normalised as it is stored.
    assert "policy allow POST /v1/chat/completions, GET,HEAD /v1/models/*" in created.stderr
    (made,) = sessions(initialised)
    assert made["policy"] == {
        "allow": ["POST /v1/chat/completions", "GET,HEAD /v1/models/*"],
        "deny": ["* /v1/files/**"],
        "models": ["gpt-4o-mini", "claude-*"],
        "credential": "primary",
    }


def test_read_only_is_get_head_and_options_everywhere(initialised: CLI) -> None:
    initialised.ok("session", "create", "--read-only")
    initialised.ok("session", "create")
    with_policy, without = sessions(initialised)
    assert with_policy["policy"] == {
        "allow": ["GET,HEAD,OPTIONS /**"],
        "deny": [],
        "models": [],
        "credential": None,
    }
    assert without["policy"] is None


def test_a_named_policy_is_copied_from_the_config_and_the_flags_add_to_it(
    initialised: CLI,
) -> None:
    write_config(
        initialised,
        '[policies.chat]\nallow = ["POST /v1/chat/completions"]\nmodels = ["gpt-4o-mini"]\n',
    )
    initialised.ok("session", "create", "--policy", "chat", "--deny", "DELETE /**")
    # A copy: changing the config later does not change the session.
    write_config(initialised, '[policies.chat]\nallow = ["* /**"]\n')
    (made,) = sessions(initialised)
    assert made["policy"] == {
        "allow": ["POST /v1/chat/completions"],
        "deny": ["DELETE /**"],
        "models": ["gpt-4o-mini"],
        "credential": None,
    }


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--allow", "GET"), "Error: --allow 'GET': a rule needs a path"),
        (("--allow", "/v1/x"), "Error: --allow '/v1/x': a rule needs methods before its path"),
        (("--deny", "GET /a/***"), "Error: --deny 'GET /a/***': \"***\" is not a glob"),
        (("--allow", ""), "Error: --allow '': a rule must not be empty"),
        (("--allow", "GET v1"), 'must start with "/"'),
        (("--model", ""), 'Error: --model: "": a model glob must be 1 to 200 characters'),
        (("--allow", "GET /" + "a" * 2000), "a rule must be at most 1024 characters"),
        (("--policy", "nope"), "Error: --policy 'nope': no [policies.nope] in the config"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it_and_nothing_is_made(
    initialised: CLI, args: tuple[str, ...], says: str
) -> None:
    err = initialised.fails("session", "create", *args, code=2)
    assert says in err.splitlines()[-1]
    assert sessions(initialised) == []


def test_too_many_rules_is_one_line(initialised: CLI) -> None:
    args = [item for i in range(201) for item in ("--allow", f"GET /r{i}")]
    err = initialised.fails("session", "create", *args, code=2)
    assert err.splitlines()[-1] == "Error: --allow: must be a list of at most 200 rules"


def test_a_bad_named_policy_names_its_table_and_key(initialised: CLI) -> None:
    write_config(
        initialised,
        '[policies.bad]\nallow = ["GET /ok", "GET"]\n[policies.odd]\nmodel = ["x"]\n',
    )
    err = initialised.fails("session", "create", "--policy", "bad", code=2)
    assert err.splitlines()[-1] == (
        'Error: [policies.bad] allow[1]: "GET": a rule needs a path, as in "GET /v1/**" or "* /**"'
    )
    err = initialised.fails("session", "create", "--policy", "odd", code=2)
    assert "[policies.odd] model: is not one of allow, deny, models, credential" in err
    assert sessions(initialised) == []


def test_a_policy_table_that_is_not_a_table_is_a_config_error(cli_env: CLI) -> None:
    write_config(cli_env, '[policies]\nchat = "POST /v1/chat/completions"\n')
    err = cli_env.fails("init")
    assert err == ("Error: [policies.chat] must be a table (allow, deny, models, credential)")


def test_session_policy_shows_adds_to_and_clears_a_policy(initialised: CLI) -> None:
    initialised.ok("session", "create", "--model", "gpt-4o-mini")
    (made,) = sessions(initialised)
    prefix = str(made["id"])[:13]
    shown = initialised.ok("session", "policy", prefix).stdout
    assert shown.strip().endswith("policy models gpt-4o-mini")
    initialised.ok("session", "policy", prefix, "--read-only", "--model", "claude-*")
    assert sessions(initialised)[0]["policy"] == {
        "allow": ["GET,HEAD,OPTIONS /**"],
        "deny": [],
        "models": ["gpt-4o-mini", "claude-*"],
        "credential": None,
    }
    out = initialised.ok("session", "policy", prefix, "--clear", "--deny", "DELETE /**").stdout
    assert out.strip().endswith("policy deny DELETE /**")
    initialised.ok("session", "policy", prefix, "--clear")
    assert sessions(initialised)[0]["policy"] is None
    # A bad rule changes nothing.
    initialised.ok("session", "policy", prefix, "--model", "gpt-4o-mini")
    initialised.fails("session", "policy", prefix, "--allow", "GET", code=2)
    assert sessions(initialised)[0]["policy"]["models"] == ["gpt-4o-mini"]


def test_the_policies_in_config_example_work_as_written(initialised: CLI) -> None:
    example = (Path(__file__).parents[2] / "config.example.toml").read_text()
    # The commented-out [policies.NAME] tables, uncommented.
    lines = example.splitlines()
    start = lines.index("# [policies.chat-mini]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("# ").removeprefix("#"))
    write_config(initialised, "\n".join(block) + "\n")
    initialised.ok("session", "create", "--policy", "chat-mini")
    initialised.ok("session", "create", "--policy", "read-only")
    chat, read_only = sessions(initialised)
    assert chat["policy"]["models"] == ["gpt-4o-mini"]
    assert read_only["policy"]["allow"] == ["GET,HEAD,OPTIONS /**"]
