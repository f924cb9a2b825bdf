"""The launching side: take the port if it is free, else hand our arguments to its host."""

import errno
import os
import socket
import time

from . import _errors, _net, _wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple, Union

_ANSWER_LIMIT = 64 * 1024  # no frame from a host is anywhere near this big
HOST_FOUND = "host"  # probe(): a Socket_Singleton host answered
# A port that is bound but refuses connections for this long has no host: a host listens within
# microseconds of binding, and a host that releases frees the port at once.
PORT_BUSY_AFTER = 0.2
# Connections in a row that the holder closes cleanly without a banner before it is called a
# program that does not speak this protocol (most likely 2.0.0, which reads and closes). One such
# close may be a host that died at that instant; two in a row are not.
SILENT_CLOSES = 2
# The longest a single socket call waits: Windows refuses timeouts near threading.TIMEOUT_MAX
# ("timeout doesn't fit into C timeval"). A read waits again until the deadline; a connect or
# send that takes a whole day has failed anyway.
_LONGEST_WAIT = 24 * 3600.0
LEGACY_LIMIT = 1024  # a 2.0.0 host reads one chunk of this many bytes and drops the rest
# Errors of our own process, not of the program on the port.
_LOCAL_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

# Why an attempt did not end the hand-off; claim() decides whether to try again.
_REFUSED = "refused"  # nothing accepted the connection: bound but not listening, or released
_SILENT = "silent"  # closed cleanly before the banner: a 2.0.0 host, or a host that just died
_RESET = "reset"  # reset before the banner: a host that died, or a program that resets us
_GONE = "gone"  # closed after the banner, or answered "retry": a host going away
_LOST = "lost"  # as _GONE, but after our launch left: the host may hold it (it knows its id)


class Outcome:
    """How a hand-off (or a probe) ended: a reason of ``_errors``, a sentence, the host's pid."""

    __slots__ = ("detail", "host_pid", "reason")

    def __init__(self, reason: str, detail: str = "", host_pid: "Optional[int]" = None) -> None:
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid


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
          timeout: float, take: bool = True,
          legacy: bool = False) -> "Union[socket.socket, Outcome]":
    """Become the host (returns the listening socket) or hand *args* to the host.

    Retries while the host is going away, so that a launch either becomes the next host or
    is acknowledged by one, all within *timeout* seconds; a retried launch keeps its id, so a
    host that already took it answers again instead of taking it twice. With ``take=False``
    the port is never bound: a port nobody listens on ends with ``not-running``. With
    *legacy*, a holder that closes without answering gets the arguments in the 2.0.0 form.
    """
    deadline = time.monotonic() + timeout
    launch_id = os.urandom(_wire.ID_SIZE)
    delay = 0.002
    silent = 0
    refused_since: Optional[float] = None
    sent = False  # a launch of ours reached a host that then went away without answering
    last = ""  # why the previous attempt did not end the hand-off
    while True:
        if take:
            sock = _net.listen_exclusively(address, port)
            if sock is not None:
                return sock
        if not send:
            return Outcome(_errors.NOT_SENT)
        if legacy and silent:
            result = _send_plain(address, port, args, deadline)
        else:
            result = _attempt(address, port, args, secret, launch_id, deadline)
        if isinstance(result, Outcome):
            if sent and result.reason in (_errors.NO_ANSWER, _errors.LOCAL_ERROR):
                return _unconfirmed(result.detail)
            if last == _RESET and result.reason == _errors.NO_ANSWER:
                return _foreign_resetter()  # the deadline cut short the last of its resets
            return result
        last = result
        now = time.monotonic()
        if result == _REFUSED:
            if not take:
                return _not_running()
            if refused_since is None:
                refused_since = now
            elif now - refused_since >= PORT_BUSY_AFTER:
                return _port_busy()
        else:
            refused_since = None
        silent = silent + 1 if result == _SILENT else 0
        if silent >= SILENT_CLOSES:
            return _legacy_holder(hint=take)
        sent = sent or result == _LOST
        if now >= deadline:
            if sent:
                return _unconfirmed("no host answered within %g s" % timeout)
            if result == _RESET:
                return _foreign_resetter()
            return Outcome(_errors.NO_ANSWER, "the port stayed busy but no host took the "
                           "launch within %g s" % timeout)
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


def probe(address: str, port: int, secret: "Optional[str]", timeout: float) -> "Outcome":
    """Ask whatever listens on the port who it is, without launching anything.

    Returns reason ``HOST_FOUND`` with the host's pid for a verified Socket_Singleton host
    (verified against *secret* when given), else why not.
    """
    deadline = time.monotonic() + timeout
    for _ in range(SILENT_CLOSES):  # as claim(): one clean close may be a host that just died
        conn = _connect(address, port, deadline)
        if isinstance(conn, Outcome):
            return conn
        if isinstance(conn, str):  # refused
            return _not_running()
        try:
            welcome = _greet(conn, secret, deadline)
        finally:
            _net.close_quietly(conn)
        if welcome != _SILENT:
            break
    if isinstance(welcome, _Welcome):
        return Outcome(HOST_FOUND, "a Socket_Singleton host answered", welcome.pid)
    if welcome == _SILENT:
        return _legacy_holder(hint=False)
    if welcome == _RESET:
        return _foreign_resetter()
    if isinstance(welcome, Outcome):
        return welcome
    return Outcome(_errors.NOT_RUNNING, "the host on the port is releasing it")


def _attempt(address: str, port: int, args: "Tuple[str, ...]", secret: "Optional[str]",
             launch_id: bytes, deadline: float) -> "Union[Outcome, str]":
    """One connection's try at handing *args* over."""
    conn = _connect(address, port, deadline)
    if isinstance(conn, (Outcome, str)):
        return conn
    try:
        welcome = _greet(conn, secret, deadline)
        if not isinstance(welcome, _Welcome):
            return welcome
        return _hand_off(conn, welcome, args, launch_id, deadline)
    finally:
        _net.close_quietly(conn)


def _connect(address: str, port: int, deadline: float) -> "Union[socket.socket, Outcome, str]":
    try:
        sock = socket.socket(_net.family_of(address), socket.SOCK_STREAM)
    except OSError as err:
        return _local_error(err)
    try:
        _set_timeout(sock, deadline)
        sock.connect((address, port))
    except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError):
        _net.close_quietly(sock)
        return _REFUSED  # bound but not (or no longer) listening
    except InterruptedError:
        _net.close_quietly(sock)
        return _GONE  # a signal cut the connect short: try again
    except socket.timeout:
        _net.close_quietly(sock)
        return Outcome(_errors.NO_ANSWER, "the program on the port did not accept a "
                       "connection in time")
    except OSError as err:
        _net.close_quietly(sock)
        if err.errno in _LOCAL_ERRORS:
            return _local_error(err)
        return Outcome(_errors.NO_ANSWER, "could not connect: %s" % err)
    return sock


def _greet(sock: socket.socket, secret: "Optional[str]",
           deadline: float) -> "Union[_Welcome, Outcome, str]":
    """Check that the peer is a Socket_Singleton host that knows *secret* (or, without one,
    that wants none). Nothing of the user's is sent here."""
    client_nonce = os.urandom(_wire.NONCE_SIZE)
    try:
        _set_timeout(sock, deadline)
        sock.sendall(_wire.PREAMBLE)
        banner = _read_banner(sock, deadline)
    except socket.timeout:
        # Give up with a reset, not a clean close: a 3.0.0 host would take the NULs it read,
        # cleanly ended, for a plain launch of 1024 empty arguments.
        _net.reset_on_close(sock)
        return Outcome(_errors.NO_ANSWER, "the program on the port accepted the connection but "
                       "did not answer in time (a host that is very busy, or a program that "
                       "does not speak this protocol)")
    except EOFError:
        return _SILENT
    except ConnectionError:
        return _RESET  # a host that died with our preamble unread, or a program that resets
    except OSError as err:
        return _failed(err, _RESET)
    if banner != _wire.BANNER:
        return _foreign(_wire.describe_answer(banner))
    try:
        sock.sendall(_wire.frame(_wire.HELLO, client_nonce))
        kind, payload = _read_frame(sock, deadline)
    except socket.timeout:
        return Outcome(_errors.NO_ANSWER, "the host did not answer in time")
    except (ConnectionError, EOFError):
        return _GONE  # a host going away between its banner and its welcome
    except _wire.ProtocolError as err:
        return _foreign(str(err))
    except OSError as err:
        return _failed(err, _GONE)
    if kind == _wire.ACK and payload[:1] == _wire.RETRY:
        return _GONE  # a host that is releasing answers the hello with "retry"
    if kind != _wire.WELCOME:
        return _foreign("it answered out of turn")
    try:
        pid, limit, needs_secret, host_nonce, host_proof = _wire.decode_welcome(payload)
    except _wire.ProtocolError as err:
        return _foreign(str(err))

    problem = ""
    if needs_secret and secret is None:
        problem = "the running instance requires a secret"
    elif secret is not None and not needs_secret:
        problem = "the running instance does not use a secret"
    elif secret is not None and not _wire.same(
            host_proof, _wire.proof(secret, b"host", client_nonce, host_nonce)):
        problem = "the running instance does not know the same secret"
    if problem:
        _say_bye(sock, problem)
        return Outcome(_errors.SECRET_MISMATCH, problem, pid)
    client_proof = b""
    if secret is not None:
        client_proof = _wire.proof(secret, b"client", host_nonce, client_nonce)
    return _Welcome(pid, limit, client_nonce, host_nonce, client_proof)


def _say_bye(sock: socket.socket, reason: str) -> None:
    """Tell the host why we give up, so that a host with ``verbose=True`` can log it."""
    try:
        sock.sendall(_wire.frame(_wire.BYE, reason.encode("utf-8")))
    except OSError:  # it is only a courtesy
        pass


def _hand_off(sock: socket.socket, welcome: "_Welcome", args: "Tuple[str, ...]",
              launch_id: bytes, deadline: float) -> "Union[Outcome, str]":
    pid = welcome.pid
    message = _wire.encode_launch(welcome.client_proof, launch_id, os.getpid(), _cwd(), args)
    size = _wire.launch_fields_size(len(message) - _wire.HEADER_SIZE, len(welcome.client_proof))
    if size > welcome.limit:
        reason = "the arguments take %d bytes; the running instance accepts at most %d" \
            % (size, welcome.limit)
        _say_bye(sock, reason)
        return Outcome(_errors.REJECTED, reason, pid)
    _net.allow_foreground(pid)  # before the host's observers run: they may raise its window
    # From here on the host may hold the launch: whatever breaks, asking again (with the same
    # id) is what tells; the host answers a launch it already took instead of taking it twice.
    try:
        _set_timeout(sock, deadline)
        sock.sendall(message)
        kind, payload = _read_frame(sock, deadline)
    except socket.timeout:
        return Outcome(_errors.NO_ANSWER, "the running instance did not acknowledge the launch "
                       "in time; it may still deliver it", pid)
    except _wire.ProtocolError as err:
        return Outcome(_errors.REJECTED, "the hand-off failed: %s" % err, pid)
    except (OSError, EOFError):
        return _LOST
    if kind != _wire.ACK:
        return Outcome(_errors.REJECTED, "the running instance answered out of turn", pid)
    return _acknowledged(payload, pid)


def _acknowledged(payload: bytes, pid: int) -> "Union[Outcome, str]":
    """What an acknowledgement says: an outcome, or _GONE for "the host is going away"."""
    try:
        status, detail = _wire.decode_ack(payload)
    except _wire.ProtocolError as err:
        return Outcome(_errors.REJECTED, str(err), pid)
    if status == _wire.RETRY:
        return _GONE
    reason = {
        _wire.DELIVERED: _errors.DELIVERED,
        _wire.QUEUED: _errors.QUEUED,
        _wire.IGNORED: _errors.IGNORED,
    }.get(status, _errors.REJECTED)
    if reason == _errors.REJECTED and not detail:
        detail = "refused by the running instance"
    return Outcome(reason, detail, pid)


def _send_plain(address: str, port: int, args: "Tuple[str, ...]",
                deadline: float) -> "Union[Outcome, str]":
    """Hand *args* to a holder that does not speak this protocol, in 2.0.0's form."""
    message = _wire.encode_plain(args)
    if len(message) > LEGACY_LIMIT:
        return Outcome(_errors.LEGACY, "the arguments take %d bytes, more than the %d an "
                       "instance running 2.0.0 reads; nothing was sent"
                       % (len(message), LEGACY_LIMIT))
    conn = _connect(address, port, deadline)
    if isinstance(conn, (Outcome, str)):
        return conn
    try:
        conn.sendall(message)
    except OSError as err:
        return Outcome(_errors.NO_ANSWER, "could not send the arguments: %s" % err)
    finally:
        _net.close_quietly(conn)
    return Outcome(_errors.SENT_LEGACY, "the program on the port does not speak this "
                   "protocol, so they went in the 2.0.0 form, which has none (legacy_handoff=True)")


def _read_frame(sock: socket.socket, deadline: float) -> "Tuple[bytes, bytes]":
    buf = b""
    while True:
        found = _wire.split_frame(buf, _ANSWER_LIMIT)
        if found is not None:
            return found[0], found[1]
        buf += _recv(sock, _ANSWER_LIMIT, deadline)


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


def _failed(err: OSError, otherwise: str) -> "Union[Outcome, str]":
    return _local_error(err) if err.errno in _LOCAL_ERRORS else otherwise


def _local_error(err: OSError) -> "Outcome":
    return Outcome(_errors.LOCAL_ERROR, "this process could not use a socket: %s" % err)


def _foreign(why: str) -> "Outcome":
    return Outcome(_errors.FOREIGN, "the program on the port is not a Socket_Singleton host "
                   "(%s)" % why)


def _foreign_resetter() -> "Outcome":
    return _foreign("it resets every connection without answering")


def _legacy_holder(hint: bool) -> "Outcome":
    """*hint*: name the constructor's ``legacy_handoff`` (the command line has no such option)."""
    return Outcome(_errors.LEGACY, "the program on the port closes connections without "
                   "answering: most likely an instance running socket-singleton 2.0.0 or older, "
                   "which cannot acknowledge a launch; quit it and launch again"
                   + (", or pass legacy_handoff=True to hand it the arguments all the same"
                      if hint else ""))


def _unconfirmed(why: str) -> "Outcome":
    return Outcome(_errors.NO_ANSWER, "the launch reached a host but its answer was lost, and "
                   "asking again failed (%s); it may have been delivered" % why)


def _not_running() -> "Outcome":
    return Outcome(_errors.NOT_RUNNING, "nothing listens on the port")


def _port_busy() -> "Outcome":
    return Outcome(_errors.PORT_BUSY, "nothing listens on the port, yet it is in use (by "
                   "another program's connection, or held by the system after one closed); "
                   "choose a port outside the system's ephemeral range")


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under us: the host gets cwd=None
        return ""
