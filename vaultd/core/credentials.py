"""Stored credentials: metadata rows plus their sealed secrets.

Reading metadata needs no key; adding a credential or rotating its secret
needs the data key (DEK), and so does ``reveal``, which only the proxy calls.
A write that seals first asks the vault, inside its transaction, whether the
key it was given is still the vault's (see ``Vault.check_dek``).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlite_utils import Database

from vaultd import crypto
from vaultd.errors import (
    Conflict,
    CryptoError,
    ErrorList,
    FieldError,
    NotFound,
    ValidationError,
)
from vaultd.models import (
    CREDENTIAL_LIMITS,
    Credential,
    Limits,
    check_expires_at,
    check_known_service,
    check_limits,
    check_metadata,
    check_name,
    check_secret,
    check_type,
    hint_for,
    now,
    uuid7,
)
from vaultd.services import Service
from vaultd.store.db import forget_replaced_pages, write_transaction
from vaultd.store.refs import id_by_prefix

_COLUMNS = (
    "id, service, name, type, hint, metadata, is_default, created_at, updated_at,"
    " last_used_at, use_count, expires_at, limits"
)
UNSET: Any = object()


@dataclass(frozen=True)
class NewCredential:
    """A credential to store, as given (``CredentialStore.add_many`` checks every field)."""

    service: object
    name: object
    secret: object
    type: object = "api_key"
    metadata: object = None
    expires_at: object = None


def check_credential_limits(value: object, pointer: str = "/limits") -> Limits | None:
    """A credential's daily limits (DESIGN 10); ``None`` clears them."""
    return check_limits(value, CREDENTIAL_LIMITS, pointer)


class CredentialStore:
    def __init__(
        self,
        db: Database,
        services: Mapping[str, Service],
        check_dek: Callable[[bytes], None],
    ) -> None:
        """``check_dek(dek)`` raises unless ``dek`` is still the vault's data key.

        It is called inside the write transaction of every write that seals,
        so a rekey cannot commit between the check and the write.
        """
        self.db = db
        self.services = services
        self._check_dek = check_dek

    # -- reading ---------------------------------------------------------

    def _rows(self, where: str, params: list[Any], tail: str = "") -> list[Credential]:
        # where/tail are built only from constants in this module; values are bound.
        sql = f"SELECT {_COLUMNS} FROM credentials {where} {tail}"  # noqa: S608
        return [Credential.from_row(r) for r in self.db.query(sql, params)]

    def get(self, credential_id: str) -> Credential:
        rows = self._rows("WHERE id = ?", [credential_id])
        if not rows:
            raise NotFound(f"no credential with id {credential_id}")
        return rows[0]

    def find(self, service: str, name: str) -> Credential | None:
        rows = self._rows("WHERE service = ? AND name = ?", [service, name])
        return rows[0] if rows else None

    def list(
        self,
        *,
        service: str | None = None,
        type: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
    ) -> list[Credential]:
        """Oldest first; ``starting_after`` is the id of the last item of the previous page."""
        clauses: list[str] = []
        params: list[Any] = []
        if service is not None:
            clauses.append("service = ?")
            params.append(service)
        if type is not None:
            clauses.append("type = ?")
            params.append(type)
        if starting_after is not None:
            cursor = self._rows("WHERE id = ?", [starting_after])
            if not cursor:
                raise ValidationError(
                    FieldError("/starting_after", "is not the id of a stored credential")
                )
            clauses.append("(created_at, id) > (?, ?)")
            params += [cursor[0].created_at, cursor[0].id]
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        tail = "ORDER BY created_at, id"
        if limit is not None:
            tail += " LIMIT ?"
            params.append(limit)
        return self._rows(where, params, tail)

    def default_for(self, service: str) -> Credential | None:
        rows = self._rows("WHERE service = ? AND is_default = 1", [service])
        return rows[0] if rows else None

    def resolve(self, ref: str) -> Credential:
        """A credential by id, unique id prefix, or ``service/name``."""
        if "/" in ref:
            service, name = ref.split("/", 1)
            found = self.find(service, name)
            if found is None:
                raise NotFound(f"no credential {ref!r}")
            return found
        return self.get(
            id_by_prefix(
                self.db,
                "credentials",
                ref,
                noun="credential",
                forms="give an id, an id prefix, or service/name",
            )
        )

    # -- secrets ---------------------------------------------------------

    def reveal(self, dek: bytes, credential: Credential) -> str:
        """The plaintext secret, for injection into an upstream request only."""
        row = self.db.execute(
            "SELECT id, service, sealed FROM credentials WHERE id = ?", [credential.id]
        ).fetchone()
        if row is None:
            raise NotFound(f"no credential with id {credential.id}")
        try:
            return crypto.unseal(dek, row[0], row[1], row[2]).decode("utf-8")
        except (CryptoError, UnicodeDecodeError):
            raise CryptoError(
                f"credential {credential.service}/{credential.name} ({credential.id}) failed to"
                " open: its stored value was altered or moved, or the vault key is wrong"
            ) from None

    # -- writing ---------------------------------------------------------

    def _conflict(self, service: str, name: str) -> Conflict:
        existing = self.find(service, name)
        return Conflict(
            f"a credential named {service}/{name} already exists",
            conflicting_resource_id=existing.id if existing else None,
        )

    def add(
        self,
        dek: bytes,
        *,
        service: object,
        name: object,
        secret: object,
        type: object = "api_key",
        metadata: object = None,
        expires_at: object = None,
    ) -> Credential:
        new = NewCredential(service, name, secret, type, metadata, expires_at)
        return self.add_many(dek, [new], pointers=False)[0]

    def add_many(
        self, dek: bytes, items: Sequence[NewCredential], *, pointers: bool = True
    ) -> builtins.list[Credential]:
        """Store every one of ``items`` in one transaction: all of them, or none.

        Every item is checked before anything is written; a failure while
        writing (a name taken meanwhile, the database locked or full) rolls
        back the ones already inserted. Errors point at ``/INDEX/field``, or
        at ``/field`` without ``pointers`` (a single ``add``).
        """
        errors = ErrorList()
        checked = [
            self._checked(item, f"/{i}" if pointers else "", errors) for i, item in enumerate(items)
        ]
        errors.raise_if_any()
        pairs = [(c["service"], c["name"]) for c in checked]
        for pair in pairs:
            if pairs.count(pair) > 1:
                raise Conflict(f"the credential {pair[0]}/{pair[1]} is given more than once")
        ids: builtins.list[str] = []
        rows: builtins.list[builtins.list[Any]] = []
        stamp = now()
        for c in checked:
            credential_id = uuid7()
            plaintext: str = c["secret"]
            sealed = crypto.seal(dek, credential_id, c["service"], plaintext.encode("utf-8"))
            ids.append(credential_id)
            rows.append(
                [
                    credential_id,
                    c["service"],
                    c["name"],
                    c["type"],
                    hint_for(plaintext),
                    json.dumps(c["metadata"], sort_keys=True),
                    stamp,
                    stamp,
                    c["expires_at"],
                    sealed,
                ]
            )
        current = ("", "")
        try:
            with write_transaction(self.db) as conn:
                self._check_dek(dek)
                for row in rows:
                    current = (row[1], row[2])
                    if self.find(*current) is not None:
                        raise self._conflict(*current)
                    # The first key of a service is its default: one key "just works".
                    first = self.default_for(row[1]) is None
                    conn.execute(
                        "INSERT INTO credentials (id, service, name, type, hint, metadata,"
                        " is_default, created_at, updated_at, last_used_at, use_count,"
                        " expires_at, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?)",
                        [*row[:6], int(first), *row[6:]],
                    )
        except sqlite3.IntegrityError:
            if self.find(*current) is None:
                raise  # not the name taken meanwhile: say what it was
            raise self._conflict(*current) from None
        return [self.get(credential_id) for credential_id in ids]

    def _checked(self, item: NewCredential, prefix: str, errors: ErrorList) -> dict[str, Any]:
        return {
            key: errors.check(check, value, pointer=f"{prefix}/{key}")
            for key, check, value in (
                ("service", partial(check_known_service, known=self.services), item.service),
                ("name", check_name, item.name),
                # Whether it must look like an issued key depends on the type.
                ("secret", partial(check_secret, kind=item.type), item.secret),
                ("type", check_type, item.type),
                ("metadata", check_metadata, {} if item.metadata is None else item.metadata),
                ("expires_at", check_expires_at, item.expires_at),
            )
        }

    def update(
        self,
        credential_id: str,
        *,
        dek: bytes | None = None,
        name: object = UNSET,
        metadata: object = UNSET,
        expires_at: object = UNSET,
        secret: object = UNSET,
        is_default: object = UNSET,
        limits: object = UNSET,
    ) -> Credential:
        """Change what is given; everything is checked before anything is written."""
        current = self.get(credential_id)
        errors = ErrorList()
        sets: dict[str, Any] = {
            key: errors.check(check, value)
            for key, check, value in (
                ("name", check_name, name),
                ("metadata", check_metadata, metadata),
                ("expires_at", check_expires_at, expires_at),
                ("secret", partial(check_secret, kind=current.type), secret),
                ("limits", check_credential_limits, limits),
            )
            if value is not UNSET
        }
        if is_default is not UNSET and not isinstance(is_default, bool):
            errors.add("/is_default", "must be true or false")
        errors.raise_if_any()
        columns = _changed_columns(current, sets, dek)
        sealed_with = dek if "sealed" in columns else None
        try:
            with write_transaction(self.db) as conn:
                if sealed_with is not None:
                    self._check_dek(sealed_with)
                if self._rows("WHERE id = ?", [credential_id]) == []:
                    raise NotFound(f"no credential with id {credential_id}")
                if is_default is True:
                    conn.execute(
                        "UPDATE credentials SET is_default = 0 WHERE service = ? AND id != ?",
                        [current.service, current.id],
                    )
                    columns["is_default"] = 1
                elif is_default is False:
                    columns["is_default"] = 0
                assignments = ", ".join(f"{c} = ?" for c in columns)
                conn.execute(
                    f"UPDATE credentials SET {assignments} WHERE id = ?",  # noqa: S608 (column names are ours)
                    [*columns.values(), credential_id],
                )
        except sqlite3.IntegrityError:
            raise self._conflict(current.service, sets.get("name", current.name)) from None
        if "sealed" in columns:
            forget_replaced_pages(self.db)  # the old ciphertext, still in the WAL
        return self.get(credential_id)

    def delete(self, credential_id: str) -> Credential:
        with write_transaction(self.db):
            gone = self.get(credential_id)
            # secure_delete (set on every connection) zeroes the freed cells.
            self.db.execute("DELETE FROM credentials WHERE id = ?", [credential_id])
        forget_replaced_pages(self.db)
        return gone


def _changed_columns(
    current: Credential, sets: dict[str, Any], dek: bytes | None
) -> dict[str, Any]:
    """The column values of checked changes ``sets``; a new secret sealed with ``dek``."""
    columns: dict[str, Any] = {}
    if "name" in sets:
        columns["name"] = sets["name"]
    if "metadata" in sets:
        columns["metadata"] = json.dumps(sets["metadata"], sort_keys=True)
    if "expires_at" in sets:
        columns["expires_at"] = sets["expires_at"]
    if "limits" in sets:
        limits = sets["limits"]
        columns["limits"] = None if limits is None else json.dumps(limits, sort_keys=True)
    if "secret" in sets:
        if dek is None:
            raise CryptoError("rotating a secret needs the vault key")
        plaintext: str = sets["secret"]
        columns["sealed"] = crypto.seal(dek, current.id, current.service, plaintext.encode("utf-8"))
        columns["hint"] = hint_for(plaintext)
    columns["updated_at"] = now()
    return columns
