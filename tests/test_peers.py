"""Hostile or broken local peers: silent, incomplete, garbage, ten megabytes, resets, HTTP
requests, a peer whose handling raises, peers that wait while accept() fails; and on the
launch's side, a fake host that acknowledges out of turn. The host goes on serving, the
launch sends nothing of the user's."""

import errno
import logging
import os
import socket
import threading
import unittest
from unittest import mock

from Socket_Singleton import _tuning, _wire

from . import support
from .support import (
    FakeServer,
    HostTestCase,
    LogWatcher,
    answering_hello_with,
    cli,
    connect,
    hand_off,
    hello,
    launch_on,
    read_frame,
    reset,
    wait_closed,
)

POSIX = support.POSIX
ARG = "arg-Okapi-%d" % os.getpid()  # distinctive: a search through captured bytes cannot miss it


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
        with _tuning.override(peer_deadline=0.2):
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
        peer = hello(self.app.port)
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


class TestPeerFailures(HostTestCase):

    def setUp(self):
        super().setUp()
        self.watcher = LogWatcher(self)
        if self._testMethodName.startswith("test_strict_decoder"):
            # As Windows decodes arguments (PEP 529): bytes that are not UTF-8 raise there.
            support.tune(self, decode_errors="strict")
        self.app = self.host()
        self.delivered = self.collector(self.app)

    def assertStillServes(self):
        self.assertTrue(self.app.listening)
        self.assertEqual(hand_off(self.app.port, ["after"]).reason, "delivered")
        self.assertEqual(self.delivered.received, [("after",)])
        self.assertEqual(self.app.clients, 1)

    def test_strict_decoder_refuses_a_plain_message_and_the_host_goes_on(self):
        peer = support.send_raw(self.app.port, b"\xff\0")
        self.assertStillServes()
        record = self.watcher.wait_for(peer)
        self.assertIn("undecodable", record.getMessage())

    @unittest.skipUnless(POSIX, "undecodable bytes in a str need surrogateescape (POSIX)")
    def test_strict_decoder_rejects_a_framed_launch_and_the_host_goes_on(self):
        with hello(self.app.port) as peer:
            status, detail = launch_on(peer, [os.fsdecode(b"\xff")])
        self.assertEqual(status, _wire.REJECTED, detail)
        self.assertIn("undecodable", detail)
        self.assertStillServes()

    def test_a_handler_that_raises_drops_only_that_peer(self):
        with mock.patch.object(_wire, "decode_plain", side_effect=RuntimeError("boom-peer")):
            support.send_raw(self.app.port, b"boom\0")
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


class TestHttpRequests(HostTestCase):

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
        peers = [support.send_raw(app.port, request) for request in requests]
        support.send_raw(app.port, b"POST\0/\0HTTP/1.1\0")  # arguments that merely look alike
        self.assertEqual(collector.wait(1), [("POST", "/", "HTTP/1.1")])
        self.assertEqual(hand_off(app.port, ["after"]).reason, "delivered")
        self.assertEqual(collector.received, [("POST", "/", "HTTP/1.1"), ("after",)])
        for peer in peers:
            self.assertIn("HTTP request", watcher.wait_for(peer).getMessage())
        self.assertEqual(app.clients, 2)


class TestAcceptBackoff(HostTestCase):

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


class TestFakeAcknowledgement(support.ThreadLeakCheck):

    def test_an_acknowledgement_instead_of_a_welcome_is_foreign(self):
        server = FakeServer(self, answering_hello_with(_wire.encode_ack(_wire.DELIVERED)))
        error = hand_off(server.port, [ARG], secret="s3cret-Quokka")
        self.assertEqual((error.reason, error.delivered), ("foreign", False))
        code, events, err = support.run_client([ARG], support.config(server.port))
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


if __name__ == "__main__":
    unittest.main()
