"""Platform differences, in one place: how to hold a port exclusively, and how a launch lets
the host take the foreground. And the one testing hook through which tests inject faults into
the library's sockets and threads."""

import errno
import socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from typing import Any

# The testing hook (tests/test_faults.py): None in normal use. When set, every socket a host
# opens passes through hook.socket(sock), whose result is used instead (its accept() returns
# what the host then serves), and every library thread is started by hook.start(thread).
hook: "Any" = None


def wrap(sock: socket.socket) -> socket.socket:
    return sock if hook is None else hook.socket(sock)


def start(thread: "threading.Thread") -> None:
    if hook is None:
        thread.start()
    else:
        hook.start(thread)

# Errors of this process (out of descriptors or memory), not of the peer or the port.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

_WSAEADDRINUSE = 10048
_IN_USE = {errno.EADDRINUSE, _WSAEADDRINUSE}


def close_quietly(sock: socket.socket) -> None:
    """Close *sock*; an error from close() (EINTR, ECONNRESET) still leaves it closed."""
    try:
        sock.close()
    except OSError:
        pass


def reset_on_close(sock: socket.socket) -> None:
    """Make close() reset the connection instead of ending it cleanly (SO_LINGER, 0 s)."""
    # struct linger: two ints on POSIX, two u_shorts on Windows, in the machine's byte order
    # (no struct: a host drops a peer this way when out of descriptors, and must import nothing)
    size = 2 if hasattr(socket, "SO_EXCLUSIVEADDRUSE") else 4
    linger = (1).to_bytes(size, sys.byteorder) + bytes(size)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    except OSError:  # already reset by the peer: nothing to linger over
        pass


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


def listen_exclusively(address: str, port: int) -> "socket.socket | None":
    """Bind and listen on ``(address, port)``; ``None`` when another socket holds it.

    Any other failure is raised as the real ``OSError``. Two sockets may both bind with
    SO_REUSEADDR while neither listens, so ``listen()`` can be where we learn we lost.
    """
    sock = wrap(socket.socket(family_of(address), socket.SOCK_STREAM))
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


def bound_elsewhere(address: str, port: int) -> bool:
    """Whether another socket holds ``(address, port)``: binds it (without listening, so that
    no connection can reach this socket) and closes it at once."""
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    try:
        _hold_exclusively(sock)
        sock.bind((address, port))
    except OSError as err:
        if address_in_use(err):
            return True
        raise
    finally:
        close_quietly(sock)
    return False


# The states /proc/net/tcp shows, by their hex code, as ``ss`` names them.
_TCP_STATES = {"01": "ESTAB", "02": "SYN-SENT", "03": "SYN-RECV", "04": "FIN-WAIT-1",
               "05": "FIN-WAIT-2", "06": "TIME-WAIT", "07": "CLOSE", "08": "CLOSE-WAIT",
               "09": "LAST-ACK", "0A": "LISTEN", "0B": "CLOSING"}


def tcp_states(address: str, port: int) -> "list[str] | None":
    """The TCP states of the sockets whose local end is ``(address, port)``, as far as the
    platform shows them: Linux lists them in /proc/net/tcp and /proc/net/tcp6 (a socket that is
    only bound is not listed); ``None`` where nothing can be read. Only for a failed launch."""
    import struct  # failure paths only

    try:
        wanted = socket.inet_pton(family_of(address), address)
    except OSError:  # a host name: match the port alone
        wanted = b""
    wildcard = wanted.strip(b"\0") == b""
    found = None
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                lines = table.readlines()[1:]
        except OSError:
            continue
        found = found or []
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            hex_address, _, hex_port = local.partition(":")
            if int(hex_port, 16) != port:
                continue
            # The address is printed as 32-bit words in this machine's byte order.
            words = [int(hex_address[i:i + 8], 16) for i in range(0, len(hex_address), 8)]
            raw = struct.pack("=%dI" % len(words), *words)
            if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
                raw = raw[12:]  # an IPv4 address on a dual-stack socket
            if wildcard or not wanted or raw == wanted or raw.strip(b"\0") == b"":
                found.append(_TCP_STATES.get(state, state))
    return found


def ephemeral_range() -> "tuple[int, int]":
    """The ports from which the system picks the local ends of outgoing connections: Linux's
    /proc/sys/net/ipv4/ip_local_port_range, else the IANA range Windows and macOS use."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as setting:
            low, high = setting.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def allow_foreground(pid: int) -> None:
    """Let process *pid* bring its window to the front; call it before handing it a launch.

    Windows gives the foreground only to the process the user just started (the launch), which
    may pass that right on with ``AllowSetForegroundWindow``; without it the host's window only
    flashes in the taskbar. A no-op elsewhere; never raises: a launch must not fail over focus.
    """
    if sys.platform != "win32":
        return
    try:
        import ctypes  # only here: a launch elsewhere never pays for it

        ctypes.windll.user32.AllowSetForegroundWindow(pid)
    except Exception:  # noqa: BLE001 - no user32 (a service, a server core), a bad pid: no focus
        pass
