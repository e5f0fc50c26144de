"""vaultd.prices against genai-prices, the library its data is generated from.

The runtime reimplements genai-prices' lookup and arithmetic for vaultd's four
counts; these tests hold it to the library for every model in the data, and hold
the committed data to a fresh run of scripts/update_prices.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from genai_prices import Usage, calc_price
from genai_prices import types as gp
from genai_prices.data import providers as gp_providers

from vaultd.errors import ConfigError
from vaultd.prices import MEMO_SIZE, Price, PriceTable, _load, _matcher, parse_price_overrides

ROOT = Path(__file__).resolve().parent.parent
PRICES_DIR = ROOT / "vaultd" / "data" / "prices"


def _data() -> dict[str, Any]:
    """The shipped data as one document: the index, each provider's models in it."""
    folder = resources.files("vaultd").joinpath("data/prices")
    data: dict[str, Any] = json.loads(folder.joinpath("index.json").read_text(encoding="utf-8"))
    for pid, provider in data["providers"].items():
        provider["models"] = json.loads(folder.joinpath(f"{pid}.json").read_text("utf-8"))
    return data


DATA = _data()
# Prices as of the day the data was generated: whether they are still today's is
# test_the_committed_data_is_what_the_script_generates's business, not these tests'.
AS_OF = datetime.combine(date.fromisoformat(DATA["generated"]), datetime.min.time(), UTC)
INSTALLED = version("genai-prices")
STALE = (
    f"genai-prices {INSTALLED} is installed, vaultd/data/prices/ is from "
    f"{DATA['version']}: run scripts/update_prices.py"
)
# The comparisons hold the data to the library release it was generated from.
same_release = pytest.mark.skipif(DATA["version"] != INSTALLED, reason=STALE)
SERVICE_OF = {pid: service for service, pid in DATA["services"].items()}
GP_PROVIDERS = {p.id: p for p in gp_providers}


class Use(NamedTuple):
    input: int
    output: int
    cached: int = 0
    write: int = 0


def usages(model_prices: Any) -> Iterator[Use]:
    yield Use(0, 0)
    yield Use(1_000, 500)
    yield Use(12_000, 300, cached=4_000)
    yield Use(20_000, 800, cached=5_000, write=3_000)  # Anthropic's cache writes
    starts: set[int] = set()
    for value in (model_prices or {}).values():
        if isinstance(value, dict):
            starts.update(start for start, _ in value["tiers"])
    for start in sorted(starts):
        yield Use(start, 700, cached=start // 4)  # at the threshold: still the base rate
        yield Use(start + 1, 700, cached=start // 4, write=start // 10)  # above: the tier's


def genai(use: Use) -> Usage:
    return Usage(
        input_tokens=use.input,
        output_tokens=use.output,
        cache_read_tokens=use.cached,
        cache_write_tokens=use.write,
    )


def ours(table: PriceTable, service: str, model: str, use: Use) -> float | None:
    return table.cost(
        service,
        model,
        input_tokens=use.input,
        output_tokens=use.output,
        cached_input_tokens=use.cached,
        cache_write_tokens=use.write,
    )


def same(mine: float | None, theirs: Decimal) -> bool:
    return mine is not None and math.isclose(mine, float(theirs), rel_tol=1e-9, abs_tol=1e-15)


@same_release
@pytest.mark.parametrize("pid", sorted(DATA["providers"]))
def test_every_model_costs_what_genai_prices_charges(pid: str) -> None:
    # Model by model, in order: each entry's prices, whatever name would reach it.
    provider = GP_PROVIDERS[pid]
    entries = DATA["providers"][pid]["models"]
    compiled = _load().models(pid)
    assert [m.id for m in provider.models] == [m["id"] for m in entries] == [m.id for m in compiled]
    wrong = []
    for model, entry, mine in zip(provider.models, entries, compiled, strict=True):
        for use in usages(entry["prices"]):
            theirs = model.calc_price(genai(use), provider, genai_request_timestamp=AS_OF)
            if mine.price is None:
                # Priced only in units vaultd does not meter: genai-prices bills the tokens
                # 0, vaultd reports the cost as unknown rather than free.
                ok = theirs.total_price == 0
            else:
                cost = mine.price.cost(
                    input_tokens=use.input,
                    output_tokens=use.output,
                    cached=use.cached,
                    cache_write=use.write,
                )
                ok = same(cost, theirs.total_price)
            if not ok:
                wrong.append((model.id, use, theirs.total_price))
    assert not wrong, wrong[:10]


@same_release
@pytest.mark.parametrize("pid", sorted(SERVICE_OF))
def test_every_model_id_is_looked_up_as_genai_prices_does(pid: str) -> None:
    # Through the whole lookup: a model's id may well be claimed by an earlier entry
    # (first match wins); both must then land on the same one.
    service = SERVICE_OF[pid]
    table = PriceTable()
    wrong = []
    for entry in DATA["providers"][pid]["models"]:
        for use in usages(entry["prices"]):
            check = agrees(table, service, pid, entry["id"], use)
            if check is not None:
                wrong.append(check)
    assert not wrong, wrong[:10]


def agrees(table: PriceTable, service: str, pid: str, model: str, use: Use) -> object | None:
    """None when vaultd and genai-prices agree on ``model``'s cost, else what differs."""
    mine = ours(table, service, model, use)
    try:
        theirs = calc_price(
            genai(use), model_ref=model, provider_id=pid, genai_request_timestamp=AS_OF
        )
    except LookupError:
        return None if mine is None else (model, use, mine, "unknown to genai-prices")
    if mine is None:
        # Only a model priced in units vaultd does not meter may be unknown to vaultd
        # and known to genai-prices (which bills its tokens 0).
        ok = null_priced(theirs.model) and theirs.total_price == 0
        return None if ok else (model, use, None, theirs.total_price)
    return None if same(mine, theirs.total_price) else (model, use, mine, theirs.total_price)


def null_priced(model: gp.ModelInfo) -> bool:
    for pid, provider in DATA["providers"].items():
        for gp_model, entry in zip(GP_PROVIDERS[pid].models, provider["models"], strict=True):
            if gp_model is model:
                return entry["prices"] is None
    raise AssertionError(f"{model.id} is not in the data")


REAL_NAMES = [
    # As the APIs answer, dated and aliased.
    ("openai", "gpt-4o-mini-2024-07-18"),
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4.1-nano-2025-04-14"),
    ("openai", "gpt-5.2-20251211"),  # compact date: genai-prices' dashed fallback
    ("openai", "gpt-4o-20250231"),  # not a date: left alone
    ("openai", "o3-mini-2025-01-31"),
    ("openai", "text-embedding-3-small"),
    ("openai", "whisper-1"),
    ("openai", "GPT-4o-Mini"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("anthropic", "claude-opus-4-1-20250805"),
    ("anthropic", "claude-haiku-4-5-20251001"),
    ("gemini", "gemini-2.5-flash"),
    ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-2.0-flash-001"),
    ("gemini", "gemini-2.5-flash-preview-tts"),
    ("gemini", "claude-sonnet-4-5@20250929"),  # on Vertex: in Google's own list
    ("gemini", "claude-3-sonnet@20240229"),  # only through Google's fallback to Anthropic's
    ("gemini", "claude-sonnet-5@20260101"),
    ("groq", "llama-3.3-70b-versatile"),
    ("groq", "openai/gpt-oss-120b"),
    ("groq", "whisper-large-v3"),
    ("mistral", "mistral-large-latest"),
    ("mistral", "mistral-small-2506"),
    ("mistral", "codestral-2508"),
    ("openrouter", "openai/gpt-4o-mini"),
    ("openrouter", "anthropic/claude-sonnet-4.5"),
    ("openrouter", "google/gemini-2.5-flash"),
    ("openrouter", "meta-llama/llama-3.3-70b-instruct:free"),
    ("openrouter", "qwen/qwen3-coder-flash"),
    ("openai", "no-such-model"),
]


@same_release
@pytest.mark.parametrize(("service", "model"), REAL_NAMES)
def test_real_model_names_cost_what_genai_prices_charges(service: str, model: str) -> None:
    pid = DATA["services"][service]
    table = PriceTable()
    for use in [*usages(None), Use(300_000, 2_000, cached=100_000, write=10_000)]:
        assert agrees(table, service, pid, model, use) is None


@pytest.mark.parametrize(
    ("service", "model"),
    [
        ("openai", "gpt-4o-mini-2024-07-18"),
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("gemini", "gemini-2.5-flash"),
        ("openai", "gpt-5.2-20251211"),
        ("gemini", "claude-sonnet-4-5@20250929"),
    ],
)
def test_the_common_models_have_prices(service: str, model: str) -> None:
    price = PriceTable().price(service, model)
    assert price is not None
    assert price.input_per_mtok > 0
    assert price.output_per_mtok > 0


def test_a_tier_applies_to_all_tokens_above_its_threshold() -> None:
    price = Price(1.0, 2.0, 0.5, None, tiers=((100, Price(10.0, 20.0, 5.0, None)),))

    def cost(n: int) -> float:
        return price.cost(input_tokens=n, output_tokens=10, cached=40, cache_write=10)

    # At 100 input tokens: base. At 101: all tokens at the tier (the cliff model);
    # a missing cache-write price is the input price of the same tier.
    assert cost(100) == pytest.approx((50 * 1 + 40 * 0.5 + 10 * 1 + 10 * 2) / 1e6)
    assert cost(101) == pytest.approx((51 * 10 + 40 * 5 + 10 * 10 + 10 * 20) / 1e6)


def gp_clause(clause: dict[str, Any]) -> Any:
    """The genai-prices clause object for a JSON clause, built with its public classes."""
    ((kind, arg),) = clause.items()
    if kind == "or":
        return gp.ClauseOr(or_=[gp_clause(c) for c in arg])
    if kind == "and":
        return gp.ClauseAnd(and_=[gp_clause(c) for c in arg])
    cls = {
        "equals": gp.ClauseEquals,
        "starts_with": gp.ClauseStartsWith,
        "ends_with": gp.ClauseEndsWith,
        "contains": gp.ClauseContains,
        "regex": gp.ClauseRegex,
    }[kind]
    return cls(arg)


CLAUSES = [
    {"equals": "O3"},
    {"starts_with": "GPT-4o"},
    {"ends_with": "-Latest"},
    {"contains": "Claude-V2"},
    {"regex": "flash-\\d"},  # unanchored: re.search
    {"regex": "^A"},  # run against the lower-cased name: never matches
    {"and": [{"starts_with": "gpt"}, {"regex": "^(?!.*-tts(?:$|-))"}]},
    {"or": [{"equals": "x"}, {"contains": "mini"}]},
]
REFS = [
    "o3", "O3", "o3-mini", "gpt-4o", "GPT-4O-MINI", "gpt-4", "gpt-4o-mini-tts",
    "mistral-large-latest", "Mistral-Large-LATEST", "anthropic.claude-v2:1", "claude-v2",
    "gemini-2.5-flash-001", "gemini-flash", "A-model", "x", "",
]  # fmt: skip


@pytest.mark.parametrize("clause", CLAUSES, ids=lambda c: json.dumps(c))
def test_match_clauses_mean_what_they_mean_to_genai_prices(clause: dict[str, Any]) -> None:
    theirs = gp.ModelInfo(id="m", match=gp_clause(clause))
    mine = _matcher(clause)
    # genai-prices lower-cases the name before matching; vaultd does it once, in _generated.
    assert [mine(ref.lower()) for ref in REFS] == [theirs.is_match(ref) for ref in REFS]
    # The examples exercise each clause (but the one that can never match).
    assert any(theirs.is_match(ref) for ref in REFS) or clause == {"regex": "^A"}


@same_release
@pytest.mark.parametrize("pid", sorted(DATA["providers"]))
def test_every_models_match_logic_agrees_with_genai_prices(pid: str) -> None:
    compiled = _load().models(pid)
    wrong = []
    for theirs, mine in zip(GP_PROVIDERS[pid].models, compiled, strict=True):
        ref = theirs.id
        for name in (ref, ref.upper(), f"x-{ref}", f"{ref}-x", ref[:-1], f"p/{ref}", f"{ref}@1"):
            if mine.match(name.lower()) != theirs.is_match(name):
                wrong.append((theirs.id, name))
    assert not wrong, wrong[:10]


# -- overrides ---------------------------------------------------------------------------


def test_an_override_wins_over_the_data() -> None:
    overrides = parse_price_overrides(
        {"openai/GPT-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 2.5}}
    )
    assert overrides == {"openai/gpt-4o-mini": Price(1.0, 2.5, 1.0, 1.0)}
    table = PriceTable(overrides)
    # The name (case aside), also with the date an upstream appends to it...
    assert table.price("openai", "gpt-4o-mini") == Price(1.0, 2.5, 1.0, 1.0)
    assert table.price("openai", "gpt-4o-mini-2024-07-18") == Price(1.0, 2.5, 1.0, 1.0)
    assert table.price("openai", "gpt-4o-mini-20240718") == Price(1.0, 2.5, 1.0, 1.0)
    # ...but not another model that starts the same way.
    assert table.price("openai", "gpt-4o-mini-tts") == PriceTable().price(
        "openai", "gpt-4o-mini-tts"
    )
    cost = table.cost(
        "openai",
        "gpt-4o-mini",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cached_input_tokens=500_000,
        cache_write_tokens=None,
    )
    assert cost == pytest.approx(1.0 + 2.5)


def test_an_override_prices_a_service_without_data() -> None:
    overrides = parse_price_overrides(
        {
            "my-llm/llama-3.3-70b": {
                "input_per_mtok": 0.15,
                "output_per_mtok": 0.60,
                "cached_input_per_mtok": 0.075,
                "cache_write_per_mtok": 0.3,
            }
        }
    )
    table = PriceTable(overrides)
    assert table.price("my-llm", "llama-3.3-70b") == Price(0.15, 0.60, 0.075, 0.3)
    cost = table.cost(
        "my-llm",
        "llama-3.3-70b",
        input_tokens=10_000,
        output_tokens=1_000,
        cached_input_tokens=4_000,
        cache_write_tokens=2_000,
    )
    assert cost == pytest.approx((4_000 * 0.15 + 4_000 * 0.075 + 2_000 * 0.3 + 1_000 * 0.6) / 1e6)
    assert PriceTable().price("my-llm", "llama-3.3-70b") is None


GOOD = {"input_per_mtok": 1, "output_per_mtok": 2}
KEY = "openai/gpt-x"


W = '[prices."openai/gpt-x"]'
NON_NEGATIVE = "must be a non-negative number, not"
AT_MOST = "must be at most 1000000 USD per million tokens"
BAD_KEY = 'must be "SERVICE/MODEL"'
KNOWN = "input_per_mtok, output_per_mtok, cached_input_per_mtok, cache_write_per_mtok"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({KEY: {**GOOD, "input_per_mtok": -1}}, f"{W} input_per_mtok {NON_NEGATIVE} -1"),
        ({KEY: {**GOOD, "output_per_mtok": "0.6"}}, f"{W} output_per_mtok {NON_NEGATIVE} a str"),
        ({KEY: {**GOOD, "input_per_mtok": True}}, f"{W} input_per_mtok {NON_NEGATIVE} a bool"),
        (
            {KEY: {**GOOD, "cached_input_per_mtok": math.nan}},
            f"{W} cached_input_per_mtok {NON_NEGATIVE} nan",
        ),
        ({KEY: {**GOOD, "cache_write_per_mtok": math.inf}}, f"{W} cache_write_per_mtok {AT_MOST}"),
        ({KEY: {**GOOD, "input_per_mtok": 1e7}}, f"{W} input_per_mtok {AT_MOST}"),
        (
            {KEY: {**GOOD, "input_price": 1}},
            f"{W} has an unknown key 'input_price': known are {KNOWN}",
        ),
        ({KEY: {"input_per_mtok": 1}}, f"{W} output_per_mtok is required"),
        ({KEY: 1.5}, f"{W} must be a table with input_per_mtok and output_per_mtok"),
        ({"gpt-x": GOOD}, f"[prices] key 'gpt-x' {BAD_KEY}"),
        ({"OpenAI/gpt-x": GOOD}, f"[prices] key 'OpenAI/gpt-x' {BAD_KEY}"),
        ({"openai/": GOOD}, f"[prices] key 'openai/' {BAD_KEY}"),
        ({"openai/gpt x": GOOD}, f"[prices] key 'openai/gpt x' {BAD_KEY}"),
        ({"openai/gpt\tx": GOOD}, f"[prices] key 'openai/gpt\\tx' {BAD_KEY}"),
        ({"openai/" + "m" * 201: GOOD}, "[prices] key 'openai/mmmm"),
        ({"-ai/gpt-x": GOOD}, f"[prices] key '-ai/gpt-x' {BAD_KEY}"),
        ({KEY: GOOD, "openai/GPT-X": GOOD}, f'[prices."openai/GPT-X"] and {W} name the same model'),
        ([KEY], '[prices] must be a table of "SERVICE/MODEL" tables'),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(table: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_price_overrides(table)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 300


def test_good_override_edges_are_accepted() -> None:
    parsed = parse_price_overrides(
        {
            "openrouter/openai/gpt-4o-mini": {"input_per_mtok": 0, "output_per_mtok": 1e6},
            "a.b_c-9/" + "m" * 200: {"input_per_mtok": 0.0, "output_per_mtok": 0},
        }
    )
    assert parsed["openrouter/openai/gpt-4o-mini"] == Price(0.0, 1e6, 0.0, 0.0)
    assert parse_price_overrides({}) == {}


# -- unknown and hostile models ----------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "model"),
    [
        ("openai", "no-such-model"),
        ("openai", None),
        ("github", "gpt-4o-mini"),  # not metered: no data
        ("no-such-service", "gpt-4o-mini"),
        ("openai", "gpt-4o-mini" + "x" * 300),  # over MAX_MODEL_CHARS: not matched at all
        ("openai", "whisper-1"),  # priced per audio hour only: unknown, not free
    ],
)
def test_unknown_prices_are_none(service: str, model: str | None) -> None:
    table = PriceTable()
    assert table.price(service, model) is None
    kwargs = {"input_tokens": 10, "output_tokens": 10}
    assert table.cost(service, model, **kwargs, cached_input_tokens=0, cache_write_tokens=0) is None


def test_the_memo_stays_bounded_under_hostile_model_names() -> None:
    table = PriceTable()
    for i in range(10_000):
        table.price("openrouter", f"hostile-{i}")
        table.price("openai", f"gpt-4o-mini-{i}")
    info = table._memo.cache_info()
    assert info.currsize <= MEMO_SIZE
    assert info.maxsize == MEMO_SIZE
    # Names over the length cap never enter it.
    table._memo.cache_clear()
    for i in range(100):
        assert table.price("openai", f"{i}" + "y" * 10_000) is None
    assert table._memo.cache_info().currsize == 0
    assert table.price("openai", "gpt-4o-mini") is not None


def test_importing_reads_no_data_and_no_http() -> None:
    probe = (
        "import sys\n"
        "import vaultd.prices as p\n"
        "o = p.parse_price_overrides({'a/b': {'input_per_mtok': 1, 'output_per_mtok': 1}})\n"
        "t = p.PriceTable(o)\n"
        "t.price('a', 'b')\n"
        "print(p._load.cache_info().currsize, 'aiohttp' in sys.modules)\n"
        "t.price('openai', 'gpt-4o-mini')\n"
        "print(p._load.cache_info().currsize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["0", "False", "1"]


# -- the data and its source -------------------------------------------------------------


def without_date(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith('"generated":'))


def regenerate(out: Path, as_of: str) -> None:
    """Run scripts/update_prices.py into ``out``, as of ``as_of``."""
    script = str(ROOT / "scripts" / "update_prices.py")
    done = subprocess.run(
        [sys.executable, script, "--output-dir", str(out), "--as-of", as_of],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _files(folder: Path) -> dict[str, str]:
    """Every file the script writes, by name (the index without its date line)."""
    return {
        path.name: without_date(path.read_text(encoding="utf-8"))
        for path in sorted(folder.iterdir())
    }


def test_the_drift_check_holds_after_a_dated_price_starts(tmp_path: Path) -> None:
    # Regenerated as of the file's own date, the comparison above stays true
    # on any later day: no test fails because the calendar moved.
    if DATA["version"] != INSTALLED or DATA["valid_until"] is None:
        pytest.skip(STALE)
    regenerate(tmp_path / "out", DATA["valid_until"])
    # The control: on valid_until the prices do differ, so --as-of is what keeps it stable.
    assert _files(tmp_path / "out") != _files(PRICES_DIR)


def test_the_committed_data_is_what_the_script_generates(tmp_path: Path) -> None:
    if DATA["version"] != INSTALLED:
        pytest.skip(STALE)
    regenerate(tmp_path / "out", DATA["generated"])
    assert _files(tmp_path / "out") == _files(PRICES_DIR), (
        "vaultd/data/prices/ differs from what the installed genai-prices gives for "
        f"{DATA['generated']}: run scripts/update_prices.py"
    )
    licence = (PRICES_DIR / "genai-prices-LICENSE").read_text(encoding="utf-8")
    assert DATA["copyright"] in licence


def test_the_data_covers_the_metered_services() -> None:
    assert DATA["services"] == {
        "anthropic": "anthropic",
        "gemini": "google",
        "groq": "groq",
        "mistral": "mistral",
        "openai": "openai",
        "openrouter": "openrouter",
    }
    assert DATA["licence"] == "MIT"
    # genai-prices' one-step fallbacks are kept with the lists they reach.
    for pid, provider in DATA["providers"].items():
        assert provider["fallback"] == (GP_PROVIDERS[pid].fallback_model_providers or [])
        assert all(f in DATA["providers"] for f in provider["fallback"])
