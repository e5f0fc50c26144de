"""What the tests share: one home for their helpers (fixtures are in tests/fixtures.py)."""
