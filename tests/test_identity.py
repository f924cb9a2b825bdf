"""An application's identity (Socket_Singleton/_identity.py): app ids, the ports derived from
them, the user tag, the per-user key, and, when the tests run as root on POSIX, two real OS
users whose processes compute them."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from Socket_Singleton import Socket_Singleton, _identity, _wire
from Socket_Singleton._identity import UserKeyError

from . import support

APP_ID = "org.example.Editor"
# Ports that development servers and databases use; no derived port may be one of them.
DEV_PORTS = {3000, 3306, 4200, 5000, 5173, 5432, 6379, 8000, 8008, 8080, 8081, 8443, 8888,
             9000, 9090, 9200, 11211, 27017}


def reference_ports(app_id, scope, user, count):
    """The derivation as the README words it, written again from those words."""
    allowed = [port for port in range(10000, 30000) if port not in _identity.AVOID]

    def field(data):
        return len(data).to_bytes(4, "big") + data

    ports, index = [], 0
    while len(ports) < count:
        data = b"".join(field(part) for part in (
            b"socket-singleton/1", b"port", app_id.encode(), scope.encode(), user.encode(),
            index.to_bytes(4, "big")))
        number = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
        port = allowed[number % len(allowed)]
        if port not in ports:
            ports.append(port)
        index += 1
    return ports


class TestAppId(unittest.TestCase):
    def test_valid_ids_are_returned_as_given(self):
        for app_id in ("org.example.Editor", "a", "A" * 128, "x-y_z.0", "com.Example.my-app"):
            self.assertEqual(_identity.validate_app_id(app_id), app_id)

    def test_a_non_str_is_a_type_error(self):
        for value, name in ((b"org.x", "bytes"), (None, "NoneType"), (42, "int")):
            with self.assertRaises(TypeError) as caught:
                _identity.validate_app_id(value)
            self.assertEqual(str(caught.exception), "app_id must be a str, not %s" % name)

    def test_invalid_ids_say_exactly_what_is_wrong(self):
        cases = {
            "": "app_id must not be empty",
            "a" * 129: "app_id must be at most 128 characters, not 129",
            "1org.x": "app_id must start with an ASCII letter, not '1'",
            ".org": "app_id must start with an ASCII letter, not '.'",
            "org example": "app_id may hold only ASCII letters, digits, '.', '-' and '_': "
                           "' ' at index 3 is not allowed",
            "org.\u00e9diteur": "app_id may hold only ASCII letters, digits, '.', '-' and '_': "
                                "'\u00e9' at index 4 is not allowed",
            "org/x": "app_id may hold only ASCII letters, digits, '.', '-' and '_': "
                     "'/' at index 3 is not allowed",
            "org.x\n": "app_id may hold only ASCII letters, digits, '.', '-' and '_': "
                       "'\\n' at index 5 is not allowed",
        }
        for app_id, message in cases.items():
            with self.subTest(app_id=app_id), self.assertRaises(ValueError) as caught:
                _identity.validate_app_id(app_id)
            self.assertEqual(str(caught.exception), message)

    def test_ids_are_case_sensitive(self):
        self.assertNotEqual(_identity.port_for("org.example.Editor"),
                            _identity.port_for("org.example.editor"))


class TestPortDerivation(unittest.TestCase):
    def test_known_values(self):
        # Frozen: these change only with a new version string (and a major release).
        self.assertEqual(_identity.port_for(APP_ID), 26238)
        self.assertEqual(_identity.candidates(APP_ID, "user", "uid:1000"),
                         reference_ports(APP_ID, "user", "uid:1000", 8))
        self.assertEqual(Socket_Singleton.port_for(APP_ID), 26238)

    def test_the_documented_algorithm(self):
        for app_id in (APP_ID, "a", "z" * 128, "com.example.x-y_z"):
            for scope, user in (("machine", ""), ("user", "uid:0"), ("user", "uid:1000"),
                                ("user", "sid:S-1-5-21-1-2-3-1001"),
                                ("user", "name:DOMAIN\\\u00e9l\u00e8ve")):
                with self.subTest(app_id=app_id, scope=scope, user=user):
                    self.assertEqual(
                        _identity.candidates(app_id, scope, user or None, 16),
                        reference_ports(app_id, scope, user, 16))

    def test_the_range_leaves_out_well_known_dev_and_ephemeral_ports(self):
        allowed = [_identity._nth_port(index) for index in range(_identity.SIZE)]
        self.assertEqual(allowed, sorted(set(range(10000, 30000)) - set(_identity.AVOID)))
        self.assertEqual(_identity.SIZE, 19981)
        self.assertEqual(list(_identity.AVOID), sorted(set(_identity.AVOID)))
        self.assertFalse(set(allowed) & DEV_PORTS)
        self.assertGreaterEqual(min(allowed), 1024)
        self.assertLess(max(allowed), 30000)  # Kubernetes' NodePorts, then the ephemeral ranges

    def test_candidates_are_distinct_and_start_with_port_for(self):
        for index in range(200):
            app_id = "org.example.App%d" % index
            for scope in ("machine", "user"):
                ports = _identity.candidates(app_id, scope, count=8)
                self.assertEqual(len(set(ports)), 8)
                self.assertEqual(ports[0], _identity.port_for(app_id, scope))
                self.assertTrue(all(10000 <= port <= 29999 for port in ports))
                self.assertFalse(set(ports) & set(_identity.AVOID))
        self.assertEqual(len(_identity.candidates(APP_ID)), _identity.CANDIDATES)
        self.assertEqual(len(_identity.candidates(APP_ID, count=64)), 64)

    def test_the_user_scope_is_this_users(self):
        self.assertEqual(_identity.port_for(APP_ID, "user"),
                         _identity.port_for(APP_ID, "user", _identity.user_identity()))
        self.assertNotEqual(_identity.port_for(APP_ID, "user", "uid:1000"),
                            _identity.port_for(APP_ID, "user", "uid:1001"))
        self.assertNotEqual(_identity.port_for(APP_ID, "user", "uid:1000"),
                            _identity.port_for(APP_ID))

    def test_user_identity(self):
        identity = _identity.user_identity()
        if os.name == "posix":
            self.assertEqual(identity, "uid:%d" % os.geteuid())
        else:
            self.assertRegex(identity, r"^(sid:S-1-\d+(-\d+)+|name:.*\\.+)$")

    def test_invalid_arguments(self):
        cases = [
            (("org.x", 1), TypeError, "scope must be a str, not int"),
            (("org.x", "session"), ValueError, "scope must be 'machine' or 'user', not 'session'"),
            (("org.x", "machine", "uid:1"), ValueError, "user is only used with scope='user'"),
            (("org.x", "user", 1000), TypeError, "user must be a str or None, not int"),
            (("org x",), ValueError, "app_id may hold only ASCII letters, digits, '.', '-' and "
                                     "'_': ' ' at index 3 is not allowed"),
        ]
        for args, error, message in cases:
            with self.subTest(args=args), self.assertRaises(error) as caught:
                _identity.port_for(*args)
            self.assertEqual(str(caught.exception), message)
        for count, error, message in ((0, ValueError, "count must be between 1 and 64 "
                                       "(inclusive)"),
                                      (65, ValueError, "count must be between 1 and 64 "
                                       "(inclusive)"),
                                      (True, TypeError, "count must be an int, not bool")):
            with self.subTest(count=count), self.assertRaises(error) as caught:
                _identity.candidates(APP_ID, count=count)
            self.assertEqual(str(caught.exception), message)
        with self.assertRaises(ValueError):
            Socket_Singleton.port_for(APP_ID, "nowhere")


class TestUserTag(unittest.TestCase):
    def test_eight_bytes_by_app_and_user(self):
        tag = _identity.user_tag(APP_ID)
        self.assertEqual(len(tag), 8)
        self.assertEqual(tag, _identity.user_tag(APP_ID, _identity.user_identity()))
        self.assertEqual(tag, _identity.user_tag(APP_ID))
        others = {_identity.user_tag(APP_ID, "uid:1000"), _identity.user_tag(APP_ID, "uid:1001"),
                  _identity.user_tag("org.example.Other"), tag}
        self.assertEqual(len(others), 4)

    def test_the_documented_derivation(self):
        data = b"".join(len(part).to_bytes(4, "big") + part for part in (
            b"socket-singleton/1", b"user-tag", APP_ID.encode(), b"uid:1000"))
        self.assertEqual(_identity.user_tag(APP_ID, "uid:1000"),
                         hashlib.sha256(data).digest()[:8])


class TestUserKey(unittest.TestCase):
    """The per-user key, in this process, under a configuration directory of the test's."""

    def setUp(self):
        self.base = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.base, True)
        self.config = os.path.join(self.base, "config")
        variable = "LOCALAPPDATA" if os.name == "nt" else "XDG_CONFIG_HOME"
        patch = mock.patch.dict(os.environ, {variable: self.config})
        patch.start()
        self.addCleanup(patch.stop)
        self.directory = os.path.join(self.config, "socket-singleton")
        self.path = os.path.join(self.directory, "key")

    def test_created_once_then_reused(self):
        self.assertEqual(_identity.key_directory(), self.directory)
        key = _identity.user_key(APP_ID)
        self.assertRegex(key, "^[0-9a-f]{64}$")
        with open(self.path) as file:
            stored = file.read()
        self.assertRegex(stored, "^[0-9a-f]{64}\n$")
        self.assertEqual(_identity.user_key(APP_ID), key)
        self.assertNotEqual(_identity.user_key("org.example.Other"), key)
        self.assertEqual(os.listdir(self.directory), ["key"])
        with open(self.path) as file:
            self.assertEqual(file.read(), stored)

    def test_the_key_is_the_hmac_of_the_file_over_the_id(self):
        import hmac

        key = _identity.user_key(APP_ID)
        with open(self.path) as file:
            master = bytes.fromhex(file.read())
        self.assertEqual(key, hmac.new(master, b"socket-singleton/1 app-key " + APP_ID.encode(),
                                       "sha256").hexdigest())

    def test_the_default_directory_is_in_the_home(self):
        if os.name == "nt":
            self.skipTest("POSIX: ~/.config")
        home = os.path.join(self.base, "home")
        with mock.patch.dict(os.environ, {"HOME": home, "XDG_CONFIG_HOME": "relative/ignored"}):
            self.assertEqual(_identity.key_directory(),
                             os.path.join(home, ".config", "socket-singleton"))
        with mock.patch.dict(os.environ, {"HOME": home}):
            del os.environ["XDG_CONFIG_HOME"]
            self.assertEqual(_identity.key_directory(),
                             os.path.join(home, ".config", "socket-singleton"))

    @unittest.skipUnless(support.POSIX, "POSIX modes")
    def test_modes(self):
        # whatever the umask, the key is the user's alone
        _identity.user_key(APP_ID)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode) & 0o077, 0)
        previous = os.umask(0)
        try:
            shutil.rmtree(self.config)
            _identity.user_key(APP_ID)
        finally:
            os.umask(previous)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)

    def assert_refused(self, path, problem):
        with self.assertRaises(UserKeyError) as caught:
            _identity.user_key(APP_ID)
        self.assertEqual(caught.exception.path, path)
        self.assertEqual(caught.exception.problem, problem)
        self.assertEqual(str(caught.exception),
                         "cannot use the per-user key %s: %s" % (path, problem))
        self.assertIsInstance(caught.exception, OSError)

    @unittest.skipUnless(support.POSIX, "POSIX modes")
    def test_a_directory_others_may_write_is_refused(self):
        for mode in (0o777, 0o720, 0o702):
            with self.subTest(mode=oct(mode)):
                os.makedirs(self.directory, exist_ok=True)
                os.chmod(self.directory, mode)
                self.assert_refused(self.directory, "others may write to the directory (mode "
                                    "%03o); chmod go-w it" % mode)
                self.assertEqual(os.listdir(self.directory), [])

    @unittest.skipUnless(support.POSIX and os.geteuid() == 0, "chown needs root")
    def test_a_directory_of_another_user_is_refused(self):
        os.makedirs(self.directory, 0o700)
        os.chown(self.directory, 54321, 54321)
        self.assert_refused(self.directory, "the directory belongs to user id 54321, not to this "
                            "user (0)")
        self.assertEqual(os.listdir(self.directory), [])

    @unittest.skipUnless(support.POSIX and os.geteuid() == 0, "chown needs root")
    def test_a_key_file_of_another_user_is_refused(self):
        key = _identity.user_key(APP_ID)
        os.chown(self.path, 54321, 54321)
        self.assert_refused(self.path, "the file belongs to user id 54321, not to this user (0)")
        os.chown(self.path, 0, 0)
        self.assertEqual(_identity.user_key(APP_ID), key)

    @unittest.skipUnless(support.POSIX, "POSIX modes")
    def test_a_key_file_others_may_read_is_refused(self):
        _identity.user_key(APP_ID)
        os.chmod(self.path, 0o644)
        self.assert_refused(self.path, "others may read or write the file (mode 644); delete "
                            "it, and a new key is made")

    @unittest.skipUnless(support.POSIX, "POSIX symbolic links")
    def test_symbolic_links_are_refused(self):
        elsewhere = os.path.join(self.base, "elsewhere")
        os.makedirs(elsewhere, 0o700)
        os.makedirs(self.config)
        os.symlink(elsewhere, self.directory)
        self.assert_refused(self.directory, "not a directory (a symbolic link?)")
        os.unlink(self.directory)
        os.makedirs(self.directory, 0o700)
        with open(os.path.join(elsewhere, "key"), "w") as file:
            file.write("ab" * 32 + "\n")
        os.chmod(os.path.join(elsewhere, "key"), 0o600)
        os.symlink(os.path.join(elsewhere, "key"), self.path)
        self.assert_refused(self.path, "not a regular file (a symbolic link?)")

    @unittest.skipUnless(support.POSIX, "POSIX modes")
    def test_a_key_that_is_no_file_is_refused(self):
        os.makedirs(self.path, 0o700)
        self.assert_refused(self.path, "not a regular file")

    def test_a_file_that_holds_no_key_is_refused(self):
        os.makedirs(self.directory, 0o700)
        for content in (b"", b"ab" * 31 + b"\n", b"zz" * 32 + b"\n", b"AB" * 32):
            with self.subTest(content=content):
                with open(self.path, "wb") as file:
                    file.write(content)
                if support.POSIX:
                    os.chmod(self.path, 0o600)
                self.assert_refused(self.path, "the file holds no key (64 hex digits); delete "
                                    "it, and a new key is made")

    def test_a_directory_that_cannot_be_made_is_named(self):
        blocker = os.path.join(self.base, "a-file")
        with open(blocker, "w"):
            pass
        variable = "LOCALAPPDATA" if os.name == "nt" else "XDG_CONFIG_HOME"
        with mock.patch.dict(os.environ, {variable: blocker}):
            directory = os.path.join(blocker, "socket-singleton")
            with self.assertRaises(UserKeyError) as caught:
                _identity.user_key(APP_ID)
        self.assertEqual(caught.exception.path, directory)
        self.assertRegex(caught.exception.problem,
                         r"^cannot create the directory \(.+\); set %s to a directory of yours$"
                         % variable)

    def test_a_key_busy_for_an_instant_is_read_on_windows(self):
        # Windows cannot open a file that another launch is renaming into place at that
        # moment, nor one an antivirus holds (a sharing violation): the read is tried again.
        # Everywhere else PermissionError means what it says.
        _identity.user_key(APP_ID)  # creates the key file
        with open(self.path) as file:
            key = file.read().strip()
        real_open = os.open
        for name, busy, expected in (("nt", 3, key), ("nt", 20, None), ("posix", 1, None)):
            failures = [PermissionError(13, "Permission denied")] * busy
            calls = []

            def flaky_open(path, flags, *args, failures=failures, calls=calls):
                calls.append(path)
                if failures and path == self.path:
                    raise failures.pop()
                return real_open(path, flags, *args)

            with self.subTest(os_name=name, busy=busy), \
                    mock.patch.object(_identity.os, "open", flaky_open), \
                    mock.patch.object(_identity.os, "name", name), \
                    mock.patch("time.sleep") as sleep:
                if expected is None:
                    with self.assertRaisesRegex(UserKeyError, "Permission denied"):
                        _identity._read_key(self.path)
                else:
                    self.assertEqual(_identity._read_key(self.path), expected)
                    self.assertEqual(calls.count(self.path), busy + 1)
                waited = sum(args[0] for args, _ in sleep.call_args_list)
                self.assertLess(waited, 1.0)
                self.assertEqual(bool(waited), name == "nt")

    def test_concurrent_creation_yields_one_key(self):
        # Every process creates the key at once: each waits for a line on its stdin, written
        # only once all of them have said they are ready.
        code = ("import sys; from Socket_Singleton import _identity\n"
                "print('ready', flush=True); sys.stdin.readline()\n"
                "print(_identity.user_key(%r))\n" % APP_ID)
        procs = []
        for _ in range(8):
            env = support.app_env({})
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        keys = []
        try:
            for proc in procs:
                # rstrip: the line ends with \r\n on Windows
                self.assertEqual(proc.stdout.readline().rstrip(b"\r\n"), b"ready")
            for proc in procs:
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            for proc in procs:
                out, err = support.communicate(proc)
                self.assertEqual(proc.returncode, 0, err)
                keys.append(out.decode().strip())
        finally:
            for proc in procs:
                support.kill(proc)
        self.assertEqual(len(set(keys)), 1, keys)
        self.assertEqual(os.listdir(self.directory), ["key"])
        self.assertEqual(_identity.user_key(APP_ID), keys[0])


class TestIdentityIsLazy(unittest.TestCase):
    def test_a_launch_without_app_id_never_loads_it(self):
        code = ("import sys\n"
                "from Socket_Singleton import Socket_Singleton\n"
                "with Socket_Singleton(port=0): pass\n"
                "print('_identity' in sys.modules, 'Socket_Singleton._identity' in sys.modules)\n"
                "print(Socket_Singleton.port_for(%r))\n"
                "print('Socket_Singleton._identity' in sys.modules)\n" % APP_ID)
        result = subprocess.run(
            [sys.executable, "-c", code], env=support.app_env({}), capture_output=True,
            timeout=support.WAIT)
        self.assertEqual(support.text(result.stdout), "False False\n26238\nTrue\n",
                         support.text(result.stderr))


def _builtin_sha256():
    for name in ("_sha2", "_sha256"):
        try:
            __import__(name)
            return True
        except ImportError:
            pass
    return False


class TestHashing(unittest.TestCase):
    """SHA-256 and HMAC-SHA256 from CPython's own SHA-256 module: the same bytes as hashlib's and
    hmac's, without loading OpenSSL (milliseconds on every launch that names an app id or sets
    a secret)."""

    def test_the_same_digests_as_hashlib_and_hmac(self):
        import hmac

        for size in (0, 1, 31, 32, 63, 64, 65, 127, 128, 129, 1000):
            key, message = os.urandom(size), os.urandom(size * 3 + 1)
            with self.subTest(size=size):
                self.assertEqual(_wire.sha256(message), hashlib.sha256(message).digest())
                self.assertEqual(_wire.hmac_sha256(key, message),
                                 hmac.new(key, message, "sha256").digest())
        # RFC 4231, test case 2
        self.assertEqual(_wire.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex(),
                         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")

    def test_a_host_with_a_secret_loads_sha256_before_it_serves(self):
        # Its first hello must not need a file (an extension module): the host may be out of
        # file descriptors by then.
        code = ("import sys\n"
                "from Socket_Singleton import Socket_Singleton\n"
                "names = ('_sha2', '_sha256', 'hashlib')\n"
                "for secret in (None, 's3cret'):\n"
                "    before = [name for name in names if name in sys.modules]\n"
                "    Socket_Singleton(port=0, secret=secret).release()\n"
                "    print(before, any(name in sys.modules for name in names))\n")
        result = subprocess.run([sys.executable, "-S", "-c", code], env=support.app_env({}),
                                capture_output=True, timeout=support.WAIT)
        self.assertEqual(support.text(result.stdout), "[] False\n[] True\n",
                         support.text(result.stderr))

    @unittest.skipUnless(_builtin_sha256(), "this Python has no SHA-256 module of its own "
                         "(built --with-builtin-hashlib-hashes without it): hashlib is used")
    def test_a_launch_with_an_app_id_and_a_secret_loads_no_openssl(self):
        code = ("import sys\n"
                "from Socket_Singleton import Socket_Singleton\n"
                "for secret in (None, 's3cret'):\n"
                "    app_id = 'org.example.NoSSL.%%s.%%s' %% (secret, %r)\n"
                "    with Socket_Singleton(app_id=app_id, secret=secret) as app:\n"
                "        app.trace(lambda launch: None)\n"
                "        try:\n"
                "            Socket_Singleton(app_id=app_id, secret=secret, strict=False)\n"
                "        except Exception as err:\n"
                "            print(err.reason)\n"
                "print(sorted(name for name in ('hashlib', '_hashlib', 'hmac', 'ssl')\n"
                "             if name in sys.modules))\n" % os.urandom(4).hex())
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        env = support.app_env({}, {"XDG_CONFIG_HOME": directory, "LOCALAPPDATA": directory})
        result = subprocess.run([sys.executable, "-S", "-c", code, "notes.txt"], env=env,
                                capture_output=True, timeout=support.WAIT)
        self.assertEqual(support.text(result.stdout), "delivered\ndelivered\n[]\n",
                         support.text(result.stderr))


@unittest.skipIf(support.other_users_unavailable(), support.other_users_unavailable())
class TestTwoUsers(unittest.TestCase):
    """Two throwaway OS users, each computing its identity in processes of its own."""

    REPORT = ("import json, os, sys\n"
              "from Socket_Singleton import _identity, Socket_Singleton\n"
              "app_id = sys.argv[1]\n"
              "key = _identity.user_key(app_id)\n"
              "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(),\n"
              "    'groups': os.getgroups(), 'identity': _identity.user_identity(),\n"
              "    'port': Socket_Singleton.port_for(app_id, scope='user'),\n"
              "    'candidates': _identity.candidates(app_id, 'user'),\n"
              "    'machine': Socket_Singleton.port_for(app_id),\n"
              "    'tag': _identity.user_tag(app_id).hex(), 'key': key,\n"
              "    'path': os.path.join(_identity.key_directory(), 'key')}))\n")

    PEEK = ("import sys\n"
            "try:\n"
            "    open(sys.argv[1], 'rb').read()\n"
            "except PermissionError:\n"
            "    print('denied')\n"
            "else:\n"
            "    print('read it')\n")

    @classmethod
    def setUpClass(cls):
        cls.users = []
        try:
            for _ in range(2):
                cls.users.append(support.OtherUser())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for user in cls.users:
            user.remove()

    def report(self, user):
        result = support.python_as(user, self.REPORT, APP_ID)
        self.assertEqual(result.code, 0, result)
        return json.loads(result.out)

    def test_each_user_has_its_own_port_tag_and_key(self):
        first, second = self.users
        one, two = self.report(first), self.report(second)
        for user, seen in ((first, one), (second, two)):
            self.assertEqual((seen["uid"], seen["euid"], seen["gid"], seen["groups"]),
                             (user.uid, user.uid, user.gid, []))
            self.assertEqual(seen["identity"], user.identity)
            self.assertEqual(seen["port"], _identity.port_for(APP_ID, "user", user.identity))
            self.assertEqual(seen["candidates"],
                             _identity.candidates(APP_ID, "user", user.identity))
            self.assertEqual(seen["tag"], _identity.user_tag(APP_ID, user.identity).hex())
            self.assertEqual(seen["path"],
                             os.path.join(user.config_home, "socket-singleton", "key"))
            info = os.stat(seen["path"])
            self.assertEqual((info.st_uid, stat.S_IMODE(info.st_mode)), (user.uid, 0o600))
        self.assertEqual(one["machine"], two["machine"])
        self.assertNotEqual(one["port"], two["port"])
        self.assertNotEqual(one["tag"], two["tag"])
        self.assertNotEqual(one["key"], two["key"])
        self.assertNotEqual(one["path"], two["path"])
        # each user reuses its key; neither can read the other's
        self.assertEqual(self.report(first)["key"], one["key"])
        for reader, path in ((first, two["path"]), (second, one["path"])):
            result = support.python_as(reader, self.PEEK, path)
            self.assertEqual((result.code, result.out), (0, "denied\n"), result)

    def test_a_host_runs_as_the_user(self):
        user = self.users[0]
        app, port = support.start_host_as(self, user, support.config(0))
        status = "/proc/%d/status" % app.host_pid
        if os.path.exists(status):  # Linux: real, effective, saved and file-system uid
            with open(status) as file:
                uids = [line.split()[1:] for line in file if line.startswith("Uid:")]
            self.assertEqual(uids, [[str(user.uid)] * 4])
        code, events, err = support.finish(support.launch_as(
            user, ["from-" + user.name], support.client_config(port)))
        self.assertEqual(code, 3, err)
        self.assertEqual(events[0]["reason"], "delivered", events)
        event = app.wait_for("launch")
        self.assertEqual(support.decode_args(event), [os.fsencode("from-" + user.name)])
        self.assertEqual(event["cwd"], user.home)


if __name__ == "__main__":
    unittest.main()
