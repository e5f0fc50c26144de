"""Every fixture gives its manifest's model and counts, however its body arrives.

The fixtures (``fixtures/manifest.json`` names where each one's shape comes
from) are answers as the providers send them: JSON bodies and raw event
streams, cut-off streams among them, and for OpenAI pairs of streams with and
without what ``stream_options.include_usage`` adds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import genai_prices
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.proxy.metering.support import FIXTURES, Fixture, manifest, pieces, read, run

ALL = manifest()
STREAMS = [f for f in ALL if f.sse]
STRIPPED = [f for f in ALL if f.strip_to]
GENAI = [f for f in ALL if f.genai_prices]


def ids(fixtures: Sequence[Fixture]) -> list[str]:
    return [f.file for f in fixtures]


def test_the_manifest_lists_every_fixture_and_its_source() -> None:
    listed = {f.file for f in ALL}
    on_disk = {p.name for p in FIXTURES.iterdir()} - {"manifest.json"}
    assert listed == on_disk
    assert all(f.source for f in ALL)
    assert {f.kind for f in ALL} == {"openai", "anthropic", "gemini"}
    # A cut-off stream for each provider, and the strip pairs exist.
    assert {f.kind for f in ALL if not f.complete} == {"openai", "anthropic", "gemini"}
    assert all(read(f.strip_to) for f in STRIPPED if f.strip_to)


@pytest.mark.parametrize("fixture", ALL, ids=ids(ALL))
def test_whole_and_in_pieces(fixture: Fixture) -> None:
    body = fixture.body
    meter = fixture.meter()
    assert meter.whole(body) is body  # observing only: the very same bytes go out
    assert meter.result(complete=fixture.complete) == fixture.expect
    for size in (1, 2, 3, 5, 64, 1000):
        meter = fixture.meter()
        for chunk in [body[i : i + size] for i in range(0, len(body), size)]:
            assert meter.feed(chunk) is chunk  # identity: no copy, no delay
        assert meter.flush() == b""
        assert meter.result(complete=fixture.complete) == fixture.expect, size
    # The same body from a stream that was cut off: the same counts, not complete.
    reading = meter.result(complete=False)
    if fixture.expect is None:
        assert reading is None
    else:
        assert reading == fixture.expect._replace(complete=False)


@pytest.mark.parametrize("fixture", STREAMS, ids=ids(STREAMS))
def test_every_split_point_gives_the_same_reading(fixture: Fixture) -> None:
    body = fixture.body
    for cut in range(len(body) + 1):
        sent, reading = run(fixture.meter(), [body[:cut], body[cut:]], complete=fixture.complete)
        assert sent == body
        assert reading == fixture.expect, cut


@pytest.mark.parametrize("fixture", STRIPPED, ids=ids(STRIPPED))
def test_strip_mode_sends_the_stream_without_include_usage(fixture: Fixture) -> None:
    assert fixture.strip_to is not None
    wanted = read(fixture.strip_to)
    body = fixture.body
    assert body != wanted
    meter = fixture.meter(strip=True)
    assert meter.whole(body) == wanted
    assert meter.result(complete=True) == fixture.expect
    for cut in range(len(body) + 1):
        sent, reading = run(fixture.meter(strip=True), [body[:cut], body[cut:]])
        assert sent == wanted, cut
        assert reading == fixture.expect, cut


@pytest.mark.parametrize("fixture", STRIPPED, ids=ids(STRIPPED))
def test_strip_mode_holds_events_only_until_their_end(fixture: Fixture) -> None:
    # Each complete event goes out in the feed that completes it.
    wanted = read(fixture.strip_to or "")
    meter = fixture.meter(strip=True)
    sent = b""
    for chunk in pieces(fixture.body, range(0, len(fixture.body), 50)):
        sent += meter.feed(chunk)
        assert wanted.startswith(sent)
        assert not sent or sent.endswith(b"\n\n")
    assert sent + meter.flush() == wanted
    # A client that asked for nothing, and an upstream that sent nothing extra.
    sent, reading = run(fixture.meter(strip=True), pieces(wanted, range(0, len(wanted), 97)))
    assert sent == wanted
    assert reading is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_split_into_many_pieces(data: st.DataObject) -> None:
    fixture = data.draw(st.sampled_from(STREAMS + [f for f in ALL if not f.sse]))
    strip = bool(fixture.strip_to) and data.draw(st.booleans())
    body = fixture.body
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    sent, reading = run(fixture.meter(strip=strip), pieces(body, cuts), complete=fixture.complete)
    assert sent == (read(fixture.strip_to) if strip and fixture.strip_to else body)
    assert reading == fixture.expect


# -- genai-prices reads the same numbers -----------------------------------


def genai_usage(fixture: Fixture, body: Any) -> tuple[str | None, Any]:
    assert fixture.genai_prices is not None
    snapshot = genai_prices.data_snapshot.get_snapshot()
    provider = snapshot.find_provider(None, fixture.genai_prices["provider_id"], None)
    # The provider's extractor itself: extract_usage() would also look the model
    # up in its price list, which knows nothing of some fixtures' models.
    return provider.extract_usage(body, api_flavor=fixture.genai_prices["api_flavor"])


@pytest.mark.parametrize("fixture", GENAI, ids=ids(GENAI))
def test_genai_prices_extracts_the_same_usage(fixture: Fixture) -> None:
    """Our convention is genai-prices': input includes cache reads and writes
    (Anthropic's three input counts summed, Gemini's tool-use prompt added),
    output includes reasoning (Gemini's thoughts added)."""
    model, usage = genai_usage(fixture, json.loads(fixture.body))
    assert fixture.expect is not None
    assert model == fixture.expect.model
    assert (usage.input_tokens or 0) == fixture.expect.input_tokens
    assert (usage.output_tokens or 0) == fixture.expect.output_tokens
    assert (usage.cache_read_tokens or 0) == fixture.expect.cached_input_tokens
    assert (usage.cache_write_tokens or 0) == fixture.expect.cache_write_tokens


def test_genai_prices_covers_every_provider() -> None:
    assert {f.genai_prices["provider_id"] for f in GENAI if f.genai_prices} == {
        "openai",
        "anthropic",
        "google",
    }
