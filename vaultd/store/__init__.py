"""The storage layer: the SQLite file, its migrations, the audit table, backups.

Knows rows and files, never HTTP or click (import-linter contracts in pyproject.toml)."""
