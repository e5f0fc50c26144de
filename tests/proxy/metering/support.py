"""The fixtures' manifest, and ways to run a meter over a body cut into pieces."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from vaultd.proxy.metering import Meter, Reading

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class Fixture(NamedTuple):
    file: str
    kind: str
    content_type: str
    status: int
    complete: bool
    model_hint: str | None
    expect: Reading | None
    genai_prices: dict[str, str] | None
    strip_to: str | None
    source: str

    @property
    def body(self) -> bytes:
        return read(self.file)

    @property
    def sse(self) -> bool:
        return self.content_type.startswith("text/event-stream")

    def meter(self, *, strip: bool = False, **options: Any) -> Meter:
        return Meter(
            self.kind,
            status=self.status,
            content_type=self.content_type,
            strip_usage_chunk=strip,
            model_hint=self.model_hint,
            **options,
        )


@cache
def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@cache
def manifest() -> tuple[Fixture, ...]:
    doc = json.loads(read("manifest.json"))
    fixtures = []
    for entry in doc["fixtures"]:
        expect = entry["expect"]
        fixtures.append(
            Fixture(
                file=entry["file"],
                kind=entry["kind"],
                content_type=entry["content_type"],
                status=entry["status"],
                complete=entry["complete"],
                model_hint=entry["model_hint"],
                expect=None if expect is None else Reading(**expect, complete=entry["complete"]),
                genai_prices=entry.get("genai_prices"),
                strip_to=entry.get("strip_to"),
                source=entry["source"],
            )
        )
    return tuple(fixtures)


def pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at each of ``cuts`` (any order, repeats and out-of-range allowed)."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    out, start = [], 0
    for point in points:
        out.append(data[start:point])
        start = point
    out.append(data[start:])
    return out


def run(
    meter: Meter, chunks: Sequence[bytes], *, complete: bool = True
) -> tuple[bytes, Reading | None]:
    """What the client receives, and the reading, when ``chunks`` pass through ``meter``."""
    sent = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    return sent, meter.result(complete=complete)
