"""Remote sources: credentials a team keeps in OpenBao or Vault (KV v2), held in memory.

The pure parts decide: ``kv`` builds KV paths from checked segments and reads
the server's answers; ``catalog`` is what the daemon knows of each remote
credential and whether its secret may be served now. The parts that talk
HTTP fetch: ``client`` (one bounded request, never a redirect), ``auth``
(AppRole or a token file, renewed before it expires) and ``source`` (the
refresh rounds, one fetch at a time per path). ``probe`` is ``vaultd
doctor``'s one-shot check. Nothing here writes a secret or a token to disk
or to a log.
"""
