"""The launching side: take the port if it is free, else hand our arguments to its host."""

import math
import os
import socket
import time

from . import _handoff, _net, _wire
from ._outcome import Outcome, Reason

__all__ = ["Outcome", "claim", "probe"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple, Union

# The largest frame a host sends is a reply: its 4-byte status and up to MAX_REPLY bytes of text.
_ANSWER_LIMIT = 4 + _wire.MAX_REPLY
_READ_SIZE = 64 * 1024  # every other frame is far smaller: no read allocates a megabyte
# The longest a single socket call waits: Windows refuses timeouts near threading.TIMEOUT_MAX
# ("timeout doesn't fit into C timeval"). A read waits again until the deadline; a connect or
# send that takes a whole day has failed anyway.
_LONGEST_WAIT = 24 * 3600.0


def claim(address: str, port: int, send: bool, args: "Tuple[str, ...]", secret: "Optional[str]",
          timeout: float, take: bool = True, legacy: bool = False,
          extras: "Optional[_wire.Extras]" = None,
          identity: "_wire.Identity" = _wire.NUMBERED,
          ports: "Tuple[int, ...]" = ()) -> "Union[socket.socket, Outcome]":
    """Become the host (returns the listening socket) or hand *args* to the host.

    Retries while the host is going away, so that a launch either becomes the next host or
    is acknowledged by one, all within *timeout* seconds; a retried launch keeps its id, so a
    host that already took it answers again instead of taking it twice. With ``take=False``
    the port is never bound: a port nobody listens on ends with ``not-running``. With
    *legacy*, a holder that closes without answering gets the arguments in the 2.0.0 form.
    *identity*: the application's, which a host must announce; *ports*: its candidates, tried
    in order instead of *port* (see ``_handoff.Handoff``). An outcome's ``port`` is where it
    ended.
    """
    machine = _handoff.Handoff(args, secret, timeout, time.monotonic(),
                                os.urandom(_wire.ID_SIZE), send=send, take=take, legacy=legacy,
                                extras=extras or _wire.Extras(token=activation_token()),
                                identity=identity, ports=ports or (port,))
    return _drive(machine, address)


def probe(address: str, port: int, secret: "Optional[str]", timeout: float,
          identity: "_wire.Identity" = _wire.NUMBERED, ports: "Tuple[int, ...]" = ()) -> "Outcome":
    """Ask whatever listens on the port (or on each of *ports* in turn, for a host of
    *identity*) who it is, without launching anything.

    Returns reason ``Reason.HOST`` with the host's pid and port for a verified Socket_Singleton
    host (verified against *secret* when given), else why not.
    """
    machine = _handoff.Handoff((), secret, timeout, time.monotonic(), probe=True,
                                identity=identity, ports=ports or (port,))
    result = _drive(machine, address)
    assert isinstance(result, Outcome)  # a probe never binds
    return result


def _drive(machine: "_handoff.Handoff", address: str) -> "Union[socket.socket, Outcome]":
    """The hand-off's I/O: do what *machine* asks, tell it what happened."""
    deadline = machine.deadline
    sock: Optional[socket.socket] = None
    unread = bytearray()  # what a read brought beyond its frame: the next frame's start
    held: Optional[socket.socket] = None  # bound while the machine asks the other candidates
    action = machine.start()
    try:
        while True:
            if sock is not None and not isinstance(action, (_handoff.Exchange,
                                                            _handoff.Verified,
                                                            _handoff.Yield)):
                if isinstance(action, _handoff.Finish) and action.farewell:
                    _say_bye(sock, action.farewell)
                _close(sock)
                sock = None
            if isinstance(action, _handoff.Exchange):
                assert sock is not None
                action = _exchange(machine, sock, action, deadline, unread)
            elif isinstance(action, _handoff.Take):
                listening = _net.listen_exclusively(address, action.port)
                if listening is None:
                    action = machine.held()
                elif not action.check:
                    return listening
                else:
                    held = listening
                    action = machine.bound()
            elif isinstance(action, _handoff.Test):
                if _net.bound_elsewhere(address, action.port):
                    action = machine.held()
                else:
                    action = machine.free()
            elif isinstance(action, _handoff.Keep):
                assert held is not None
                listening, held = held, None
                return listening
            elif isinstance(action, _handoff.Yield):
                assert held is not None
                _net.close_quietly(held)
                held = None
                action = machine.launch(os.getpid(), _cwd())
            elif isinstance(action, _handoff.Connect):
                unread.clear()
                try:
                    sock = socket.socket(_net.family_of(address), socket.SOCK_STREAM)
                except OSError as err:
                    action = machine.no_socket(err, time.monotonic())
                    continue
                try:
                    _set_timeout(sock, deadline)
                    sock.connect((address, action.port))
                except socket.timeout:
                    action = machine.timed_out(time.monotonic())
                except OSError as err:
                    action = machine.failed(err, time.monotonic())
                else:
                    action = machine.connected()
            elif isinstance(action, _handoff.Verified):
                action = machine.launch(os.getpid(), _cwd())
            elif isinstance(action, _handoff.Sleep):
                time.sleep(action.seconds)
                action = machine.woke(time.monotonic())
            else:
                port = machine.port
                outcome = action.outcome
                if outcome.reason == Reason.PORT_BUSY:  # say what the platform shows
                    outcome = _handoff.port_busy(port, _net.tcp_states(address, port),
                                                 _net.ephemeral_range())
                outcome.port = port
                return outcome
    finally:
        if sock is not None:
            _close(sock)
        if held is not None:
            _net.close_quietly(held)


def _close(sock: socket.socket) -> None:
    """Close *sock* so that no TIME-WAIT is left on the holder's port.

    TIME-WAIT goes to whoever closes first. When we close first it lands on our own ephemeral
    end, which blocks nobody; when the holder closed first (2.0.0 reads and closes, a web server
    answers and closes) it would land on the holder's port, and a program that binds without
    SO_REUSEADDR (2.0.0 again) could not bind that port for a minute after the holder quits.
    So a connection whose peer has already closed is reset instead, which leaves no TIME-WAIT
    on either end.
    """
    try:
        sock.setblocking(False)
        peer_closed = sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:  # nothing to read (the peer is still there), reset, or never connected
        peer_closed = False
    if peer_closed:
        _net.reset_on_close(sock)
    _net.close_quietly(sock)


def _exchange(machine: "_handoff.Handoff", sock: socket.socket, action: "_handoff.Exchange",
              deadline: float, unread: bytearray) -> "_handoff.Action":
    """Send what the machine gives, read back what it expects, and tell it."""
    expect = action.expect
    if action.endless:  # a launch that waits for its reply: no deadline but the user's Ctrl+C
        deadline = math.inf
    elif action.within is not None:
        deadline = min(deadline, time.monotonic() + action.within)
    if action.foreground is not None:
        # before the host's observers run: they may raise its window
        _net.allow_foreground(action.foreground)
    try:
        if expect is _handoff.BANNER or action.foreground is not None:
            # The hello and the plain form go out under the timeout the last read set.
            _set_timeout(sock, deadline)
        sock.sendall(action.data)
        if expect is _handoff.NOTHING:
            return machine.sent(time.monotonic())
        if expect is _handoff.BANNER:
            return machine.received(_read_banner(sock, deadline), time.monotonic())
        kind, payload = _read_frame(sock, deadline, unread)
    except socket.timeout:
        if expect is _handoff.BANNER:
            # Give up with a reset, not a clean close: a 3.0.0 host would take the NULs it
            # read, cleanly ended, for a plain launch of 1024 empty arguments.
            _net.reset_on_close(sock)
        return machine.timed_out(time.monotonic())
    except EOFError:
        return machine.closed(time.monotonic())
    except _wire.ProtocolError as err:
        return machine.malformed(str(err), time.monotonic())
    except OSError as err:
        return machine.failed(err, time.monotonic())
    return machine.frame(kind, payload, time.monotonic())


def _say_bye(sock: socket.socket, farewell: bytes) -> None:
    """Tell the host why we give up, so that a host with ``verbose=True`` can log it."""
    try:
        sock.sendall(farewell)
    except OSError:  # it is only a courtesy
        pass


def _read_frame(sock: socket.socket, deadline: float,
                buf: "Optional[bytearray]" = None) -> "Tuple[bytes, bytes]":
    """The next frame: from *buf* (what earlier reads brought) and reads; what follows it stays
    in *buf* (a host sends a reply and its acknowledgement back to back, so one read can bring
    both)."""
    if buf is None:
        buf = bytearray()
    while True:
        found = _wire.split_frame(buf, _ANSWER_LIMIT)
        if found is not None:
            del buf[:found[2]]
            return found[0], found[1]
        buf += _recv(sock, _READ_SIZE, deadline)


def _read_banner(sock: socket.socket, deadline: float) -> bytes:
    """The banner, or as much of another answer as shows that it is not one."""
    buf = b""
    while len(buf) < len(_wire.BANNER) and _wire.BANNER.startswith(buf):
        buf += _recv(sock, len(_wire.BANNER) - len(buf), deadline)
    return buf


def _recv(sock: socket.socket, size: int, deadline: float) -> bytes:
    """One read; past the deadline, only what has already arrived (an answer that came in
    time is honoured even when this process was descheduled until after the deadline)."""
    while True:
        remaining = deadline - time.monotonic()
        sock.settimeout(min(max(remaining, 0.0), _LONGEST_WAIT))
        try:
            data = sock.recv(size)
            break
        except BlockingIOError:  # nothing had arrived by the deadline
            raise socket.timeout("timed out") from None
        except socket.timeout:
            if remaining <= _LONGEST_WAIT:
                raise
    if not data:
        raise EOFError
    return data


def _set_timeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("timed out")
    sock.settimeout(min(remaining, _LONGEST_WAIT))


def activation_token() -> "Optional[str]":
    """The token with which the desktop started this process (Wayland's
    ``XDG_ACTIVATION_TOKEN``, X11 startup notification's ``DESKTOP_STARTUP_ID``): the running
    instance needs it to raise its window on this launch's behalf."""
    return os.environ.get("XDG_ACTIVATION_TOKEN") or os.environ.get("DESKTOP_STARTUP_ID")


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under us: the host gets cwd=None
        return ""
