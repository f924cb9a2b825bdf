"""The public API in one process: the constructor and its parameters, properties, str and
repr, the package's names, logging and verbose, and observers (trace, untrace, launches
that came before trace(), the dispatch thread)."""

import collections
import contextlib
import errno
import io
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import unittest

import Socket_Singleton as package
from Socket_Singleton import Launch, Socket_Singleton, _dispatch, _tuning, _wire

from . import support
from .support import (
    HostTestCase,
    LogWatcher,
    assert_port_free,
    hand_off,
    join_library_threads,
    library_threads,
    read_frame,
)


class TestProperties(HostTestCase):

    def assertShows(self, text, *parts):
        for part in parts:  # each a whole "name=value" item of the repr
            self.assertRegex(text, r"(?<!\w)%s(?=[,)])" % re.escape(part))

    def test_properties(self):
        with _tuning.override(delivery_wait=0.05):
            app = self.host()
            self.assertNotEqual(app.port, 0)  # port=0 asked for an ephemeral port
            self.assertTrue(app.listening)
            self.assertEqual(app.clients, 0)
            self.assertEqual(app.arguments, ())
            self.assertEqual(hand_off(app.port, ["one", "two"]).reason, "queued")
            self.assertEqual(hand_off(app.port, ["three"]).reason, "queued")
        self.assertEqual(app.clients, 2)
        self.assertEqual(app.arguments, (("one", "two"), ("three",)))
        self.assertTrue(all(isinstance(launch, Launch) for launch in app.arguments))
        for name in ("arguments", "clients", "listening"):
            with self.assertRaises(AttributeError, msg=name):
                setattr(app, name, 0)
        collector = self.collector(app)
        collector.wait(2)
        self.assertEqual(app.arguments, ())
        app.release()
        self.assertFalse(app.listening)
        self.assertEqual(app.clients, 2)

    def test_str(self):
        app = self.host()
        self.assertEqual(str(app), "Socket_Singleton(address='127.0.0.1', port=%d)" % app.port)

    def test_repr(self):
        secret = "hunter2-very-secret"
        app = self.host(timeout=30, client=False, strict=False, release_threshold=5,
                        max_clients=7, verbose=True, secret=secret, deliver_empty=True,
                        handoff_timeout=1.5)
        app.trace(support.Collector())
        app.trace(support.Collector())
        text = repr(app)
        self.assertTrue(text.startswith("Socket_Singleton(") and text.endswith(")"), text)
        self.assertShows(text, "address='127.0.0.1'", "port=%d" % app.port, "timeout=30",
                         "client=False", "strict=False", "release_threshold=5", "max_clients=7",
                         "verbose=True", "secret=***", "deliver_empty=True", "handoff_timeout=1.5",
                         "legacy_handoff=False", "observers=2", "clients=0", "listening=True")
        self.assertNotIn("hunter2", text)
        app.release()
        self.assertShows(repr(app), "listening=False")
        self.assertNotIn("hunter2", repr(app))

    def test_repr_counts_clients_and_shows_no_secret(self):
        app = self.host()
        self.collector(app)
        hand_off(app.port, ["a"])
        self.assertShows(repr(app), "timeout=0", "client=True", "strict=True",
                         "release_threshold=0", "max_clients=0", "verbose=False", "secret=None",
                         "deliver_empty=False", "handoff_timeout=2.0", "legacy_handoff=False",
                         "observers=1", "clients=1", "listening=True")

    def test_repr_hides_an_empty_secret(self):
        self.assertShows(repr(self.host(secret="")), "secret=***")


class TestPublicNames(support.ThreadLeakCheck):

    def test_all_is_the_public_api(self):
        self.assertEqual(sorted(package.__all__),
                         ["Launch", "MultipleSingletonsError", "Socket_Singleton", "__version__"])
        self.assertEqual(len(package.__all__), len(set(package.__all__)))
        for name in package.__all__:
            self.assertTrue(hasattr(package, name), name)
        self.assertIsInstance(package.__version__, str)
        # A new release, not one the changelog already lists (3.0.0 spoke protocol 1).
        with open(os.path.join(support.ROOT, "CHANGELOG.md"), encoding="utf-8") as changelog:
            released = re.findall(r"^## \[([0-9.]+)\]", changelog.read(), re.M)
        self.assertIn("3.0.0", released)
        self.assertNotIn(package.__version__, released)
        # Every public class or function the package exposes is in __all__.
        exposed = {name for name, value in vars(package).items()
                   if not name.startswith("_") and (isinstance(value, type) or callable(value))}
        self.assertLessEqual(exposed, set(package.__all__))
        namespace = {}
        exec("from Socket_Singleton import *", namespace)
        self.assertEqual(set(namespace) - {"__builtins__"}, set(package.__all__))

    def test_import_names(self):
        namespace = {}
        exec("from Socket_Singleton import Socket_Singleton, MultipleSingletonsError", namespace)
        self.assertIsInstance(namespace["Socket_Singleton"], type)  # the class, not a module
        self.assertIs(namespace["Socket_Singleton"], Socket_Singleton)
        self.assertTrue(issubclass(namespace["MultipleSingletonsError"], Exception))


class TestValidation(HostTestCase):

    def assertRejected(self, exc_type, name, value):
        with self.assertRaises(exc_type, msg="%s=%r" % (name, value)) as cm:
            self.host(**{name: value})  # a host only if validation let it through
        self.assertRegex(str(cm.exception), r"\b%s\b" % name)
        return str(cm.exception)

    def test_bad_types(self):
        bad = {
            "address": [1, None, b"127.0.0.1"],
            "port": ["1337", 1337.0, None, True, False],
            "timeout": ["1", None, True, [1]],
            "release_threshold": [1.0, "1", None, True],
            "max_clients": [1.0, "1", None, True],
            "secret": [1, b"secret"],
            "handoff_timeout": ["2", None, True],
        }
        for name, values in bad.items():
            for value in values:
                with self.subTest(name=name, value=value):
                    self.assertRejected(TypeError, name, value)

    def test_bool_is_not_a_port(self):
        message = self.assertRejected(TypeError, "port", True)
        self.assertRegex(message, r"^port\b")

    def test_bad_values_have_the_2_0_0_messages(self):
        expected = {
            ("port", -1): "port must be between 0 and 65535 (inclusive)",
            ("port", 65536): "port must be between 0 and 65535 (inclusive)",
            ("timeout", -1): "timeout must be greater than or equal to 0",
            ("timeout", -0.5): "timeout must be greater than or equal to 0",
            ("release_threshold", -1): "release_threshold must be greater than or equal to 0",
            ("max_clients", -1): "max_clients must be greater than or equal to 0",
        }
        for (name, value), message in expected.items():
            with self.subTest(name=name, value=value):
                self.assertEqual(self.assertRejected(ValueError, name, value), message)

    def test_other_bad_values(self):
        for name, value in [("timeout", float("nan")), ("timeout", float("inf")),
                            ("handoff_timeout", 0), ("handoff_timeout", -1),
                            ("handoff_timeout", float("nan"))]:
            with self.subTest(name=name, value=value):
                self.assertRejected(ValueError, name, value)

    def test_validation_happens_before_binding(self):
        port = support.free_port()
        with self.assertRaises(ValueError):
            Socket_Singleton(port=port, timeout=-1)
        assert_port_free(self, port)

    def test_fractional_timeouts_are_kept(self):
        app = self.host(timeout=0.5, handoff_timeout=0.25)
        self.assertEqual(app.timeout, 0.5)
        self.assertEqual(app.handoff_timeout, 0.25)
        app.release()
        app = self.host(timeout=2.75)
        self.assertEqual(app.timeout, 2.75)


class TestTimeoutBounds(HostTestCase):
    """Numbers out of range raise ValueError at once, with the allowed range."""

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


class TestAddresses(HostTestCase):

    @unittest.skipUnless(support.has_ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_loopback(self):
        app = self.host(address="::1")
        self.assertEqual(str(app), "Socket_Singleton(address='::1', port=%d)" % app.port)
        collector = support.Collector()
        app.trace(collector)
        code, events, err = support.run_client(["over", "ipv6"],
                                               {"kwargs": {"address": "::1", "port": app.port}})
        self.assertEqual((code, events, err), (0, [], ""))
        self.assertEqual(collector.wait(1), [("over", "ipv6")])
        self.assertEqual(hand_off(app.port, ["in-process"], address="::1").reason, "delivered")
        app.release()
        assert_port_free(self, app.port, "::1")

    @unittest.skipUnless(sys.platform.startswith("linux"), "counts /proc/self/fd")
    def test_other_bind_errors_are_raised(self):
        fds = support.open_fds()
        with self.assertRaises(OSError) as cm:
            Socket_Singleton(address="192.0.2.1", port=0)  # TEST-NET-1: not ours
        self.assertNotEqual(cm.exception.errno, errno.EADDRINUSE)
        self.assertEqual(support.open_fds(), fds)
        self.assertEqual(library_threads(), [])

    @unittest.skipUnless(os.name == "posix", "privileged ports are POSIX")
    def test_privileged_port_raises_permission_error(self):
        try:
            with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
                if int(f.read()) <= 1:
                    self.skipTest("any user may bind port 1 here")
        except OSError:
            pass
        if os.geteuid() != 0:
            with self.assertRaises(PermissionError):
                Socket_Singleton(port=1)
            return
        # As root, try it from a child that drops its privileges first.
        script = textwrap.dedent("""
            import os, sys
            from Socket_Singleton import Socket_Singleton, MultipleSingletonsError
            try:
                os.setgid(65534)
                os.setuid(65534)
            except OSError:
                sys.exit(77)
            try:
                Socket_Singleton(port=1)
            except PermissionError:
                sys.exit(0)
            except BaseException as err:
                print(type(err).__name__, err)
                sys.exit(1)
            sys.exit(2)
            """)
        result = subprocess.run([sys.executable, "-c", script], env=support.app_env({}),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                timeout=support.WAIT)
        if result.returncode == 77:
            self.skipTest("cannot drop privileges")
        self.assertEqual(result.returncode, 0, result.stdout)


class TestLoggingAndVerbose(HostTestCase):

    def raising_host(self, verbose, text):
        """A host whose first observer raises; returns (host, collector after it)."""
        app = self.host(verbose=verbose)
        calls = []

        def broken(args):
            calls.append(args)
            raise RuntimeError(text)

        app.trace(broken)
        return app, self.collector(app), calls

    def test_logs_through_the_socket_singleton_logger(self):
        watcher = LogWatcher(self)
        root_handlers = list(logging.getLogger().handlers)
        app, after, _ = self.raising_host(False, "boom-logged")
        hand_off(app.port, ["x"])
        after.wait(1)
        record = watcher.wait_for("raised")
        self.assertEqual(record.getMessage(),
                         "Observer broken raised exception: RuntimeError: boom-logged")
        self.assertEqual(record.name, "Socket_Singleton")
        self.assertEqual(record.levelno, logging.WARNING)
        self.assertTrue(record.args)  # %-style arguments, formatted only when needed
        self.assertIs(record.exc_info[0], RuntimeError)
        self.assertEqual(str(record.exc_info[1]), "boom-logged")
        self.assertEqual(logging.getLogger().handlers, root_handlers)  # no basicConfig

    def test_quiet_prints_nothing(self):
        watcher = LogWatcher(self)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            app, after, _ = self.raising_host(False, "boom-quiet")
            hand_off(app.port, ["x"])
            after.wait(1)
            watcher.wait_for("raised")
            with socket.create_connection(("127.0.0.1", app.port), support.WAIT) as peer:
                peer.sendall(_wire.PREAMBLE + b"not the protocol at all\n" + b"\xff" * 64)
                support.read_banner(peer)
                self.assertEqual(read_frame(peer)[0], _wire.ACK)  # a refusal, logged first
            watcher.wait_for("protocol error")
        self.assertEqual(err.getvalue(), "")
        self.assertEqual(out.getvalue(), "")

    def test_verbose_prints_warnings_on_stderr(self):
        watcher = LogWatcher(self)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            app, after, _ = self.raising_host(True, "boom-loud")
            quiet, quiet_after, _ = self.raising_host(False, "boom-hushed")
            hand_off(app.port, ["x"])
            hand_off(quiet.port, ["y"])
            after.wait(1)
            quiet_after.wait(1)
            self.assertEqual(len([m for m in watcher.messages() if "raised" in m]), 2)
        text = err.getvalue()
        self.assertTrue(text.startswith("Socket_Singleton: Observer broken raised exception: "
                                        "RuntimeError: boom-loud\n"), text)
        self.assertIn("raised", text)
        self.assertIn("boom-loud", text)
        self.assertNotIn("boom-hushed", text)  # the quiet host's warning is only logged

    def test_an_exception_whose_str_raises_is_logged_in_one_line(self):
        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("no str() for you")

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            app = self.host(verbose=True)

            def unprintable(args):
                raise Unprintable()

            app.trace(unprintable)
            after = self.collector(app)
            hand_off(app.port, ["x"])
            after.wait(1)  # the warning was written before the next observer ran
        text = err.getvalue()
        self.assertNotIn("Logging error", text)
        self.assertEqual([line for line in text.splitlines()
                          if line.startswith("Socket_Singleton: ")],
                         ["Socket_Singleton: Observer unprintable raised exception: "
                          "Unprintable: <str() failed>"], text)

    def test_raising_observer_stops_neither_next_observer_nor_next_launch(self):
        app, after, calls = self.raising_host(False, "boom")
        for value in ("1", "2", "3"):
            self.assertEqual(hand_off(app.port, [value]).reason, "delivered")
        self.assertEqual(after.wait(3), [("1",), ("2",), ("3",)])
        self.assertEqual(calls, [("1",), ("2",), ("3",)])

    # A fresh interpreter without site (-S), which may load typing itself.
    QUIET_HOST = (
        "import sys, threading\n"
        "from Socket_Singleton import Socket_Singleton\n"
        "app = Socket_Singleton(port=0, client=False, strict=False)\n"
        "observed = threading.Event()\n"
        "def broken(*args):\n"
        "    observed.set()\n"
        "    raise RuntimeError('boom-late')\n"
        "app.trace(broken)\n"
        "print(sorted(name for name in ('logging', 'typing') if name in sys.modules))\n")

    def run_quiet_host(self, code):
        result = subprocess.run([sys.executable, "-S", "-c", self.QUIET_HOST + code, "late"],
                                env=support.app_env({}), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=support.WAIT)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def test_a_quiet_host_loads_neither_logging_nor_typing(self):
        # No handler can show its records until the application loads logging: the observer's
        # failure is dropped without loading it.
        result = self.run_quiet_host(
            "try:\n"
            "    Socket_Singleton(port=app.port, strict=False)\n"
            "except Exception as err:\n"
            "    print(err.reason)\n"
            "observed.wait(30)\n"
            "app.release()\n"
            "print(sorted(name for name in ('logging', 'typing') if name in sys.modules))\n")
        self.assertEqual(result.stdout, "[]\ndelivered\n[]\n", result.stderr)
        self.assertEqual(result.stderr, "")

    def test_a_quiet_host_logs_once_the_application_loads_logging(self):
        result = self.run_quiet_host(
            "import logging\n"
            "logging.basicConfig(format='app: %(message)s')\n"
            "try:\n"
            "    Socket_Singleton(port=app.port, strict=False)\n"
            "except Exception as err:\n"
            "    print(err.reason)\n"
            "observed.wait(30)\n"
            "app.release()\n")
        self.assertEqual(result.stdout, "[]\ndelivered\n", result.stderr)
        self.assertIn("app: Observer broken raised exception: RuntimeError: boom-late",
                      result.stderr)


class _TakingDeque(collections.deque):
    """The dispatcher's queue: ``took`` is set once the dispatch thread took a launch."""

    def __init__(self):
        super().__init__()
        self.took = threading.Event()

    def popleft(self):
        item = super().popleft()
        self.took.set()
        return item


class _GatedCondition(threading.Condition):
    """The dispatcher's condition: the first time *thread* enters it after the queue's ``took``,
    it sets ``paused`` and waits for ``gate`` before taking the lock, that is, after it took
    the launch off the queue and before it checks the observer it would call."""

    def __init__(self, lock, queue, thread):
        super().__init__(lock)
        self._queue, self._thread = queue, thread
        self.paused, self.gate = threading.Event(), threading.Event()

    def __enter__(self):
        if (threading.current_thread() is self._thread and self._queue.took.is_set()
                and not self.paused.is_set()):
            self.paused.set()
            self.gate.wait(support.WAIT)
        return super().__enter__()


class TestDispatchRaces(support.ThreadLeakCheck):
    """A launch that the dispatch thread took off the queue while release() or untrace() came
    is neither lost nor marked done unseen: it goes back to the head of the queue."""

    def paused_dispatcher(self):
        """A Dispatcher whose thread stops between taking a launch and calling an observer;
        returns (dispatcher, observer, its condition, the launch's on_done event)."""
        dispatcher = _dispatch.Dispatcher("Socket_Singleton-test-dispatch", False,
                                          _tuning.DEFAULTS, lambda: None, lambda: None)
        queue = dispatcher._queue = _TakingDeque()
        gated = _GatedCondition(dispatcher._cond._lock, queue, dispatcher.thread)
        dispatcher._cond = gated
        self.addCleanup(dispatcher.stop)
        self.addCleanup(gated.gate.set)
        first = support.Collector()
        dispatcher.trace(first, (), {})
        done = threading.Event()
        dispatcher.start()
        self.assertTrue(dispatcher.submit(Launch(("a",)), False, lambda launch: done.set()))
        self.assertTrue(gated.paused.wait(support.WAIT))
        self.assertEqual(dispatcher.pending(), ())  # taken, not yet delivered
        return dispatcher, first, gated, done

    def test_release_while_a_launch_is_taken_keeps_it_pending(self):
        dispatcher, first, gated, done = self.paused_dispatcher()
        dispatcher.request_stop()  # what release() does first; no observer call starts now
        gated.gate.set()
        dispatcher.stop()
        self.assertFalse(dispatcher.thread.is_alive())
        self.assertEqual((first.received, dispatcher.pending()), ([], (("a",),)))
        self.assertFalse(done.is_set())

    def test_untrace_then_trace_while_a_launch_is_taken_delivers_it_to_the_new_observer(self):
        dispatcher, first, gated, done = self.paused_dispatcher()
        dispatcher.untrace(first)
        second = support.Collector()
        dispatcher.trace(second, (), {})
        gated.gate.set()
        self.assertTrue(done.wait(support.WAIT))  # on_done: an observer has seen it
        self.assertEqual((first.received, second.received), ([], [("a",)]))
        self.assertEqual(dispatcher.pending(), ())


def blocked_delivery(test):
    """A host of *test* (a HostTestCase) whose first observer blocks on the first launch,
    followed by two more observers; returns (host, the two collectors, unblock)."""
    app = test.host()
    blocking, entered, unblock = support.blocking_observer(test)
    app.trace(blocking)
    second, third = test.collector(app), test.collector(app)
    support.send_raw(app.port, b"go\0")
    test.assertTrue(entered.wait(support.WAIT))
    return app, second, third, unblock


class TestObservers(HostTestCase):

    def test_trace_passes_stored_arguments(self):
        app = self.host()
        collector = self.collector(app, 1, "two", key="value", other=None)
        self.assertEqual(hand_off(app.port, ["x", "y"]).reason, "delivered")
        self.assertEqual(collector.calls,
                         [(("x", "y"), (1, "two"), {"key": "value", "other": None})])

    def test_observers_called_once_per_launch_in_registration_order(self):
        app = self.host()
        calls = []

        def make(name):
            def observer(args, *extra):
                calls.append((name, args, extra))
            return observer

        first, second, third = make("first"), make("second"), make("third")
        app.trace(first, "old")
        app.trace(second)
        app.trace(third)
        app.trace(first, "new")  # registering again replaces the stored arguments only
        done = self.collector(app)
        for value in ("1", "2"):
            self.assertEqual(hand_off(app.port, [value]).reason, "delivered")
        done.wait(2)
        self.assertEqual(calls, [
            ("first", ("1",), ("new",)), ("second", ("1",), ()), ("third", ("1",), ()),
            ("first", ("2",), ("new",)), ("second", ("2",), ()), ("third", ("2",), ()),
        ])

    def test_observers_run_on_the_dispatch_thread(self):
        app = self.host()
        threads = []
        app.trace(lambda args: threads.append(threading.current_thread()))
        collector = support.Collector()
        app.trace(collector)
        hand_off(app.port, ["1"])
        support.send_raw(app.port, b"2\0")
        collector.wait(2)
        self.assertEqual(len(set(threads)), 1)
        self.assertIsNot(threads[0], threading.current_thread())
        self.assertEqual(threads[0].name, "Socket_Singleton-%d-dispatch" % app.port)

    def test_an_observer_calling_sys_exit_does_not_end_dispatch(self):
        watcher = LogWatcher(self)
        app = self.host(release_threshold=3)

        def quitter(args):
            if args == ("--quit",):
                sys.exit(0)

        app.trace(quitter)
        collector = self.collector(app)
        for args in (["--quit"], ["open", "a.txt"], ["open", "b.txt"]):
            self.assertEqual(hand_off(app.port, args).reason, "delivered", args)
        self.assertEqual(collector.wait(3), [("--quit",), ("open", "a.txt"), ("open", "b.txt")])
        self.assertIs(watcher.wait_for("raised").exc_info[0], SystemExit)
        # The third launch reached release_threshold: the host releases on its own.
        join_library_threads(self, app.port, "dispatch", "listener")
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)

    def test_no_observer_is_called_after_release_returned(self):
        app, second, third, unblock = blocked_delivery(self)
        app.release()
        unblock.set()
        join_library_threads(self, app.port, "dispatch")
        self.assertEqual((second.calls, third.calls), ([], []))


class TestUntrace(HostTestCase):
    """Once untrace() returns, no call of that observer starts."""

    def test_untrace(self):
        app = self.host()
        app.untrace(lambda args: None)  # never registered: nothing happens
        app.untrace(print)
        first, last = support.Collector(), support.Collector()
        app.trace(first)
        app.trace(last)
        app.untrace(first)
        app.untrace(first)
        self.assertEqual(hand_off(app.port, ["after-untrace"]).reason, "delivered")
        self.assertEqual(last.wait(1), [("after-untrace",)])
        self.assertEqual(first.calls, [])  # it would have been called before `last`

    def test_no_observer_is_called_after_untrace_returned(self):
        app, second, third, unblock = blocked_delivery(self)
        app.untrace(third)
        unblock.set()
        support.send_raw(app.port, b"next\0")
        self.assertEqual(second.wait(2), [("go",), ("next",)])  # "go" is done with by now
        self.assertEqual(third.calls, [])

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

        def observer(args):
            calls.append(args)
            if untraced.is_set():
                late.append(args)

        # For the threads started from here: the dispatch thread starts with the first launch.
        threading.settrace(tracer)
        try:
            app = self.host()
            app.trace(observer)
            armed.set()
            support.send_raw(app.port, b"go\0")
            self.assertTrue(paused.wait(support.WAIT), "the dispatch thread did not pause")
        finally:
            threading.settrace(None)

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


class TestLaunchesBeforeTrace(HostTestCase):

    def setUp(self):
        super().setUp()
        support.tune(self, delivery_wait=0.05)  # "queued" answers sooner

    def test_launches_before_trace(self):
        app = self.host()
        for args in (["a1"], ["b1", "b2"], ["c"]):
            self.assertEqual(hand_off(app.port, args).reason, "queued")
        self.assertEqual(app.arguments, (("a1",), ("b1", "b2"), ("c",)))
        for launch in app.arguments:
            self.assertIsInstance(launch, Launch)
            self.assertEqual((launch.pid, launch.cwd), (os.getpid(), os.getcwd()))
        calls = []
        thread_of_trace = threading.current_thread()

        def first(args):
            calls.append((args, threading.current_thread() is thread_of_trace))

        app.trace(first)
        second = support.Collector()
        app.trace(second)
        self.assertEqual(hand_off(app.port, ["d"]).reason, "delivered")
        self.assertEqual(second.wait(1), [("d",)])  # the second gets no old launches
        # Each once, in order, and never on the thread that called trace().
        self.assertEqual(calls, [(("a1",), False), (("b1", "b2"), False), (("c",), False),
                                 (("d",), False)])
        self.assertEqual(app.arguments, ())

    def test_launch_outlives_the_observer_that_saw_it_arrive(self):
        app = self.host()
        for args in (["x1"], ["x2"]):
            self.assertEqual(hand_off(app.port, args).reason, "queued")
        entered, unblock = threading.Event(), threading.Event()

        def first(args):
            entered.set()
            unblock.wait(support.WAIT)

        app.trace(first)
        self.assertTrue(entered.wait(support.WAIT))  # first is busy with x1; x2 waits
        second = support.Collector()
        app.trace(second)
        app.untrace(first)  # x2's only observer leaves before x2 is delivered
        unblock.set()
        self.assertEqual(second.wait(1), [("x2",)])
        self.assertEqual(app.arguments, ())


if __name__ == "__main__":
    unittest.main()
