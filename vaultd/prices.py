"""What a metered call costs: the generated price data, and the ``[prices]`` overrides.

Prices are data (DESIGN.md section 10): ``vaultd/data/prices/`` is generated from
genai-prices (MIT, Pydantic Services Inc.) by ``scripts/update_prices.py``; nothing
here names a model or a price. genai-prices itself is not imported: it costs about
160 ms and 108 MiB RSS, over the daemon's budget. This module reproduces its
lookup and its arithmetic for the four counts vaultd meters, and
tests/test_prices.py checks every model against it.

Importing this module reads nothing: ``index.json`` is parsed on the first lookup
that needs it (``PriceTable.price``), and a provider's own file on the first lookup
of that provider, once per process. Stdlib and vaultd.errors only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

from vaultd.errors import ConfigError

# Model names come from upstream answers: a hostile upstream can send any number
# of distinct ones. The memo keeps at most this many (service, model) results.
MEMO_SIZE = 1024
# Longer model names are priced as unknown without being matched or memoised:
# each miss scans a provider's whole list, so its cost must not grow with the name.
MAX_MODEL_CHARS = 256
# An override above this many USD per million tokens is a typo, not a price.
MAX_PRICE = 1_000_000

_SERVICE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_OVERRIDE_KEYS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "cache_write_per_mtok",
)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. A cache price of None is charged at the input price,
    as genai-prices does for a model without that price.

    ``tiers``: ``(start, price)`` pairs, ascending. When a call's total input tokens
    exceed ``start``, that tier's prices apply to ALL its tokens (the "cliff" model
    genai-prices and the providers use); tier prices carry no tiers of their own.
    """

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    tiers: tuple[tuple[int, Price], ...] = ()

    def at(self, input_tokens: int) -> Price:
        """The prices for a call with ``input_tokens`` input tokens in all."""
        for start, tier in reversed(self.tiers):
            if input_tokens > start:
                return tier
        return self

    def cost(self, input_tokens: int, output_tokens: int, cached: int, cache_write: int) -> float:
        """USD; ``input_tokens`` counts every input token, cache reads and writes included.

        (Positional or keyword: the proxy calls it positionally for every metered
        answer, where keywords cost a mapping of names per call.)
        """
        rates = self.at(input_tokens) if self.tiers else self  # most have no tiers
        per_input = rates.input_per_mtok
        read = rates.cached_input_per_mtok
        write = rates.cache_write_per_mtok
        # genai-prices refuses cache counts above the input count; an upstream that
        # reports them is billed what it reported rather than a negative remainder.
        uncached = input_tokens - cached - cache_write
        usd = uncached * per_input if uncached > 0 else 0.0
        # Terms added in this order, the zero ones skipped (adding 0.0 changes
        # no float): the same sums as genai-prices', to the last bit.
        if cached:
            usd += cached * (per_input if read is None else read)
        if cache_write:
            usd += cache_write * (per_input if write is None else write)
        return (usd + output_tokens * rates.output_per_mtok) / 1_000_000


# -- [prices] overrides ------------------------------------------------------------------


def _override_number(where: str, value: object) -> float:
    # bool is an int to Python, never a price to a user.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a non-negative number, not a {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ConfigError(f"{where} must be a non-negative number, not {value!r}")
    if value > MAX_PRICE:
        raise ConfigError(f"{where} must be at most {MAX_PRICE} USD per million tokens")
    return float(value)


def _override_key(key: object) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"[prices] key {key!r} must be a string")
    service, slash, model = key.partition("/")
    # Model names hold no whitespace; a printable check alone would let spaces through.
    model_ok = 0 < len(model) <= 200 and model.isprintable() and not any(c.isspace() for c in model)
    if not slash or not _SERVICE.fullmatch(service) or not model_ok:
        shown = key if len(key) <= 80 else key[:80] + "..."
        raise ConfigError(
            f'[prices] key {shown!r} must be "SERVICE/MODEL": a service name '
            "(a-z, 0-9, '.', '_', '-') and a model name without spaces, at most 200 characters"
        )
    # Lower-cased, as genai-prices lower-cases the model it matches: an override for
    # "GPT-4o" prices the "gpt-4o" an upstream answers with.
    return f"{service}/{model.lower()}"


def parse_price_overrides(table: object) -> Mapping[str, Price]:
    """The ``[prices]`` table: ``{"SERVICE/MODEL": {input_per_mtok, output_per_mtok, ...}}``.

    Keys of the result are ``service/model`` with the model lower-cased. Raises
    ConfigError, one line naming the key, for anything else.
    """
    if not isinstance(table, Mapping):
        raise ConfigError('[prices] must be a table of "SERVICE/MODEL" tables')
    prices: dict[str, Price] = {}
    originals: dict[str, str] = {}
    for key, entry in table.items():
        normal = _override_key(key)
        where = f'[prices."{key}"]'
        if normal in prices:
            raise ConfigError(
                f'{where} and [prices."{originals[normal]}"] name the same model '
                "(model names are matched without regard to case)"
            )
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table with input_per_mtok and output_per_mtok")
        for name in entry:
            if name not in _OVERRIDE_KEYS:
                raise ConfigError(
                    f"{where} has an unknown key {name!r}: known are {', '.join(_OVERRIDE_KEYS)}"
                )
        values: dict[str, float] = {}
        for name in _OVERRIDE_KEYS[:2]:
            if name not in entry:
                raise ConfigError(f"{where} {name} is required")
            values[name] = _override_number(f"{where} {name}", entry[name])
        for name in _OVERRIDE_KEYS[2:]:
            # The config's promise: an unset cache price is the input price.
            raw = entry.get(name, values["input_per_mtok"])
            values[name] = _override_number(f"{where} {name}", raw)
        prices[normal] = Price(
            values["input_per_mtok"],
            values["output_per_mtok"],
            values["cached_input_per_mtok"],
            values["cache_write_per_mtok"],
        )
        originals[normal] = str(key)
    return MappingProxyType(prices)


# -- the generated data --------------------------------------------------------------------

_Matcher = Callable[[str], bool]


def _matcher(clause: Mapping[str, Any]) -> _Matcher:
    """genai-prices' match clauses. The model name arrives lower-cased; genai-prices
    lower-cases both sides of every clause but the regex, which it runs as written
    against the lower-cased name (re.search, not anchored unless the pattern is)."""
    ((kind, arg),) = clause.items()
    if kind == "or":
        subs = tuple(_matcher(c) for c in arg)
        return lambda ref: any(m(ref) for m in subs)
    if kind == "and":
        subs = tuple(_matcher(c) for c in arg)
        return lambda ref: all(m(ref) for m in subs)
    if kind == "regex":
        search = re.compile(arg).search
        return lambda ref: search(ref) is not None
    text = str(arg).lower()
    if kind == "equals":
        return lambda ref: ref == text
    if kind == "starts_with":
        return lambda ref: ref.startswith(text)
    if kind == "ends_with":
        return lambda ref: ref.endswith(text)
    if kind == "contains":
        return lambda ref: text in ref
    raise ValueError(f"vaultd/data/prices: unknown match clause {kind!r}")


def _rate(value: Any) -> tuple[float, dict[int, float]]:
    """A price from the JSON: "0.15", or {"base": "3", "tiers": [[200000, "6"]]}."""
    if isinstance(value, str):
        return float(value), {}
    return float(value["base"]), {int(start): float(p) for start, p in value["tiers"]}


def _price(prices: Mapping[str, Any]) -> Price:
    rates = {
        f: _rate(prices[f]) for f in ("input", "output", "cache_read", "cache_write") if f in prices
    }

    def above(start: int | None, tiers: tuple[tuple[int, Price], ...] = ()) -> Price:
        # Each field above ``start``: its own last tier starting at or below it, else
        # its base. A missing input or output price is 0 (a ":free" model has none),
        # a missing cache price None: both as genai-prices bills them.
        v: dict[str, float] = {}
        for f, (base, steps) in rates.items():
            own = [p for s, p in sorted(steps.items()) if start is not None and s <= start]
            v[f] = own[-1] if own else base
        return Price(
            input_per_mtok=v.get("input", 0.0),
            output_per_mtok=v.get("output", 0.0),
            cached_input_per_mtok=v.get("cache_read"),
            cache_write_per_mtok=v.get("cache_write"),
            tiers=tiers,
        )

    # Fields may tier at different starts: one Price per distinct start keeps the
    # lookup a single scan with every field's rate right above that start.
    starts = sorted({s for _, steps in rates.values() for s in steps})
    return above(None, tuple((s, above(s)) for s in starts))


class _Model:
    """One entry of a provider's list, in genai-prices' order."""

    __slots__ = ("id", "match", "price")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.id: str = raw["id"]
        self.match = _matcher(raw["match"])
        # None: priced only in units vaultd does not meter (audio hours, pages).
        self.price = None if raw["prices"] is None else _price(raw["prices"])


class _Data:
    """The parsed file. A provider's list is compiled on its first lookup: a daemon
    that never proxies OpenRouter never pays for its 900-odd entries."""

    __slots__ = ("_compiled", "_raw", "services")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.services: Mapping[str, str] = raw["services"]
        self._raw: Mapping[str, Any] = raw["providers"]
        self._compiled: dict[str, tuple[_Model, ...]] = {}

    def models(self, pid: str) -> tuple[_Model, ...]:
        models = self._compiled.get(pid)
        if models is None:
            # Only providers the index names: a pid is never a path of our choosing.
            models = tuple(_Model(m) for m in _read(f"{pid}.json")) if pid in self._raw else ()
            # Two threads racing here build the same tuple: no lock needed.
            self._compiled[pid] = models
        return models

    def fallback(self, pid: str) -> tuple[str, ...]:
        raw = self._raw.get(pid)
        return tuple(raw["fallback"]) if raw else ()


def _read(name: str) -> Any:
    # Imported here: only the first lookup pays for them.
    import json
    from importlib import resources

    return json.loads(resources.files("vaultd").joinpath("data/prices", name).read_bytes())


@cache
def _load() -> _Data:
    return _Data(_read("index.json"))


# "-2024-07-18" or "-20240718" at the end of a model's name.
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_COMPACT_DATE = re.compile(r"(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


def _dashed_date(ref: str) -> str:
    """``-20251211`` -> ``-2025-12-11``, for real dates only: genai-prices' fallback for
    the compact dated names some upstreams answer with (its _normalize_compact_dated_ref)."""
    from datetime import date

    def replace(m: re.Match[str]) -> str:
        year, month, day = int(m.group(2)), int(m.group(3)), int(m.group(4))
        try:
            date(year, month, day)
        except ValueError:
            return m.group(0)
        return f"-{year:04d}-{month:02d}-{day:02d}"

    return _COMPACT_DATE.sub(replace, ref)


def _first_match(data: _Data, pid: str, ref: str) -> _Model | None:
    for model in data.models(pid):
        if model.match(ref):
            return model
    # One step of fallback, never a chain: genai-prices' Provider._match_model.
    for other in data.fallback(pid):
        for model in data.models(other):
            if model.match(ref):
                return model
    return None


def _generated(service: str, model: str) -> Price | None:
    data = _load()
    pid = data.services.get(service)
    if pid is None:
        return None
    ref = model.lower()
    found = _first_match(data, pid, ref)
    if found is None and (dashed := _dashed_date(ref)) != ref:
        found = _first_match(data, pid, dashed)
    return found.price if found else None


class PriceTable:
    """Prices by (service, model): the config's overrides first, then the generated data."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides: Mapping[str, Price] = MappingProxyType(dict(overrides or {}))
        # Bounded (LRU): unknown models are remembered too, so a flood of
        # distinct names costs at most MEMO_SIZE entries.
        self._memo = lru_cache(maxsize=MEMO_SIZE)(self._lookup)

    def _lookup(self, service: str, model: str) -> Price | None:
        # Overrides match the model lower-cased (see _override_key), exactly or
        # without the date the upstream appends to a model's name: an override
        # for "openai/gpt-4o-mini" prices the "gpt-4o-mini-2024-07-18" OpenAI answers with.
        ref = model.lower()
        override = self._overrides.get(f"{service}/{ref}")
        if override is None and (undated := _DATE_SUFFIX.sub("", ref)) != ref:
            override = self._overrides.get(f"{service}/{undated}")
        if override is not None:
            return override
        return _generated(service, model)

    def price(self, service: str, model: str | None) -> Price | None:
        """The price of ``model`` on ``service``; None when none is known."""
        if model is None or len(model) > MAX_MODEL_CHARS:
            return None
        return self._memo(service, model)

    def cost(
        self,
        service: str,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int | None,
        cache_write_tokens: int | None,
    ) -> float | None:
        """USD for one call; None when the price is unknown (the tokens still count).

        ``input_tokens`` is every input token, cache reads and writes included;
        ``cached_input_tokens`` the cache reads, ``cache_write_tokens`` the cache writes;
        ``output_tokens`` includes reasoning. None counts as 0, as do negatives.
        (Positional or keyword, as ``Price.cost``.)
        """
        # ``price``, inline: this runs for every metered answer.
        if model is None or len(model) > MAX_MODEL_CHARS:
            return None
        price = self._memo(service, model)
        if price is None:
            return None
        # Conditional expressions, not max(): four builtin calls fewer per answer.
        return price.cost(
            input_tokens if input_tokens > 0 else 0,
            output_tokens if output_tokens > 0 else 0,
            cached_input_tokens if cached_input_tokens and cached_input_tokens > 0 else 0,
            cache_write_tokens if cache_write_tokens and cache_write_tokens > 0 else 0,
        )
