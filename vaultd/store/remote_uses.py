"""Use of the credentials remote sources hold (DESIGN 13): when each was last
used through the proxy and how often. Written by the usage writer; read to
complete the listing the catalog makes (which knows nothing of use)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlite_utils import Database


def read(db: Database, ids: Iterable[str]) -> dict[str, tuple[int | None, int]]:
    """``id -> (last_used_at, use_count)`` of those ``ids`` used at least once."""
    wanted = list(ids)
    found: dict[str, tuple[int | None, int]] = {}
    # In chunks: SQLite's bound on parameters per statement.
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for cid, last, count in db.execute(
            f"SELECT id, last_used_at, use_count FROM remote_uses WHERE id IN ({marks})",  # noqa: S608 - marks only
            chunk,
        ):
            found[cid] = (last, count)
    return found
