"""Tests of vaultd.cli."""
