"""The vault itself: opening it, credentials, sessions, rekeying.

Pure Python over the store: no HTTP, no click (import-linter contracts in pyproject.toml)."""
