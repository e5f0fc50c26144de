"""Tests of vaultd.daemon."""
