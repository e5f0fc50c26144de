"""Regenerate vaultd/data/prices.json (and the licence beside it) from the installed genai-prices.

    .venv/bin/pip install -U genai-prices && .venv/bin/python scripts/update_prices.py

Why generated data and not the library at run time: importing genai-prices costs
about 160 ms and 108 MiB RSS, over the daemon's whole memory budget. This script
keeps only what vaultd meters (tokens in, out, cache reads, cache writes) for the
providers behind vaultd's metered services, in genai-prices' own order and match
logic, with the prices that apply today (the file records the date).
tests/test_prices.py checks the runtime against genai-prices and the committed
file against a fresh run of this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

try:
    from genai_prices import data as gp_data
    from genai_prices import data_units as gp_units
    from genai_prices import types as gp
except ImportError as exc:  # pragma: no cover - the message is the point
    raise SystemExit(f"genai-prices is not importable ({exc}): pip install genai-prices") from None

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "vaultd" / "data" / "prices"
# The header and the providers' fallbacks; each provider's models are in
# <provider>.json beside it, so that a daemon parses only the lists it uses
# (OpenRouter's alone is three quarters of the data).
JSON_NAME = "index.json"
LICENCE_NAME = "genai-prices-LICENSE"

# vaultd's metered services -> genai-prices provider ids. This mapping is the one
# hand-written part: which provider's price list bills a vaultd service.
SERVICES = {
    "anthropic": "anthropic",
    "gemini": "google",
    "groq": "groq",
    "mistral": "mistral",
    "openai": "openai",
    "openrouter": "openrouter",
}

# genai-prices price keys -> ours. Every other key genai-prices may carry is checked
# in token_prices(): it must price a unit vaultd never reports (so it costs 0 there).
TOKEN_KEYS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
}
REPORTED = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class GenerationError(Exception):
    """genai-prices holds something this script cannot represent faithfully."""


def require(module: object, *names: str) -> None:
    """Fail with a clear message when genai-prices no longer has a name this script reads."""
    for name in names:
        if not hasattr(module, name):
            raise GenerationError(
                f"genai-prices has no {getattr(module, '__name__', module)}.{name}: "
                "its layout changed, update scripts/update_prices.py"
            )


def decimal_text(value: Decimal) -> str:
    # Plain notation ("0.075", "10"), never "1E+1": diffs stay readable.
    return format(value.normalize(), "f")


def clause(logic: object) -> dict[str, Any]:
    """A genai-prices match clause as the JSON shape genai-prices itself reads."""
    if isinstance(logic, gp.ClauseOr):
        return {"or": [clause(c) for c in logic.or_]}
    if isinstance(logic, gp.ClauseAnd):
        return {"and": [clause(c) for c in logic.and_]}
    for cls, key in (
        (gp.ClauseEquals, "equals"),
        (gp.ClauseStartsWith, "starts_with"),
        (gp.ClauseEndsWith, "ends_with"),
        (gp.ClauseContains, "contains"),
        (gp.ClauseRegex, "regex"),
    ):
        if isinstance(logic, cls):
            return {key: getattr(logic, key)}
    raise GenerationError(f"unknown match clause {type(logic).__name__}")


def price_value(value: object, where: str) -> str | dict[str, Any]:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, gp.TieredPrices):
        tiers = sorted(value.tiers, key=lambda t: t.start)
        return {
            "base": decimal_text(value.base),
            "tiers": [[t.start, decimal_text(t.price)] for t in tiers],
        }
    raise GenerationError(f"{where}: unknown price value {type(value).__name__}")


def units_never_reported() -> set[str]:
    """Price keys whose usage vaultd never reports: genai-prices bills them 0 for our usage.

    genai-prices decomposes usage along unit dimensions. Given only the four reported
    keys, a unit that is neither one of them nor an ancestor of one is inferred as 0,
    except "requests", which counts 1 on every call: that one must not be skipped.
    """
    reported = [set(gp_units.unit_data[key]["dimensions"].items()) for key in REPORTED]
    skipped = set()
    for usage_key, unit in gp_units.unit_data.items():
        dims = set(unit.get("dimensions", {}).items())
        is_ancestor = any(dims <= r for r in reported)
        if usage_key not in REPORTED and usage_key != "requests" and not is_ancestor:
            skipped.add(unit.get("price_key", usage_key))
    return skipped


def resolve(model: gp.ModelInfo, today: datetime) -> gp.ModelPrice:
    """The prices in force on ``today``; time-of-day prices cannot be frozen into data."""
    if not isinstance(model.prices, gp.ModelPrice):
        for conditional in model.prices:
            constraint = conditional.constraint
            if constraint is not None and not isinstance(constraint, gp.StartDateConstraint):
                raise GenerationError(
                    f"model {model.id}: {type(constraint).__name__} prices depend on the hour, "
                    "not representable in generated data"
                )
    # Public API, genai-prices' own resolution: the last conditional price in force.
    # Price variants (service tiers) need a request context, which vaultd does not pass.
    return model.get_prices(today)


def token_prices(
    model: gp.ModelInfo, today: datetime, skipped: set[str]
) -> dict[str, str | dict[str, Any]] | None:
    prices = resolve(model, today)
    found: dict[str, str | dict[str, Any]] = {}
    others = False
    for key, value in vars(prices).items():
        if value is None or key.startswith("_"):
            continue
        if key in TOKEN_KEYS:
            found[TOKEN_KEYS[key]] = price_value(value, f"model {model.id} {key}")
        elif key in skipped:
            others = True
        else:
            raise GenerationError(
                f"model {model.id}: price key {key} would charge vaultd's usage "
                "and is not handled: extend vaultd/prices.py and this script"
            )
    order = list(TOKEN_KEYS.values())
    found = dict(sorted(found.items(), key=lambda item: order.index(item[0])))
    # Priced only in units vaultd does not meter (audio hours, pages, characters):
    # null, so vaultd reports an unknown cost instead of a free call.
    if not found and others:
        return None
    return found


def future_dates(model: gp.ModelInfo, today: date) -> Iterable[date]:
    if isinstance(model.prices, gp.ModelPrice):
        return ()
    return (
        c.constraint.start_date
        for c in model.prices
        if isinstance(c.constraint, gp.StartDateConstraint) and c.constraint.start_date > today
    )


def licence_text() -> str:
    dist = distribution("genai-prices")
    for file in dist.files or ():
        if file.name.upper().startswith(("LICENSE", "LICENCE")):
            return file.read_text(encoding="utf-8")
    raise GenerationError("the installed genai-prices ships no LICENSE file")


def copyright_line(licence: str) -> str:
    for line in licence.splitlines():
        if line.strip().lower().startswith("copyright"):
            return line.strip()
    raise GenerationError("genai-prices' LICENSE has no copyright line")


def build(today: datetime) -> tuple[dict[str, Any], str]:
    """The data and the licence text, from the installed genai-prices."""
    require(gp_data, "providers")
    require(gp_units, "unit_data")
    require(gp.ModelInfo, "get_prices")
    by_id = {p.id: p for p in gp_data.providers}
    wanted = list(dict.fromkeys(SERVICES.values()))
    for pid in wanted:
        if pid not in by_id:
            raise GenerationError(f"genai-prices has no provider {pid!r}")
    # genai-prices falls back one step to other providers' lists (Google -> Anthropic
    # for Claude on Vertex): those lists are needed too, even without a vaultd service.
    for pid in list(wanted):
        for fallback in by_id[pid].fallback_model_providers or ():
            if fallback in by_id and fallback not in wanted:
                wanted.append(fallback)
    skipped = units_never_reported()
    providers: dict[str, Any] = {}
    valid_until: date | None = None
    for pid in sorted(wanted):
        provider = by_id[pid]
        models: list[dict[str, Any]] = []
        for model in provider.models:
            models.append(
                {
                    "id": model.id,
                    "match": clause(model.match),
                    "prices": token_prices(model, today, skipped),
                }
            )
            for starts in future_dates(model, today.date()):
                valid_until = starts if valid_until is None else min(valid_until, starts)
        fallbacks = [f for f in provider.fallback_model_providers or () if f in by_id]
        providers[pid] = {"fallback": fallbacks, "models": models}
    licence = licence_text()
    header = {
        "source": "genai-prices",
        "version": distribution("genai-prices").version,
        "generated": today.date().isoformat(),
        # The first day a dated price recorded in genai-prices starts: regenerate by then.
        "valid_until": valid_until.isoformat() if valid_until else None,
        "licence": "MIT",
        "copyright": copyright_line(licence),
        "licence_file": LICENCE_NAME,
        "units": "USD per million tokens; tiers: [above this many input tokens, price]",
        "services": dict(sorted(SERVICES.items())),
    }
    return {**header, "providers": providers}, licence


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def render(data: Mapping[str, Any]) -> dict[str, str]:
    """File name -> JSON text, one header field and one model per line (a price change
    is a one-line diff): ``index.json``, and ``<provider>.json`` for each provider."""
    lines = ["{"]
    for key, value in data.items():
        if key != "providers":
            lines.append(f"{dumps(key)}:{dumps(value)},")
    fallbacks = {pid: {"fallback": p["fallback"]} for pid, p in data["providers"].items()}
    lines.append(f'"providers":{dumps(fallbacks)}')
    lines.append("}")
    files = {JSON_NAME: "\n".join(lines) + "\n"}
    for pid, provider in data["providers"].items():
        models = provider["models"]
        body = [dumps(m) + ("," if i < len(models) - 1 else "") for i, m in enumerate(models)]
        files[f"{pid}.json"] = "\n".join(["[", *body, "]"]) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, default=DATA_DIR)
    # The tests regenerate as of the committed file's date, so that a price
    # that starts later is news for whoever updates the data, not a failing CI.
    parser.add_argument(
        "--as-of", type=date.fromisoformat, help="Prices in force on this day (default today)."
    )
    args = parser.parse_args(argv)
    as_of = (
        datetime.now(UTC)
        if args.as_of is None
        else datetime.combine(args.as_of, datetime.min.time(), UTC)
    )
    try:
        data, licence = build(as_of)
    except (GenerationError, PackageNotFoundError) as exc:
        print(f"update_prices: {exc}", file=sys.stderr)
        return 1
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render(data).items():
        json.loads(text)  # the hand-laid-out JSON must still be JSON
        (out / name).write_text(text, encoding="utf-8")
    (out / LICENCE_NAME).write_text(licence, encoding="utf-8")
    count = sum(len(p["models"]) for p in data["providers"].values())
    print(f"wrote {out / JSON_NAME}: {count} models, genai-prices {data['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
