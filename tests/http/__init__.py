"""Tests of vaultd.http."""
