"""Which requests a meter can count, per answer shape: what a token or cost budget allows.

Under a budget (DESIGN 10) a request must be one whose cost vaultd will see:
either it costs nothing (reading, listing, deleting: no generation), or its
answer reports usage. Everything else a provider bills without reporting it
(fine-tuning jobs, batches, images, speech, realtime client secrets that let
a tool call the provider directly) is refused before it is sent (403
unmeterable): a budget that such a request could pass is no budget.
"""

from __future__ import annotations

import enum
import re


class Billing(enum.Enum):
    FREE = "free"  # nothing generated, nothing billed
    REPORTED = "reported"  # billed, and the answer says how much
    UNSEEN = "unseen"  # billed, or may be, without usage vaultd can read


FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})

# The paths (as the upstream reads them, after any prefix such as /v1 or an
# Azure deployment) whose answers carry usage, or which are free.
_REPORTED = {
    "openai": re.compile(r".*/(chat/completions|completions|responses|embeddings)"),
    "anthropic": re.compile(r".*/(messages|complete)"),
    "gemini": re.compile(r".*/models/[^/]+:(generateContent|streamGenerateContent|embedContent)"),
}
_FREE = {
    "openai": re.compile(r".*/(moderations|responses/input_tokens)"),
    "anthropic": re.compile(r".*/messages/count_tokens"),
    "gemini": re.compile(r".*/models/[^/]+:countTokens"),
}


def billing(kind: str, method: str, path: str) -> Billing:
    """How a request to ``path`` (decoded, without its query) is billed, for ``kind``."""
    if kind not in _REPORTED:
        return Billing.UNSEEN  # "none": nothing it answers is read
    if method in FREE_METHODS:
        return Billing.FREE
    path = path.rstrip("/")
    if _FREE[kind].fullmatch(path):
        return Billing.FREE
    if method == "POST" and _REPORTED[kind].fullmatch(path):
        return Billing.REPORTED
    return Billing.UNSEEN
