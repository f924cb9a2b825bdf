"""Hardening: lifecycle, crashes, exact arguments, pending launches, hostile peers, threads,
bind errors, secrets, leaks and an idle host that really sleeps."""

import errno
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import unittest
from hmac import compare_digest
from unittest import mock

from Socket_Singleton import Launch, Socket_Singleton, _dispatch, _host, _wire

from . import support
from .support import LogWatcher, assert_port_free, config, hand_off, read_frame
from .test_api import HostTestCase


def reset(sock):
    """Close *sock* with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def connect(port, address="127.0.0.1"):
    sock = socket.create_connection((address, port), support.WAIT)
    sock.settimeout(support.WAIT)
    return sock


def wait_closed(sock):
    """Block until the host closes or resets *sock*; fails if it sends data instead."""
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    if data:
        raise AssertionError("the host sent %r" % data[:100])


def library_threads():
    return [t for t in threading.enumerate() if t.name.startswith("Socket_Singleton")]


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


@unittest.skipIf(os.name != "posix", "SIGKILL is POSIX")
class TestKilledHost(unittest.TestCase):

    def test_restart_right_after_sigkill(self):
        host, port = support.start_host(self, config(0))
        self.assertEqual(support.run_client(["before"], config(port))[0], 0)
        host.wait_for("launch")
        peers = [connect(port) for _ in range(3)]
        for peer in peers:  # accepted and answered: the host holds its side of each
            self.assertEqual(support.raw_handshake(peer)[0], _wire.WELCOME)
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
        app = support.AppProcess(["after"], config(port, strict=False))
        self.addCleanup(app.stop)
        event = app.next_event()
        self.assertEqual(event["event"], "host", "%s %s" % (event, app.stderr()))


class TestExactArguments(HostTestCase):

    def assertArrivesExactly(self, args, expected=None, popen_args=None):
        host, port = support.start_host(self, config(0))
        code, events, err = support.run_client(popen_args or args, config(port))
        self.assertEqual((code, events, err), (0, [], ""))
        received = support.decode_args(host.wait_for("launch"))
        self.assertEqual(received, expected or [os.fsencode(arg) for arg in args])

    @unittest.skipUnless(sys.platform.startswith("linux"), "needs Linux's argv limits")
    def test_two_mib_of_arguments(self):
        import resource

        # 64 arguments of 32 KiB (Linux takes at most 128 KiB per argument). The total
        # command line is limited to a quarter of the stack limit: raise it for the child.
        args = ["%02d" % i + chr(0x41 + i % 26) * (32 * 1024 - 2) for i in range(64)]
        self.assertEqual(sum(len(arg) for arg in args), 2 * 1024 * 1024)
        soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
        wanted = 64 * 1024 * 1024
        if hard != resource.RLIM_INFINITY and hard < wanted:
            self.skipTest("the stack limit cannot be raised enough")
        host, port = support.start_host(self, config(0))
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))
        try:
            proc = support.launch(args, config(port))
        finally:
            resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))
        out, err = support.communicate(proc)
        self.assertEqual((proc.returncode, out, err), (0, b"", b""))
        received = support.decode_args(host.wait_for("launch"))
        self.assertEqual(len(received), 64)
        self.assertTrue(received == [arg.encode() for arg in args], "the arguments were altered")

    def test_empty_strings_newlines_and_unicode(self):
        self.assertArrivesExactly([
            "", "line one\nline two", "\r\n", "\n", "tab\there", " spaced ", "",
            "ünïcødé", "日本語テキスト", "emoji 😀🎉", "\u202eright-to-left", "e\u0301",
            "quotes ' \" `", "back\\slash", "--", "-", "$HOME %PATH%", "\x7f\x01", "",
        ])

    @unittest.skipIf(os.name != "posix", "bytes arguments need POSIX")
    def test_non_utf8_bytes(self):
        raw = [b"\xff\xfe", b"caf\xe9", b"\xc3\x28", b"ok", b"\xed\xa0\x80", b""]
        self.assertArrivesExactly(None, expected=raw, popen_args=raw)

    def test_oversize_plain_message_is_refused_whole(self):
        watcher = LogWatcher(self)
        with mock.patch.object(_host, "MAX_MESSAGE_SIZE", 1024):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            with connect(app.port) as peer:
                peer.sendall(b"a" * 600 + b"\0" + b"b" * 600 + b"\0")
                try:
                    peer.shutdown(socket.SHUT_WR)  # the end of a plain message: nothing may be cut
                except OSError as err:  # unless the host has reset the oversize connection already
                    if err.errno not in (errno.ENOTCONN, errno.ECONNRESET):
                        raise
                wait_closed(peer)
            watcher.wait_for("exceeds 1024 bytes")
            exactly = b"c" * 1023 + b"\0"  # at the limit: delivered whole
            support.send_raw(app.port, exactly)
            self.assertEqual(collector.wait(1), [("c" * 1023,)])
            self.assertEqual(app.clients, 1)

    def test_oversize_framed_message_is_refused_whole(self):
        watcher = LogWatcher(self)
        with mock.patch.object(_host, "MAX_MESSAGE_SIZE", 1024):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            # Our client learns the limit from the host and sends nothing of the launch.
            error = hand_off(app.port, ["x" * 2000])
            self.assertEqual((error.reason, error.delivered), ("rejected", False))
            self.assertIn("1024", error.detail)
            # ... and says why it gives up instead (a bye), which the host logs.
            self.assertEqual(watcher.wait_for("gave up").getMessage().split(": ", 1)[1],
                             "the client gave up its launch: %s" % error.detail)
            # A client that ignores the limit is refused by the host, which logs it.
            with connect(app.port) as peer:
                self.assertEqual(support.raw_handshake(peer)[0], _wire.WELCOME)
                peer.sendall(_wire.frame_header(_wire.LAUNCH, 5000))  # announces too much
                kind, payload = read_frame(peer)
            self.assertEqual((kind, payload[:1]), (_wire.ACK, _wire.REJECTED))
            watcher.wait_for("exceeds")
            self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
            self.assertEqual(collector.received, [("after",)])
            self.assertEqual(app.clients, 1)

    def test_framed_launch_exactly_at_the_limit_is_delivered(self):
        # The announced limit counts the fields (working directory and arguments with their
        # NULs); client and host agree on it to the byte.
        with mock.patch.object(_host, "MAX_MESSAGE_SIZE", 1024):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            room = 1024 - len(os.fsencode(os.getcwd())) - 2  # the cwd and the two NULs
            self.assertEqual(hand_off(app.port, ["f" * room]).reason, "delivered")
            self.assertEqual(hand_off(app.port, ["f" * (room + 1)]).reason, "rejected")
            self.assertEqual(collector.received, [("f" * room,)])

    def test_oversize_launch_from_a_real_process(self):
        with mock.patch.object(_host, "MAX_MESSAGE_SIZE", 4096):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            code, events, err = support.run_client(["z" * 5000], config(app.port))
            self.assertEqual((code, events), (1, []))
            self.assertTrue(err.startswith("Socket_Singleton: another instance holds"), err)
            self.assertEqual(support.run_client(["small"], config(app.port))[0], 0)
            self.assertEqual(collector.wait(1), [("small",)])
            self.assertEqual(app.clients, 1)


class TestThresholdOrder(HostTestCase):
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
        with mock.patch.object(_host, "DELIVERY_WAIT", 0.2):
            app = self.host(release_threshold=1)
            app.trace(lambda args: unblock.wait(support.WAIT))
            self.assertEqual(hand_off(app.port, ["stuck"]).reason, "queued")
            # The observer is still blocked, yet the port goes: a new launch takes it.
            with mock.patch.object(sys, "argv", ["app"]):
                successor = Socket_Singleton(port=app.port, handoff_timeout=support.WAIT)
            successor.release()
        unblock.set()


class TestPendingLaunches(HostTestCase):

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(_host, "DELIVERY_WAIT", 0.05)  # "queued" answers sooner
        patcher.start()
        self.addCleanup(patcher.stop)

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

    def test_pending_bound(self):
        with mock.patch.object(_dispatch, "MAX_PENDING", 3):
            # No observer registered (a 2.0.0 script that never traces): a launch beyond the
            # bound is counted and ignored (exit 0, as in 2.0.0); none already queued is dropped.
            app = self.host()
            for i in range(3):
                self.assertEqual(hand_off(app.port, ["p%d" % i]).reason, "queued")
            error = hand_off(app.port, ["overflow"])
            self.assertEqual((error.reason, error.delivered), ("ignored", False))
            self.assertEqual(error.detail, "no observer is registered and the queue that keeps "
                             "launches for one is full (3 launches)")
            self.assertEqual(app.arguments, (("p0",), ("p1",), ("p2",)))
            collector = support.Collector()
            app.trace(collector)
            self.assertEqual(collector.wait(3), [("p0",), ("p1",), ("p2",)])
            self.assertEqual(hand_off(app.port, ["later"]).reason, "delivered")
            self.assertEqual(collector.received, [("p0",), ("p1",), ("p2",), ("later",)])
            self.assertEqual(app.clients, 5)

    def test_pending_bound_with_an_observer(self):
        # Observers registered but behind: a launch beyond the bound is refused and logged.
        watcher = LogWatcher(self)
        entered, unblock = threading.Event(), threading.Event()
        self.addCleanup(unblock.set)

        def blocking(args):
            entered.set()
            unblock.wait(support.WAIT)

        with mock.patch.object(_dispatch, "MAX_PENDING", 3):
            app = self.host()
            app.trace(blocking)
            collector = support.Collector()
            app.trace(collector)
            self.assertEqual(hand_off(app.port, ["busy"]).reason, "queued")
            self.assertTrue(entered.wait(support.WAIT))  # taken: no longer in the queue
            for i in range(3):
                self.assertEqual(hand_off(app.port, ["p%d" % i]).reason, "queued")
            error = hand_off(app.port, ["overflow"])
            self.assertEqual((error.reason, error.delivered), ("rejected", False))
            self.assertIn("queue is full", error.detail)
            watcher.wait_for("queue full")
            self.assertEqual(app.arguments, (("p0",), ("p1",), ("p2",)))
            unblock.set()
            self.assertEqual(collector.wait(4), [("busy",), ("p0",), ("p1",), ("p2",)])
            self.assertEqual(hand_off(app.port, ["later"]).reason, "delivered")
            self.assertEqual(collector.received,
                             [("busy",), ("p0",), ("p1",), ("p2",), ("later",)])


class TestEmptyLaunches(HostTestCase):

    def test_not_delivered_by_default(self):
        app = self.host()
        collector = support.Collector()
        app.trace(collector)
        error = hand_off(app.port, [])  # answered "ignored": nothing was delivered
        self.assertEqual((error.reason, error.detail, error.delivered),
                         ("ignored", "there were no arguments to deliver", False))
        support.send_raw(app.port, b"\0")  # 2.0.0's empty launch
        support.send_raw(app.port, b"")  # connects and closes: not a launch
        self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
        self.assertEqual(collector.received, [("after",)])
        self.assertEqual(app.clients, 3)

    def test_delivered_with_deliver_empty(self):
        app = self.host(deliver_empty=True)
        collector = support.Collector()
        app.trace(collector)
        self.assertEqual(hand_off(app.port, []).reason, "delivered")
        self.assertEqual(collector.wait(1), [()])
        support.send_raw(app.port, b"\0")
        self.assertEqual(collector.wait(2), [(), ()])
        support.send_raw(app.port, b"")
        self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
        self.assertEqual(collector.received, [(), (), ("after",)])
        self.assertEqual(app.clients, 3)


class TestHostilePeers(HostTestCase):

    def setUp(self):
        super().setUp()
        self.watcher = LogWatcher(self)
        self.app = self.host()
        self.collector = support.Collector()
        self.app.trace(self.collector)

    def assertStillServes(self):
        self.assertEqual(self.app.clients, 0)
        self.assertEqual(hand_off(self.app.port, ["normal"]).reason, "delivered")
        self.assertEqual(self.collector.received, [("normal",)])
        self.assertEqual(self.app.clients, 1)

    def test_silent_peers_do_not_delay_a_launch(self):
        silent = [connect(self.app.port) for _ in range(5)]
        try:
            self.assertEqual(hand_off(self.app.port, ["normal"]).reason, "delivered")
            self.assertEqual(self.collector.received, [("normal",)])
        finally:
            for peer in silent:
                peer.close()
        self.assertEqual(self.app.clients, 1)

    def test_silent_and_incomplete_peers_are_dropped_after_the_deadline(self):
        self.app.release()
        with mock.patch.object(_host, "PEER_DEADLINE", 0.2):
            self.app = self.host()
            self.app.trace(self.collector)
            with connect(self.app.port) as silent, connect(self.app.port) as incomplete:
                incomplete.sendall(b"half an argu")  # never finished: never cut and delivered
                wait_closed(silent)
                wait_closed(incomplete)
        self.watcher.wait_for("no complete message")
        self.assertStillServes()

    def test_garbage_after_the_preamble(self):
        for garbage in (b"Zxxxxxxxxxxxxxx", b"\xff" * 64, _wire.frame(_wire.LAUNCH, b"x" * 40),
                        _wire.frame(_wire.HELLO, b"short")):
            with connect(self.app.port) as peer:
                peer.sendall(_wire.PREAMBLE + garbage)
                support.read_banner(peer)
                kind, payload = read_frame(peer)
                self.assertEqual((kind, payload[:1]), (_wire.ACK, _wire.REJECTED), garbage)
        self.assertStillServes()

    def test_ten_megabytes(self):
        with connect(self.app.port) as peer:
            try:
                peer.sendall(b"x" * (10 * 1024 * 1024))
                peer.shutdown(socket.SHUT_WR)
            except (ConnectionResetError, BrokenPipeError):
                pass  # dropped while still sending
            else:
                wait_closed(peer)
        self.watcher.wait_for("exceeds")
        self.assertStillServes()

    def test_reset_in_the_middle_of_a_message(self):
        peer = connect(self.app.port)
        self.assertEqual(support.raw_handshake(peer)[0], _wire.WELCOME)
        launch = _wire.encode_launch(b"", os.urandom(_wire.ID_SIZE), os.getpid(), "/",
                                     ("never", "delivered"))
        peer.sendall(launch[:len(launch) // 2])
        if support.WINE:
            # Wine reads the reset as a clean close (Linux and Windows see the reset): the host
            # drops that peer all the same, and only says so at debug level.
            logger = logging.getLogger("Socket_Singleton")
            self.addCleanup(logger.setLevel, logger.level)
            logger.setLevel(logging.DEBUG)
        reset(peer)
        self.watcher.wait_for("closed after the welcome" if support.WINE else "dropped")
        if not support.WINE:  # there the reset would complete the plain message, as a close does
            plain = connect(self.app.port)
            plain.sendall(b"plain\0but cut\0")
            reset(plain)
        self.assertStillServes()
        with self.assertRaises(AssertionError):  # nor does the cut plain message turn up late
            self.collector.wait(2, timeout=support.SHORT)


class TestObserverThreads(HostTestCase):

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

    def test_hung_observer_does_not_hold_up_a_launching_process(self):
        host, port = support.start_host(self, {"kwargs": {"port": 0}, "observer_block": True})
        code, events, err = support.run_client(["first"], config(port))
        self.assertEqual((code, events, err), (0, [], ""))
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"first"])
        # The observer is still blocked; later launches are queued behind it.
        code, events, err = support.run_client(["second"], config(port, strict=False))
        self.assertEqual(code, 3, err)
        self.assertEqual((events[0]["reason"], events[0]["delivered"]), ("queued", True))
        host.send("unblock")
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"second"])


def has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


class TestAddresses(HostTestCase):

    @unittest.skipUnless(has_ipv6_loopback(), "no IPv6 loopback")
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


class TestSecretComparison(HostTestCase):

    def test_secret_goes_through_compare_digest(self):
        secret = "s3cret"
        app = self.host(secret=secret)
        collector = support.Collector()
        app.trace(collector)
        calls = []

        def spy(a, b):
            calls.append((threading.current_thread().name, bytes(a), bytes(b)))
            return compare_digest(a, b)

        listener = "Socket_Singleton-%d-listener" % app.port
        with mock.patch("hmac.compare_digest", side_effect=spy):
            support.send_raw(app.port, _wire.encode_plain(("plain",), secret))
            self.assertEqual(collector.wait(1), [("plain",)])
            self.assertIn((listener, b"s3cret", b"s3cret"), calls)
            del calls[:]
            self.assertEqual(hand_off(app.port, ["framed"], secret=secret).reason, "delivered")
            # The host checks the client's 32-byte proof (and the client the host's).
            self.assertIn(listener, [name for name, a, b in calls
                                     if len(a) == len(b) == _wire.PROOF_SIZE])
        # The decision is compare_digest's alone: forced to say "equal", a wrong secret passes.
        with mock.patch("hmac.compare_digest", return_value=True):
            support.send_raw(app.port, _wire.encode_plain(("wrong",), "not-the-secret"))
            self.assertEqual(collector.wait(3)[2], ("wrong",))
        # ... and forced to say "different", the right one is refused.
        watcher = LogWatcher(self)
        with mock.patch("hmac.compare_digest", return_value=False):
            support.send_raw(app.port, _wire.encode_plain(("refused",), secret))
            watcher.wait_for("verification failed")
        self.assertEqual(collector.received, [("plain",), ("framed",), ("wrong",)])


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
        (listener,) = [t for t in library_threads() if t.name.endswith("-listener")]
        (dispatch,) = [t for t in library_threads() if t.name.endswith("-dispatch")]
        if hasattr(listener, "native_id"):
            listener, dispatch = listener.native_id, dispatch.native_id
        else:  # Python 3.7 has no Thread.native_id: the kernel tasks the constructor started
            new_tasks = sorted(int(task) for task in
                               set(os.listdir("/proc/self/task")) - tasks_before)
            self.assertEqual(len(new_tasks), len(set(library_threads()) - threads_before),
                             "every new task is one of the host's threads")
            listener, dispatch = new_tasks  # which is which does not matter: both must sleep

        def switches(task):
            with open("/proc/self/task/%d/status" % task) as f:
                fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
            return sum(int(value) for value in fields.values())

        collector = support.Collector()
        app.trace(collector)
        self.assertEqual(hand_off(app.port, ["warm-up"]).reason, "delivered")
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


if __name__ == "__main__":
    unittest.main()
