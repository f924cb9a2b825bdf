"""The hand-off between a launch and the host (issue 3): acknowledged delivery, the exact
arguments, empty launches, takeover while the host goes away, verified hosts, the client's
context, the documented raw forms, and a fuzz of the host's parser."""

import collections
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from Socket_Singleton import Launch, _handoff, _wire

from . import support
from .support import (
    FakeServer,
    HostTestCase,
    LogWatcher,
    assert_strict_failure,
    client_config,
    config,
    hand_off,
    in_process_host,
    legacy_host,
    raw_exchange,
    read_to_end,
    recv_exactly,
    run_concurrently,
    turned_away,
)

POSIX = support.POSIX
ARG, SECRET = support.ARG, support.SECRET


class TestAcknowledgedHandoff(support.ThreadLeakCheck):
    """A launch ends only once its host has handled it, and says how."""

    def test_exit_status_zero_means_the_observer_has_run(self):
        # The 0.5 s bound after which a busy observer is acknowledged as "queued" is out of
        # the way: on a loaded machine even a quick observer could exceed it.
        support.tune(self, delivery_wait=support.WAIT)
        seen = []
        busy = threading.Event()  # never set: waiting on it stands for the observer's work

        def observer(args):
            busy.wait(0.03)  # an observer that answers in tens of milliseconds
            seen.append(tuple(args))

        host = in_process_host(self, observer)
        for n in range(5):
            args = ["%s-%d" % (ARG, n), "second"]
            code, events, err = support.run_client(args, config(host.port))
            self.assertEqual((code, events, err), (0, [], ""))
            # No waiting here: the process has exited, so the observer must already have run.
            self.assertEqual(seen[-1:], [tuple(args)])
        err = hand_off(host.port, ["in-process"])
        self.assertEqual((err.reason, err.delivered, err.host_pid),
                         ("delivered", True, os.getpid()))
        self.assertEqual(seen[-1], ("in-process",))

    def test_the_launch_waits_for_an_observer_that_is_working(self):
        # With the delivery bound out of the way, the launch ends exactly when the observer
        # returns: not before.
        support.tune(self, delivery_wait=support.WAIT)
        entered, proceed, seen = threading.Event(), threading.Event(), []

        def observer(args):
            entered.set()
            proceed.wait(support.WAIT)
            seen.append(tuple(args))

        host = in_process_host(self, observer)
        proc = support.launch([ARG], config(host.port))
        try:
            self.assertTrue(entered.wait(support.WAIT), "the observer was never called")
            with self.assertRaises(subprocess.TimeoutExpired):
                proc.wait(support.SHORT)  # the launch did not end while the observer worked
            proceed.set()
            out, err = proc.communicate(timeout=support.WAIT)
        finally:
            proceed.set()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual((proc.returncode, out, err), (0, b"", b""))
        self.assertEqual(seen, [(ARG,)])

    def test_a_blocked_observer_is_acknowledged_as_queued(self):
        host, port = support.start_host(self, {"kwargs": {"port": 0}, "observer_block": True})
        first = turned_away(self, ["first"], port)
        self.assertEqual((first["reason"], first["delivered"]), ("queued", True))
        self.assertEqual(host.wait_for("launch")["args"], [b"first".hex()])  # and still blocked
        second = turned_away(self, ["second"], port)
        self.assertEqual((second["reason"], second["delivered"]), ("queued", True))
        code, events, err = support.run_client(["third"], config(port))
        self.assertEqual((code, events, err), (0, [], ""))  # strict: queued is success
        host.send("unblock")
        self.assertEqual([e["args"] for e in host.launches(2)],
                         [[b"second".hex()], [b"third".hex()]])

    def test_without_an_observer_the_launch_is_queued_until_trace(self):
        host, port = support.start_host(self, {"kwargs": {"port": 0}, "trace": False})
        outcome = turned_away(self, [ARG, "x"], port)
        self.assertEqual((outcome["reason"], outcome["delivered"]), ("queued", True))
        host.send("trace")
        launch = host.wait_for("launch")
        self.assertEqual(launch["args"], [os.fsencode(ARG).hex(), b"x".hex()])

    def test_a_launch_beyond_max_clients_is_reported_ignored(self):
        host, port = support.start_host(self, config(0, max_clients=1))
        self.assertEqual(turned_away(self, ["kept"], port)["reason"], "delivered")
        ignored = turned_away(self, ["dropped"], port)
        self.assertEqual((ignored["reason"], ignored["delivered"]), ("ignored", False))
        self.assertTrue(ignored["message"].endswith(
            "It ignored the launch: max_clients reached."), ignored["message"])
        # As in 2.0.0, a strict launch that was ignored exits 0 and says nothing, with
        # arguments or without.
        self.assertEqual(support.run_client(["dropped too"], config(port)), (0, [], ""))
        self.assertEqual(support.run_client([], config(port)), (0, [], ""))
        host.send("release")
        events = []
        while not events or events[-1]["event"] != "released":
            events.append(host.next_event())
        self.assertEqual([e["args"] for e in events if e["event"] == "launch"], [[b"kept".hex()]])


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


# A program whose sys.argv holds an argument no command line can (set by the program itself):
# argv[1] is that argument and argv[2] the constructor's kwargs, both as JSON.
_SETS_ARGV = """
import json, sys
from Socket_Singleton import MultipleSingletonsError, Socket_Singleton
unsendable, kwargs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["app", "fine", unsendable]
try:
    app = Socket_Singleton(**kwargs)
except MultipleSingletonsError as err:
    print(json.dumps({"reason": err.reason, "delivered": err.delivered, "detail": err.detail}))
    sys.exit(3)
print(json.dumps({"reason": "host", "port": app.port}))
app.release()
"""

NUL_ARG = "before\0after"
NUL_DETAIL = "argument 2 contains a NUL character, which no command line can hold"


class TestUnsendableArguments(HostTestCase):
    """An argument that cannot be sent (a NUL; a lone surrogate where file names are bytes) ends
    a launch that would send it before any connection, as the README's other refusals do."""

    def run_program(self, unsendable, **kwargs):
        """Returns (exit status, stdout lines as dicts, stderr)."""
        proc = subprocess.Popen(
            [sys.executable, "-c", _SETS_ARGV, json.dumps(unsendable), json.dumps(kwargs)],
            env=support.app_env({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return support.finish(proc)

    def cases(self):
        cases = [(NUL_ARG, NUL_DETAIL)]
        if POSIX:  # Windows encodes lone surrogates (surrogatepass), so they can be sent there
            cases.append(("lone-\ud800", "argument 2 cannot be encoded as this system "
                          "encodes command lines (U+D800: "))
        return cases

    def assert_refused(self, port, legacy=False):
        for arg, detail in self.cases():
            with self.subTest(arg=arg, strict=False, legacy=legacy):
                code, events, err = self.run_program(arg, port=port, strict=False,
                                                     legacy_handoff=legacy)
                self.assertEqual((code, err), (3, ""))
                self.assertEqual([(e["reason"], e["delivered"]) for e in events],
                                 [("unsendable", False)])
                self.assertTrue(events[0]["detail"].startswith(detail), events[0]["detail"])
            with self.subTest(arg=arg, strict=True, legacy=legacy):
                code, events, err = self.run_program(arg, port=port, legacy_handoff=legacy)
                assert_strict_failure(self, code, events, err)
                self.assertTrue(err.startswith(
                    "Socket_Singleton: 127.0.0.1:%d is in use. The arguments were not sent: %s"
                    % (port, detail)), err)

    def test_a_launch_refuses_them_and_the_host_gets_nothing(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        self.assert_refused(host.port)
        self.assertEqual(hand_off(host.port, ["good"]).reason, "delivered")
        self.assertEqual(collector.received, [("good",)])  # FIFO: nothing came before it
        self.assertEqual(host.clients, 1)

    def test_nothing_connects_before_the_refusal(self):
        server = FakeServer(self, read_to_end)
        self.assert_refused(server.port)
        legacy, handed = legacy_host(self)
        self.assert_refused(legacy.port, legacy=True)
        server.close()
        legacy.close()
        self.assertEqual((server.records, legacy.records, handed), ([], [], []))

    def test_a_launch_that_becomes_the_host_is_not_checked(self):
        code, events, err = self.run_program(NUL_ARG, port=0)
        self.assertEqual((code, [e["reason"] for e in events], err), (0, ["host"], ""))

    def test_the_machine_refuses_before_it_connects(self):
        for legacy in (False, True):
            machine = _handoff.Handoff(("fine", NUL_ARG), None, 2.0, 0.0, b"i" * _wire.ID_SIZE,
                                       legacy=legacy)
            self.assertIsInstance(machine.start(), _handoff.Take)
            action = machine.held()
            self.assertIsInstance(action, _handoff.Finish)
            self.assertEqual((action.outcome.reason, action.outcome.detail, action.farewell),
                             ("unsendable", NUL_DETAIL, b""))
        machine = _handoff.Handoff(("fine", NUL_ARG), None, 2.0, 0.0, send=False)
        machine.start()
        self.assertEqual(machine.held().outcome.reason, "not-sent")  # client=False: no check


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


class _Fleet:
    """Launches of test_app.py whose output lines all land in one queue as
    ``(index, event, monotonic time the line was read)``. Each process is ended through its
    own handle when the test ends."""

    def __init__(self, test):
        self.procs = []
        self._readers = []
        self.events = queue.Queue()
        test.addCleanup(self.stop_all)

    def start(self, args, config):
        index = len(self.procs)
        proc = support.launch(args, config)
        self.procs.append(proc)
        reader = threading.Thread(target=self._read, args=(index, proc), daemon=True)
        self._readers.append(reader)
        reader.start()
        return index

    def _read(self, index, proc):
        for line in proc.stdout:
            if line.strip():
                self.events.put((index, json.loads(line), time.monotonic()))
        self.events.put((index, {"event": "eof"}, time.monotonic()))

    def next(self):
        try:
            return self.events.get(timeout=support.WAIT)
        except queue.Empty:
            raise AssertionError("no launch reported anything within %s s" % support.WAIT) \
                from None

    def send(self, index, command):
        stdin = self.procs[index].stdin
        stdin.write(command.encode() + b"\n")
        stdin.flush()

    def stderr(self, index):
        """What launch *index* wrote on stderr, once it has ended."""
        proc = self.procs[index]
        try:
            proc.wait(support.WAIT)
        except subprocess.TimeoutExpired:
            return "(still running)"
        return support.text(proc.stderr.read())

    def stop(self, index):
        """End launch *index* (closing its stdin releases a host) and collect its output."""
        # Its reader is joined first: its last line is in the queue.
        support.end_by_stdin(self.procs[index], self._readers[index])

    def stop_all(self):
        for index in range(len(self.procs)):
            self.stop(index)


class TestTakeover(unittest.TestCase):
    """100 launches while hosts go away: each one becomes the host or is acknowledged by a host,
    never two hosts hold the port at once, and no launch is lost."""

    LAUNCHES = 100
    SERVED_BEFORE_ENDING = 1  # a host that took over serves this many launches, then goes

    def burst(self, end_host, first_kwargs=None):
        """*end_host(fleet, index)* makes host *index* go away; every host keeps the port until
        the test ends it, so a second host at the same time would show up as a "host" event
        read before the previous host was ended. With *first_kwargs* (e.g. a
        release_threshold) the first host goes away by itself instead."""
        fleet = _Fleet(self)
        # Generous bounds for a machine loaded by 100 starting interpreters: this test is
        # about the outcome of each launch, not about how fast it comes.
        tuning = {"delivery_wait": support.WAIT / 2}
        # Observers that take a little time, so that launches are waiting for delivery when
        # their host goes away.
        delay = 0.02
        first = fleet.start([], {"kwargs": dict(port=0, **(first_kwargs or {})), "tuning": tuning,
                                 "observer_delay": delay})
        index, event, _ = fleet.next()
        if (index, event["event"]) != (first, "host"):
            self.fail("the first launch did not become the host: %s" % fleet.stderr(first))
        launch_config = {"kwargs": {"port": event["port"], "strict": False,
                             "handoff_timeout": support.WAIT}, "tuning": tuning,
                  "observer_delay": delay}

        hosts = [first]  # in the order they appeared
        ended_at = {}  # host -> monotonic time the test made it go away
        if first_kwargs:
            ended_at[first] = float("-inf")  # it leaves on its own: nothing to check against
        served = collections.Counter()  # host -> launches delivered to it
        pids = {}  # host -> its process id
        left = {}  # host that released -> arguments it kept undelivered (acknowledged queued)
        acknowledged_by = {}  # launch -> process id of the host that acknowledged it
        delivered = collections.Counter()  # argument -> times an observer received it
        outcome = {}  # launch -> "host" or the reason it reported
        unique = {}  # launch -> its argument
        pending = set()

        def end(host):
            ended_at[host] = time.monotonic()
            end_host(fleet, host)

        def start_launches(count):
            for _ in range(count):
                arg = "%s-%03d" % (ARG, len(unique))
                index = fleet.start([arg], launch_config)
                unique[index] = arg
                pending.add(index)

        def pump():
            index, event, read_at = fleet.next()
            kind = event["event"]
            if kind == "host":
                self.assertIn(index, pending, "launch %d became the host twice" % index)
                for other in hosts:
                    self.assertTrue(other in ended_at and ended_at[other] < read_at,
                                    "launch %d became the host while host %d still held the "
                                    "port" % (index, other))
                hosts.append(index)
                pids[index] = event["pid"]
                outcome[index] = "host"
                pending.discard(index)
            elif kind == "launch":
                served[index] += 1
                for arg in event["args"]:
                    delivered[os.fsdecode(bytes.fromhex(arg))] += 1
            elif kind == "turned-away":
                outcome[index] = event["reason"]
                acknowledged_by[index] = event["host_pid"]
                pending.discard(index)
            elif kind == "released":
                left[index] = [os.fsdecode(bytes.fromhex(arg)) for args in event["left"]
                               for arg in args]
            elif kind == "eof" and index in pending:
                outcome[index] = "ended silently: %s" % fleet.stderr(index)
                pending.discard(index)
            return index, kind

        # Half the burst; the host goes away once it has served some of it, while the rest
        # of the burst is being launched.
        start_launches(self.LAUNCHES // 2)
        if not first_kwargs:
            while served[first] < 10 and pending:
                pump()
            end(first)
        start_launches(self.LAUNCHES * 4 // 10)
        # The last launches start once the first host is surely gone: then one of the
        # launches must take over.
        if end_host is _release and not first_kwargs:
            while pump() != (first, "released"):
                pass
        elif end_host is _kill:
            fleet.procs[first].wait(support.WAIT)
        start_launches(self.LAUNCHES - len(unique))

        while pending:
            pump()
            current = hosts[-1]
            if current not in ended_at and served[current] >= self.SERVED_BEFORE_ENDING \
                    and pending:
                end(current)  # so that later launches take over too
        # The last host delivers what it acknowledged as queued before the test ends it.
        last = hosts[-1]
        while last not in ended_at and any(
                outcome[i] == "queued" and acknowledged_by[i] == pids[last]
                and delivered[unique[i]] == 0 for i in acknowledged_by):
            pump()
        fleet.stop_all()  # ends the last host; every output line is then in the queue
        while not fleet.events.empty():
            pump()

        failures = {i: r for i, r in outcome.items() if r not in ("host", "delivered", "queued")}
        self.assertEqual(failures, {}, "launches neither hosts nor acknowledged")
        self.assertGreater(len(hosts), 1, "no launch took over")
        # A launch that arrives at a new host before its observer is registered (test_app
        # traces right after the constructor returns) is acknowledged as queued at once; should
        # that host release the port before delivering it, it stays in the host's arguments,
        # and a host killed takes it along.
        host_of = {pid: host for host, pid in pids.items()}

        def kept_by_its_host(i):
            host = host_of.get(acknowledged_by.get(i))
            return outcome[i] == "queued" and host is not None and (
                unique[i] in left.get(host, ()) or (end_host is _kill and host in ended_at))

        lost = sorted(unique[i] for i in unique if outcome[i] != "host"
                      and delivered[unique[i]] == 0 and not kept_by_its_host(i))
        kept = [arg for host in left for arg in left[host]]
        self.assertEqual(len(kept), len(set(kept)), "a launch was kept by two hosts")
        self.assertLessEqual(set(kept), {unique[i] for i in unique if outcome[i] == "queued"
                                         and delivered[unique[i]] == 0},
                             "a host kept a launch it did not acknowledge as queued, or "
                             "delivered it too")
        self.assertEqual(lost, [], "acknowledged launches that no host delivered: %r"
                         % sorted((unique[i], outcome[i]) for i in unique if unique[i] in lost))
        self.assertLessEqual(set(delivered), set(unique.values()))
        return delivered

    def test_host_releases_mid_burst(self):
        delivered = self.burst(_release)
        # A release hands every launch it has not delivered back for a retry: none is
        # delivered twice.
        self.assertEqual(sorted(arg for arg, count in delivered.items() if count > 1), [])

    def test_host_reaches_release_threshold_mid_burst(self):
        delivered = self.burst(_release, {"release_threshold": 10})
        self.assertEqual(sorted(arg for arg, count in delivered.items() if count > 1), [])

    @unittest.skipUnless(POSIX, "SIGKILL is POSIX")
    def test_host_killed_mid_burst(self):
        self.burst(_kill)  # a launch may be delivered twice: its host died before the ack


def _release(fleet, index):
    fleet.send(index, "release")


def _kill(fleet, index):
    fleet.procs[index].kill()


class TestVerifiedHosts(unittest.TestCase):
    """A launch tells a host from a stopped host and from a foreign program, sends nothing of
    the user's to anything it could not verify, and says what happened."""

    @unittest.skipUnless(hasattr(signal, "SIGSTOP"), "needs SIGSTOP")
    def test_a_stopped_host_ends_every_launch_with_no_answer(self):
        host, port = support.start_host(self, config(0))
        host.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(host.proc.send_signal, signal.SIGCONT)  # runs before host.stop
        results = run_concurrently(
            [(["quiet-%d" % n], client_config(port)) for n in range(3)]
            + [(["strict-%d" % n], config(port)) for n in range(3)])
        for code, events, err in results[:3]:
            self.assertEqual(code, 3, err)
            self.assertEqual([(e["reason"], e["delivered"]) for e in events],
                             [("no-answer", False)])
        for result in results[3:]:
            assert_strict_failure(self, *result)
        # Once it runs again, the host has received none of those launches.
        host.proc.send_signal(signal.SIGCONT)
        self.assertEqual(turned_away(self, ["after"], port)["reason"], "delivered")
        self.assertEqual(host.wait_for("launch")["args"], [b"after".hex()])

    def foreign(self, handler, reason, **kwargs):
        """A launch facing *handler*'s server, strict and not: the outcome, the message, and
        what the server received."""
        server = FakeServer(self, handler)
        results = run_concurrently([
            ([ARG, "x"], client_config(server.port, secret=SECRET, **kwargs)),
            ([ARG, "y"], {"kwargs": dict(port=server.port, secret=SECRET, **kwargs)}),
            ([ARG, "z"], client_config(server.port, **kwargs)),
        ])
        for code, events, err in (results[0], results[2]):
            self.assertEqual(code, 3, err)
            self.assertEqual([(e["event"], e["reason"], e["delivered"]) for e in events],
                             [("turned-away", reason, False)])
        assert_strict_failure(self, *results[1])
        server.close()  # every connection has been read to its end
        server.assert_nothing_of_the_users(self, [ARG], SECRET)
        return server, results

    def test_a_foreign_program_that_never_answers(self):
        self.foreign(read_to_end, "no-answer", handoff_timeout=1.0)

    def test_a_foreign_program_that_answers_garbage(self):
        server, results = self.foreign(support.answers_like_a_web_server, "foreign")
        detail = ("the program on the port is not a Socket_Singleton host (it answers like an "
                  "HTTP server)")
        for _, events, _ in (results[0], results[2]):
            self.assertTrue(events[0]["message"].endswith(
                "The arguments were not sent: %s." % detail), events[0]["message"])
        self.assertEqual(results[1][2], "Socket_Singleton: another program holds 127.0.0.1:%d. "
                         "The arguments were not sent: %s.\n" % (server.port, detail))

    def test_a_foreign_program_that_closes_at_once(self):
        # As 2.0.0 does: it reads (all we send: the preamble) and closes without a word. One
        # such close may be a host that died at that instant; two in a row are not.
        def handler(conn, record):
            conn.shutdown(socket.SHUT_WR)  # closes its side at once, then keeps listening
            read_to_end(conn, record)

        server, _ = self.foreign(handler, "legacy", handoff_timeout=support.WAIT)
        self.assertLessEqual(len(server.records), 2 * 3)  # at most 2 connections per launch
        # One launch alone: it tried once more, and gave up long before its handoff_timeout.
        server = FakeServer(self, handler)
        error = hand_off(server.port, [ARG], handoff_timeout=support.WAIT)
        self.assertEqual((error.reason, error.delivered), ("legacy", False))
        server.close()
        self.assertEqual(len(server.records), 2)
        self.assertEqual([bytes(record) for record in server.records], [_wire.PREAMBLE] * 2)

    def test_a_foreign_program_that_holds_the_port_without_listening(self):
        # Bound but not listening: every connection is refused. A host listens within
        # microseconds of binding, so the launch gives up (long before its handoff_timeout).
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            port = holder.getsockname()[1]
            results = run_concurrently([
                ([ARG], client_config(port, handoff_timeout=support.WAIT)),
                ([ARG], config(port, handoff_timeout=support.WAIT)),
            ])
        code, events, err = results[0]
        self.assertEqual(code, 3, err)
        self.assertEqual([(e["reason"], e["delivered"]) for e in events], [("port-busy", False)])
        assert_strict_failure(self, *results[1])
        self.assertTrue(results[1][2].startswith(
            "Socket_Singleton: 127.0.0.1:%d is in use but nothing listens on it. The arguments "
            "were not sent: nothing listens on the port, yet it is in use" % port), results[1][2])

    def test_a_foreign_program_that_answers_a_short_frame(self):
        # A reply that parses as a frame of ours but is not a welcome (after a banner).
        def handler(conn, record):
            recv_exactly(conn, len(_wire.PREAMBLE), record)
            conn.sendall(_wire.BANNER + _wire.frame(b"X", b"hello"))
            read_to_end(conn, record)

        server, results = self.foreign(handler, "foreign")
        self.assertTrue(results[1][2].startswith("Socket_Singleton: another program holds "
                                                 "127.0.0.1:%d. " % server.port), results[1][2])


class TestHandoffToLegacyHost(unittest.TestCase):
    """A 2.0.0 host on the port: it cannot be verified, so it must receive nothing."""

    def test_the_stand_in_is_faithful(self):
        server, handed = legacy_host(self)
        support.send_raw(server.port, b"a\0\0b\0")
        server.close()
        self.assertEqual(handed, [("a", "b")])

    def test_our_client_sends_a_legacy_host_nothing(self):
        server, handed = legacy_host(self)
        results = run_concurrently([
            ([ARG], client_config(server.port)),
            ([ARG], config(server.port)),
            ([ARG], client_config(server.port, secret=SECRET)),
        ])
        for code, events, err in (results[0], results[2]):
            self.assertEqual(code, 3, err)
            self.assertEqual([(e["reason"], e["delivered"]) for e in events], [("legacy", False)])
        assert_strict_failure(self, *results[1])
        self.assertTrue(results[1][2].startswith(
            "Socket_Singleton: a program that does not speak this protocol holds 127.0.0.1:%d. "
            "The arguments were not sent: the program on the port closes connections without "
            "answering: most likely an instance running socket-singleton 2.0.0 or older"
            % server.port), results[1][2])
        server.close()
        self.assertTrue(server.records)
        self.assertLessEqual(len(server.records), 2 * 3)  # at most 2 connections per launch
        self.assertEqual(handed, [])  # its observers would never be called


class TestClientContext(support.ThreadLeakCheck):
    """Each launch carries its working directory and process id."""

    def test_cwd_and_pid_of_the_launching_process(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, "notes.txt"), "w"):
                pass
            proc = support.launch(["notes.txt", ARG], config(host.port),
                                  cwd=directory)
            out, err = proc.communicate(timeout=support.WAIT)
            self.assertEqual((proc.returncode, out, err), (0, b"", b""))
            (launch,) = collector.wait(1)
            self.assertIsInstance(launch, Launch)
            self.assertIsInstance(launch, tuple)
            self.assertEqual(launch, ("notes.txt", ARG))
            self.assertEqual(tuple(launch), ("notes.txt", ARG))
            self.assertEqual(launch.pid, proc.pid)
            self.assertTrue(os.path.samefile(launch.cwd, directory), launch.cwd)
            # What cwd is for: the host resolves the user's relative path.
            self.assertTrue(os.path.isfile(os.path.join(launch.cwd, launch[0])))

    def test_plain_messages_have_no_context(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        support.send_raw(host.port, b"plain\0")
        (launch,) = collector.wait(1)
        self.assertEqual(launch, ("plain",))
        self.assertIsNone(launch.cwd)
        self.assertIsNone(launch.pid)


class TestRawConformance(support.ThreadLeakCheck):
    """Every documented plain form, sent by a raw client that then reads: the host delivers
    it and never writes a byte back. A message without its final NUL was cut short: it is
    refused (not delivered, not counted) and logged."""

    NOT_UTF8 = b"\xff\xfe\0caf\xc3\xa9\0line\nbreak\0"  # its first argument is not UTF-8
    FORMS = (
        (b"a\0b\0", ("a", "b")),
        (b"a\0\0b\0\0", ("a", "", "b", "")),  # empty arguments are arguments
        (b"x" * 100000 + b"\0", ("x" * 100000,)),
        (b"\0\0", ("", "")),  # two empty arguments; also a prefix of the preamble
    )
    if support.UNDECODABLE_ARGS:  # POSIX keeps such bytes; Windows refuses them (test below)
        FORMS += ((NOT_UTF8, (os.fsdecode(b"\xff\xfe"), "caf\u00e9", "line\nbreak")),)

    def send(self, port, data):
        self.assertEqual(raw_exchange(port, data), (b"", "eof"),
                         "the host wrote to a plain peer, or reset it")

    def test_each_plain_form(self):
        watcher = LogWatcher(self)
        collector = support.Collector()
        host = in_process_host(self, collector)
        for data, _ in self.FORMS:
            self.send(host.port, data)
            self.send(host.port, data[:-1] + b"-cut")  # no final NUL: cut short
        received = collector.wait(len(self.FORMS))
        self.assertEqual(received, [args for _, args in self.FORMS])  # in order: no cut one
        if support.UNDECODABLE_ARGS:
            self.assertEqual([os.fsencode(arg) for arg in received[-1]],
                             [b"\xff\xfe", b"caf\xc3\xa9", b"line\nbreak"])
        watcher.wait_count("message refused (it does not end with a NUL, so it was cut short)",
                           len(self.FORMS))
        self.assertEqual(host.clients, len(self.FORMS))

    @unittest.skipIf(support.UNDECODABLE_ARGS, "POSIX delivers bytes that are not UTF-8 "
                     "(test_each_plain_form)")
    def test_bytes_no_command_line_can_hold_are_refused(self):
        # Windows decodes arguments strictly: such a message is dropped whole, unanswered.
        collector = support.Collector()
        host = in_process_host(self, collector)
        self.send(host.port, self.NOT_UTF8)
        self.send(host.port, b"after\0")
        self.assertEqual(collector.wait(1), [("after",)])
        self.assertEqual(host.clients, 1)

    def test_send_and_close_without_reading(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        for n in range(20):
            support.send_raw(host.port, b"burst\0%d\0" % n)
        self.assertEqual(sorted(collector.wait(20), key=lambda a: int(a[1])),
                         [("burst", str(n)) for n in range(20)])

    def test_a_single_nul_is_a_launch_without_arguments(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        self.send(host.port, b"\0")
        self.send(host.port, b"")  # sends nothing: not a launch at all
        self.send(host.port, b"after\0")
        self.assertEqual(collector.wait(1), [("after",)])  # the empty launch came first, unseen
        self.assertEqual(host.clients, 2)

    def test_a_single_nul_with_deliver_empty(self):
        collector = support.Collector()
        host = in_process_host(self, collector, deliver_empty=True)
        self.send(host.port, b"\0")
        self.send(host.port, b"")
        self.send(host.port, b"after\0")
        self.assertEqual(collector.wait(2), [(), ("after",)])

    def test_the_secret_form(self):
        collector = support.Collector()
        host = in_process_host(self, collector, secret="k")
        self.send(host.port, b"k\0a\0\0b\0")
        self.send(host.port, b"k\0")  # the secret and no arguments
        self.send(host.port, b"j\0a\0")
        self.send(host.port, b"k\0cut")  # the final NUL left out: refused
        self.send(host.port, b"k\0last\0")
        self.assertEqual(collector.wait(2), [("a", "", "b"), ("last",)])
        self.assertEqual(host.clients, 3)


def _random_bytes(rng, size):
    return bytes(rng.getrandbits(8) for _ in range(size))


def _random_text(rng):
    """An argument as a command line may hold it: any Unicode, or bytes that are not UTF-8."""
    if rng.random() < 0.3:
        return support.fsdecode(_random_bytes(rng, rng.randrange(0, 12)).replace(b"\0", b"x"))
    alphabet = "ab -=/\\.\n\t\"'\u00e9\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not data:
            break
        action = rng.randrange(3)
        at = rng.randrange(len(data))
        if action == 0:
            data[at] = rng.getrandbits(8)
        elif action == 1:
            del data[at:at + rng.randrange(1, 8)]
        else:
            data[at:at] = _random_bytes(rng, rng.randrange(1, 8))
    return bytes(data)


class TestParserFuzz(support.ThreadLeakCheck):
    """Random, truncated and oversized input, with fixed seeds: only ProtocolError/ValueError
    may come out of the wire format, and a live host keeps serving, never hangs on a peer
    and never delivers a launch twice."""

    CASES = 3000

    def check_only_value_errors(self, name, call, *args):
        try:
            return call(*args)
        except ValueError:  # includes _wire.ProtocolError
            return None
        except Exception as err:  # noqa: BLE001 - what the test is looking for
            self.fail("%s%r raised %r" % (name, args, err))

    def test_decoders_raise_nothing_but_protocol_errors(self):
        rng = random.Random(20240601)
        valid = [
            _wire.frame(_wire.HELLO, b"n" * _wire.NONCE_SIZE),
            _wire.encode_welcome(7, 1024, b"h" * _wire.NONCE_SIZE, b""),
            _wire.encode_welcome(7, 1024, b"h" * _wire.NONCE_SIZE, b"p" * _wire.PROOF_SIZE),
            _wire.encode_launch(b"", b"i" * _wire.ID_SIZE, 7, "/cwd", ("a", "", "b")),
            _wire.encode_launch(b"p" * _wire.PROOF_SIZE, b"i" * _wire.ID_SIZE, 7, "", ()),
            _wire.encode_ack(_wire.DELIVERED, "fine"),
            _wire.frame(_wire.BYE, b"the running instance does not use a secret"),
            _wire.encode_plain(("a", "b"), "secret"),
        ]
        for _ in range(self.CASES):
            if rng.random() < 0.5:
                data = _random_bytes(rng, rng.choice((0, 1, 4, 5, 9, 25, 57, 200)) +
                                     rng.randrange(0, 3))
            else:
                data = _mutate(rng, rng.choice(valid))
            payload = data[_wire.HEADER_SIZE:]
            limit = rng.choice((0, 8, 64, 1 << 20))
            found = self.check_only_value_errors("split_frame", _wire.split_frame, data, limit)
            if found is not None:
                kind, body, used = found
                self.assertEqual(len(kind), 1)
                self.assertLessEqual(len(body), limit)
                self.assertEqual(used, _wire.HEADER_SIZE + len(body))
                self.assertEqual(data[:used], _wire.frame(kind, body))
            self.check_only_value_errors("decode_welcome", _wire.decode_welcome, payload)
            for proof_size in (0, _wire.PROOF_SIZE):
                self.check_only_value_errors("decode_launch", _wire.decode_launch, payload,
                                             proof_size)
            ack = self.check_only_value_errors("decode_ack", _wire.decode_ack, payload)
            if ack is not None:
                self.assertIn(ack[0], _wire.ACK_STATUSES)
            for has_secret in (False, True):
                self.check_only_value_errors("decode_plain", _wire.decode_plain, data,
                                             has_secret)

    def test_valid_encodings_round_trip(self):
        rng = random.Random(7)
        for _ in range(500):
            nonce = _random_bytes(rng, _wire.NONCE_SIZE)
            proof = rng.choice((b"", _random_bytes(rng, _wire.PROOF_SIZE)))
            pid, limit = rng.getrandbits(32), rng.getrandbits(32)
            args = tuple(_random_text(rng) for _ in range(rng.randrange(0, 6)))
            cwd = _random_text(rng)
            launch_id = _random_bytes(rng, _wire.ID_SIZE)

            kind, payload, used = _wire.split_frame(
                _wire.encode_welcome(pid, limit, nonce, proof) + b"next", 1 << 20)
            self.assertEqual((kind, used), (_wire.WELCOME, len(payload) + _wire.HEADER_SIZE))
            self.assertEqual(_wire.decode_welcome(payload), (pid, limit, bool(proof), nonce, proof))

            message = _wire.encode_launch(proof, launch_id, pid, cwd, args)
            kind, payload, used = _wire.split_frame(message, 1 << 20)
            self.assertEqual((kind, used), (_wire.LAUNCH, len(message)))
            self.assertEqual(_wire.decode_launch(payload, len(proof)),
                             (proof, launch_id, pid, cwd, args))

            status = rng.choice(_wire.ACK_STATUSES)
            detail = "".join(rng.choice("ok \u00e9\u4e2d") for _ in range(rng.randrange(5)))
            kind, payload, _ = _wire.split_frame(_wire.encode_ack(status, detail), 1 << 20)
            self.assertEqual((kind, _wire.decode_ack(payload)), (_wire.ACK, (status, detail)))

            if args != ("",):  # one empty argument and none at all are both b"\0" in 2.0.0
                self.assertEqual(_wire.decode_plain(_wire.encode_plain(args), False), (None, args))
            secret = "s" + _random_text(rng)
            self.assertEqual(_wire.decode_plain(_wire.encode_plain(args, secret), True),
                             (_wire.secret_bytes(secret), args))
        with self.assertRaises(ValueError):
            _wire.encode_launch(b"", b"i" * _wire.ID_SIZE, 1, "/", ("a\0b",))

    # -- a live host ------------------------------------------------------------------------

    LIMIT = 2048  # the host's max_message_size during the live fuzz

    def expected_launch(self, data):
        """What the host must make of *data* sent in full: the launch's arguments, or None
        when it is no launch at all. Mirrors the README's protocol section."""
        if data.startswith(_wire.PREAMBLE):
            buf = data[len(_wire.PREAMBLE):]
            limit = _wire.launch_frame_limit(self.LIMIT)
            try:
                hello = _wire.split_frame(buf, limit)
                if hello is None or hello[0] != _wire.HELLO or len(hello[1]) != _wire.NONCE_SIZE:
                    return None
                launch = _wire.split_frame(buf[hello[2]:], limit)
                if launch is None or launch[0] != _wire.LAUNCH:
                    return None
                return _wire.decode_launch(launch[1], 0)[4]
            except _wire.ProtocolError:
                return None
        if not data or len(data) > self.LIMIT + 1:
            return None  # nothing sent, or refused whole
        try:
            return _wire.decode_plain(data, False)[1]
        except _wire.ProtocolError:
            return None  # no final NUL: cut short, refused

    def fuzz_cases(self, rng, count):
        hello = _wire.PREAMBLE + _wire.frame(_wire.HELLO, b"n" * _wire.NONCE_SIZE)
        frame_kinds = (_wire.HELLO, _wire.LAUNCH, _wire.WELCOME, _wire.ACK, b"\0", b"Z")
        for n in range(count):
            shape = n % 9
            if shape == 0:
                yield _random_bytes(rng, rng.randrange(0, 300))
            elif shape == 1:  # leading NULs: looks like the preamble for a while
                yield b"\0" * rng.randrange(1, 1100) + _random_bytes(rng, rng.randrange(0, 20))
            elif shape == 2:  # a truncated preamble
                yield _wire.PREAMBLE[:rng.randrange(1, len(_wire.PREAMBLE) + 1)]
            elif shape == 3:  # the preamble, then random frames, perhaps cut short
                data = _wire.PREAMBLE + b"".join(
                    _wire.frame(rng.choice(frame_kinds), _random_bytes(rng, rng.randrange(40)))
                    for _ in range(rng.randrange(1, 4)))
                yield data[:rng.randrange(len(_wire.PREAMBLE), len(data) + 1)]
            elif shape == 4:  # a valid hello, then a random launch payload
                yield hello + _wire.frame(_wire.LAUNCH, _random_bytes(rng, rng.randrange(60)))
            elif shape == 5:  # a valid launch, unique to this case
                yield hello + _wire.encode_launch(b"", _random_bytes(rng, _wire.ID_SIZE), 1, "/",
                                                  ("fuzz-%d" % n, _random_text(rng)))
            elif shape == 6:  # a valid launch, mutated or truncated
                data = hello + _wire.encode_launch(b"", _random_bytes(rng, _wire.ID_SIZE), 1, "/",
                                                   ("mutant-%d" % n,))
                if rng.random() < 0.5:
                    yield data[:rng.randrange(len(data))]
                else:
                    yield data[:len(_wire.PREAMBLE)] + _mutate(rng, data[len(_wire.PREAMBLE):])
            elif shape == 7:  # oversized plain message
                size = self.LIMIT + rng.randrange(100, 3000)
                yield b"big" + _random_bytes(rng, size)
            else:  # oversized frame, announced or real
                size = _wire.launch_frame_limit(self.LIMIT) + rng.randrange(1, 3000)
                header = _wire.frame_header(_wire.LAUNCH, size)
                yield hello + header + _random_bytes(rng, rng.choice((0, size)))

    def check_reply(self, data, reply):
        """The host never writes to a plain peer; to a framed one, its banner, then only
        whole frames."""
        if not data.startswith(_wire.PREAMBLE):
            self.assertEqual(reply, b"", "the host wrote to a plain peer")
            return
        self.assertEqual(reply[:len(_wire.BANNER)], _wire.BANNER)
        reply = reply[len(_wire.BANNER):]
        kinds = []
        while reply:
            found = _wire.split_frame(reply, 1 << 16)
            self.assertIsNotNone(found, "the host wrote part of a frame: %r" % reply)
            kinds.append(found[0])
            reply = reply[found[2]:]
        self.assertIn(kinds, ([], [_wire.WELCOME], [_wire.ACK], [_wire.WELCOME, _wire.ACK]))

    def test_a_live_host_survives_random_input(self):
        support.tune(self, max_message_size=self.LIMIT, peer_deadline=2.0)
        collector = support.Collector()
        host = in_process_host(self, collector)

        # Peers that stall part-way (never close) are dropped at the deadline, while the
        # others are served meanwhile.
        stalls = [b"stalled plain", _wire.PREAMBLE[:500], _wire.PREAMBLE + b"H\0\0",
                  _wire.PREAMBLE + _wire.frame(_wire.HELLO, b"n" * _wire.NONCE_SIZE)]
        stall_ends = [None] * len(stalls)

        def stall(n):
            try:
                stall_ends[n] = raw_exchange(host.port, stalls[n], shutdown=False)[1]
            except AssertionError as err:
                stall_ends[n] = str(err)

        threads = [threading.Thread(target=stall, args=(n,)) for n in range(len(stalls))]
        for thread in threads:
            thread.start()

        expected = collections.Counter()
        launches = 0
        for data in self.fuzz_cases(random.Random(424242), 360):
            args = self.expected_launch(data)
            if args is not None:
                launches += 1
                if args:
                    expected[args] += 1
            reply, _ = raw_exchange(host.port, data)
            self.check_reply(data, reply)
        for thread in threads:
            thread.join(support.WAIT)
        for end in stall_ends:
            self.assertIn(end, ("reset", "eof"))  # the host dropped it

        self.assertGreater(sum(1 for args in expected if args[0].startswith("fuzz-")), 30)
        collector.wait(sum(expected.values()))
        # Still serving: a normal launch is delivered, after everything above.
        err = hand_off(host.port, ["sentinel"])
        self.assertEqual(err.reason, "delivered")
        received = collections.Counter(tuple(args) for args in collector.received)
        expected[("sentinel",)] += 1
        self.assertEqual(sorted(((args[:2], n) for args, n in (received - expected).items()),
                                key=repr), [], "delivered more often than sent")
        self.assertEqual(sorted(((args[:2], n) for args, n in (expected - received).items()),
                                key=repr), [], "never delivered")
        self.assertEqual(host.clients, launches + 1)


if __name__ == "__main__":
    unittest.main()
