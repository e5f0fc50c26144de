"""The proxy: pure decisions (``decisions``, ``redact``), the lookups it caches, the
upstream client, the streaming transport and the usage writer.

``decisions``, ``redact``, ``cache``, ``arrivals`` and ``usage`` never import aiohttp."""
