"""The host's listener: one I/O thread serves every connection, none can hold up another.

Only I/O, the clock and the thread. One launch's path through it: ``_accept`` makes a
``_Connection`` around a ``HostConnection`` machine (``_connection``); each read is fed to the
machine and ``_apply`` does what it answers (send, arm the deadline, log, close); a whole
launch (``Launched``) goes to the host's ``admit`` (``_host.Host``), whose ``Decision`` the
machine turns into the acknowledgement, or into a wait that ``settle()`` ends (the observers ran,
or the host took the launch back as it stops)."""

from __future__ import annotations

import _thread
import math
import os
import selectors
import socket
import threading
import time
import weakref
from collections import deque

from . import _connection, _log, _net, _tuning, _wire
from ._connection import Close, Launched, Log, Send, Timer
from ._launch import Launch
from ._outcome import Reason

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a host about 1.5 MiB: the type checker alone reads it
    from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

# select() (the only selector on Windows) takes at most 512 sockets per call.
_SELECT_LIMIT = 500
# Reads of one peer in a row before the loop serves the others (256 KiB at most).
_READS_PER_TURN = 4
_GATE_POLL = 0.1  # seconds wait_closed() sleeps before it looks at the closed flag again


class Decision:
    """The host's answer to one launch: a Reason and its detail, or (*wait*) that the answer
    waits until ``Listener.settle()`` is called for the launch."""

    __slots__ = ("detail", "reason", "wait")

    def __init__(self, reason: str, detail: str, wait: bool) -> None:
        self.reason = reason
        self.detail = detail
        self.wait = wait

_LIVE: weakref.WeakSet[Listener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for listener in list(_LIVE):
        listener.close_in_forked_child()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Listener:
    """Owns the listening socket, the accepted connections and the I/O thread; the protocol
    is ``_connection.HostProtocol``'s, this class only does the I/O and the clock.

    ``admit`` runs on the I/O thread for each complete, verified launch.
    """

    def __init__(self, sock: socket.socket, name: str, verbose: bool, secret: Optional[str],
                 tuning: _tuning.Tuning, admit: Callable[[Launch], Decision],
                 on_failure: Callable[[], None],
                 identity: _wire.Identity = _wire.NUMBERED) -> None:
        self._sock = sock
        self._on_failure = on_failure  # called on the I/O thread should it fail (a bug)
        self._verbose = verbose
        self._tuning = tuning
        self._protocol = _connection.HostProtocol(secret, os.getpid(), _connection.Limits(
            tuning.max_message_size, tuning.max_buffered, tuning.peer_deadline,
            tuning.delivery_wait, tuning.recent_launches, tuning.max_args,
            tuning.decode_errors), identity=identity)
        self._admit = admit
        self._conns: Set[_Connection] = set()
        self._awaiting: Dict[bytes, _Connection] = {}  # launch id -> connection whose answer waits
        self._settled: Deque[Tuple[Launch, str]] = deque()  # from other threads: see settle()
        self._replying: Dict[bytes, _Connection] = {}  # launch id -> connection (protocol 3)
        self._replies: Deque[Launch] = deque()  # from other threads: see replied()
        # Closed: set, then the gate released, as the I/O thread's last act (see wait_closed).
        self._closed = False
        self._gate = _thread.allocate_lock()
        self._gate.acquire()
        self._stop_requested = False
        self._draining = False  # release_threshold reached: serve what is open, accept nothing
        self._close_at: Optional[float] = None  # then, when to let the port go at the latest
        self._accepting = True
        self._selector = selectors.DefaultSelector()
        self._max_connections = tuning.max_connections
        if isinstance(self._selector, selectors.SelectSelector):
            self._max_connections = min(tuning.max_connections, _SELECT_LIMIT)
        self._accept_again_at: Optional[float] = None  # set while out of file descriptors
        try:
            self._wake_r, self._wake_w = map(_net.wrap, socket.socketpair())
            try:
                for s in (sock, self._wake_r, self._wake_w):
                    s.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ, self._accept)
                self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeups)
            except BaseException:
                _net.close_quietly(self._wake_r)
                _net.close_quietly(self._wake_w)
                raise
        except BaseException:
            self._selector.close()
            raise
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        _LIVE.add(self)

    def start(self) -> None:
        _net.start(self._thread)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def listening(self) -> bool:
        return self._sock.fileno() != -1

    # -- any thread ---------------------------------------------------------------------

    def settle(self, launch: Launch, reason: str) -> None:
        """The answer of *launch*, which waited (``Decision.wait``): DELIVERED, or RETRY (taken
        back as the host stops). Any thread, a signal handler included: takes no lock."""
        # A deque appended here and popped by the I/O thread: both are atomic under the GIL.
        self._settled.append((launch, reason))
        self._wake()

    def replied(self, launch: Launch) -> None:
        """``Launch.reply`` was called (any thread): the launch's connection sends it."""
        self._replies.append(launch)
        self._wake()

    def delivered(self, launch: Launch) -> None:
        """The dispatcher's call once *launch*'s observers have run."""
        self.settle(launch, Reason.DELIVERED)

    def drain(self) -> None:
        """Accept nothing more (new peers wait in the backlog, and are refused when the port
        goes), serve the open connections, and let the port go after ``delivery_wait`` at the
        latest; the thread ends with the last connection. On the I/O thread only."""
        self._protocol.release()
        self._draining = True
        self._pause_accepting()
        self._close_at = time.monotonic() + self._tuning.delivery_wait

    def request_stop(self) -> None:
        """Stop serving: free the port, answer open hand-offs, close everything. Returns at
        once; ``wait_closed()`` waits for the end. Takes no lock: safe in a signal handler."""
        self._stop_requested = True
        self._protocol.release()
        if threading.current_thread() is self._thread:
            # A socket in a select() of this very thread: closed here, not from another one.
            self._close_listening()  # the loop finishes the rest before it selects again
        else:
            self._wake()

    def wait_closed(self) -> None:
        """After request_stop(): return once every socket is closed (not on the I/O thread).
        A listener that never started is closed here and now.

        Re-entrant: it waits on a gate that the I/O thread opens as its last act, not with
        ``Thread.join()``, which a KeyboardInterrupt can leave believing a running thread has
        ended (CPython's bpo-45274 handling) and which a signal handler can deadlock."""
        if self._thread.ident is None:
            self._shutdown()
            return
        while not self._closed:
            if self._gate.acquire(timeout=_GATE_POLL):
                self._gate.release()  # let any other waiter through
        self._thread.join(self._tuning.stop_wait)  # its last bytecodes; bounded all the same

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # already closed by a finished thread, or the pipe is full: fine
            pass

    # -- the I/O thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop_requested and not (
                    self._draining and not self._conns and not self.listening):
                self._select(self._next_timeout())
                now = time.monotonic()
                self._expire(now)
                if self._accept_again_at is not None and now >= self._accept_again_at:
                    self._accept_again_at = None
                    self._resume_accepting()
                if self._close_at is not None and now >= self._close_at:
                    self._close_at = None
                    self._close_listening()
        except BaseException:  # noqa: BLE001 - a bug here must not leave the port held by a dead thread
            self._close_listening()  # first: the port is never held by a thread that is gone
            _log.warning(self._verbose, "listener failed; releasing the port", exc_info=True)
            self._stop_requested = True
            try:
                self._on_failure()
            except BaseException:  # noqa: BLE001 - the shutdown below must run all the same
                pass
        finally:
            self._shutdown()

    def _select(self, timeout: Optional[float]) -> None:
        """The one place that calls the handlers: wait, then serve what is ready."""
        for key, mask in self._selector.select(timeout):
            if isinstance(key.data, _Connection):
                self._serve(key.data, mask)
            else:
                key.data(mask)
        self._handle_settled()

    def _next_timeout(self) -> Optional[float]:
        deadlines = [conn.deadline for conn in self._conns if conn.deadline != math.inf]
        for moment in (self._accept_again_at, self._close_at):
            if moment is not None:
                deadlines.append(moment)
        if not deadlines:
            return None  # idle: sleep until a peer or a wake-up arrives
        return max(0.0, min(deadlines) - time.monotonic())

    def _drain_wakeups(self, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _accept(self, mask: int) -> None:
        while len(self._conns) < self._max_connections and self.listening:
            try:
                sock, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in _net.OUT_OF_RESOURCES:
                    # The peer stays in the backlog; retrying at once would spin.
                    _log.warning(self._verbose, "accept failed (%s); pausing %.1f s",
                                 err, self._tuning.accept_backoff)
                    self._back_off()
                else:  # e.g. ECONNABORTED: that peer only
                    _log.warning(self._verbose, "accept failed: %s", err)
                return
            try:
                sock.setblocking(False)
                conn = _Connection(sock, peer, self._protocol.connection())
            except Exception as err:  # noqa: BLE001 - e.g. ENOMEM: this peer only
                _log.warning(self._verbose, "could not serve a peer (%r); dropped", err)
                _net.close_quietly(sock)
                self._back_off()
                return
            self._conns.add(conn)
            self._apply(conn, conn.machine.opened())
            # A launch sends at once: read now, and a peer that is done by then never costs
            # a turn of the loop or a registration with the selector.
            self._read(conn)
            if conn in self._conns and not self._register(conn):
                return
        self._pause_accepting()

    def _register(self, conn: _Connection) -> bool:
        """Watch *conn* from now on; false (the peer dropped, accepting paused) on failure."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        try:
            self._selector.register(conn.sock, events, conn)
        except Exception as err:  # noqa: BLE001 - e.g. ENOMEM from epoll: this peer only
            _log.warning(self._verbose, "could not serve a peer (%r); dropped", err)
            self._forget(conn)
            self._back_off()
            return False
        conn.registered = True
        conn.writing = bool(conn.out)
        return True

    def _back_off(self) -> None:
        self._pause_accepting()
        self._accept_again_at = time.monotonic() + self._tuning.accept_backoff

    def _pause_accepting(self) -> None:
        if self._accepting and self.listening:
            self._accepting = False
            self._unregister(self._sock)

    def _resume_accepting(self) -> None:
        if (not self._accepting and self.listening and not self._draining
                and self._accept_again_at is None):
            try:
                self._selector.register(self._sock, selectors.EVENT_READ, self._accept)
            except OSError as err:  # ENOMEM, ENOSPC from epoll: try again a little later
                _log.warning(self._verbose, "could not resume accepting (%s)", err)
                self._accept_again_at = time.monotonic() + self._tuning.accept_backoff
                return
            self._accepting = True

    def _unregister(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError, OSError):  # not registered, or closed under us
            pass

    def _close_listening(self) -> None:
        if self.listening:
            if self._accepting:
                self._accepting = False
                self._unregister(self._sock)
            _net.close_quietly(self._sock)

    # -- one peer ---------------------------------------------------------------------------

    def _serve(self, conn: _Connection, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            try:
                self._flush(conn)
            except Exception:  # noqa: BLE001 - whatever one peer causes, only that peer is dropped
                _log.warning(self._verbose, "peer %s: failed; dropped", conn.peer, exc_info=True)
                self._forget(conn)
            return
        self._read(conn)

    def _read(self, conn: _Connection) -> None:
        """Feed the machine what *conn* has to read: a few reads in a row, until there is
        nothing more (the next turn of the loop reads the rest, so no peer holds up another)."""
        try:
            for _ in range(_READS_PER_TURN):
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as err:
                    self._apply(conn, conn.machine.failed("connection failed (%s); dropped", err))
                    return
                if not data:
                    conn.peer_closed = True
                    self._apply(conn, conn.machine.closed())
                    return
                self._apply(conn, conn.machine.receive(data))
                if conn not in self._conns:
                    return
        except Exception:  # noqa: BLE001 - whatever one peer causes, only that peer is dropped
            _log.warning(self._verbose, "peer %s: failed; dropped", conn.peer, exc_info=True)
            self._forget(conn)

    def _apply(self, conn: _Connection, effects: List[_connection.Effect]) -> None:
        """Do what the connection's machine asked."""
        for effect in effects:
            if conn not in self._conns:
                return  # dropped meanwhile (a failed write): the rest is moot
            if isinstance(effect, Send):
                conn.out += effect.data
                self._flush(conn)
            elif isinstance(effect, Timer):
                seconds = effect.seconds
                conn.deadline = math.inf if seconds is None else time.monotonic() + seconds
            elif isinstance(effect, Log):
                log = _log.warning if effect.warn else _log.debug
                log(self._verbose, "peer %s: " + effect.message, conn.peer, *effect.args)
            elif isinstance(effect, Launched):
                self._apply(conn, self._launched(conn, effect.launch))
            elif isinstance(effect, Close):
                self._forget(conn)

    def _launched(self, conn: _Connection, launch: Launch) -> List[_connection.Effect]:
        """Hand a whole launch to the host; the machine answers as the host decided."""
        if launch._can_reply:
            self._replying[launch._id] = conn
            launch._on_reply = self.replied
        decision = self._admit(launch)
        if decision.wait:
            conn.awaited = launch._id
            self._awaiting[launch._id] = conn
        return conn.machine.decide(decision.reason, decision.detail, decision.wait)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._apply(conn, conn.machine.failed("could not answer (%s); dropped", err))
            return
        conn.out = conn.out[sent:]
        writing = bool(conn.out)
        if conn.registered and writing != conn.writing and conn in self._conns:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            self._selector.modify(conn.sock, events, conn)
            conn.writing = writing

    def _forget(self, conn: _Connection) -> None:
        """Close *conn*. Unless the peer closed first, reset it: a host that closes first
        leaves TIME_WAIT behind on its own port, and the port must be free after release()."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        if conn.awaited:
            self._awaiting.pop(conn.awaited, None)
        launch_id = conn.machine.launch_id
        if launch_id and self._replying.get(launch_id) is conn:
            del self._replying[launch_id]
        conn.machine.discard()
        if conn.registered:
            self._unregister(conn.sock)
        if not conn.peer_closed:
            _net.reset_on_close(conn.sock)
        _net.close_quietly(conn.sock)
        self._resume_accepting()

    def _handle_settled(self) -> None:
        while self._replies:
            conn = self._replying.get(self._replies.popleft()._id)
            if conn is not None:
                self._apply(conn, conn.machine.replied())
        while self._settled:
            launch, reason = self._settled.popleft()
            conn = self._awaiting.pop(launch._id, None)
            if conn is not None and conn in self._conns:
                self._apply(conn, conn.machine.settled(reason))
            else:  # its client left: one that asks again hears it
                self._protocol.settled(launch._id, reason)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.deadline <= now]:
            self._apply(conn, conn.machine.timed_out())

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._close_listening()
        try:
            self._handle_settled()
            for conn in list(self._conns):
                self._apply(conn, conn.machine.abandon())
            # Answered clients close first (so no TIME_WAIT is left on the port); wait briefly.
            grace_end = time.monotonic() + self._tuning.shutdown_grace
            while self._conns and time.monotonic() < grace_end:
                self._select(max(0.0, grace_end - time.monotonic()))
        except Exception:  # noqa: BLE001 - whatever failed, every socket is closed below
            _log.warning(self._verbose, "shutdown failed; closing every connection",
                         exc_info=True)
        finally:
            for conn in list(self._conns):
                try:
                    self._forget(conn)
                except Exception:  # noqa: BLE001 - the next one is closed all the same
                    _net.close_quietly(conn.sock)
            self._conns.clear()
            self._selector.close()
            _net.close_quietly(self._wake_r)
            _net.close_quietly(self._wake_w)
            _LIVE.discard(self)
            self._closed = True
            self._gate.release()

    def close_in_forked_child(self) -> None:
        """In a child made by fork(), this listener's thread does not exist and its sockets
        are copies: close them, or the port would stay held after the parent lets it go."""
        for conn in list(self._conns):
            conn.sock.close()
        self._conns.clear()
        for sock in (self._sock, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()


class _Connection:
    """One accepted peer as the listener holds it: its socket, what is left to write, when
    its machine times out next, and the machine itself."""

    __slots__ = ("awaited", "deadline", "machine", "out", "peer", "peer_closed", "registered",
                 "sock", "writing")

    def __init__(self, sock: socket.socket, peer: object,
                 machine: _connection.HostConnection) -> None:
        self.sock = sock
        self.peer = "%s:%s" % tuple(peer[:2]) if isinstance(peer, tuple) else str(peer)
        self.machine = machine
        self.out = b""
        self.deadline = time.monotonic()  # set by the machine's first TIMER
        self.awaited = b""  # the id of the launch whose answer waits for the observers
        self.peer_closed = False
        self.registered = False  # with the selector (only once a first read left it open)
        self.writing = False  # watched for EVENT_WRITE: part of ``out`` waits for room
