"""Tests of vaultd.store."""
