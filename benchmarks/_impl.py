"""The implementations under test and the processes that run them.

An :class:`Impl` is an interpreter plus the environment that makes it import one particular
copy of Socket_Singleton: this checkout (``PYTHONPATH`` set to the repository root) or the
2.0.0 release installed in a virtual environment (``PYTHONPATH`` set to an empty directory,
so that both search as many path entries). Every process runs in a neutral working
directory, so that neither copy leaks in through ``sys.path[0]``, and every worker checks
``Socket_Singleton.__file__`` against the copy it was meant to load. Both sides read their
bytecode from the same kind of cache, filled before anything is timed.
"""

import atexit
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import resource
except ImportError:  # Windows: no CPU times, wall times only
    resource = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_worker.py")
APP = os.path.join(HERE, "_app.py")
WAIT = 30.0  # generous bound for anything the benchmark waits for
# Variables that would make one side import or start differently. PYTHONDONTWRITEBYTECODE
# in particular would make this checkout compile every module on every launch while pip
# precompiled 2.0.0: both sides get their bytecode from PYTHONPYCACHEPREFIX instead.
_SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONUNBUFFERED",
             "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
_neutral = []


class BenchmarkError(RuntimeError):
    """The benchmark cannot measure what it was asked to (wrong copy imported, no host...)."""


def neutral_dir():
    if not _neutral:
        path = tempfile.mkdtemp(prefix="ss-bench-")
        atexit.register(shutil.rmtree, path, True)
        _neutral.append(path)
    return _neutral[0]


class Impl:
    """One implementation: *python* importing the copy of the library at *expect*."""

    def __init__(self, label, python, pythonpath, expect):
        self.label = label
        self.python = python
        self.expect = expect  # Socket_Singleton.__file__ must start with this
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        if pythonpath:
            self.env["PYTHONPATH"] = pythonpath
        self.env["BENCH_EXPECT"] = expect
        self.env["PYTHONPYCACHEPREFIX"] = os.path.join(neutral_dir(), "pycache")
        self.version = self.file = self.python_version = "?"

    def popen(self, argv, env=None, **kwargs):
        full_env = dict(self.env, **(env or {}))
        return subprocess.Popen([self.python, *argv], env=full_env, cwd=neutral_dir(),
                                **kwargs)

    def run(self, argv, env=None, timeout=WAIT):
        """Run to completion; returns (wall seconds, returncode, stderr text, CPU seconds).

        CPU time (user + system, from the children's rusage) is reported beside wall time
        because it hardly moves when other work shares the machine."""
        cpu_before = _children_cpu()
        start = time.perf_counter()
        proc = self.popen(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchmarkError("%s %s did not finish within %s s"
                                 % (self.label, argv, timeout)) from None
        wall = time.perf_counter() - start
        return wall, proc.returncode, err.decode(errors="replace"), _children_cpu() - cpu_before

    def output(self, code):
        proc = self.popen(["-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=WAIT)
        if proc.returncode:
            raise BenchmarkError("%s: %s failed:\n%s" % (self.label, self.python,
                                                          err.decode(errors="replace")))
        return out.decode().strip()

    def verify(self):
        """Check which copy this environment imports; fail loudly on a mix-up."""
        lines = self.output(
            "import sys, platform, Socket_Singleton as m\n"
            "try:\n"
            "    from importlib.metadata import version\n"
            "    v = getattr(m, '__version__', None) or version('socket-singleton')\n"
            "except Exception:\n"
            "    v = '?'\n"
            "print(m.__file__); print(v); print(platform.python_version())\n").splitlines()
        self.file, self.version, self.python_version = lines
        if not self.file.startswith(self.expect):
            raise BenchmarkError("%s imports Socket_Singleton from %s, expected %s"
                                 % (self.label, self.file, self.expect))

    def warm(self):
        """Compile and cache the bytecode of everything a measured process imports, host
        modules included, before anything is timed."""
        self.output("import socket, threading, Socket_Singleton as m\n"
                    "m.Socket_Singleton(port=0, client=False, strict=False).release()\n")


def _children_cpu():
    if resource is None:
        return math.nan
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def resolve(python):
    """The real executable behind *python* (a pyenv shim costs a shell script per launch)."""
    path = shutil.which(python) or python
    proc = subprocess.run([path, "-c", "import sys; print(sys.executable)"],
                          capture_output=True, cwd=neutral_dir(),
                          env={k: v for k, v in os.environ.items() if k not in _SCRUBBED})
    if proc.returncode:
        raise BenchmarkError("cannot run %s: %s" % (python, proc.stderr.decode(errors="replace")))
    return proc.stdout.decode().strip()


def checkout(python):
    impl = Impl("this checkout", python, ROOT, os.path.join(ROOT, "Socket_Singleton") + os.sep)
    impl.verify()
    impl.warm()
    return impl


def baseline(python):
    """The release installed for *python*; must be a copy outside this checkout."""
    # An empty directory on PYTHONPATH, so that both sides search as many path entries.
    empty = os.path.join(neutral_dir(), "empty")
    os.makedirs(empty, exist_ok=True)
    impl = Impl("2.0.0", python, empty, "")
    impl.verify()
    if impl.file.startswith(ROOT + os.sep):
        raise BenchmarkError("%s imports this checkout (%s), not the release"
                             % (python, impl.file))
    impl.expect = impl.env["BENCH_EXPECT"] = impl.file
    impl.label = impl.version
    impl.warm()
    return impl


def make_baseline(directory, base_python):
    """Create (or reuse) a virtual environment with socket-singleton==2.0.0; returns its python."""
    if os.name == "nt":
        python = os.path.join(os.path.abspath(directory), "Scripts", "python.exe")
    else:
        python = os.path.join(os.path.abspath(directory), "bin", "python")
    if not os.path.exists(python):
        print("creating %s with %s" % (directory, base_python), file=sys.stderr)
        if subprocess.run([base_python, "-m", "venv", directory]).returncode:
            raise BenchmarkError("could not create a virtual environment in %s" % directory)
    installed = subprocess.run([python, "-m", "pip", "show", "socket-singleton"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if b"Version: 2.0.0" not in installed.stdout:
        if subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "socket-singleton==2.0.0"]).returncode:
            raise BenchmarkError("pip could not install socket-singleton==2.0.0 in %s"
                                 % directory)
    return python


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_raw(port, message):
    """A raw 2.0.0-style client: connect, send, close."""
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", port))
        sock.sendall(message)


class Delivery:
    __slots__ = ("key", "nargs", "nbytes", "t_ns")

    def __init__(self, line):
        _, t_ns, nargs, nbytes, self.key = line.split(" ", 4)
        self.t_ns, self.nargs, self.nbytes = int(t_ns), int(nargs), int(nbytes)


class Server:
    """A worker process serving a port (``host``, ``bare`` or ``hop``), read on a thread of its
    own. ``base_kib``: its RSS before it made the server."""

    def __init__(self, impl, kind="host", env=None):
        self.impl = impl
        self.kind = kind
        self.deliveries = []
        self.by_key = {}
        self._cond = threading.Condition()
        for _ in range(5):
            self.proc = impl.popen([WORKER, kind, str(free_port())], env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = self.proc.stdout.readline().decode()
            if line.startswith("READY "):
                _, pid, port, base, _ = line.split(" ", 4)
                self.pid, self.port, self.base_kib = int(pid), int(port), int(base)
                break
            self.proc.stdin.close()
            code = self.proc.wait(WAIT)
            err = self.proc.stderr.read().decode(errors="replace")
            self._close_pipes()
            if code != 3:  # 3: the port was taken meanwhile; anything else is a real failure
                raise BenchmarkError("%s %s worker failed (status %s):\n%s"
                                     % (impl.label, kind, code, err))
        else:
            raise BenchmarkError("no free port for a %s worker" % kind)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(b"D "):
                delivery = Delivery(line.decode(errors="replace").rstrip("\n"))
                with self._cond:
                    self.deliveries.append(delivery)
                    self.by_key[delivery.key] = delivery
                    self._cond.notify_all()

    def count(self):
        with self._cond:
            return len(self.deliveries)

    def wait_key(self, key, timeout=WAIT):
        """The delivery whose key is *key*, or ``None`` if it did not come in time."""
        with self._cond:
            self._cond.wait_for(lambda: key in self.by_key, timeout)
            return self.by_key.get(key)

    def wait_keys(self, keys, quiet=2.0, limit=WAIT):
        """Wait until every key of *keys* is delivered, or nothing new came for *quiet*
        seconds; returns the deliveries found. Missing keys are lost messages."""
        end = time.monotonic() + limit
        with self._cond:
            while True:
                missing = [key for key in keys if key not in self.by_key]
                if not missing:
                    break
                wait = min(quiet, end - time.monotonic())
                if wait <= 0 or not self._cond.wait_for(self._more_than(len(self.deliveries)),
                                                        wait):
                    break
            return [self.by_key[key] for key in keys if key in self.by_key]

    def _more_than(self, count):
        return lambda: len(self.deliveries) > count

    def wait_count(self, count, quiet=2.0):
        with self._cond:
            self._cond.wait_for(lambda: len(self.deliveries) >= count, quiet)
            return len(self.deliveries) >= count

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(WAIT)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._reader.join(WAIT)
        self._close_pipes()

    def _close_pipes(self):
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


class Servers:
    """Several servers started together and stopped together."""

    def __init__(self, impls, kind="host", named=None):
        """*named*: per implementation's label, the variables that name its host by app id
        (its workers' mode is then ``host-id``)."""
        self.servers = []
        try:
            for impl in impls:
                env = (named or {}).get(impl.label)
                self.servers.append(Server(impl, "host-id" if env else kind, env))
        except BaseException:
            self.stop()
            raise

    def stop(self):
        for server in self.servers:
            server.stop()

    def __enter__(self):
        return {server.impl.label: server for server in self.servers}

    def __exit__(self, *exc_info):
        self.stop()


def alternate(impls, reps):
    """(rep, impl) pairs, the order of the implementations flipped every round so that
    a slow drift of the machine weighs on both the same."""
    for rep in range(reps):
        for impl in (impls if rep % 2 == 0 else impls[::-1]):
            yield rep, impl
