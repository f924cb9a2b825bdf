"""Regression tests for the defects an independent review found: each test fails on the code
before the fixes. Secrets from the OS, one peer's failure, select()'s limit, release() that
returns early or re-enters, forked children, argument/queue/buffer caps, running out of file
descriptors, fake hosts, HTTP requests, observers that exit or outlive release(), the timeout
timer, and the command line."""

import errno
import multiprocessing
import os
import select
import selectors
import socket
import subprocess
import sys
import threading
import unittest
import warnings
from unittest import mock

from Socket_Singleton import Socket_Singleton, _dispatch, _host, _wire

from . import support
from .support import FakeServer, LogWatcher, assert_port_free, hand_off, read_frame, read_to_end
from .test_api import HostTestCase
from .test_cli import cli
from .test_handoff import read_hello
from .test_hardening import connect, wait_closed

POSIX = os.name == "posix"
ARG = "arg-Okapi-%d" % os.getpid()  # distinctive: a search through captured bytes cannot miss it


# -- helpers ---------------------------------------------------------------------------------

def library_thread(port, role):
    """The host's thread "Socket_Singleton-<port>-<role>", or None once it is gone."""
    name = "Socket_Singleton-%d-%s" % (port, role)
    return next((t for t in threading.enumerate() if t.name == name), None)


def join_library_threads(test, port, *roles):
    """Wait (bounded) until the host's threads of *roles* have ended."""
    for role in roles:
        thread = library_thread(port, role)
        if thread is not None:
            thread.join(support.WAIT)
            test.assertFalse(thread.is_alive(), "%s still runs" % thread.name)


def hello(port):
    """A framed peer that has said hello and read the host's welcome; the caller closes it."""
    peer = connect(port)
    try:
        kind, _ = support.raw_handshake(peer)
    except BaseException:
        peer.close()
        raise
    if kind != _wire.WELCOME:
        peer.close()
        raise AssertionError("the host answered the hello with %r" % kind)
    return peer


def launch_on(peer, args):
    """Send a framed launch (no secret) on *peer*, which has had its welcome; returns the
    acknowledgement as ``(status, detail)``."""
    peer.sendall(_wire.encode_launch(b"", os.urandom(_wire.ID_SIZE), os.getpid(), os.getcwd(),
                                     tuple(args)))
    kind, payload = read_frame(peer)
    if kind != _wire.ACK:
        raise AssertionError("expected an acknowledgement, got %r" % kind)
    return payload[:1], payload[1:].decode("utf-8", "replace")


def send_plain(port, data):
    """Like support.send_raw, but returns the "peer ADDRESS:PORT" the host logs for it."""
    with socket.socket() as sock:
        sock.settimeout(support.WAIT)
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        return "peer %s:%d:" % sock.getsockname()


def shut_write(sock):
    """End a plain message; the host may already have reset an oversize one."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as err:
        if err.errno not in (errno.ENOTCONN, errno.ECONNRESET):
            raise


def answering_hello_with(payload):
    """A FakeServer handler: read the preamble, send the banner, read the hello, answer with
    *payload*, read on."""

    def handler(conn, record):
        read_hello(conn, record)
        conn.sendall(payload)
        read_to_end(conn, record)

    return handler


# -- 1. secrets from the OS ----------------------------------------------------------------------

class TestReviewFixesSecrets(HostTestCase):

    @unittest.skipUnless(POSIX, "undecodable bytes in a str need surrogateescape (POSIX)")
    def test_a_secret_that_is_not_utf8_works_between_host_and_client(self):
        secret = os.fsdecode(b"pa\xffss")  # what os.environ gives for such bytes
        app = self.host(secret=secret)
        collector = self.collector(app)
        self.assertEqual(hand_off(app.port, ["framed"], secret=secret).reason, "delivered")
        support.send_raw(app.port, _wire.encode_plain(("plain",), secret))
        self.assertEqual(collector.wait(2), [("framed",), ("plain",)])
        code, events, err = support.run_client(
            ["process"], {"kwargs": {"port": app.port, "secret": secret}})
        self.assertEqual((code, events, err), (0, [], ""))
        self.assertEqual(collector.wait(3)[2], ("process",))
        self.assertTrue(app.listening)
        self.assertEqual(app.clients, 3)

    @unittest.skipUnless(POSIX, "Windows encodes lone surrogates (surrogatepass)")
    def test_a_secret_that_cannot_be_encoded_is_refused_by_the_constructor(self):
        port = support.free_port()
        with self.assertRaises(ValueError) as cm:
            app = Socket_Singleton(port=port, secret="\ud800")
            self.addCleanup(app.release)
        self.assertRegex(str(cm.exception), r"\bsecret\b")
        assert_port_free(self, port)  # refused before binding


# -- 2. a peer that makes the host's handling raise ----------------------------------------------

class TestReviewFixesPeerFailures(HostTestCase):

    def setUp(self):
        super().setUp()
        self.watcher = LogWatcher(self)
        self.app = self.host()
        self.delivered = self.collector(self.app)

    def assertStillServes(self):
        self.assertTrue(self.app.listening)
        self.assertEqual(hand_off(self.app.port, ["after"]).reason, "delivered")
        self.assertEqual(self.delivered.received, [("after",)])
        self.assertEqual(self.app.clients, 1)

    def test_strict_decoder_refuses_a_plain_message_and_the_host_goes_on(self):
        # Windows decodes arguments strictly (PEP 529); bytes that are not UTF-8 raise there.
        with mock.patch.object(_wire, "_FS_ERRORS", "strict"):
            peer = send_plain(self.app.port, b"\xff\0")
            self.assertStillServes()
            record = self.watcher.wait_for(peer)
        self.assertIn("undecodable", record.getMessage())

    @unittest.skipUnless(POSIX, "undecodable bytes in a str need surrogateescape (POSIX)")
    def test_strict_decoder_rejects_a_framed_launch_and_the_host_goes_on(self):
        with mock.patch.object(_wire, "_FS_ERRORS", "strict"):
            with hello(self.app.port) as peer:
                status, detail = launch_on(peer, [os.fsdecode(b"\xff")])
        self.assertEqual(status, _wire.REJECTED, detail)
        self.assertIn("undecodable", detail)
        self.assertStillServes()

    def test_a_handler_that_raises_drops_only_that_peer(self):
        with mock.patch.object(_wire, "decode_plain", side_effect=RuntimeError("boom-peer")):
            send_plain(self.app.port, b"boom\0")
            record = self.watcher.wait_for("failed")
        self.assertIs(record.exc_info[0], RuntimeError)
        self.assertRegex(record.getMessage(), r"^peer .*dropped")
        self.assertStillServes()

    def test_a_framed_handler_that_raises_drops_only_that_peer(self):
        with mock.patch.object(_wire, "decode_launch", side_effect=RuntimeError("boom-frame")):
            with hello(self.app.port) as peer:
                peer.sendall(_wire.encode_launch(b"", os.urandom(_wire.ID_SIZE), os.getpid(),
                                                 "/", ("x",)))
                wait_closed(peer)  # no acknowledgement: dropped
            record = self.watcher.wait_for("failed")
        self.assertIs(record.exc_info[0], RuntimeError)
        self.assertRegex(record.getMessage(), r"^peer .*dropped")
        self.assertStillServes()


# -- 3. select()'s limit -------------------------------------------------------------------------

class _WindowsLikeSelect(selectors.SelectSelector):
    """select() as on Windows, where CPython's FD_SETSIZE is 512: a larger set raises."""

    largest = 0
    changed = threading.Condition()

    def _select(self, r, w, x, timeout=None):
        cls = type(self)
        with cls.changed:
            cls.largest = max(cls.largest, len(r), len(w))
            cls.changed.notify_all()
        if len(r) > 512 or len(w) > 512:
            raise ValueError("too many file descriptors in select()")
        return select.select(r, w, x, timeout)


_HOLD_CONNECTIONS = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
peers = [socket.create_connection(("127.0.0.1", port), 30) for _ in range(count)]
print("connected", flush=True)
sys.stdin.read()
"""


class TestReviewFixesSelect(HostTestCase):

    def test_the_select_selector_serves_fewer_than_512_at_once(self):
        selector = type("Selector", (_WindowsLikeSelect,), {"largest": 0})
        with mock.patch.object(selectors, "DefaultSelector", selector):
            app = self.host()
        collector = self.collector(app)
        # The idle peers live in another process, so that this one stays below select()'s
        # descriptor numbers limit (1024) on POSIX.
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_CONNECTIONS, str(app.port), "530"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(support.end_by_stdin, holder)
        self.assertEqual(support.text(holder.stdout.readline()), "connected\n")
        listener = library_thread(app.port, "listener")
        with selector.changed:
            # The listener takes as many as it serves, then selects over them.
            self.assertTrue(selector.changed.wait_for(
                lambda: selector.largest > 500 or not listener.is_alive(), support.WAIT))
        self.assertLessEqual(selector.largest, 512)
        self.assertTrue(listener.is_alive())
        self.assertTrue(app.listening)
        support.end_by_stdin(holder)  # its peers close; those in the backlog are served next
        self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
        self.assertEqual(collector.received, [("after",)])
        self.assertLessEqual(selector.largest, 512)



# -- 4, 11. release() ---------------------------------------------------------------------------

class TestReviewFixesRelease(HostTestCase):

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

    def test_release_reentered_on_the_releasing_thread_returns(self):
        # As a signal handler that calls release() while release() runs on the same thread.
        app = Socket_Singleton(port=0)
        real_stop = _host.Listener.stop
        inner_returned = threading.Event()

        def stop(listener):
            app.release()
            inner_returned.set()
            real_stop(listener)

        with mock.patch.object(_host.Listener, "stop", stop):
            releaser = threading.Thread(target=app.release, name="releaser", daemon=True)
            # Only when it has returned: a deadlocked release would block this one too.
            self.addCleanup(lambda: releaser.is_alive() or app.release())
            releaser.start()
            releaser.join(support.WAIT)
        self.assertFalse(releaser.is_alive(), "release() re-entered on its thread deadlocked")
        self.assertTrue(inner_returned.is_set())
        self.assertFalse(app.listening)
        assert_port_free(self, app.port)


# -- 5. fork -------------------------------------------------------------------------------------

def _wait_in_child(started, finish):
    started.set()
    finish.wait(support.WAIT)


@unittest.skipUnless(POSIX and hasattr(os, "register_at_fork"), "fork is POSIX")
class TestReviewFixesFork(HostTestCase):

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


# -- 6. argument, queue and buffer caps ----------------------------------------------------------

class TestReviewFixesCaps(HostTestCase):

    def test_a_plain_message_with_too_many_arguments_is_refused(self):
        watcher = LogWatcher(self)
        with mock.patch.object(_wire, "MAX_ARGS", 8):
            app = self.host()
            collector = self.collector(app)
            peer = send_plain(app.port, b"x\0" + b"\0" * 20)
            support.send_raw(app.port, b"a\0b\0c\0")  # within the cap
            self.assertEqual(collector.wait(1), [("a", "b", "c")])
            self.assertIn("more than 8 arguments", watcher.wait_for(peer).getMessage())
        self.assertEqual(app.clients, 1)

    def test_a_framed_launch_with_too_many_arguments_is_rejected(self):
        with mock.patch.object(_wire, "MAX_ARGS", 8):
            app = self.host()
            collector = self.collector(app)
            error = hand_off(app.port, ["many"] * 10)
            self.assertEqual((error.reason, error.delivered), ("rejected", False))
            self.assertEqual(hand_off(app.port, ["a", "b", "c"]).reason, "delivered")
        self.assertEqual(collector.received, [("a", "b", "c")])
        self.assertEqual(app.clients, 1)

    def test_the_queue_is_capped_in_memory_without_dropping_queued_launches(self):
        watcher = LogWatcher(self)
        entered, unblock = threading.Event(), threading.Event()
        self.addCleanup(unblock.set)

        def blocking(args):
            entered.set()
            unblock.wait(support.WAIT)

        with mock.patch.object(_host, "DELIVERY_WAIT", 0.05), \
                mock.patch.object(_dispatch, "MAX_PENDING_BYTES", 250):
            # No observer registered: the launch that does not fit is ignored (exit 0).
            app = self.host()
            for args in (["a" * 40], ["b" * 40]):  # about 104 bytes each: two fit, not three
                self.assertEqual(hand_off(app.port, args).reason, "queued")
            error = hand_off(app.port, ["c" * 40])
            self.assertEqual((error.reason, error.delivered), ("ignored", False))
            # the byte cap filled it, not a count: the detail does not name a limit of 2
            self.assertEqual(error.detail, "no observer is registered and the queue that keeps "
                             "launches for one is full (2 launches)")
            self.assertEqual(app.arguments, (("a" * 40,), ("b" * 40,)))
            collector = self.collector(app)
            self.assertEqual(collector.wait(2), [("a" * 40,), ("b" * 40,)])
            self.assertEqual(hand_off(app.port, ["d" * 40]).reason, "delivered")
            self.assertEqual(collector.received, [("a" * 40,), ("b" * 40,), ("d" * 40,)])
            # An observer registered but behind: the launch that does not fit is refused.
            app.trace(blocking)
            self.assertEqual(hand_off(app.port, ["e" * 40]).reason, "queued")
            self.assertTrue(entered.wait(support.WAIT))  # taken: no longer in the queue
            for args in (["f" * 40], ["g" * 40]):
                self.assertEqual(hand_off(app.port, args).reason, "queued")
            error = hand_off(app.port, ["h" * 40])
            self.assertEqual((error.reason, error.delivered), ("rejected", False))
            self.assertIn("queue is full", error.detail)
            watcher.wait_for("queue full")
            self.assertEqual(app.arguments, (("f" * 40,), ("g" * 40,)))
            unblock.set()
            self.assertEqual(collector.wait(6)[3:], [("e" * 40,), ("f" * 40,), ("g" * 40,)])
        self.assertEqual(collector.received,
                         [("a" * 40,), ("b" * 40,), ("d" * 40,), ("e" * 40,), ("f" * 40,),
                          ("g" * 40,)])

    def test_unfinished_messages_are_capped_all_peers_together(self):
        watcher = LogWatcher(self)
        with mock.patch.object(_host, "MAX_BUFFERED", 8192):
            app = self.host()
            collector = self.collector(app)
            with connect(app.port) as held, connect(app.port) as excess:
                held.sendall(b"h" * 5999 + b"\0")  # unfinished until EOF: the host holds it
                # Served after `held` was read: the host holds 6000 bytes from here on.
                self.assertEqual(hand_off(app.port, ["first"]).reason, "delivered")
                excess.sendall(b"x" * 3000)  # 9000 > 8192: this peer goes
                shut_write(excess)
                wait_closed(excess)
                self.assertEqual(hand_off(app.port, ["second"]).reason, "delivered")
                held.shutdown(socket.SHUT_WR)  # its message, complete and whole
                wait_closed(held)
            self.assertEqual(collector.wait(3), [("first",), ("second",), ("h" * 5999,)])
            watcher.wait_for("unfinished messages")
        self.assertEqual(app.clients, 3)


# -- 7. out of file descriptors ------------------------------------------------------------------

class TestReviewFixesAcceptBackoff(HostTestCase):

    def test_out_of_file_descriptors_the_host_does_not_spin(self):
        watcher = LogWatcher(self)
        app = self.host()
        collector = self.collector(app)
        exhausted = threading.Event()
        real_accept = socket.socket.accept

        def accept(sock):
            if exhausted.is_set() and threading.current_thread().name.endswith("-listener"):
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return real_accept(sock)

        def failures():
            return len([m for m in watcher.messages() if "accept failed" in m])

        with mock.patch.object(socket.socket, "accept", accept):
            exhausted.set()
            with connect(app.port) as waiting:  # in the backlog while accept() fails
                watcher.wait_for("accept failed")
                threading.Event().wait(support.SHORT)  # what must NOT happen: a busy loop
                exhausted.clear()
                during = failures()
                self.assertEqual(support.raw_handshake(waiting)[0], _wire.WELCOME)
                self.assertEqual(launch_on(waiting, ["waited"])[0], _wire.DELIVERED)
        self.assertLess(during, 50, "the listener retried accept() in a busy loop")
        self.assertEqual(collector.received, [("waited",)])


# -- 8. a fake host that acknowledges without a welcome ------------------------------------------

class TestReviewFixesFakeAck(support.ThreadLeakCheck):

    def test_an_acknowledgement_instead_of_a_welcome_is_foreign(self):
        server = FakeServer(self, answering_hello_with(_wire.encode_ack(_wire.DELIVERED)))
        error = hand_off(server.port, [ARG], secret="s3cret-Quokka")
        self.assertEqual((error.reason, error.delivered), ("foreign", False))
        code, events, err = support.run_client([ARG], {"kwargs": {"port": server.port}})
        self.assertEqual((code, events), (1, []), err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertEqual(lines[0], "Socket_Singleton: another program holds 127.0.0.1:%d. The "
                         "arguments were not sent: the program on the port is not a "
                         "Socket_Singleton host (it answered out of turn)." % server.port)
        status = cli("status", "--port", str(server.port))
        self.assertEqual(status.code, 4, status)
        server.close()
        server.assert_nothing_of_the_users(self, [ARG], "s3cret-Quokka")


# -- 9. HTTP requests ----------------------------------------------------------------------------

class TestReviewFixesHttp(HostTestCase):

    def test_an_http_request_is_not_a_launch(self):
        watcher = LogWatcher(self)
        app = self.host()
        collector = self.collector(app)
        body = b"\0--flag\0/home/u/.ssh/id_rsa\0"
        requests = [
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nOrigin: https://evil.example\r\n"
            b"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %d\r\n\r\n%s"
            % (app.port, len(body), body),
            b"GET /?x HTTP/1.0\r\n\r\n",
        ]
        peers = [send_plain(app.port, request) for request in requests]
        support.send_raw(app.port, b"POST\0/\0HTTP/1.1\0")  # arguments that merely look alike
        self.assertEqual(collector.wait(1), [("POST", "/", "HTTP/1.1")])
        self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
        self.assertEqual(collector.received, [("POST", "/", "HTTP/1.1"), ("after",)])
        for peer in peers:
            self.assertIn("HTTP request", watcher.wait_for(peer).getMessage())
        self.assertEqual(app.clients, 2)


# -- 10, 12. observers ---------------------------------------------------------------------------

class TestReviewFixesObservers(HostTestCase):

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

    def blocked_delivery(self):
        """A host whose first observer blocks on the first launch, followed by two more
        observers; returns (host, the two collectors, unblock)."""
        app = self.host()
        entered, unblock = threading.Event(), threading.Event()
        self.addCleanup(unblock.set)

        def blocking(args):
            entered.set()
            unblock.wait(support.WAIT)

        app.trace(blocking)
        second, third = self.collector(app), self.collector(app)
        support.send_raw(app.port, b"go\0")
        self.assertTrue(entered.wait(support.WAIT))
        return app, second, third, unblock

    def test_no_observer_is_called_after_untrace_returned(self):
        app, second, third, unblock = self.blocked_delivery()
        app.untrace(third)
        unblock.set()
        support.send_raw(app.port, b"next\0")
        self.assertEqual(second.wait(2), [("go",), ("next",)])  # "go" is done with by now
        self.assertEqual(third.calls, [])

    def test_no_observer_is_called_after_release_returned(self):
        app, second, third, unblock = self.blocked_delivery()
        app.release()
        unblock.set()
        join_library_threads(self, app.port, "dispatch")
        self.assertEqual((second.calls, third.calls), ([], []))


# -- 13. the timeout timer -----------------------------------------------------------------------

class TestReviewFixesTimer(HostTestCase):

    def test_no_timer_outlives_a_release_before_the_constructor_returned(self):
        port = support.free_port()
        real_start = _host.Listener.start

        def start(listener):
            real_start(listener)
            # An empty launch reaches release_threshold=1 before the constructor goes on.
            support.send_raw(port, b"\0")
            listener.thread.join(support.WAIT)

        with mock.patch.object(_host.Listener, "start", start):
            app = self.host(port=port, release_threshold=1, timeout=2 * support.WAIT)
        timer = library_thread(port, "timeout")
        if timer is not None:
            self.addCleanup(timer.cancel)  # only if this test fails
            timer.join(support.WAIT)
            self.assertFalse(timer.is_alive(), "the timeout timer outlived the release")
        self.assertEqual(app.clients, 1)
        self.assertFalse(app.listening)
        assert_port_free(self, port)


# -- 14. the command line ------------------------------------------------------------------------

class TestReviewFixesCli(support.ThreadLeakCheck):

    def test_status_of_a_host_that_answers_retry_is_not_running(self):
        server = FakeServer(self, answering_hello_with(
            _wire.encode_ack(_wire.RETRY, "the host is releasing the port")))
        result = cli("status", "--port", str(server.port))
        self.assertEqual(result.code, 3, result)
        self.assertEqual(result.out, "")

    def test_timeout_that_is_not_a_finite_number_is_a_usage_error(self):
        port = str(support.free_port())
        for value in ("nan", "inf"):
            for command in ("status", "send"):
                with self.subTest(command=command, timeout=value):
                    result = cli(command, "--port", port, "--timeout", value)
                    self.assertEqual(result.code, 2, result)
                    self.assertEqual(result.out, "")
                    lines = result.err.splitlines()
                    self.assertEqual(len(lines), 1, result)
                    self.assertTrue(lines[0].startswith("socket-singleton: error: "), lines)
                    self.assertIn("--timeout", lines[0])


if __name__ == "__main__":
    unittest.main()
