"""Human units: durations, sizes and "3 min ago"."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultd.units import MAX_DURATION, format_ago, format_duration, parse_duration, parse_size

MINUTE, HOUR, DAY, WEEK = 60, 3600, 86400, 604800
NOW = 1_700_000_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 15 * MINUTE),
        ("8h", 8 * HOUR),
        ("30d", 30 * DAY),
        ("2w", 2 * WEEK),
        ("1h30m", HOUR + 30 * MINUTE),
        ("1d12h", DAY + 12 * HOUR),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "8", "h", "-1h", "1.5h", "8 hours", "1y", "8H", "h8", "1h 30m", "8hh"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhdw")), min_size=1))
def test_parse_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    per_unit = {"s": 1, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
    expected = sum(n * per_unit[unit] for n, unit in parts)
    if expected > MAX_DURATION:
        with pytest.raises(ValueError, match="longer than 100 years"):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected


def test_repeated_huge_groups_are_refused_not_overflowed() -> None:
    # Sixteen twelve-digit groups would overflow SQLite's 64-bit integers.
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_duration("999999999999w" * 16)
    assert parse_duration("5200w") == 5200 * WEEK


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("32MiB", 32 * 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("1GiB", 1024**3),
        ("1000", 1000),
        ("10B", 10),
        ("1GB", 10**9),
        ("5MB", 5 * 10**6),
        ("2KB", 2000),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["32 MB?", "-1", "abc", "", "MiB", "1.5MiB", "32TiB", "32MiBs"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90, "90s"),
        (45, "45s"),
        (120, "2m"),
        (5400, "90m"),
        (HOUR, "1h"),
        (8 * HOUR, "8h"),
        (DAY, "1d"),
        (30 * DAY, "30d"),
        (WEEK, "1w"),
        (DAY + 1, f"{DAY + 1}s"),
        (0, "0s"),
    ],
)
def test_format_duration_uses_the_largest_whole_unit(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 999_999_999))
def test_format_duration_round_trips_through_parse_duration(seconds: int) -> None:
    # The parser takes at most nine digits per part, so beyond ~31 years a
    # seconds count that is no whole minute would not parse back.
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("then", "text"),
    [
        (None, "never"),
        (NOW, "just now"),
        (NOW - 59, "just now"),
        (NOW - 60, "1 min ago"),
        (NOW - 59 * MINUTE - 29, "59 min ago"),
        # Rounded to the nearest unit, halves up; into the next unit when that
        # rounds to 60 min or 24 h.
        (NOW - 2 * MINUTE - 29, "2 min ago"),
        (NOW - 2 * MINUTE - 30, "3 min ago"),
        (NOW - 59 * MINUTE - 30, "1 h ago"),
        (NOW - 23 * HOUR - 29 * MINUTE, "23 h ago"),
        (NOW - 23 * HOUR - 30 * MINUTE, "1 day ago"),
        (NOW - 5 * DAY - 13 * HOUR, "6 days ago"),
        (NOW - HOUR, "1 h ago"),
        (NOW - 23 * HOUR, "23 h ago"),
        (NOW - DAY, "1 day ago"),
        (NOW - 5 * DAY - HOUR, "5 days ago"),
        (NOW + 30, "in under a minute"),
        (NOW + 3 * MINUTE, "in 3 min"),
        (NOW + 2 * HOUR, "in 2 h"),
        (NOW + DAY, "in 1 day"),
        (NOW + 4 * DAY, "in 4 days"),
        # `add --expires 90d`, shown a few seconds later.
        (NOW + 90 * DAY - 5, "in 90 days"),
        (NOW + 90 * DAY - 12 * HOUR, "in 90 days"),
        (NOW + 90 * DAY - 12 * HOUR - 1, "in 89 days"),
    ],
)
def test_format_ago(then: int | None, text: str) -> None:
    assert format_ago(then, NOW) == text
