"""A launch's hand-off, as a state machine without I/O (as h11 does it): take the port, or hand
the arguments to its host, retrying while a host goes away.

Each event (``start()``, ``held()``, ``connected()``, ``received(data)``, ``frame(...)``,
``closed()``, ``failed(err)``, ``timed_out()``, ``woke()``, ...) returns the next action, a small
class the driver (``_client``) matches with ``isinstance``: ``Take`` the port; ``Connect``;
``Exchange`` (send bytes, then read what ``expect`` names); ``Verified`` (the host proved itself:
call ``launch(pid, cwd)`` with this process's); ``Sleep``; ``Finish`` (send the farewell if any,
as a courtesy, and end with the outcome). For an application's candidate ports also ``Test``
(is the port held?), ``Keep`` (become the host with the port bound by ``Take(check=True)``) and
``Yield`` (close that port; go on as ``Verified``), with the events ``bound()`` and ``free()``.
``Take``, ``Connect`` and ``Test`` name the port. Whenever the action is not ``Exchange``,
``Verified`` or ``Yield``, the driver closes the connection it has open (with a reset when the
peer closed first, so that no TIME-WAIT is left on the holder's port). Time enters as ``now``
values; the machine never touches a socket, a thread or a clock.
"""

import os

from . import _net, _wire
from ._outcome import Outcome, Reason
from ._sentinel import Sentinel

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a launch milliseconds: annotations only
    from typing import Callable, List, Optional, Tuple, Union

    Action = Union["Take", "Connect", "Exchange", "Verified", "Sleep", "Finish", "Test",
                   "Keep", "Yield"]


# What an Exchange reads back after sending.
BANNER, FRAME, NOTHING = Sentinel("BANNER"), Sentinel("FRAME"), Sentinel("NOTHING")


# -- actions ---------------------------------------------------------------------------------

class Take:
    """Bind and listen on *port*; call ``held()`` if another socket holds it. Once bound, the
    launch is the host, unless *check*: then hold the listening socket aside (unused) and call
    ``bound()``: the machine first looks for a host of its identity on the other candidates."""

    __slots__ = ("check", "port")

    def __init__(self, port: int, check: bool = False) -> None:
        self.port = port
        self.check = check


class Connect:
    """Connect to *port*; then ``connected()``, ``failed(err)`` or ``timed_out()``."""

    __slots__ = ("port",)

    def __init__(self, port: int) -> None:
        self.port = port


class Test:
    """Bind *port* without listening and close it at once, to learn whether anything holds it:
    then ``held()`` or ``free()``. (A connection would do, but Windows takes about a second to
    report that nothing listens on a local port; a bind fails at once.)"""

    __slots__ = ("port",)

    def __init__(self, port: int) -> None:
        self.port = port


class Keep:
    """No host of this launch's identity answered on another candidate: become the host with
    the listening socket held aside (``Take(check=True)``)."""

    __slots__ = ()


class Yield:
    """A host of this launch's identity answered on another candidate: close the listening
    socket held aside, then go on as ``Verified`` on the connection to that host."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid


class Exchange:
    """Send *data*, then read what *expect* names (``BANNER``, ``FRAME`` or ``NOTHING``).
    *foreground*: a host's pid that may take the foreground first (before the launch).
    *endless*: the read has no deadline (a launch that waits for its reply); *within*: the read
    waits at most this long, when the deadline would leave it more."""

    __slots__ = ("data", "endless", "expect", "foreground", "within")

    def __init__(self, data: bytes, expect: Sentinel, foreground: "Optional[int]" = None,
                 endless: bool = False, within: "Optional[float]" = None) -> None:
        self.data = data
        self.expect = expect
        self.foreground = foreground
        self.endless = endless
        self.within = within  # seconds the read may take, if less than what the deadline leaves


class Verified:
    """The host on the port proved itself: call ``launch(pid, cwd)`` with this process's."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid


class Sleep:
    """Wait *seconds*, then call ``woke()``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Finish:
    """The hand-off is over: send *farewell* if any (a courtesy), then end with *outcome*."""

    __slots__ = ("farewell", "outcome")

    def __init__(self, outcome: Outcome, farewell: bytes = b"") -> None:
        self.outcome = outcome
        self.farewell = farewell


_KEEP = Keep()

# A port that is bound but refuses connections for this long has no host: a host listens within
# microseconds of binding, and a host that releases frees the port at once.
PORT_BUSY_AFTER = 0.2
# Connections in a row that the holder closes cleanly without a banner before it is called a
# program that does not speak this protocol (most likely 2.0.0, which reads and closes). One such
# close may be a host that died at that instant; two in a row are not.
SILENT_CLOSES = 2
LEGACY_LIMIT = 1024  # a 2.0.0 host reads one chunk of this many bytes and drops the rest
# How long a launch that walks an application's candidate ports waits for a banner before it
# passes a candidate over: a host answers within microseconds, a program that waits for its
# client to speak first never does.
GREETING_WAIT = 0.5
FIRST_DELAY = 0.002  # seconds between attempts, doubling up to MAX_DELAY
MAX_DELAY = 0.05

# Why an attempt did not end the hand-off; the machine decides whether to try again.
_REFUSED = Sentinel("REFUSED")  # nothing accepted the connection: bound, not listening, or gone
_SILENT = Sentinel("SILENT")  # closed cleanly before the banner: 2.0.0, or a host that just died
_RESET = Sentinel("RESET")  # reset before the banner: a host that died, or a program that resets
_GONE = Sentinel("GONE")  # closed after the banner, or answered "retry": a host going away
_LOST = Sentinel("LOST")  # as _GONE, after our launch left: the host may hold it (it knows the id)

# Phases of one connection.
(_CONNECTING, _GREETING, _HELLOING, _VERIFIED, _LAUNCHING, _AWAITING_REPLY, _PLAIN_CONNECTING,
 _PLAIN_SENDING) = map(Sentinel, (
     "CONNECTING", "GREETING", "HELLOING", "VERIFIED", "LAUNCHING", "AWAITING_REPLY",
     "PLAIN_CONNECTING", "PLAIN_SENDING"))
_NO_EXTRAS = _wire.Extras()


class Handoff:
    """A launch's hand-off; see the module's docstring for its events and actions.

    *probe*: only ask who holds the port (never take it, send nothing of the user's): ends
    with ``Reason.HOST`` and the host's pid for a verified host.

    *ports*: the candidates, in order (one for a port given by number). With more than one
    (an application id's derived ports), a candidate held by a program that is not a host of
    *identity* (another application or user, a host that fails the proof, a program that does
    not speak this protocol) is passed over for the next, having been sent nothing of the
    user's; a launch that binds a candidate first asks the others for a host of its identity
    (``Take(check=True)``, ``Test``, then ``Keep`` or ``Yield``). ``port`` is the candidate in
    use.
    """

    def __init__(self, args: "Tuple[str, ...]", secret: "Optional[str]", timeout: float,
                 now: float, launch_id: bytes = b"", send: bool = True, take: bool = True,
                 legacy: bool = False, probe: bool = False,
                 urandom: "Callable[[int], bytes]" = os.urandom,
                 extras: "_wire.Extras" = _NO_EXTRAS,
                 identity: "_wire.Identity" = _wire.NUMBERED,
                 ports: "Tuple[int, ...]" = (0,)) -> None:
        self._args = args
        self._ports = ports
        self._index = 0  # the candidate in use
        self.port = ports[0]
        self._walk = len(ports) > 1
        self._passed: Optional[Tuple[int, Outcome]] = None  # the first candidate passed over
        self._checking: Optional[List[int]] = None  # bound: the candidates still to ask
        self._extras = extras
        self._identity = identity
        self._v2 = False  # the host speaks protocol 2 (it refused our protocol-3 hello)
        self._reply: Optional[Tuple[int, str]] = None  # (status, text) once replied
        self._note = ""  # what the host could not take, said in the outcome
        self._waited = ""  # the acknowledgement after which the launch waits for its reply
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
        self._checked = False  # the arguments were found sendable
        self._sent = False  # a launch of ours reached a host that then went away unanswered
        self._last: Optional[Sentinel] = None  # why the previous attempt did not end it
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
        """TAKE or TEST failed: another socket holds the port."""
        if self._checking is not None:
            self._phase = _CONNECTING
            return Connect(self.port)
        if not self._send and not self._walk:
            return self._done(Outcome(Reason.NOT_SENT))
        # before any connection: nothing of a launch that fails leaves
        if self._send and not self._checked:
            self._checked = True
            why = _wire.unsendable(self._args)
            if why is not None:
                return self._done(Outcome(Reason.UNSENDABLE, why))
        if self._legacy and self._silent:
            message = _wire.encode_plain(self._args)
            if len(message) > LEGACY_LIMIT:
                return self._done(Outcome(
                    Reason.LEGACY, "the arguments take %d bytes, more than the %d an instance "
                    "running 2.0.0 reads; nothing was sent" % (len(message), LEGACY_LIMIT)))
            self._phase = _PLAIN_CONNECTING
            return Connect(self.port)
        self._phase = _CONNECTING
        return Connect(self.port)

    def bound(self) -> "Action":
        """A TAKE with ``check`` bound its port: ask the other candidates first."""
        bound = self.port
        # Those passed over a moment ago are skipped: a host of ours that took one since then
        # asks this one in turn, and finds it once it listens.
        self._checking = list(self._ports[self._index + 1:])
        self._checking.append(bound)  # last: where the walk resumes should nothing answer
        return self._next_check()

    def free(self) -> "Action":
        """TEST found the port free: no host there."""
        return self._next_check()

    def connected(self) -> "Action":
        if self._phase == _PLAIN_CONNECTING:
            self._phase = _PLAIN_SENDING
            return Exchange(_wire.encode_plain(self._args), NOTHING)
        self._phase = _GREETING
        self._client_nonce = self._urandom(_wire.NONCE_SIZE)
        if self._walk:  # a candidate that does not answer at once is passed over
            return Exchange(_wire.PREAMBLE, BANNER, within=GREETING_WAIT)
        return Exchange(_wire.PREAMBLE, BANNER)

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
        identity = None if self._v2 else self._identity
        return Exchange(_wire.encode_hello(self._client_nonce, identity), FRAME)

    def frame(self, kind: bytes, payload: bytes, now: float) -> "Action":
        if self._phase == _HELLOING:
            return self._welcomed(kind, payload, now)
        if kind == _wire.REPLY and not self._v2 and self._reply is None:
            try:
                self._reply = _wire.decode_reply(payload)
            except _wire.ProtocolError as err:
                return self._ended(Outcome(Reason.REJECTED, str(err), self._pid), now)
            if self._phase == _AWAITING_REPLY:
                return self._done(self._outcome(Reason.DELIVERED, ""))
            return Exchange(b"", FRAME)  # its acknowledgement follows
        if self._phase == _AWAITING_REPLY:
            if kind == _wire.BYE:  # the host released the port
                return self._done(self._no_reply(payload.decode("utf-8", "replace")))
            return self._done(self._no_reply("it answered out of turn"))
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
        if (self._extras.wait and self._reply is None
                and reason in (Reason.DELIVERED, Reason.QUEUED)):
            self._phase = _AWAITING_REPLY
            self._waited = reason
            return Exchange(b"", FRAME, endless=True)
        return self._ended(self._outcome(reason, detail), now)

    def launch(self, pid: int, cwd: str) -> "Action":
        """After a VERIFIED host: this process's pid and working directory."""
        if self._v2:
            message = _wire.encode_launch(self._client_proof, self._launch_id, pid, cwd,
                                          self._args)
        else:
            message = _wire.encode_launch3(self._client_proof, self._launch_id, pid, cwd,
                                           self._args, self._extras)
        size = _wire.launch_fields_size(len(message) - _wire.HEADER_SIZE,
                                        len(self._client_proof), not self._v2)
        if size > self._limit:
            why = "the arguments take %d bytes; the running instance accepts at most %d" \
                % (size, self._limit)
            return self._done(Outcome(Reason.REJECTED, why, self._pid), self._bye(why))
        # From here on the host may hold the launch: whatever breaks, asking again (with the
        # same id) is what tells; the host answers a launch it already took instead of taking
        # it twice.
        self._phase = _LAUNCHING
        return Exchange(message, FRAME, self._pid)

    def refused(self, now: float) -> "Action":
        """Nothing accepted the connection (refused, reset or aborted while connecting)."""
        return self._ended(_REFUSED, now)

    def closed(self, now: float) -> "Action":
        """The peer closed cleanly before answering in full."""
        if self._phase == _AWAITING_REPLY:
            return self._done(self._no_reply("it closed the connection"))
        if self._phase == _GREETING:
            return self._ended(_SILENT, now)
        if self._phase == _LAUNCHING:
            return self._ended(_LOST, now)
        return self._ended(_GONE, now)

    def failed(self, err: OSError, now: float) -> "Action":
        """An I/O call failed (not a timeout)."""
        phase = self._phase
        if phase == _AWAITING_REPLY:
            return self._done(self._no_reply(str(err)))
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
            if err.errno in _net.OUT_OF_RESOURCES:
                return self._ended(_local_error(err), now)
            return self._ended(Outcome(Reason.NO_ANSWER, "could not connect: %s" % err), now)
        if err.errno in _net.OUT_OF_RESOURCES:
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
            outcome = Outcome(Reason.NO_ANSWER, "the program on the port did not accept the "
                              "connection within %g s" % self._timeout)
        elif phase == _GREETING and self._walk and now < self.deadline:
            outcome = _foreign("it accepted the connection but did not answer within %g s"
                               % GREETING_WAIT)
        elif phase == _GREETING:
            outcome = Outcome(Reason.NO_ANSWER, "the program on the port accepted the "
                              "connection but did not answer within %g s (an instance that is "
                              "stopped or overloaded, or a program that does not speak this "
                              "protocol)" % self._timeout)
        elif phase == _HELLOING:
            outcome = Outcome(Reason.NO_ANSWER, "the program on the port answered as a host, "
                              "then did not answer within %g s" % self._timeout)
        else:
            outcome = Outcome(Reason.NO_ANSWER, "the running instance did not acknowledge "
                              "the launch within %g s; it may still deliver it"
                              % self._timeout, self._pid, unconfirmed=True)
        return self._ended(outcome, now)

    def woke(self, now: float) -> "Action":
        return self._round()

    # -- inside ----------------------------------------------------------------------------

    def _round(self) -> "Action":
        self._attempts += 1
        if self._take:
            return Take(self.port, self._walk)
        if self._probe:
            self._phase = _CONNECTING
            return Connect(self.port)
        return self.held()

    def _welcomed(self, kind: bytes, payload: bytes, now: float) -> "Action":
        if kind == _wire.ACK and payload[:1] == _wire.RETRY:
            return self._ended(_GONE, now)  # a host that is releasing answers with "retry"
        if (kind == _wire.ACK and not self._v2
                and payload == _wire.REJECTED + b"protocol error: expected a hello"):
            if self._identity.app_id:
                return self._done(Outcome(Reason.FOREIGN, "the host on the port speaks "
                                          "protocol 2 (socket-singleton 4.0.0), which has no "
                                          "application ids"))
            self._v2 = True  # a host of protocol 2 (4.0.0): ask again in its protocol
            return self._round()
        if kind != _wire.WELCOME:
            return self._ended(_foreign("it answered out of turn"), now)
        try:
            if self._v2:
                pid, limit, needs_secret, host_nonce, host_proof = _wire.decode_welcome(payload)
                identity = _wire.NUMBERED
            else:
                pid, limit, needs_secret, host_nonce, host_proof, identity = \
                    _wire.decode_welcome3(payload)
        except _wire.ProtocolError as err:
            return self._ended(_foreign(str(err)), now)
        if self._identity.app_id and identity != self._identity:
            return self._done(Outcome(Reason.FOREIGN, "the host on the port serves another "
                                      "application or user (%s)" % _describe(identity), pid),
                              self._bye("another application"))
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
        if not self._send and self._checking is None:  # client=False: it was our host
            return self._done(Outcome(Reason.NOT_SENT, "", pid))
        if self._v2 and self._extras.wait:
            why = ("the running instance speaks protocol 2 (socket-singleton 4.0.0), which "
                   "cannot reply; wait=True needs protocol 3")
            return self._done(Outcome(Reason.UNSUPPORTED, why, pid), self._bye(why))
        if self._v2 and self._extras.env is not None:
            self._note = ("; the environment was not forwarded: the running instance speaks "
                          "protocol 2 (socket-singleton 4.0.0)")
        self._pid = pid
        self._limit = limit
        self._host_nonce = host_nonce
        if secret is not None:
            self._client_proof = _wire.proof(secret, b"client", host_nonce, self._client_nonce)
        self._phase = _VERIFIED
        if self._checking is not None:  # our host answered on another candidate
            self._checking = None
            return Yield(pid)
        return Verified(pid)

    def _outcome(self, reason: str, detail: str) -> Outcome:
        outcome = Outcome(reason, detail + self._note if detail else self._note[2:], self._pid)
        if self._reply is not None:
            outcome.reply_status, outcome.reply_text = self._reply
        return outcome

    def _no_reply(self, why: str) -> Outcome:
        return Outcome(Reason.NO_REPLY, "the running instance %s the launch, then ended before "
                       "it replied (%s)" % ("delivered" if self._waited == Reason.DELIVERED
                                            else "queued", why), self._pid)

    def _bye(self, why: str) -> bytes:
        """Tell the host why we give up, so that a host with ``verbose=True`` can log it."""
        return _wire.frame(_wire.BYE, why.encode("utf-8"))

    def _done(self, outcome: Outcome, farewell: bytes = b"") -> "Action":
        if self._checking is not None:  # whatever the check found, it is not our host
            return self._next_check()
        if self._identity.app_id and (
                outcome.reason in (Reason.FOREIGN, Reason.LEGACY, Reason.PORT_BUSY)
                or (outcome.reason == Reason.NOT_RUNNING and not self._take)
                or (outcome.reason == Reason.SECRET_MISMATCH
                    and self._identity.scope == "user")):
            return self._pass(outcome, farewell)
        return Finish(outcome, farewell)

    def _pass(self, outcome: Outcome, farewell: bytes) -> "Action":
        """The candidate is not held by a host of our identity: on to the next one."""
        if not self._walk:  # a port given by number: say who holds it
            return Finish(outcome, farewell)
        if self._passed is None:
            self._passed = (self.port, outcome)
        self._index += 1
        if self._index == len(self._ports):
            count = len(self._ports)
            if self._sent:  # a host of ours took the launch, then went away unanswered
                return Finish(_unconfirmed("no host of %s answers on its candidate ports now"
                                           % _describe(self._identity), None))
            if not self._take:
                return Finish(Outcome(Reason.NOT_RUNNING, "no host of %s answers on any of "
                                      "its %d candidate ports" % (_describe(self._identity),
                                                                  count)))
            first, why = self._passed
            return Finish(Outcome(Reason.FOREIGN, "all %d candidate ports are held by other "
                                  "programs; the first, %d: %s" % (count, first, why.detail)))
        self.port = self._ports[self._index]
        self._v2 = False
        self._silent = self._attempts = 0
        self._refused_since = self._last = self._pid = None
        self._delay = FIRST_DELAY
        self._phase = _CONNECTING
        return self._round()

    def _next_check(self) -> "Action":
        assert self._checking is not None
        self.port = self._checking.pop(0)
        self._v2 = False
        self._phase = _CONNECTING
        if not self._checking:  # only the bound port was left: nobody else answered
            self._checking = None
            return _KEEP
        return Test(self.port)

    def _ended(self, result: "Union[Outcome, Sentinel]", now: float) -> "Action":
        """One connection's try ended with *result*: finish, or try again."""
        if self._checking is not None:  # a check is asked once: only a host answers it
            return self._next_check()
        if self._probe:
            return self._probe_ended(result)
        if isinstance(result, Outcome):
            if self._sent and result.reason in (Reason.NO_ANSWER, Reason.LOCAL_ERROR):
                return self._done(_unconfirmed(result.detail, self._pid))
            if (self._last == _RESET and result.reason == Reason.NO_ANSWER
                    and self._phase in (_CONNECTING, _GREETING)):
                # the deadline cut its resets short (a program that answered a banner, or
                # took our launch, is a host that was slow, not one that resets)
                return self._done(_foreign_resetter())
            return self._done(result)
        self._last = result
        if result == _REFUSED:
            if not self._take:
                if self._sent:  # the host went away after it may have taken the launch
                    return self._done(_unconfirmed("the running instance went away, and "
                                                   "nothing listens on the port now",
                                                   self._pid))
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
                return self._done(_unconfirmed("no host answered within %g s" % self._timeout,
                                               self._pid))
            if result == _RESET:
                return self._done(_foreign_resetter())
            return self._done(Outcome(Reason.NO_ANSWER, "the port stayed busy but no host took "
                                      "the launch within %g s" % self._timeout))
        pause = min(self._delay, self.deadline - now)
        self._delay = min(self._delay * 2, MAX_DELAY)
        return Sleep(pause)

    def _probe_ended(self, result: "Union[Outcome, Sentinel]") -> "Action":
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


def _describe(identity: "_wire.Identity") -> str:
    if not identity.app_id:
        return "a host without an application id"
    return "%s, %s scope" % (identity.app_id, identity.scope)


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


def _unconfirmed(why: str, pid: "Optional[int]") -> Outcome:
    return Outcome(Reason.NO_ANSWER, "the launch reached a host but its answer was lost, and "
                   "asking again failed (%s); it may have been delivered" % why, pid,
                   unconfirmed=True)


def _not_running() -> Outcome:
    return Outcome(Reason.NOT_RUNNING, "nothing listens on the port")


def _port_busy() -> Outcome:
    """Port-busy as the machine knows it; the driver adds what the platform shows (port_busy)."""
    return port_busy(0, None, None)


def port_busy(port: int, states: "Optional[List[str]]",
              ephemeral: "Optional[Tuple[int, int]]") -> Outcome:
    """Port-busy with what the launch found: *states*, the TCP states of the sockets whose local
    end is the port (``None`` where the platform does not show them), and the system's
    *ephemeral* port range, named only when the port lies in it."""
    found = "nothing listens on the port, yet it is in use"
    if states is None:
        found += (" (by another program's connection, or held by the system for a while after "
                  "one closed)")
    else:
        waiting = states.count("TIME-WAIT")
        live = [state for state in states if state not in ("TIME-WAIT", "LISTEN")]
        parts = []
        if waiting:
            parts.append("%s that ended on it %s in TIME-WAIT, which the system keeps for "
                         "about 60 s after a connection closes"
                         % (_count(waiting, "connection"), "is" if waiting == 1 else "are"))
        if live:
            parts.append("%s uses it as its local end (%s), until that connection closes"
                         % ("a connection" if len(live) == 1 else _count(len(live),
                                                                         "connection"),
                            ", ".join(live)))
        if not parts:
            parts.append("no connection on it is visible, so a socket is bound to it without "
                         "listening, until the program that holds it closes it")
        found += ": " + "; ".join(parts)
    if ephemeral is None:
        found += "; choose a port outside the system's ephemeral range"
    elif ephemeral[0] <= port <= ephemeral[1]:
        found += ("; the port lies in this system's ephemeral range (%d-%d), from which "
                  "outgoing connections take their local ports: choose one outside it"
                  % ephemeral)
    return Outcome(Reason.PORT_BUSY, found)


def _count(number: int, noun: str) -> str:
    return "%d %s%s" % (number, noun, "" if number == 1 else "s")
