"""The public class: decides host or client, and ties listener, dispatcher and timer together."""

import _thread
import math
import socket
import sys
import time

from . import _client, _errors, _net, _wire
from ._errors import MultipleSingletonsError, Reason

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds, and a launch that is turned away never needs it
    from typing import Any, Callable, Iterator, NoReturn, Optional, Tuple

    from ._dispatch import Dispatcher, Launch, Pending
    from ._host import Decision, Listener, Timeout

COMPAT_WAIT = 30.0  # seconds _append_args() waits for the observers (2.0.0 called them inline)
# Seconds a new host gives the application to register its first observer: until then a launch
# waits for it (and is delivered), after that it is answered "queued" at once (a script that
# never calls trace(), as most 2.0.0 scripts, must not make every launch wait).
TRACE_GRACE = 0.5


def _check_int(name: str, value: object, low: int, high: "Optional[int]" = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, not %s" % (name, type(value).__name__))
    if high is not None and not low <= value <= high:
        raise ValueError("%s must be between %d and %d (inclusive)" % (name, low, high))
    if value < low:
        raise ValueError("%s must be greater than or equal to %d" % (name, low))
    return value


# The longest wait a thread can make (threading.TIMEOUT_MAX: about 292 years on POSIX,
# 49.7 days on Windows), in whole seconds; read from _thread, as a launch that is turned away
# never loads threading.
MAX_SECONDS = int(_thread.TIMEOUT_MAX)


def _check_seconds(name: str, value: object, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds, not %s" % (name, type(value).__name__))
    if math.isnan(value) or math.isinf(value):
        raise ValueError("%s must be a finite number of seconds" % name)
    if allow_zero and value < 0:
        raise ValueError("%s must be greater than or equal to 0" % name)
    if not allow_zero and value <= 0:
        raise ValueError("%s must be greater than 0" % name)
    if value > MAX_SECONDS:
        raise ValueError(("%s must be between 0 and %d seconds" if allow_zero else
                          "%s must be greater than 0 and at most %d seconds")
                         % (name, MAX_SECONDS))
    return value


def _spawned_child() -> bool:
    """Whether multiprocessing is re-running the main module in a child it started (spawn,
    forkserver), where the module's top level must not act as a launch."""
    process = sys.modules.get("multiprocessing.process")  # never imported here: it costs
    return process is not None and bool(
        getattr(process.current_process(), "_inheriting", False))


class Socket_Singleton:
    """Make this process the single instance, or hand its arguments to the one running.

    The first instance binds ``(address, port)`` and becomes the *host*: when the
    constructor returns, the port is listening. Any later instance finds the port taken,
    hands ``sys.argv[1:]`` to the host (unless ``client=False``) and raises ``SystemExit``
    (``strict=True``) or :class:`MultipleSingletonsError` (``strict=False``).

    Observers registered with :meth:`trace` are called on the host's dispatch thread, never
    on the caller's thread.
    """

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 1337,
        timeout: float = 0,
        client: bool = True,
        strict: bool = True,
        release_threshold: int = 0,
        max_clients: int = 0,
        verbose: bool = False,
        secret: "Optional[str]" = None,
        *,
        deliver_empty: bool = False,
        handoff_timeout: float = 2.0,
        legacy_handoff: bool = False,
    ) -> None:
        if not isinstance(address, str):
            raise TypeError("address must be a str, not %s" % type(address).__name__)
        if secret is not None:
            if not isinstance(secret, str):
                raise TypeError("secret must be a str or None, not %s" % type(secret).__name__)
            try:
                _wire.secret_bytes(secret)
            except UnicodeError:
                raise ValueError("secret must be encodable as UTF-8 (or as an OS string)") \
                    from None
        self.address = address
        self.port = _check_int("port", port, 0, 65535)
        self.timeout = _check_seconds("timeout", timeout, allow_zero=True)
        self.client = bool(client)
        self.strict = bool(strict)
        self.release_threshold = _check_int("release_threshold", release_threshold, 0)
        self.max_clients = _check_int("max_clients", max_clients, 0)
        self.verbose = bool(verbose)
        self.secret = secret
        self.deliver_empty = bool(deliver_empty)
        self.handoff_timeout = _check_seconds("handoff_timeout", handoff_timeout, False)
        self.legacy_handoff = bool(legacy_handoff)
        if self.legacy_handoff and secret is not None:
            raise ValueError("legacy_handoff cannot be combined with a secret: the 2.0.0 form "
                             "would send the secret in the clear to a program that never "
                             "proved it knows it")

        self._clients = 0
        self._released = False
        self._listener: Optional[Listener] = None
        self._dispatcher: Optional[Dispatcher] = None
        self._timer: Optional[Timeout] = None

        if _spawned_child():
            self._released = True
            return  # inert: not the host, nothing sent (multiprocessing's spawn, forkserver)
        claimed = _client.claim(address, self.port, self.client, tuple(sys.argv[1:]), secret,
                                self.handoff_timeout, legacy=self.legacy_handoff)
        if isinstance(claimed, _client.Outcome):
            self._released = True
            self._turned_away(claimed)
        self._serve(claimed)

    def _serve(self, sock: socket.socket) -> None:
        try:
            # Only a host needs these; a launch that is turned away never loads them.
            from . import _host, _policy  # noqa: F401 - _on_launch uses _policy, no import then
            from ._dispatch import Dispatcher

            _host.prepare_for_exhaustion()
            self.port = sock.getsockname()[1]  # the real port when port=0 was asked for
            self._started = time.monotonic()
            name = "Socket_Singleton-%d" % self.port
            self._dispatcher = Dispatcher(name + "-dispatch", self.verbose, self.release,
                                          self._library_thread_failed)
            self._listener = _host.Listener(sock, name + "-listener", self.verbose, self.secret,
                                            self._on_launch, self._dispatcher.withdraw,
                                            self._library_thread_failed)
            if self.timeout > 0:
                # Not a daemon: like 2.0.0, the process keeps the port until the timeout
                # fires even when the main thread ends first. Made before the listener
                # starts, so that a release by an early launch (release_threshold) cancels
                # it; a Timeout that is cancelled before start() ends at once.
                self._timer = _host.Timeout(self.timeout, self.release, name + "-timeout")
            self._listener.start()
            if self._timer is not None:
                _net.start(self._timer)
        except BaseException:
            # Atomic: the application never gets this object, so nothing it started may go on.
            self._released = True
            try:
                self.release()
            finally:
                _net.close_quietly(sock)
            raise

    def _library_thread_failed(self) -> None:
        # A listener or dispatch thread failed (a bug): release everything, so that the port
        # is never held without a listener and no launch is queued without a dispatcher.
        self.release()

    def _turned_away(self, outcome: "_client.Outcome") -> "NoReturn":
        where = _net.where(self.address, self.port)
        if outcome.reason not in (_errors.DELIVERED, _errors.QUEUED, _errors.NOT_SENT):
            from . import _log  # a quiet launch never loads it

            _log.warning(self.verbose, "launch to %s ended %s: %s", where, outcome.reason,
                         outcome.detail or outcome.reason)
        if self.strict:
            if outcome.reason in _errors.SUCCESS:
                raise SystemExit
            raise SystemExit(_errors.exit_line(outcome.reason, outcome.detail, where))
        raise MultipleSingletonsError(self.address, self.port, outcome.reason,
                                      outcome.detail, outcome.host_pid)

    # -- the host's policy, run on the listener's thread -------------------------------------

    def _on_launch(self, args: "Tuple[str, ...]", cwd: "Optional[str]", pid: "Optional[int]",
                   on_done: "Optional[Callable[[Pending], None]]") -> "Decision":
        assert self._dispatcher is not None
        from ._policy import admit  # loaded by _serve: no file is opened here

        admission = admit(self._clients, args, self.max_clients, self.release_threshold,
                          self.deliver_empty)
        self._clients, final = admission.clients, admission.final
        reason, detail, item = admission.reason, admission.detail, None
        if admission.keep:
            item = self._dispatcher.submit(args, cwd or None, pid, final, on_done)
            observed = self._dispatcher.observer_count() > 0
            if item is None and not observed:
                # 2.0.0's scripts that never trace(): the launch is done with, as it was there
                waiting = len(self._dispatcher.pending())
                reason, detail = Reason.IGNORED, "no observer is registered and the queue that " \
                    "keeps launches for one is full (%d launches)" % waiting
                from . import _log

                _log.warning(self.verbose, "no observer is registered and %d launches wait for "
                             "one; launch ignored", waiting)
            elif item is None:
                reason, detail = Reason.REJECTED, "the running instance's queue is full"
                from . import _log

                _log.warning(self.verbose, "queue full (%d launches); launch refused",
                             len(self._dispatcher.pending()))
            elif not observed and time.monotonic() - self._started >= TRACE_GRACE:
                item = None  # no observer to wait for: answer "queued" at once
        if final and item is None:
            self.release()  # nothing left to deliver first
        return reason, detail, item, final

    # -- public API -------------------------------------------------------------------------

    def trace(self, observer: "Callable[..., Any]", *args: "Any", **kwargs: "Any") -> None:
        """Call ``observer(launch_args, *args, **kwargs)`` for every launch from now on.

        The first observer also receives the launches that arrived before it, in order.
        Observers run on the host's dispatch thread, one launch at a time.
        """
        if not callable(observer):
            raise TypeError("observer must be callable, not %s" % type(observer).__name__)
        if self._dispatcher is not None:
            self._dispatcher.trace(observer, args, kwargs)

    def untrace(self, observer: "Callable[..., Any]") -> None:
        """Stop calling *observer*; does nothing if it is not registered."""
        if self._dispatcher is not None:
            self._dispatcher.untrace(observer)

    def release(self) -> None:
        """Free the port, stop delivery, cancel the timeout and forget the observers.

        Synchronous and idempotent; safe from any thread, from the timeout, from inside an
        observer and from a signal handler. When it returns, the port can be bound again,
        except in a signal handler that interrupted a release() on the same thread: that
        one returns at once and the interrupted release() finishes the job. Should a
        release() be interrupted (an exception, KeyboardInterrupt), the next call finishes.
        """
        # Every step is idempotent and takes no lock that an interrupted caller on this
        # thread could hold, so a release() that was cut short is finished by the next one.
        self._released = True
        nested = self._releasing_on_this_thread()
        if self._timer is not None:
            self._timer.cancel()
        if self._listener is not None:
            if nested:
                self._listener.request_stop()
            else:
                self._listener.stop()
        if self._dispatcher is not None:
            if nested:
                self._dispatcher.request_stop()
            else:
                self._dispatcher.stop()

    def _releasing_on_this_thread(self) -> bool:
        # A signal handler that interrupted release() must not wait for what that release()
        # waits for. The stack tells, where a flag set and cleared by release() could be
        # left stale by an exception between the two.
        frame = sys._getframe(1).f_back  # the caller of the release() that asks
        while frame is not None:
            if frame.f_code is _RELEASE_CODE and frame.f_locals.get("self") is self:
                return True
            frame = frame.f_back
        return False

    # -- 2.0.0's private names, kept for code and tests written against 2.0.0 (deprecated) ----

    @property
    def _listening(self) -> bool:
        return self.listening

    @property
    def _arguments(self) -> "list[Launch]":
        return list(self.arguments)

    @property
    def _observers(self) -> "_Observers":
        return _Observers(self)

    def _append_args(self, args: "Tuple[str, ...]") -> None:
        """Handle *args* as if a launch had brought them (not counted in ``clients``); when
        observers are registered, they have been called when this returns, as in 2.0.0."""
        if self._dispatcher is None:
            return
        import threading  # loaded already: the host's threads use it

        delivered = threading.Event()
        item = self._dispatcher.submit(tuple(args), None, None, False,
                                       lambda item: delivered.set())
        if (item is not None and self._dispatcher.observer_count()
                and threading.current_thread() is not self._dispatcher.thread):
            delivered.wait(COMPAT_WAIT)

    @property
    def arguments(self) -> "Tuple[Launch, ...]":
        """Launches received but not yet delivered to an observer, oldest first."""
        return self._dispatcher.pending() if self._dispatcher is not None else ()

    @property
    def clients(self) -> int:
        """How many launches this host has received."""
        return self._clients

    @property
    def listening(self) -> bool:
        """Whether this instance holds the port."""
        return self._listener is not None and self._listener.listening

    def __enter__(self) -> "Socket_Singleton":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __str__(self) -> str:
        return "Socket_Singleton(address=%r, port=%d)" % (self.address, self.port)

    def __repr__(self) -> str:
        observers = self._dispatcher.observer_count() if self._dispatcher is not None else 0
        return (
            "Socket_Singleton(address=%r, port=%d, timeout=%r, client=%r, strict=%r, "
            "release_threshold=%d, max_clients=%d, verbose=%r, secret=%s, deliver_empty=%r, "
            "handoff_timeout=%r, legacy_handoff=%r, observers=%d, clients=%d, listening=%r)"
            % (self.address, self.port, self.timeout, self.client, self.strict,
               self.release_threshold, self.max_clients, self.verbose,
               "***" if self.secret is not None else None, self.deliver_empty,
               self.handoff_timeout, self.legacy_handoff, observers, self._clients,
               self.listening)
        )


class _Observers:
    """2.0.0's ``_observers`` dict, as far as code written against 2.0.0 used it."""

    def __init__(self, owner: Socket_Singleton) -> None:
        self._owner = owner

    def _registered(self) -> "Tuple[Callable[..., Any], ...]":
        dispatcher = self._owner._dispatcher
        return dispatcher.observers() if dispatcher is not None else ()

    def __len__(self) -> int:
        return len(self._registered())

    def __iter__(self) -> "Iterator[Callable[..., Any]]":
        return iter(self._registered())

    def __contains__(self, observer: object) -> bool:
        return observer in self._registered()

    def clear(self) -> None:
        for observer in self._registered():
            self._owner.untrace(observer)


_RELEASE_CODE = Socket_Singleton.release.__code__
