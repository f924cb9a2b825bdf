"""The running instance answers a launch (protocol 3, issue 18), between real processes: replies
made before the observer returns or later from another thread, ``wait=True``, Ctrl+C, a host
that ends before it replies, the activation token, ``forward_env``, and the older protocols."""

import io
import json
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import unittest

from Socket_Singleton import Launch, _wire

from . import support
from .support import ARG, WAIT

# The previous release (protocol 2, socket-singleton 4.0.0 as it was before issue 18).
PROTOCOL_2_COMMIT = "d7316ed"
TOKEN_VARIABLES = ("XDG_ACTIVATION_TOKEN", "DESKTOP_STARTUP_ID")


def host_config(**app):
    """test_app's configuration for a host on a port of its own; *app*: its other settings."""
    return dict(support.config(0), **app)


def start(args=(), config=None, env=None, unset=(), directory=None):
    """Start test_app.py as a launch (its stdout is bytes: a strict launch writes the reply
    there); *unset*: variables of ours it does not get. With *directory*, the test_app.py and
    package found there instead of this checkout's."""
    environ = support.app_env(config or {}, dict(env or {}, PYTHONIOENCODING="utf-8"))
    for name in unset:
        environ.pop(name, None)
    app = support.APP
    if directory is not None:
        environ["PYTHONPATH"] = directory
        app = os.path.join(directory, "test_app.py")
    return subprocess.Popen([sys.executable, app, *args], env=environ, cwd=directory,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish_strict(proc):
    """Wait for a strict launch; returns (returncode, stdout as text, stderr as text)."""
    out, err = support.communicate(proc)
    return proc.returncode, support.text(out), support.text(err)


def outcome(proc):
    """Wait for a strict=False launch; returns its "turned-away" event."""
    code, events, err = support.finish(proc)
    if code != 3 or [e["event"] for e in events] != ["turned-away"]:
        raise AssertionError("the launch did not report an outcome: %s %r %s"
                             % (code, events, err))
    return events[0]


def assert_still_running(test, proc):
    """*proc* has not ended within a short wait (it waits for its reply)."""
    with test.assertRaises(subprocess.TimeoutExpired):
        proc.wait(support.SHORT)


class OtherAppProcess(support.AppProcess):
    """A test_app.py process that runs the test_app.py and package in *directory*."""

    def __init__(self, directory, args=(), config=None, env=None):
        self.proc = start(args, config, env, directory=directory)
        self.events = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


class RepliesTestCase(unittest.TestCase):

    def host(self, **app):
        """A host app on a port of its own; returns (app, port)."""
        return support.start_host(self, host_config(**app))

    def launch(self, args=(), config=None, **kwargs):
        """Start a launch; it is ended by its own handle when the test ends."""
        proc = start(args, config, **kwargs)
        self.addCleanup(support.kill, proc)
        return proc


class TestReplyBeforeTheObserverReturns(RepliesTestCase):
    """An observer that replies at once: a launch without wait=True gets the reply with its
    acknowledgement (the host waits for its observer for delivery_wait, here long)."""

    TUNING = (("delivery_wait", WAIT),)

    def test_a_strict_launch_prints_the_reply_and_exits_with_its_status(self):
        _, port = self.host(reply=["h\u00e9llo\nsecond line\n", 7], tuning=dict(self.TUNING))
        code, out, err = finish_strict(self.launch([ARG], support.config(port)))
        self.assertEqual((code, out, err), (7, "h\u00e9llo\nsecond line\n", ""))

    def test_a_reply_of_status_0(self):
        _, port = self.host(reply=["ok", 0], tuning=dict(self.TUNING))
        code, out, err = finish_strict(self.launch([ARG], support.config(port)))
        self.assertEqual((code, out, err), (0, "ok", ""))

    def test_strict_false_gets_the_reply_on_the_exception(self):
        host, port = self.host(reply=["answer", 42], tuning=dict(self.TUNING))
        event = outcome(self.launch([ARG], support.client_config(port)))
        self.assertEqual((event["reason"], event["delivered"], event["host_pid"]),
                         ("delivered", True, host.host_pid))
        self.assertEqual((event["reply_text"], event["reply_status"]), ("answer", 42))

    def test_a_launch_not_replied_to_ends_as_before(self):
        host, port = self.host(tuning=dict(self.TUNING))
        code, out, err = finish_strict(self.launch([ARG], support.config(port)))
        self.assertEqual((code, out, err), (0, "", ""))
        self.assertEqual(support.decode_args(host.wait_for("launch")), [os.fsencode(ARG)])
        event = outcome(self.launch([ARG], support.client_config(port)))
        self.assertEqual((event["reason"], event["reply_text"], event["reply_status"]),
                         ("delivered", None, None))


class TestWaitForTheReply(RepliesTestCase):

    def test_the_launch_runs_until_another_thread_replies(self):
        host, port = self.host(hold=True)
        proc = self.launch(["doc.txt"], support.config(port, wait=True))
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"doc.txt"])
        assert_still_running(self, proc)  # the observer returned: no reply yet
        host.send('reply ["closed doc.txt\\n", 4]')  # on the host's main thread
        self.assertEqual(host.next_event(), {"event": "replied"})
        self.assertEqual(finish_strict(proc), (4, "closed doc.txt\n", ""))

        host.send('reply-again ["again", 0]')
        self.assertEqual(host.next_event(), {"event": "reply-failed", "error": "RuntimeError",
                                             "message": "this launch has been replied to "
                                                        "already"})

    def test_strict_false_waits_too(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.client_config(port, wait=True))
        host.wait_for("launch")
        assert_still_running(self, proc)
        host.send('reply ["", 0]')
        event = outcome(proc)
        self.assertEqual((event["reason"], event["reply_text"], event["reply_status"]),
                         ("delivered", "", 0))

    def test_a_reply_that_raises_is_not_made(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.config(port, wait=True))
        host.wait_for("launch")
        cases = [
            ('[5, 0]', "TypeError", "text must be a str, not int"),
            ('["x", "3"]', "TypeError", "status must be an int, not str"),
            ('["x", true]', "TypeError", "status must be an int, not bool"),
            ('["x", 1.0]', "TypeError", "status must be an int, not float"),
            ('["x", %d]' % 2 ** 31, "ValueError", "status must fit in 32 bits"),
            ('["x", %d]' % (-2 ** 31 - 1), "ValueError", "status must fit in 32 bits"),
            (json.dumps(["x" * (_wire.MAX_REPLY + 1), 0]), "ValueError",
             "the reply's text takes more than %d bytes" % _wire.MAX_REPLY),
            # counted in UTF-8 bytes, not characters
            (json.dumps(["\u00e9" * (_wire.MAX_REPLY // 2 + 1), 0]), "ValueError",
             "the reply's text takes more than %d bytes" % _wire.MAX_REPLY),
        ]
        for answer, error, message in cases:
            with self.subTest(answer=answer[:20]):
                host.send("reply " + answer)
                self.assertEqual(host.next_event(), {"event": "reply-failed", "error": error,
                                                     "message": message})
        assert_still_running(self, proc)
        # The largest reply there is still goes through, whole.
        host.send("reply " + json.dumps(["r" * _wire.MAX_REPLY, 5]))
        self.assertEqual(host.next_event(), {"event": "replied"})
        self.assertEqual(finish_strict(proc), (5, "r" * _wire.MAX_REPLY, ""))


def replies_with_its_acknowledgement(reply):
    """A FakeServer handler that speaks protocol 3 and answers a launch with *reply* and the
    acknowledgement in one write, so that the launch's first read brings both."""

    def handler(conn, record):
        support.read_hello(conn, record)
        conn.sendall(_wire.encode_welcome3(4242, 1 << 20, os.urandom(_wire.NONCE_SIZE), b"",
                                           _wire.NUMBERED))
        _, size = _wire.parse_header(support.recv_exactly(conn, _wire.HEADER_SIZE, record))
        support.recv_exactly(conn, size, record)
        conn.sendall(_wire.encode_reply(*reply) + _wire.encode_ack(_wire.DELIVERED))
        support.read_to_end(conn, record)

    return handler


class TestAReplyAndItsAcknowledgementInOneRead(unittest.TestCase):
    """The launch read the reply's frame and dropped what came after it in the same read (the
    acknowledgement), then waited handoff_timeout for it: "no-answer", the reply lost."""

    def test_both_are_taken(self):
        server = support.FakeServer(self, replies_with_its_acknowledgement((3, "both")))
        for wait in (False, True):
            with self.subTest(wait=wait):
                event = outcome(start([ARG], support.client_config(server.port, wait=wait,
                                                                    handoff_timeout=WAIT / 2)))
                self.assertEqual((event["reason"], event["host_pid"], event["reply_text"],
                                  event["reply_status"]), ("delivered", 4242, "both", 3), event)


@unittest.skipUnless(support.POSIX, "SIGINT to another process is POSIX only")
class TestCtrlC(RepliesTestCase):

    def test_ctrl_c_while_waiting_exits_130_and_the_host_sees_it_cancelled(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.config(port, wait=True))
        host.wait_for("launch")
        assert_still_running(self, proc)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(finish_strict(proc), (130, "", ""))
        host.send("await-cancelled")
        self.assertEqual(host.wait_for("cancelled"), {"event": "cancelled", "value": True})
        host.send('reply ["too late", 1]')  # nobody hears it, and that is no error
        self.assertEqual(host.next_event(), {"event": "replied"})

    def test_a_launch_replied_to_is_not_cancelled(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.config(port, wait=True))
        host.wait_for("launch")
        host.send('reply ["x", 0]')
        self.assertEqual(host.next_event(), {"event": "replied"})
        self.assertEqual(finish_strict(proc), (0, "x", ""))


class TestWaitCancelled(RepliesTestCase):
    """``Launch.wait_cancelled()``: a thread of the host waits until a waiting launch is
    cancelled, replied to, or let go, and learns which (a host in this process)."""

    def setUp(self):
        self.launches = queue.Queue()
        self.app = support.in_process_host(self, self.launches.put)

    def waiter(self, launch, timeout=2 * WAIT):
        """A thread that calls ``launch.wait_cancelled(timeout)``; returns (thread, results).
        Its wait outlasts ``assert_returns``' join, so a wake-up that never comes fails the
        test, and the thread still ends."""
        results = []
        thread = threading.Thread(target=lambda: results.append(launch.wait_cancelled(timeout)),
                                  daemon=True)
        thread.start()
        return thread, results

    def waiting_launch(self):
        proc = self.launch([ARG], support.config(self.app.port, wait=True))
        launch = self.launches.get(timeout=WAIT)
        thread, results = self.waiter(launch)
        assert_still_running(self, proc)
        thread.join(support.SHORT)
        self.assertTrue(thread.is_alive(), "wait_cancelled() returned before anything happened")
        return proc, launch, thread, results

    def interrupt(self, proc):
        """Ctrl+C in the launch (exit status 130); on Windows, where no signal reaches another
        process, the launch is killed. Either way it stops waiting."""
        if support.POSIX:
            proc.send_signal(signal.SIGINT)
            self.assertEqual(finish_strict(proc), (130, "", ""))
        else:
            proc.kill()
            self.assertNotEqual(finish_strict(proc)[0], 0)

    def assert_returns(self, thread, results, value):
        thread.join(WAIT)
        self.assertFalse(thread.is_alive(), "wait_cancelled() did not return")
        self.assertEqual(results, [value])

    def test_ctrl_c_or_kill_ends_the_wait_with_true(self):
        proc, launch, thread, results = self.waiting_launch()
        self.interrupt(proc)
        self.assert_returns(thread, results, True)
        self.assertTrue(launch.cancelled)

    def test_a_reply_ends_the_wait_with_false(self):
        proc, launch, thread, results = self.waiting_launch()
        launch.reply("done", 4)
        self.assert_returns(thread, results, False)
        self.assertEqual(finish_strict(proc), (4, "done", ""))

    def test_release_ends_the_wait_with_false(self):
        proc, launch, thread, results = self.waiting_launch()
        self.app.release()
        self.assert_returns(thread, results, False)
        self.assertEqual(finish_strict(proc)[0], 1)
        self.assertFalse(launch.cancelled)
        launch.reply("too late")  # goes nowhere, and that is no error

    def test_a_launch_that_does_not_wait_returns_at_once(self):
        proc = self.launch([ARG], support.config(self.app.port))
        launch = self.launches.get(timeout=WAIT)
        self.assertEqual(finish_strict(proc), (0, "", ""))
        self.assert_returns(*self.waiter(launch), False)

    def test_a_reply_ends_the_wait_before_anything_is_sent(self):
        # A launch with no connection yet: only the reply itself can end the wait.
        launch = Launch(("x",), launch_id=b"1" * 16, framed=True, extras=_wire.Extras(wait=True))
        thread, results = self.waiter(launch)
        thread.join(support.SHORT)
        self.assertTrue(thread.is_alive(), "wait_cancelled() returned before the reply")
        launch.reply("done")
        self.assert_returns(thread, results, False)

    def test_ctrl_c_before_the_acknowledgement_is_a_cancel_too(self):
        # The observer holds the launch, and with no deadline for the acknowledgement the
        # launch is still waiting for it when Ctrl+C comes.
        self.app.release()
        support.tune(self, delivery_wait=WAIT)
        held, unblock = queue.Queue(), threading.Event()
        self.addCleanup(unblock.set)

        def observer(launch):
            held.put(launch)
            unblock.wait(WAIT)

        app = support.in_process_host(self, observer)
        proc = self.launch([ARG], support.config(app.port, wait=True))
        launch = held.get(timeout=WAIT)
        thread, results = self.waiter(launch)
        self.interrupt(proc)
        self.assert_returns(thread, results, True)
        self.assertTrue(launch.cancelled)

    def test_a_copy_does_not_wait(self):
        # A copy (pickled to a worker, say) has no connection: nothing could end its wait.
        proc, launch, thread, results = self.waiting_launch()
        copy = pickle.loads(pickle.dumps(launch))
        self.assertEqual(copy, launch)
        self.assert_returns(*self.waiter(copy), False)
        self.assertTrue(thread.is_alive(), "the original stopped waiting")
        launch.reply()
        self.assert_returns(thread, results, False)
        self.assertEqual(finish_strict(proc), (0, "", ""))

    def test_a_timeout_ends_the_wait(self):
        proc, launch, thread, results = self.waiting_launch()
        self.assertFalse(launch.wait_cancelled(0.01))
        launch.reply()
        self.assert_returns(thread, results, False)
        self.assertEqual(finish_strict(proc), (0, "", ""))


class TestTheHostEndsBeforeItReplies(RepliesTestCase):

    def assert_no_reply(self, proc):
        event = outcome(proc)  # bounded by WAIT: a launch that hangs fails here
        self.assertEqual((event["reason"], event["delivered"]), ("no-reply", False), event)
        self.assertIn("the running instance delivered the launch, then ended before it "
                      "replied", event["detail"])
        self.assertEqual((event["reply_text"], event["reply_status"]), (None, None))

    def test_the_host_is_killed(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.client_config(port, wait=True))
        host.wait_for("launch")
        assert_still_running(self, proc)
        host.proc.kill()
        self.assertNotEqual(host.proc.wait(WAIT), 0)
        self.assert_no_reply(proc)

    def test_the_host_releases_the_port(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.client_config(port, wait=True))
        host.wait_for("launch")
        assert_still_running(self, proc)
        host.send("release")
        host.wait_for("released")
        self.assert_no_reply(proc)

    def test_a_strict_launch_says_so_in_one_line(self):
        host, port = self.host(hold=True)
        proc = self.launch([ARG], support.config(port, wait=True))
        host.wait_for("launch")
        host.send("release")
        host.wait_for("released")
        code, out, err = finish_strict(proc)
        self.assertEqual((code, out), (1, ""), err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("Socket_Singleton: another instance holds 127.0.0.1:%d. "
                                       "The arguments were sent and taken, but no reply came: "
                                       % port), err)


class TestABlockedObserver(RepliesTestCase):

    def test_other_launches_are_served_while_one_waits_for_its_reply(self):
        host, port = self.host(hold=True, observer_block=True, tuning={"delivery_wait": 0.2})
        waiting = self.launch(["waits"], support.config(port, wait=True))
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"waits"])
        # The observer is blocked in that launch and never replies: the others are queued.
        for name in ("second", "third"):
            event = outcome(self.launch([name], support.client_config(port)))
            self.assertEqual((event["reason"], event["delivered"]), ("queued", True), event)
            code, out, err = finish_strict(self.launch([name], support.config(port)))
            self.assertEqual((code, out, err), (0, "", ""))
        assert_still_running(self, waiting)

        host.send("unblock")
        self.assertEqual([support.decode_args(event) for event in host.launches(4)],
                         [[b"second"], [b"second"], [b"third"], [b"third"]])
        assert_still_running(self, waiting)
        host.send('reply ["at last", 2]')
        self.assertEqual(host.wait_for("replied"), {"event": "replied"})
        self.assertEqual(finish_strict(waiting), (2, "at last", ""))


class TestActivationToken(RepliesTestCase):

    def test_the_host_sees_the_launchs_token(self):
        host, port = self.host()
        cases = [
            ({"XDG_ACTIVATION_TOKEN": "abc"}, "abc"),
            ({"DESKTOP_STARTUP_ID": "xyz"}, "xyz"),
            ({"XDG_ACTIVATION_TOKEN": "abc", "DESKTOP_STARTUP_ID": "xyz"}, "abc"),
            ({}, None),
        ]
        for env, token in cases:
            with self.subTest(env=env):
                proc = self.launch([ARG], support.client_config(port), env=env,
                                   unset=[name for name in TOKEN_VARIABLES if name not in env])
                self.assertEqual(outcome(proc)["reason"], "delivered")
                self.assertEqual(host.wait_for("launch")["token"], token)


class TestForwardEnv(RepliesTestCase):

    def test_what_the_host_sees_of_the_launchs_environment(self):
        host, port = self.host()
        env = {"SS_TEST_VAR": "42 \u00e9=x"}
        for forward, check in [
            (True, lambda seen: self.assertEqual(seen["SS_TEST_VAR"], "42 \u00e9=x")),
            (["SS_TEST_VAR"], lambda seen: self.assertEqual(seen, env)),
            (["SS_TEST_VAR", "SS_TEST_UNSET"], lambda seen: self.assertEqual(seen, env)),
            ([], lambda seen: self.assertEqual(seen, {})),
            (False, lambda seen: self.assertIsNone(seen)),
        ]:
            with self.subTest(forward_env=forward):
                proc = self.launch([ARG], support.client_config(port, forward_env=forward),
                                   env=env, unset=["SS_TEST_UNSET"])
                self.assertEqual(outcome(proc)["reason"], "delivered")
                check(host.wait_for("launch")["env"])
        proc = self.launch([ARG], support.client_config(port), env=env)  # the default
        self.assertEqual(outcome(proc)["reason"], "delivered")
        self.assertIsNone(host.wait_for("launch")["env"])

    def test_all_of_it_is_forwarded(self):
        host, port = self.host()
        proc = self.launch([ARG], support.client_config(port, forward_env=True),
                           env={"SS_TEST_VAR": "42"})
        self.assertEqual(outcome(proc)["reason"], "delivered")
        seen = host.wait_for("launch")["env"]
        self.assertEqual(seen.get("PATH"), os.environ.get("PATH"))
        self.assertEqual(seen["SS_TEST_CONFIG"], json.dumps(support.client_config(
            port, forward_env=True)))


_previous_release = []  # the directory with the protocol-2 package, once extracted


def previous_release(test):
    """A directory holding the package as of PROTOCOL_2_COMMIT (and this test_app.py), or
    skip the test where git or the repository's history is missing (an unpacked sdist)."""
    if not _previous_release:
        _previous_release.append(_extract_previous_release())
    if isinstance(_previous_release[0], str) and _previous_release[0].startswith("skip: "):
        test.skipTest(_previous_release[0][len("skip: "):])
    return _previous_release[0]


def _extract_previous_release():
    git = shutil.which("git")
    if git is None:
        return "skip: git is not installed"
    try:
        archive = subprocess.run([git, "-C", support.ROOT, "archive", PROTOCOL_2_COMMIT,
                                  "Socket_Singleton"], capture_output=True, timeout=WAIT)
    except (OSError, subprocess.TimeoutExpired) as err:
        return "skip: git failed: %s" % err
    if archive.returncode != 0:
        return "skip: no commit %s here (not a clone with its history?): %s" % (
            PROTOCOL_2_COMMIT, archive.stderr.decode(errors="replace").strip())
    directory = tempfile.mkdtemp(prefix="ss-protocol-2-")
    import atexit

    atexit.register(shutil.rmtree, directory, True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory)  # our own repository's files
    shutil.copy(support.APP, directory)
    return directory


class TestOlderProtocols(RepliesTestCase):

    def test_a_plain_200_form_launch_still_delivers(self):
        host, port = self.host()
        support.send_raw(port, os.fsencode(ARG) + b"\0second\0")
        event = host.wait_for("launch")
        self.assertEqual(support.decode_args(event), [os.fsencode(ARG), b"second"])
        self.assertEqual((event["cwd"], event["pid"], event["token"], event["env"]),
                         (None, None, None, None))

    def old_host(self):
        """A host of the previous release (protocol 2); returns (app, port)."""
        app = OtherAppProcess(previous_release(self), config=host_config())
        self.addCleanup(app.stop)
        event = app.wait_for("host")
        app.host_pid = event["pid"]
        return app, event["port"]

    def test_a_launch_hands_off_to_a_protocol_2_host(self):
        host, port = self.old_host()
        # wait=True: the previous release cannot reply, so nothing is sent
        event = outcome(self.launch(["waits"], support.client_config(port, wait=True)))
        self.assertEqual((event["reason"], event["delivered"], event["host_pid"]),
                         ("unsupported", False, host.host_pid))
        self.assertEqual(event["detail"], "the running instance speaks protocol 2 "
                         "(socket-singleton 4.0.0), which cannot reply; wait=True needs "
                         "protocol 3")
        self.assertIn("The arguments were not sent", event["message"])

        event = outcome(self.launch([ARG], support.client_config(port)))
        self.assertEqual((event["reason"], event["detail"]), ("delivered", ""), event)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [os.fsencode(ARG)])

        event = outcome(self.launch(["env"], support.client_config(port, forward_env=True)))
        self.assertEqual(event["reason"], "delivered", event)
        self.assertEqual(event["detail"], "the environment was not forwarded: the running "
                         "instance speaks protocol 2 (socket-singleton 4.0.0)")
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"env"])

        code, out, err = finish_strict(self.launch(["strict"], support.config(port)))
        self.assertEqual((code, out, err), (0, "", ""))
        launched = host.wait_for("launch")
        self.assertEqual(support.decode_args(launched), [b"strict"])
        self.assertIsNone(launched["token"])

    def test_a_protocol_2_launch_hands_off_to_this_host(self):
        directory = previous_release(self)
        host, port = self.host()
        proc = start([ARG], support.client_config(port), directory=directory)
        self.addCleanup(support.kill, proc)
        event = outcome(proc)
        self.assertEqual((event["reason"], event["host_pid"]), ("delivered", host.host_pid))
        launched = host.wait_for("launch")
        self.assertEqual(support.decode_args(launched), [os.fsencode(ARG)])
        self.assertEqual(launched["pid"], proc.pid)
        self.assertEqual((launched["token"], launched["env"]), (None, None))

    def test_a_200_launch_hands_off_to_this_host(self):
        from .test_compat import python_with_200

        python = python_with_200(self)
        host, port = self.host()
        # Run from the environment's own directory: from the checkout, "-c" would import this
        # copy of the library instead.
        proc = subprocess.Popen(
            [python, "-c", "import os; from Socket_Singleton import Socket_Singleton; "
             "Socket_Singleton(port=int(os.environ['SS_TEST_PORT']))", "from-2.0.0"],
            cwd=os.path.dirname(python), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict({k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                     SS_TEST_PORT=str(port)))
        self.addCleanup(support.kill, proc)
        support.communicate(proc)
        self.assertEqual(support.decode_args(host.wait_for("launch")), [b"from-2.0.0"])


if __name__ == "__main__":
    unittest.main()
