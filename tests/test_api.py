"""In-process tests of the public API: properties, observers, dunders, validation, logging."""

import contextlib
import io
import logging
import re
import socket
import unittest
from unittest import mock

import Socket_Singleton as package
from Socket_Singleton import Launch, Socket_Singleton, _host, _wire

from . import support
from .support import LogWatcher, assert_port_free, hand_off, read_frame


class HostTestCase(support.ThreadLeakCheck):
    """Helpers for tests that run a host in this process."""

    def host(self, **kwargs):
        kwargs.setdefault("port", 0)
        app = Socket_Singleton(**kwargs)
        self.addCleanup(app.release)
        return app

    def collector(self, app, *args, **kwargs):
        collector = support.Collector()
        app.trace(collector, *args, **kwargs)
        return collector


class TestInProcess(HostTestCase):

    def assertShows(self, text, *parts):
        for part in parts:  # each a whole "name=value" item of the repr
            self.assertRegex(text, r"(?<!\w)%s(?=[,)])" % re.escape(part))

    def test_properties(self):
        with mock.patch.object(_host, "DELIVERY_WAIT", 0.05):
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

    def test_trace_passes_stored_arguments(self):
        app = self.host()
        collector = self.collector(app, 1, "two", key="value", other=None)
        self.assertEqual(hand_off(app.port, ["x", "y"]).reason, "delivered")
        self.assertEqual(collector.calls,
                         [(("x", "y"), (1, "two"), {"key": "value", "other": None})])

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

    def test_all_is_the_public_api(self):
        self.assertEqual(sorted(package.__all__),
                         ["Launch", "MultipleSingletonsError", "Socket_Singleton", "__version__"])
        self.assertEqual(len(package.__all__), len(set(package.__all__)))
        for name in package.__all__:
            self.assertTrue(hasattr(package, name), name)
        self.assertIsInstance(package.__version__, str)
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


class TestValidation(support.ThreadLeakCheck):

    def construct(self, **kwargs):
        kwargs.setdefault("port", 0)
        app = Socket_Singleton(**kwargs)
        self.addCleanup(app.release)  # only reached when validation wrongly let it through
        return app

    def assertRejected(self, exc_type, name, value):
        with self.assertRaises(exc_type, msg="%s=%r" % (name, value)) as cm:
            self.construct(**{name: value})
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
        app = self.construct(timeout=0.5, handoff_timeout=0.25)
        self.assertEqual(app.timeout, 0.5)
        self.assertEqual(app.handoff_timeout, 0.25)
        app.release()
        app = self.construct(timeout=2.75)
        self.assertEqual(app.timeout, 2.75)


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

    def test_raising_observer_stops_neither_next_observer_nor_next_launch(self):
        app, after, calls = self.raising_host(False, "boom")
        for value in ("1", "2", "3"):
            self.assertEqual(hand_off(app.port, [value]).reason, "delivered")
        self.assertEqual(after.wait(3), [("1",), ("2",), ("3",)])
        self.assertEqual(calls, [("1",), ("2",), ("3",)])


if __name__ == "__main__":
    unittest.main()
