"""Tests of vaultd.proxy."""
