"""Run inside the sandbox's network namespace (``--net proxy-only``), before the command.

Started by bubblewrap as ``python -I -S inner.py FD HOST PORT -- COMMAND...``:
it listens on HOST:PORT of the sandbox's own loopback, hands the listening
socket to ``vaultd run`` outside over the socket FD (SCM_RIGHTS), and becomes
the command. ``vaultd run`` accepts on that socket and relays each
connection to the daemon (``bridge``), so the command reaches the daemon at
the address it was given, and nothing else: its namespace has no other
network. Standard library only, imported nothing else, so it starts fast.
"""

import os
import socket
import sys


def main(argv: list[str]) -> None:
    fd, host, port = int(argv[1]), argv[2], int(argv[3])
    command = argv[5:]
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        control = socket.socket(fileno=fd)
        socket.send_fds(control, [b"L"], [listener.fileno()])
        listener.close()
        control.close()
    except OSError as exc:
        print(
            f"Error: --net proxy-only: cannot listen on {host}:{port} inside: {exc}",
            file=sys.stderr,
        )
        os._exit(1)
    try:
        os.execvp(command[0], command)  # noqa: S606 - the user's command, confined
    except OSError as exc:
        print(f"Error: {command[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


if __name__ == "__main__":
    main(sys.argv)
