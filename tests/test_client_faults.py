"""Fault injection on the launching side: each socket operation of the client fails in turn
(EINTR, ECONNRESET, ENOBUFS, EMFILE), or reads one byte at a time, or writes short. Whatever
happens, the launch ends within handoff_timeout plus a little, with a clear outcome, its
arguments delivered at most once (exactly once when it says so), no traceback and no leaked
descriptor. The host runs in a process of its own, untouched by the faults."""

import errno
import os
import socket
import threading
import time
import unittest
from typing import ClassVar
from unittest import mock

from Socket_Singleton import MultipleSingletonsError, Socket_Singleton

from . import support

HANDOFF = 2.0
SLACK = 1.0  # seconds beyond handoff_timeout a faulty launch may take (a loaded machine)
FAULTS = {
    "EINTR": InterruptedError(errno.EINTR, os.strerror(errno.EINTR)),
    "ECONNRESET": ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)),
    "ENOBUFS": OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS)),
    "EMFILE": OSError(errno.EMFILE, os.strerror(errno.EMFILE)),
}
# What a launch may end with when an operation fails once: delivered (the client asked again),
# or a clear local failure when this process ran out of resources before anything was sent.
TRANSIENT = ("EINTR", "ECONNRESET")


class FaultySocket(socket.socket):
    """A client socket whose operation *plan[0]* raises *plan[1]* on its *plan[2]*-th call
    (counted across sockets: the client's retry uses a new one); or, with the plan
    ("recv", "one byte") / ("send", "short"), always reads one byte / writes one byte."""

    plan: ClassVar[tuple] = ("", None, 1)
    calls: ClassVar[dict] = {}  # operation -> calls so far, this launch
    opened: ClassVar[list] = []  # every socket this launch made

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        FaultySocket.opened.append(self)

    def _maybe_fail(self, operation):
        name, fault, nth = FaultySocket.plan
        calls = FaultySocket.calls[operation] = FaultySocket.calls.get(operation, 0) + 1
        if name == operation and isinstance(fault, OSError) and calls == nth:
            raise fault

    def connect(self, address):
        self._maybe_fail("connect")
        return super().connect(address)

    def send(self, data, *flags):
        self._maybe_fail("send")
        return self._send(data, *flags)

    def _send(self, data, *flags):
        if FaultySocket.plan[:2] == ("send", "short"):
            data = data[:16]  # (one byte at a time is too slow under Wine for the deadline)
        return super().send(data, *flags)

    def sendall(self, data, *flags):
        self._maybe_fail("send")
        view = memoryview(data)
        while view:
            view = view[self._send(view, *flags):]

    def recv(self, size, *flags):
        self._maybe_fail("recv")
        if FaultySocket.plan[:2] == ("recv", "one byte"):
            size = 1
        return super().recv(size, *flags)

    def close(self):
        super().close()  # as on POSIX, the descriptor is gone even when close() fails
        self._maybe_fail("close")


class TestClientFaults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.host = support.AppProcess(config={"kwargs": {"port": 0}})
        cls.port = cls.host.wait_for("host")["port"]

    @classmethod
    def tearDownClass(cls):
        cls.host.stop()

    def launch(self, name, plan):
        """One in-process launch under *plan*; returns its MultipleSingletonsError and
        whether the host received its arguments (and how often)."""
        FaultySocket.plan, FaultySocket.calls, FaultySocket.opened = plan, {}, []
        args = ["%s-%s" % (name, time.monotonic_ns())]
        before = support.open_fds()
        started = time.monotonic()
        with mock.patch("sys.argv", ["app", *args]), \
                mock.patch.object(socket, "socket", FaultySocket):
            try:
                Socket_Singleton(port=self.port, strict=False, handoff_timeout=HANDOFF)
            except MultipleSingletonsError as err:
                error = err
            else:
                self.fail("the launch became a second host")
        self.assertLess(time.monotonic() - started, HANDOFF + SLACK)
        for sock in FaultySocket.opened:
            self.assertEqual(sock.fileno(), -1, "a client socket was left open")
        if before is not None:
            self.assertEqual(support.open_fds(), before, "a descriptor leaked")
        # Every launch is followed by a sentinel; the host saw ours (once) before it, or not.
        sentinel = "sentinel-%s" % time.monotonic_ns()
        with mock.patch("sys.argv", ["app", sentinel]):
            try:
                Socket_Singleton(port=self.port, strict=False)
            except MultipleSingletonsError as err:
                self.assertEqual(err.reason, "delivered")
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

        with mock.patch("sys.argv", ["app", "huge-timeout"]), \
                mock.patch.object(socket, "socket", SmallTimeouts):
            with self.assertRaises(MultipleSingletonsError) as caught:
                Socket_Singleton(port=self.port, strict=False,
                                 handoff_timeout=int(threading.TIMEOUT_MAX))
        self.assertEqual(caught.exception.reason, "delivered")
        self.assertEqual(self.host.wait_for("launch")["args"], [b"huge-timeout".hex()])

    def test_one_byte_reads_and_short_writes(self):
        for plan in (("recv", "one byte", 0), ("send", "short", 0)):
            with self.subTest(plan=plan[:2]):
                err, times = self.launch("-".join(plan[:2]).replace(" ", "-"), plan)
                self.assertEqual((err.reason, times), ("delivered", 1), err.detail)


if __name__ == "__main__":
    unittest.main()
