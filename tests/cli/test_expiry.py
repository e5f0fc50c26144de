"""Expiry (DESIGN 14): `vaultd list` marks a key that expires within 14 days or has
expired, and `vaultd doctor` has a `warn` line for each; a key far from expiry is not."""

from __future__ import annotations

import sqlite3

from tests.support.cli import CLI
from vaultd.models import now

SOON = "sk-proj-SOONsoonSOONsoon000001"
LATER = "sk-proj-LATERlaterLATER000002"
GONE = "sk-proj-GONEgoneGONEgone000003"


def _stock(cli: CLI) -> None:
    cli.add("openai", "soon", SOON, "--expires", "3d")
    cli.add("openai", "later", LATER, "--expires", "90d")
    cli.add("anthropic", "gone", GONE, "--expires", "1d")
    # Expired yesterday: the CLI refuses a past --expires, so the row is aged by hand.
    conn = sqlite3.connect(cli.db_path)
    with conn:
        conn.execute("UPDATE credentials SET expires_at = ? WHERE name = 'gone'", (now() - 86400,))
    conn.close()


def _rows(cli: CLI) -> dict[str, str]:
    """`vaultd list`'s table rows by credential name."""
    lines = cli.ok("list").stdout.splitlines()
    return {line.split()[2]: line for line in lines[1:]}


def test_list_marks_keys_that_expire_soon_or_have_expired(initialised: CLI) -> None:
    _stock(initialised)
    rows = _rows(initialised)
    assert rows["soon"].endswith("in 3 days !"), rows["soon"]
    assert rows["later"].endswith("in 90 days"), rows["later"]
    assert "!" not in rows["later"] and "EXPIRED" not in rows["later"]
    assert rows["gone"].endswith("EXPIRED (1 day ago)"), rows["gone"]
    # `show` says the same; JSON keeps the API's shape (a timestamp, no marker).
    assert "expires    in 3 days !\n" in initialised.ok("show", "openai/soon").stdout
    listed = {item["name"]: item for item in initialised.listing()}
    assert isinstance(listed["soon"]["expires_at"], int)


def test_doctor_warns_of_each_key_that_expires_soon_or_has_expired(initialised: CLI) -> None:
    _stock(initialised)
    result = initialised.run("doctor")
    # A warning is not a failure: the daemon is not running here either.
    assert "FAIL" not in result.stdout, result.stdout
    warned = [line for line in result.stdout.splitlines() if line.startswith("warn expiry:")]
    assert len(warned) == 2, result.stdout
    soon, gone = sorted(warned, key=lambda line: "gone" in line)
    assert "openai/soon (" in soon and "expires in 3 days" in soon
    assert "anthropic/gone (" in gone and "EXPIRED 1 day ago" in gone
    assert "later" not in result.stdout
    for secret in (SOON, LATER, GONE):
        assert secret not in result.output
