"""The secret: client and host prove it to each other and it never crosses the socket; a
mismatch either way delivers nothing; the comparison is _operator._compare_digest, constant
time like hmac.compare_digest (which falls back to it); secrets that are not UTF-8, or
cannot be encoded at all; the key is the same in every locale."""

import codecs
import os
import subprocess
import sys
import threading
import unittest
from hmac import compare_digest
from unittest import mock

from Socket_Singleton import Socket_Singleton, _wire

from . import support
from .support import (
    FakeServer,
    HostTestCase,
    LogWatcher,
    assert_port_free,
    assert_strict_failure,
    fake_host,
    hand_off,
    in_process_host,
    raw_exchange,
    turned_away,
)

POSIX = support.POSIX
ARG, SECRET = support.ARG, support.SECRET


class TestSecretHandshake(support.ThreadLeakCheck):
    """Client and host prove the secret to each other; it never crosses the socket."""

    def assert_mismatch(self, port, **kwargs):
        """Strict and not, the launch reports a secret mismatch and delivers nothing."""
        outcome = turned_away(self, [ARG], port, **kwargs)
        self.assertEqual((outcome["reason"], outcome["delivered"]), ("secret-mismatch", False))
        assert_strict_failure(self, *support.run_client([ARG], support.config(port, **kwargs)))

    def test_host_has_a_secret_the_client_lacks_or_does_not_share(self):
        collector = support.Collector()
        host = in_process_host(self, collector, secret=SECRET)
        self.assert_mismatch(host.port)
        self.assert_mismatch(host.port, secret=SECRET + "-other")
        self.assert_mismatch(host.port, secret="")
        self.assertEqual(turned_away(self, ["good"], host.port, secret=SECRET)["reason"],
                         "delivered")
        self.assertEqual(collector.received, [("good",)])  # FIFO: nothing came before it
        self.assertEqual(host.clients, 1)

    def test_client_has_a_secret_the_host_does_not_use(self):
        collector = support.Collector()
        host = in_process_host(self, collector)
        self.assert_mismatch(host.port, secret=SECRET)
        self.assertEqual(turned_away(self, ["good"], host.port)["reason"], "delivered")
        self.assertEqual(collector.received, [("good",)])

    def test_a_host_that_cannot_prove_the_secret_gets_nothing(self):
        unknown = "the running instance does not know the same secret"
        fakes = {"random proof": (fake_host(claim_secret=True), unknown),
                 "claims no secret": (fake_host(claim_secret=False),
                                      "the running instance does not use a secret"),
                 "another secret": (fake_host(secret=SECRET + "-other"), unknown)}
        for name, (handler, reason) in fakes.items():
            with self.subTest(fake=name):
                server = FakeServer(self, handler)
                self.assert_mismatch(server.port, secret=SECRET)
                server.close()
                server.assert_nothing_of_the_users(self, [ARG], SECRET)
                self.assertEqual(len(server.records), 2)
                for record in server.records:  # a hello and a bye, and not one byte more
                    self.assertEqual(record[:len(_wire.PREAMBLE)], _wire.PREAMBLE)
                    rest = bytes(record[len(_wire.PREAMBLE):])
                    kind, hello, used = _wire.split_frame(rest, 1 << 16)
                    nonce, identity = _wire.decode_hello(hello)
                    self.assertEqual((kind, len(nonce), identity),
                                     (_wire.HELLO, _wire.NONCE_SIZE, _wire.NUMBERED))
                    self.assertEqual(rest[used:], _wire.frame(_wire.BYE, reason.encode()))

    def test_a_host_that_proves_the_secret_gets_the_arguments_but_never_the_secret(self):
        launches = []
        server = FakeServer(self, fake_host(secret=SECRET, launches=launches))
        outcome = turned_away(self, [ARG, "x"], server.port, secret=SECRET)
        self.assertEqual((outcome["reason"], outcome["host_pid"]), ("delivered", 4242))
        server.close()
        self.assertEqual([launch[4] for launch in launches], [(ARG, "x")])
        self.assertEqual([len(launch[1]) for launch in launches], [_wire.ID_SIZE])
        received = b"".join(server.records)
        self.assertTrue(os.fsencode(ARG) in received)  # the search below finds what is there
        self.assertFalse(SECRET.encode("utf-8") in received, "the secret crossed the socket")

    def test_matching_secret_delivers_between_processes(self):
        host, port = support.start_host(self, support.config(0, secret=SECRET))
        outcome = turned_away(self, [ARG], port, secret=SECRET)
        self.assertEqual((outcome["reason"], outcome["delivered"]), ("delivered", True))
        self.assertEqual(host.wait_for("launch")["args"], [os.fsencode(ARG).hex()])

    def test_the_host_refuses_a_client_that_cannot_prove_the_secret(self):
        collector = support.Collector()
        host = in_process_host(self, collector, secret=SECRET)
        # The preamble, hello and launch in one write: the host answers with its banner, a
        # welcome, then the acknowledgement.
        hello = _wire.PREAMBLE + _wire.frame(_wire.HELLO, b"n" * _wire.NONCE_SIZE)
        proofs = {"none": b"", "random": os.urandom(_wire.PROOF_SIZE),
                  "not for this nonce": _wire.proof(SECRET, b"client", b"x" * 16,
                                                    b"n" * _wire.NONCE_SIZE)}
        for name, proof in proofs.items():
            with self.subTest(proof=name):
                reply, _ = raw_exchange(host.port, hello + _wire.encode_launch(
                    proof, os.urandom(_wire.ID_SIZE), 1, "/", (ARG,)))
                self.assertEqual(reply[:len(_wire.BANNER)], _wire.BANNER)
                reply = reply[len(_wire.BANNER):]
                kind, payload, used = _wire.split_frame(reply, 1 << 16)
                self.assertEqual(kind, _wire.WELCOME)
                kind, payload, _ = _wire.split_frame(reply[used:], 1 << 16)
                self.assertEqual((kind, payload[:1]), (_wire.ACK, _wire.REJECTED))
        self.assertEqual(turned_away(self, ["good"], host.port, secret=SECRET)["reason"],
                         "delivered")
        self.assertEqual(collector.received, [("good",)])
        self.assertEqual(host.clients, 1)

    def test_plain_form_with_the_secret_from_raw_clients(self):
        collector = support.Collector()
        host = in_process_host(self, collector, secret=SECRET)
        wrong = _wire.encode_plain(("wrong",), SECRET + "-other")
        self.assertEqual(raw_exchange(host.port, wrong), (b"", "eof"))
        self.assertEqual(raw_exchange(host.port, b"no secret at all\0"), (b"", "eof"))
        right = _wire.encode_plain((ARG, "right"), SECRET)
        self.assertEqual(right, SECRET.encode() + b"\0" + os.fsencode(ARG) + b"\0right\0")
        self.assertEqual(raw_exchange(host.port, right), (b"", "eof"))
        self.assertEqual(collector.wait(1), [(ARG, "right")])
        self.assertEqual(host.clients, 1)


class TestSecretComparison(HostTestCase):

    def test_secret_goes_through_compare_digest(self):
        secret = "s3cret"
        app = self.host(secret=secret)
        collector = support.Collector()
        app.trace(collector)
        calls = []

        def spy(a, b):
            calls.append((threading.current_thread().name, bytes(a), bytes(b)))
            return compare_digest(a, b)

        listener = "Socket_Singleton-%d-listener" % app.port
        with mock.patch("_operator._compare_digest", side_effect=spy):
            support.send_raw(app.port, _wire.encode_plain(("plain",), secret))
            self.assertEqual(collector.wait(1), [("plain",)])
            self.assertIn((listener, b"s3cret", b"s3cret"), calls)
            del calls[:]
            self.assertEqual(hand_off(app.port, ["framed"], secret=secret).reason, "delivered")
            # The host checks the client's 32-byte proof (and the client the host's).
            self.assertIn(listener, [name for name, a, b in calls
                                     if len(a) == len(b) == _wire.PROOF_SIZE])
        # The decision is compare_digest's alone: forced to say "equal", a wrong secret passes.
        with mock.patch("_operator._compare_digest", return_value=True):
            support.send_raw(app.port, _wire.encode_plain(("wrong",), "not-the-secret"))
            self.assertEqual(collector.wait(3)[2], ("wrong",))
        # ... and forced to say "different", the right one is refused.
        watcher = LogWatcher(self)
        with mock.patch("_operator._compare_digest", return_value=False):
            support.send_raw(app.port, _wire.encode_plain(("refused",), secret))
            watcher.wait_for("verification failed")
        self.assertEqual(collector.received, [("plain",), ("framed",), ("wrong",)])


class TestSecretEncoding(HostTestCase):

    @unittest.skipUnless(POSIX, "undecodable bytes in a str need surrogateescape (POSIX)")
    def test_a_secret_that_is_not_utf8_works_between_host_and_client(self):
        secret = os.fsdecode(b"pa\xffss")  # what os.environ gives for such bytes
        app = self.host(secret=secret)
        collector = self.collector(app)
        self.assertEqual(hand_off(app.port, ["framed"], secret=secret).reason, "delivered")
        support.send_raw(app.port, _wire.encode_plain(("plain",), secret))
        self.assertEqual(collector.wait(2), [("framed",), ("plain",)])
        code, events, err = support.run_client(
            ["process"], support.config(app.port, secret=secret))
        self.assertEqual((code, events, err), (0, [], ""))
        self.assertEqual(collector.wait(3)[2], ("process",))
        self.assertTrue(app.listening)
        self.assertEqual(app.clients, 3)

    def test_a_secret_that_cannot_be_encoded_is_refused_by_the_constructor(self):
        port = support.free_port()
        with self.assertRaises(ValueError) as cm:
            app = Socket_Singleton(port=port, secret="ab\ud800")
            self.addCleanup(app.release)
        self.assertEqual(str(cm.exception),
                         "secret must be encodable as UTF-8: U+D800 at index 2 is a lone "
                         "surrogate (only surrogate escapes of bytes, U+DC80-U+DCFF, are allowed)")
        assert_port_free(self, port)  # refused before binding

    def test_the_key_is_the_utf8_bytes_whatever_the_file_system_encoding(self):
        with mock.patch("os.fsencode", side_effect=lambda s: s.encode("latin-1")):
            self.assertEqual(_wire.secret_bytes(LOCALE_SECRET), LOCALE_SECRET.encode("utf-8"))
            self.assertEqual(_wire.encode_plain(("a",), LOCALE_SECRET),
                             LOCALE_SECRET.encode("utf-8") + b"\0a\0")
        self.assertEqual(_wire.secret_bytes("pa\udcffss"), b"pa\xffss")


# Environments of app processes: UTF-8 whatever the locale; Latin-1; ASCII (no UTF-8 mode, no
# locale coercion: Python keeps the C locale's encoding).
UTF8 = {"PYTHONUTF8": "1"}
LATIN1 = {"LC_ALL": "de_DE.ISO-8859-1", "LANG": "de_DE.ISO-8859-1", "PYTHONUTF8": "0"}
ASCII = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
LOCALE_SECRET = "p\u00e4ssw\u00f6rd-Gr\u00fc\u00dfe"  # "pässwörd-Grüße"
_encodings = {}


def fs_encoding(env):
    """The file-system encoding of a Python started with *env* added to ours."""
    key = tuple(sorted(env.items()))
    if key not in _encodings:
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"],
            env=dict(os.environ, **env), stdout=subprocess.PIPE, timeout=support.WAIT)
        _encodings[key] = codecs.lookup(proc.stdout.decode().strip()).name
    return _encodings[key]


@unittest.skipUnless(POSIX, "the file-system encoding follows the locale on POSIX only")
class TestSecretAcrossLocales(support.ThreadLeakCheck):
    """Processes in different locales share a secret: its key is UTF-8 in each of them."""

    def require(self, env, encoding):
        found = fs_encoding(env)
        if found != encoding:
            how = (" (make it with: localedef -i de_DE -f ISO-8859-1 de_DE.ISO-8859-1)"
                   if env is LATIN1 else "")
            self.skipTest("%s gives the file-system encoding %s, not %s%s"
                          % (env["LC_ALL"], found, encoding, how))

    def launch(self, port, arg, env, **config):
        """A launch (strict=False) in *env*; returns its reason."""
        code, events, err = support.run_client([arg], support.client_config(port, **config),
                                               env=env)
        self.assertEqual((code, [e["event"] for e in events]), (3, ["turned-away"]), err)
        return events[0]["reason"]

    def test_a_launch_in_another_locale_hands_over_with_the_same_secret(self):
        self.require(ASCII, "ascii")
        self.require(LATIN1, "iso8859-1")
        for host_env, launches in ((UTF8, (LATIN1, ASCII)), (LATIN1, (UTF8, ASCII))):
            host, port = support.start_host(self, support.config(0, secret=LOCALE_SECRET),
                                            env=host_env)
            for env in launches:
                with self.subTest(host=host_env.get("LC_ALL", "UTF-8"),
                                  launch=env.get("LC_ALL", "UTF-8")):
                    self.assertEqual(self.launch(port, "good", env, secret=LOCALE_SECRET),
                                     "delivered")
                    self.assertEqual(host.wait_for("launch")["args"], [b"good".hex()])

    def test_the_plain_form_carries_the_secret_in_utf8_to_a_host_in_latin1(self):
        self.require(LATIN1, "iso8859-1")
        host, port = support.start_host(self, support.config(0, secret=LOCALE_SECRET),
                                        env=LATIN1)
        support.send_raw(port, LOCALE_SECRET.encode("latin-1") + b"\0wrong\0")
        support.send_raw(port, LOCALE_SECRET.encode("utf-8") + b"\0plain\0")
        # FIFO: had the Latin-1 secret passed, its launch would come first
        self.assertEqual(host.wait_for("launch")["args"], [b"plain".hex()])

    def test_a_secret_read_from_the_environment_is_its_bytes_in_utf8_and_ascii_locales(self):
        self.require(ASCII, "ascii")
        raw = b"p\xc3\xa4ss-\xff-Gr\xc3\xbc\xc3\x9fe"  # UTF-8, and one byte that is not
        env = {"SS_TEST_SECRET": os.fsdecode(raw)}  # handed to the child as these bytes
        host, port = support.start_host(self, {"kwargs": {"port": 0},
                                               "secret_env": "SS_TEST_SECRET"},
                                        env=dict(env, **UTF8))
        config = {"kwargs": {"port": port, "strict": False}, "secret_env": "SS_TEST_SECRET"}
        for name, locale in (("UTF-8", UTF8), ("ASCII", ASCII)):
            with self.subTest(launch=name):
                code, events, err = support.run_client(["good"], config, env=dict(env, **locale))
                self.assertEqual((code, [e["reason"] for e in events]), (3, ["delivered"]), err)
                self.assertEqual(host.wait_for("launch")["args"], [b"good".hex()])


if __name__ == "__main__":
    unittest.main()
