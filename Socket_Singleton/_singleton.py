"""The public class: claims the port or hands the launch over, and supplies the host's policy."""

import _thread
import math
import sys

from . import _client, _net, _outcome, _wire
from ._outcome import MultipleSingletonsError, Reason

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds, and a launch that is turned away never needs it
    from typing import Any, Callable, Dict, Iterable, Iterator, NoReturn, Optional, Tuple, Union

    from ._dispatch import Dispatcher
    from ._host import Host
    from ._launch import Launch
    from ._policy import Admission


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
DEFAULT_PORT = 1337  # 2.0.0's; with an app_id, this value means "derive the port"


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


def _check_forward_env(value: "Union[bool, Iterable[str]]") -> "Union[bool, Tuple[str, ...]]":
    if isinstance(value, bool):
        return value
    try:
        if isinstance(value, str):
            raise TypeError
        names = tuple(value)
    except TypeError:
        raise TypeError("forward_env must be True, False or a list of variable names, not %s"
                        % type(value).__name__) from None
    for name in names:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError("forward_env: %r is not an environment variable's name" % (name,))
    return names


def _environment(forward: "Union[bool, Tuple[str, ...]]") -> "Optional[Dict[str, str]]":
    """What ``forward_env`` sends: all of this process's environment, the named variables it
    has, or nothing (``None``). Windows' hidden ``=C:`` entries are not variables."""
    if forward is False:
        return None
    import os

    if forward is True:
        return {k: v for k, v in os.environ.items() if k and not k.startswith("=")}
    return {name: os.environ[name] for name in forward if name in os.environ}


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
        port: int = DEFAULT_PORT,
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
        wait: bool = False,
        forward_env: "Union[bool, Iterable[str]]" = False,
        app_id: "Optional[str]" = None,
        scope: "Optional[str]" = None,
    ) -> None:
        if not isinstance(address, str):
            raise TypeError("address must be a str, not %s" % type(address).__name__)
        if secret is not None:
            if not isinstance(secret, str):
                raise TypeError("secret must be a str or None, not %s" % type(secret).__name__)
            try:
                _wire.secret_bytes(secret)
            except UnicodeEncodeError as err:
                raise ValueError("secret must be encodable as UTF-8: U+%04X at index %d is a "
                                 "lone surrogate (only surrogate escapes of bytes, "
                                 "U+DC80-U+DCFF, are allowed)"
                                 % (ord(secret[err.start]), err.start)) from None
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
        self.wait = bool(wait)
        self.forward_env = _check_forward_env(forward_env)
        if self.legacy_handoff and secret is not None:
            raise ValueError("legacy_handoff cannot be combined with a secret: the 2.0.0 form "
                             "would send the secret in the clear to a program that never "
                             "proved it knows it")

        self.app_id = app_id
        self.scope = scope
        if app_id is None:
            if scope is not None:
                raise ValueError("scope is only used with app_id")
        else:
            from . import _identity  # only a launch with an app id loads it

            self.app_id = _identity.validate_app_id(app_id)
            if scope is None:
                self.scope = scope = "user"  # desktop applications are per user (README)
            if not isinstance(scope, str):
                raise TypeError("scope must be a str or None, not %s" % type(scope).__name__)
            if scope not in _identity.SCOPES:
                raise ValueError("scope must be 'machine' or 'user', not %r" % (scope,))
            if self.legacy_handoff:
                raise ValueError("legacy_handoff cannot be combined with app_id: an instance "
                                 "running 2.0.0 has no application id to check")

        self._host: Optional[Host] = None

        if _spawned_child():
            return  # inert: not the host, nothing sent (multiprocessing's spawn, forkserver)
        identity = _wire.NUMBERED
        ports: Tuple[int, ...] = ()
        effective = secret
        if self.app_id is not None:
            identity, ports, effective = self._identity(self.app_id, self.scope or "user")
        extras = _wire.Extras(self.wait, _client.activation_token(),
                              _environment(self.forward_env))
        try:
            claimed = _client.claim(address, self.port, self.client, tuple(sys.argv[1:]),
                                    effective, self.handoff_timeout, legacy=self.legacy_handoff,
                                    extras=extras, identity=identity, ports=ports)
        except KeyboardInterrupt:
            if self.strict and self.wait:  # Ctrl+C while waiting: the shell's convention
                raise SystemExit(130) from None
            raise
        if isinstance(claimed, _outcome.Outcome):
            if claimed.port is not None:
                self.port = claimed.port
            self._turned_away(claimed)
        from . import _host  # only a host loads it: a launch turned away never does

        self._host = _host.Host(claimed, self.verbose, effective, self.timeout, self._policy,
                                   self.release, identity)
        self.port = self._host.port
        self._host.start()

    def _identity(self, app_id: str,
                  scope: str) -> "Tuple[_wire.Identity, Tuple[int, ...], Optional[str]]":
        """The identity a host of *app_id* announces, the candidate ports (none when ``port``
        pins one) and the secret in effect (``_identity.resolve``)."""
        from . import _identity

        ports: Tuple[int, ...] = ()
        if self.port == DEFAULT_PORT:
            ports = tuple(_identity.candidates(app_id, scope))
        identity, secret = _identity.resolve(app_id, scope, self.secret)
        return identity, ports, secret

    def _turned_away(self, outcome: "_outcome.Outcome") -> "NoReturn":
        where = _net.where(self.address, self.port)
        if outcome.reason not in (Reason.DELIVERED, Reason.QUEUED, Reason.NOT_SENT):
            from . import _log  # a quiet launch never loads it

            _log.warning(self.verbose, "launch to %s ended %s: %s", where, outcome.reason,
                         outcome.detail or outcome.reason)
        if self.strict:
            if outcome.reply_status is not None:  # the running instance answered
                sys.stdout.write(outcome.reply_text or "")
                sys.stdout.flush()
                raise SystemExit(outcome.reply_status)
            if outcome.reason in _outcome.SUCCESS:
                raise SystemExit
            raise SystemExit(_outcome.exit_line(outcome, where))
        raise MultipleSingletonsError(self.address, self.port, outcome.reason,
                                      outcome.detail, outcome.host_pid, outcome.unconfirmed,
                                      outcome.reply_text, outcome.reply_status)

    def _policy(self, clients: int, args: "Tuple[str, ...]") -> "Admission":
        """The host's policy for one launch (run on the listener's thread): 2.0.0's parameters,
        applied by a pure function."""
        from ._policy import admit  # loaded with the host: no file is opened here

        return admit(clients, args, self.max_clients, self.release_threshold,
                     self.deliver_empty)

    # -- public API -------------------------------------------------------------------------

    @staticmethod
    def port_for(app_id: str, scope: str = "machine") -> int:
        """The port that application *app_id* uses in *scope* (``"machine"`` or ``"user"``,
        this process's user): 10000-29999, the same on every machine and platform.

        :raises TypeError, ValueError: an invalid *app_id* or *scope*.
        """
        from ._identity import port_for  # only a caller of port_for loads it

        return port_for(app_id, scope)

    def trace(self, observer: "Callable[..., Any]", *args: "Any", **kwargs: "Any") -> None:
        """Call ``observer(launch_args, *args, **kwargs)`` for every launch from now on.

        The first observer also receives the launches that arrived before it, in order.
        Observers run on the host's dispatch thread, one launch at a time.
        """
        if not callable(observer):
            raise TypeError("observer must be callable, not %s" % type(observer).__name__)
        if self._host is not None:
            self._host.dispatcher.trace(observer, args, kwargs)

    def untrace(self, observer: "Callable[..., Any]") -> None:
        """Stop calling *observer*; does nothing if it is not registered."""
        if self._host is not None:
            self._host.dispatcher.untrace(observer)

    def release(self) -> None:
        """Free the port, stop delivery, cancel the timeout and forget the observers.

        Synchronous and idempotent; safe from any thread, from the timeout, from inside an
        observer and from a signal handler. When it returns, the port can be bound again,
        except in a signal handler that interrupted a release() on the same thread: that
        one returns at once and the interrupted release() finishes the job. Should a
        release() be interrupted (an exception, KeyboardInterrupt), the next call finishes.
        """
        if self._host is not None:
            self._host.stop()

    # -- 2.0.0's private names, kept for code and tests written against 2.0.0 (deprecated) ----

    @property
    def _listening(self) -> bool:
        return self.listening

    @property
    def _arguments(self) -> "list[Launch]":
        return list(self.arguments)

    @property
    def _observers(self) -> "_Observers":
        return _Observers(self._host.dispatcher if self._host is not None else None)

    def _append_args(self, args: "Tuple[str, ...]") -> None:
        """Handle *args* as if a launch had brought them (not counted in ``clients``); when
        observers are registered, they have been called when this returns, as in 2.0.0."""
        if self._host is None:
            return
        import threading  # loaded already: the host's threads use it

        from ._launch import Launch

        dispatcher = self._host.dispatcher
        delivered = threading.Event()
        queued = dispatcher.submit(Launch(tuple(args)), False, lambda launch: delivered.set())
        if (queued and dispatcher.observer_count()
                and threading.current_thread() is not dispatcher.thread):
            delivered.wait(self._host.tuning.compat_wait)

    @property
    def arguments(self) -> "Tuple[Launch, ...]":
        """Launches received but not yet delivered to an observer, oldest first."""
        return self._host.dispatcher.pending() if self._host is not None else ()

    @property
    def clients(self) -> int:
        """How many launches this host has received."""
        return self._host.clients if self._host is not None else 0

    @property
    def listening(self) -> bool:
        """Whether this instance holds the port."""
        return self._host is not None and self._host.listening

    def __enter__(self) -> "Socket_Singleton":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __str__(self) -> str:
        return "Socket_Singleton(address=%r, port=%d)" % (self.address, self.port)

    def __repr__(self) -> str:
        observers = self._host.dispatcher.observer_count() if self._host is not None else 0
        identity = ""
        if self.app_id is not None:
            identity = "app_id=%r, scope=%r, " % (self.app_id, self.scope)
        return (
            "Socket_Singleton(address=%r, port=%d, %stimeout=%r, client=%r, strict=%r, "
            "release_threshold=%d, max_clients=%d, verbose=%r, secret=%s, deliver_empty=%r, "
            "handoff_timeout=%r, legacy_handoff=%r, observers=%d, clients=%d, listening=%r)"
            % (self.address, self.port, identity, self.timeout, self.client, self.strict,
               self.release_threshold, self.max_clients, self.verbose,
               "***" if self.secret is not None else None, self.deliver_empty,
               self.handoff_timeout, self.legacy_handoff, observers, self.clients,
               self.listening)
        )


class _Observers:
    """2.0.0's ``_observers`` dict, as far as code written against 2.0.0 used it."""

    def __init__(self, dispatcher: "Optional[Dispatcher]") -> None:
        self._dispatcher = dispatcher

    def _registered(self) -> "Tuple[Callable[..., Any], ...]":
        return self._dispatcher.observers() if self._dispatcher is not None else ()

    def __len__(self) -> int:
        return len(self._registered())

    def __iter__(self) -> "Iterator[Callable[..., Any]]":
        return iter(self._registered())

    def __contains__(self, observer: object) -> bool:
        return observer in self._registered()

    def clear(self) -> None:
        if self._dispatcher is not None:
            for observer in self._dispatcher.observers():
                self._dispatcher.untrace(observer)

