"""release() and the host's lifecycle: when release() returns the port is free and the
threads are gone, whichever thread calls it, re-entered or interrupted at any line; the
context manager, timeout and release_threshold; no leaks and an idle host that sleeps;
children (fork, spawn) that never hold the port; a restart right after SIGKILL."""

import errno
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import warnings
from unittest import mock

from Socket_Singleton import Socket_Singleton, _net, _tuning, _wire

from . import support
from .support import (
    HostTestCase,
    assert_port_free,
    config,
    connect,
    hand_off,
    hello,
    launch_on,
    library_thread,
    library_threads,
    wait_closed,
)

POSIX = support.POSIX


class TestLifecycle(HostTestCase):

    def test_listening_when_the_constructor_returns(self):
        for _ in range(20):
            app = Socket_Singleton(port=0)
            try:
                with socket.create_connection(("127.0.0.1", app.port), support.WAIT):
                    pass  # connect() would be refused by a socket that only binds
            finally:
                app.release()

    def test_port_free_when_release_returns(self):
        port = support.free_port()
        collector = support.Collector()
        for i in range(50):
            app = Socket_Singleton(port=port)
            self.addCleanup(app.release)  # idempotent; only matters if a cycle fails
            app.trace(collector)
            self.assertEqual(hand_off(port, ["cycle-%d" % i]).reason, "delivered")
            support.send_raw(port, b"plain-%d\0" % i)
            silent = connect(port)  # still open when release() runs
            try:
                collector.wait(2 * (i + 1))
                app.release()
                assert_port_free(self, port)  # no SO_REUSEADDR: no TIME_WAIT may be left
            finally:
                silent.close()
        self.assertEqual(len(collector.received), 100)

    def _released_promptly(self, app):
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)

    def test_release_from_another_thread(self):
        app = self.host()
        thread = threading.Thread(target=app.release)
        thread.start()
        thread.join(support.WAIT)
        self.assertFalse(thread.is_alive(), "release() deadlocked")
        self._released_promptly(app)
        app.release()  # idempotent

    def test_release_from_a_timer(self):
        app = self.host()
        timer = threading.Timer(0, app.release)
        timer.start()
        timer.join(support.WAIT)
        self.assertFalse(timer.is_alive(), "release() deadlocked")
        self._released_promptly(app)

    def test_release_from_its_own_timeout(self):
        app = self.host(timeout=0.5)
        timers = [t for t in library_threads() if t.name.endswith("-timeout")]
        self.assertEqual(len(timers), 1)
        timers[0].join(support.WAIT)
        self.assertFalse(timers[0].is_alive(), "release() deadlocked")
        self._released_promptly(app)

    def test_release_from_inside_an_observer(self):
        app = self.host()
        returned = threading.Event()

        def observer(args):
            app.release()
            returned.set()

        app.trace(observer)
        support.send_raw(app.port, b"go\0")
        self.assertTrue(returned.wait(support.WAIT), "release() deadlocked in the observer")
        self._released_promptly(app)

    def test_release_from_main_thread_while_an_observer_is_blocked(self):
        app = self.host()
        entered, unblock = threading.Event(), threading.Event()

        def observer(args):
            entered.set()
            unblock.wait(support.WAIT)

        app.trace(observer)
        # Should release() wait for the observer, the watchdog ends the wait instead of a hang.
        watchdog = threading.Timer(support.WAIT, unblock.set)
        watchdog.start()
        self.addCleanup(watchdog.join)
        self.addCleanup(watchdog.cancel)
        self.addCleanup(unblock.set)
        support.send_raw(app.port, b"go\0")
        self.assertTrue(entered.wait(support.WAIT))
        app.release()
        self.assertFalse(unblock.is_set(), "release() waited for the blocked observer")
        self._released_promptly(app)

    def test_release_waits_for_a_listener_that_released_on_its_own(self):
        app = self.host(release_threshold=1)
        with hello(app.port) as peer:
            # An empty launch reaches the threshold: the listener releases at once, then gives
            # this answered client (which has not closed yet) a moment to close first.
            self.assertEqual(launch_on(peer, []),
                             (_wire.IGNORED, "there were no arguments to deliver"))
            app.release()
            self.assertIsNone(library_thread(app.port, "listener"))
            assert_port_free(self, app.port)
        self.assertFalse(app.listening)

    @unittest.skipUnless(hasattr(signal, "pthread_kill"), "needs signal.pthread_kill")
    def test_release_reentered_by_a_signal_handler_while_it_waits(self):
        # A signal handler that calls release() while release() waits on the same thread for
        # the listener (which gives an unanswered peer its shutdown grace).
        app = self.host()
        inner_returned = threading.Event()

        def handler(signum, frame):
            app.release()
            inner_returned.set()

        previous = signal.signal(signal.SIGUSR1, handler)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        with connect(app.port) as peer:
            peer.sendall(_wire.PREAMBLE)  # then silent: release() waits out its grace
            support.read_banner(peer)
            self.signal_main_once_answered(peer, signal.SIGUSR1)
            app.release()
        self.assertTrue(inner_returned.is_set())
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)

    @unittest.skipUnless(hasattr(signal, "pthread_kill"), "needs signal.pthread_kill")
    def test_ctrl_c_inside_release_then_release_again_frees_the_port(self):
        # Issue 15: an observer busy delivering, a second launch queued, a peer that sent the
        # preamble and sits there. KeyboardInterrupt arrives while release() waits; the
        # program calls release() again, which must return with the port free.
        app = self.host()
        observer, entered, _ = support.blocking_observer(self)
        app.trace(observer)
        support.send_raw(app.port, b"first\0")
        self.assertTrue(entered.wait(support.WAIT))
        self.assertEqual(hand_off(app.port, ["second"]).reason, "queued")
        with connect(app.port) as peer:
            peer.sendall(_wire.PREAMBLE)
            support.read_banner(peer)
            self.signal_main_once_answered(peer, signal.SIGINT)
            try:
                app.release()
            except KeyboardInterrupt:
                app.release()
            else:
                self.fail("the SIGINT did not arrive inside release()")
            assert_port_free(self, app.port)
        self.assertEqual(app.arguments, (("second",),))

    def signal_main_once_answered(self, peer, signum):
        """Send *signum* to this (the main) thread once release() has told *peer* (which
        stays silent after the banner) to try again: it then waits for the listener, which
        gives the peer its grace to close."""
        main = threading.get_ident()

        def fire():
            kind, payload = support.read_frame(peer)
            assert (kind, payload[:1]) == (_wire.ACK, _wire.RETRY), (kind, payload)
            signal.pthread_kill(main, signum)

        thread = threading.Thread(target=fire, daemon=True)
        thread.start()
        self.addCleanup(thread.join, support.WAIT)


class TestContextManager(HostTestCase):

    def test_context_manager(self):
        app = Socket_Singleton(port=0)
        self.addCleanup(app.release)
        with app as entered:
            self.assertIs(entered, app)
            self.assertTrue(app.listening)
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)

    def test_context_manager_releases_on_exception(self):
        with self.assertRaises(KeyError):  # the exception is not swallowed
            with Socket_Singleton(port=0) as app:
                self.addCleanup(app.release)
                raise KeyError("inside")
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)


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
    """release() is exact under interruption and never deadlocks in a signal handler."""

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


class TestTimeoutTimer(HostTestCase):

    def test_no_timer_outlives_a_release_before_the_constructor_returned(self):
        port = support.free_port()
        test = self

        class Hook:  # _net.hook: starts each library thread
            def socket(self, sock):
                return sock

            def start(self, thread):
                thread.start()
                if thread.name.endswith("-listener"):
                    # An empty launch reaches release_threshold=1 before the constructor
                    # goes on.
                    support.send_raw(port, b"\0")
                    thread.join(support.WAIT)
                    test.assertFalse(thread.is_alive())

        _net.hook = Hook()
        try:
            app = self.host(port=port, release_threshold=1, timeout=2 * support.WAIT)
        finally:
            _net.hook = None
        timer = library_thread(port, "timeout")
        if timer is not None:
            self.addCleanup(timer.cancel)  # only if this test fails
            timer.join(support.WAIT)
            self.assertFalse(timer.is_alive(), "the timeout timer outlived the release")
        self.assertEqual(app.clients, 1)
        self.assertFalse(app.listening)
        assert_port_free(self, port)


class TestReleaseThreshold(HostTestCase):
    """release_threshold: the launch that reaches it is delivered, then the port is released."""

    def test_delivered_while_the_port_is_still_held(self):
        app = self.host(release_threshold=2)
        seen = []
        app.trace(lambda args: seen.append((args, app.listening)))
        self.assertEqual(hand_off(app.port, ["first"]).reason, "delivered")
        self.assertEqual(hand_off(app.port, ["last"]).reason, "delivered")
        self.assertEqual(seen, [(("first",), True), (("last",), True)])
        # ... and released right after: the next launch becomes the host.
        with mock.patch.object(sys, "argv", ["app", "next"]):
            successor = Socket_Singleton(port=app.port, handoff_timeout=support.WAIT)
        successor.release()
        self.assertFalse(app.listening)

    def test_a_blocked_observer_does_not_keep_the_port(self):
        unblock = threading.Event()
        self.addCleanup(unblock.set)
        with _tuning.override(delivery_wait=0.2):
            app = self.host(release_threshold=1)
            app.trace(lambda args: unblock.wait(support.WAIT))
            self.assertEqual(hand_off(app.port, ["stuck"]).reason, "queued")
            # The observer is still blocked, yet the port goes: a new launch takes it.
            with mock.patch.object(sys, "argv", ["app"]):
                successor = Socket_Singleton(port=app.port, handoff_timeout=support.WAIT)
            successor.release()
        unblock.set()

    def test_observers_quicker_than_the_answer_hold_nothing_up(self):
        # The launch that reaches the threshold may be delivered before the host answers it.
        # The host must still answer it and drain, leaving the release to the dispatcher;
        # releasing on the listener's thread as well made the two threads wait for each
        # other until stop_wait ran out (review of 1eccf25).
        with _tuning.override(stop_wait=10 * support.WAIT):
            app = self.host(release_threshold=1)
            collector = support.Collector()
            app.trace(collector)
            outcome = hand_off(app.port, ["last"], handoff_timeout=support.WAIT)
        self.assertEqual(outcome.reason, "delivered")
        self.assertEqual(collector.wait(1), [("last",)])
        self.assert_released(app)

    def assert_released(self, app):
        """The threshold's release runs after the answer: wait for the listener to end."""
        listener = library_thread(app.port, "listener")
        if listener is not None:
            listener.join(support.WAIT)
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)

    def test_an_override_of_release_sees_every_end(self):
        # 2.0.0 ended through self.release() (timeout, threshold); a subclass that overrides
        # release() to clean up must see those ends too.
        ended = []

        class App(Socket_Singleton):
            def release(self):
                ended.append(self.port)
                super().release()

        app = App(port=0, release_threshold=1)
        self.addCleanup(app.release)
        app.trace(support.Collector())
        self.assertEqual(hand_off(app.port, ["last"]).reason, "delivered")
        self.assert_released(app)
        self.assertEqual(ended[:1], [app.port])

        timed = App(port=0, timeout=0.05)
        self.addCleanup(timed.release)
        timer = library_thread(timed.port, "timeout")
        timer.join(support.WAIT)
        self.assertFalse(timer.is_alive())
        self.assertEqual(ended[1:2], [timed.port])
        self.assertFalse(timed.listening)


@unittest.skipUnless(sys.platform.startswith("linux"), "reads /proc/self")
class TestLeaksAndIdle(HostTestCase):

    def test_no_leak_over_300_cycles(self):
        fds, threads = support.open_fds(), threading.active_count()
        collector = support.Collector()
        for i in range(300):
            app = Socket_Singleton(port=0, timeout=60)
            try:
                app.trace(collector)
                if i % 10 == 0:
                    support.send_raw(app.port, b"%d\0" % i)
                    collector.wait(i // 10 + 1)
            finally:
                app.release()
            # When release() returns the listener and dispatch threads are gone.
            self.assertEqual([t for t in library_threads() if not t.name.endswith("-timeout")],
                             [])
        for thread in library_threads():  # cancelled timers end on their own
            thread.join(support.WAIT)
        self.assertEqual(support.open_fds(), fds)
        self.assertEqual(threading.active_count(), threads)

    def test_idle_listener_does_not_wake_up(self):
        tasks_before = set(os.listdir("/proc/self/task"))
        threads_before = set(library_threads())
        app = self.host()
        collector = support.Collector()
        app.trace(collector)
        # The dispatch thread starts with the first launch.
        self.assertEqual(hand_off(app.port, ["warm-up"]).reason, "delivered")
        (listener,) = [t for t in library_threads() if t.name.endswith("-listener")]
        (dispatch,) = [t for t in library_threads() if t.name.endswith("-dispatch")]
        if hasattr(listener, "native_id"):
            listener, dispatch = listener.native_id, dispatch.native_id
        else:  # Python 3.7 has no Thread.native_id: the kernel tasks the host started
            new_tasks = sorted(int(task) for task in
                               set(os.listdir("/proc/self/task")) - tasks_before)
            self.assertEqual(len(new_tasks), len(set(library_threads()) - threads_before),
                             "every new task is one of the host's threads")
            listener, dispatch = new_tasks  # which is which does not matter: both must sleep

        def switches(task):
            with open("/proc/self/task/%d/status" % task) as f:
                fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
            return sum(int(value) for value in fields.values())

        # Let both threads finish with that launch and settle into their blocking wait.
        before = None
        for _ in range(50):
            sample = switches(listener), switches(dispatch)
            if sample == before:
                break
            before = sample
            threading.Event().wait(0.2)
        threading.Event().wait(1.0)  # something that must NOT happen: a bounded wait is fine
        after = switches(listener), switches(dispatch)
        self.assertEqual(after, before, "an idle thread woke up")


def _wait_in_child(started, finish):
    started.set()
    finish.wait(support.WAIT)


@unittest.skipUnless(POSIX and hasattr(os, "register_at_fork"), "fork is POSIX")
class TestForkedChild(HostTestCase):

    def test_a_forked_child_does_not_keep_the_port(self):
        app = self.host()
        context = multiprocessing.get_context("fork")
        started, finish = context.Event(), context.Event()
        child = context.Process(target=_wait_in_child, args=(started, finish))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            child.start()
        self.addCleanup(child.close)
        self.addCleanup(self._end, child, finish)
        self.assertTrue(started.wait(support.WAIT))
        app.release()
        self.assertTrue(child.is_alive())
        assert_port_free(self, app.port)
        self._end(child, finish)
        self.assertEqual(child.exitcode, 0)

    @staticmethod
    def _end(child, finish):
        finish.set()
        child.join(support.WAIT)
        if child.is_alive():
            child.kill()
            child.join()


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
    """A child started by spawn or forkserver gets an inert instance."""

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


@unittest.skipIf(os.name != "posix", "SIGKILL is POSIX")
class TestKilledHost(unittest.TestCase):

    def test_restart_right_after_sigkill(self):
        host, port = support.start_host(self, config(0))
        self.assertEqual(support.run_client(["before"], config(port))[0], 0)
        host.wait_for("launch")
        # Accepted and answered: the host holds its side of each.
        peers = [support.hello(port) for _ in range(3)]
        try:
            host.proc.kill()
            host.proc.wait(support.WAIT)
            for peer in peers:
                wait_closed(peer)
        finally:
            for peer in peers:
                peer.close()
        # The dead host's side of those connections now sits in TIME_WAIT on the port.
        with socket.socket() as plain:
            with self.assertRaises(OSError) as cm:
                plain.bind(("127.0.0.1", port))
            self.assertEqual(cm.exception.errno, errno.EADDRINUSE)
        support.assert_becomes_host(self, port, ["after"])


if __name__ == "__main__":
    unittest.main()
