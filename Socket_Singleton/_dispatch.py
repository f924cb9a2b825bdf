"""Observer dispatch: a FIFO of launches and the one thread that calls the observers."""

from __future__ import annotations

import threading
from collections import deque

from . import _log, _net, _tuning
from ._launch import Launch
from ._outcome import Reason
from ._sentinel import Sentinel

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

    Observer = Callable[..., Any]

_STR_OVERHEAD = 64  # bytes a str costs besides its characters (about, and rounded up)


WAITING, TAKEN, DONE = map(Sentinel, ("IN_QUEUE", "TAKEN", "OBSERVED"))


class Pending:
    """The queue's entry for one launch; ``on_done(launch)`` is called once its observers ran."""

    __slots__ = ("final", "launch", "on_done", "seq", "size", "state")

    def __init__(self, launch: Launch, final: bool,
                 on_done: Optional[Callable[[Launch], None]]) -> None:
        self.launch = launch
        self.size = sum(map(len, launch)) + _STR_OVERHEAD * len(launch)
        self.state = WAITING
        self.final = final
        self.seq = 0  # arrival number: an observer gets the launches from its trace() on
        self.on_done = on_done



class Dispatcher:
    """Owns the queue, the observers and the dispatch thread.

    Observers run on the dispatch thread only, one launch at a time, in arrival order.
    ``on_final`` runs on the dispatch thread after the launch marked ``final`` is delivered;
    ``on_failure`` runs on it should the thread ever fail (a bug), before it ends. The thread
    starts with the host, not with the first launch: once the application's main thread has
    returned (a ``timeout`` cool-down), Python 3.12 refuses to start new threads.
    """

    def __init__(self, name: str, verbose: bool, tuning: _tuning.Tuning,
                 on_final: Callable[[], None], on_failure: Callable[[], None]) -> None:
        self._verbose = verbose
        self._tuning = tuning
        self._on_final = on_final
        self._on_failure = on_failure
        lock = threading.RLock()  # re-entrant: stop() may run in a signal handler
        self._cond = threading.Condition(lock)
        self._returned = threading.Condition(lock)  # a call of an observer returned
        self._running: Optional[Observer] = None  # the observer being called (from its check)
        self._queue: Deque[Pending] = deque()
        # observer -> (args, kwargs, seq of the first launch it gets)
        self._observers: Dict[Observer, Tuple[Tuple[Any, ...], Dict[str, Any], int]] = {}
        self._seq = 0
        self._pending_bytes = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread (once, by the host); raises what ``Thread.start`` raises."""
        _net.start(self._thread)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    # -- called from any thread -------------------------------------------------------

    def trace(self, observer: Observer, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        with self._cond:
            if not self._stopping:
                if observer in self._observers:
                    since = self._observers[observer][2]
                elif self._observers or not self._queue:
                    since = self._seq
                else:  # the first observer also takes the launches that waited for one
                    since = self._queue[0].seq
                self._observers[observer] = (args, kwargs, since)
                self._cond.notify()

    def untrace(self, observer: Observer) -> None:
        """Unregister *observer*; when this returns, no call of it starts or runs (except
        the call that is running this untrace(), if called from an observer)."""
        with self._cond:
            self._observers.pop(observer, None)
            if self._thread is not threading.current_thread():
                while self._running is not None and self._running == observer:
                    self._returned.wait()

    def observer_count(self) -> int:
        with self._cond:
            return len(self._observers)

    def observers(self) -> Tuple[Observer, ...]:
        with self._cond:
            return tuple(self._observers)

    def pending(self) -> Tuple[Launch, ...]:
        with self._cond:
            return tuple(item.launch for item in self._queue)

    def submit(self, launch: Launch, final: bool,
               on_done: Optional[Callable[[Launch], None]] = None) -> bool:
        """Queue *launch*; false when the queue is full or dispatch is stopping."""
        item = Pending(launch, final, on_done)
        with self._cond:
            if (self._stopping or len(self._queue) >= self._tuning.max_pending
                    or self._pending_bytes + item.size > self._tuning.max_pending_bytes):
                return False
            item.seq = self._seq
            self._seq += 1
            self._pending_bytes += item.size
            self._queue.append(item)
            self._cond.notify()
        return True

    def take_back(self) -> List[Launch]:
        """Stop delivering (no observer call starts from now on, nothing more is queued) and
        take back the awaited launches that no observer has seen and whose client still
        waits for its answer (``Launch._settle``): they are returned, to be told "retry"."""
        with self._cond:
            self._stopping = True
            taken = [item for item in self._queue if item.on_done is not None
                     and item.launch._framed and item.launch._settle(Reason.RETRY) == Reason.RETRY]
            for item in taken:
                self._queue.remove(item)
                self._pending_bytes -= item.size
            self._cond.notify_all()
        return [item.launch for item in taken]

    def stop(self) -> None:
        """Clear the observers and end the thread.

        An observer that is running gets ``stop_wait`` seconds to return; one that takes longer
        (or that called stop() itself) is not waited for: the thread exits when it returns.
        """
        with self._cond:
            self._stopping = True
            self._observers.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread() and self._thread.ident:
            self._thread.join(self._tuning.stop_wait)

    def request_stop(self) -> None:
        """From here, no observer call starts; takes no lock, so it is safe in a signal handler
        that interrupted this thread anywhere. stop() must follow, to wake the thread."""
        self._stopping = True

    # -- the dispatch thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:  # noqa: BLE001 - a bug: never leave launches with no one to deliver
            _log.warning(self._verbose, "dispatch failed; releasing the port", exc_info=True)
            try:
                self._on_failure()
            except BaseException:  # noqa: BLE001 - the thread ends quietly either way
                pass

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._queue and self._observers):
                    self._cond.wait()
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._pending_bytes -= item.size
                item.state = TAKEN
                registered = list(self._observers.items())
                observers = [(observer, args, kwargs)
                             for observer, (args, kwargs, since) in registered
                             if since <= item.seq]
                if not observers:  # whoever saw it arrive is gone: better late than lost
                    observers = [(observer, args, kwargs)
                                 for observer, (args, kwargs, _) in registered]
            called = False
            try:
                for observer, args, kwargs in observers:
                    with self._cond:  # not after release() or its own untrace() returned
                        if self._stopping or observer not in self._observers:
                            continue
                        self._running = observer  # from here, untrace() waits for the call
                    called = True
                    try:
                        observer(item.launch, *args, **kwargs)
                    except BaseException as exc:  # noqa: BLE001 - even sys.exit() must not end dispatch
                        _log.warning(self._verbose, "Observer %s raised exception: %s: %s",
                                     getattr(observer, "__name__", observer),
                                     type(exc).__name__, _text(exc), exc_info=True)
                    finally:
                        with self._cond:
                            self._running = None
                            self._returned.notify_all()
            finally:
                if not called:
                    # Taken off the queue, yet no observer saw it (release() or untrace() came
                    # in between, or a bug): it goes back to the head, never lost.
                    with self._cond:
                        item.state = WAITING
                        self._pending_bytes += item.size
                        self._queue.appendleft(item)
                else:
                    self._done(item)
            if called and item.final:
                self._on_final()

    def _done(self, item: Pending) -> None:
        with self._cond:
            item.state = DONE
        if item.on_done is not None:
            item.on_done(item.launch)


def _text(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when its ``__str__`` raises (logging would print a
    traceback of its own instead of our line)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any failure of a user's __str__
        return "<str() failed>"
