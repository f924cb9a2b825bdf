"""The recipes in examples/, each run for real as processes on ports found at run time."""

import ast
import os
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from . import support

try:
    import tkinter
except ImportError:  # Python built without Tk
    tkinter = None

EXAMPLES = os.path.join(support.ROOT, "examples")
QUICKSTART = os.path.join(EXAMPLES, "quickstart.py")
ASYNCIO_SERVICE = os.path.join(EXAMPLES, "asyncio_service.py")
QUEUE_TOOL = os.path.join(EXAMPLES, "queue_tool.py")
TK_OPEN_FILES = os.path.join(EXAMPLES, "tk_open_files.py")
EDITOR = os.path.join(EXAMPLES, "editor.py")
STATUS_TOOL = os.path.join(EXAMPLES, "status_tool.py")
QUEUE_TOOL_IDLE = "6"  # the worker's idle bound: short, yet far above a launch's start-up


def example_env(**extra):
    env = dict(os.environ, PYTHONIOENCODING="utf-8", **extra)
    env["PYTHONPATH"] = support.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_launch(script, args=(), env=None, cwd=None):
    """Run one launch of *script* to completion; returns (pid, returncode, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, script, *args], env=env, cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out, err = support.communicate(proc)
    return proc.pid, proc.returncode, support.text(out), support.text(err)


def example_process(test, script, args=(), env=None, cwd=None):
    """A long-running example, ended through its own handle when *test* ends."""
    return support.LineProcess(test, [sys.executable, script, *args], cwd, env)


class TestExampleQuickstart(unittest.TestCase):

    def test_second_launch_hands_its_arguments_to_the_host(self):
        port = support.free_port()
        where = tempfile.TemporaryDirectory()
        self.addCleanup(where.cleanup)
        folder = os.path.realpath(where.name)
        env = example_env(QUICKSTART_PORT=str(port))

        host = example_process(self, QUICKSTART, env=env)
        host.expect(lambda line: line.startswith("host on port %d;" % port))
        pid, code, out, err = run_launch(QUICKSTART, ["hello", "two words"], env, cwd=folder)
        self.assertEqual((code, out, err), (0, "", ""))
        host.expect("a later launch passed ('hello', 'two words') (from %s, pid %d)"
                    % (folder, pid))


class TestExampleAsyncioService(unittest.TestCase):

    def test_jobs_then_stop(self):
        port = support.free_port()
        env = example_env(ASYNCIO_DEMO_PORT=str(port))
        service = example_process(self, ASYNCIO_SERVICE, env=env)
        service.expect("service ready on port %d" % port)
        for job in ("job-1", "job-2"):
            _, code, out, err = run_launch(ASYNCIO_SERVICE, [job], env)
            self.assertEqual((code, out, err), (0, "", ""))
            service.expect("done " + job)
        _, code, out, err = run_launch(ASYNCIO_SERVICE, ["stop"], env)
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("(pid %d)" % service.proc.pid, out)  # the command line's `send` reports
        self.assertEqual(service.wait_exit(), 0, service.output)
        self.assertEqual(service.output, ["service ready on port %d" % port, "done job-1",
                                          "done job-2", "stopping"])

    def test_ctrl_c_ends_the_service_without_a_traceback(self):
        port = support.free_port()
        env = example_env(ASYNCIO_DEMO_PORT=str(port))
        service = example_process(self, ASYNCIO_SERVICE, env=env)
        service.expect("service ready on port %d" % port)
        code = service.ctrl_c()
        if code is None:
            self.skipTest("SIGINT cannot reach the example here")
        self.assertEqual((code, service.output),
                         (0, ["service ready on port %d" % port, "interrupted, stopping"]))
        again = example_process(self, ASYNCIO_SERVICE, env=env)  # the port was released
        again.expect("service ready on port %d" % port)

    def test_stop_starts_no_service_when_none_runs(self):
        port = support.free_port()
        env = example_env(ASYNCIO_DEMO_PORT=str(port))
        _, code, out, err = run_launch(ASYNCIO_SERVICE, ["stop"], env)
        self.assertEqual((code, out), (3, ""), err)  # the command line's "nothing listens"
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("socket-singleton: "), err)


class TestExampleQueueTool(unittest.TestCase):

    def test_later_invocations_queue_onto_the_worker(self):
        port = support.free_port()
        env = example_env(QUEUE_TOOL_PORT=str(port), QUEUE_TOOL_IDLE=QUEUE_TOOL_IDLE)
        worker = example_process(self, QUEUE_TOOL, ["a"], env)
        started = "worker started (pid %d)" % worker.proc.pid
        worker.expect(started)
        worker.expect("ran a")

        # Each job runs while the worker still holds the port (the next one is queued on the
        # same worker), not only once it has gone idle.
        for job in ("b", "c"):
            _, code, out, err = run_launch(QUEUE_TOOL, [job], env)
            self.assertEqual((code, out, err), (0, "queued on the running worker (pid %d)\n"
                                                % worker.proc.pid, ""))
            worker.expect("ran " + job)
        self.assertEqual(worker.wait_exit(), 0, worker.output)  # idle: exits by itself
        self.assertEqual(worker.output,
                         [started, "ran a", "ran b", "ran c", "worker idle, exiting"])

        # The port is free again: the next invocation becomes the next worker.
        again = example_process(self, QUEUE_TOOL, ["d"], env)
        again.expect("worker started (pid %d)" % again.proc.pid)
        again.expect("ran d")


class TestExampleStatusTool(unittest.TestCase):

    def test_later_invocations_print_the_running_tools_answer(self):
        port = support.free_port()
        env = example_env(STATUS_TOOL_PORT=str(port))
        _, code, out, err = run_launch(STATUS_TOOL, ["status"], env)  # none runs: none starts
        self.assertEqual((code, out, err), (1, "", "status_tool.py: not running\n"))
        support.assert_port_free(self, port)

        tool = example_process(self, STATUS_TOOL, env=env)
        tool.expect("tool running on port %d" % port)
        pid = tool.proc.pid
        _, code, out, err = run_launch(STATUS_TOOL, ["status"], env)
        self.assertEqual((code, err), (0, ""), out)
        self.assertRegex(out, r"\Arunning for \d+ s \(pid %d\); launches so far: 1\n\Z" % pid)
        _, code, out, err = run_launch(STATUS_TOOL, ["fail"], env)
        self.assertEqual((code, out, err), (3, "unknown command 'fail'; try: status, stop\n", ""))
        _, code, out, err = run_launch(STATUS_TOOL, ["status"], env)
        self.assertEqual((code, err), (0, ""), out)
        self.assertRegex(out, r"\Arunning for \d+ s \(pid %d\); launches so far: 3\n\Z" % pid)
        _, code, out, err = run_launch(STATUS_TOOL, ["stop"], env)
        self.assertEqual((code, out, err), (0, "stopping (pid %d)\n" % pid, ""))
        self.assertEqual(tool.wait_exit(), 0, tool.output)
        self.assertEqual(tool.output, ["tool running on port %d" % port, "stopped"])


def git_environment(home, **extra):
    """The environment of a git that reads no configuration of the user's or the system's."""
    env = example_env(HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Ann Example",
                      GIT_AUTHOR_EMAIL="ann@example.invalid", GIT_COMMITTER_NAME="Ann Example",
                      GIT_COMMITTER_EMAIL="ann@example.invalid", **extra)
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


def shell_words(*words):
    """*words* as git's shell reads a command (its own sh, also on Windows)."""
    return " ".join(shlex.quote(word.replace(os.sep, "/")) for word in words)


class TestExampleEditor(unittest.TestCase):

    def start_editor(self, env, port):
        editor = example_process(self, EDITOR, env=env)
        editor.expect("editor ready on port %d" % port)
        return editor

    def test_a_run_returns_once_the_editor_closed_its_file(self):
        port = support.free_port()
        env = example_env(EDITOR_DEMO_PORT=str(port))
        where = tempfile.TemporaryDirectory()
        self.addCleanup(where.cleanup)
        folder = os.path.realpath(where.name)
        path = os.path.join(folder, "notes.txt")
        with open(path, "w", encoding="utf-8") as file:
            file.write("draft\n")

        _, code, out, err = run_launch(EDITOR, ["notes.txt"], env, cwd=folder)
        self.assertEqual((code, out), (1, ""))  # no editor runs: none starts
        self.assertTrue(err.startswith("editor.py: no editor is running"), err)

        editor = self.start_editor(env, port)
        opened = example_process(self, EDITOR, ["notes.txt"], env, cwd=folder)
        editor.expect("opened " + path)
        with self.assertRaises(subprocess.TimeoutExpired):  # it waits for the file's close
            opened.proc.wait(support.SHORT)
        _, code, out, err = run_launch(EDITOR, ["--close", "elsewhere.txt"], env, cwd=folder)
        self.assertEqual((code, out, err), (1, "%s is not open\n"
                                            % os.path.join(folder, "elsewhere.txt"), ""))
        _, code, out, err = run_launch(EDITOR, ["--close", path, "--text", "final"], env)
        self.assertEqual((code, out, err), (0, "", ""))
        self.assertEqual(opened.wait_exit(), 0, opened.output)
        self.assertEqual(opened.output, [])
        with open(path, encoding="utf-8") as file:
            self.assertEqual(file.read(), "final\n")

        _, code, out, err = run_launch(EDITOR, [], env)
        self.assertEqual((code, out, err), (1, "the editor is already running (pid %d)\n"
                                            % editor.proc.pid, ""))
        # --quit: a run still waiting is told, with status 1
        waiting = example_process(self, EDITOR, ["other.txt"], env, cwd=folder)
        editor.expect("opened " + os.path.join(folder, "other.txt"))
        _, code, out, err = run_launch(EDITOR, ["--quit"], env)
        self.assertEqual((code, out, err), (0, "", ""))
        self.assertEqual(waiting.wait_exit(), 1)
        self.assertEqual(waiting.output, ["the editor quit before %s was closed"
                                          % os.path.join(folder, "other.txt")])
        self.assertEqual(editor.wait_exit(), 0, editor.output)
        self.assertEqual(editor.output[-1], "editor quit")

    @unittest.skipIf(shutil.which("git") is None, "git is not installed")
    def test_git_commit_returns_only_once_the_editor_closed_the_message(self):
        port = support.free_port()
        where = tempfile.TemporaryDirectory()
        self.addCleanup(where.cleanup)
        repo = os.path.realpath(where.name)
        env = git_environment(repo, EDITOR_DEMO_PORT=str(port),
                              GIT_EDITOR=shell_words(sys.executable, EDITOR))
        editor = self.start_editor(env, port)

        def git(*args):
            done = subprocess.run(["git", *args], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=support.WAIT)
            self.assertEqual(done.returncode, 0, done)
            return support.text(done.stdout)

        git("init", "-q")
        with open(os.path.join(repo, "notes.txt"), "w", encoding="utf-8") as file:
            file.write("notes\n")
        git("add", "notes.txt")
        commit = subprocess.Popen(["git", "-c", "commit.gpgsign=false", "commit", "-q"],
                                  cwd=repo, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(support.kill, commit)
        line = editor.expect(lambda line: line.startswith("opened "))
        message = os.path.realpath(line[len("opened "):])
        self.assertEqual(message, os.path.join(repo, ".git", "COMMIT_EDITMSG"))
        with self.assertRaises(subprocess.TimeoutExpired):  # git waits for its editor
            commit.wait(support.SHORT)
        self.assertEqual(git("log", "--all", "--oneline"), "")  # nothing committed yet

        _, code, out, err = run_launch(EDITOR, ["--close", message, "--text",
                                                "Notes from the running editor"], env)
        self.assertEqual((code, out, err), (0, "", ""))
        out, err = support.communicate(commit)
        self.assertEqual(commit.returncode, 0, support.text(err))
        self.assertEqual(git("log", "-1", "--format=%B"), "Notes from the running editor\n\n")


def _read_display(fd, log):
    """The display number Xvfb writes to -displayfd once it accepts connections."""
    data = b""
    deadline = time.monotonic() + support.WAIT
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            log.seek(0)
            raise AssertionError("Xvfb gave no display number: %r"
                                 % log.read().decode(errors="replace"))
        data += chunk
    return ":" + data.decode().strip()


@unittest.skipIf(tkinter is None, "tkinter cannot be imported")
@unittest.skipIf(shutil.which("Xvfb") is None, "Xvfb is not on PATH (Debian package xvfb)")
class TestExampleTkOpenFiles(unittest.TestCase):

    def start_xvfb(self):
        """A virtual display of our own; returns its DISPLAY value."""
        log = tempfile.TemporaryFile()
        self.addCleanup(log.close)
        read_fd, write_fd = os.pipe()
        try:
            xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp"],
                                    pass_fds=[write_fd], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log)
        finally:
            os.close(write_fd)
        self.addCleanup(self._end, xvfb)
        try:
            return _read_display(read_fd, log)
        finally:
            os.close(read_fd)

    def temporary_directory(self):
        where = tempfile.TemporaryDirectory()
        self.addCleanup(where.cleanup)
        return os.path.realpath(where.name)

    @staticmethod
    def _end(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(support.WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def test_later_launches_open_files_relative_to_their_cwd(self):
        env = example_env(DISPLAY=self.start_xvfb(), TK_DEMO_PORT=str(support.free_port()))
        a, b = self.temporary_directory(), self.temporary_directory()

        def shown():
            line = app.expect(lambda line: line.startswith("window shows: "))
            return ast.literal_eval(line[len("window shows: "):])

        app = example_process(self, TK_OPEN_FILES, ["notes.txt"], env, cwd=a)
        self.assertEqual(shown(), [os.path.join(a, "notes.txt")])

        _, code, out, err = run_launch(TK_OPEN_FILES, ["todo.txt"], env, cwd=b)
        self.assertEqual((code, out, err), (0, "", ""))
        both = [os.path.join(a, "notes.txt"), os.path.join(b, "todo.txt")]
        self.assertEqual(shown(), both)

        # deliver_empty: a launch without arguments raises the window, which lists the same files.
        _, code, out, err = run_launch(TK_OPEN_FILES, [], env, cwd=b)
        self.assertEqual((code, out, err), (0, "", ""))
        self.assertEqual(shown(), both)

        # More files than the list has rows: all are listed, and it scrolls to the newest.
        more = ["file-%02d.txt" % number for number in range(20)]
        _, code, out, err = run_launch(TK_OPEN_FILES, more, env, cwd=b)
        self.assertEqual((code, out, err), (0, "", ""))
        everything = both + [os.path.join(b, name) for name in more]
        self.assertEqual(shown(), everything)
        line = app.expect(lambda line: line.startswith("in view: "))
        in_view = ast.literal_eval(line[len("in view: "):])
        self.assertTrue(0 < len(in_view) < len(everything), in_view)
        self.assertEqual(in_view, everything[-len(in_view):])


# Every system's ephemeral range (the local ports of outgoing connections): a fixed port inside
# one is now and then busy ("port-busy").
EPHEMERAL_RANGES = {"Linux": (32768, 60999), "Windows and macOS": (49152, 65535)}


def default_ports(path):
    """The default ports an example's source names: the second argument of each
    ``os.environ.get("..._PORT", "N")``."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    ports = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and len(node.args) == 2):
            try:
                name, default = (ast.literal_eval(arg) for arg in node.args)
            except ValueError:  # not literals
                continue
            if str(name).endswith("_PORT"):
                ports.append(int(default))
    return ports


class TestExamplePorts(unittest.TestCase):
    def test_no_default_port_lies_in_an_ephemeral_range(self):
        scripts = sorted(name for name in os.listdir(EXAMPLES) if name.endswith(".py"))
        self.assertTrue(scripts)
        for name in scripts:
            ports = default_ports(os.path.join(EXAMPLES, name))
            self.assertTrue(ports, "%s names no default port" % name)
            for port in ports:
                self.assertTrue(1024 <= port, "%s: port %d is privileged" % (name, port))
                for system, (low, high) in EPHEMERAL_RANGES.items():
                    self.assertFalse(low <= port <= high, "%s: port %d lies in the ephemeral "
                                     "range of %s (%d-%d)" % (name, port, system, low, high))


if __name__ == "__main__":
    unittest.main()
