"""vaultd's token at a source: AppRole or a token file, renewed before it expires.

- ``approle``: ``POST /v1/auth/approle/login`` with the role_id and the
  secret_id read from its file (0600, or systemd's credential directory).
- ``token_file``: a token a person got with ``bao login`` (``~/.vault-token``),
  checked with ``lookup-self``; read again when the source refuses it.

Past half of its lease the token is renewed (``renew-self``); a refused
renewal logs in again. The token lives in this object only: never on disk,
never in a log line, an error or a ``repr``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from vaultd.errors import UnsafePermissions, VaultdError
from vaultd.fsperms import check_private
from vaultd.sourceconfig import SourceSettings
from vaultd.sources.client import SourceClient, SourceDown

MAX_FILE = 4096  # a token or secret_id is tens of characters
# A 403 logs in again at most this often: a 403 is as often a path the policy
# leaves out as a dead token, and each AppRole login leaves a token behind
# (and spends a use of a secret_id that has few).
RELOGIN_EVERY = 30.0


class AuthFailed(Exception):
    """The source refused to log vaultd in (or to accept its token). One line, no value."""


def read_private(path: Path, kind: str) -> str:
    """The one line of text in ``path``, a file no other user may read (T2)."""
    try:
        check_private(path, kind)
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE + 1)
    except UnsafePermissions:
        raise
    except FileNotFoundError:
        raise VaultdError(f"{kind} {path} does not exist") from None
    except OSError as exc:
        raise VaultdError(f"cannot read {kind} {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise VaultdError(f"{kind} {path} is not text") from None
    if len(raw) > MAX_FILE or not text or not text.isprintable() or " " in text:
        raise VaultdError(f"{kind} {path} must hold one token of at most {MAX_FILE} characters")
    return text


def check_files(settings: SourceSettings) -> None:
    """Refuse (one line) a secret_id or token file that is missing or open to others."""
    if settings.auth == "approle":
        assert settings.secret_id_file is not None  # sourceconfig requires it
        read_private(settings.secret_id_file, f"[sources.{settings.name}] secret_id_file")
    else:
        assert settings.token_file is not None
        read_private(settings.token_file, f"[sources.{settings.name}] token_file")


class Auth:
    def __init__(self, settings: SourceSettings, client: SourceClient) -> None:
        self.settings = settings
        self.client = client
        self._token: str | None = None
        self._lease = 0  # seconds the token was granted for; 0: it does not expire
        self._renewable = False
        self._expires = 0.0  # monotonic
        self._renew_at = 0.0  # monotonic
        self._logged_in_at = -RELOGIN_EVERY  # monotonic
        # One login or renewal at a time: the reads of a round share the token.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Auth({self.settings.name!r}, {self.settings.auth})"

    def ttl_left(self) -> float | None:
        """Seconds the token has left (None: none held, or it does not expire)."""
        if self._token is None or self._lease == 0:
            return None
        return max(0.0, self._expires - time.monotonic())

    def renew_in(self) -> float | None:
        """Seconds until the token should be renewed (None: never)."""
        if self._token is None or self._lease == 0:
            return None
        return max(0.0, self._renew_at - time.monotonic())

    def forget(self) -> None:
        self._token = None

    async def token(self) -> str:
        """A token the source should accept now: logged in, or renewed, as needed."""
        token = self._token
        if token is not None and not (self._lease and time.monotonic() >= self._renew_at):
            return token
        async with self._lock:
            # Another caller may have done it while this one waited.
            if self._token is None:
                return await self._login()
            if self._lease and time.monotonic() >= self._renew_at:
                return await self._renew()
            return self._token

    async def relogin(self, refused: str) -> str | None:
        """After a 403 to ``refused``: a new token to try once more, or None (the
        403 stands: logged in too recently for a new login to change anything)."""
        async with self._lock:
            if self._token is not None and self._token != refused:
                return self._token  # replaced meanwhile
            if time.monotonic() - self._logged_in_at < RELOGIN_EVERY:
                return None
            return await self._login()

    async def login(self) -> str:
        """Log in (again): AppRole, or the token file read again."""
        async with self._lock:
            return await self._login()

    async def _login(self) -> str:
        self._token = None
        self._logged_in_at = time.monotonic()
        if self.settings.auth == "approle":
            return await self._approle()
        return await self._token_file()

    def _held(self, token: str, lease: object, renewable: object) -> str:
        lease_s = lease if isinstance(lease, int) and not isinstance(lease, bool) else 0
        self._token, self._lease, self._renewable = token, max(0, lease_s), renewable is True
        now = time.monotonic()
        self._expires = now + self._lease
        self._renew_at = now + self._lease / 2
        return token

    async def _approle(self) -> str:
        settings = self.settings
        assert settings.secret_id_file is not None
        assert settings.role_id is not None
        try:
            secret_id = read_private(
                settings.secret_id_file, f"[sources.{settings.name}] secret_id_file"
            )
        except VaultdError as exc:
            raise AuthFailed(str(exc)) from None
        answer = await self.client.call(
            "POST",
            "/v1/auth/approle/login",
            payload={"role_id": settings.role_id, "secret_id": secret_id},
        )
        _raise_down(answer.status)
        auth = answer.body.get("auth") if isinstance(answer.body, dict) else None
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if answer.status != 200 or not isinstance(token, str) or not token.isprintable():
            raise AuthFailed(
                f"the source refused the AppRole login ({answer.status}): check role_id "
                "and that the secret_id is still valid"
            )
        assert isinstance(auth, dict)
        return self._held(token, auth.get("lease_duration"), auth.get("renewable"))

    async def _token_file(self) -> str:
        settings = self.settings
        assert settings.token_file is not None
        try:
            token = read_private(settings.token_file, f"[sources.{settings.name}] token_file")
        except VaultdError as exc:
            raise AuthFailed(str(exc)) from None
        answer = await self.client.call("GET", "/v1/auth/token/lookup-self", token=token)
        _raise_down(answer.status)
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(data, dict):
            raise AuthFailed(
                f"the source refused the token in {settings.token_file} ({answer.status}): "
                "it has expired or was revoked; log in again (bao login)"
            )
        return self._held(token, data.get("ttl"), data.get("renewable"))

    async def _renew(self) -> str:
        token = self._token
        assert token is not None
        if self._renewable:
            answer = await self.client.call(
                "POST", "/v1/auth/token/renew-self", token=token, payload={}
            )
            _raise_down(answer.status)
            auth = answer.body.get("auth") if isinstance(answer.body, dict) else None
            lease = auth.get("lease_duration") if isinstance(auth, dict) else None
            # Renewed for less than a tenth of what it had: near its max_ttl,
            # so log in afresh rather than renew it every few seconds.
            if answer.status == 200 and isinstance(lease, int) and lease * 10 >= self._lease:
                assert isinstance(auth, dict)
                return self._held(token, lease, auth.get("renewable"))
        return await self._login()


def _raise_down(status: int) -> None:
    """Sealed, rate-limited or failing: the server is down, not refusing."""
    if status == 429 or status >= 500:
        raise SourceDown(f"the source answered {status} (sealed, rate-limited or failing)")
