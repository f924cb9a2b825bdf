"""Shared test helpers, each written once: ports found at run time, real app processes, the
library's waits and limits for a test, in-process hosts, raw peers of a host, fake servers that are
not hosts, and waiting on events."""

import errno
import json
import logging
import os
import queue
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from Socket_Singleton import MultipleSingletonsError, Socket_Singleton, _tuning, _wire

POSIX = os.name == "posix"
# Distinctive values, so that a search through captured bytes cannot miss them or match by luck.
ARG = "arg-Pangolin-\u00e9l\u00e9phant-%d" % os.getpid()
SECRET = "secret-Marmalade-\u00c4pfel-%d" % os.getpid()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "test_app.py")
WAIT = 30.0  # generous bound for anything we wait for (CPython's support.SHORT_TIMEOUT)
SHORT = 0.3  # only to show that something did NOT happen


def _keeps_undecodable_bytes():
    try:
        os.fsdecode(b"\xff\xfe")
    except UnicodeDecodeError:
        return False
    return True


# POSIX keeps bytes that are not UTF-8 in names and arguments (surrogateescape); Windows
# decodes them strictly (its command lines are UTF-16), so no argument can hold them there.
UNDECODABLE_ARGS = _keeps_undecodable_bytes()


def _under_wine():
    if os.name != "nt":
        return False
    import ctypes
    try:
        return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")
    except OSError:
        return False


# Wine runs Windows programs on Linux, but it is not Windows in some socket details: it cannot
# reproduce Windows' port stealing by a second SO_REUSEADDR bind, a peer's reset reads as a
# clean close, and TIME_WAIT follows Linux rules. Tests that meet these say so.
WINE = _under_wine()


def has_ipv6_loopback():
    """Whether this machine can bind ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def fsdecode(data):
    """``os.fsdecode``, or where undecodable bytes cannot be an argument (Windows), the text
    with replacement characters: an argument the platform can hold."""
    if UNDECODABLE_ARGS:
        return os.fsdecode(data)
    return data.decode("utf-8", "replace")


def text(data):
    """A child's output as text, its line endings as "\n" (Windows writes os.linesep, "\r\n",
    to text streams); where os.linesep is "\n" nothing changes, so a stray "\r" still shows."""
    return data.decode("utf-8", "replace").replace(os.linesep, "\n")


def free_port(address="127.0.0.1"):
    """A port nobody listens on right now (bind port 0 and read it back)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def open_fds():
    """How many file descriptors this process has open, or None where that cannot be known:
    Linux counts /proc/self/fd. (A Windows Python under Wine sees Wine's own descriptors
    there, which come and go: no measure of ours.)"""
    if os.name != "posix" or not os.path.isdir("/proc/self/fd"):
        return None
    return len(os.listdir("/proc/self/fd"))


# -- launches and hosts in real processes (test_app.py) -------------------------------------------

def app_env(config, extra=None):
    """The environment of an app process: ours, its config, the checkout on its path, and
    *extra* (a locale, say) on top."""
    env = dict(os.environ)
    env["SS_TEST_CONFIG"] = json.dumps(config)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def config(port, **kwargs):
    """test_app's configuration for a launch (or host) on *port* with these constructor kwargs."""
    return {"kwargs": dict(kwargs, port=port)}


def client_config(port, **kwargs):
    """test_app config for a launch that reports its outcome (strict=False unless given)."""
    kwargs.setdefault("strict", False)
    return config(port, **kwargs)


def launch(args=(), config=None, cwd=None, env=None, **popen):
    """Start test_app.py as a launch with *args* (*env*: variables to add); the caller owns
    the Popen."""
    for attempt in range(5):
        try:
            return subprocess.Popen(
                [sys.executable, APP, *args], env=app_env(config or {}, env), cwd=cwd,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
        except OSError as err:
            # Wine, starting dozens of processes at once, sometimes fails one with
            # ERROR_INTERNAL_ERROR (1359); nothing was started, so it is started again.
            if getattr(err, "winerror", None) != 1359 or attempt == 4:
                raise
    raise AssertionError("unreachable")


def communicate(proc, timeout=WAIT):
    """Wait for *proc* to finish and return its (stdout, stderr); kill it if it outlives
    *timeout* (then the caller's assertions on its exit fail)."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill(proc)


def kill(proc):
    """End *proc* (a Popen with pipes) by its own handle if it still runs, and collect it."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def end_by_stdin(proc, reader=None):
    """End a process that exits when its stdin closes (test_app.py, a helper script); kill it
    if it does not. Its pipes are closed, once the thread *reader* (if any) has read all of
    its output."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
            proc.wait(WAIT)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    if reader is not None:
        reader.join(WAIT)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def finish(proc, timeout=WAIT):
    """Wait for a launch started with launch(); returns (returncode, stdout lines as dicts,
    stderr)."""
    out, err = communicate(proc, timeout)
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode, events, text(err)


def run_client(args=(), config=None, cwd=None, timeout=WAIT, env=None):
    """Run one launch to completion; returns (returncode, stdout lines as dicts, stderr)."""
    return finish(launch(args, config, cwd, env), timeout)


def decode_args(event):
    """The exact argument bytes an app observer received."""
    return [bytes.fromhex(arg) for arg in event["args"]]


def run_concurrently(launches):
    """Start every ``(args, config)`` launch at once, then wait for each; returns
    ``[(returncode, events, stderr), ...]`` in order."""
    procs = [launch(args, config) for args, config in launches]
    return [finish(proc) for proc in procs]


def turned_away(test, args, port, **kwargs):
    """Run a strict=False launch to completion; returns its "turned-away" event."""
    code, events, err = run_client(args, client_config(port, **kwargs))
    test.assertEqual(code, 3, "the launch did not report an outcome: %r %s" % (events, err))
    test.assertEqual([e["event"] for e in events], ["turned-away"], err)
    return events[0]


def assert_strict_failure(test, code, events, err):
    """A strict launch that was not delivered: exit status 1, one clear line on stderr."""
    test.assertEqual(code, 1, err)
    test.assertEqual(events, [])
    lines = err.strip().splitlines()
    test.assertEqual(len(lines), 1, "expected one line on stderr, got: %r" % err)
    test.assertTrue(lines[0].startswith("Socket_Singleton: "), lines[0])


class AppProcess:
    """A test_app.py process read line by line on a thread of its own."""

    def __init__(self, args=(), config=None, cwd=None, env=None, proc=None):
        self.proc = proc if proc is not None else launch(args, config, cwd, env)
        self.events = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def next_event(self, timeout=WAIT):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event from the app within %s s" % timeout) from None

    def wait_for(self, name, timeout=WAIT):
        """Skip to the next event called *name*; fail on end of output or timeout."""
        while True:
            event = self.next_event(timeout)
            if event["event"] == name:
                return event
            if event["event"] == "eof":
                raise AssertionError("app ended before %r: %s" % (name, self.stderr()))

    def launches(self, count, timeout=WAIT):
        return [self.wait_for("launch", timeout) for _ in range(count)]

    def send(self, command):
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return text(self.proc.stderr.read())

    def stop(self):
        """End the process by its own handle, whatever state it is in."""
        end_by_stdin(self.proc, self._reader)


def start_host(test, config=None, args=(), env=None):
    """Start an app that becomes the host; cleaned up when *test* ends. Returns (app, port);
    ``app.host_pid`` is the process id the host reported."""
    app = AppProcess(args, config, env=env)
    test.addCleanup(app.stop)
    event = app.wait_for("host")
    app.host_pid = event["pid"]
    return app, event["port"]


def assert_becomes_host(test, port, args=("next",), **kwargs):
    """A new launch on *port* (strict=False) becomes the host; ended when *test* ends (or when
    its stdin closes). Returns its AppProcess."""
    app = AppProcess(args, config(port, strict=False, **kwargs))
    test.addCleanup(app.stop)
    event = app.next_event()
    test.assertEqual(event["event"], "host", "%s %s" % (event, app.stderr()))
    test.assertEqual(event["port"], port)
    return app


# -- processes of other OS users (POSIX, when the tests run as root) ----------------------------

def other_users_unavailable():
    """Why this run cannot create OS users of its own (a reason to skip with), or None."""
    if os.name != "posix":
        return "other OS users are created on POSIX only"
    if os.geteuid() != 0:
        return "creating OS users needs root"
    missing = [tool for tool in ("useradd", "userdel") if shutil.which(tool) is None]
    if missing:
        return "no %s here" % " or ".join(missing)
    return None


# The bootstrap of a process of another user: it starts as root, imports the package (every
# module but __main__, as a host or a launch may load any of them lazily) and the standard
# modules the program needs, reads the program, then drops to the user (groups, gid, uid: no
# way back) and runs it.
# The interpreter and the checkout may live where that user cannot reach (pyenv under /root,
# mode 0700): nothing is read from them after the drop, unless a program imports a module
# that is not preloaded (then it fails with PermissionError, in plain view on stderr).
_AS_USER = """
import importlib, os, pkgutil, sys
uid, gid, home, preload, target = sys.argv[1:6]
import Socket_Singleton
for _module in pkgutil.iter_modules(Socket_Singleton.__path__):
    if _module.name != "__main__":  # the command line: it would run
        importlib.import_module("Socket_Singleton." + _module.name)
for _module in preload.split(","):
    importlib.import_module(_module)
if target == "-c":
    code, name, rest = sys.argv[6], "<string>", sys.argv[7:]
else:
    with open(target, "rb") as _file:
        code, name, rest = _file.read(), target, sys.argv[6:]
os.setgroups([])
os.setgid(int(gid))
os.setuid(int(uid))
os.chdir(home)
sys.argv = [target, *rest]
del uid, gid, home, preload, target, _module
exec(compile(code, name, "exec"), {"__name__": "__main__", "__file__": name})
"""
PRELOAD = ("json", "threading", "time", "hashlib", "hmac", "secrets", "selectors", "logging",
           "struct", "stat", "errno", "queue", "argparse")


class OtherUser:
    """A throwaway OS user (``ss-test-`` and 8 hex digits, a system account with no login
    shell) with a home of its own: a temporary directory it owns (mode 0700), holding the
    directories its ``XDG_CONFIG_HOME`` and ``XDG_RUNTIME_DIR`` name. :meth:`remove` deletes the
    user (userdel) and its home. Only as root on POSIX: see :func:`other_users_unavailable`."""

    def __init__(self):
        import pwd

        self.name = "ss-test-%s" % os.urandom(4).hex()
        self.home = tempfile.mkdtemp(prefix=self.name + "-")
        try:
            subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                            "--home-dir", self.home, "--shell", "/usr/sbin/nologin", self.name],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        try:
            entry = pwd.getpwnam(self.name)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            self.config_home = os.path.join(self.home, ".config")
            self.runtime_dir = os.path.join(self.home, "run")
            for directory in (self.home, self.config_home, self.runtime_dir):
                os.makedirs(directory, 0o700, exist_ok=True)
                os.chown(directory, self.uid, self.gid)
                os.chmod(directory, 0o700)
        except BaseException:
            self.remove()
            raise

    def __repr__(self):
        return "<OtherUser %s uid=%d>" % (self.name, self.uid)

    @property
    def identity(self):
        """What ``_identity.user_identity()`` returns in this user's processes."""
        return "uid:%d" % self.uid

    def env(self, extra=None):
        """The environment of this user's processes: ours, with its home, its XDG directories,
        its names, and the checkout on the path; *extra* on top."""
        env = dict(os.environ)
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name,
                   XDG_CONFIG_HOME=self.config_home, XDG_RUNTIME_DIR=self.runtime_dir,
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(extra or {})
        return env

    def remove(self):
        """Delete the user and its home; idempotent."""
        if os.path.isdir(self.home):
            shutil.rmtree(self.home, ignore_errors=True)
        subprocess.run(["userdel", self.name], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_as(user, argv, env=None, preload=PRELOAD):
    """Start a Python program as *user* (an :class:`OtherUser`): *argv* is what follows the
    interpreter on its command line, ``[script, *args]`` or ``["-c", code, *args]``; *env* is
    added to ``user.env()``; the modules in *preload* are imported before the drop to the user.
    Returns the Popen (stdin, stdout and stderr are pipes); the caller owns it."""
    if not argv:
        raise ValueError("argv must name a script or -c")
    return subprocess.Popen(
        [sys.executable, "-c", _AS_USER, str(user.uid), str(user.gid), user.home,
         ",".join(preload), *argv],
        env=user.env(env), cwd=user.home, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


def python_as(user, code, *args, env=None):
    """Run ``python -c code args...`` as *user* to completion; returns a :class:`Result`."""
    proc = run_as(user, ["-c", code, *args], env)
    out, err = communicate(proc)
    return Result(proc.pid, proc.returncode, text(out), text(err))


def launch_as(user, args=(), config=None, env=None):
    """As :func:`launch`, test_app.py with *args* and *config*, but as *user*."""
    extra = {"SS_TEST_CONFIG": json.dumps(config or {})}
    extra.update(env or {})
    return run_as(user, [APP, *args], extra)


def start_host_as(test, user, config=None, args=(), env=None):
    """As :func:`start_host`, but the host runs as *user*; returns (app, port)."""
    app = AppProcess(proc=launch_as(user, args, config, env))
    test.addCleanup(app.stop)
    event = app.wait_for("host")
    app.host_pid = event["pid"]
    return app, event["port"]


class LineProcess:
    """A long-running program (an example, a README snippet); its stdout and stderr are read
    line by line on a thread. Ended through its own handle when *test* ends."""

    def __init__(self, test, argv, cwd=None, env=None):
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     encoding="utf-8", errors="replace")
        self.output = []  # every line read so far
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        test.addCleanup(self.stop)

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next_line(self, timeout=WAIT):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output within %s s; so far: %r"
                                 % (timeout, self.output)) from None
        if line is None:
            self._lines.put(None)
            raise AssertionError("the process ended (status %s); output: %r"
                                 % (self.proc.wait(WAIT), self.output))
        self.output.append(line)
        return line

    def expect(self, wanted):
        """Skip to the next line for which *wanted* (a string, or a predicate) holds."""
        match = wanted if callable(wanted) else (lambda line: line == wanted)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.next_line(max(0.0, deadline - time.monotonic()))
            except AssertionError as err:
                raise AssertionError("no line %r: %s" % (wanted, err)) from None
            if match(line):
                return line

    def wait_exit(self):
        """Wait for the process to end by itself; returns its status (all output is read)."""
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError("the process did not exit; output: %r" % self.output) from None
        self._reader.join(WAIT)
        while True:
            line = self._lines.get_nowait()
            if line is None:
                self._lines.put(None)
                return code
            self.output.append(line)

    def ctrl_c(self):
        """Stop it as a user would, with Ctrl+C; returns its exit status, or None when SIGINT
        cannot reach it (Windows, or ignored here and so in the child: the cleanup ends it)."""
        if os.name == "nt" or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return None
        self.proc.send_signal(signal.SIGINT)
        return self.wait_exit()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(WAIT)
        self.proc.stdout.close()


class Result:
    """How one run of the command line ended."""

    def __init__(self, pid, code, out, err):
        self.pid, self.code, self.out, self.err = pid, code, out, err

    def __repr__(self):
        return "<exit %s, stdout %r, stderr %r>" % (self.code, self.out, self.err)


def cli(*args, cwd=ROOT, env=None, unset=()):
    """Run ``python -m Socket_Singleton ARGS`` to completion with the checkout on sys.path."""
    environ = app_env({})
    environ.update(env or {})
    for name in unset:
        environ.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "Socket_Singleton", *args], cwd=cwd,
                            env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out, err = communicate(proc)
    return Result(proc.pid, proc.returncode, text(out), text(err))


# -- the library's limits and waits ----------------------------------------------------------------

# Tests change them through the library's one testing hook, ``_tuning.override``: ``with
# _tuning.override(delivery_wait=0.05): ...`` (a host made inside keeps those values for its life);
# in an app process, test_app.py's ``"tuning"`` setting does the same.

def tune(test, **values):
    """``_tuning.override(**values)`` from now until *test* ends (for setUp)."""
    override = _tuning.override(**values)
    override.start()
    test.addCleanup(override.stop)


def blocking_observer(test):
    """An observer that sets ``entered`` when called, then blocks until ``unblock`` is set
    (at the latest when *test* ends); returns (observer, entered, unblock)."""
    entered, unblock = threading.Event(), threading.Event()
    test.addCleanup(unblock.set)

    def blocking(args):
        entered.set()
        unblock.wait(WAIT)

    return blocking, entered, unblock


# -- hosts and launches in this process -----------------------------------------------------------

class ThreadLeakCheck(unittest.TestCase):
    """Fails a test that leaves a Socket_Singleton thread behind."""

    def setUp(self):
        super().setUp()
        self._threads_before = set(threading.enumerate())
        self.addCleanup(self._check_threads)

    def _check_threads(self):
        for thread in set(threading.enumerate()) - self._threads_before:
            if thread.name.startswith("Socket_Singleton"):
                thread.join(WAIT)
                self.assertFalse(thread.is_alive(), "thread %s leaked" % thread.name)


class Collector:
    """An in-process observer that records launches and lets tests wait for them."""

    def __init__(self):
        self.calls = []
        self._cond = threading.Condition()

    def __call__(self, args, *extra, **kwargs):
        with self._cond:
            self.calls.append((args, extra, kwargs))
            self._cond.notify_all()

    @property
    def received(self):
        with self._cond:
            return [call[0] for call in self.calls]

    def wait(self, count, timeout=WAIT):
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.calls) >= count, timeout):
                raise AssertionError("expected %d calls, got %d" % (count, len(self.calls)))
            return [call[0] for call in self.calls]


def in_process_host(test, observer=None, **kwargs):
    """A host in this process (on an ephemeral port unless *port* is given), released when
    *test* ends; *observer*, if given, is traced."""
    kwargs.setdefault("port", 0)
    host = Socket_Singleton(**kwargs)
    test.addCleanup(host.release)
    if observer is not None:
        host.trace(observer)
    return host


class HostTestCase(ThreadLeakCheck):
    """Helpers for tests that run a host in this process."""

    def host(self, **kwargs):
        return in_process_host(self, **kwargs)

    def collector(self, app, *args, **kwargs):
        collector = Collector()
        app.trace(collector, *args, **kwargs)
        return collector


def hand_off(port, args=(), address="127.0.0.1", **kwargs):
    """Launch in this process with ``sys.argv[1:] == args``; returns the MultipleSingletonsError
    of the launch (strict=False by default), or fails if the launch became the host."""
    kwargs.setdefault("strict", False)
    with mock.patch.object(sys, "argv", ["app", *args]):
        try:
            app = Socket_Singleton(address, port, **kwargs)
        except MultipleSingletonsError as err:
            return err
    app.release()
    raise AssertionError("the launch became the host of %s:%d" % (address, port))


def assert_port_free(test, port, address="127.0.0.1"):
    """A plain socket, without SO_REUSEADDR, can bind the port right now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((address, port))
        except OSError as err:
            test.fail("port %d is not free: %s" % (port, err))


def library_threads(port=None):
    """The library's threads that run now (of the host on *port*, if given)."""
    prefix = "Socket_Singleton" if port is None else "Socket_Singleton-%d-" % port
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def library_thread(port, role):
    """The host's thread "Socket_Singleton-<port>-<role>", or None once it is gone."""
    name = "Socket_Singleton-%d-%s" % (port, role)
    return next((t for t in threading.enumerate() if t.name == name), None)


def join_library_threads(test, port, *roles):
    """Wait (bounded) until the host's threads of *roles* have ended."""
    for role in roles:
        thread = library_thread(port, role)
        if thread is not None:
            thread.join(WAIT)
            test.assertFalse(thread.is_alive(), "%s still runs" % thread.name)


class LogWatcher(logging.Handler):
    """Records what the library logs through logging.getLogger("Socket_Singleton")."""

    def __init__(self, test):
        super().__init__(logging.DEBUG)
        self.records = []
        self._cond = threading.Condition()
        logger = logging.getLogger("Socket_Singleton")
        logger.addHandler(self)
        test.addCleanup(logger.removeHandler, self)

    def emit(self, record):
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def messages(self):
        with self._cond:
            return [record.getMessage() for record in self.records]

    def wait_count(self, text, count, timeout=WAIT):
        """Wait until *count* messages contain *text*; fail if more or fewer come."""
        def found():
            return [m for m in self.messages_unlocked() if text in m]
        with self._cond:
            if not self._cond.wait_for(lambda: len(found()) >= count, timeout):
                raise AssertionError("%d messages containing %r, not %d: %r"
                                     % (len(found()), text, count, self.messages_unlocked()))
            if len(found()) != count:
                raise AssertionError("%d messages containing %r, not %d"
                                     % (len(found()), text, count))

    def messages_unlocked(self):
        return [record.getMessage() for record in self.records]

    def wait_for(self, text, timeout=WAIT):
        """The first record whose message contains *text*, waiting for it if need be."""
        def find():
            return next((r for r in self.records if text in r.getMessage()), None)
        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                raise AssertionError("nothing logged containing %r; got %r"
                                     % (text, [r.getMessage() for r in self.records]))
            return find()


# -- raw peers of a host --------------------------------------------------------------------------

def connect(port, address="127.0.0.1"):
    """A connected socket to *port* that waits at most WAIT; the caller closes it."""
    sock = socket.create_connection((address, port), WAIT)
    sock.settimeout(WAIT)
    return sock


def reset(sock):
    """Close *sock* with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_closed(sock):
    """Block until the host closes or resets *sock*; fails if it sends data instead."""
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    if data:
        raise AssertionError("the host sent %r" % data[:100])


def shut_write(sock):
    """End a plain message; the host may already have reset an oversize one."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as err:
        if err.errno not in (errno.ENOTCONN, errno.ECONNRESET):
            raise


def read_exactly(sock, size):
    """Read exactly *size* bytes from *sock*; fails if the peer closes first."""
    sock.settimeout(WAIT)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError("the peer closed after %r" % data)
        data += chunk
    return data


def read_frame(sock):
    """Read one frame the host sends a framed peer: ``(kind, payload)``."""
    sock.settimeout(WAIT)
    buf = b""
    while True:
        found = _wire.split_frame(buf, 1 << 20)
        if found is not None:
            return found[0], found[1]
        data = sock.recv(65536)
        if not data:
            raise AssertionError("the host closed the connection without a frame")
        buf += data


def read_banner(sock):
    """Read the host's banner, which answers the preamble; fails on anything else."""
    banner = read_exactly(sock, len(_wire.BANNER))
    if banner != _wire.BANNER:
        raise AssertionError("the host answered the preamble with %r" % banner)


def raw_handshake(sock, nonce=None):
    """Be a framed client on connected *sock*: the preamble alone, the host's banner, then a
    hello with *nonce* (random by default). Returns the host's answer ``(kind, payload)``:
    a welcome, or an acknowledgement (a host that is releasing answers "retry")."""
    sock.sendall(_wire.PREAMBLE)
    read_banner(sock)
    sock.sendall(_wire.frame(_wire.HELLO, nonce or os.urandom(_wire.NONCE_SIZE)))
    return read_frame(sock)


def hello(port):
    """A framed peer that has said hello and read the host's welcome; the caller closes it."""
    peer = connect(port)
    try:
        kind, _ = raw_handshake(peer)
    except BaseException:
        peer.close()
        raise
    if kind != _wire.WELCOME:
        peer.close()
        raise AssertionError("the host answered the hello with %r" % kind)
    return peer


def launch_on(peer, args):
    """Send a framed launch (no secret) on *peer*, which has had its welcome; returns the
    acknowledgement as ``(status, detail)``."""
    peer.sendall(_wire.encode_launch(b"", os.urandom(_wire.ID_SIZE), os.getpid(), os.getcwd(),
                                     tuple(args)))
    kind, payload = read_frame(peer)
    if kind != _wire.ACK:
        raise AssertionError("expected an acknowledgement, got %r" % kind)
    return payload[:1], payload[1:].decode("utf-8", "replace")


def send_raw(port, data, address="127.0.0.1"):
    """Be a raw 2.0.0-style client: connect, send, close, never read. Returns the
    "peer ADDRESS:PORT:" with which the host logs what it makes of this peer."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(WAIT)
        sock.connect((address, port))
        sock.sendall(data)
        return "peer %s:%d:" % sock.getsockname()[:2]


def raw_exchange(port, data, shutdown=True):
    """Be a raw peer: send *data*, shut down our side (unless told not to), then read until
    the host closes. Returns ``(bytes the host wrote, how it ended)``; the end is "eof" or
    "reset". Fails if the host keeps the connection open beyond WAIT."""
    received = bytearray()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(data)
            if shutdown:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:  # ENOTCONN: the host has already reset the connection
                    return b"", "reset"
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return bytes(received), "eof"
                received += chunk
        except socket.timeout:
            raise AssertionError("the host kept a raw connection open for %s s (sent %r...)"
                                 % (WAIT, data[:40])) from None
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            return bytes(received), "reset"


_HOLD = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
peers = [socket.create_connection(("127.0.0.1", port), 30) for _ in range(count)]
print("connected", flush=True)
sys.stdin.read()
"""


def hold_connections(test, port, count):
    """A process that holds *count* idle connections to *port* until ``end_by_stdin()`` (in a
    process of its own, so that this one stays below select()'s descriptor numbers limit, 1024,
    on POSIX); returns its Popen once all are connected. Ended when *test* ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(port), str(count)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    test.addCleanup(end_by_stdin, holder)
    test.assertEqual(text(holder.stdout.readline()), "connected\n")
    return holder


def counting_selector(limit=None):
    """A selectors.SelectSelector class of its own (for ``selectors.DefaultSelector``) whose
    ``largest`` is the largest set select() was given so far; its Condition ``changed`` is
    notified at each call. With *limit*, a larger set raises ValueError, as select() does on
    Windows, where CPython's FD_SETSIZE is 512."""

    class CountingSelect(selectors.SelectSelector):
        largest = 0
        changed = threading.Condition()

        def _select(self, r, w, x, timeout=None):
            cls = type(self)
            with cls.changed:
                cls.largest = max(cls.largest, len(r), len(w))
                cls.changed.notify_all()
            if limit is not None and (len(r) > limit or len(w) > limit):
                raise ValueError("too many file descriptors in select()")
            return super()._select(r, w, x, timeout)

    return CountingSelect


# -- programs on the port that are not Socket_Singleton hosts -------------------------------------

def recv_exactly(conn, size, record):
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    record += data
    return bytes(data)


def read_to_end(conn, record):
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        record += chunk


class FakeServer:
    """A TCP server on 127.0.0.1 that is not a Socket_Singleton host: each connection is
    handed to ``handler(conn, record)`` on a thread of its own, and everything peers send is
    appended to that connection's ``record``. Closed when the test ends. *port*: 0 (the
    default) for a free one."""

    def __init__(self, test, handler, port=0):
        self._handler = handler
        self._stopping = False
        self._waker = None
        self.records = []
        self._threads = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.bind(("127.0.0.1", port))
        except OSError:
            self._sock.close()
            test.skipTest("port %d is in use on this machine" % port)
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        test.addCleanup(self.close)

    def _accept(self):
        while True:
            conn, peer = self._sock.accept()
            if self._stopping and peer == self._waker:
                conn.close()
                return
            record = bytearray()
            self.records.append(record)
            thread = threading.Thread(target=self._serve, args=(conn, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn, record):
        with conn:
            conn.settimeout(WAIT)
            try:
                self._handler(conn, record)
            except (OSError, EOFError):
                pass

    def close(self):
        if self._stopping:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as waker:
            waker.bind(("127.0.0.1", 0))
            self._waker = waker.getsockname()
            self._stopping = True
            waker.settimeout(WAIT)
            waker.connect(("127.0.0.1", self.port))  # served after every earlier peer
        self._acceptor.join(WAIT)
        self._sock.close()
        for thread in self._threads:
            thread.join(WAIT)

    def assert_nothing_of_the_users(self, test, args=(), secret=None):
        """No connection ever carried one of *args* or the *secret*."""
        test.assertTrue(self.records, "the client never connected")
        needles = [os.fsencode(arg) for arg in args]
        if secret is not None:
            needles.append(secret.encode("utf-8"))
        for record in self.records:
            for needle in needles:
                test.assertFalse(needle in record, "the server received %r" % needle)


def read_hello(conn, record):
    """The host's side of the handshake: the preamble, our banner, the client's hello.
    Returns the hello as ``(kind, payload)``."""
    preamble = recv_exactly(conn, len(_wire.PREAMBLE), record)
    if preamble != _wire.PREAMBLE:
        raise EOFError
    conn.sendall(_wire.BANNER)
    kind, size = _wire.parse_header(recv_exactly(conn, _wire.HEADER_SIZE, record))
    return kind, recv_exactly(conn, size, record)


def answering_hello_with(payload):
    """A handler: read the preamble, send the banner, read the hello, answer with *payload*,
    read on."""

    def handler(conn, record):
        read_hello(conn, record)
        conn.sendall(payload)
        read_to_end(conn, record)

    return handler


def fake_host(secret=None, claim_secret=True, launches=None):
    """A handler that speaks the framed protocol. With *secret* it proves it (it is a host
    that knows it); without, it claims one (*claim_secret*) with a proof it cannot make.
    A launch it gets is appended to *launches*, then acknowledged as delivered."""

    def handler(conn, record):
        _kind, hello = read_hello(conn, record)
        client_nonce, identity = _wire.decode_hello(hello)
        host_nonce = os.urandom(_wire.NONCE_SIZE)
        if secret is not None:
            proof = _wire.proof(secret, b"host", client_nonce, host_nonce)
        else:
            proof = os.urandom(_wire.PROOF_SIZE) if claim_secret else b""
        if identity is None:  # a launch of protocol 2
            conn.sendall(_wire.encode_welcome(4242, 1 << 20, host_nonce, proof))
        else:
            conn.sendall(_wire.encode_welcome3(4242, 1 << 20, host_nonce, proof, _wire.NUMBERED))
        header = bytearray()
        while len(header) < _wire.HEADER_SIZE:
            chunk = conn.recv(_wire.HEADER_SIZE - len(header))
            if not chunk:
                break  # the client closed
            header += chunk
        record += header
        if len(header) == _wire.HEADER_SIZE:
            kind, size = _wire.parse_header(header)
            payload = recv_exactly(conn, size, record)
            if kind == _wire.LAUNCH:  # not a bye, as the client sends when the proof is wrong
                if launches is not None and identity is None:
                    launches.append(_wire.decode_launch(payload, len(proof)))
                elif launches is not None:
                    launches.append(_wire.decode_launch3(payload, len(proof))[:5])
                conn.sendall(_wire.encode_ack(_wire.DELIVERED))
        read_to_end(conn, record)

    return handler


def legacy_host(test, observers=True):
    """A stand-in for a running 2.0.0 host, written from its documented behaviour: per
    connection one recv(1024), split on NUL, the non-empty pieces go to the observers (when
    it has any), then close. Returns the server and the list of what its observers got."""
    handed = []

    def handler(conn, record):
        data = conn.recv(1024)
        record += data
        args = tuple(part for part in data.decode("utf-8", "replace").rstrip("\0").split("\0")
                     if part)
        if args and observers:
            handed.append(args)

    return FakeServer(test, handler), handed


def closes_after_the_preamble(conn, record):
    """As a 2.0.0 host: reads what the client sends first (its preamble), closes unanswered."""
    recv_exactly(conn, len(_wire.PREAMBLE), record)


def answers_like_a_web_server(conn, record):
    """Reads what the client sends first (its preamble), answers with an HTTP error, then
    reads on until the client closes."""
    recv_exactly(conn, len(_wire.PREAMBLE), record)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    read_to_end(conn, record)


# Programs that are not Socket_Singleton hosts, as FakeServer handlers: "silent" accepts and
# never answers (it reads until the client gives up).
FOREIGN_PROGRAMS = {"close": closes_after_the_preamble, "garbage": answers_like_a_web_server,
                    "silent": read_to_end}
