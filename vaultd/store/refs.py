"""Records named the way people type them: by id or by the first few characters of it."""

from __future__ import annotations

import re
from typing import Literal

from sqlite_utils import Database

from vaultd.errors import AmbiguousReference, NotFound

# Up to a whole id's characters; anything else cannot start one.
_ID_PREFIX = re.compile(r"[0-9a-f-]{1,36}")


def id_by_prefix(
    db: Database,
    table: Literal["credentials", "sessions"],
    ref: str,
    *,
    noun: str,
    forms: str | None = None,
) -> str:
    """The id in ``table`` that starts with ``ref`` (any case).

    ``NotFound`` if none does, ``AmbiguousReference`` if more than one does;
    ``forms``, if given, says what else a reference may be when ``ref``
    cannot be an id prefix at all.
    """
    text = ref.lower()
    if not _ID_PREFIX.fullmatch(text):
        raise NotFound(f"no {noun} {ref!r}" + (f" ({forms})" if forms else ""))
    rows = db.execute(
        f"SELECT id FROM {table} WHERE substr(id, 1, ?) = ? LIMIT 2",  # noqa: S608 (a Literal)
        [len(text), text],
    ).fetchall()
    if not rows:
        raise NotFound(f"no {noun} {ref!r}")
    if len(rows) > 1:
        raise AmbiguousReference(
            f"{ref!r} is the start of more than one {noun} id; give more of it"
        )
    return str(rows[0][0])
