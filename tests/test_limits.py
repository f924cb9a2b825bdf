"""The host's limits: the size of a message, the number of arguments, the bytes of
unfinished messages all peers together, the queue of launches waiting for observers, and
the number of peers select() is given at once. Limits are shrunk with _tuning.override()."""

import os
import selectors
import socket
import unittest
from unittest import mock

from Socket_Singleton import _listener, _tuning, _wire

from . import support
from .support import (
    HostTestCase,
    LogWatcher,
    config,
    connect,
    hand_off,
    library_thread,
    read_frame,
    shut_write,
    wait_closed,
)


class TestMessageSize(HostTestCase):

    def test_oversize_plain_message_is_refused_whole(self):
        watcher = LogWatcher(self)
        with _tuning.override(max_message_size=1024):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            with connect(app.port) as peer:
                peer.sendall(b"a" * 600 + b"\0" + b"b" * 600 + b"\0")
                shut_write(peer)  # the end of a plain message: nothing may be cut
                wait_closed(peer)
            watcher.wait_for("exceeds 1024 bytes")
            exactly = b"c" * 1023 + b"\0"  # at the limit: delivered whole
            support.send_raw(app.port, exactly)
            self.assertEqual(collector.wait(1), [("c" * 1023,)])
            self.assertEqual(app.clients, 1)

    def test_oversize_framed_message_is_refused_whole(self):
        watcher = LogWatcher(self)
        with _tuning.override(max_message_size=1024):
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
            with support.hello(app.port) as peer:
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
        with _tuning.override(max_message_size=1024):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            room = 1024 - len(os.fsencode(os.getcwd())) - 2  # the cwd and the two NULs
            self.assertEqual(hand_off(app.port, ["f" * room]).reason, "delivered")
            self.assertEqual(hand_off(app.port, ["f" * (room + 1)]).reason, "rejected")
            self.assertEqual(collector.received, [("f" * room,)])

    def test_oversize_launch_from_a_real_process(self):
        with _tuning.override(max_message_size=4096):
            app = self.host()
            collector = support.Collector()
            app.trace(collector)
            code, events, err = support.run_client(["z" * 5000], config(app.port))
            self.assertEqual((code, events), (1, []))
            self.assertTrue(err.startswith("Socket_Singleton: another instance holds"), err)
            self.assertEqual(support.run_client(["small"], config(app.port))[0], 0)
            self.assertEqual(collector.wait(1), [("small",)])
            self.assertEqual(app.clients, 1)


class TestArgumentCount(HostTestCase):

    def test_a_plain_message_with_too_many_arguments_is_refused(self):
        watcher = LogWatcher(self)
        with _tuning.override(max_args=8):
            app = self.host()
            collector = self.collector(app)
            peer = support.send_raw(app.port, b"x\0" + b"\0" * 20)
            support.send_raw(app.port, b"a\0b\0c\0")  # within the cap
            self.assertEqual(collector.wait(1), [("a", "b", "c")])
            self.assertIn("more than 8 arguments", watcher.wait_for(peer).getMessage())
        self.assertEqual(app.clients, 1)

    def test_a_framed_launch_with_too_many_arguments_is_rejected(self):
        with _tuning.override(max_args=8):
            app = self.host()
            collector = self.collector(app)
            error = hand_off(app.port, ["many"] * 10)
            self.assertEqual((error.reason, error.delivered), ("rejected", False))
            self.assertEqual(hand_off(app.port, ["a", "b", "c"]).reason, "delivered")
        self.assertEqual(collector.received, [("a", "b", "c")])
        self.assertEqual(app.clients, 1)


class TestBufferedBytes(HostTestCase):

    def test_unfinished_messages_are_capped_all_peers_together(self):
        watcher = LogWatcher(self)
        with _tuning.override(max_buffered=8192):
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


class TestPendingQueue(HostTestCase):
    """Launches waiting for observers are kept up to a count and a number of bytes; none
    already queued is dropped for one that does not fit."""

    def setUp(self):
        super().setUp()
        support.tune(self, delivery_wait=0.05)  # "queued" answers sooner

    def test_pending_bound(self):
        with _tuning.override(max_pending=3):
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
        blocking, entered, unblock = support.blocking_observer(self)
        with _tuning.override(max_pending=3):
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

    def test_the_queue_is_capped_in_memory_without_dropping_queued_launches(self):
        watcher = LogWatcher(self)
        blocking, entered, unblock = support.blocking_observer(self)
        with _tuning.override(delivery_wait=0.05, max_pending_bytes=250):
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


class TestSelectCap(HostTestCase):

    def test_five_hundred_peers_at_once_through_the_real_select(self):
        # More peers than select() takes: the listener serves 500 and leaves the rest in the
        # backlog, so select() never sees too many sockets and the host keeps going. The
        # selector fails above 512 sockets everywhere, as select() does on Windows.
        if os.name == "nt":  # there, the selector below is the one the listener uses anyway
            self.assertIs(selectors.DefaultSelector, selectors.SelectSelector)
        selector = support.counting_selector(limit=512)
        with mock.patch.object(selectors, "DefaultSelector", selector), \
                _tuning.override(peer_deadline=support.WAIT * 2):
            app = self.host()
            collector = self.collector(app)
            holder = support.hold_connections(self, app.port, 530)
            listener = library_thread(app.port, "listener")
            with selector.changed:
                # The listener takes as many as it serves, then selects over them.
                self.assertTrue(selector.changed.wait_for(
                    lambda: selector.largest > _listener._SELECT_LIMIT or not listener.is_alive(),
                    support.WAIT))
            self.assertTrue(listener.is_alive())
            self.assertTrue(app.listening)
            self.assertLessEqual(selector.largest, 512)
            support.end_by_stdin(holder)  # its peers close; those in the backlog are served next
            self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
            self.assertEqual(collector.received, [("after",)])
            self.assertLessEqual(selector.largest, 512)


if __name__ == "__main__":
    unittest.main()
