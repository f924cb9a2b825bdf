"""The protocol as state machines without I/O (as h11 and wsproto do it).

Each machine is fed what happened and answers what to do; none touches a socket, a thread or a
clock, so the simulation in ``tests/test_simulation.py`` drives every state in microseconds.

* ``HostProtocol`` holds what the host's connections share (the secret, the launch ids it has
  answered, the bytes buffered, whether it is releasing); ``HostConnection`` is one peer of the
  host. Fed ``receive(data)``, ``closed()``, ``timed_out()``, ``decide(...)``, ``delivered()``
  and ``abandon(...)``, it returns a list of effects: ``(SEND, bytes)``, ``(LAUNCH, Launch)``
  (ask the policy, then call ``decide``), ``(TIMER, seconds)`` (the next ``timed_out()``),
  ``(WARN | DEBUG, message, args)`` and ``(CLOSE,)``.
* ``Handoff`` is a launch's side: take the port or hand the arguments over, retrying while a
  host goes away. Each event returns the next action: ``(TAKE,)``, ``(CONNECT,)``,
  ``(EXCHANGE, data, expect, pid)`` (send *data*, then read a banner or a frame; *pid*: let
  that host take the foreground first), ``(VERIFIED, pid)`` (call ``launch(pid, cwd)`` with this
  process's), ``(SLEEP, seconds)`` or ``(FINISH, Outcome, farewell)``
  (send *farewell* if any, as a courtesy, and end). Whenever the action is not ``EXCHANGE``
  or ``VERIFIED``, the driver closes the connection it has open. Time enters as ``now`` values.

Host connection states and their transitions::

    SNIFF --1024 NULs--> HELLO --hello--> LAUNCH --launch--> DECIDING --wait--> WAITING
      |                    |                 |--bye--> CLOSING            |
      +--other bytes--> PLAIN --EOF--> DECIDING --(plain)--> DONE          +--> CLOSING --> DONE
    any framed state --answer sent--> CLOSING; any state --dropped--> DONE
"""

import errno
import os

from . import _wire
from ._errors import Reason

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple, Union

    Effect = Tuple[object, ...]
    Action = Tuple[object, ...]

# -- the host's side ------------------------------------------------------------------------

SEND, LAUNCH, TIMER, WARN, DEBUG, CLOSE = "send", "launch", "timer", "warn", "debug", "close"

SNIFF, PLAIN, HELLO, WAITING_LAUNCH, DECIDING, WAITING, CLOSING, DONE = (
    "sniff", "plain", "hello", "launch", "deciding", "waiting", "closing", "done")
_FRAMED = (HELLO, WAITING_LAUNCH, DECIDING, WAITING)


class Limits:
    """The host's bounds: message size, bytes buffered by all peers, seconds a peer has for
    its message, seconds an answer waits for the observers, launch ids remembered."""

    __slots__ = ("buffered", "delivery_wait", "message", "peer_deadline", "recent")

    def __init__(self, message: int, buffered: int, peer_deadline: float,
                 delivery_wait: float, recent: int) -> None:
        self.message = message
        self.buffered = buffered
        self.peer_deadline = peer_deadline
        self.delivery_wait = delivery_wait
        self.recent = recent


class Launch:
    """A complete, verified launch, for the policy to decide on (``launch_id`` is empty for
    the plain form, which cannot wait for the observers: ``framed`` is then false)."""

    __slots__ = ("args", "cwd", "framed", "launch_id", "pid")

    def __init__(self, args: "Tuple[str, ...]", cwd: "Optional[str]", pid: "Optional[int]",
                 launch_id: bytes, framed: bool) -> None:
        self.args = args
        self.cwd = cwd
        self.pid = pid
        self.launch_id = launch_id
        self.framed = framed


class HostProtocol:
    """What every connection of one host shares. ``release()`` (the host is going away, or
    reached release_threshold) may be called from another thread: it writes one bool, which
    the I/O thread reads next, atomic under the GIL."""

    def __init__(self, secret: "Optional[str]", pid: int, limits: Limits,
                 urandom: "Callable[[int], bytes]" = os.urandom) -> None:
        self.secret = secret
        self.pid = pid
        self.limits = limits
        self.urandom = urandom
        # What a plain message may carry beyond the limit: the secret field and its NUL.
        self.secret_field = 0 if secret is None else len(_wire.secret_bytes(secret)) + 1
        self.releasing = False
        self.buffered = 0  # bytes held in unfinished messages, all peers together
        self._answers: Dict[bytes, Tuple[str, str]] = {}  # launch id -> answer, oldest first

    def connection(self) -> "HostConnection":
        return HostConnection(self)

    def release(self) -> None:
        """From now on, hellos and launches are answered "retry"."""
        self.releasing = True

    def answer_for(self, launch_id: bytes) -> "Optional[Tuple[str, str]]":
        """What this host answered a launch with this id (its client asks again)."""
        return self._answers.get(launch_id) if launch_id else None

    def remember(self, launch_id: bytes, reason: str, detail: str) -> None:
        if not launch_id:
            return
        self._answers.pop(launch_id, None)
        self._answers[launch_id] = (reason, detail)
        if len(self._answers) > self.limits.recent:
            del self._answers[next(iter(self._answers))]

    def delivered(self, launch_id: bytes) -> None:
        """The observers ran for this launch: a client that asks again hears "delivered"."""
        if launch_id in self._answers:
            self._answers[launch_id] = (Reason.DELIVERED, "")


class HostConnection:
    """The host's side of one peer; see the module's docstring for its events and effects."""

    def __init__(self, host: HostProtocol) -> None:
        self._host = host
        self.state = SNIFF
        self._buf = bytearray()
        self._client_nonce = b""
        self._host_nonce = b""
        self._launch_id = b""
        self._framed = False  # the launch came framed: it is answered

    @property
    def waiting(self) -> bool:
        """Whether the answer waits for the observers (``abandon`` then needs a fate)."""
        return self.state == WAITING

    @property
    def buffered(self) -> int:
        return len(self._buf)

    # -- events ----------------------------------------------------------------------------

    def opened(self) -> "List[Effect]":
        return [(TIMER, self._host.limits.peer_deadline)]

    def receive(self, data: bytes) -> "List[Effect]":
        out: List[Effect] = []
        host = self._host
        if self.state in (WAITING, CLOSING, DECIDING):
            return self._drop(out, "sent data after its launch; dropped")
        if self.state == DONE:
            return out
        if host.buffered + len(data) > host.limits.buffered:
            return self._drop(out, "the host holds %d bytes of unfinished messages already; "
                              "dropped", host.buffered)
        self._buf += data
        host.buffered += len(data)
        self._advance(out)
        return out

    def closed(self) -> "List[Effect]":
        """The peer closed its side (end of file)."""
        out: List[Effect] = []
        if self.state == SNIFF and not self._buf:
            out.append((DEBUG, "closed without sending anything", ()))
        elif self.state in (SNIFF, PLAIN):
            self._plain_complete(out)
            return out
        elif self.state == HELLO:
            out.append((WARN, "closed in the middle of the hand-off; dropped", ()))
        elif self.state == WAITING_LAUNCH:  # a status probe, or a client that would not trust us
            out.append((DEBUG, "closed after the welcome", ()))
        # a client that gave up waiting: its launch stays queued
        self._end(out)
        return out

    def failed(self, message: str, *args: object) -> "List[Effect]":
        """Reading or writing failed: drop the peer, saying why."""
        return self._drop([], message, *args)

    def discard(self) -> None:
        """The driver closes the peer on its own (the host stops): forget its bytes."""
        self._end([])

    def timed_out(self) -> "List[Effect]":
        out: List[Effect] = []
        if self.state == WAITING:  # observers are slow: the launch waits in the queue
            self._acknowledge(out, Reason.QUEUED)
        elif self.state == CLOSING:
            self._end(out)
        elif self.state != DONE:
            self._drop(out, "no complete message within %.1f s; dropped",
                       self._host.limits.peer_deadline)
        return out

    def decide(self, reason: str, detail: str = "", wait: bool = False) -> "List[Effect]":
        """The policy's answer to the LAUNCH effect; *wait*: answer once ``delivered()``
        (or "queued" at the delivery deadline). Also what a host answers the id again with."""
        if self.state != DECIDING:
            raise RuntimeError("decide() without a launch")
        self._host.remember(self._launch_id, Reason.QUEUED if wait else reason, detail)
        return self._answer(reason, detail, wait)

    def _answer(self, reason: str, detail: str, wait: bool = False) -> "List[Effect]":
        out: List[Effect] = []
        if self._framed:
            if wait:
                self.state = WAITING
                out.append((TIMER, self._host.limits.delivery_wait))
            else:
                self._acknowledge(out, reason, detail)
            return out
        if reason == Reason.RETRY:
            out.append((WARN, "plain launch arrived while the host was releasing; dropped", ()))
        elif reason == Reason.REJECTED:
            out.append((WARN, "plain launch refused: %s", (detail,)))
        self._end(out)
        return out

    def delivered(self) -> "List[Effect]":
        """The observers ran for this connection's launch."""
        out: List[Effect] = []
        if self.state == WAITING:
            self._acknowledge(out, Reason.DELIVERED)
        return out

    def abandon(self, fate: "Optional[str]" = None) -> "List[Effect]":
        """The host stops. *fate*: for a waiting launch, RETRY (taken back from the queue),
        DELIVERED or QUEUED."""
        out: List[Effect] = []
        if self.state == WAITING:
            assert fate is not None
            self._acknowledge(out, fate,
                              "the host released the port" if fate == Reason.RETRY else "")
        elif self.state in (HELLO, WAITING_LAUNCH):
            self._acknowledge(out, Reason.RETRY, "the host released the port")
        elif self.state not in (CLOSING, DONE):
            if self._buf:
                out.append((WARN, "message incomplete when the host released the port; "
                            "dropped", ()))
            self._end(out)
        return out

    # -- inside ----------------------------------------------------------------------------

    def _advance(self, out: "List[Effect]") -> None:
        limits = self._host.limits
        if self.state == SNIFF:
            size = len(_wire.PREAMBLE)
            if self._buf[:size].strip(b"\0"):
                self.state = PLAIN
            elif len(self._buf) >= size:
                self._consume(size)
                self.state = HELLO
                out.append((SEND, _wire.BANNER))
        if self.state == PLAIN:
            if len(self._buf) > limits.message + self._host.secret_field:
                self._drop(out, "message exceeds %d bytes; refused whole", limits.message)
            return
        while self.state in (HELLO, WAITING_LAUNCH):
            try:
                found = _wire.split_frame(self._buf, _wire.launch_frame_limit(limits.message))
                if found is None:
                    return
                kind, payload, used = found
                self._consume(used)
                self._on_frame(out, kind, payload)
            except _wire.ProtocolError as err:
                out.append((WARN, "protocol error (%s); dropped", (err,)))
                self._acknowledge(out, Reason.REJECTED, "protocol error: %s" % err)
                return

    def _consume(self, size: int) -> None:
        del self._buf[:size]
        self._host.buffered -= size

    def _on_frame(self, out: "List[Effect]", kind: bytes, payload: bytes) -> None:
        host = self._host
        if self.state == HELLO:
            if kind != _wire.HELLO or len(payload) != _wire.NONCE_SIZE:
                raise _wire.ProtocolError("expected a hello")
            if host.releasing:
                self._acknowledge(out, Reason.RETRY, "the host is releasing the port")
                return
            self._client_nonce = payload
            self._host_nonce = host.urandom(_wire.NONCE_SIZE)
            host_proof = b""
            if host.secret is not None:
                host_proof = _wire.proof(host.secret, b"host", self._client_nonce,
                                         self._host_nonce)
            out.append((SEND, _wire.encode_welcome(host.pid, host.limits.message,
                                                   self._host_nonce, host_proof)))
            self.state = WAITING_LAUNCH
            return
        if kind == _wire.BYE:  # the client found that we failed its secret check
            out.append((WARN, "the client gave up its launch: %s",
                        (payload.decode("utf-8", "replace"),)))
            self.state = CLOSING  # it closes first, so the port keeps no TIME_WAIT
            out.append((TIMER, host.limits.peer_deadline))
            return
        if kind != _wire.LAUNCH:
            raise _wire.ProtocolError("expected a launch")
        proof_size = _wire.PROOF_SIZE if host.secret is not None else 0
        client_proof, launch_id, pid, cwd, args = _wire.decode_launch(payload, proof_size)
        if host.secret is not None:
            expected = _wire.proof(host.secret, b"client", self._host_nonce,
                                   self._client_nonce)
            if not _wire.same(client_proof, expected):
                out.append((WARN, "client verification failed; launch ignored", ()))
                self._acknowledge(out, Reason.REJECTED, "the secret does not match the host's")
                return
        self._framed = True
        self._launched(out, Launch(args, cwd, pid, launch_id, True))

    def _plain_complete(self, out: "List[Effect]") -> None:
        secret = self._host.secret
        data = bytes(self._buf)
        if _wire.looks_like_http(data):
            self._drop(out, "an HTTP request (a web page can send one to localhost); ignored")
            return
        try:
            given, args = _wire.decode_plain(data, secret is not None)
        except _wire.ProtocolError as err:
            self._drop(out, "message refused (%s)", err)
            return
        if secret is not None and (
            given is None or not _wire.same(_wire.secret_bytes(given), _wire.secret_bytes(secret))
        ):
            self._drop(out, "client verification failed; message ignored")
            return
        self._launched(out, Launch(args, None, None, b"", False))

    def _launched(self, out: "List[Effect]", launch: Launch) -> None:
        """A launch whose id was seen before (its client retried after losing the answer) is
        answered, not taken again; a releasing host takes none."""
        self.state = DECIDING
        earlier = self._host.answer_for(launch.launch_id)
        if earlier is not None:
            out.extend(self._answer(*earlier))
        elif self._host.releasing:
            out.extend(self._answer(Reason.RETRY, "the host is releasing the port"))
        else:
            self._launch_id = launch.launch_id
            out.append((LAUNCH, launch))

    def _acknowledge(self, out: "List[Effect]", reason: str, detail: str = "") -> None:
        self.state = CLOSING
        out.append((TIMER, self._host.limits.peer_deadline))
        out.append((SEND, _wire.encode_ack(_wire.STATUS[reason], detail)))

    def _drop(self, out: "List[Effect]", message: str, *args: object) -> "List[Effect]":
        out.append((WARN, message, args))
        self._end(out)
        return out

    def _end(self, out: "List[Effect]") -> None:
        if self.state != DONE:
            self._host.buffered -= len(self._buf)
            self._buf = bytearray()
            self.state = DONE
            out.append((CLOSE,))


# -- the launch's side ----------------------------------------------------------------------

TAKE, CONNECT, EXCHANGE, SLEEP, FINISH = "take", "connect", "exchange", "sleep", "done"
VERIFIED = "verified"  # the host proved itself: call launch(pid, cwd)
BANNER, FRAME = "banner", "frame"  # what an EXCHANGE reads back

# A port that is bound but refuses connections for this long has no host: a host listens within
# microseconds of binding, and a host that releases frees the port at once.
PORT_BUSY_AFTER = 0.2
# Connections in a row that the holder closes cleanly without a banner before it is called a
# program that does not speak this protocol (most likely 2.0.0, which reads and closes). One such
# close may be a host that died at that instant; two in a row are not.
SILENT_CLOSES = 2
LEGACY_LIMIT = 1024  # a 2.0.0 host reads one chunk of this many bytes and drops the rest
FIRST_DELAY = 0.002  # seconds between attempts, doubling up to MAX_DELAY
MAX_DELAY = 0.05
# Errors of our own process, not of the program on the port.
_LOCAL_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

# Why an attempt did not end the hand-off; the machine decides whether to try again.
_REFUSED = "refused"  # nothing accepted the connection: bound but not listening, or released
_SILENT = "silent"  # closed cleanly before the banner: a 2.0.0 host, or a host that just died
_RESET = "reset"  # reset before the banner: a host that died, or a program that resets us
_GONE = "gone"  # closed after the banner, or answered "retry": a host going away
_LOST = "lost"  # as _GONE, but after our launch left: the host may hold it (it knows its id)

# Phases of one connection.
_CONNECTING, _GREETING, _HELLOING, _VERIFIED, _LAUNCHING, _PLAIN_CONNECTING, _PLAIN_SENDING = \
    range(7)


class Outcome:
    """How a hand-off (or a probe) ended: a ``Reason``, a sentence, the host's pid."""

    __slots__ = ("detail", "host_pid", "reason")

    def __init__(self, reason: str, detail: str = "", host_pid: "Optional[int]" = None) -> None:
        self.reason = reason
        self.detail = detail
        self.host_pid = host_pid

    def __repr__(self) -> str:
        return "Outcome(%r, %r, %r)" % (self.reason, self.detail, self.host_pid)


class Handoff:
    """A launch's hand-off; see the module's docstring for its events and actions.

    *probe*: only ask who holds the port (never take it, send nothing of the user's): ends
    with ``Reason.HOST`` and the host's pid for a verified host.
    """

    def __init__(self, args: "Tuple[str, ...]", secret: "Optional[str]", timeout: float,
                 now: float, launch_id: bytes = b"", send: bool = True, take: bool = True,
                 legacy: bool = False, probe: bool = False,
                 urandom: "Callable[[int], bytes]" = os.urandom) -> None:
        self._args = args
        self._secret = secret
        self._timeout = timeout
        self.deadline = now + timeout
        self._launch_id = launch_id
        self._send = send
        self._take = take and not probe
        self._legacy = legacy
        self._probe = probe
        self._urandom = urandom
        self._delay = FIRST_DELAY
        self._silent = 0
        self._attempts = 0
        self._refused_since: Optional[float] = None
        self._sent = False  # a launch of ours reached a host that then went away unanswered
        self._last = ""  # why the previous attempt did not end the hand-off
        self._phase = _CONNECTING
        self._client_nonce = b""
        self._host_nonce = b""
        self._pid: Optional[int] = None
        self._limit = 0
        self._client_proof = b""

    # -- events ----------------------------------------------------------------------------

    def start(self) -> "Action":
        return self._round()

    def held(self) -> "Action":
        """TAKE failed: another socket holds the port."""
        if not self._send:
            return self._done(Outcome(Reason.NOT_SENT))
        if self._legacy and self._silent:
            message = _wire.encode_plain(self._args)
            if len(message) > LEGACY_LIMIT:
                return self._done(Outcome(
                    Reason.LEGACY, "the arguments take %d bytes, more than the %d an instance "
                    "running 2.0.0 reads; nothing was sent" % (len(message), LEGACY_LIMIT)))
            self._phase = _PLAIN_CONNECTING
            return (CONNECT,)
        self._phase = _CONNECTING
        return (CONNECT,)

    def connected(self) -> "Action":
        if self._phase == _PLAIN_CONNECTING:
            self._phase = _PLAIN_SENDING
            return (EXCHANGE, _wire.encode_plain(self._args), None, None)
        self._phase = _GREETING
        self._client_nonce = self._urandom(_wire.NONCE_SIZE)
        return (EXCHANGE, _wire.PREAMBLE, BANNER, None)

    def sent(self, now: float) -> "Action":
        """The plain form went out (an EXCHANGE that reads nothing back)."""
        return self._done(Outcome(
            Reason.SENT_LEGACY, "the program on the port does not speak this protocol, so they "
            "went in the 2.0.0 form, which has none (legacy_handoff=True)"))

    def received(self, data: bytes, now: float) -> "Action":
        """A banner (or as much of another answer as shows it is not one)."""
        if data != _wire.BANNER:
            return self._ended(_foreign(_wire.describe_answer(data)), now)
        self._phase = _HELLOING
        return (EXCHANGE, _wire.frame(_wire.HELLO, self._client_nonce), FRAME, None)

    def frame(self, kind: bytes, payload: bytes, now: float) -> "Action":
        if self._phase == _HELLOING:
            return self._welcomed(kind, payload, now)
        if kind != _wire.ACK:
            return self._ended(Outcome(Reason.REJECTED, "the running instance answered out "
                                       "of turn", self._pid), now)
        try:
            status, detail = _wire.decode_ack(payload)
        except _wire.ProtocolError as err:
            return self._ended(Outcome(Reason.REJECTED, str(err), self._pid), now)
        reason = _wire.REASON[status]
        if reason == Reason.RETRY:
            return self._ended(_GONE, now)
        if reason == Reason.REJECTED and not detail:
            detail = "refused by the running instance"
        return self._ended(Outcome(reason, detail, self._pid), now)

    def launch(self, pid: int, cwd: str) -> "Action":
        """After a VERIFIED host: this process's pid and working directory."""
        message = _wire.encode_launch(self._client_proof, self._launch_id, pid, cwd, self._args)
        size = _wire.launch_fields_size(len(message) - _wire.HEADER_SIZE,
                                        len(self._client_proof))
        if size > self._limit:
            why = "the arguments take %d bytes; the running instance accepts at most %d" \
                % (size, self._limit)
            return self._done(Outcome(Reason.REJECTED, why, self._pid), self._bye(why))
        # From here on the host may hold the launch: whatever breaks, asking again (with the
        # same id) is what tells; the host answers a launch it already took instead of taking
        # it twice.
        self._phase = _LAUNCHING
        return (EXCHANGE, message, FRAME, self._pid)

    def refused(self, now: float) -> "Action":
        """Nothing accepted the connection (refused, reset or aborted while connecting)."""
        return self._ended(_REFUSED, now)

    def closed(self, now: float) -> "Action":
        """The peer closed cleanly before answering in full."""
        if self._phase == _GREETING:
            return self._ended(_SILENT, now)
        if self._phase == _LAUNCHING:
            return self._ended(_LOST, now)
        return self._ended(_GONE, now)

    def failed(self, err: OSError, now: float) -> "Action":
        """An I/O call failed (not a timeout)."""
        phase = self._phase
        if phase == _LAUNCHING:
            return self._ended(_LOST, now)
        if phase == _PLAIN_SENDING:
            return self._ended(Outcome(Reason.NO_ANSWER, "could not send the arguments: %s"
                                       % err), now)
        if phase in (_CONNECTING, _PLAIN_CONNECTING):
            if isinstance(err, (ConnectionRefusedError, ConnectionResetError,
                                ConnectionAbortedError)):
                return self._ended(_REFUSED, now)  # bound but not (or no longer) listening
            if isinstance(err, InterruptedError):
                return self._ended(_GONE, now)  # a signal cut the connect short: try again
            if err.errno in _LOCAL_ERRORS:
                return self._ended(_local_error(err), now)
            return self._ended(Outcome(Reason.NO_ANSWER, "could not connect: %s" % err), now)
        if err.errno in _LOCAL_ERRORS:
            return self._ended(_local_error(err), now)
        if phase == _GREETING:
            return self._ended(_RESET, now)  # a host that died with our preamble unread
        return self._ended(_GONE, now)  # a host going away between its banner and welcome

    def no_socket(self, err: OSError, now: float) -> "Action":
        """This process could not make a socket."""
        return self._ended(_local_error(err), now)

    def malformed(self, why: str, now: float) -> "Action":
        """The answer was not a frame this protocol allows."""
        if self._phase == _LAUNCHING:
            return self._ended(Outcome(Reason.REJECTED, "the hand-off failed: %s" % why,
                                       self._pid), now)
        return self._ended(_foreign(why), now)

    def timed_out(self, now: float) -> "Action":
        phase = self._phase
        if phase == _PLAIN_SENDING:
            return self._ended(Outcome(Reason.NO_ANSWER, "could not send the arguments: "
                                       "timed out"), now)
        if phase in (_CONNECTING, _PLAIN_CONNECTING):
            outcome = Outcome(Reason.NO_ANSWER, "the program on the port did not accept a "
                              "connection in time")
        elif phase == _GREETING:
            outcome = Outcome(Reason.NO_ANSWER, "the program on the port accepted the "
                              "connection but did not answer in time (a host that is very "
                              "busy, or a program that does not speak this protocol)")
        elif phase == _HELLOING:
            outcome = Outcome(Reason.NO_ANSWER, "the host did not answer in time")
        else:
            outcome = Outcome(Reason.NO_ANSWER, "the running instance did not acknowledge "
                              "the launch in time; it may still deliver it", self._pid)
        return self._ended(outcome, now)

    def woke(self, now: float) -> "Action":
        return self._round()

    # -- inside ----------------------------------------------------------------------------

    def _round(self) -> "Action":
        self._attempts += 1
        if self._take:
            return (TAKE,)
        if self._probe:
            self._phase = _CONNECTING
            return (CONNECT,)
        return self.held()

    def _welcomed(self, kind: bytes, payload: bytes, now: float) -> "Action":
        if kind == _wire.ACK and payload[:1] == _wire.RETRY:
            return self._ended(_GONE, now)  # a host that is releasing answers with "retry"
        if kind != _wire.WELCOME:
            return self._ended(_foreign("it answered out of turn"), now)
        try:
            pid, limit, needs_secret, host_nonce, host_proof = _wire.decode_welcome(payload)
        except _wire.ProtocolError as err:
            return self._ended(_foreign(str(err)), now)
        secret = self._secret
        problem = ""
        if needs_secret and secret is None:
            problem = "the running instance requires a secret"
        elif secret is not None and not needs_secret:
            problem = "the running instance does not use a secret"
        elif secret is not None and not _wire.same(
                host_proof, _wire.proof(secret, b"host", self._client_nonce, host_nonce)):
            problem = "the running instance does not know the same secret"
        if problem:
            return self._done(Outcome(Reason.SECRET_MISMATCH, problem, pid), self._bye(problem))
        if self._probe:
            return self._done(Outcome(Reason.HOST, "a Socket_Singleton host answered", pid))
        self._pid = pid
        self._limit = limit
        self._host_nonce = host_nonce
        if secret is not None:
            self._client_proof = _wire.proof(secret, b"client", host_nonce, self._client_nonce)
        self._phase = _VERIFIED
        return (VERIFIED, pid)

    def _bye(self, why: str) -> bytes:
        """Tell the host why we give up, so that a host with ``verbose=True`` can log it."""
        return _wire.frame(_wire.BYE, why.encode("utf-8"))

    def _done(self, outcome: Outcome, farewell: bytes = b"") -> "Action":
        return (FINISH, outcome, farewell)

    def _ended(self, result: "Union[Outcome, str]", now: float) -> "Action":
        """One connection's try ended with *result*: finish, or try again."""
        if self._probe:
            return self._probe_ended(result)
        if isinstance(result, Outcome):
            if self._sent and result.reason in (Reason.NO_ANSWER, Reason.LOCAL_ERROR):
                return self._done(_unconfirmed(result.detail))
            if (self._last == _RESET and result.reason == Reason.NO_ANSWER
                    and self._phase in (_CONNECTING, _GREETING)):
                # the deadline cut its resets short (a program that answered a banner, or
                # took our launch, is a host that was slow, not one that resets)
                return self._done(_foreign_resetter())
            return self._done(result)
        self._last = result
        if result == _REFUSED:
            if not self._take:
                return self._done(_not_running())
            if self._refused_since is None:
                self._refused_since = now
            elif now - self._refused_since >= PORT_BUSY_AFTER:
                return self._done(_port_busy())
        else:
            self._refused_since = None
        self._silent = self._silent + 1 if result == _SILENT else 0
        if self._silent >= SILENT_CLOSES:
            return self._done(_legacy_holder(hint=self._take))
        self._sent = self._sent or result == _LOST
        if now >= self.deadline:
            if self._sent:
                return self._done(_unconfirmed("no host answered within %g s" % self._timeout))
            if result == _RESET:
                return self._done(_foreign_resetter())
            return self._done(Outcome(Reason.NO_ANSWER, "the port stayed busy but no host took "
                                      "the launch within %g s" % self._timeout))
        pause = min(self._delay, self.deadline - now)
        self._delay = min(self._delay * 2, MAX_DELAY)
        return (SLEEP, pause)

    def _probe_ended(self, result: "Union[Outcome, str]") -> "Action":
        if isinstance(result, Outcome):
            return self._done(result)
        if self._phase == _CONNECTING:  # refused, or cut short
            return self._done(_not_running())
        if result == _SILENT:  # as claim(): one clean close may be a host that just died
            if self._attempts < SILENT_CLOSES:
                return self._round()
            return self._done(_legacy_holder(hint=False))
        if result == _RESET:
            return self._done(_foreign_resetter())
        return self._done(Outcome(Reason.NOT_RUNNING, "the host on the port is releasing it"))


def _local_error(err: OSError) -> Outcome:
    return Outcome(Reason.LOCAL_ERROR, "this process could not use a socket: %s" % err)


def _foreign(why: str) -> Outcome:
    return Outcome(Reason.FOREIGN, "the program on the port is not a Socket_Singleton host "
                   "(%s)" % why)


def _foreign_resetter() -> Outcome:
    return _foreign("it resets every connection without answering")


def _legacy_holder(hint: bool) -> Outcome:
    """*hint*: name the constructor's ``legacy_handoff`` (the command line has no such option)."""
    return Outcome(Reason.LEGACY, "the program on the port closes connections without "
                   "answering: most likely an instance running socket-singleton 2.0.0 or older, "
                   "which cannot acknowledge a launch; quit it and launch again"
                   + (", or pass legacy_handoff=True to hand it the arguments all the same"
                      if hint else ""))


def _unconfirmed(why: str) -> Outcome:
    return Outcome(Reason.NO_ANSWER, "the launch reached a host but its answer was lost, and "
                   "asking again failed (%s); it may have been delivered" % why)


def _not_running() -> Outcome:
    return Outcome(Reason.NOT_RUNNING, "nothing listens on the port")


def _port_busy() -> Outcome:
    return Outcome(Reason.PORT_BUSY, "nothing listens on the port, yet it is in use (by "
                   "another program's connection, or held by the system after one closed); "
                   "choose a port outside the system's ephemeral range")
