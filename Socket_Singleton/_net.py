"""Platform differences, in one place: how to hold a port exclusively."""

import errno
import socket

_WSAEADDRINUSE = 10048
_IN_USE = {errno.EADDRINUSE, _WSAEADDRINUSE}


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def where(address: str, port: int) -> str:
    """``host:port`` as people write it: ``127.0.0.1:1337``, ``[::1]:1337``."""
    return ("[%s]:%d" if ":" in address else "%s:%d") % (address, port)


def address_in_use(err: OSError) -> bool:
    return err.errno in _IN_USE or getattr(err, "winerror", None) == _WSAEADDRINUSE


def _hold_exclusively(sock: socket.socket) -> None:
    if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
        # Windows: SO_REUSEADDR there would let a second process steal a live port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        # POSIX: lets a new host bind while the old host's connections sit in TIME_WAIT,
        # yet still refuses a second listener on the same address.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def close_quietly(sock: socket.socket) -> None:
    """Close *sock*; an error from close() (EINTR, say) still frees the descriptor, and there is
    nothing left to do about it."""
    try:
        sock.close()
    except OSError:
        pass


def listen_exclusively(address: str, port: int) -> "socket.socket | None":
    """Bind and listen on ``(address, port)``; ``None`` when another socket holds it.

    Any other failure is raised as the real ``OSError``. Two sockets may both bind with
    SO_REUSEADDR while neither listens, so ``listen()`` can be where we learn we lost.
    """
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    try:
        _hold_exclusively(sock)
        sock.bind((address, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as err:
        close_quietly(sock)
        if address_in_use(err):
            return None
        raise
    return sock
