"""Shared test helpers: ports found at run time, real app processes, waiting on events."""

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from unittest import mock

from Socket_Singleton import MultipleSingletonsError, Socket_Singleton, _wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "test_app.py")
WAIT = 30.0  # generous bound for anything we wait for (CPython's support.SHORT_TIMEOUT)
SHORT = 0.3  # only to show that something did NOT happen


def _keeps_undecodable_bytes():
    try:
        os.fsdecode(b"\xff\xfe")
    except UnicodeDecodeError:
        return False
    return True


# POSIX keeps bytes that are not UTF-8 in names and arguments (surrogateescape); Windows
# decodes them strictly (its command lines are UTF-16), so no argument can hold them there.
UNDECODABLE_ARGS = _keeps_undecodable_bytes()


def _under_wine():
    if os.name != "nt":
        return False
    import ctypes
    try:
        return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")
    except OSError:
        return False


# Wine runs Windows programs on Linux, but it is not Windows in some socket details: it cannot
# reproduce Windows' port stealing by a second SO_REUSEADDR bind, a peer's reset reads as a
# clean close, and TIME_WAIT follows Linux rules. Tests that meet these say so.
WINE = _under_wine()


def fsdecode(data):
    """``os.fsdecode``, or where undecodable bytes cannot be an argument (Windows), the text
    with replacement characters: an argument the platform can hold."""
    if UNDECODABLE_ARGS:
        return os.fsdecode(data)
    return data.decode("utf-8", "replace")


def text(data):
    """A child's output as text, its line endings as "\n" (Windows writes os.linesep, "\r\n",
    to text streams); where os.linesep is "\n" nothing changes, so a stray "\r" still shows."""
    return data.decode("utf-8", "replace").replace(os.linesep, "\n")


def free_port(address="127.0.0.1"):
    """A port nobody listens on right now (bind port 0 and read it back)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def app_env(config):
    env = dict(os.environ)
    env["SS_TEST_CONFIG"] = json.dumps(config)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def launch(args=(), config=None, cwd=None, **popen):
    """Start test_app.py as a launch with *args*; the caller owns the Popen."""
    return subprocess.Popen(
        [sys.executable, APP, *args], env=app_env(config or {}), cwd=cwd,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def communicate(proc, timeout=WAIT):
    """Wait for *proc* to finish and return its (stdout, stderr); kill it if it outlives
    *timeout* (then the caller's assertions on its exit fail)."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_client(args=(), config=None, cwd=None, timeout=WAIT):
    """Run one launch to completion; returns (returncode, stdout lines as dicts, stderr)."""
    proc = launch(args, config, cwd)
    out, err = communicate(proc, timeout)
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode, events, text(err)


def decode_args(event):
    """The exact argument bytes an app observer received."""
    return [bytes.fromhex(arg) for arg in event["args"]]


class AppProcess:
    """A test_app.py process read line by line on a thread of its own."""

    def __init__(self, args=(), config=None, cwd=None):
        self.proc = launch(args, config, cwd)
        self.events = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def next_event(self, timeout=WAIT):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event from the app within %s s" % timeout) from None

    def wait_for(self, name, timeout=WAIT):
        """Skip to the next event called *name*; fail on end of output or timeout."""
        while True:
            event = self.next_event(timeout)
            if event["event"] == name:
                return event
            if event["event"] == "eof":
                raise AssertionError("app ended before %r: %s" % (name, self.stderr()))

    def launches(self, count, timeout=WAIT):
        return [self.wait_for("launch", timeout) for _ in range(count)]

    def send(self, command):
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return text(self.proc.stderr.read())

    def stop(self):
        """End the process by its own handle, whatever state it is in."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=WAIT)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        self._reader.join(WAIT)


class LineProcess:
    """A long-running program (an example, a README snippet); its stdout and stderr are read
    line by line on a thread. Ended through its own handle when *test* ends."""

    def __init__(self, test, argv, cwd=None, env=None):
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     encoding="utf-8", errors="replace")
        self.output = []  # every line read so far
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        test.addCleanup(self.stop)

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next_line(self, timeout=WAIT):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output within %s s; so far: %r"
                                 % (timeout, self.output)) from None
        if line is None:
            self._lines.put(None)
            raise AssertionError("the process ended (status %s); output: %r"
                                 % (self.proc.wait(WAIT), self.output))
        self.output.append(line)
        return line

    def expect(self, wanted):
        """Skip to the next line for which *wanted* (a string, or a predicate) holds."""
        match = wanted if callable(wanted) else (lambda line: line == wanted)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.next_line(max(0.0, deadline - time.monotonic()))
            except AssertionError as err:
                raise AssertionError("no line %r: %s" % (wanted, err)) from None
            if match(line):
                return line

    def wait_exit(self):
        """Wait for the process to end by itself; returns its status (all output is read)."""
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError("the process did not exit; output: %r" % self.output) from None
        self._reader.join(WAIT)
        while True:
            line = self._lines.get_nowait()
            if line is None:
                self._lines.put(None)
                return code
            self.output.append(line)

    def ctrl_c(self):
        """Stop it as a user would, with Ctrl+C; returns its exit status, or None when SIGINT
        cannot reach it (Windows, or ignored here and so in the child: the cleanup ends it)."""
        if os.name == "nt" or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return None
        self.proc.send_signal(signal.SIGINT)
        return self.wait_exit()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(WAIT)
        self.proc.stdout.close()


def start_host(test, config=None, args=()):
    """Start an app that becomes the host; cleaned up when *test* ends. Returns (app, port)."""
    app = AppProcess(args, config)
    test.addCleanup(app.stop)
    event = app.wait_for("host")
    return app, event["port"]


class Collector:
    """An in-process observer that records launches and lets tests wait for them."""

    def __init__(self):
        self.calls = []
        self._cond = threading.Condition()

    def __call__(self, args, *extra, **kwargs):
        with self._cond:
            self.calls.append((args, extra, kwargs))
            self._cond.notify_all()

    @property
    def received(self):
        with self._cond:
            return [call[0] for call in self.calls]

    def wait(self, count, timeout=WAIT):
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= count, timeout):
                raise AssertionError("expected %d calls, got %d" % (count, len(self.calls)))
            return [call[0] for call in self.calls]


def read_exactly(sock, size):
    """Read exactly *size* bytes from *sock*; fails if the peer closes first."""
    sock.settimeout(WAIT)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError("the peer closed after %r" % data)
        data += chunk
    return data


def read_frame(sock):
    """Read one frame the host sends a framed peer: ``(kind, payload)``."""
    sock.settimeout(WAIT)
    buf = b""
    while True:
        found = _wire.split_frame(buf, 1 << 20)
        if found is not None:
            return found[0], found[1]
        data = sock.recv(65536)
        if not data:
            raise AssertionError("the host closed the connection without a frame")
        buf += data


def read_banner(sock):
    """Read the host's banner, which answers the preamble; fails on anything else."""
    banner = read_exactly(sock, len(_wire.BANNER))
    if banner != _wire.BANNER:
        raise AssertionError("the host answered the preamble with %r" % banner)


def raw_handshake(sock, nonce=None):
    """Be a framed client on connected *sock*: the preamble alone, the host's banner, then a
    hello with *nonce* (random by default). Returns the host's answer ``(kind, payload)``:
    a welcome, or an acknowledgement (a host that is releasing answers "retry")."""
    sock.sendall(_wire.PREAMBLE)
    read_banner(sock)
    sock.sendall(_wire.frame(_wire.HELLO, nonce or os.urandom(_wire.NONCE_SIZE)))
    return read_frame(sock)


def send_raw(port, data, address="127.0.0.1"):
    """Be a raw 2.0.0-style client: connect, send, close, never read."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(WAIT)
        sock.connect((address, port))
        sock.sendall(data)


class ThreadLeakCheck(unittest.TestCase):
    """Fails a test that leaves a Socket_Singleton thread behind."""

    def setUp(self):
        super().setUp()
        self._threads_before = set(threading.enumerate())
        self.addCleanup(self._check_threads)

    def _check_threads(self):
        for thread in set(threading.enumerate()) - self._threads_before:
            if thread.name.startswith("Socket_Singleton"):
                thread.join(WAIT)
                self.assertFalse(thread.is_alive(), "thread %s leaked" % thread.name)



def open_fds():
    """How many file descriptors this process has open, or None where that cannot be known:
    Linux counts /proc/self/fd. (A Windows Python under Wine sees Wine's own descriptors
    there, which come and go: no measure of ours.)"""
    if os.name != "posix" or not os.path.isdir("/proc/self/fd"):
        return None
    return len(os.listdir("/proc/self/fd"))


def hand_off(port, args=(), address="127.0.0.1", **kwargs):
    """Launch in this process with ``sys.argv[1:] == args``; returns the MultipleSingletonsError
    of the launch (strict=False by default), or fails if the launch became the host."""
    kwargs.setdefault("strict", False)
    with mock.patch.object(sys, "argv", ["app", *args]):
        try:
            app = Socket_Singleton(address, port, **kwargs)
        except MultipleSingletonsError as err:
            return err
    app.release()
    raise AssertionError("the launch became the host of %s:%d" % (address, port))


def assert_port_free(test, port, address="127.0.0.1"):
    """A plain socket, without SO_REUSEADDR, can bind the port right now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((address, port))
        except OSError as err:
            test.fail("port %d is not free: %s" % (port, err))




class LogWatcher(logging.Handler):
    """Records what the library logs through logging.getLogger("Socket_Singleton")."""

    def __init__(self, test):
        super().__init__(logging.DEBUG)
        self.records = []
        self._cond = threading.Condition()
        logger = logging.getLogger("Socket_Singleton")
        logger.addHandler(self)
        test.addCleanup(logger.removeHandler, self)

    def emit(self, record):
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def messages(self):
        with self._cond:
            return [record.getMessage() for record in self.records]

    def wait_count(self, text, count, timeout=WAIT):
        """Wait until *count* messages contain *text*; fail if more or fewer come."""
        def found():
            return [m for m in self.messages_unlocked() if text in m]
        with self._cond:
            if not self._cond.wait_for(lambda: len(found()) >= count, timeout):
                raise AssertionError("%d messages containing %r, not %d: %r"
                                     % (len(found()), text, count, self.messages_unlocked()))
            if len(found()) != count:
                raise AssertionError("%d messages containing %r, not %d"
                                     % (len(found()), text, count))

    def messages_unlocked(self):
        return [record.getMessage() for record in self.records]

    def wait_for(self, text, timeout=WAIT):
        """The first record whose message contains *text*, waiting for it if need be."""
        def find():
            return next((r for r in self.records if text in r.getMessage()), None)
        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                raise AssertionError("nothing logged containing %r; got %r"
                                     % (text, [r.getMessage() for r in self.records]))
            return find()


def recv_exactly(conn, size, record):
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    record += data
    return bytes(data)


def read_to_end(conn, record):
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        record += chunk


class FakeServer:
    """A TCP server on 127.0.0.1 that is not a Socket_Singleton host: each connection is
    handed to ``handler(conn, record)`` on a thread of its own, and everything peers send is
    appended to that connection's ``record``. Closed when the test ends."""

    def __init__(self, test, handler):
        self._handler = handler
        self._stopping = False
        self._waker = None
        self.records = []
        self._threads = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        test.addCleanup(self.close)

    def _accept(self):
        while True:
            conn, peer = self._sock.accept()
            if self._stopping and peer == self._waker:
                conn.close()
                return
            record = bytearray()
            self.records.append(record)
            thread = threading.Thread(target=self._serve, args=(conn, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn, record):
        with conn:
            conn.settimeout(WAIT)
            try:
                self._handler(conn, record)
            except (OSError, EOFError):
                pass

    def close(self):
        if self._stopping:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as waker:
            waker.bind(("127.0.0.1", 0))
            self._waker = waker.getsockname()
            self._stopping = True
            waker.settimeout(WAIT)
            waker.connect(("127.0.0.1", self.port))  # served after every earlier peer
        self._acceptor.join(WAIT)
        self._sock.close()
        for thread in self._threads:
            thread.join(WAIT)

    def assert_nothing_of_the_users(self, test, args=(), secret=None):
        """No connection ever carried one of *args* or the *secret*."""
        test.assertTrue(self.records, "the client never connected")
        needles = [os.fsencode(arg) for arg in args]
        if secret is not None:
            needles.append(secret.encode("utf-8"))
        for record in self.records:
            for needle in needles:
                test.assertFalse(needle in record, "the server received %r" % needle)


def config(port, **kwargs):
    """test_app's configuration for a launch (or host) on *port* with these constructor kwargs."""
    return {"kwargs": dict(kwargs, port=port)}


def end_by_stdin(proc):
    """End a helper process that exits when its stdin closes; kill it if it does not."""
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        stream.close()
