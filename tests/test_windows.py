"""What Windows users rely on (issue 10): nobody can take the host's port, a released port is
free at once, arguments and the working directory cross a real process launch exactly, and a
launch lets the host take the foreground (select()'s 512-socket cap is in test_limits). The
tests run on every platform where they mean something; where Wine and Windows differ, they say
so."""

import os
import socket
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from Socket_Singleton import Socket_Singleton, _net

from . import support
from .support import assert_port_free, hand_off

WINDOWS = os.name == "nt"
_WSAEACCES = 10013


class TestPortOwnership(support.HostTestCase):

    def test_a_second_socket_with_so_reuseaddr_cannot_take_the_port(self):
        # On Windows, SO_REUSEADDR lets a second socket bind a port that another one listens
        # on unless the first holds it with SO_EXCLUSIVEADDRUSE; Linux never allows it.
        app = self.host()
        collector = self.collector(app)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as thief:
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with self.assertRaises(OSError) as caught:
                thief.bind(("127.0.0.1", app.port))
                thief.listen()
        # Windows refuses a bind on an exclusively held port with WSAEACCES.
        self.assertTrue(_net.address_in_use(caught.exception)
                        or getattr(caught.exception, "winerror", None) == _WSAEACCES,
                        caught.exception)
        self.assertEqual(hand_off(app.port, ["still ours"]).reason, "delivered")
        self.assertEqual(collector.received, [("still ours",)])

    @unittest.skipUnless(WINDOWS and not support.WINE, "Windows lets SO_REUSEADDR steal a "
                         "port (Wine cannot reproduce it; Linux and macOS never allow it)")
    def test_without_exclusive_use_a_port_could_be_stolen(self):
        # Why the host binds with SO_EXCLUSIVEADDRUSE: the test above fails without it.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
            plain.bind(("127.0.0.1", 0))
            plain.listen()
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as thief:
                thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                thief.bind(("127.0.0.1", plain.getsockname()[1]))

    def test_the_port_can_be_bound_again_right_after_release(self):
        # The launches have come and gone, yet no TIME_WAIT holds the host's port: a plain
        # bind (without SO_REUSEADDR) and a new host both take it at once. On Windows a TIME_WAIT
        # would stop the new host's SO_EXCLUSIVEADDRUSE bind; Wine follows Linux rules there,
        # where the plain bind is what a TIME_WAIT would stop.
        app = self.host()
        collector = self.collector(app)
        for n in range(3):
            code, events, err = support.run_client(["launch-%d" % n],
                                                   support.config(app.port))
            self.assertEqual((code, events, err), (0, [], ""))
        collector.wait(3)
        port = app.port
        app.release()
        assert_port_free(self, port)
        host, _ = support.start_host(self, support.config(port))
        self.assertEqual(support.run_client(["again"], support.config(port))[0], 0)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"again"])


# Backslashes (a trailing one before a quote is where command-line quoting goes wrong),
# spaces, quotes, drive letters, UNC paths, and characters outside every ANSI code page
# (CJK, Greek next to Latin-1, an emoji outside the BMP).
AWKWARD_ARGS = (
    r"C:\Program Files\App\notes.txt",
    "D:",
    "Z:\\",
    r"\\server\share\dir\\",
    'say "hello"',
    '\\"',
    'a\\\\"b c',
    "trailing backslash\\",
    "",
    " ",
    "--flag=\"quoted value\"",
    "\u65e5\u672c\u8a9e \u03a9\u03bb\u03c6\u03b1 caf\u00e9 \U0001f600",
    "%PATH% ^& | < > !",
)


class TestRealLaunches(unittest.TestCase):

    def test_awkward_arguments_and_the_cwd_arrive_exactly(self):
        host, port = support.start_host(self, support.config(0))
        with tempfile.TemporaryDirectory(prefix="dir with spaces \u00e9\u65e5 ") as directory:
            proc = support.launch(AWKWARD_ARGS, support.config(port), cwd=directory)
            out, err = support.communicate(proc)
            self.assertEqual((proc.returncode, out, err), (0, b"", b""))
            launch = host.wait_for("launch")
            self.assertEqual(support.decode_args(launch),
                             [os.fsencode(arg) for arg in AWKWARD_ARGS])
            self.assertEqual(launch["pid"], proc.pid)
            self.assertTrue(os.path.samefile(launch["cwd"], directory), launch["cwd"])
            if WINDOWS:
                self.assertRegex(launch["cwd"], r"^[A-Za-z]:\\")


class TestFocusHandOver(unittest.TestCase):
    """A launch calls AllowSetForegroundWindow(host pid) before it hands off (Windows only)."""

    def host_process(self):
        host, port = support.start_host(self, support.config(0))
        return host, port, host.proc.pid

    def test_a_launch_allows_the_host_to_take_the_foreground(self):
        host, port, pid = self.host_process()
        with mock.patch.object(_net, "allow_foreground", wraps=_net.allow_foreground) as allow:
            self.assertEqual(hand_off(port, ["focus"]).reason, "delivered")
        allow.assert_called_once_with(pid)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"focus"])

    def test_no_call_without_a_launch_to_hand_over(self):
        with mock.patch.object(_net, "allow_foreground") as allow:
            app = Socket_Singleton(port=0)  # becomes the host
            app.release()
        allow.assert_not_called()

    @unittest.skipUnless(WINDOWS, "AllowSetForegroundWindow is Windows'")
    def test_the_windows_call_is_made_with_the_host_pid(self):
        import ctypes
        host, port, pid = self.host_process()
        user32 = ctypes.windll.user32
        real = user32.AllowSetForegroundWindow
        with mock.patch.object(user32, "AllowSetForegroundWindow", wraps=real) as call:
            self.assertEqual(hand_off(port, ["focus"]).reason, "delivered")
        call.assert_called_once_with(pid)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"focus"])

    @unittest.skipUnless(WINDOWS, "AllowSetForegroundWindow is Windows'")
    def test_a_failing_call_does_not_stop_the_launch(self):
        import ctypes
        host, port, _ = self.host_process()
        with mock.patch.object(ctypes.windll.user32, "AllowSetForegroundWindow",
                               side_effect=OSError("no desktop")) as call:
            self.assertEqual(hand_off(port, ["anyway"]).reason, "delivered")
        self.assertEqual(call.call_count, 1)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"anyway"])

    def test_elsewhere_it_is_a_no_op_that_loads_nothing(self):
        # On Windows ctypes is loaded only when a launch hands off; elsewhere never.
        script = ("import sys; from Socket_Singleton import _net; before = 'ctypes' in "
                  "sys.modules; _net.allow_foreground(1); print(before, 'ctypes' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", script], env=support.app_env({}),
                                stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=support.WAIT)
        self.assertEqual((result.returncode, support.text(result.stderr)), (0, ""))
        self.assertEqual(support.text(result.stdout),
                         "False %s\n" % (sys.platform == "win32"))
