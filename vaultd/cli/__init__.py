"""The ``vaultd`` command line: click verbs, ``run``, ``doctor`` and their output."""
