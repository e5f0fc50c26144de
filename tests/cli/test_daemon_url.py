"""Issue 17, item 4: clients find the daemon at VAULTD_URL, else at the config's host and port."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultd.cli.child import DEFAULT_URL, DaemonUnreachable, daemon_url
from vaultd.config import Config, load_config


def config(tmp_path: Path, server: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f"[server]\n{server}\n")
    return load_config(str(path))


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ("port = 4001", "http://127.0.0.1:4001"),
        ('host = "localhost"\nport = 4001', "http://localhost:4001"),
        ('host = "::1"\nport = 4001', "http://[::1]:4001"),
        # Listening on every address: loopback is one of them.
        ('host = "0.0.0.0"\nport = 4001', "http://127.0.0.1:4001"),
        ('host = "::"\nport = 4001', "http://[::1]:4001"),
    ],
)
def test_the_config_names_the_daemon(tmp_path: Path, server: str, url: str) -> None:
    assert daemon_url({}, config(tmp_path, server)) == url
    # VAULTD_URL wins (an empty one is unset).
    assert daemon_url({"VAULTD_URL": "http://127.0.0.1:5/"}, config(tmp_path, server)) == (
        "http://127.0.0.1:5"
    )
    assert daemon_url({"VAULTD_URL": ""}, config(tmp_path, server)) == url


def test_defaults_and_without_a_config(tmp_path: Path) -> None:
    assert daemon_url({}, config(tmp_path, "")) == DEFAULT_URL == "http://127.0.0.1:3978"
    assert daemon_url({}) == DEFAULT_URL


def test_a_port_or_host_a_client_cannot_use_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable) as zero:
        daemon_url({}, config(tmp_path, "port = 0"))
    assert str(zero.value) == (
        "[server] port is 0 (any free port), so clients cannot tell where the daemon listens:"
        ' set VAULTD_URL to the address its log shows ("listening on ...")'
    )
    with pytest.raises(DaemonUnreachable) as lan:
        daemon_url({}, config(tmp_path, 'host = "192.168.1.5"'))
    assert str(lan.value).startswith("[server] host '192.168.1.5' is not a loopback address")
    # Either is fine when VAULTD_URL says where to go.
    assert daemon_url({"VAULTD_URL": "http://127.0.0.1:7"}, config(tmp_path, "port = 0")) == (
        "http://127.0.0.1:7"
    )
