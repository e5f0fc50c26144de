"""``vaultd run --isolate`` (DESIGN 12): the command cannot reach what it is kept from.

What the child and everything it starts cannot do, and by which mechanism:

- read, write, list, rename or delete vaultd's config and data directories,
  key file, passphrase file, the user's runtime directory (its D-Bus and
  systemd sockets would let the child start an unconfined process) and
  ``[run] hide``: bubblewrap mounts an empty, mode-0000, read-only tmpfs (a
  file: an empty 0000 file) over each, in a mount namespace of its own;
- change what vaultd runs next time: its install, its interpreter and the
  user's systemd units are mounted read-only (and, for root, the system's
  directories);
- see, signal, trace or read the memory of the daemon or of ``vaultd run``:
  a pid namespace hides them, every capability is dropped, and a Landlock
  domain scoped to signals and abstract sockets (``landlockpy``) stands
  behind both;
- with ``--net proxy-only``, reach anything but the daemon: a network
  namespace of its own, where ``vaultd run`` relays one loopback port to the
  daemon (``bridge``).

``plan`` decides what is hidden (pure but for reading the file system),
``bubblewrap`` turns a plan into the argv (pure), ``scope`` and ``bridge`` are
the two pieces of code that act, and ``launch`` runs it all. ``check`` says
whether this machine can give each guarantee: ``vaultd doctor``, and
``vaultd run --isolate`` before anything runs.
"""
