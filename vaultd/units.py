"""Human units in config and on the command line: durations, sizes, "3 min ago"."""

from __future__ import annotations

import re

# [0-9], not \d: \d also matches Arabic-Indic and other Unicode digits.
_DURATION = re.compile(r"([0-9]{1,12})(s|m|h|d|w)")
_DURATION_FULL = re.compile(r"(?:[0-9]{1,12}(?:s|m|h|d|w))+")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Longer than any lifetime or age anyone means, and far inside SQLite's 64-bit
# integers: a sum of twelve-digit groups would otherwise overflow them (a 500).
MAX_DURATION = 100 * 365 * 86400

_SIZE = re.compile(r"([0-9]{1,12}) ?(B|KiB|MiB|GiB|KB|MB|GB)?")
_BYTES = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}


def parse_duration(text: str) -> int:
    """Seconds in ``"90s"``, ``"8h"``, ``"30d"`` or ``"1h30m"``; ``ValueError`` otherwise."""
    value = text.strip()
    if not _DURATION_FULL.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 8h, 30d or 1h30m")
    seconds = sum(int(n) * _SECONDS[u] for n, u in _DURATION.findall(value))
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 100 years")
    return seconds


# Unix seconds, bounded so that int() never meets a thousand-digit string.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
MOMENT_HELP = 'must be Unix seconds or a duration back from now such as "1h" or "7d"'


def parse_moment(text: str, now: int) -> int:
    """A point in time as Unix seconds: ``"1700000000"``, or ``"7d"`` meaning 7 days before ``now``.

    The ``since`` and ``until`` of the API and the CLI alike; ``ValueError``
    (with ``MOMENT_HELP``) otherwise.
    """
    if _UNIX_SECONDS.fullmatch(text):
        return int(text)
    try:
        return now - parse_duration(text)
    except ValueError:
        raise ValueError(MOMENT_HELP) from None


def parse_size(text: str) -> int:
    """Bytes in ``"32MiB"``, ``"512KiB"``, ``"1000"``; ``ValueError`` otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512KiB, 32MiB or 1GiB")
    return int(match.group(1)) * _BYTES[match.group(2)]


def format_duration(seconds: int) -> str:
    """The largest whole unit: 3600 -> "1h", 90 -> "90s"."""
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    return f"{seconds}s"


def format_ago(then: int | None, now: int) -> str:
    """ "never", "just now", "3 min ago", "2 h ago", "5 days ago", or "in 4 days".

    Rounded to the nearest unit, so that a key made with ``--expires 90d``
    expires "in 90 days", not in 89, a few seconds later.
    """
    if then is None:
        return "never"
    delta = now - then
    future = delta < 0
    delta = abs(delta)
    if delta < 60:
        return "in under a minute" if future else "just now"
    amount = _rounded(delta)
    return f"in {amount}" if future else f"{amount} ago"


def _rounded(seconds: int) -> str:
    """``seconds`` (60 or more) to the nearest minute, or hour once that is 60 min, or day."""
    minutes = _nearest(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = _nearest(seconds, 3600)
    if hours < 24:
        return f"{hours} h"
    days = _nearest(seconds, 86400)
    return f"{days} day" + ("s" if days != 1 else "")


def _nearest(seconds: int, unit: int) -> int:
    """Whole ``unit``s nearest to ``seconds``, halves up (``round`` would go to even)."""
    return (seconds + unit // 2) // unit


class TTLTooLong(ValueError):
    """A lifetime past ``[sessions] max_ttl``: the config's bound, not a malformed value."""


TTL_HELP = 'must be a duration such as "90s" or "8h", whole seconds, or "never"'


def parse_ttl(value: object, max_ttl: int) -> int | None:
    """A session's seconds to live (``None``: never expires), for the API and the CLI alike.

    ``value`` is a duration (``"8h"``), whole seconds, or ``"never"``, which
    is accepted whatever ``max_ttl`` says: the bound is on a stated lifetime.
    Raises ``ValueError`` with a message fit to follow the field's name.
    """
    if value == "never":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(TTL_HELP)
    if isinstance(value, str):
        try:
            value = parse_duration(value)
        except ValueError:
            raise ValueError(TTL_HELP) from None
    if value <= 0:
        # A token that is expired when printed is a mistake.
        raise ValueError("must be longer than zero")
    if value > max_ttl:
        raise TTLTooLong(f"must be at most {format_duration(max_ttl)} (the [sessions] max_ttl)")
    return value
