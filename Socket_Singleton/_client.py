"""The launching side: take the port if it is free, else hand our arguments to its host."""

from __future__ import annotations

import os
import socket
import time

from . import _errors, _net, _wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple, Union

_ANSWER_LIMIT = 64 * 1024  # no frame from a host is anywhere near this big
_CLOSES_BEFORE_FOREIGN = 3  # consecutive closes without an answer before we give up


class Outcome:
    """How a hand-off ended, for MultipleSingletonsError."""

    __slots__ = ("reason", "detail", "host_pid")

    def __init__(self, reason: str, detail: str = "", host_pid: Optional[int] = None) -> None:
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid


class _Retry(Exception):
    """The host went away during the hand-off; the port may be free now."""

    def __init__(self, before_welcome: bool) -> None:
        self.before_welcome = before_welcome


def claim(address: str, port: int, send: bool, args: Tuple[str, ...], secret: Optional[str],
          timeout: float) -> Union[socket.socket, Outcome]:
    """Become the host (returns the listening socket) or hand *args* to the host.

    Retries while the host is going away, so that a launch either becomes the next host or
    is acknowledged by one, all within *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    closed_before_welcome = 0
    while True:
        sock = _net.listen_exclusively(address, port)
        if sock is not None:
            return sock
        if not send:
            return Outcome(_errors.NOT_SENT)
        try:
            return _hand_off(address, port, args, secret, deadline)
        except _Retry as retry:
            # Our own host closes a hand-off without an answer only while it goes away, and
            # then the port is free (or has a new host) on the next try. Closing again and
            # again means the port belongs to some other program.
            closed_before_welcome = closed_before_welcome + 1 if retry.before_welcome else 0
            if closed_before_welcome >= _CLOSES_BEFORE_FOREIGN:
                return Outcome(_errors.FOREIGN, "the program on the port closed the "
                               "connection without answering; it is not a Socket_Singleton host")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Outcome(_errors.NO_ANSWER, "the port stayed busy but no host took the "
                           "launch within %g s" % timeout)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _hand_off(address: str, port: int, args: Tuple[str, ...], secret: Optional[str],
              deadline: float) -> Outcome:
    with socket.socket(_net.family_of(address), socket.SOCK_STREAM) as sock:
        try:
            _set_timeout(sock, deadline)
            sock.connect((address, port))
        except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError):
            raise _Retry(before_welcome=False) from None  # bound but not (or no longer) listening
        except socket.timeout:
            return Outcome(_errors.NO_ANSWER, "the program on the port did not accept a "
                           "connection in time")
        except OSError as err:
            return Outcome(_errors.NO_ANSWER, "could not connect: %s" % err)

        client_nonce = os.urandom(_wire.NONCE_SIZE)
        try:
            sock.sendall(_wire.PREAMBLE + _wire.frame(_wire.HELLO, client_nonce))
            kind, payload = _read_frame(sock, deadline)
        except socket.timeout:
            return Outcome(_errors.NO_ANSWER, "the program on the port did not answer in time")
        except (ConnectionError, EOFError):
            raise _Retry(before_welcome=True) from None
        except (_wire.ProtocolError, OSError) as err:
            return Outcome(_errors.FOREIGN, "the program on the port is not a Socket_Singleton "
                           "host (%s)" % err)

        if kind == _wire.ACK:
            return _outcome_of_ack(payload, None)
        try:
            if kind != _wire.WELCOME:
                raise _wire.ProtocolError("unexpected answer")
            pid, limit, needs_secret, host_nonce, host_proof = _wire.decode_welcome(payload)
        except _wire.ProtocolError as err:
            return Outcome(_errors.FOREIGN, "the program on the port is not a Socket_Singleton "
                           "host (%s)" % err)

        client_proof = b""
        if needs_secret and secret is None:
            return Outcome(_errors.SECRET_MISMATCH, "the running instance requires a secret", pid)
        if secret is not None:
            if not needs_secret:
                return Outcome(_errors.SECRET_MISMATCH,
                               "the running instance does not use a secret", pid)
            if not _wire.same(host_proof, _wire.proof(secret, b"host", client_nonce, host_nonce)):
                return Outcome(_errors.SECRET_MISMATCH,
                               "the running instance does not know the same secret", pid)
            client_proof = _wire.proof(secret, b"client", host_nonce, client_nonce)

        message = _wire.encode_launch(client_proof, os.getpid(), _cwd(), args)
        size = len(message) - _wire.HEADER.size - len(client_proof)
        if size > limit:
            return Outcome(_errors.REJECTED, "the arguments take %d bytes; the running instance "
                           "accepts at most %d" % (size, limit), pid)
        try:
            sock.sendall(message)
            kind, payload = _read_frame(sock, deadline)
        except socket.timeout:
            return Outcome(_errors.NO_ANSWER, "the running instance did not acknowledge the "
                           "launch in time", pid)
        except (ConnectionError, EOFError):
            raise _Retry(before_welcome=False) from None  # it died holding our launch
        except (_wire.ProtocolError, OSError) as err:
            return Outcome(_errors.REJECTED, "the hand-off failed: %s" % err, pid)
        if kind != _wire.ACK:
            return Outcome(_errors.REJECTED, "the running instance answered out of turn", pid)
        return _outcome_of_ack(payload, pid)


def _outcome_of_ack(payload: bytes, pid: Optional[int]) -> Outcome:
    try:
        status, detail = _wire.decode_ack(payload)
    except _wire.ProtocolError as err:
        return Outcome(_errors.REJECTED, str(err), pid)
    if status == _wire.RETRY:
        raise _Retry(before_welcome=False)
    reason = {
        _wire.DELIVERED: _errors.DELIVERED,
        _wire.QUEUED: _errors.QUEUED,
        _wire.IGNORED: _errors.IGNORED,
    }.get(status, _errors.REJECTED)
    if reason == _errors.REJECTED and not detail:
        detail = "refused by the running instance"
    return Outcome(reason, detail, pid)


def _read_frame(sock: socket.socket, deadline: float) -> Tuple[bytes, bytes]:
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
