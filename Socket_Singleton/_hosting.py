"""The host's life: one owner for its listener, dispatcher and timeout, which it starts and
stops in one place, in one order. ``Socket_Singleton`` supplies only the policy."""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Callable, Optional, Tuple

from . import _log, _net, _tuning
from ._dispatch import DONE, Dispatcher, Pending
from ._errors import Reason
from ._host import Decision, Listener
from ._policy import Admission

# The policy for one launch: (launches counted so far, its arguments) -> Admission. Pure.
Policy = Callable[[int, Tuple[str, ...]], Admission]

_gcc_s: object = None


def prepare_for_exhaustion() -> None:
    """Load now what the host's failure paths would otherwise load when they run, possibly out
    of file descriptors: logging, and (CPython 3.7 and 3.8 on glibc) libgcc_s, which those
    versions' threads need when they end; glibc aborts the process if it cannot load it then."""
    global _gcc_s
    _log.prepare()
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
                 timeout: float, policy: Policy, release: Callable[[], None]) -> None:
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
            prepare_for_exhaustion()
            self.dispatcher = Dispatcher(name + "-dispatch", verbose, self.tuning,
                                         on_final=release, on_failure=release)
            self._listener = Listener(sock, name + "-listener", verbose, secret, self.tuning,
                                      self._on_launch, self._fate, on_failure=release)
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
        """Stop everything, in this order: the timeout; the listener (the port is free, open
        hand-offs are answered); the dispatcher (observers are forgotten, one that runs gets
        ``stop_wait`` to return).

        Synchronous and idempotent, from any thread: when it returns, the port is free, except
        on the listener's own thread (the port is closed, the thread ends right after) and in
        a signal handler that interrupted a stop() on this thread, which returns at once and
        leaves the interrupted stop() to finish. Every step takes no lock that an interrupted
        caller could hold, so a stop() cut short (KeyboardInterrupt) is finished by the next.
        """
        self._stopped = True
        nested = self._stopping_on_this_thread()
        if self._timer is not None:
            self._timer.cancel()
        listener = self._listener
        if listener is not None:
            listener.request_stop()
            if not nested and threading.current_thread() is not listener.thread:
                listener.wait_closed()
        if nested:
            self.dispatcher.request_stop()
        else:
            self.dispatcher.stop()

    def _stopping_on_this_thread(self) -> bool:
        # A signal handler that interrupted stop() must not wait for what that stop() waits
        # for. The stack tells, where a flag set and cleared by stop() could be left stale by
        # an exception between the two.
        frame = sys._getframe(1).f_back  # the caller of the stop() that asks
        while frame is not None:
            if frame.f_code is _STOP_CODE and frame.f_locals.get("self") is self:
                return True
            frame = frame.f_back
        return False

    def _on_launch(self, args: Tuple[str, ...], cwd: Optional[str], pid: Optional[int],
                   framed: bool) -> Decision:
        """A complete launch, on the listener's thread: count it, queue it, decide its answer."""
        assert self._listener is not None
        admission = self._policy(self.clients, args)
        self.clients = admission.clients
        reason, detail, item = admission.reason, admission.detail, None
        wait = None  # the queued launch whose delivery the answer waits for
        if admission.keep:
            item = self.dispatcher.submit(args, cwd or None, pid, admission.final,
                                          self._listener.complete if framed else None)
            observed = self.dispatcher.observer_count() > 0
            if item is None and not observed:
                # 2.0.0's scripts that never trace(): the launch is done with, as it was there
                waiting = len(self.dispatcher.pending())
                reason, detail = Reason.IGNORED, "no observer is registered and the queue that " \
                    "keeps launches for one is full (%d launches)" % waiting
                _log.warning(self._verbose, "no observer is registered and %d launches wait for "
                             "one; launch ignored", waiting)
            elif item is None:
                reason, detail = Reason.REJECTED, "the running instance's queue is full"
                _log.warning(self._verbose, "queue full (%d launches); launch refused",
                             len(self.dispatcher.pending()))
            elif item.state == DONE:
                reason, detail = Reason.DELIVERED, ""  # the observers were quick
            elif observed or time.monotonic() - self._started < self.tuning.trace_grace:
                wait = item
            else:
                item = None  # no observer to wait for: answer "queued" at once
        if admission.final:
            # release_threshold: deliver this launch, then release (the dispatcher does, once
            # the observers ran for it); should they be slow or absent, the port goes after
            # delivery_wait all the same. Nothing queued to deliver: release now.
            if item is None:
                self._release()
            else:
                self._listener.drain()
        return reason, detail, wait if framed else None

    def _fate(self, item: Pending) -> str:
        """What a launch whose answer waits is told when the host stops: to try again when no
        observer has seen it (it is taken back from the queue), else where it stands."""
        if self.dispatcher.withdraw(item):
            return Reason.RETRY
        return Reason.DELIVERED if item.state == DONE else Reason.QUEUED


_STOP_CODE = Host.stop.__code__
