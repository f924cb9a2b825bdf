"""The command line, ``python -m Socket_Singleton status|send``, run as real processes."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

import Socket_Singleton as package
from Socket_Singleton import Socket_Singleton, _identity, _wire

from . import support
from .support import FOREIGN_PROGRAMS, WAIT, assert_port_free, cli
from .test_replies import OtherAppProcess, previous_release

SECRET_ENV = "SS_TEST_CLI_SECRET"


# What the command line says of each foreign program, after "socket-singleton: ADDRESS: ".
FOREIGN = {
    "close": "the program on the port closes connections without answering: most likely an "
             "instance running socket-singleton 2.0.0 or older",
    "garbage": "the program on the port is not a Socket_Singleton host (it answers like an "
               "HTTP server)\n",
}


class CommandLineTestCase(support.ThreadLeakCheck):

    def assertOneLineError(self, result, code, prefix="socket-singleton: "):
        """Exit status *code*, nothing on stdout, exactly one line on stderr, no traceback."""
        self.assertEqual(result.code, code, result)
        self.assertEqual(result.out, "", result)
        self.assertNotIn("Traceback", result.err)
        self.assertEqual(len(result.err.splitlines()), 1, result)
        self.assertTrue(result.err.endswith("\n"), result)
        self.assertTrue(result.err.startswith(prefix), result)


class TestCommandLineUsage(CommandLineTestCase):

    EXAMPLES = ("\nexamples:\n"
                "  socket-singleton status --app-id org.example.Editor\n"
                "  socket-singleton send --app-id org.example.Editor -- notes.txt --new-window\n")

    def test_help_shows_examples_and_exit_codes(self):
        for command in ([], ["status"], ["send"]):
            with self.subTest(command=command):
                result = cli(*command, "--help")
                self.assertEqual((result.code, result.err), (0, ""), result)
                usage = " ".join(["usage: socket-singleton", *command])
                self.assertRegex(result.out, r"\A%s\s" % re.escape(usage))
                self.assertIn(self.EXAMPLES, result.out)
                self.assertIn("\nexit codes:\n", result.out)
                codes = re.findall(r"^  (\d+)  \S", result.out.split("exit codes:")[1], re.M)
                self.assertEqual(codes, ["0", "2", "3", "4", "5", "6", "7", "8", "9", "130"],
                                 result.out)
                if command:
                    self.assertIn("--port PORT", result.out)
                    self.assertIn("--secret-env NAME", result.out)

    def test_version(self):
        result = cli("--version")
        self.assertEqual((result.code, result.out, result.err),
                         (0, "socket-singleton %s\n" % package.__version__, ""))

    def test_usage_errors_are_one_line_and_exit_2(self):
        cases = [
            ([], "COMMAND"),
            (["status"], "--port"),
            (["send", "--", "notes.txt"], "--port"),
            (["status", "--port", "70000"], "70000"),
            (["send", "--port", "x", "--", "notes.txt"], "'x'"),
            (["status", "--port", "0"], "'0'"),
            (["frobnicate", "--port", "24621"], "frobnicate"),
            (["status", "--port", "24621", "--timeout", "0"], "--timeout"),
        ]
        for argv, mentioned in cases:
            with self.subTest(argv=argv):
                result = cli(*argv)
                self.assertOneLineError(result, 2, "socket-singleton: error: ")
                self.assertIn(mentioned, result.err)

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


class TestCommandLineStatus(CommandLineTestCase):

    def test_running_host(self):
        host, port = support.start_host(self, support.config(0))
        pid = host.host_pid
        result = cli("status", "--port", str(port))
        self.assertEqual(result.code, 0, result)
        self.assertEqual(result.out, "a Socket_Singleton host listens on 127.0.0.1:%d (pid %d)\n"
                         % (port, pid))
        self.assertEqual(result.err, "")

    def test_nothing_listening(self):
        port = support.free_port()
        result = cli("status", "--port", str(port))
        self.assertOneLineError(result, 3)
        self.assertEqual(result.err, "socket-singleton: 127.0.0.1:%d: nothing listens on the "
                         "port\n" % port)
        assert_port_free(self, port)

    def test_foreign_program(self):
        for mode in ("close", "garbage"):
            with self.subTest(mode=mode):
                server = support.FakeServer(self, FOREIGN_PROGRAMS[mode])
                result = cli("status", "--port", str(server.port))
                self.assertOneLineError(result, 4)
                self.assertTrue(result.err.startswith(
                    "socket-singleton: 127.0.0.1:%d: %s" % (server.port, FOREIGN[mode])), result)
                # a clean close is retried once, as a launch does (a host may have just died);
                # and the command line has no legacy_handoff to suggest
                self.assertEqual(len(server.records), 2 if mode == "close" else 1)
                self.assertNotIn("legacy_handoff", result.err)

    def test_no_answer(self):
        server = support.FakeServer(self, FOREIGN_PROGRAMS["silent"])
        result = cli("status", "--port", str(server.port), "--timeout", "0.5")
        self.assertOneLineError(result, 5)
        self.assertIn("did not answer within 0.5 s", result.err)

    def test_status_is_not_a_launch(self):
        # An in-process host, so that its `clients` can be read. deliver_empty: even a launch
        # without arguments would reach the observer.
        app = Socket_Singleton(port=0, deliver_empty=True)
        self.addCleanup(app.release)
        collector = support.Collector()
        app.trace(collector)
        result = cli("status", "--port", str(app.port))
        self.assertEqual(result.code, 0, result)
        self.assertIn("(pid %d)" % os.getpid(), result.out)
        # A real launch after the status query is the first and only one the host counts.
        result = cli("send", "--port", str(app.port), "--", "after")
        self.assertEqual(result.code, 0, result)
        self.assertEqual(collector.wait(1), [("after",)])
        self.assertEqual(app.clients, 1)

    def test_status_of_a_host_that_answers_retry_is_not_running(self):
        server = support.FakeServer(self, support.answering_hello_with(
            _wire.encode_ack(_wire.RETRY, "the host is releasing the port")))
        result = cli("status", "--port", str(server.port))
        self.assertEqual(result.code, 3, result)
        self.assertEqual(result.out, "")


class TestCommandLineSend(CommandLineTestCase):

    def test_delivers_exact_arguments_with_the_cli_cwd(self):
        host, port = support.start_host(self, support.config(0))
        pid = host.host_pid
        args = ["-x", "--new-window", "", "two words", "naïve ☃ 日本語", "--port", "--"]
        with tempfile.TemporaryDirectory() as where:
            result = cli("send", "--port", str(port), "--", *args, cwd=where)
            self.assertEqual(result.code, 0, result)
            self.assertEqual(result.out, "delivered to the host on 127.0.0.1:%d (pid %d)\n"
                             % (port, pid))
            self.assertEqual(result.err, "")
            event = host.wait_for("launch")
            self.assertEqual(support.decode_args(event), [os.fsencode(arg) for arg in args])
            self.assertEqual(event["cwd"], os.path.realpath(where))
            self.assertEqual(event["pid"], result.pid)

    def test_without_arguments(self):
        host, port = support.start_host(self, support.config(0, deliver_empty=True))
        result = cli("send", "--port", str(port))
        self.assertEqual(result.code, 0, result)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [])

    def test_ignored_arguments_exit_0_as_a_launch_would(self):
        # An "open with" wrapper run without files, or past max_clients: nothing to do.
        host, port = support.start_host(self, support.config(0, max_clients=2))
        pid = host.host_pid
        result = cli("send", "--port", str(port))  # client 1: no arguments
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(result.out, "ignored by the host on 127.0.0.1:%d (pid %d): there were "
                         "no arguments to deliver\n" % (port, pid))
        self.assertEqual(cli("send", "--port", str(port), "--", "kept").code, 0)
        result = cli("send", "--port", str(port), "--", "past the limit")
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(result.out, "ignored by the host on 127.0.0.1:%d (pid %d): "
                         "max_clients reached\n" % (port, pid))
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"kept"])

    def test_nothing_listening_does_not_take_the_port(self):
        port = support.free_port()
        result = cli("send", "--port", str(port), "--", "notes.txt")
        self.assertOneLineError(result, 3)
        self.assertEqual(result.err, "socket-singleton: 127.0.0.1:%d: nothing listens on the "
                         "port\n" % port)
        assert_port_free(self, port)

    def test_foreign_program(self):
        for mode in ("close", "garbage"):
            with self.subTest(mode=mode):
                server = support.FakeServer(self, FOREIGN_PROGRAMS[mode])
                result = cli("send", "--port", str(server.port), "--", "notes.txt")
                self.assertOneLineError(result, 4)
                self.assertTrue(result.err.startswith(
                    "socket-singleton: 127.0.0.1:%d: %s" % (server.port, FOREIGN[mode])), result)
                self.assertLessEqual(len(server.records), 2)
                self.assertNotIn("legacy_handoff", result.err)

    def test_no_answer(self):
        server = support.FakeServer(self, FOREIGN_PROGRAMS["silent"])
        result = cli("send", "--port", str(server.port), "--timeout", "0.5", "--", "notes.txt")
        self.assertOneLineError(result, 5)

    def test_secret_from_environment(self):
        host, port = support.start_host(self, support.config(0, secret="s3cret"))
        pid = host.host_pid
        right = {SECRET_ENV: "s3cret"}
        result = cli("status", "--port", str(port), "--secret-env", SECRET_ENV, env=right)
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertIn("(pid %d)" % pid, result.out)

        result = cli("send", "--port", str(port), "--secret-env", SECRET_ENV, "--", "first",
                     env=right)
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"first"])

    def test_wrong_or_missing_secret_delivers_nothing(self):
        host, port = support.start_host(self, support.config(0, secret="s3cret"))
        result = cli("send", "--port", str(port), "--secret-env", SECRET_ENV, "--", "wrong",
                     env={SECRET_ENV: "guess"})
        self.assertOneLineError(result, 6)
        self.assertIn("does not know the same secret", result.err)

        result = cli("send", "--port", str(port), "--secret-env", SECRET_ENV, "--", "unset",
                     unset=[SECRET_ENV])
        self.assertOneLineError(result, 2, "socket-singleton: error: ")
        self.assertEqual(result.err, "socket-singleton: error: environment variable %s is not "
                         "set\n" % SECRET_ENV)

        result = cli("send", "--port", str(port), "--", "none", unset=[SECRET_ENV])
        self.assertOneLineError(result, 6)
        self.assertIn("requires a secret", result.err)

        # The first launch the host sees is the one with the right secret.
        result = cli("send", "--port", str(port), "--secret-env", SECRET_ENV, "--", "right",
                     env={SECRET_ENV: "s3cret"})
        self.assertEqual(result.code, 0, result)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"right"])


def cli_process(test, *args, env=None):
    """Start ``python -m Socket_Singleton ARGS``; ended by its own handle when *test* ends."""
    environ = support.app_env({}, dict(env or {}, PYTHONIOENCODING="utf-8"))
    proc = subprocess.Popen([sys.executable, "-m", "Socket_Singleton", *args], cwd=support.ROOT,
                            env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    test.addCleanup(support.kill, proc)
    return proc


def finish(proc):
    """(returncode, stdout, stderr) of a command started with cli_process()."""
    out, err = support.communicate(proc)
    return support.Result(proc.pid, proc.returncode, support.text(out), support.text(err))


class TestCommandLineSendReplies(CommandLineTestCase):
    """``send --wait`` and the replies of a protocol-3 host (issue 18)."""

    def holding_host(self, **app):
        return support.start_host(self, dict(support.config(0), hold=True, **app))

    def waiting_send(self, port, *args):
        """A ``send --wait`` whose launch the host has received; returns its process."""
        return cli_process(self, "send", "--port", str(port), "--wait", "--", *args)

    def assertStillRunning(self, proc):
        with self.assertRaises(subprocess.TimeoutExpired):
            proc.wait(support.SHORT)

    def test_wait_prints_the_reply_and_exits_with_its_status(self):
        host, port = self.holding_host()
        proc = self.waiting_send(port, "doc.txt")
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"doc.txt"])
        self.assertStillRunning(proc)
        host.send("reply " + json.dumps(["closed doc.txt \u00e9\n", 5]))
        self.assertEqual(host.next_event(), {"event": "replied"})
        result = finish(proc)
        self.assertEqual((result.code, result.out, result.err),
                         (5, "closed doc.txt \u00e9\n", ""), result)

    def test_a_reply_of_status_0_prints_only_the_reply(self):
        host, port = self.holding_host()
        proc = self.waiting_send(port, "x")
        host.wait_for("launch")
        host.send('reply ["", 0]')
        result = finish(proc)
        self.assertEqual((result.code, result.out, result.err), (0, "", ""), result)

    def test_without_wait_a_reply_made_at_once_is_printed(self):
        _, port = support.start_host(self, dict(support.config(0), reply=["at once\n", 3],
                                                tuning={"delivery_wait": WAIT}))
        result = cli("send", "--port", str(port), "--", "x")
        self.assertEqual((result.code, result.out, result.err), (3, "at once\n", ""), result)

    @unittest.skipUnless(support.POSIX, "SIGINT to another process is POSIX only")
    def test_ctrl_c_exits_130_and_cancels_the_launch(self):
        host, port = self.holding_host()
        proc = self.waiting_send(port, "x")
        host.wait_for("launch")
        self.assertStillRunning(proc)
        proc.send_signal(signal.SIGINT)
        result = finish(proc)
        self.assertEqual((result.code, result.out, result.err), (130, "", ""), result)
        host.send("await-cancelled")
        self.assertEqual(host.wait_for("cancelled")["value"], True)

    def test_the_host_ends_before_it_replies(self):
        for end in ("release", "kill"):
            with self.subTest(end=end):
                host, port = self.holding_host()
                proc = self.waiting_send(port, "x")
                host.wait_for("launch")
                self.assertStillRunning(proc)
                if end == "kill":
                    host.proc.kill()
                else:
                    host.send("release")
                result = finish(proc)  # bounded: a send that hangs fails here
                self.assertOneLineError(result, 9)
                self.assertTrue(result.err.startswith(
                    "socket-singleton: 127.0.0.1:%d: the running instance delivered the "
                    "launch, then ended before it replied (" % port), result)

    def test_wait_on_a_protocol_2_host_sends_nothing(self):
        host = OtherAppProcess(previous_release(self), config=support.config(0))
        self.addCleanup(host.stop)
        port = host.wait_for("host")["port"]
        result = cli("send", "--port", str(port), "--wait", "--", "waits")
        self.assertOneLineError(result, 8)
        self.assertIn("wait=True needs protocol 3", result.err)
        # Without --wait it is delivered; it is the first launch the host sees.
        result = cli("send", "--port", str(port), "--", "plain")
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"plain"])

    def test_forward_env_and_the_activation_token(self):
        host, port = support.start_host(self, support.config(0))
        env = {"SS_TEST_VAR": "42", "XDG_ACTIVATION_TOKEN": "tok-1"}
        result = cli("send", "--port", str(port), "--forward-env", "--", "a", env=env)
        self.assertEqual((result.code, result.err), (0, ""), result)
        event = host.wait_for("launch")
        self.assertEqual((event["env"]["SS_TEST_VAR"], event["token"]), ("42", "tok-1"))
        self.assertEqual(event["env"]["SS_TEST_CONFIG"], json.dumps({}))
        result = cli("send", "--port", str(port), "--", "b", env=env)
        self.assertEqual((result.code, result.err), (0, ""), result)
        event = host.wait_for("launch")
        self.assertEqual((event["env"], event["token"]), (None, "tok-1"))


class TestCommandLineAppId(CommandLineTestCase):
    """--app-id and --scope: the ports are derived, and only a host of that identity counts."""

    def setUp(self):
        super().setUp()
        self.config_home = tempfile.mkdtemp(prefix="ss-cli-")
        self.addCleanup(shutil.rmtree, self.config_home, True)
        self.env = {"XDG_CONFIG_HOME": self.config_home, "LOCALAPPDATA": self.config_home}
        self.app_id = "org.example.cli%s" % os.urandom(4).hex()

    def test_status_and_send_find_the_host_on_a_later_candidate(self):
        ports = _identity.candidates(self.app_id, "user")
        foreign = support.FakeServer(self, FOREIGN_PROGRAMS["garbage"], port=ports[0])
        self.assertEqual(foreign.port, ports[0])
        host, port = support.start_host(self, {"kwargs": {"app_id": self.app_id}},
                                        env=self.env)
        self.assertEqual(port, ports[1])
        result = cli("status", "--app-id", self.app_id, env=self.env)
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(result.out, "a Socket_Singleton host listens on %s (user scope) on "
                         "127.0.0.1:%d (pid %d)\n" % (self.app_id, port, host.host_pid))
        result = cli("send", "--app-id", self.app_id, "--", "notes.txt", env=self.env)
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(result.out, "delivered to the host on %s (user scope) on 127.0.0.1:%d "
                         "(pid %d)\n" % (self.app_id, port, host.host_pid))
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"notes.txt"])

    def test_another_scope_is_another_application(self):
        _, port = support.start_host(self, {"kwargs": {"app_id": self.app_id,
                                                          "scope": "machine"}}, env=self.env)
        result = cli("status", "--app-id", self.app_id, "--scope", "machine", env=self.env)
        self.assertEqual(result.code, 0, result)
        self.assertIn("(machine scope) on 127.0.0.1:%d" % port, result.out)
        result = cli("send", "--app-id", self.app_id, "--", "x", env=self.env)
        self.assertOneLineError(result, 3)
        self.assertIn("no host of %s, user scope answers on any of its 8 candidate ports"
                      % self.app_id, result.err)
        assert_port_free(self, _identity.port_for(self.app_id, "user"))

    def test_a_pinned_port(self):
        _, port = support.start_host(self, support.config(0), env=self.env)
        result = cli("status", "--app-id", self.app_id, "--port", str(port), env=self.env)
        self.assertOneLineError(result, 4)
        self.assertEqual(result.err, "socket-singleton: %s (user scope) on 127.0.0.1:%d: the "
                         "host on the port serves another application or user (a host without "
                         "an application id)\n" % (self.app_id, port))

    def test_usage(self):
        for argv, mentioned in ((["status", "--scope", "user", "--port", "1"], "--scope"),
                                (["status", "--app-id", "9x"], "--app-id"),
                                (["send", "--scope", "machine"], "--port")):
            with self.subTest(argv=argv):
                result = cli(*argv, env=self.env)
                self.assertOneLineError(result, 2, "socket-singleton: error: ")
                self.assertIn(mentioned, result.err)


if __name__ == "__main__":
    unittest.main()
