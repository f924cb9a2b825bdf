"""The host's side of one connection, as a state machine without I/O (as h11 does it).

Fed what happened (``receive(data)``, ``closed()``, ``timed_out()``, ``decide(...)``,
``settled(reason)``, ``abandon()``), a ``HostConnection`` answers with a list of effects, small
classes the listener (``_listener``) matches with ``isinstance``: ``Send`` these bytes, arm a
``Timer`` (the next ``timed_out()``), ``Log`` a line, ``Launched`` (a launch is whole: ask the
host, then call ``decide``) and ``Close``. It never touches a socket, a thread or a clock, so the
simulation in ``tests/test_simulation.py`` drives every state in microseconds.

States and their transitions::

    SNIFF --1024 NULs--> HELLO --hello--> AWAIT_LAUNCH --launch--> DECIDING --wait--> WAITING
      |                                      |--bye--> CLOSING                      |
      +--other bytes--> PLAIN --EOF--> DECIDING --(plain)--> DONE    settled/queued --> CLOSING
    any framed state --answer sent--> CLOSING; any state --dropped--> DONE
"""

from __future__ import annotations

import os

from . import _wire
from ._launch import Launch
from ._outcome import Reason
from ._sentinel import Sentinel

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import Callable, Dict, List, Optional, Tuple, Union

SNIFF, PLAIN, HELLO, AWAIT_LAUNCH, DECIDING, WAITING, AWAIT_REPLY, CLOSING, DONE = map(
    Sentinel, ("SNIFF", "PLAIN", "HELLO", "AWAIT_LAUNCH", "DECIDING", "WAITING", "AWAIT_REPLY",
               "CLOSING", "DONE"))


# -- effects ---------------------------------------------------------------------------------

class Send:
    """Write *data* to the peer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Timer:
    """Call ``timed_out()`` after *seconds* (replaces the previous timer; ``None``: never)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds


class Log:
    """Log ``message % args`` about this peer, as a warning or (*warn* false) a debug line."""

    __slots__ = ("args", "message", "warn")

    def __init__(self, message: str, args: Tuple[object, ...] = (), warn: bool = True) -> None:
        self.message = message
        self.args = args
        self.warn = warn


class Launched:
    """*launch* is whole and verified: let the host decide, then call ``decide()``."""

    __slots__ = ("launch",)

    def __init__(self, launch: Launch) -> None:
        self.launch = launch


class Close:
    """Close the connection; the machine is done."""

    __slots__ = ()


if TYPE_CHECKING:
    Effect = Union[Send, Timer, Log, Launched, Close]
_CLOSE = Close()
_RELEASED = "the host released the port"


class Limits:
    """The host's bounds: message size, bytes buffered by all peers, seconds a peer has for
    its message, seconds an answer waits for the observers, launch ids remembered; and how
    arguments are decoded: at most *max_args*, undecodable bytes handled by *errors* (the OS's
    file-name error handler when ``None``)."""

    __slots__ = ("buffered", "delivery_wait", "errors", "max_args", "message", "peer_deadline",
                 "recent")

    def __init__(self, message: int, buffered: int, peer_deadline: float,
                 delivery_wait: float, recent: int, max_args: int = _wire.MAX_ARGS,
                 errors: Optional[str] = None) -> None:
        self.max_args = max_args
        self.errors = errors
        self.message = message
        self.buffered = buffered
        self.peer_deadline = peer_deadline
        self.delivery_wait = delivery_wait
        self.recent = recent


class HostProtocol:
    """What every connection of one host shares. ``release()`` (the host is going away, or
    reached release_threshold) may be called from another thread: it writes one bool, which
    the I/O thread reads next, atomic under the GIL."""

    def __init__(self, secret: Optional[str], pid: int, limits: Limits,
                 urandom: Callable[[int], bytes] = os.urandom,
                 identity: _wire.Identity = _wire.NUMBERED) -> None:
        self.secret = secret
        self.identity = identity  # what a protocol-3 welcome announces
        self.pid = pid
        self.limits = limits
        self.urandom = urandom
        # What a plain message may carry beyond the limit: the secret field and its NUL.
        self.secret_field = 0 if secret is None else len(_wire.secret_bytes(secret)) + 1
        self.releasing = False
        self.buffered = 0  # bytes held in unfinished messages, all peers together
        self._answers: Dict[bytes, Tuple[str, str]] = {}  # launch id -> answer, oldest first

    def connection(self) -> HostConnection:
        return HostConnection(self)

    def release(self) -> None:
        """From now on, hellos and launches are answered "retry"."""
        self.releasing = True

    def answer_for(self, launch_id: bytes) -> Optional[Tuple[str, str]]:
        """What this host answered a launch with this id (its client asks again)."""
        return self._answers.get(launch_id) if launch_id else None

    def remember(self, launch_id: bytes, reason: str, detail: str) -> None:
        if not launch_id:
            return
        self._answers.pop(launch_id, None)
        self._answers[launch_id] = (reason, detail)
        if len(self._answers) > self.limits.recent:
            del self._answers[next(iter(self._answers))]

    def settled(self, launch_id: bytes, reason: str) -> None:
        """A launch answered "queued" was settled later (DELIVERED, or RETRY: taken back as
        the host stops): a client that asks again hears that."""
        if launch_id in self._answers:
            self._answers[launch_id] = (reason, "")


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
        self._launch: Optional[Launch] = None  # the launch the host is deciding on, or has
        self._identity: Optional[_wire.Identity] = None  # a protocol-3 client's (its hello)

    @property
    def waiting(self) -> bool:
        """Whether the answer waits for the observers."""
        return self.state == WAITING

    @property
    def launch_id(self) -> bytes:
        """The id of the launch this connection carried (empty before one, or plain)."""
        return self._launch_id

    @property
    def buffered(self) -> int:
        return len(self._buf)

    # -- events ----------------------------------------------------------------------------

    def opened(self) -> List[Effect]:
        return [Timer(self._host.limits.peer_deadline)]

    def receive(self, data: bytes) -> List[Effect]:
        out: List[Effect] = []
        host = self._host
        if self.state in (WAITING, AWAIT_REPLY, CLOSING, DECIDING):
            self._stopped_waiting()
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

    def closed(self) -> List[Effect]:
        """The peer closed its side (end of file)."""
        out: List[Effect] = []
        if self.state == SNIFF and not self._buf:
            out.append(Log("closed without sending anything", warn=False))
        elif self.state in (SNIFF, PLAIN):
            self._plain_complete(out)
            return out
        elif self.state == HELLO:
            out.append(Log("closed in the middle of the hand-off; dropped", ()))
        elif self.state == AWAIT_LAUNCH:  # a status probe, or a client that would not trust us
            out.append(Log("closed after the welcome", warn=False))
        elif self.state == AWAIT_REPLY:
            out.append(Log("stopped waiting for its reply", warn=False))
        self._stopped_waiting()  # Ctrl+C or killed, before or after its acknowledgement
        # a client that gave up waiting: its launch stays queued
        self._end(out)
        return out

    def failed(self, message: str, *args: object) -> List[Effect]:
        """Reading or writing failed: drop the peer, saying why."""
        self._stopped_waiting()
        return self._drop([], message, *args)

    def discard(self) -> None:
        """The driver closes the peer on its own (the host stops): forget its bytes."""
        self._end([])

    def timed_out(self) -> List[Effect]:
        out: List[Effect] = []
        if self.state == WAITING:  # observers are slow: the launch waits in the queue
            self._answer_waiting(out)
        elif self.state == CLOSING:
            self._end(out)
        elif self.state != DONE:
            self._drop(out, "no complete message within %.1f s; dropped",
                       self._host.limits.peer_deadline)
        return out

    def decide(self, reason: str, detail: str = "", wait: bool = False) -> List[Effect]:
        """The host's answer to ``Launched``; *wait*: answer once ``settled()``
        (or "queued" at the delivery deadline). Also what a host answers the id again with."""
        if self.state != DECIDING:
            raise RuntimeError("decide() without a launch")
        self._host.remember(self._launch_id, Reason.QUEUED if wait else reason, detail)
        return self._answer(reason, detail, wait)

    def _answer(self, reason: str, detail: str, wait: bool = False) -> List[Effect]:
        out: List[Effect] = []
        if self._framed:
            if wait:
                self.state = WAITING
                out.append(Timer(self._host.limits.delivery_wait))
            else:
                self._acknowledge(out, reason, detail)
            return out
        if reason == Reason.RETRY:
            out.append(Log("plain launch arrived while the host was releasing; dropped", ()))
        elif reason == Reason.REJECTED:
            out.append(Log("plain launch refused: %s", (detail,)))
        self._end(out)
        return out

    def settled(self, reason: str) -> List[Effect]:
        """The host settled the launch whose answer waits: DELIVERED (its observers ran) or
        RETRY (the host stops, and took it back from the queue before any observer saw it)."""
        out: List[Effect] = []
        self._host.settled(self._launch_id, reason)
        if self.state == WAITING:
            self._acknowledge(out, reason, _RELEASED if reason == Reason.RETRY else "")
        return out

    def replied(self) -> List[Effect]:
        """A reply was made for this connection's launch (``Launch.reply``)."""
        out: List[Effect] = []
        if self.state == AWAIT_REPLY:
            self._send_reply(out)
            self.state = CLOSING
            out.append(Timer(self._host.limits.peer_deadline))
        return out

    def abandon(self) -> List[Effect]:
        """The host stops: answer what can be answered, drop the rest."""
        out: List[Effect] = []
        if self.state == WAITING:
            self._answer_waiting(out)
        elif self.state in (HELLO, AWAIT_LAUNCH):
            self._acknowledge(out, Reason.RETRY, _RELEASED)
        elif self.state == AWAIT_REPLY:
            # Said, not just closed: a reset would discard an acknowledgement the launch has
            # not read yet, and it would ask again (the next host would deliver it twice).
            out.append(Send(_wire.frame(_wire.BYE, _RELEASED.encode("utf-8"))))
            self.state = CLOSING
            out.append(Timer(self._host.limits.peer_deadline))
        elif self.state not in (CLOSING, DONE):
            if self._buf:
                out.append(Log("message incomplete when the host released the port; dropped"))
            self._end(out)
        return out

    # -- inside ----------------------------------------------------------------------------

    def _advance(self, out: List[Effect]) -> None:
        limits = self._host.limits
        if self.state == SNIFF:
            size = len(_wire.PREAMBLE)
            if self._buf[:size].strip(b"\0"):
                self.state = PLAIN
            elif len(self._buf) >= size:
                self._consume(size)
                self.state = HELLO
                out.append(Send(_wire.BANNER))
        if self.state == PLAIN:
            if len(self._buf) > limits.message + self._host.secret_field:
                self._drop(out, "message exceeds %d bytes; refused whole", limits.message)
            return
        while self.state in (HELLO, AWAIT_LAUNCH):
            try:
                found = _wire.split_frame(self._buf, _wire.launch_frame_limit(limits.message))
                if found is None:
                    return
                kind, payload, used = found
                self._consume(used)
                self._on_frame(out, kind, payload)
            except _wire.ProtocolError as err:
                out.append(Log("protocol error (%s); dropped", (err,)))
                self._acknowledge(out, Reason.REJECTED, "protocol error: %s" % err)
                return

    def _consume(self, size: int) -> None:
        del self._buf[:size]
        self._host.buffered -= size

    def _on_frame(self, out: List[Effect], kind: bytes, payload: bytes) -> None:
        host = self._host
        if self.state == HELLO:
            if kind != _wire.HELLO:
                raise _wire.ProtocolError("expected a hello")
            self._client_nonce, self._identity = _wire.decode_hello(payload)
            if host.releasing:
                self._acknowledge(out, Reason.RETRY, "the host is releasing the port")
                return
            self._host_nonce = host.urandom(_wire.NONCE_SIZE)
            host_proof = b""
            if host.secret is not None:
                host_proof = _wire.proof(host.secret, b"host", self._client_nonce,
                                         self._host_nonce)
            if self._identity is None:
                welcome = _wire.encode_welcome(host.pid, host.limits.message, self._host_nonce,
                                               host_proof)
            else:
                welcome = _wire.encode_welcome3(host.pid, host.limits.message,
                                                self._host_nonce, host_proof, host.identity)
            out.append(Send(welcome))
            self.state = AWAIT_LAUNCH
            return
        if kind == _wire.BYE:  # the client found that we failed its secret check
            out.append(Log("the client gave up its launch: %s",
                        (payload.decode("utf-8", "replace"),)))
            self.state = CLOSING  # it closes first, so the port keeps no TIME_WAIT
            out.append(Timer(host.limits.peer_deadline))
            return
        if kind != _wire.LAUNCH:
            raise _wire.ProtocolError("expected a launch")
        proof_size = _wire.PROOF_SIZE if host.secret is not None else 0
        extras = None
        if self._identity is None:
            client_proof, launch_id, pid, cwd, args = _wire.decode_launch(
                payload, proof_size, host.limits.max_args, host.limits.errors)
        else:
            client_proof, launch_id, pid, cwd, args, extras = _wire.decode_launch3(
                payload, proof_size, host.limits.max_args, host.limits.errors)
        if host.secret is not None:
            expected = _wire.proof(host.secret, b"client", self._host_nonce,
                                   self._client_nonce)
            if not _wire.same(client_proof, expected):
                out.append(Log("client verification failed; launch ignored", ()))
                self._acknowledge(out, Reason.REJECTED, "the secret does not match the host's")
                return
        if self._identity is not None and self._identity.app_id and self._identity != host.identity:
            # the client checks our welcome first: only a broken one gets here
            out.append(Log("a launch of another application or user; refused", ()))
            self._acknowledge(out, Reason.REJECTED, "this host serves another application")
            return
        self._framed = True
        self._launched(out, Launch(args, cwd or None, pid, launch_id, True, extras))

    def _plain_complete(self, out: List[Effect]) -> None:
        secret = self._host.secret
        data = bytes(self._buf)
        if _wire.looks_like_http(data):
            self._drop(out, "an HTTP request (a web page can send one to localhost); ignored")
            return
        try:
            given, args = _wire.decode_plain(data, secret is not None,
                                              self._host.limits.max_args,
                                              self._host.limits.errors)
        except _wire.ProtocolError as err:
            self._drop(out, "message refused (%s)", err)
            return
        if secret is not None and (
            given is None or not _wire.same(given, _wire.secret_bytes(secret))
        ):
            self._drop(out, "client verification failed; message ignored")
            return
        self._launched(out, Launch(args))

    def _launched(self, out: List[Effect], launch: Launch) -> None:
        """A launch whose id was seen before (its client retried after losing the answer) is
        answered, not taken again; a releasing host takes none."""
        self.state = DECIDING
        earlier = self._host.answer_for(launch._id)
        if earlier is not None:
            out.extend(self._answer(*earlier))
        elif self._host.releasing:
            out.extend(self._answer(Reason.RETRY, "the host is releasing the port"))
        else:
            self._launch_id = launch._id
            self._launch = launch
            out.append(Launched(launch))

    def _answer_waiting(self, out: List[Effect]) -> None:
        """Answer "queued" before the observers ran, unless the host took the launch back
        first (it stops): the launch's one fate decides, whichever thread claims it first."""
        assert self._launch is not None
        reason = self._launch._settle(Reason.QUEUED)
        self._host.settled(self._launch_id, reason)
        self._acknowledge(out, reason, _RELEASED if reason == Reason.RETRY else "")

    def _acknowledge(self, out: List[Effect], reason: str, detail: str = "") -> None:
        """Send the acknowledgement, preceded by the launch's reply if one was made; a launch
        that waits for its reply and has none yet keeps its connection (AWAIT_REPLY)."""
        launch = self._launch
        taken = launch is not None and reason in (Reason.DELIVERED, Reason.QUEUED)
        replied = taken and self._send_reply(out)
        out.append(Send(_wire.encode_ack(_wire.STATUS[reason], detail)))
        if taken and not replied and launch is not None and launch._wait:
            self.state = AWAIT_REPLY
            out.append(Timer(None))  # it waits as long as its launch does
        else:
            self.state = CLOSING
            out.append(Timer(self._host.limits.peer_deadline))

    def _send_reply(self, out: List[Effect]) -> bool:
        """Send the launch's reply if one was made (protocol 3 only)."""
        launch = self._launch
        reply = launch._reply_made() if launch is not None and launch._can_reply else None
        if reply is None:
            return False
        out.append(Send(_wire.encode_reply(reply[1], reply[0])))
        return True

    def _stopped_waiting(self) -> None:
        """The peer left before it had its answer: a launch that waits for a reply and has
        none yet is cancelled (whether or not it had its acknowledgement)."""
        launch = self._launch
        if (self.state in (DECIDING, WAITING, AWAIT_REPLY) and launch is not None
                and launch._wait and launch._reply_made() is None):
            launch._cancel()

    def _drop(self, out: List[Effect], message: str, *args: object) -> List[Effect]:
        out.append(Log(message, args))
        self._end(out)
        return out

    def _end(self, out: List[Effect]) -> None:
        if self.state == WAITING and self._launch is not None:
            self._launch._settle(Reason.QUEUED)  # its client left: the launch stays queued
        if self.state != DONE:
            if self._launch is not None:
                self._launch._close()
            self._host.buffered -= len(self._buf)
            self._buf = bytearray()
            self.state = DONE
            out.append(_CLOSE)


