"""Request policy (DESIGN 11): which methods, paths and models a session's token may use.

Pure decisions, no I/O: the proxy calls ``decide`` and ``model_allowed`` before
any byte goes upstream and refuses (403 ``policy-denied``) with their reason.

``METHODS`` is ``*`` or a comma list, written in any case and kept upper case:
HTTP methods are case-sensitive (RFC 9110 9.1), so a rule for ``GET`` does not
allow ``get``; under any rule a method not upper case is refused outright, so
``delete`` cannot slip past a ``DELETE`` deny rule to a lenient upstream.
``PATH`` is a glob: ``*`` is any run of characters within one segment (``/v1/*``
matches ``/v1/``), a whole ``**`` segment is zero or more segments (``/v1/**``
matches ``/v1``, ``/v1/`` and ``/v1/a/b``; ``/**`` every path), all else is
literal, a trailing "/" too: ``/v1/models`` does not match ``/v1/models/``
(but a deny rule refuses both: ``decide``).

Rules are matched against the path as the upstream reads it: every
percent-escape decoded (``/v1/chat/completion%73`` is ``/v1/chat/completions``,
``%3A`` is ``:``). The proxy refuses, before this, the escapes that would make
decoding change the path's shape (``%2F``, dot segments, double encoding), and
under a policy forwards the path it matched, written out anew (``decisions``).
In a rule, an escape stands for the character it encodes (``%2A`` is a literal
``*``), so a rule can name what a path may hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar
from urllib.parse import unquote

from vaultd.errors import ErrorList, FieldError, ValidationError, json_pointer
from vaultd.models import check_name

T = TypeVar("T")
MAX_RULES = 200
MAX_RULE_CHARS = 1024
MAX_MODELS = 100
MAX_MODEL_CHARS = 200
FIELDS = ("allow", "deny", "models", "credential")
# What ``--read-only`` stands for.
READ_ONLY: tuple[str, ...] = ("GET,HEAD,OPTIONS /**",)
# Headers some frameworks read as "run this method instead": they would let a
# POST allowed by a rule run as a DELETE upstream.
OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")

# An RFC 9110 token, less "*" (which stands for "any method" in a rule) and
# bounded: no real method name is long.
_METHOD = re.compile(r"[!#$%&'+\-.^_`|~0-9A-Za-z]{1,32}")
# RFC 3986 path characters (unreserved, sub-delims, ":", "@", "%", "/"): what a
# path on the wire is made of. Anything else would have been percent-encoded.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# A segment's glob ends where the segment does. Without this, a block inside
# an atomic group (below) could end mid-segment, commit, and miss a match.
_SEGMENT_END = r"(?=/|\Z)"
_ANY_SEGMENTS = "(?:/[^/]*)*"


def _literal(chunk: str) -> str:
    return re.escape(chunk)


def _decoded(chunk: str) -> str:
    # Checked by ``_check_glob``: every escape is UTF-8, none a slash.
    return re.escape(unquote(chunk, errors="strict"))


def _stars(glob: str, any_char: str, literal: Callable[[str], str] = _literal) -> str:
    """A glob whose only special is ``*`` (a run of ``any_char``) as a regex for fullmatch;
    the chunks between stars as ``literal`` writes them.

    Middle chunks are found leftmost-first, atomically: the earliest place never
    loses a match, and ``*a*a*a*...*b`` over "aaa..." would backtrack exponentially."""
    first, *rest = glob.split("*")
    if not rest:
        return literal(first)
    *middle, last = rest
    atomic = "".join(f"(?>{any_char}*?{literal(chunk)})" for chunk in middle if chunk)
    return f"{literal(first)}{atomic}{any_char}*{literal(last)}"


def _path_regex(glob: str, flags: int = 0) -> re.Pattern[str]:
    """A path glob (checked by ``parse_rule``) as a regex for fullmatch. Between
    ``**`` the first block is anchored at the start, the last at the end, and
    the middle ones atomically at the first fit, as in ``_stars``: k ``**``
    would otherwise cost O(n^k)."""
    blocks: list[str] = [""]
    for segment in glob.split("/")[1:]:
        if segment == "**":
            blocks.append("")
        else:
            blocks[-1] += "/" + _stars(segment, "[^/]", _decoded) + _SEGMENT_END
    pattern = blocks[0]
    for block in blocks[1:-1]:
        if block:  # "/**/**" is "/**"
            pattern += f"(?>{_ANY_SEGMENTS}?{block})"
    if len(blocks) > 1:
        pattern += _ANY_SEGMENTS + blocks[-1]
    return re.compile(pattern, flags)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``METHODS PATH`` rule; build it with ``parse_rule``, which checks it."""

    methods: frozenset[str] | None  # None: "*", any method
    path: str
    text: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _any_case: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once per rule, not per request.
        object.__setattr__(self, "_regex", _path_regex(self.path))
        object.__setattr__(self, "_any_case", _path_regex(self.path, re.IGNORECASE))

    def matches(self, method: str, path: str, *, any_case: bool = False) -> bool:
        """Whether ``method`` (compared exactly) and ``path`` (the whole of it) match;
        with ``any_case``, the path in any letter case."""
        if self.methods is not None and method not in self.methods:
            return False
        regex = self._any_case if any_case else self._regex
        return regex.fullmatch(path) is not None


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message: escaped (no control characters) and cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(cut)


def parse_rule(text: str) -> Rule:
    """``METHODS PATH`` as a ``Rule``; ``ValueError`` with a one-line reason if malformed."""
    if len(text) > MAX_RULE_CHARS:
        raise ValueError(f"a rule must be at most {MAX_RULE_CHARS} characters")
    if not text.isprintable():
        raise ValueError("a rule must not contain control characters")
    parts = text.split()
    if not parts:
        raise ValueError('a rule must not be empty; write METHODS PATH, as in "GET /v1/**"')
    if len(parts) == 1:
        missing = "methods before its path" if parts[0].startswith("/") else "a path"
        raise ValueError(f'a rule needs {missing}, as in "GET /v1/**" or "* /**"')
    if len(parts) > 2:
        raise ValueError("a rule is METHODS PATH; write a method list without spaces (GET,HEAD)")
    methods_text, path = parts
    methods = _parse_methods(methods_text)
    _check_glob(path)
    shown = "*" if methods is None else ",".join(methods)
    return Rule(None if methods is None else frozenset(methods), path, f"{shown} {path}")


def _parse_methods(text: str) -> tuple[str, ...] | None:
    if text == "*":
        return None
    for name in text.split(","):
        if not _METHOD.fullmatch(name):
            raise ValueError(f'{_shown(name)} is not a method name ("*" must stand alone)')
    # Upper case: see the module docstring. Duplicates dropped, order kept.
    return tuple(dict.fromkeys(text.upper().split(",")))


def _check_glob(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f'the path {_shown(path)} must start with "/"')
    if "?" in path or "#" in path:
        raise ValueError("the path must not have a query or fragment: only the path is matched")
    if not _PATH_CHARS.fullmatch(path):
        raise ValueError("the path must be URL path characters (RFC 3986); match others with *")
    for escape in _ESCAPE.finditer(path):
        if escape.group(1) is None:
            raise ValueError('"%" must start a percent-escape of two hex digits')
        char = chr(int(escape.group(1), 16))
        if char in _UNRESERVED:
            # Said plainly: the same rule, written as people read it.
            raise ValueError(f"write {char!r}, not {escape.group(0)!r}: such escapes are decoded")
        if char in "/\\":
            raise ValueError("encoded slashes are refused in requests, so never match")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("percent-escapes must encode UTF-8 (as %C3%A9 does)") from None
    if not decoded.isprintable():
        raise ValueError("escaped control characters are refused in requests, so never match")
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        if "***" in segment:
            raise ValueError('"***" is not a glob: use * within a segment or ** across segments')
        if "**" in segment and segment != "**":
            raise ValueError('"**" must be a whole segment, as in /v1/**/files')
        if segment in (".", ".."):
            raise ValueError('"." and ".." segments are refused in requests, so never match')
        if not segment and i < len(segments) - 1:
            raise ValueError('empty segments ("//") are refused in requests, so never match')


@dataclass(frozen=True, slots=True)
class Policy:
    """A session's policy: every field optional; empty means "no constraint"."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    models: tuple[str, ...] = ()
    credential: str | None = None
    _model_regexes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    # Decisions about a (method, path) already made for this policy, kept by
    # the caller (``proxy.policy``): each a pure function of the policy and
    # its key, and a client calls the same few endpoints over and over.
    # Each value: (why refused, or None; the tail to forward).
    memo: dict[tuple[str, str], tuple[str | None, str]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # "*" also spans "/" in a model name (meta-llama/*); "**" is "*".
        regexes = (re.compile(_stars(re.sub(r"\*+", "*", g), "."), re.DOTALL) for g in self.models)
        object.__setattr__(self, "_model_regexes", tuple(regexes))
        object.__setattr__(self, "memo", {})

    @property
    def method_rules(self) -> bool:
        """Any allow or deny rule: then method-override headers are refused too."""
        return bool(self.allow or self.deny)

    def to_json(self) -> dict[str, object]:
        """The API's (and the stored row's) shape; ``check_policy`` reads it back."""
        return {
            "allow": [rule.text for rule in self.allow],
            "deny": [rule.text for rule in self.deny],
            "models": list(self.models),
            "credential": self.credential,
        }


def check_policy(value: object, pointer: str = "/policy") -> Policy | None:
    """A policy from JSON (API body, stored row, ``[policies.NAME]``); None if empty.
    Raises every failure at once, pointers naming the element (``/policy/allow/3``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            FieldError(pointer, f"must be an object with any of {', '.join(FIELDS)}, or null")
        )
    errors = ErrorList()
    for key in (k for k in value if k not in FIELDS):
        errors.add(pointer + json_pointer(str(key)), f"is not one of {', '.join(FIELDS)}")
    allow = _check_list(value.get("allow"), f"{pointer}/allow", MAX_RULES, parse_rule, errors)
    deny = _check_list(value.get("deny"), f"{pointer}/deny", MAX_RULES, parse_rule, errors)
    models = _check_list(value.get("models"), f"{pointer}/models", MAX_MODELS, _model_glob, errors)
    credential = value.get("credential")
    if credential is not None:
        credential = errors.check(check_name, credential, f"{pointer}/credential")
    errors.raise_if_any()
    if not (allow or deny or models or credential):
        return None
    return Policy(allow, deny, models, credential)


def _model_glob(glob: str) -> str:
    if not 1 <= len(glob) <= MAX_MODEL_CHARS:
        raise ValueError(f"a model glob must be 1 to {MAX_MODEL_CHARS} characters")
    if not glob.isprintable():
        raise ValueError("a model glob must not contain control characters")
    return glob


def _check_list(
    value: object, where: str, limit: int, check: Callable[[str], T], errors: ErrorList
) -> tuple[T, ...]:
    """A JSON array's strings (null: none), each through ``check``; failures noted."""
    what = "model globs" if where.endswith("/models") else "rules"
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > limit:
        # Too many: one failure for the list, not one per item of 10,000.
        errors.add(where, f"must be a list of at most {limit} {what}")
        return ()
    checked: list[T] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            errors.add(f"{where}/{i}", "must be a string")
            continue
        try:
            checked.append(check(item))
        except ValueError as exc:
            errors.add(f"{where}/{i}", f"{_shown(item)}: {exc}")
    return tuple(checked)


class Decision(NamedTuple):
    allowed: bool
    reason: str | None  # None when allowed; else names the rule or the reason


ALLOWED = Decision(True, None)


# The query parameter some frameworks (Laravel, Symfony, Rails' Rack) read as
# the method of a POST, as they read the override headers.
OVERRIDE_PARAM = "_method"


def method_override_param(raw_query: str) -> bool:
    """Whether the (encoded) query names ``_method``, in any case or escaping."""
    if "_" not in raw_query and "%" not in raw_query:
        return False  # the common case, without decoding a thing
    for pair in raw_query.split("&"):
        name = unquote(pair.partition("=")[0].replace("+", " "))
        if name.strip().lower() == OVERRIDE_PARAM:
            return True
    return False


def method_override(header_names: Iterable[str]) -> str | None:
    """The first method-override header in ``header_names``, as sent, or None.

    Public so that the proxy can answer it with 400 (DESIGN 11) before ``decide``.
    "_" counts as "-": CGI-style servers read both alike.
    """
    names = tuple(header_names)
    # Every request under method rules asks, and a loop in Python over its
    # headers was a quarter of what a policy added to a request: so first one
    # look at all the names at once. Each override header ends in "method" or
    # "override" ("_" for "-" leaves those letters be), so its name lower-cased
    # holds one of them; lower-casing the names joined maps each character as
    # it would alone (but a final sigma, which becomes no ASCII letter either
    # way), so the joined names lower-cased hold it too.
    joined = "\n".join(names).lower()
    if "method" not in joined and "override" not in joined:
        return None
    for name in names:
        # Each ends in "method" or "override": a six-character test first,
        # since every request under method rules asks (its cost showed).
        if (
            name[-6:].lower() in _OVERRIDE_ENDINGS
            and name.lower().replace("_", "-") in OVERRIDE_HEADERS
        ):
            return name
    return None


_OVERRIDE_ENDINGS = frozenset(name[-6:] for name in OVERRIDE_HEADERS)


def _path_problem(path: str) -> str | None:
    """Why a path is refused under any method rule, or None. Servers resolve dot
    segments and "//" differently, so no rule can say what they reach."""
    if not path.startswith("/"):
        return f'the path {_shown(path)} does not start with "/"'
    if not path.isprintable():
        return f"the path {_shown(path)} contains control characters"
    segments = path.split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        return f'the path {_shown(path)} has a "." or ".." segment'
    if not all(segments[:-1]):
        return f'the path {_shown(path)} has an empty segment ("//")'
    return None


def decide(policy: Policy | None, method: str, path: str, header_names: Iterable[str]) -> Decision:
    """Whether the method and path rules let a request through: deny wins, and a
    non-empty allow list is exclusive. ``path``: as the upstream will read it
    (every escape decoded: ``decisions.policy_path``), without the query."""
    if policy is None or not policy.method_rules:
        return ALLOWED
    override = method_override(header_names)
    if override is not None:
        return Decision(False, f"the {override} header is refused under method rules")
    if not _METHOD.fullmatch(method):
        return Decision(False, f"the method {_shown(method)} is not an HTTP method name")
    if method != method.upper():
        return Decision(False, f'the method "{method}" is not upper case (RFC 9110)')
    problem = _path_problem(path)
    if problem is not None:
        return Decision(False, problem)
    # A deny rule holds for the path with and without a trailing slash, in any
    # letter case: many servers (Express by default; vaultd's own
    # ``upstream_path``) read "/x/" as "/x", and some (Express, ASP.NET Core)
    # route "/X" as "/x", so neither may slip past a rule for "/x". This only
    # ever refuses more; allow rules stay exact, which fails closed.
    bare = path[:-1] if len(path) > 1 and path.endswith("/") else path
    variants = (bare,) if bare == "/" else (bare, bare + "/")
    for rule in policy.deny:
        if any(rule.matches(method, variant, any_case=True) for variant in variants):
            return Decision(False, f'denied by "{rule.text}"')
    if policy.allow and not any(rule.matches(method, path) for rule in policy.allow):
        shown = path if len(path) <= 200 else path[:200] + "..."
        return Decision(False, f"no allow rule matches {method} {shown}")
    return ALLOWED


def model_allowed(policy: Policy | None, model: str | None) -> Decision:
    """Whether ``model`` (None: the request names none) is in the policy's models."""
    if policy is None or not policy.models or model is None:
        return ALLOWED
    for regex in policy._model_regexes:
        if regex.fullmatch(model) is not None:
            return ALLOWED
    return Decision(False, f"model {_shown(model)} is not in the allowed models")


class ModelRead(NamedTuple):
    model: str | None  # the model the body names, None if it names none
    unreadable: str | None  # why the body cannot be read for it (fail closed), else None
    # The JSON object read (every key once, no NaN), for a reader as strict
    # that would otherwise parse the same bytes again (metering's stream usage).
    document: dict[str, object] | None = None


class _Unreadable(ValueError):
    """A body that is JSON to some parsers and not to others."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Parsers disagree on which of two equal keys wins: vaultd could check one
    # model while the upstream runs the other.
    found: dict[str, object] = dict(pairs)
    if len(found) == len(pairs):
        return found  # every key once (a dict of them as long as the list)
    found = {}
    for key, item in pairs:
        if key in found:
            raise _Unreadable(f"the key {_shown(key, 40)} appears twice")
        found[key] = item
    return found


def _no_constant(name: str) -> object:
    raise _Unreadable(f"{name} is not JSON")


# Made once: ``json.loads`` with hooks makes a decoder (and its scanner) per
# call, which cost about as much as the parse itself. A decoder keeps nothing
# from one ``decode`` to the next (``json.loads`` shares its own default one).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _json_type_problem(content_type: str | None) -> str | None:
    if content_type == "application/json":
        return None  # what SDKs send, exactly: no parameter to look at
    media, *params = (content_type or "").split(";")
    media = media.strip().lower()
    subtype = media.removeprefix("application/")
    if not (subtype == "json" or (subtype != media and subtype.endswith("+json") and subtype[:-5])):
        return f"the body's type {_shown(media)} is not JSON"
    for name, _, charset in (param.partition("=") for param in params):
        # Another charset: the upstream might decode it otherwise than as UTF-8.
        if name.strip().lower() == "charset" and charset.strip(' "').lower() != "utf-8":
            return f"the body's charset {_shown(charset.strip())} is not UTF-8"
    return None


def model_from_body(
    body: bytes, content_type: str | None, content_encoding: str | None
) -> ModelRead:
    """The top-level ``model`` of a JSON body. Whatever might be read one way here and
    another upstream is ``unreadable``: fail closed. An empty body names none."""
    if not body:
        return ModelRead(None, None)
    if content_encoding is not None and content_encoding.strip().lower() != "identity":
        return ModelRead(None, f"the body has Content-Encoding {_shown(content_encoding, 40)}")
    problem = _json_type_problem(content_type)
    if problem is not None:
        return ModelRead(None, problem)
    try:
        text = body.decode("utf-8")  # strict; a BOM then fails as not JSON
        value = _DECODER.decode(text)
    except UnicodeDecodeError:
        return ModelRead(None, "the body is not UTF-8")
    except _Unreadable as exc:
        return ModelRead(None, f"the body cannot be read: {exc}")
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and over-long integers.
        return ModelRead(None, "the body is not JSON")
    if not isinstance(value, dict):
        return ModelRead(None, "the body is not a JSON object")
    # Go's encoding/json (and parsers like it) match keys in any letter case,
    # the last match winning: {"model":"ok","Model":"other"}, or "MODEL" alone,
    # would run another model upstream than the one checked here.
    other = next((k for k in value if k != "model" and k.casefold() == "model"), None)
    if other is not None:
        return ModelRead(
            None, f'the body has the key {_shown(other, 40)}, which some parsers read as "model"'
        )
    model = value.get("model")
    if model is None and "model" not in value:
        return ModelRead(None, None, value)
    if not isinstance(model, str):
        return ModelRead(None, 'the body\'s "model" is not a string')
    return ModelRead(model, None, value)


def model_from_path(path: str) -> str | None:
    """The model of a Gemini path, ``.../models/{model}:{method}``, or None. With two
    ":" the whole segment, so that no way of splitting it escapes the globs. A
    tuned model (``.../tunedModels/{id}:{method}``) is ``tunedModels/{id}``: no
    glob for base models lets it through."""
    # A trailing slash dropped first: servers that ignore it still read the
    # model there (``/models/gemini-pro:generateContent/``).
    segments = path.removesuffix("/").split("/")
    if len(segments) < 3 or ":" not in segments[-1]:
        return None
    kind = segments[-2].lower()
    if kind not in ("models", "tunedmodels"):
        return None
    last = segments[-1]
    model = last.split(":")[0] if last.count(":") == 1 else last
    return model if kind == "models" else f"{segments[-2]}/{model}"
