"""Tests of vaultd.core."""
