"""``--net proxy-only``: relay the sandbox's one loopback port to the daemon.

The command's network namespace has only a loopback device; ``inner`` listens
there on the daemon's port and hands the socket out. Here, outside, each
connection the command opens to it is relayed to the daemon: the one
address it can reach. Threads, not asyncio: ``vaultd run`` is a small
synchronous program, and the relay moves only what the command sends.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CHUNK = 64 * 1024


def receive_listener(control: socket.socket, timeout: float) -> socket.socket | None:
    """The listening socket ``inner`` sends, or None if it sent none in ``timeout``."""
    control.settimeout(timeout)
    try:
        _data, fds, _flags, _addr = socket.recv_fds(control, 16, 1)
    except (OSError, ValueError):
        return None
    if not fds:
        return None
    return socket.socket(fileno=fds[0])


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        # Half-close: the other direction may still be talking.
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _relay(inside: socket.socket, daemon: tuple[str, int]) -> None:
    try:
        outside = socket.create_connection(daemon, timeout=10)
    except OSError:
        inside.close()
        return
    outside.settimeout(None)
    back = threading.Thread(target=_pump, args=(outside, inside), daemon=True)
    back.start()
    _pump(inside, outside)
    back.join()
    inside.close()
    outside.close()


def serve(listener: socket.socket, daemon: tuple[str, int]) -> threading.Thread:
    """Relay every connection made to ``listener`` to ``daemon``, in the background."""

    def accept_loop() -> None:
        while True:
            try:
                inside, _peer = listener.accept()
            except OSError:
                return  # closed: the command has ended
            threading.Thread(target=_relay, args=(inside, daemon), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True, name="vaultd-bridge")
    thread.start()
    return thread
