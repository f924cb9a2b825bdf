"""Real processes (test_app.py): enforcement, argument passing, timeouts, thresholds, bursts."""

import collections
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import unittest

from Socket_Singleton import MultipleSingletonsError, Socket_Singleton

from . import support
from .support import assert_port_free, config, hand_off

MESSAGE_2_0_0 = ("\nApplication is already bound & listening @ 127.0.0.1 on port %d. Multiple "
                 "instances are disallowed in the current context.")


def strings(event):
    """The arguments an app observer received, decoded like sys.argv."""
    return [arg.decode("utf-8", "surrogateescape") for arg in support.decode_args(event)]


class ProcessTestCase(unittest.TestCase):

    def start(self, args=(), app_config=None):
        """A launch whose output is collected later with support.finish(); always ended by the
        test."""
        proc = support.launch(args, app_config)
        self.addCleanup(support.kill, proc)
        return proc


class TestSingletonEnforcement(ProcessTestCase):

    def test_second_launch_exits_zero_when_strict(self):
        host, port = support.start_host(self, config(0))
        code, events, err = support.run_client(["second"], config(port))
        self.assertEqual((code, events, err), (0, [], ""))
        self.assertEqual(strings(host.wait_for("launch")), ["second"])

    def test_strict_false_raises_multiple_singletons_error(self):
        host, port = support.start_host(self, config(0))
        host_pid = host.proc.pid
        code, events, err = support.run_client(["second"], config(port, strict=False))
        self.assertEqual(code, 3, err)
        (event,) = events
        self.assertEqual(event["event"], "turned-away")
        self.assertTrue(event["message"].startswith(MESSAGE_2_0_0 % port), event["message"])
        self.assertEqual(event["reason"], "delivered")
        self.assertTrue(event["delivered"])
        self.assertEqual(event["host_pid"], host_pid)
        self.assertEqual(strings(host.wait_for("launch")), ["second"])

        error = hand_off(port, ["third"])  # the same, caught in this process
        self.assertIsInstance(error, MultipleSingletonsError)
        self.assertEqual((error.address, error.port), ("127.0.0.1", port))
        self.assertEqual((error.reason, error.delivered, error.detail, error.host_pid),
                         ("delivered", True, "", host_pid))
        self.assertTrue(str(error).startswith(MESSAGE_2_0_0 % port))
        self.assertEqual(strings(host.wait_for("launch")), ["third"])

    def test_client_false_sends_nothing(self):
        host, port = support.start_host(self, config(0))
        code, events, err = support.run_client(["must-not-arrive"], config(port, client=False))
        self.assertEqual((code, events, err), (0, [], ""))
        code, events, _ = support.run_client(["nor-this"], config(port, client=False,
                                                                  strict=False))
        self.assertEqual(code, 3)
        self.assertEqual((events[0]["reason"], events[0]["delivered"]), ("not-sent", False))
        self.assertEqual(support.run_client(["marker"], config(port))[0], 0)
        # Launches are delivered in order: anything sent before the marker would come first.
        self.assertEqual(strings(host.wait_for("launch")), ["marker"])

    def test_one_host_among_simultaneous_first_launches(self):
        port = support.free_port()
        apps = []
        for i in range(6):
            app = support.AppProcess(["first-%d" % i], config(port, strict=False))
            self.addCleanup(app.stop)
            apps.append(app)
        outcomes, early = [], collections.defaultdict(list)
        for i, app in enumerate(apps):
            while True:
                event = app.next_event()
                if event["event"] == "launch":  # a host may deliver before it reports
                    early[i].append(event)
                    continue
                self.assertIn(event["event"], ("host", "turned-away"), app.stderr())
                outcomes.append(event)
                break
        hosts = [i for i, event in enumerate(outcomes) if event["event"] == "host"]
        self.assertEqual(len(hosts), 1, outcomes)
        host = apps[hosts[0]]
        for i, event in enumerate(outcomes):
            if i != hosts[0]:
                self.assertTrue(event["delivered"], event)
                self.assertEqual(event["host_pid"], host.proc.pid)
        received = early[hosts[0]] + host.launches(5 - len(early[hosts[0]]))
        self.assertEqual(sorted(strings(event)[0] for event in received),
                         ["first-%d" % i for i in range(6) if i != hosts[0]])


class TestArgumentPassing(ProcessTestCase, support.ThreadLeakCheck):

    def test_arguments_reach_the_host_exactly(self):
        host, port = support.start_host(self, config(0))
        args = ["alpha", "with space", "", "--flag=1", "ünï", "-"]
        with tempfile.TemporaryDirectory() as cwd:
            proc = support.launch(args, config(port), cwd=cwd)
            self.addCleanup(support.kill, proc)
            code, _, err = support.finish(proc)
            self.assertEqual(code, 0, err)
            event = host.wait_for("launch")
            self.assertEqual(support.decode_args(event), [arg.encode() for arg in args])
            self.assertEqual(event["pid"], proc.pid)
            self.assertEqual(os.path.realpath(event["cwd"]),
                             os.path.realpath(cwd))

    def test_sys_argv_is_read_at_hand_off_time(self):
        host, port = support.start_host(self, config(0))
        script = textwrap.dedent("""
            import sys
            from Socket_Singleton import Socket_Singleton
            sys.argv = [sys.argv[0], "set", "after import"]  # a new list, as argparse users do
            Socket_Singleton(port=%d)
            """ % port)
        result = subprocess.run([sys.executable, "-c", script, "original"],
                                env=support.app_env({}), capture_output=True,
                                timeout=support.WAIT)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(strings(host.wait_for("launch")), ["set", "after import"])

    def test_every_observer_gets_the_arguments(self):
        app = Socket_Singleton(port=0)
        self.addCleanup(app.release)
        first, second = support.Collector(), support.Collector()
        app.trace(first, "one")
        app.trace(second, kind="two")
        args = ["x", "", "y z", "😀"]
        code, events, err = support.run_client(args, config(app.port))
        self.assertEqual((code, events), (0, []), err)
        self.assertEqual(first.wait(1), [tuple(args)])
        self.assertEqual(second.wait(1), [tuple(args)])
        self.assertEqual(first.calls[0][1:], (("one",), {}))
        self.assertEqual(second.calls[0][1:], ((), {"kind": "two"}))


class TestTimeouts(ProcessTestCase):

    def test_fractional_timeout_releases_the_port(self):
        host, port = support.start_host(self, config(0, timeout=0.5))
        # A silent peer is dropped when the port is released (or refused if that already
        # happened); without a timeout it would be kept until the peer deadline (5 s).
        try:
            with socket.create_connection(("127.0.0.1", port), support.WAIT) as peer:
                peer.settimeout(support.WAIT)
                try:
                    self.assertEqual(peer.recv(1), b"")
                except ConnectionResetError:
                    pass
        except ConnectionRefusedError:
            pass
        support.assert_becomes_host(self, port)
        self.assertIsNone(host.proc.poll())  # the timer released the port, not an exit

    def test_timeout_cool_down_after_main_thread_returns(self):
        host, port = support.start_host(self, {"kwargs": {"port": 0, "timeout": 3},
                                               "return": True})
        # The app's main thread has returned; the port is still held until the timer fires.
        code, events, err = support.run_client(["during-cool-down"], config(port,
                                                                            strict=False))
        self.assertEqual(code, 3, err)
        self.assertEqual((events[0]["reason"], events[0]["host_pid"]),
                         ("delivered", host.proc.pid))
        self.assertEqual(strings(host.wait_for("launch")), ["during-cool-down"])
        self.assertEqual(host.proc.wait(support.WAIT), 0)  # it exits by itself
        support.assert_becomes_host(self, port)

    def test_release_then_a_new_host_at_once(self):
        host, port = support.start_host(self, config(0))
        host.send("release")
        host.wait_for("released")
        assert_port_free(self, port)
        support.assert_becomes_host(self, port)


class TestThresholds(ProcessTestCase, support.ThreadLeakCheck):

    def test_release_threshold(self):
        host, port = support.start_host(self, config(0, release_threshold=3))
        for i in range(3):
            self.assertEqual(support.run_client(["n%d" % i], config(port))[0], 0)
        self.assertEqual([strings(event) for event in host.launches(3)],
                         [["n0"], ["n1"], ["n2"]])  # the third, which reached it, too
        support.assert_becomes_host(self, port)
        self.assertIsNone(host.proc.poll())

    def test_max_clients(self):
        app = Socket_Singleton(port=0, max_clients=2)
        self.addCleanup(app.release)
        collector = support.Collector()
        app.trace(collector)
        for value in ("1", "2"):
            self.assertEqual(support.run_client([value], config(app.port))[:2], (0, []))
        # Ignored, as in 2.0.0: a strict launch exits 0 and says nothing.
        self.assertEqual(support.run_client(["3"], config(app.port)), (0, [], ""))
        code, events, err = support.run_client(["4"], config(app.port, strict=False))
        self.assertEqual(code, 3, err)
        self.assertEqual((events[0]["reason"], events[0]["delivered"]), ("ignored", False))
        self.assertTrue(events[0]["message"].endswith(
            "It ignored the launch: max_clients reached."), events[0]["message"])
        self.assertEqual(app.clients, 4)  # counted...
        self.assertEqual(collector.received, [("1",), ("2",)])  # ...but not delivered
        self.assertTrue(app.listening)


class TestConcurrency(ProcessTestCase):

    def test_burst_of_launches(self):
        host, port = support.start_host(self, config(0))
        count = 50
        # handoff_timeout: 50 interpreters starting on a small machine may starve the host;
        # how fast it answers is the benchmark's business.
        procs = [self.start(["burst-%02d" % i, "x %d" % i],
                            config(port, handoff_timeout=support.WAIT)) for i in range(count)]
        for proc in procs:
            code, events, err = support.finish(proc)
            self.assertEqual((code, events, err), (0, [], ""))
        received = [tuple(strings(event)) for event in host.launches(count)]
        self.assertEqual(collections.Counter(received),
                         collections.Counter(("burst-%02d" % i, "x %d" % i)
                                             for i in range(count)))
        # Launches are delivered in order: a duplicate would come before this one.
        self.assertEqual(support.run_client(["sentinel"], config(port))[0], 0)
        self.assertEqual(strings(host.wait_for("launch")), ["sentinel"])

    def test_launches_before_trace_are_kept_in_order(self):
        host, port = support.start_host(self, {"kwargs": {"port": 0}, "trace": False})
        for i in range(4):
            code, events, err = support.run_client(["seq-%d" % i], config(port))
            self.assertEqual((code, events, err), (0, [], ""))
        procs = [self.start(["together-%d" % i], config(port)) for i in range(10)]
        for proc in procs:
            self.assertEqual(support.finish(proc)[0], 0)
        self.assertEqual(support.run_client(["last"], config(port))[0], 0)
        host.send("trace")  # its launches may be reported before "traced": skip that one
        received = [strings(event)[0] for event in host.launches(15)]
        self.assertEqual(received[:4], ["seq-0", "seq-1", "seq-2", "seq-3"])
        self.assertEqual(sorted(received[4:14]), sorted("together-%d" % i for i in range(10)))
        self.assertEqual(received[14], "last")


if __name__ == "__main__":
    unittest.main()
