"""The host's listener: one I/O thread serves every connection, none can hold up another."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from typing import Callable, Deque, Dict, Optional, Set, Tuple

from . import _log, _net, _wire
from ._dispatch import DONE, Pending

PEER_DEADLINE = 5.0  # seconds a peer has to deliver its whole message or handshake
DELIVERY_WAIT = 0.5  # seconds an acknowledgement waits for the observers before saying "queued"
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # bytes; larger messages are refused whole, never cut
MAX_CONNECTIONS = 512  # served at once; beyond that, new peers wait in the listen backlog
MAX_BUFFERED = 64 * 1024 * 1024  # bytes of unfinished messages held at once, all peers together
SHUTDOWN_GRACE = 1.0  # seconds release() gives answered clients to read their answer and close
ACCEPT_BACKOFF = 0.1  # seconds accepting pauses when the process is out of file descriptors
RECENT_LAUNCHES = 4096  # launch ids remembered, so that a retried launch is delivered once

# select() (the only selector on Windows) takes at most 512 sockets per call.
_SELECT_LIMIT = 500
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, zero seconds: close() sends RST

# What the host decided about one launch: an acknowledgement status and its detail, the
# queued item to wait for (if any), and whether this launch reached release_threshold.
Decision = Tuple[bytes, str, Optional[Pending], bool]
OnLaunch = Callable[[Tuple[str, ...], Optional[str], Optional[int],
                     Optional[Callable[[Pending], None]]], Decision]

# Connection states.
_SNIFF, _PLAIN, _HELLO, _LAUNCH, _WAITING, _CLOSING = range(6)

_LIVE: weakref.WeakSet[Listener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for listener in list(_LIVE):
        listener.close_in_forked_child()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

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


class Listener:
    """Owns the listening socket, the accepted connections and the I/O thread.

    ``on_launch`` runs on the I/O thread for each complete, verified launch. ``stop()`` may
    be called from any thread; when it returns on another thread than the I/O thread, the
    port is free (on the I/O thread, only the listening socket is closed at once).
    """

    def __init__(self, sock: socket.socket, name: str, verbose: bool, secret: Optional[str],
                 on_launch: OnLaunch, withdraw: Callable[[Pending], bool],
                 on_failure: Callable[[], None]) -> None:
        self._sock = sock
        self._on_failure = on_failure  # called on the I/O thread should it fail (a bug)
        self._verbose = verbose
        self._secret = secret
        # What a plain message may carry beyond MAX_MESSAGE_SIZE: the secret field and its NUL.
        self._secret_field = 0 if secret is None else len(_wire.secret_bytes(secret)) + 1
        self._on_launch = on_launch
        self._withdraw = withdraw
        self._conns: Set[_Connection] = set()
        self._waiting: Dict[Pending, _Connection] = {}
        # launch id -> what the host answered (status, detail, queued item), newest last
        self._recent: OrderedDict[bytes, Decision] = OrderedDict()
        self._completed: Deque[Pending] = deque()
        self._stop_requested = False
        self._draining = False  # release_threshold reached: serve what is open, accept nothing
        self._close_at: Optional[float] = None  # then, when to let the port go at the latest
        self._accepting = True
        self._selector = selectors.DefaultSelector()
        self._max_connections = MAX_CONNECTIONS
        if isinstance(self._selector, selectors.SelectSelector):
            self._max_connections = min(MAX_CONNECTIONS, _SELECT_LIMIT)
        self._buffered = 0  # bytes held in unfinished messages
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
        self._completed.append(item)
        self._wake()

    def join(self) -> None:
        """Wait until the I/O thread has closed every socket (not from the I/O thread)."""
        if self._thread.ident is not None:
            self._thread.join()

    def stop(self) -> None:
        """Stop serving: free the port, answer open hand-offs, close everything."""
        self.request_stop()
        if self._thread.ident is None:  # never started (a constructor that failed)
            self._shutdown()
        elif threading.current_thread() is not self._thread:
            self._thread.join()

    def request_stop(self) -> None:
        """Like stop(), but returns at once (the I/O thread frees the port soon after)."""
        self._stop_requested = True
        if threading.current_thread() is self._thread:
            self._close_listening()  # the loop finishes the rest before it selects again
        else:
            self._wake()

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
                for key, mask in self._selector.select(self._next_timeout()):
                    key.data(mask)
                self._handle_completed()
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
                                 err, ACCEPT_BACKOFF)
                    self._back_off()
                else:  # e.g. ECONNABORTED: that peer only
                    _log.warning(self._verbose, "accept failed: %s", err)
                return
            try:
                sock.setblocking(False)
                conn = _Connection(self, sock, peer)
                self._selector.register(sock, selectors.EVENT_READ, conn.on_event)
            except Exception as err:  # noqa: BLE001 - e.g. ENOMEM from epoll: this peer only
                _log.warning(self._verbose, "could not serve a peer (%r); dropped", err)
                _net.close_quietly(sock)
                self._back_off()
                return
            self._conns.add(conn)
        self._pause_accepting()

    def _back_off(self) -> None:
        self._pause_accepting()
        self._accept_again_at = time.monotonic() + ACCEPT_BACKOFF

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
                self._accept_again_at = time.monotonic() + ACCEPT_BACKOFF
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

    def forget(self, conn: _Connection) -> None:
        """Close *conn*. Unless the peer closed first, reset it: a host that closes first
        leaves TIME_WAIT behind on its own port, and the port must be free after release()."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        self._buffered -= len(conn.buf)
        if conn.item is not None:
            self._waiting.pop(conn.item, None)
        self._unregister(conn.sock)
        if not conn.peer_closed:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            except OSError:  # already reset by the peer: nothing to linger over
                pass
        _net.close_quietly(conn.sock)
        self._resume_accepting()

    def launch(self, conn: _Connection, args: Tuple[str, ...], cwd: Optional[str],
               pid: Optional[int], launch_id: bytes = b"") -> Optional[Tuple[bytes, str]]:
        """Hand a complete launch to the host; returns the acknowledgement to send now, or
        ``None`` when the connection must wait for the observers. A launch whose id was seen
        before (its client retried after losing the answer) is answered, not taken again."""
        earlier = self._recent.get(launch_id) if launch_id else None
        if earlier is not None:
            status, detail, item, _ = earlier
            if item is None:
                return status, detail
            return (_wire.DELIVERED if item.state == DONE else _wire.QUEUED), ""
        if self._draining or self._stop_requested:
            return _wire.RETRY, "the host is releasing the port"
        on_done = self.complete if conn.framed else None
        decision = self._on_launch(args, cwd, pid, on_done)
        status, detail, item, final = decision
        if launch_id:
            self._recent[launch_id] = decision
            if len(self._recent) > RECENT_LAUNCHES:
                self._recent.popitem(last=False)
        if final:
            # release_threshold: accept nothing more (new peers wait in the backlog, and are
            # refused when the port goes), deliver this launch, then the host releases. Should
            # the observers be slow or absent, the port goes after DELIVERY_WAIT all the same.
            self._draining = True
            self._pause_accepting()
            self._close_at = time.monotonic() + DELIVERY_WAIT
        if item is None or not conn.framed:
            return status, detail
        if item.state == DONE:
            return _wire.DELIVERED, ""
        conn.item = item
        self._waiting[item] = conn
        return None

    def _handle_completed(self) -> None:
        while self._completed:
            conn = self._waiting.get(self._completed.popleft())
            if conn is not None:
                conn.acknowledge(_wire.DELIVERED)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.deadline <= now]:
            conn.expire()

    def _shutdown(self) -> None:
        self._close_listening()
        try:
            self._handle_completed()
            for conn in list(self._conns):
                conn.abandon()
            # Answered clients close first (so no TIME_WAIT is left on the port); wait briefly.
            grace_end = time.monotonic() + SHUTDOWN_GRACE
            while self._conns and time.monotonic() < grace_end:
                for key, mask in self._selector.select(max(0.0, grace_end - time.monotonic())):
                    key.data(mask)
        except Exception:  # noqa: BLE001 - whatever failed, every socket is closed below
            _log.warning(self._verbose, "shutdown failed; closing every connection",
                         exc_info=True)
        finally:
            for conn in list(self._conns):
                try:
                    self.forget(conn)
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

    def withdraw(self, item: Pending) -> bool:
        return self._withdraw(item)


class _Connection:
    """One accepted peer, driven by the I/O thread through ``on_event``."""

    def __init__(self, listener: Listener, sock: socket.socket, peer: object) -> None:
        self.listener = listener
        self.sock = sock
        self.peer = "%s:%s" % tuple(peer[:2]) if isinstance(peer, tuple) else str(peer)
        self.state = _SNIFF
        self.buf = bytearray()
        self.out = b""
        self.deadline = time.monotonic() + PEER_DEADLINE
        self.item: Optional[Pending] = None
        self.client_nonce = b""
        self.host_nonce = b""
        self.peer_closed = False

    @property
    def framed(self) -> bool:
        return self.state in (_HELLO, _LAUNCH, _WAITING)

    @property
    def alive(self) -> bool:
        return self in self.listener._conns

    def _warn(self, msg: str, *args: object) -> None:
        _log.warning(self.listener._verbose, "peer %s: " + msg, self.peer, *args)

    # -- events ----------------------------------------------------------------------------

    def on_event(self, mask: int) -> None:
        try:
            self._on_event(mask)
        except Exception:  # noqa: BLE001 - whatever one peer causes, only that peer is dropped
            _log.warning(self.listener._verbose, "peer %s: failed; dropped", self.peer,
                         exc_info=True)
            self.listener.forget(self)

    def _on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush()
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._warn("connection failed (%s); dropped", err)
            self.listener.forget(self)
            return
        if not data:
            self.peer_closed = True
            self._on_eof()
        elif self.state in (_WAITING, _CLOSING):
            self._warn("sent data after its launch; dropped")
            self.listener.forget(self)
        elif self.listener._buffered + len(data) > MAX_BUFFERED:
            self._warn("the host holds %d bytes of unfinished messages already; dropped",
                       self.listener._buffered)
            self.listener.forget(self)
        else:
            self.buf += data
            self.listener._buffered += len(data)
            self._advance()

    def _advance(self) -> None:
        if self.state == _SNIFF:
            size = len(_wire.PREAMBLE)
            if self.buf[:size].strip(b"\0"):
                self.state = _PLAIN
            elif len(self.buf) >= size:
                self._consume(size)
                self.state = _HELLO
                self._send(_wire.BANNER)
                if not self.alive:
                    return
        if self.state == _PLAIN:
            if len(self.buf) > MAX_MESSAGE_SIZE + self.listener._secret_field:
                self._warn("message exceeds %d bytes; refused whole", MAX_MESSAGE_SIZE)
                self.listener.forget(self)
            return
        while self.state in (_HELLO, _LAUNCH):
            try:
                found = _wire.split_frame(self.buf, _wire.launch_frame_limit(MAX_MESSAGE_SIZE))
                if found is None:
                    return
                kind, payload, used = found
                self._consume(used)
                self._on_frame(kind, payload)
            except _wire.ProtocolError as err:
                self._warn("protocol error (%s); dropped", err)
                self.acknowledge(_wire.REJECTED, "protocol error: %s" % err)
                return

    def _consume(self, size: int) -> None:
        del self.buf[:size]
        self.listener._buffered -= size

    def _on_frame(self, kind: bytes, payload: bytes) -> None:
        listener = self.listener
        if self.state == _HELLO:
            if kind != _wire.HELLO or len(payload) != _wire.NONCE_SIZE:
                raise _wire.ProtocolError("expected a hello")
            if listener._draining or listener._stop_requested:
                self.acknowledge(_wire.RETRY, "the host is releasing the port")
                return
            self.client_nonce = payload
            self.host_nonce = os.urandom(_wire.NONCE_SIZE)
            host_proof = b""
            if listener._secret is not None:
                host_proof = _wire.proof(listener._secret, b"host", self.client_nonce,
                                         self.host_nonce)
            self._send(_wire.encode_welcome(os.getpid(), MAX_MESSAGE_SIZE, self.host_nonce,
                                            host_proof))
            self.state = _LAUNCH
            return
        if kind == _wire.BYE:  # the client found that we failed its secret check
            self._warn("the client gave up its launch: %s",
                       payload.decode("utf-8", "replace"))
            self.state = _CLOSING  # it closes first, so the port keeps no TIME_WAIT
            self.deadline = time.monotonic() + PEER_DEADLINE
            return
        if kind != _wire.LAUNCH:
            raise _wire.ProtocolError("expected a launch")
        proof_size = _wire.PROOF_SIZE if listener._secret is not None else 0
        client_proof, launch_id, pid, cwd, args = _wire.decode_launch(payload, proof_size)
        if listener._secret is not None:
            expected = _wire.proof(listener._secret, b"client", self.host_nonce,
                                   self.client_nonce)
            if not _wire.same(client_proof, expected):
                self._warn("client verification failed; launch ignored")
                self.acknowledge(_wire.REJECTED, "the secret does not match the host's")
                return
        self._launched(args, cwd, pid, launch_id)

    def _on_eof(self) -> None:
        if self.state == _SNIFF and not self.buf:
            _log.debug(self.listener._verbose, "peer %s: closed without sending anything",
                       self.peer)
            self.listener.forget(self)
            return
        if self.state in (_SNIFF, _PLAIN):
            self._plain_complete()
            return
        if self.state == _HELLO:
            self._warn("closed in the middle of the hand-off; dropped")
        elif self.state == _LAUNCH:  # a status probe, or a client that would not trust us
            _log.debug(self.listener._verbose, "peer %s: closed after the welcome", self.peer)
        self.listener.forget(self)  # a client that gave up waiting: its launch stays queued

    def _plain_complete(self) -> None:
        secret = self.listener._secret
        data = bytes(self.buf)
        if _wire.looks_like_http(data):
            self._warn("an HTTP request (a web page can send one to localhost); ignored")
            self.listener.forget(self)
            return
        try:
            given, args = _wire.decode_plain(data, secret is not None)
        except _wire.ProtocolError as err:
            self._warn("message refused (%s)", err)
            self.listener.forget(self)
            return
        if secret is not None and (
            given is None or not _wire.same(_wire.secret_bytes(given), _wire.secret_bytes(secret))
        ):
            self._warn("client verification failed; message ignored")
            self.listener.forget(self)
            return
        self._launched(args, None, None)

    def _launched(self, args: Tuple[str, ...], cwd: Optional[str], pid: Optional[int],
                  launch_id: bytes = b"") -> None:
        answer = self.listener.launch(self, args, cwd, pid, launch_id)
        if answer is None:
            self.state = _WAITING
            self.deadline = time.monotonic() + DELIVERY_WAIT
            return
        status, detail = answer
        if self.framed:
            self.acknowledge(status, detail)
            return
        if status == _wire.RETRY:
            self._warn("plain launch arrived while the host was releasing; dropped")
        elif status == _wire.REJECTED:
            self._warn("plain launch refused: %s", detail)
        self.listener.forget(self)

    def expire(self) -> None:
        if self.state == _WAITING:
            self.acknowledge(_wire.QUEUED)  # observers are slow: the launch waits in the queue
        elif self.state == _CLOSING:
            self.listener.forget(self)
        else:
            self._warn("no complete message within %.1f s; dropped", PEER_DEADLINE)
            self.listener.forget(self)

    def abandon(self) -> None:
        """The host stops: tell a framed client what became of its launch."""
        if self.state == _WAITING and self.item is not None:
            if self.listener.withdraw(self.item):
                self.acknowledge(_wire.RETRY, "the host released the port")
            elif self.item.state == DONE:
                self.acknowledge(_wire.DELIVERED)
            else:
                self.acknowledge(_wire.QUEUED)
        elif self.state in (_HELLO, _LAUNCH):
            self.acknowledge(_wire.RETRY, "the host released the port")
        elif self.state != _CLOSING:
            if self.buf:
                self._warn("message incomplete when the host released the port; dropped")
            self.listener.forget(self)

    # -- writing ---------------------------------------------------------------------------

    def acknowledge(self, status: bytes, detail: str = "") -> None:
        if self.item is not None:
            self.listener._waiting.pop(self.item, None)
        self.state = _CLOSING
        self.deadline = time.monotonic() + PEER_DEADLINE
        self._send(_wire.encode_ack(status, detail))

    def _send(self, data: bytes) -> None:
        self.out += data
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._warn("could not answer (%s); dropped", err)
            self.listener.forget(self)
            return
        self.out = self.out[sent:]
        if self.alive:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0)
            self.listener._selector.modify(self.sock, events, self.on_event)
