"""Metering: the model and token usage an answer reports, read while it streams (DESIGN 10).

Pure code, no aiohttp and no I/O: ``Meter`` reads one answer as it streams
(``meter`` documents the counting convention), ``read_json_answer`` one that
came whole, ``add_stream_usage`` asks OpenAI for the
usage of a streamed chat completion, ``readers`` knows each provider's shape,
``streams`` finds the usage in each provider's events, ``sse`` frames event streams.
"""

from vaultd.proxy.metering.endpoints import Billing, billing
from vaultd.proxy.metering.meter import Meter, is_json_answer, read_json_answer
from vaultd.proxy.metering.readers import Reading
from vaultd.proxy.metering.request import StreamUsage, add_stream_usage, responses_background
from vaultd.proxy.metering.sse import SSEEvent, SSESplitter, parse_event

__all__ = [
    "Billing",
    "Meter",
    "Reading",
    "SSEEvent",
    "SSESplitter",
    "StreamUsage",
    "add_stream_usage",
    "billing",
    "is_json_answer",
    "parse_event",
    "read_json_answer",
    "responses_background",
]
