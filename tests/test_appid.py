"""Launches that name an application (issue 19): ``app_id`` and ``scope``, the walk over the
candidate ports, and the identity check that keeps one application's or user's launches away
from another's host; the hand-off machine driven directly, then real processes."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

from Socket_Singleton import Socket_Singleton, _handoff, _identity, _wire
from Socket_Singleton._outcome import Reason

from . import support

ARGS = ("notes.txt", "--new-window")
IDENTITY = _wire.Identity("org.example.Editor", "machine")
OTHER = _wire.Identity("org.example.Viewer", "machine")
NONCE = b"\x02" * _wire.NONCE_SIZE


def new_app_id():
    """An id of its own for each test, so that its ports are its own too."""
    return "org.example.t%s" % os.urandom(4).hex()


def welcome(identity, secret=None, client_nonce=None, pid=4242):
    proof = b""
    if secret is not None:
        proof = _wire.proof(secret, b"host", client_nonce, NONCE)
    frame = _wire.encode_welcome3(pid, 1 << 20, NONCE, proof, identity)
    kind, payload, _ = _wire.split_frame(frame, 1 << 16)
    return kind, payload


class Walk:
    """A Handoff over candidate ports, driven step by step; records every byte it sends."""

    def __init__(self, ports=(101, 102, 103), identity=IDENTITY, secret=None, **kwargs):
        self.machine = _handoff.Handoff(ARGS, secret, 2.0, 0.0, b"\x01" * _wire.ID_SIZE,
                                        identity=identity, ports=ports,
                                        urandom=lambda size: b"\x03" * size, **kwargs)
        self.sent = []

    def send(self, action):
        if isinstance(action, _handoff.Exchange):
            self.sent.append(action.data)
        return action

    def to_banner(self, action):
        """From a Connect: connect, and read the banner."""
        assert isinstance(action, _handoff.Connect), action
        return self.send(self.machine.connected())

    def greet(self, action, identity, secret=None):
        """From a Connect to a host of *identity*: up to what follows its welcome."""
        self.to_banner(action)
        self.send(self.machine.received(_wire.BANNER, 0.0))
        return self.send(self.machine.frame(*welcome(identity, secret, b"\x03" * 16), 0.0))

    def sent_args(self):
        return any(ARGS[0].encode() in data for data in self.sent)


class TestWalkMachine(unittest.TestCase):
    """The candidate walk, as the I/O-free machine does it."""

    def test_a_single_port_is_taken_as_before(self):
        machine = _handoff.Handoff(ARGS, None, 2.0, 0.0, ports=(5,))
        action = machine.start()
        self.assertIsInstance(action, _handoff.Take)
        self.assertEqual((action.port, action.check), (5, False))
        connect = machine.held()
        self.assertIsInstance(connect, _handoff.Connect)
        self.assertEqual(connect.port, 5)
        self.assertIsNone(machine.connected().within)

    def test_a_foreign_program_is_passed_over(self):
        walk = Walk()
        take = walk.machine.start()
        self.assertEqual((take.port, take.check), (101, True))
        exchange = walk.to_banner(walk.machine.held())
        self.assertEqual(exchange.within, _handoff.GREETING_WAIT)
        take = walk.machine.received(b"HTTP/1.1 400 Bad Request\r\n", 0.0)
        self.assertIsInstance(take, _handoff.Take)
        self.assertEqual((take.port, walk.machine.port), (102, 102))

    def test_a_silent_candidate_is_passed_over_before_the_deadline(self):
        walk = Walk()
        walk.machine.start()
        walk.to_banner(walk.machine.held())
        take = walk.machine.timed_out(0.5)
        self.assertEqual(take.port, 102)

    def test_a_host_of_another_identity_gets_nothing_of_the_users(self):
        walk = Walk()
        walk.machine.start()
        take = walk.greet(walk.machine.held(), OTHER)
        self.assertIsInstance(take, _handoff.Take)
        self.assertEqual(take.port, 102)
        walk.greet(walk.machine.held(), _wire.Identity("org.example.Editor", "user", b"t" * 8))
        self.assertFalse(walk.sent_args())

    def test_a_host_of_protocol_2_is_passed_over(self):
        walk = Walk()
        walk.machine.start()
        walk.to_banner(walk.machine.held())
        walk.machine.received(_wire.BANNER, 0.0)
        refusal = _wire.encode_ack(_wire.REJECTED, "protocol error: expected a hello")
        kind, payload, _ = _wire.split_frame(refusal, 1 << 16)
        self.assertEqual(walk.machine.frame(kind, payload, 0.0).port, 102)

    def test_in_scope_user_a_host_that_fails_the_proof_is_passed_over(self):
        mine = _wire.Identity("org.example.Editor", "user", b"u" * 8)
        walk = Walk(identity=mine, secret="my key")
        walk.machine.start()
        take = walk.greet(walk.machine.held(), mine, secret="someone else's key")
        self.assertEqual(take.port, 102)
        self.assertFalse(walk.sent_args())

    def test_in_scope_machine_a_secret_mismatch_ends_the_launch(self):
        walk = Walk(secret="s3cret")
        walk.machine.start()
        finish = walk.greet(walk.machine.held(), IDENTITY, secret="other")
        self.assertIsInstance(finish, _handoff.Finish)
        self.assertEqual(finish.outcome.reason, Reason.SECRET_MISMATCH)

    def test_the_own_host_gets_the_launch(self):
        walk = Walk()
        walk.machine.start()
        verified = walk.greet(walk.machine.held(), IDENTITY)
        self.assertIsInstance(verified, _handoff.Verified)
        launch = walk.send(walk.machine.launch(7, "/"))
        self.assertIsInstance(launch, _handoff.Exchange)
        self.assertTrue(walk.sent_args())
        self.assertEqual(walk.machine.port, 101)

    def test_client_false_still_looks_for_its_own_host(self):
        walk = Walk(send=False)
        walk.machine.start()
        take = walk.greet(walk.machine.held(), OTHER)
        self.assertEqual(take.port, 102)
        finish = walk.greet(walk.machine.held(), IDENTITY)
        self.assertIsInstance(finish, _handoff.Finish)
        self.assertEqual((finish.outcome.reason, finish.outcome.host_pid),
                         (Reason.NOT_SENT, 4242))
        self.assertFalse(walk.sent_args())

    def test_every_candidate_held_by_others(self):
        walk = Walk()
        action = walk.machine.start()
        for port in (101, 102, 103):
            self.assertEqual(action.port, port)
            walk.to_banner(walk.machine.held())
            action = walk.machine.received(b"SSH-2.0-OpenSSH\r\n", 0.0)
        self.assertIsInstance(action, _handoff.Finish)
        self.assertEqual(action.outcome.reason, Reason.FOREIGN)
        self.assertEqual(action.outcome.detail,
                         "all 3 candidate ports are held by other programs; the first, 101: "
                         "the program on the port is not a Socket_Singleton host (its answer "
                         "is not a Socket_Singleton banner)")

    def test_a_launch_that_binds_asks_the_later_candidates_then_keeps_its_port(self):
        walk = Walk()
        walk.machine.start()
        walk.greet(walk.machine.held(), OTHER)  # 101: another application's host
        test = walk.machine.bound()  # 102 bound: 103 is asked
        self.assertIsInstance(test, _handoff.Test)
        self.assertEqual(test.port, 103)
        keep = walk.machine.free()
        self.assertIsInstance(keep, _handoff.Keep)
        self.assertEqual(walk.machine.port, 102)

    def test_a_launch_that_binds_yields_to_its_own_host_on_a_later_candidate(self):
        walk = Walk()
        walk.machine.start()
        test = walk.machine.bound()
        self.assertEqual(test.port, 102)
        self.assertEqual(walk.machine.free().port, 103)
        yielded = walk.greet(walk.machine.held(), IDENTITY)
        self.assertIsInstance(yielded, _handoff.Yield)
        self.assertEqual(walk.machine.port, 103)
        self.assertIsInstance(walk.send(walk.machine.launch(7, "/")), _handoff.Exchange)
        self.assertTrue(walk.sent_args())

    def test_checks_never_retry(self):
        walk = Walk()
        walk.machine.start()
        walk.machine.bound()  # 101 bound
        connect = walk.machine.held()  # 102 held
        keep_or_next = walk.machine.refused(0.0)  # nothing listens: the next check, at once
        self.assertIsInstance(keep_or_next, _handoff.Test)
        self.assertEqual(keep_or_next.port, 103)
        self.assertEqual(connect.port, 102)
        walk.to_banner(walk.machine.held())
        self.assertIsInstance(walk.machine.received(b"x", 0.0), _handoff.Keep)
        self.assertEqual(walk.machine.port, 101)

    def test_a_probe_walks_and_reports_where_its_host_answered(self):
        machine = _handoff.Handoff((), None, 2.0, 0.0, probe=True, identity=IDENTITY,
                                   ports=(101, 102, 103), urandom=lambda size: b"\x03" * size)
        self.assertEqual(machine.start().port, 101)
        self.assertEqual(machine.refused(0.0).port, 102)
        machine.connected()
        machine.received(_wire.BANNER, 0.0)
        finish = machine.frame(*welcome(IDENTITY), 0.0)
        self.assertEqual((finish.outcome.reason, finish.outcome.host_pid, machine.port),
                         (Reason.HOST, 4242, 102))

    def test_a_probe_that_finds_no_host(self):
        machine = _handoff.Handoff((), None, 2.0, 0.0, probe=True, identity=IDENTITY,
                                   ports=(101, 102))
        machine.start()
        machine.refused(0.0)
        finish = machine.refused(0.0)
        self.assertEqual((finish.outcome.reason, finish.outcome.detail),
                         (Reason.NOT_RUNNING, "no host of org.example.Editor, machine scope "
                          "answers on any of its 2 candidate ports"))


class TestAppIdConstructor(unittest.TestCase):
    def test_scope_without_app_id(self):
        with self.assertRaises(ValueError) as caught:
            Socket_Singleton(port=0, scope="user")
        self.assertEqual(str(caught.exception), "scope is only used with app_id")

    def test_invalid_scope_and_app_id(self):
        with self.assertRaises(ValueError) as caught:
            Socket_Singleton(app_id="org.example.x", scope="session")
        self.assertEqual(str(caught.exception), "scope must be 'machine' or 'user', not "
                         "'session'")
        with self.assertRaises(TypeError):
            Socket_Singleton(app_id="org.example.x", scope=1)
        with self.assertRaises(ValueError):
            Socket_Singleton(app_id="9lives")

    def test_legacy_handoff_is_refused_with_an_app_id(self):
        with self.assertRaises(ValueError) as caught:
            Socket_Singleton(app_id="org.example.x", scope="machine", legacy_handoff=True)
        self.assertIn("legacy_handoff cannot be combined with app_id", str(caught.exception))

    def test_the_port_and_the_identity_of_a_host(self):
        app_id = new_app_id()
        host = Socket_Singleton(app_id=app_id, scope="machine", strict=False)
        self.addCleanup(host.release)
        self.assertIn(host.port, _identity.candidates(app_id, "machine"))
        self.assertEqual((host.app_id, host.scope), (app_id, "machine"))
        self.assertIn("port=%d, app_id=%r, scope='machine', " % (host.port, app_id), repr(host))
        numbered = Socket_Singleton(port=0)
        self.addCleanup(numbered.release)
        self.assertEqual((numbered.app_id, numbered.scope), (None, None))
        self.assertNotIn("app_id", repr(numbered))


class AppTestCase(unittest.TestCase):
    """Real processes with a key directory of their own (scope "user" creates a key file)."""

    def setUp(self):
        self.config_home = tempfile.mkdtemp(prefix="ss-appid-")
        self.addCleanup(shutil.rmtree, self.config_home, True)
        self.env = {"XDG_CONFIG_HOME": self.config_home, "LOCALAPPDATA": self.config_home}

    def host(self, **kwargs):
        app, port = support.start_host(self, {"kwargs": kwargs}, env=self.env)
        return app, port

    def launch(self, args, **kwargs):
        """A strict=False launch run to completion: its "turned-away" event."""
        code, events, err = support.run_client(
            args, {"kwargs": dict(kwargs, strict=False)}, env=self.env)
        self.assertEqual((code, [e["event"] for e in events]), (3, ["turned-away"]), err)
        return events[0]

    def assert_delivered(self, app, event, args):
        self.assertEqual((event["reason"], event["host_pid"]), ("delivered", app.host_pid),
                         event)
        self.assertEqual(support.decode_args(app.wait_for("launch")),
                         [arg.encode() for arg in args])

    def listener(self, port):
        """A plain TCP listener (not a Socket_Singleton host) on *port*, closed at the end."""
        sock = socket.socket()
        self.addCleanup(sock.close)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            self.skipTest("port %d is in use on this machine" % port)
        sock.listen(8)
        return sock


class TestApplicationsByName(AppTestCase):
    def test_launches_reach_their_host(self):
        app_id = new_app_id()
        app, port = self.host(app_id=app_id)
        self.assertIn(port, _identity.candidates(app_id, "user"))
        for n in range(2):
            args = ["%s-%d" % (support.ARG, n)]
            self.assert_delivered(app, self.launch(args, app_id=app_id), args)

    def test_two_applications_whose_first_ports_collide(self):
        # A occupies B's first candidate (an explicit port, as an application that chose its
        # port by number might): both run, each launch reaches its own.
        app_a, app_b = new_app_id(), new_app_id()
        first_b = _identity.port_for(app_b, "user")
        self.listener(first_b).close()  # free now (else the test is skipped)
        host_a, port_a = self.host(app_id=app_a, port=first_b)
        self.assertEqual(port_a, first_b)
        host_b, port_b = self.host(app_id=app_b)
        self.assertEqual(port_b, _identity.candidates(app_b, "user")[1])
        for n in range(2):
            self.assert_delivered(host_b, self.launch(["b%d" % n], app_id=app_b), ["b%d" % n])
            self.assert_delivered(host_a, self.launch(["a%d" % n], app_id=app_a, port=first_b),
                                  ["a%d" % n])
        # A launch of B pinned to A's port is refused there, and sends nothing.
        event = self.launch(["not-for-a"], app_id=app_b, port=first_b)
        self.assertEqual(event["reason"], "foreign")
        self.assertIn("serves another application or user (%s, user scope)" % app_a,
                      event["message"])
        host_a.send("release")
        host_b.send("release")
        for host in (host_a, host_b):
            left = host.wait_for("released")["left"]
            self.assertEqual(left, [])
            self.assertNotIn(b"not-for-a".hex(), str(host.events.queue))

    def test_a_foreign_program_on_the_first_candidate(self):
        app_id = new_app_id()
        ports = _identity.candidates(app_id, "user")
        self.listener(ports[0])
        app, port = self.host(app_id=app_id)
        self.assertEqual(port, ports[1])
        self.assert_delivered(app, self.launch(["x"], app_id=app_id), ["x"])

    def test_a_launch_finds_its_host_on_a_later_candidate_once_the_first_is_free(self):
        # The program on the first candidate quits while the application runs on the second:
        # the next launch binds the first, asks the others, finds its host, and hands off.
        app_id = new_app_id()
        ports = _identity.candidates(app_id, "machine")
        foreign = self.listener(ports[0])
        app, port = self.host(app_id=app_id, scope="machine")
        self.assertEqual(port, ports[1])
        foreign.close()
        self.assert_delivered(app, self.launch(["y"], app_id=app_id, scope="machine"), ["y"])
        support.assert_port_free(self, ports[0])

    def test_a_launch_with_only_a_port_loads_nothing_new(self):
        host = Socket_Singleton(port=0, strict=False)
        self.addCleanup(host.release)
        code = ("import sys\n"
                "from Socket_Singleton import MultipleSingletonsError, Socket_Singleton\n"
                "try:\n"
                "    Socket_Singleton(port=%d, strict=False)\n"
                "except MultipleSingletonsError as err:\n"
                "    print(err.reason)\n"
                "print(sorted(name for name in ('Socket_Singleton._identity', 'hashlib', 'hmac')"
                " if name in sys.modules))\n" % host.port)
        result = subprocess.run([sys.executable, "-c", code], env=support.app_env({}),
                                capture_output=True, timeout=support.WAIT)
        self.assertEqual(support.text(result.stdout), "ignored\n[]\n",
                         support.text(result.stderr))

    def test_a_launch_with_only_a_port_behaves_as_before(self):
        app, port = support.start_host(self, support.config(0))
        self.assert_delivered(app, support.turned_away(self, ["z"], port), ["z"])
        # an application id pinned to that port checks the identity: a numbered host is not it
        event = self.launch(["nope"], app_id=new_app_id(), scope="machine", port=port)
        self.assertEqual(event["reason"], "foreign")
        self.assertIn("a host without an application id", event["message"])


@unittest.skipIf(support.other_users_unavailable(), support.other_users_unavailable() or "")
class TestTwoUsersOfOneApplication(AppTestCase):
    """Scope "user" with two real OS users whose first candidates collide."""

    def setUp(self):
        super().setUp()
        self.user = support.OtherUser()
        self.addCleanup(self.user.remove)

    def test_each_users_launches_reach_their_own_host(self):
        app_id = new_app_id()
        mine = _identity.candidates(app_id, "user")
        self.listener(mine[0]).close()
        # The other user's host sits on this user's first candidate.
        config = {"kwargs": {"app_id": app_id, "port": mine[0], "strict": False}}
        theirs, their_port = support.start_host_as(self, self.user, config)
        self.assertEqual(their_port, mine[0])
        host, port = self.host(app_id=app_id)
        self.assertEqual(port, mine[1])
        for n in range(3):
            self.assert_delivered(host, self.launch(["mine%d" % n], app_id=app_id),
                                  ["mine%d" % n])
            proc = support.launch_as(self.user, ["theirs%d" % n], config)
            out, err = support.communicate(proc)
            self.assertEqual(proc.returncode, 3, err)
            self.assertIn(b'"delivered"', out)
            self.assertEqual(support.decode_args(theirs.wait_for("launch")),
                             [b"theirs%d" % n])
        for app in (host, theirs):
            app.send("release")
            self.assertEqual(app.wait_for("released")["left"], [])
        mine_seen = [e for e in theirs.events.queue if e.get("event") == "launch"]
        theirs_seen = [e for e in host.events.queue if e.get("event") == "launch"]
        self.assertEqual((mine_seen, theirs_seen), ([], []))


if __name__ == "__main__":
    unittest.main()
