"""Config files for tests: every path under the test's own directory, never the real home."""

from __future__ import annotations

from pathlib import Path

from vaultd.config import Config, load_config


def write_api_config(tmp_path: Path, extra: str = "") -> Config:
    """A config whose every path is under ``tmp_path``; nothing reads the real home."""
    home = tmp_path / "api-home"
    home.mkdir(mode=0o700, exist_ok=True)
    path = tmp_path / "vaultd.toml"
    path.write_text(
        f'[storage]\ndata_dir = "{home}/data"\n'
        f'[crypto]\nkey_file = "{home}/config/master.key"\n'
        '[services.local]\nbase_url = "http://127.0.0.1:9"\n' + extra
    )
    return load_config(config_path=str(path), env={"HOME": str(home)})


def write_proxy_config(
    path: Path, upstream_url: str, extra: str = "", *, proxy: str = ""
) -> Config:
    """Every service at ``upstream_url``; ``proxy`` adds lines to ``[proxy]``, ``extra`` tables."""
    path.write_text(
        f"""
[proxy]
usage_flush_interval = "1s"
connect_timeout = "2s"
read_timeout = "1s"
max_request_body = "64KiB"
{proxy}

[services.openai]
base_url = "{upstream_url}"

[services.anthropic]
base_url = "{upstream_url}"

[services.github]
base_url = "{upstream_url}"

[services.hdr]
base_url = "{upstream_url}/hdr"
auth = "header"
header = "X-Custom-Key"
template = "token {{secret}}"

[services.basicsvc]
base_url = "{upstream_url}"
auth = "basic"

[services.querysvc]
base_url = "{upstream_url}"
auth = "query"
query_param = "key"
{extra}
"""
    )
    return load_config(config_path=str(path))
