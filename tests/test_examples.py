"""The recipes in examples/, each run for real as processes, under an application id of the
test's own (its name and a random suffix, given through the example's ``..._APP_ID`` variable)
and with a key directory of the test's own, so that no test meets a real instance, another test,
or the user's key file."""

import ast
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from Socket_Singleton import _identity

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


def example_env(config_home, **extra):
    """The environment of an example's processes: its per-user key directory in *config_home*
    (``XDG_CONFIG_HOME`` on POSIX, ``LOCALAPPDATA`` on Windows), and *extra*."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", XDG_CONFIG_HOME=config_home,
               LOCALAPPDATA=config_home, **extra)
    env["PYTHONPATH"] = support.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ExampleTestCase(unittest.TestCase):
    """Each test runs its example under an application id and a key directory of its own."""

    def setUp(self):
        self.app_id = "org.example.examples.%s.%s" % (self._testMethodName[:80],
                                                       os.urandom(4).hex())
        self.config_home = self.temporary_directory()

    def temporary_directory(self):
        where = tempfile.TemporaryDirectory()
        self.addCleanup(where.cleanup)
        return os.path.realpath(where.name)

    def env(self, variable, **extra):
        """The environment that runs an example as ``self.app_id`` (*variable*: the example's
        ``..._APP_ID``)."""
        return example_env(self.config_home, **{variable: self.app_id}, **extra)

    def host_port(self, line, before):
        """The port in an example's line ``<before> on port P``, checked to be one of the
        application's own (derived from the id)."""
        found = re.match(r"%s on port (\d+)" % re.escape(before), line)
        self.assertIsNotNone(found, line)
        port = int(found.group(1))
        self.assertIn(port, _identity.candidates(self.app_id, "user"))
        return port


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


class TestExampleQuickstart(ExampleTestCase):

    def test_second_launch_hands_its_arguments_to_the_host(self):
        folder = self.temporary_directory()
        env = self.env("QUICKSTART_APP_ID")

        host = example_process(self, QUICKSTART, env=env)
        self.host_port(host.next_line(), "host")
        self.assertTrue(os.path.isfile(os.path.join(self.config_home, "socket-singleton",
                                                    "key")))
        pid, code, out, err = run_launch(QUICKSTART, ["hello", "two words"], env, cwd=folder)
        self.assertEqual((code, out, err), (0, "", ""))
        host.expect("a later launch passed ('hello', 'two words') (from %s, pid %d)"
                    % (folder, pid))


class TestExampleAsyncioService(ExampleTestCase):

    def test_jobs_then_stop(self):
        env = self.env("ASYNCIO_DEMO_APP_ID")
        service = example_process(self, ASYNCIO_SERVICE, env=env)
        port = self.host_port(service.next_line(), "service ready")
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
        env = self.env("ASYNCIO_DEMO_APP_ID")
        service = example_process(self, ASYNCIO_SERVICE, env=env)
        port = self.host_port(service.next_line(), "service ready")
        code = service.ctrl_c()
        if code is None:
            self.skipTest("SIGINT cannot reach the example here")
        self.assertEqual((code, service.output),
                         (0, ["service ready on port %d" % port, "interrupted, stopping"]))
        again = example_process(self, ASYNCIO_SERVICE, env=env)  # the port was released
        again.expect("service ready on port %d" % port)

    def test_stop_starts_no_service_when_none_runs(self):
        env = self.env("ASYNCIO_DEMO_APP_ID")
        _, code, out, err = run_launch(ASYNCIO_SERVICE, ["stop"], env)
        self.assertEqual((code, out), (3, ""), err)  # the command line's "nothing listens"
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("socket-singleton: "), err)


class TestExampleQueueTool(ExampleTestCase):

    def test_later_invocations_queue_onto_the_worker(self):
        env = self.env("QUEUE_TOOL_APP_ID", QUEUE_TOOL_IDLE=QUEUE_TOOL_IDLE)
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


class TestExampleStatusTool(ExampleTestCase):

    def test_later_invocations_print_the_running_tools_answer(self):
        env = self.env("STATUS_TOOL_APP_ID")
        free = free_ports(_identity.candidates(self.app_id, "user"))
        self.assertTrue(free)
        _, code, out, err = run_launch(STATUS_TOOL, ["status"], env)  # none runs: none starts
        self.assertEqual((code, out, err), (1, "", "status_tool.py: not running\n"))
        for port in free:  # the tool it did not start holds none of them
            support.assert_port_free(self, port)

        tool = example_process(self, STATUS_TOOL, env=env)
        port = self.host_port(tool.next_line(), "tool running")
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


def free_ports(ports):
    """Those of *ports* that a plain socket can bind right now."""
    free = []
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        free.append(port)
    return free


def git_environment(base, home, **extra):
    """The environment of a git that reads no configuration of the user's or the system's
    (*base*: the example's environment, which this changes)."""
    env = dict(base, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Ann Example",
                      GIT_AUTHOR_EMAIL="ann@example.invalid", GIT_COMMITTER_NAME="Ann Example",
                      GIT_COMMITTER_EMAIL="ann@example.invalid", **extra)
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


def shell_words(*words):
    """*words* as git's shell reads a command (its own sh, also on Windows)."""
    return " ".join(shlex.quote(word.replace(os.sep, "/")) for word in words)


class TestExampleEditor(ExampleTestCase):

    def start_editor(self, env):
        editor = example_process(self, EDITOR, env=env)
        self.host_port(editor.next_line(), "editor ready")
        return editor

    def test_a_run_returns_once_the_editor_closed_its_file(self):
        env = self.env("EDITOR_DEMO_APP_ID")
        folder = self.temporary_directory()
        path = os.path.join(folder, "notes.txt")
        with open(path, "w", encoding="utf-8") as file:
            file.write("draft\n")

        _, code, out, err = run_launch(EDITOR, ["notes.txt"], env, cwd=folder)
        self.assertEqual((code, out), (1, ""))  # no editor runs: none starts
        self.assertTrue(err.startswith("editor.py: no editor is running"), err)

        editor = self.start_editor(env)
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
        repo = self.temporary_directory()
        env = git_environment(self.env("EDITOR_DEMO_APP_ID"), repo,
                              GIT_EDITOR=shell_words(sys.executable, EDITOR))
        editor = self.start_editor(env)

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
class TestExampleTkOpenFiles(ExampleTestCase):

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
        env = self.env("TK_DEMO_APP_ID", DISPLAY=self.start_xvfb())
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


# Examples that give a port rather than an application id, and why. None does: none of them is
# about ports, so each names its application as the README tells users to.
NUMBERED_EXAMPLES = {}


def default_app_ids(tree):
    """(variable, default) of each ``os.environ.get("..._APP_ID", "default")`` in *tree*."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and len(node.args) == 2):
            try:
                name, default = (ast.literal_eval(arg) for arg in node.args)
            except ValueError:  # not literals
                continue
            if str(name).endswith("_APP_ID"):
                found.append((name, default))
    return found


class TestExampleIds(unittest.TestCase):
    def test_every_example_names_its_application(self):
        scripts = sorted(name for name in os.listdir(EXAMPLES) if name.endswith(".py"))
        self.assertTrue(scripts)
        with open(os.path.join(support.ROOT, "README.md"), encoding="utf-8") as readme:
            readme_text = readme.read()
        with open(__file__, encoding="utf-8") as this:
            tests = this.read()
        seen = {}
        for name in scripts:
            with self.subTest(example=name):
                path = os.path.join(EXAMPLES, name)
                with open(path, encoding="utf-8") as source:
                    text = source.read()
                tree = ast.parse(text, path)
                calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                         and isinstance(node.func, ast.Name) and node.func.id == "Socket_Singleton"]
                self.assertTrue(calls, "%s never constructs Socket_Singleton" % name)
                keywords = [{keyword.arg for keyword in call.keywords} for call in calls]
                if name in NUMBERED_EXAMPLES:
                    self.assertTrue(all("port" in given for given in keywords), name)
                    continue
                for call, given in zip(calls, keywords):
                    self.assertEqual(call.args, [], "%s passes arguments by position" % name)
                    self.assertIn("app_id", given, name)
                    self.assertNotIn("port", given, name)
                self.assertNotIn("--port", text, "%s's command line names a port" % name)
                ids = default_app_ids(tree)
                self.assertEqual(len(ids), 1, "%s: one app id, from one variable" % name)
                variable, default = ids[0]
                self.assertEqual(_identity.validate_app_id(default), default)
                self.assertTrue(default.startswith("org.example.demo."), default)
                self.assertNotIn(default, seen.values(), "two examples share an id")
                self.assertNotIn(variable, seen, "two examples share a variable")
                seen[variable] = default
                self.assertIn('"%s"' % variable, tests, "no test runs %s under its own id" % name)
                self.assertIn("`%s`" % variable, readme_text, "the README does not name it")


if __name__ == "__main__":
    unittest.main()
