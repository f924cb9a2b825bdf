"""Faults: out of descriptors, failed socket operations and thread starts, interrupted
release(), untrace() races, limits, and multiprocessing children.

Socket faults are injected through the library's one testing hook, ``_net.hook``: every socket
a host opens passes through ``hook.socket()`` and every library thread is started by
``hook.start()``."""

import errno
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from Socket_Singleton import Socket_Singleton, _net

from . import support
from .support import assert_port_free, hand_off
from .test_api import HostTestCase

POSIX = os.name == "posix"
HANDOFF = 2.0  # handoff_timeout of the launches below
SLACK = 1.5  # seconds a launch may take beyond it on a busy machine


def library_threads(port):
    return [t for t in threading.enumerate()
            if t.name.startswith("Socket_Singleton-%d-" % port)]


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
    """2. A constructor that raises after the bind leaves nothing running and the port free."""

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
    """1. Should a library thread die anyway (a bug), the port goes at once and no launch is
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
    """1. Out of file descriptors, the host goes on serving (and on 3.7/3.8 does not abort)."""

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
        code, events, err = support.run_client(["later"], {"kwargs": {"port": port}})
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


class TestLimits(HostTestCase):
    """4. Numbers out of range raise ValueError at once, with the allowed range."""

    def test_timeouts_beyond_threading_timeout_max(self):
        top = int(threading.TIMEOUT_MAX)
        with self.assertRaises(ValueError) as caught:
            Socket_Singleton(port=0, timeout=1e10 if top < 1e10 else 1e300)
        self.assertEqual(str(caught.exception),
                         "timeout must be between 0 and %d seconds" % top)
        with self.assertRaises(ValueError) as caught:
            Socket_Singleton(port=0, handoff_timeout=1e300)
        self.assertEqual(str(caught.exception),
                         "handoff_timeout must be greater than 0 and at most %d seconds" % top)

    def test_the_largest_timeouts_work(self):
        top = int(threading.TIMEOUT_MAX)
        app = self.host(timeout=top)
        collector = self.collector(app)
        self.assertEqual(hand_off(app.port, ["x"], handoff_timeout=top).reason, "delivered")
        self.assertEqual(collector.received, [("x",)])
        timer = [t for t in library_threads(app.port) if t.name.endswith("-timeout")]
        self.assertEqual(len(timer), 1)
        self.assertTrue(timer[0].is_alive())  # not killed by an OverflowError
        app.release()
        timer[0].join(support.WAIT)
        self.assertFalse(timer[0].is_alive())


class TestUntraceExact(HostTestCase):
    """6. Once untrace() returns, no call of that observer starts."""

    def test_untrace_while_dispatch_is_about_to_call(self):
        untraced, paused, resume, armed = (threading.Event() for _ in range(4))
        late, calls, exits = [], [], []
        condition_exit = threading.Condition.__exit__.__code__

        def on_return(frame, event, arg):
            # The dispatch thread leaves its lock twice before it calls the observer: after
            # taking the launch, and after checking the observer is still registered. Pause
            # it at the second, between the check and the call.
            if event == "return":
                exits.append(frame)
                if len(exits) == 2:
                    paused.set()
                    resume.wait(support.WAIT)

        def tracer(frame, event, arg):
            if (armed.is_set() and frame.f_code is condition_exit
                    and threading.current_thread().name.endswith("-dispatch")):
                return on_return
            return None

        threading.settrace(tracer)  # for the threads the constructor starts
        try:
            app = self.host()
        finally:
            threading.settrace(None)

        def observer(args):
            calls.append(args)
            if untraced.is_set():
                late.append(args)

        app.trace(observer)
        armed.set()
        support.send_raw(app.port, b"go\0")
        self.assertTrue(paused.wait(support.WAIT), "the dispatch thread did not pause")

        def untrace():
            app.untrace(observer)
            untraced.set()

        helper = threading.Thread(target=untrace)
        helper.start()
        untraced.wait(support.SHORT)  # returns now (too early) or once the call is over
        resume.set()
        helper.join(support.WAIT)
        self.assertTrue(untraced.is_set())
        self.assertEqual(calls, [("go",)])
        self.assertEqual(late, [], "a call started after untrace() returned")

    def test_untrace_from_inside_the_observer(self):
        app = self.host()
        returned = threading.Event()

        def observer(args):
            app.untrace(observer)
            returned.set()

        app.trace(observer)
        collector = self.collector(app)
        support.send_raw(app.port, b"one\0")
        self.assertTrue(returned.wait(support.WAIT), "untrace() deadlocked in its observer")
        collector.wait(1)
        support.send_raw(app.port, b"two\0")
        collector.wait(2)



# At each line that runs inside release() (of this package; of any module for the signal
# case), either raise KeyboardInterrupt or call a "signal handler" that calls release() itself
# (a handler runs between two lines of the thread it interrupts). Run in a child process, so
# that a deadlock fails the test instead of hanging the suite.
_INTERRUPT_SCRIPT = r"""
import os, socket, sys, threading
from Socket_Singleton import Socket_Singleton

MODE = sys.argv[1]
PACKAGE = os.path.dirname(sys.modules["Socket_Singleton"].__file__)
lines = [0]
target = [None]


seen = set()


def tracer(frame, event, arg):
    if MODE == "raise" and not frame.f_code.co_filename.startswith(PACKAGE):
        return None
    if event == "line":
        if MODE == "raise":
            # A line seen again in the same frame is a loop, or the end of a "with" block,
            # where an exception from a tracer skips __exit__ (a real interrupt cannot).
            if (id(frame), frame.f_lineno) in seen:
                return tracer
            seen.add((id(frame), frame.f_lineno))
        lines[0] += 1
        if lines[0] == target[0]:
            if MODE == "raise":
                raise KeyboardInterrupt
            target[1]()
    return tracer


def check(app, calls):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", app.port))  # the port is free
    for thread in threading.enumerate():
        if thread.name.startswith("Socket_Singleton-%d-" % app.port):
            thread.join(30)
            assert not thread.is_alive(), thread.name
    assert not app.listening
    assert calls == [], calls


def once(k):
    app = Socket_Singleton(port=0, timeout=60)
    calls = []
    app.trace(lambda args: calls.append(args))  # 3.7 cannot hash calls.append
    target[:] = [k, app.release]
    lines[0] = 0
    seen.clear()
    sys.settrace(tracer)
    try:
        app.release()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    if MODE == "raise":
        app.release()  # finishes the job
    check(app, calls)
    return lines[0]


total = once(0)
for k in range(1, total + 1):
    once(k)
print(total)
"""


class TestReleaseInterrupted(unittest.TestCase):
    """3. release() is exact under interruption and never deadlocks in a signal handler."""

    def run_script(self, mode):
        proc = subprocess.Popen([sys.executable, "-c", _INTERRUPT_SCRIPT, mode],
                                env=support.app_env({}), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        out, err = support.communicate(proc, 4 * support.WAIT)
        self.assertEqual(proc.returncode, 0, err.decode(errors="replace")[-3000:])
        self.assertGreater(int(out), 5)  # lines it interrupted, each in turn

    def test_keyboard_interrupt_at_each_line_then_release_again(self):
        self.run_script("raise")

    def test_release_from_a_signal_handler_at_each_line(self):
        self.run_script("signal")


_SPAWN_SCRIPT = r"""
import multiprocessing, sys
from Socket_Singleton import Socket_Singleton

app = Socket_Singleton(port=int(sys.argv[1]), strict=False)


def work(n):
    return (n * n, app.listening)


if __name__ == "__main__":
    with multiprocessing.get_context(sys.argv[2]).Pool(2) as pool:
        print(pool.map(work, range(4)), app.clients, app.listening, flush=True)
    app.release()
"""


@unittest.skipUnless(POSIX or sys.platform == "win32", "multiprocessing")
class TestMultiprocessingChildren(unittest.TestCase):
    """9. A child started by spawn or forkserver gets an inert instance."""

    def test_a_pool_under_spawn(self):
        with tempfile.TemporaryDirectory() as where:
            script = os.path.join(where, "pool_app.py")
            with open(script, "w") as f:
                f.write(_SPAWN_SCRIPT)
            proc = subprocess.Popen(
                [sys.executable, script, str(support.free_port()), "spawn"],
                env=support.app_env({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = support.communicate(proc)
        self.assertEqual(proc.returncode, 0, err.decode(errors="replace"))
        # The workers did their work, sent the host nothing, and none held the port.
        self.assertEqual(out.decode().strip(),
                         "[(0, False), (1, False), (4, False), (9, False)] 0 True")
