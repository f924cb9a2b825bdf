"""The launching side: take the port if it is free, else hand our arguments to its host."""

import os
import socket
import time

from . import _errors, _net, _wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple, Union

_ANSWER_LIMIT = 64 * 1024  # no frame from a host is anywhere near this big
HOST_FOUND = "host"  # probe(): a Socket_Singleton host answered


class Outcome:
    """How a hand-off (or a probe) ended: a reason of ``_errors``, a sentence, the host's pid."""

    __slots__ = ("detail", "host_pid", "reason")

    def __init__(self, reason: str, detail: str = "", host_pid: "Optional[int]" = None) -> None:
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid


class _Finished(Exception):
    """The hand-off is over; ``outcome`` says how."""

    def __init__(self, reason: str, detail: str = "", host_pid: "Optional[int]" = None) -> None:
        self.outcome = Outcome(reason, detail, host_pid)


class _Retry(Exception):
    """The host went away during the hand-off; the port may be free, or have a new host."""

    def __init__(self, before_welcome: bool = False, refused: bool = False) -> None:
        self.before_welcome = before_welcome
        self.refused = refused


class _Welcome:
    """What a host said about itself, and the nonces of this connection."""

    __slots__ = ("client_nonce", "client_proof", "host_nonce", "limit", "pid")

    def __init__(self, pid: int, limit: int, client_nonce: bytes, host_nonce: bytes,
                 client_proof: bytes) -> None:
        self.pid = pid
        self.limit = limit
        self.client_nonce = client_nonce
        self.host_nonce = host_nonce
        self.client_proof = client_proof


def claim(address: str, port: int, send: bool, args: "Tuple[str, ...]", secret: "Optional[str]",
          timeout: float, take: bool = True) -> "Union[socket.socket, Outcome]":
    """Become the host (returns the listening socket) or hand *args* to the host.

    Retries while the host is going away, so that a launch either becomes the next host or
    is acknowledged by one, all within *timeout* seconds. With ``take=False`` the port is
    never bound: a port nobody listens on ends with ``not-running``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    closed_before_welcome = False
    while True:
        if take:
            sock = _net.listen_exclusively(address, port)
            if sock is not None:
                return sock
        if not send:
            return Outcome(_errors.NOT_SENT)
        try:
            with _connect(address, port, deadline) as conn:
                return _hand_off(conn, args, secret, deadline)
        except _Finished as finished:
            if closed_before_welcome and finished.outcome.reason == _errors.NO_ANSWER:
                return _foreign_closer()  # the deadline cut short the last of its closes
            return finished.outcome
        except _Retry as retry:
            if retry.refused and not take:
                return _not_running(address, port)
            # Our own host closes a hand-off without an answer only when it goes away (and
            # several may go in a row, each taken over by another launch), so such a close is
            # retried; only one that goes on until the deadline means a foreign program.
            closed_before_welcome = retry.before_welcome
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if closed_before_welcome:
                return _foreign_closer()
            return Outcome(_errors.NO_ANSWER, "the port stayed busy but no host took the "
                           "launch within %g s" % timeout)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25 if closed_before_welcome else 0.05)


def _foreign_closer() -> "Outcome":
    return Outcome(_errors.FOREIGN, "the program on the port closes the connection without "
                   "answering; it is not a Socket_Singleton host")


def _not_running(address: str, port: int) -> "Outcome":
    return Outcome(_errors.NOT_RUNNING, "nothing listens on %s:%d" % (address, port))


def probe(address: str, port: int, secret: "Optional[str]", timeout: float) -> "Outcome":
    """Ask whatever listens on the port who it is, without launching anything.

    Returns reason ``HOST_FOUND`` with the host's pid for a verified Socket_Singleton host
    (verified against *secret* when given), else why not.
    """
    deadline = time.monotonic() + timeout
    try:
        with _connect(address, port, deadline) as conn:
            welcome = _greet(conn, secret, deadline)
    except _Finished as finished:
        return finished.outcome
    except _Retry as retry:
        if retry.refused:
            return _not_running(address, port)
        if not retry.before_welcome:
            return Outcome(_errors.NOT_RUNNING, "the host on %s:%d is releasing the port"
                           % (address, port))
        return _foreign_closer()
    return Outcome(HOST_FOUND, "a Socket_Singleton host answered", welcome.pid)


def _connect(address: str, port: int, deadline: float) -> socket.socket:
    sock = socket.socket(_net.family_of(address), socket.SOCK_STREAM)
    try:
        _set_timeout(sock, deadline)
        sock.connect((address, port))
    except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError):
        sock.close()
        raise _Retry(refused=True) from None  # bound but not (or no longer) listening
    except socket.timeout:
        sock.close()
        raise _Finished(_errors.NO_ANSWER, "the program on the port did not accept a "
                        "connection in time") from None
    except OSError as err:
        sock.close()
        raise _Finished(_errors.NO_ANSWER, "could not connect: %s" % err) from None
    return sock


def _greet(sock: socket.socket, secret: "Optional[str]", deadline: float) -> "_Welcome":
    """Say hello and check that the answer comes from a Socket_Singleton host that knows
    *secret* (or, without one, that wants none). Nothing of the user's is sent here."""
    client_nonce = os.urandom(_wire.NONCE_SIZE)
    try:
        _set_timeout(sock, deadline)
        sock.sendall(_wire.PREAMBLE + _wire.frame(_wire.HELLO, client_nonce))
        kind, payload = _read_frame(sock, deadline)
    except socket.timeout:
        raise _Finished(_errors.NO_ANSWER, "the program on the port did not answer in time") \
            from None
    except (ConnectionError, EOFError):
        raise _Retry(before_welcome=True) from None
    except (_wire.ProtocolError, OSError) as err:
        raise _Finished(_errors.FOREIGN, "the program on the port is not a Socket_Singleton "
                        "host (%s)" % err) from None
    if kind == _wire.ACK and payload[:1] == _wire.RETRY:
        raise _Retry()  # a host that is releasing answers the hello with "retry"
    try:
        if kind != _wire.WELCOME:
            raise _wire.ProtocolError("unexpected answer")
        pid, limit, needs_secret, host_nonce, host_proof = _wire.decode_welcome(payload)
    except _wire.ProtocolError as err:
        raise _Finished(_errors.FOREIGN, "the program on the port is not a Socket_Singleton "
                        "host (%s)" % err) from None

    if needs_secret and secret is None:
        raise _Finished(_errors.SECRET_MISMATCH, "the running instance requires a secret", pid)
    client_proof = b""
    if secret is not None:
        if not needs_secret:
            raise _Finished(_errors.SECRET_MISMATCH,
                            "the running instance does not use a secret", pid)
        if not _wire.same(host_proof, _wire.proof(secret, b"host", client_nonce, host_nonce)):
            raise _Finished(_errors.SECRET_MISMATCH,
                            "the running instance does not know the same secret", pid)
        client_proof = _wire.proof(secret, b"client", host_nonce, client_nonce)
    return _Welcome(pid, limit, client_nonce, host_nonce, client_proof)


def _hand_off(sock: socket.socket, args: "Tuple[str, ...]", secret: "Optional[str]",
              deadline: float) -> "Outcome":
    welcome = _greet(sock, secret, deadline)
    pid = welcome.pid
    message = _wire.encode_launch(welcome.client_proof, os.getpid(), _cwd(), args)
    size = _wire.launch_fields_size(len(message) - _wire.HEADER_SIZE, len(welcome.client_proof))
    if size > welcome.limit:
        raise _Finished(_errors.REJECTED, "the arguments take %d bytes; the running instance "
                        "accepts at most %d" % (size, welcome.limit), pid)
    _net.allow_foreground(pid)  # before the host's observers run: they may raise its window
    try:
        _set_timeout(sock, deadline)
        sock.sendall(message)
        kind, payload = _read_frame(sock, deadline)
    except socket.timeout:
        raise _Finished(_errors.NO_ANSWER, "the running instance did not acknowledge the "
                        "launch in time", pid) from None
    except (ConnectionError, EOFError):
        raise _Retry() from None  # it died holding our launch: try the next host
    except (_wire.ProtocolError, OSError) as err:
        raise _Finished(_errors.REJECTED, "the hand-off failed: %s" % err, pid) from None
    if kind != _wire.ACK:
        raise _Finished(_errors.REJECTED, "the running instance answered out of turn", pid)
    _raise_ack(payload, pid)
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_ack(payload: bytes, pid: "Optional[int]") -> None:
    """Turn an acknowledgement into _Finished, or _Retry for "the host is going away"."""
    try:
        status, detail = _wire.decode_ack(payload)
    except _wire.ProtocolError as err:
        raise _Finished(_errors.REJECTED, str(err), pid) from None
    if status == _wire.RETRY:
        raise _Retry()
    reason = {
        _wire.DELIVERED: _errors.DELIVERED,
        _wire.QUEUED: _errors.QUEUED,
        _wire.IGNORED: _errors.IGNORED,
    }.get(status, _errors.REJECTED)
    if reason == _errors.REJECTED and not detail:
        detail = "refused by the running instance"
    raise _Finished(reason, detail, pid)


def _read_frame(sock: socket.socket, deadline: float) -> "Tuple[bytes, bytes]":
    buf = b""
    while True:
        found = _wire.split_frame(buf, _ANSWER_LIMIT)
        if found is not None:
            return found[0], found[1]
        _set_timeout(sock, deadline)
        data = sock.recv(_ANSWER_LIMIT)
        if not data:
            raise EOFError
        buf += data


def _set_timeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("timed out")
    sock.settimeout(remaining)


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under us: the host gets cwd=None
        return ""
