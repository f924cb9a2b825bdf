"""The host's listener: one I/O thread serves every connection, none can hold up another.

Only I/O, the clock and the thread: what to send and when to close is decided by the
protocol's machines (``_protocol``), what to do with a launch by the host (``_hosting.Host``)."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import threading
import time
import weakref
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

from . import _log, _net, _protocol, _tuning
from ._dispatch import Pending

# select() (the only selector on Windows) takes at most 512 sockets per call.
_SELECT_LIMIT = 500
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, zero seconds: close() sends RST

# What the host decided about one launch: a Reason and its detail, and the queued item whose
# delivery the answer waits for, if any. Its arguments: args, cwd, pid, and whether the launch
# came framed (it can wait for its answer) rather than in the plain 2.0.0 form (no answer).
Decision = Tuple[str, str, Optional[Pending]]
OnLaunch = Callable[[Tuple[str, ...], Optional[str], Optional[int], bool], Decision]

_LIVE: weakref.WeakSet[Listener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for listener in list(_LIVE):
        listener.close_in_forked_child()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Listener:
    """Owns the listening socket, the accepted connections and the I/O thread; the protocol
    is ``_protocol.HostProtocol``'s, this class only does the I/O and the clock.

    ``on_launch`` runs on the I/O thread for each complete, verified launch; ``fate`` says what
    a launch whose answer still waits is told when the listener stops (a Reason).
    """

    def __init__(self, sock: socket.socket, name: str, verbose: bool, secret: Optional[str],
                 tuning: _tuning.Tuning, on_launch: OnLaunch,
                 fate: Callable[[Pending], str], on_failure: Callable[[], None]) -> None:
        self._sock = sock
        self._on_failure = on_failure  # called on the I/O thread should it fail (a bug)
        self._verbose = verbose
        self._tuning = tuning
        self._protocol = _protocol.HostProtocol(secret, os.getpid(), _protocol.Limits(
            tuning.max_message_size, tuning.max_buffered, tuning.peer_deadline,
            tuning.delivery_wait, tuning.recent_launches))
        self._on_launch = on_launch
        self._fate = fate
        self._conns: Set[_Connection] = set()
        # a framed launch waiting in the queue -> its id, and the connection whose answer waits
        self._waiting: Dict[Pending, Tuple[bytes, _Connection]] = {}
        self._completed: Deque[Pending] = deque()
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

    def complete(self, item: Pending) -> None:
        """Called by the dispatcher once *item*'s observers have run."""
        # A deque appended here and popped by the I/O thread: both are atomic under the GIL.
        self._completed.append(item)
        self._wake()

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
        A listener that never started is closed here and now."""
        if self._thread.ident is None:
            self._shutdown()
        else:
            self._thread.join()

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
        self._handle_completed()

    def _next_timeout(self) -> Optional[float]:
        deadlines = [conn.deadline for conn in self._conns]
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
                if err.errno in _OUT_OF_RESOURCES:
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
                self._selector.register(sock, selectors.EVENT_READ, conn)
            except Exception as err:  # noqa: BLE001 - e.g. ENOMEM from epoll: this peer only
                _log.warning(self._verbose, "could not serve a peer (%r); dropped", err)
                _net.close_quietly(sock)
                self._back_off()
                return
            self._conns.add(conn)
            self._apply(conn, conn.machine.opened())
        self._pause_accepting()

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
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(conn)
                return
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self._apply(conn, conn.machine.failed("connection failed (%s); dropped", err))
                return
            if data:
                self._apply(conn, conn.machine.receive(data))
            else:
                conn.peer_closed = True
                self._apply(conn, conn.machine.closed())
        except Exception:  # noqa: BLE001 - whatever one peer causes, only that peer is dropped
            _log.warning(self._verbose, "peer %s: failed; dropped", conn.peer, exc_info=True)
            self._forget(conn)

    def _apply(self, conn: _Connection, effects: List[_protocol.Effect]) -> None:
        """Do what the connection's machine asked."""
        for effect in effects:
            if conn not in self._conns:
                return  # dropped meanwhile (a failed write): the rest is moot
            kind = effect[0]
            if kind == _protocol.SEND:
                conn.out += effect[1]  # type: ignore[operator]
                self._flush(conn)
            elif kind == _protocol.TIMER:
                conn.deadline = time.monotonic() + effect[1]  # type: ignore[operator]
            elif kind == _protocol.WARN:
                _log.warning(self._verbose, "peer %s: " + effect[1],  # type: ignore[operator]
                             conn.peer, *effect[2])  # type: ignore[misc]
            elif kind == _protocol.DEBUG:
                _log.debug(self._verbose, "peer %s: " + effect[1],  # type: ignore[operator]
                           conn.peer, *effect[2])  # type: ignore[misc]
            elif kind == _protocol.LAUNCH:
                self._apply(conn, self._launch(conn, effect[1]))  # type: ignore[arg-type]
            elif kind == _protocol.CLOSE:
                self._forget(conn)

    def _launch(self, conn: _Connection, launch: _protocol.Launch) -> List[_protocol.Effect]:
        """Hand a complete launch to the host; the machine answers it."""
        reason, detail, item = self._on_launch(launch.args, launch.cwd, launch.pid,
                                               launch.framed)
        if item is not None:
            conn.item = item
            self._waiting[item] = (launch.launch_id, conn)
        return conn.machine.decide(reason, detail, item is not None)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._apply(conn, conn.machine.failed("could not answer (%s); dropped", err))
            return
        conn.out = conn.out[sent:]
        if conn in self._conns:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
            self._selector.modify(conn.sock, events, conn)

    def _forget(self, conn: _Connection) -> None:
        """Close *conn*. Unless the peer closed first, reset it: a host that closes first
        leaves TIME_WAIT behind on its own port, and the port must be free after release()."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        conn.machine.discard()
        self._unregister(conn.sock)
        if not conn.peer_closed:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            except OSError:  # already reset by the peer: nothing to linger over
                pass
        _net.close_quietly(conn.sock)
        self._resume_accepting()

    def _handle_completed(self) -> None:
        while self._completed:
            waiting = self._waiting.pop(self._completed.popleft(), None)
            if waiting is not None:
                launch_id, conn = waiting
                self._protocol.delivered(launch_id)
                if conn in self._conns:
                    self._apply(conn, conn.machine.delivered())

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.deadline <= now]:
            self._apply(conn, conn.machine.timed_out())

    def _shutdown(self) -> None:
        self._close_listening()
        try:
            self._handle_completed()
            for conn in list(self._conns):
                fate = None
                if conn.machine.waiting and conn.item is not None:
                    fate = self._fate(conn.item)
                self._apply(conn, conn.machine.abandon(fate))
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

    __slots__ = ("deadline", "item", "machine", "out", "peer", "peer_closed", "sock")

    def __init__(self, sock: socket.socket, peer: object,
                 machine: _protocol.HostConnection) -> None:
        self.sock = sock
        self.peer = "%s:%s" % tuple(peer[:2]) if isinstance(peer, tuple) else str(peer)
        self.machine = machine
        self.out = b""
        self.deadline = time.monotonic()  # set by the machine's first TIMER
        self.item: Optional[Pending] = None  # the queued launch whose answer waits
        self.peer_closed = False
