"""Tests of vaultd.api."""
