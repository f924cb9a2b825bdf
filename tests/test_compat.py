"""Drop-in for 2.0.0 where users meet it: a running 2.0.0 instance on the port, scripts that
never trace(), max_clients, ports the system is using, 2.0.0's private names and wording."""

import atexit
import errno
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from contextlib import redirect_stderr
from unittest import mock

from Socket_Singleton import Socket_Singleton, _client, _handoff, _net, _outcome, _tuning, _wire

from . import support
from .support import FakeServer, LogWatcher, hand_off, in_process_host, legacy_host

ARG = "compat-\u00e9t\u00e9-%d" % os.getpid()


def deadline():
    return time.monotonic() + support.WAIT


def strict_launch(args, port, **kwargs):
    """A strict launch in a real process: (exit status, stderr)."""
    code, _events, err = support.run_client(args, {"kwargs": dict(port=port, **kwargs)})
    return code, err


class TestRunning200Instance(unittest.TestCase):
    """Upgrading while an old instance runs: the launch meets a 2.0.0 host."""

    def test_the_launch_ends_at_once_with_its_own_reason(self):
        server, handed = legacy_host(self)
        # handoff_timeout is long: an answer before it shows the launch did not wait it out.
        err = hand_off(server.port, [ARG], handoff_timeout=support.WAIT)
        self.assertEqual((err.reason, err.delivered), ("legacy", False))
        self.assertIn("most likely an instance running socket-singleton 2.0.0 or older",
                      err.detail)
        self.assertIn("quit it and launch again", err.detail)
        server.close()
        self.assertLessEqual(len(server.records), 2)  # each would count as one of its clients
        self.assertEqual(handed, [])
        self.assertEqual(b"".join(server.records).strip(b"\0"), b"")

    def test_strict_launch_says_what_holds_the_port(self):
        server, _ = legacy_host(self)
        code, err = strict_launch([ARG], server.port, handoff_timeout=support.WAIT)
        self.assertEqual(code, 1, err)
        self.assertEqual(
            err.strip(),
            "Socket_Singleton: a program that does not speak this protocol holds 127.0.0.1:%d. "
            "The arguments were not sent: the program on the port closes connections without "
            "answering: most likely an instance running socket-singleton 2.0.0 or older, which "
            "cannot acknowledge a launch; quit it and launch again, or pass legacy_handoff=True "
            "to hand it the arguments all the same." % server.port)

    @unittest.skipIf(support.WINE, "under Wine a reset reads as a clean close")
    def test_a_300_host_is_given_up_with_a_reset_not_a_plain_launch_of_nuls(self):
        # A 3.0.0 host waits for its version line after the NULs; a clean close would make it
        # take the NULs it read for a plain launch of 1024 empty arguments.
        endings = []

        def waits_for_more(conn, record):
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        endings.append("clean close")
                        return
                    record += chunk
            except ConnectionResetError:
                endings.append("reset")

        server = FakeServer(self, waits_for_more)
        err = hand_off(server.port, [ARG], handoff_timeout=0.5)
        self.assertEqual(err.reason, "no-answer")
        server.close()
        self.assertEqual(endings, ["reset"])
        self.assertEqual(server.records, [bytearray(_wire.PREAMBLE)])

    def test_legacy_handoff_hands_the_arguments_over_in_the_200_form(self):
        server, handed = legacy_host(self)
        err = hand_off(server.port, [ARG, "two words"], legacy_handoff=True)
        self.assertEqual((err.reason, err.delivered), ("sent-legacy", False))
        code, stderr = strict_launch(["strict"], server.port, legacy_handoff=True)
        self.assertEqual((code, stderr), (0, ""))
        server.close()
        self.assertEqual(handed, [(ARG, "two words"), ("strict",)])
        self.assertLessEqual(len(server.records), 4)

    def test_legacy_handoff_sends_nothing_a_200_host_would_cut(self):
        server, handed = legacy_host(self)
        err = hand_off(server.port, ["x" * 1100], legacy_handoff=True)
        self.assertEqual(err.reason, "legacy")
        self.assertIn("more than the 1024 an instance running 2.0.0 reads", err.detail)
        server.close()
        self.assertEqual(handed, [])

    def test_legacy_handoff_reaches_our_own_host_normally(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        err = hand_off(host.port, [ARG], legacy_handoff=True)
        self.assertEqual(err.reason, "delivered")
        self.assertEqual(collector.received, [(ARG,)])

    def test_legacy_handoff_is_refused_with_a_secret(self):
        with self.assertRaises(ValueError) as caught:
            Socket_Singleton(port=support.free_port(), secret="s", legacy_handoff=True)
        self.assertIn("legacy_handoff cannot be combined with a secret", str(caught.exception))

    def test_a_program_that_answers_like_a_web_server_is_named(self):
        server = FakeServer(self, support.answers_like_a_web_server)
        err = hand_off(server.port, [ARG])
        self.assertEqual(err.reason, "foreign")
        self.assertEqual(err.detail, "the program on the port is not a Socket_Singleton host "
                                     "(it answers like an HTTP server)")


# A stand-in for 2.0.0's listener, in a process of its own: bound without SO_REUSEADDR, it reads
# one chunk of each connection and closes first. It prints its port, and exits when its stdin
# closes.
_CLOSES_FIRST = """
import socket, sys, threading
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
def serve():
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
threading.Thread(target=serve, daemon=True).start()
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""

# A real 2.0.0 host on the port given, until its stdin closes.
_HOST_200 = """
import sys
from Socket_Singleton import Socket_Singleton
Socket_Singleton(port=int(sys.argv[1]))
print("host", flush=True)
sys.stdin.read()
"""

_venv_200 = []  # the python of a virtual environment with socket-singleton==2.0.0, once made


def python_with_200(test):
    """An interpreter with the real socket-singleton 2.0.0 installed (in a virtual environment
    this test run creates), or skip the test when the package index cannot be reached."""
    if not _venv_200:
        directory = tempfile.mkdtemp(prefix="ss-200-")
        atexit.register(shutil.rmtree, directory, True)
        made = subprocess.run([sys.executable, "-m", "venv", directory],
                              capture_output=True, timeout=10 * support.WAIT)
        python = os.path.join(directory, "Scripts" if os.name == "nt" else "bin",
                              "python.exe" if os.name == "nt" else "python")
        installed = made.returncode == 0 and subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "socket-singleton==2.0.0"], capture_output=True,
            timeout=10 * support.WAIT).returncode == 0
        _venv_200.append(python if installed else None)
    if _venv_200[0] is None:
        test.skipTest("pip could not install socket-singleton==2.0.0 (no package index?)")
    return _venv_200[0]


class TestNoTimeWaitLeftOnTheHoldersPort(unittest.TestCase):
    """Upgrading while a 2.0.0 instance runs (issue 16): 2.0.0 closes each connection first, so
    a launch that then closed cleanly left TIME-WAIT on 2.0.0's port, and since 2.0.0 binds
    without SO_REUSEADDR, nothing could bind that port for a minute after the user quit it."""

    LAUNCHES = 3

    def test_after_a_listener_that_closes_first_the_next_launch_becomes_the_host(self):
        holder = subprocess.Popen([sys.executable, "-c", _CLOSES_FIRST], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        self.addCleanup(support.end_by_stdin, holder)
        port = int(holder.stdout.readline())
        for _ in range(self.LAUNCHES):
            self.assertEqual(hand_off(port, [ARG]).reason, "legacy")
        support.end_by_stdin(holder)
        self.assertEqual(holder.returncode, 0)
        support.assert_port_free(self, port)  # as 2.0.0 binds, without SO_REUSEADDR
        support.assert_becomes_host(self, port)

    def test_after_a_real_200_host_quits_the_next_launch_becomes_the_host(self):
        python = python_with_200(self)
        port = support.free_port()
        # Run from the environment's own directory: from the checkout, "-c" would import this
        # copy of the library instead.
        old = subprocess.Popen([python, "-c", _HOST_200, str(port)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, cwd=os.path.dirname(python),
                               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        self.addCleanup(support.end_by_stdin, old)
        self.assertEqual(old.stdout.readline(), b"host\n")
        for _ in range(self.LAUNCHES):
            self.assertEqual(hand_off(port, [ARG]).reason, "legacy")
        support.end_by_stdin(old)
        self.assertEqual(old.returncode, 0)
        support.assert_port_free(self, port)
        support.assert_becomes_host(self, port)


class TestScriptsThatNeverTrace(support.ThreadLeakCheck):
    """2.0.0's most basic use: Socket_Singleton() and nothing else."""

    def test_a_launch_is_answered_at_once_without_an_observer(self):
        # An answer that waited for an observer would come only after DELIVERY_WAIT.
        with _tuning.override(delivery_wait=10 * support.WAIT, trace_grace=0):
            host = in_process_host(self)
            err = hand_off(host.port, [ARG], handoff_timeout=support.WAIT)
        self.assertEqual(err.reason, "queued")
        self.assertEqual(host.arguments, ((ARG,),))

    def test_a_new_host_gives_the_application_time_to_trace(self):
        # Launches that come before the application's first trace() (a moment after the
        # constructor returned) wait for it, and are delivered.
        collector = support.Collector()
        with _tuning.override(trace_grace=support.WAIT, delivery_wait=support.WAIT):
            host = in_process_host(self)
            tracer = threading.Timer(support.SHORT, host.trace, (collector,))
            tracer.start()
            self.addCleanup(tracer.cancel)
            err = hand_off(host.port, [ARG])
        self.assertEqual(err.reason, "delivered")
        self.assertEqual(collector.received, [(ARG,)])

    def test_any_number_of_launches_end_well_in_bounded_memory(self):
        with _tuning.override(trace_grace=0):
            host = in_process_host(self)
        reasons = []
        for n in range(5000):
            reasons.append(hand_off(host.port, ["launch-%d" % n]).reason)
        kept = _tuning.current.max_pending
        self.assertEqual(reasons, ["queued"] * kept + ["ignored"] * (5000 - kept))
        self.assertEqual(len(host.arguments), kept)
        self.assertEqual(host.arguments[-1], ("launch-%d" % (kept - 1),))
        self.assertEqual(host.clients, 5000)
        code, err = strict_launch(["one more"], host.port)
        self.assertEqual((code, err), (0, ""))


# Linux shows every TCP connection in /proc/net/tcp; a port-busy launch reads it. (Under Wine a
# Windows Python sees the same file, but binds with Windows' rules, which TIME-WAIT does not stop.)
LINUX_TABLES = sys.platform.startswith("linux") and os.path.exists("/proc/net/tcp")


class TestBusyPort(unittest.TestCase):
    """A fixed port the system is using, with nothing listening on it."""

    def assert_busy(self, port):
        err = hand_off(port, [ARG], handoff_timeout=support.WAIT)
        self.assertEqual((err.reason, err.delivered), ("port-busy", False))
        self.assertIn("nothing listens on the port, yet it is in use", err.detail)
        code, stderr = strict_launch([ARG], port, handoff_timeout=support.WAIT)
        self.assertEqual(code, 1)
        self.assertTrue(stderr.startswith(
            "Socket_Singleton: 127.0.0.1:%d is in use but nothing listens on it. " % port),
            stderr)
        return err

    def test_a_port_bound_but_not_listening(self):
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            err = self.assert_busy(holder.getsockname()[1])
        if LINUX_TABLES:
            self.assertIn("yet it is in use: no connection on it is visible, so a socket is "
                          "bound to it without listening", err.detail)

    @unittest.skipUnless(LINUX_TABLES, "the platform does not show its TCP connections")
    def test_connections_in_time_wait_are_counted(self):
        # A listener without SO_REUSEADDR that closes first leaves TIME-WAIT on its port, which
        # keeps even an SO_REUSEADDR bind off it on Linux.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), support.WAIT) as outgoing:
                accepted, _ = listener.accept()
                accepted.close()
                self.assertEqual(outgoing.recv(1), b"")
        err = self.assert_busy(port)
        self.assertIn("yet it is in use: 1 connection that ended on it is in TIME-WAIT, which "
                      "the system keeps for about 60 s after a connection closes", err.detail)
        low, high = _net.ephemeral_range()
        self.assertTrue(low <= port <= high)  # bound to port 0: the system picked it there
        self.assertTrue(err.detail.endswith(
            "; the port lies in this system's ephemeral range (%d-%d), from which outgoing "
            "connections take their local ports: choose one outside it" % (low, high)),
            err.detail)

    @unittest.skipUnless(hasattr(socket, "SO_REUSEADDR") and os.name == "posix",
                         "Windows lets an exclusive bind share a connection's local port")
    def test_the_local_port_of_a_live_outgoing_connection(self):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.socket() as outgoing:
                outgoing.bind(("127.0.0.1", 0))
                outgoing.connect(server.getsockname())
                accepted, _ = server.accept()
                with accepted:
                    err = self.assert_busy(outgoing.getsockname()[1])
        if LINUX_TABLES:
            self.assertIn("yet it is in use: a connection uses it as its local end (ESTAB), "
                          "until that connection closes", err.detail)


class TestPortBusySentences(unittest.TestCase):
    """What a port-busy launch says, from what it found (_handoff.port_busy, without I/O)."""

    def test_the_ephemeral_range_is_named_only_for_a_port_inside_it(self):
        inside = _handoff.port_busy(50123, [], (32768, 60999)).detail
        self.assertIn("the port lies in this system's ephemeral range (32768-60999)", inside)
        for port in (24621, 32767, 61000):
            self.assertNotIn("ephemeral", _handoff.port_busy(port, [], (32768, 60999)).detail)

    def test_what_was_found_is_counted(self):
        detail = _handoff.port_busy(24621, ["TIME-WAIT", "TIME-WAIT", "ESTAB"],
                                    (32768, 60999)).detail
        self.assertEqual(detail, "nothing listens on the port, yet it is in use: 2 connections "
                         "that ended on it are in TIME-WAIT, which the system keeps for about "
                         "60 s after a connection closes; a connection uses it as its local end "
                         "(ESTAB), until that connection closes")

    def test_a_platform_that_shows_nothing(self):
        self.assertEqual(_handoff.port_busy(24621, None, None).detail,
                         "nothing listens on the port, yet it is in use (by another program's "
                         "connection, or held by the system for a while after one closed); "
                         "choose a port outside the system's ephemeral range")

    @unittest.skipUnless(os.path.exists("/proc/sys/net/ipv4/ip_local_port_range"), "not Linux")
    def test_linux_ephemeral_range_is_read_from_the_system(self):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as setting:
            expected = tuple(int(n) for n in setting.read().split())
        self.assertEqual(_net.ephemeral_range(), expected)


class TestPrivateNamesOf200(support.ThreadLeakCheck):
    """What code and tests written against 2.0.0 reached for."""

    def test_listening(self):
        host = Socket_Singleton(port=0)
        self.assertIs(host._listening, True)
        host.release()
        self.assertIs(host._listening, False)

    def test_append_args_without_observers_waits_in_arguments(self):
        host = in_process_host(self)
        before = len(host._arguments)
        host._append_args(("foo", "bar"))
        host._append_args(("baz",))
        self.assertEqual(len(host._arguments), before + 2)
        self.assertEqual(host.arguments[-2:], (("foo", "bar"), ("baz",)))
        self.assertEqual(host.clients, 0)

    def test_append_args_has_called_the_observers_when_it_returns(self):
        seen = []
        host = in_process_host(self)
        host.trace(lambda args, prefix, suffix="": seen.append(prefix + " ".join(args) + suffix),
                   ">>> ", suffix=" <<<")
        host._append_args(("foo", "bar"))
        self.assertEqual(seen, [">>> foo bar <<<"])

    def test_observers_len_and_clear(self):
        host = in_process_host(self)

        def callback(args):
            pass

        host.trace(callback)
        host.trace(callback)
        self.assertEqual(len(host._observers), 1)
        self.assertIn(callback, host._observers)
        host._observers.clear()
        self.assertEqual(len(host._observers), 0)
        self.assertEqual(repr(host).count("observers=0"), 1)

    def test_verbose_observer_failure_in_200_wording(self):
        host, port = support.start_host(self, {"kwargs": {"port": 0, "verbose": True},
                                               "observer_raises": "Intentional test exception"})
        self.assertEqual(strict_launch(["test", "args"], port), (0, ""))
        host.wait_for("launch")
        host.proc.stdin.close()  # the app releases and exits
        self.assertEqual(host.proc.wait(support.WAIT), 0)
        self.assertIn("Socket_Singleton: Observer observer raised exception: ValueError: "
                      "Intentional test exception", host.stderr())


class TestMessages(unittest.TestCase):
    def test_ipv6_addresses_are_bracketed(self):
        if not support.has_ipv6_loopback():
            self.skipTest("no IPv6 loopback")
        with socket.socket(socket.AF_INET6) as holder:
            holder.bind(("::1", 0))
            port = holder.getsockname()[1]
            code, err = strict_launch([ARG], port, address="::1")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("Socket_Singleton: [::1]:%d is in use" % port), err)

    def test_the_host_logs_a_client_that_gives_up_on_the_secret(self):
        log = LogWatcher(self)
        host = in_process_host(self, support.Collector(), secret="right", verbose=True)
        with redirect_stderr(io.StringIO()) as stderr:
            err = hand_off(host.port, [ARG], secret="wrong")
            log.wait_for("the client gave up its launch")
            host.release()
        self.assertEqual(err.reason, "secret-mismatch")
        self.assertIn("the client gave up its launch: the running instance does not know the "
                      "same secret", stderr.getvalue())
        self.assertNotIn(ARG, stderr.getvalue())

    def test_each_message_once_when_the_application_configured_logging(self):
        script = (
            "import logging, sys\n"
            "logging.basicConfig(format='app: %(message)s')\n"
            "from Socket_Singleton import Socket_Singleton\n"
            "Socket_Singleton(port=int(sys.argv[1]), verbose=True)\n")
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            port = holder.getsockname()[1]
            proc = subprocess.run([sys.executable, "-c", script, str(port)],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  env=support.app_env({}), timeout=support.WAIT)
        lines = [line for line in proc.stderr.splitlines() if "ended port-busy" in line]
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertTrue(lines[0].startswith("app: launch to 127.0.0.1:%d" % port), lines[0])


class TestWhatAFailedLaunchSays(unittest.TestCase):
    """Each failed launch says first whether the arguments were sent, and calls the holder
    "another instance" only when it answered as one."""

    TIMEOUT = 0.5
    SILENT = ("Socket_Singleton: the program on 127.0.0.1:%d did not answer. The arguments were "
              "not sent: the program on the port accepted the connection but did not answer "
              "within 0.5 s (an instance that is stopped or overloaded, or a program that does "
              "not speak this protocol).")

    @unittest.skipUnless(hasattr(signal, "SIGSTOP"), "no SIGSTOP")
    def test_a_stopped_host(self):
        host, port = support.start_host(self, support.config(0))
        os.kill(host.proc.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, host.proc.pid, signal.SIGCONT)  # before stop(): added later
        code, err = strict_launch([ARG], port, handoff_timeout=self.TIMEOUT)
        self.assertEqual((code, err.strip()), (1, self.SILENT % port))

    def test_a_web_server(self):
        port = support.free_port()
        server = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(support.kill, server)
        self.assertIn(b"Serving HTTP", server.stdout.readline())
        code, err = strict_launch([ARG], port, handoff_timeout=self.TIMEOUT)
        self.assertEqual((code, err.strip()), (1, self.SILENT % port))
        self.assertNotIn("another instance", err)

    def test_only_a_host_that_answered_is_another_instance(self):
        where = "127.0.0.1:24621"
        unconfirmed = _outcome.Outcome("no-answer", "it did not", 4242, unconfirmed=True)
        self.assertEqual(_outcome.exit_line(unconfirmed, where),
                         "Socket_Singleton: another instance holds 127.0.0.1:24621. The "
                         "arguments were sent but not acknowledged (they may have been "
                         "delivered): it did not.")
        refused = _outcome.Outcome("rejected", "too large", 4242)
        self.assertEqual(_outcome.exit_line(refused, where),
                         "Socket_Singleton: another instance holds 127.0.0.1:24621. The "
                         "arguments were refused: too large.")


class TestExactlyOnce(support.ThreadLeakCheck):
    """A launch whose acknowledgement is lost is retried, and delivered once."""

    def test_a_repeated_launch_id_is_answered_not_delivered_again(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        launch = _wire.encode_launch(b"", b"i" * _wire.ID_SIZE, os.getpid(), "/", (ARG,))
        answers = []
        for _ in range(2):
            with support.hello(host.port) as sock:
                sock.sendall(launch)
                answers.append(_client._read_frame(sock, deadline()))
        self.assertEqual(answers, [(_wire.ACK, _wire.DELIVERED)] * 2)
        self.assertEqual((collector.received, host.clients), ([(ARG,)], 1))

    def test_a_lost_acknowledgement_is_retried_and_delivered_once(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        lost = []

        def lose_the_first_ack(data):
            if data[:1] == _wire.ACK and not lost:
                lost.append(data[_wire.HEADER_SIZE:])
                return True
            return False

        with losing_answers(lose_the_first_ack):
            err = hand_off(host.port, [ARG])
        self.assertEqual(lost, [_wire.DELIVERED])
        self.assertEqual(err.reason, "delivered")
        self.assertEqual((collector.received, host.clients), ([(ARG,)], 1))

    def test_an_answer_that_arrived_before_the_deadline_is_honoured(self):
        # As if the launching process was descheduled past its deadline after the answer came.
        left, right = socket.socketpair()
        with left, right:
            left.sendall(_wire.encode_ack(_wire.DELIVERED))
            past = deadline() - 2 * support.WAIT
            self.assertEqual(_client._read_frame(right, past), (_wire.ACK, _wire.DELIVERED))
            with self.assertRaises(socket.timeout):
                _client._read_frame(right, past)  # and nothing else is waited for


class TestRealCauses(unittest.TestCase):
    def test_out_of_buffers_on_our_own_socket_is_not_foreign(self):
        host = in_process_host(self)
        real_socket = socket.socket

        def no_buffers(*args, **kwargs):
            if sys._getframe(1).f_globals["__name__"] == _client.__name__:
                raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
            return real_socket(*args, **kwargs)

        with mock.patch.object(socket, "socket", no_buffers):
            err = hand_off(host.port, [ARG])
        self.assertEqual(err.reason, "local-error")
        self.assertIn("this process could not use a socket", err.detail)

    def test_a_launch_whose_fate_is_unknown_does_not_say_not_delivered(self):
        host = in_process_host(self, support.Collector())
        with losing_answers(lambda data: data[:1] == _wire.ACK):
            err = hand_off(host.port, [ARG], handoff_timeout=0.5)
        self.assertEqual(err.reason, "no-answer")
        self.assertIn("it may have been delivered", err.detail)
        self.assertNotIn("not delivered", str(err))
        self.assertIs(err.unconfirmed, True)
        self.assertIn(" The arguments were sent but not acknowledged (they may have been "
                      "delivered): the launch reached a host", str(err))


def losing_answers(lose):
    """Fault injection on the launch's sockets (those made while this is in effect, not the
    ones a host accepts): a read whose data *lose(data)* picks is reset instead."""
    real_socket = socket.socket

    class LossySocket(real_socket):
        def recv(self, size, *flags):
            data = super().recv(size, *flags)
            if data and lose(data):
                raise ConnectionResetError(errno.ECONNRESET, "lost on the way")
            return data

    def make(family=-1, type=-1, proto=-1, fileno=None):
        if fileno is not None:  # accept() wraps the host's new connections: left alone
            return real_socket(family, type, proto, fileno)
        return LossySocket(family, type, proto)

    return mock.patch.object(socket, "socket", make)


class TestCutPlainMessages(support.ThreadLeakCheck):
    def test_a_plain_message_without_its_final_nul_is_not_a_launch(self):
        log = LogWatcher(self)
        collector = support.Collector()
        host = in_process_host(self, collector)
        support.send_raw(host.port, b"cut\0shor")
        support.send_raw(host.port, os.urandom(16).replace(b"\0", b"") + b"x")
        support.send_raw(host.port, b"whole\0")
        self.assertEqual(collector.wait(1), [("whole",)])
        log.wait_count("it does not end with a NUL, so it was cut short", 2)
        host.release()
        self.assertEqual((collector.received, host.clients), ([("whole",)], 1))


if __name__ == "__main__":
    unittest.main()
