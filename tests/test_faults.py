"""Resource faults on both sides. The host: its socket operations fail in turn through the
library's one testing hook, ``_net.hook`` (every socket a host opens passes through
``hook.socket()``, every library thread is started by ``hook.start()``), a thread that
cannot start, a library thread that dies, a process out of file descriptors. The launch:
each socket operation of the client fails in turn (EINTR, ECONNRESET, ENOBUFS, EMFILE), or
reads one byte at a time, or writes short; it ends within handoff_timeout plus a little,
with a clear outcome, its arguments delivered at most once (exactly once when it says so),
no traceback and no leaked descriptor."""

import errno
import os
import socket
import threading
import time
import unittest
from typing import ClassVar
from unittest import mock

from Socket_Singleton import _net

from . import support
from .support import HostTestCase, assert_port_free, hand_off, library_threads

POSIX = support.POSIX
HANDOFF = 2.0  # handoff_timeout of the launches below
SLACK = 1.5  # seconds a host-side faulty launch may take beyond it on a busy machine
CLIENT_SLACK = 1.0  # seconds beyond handoff_timeout a faulty launch may take (a loaded machine)


# -- the host's side ---------------------------------------------------------------------------

class FaultySocket:
    """A host's socket whose chosen operation fails (as the plan says) and otherwise works."""

    def __init__(self, sock, plan):
        self._sock = sock
        self._plan = plan

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def fileno(self):
        return self._sock.fileno()

    def _maybe_fail(self, op):
        err = self._plan.fault(op)
        if err is not None:
            raise OSError(err, os.strerror(err))

    def accept(self):
        self._maybe_fail("accept")
        sock, peer = self._sock.accept()
        return FaultySocket(sock, self._plan), peer

    def recv(self, size, *flags):
        self._maybe_fail("recv")
        if self._plan.tiny_reads:
            size = 1
        return self._sock.recv(size, *flags)

    def send(self, data, *flags):
        self._maybe_fail("send")
        if self._plan.short_writes and len(data) > 1:
            data = bytes(data[:len(data) // 2])
        return self._sock.send(data, *flags)

    def sendall(self, data, *flags):
        self._maybe_fail("send")
        return self._sock.sendall(data, *flags)

    def setsockopt(self, *args):
        self._maybe_fail("setsockopt")
        return self._sock.setsockopt(*args)

    def bind(self, address):
        self._maybe_fail("bind")
        return self._sock.bind(address)

    def listen(self, *args):
        self._maybe_fail("listen")
        return self._sock.listen(*args)

    def close(self):
        self._sock.close()  # as on Linux: close() that reports EINTR has closed the descriptor
        self._maybe_fail("close")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class FaultPlan:
    """The hook: fails operation *op* with *err* on its calls number *first* .. *first+count-1*,
    and optionally makes every read 1 byte and every write short."""

    def __init__(self, op=None, err=None, first=1, count=1, tiny_reads=False,
                 short_writes=False, failing_thread=None):
        self.op, self.err, self.first, self.count = op, err, first, count
        self.tiny_reads, self.short_writes = tiny_reads, short_writes
        self.failing_thread = failing_thread  # name suffix of a thread whose start fails
        self.calls = 0
        self.injected = 0
        self._lock = threading.Lock()

    def fault(self, op):
        if op != self.op:
            return None
        with self._lock:
            self.calls += 1
            if self.first <= self.calls < self.first + self.count:
                self.injected += 1
                return self.err
        return None

    def socket(self, sock):
        return FaultySocket(sock, self)

    def start(self, thread):
        if self.failing_thread and thread.name.endswith(self.failing_thread):
            raise RuntimeError("can't start new thread")
        thread.start()


class FaultTestCase(HostTestCase):

    def setUp(self):
        super().setUp()
        self.addCleanup(setattr, _net, "hook", None)
        self.uncaught = []
        if hasattr(threading, "excepthook"):  # 3.8+: a thread's traceback would reach stderr
            previous = threading.excepthook
            threading.excepthook = self.uncaught.append
            self.addCleanup(setattr, threading, "excepthook", previous)

    def faulty_host(self, plan, **kwargs):
        """A host whose sockets (made while the hook is set) follow *plan*."""
        _net.hook = plan
        try:
            return self.host(**kwargs)
        finally:
            _net.hook = None

    def assert_no_uncaught(self):
        self.assertEqual(self.uncaught, [], "a library thread died with an exception")


class TestSocketFaults(FaultTestCase):
    """Each socket operation of the host fails in turn; the promises hold."""

    ERRNOS = (errno.EINTR, errno.ECONNRESET, errno.ENOBUFS, errno.EMFILE)

    def launch_through(self, plan, count=3, **host_kwargs):
        fds = support.open_fds()
        app = self.faulty_host(plan, **host_kwargs)
        collector = self.collector(app)
        outcomes = []
        for i in range(count):
            started = time.monotonic()
            err = hand_off(app.port, ["launch-%d" % i], handoff_timeout=HANDOFF)
            self.assertLess(time.monotonic() - started, HANDOFF + SLACK, "the launch hung")
            outcomes.append(err.reason)
        delivered = ["launch-%d" % i for i, reason in enumerate(outcomes)
                     if reason in ("delivered", "queued")]
        if delivered:
            collector.wait(len(delivered))
        if app.listening:  # no dead thread while the port is held
            self.assertEqual(len(library_threads(app.port)), 2, library_threads(app.port))
        got = [args[0] for args in collector.received]
        self.assertEqual(sorted(got), sorted(set(got)), "a launch was delivered twice")
        self.assertEqual(sorted(got), delivered, "a launch was lost (outcomes %s)" % outcomes)
        app.release()
        assert_port_free(self, app.port)
        self.assert_no_uncaught()
        if fds:
            self.assertEqual(support.open_fds(), fds, "a descriptor leaked")
        return outcomes

    def test_accept_fails(self):
        for err in self.ERRNOS:
            with self.subTest(errno=errno.errorcode[err]):
                plan = FaultPlan("accept", err)
                self.assertEqual(self.launch_through(plan), ["delivered"] * 3)
                self.assertEqual(plan.injected, 1)

    def test_recv_fails(self):
        for err in self.ERRNOS:
            with self.subTest(errno=errno.errorcode[err]):
                plan = FaultPlan("recv", err)
                # The peer whose read failed is dropped before its launch arrived (EINTR is
                # retried as "nothing yet"); its launch retries and is delivered once.
                self.assertEqual(self.launch_through(plan), ["delivered"] * 3)
                self.assertEqual(plan.injected, 1)

    def test_send_of_the_welcome_fails(self):
        for err in self.ERRNOS:
            with self.subTest(errno=errno.errorcode[err]):
                plan = FaultPlan("send", err)  # the first send is the first welcome
                self.assertEqual(self.launch_through(plan), ["delivered"] * 3)
                self.assertEqual(plan.injected, 1)

    def test_setsockopt_fails_when_a_peer_is_closed(self):
        for err in self.ERRNOS:
            with self.subTest(errno=errno.errorcode[err]):
                # Call 1 is SO_REUSEADDR at bind time; later ones reset closed peers.
                plan = FaultPlan("setsockopt", err, first=2, count=100)
                self.assertEqual(self.launch_through(plan), ["delivered"] * 3)

    def test_close_fails(self):
        for err in self.ERRNOS:
            with self.subTest(errno=errno.errorcode[err]):
                plan = FaultPlan("close", err, count=100)
                self.assertEqual(self.launch_through(plan), ["delivered"] * 3)
                self.assertGreater(plan.injected, 0)

    def test_one_byte_reads_and_short_writes(self):
        for tiny, short in ((True, False), (False, True), (True, True)):
            with self.subTest(tiny_reads=tiny, short_writes=short):
                plan = FaultPlan(tiny_reads=tiny, short_writes=short)
                self.assertEqual(self.launch_through(plan), ["delivered"] * 3)

    def test_a_plain_launch_read_one_byte_at_a_time(self):
        app = self.faulty_host(FaultPlan(tiny_reads=True))
        collector = self.collector(app)
        support.send_raw(app.port, b"one\0two\0")
        self.assertEqual(collector.wait(1), [("one", "two")])

    def test_setup_operations_fail(self):
        # A failure while the constructor binds is raised as the real error (only "address
        # in use" makes a launch a client), and leaves nothing behind.
        for op in ("setsockopt", "bind", "listen"):
            for err in self.ERRNOS:
                with self.subTest(op=op, errno=errno.errorcode[err]):
                    fds = support.open_fds()
                    port = support.free_port()
                    with self.assertRaises(OSError) as caught:
                        self.faulty_host(FaultPlan(op, err), port=port)
                    self.assertEqual(caught.exception.errno, err)
                    assert_port_free(self, port)
                    self.assertEqual(library_threads(port), [])
                    if fds:
                        self.assertEqual(support.open_fds(), fds, "a descriptor leaked")


class TestAtomicConstructor(FaultTestCase):
    """A constructor that raises after the bind leaves nothing running and the port free."""

    def test_each_thread_that_cannot_start(self):
        for name, kwargs in (("-dispatch", {}), ("-listener", {}),
                             ("-timeout", {"timeout": support.WAIT})):
            with self.subTest(thread=name):
                fds = support.open_fds()
                port = support.free_port()
                with self.assertRaisesRegex(RuntimeError, "can't start new thread"):
                    self.faulty_host(FaultPlan(failing_thread=name), port=port, **kwargs)
                for thread in library_threads(port):
                    thread.join(support.WAIT)
                self.assertEqual(library_threads(port), [])
                assert_port_free(self, port)
                if fds:
                    self.assertEqual(support.open_fds(), fds, "a descriptor leaked")
                app = self.host(port=port)  # and the port works for the next host
                self.assertTrue(app.listening)
                app.release()


class TestDeadLibraryThread(FaultTestCase):
    """Should a library thread die anyway (a bug), the port goes at once and no launch is
    told "queued" by a host that cannot deliver it."""

    def test_a_dispatcher_that_dies_releases_the_port(self):
        app = self.host()
        port = app.port

        class Bug:
            """An observer whose hash fails on the dispatch thread: a bug inside dispatch."""

            def __call__(self, args):
                pass

            def __hash__(self):
                if threading.current_thread().name.endswith("-dispatch"):
                    raise RuntimeError("a bug in dispatch")
                return id(self)

        app.trace(Bug())
        code, events, err = support.run_client(["after"], {"kwargs": {
            "port": port, "strict": False, "handoff_timeout": support.WAIT}})
        # The launch took over the port the dead host let go (it was never told "queued").
        self.assertEqual([e["event"] for e in events], ["host"], (events, err))
        self.assertEqual(code, 0, err)
        for thread in library_threads(port):
            thread.join(support.WAIT)
        self.assertFalse(app.listening)
        assert_port_free(self, port)
        self.assert_no_uncaught()


@unittest.skipUnless(POSIX and os.path.isdir("/proc/self/fd"), "RLIMIT_NOFILE, /proc")
class TestOutOfDescriptors(unittest.TestCase):
    """Out of file descriptors, the host goes on serving (and on 3.7/3.8 does not abort)."""

    def host(self, **config):
        config.setdefault("kwargs", {})
        config["kwargs"].update(port=0, verbose=True)
        app, port = support.start_host(self, dict(config, nofile=64))
        return app, port

    def test_launches_and_a_failing_observer_while_out_of_descriptors(self):
        app, port = self.host(observer_raises="the observer failed")
        app.send("exhaust")
        app.wait_for("exhausted")
        launches = [support.launch(["launch-%d" % i], {"kwargs": {
            "port": port, "strict": False, "handoff_timeout": support.WAIT}})
            for i in range(8)]
        try:
            # One descriptor is free: one peer at a time; the others wait in the backlog
            # while accept() fails with EMFILE, and each observer call raises.
            got = {support.decode_args(e)[0] for e in app.launches(len(launches))}
            self.assertEqual(got, {b"launch-%d" % i for i in range(len(launches))})
        finally:
            results = [support.communicate(proc) for proc in launches]
        for proc, (out, err) in zip(launches, results):
            self.assertNotIn(b'"event": "host"', out, "a launch became a second host")
            self.assertEqual(proc.returncode, 3, err)  # turned away (strict=False)
        app.send("replenish")
        threads = app.wait_for("replenished")["threads"]
        self.assertEqual(len([t for t in threads if t.startswith("Socket_Singleton")]), 2,
                         threads)
        code, events, err = support.run_client(["later"], support.config(port))
        self.assertEqual((code, events), (0, []), err)
        self.assertEqual(support.decode_args(app.wait_for("launch")), [b"later"])
        app.send("exit")
        err = support.communicate(app.proc)[1]
        self.assertEqual(app.proc.returncode, 0, err)
        self.assertNotIn(b"Exception in thread", err)  # no library thread died

    def test_release_while_out_of_descriptors(self):
        # CPython 3.7 and 3.8 abort ("libgcc_s.so.1 must be installed for pthread_exit to
        # work") when a thread ends while no descriptor is free, unless it is loaded already.
        app, _ = self.host()
        app.send("exhaust")
        app.wait_for("exhausted")
        app.send("release")
        app.wait_for("released")
        app.send("exit")
        err = support.communicate(app.proc)[1]
        self.assertEqual(app.proc.returncode, 0, err)


# -- the launch's side -------------------------------------------------------------------------

FAULTS = {
    "EINTR": InterruptedError(errno.EINTR, os.strerror(errno.EINTR)),
    "ECONNRESET": ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)),
    "ENOBUFS": OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS)),
    "EMFILE": OSError(errno.EMFILE, os.strerror(errno.EMFILE)),
}
# What a launch may end with when an operation fails once: delivered (the client asked again),
# or a clear local failure when this process ran out of resources before anything was sent.
TRANSIENT = ("EINTR", "ECONNRESET")


class FaultyClientSocket(socket.socket):
    """A client socket whose operation *plan[0]* raises *plan[1]* on its *plan[2]*-th call
    (counted across sockets: the client's retry uses a new one); or, with the plan
    ("recv", "one byte") / ("send", "short"), always reads one byte / writes one byte."""

    plan: ClassVar[tuple] = ("", None, 1)
    calls: ClassVar[dict] = {}  # operation -> calls so far, this launch
    opened: ClassVar[list] = []  # every socket this launch made

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        FaultyClientSocket.opened.append(self)

    def _maybe_fail(self, operation):
        name, fault, nth = FaultyClientSocket.plan
        calls = FaultyClientSocket.calls[operation] = FaultyClientSocket.calls.get(operation, 0) + 1
        if name == operation and isinstance(fault, OSError) and calls == nth:
            raise fault

    def connect(self, address):
        self._maybe_fail("connect")
        return super().connect(address)

    def send(self, data, *flags):
        self._maybe_fail("send")
        return self._send(data, *flags)

    def _send(self, data, *flags):
        if FaultyClientSocket.plan[:2] == ("send", "short"):
            data = data[:16]  # (one byte at a time is too slow under Wine for the deadline)
        return super().send(data, *flags)

    def sendall(self, data, *flags):
        self._maybe_fail("send")
        view = memoryview(data)
        while view:
            view = view[self._send(view, *flags):]

    def recv(self, size, *flags):
        self._maybe_fail("recv")
        if FaultyClientSocket.plan[:2] == ("recv", "one byte"):
            size = 1
        return super().recv(size, *flags)

    def close(self):
        super().close()  # as on POSIX, the descriptor is gone even when close() fails
        self._maybe_fail("close")


class TestClientFaults(unittest.TestCase):
    """Each socket operation of a launch fails in turn. The host runs in a process of its own,
    untouched by the faults."""

    @classmethod
    def setUpClass(cls):
        cls.host = support.AppProcess(config=support.config(0))
        cls.port = cls.host.wait_for("host")["port"]

    @classmethod
    def tearDownClass(cls):
        cls.host.stop()

    def launch(self, name, plan):
        """One in-process launch under *plan*; returns its MultipleSingletonsError and
        whether the host received its arguments (and how often)."""
        FaultyClientSocket.plan, FaultyClientSocket.calls, FaultyClientSocket.opened = plan, {}, []
        args = ["%s-%s" % (name, time.monotonic_ns())]
        before = support.open_fds()
        started = time.monotonic()
        with mock.patch.object(socket, "socket", FaultyClientSocket):
            error = hand_off(self.port, args, handoff_timeout=HANDOFF)
        self.assertLess(time.monotonic() - started, HANDOFF + CLIENT_SLACK)
        for sock in FaultyClientSocket.opened:
            self.assertEqual(sock.fileno(), -1, "a client socket was left open")
        if before is not None:
            self.assertEqual(support.open_fds(), before, "a descriptor leaked")
        # Every launch is followed by a sentinel; the host saw ours (once) before it, or not.
        sentinel = "sentinel-%s" % time.monotonic_ns()
        self.assertEqual(hand_off(self.port, [sentinel]).reason, "delivered")
        seen = []
        while True:
            event = self.host.wait_for("launch")
            got = [bytes.fromhex(arg).decode() for arg in event["args"]]
            if got == [sentinel]:
                break
            seen.append(got)
        return error, seen.count(args)

    def test_each_operation_failing_once(self):
        # The n-th send is the preamble, the hello, then the launch; the n-th read the banner,
        # the welcome, then the acknowledgement (each arrives in one read here).
        calls = {"connect": (1,), "send": (1, 2, 3), "recv": (1, 2, 3), "close": (1, 2)}
        for operation, nths in calls.items():
            for nth in nths:
                for name, fault in FAULTS.items():
                    with self.subTest(operation=operation, call=nth, fault=name):
                        self.check_fault(operation, nth, name, fault)

    def check_fault(self, operation, nth, name, fault):
        err, times = self.launch("%s-%d-%s" % (operation, nth, name), (operation, fault, nth))
        after_sending = operation in ("send", "recv") and nth == 3
        if name in TRANSIENT or operation == "close" or after_sending:
            # Asked again (the host answers a launch it already took), or nothing to do.
            self.assertEqual((err.reason, times), ("delivered", 1), err.detail)
        else:  # this process is out of resources before anything was sent: it says so
            self.assertEqual((err.reason, times), ("local-error", 0), err.detail)
            self.assertIn(os.strerror(fault.errno), err.detail)

    def test_the_largest_handoff_timeout_on_a_platform_with_small_socket_timeouts(self):
        class SmallTimeouts(socket.socket):
            # What Windows does with a timeout near threading.TIMEOUT_MAX (as seen under Wine).
            def settimeout(self, value):
                if value is not None and value > 2 ** 31 / 1000:
                    raise OverflowError("timeout doesn't fit into C timeval")
                super().settimeout(value)

        with mock.patch.object(socket, "socket", SmallTimeouts):
            error = hand_off(self.port, ["huge-timeout"],
                             handoff_timeout=int(threading.TIMEOUT_MAX))
        self.assertEqual(error.reason, "delivered")
        self.assertEqual(self.host.wait_for("launch")["args"], [b"huge-timeout".hex()])

    def test_one_byte_reads_and_short_writes(self):
        for plan in (("recv", "one byte", 0), ("send", "short", 0)):
            with self.subTest(plan=plan[:2]):
                err, times = self.launch("-".join(plan[:2]).replace(" ", "-"), plan)
                self.assertEqual((err.reason, times), ("delivered", 1), err.detail)


if __name__ == "__main__":
    unittest.main()
