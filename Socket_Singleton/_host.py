"""The host: the one owner of its listener, dispatcher and timeout, which it starts and stops in
one place, in one order; and the one place where a launch is decided. ``Socket_Singleton``
supplies only the policy.

The path of one launch, one way: the listener (``_listener``) reads its bytes and feeds them to
the connection's machine (``_connection``), which checks them and hands back a whole ``Launch``;
the listener passes it to ``Host.admit`` (on the I/O thread), which counts it, applies the
policy and queues it with the dispatcher (``_dispatch``); ``admit`` returns the answer, or says
that the answer waits for the observers. The dispatch thread calls the observers, then
``Listener.settle(launch, DELIVERED)``; the listener's next turn sends the acknowledgement."""

from __future__ import annotations

import socket
import sys
import threading
import time

from . import _log, _net, _tuning, _wire
from ._dispatch import Dispatcher
from ._launch import Launch
from ._listener import Decision, Listener
from ._outcome import Reason

# Loaded with the host, not with its first launch: the policy may first run out of descriptors.
from ._policy import admit as _admit  # noqa: F401

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import Callable, Optional, Tuple

    from ._policy import Admission

    # The policy for one launch: (launches counted so far, its arguments) -> Admission. Pure.
    Policy = Callable[[int, Tuple[str, ...]], Admission]

_gcc_s: object = None


def prepare_for_exhaustion(verbose: bool, secret: bool) -> None:
    """Load now what the host would otherwise load when it runs, possibly out of file
    descriptors: logging, when a record could be shown (see ``_log.prepare``); SHA-256 for a
    host with a *secret* (an extension module on POSIX builds); and (CPython 3.7 and 3.8 on
    glibc) libgcc_s, which those versions' threads need when they end; glibc aborts the process
    if it cannot load it then."""
    global _gcc_s
    _log.prepare(verbose)
    if secret:
        _wire.sha256(b"")
    if _gcc_s is None and sys.version_info < (3, 9) and sys.platform.startswith("linux"):
        try:
            import ctypes

            _gcc_s = ctypes.CDLL("libgcc_s.so.1")
        except (ImportError, OSError):  # not glibc, or no ctypes: nothing we can load early
            _gcc_s = False


class Timeout(threading.Thread):
    """The ``timeout`` countdown: calls *action* after *seconds* unless cancelled first.

    Unlike ``threading.Timer``, ``cancel()`` takes no lock (it releases one), so it can run in
    a signal handler that interrupted another cancel() on the same thread.
    """

    def __init__(self, seconds: float, action: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=False)
        self._seconds = seconds
        self._action = action
        self._gate = threading.Lock()
        self._gate.acquire()

    def run(self) -> None:
        if not self._gate.acquire(timeout=self._seconds):
            self._action()

    def cancel(self) -> None:
        try:
            self._gate.release()
        except RuntimeError:  # cancelled already
            pass


class Host:
    """Serves the listening socket *sock* from ``start()`` until ``stop()``: the one owner of
    the host's threads (named ``Socket_Singleton-<port>-listener``, ``-dispatch`` and
    ``-timeout``).

    Made in two steps, so that its owner holds it before any of its threads runs: the
    constructor makes the parts, ``start()`` starts the threads. Whatever ends the host (the
    timeout, the launch that reaches ``release_threshold``, a library thread that failed) calls
    *release*, the owner's ``release()``, which calls ``stop()``: an application that overrides
    ``release()`` sees every end, as with 2.0.0. Should either step fail, everything is stopped,
    *sock* is closed and the error raised.
    """

    def __init__(self, sock: socket.socket, verbose: bool, secret: Optional[str],
                 timeout: float, policy: Policy, release: Callable[[], None],
                 identity: _wire.Identity = _wire.NUMBERED) -> None:
        self._sock = sock
        self._verbose = verbose
        self._policy = policy
        self._release = release
        self._stopped = False
        self._listener: Optional[Listener] = None
        self._timer: Optional[Timeout] = None
        self.clients = 0  # launches counted by the policy
        self.tuning = _tuning.current  # this host's limits and waits, for its whole life
        try:
            self.port: int = sock.getsockname()[1]  # the real port when port 0 was asked for
            name = "Socket_Singleton-%d" % self.port
            prepare_for_exhaustion(verbose, secret is not None)
            self.dispatcher = Dispatcher(name + "-dispatch", verbose, self.tuning,
                                         on_final=release, on_failure=release)
            self._listener = Listener(sock, name + "-listener", verbose, secret, self.tuning,
                                      self.admit, on_failure=release, identity=identity)
            if timeout > 0:
                # Not a daemon: like 2.0.0, the process keeps the port until the timeout
                # fires even when the main thread ends first. A Timeout that is cancelled
                # before start() ends at once.
                self._timer = Timeout(timeout, release, name + "-timeout")
        except BaseException:
            _net.close_quietly(sock)
            raise
        self._started = time.monotonic()

    def start(self) -> None:
        """Start the threads; when it returns, the port is listening (unless a launch that
        arrived meanwhile already ended the host)."""
        try:
            self._started = time.monotonic()
            self.dispatcher.start()
            if not self._stopped:  # a dispatch thread that failed at once stopped the host
                assert self._listener is not None
                self._listener.start()
            if self._timer is not None:
                _net.start(self._timer)
        except BaseException:
            try:
                self.stop()
            finally:
                _net.close_quietly(self._sock)
            raise

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.listening

    def stop(self) -> None:
        """Stop everything, in this order: the timeout; delivery (no observer call starts from
        now on; a launch whose client still waits and that no observer has seen is taken back
        and its client told to try again); the listener (the port is free, open hand-offs are
        answered); the dispatcher (observers are forgotten, one that runs gets ``stop_wait``
        to return).

        Synchronous and idempotent, from any thread, and re-entrant: when it returns, the port
        is free (except on the listener's own thread: the port is closed, the thread ends right
        after). No step waits on a lock that an interrupted caller on this thread could hold,
        so a stop() cut short (KeyboardInterrupt) is finished by the next, and one in a signal
        handler that interrupted a stop() waits for the same end.
        """
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        listener = self._listener
        taken = self.dispatcher.take_back()
        if listener is not None:
            for launch in taken:
                listener.settle(launch, Reason.RETRY)
            listener.request_stop()
            if threading.current_thread() is not listener.thread:
                listener.wait_closed()
        self.dispatcher.stop()

    def admit(self, launch: Launch) -> Decision:
        """A complete launch, on the listener's thread: count it, queue it, decide its answer
        (or that it waits for the observers)."""
        assert self._listener is not None
        admission = self._policy(self.clients, launch)
        self.clients = admission.clients
        reason, detail = admission.reason, admission.detail
        queued = soon = wait = False
        if admission.keep:
            observed = self.dispatcher.observer_count() > 0
            # Without an observer, a new host still waits briefly for the first trace().
            soon = observed or time.monotonic() - self._started < self.tuning.trace_grace
            wait = soon and launch._framed
            queued = self.dispatcher.submit(launch, admission.final,
                                            self._listener.delivered if wait else None)
            if not queued:
                wait = False
                reason, detail = self._refusal(observed)
        if admission.final:
            # release_threshold: deliver this launch, then release (the dispatcher does, once
            # the observers ran for it); should they be slow or absent, the port goes after
            # delivery_wait all the same. Nothing to deliver soon: release now.
            if queued and soon:
                self._listener.drain()
            else:
                self._release()
        return Decision(reason, detail, wait)

    def _refusal(self, observed: bool) -> Tuple[str, str]:
        """Why the dispatcher did not queue a launch."""
        if self._stopped:
            return Reason.RETRY, "the host is releasing the port"
        waiting = len(self.dispatcher.pending())
        if not observed:
            # 2.0.0's scripts that never trace(): the launch is done with, as it was there
            _log.warning(self._verbose, "no observer is registered and %d launches wait for "
                         "one; launch ignored", waiting)
            return Reason.IGNORED, "no observer is registered and the queue that keeps " \
                "launches for one is full (%d launches)" % waiting
        _log.warning(self._verbose, "queue full (%d launches); launch refused", waiting)
        return Reason.REJECTED, "the running instance's queue is full"
