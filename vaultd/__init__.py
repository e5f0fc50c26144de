"""vaultd: a local credential vault and proxy."""

__version__ = "0.1.0"
