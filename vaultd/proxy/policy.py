"""The session's request policy (DESIGN 11), applied to a proxied request.

``core.policy`` decides; this applies its decisions to what the proxy holds,
before any byte goes upstream: the method and path rules and a model named
in the path (``route``), the one credential the session may use
(``credential_name``), and the model a body names (``body_model``, once
``inspection`` has read the body). Each refusal is a ``PolicyDenied`` (403)
whose detail names the rule or the reason, or a ``MethodOverrideRefused``
(400) for a method-override header or `_method` parameter under method rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from vaultd.core.policy import (
    OVERRIDE_PARAM,
    ModelRead,
    Policy,
    decide,
    method_override,
    method_override_param,
    model_allowed,
    model_from_body,
    model_from_path,
)
from vaultd.proxy.decisions import canonical_tail, policy_path
from vaultd.proxy.errors import MethodOverrideRefused, PolicyDenied


def route(
    policy: Policy, method: str, rest: str, raw_query: str, header_names: Iterable[str]
) -> str:
    """The method, path and path-model checks; ``rest`` has passed ``checked_tail``.
    Returns the tail to forward.

    Under any check the path is forwarded as it was matched (``canonical_tail``):
    an escape the upstream decodes another way cannot reach what the rules
    did not see.
    """
    if policy.method_rules:
        override = method_override(header_names)
        if override is not None:
            raise MethodOverrideRefused(
                f"the {override[:64]} header is refused: this session's policy has method rules"
            )
        if method_override_param(raw_query):
            raise MethodOverrideRefused(
                f"the query parameter {OVERRIDE_PARAM} is refused: this session's policy "
                "has method rules"
            )
    key = (method, rest)
    routed = policy.memo.get(key)
    if routed is None:
        routed = _routed(policy, method, rest)
        if len(rest) <= MEMO_PATH_CHARS:
            if len(policy.memo) >= MEMO_ENTRIES:
                policy.memo.clear()  # a client that varies its paths starts it over
            policy.memo[key] = routed
    reason, tail = routed
    if reason is not None:
        raise PolicyDenied(reason)
    return tail


# What route() remembers per policy: bounded in entries and in key length.
MEMO_ENTRIES = 256
MEMO_PATH_CHARS = 512


def _routed(policy: Policy, method: str, rest: str) -> tuple[str | None, str]:
    """(why refused, or None; the tail to forward) for ``method`` and ``rest``:
    everything ``route`` decides that depends on nothing else."""
    path = policy_path(rest)
    if policy.method_rules:
        decision = decide(policy, method, path, ())
        if not decision.allowed:
            return decision.reason or "refused by the session's policy", ""
    if policy.models:
        # The body, if any, is read for its model too (``inspection``): a
        # request may name one in both places, and each must pass.
        decision = model_allowed(policy, model_from_path(path))
        if not decision.allowed:
            return decision.reason or "refused by the session's policy", ""
    return None, canonical_tail(path)


def credential_name(policy: Policy, service: str, wanted: str | None) -> str | None:
    """The credential to look up: the policy's one name, if it has one, else ``wanted``.

    ``wanted`` (``X-Vaultd-Credential``) may still name that one credential, by
    name; an id is checked by ``credential_chosen`` once it is looked up.
    (Without a policy the proxy looks up ``wanted``, and calls neither.)
    """
    if policy.credential is None:
        return wanted
    return wanted if wanted is not None else policy.credential


def credential_chosen(policy: Policy, name: str) -> None:
    """Refuse a credential other than the policy's one (``name``: the one found)."""
    if policy.credential is not None and name != policy.credential:
        raise PolicyDenied(f"this session may use only the credential named {policy.credential!r}")


def body_model(
    policy: Policy, body: bytes | None, content_type: str | None, content_encoding: str | None
) -> ModelRead:
    """The model a request body names (and the JSON object read), refused unless the
    policy's models allow it.

    ``body`` is None when it is larger than ``[policy] max_inspect_body``: it
    cannot be read for its model, so it is refused (fail closed).
    """
    if body is None:
        raise PolicyDenied(
            "the request body is larger than [policy] max_inspect_body, so vaultd cannot "
            "read which model it names; this session's policy allows only some models"
        )
    read = model_from_body(body, content_type, content_encoding)
    if read.unreadable is not None:
        raise PolicyDenied(
            f"{read.unreadable}, so vaultd cannot read which model it names; this session's "
            "policy allows only some models (send a JSON object, each key once)"
        )
    decision = model_allowed(policy, read.model)
    if not decision.allowed:
        raise PolicyDenied(decision.reason or "refused by the session's policy")
    return read
