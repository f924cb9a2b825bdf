"""The README's fenced code blocks, read from README.md at test time and run as written.

Every ```python block runs in a real process (cwd a temporary directory, PYTHONPATH the
checkout), with the README's application id replaced by one of the test's own (its name and a
random suffix), the README's port 24621 by a port found at run time, and nothing else changed.
Every process a test starts has a key directory of the test's own (``XDG_CONFIG_HOME``, and
``LOCALAPPDATA`` on Windows), so the user's key file is never touched. Every command in a
```bash block is checked against the repository; the command-line blocks run verbatim under
bash, ``socket-singleton`` and ``python`` being this interpreter. A block this module does not
recognise fails it, so a new block cannot go untested.
"""

import ast
import inspect
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

from Socket_Singleton import Socket_Singleton, _identity

from . import support

README = os.path.join(support.ROOT, "README.md")
README_APP_ID = "org.example.Editor"  # the id of the README's examples; tests use their own
README_PORT = "24621"  # the port of the README's numbered examples; tests use free ones
# The port the README shows a host of README_APP_ID on: its user-scope port for user id 1000
# (the first user of most Linux systems). Tests put in the port their host really has.
README_APP_PORT = "22999"
EXAMPLE_USER = "uid:1000"
# The blocks that pass a port rather than an id, and why; every other block names the
# application (test_only_the_blocks_about_ports_pass_one holds that).
NUMBERED_BLOCKS = {
    "constructor signature": "it states the signature, whose port=1337 is 2.0.0's default",
    "raw client": "a raw client of the plain form connects to a port it is given",
    "command line (bash)": "its last line shows --port, for an application numbered by its port",
}
VENV = ".venv"  # the virtual environment the README's first commands make in the checkout
FENCE = re.compile(r"^(\s*)```(.*)$")
UNTAGGED = ("", "text")  # diagrams and other text: nothing to run

# Python that loads test names the way `python -m unittest NAME...` does, without running them.
LOAD_TESTS = """\
import sys, unittest

def cases(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from cases(test)
        else:
            yield test

loader = unittest.TestLoader()
found = [test for name in sys.argv[1:] for test in cases(loader.loadTestsFromName(name))]
broken = [test.id() for test in found if type(test).__name__ == "_FailedTest"]
print(len(found), "tests; not loadable:", broken, loader.errors)
sys.exit(1 if broken or loader.errors or not found else 0)
"""


class Block:
    """One fenced block of the README."""

    def __init__(self, language, text, line):
        self.language, self.text, self.line = language, text, line

    def __repr__(self):
        return "the ```%s block at README.md line %d" % (self.language, self.line)


def readme_text():
    with open(README, encoding="utf-8") as readme:
        return readme.read()


def readme_prose():
    """The README with its whitespace collapsed, so sentences match across line breaks."""
    return " ".join(readme_text().split())


def read_blocks():
    """Every fenced block of the README, in order."""
    blocks, language, start, lines, indent = [], None, 0, [], 0
    for number, line in enumerate(readme_text().splitlines(), 1):
        fence = FENCE.match(line)
        if language is None:
            if fence:
                language, start, lines = fence.group(2).strip(), number, []
                indent = len(fence.group(1))
        elif fence and not fence.group(2).strip():
            blocks.append(Block(language, "\n".join(lines) + "\n", start))
            language = None
        else:
            lines.append(line[indent:])
    if language is not None:
        raise AssertionError("README.md line %d: a code fence that is never closed" % start)
    return blocks


# What each block is, by its distinctive content: (languages, test on the text).
KINDS = {
    "try-it (bash)": (("bash",), lambda text: "examples/quickstart.py" in text),
    "install (bash)": (("bash",), lambda text: text.strip().startswith("python3 -m venv")
                       and "pip install -e ." in text and "quickstart" not in text),
    "running the tests (bash)": (("bash",), lambda text: "-m unittest" in text
                                 and "quickstart" not in text),
    "command line (bash)": (("bash",), lambda text: "socket-singleton status" in text),
    "open-with wrapper (bash)": (("bash",), lambda text: "exec python app.py" in text),
    "import": (("python",), lambda text: text.strip().startswith("from Socket_Singleton import")
               and "\n" not in text.strip()),
    "smallest use": (("python",), lambda text: "Socket_Singleton(app_id=" in text
                     and ".trace(" not in text and "strict=False" not in text),
    "quick start app": (("python",), lambda text: ".trace(on_launch)" in text
                        and "def on_launch(args)" in text),
    # Fragments that show how an observer uses a launch: they need an application around them.
    "observer fragment": (("python",), lambda text: text.startswith("def ")
                          and "launch." in text and "Socket_Singleton(" not in text),
    "constructor signature": (("python", *UNTAGGED), lambda text: "*, deliver_empty" in text),
    "strict=False": (("python",), lambda text: "except MultipleSingletonsError" in text),
    "raw client": (("python",), lambda text: "socket.create_connection" in text),
    "plain form (diagram)": (UNTAGGED, lambda text: text.startswith("[secret NUL]")),
    "frame (diagram)": (UNTAGGED, lambda text: text.startswith("type: 1 ASCII byte")),
    "benchmark commands (bash)": (("bash",), lambda text: "python -m benchmarks" in text),
    "benchmark table (text)": (UNTAGGED, lambda text: text.startswith("figure ")),
}


SEVERAL = {"observer fragment"}  # kinds the README may show more than once


def kinds_of(block):
    return [name for name, (languages, test) in KINDS.items()
            if block.language in languages and test(block.text)]


def substitute(block, what, value, places):
    """*block*'s text with every *what* replaced by *value*; *places* are the snippets where the
    README uses *what*, one per occurrence (none: the block must not use it at all)."""
    for place in places:
        if place not in block.text:
            raise AssertionError("%r no longer has %r" % (block, place))
    if block.text.count(what) != len(places):
        raise AssertionError("%r uses %s %d times, expected in %r"
                             % (block, what, block.text.count(what), places))
    return block.text.replace(what, value)


def with_port(block, port, *places):
    """*block*'s text with the README's port replaced by *port*, where *places* say (e.g.
    "port=24621")."""
    return substitute(block, README_PORT, str(port), places)


def with_app_id(block, app_id, *places):
    """*block*'s text with the README's application id replaced by *app_id*, where *places* say
    (e.g. 'app_id="org.example.Editor"')."""
    return substitute(block, README_APP_ID, app_id, places)


def unique_app_id(test):
    """An application id no other test or process uses: the test's name, a random suffix."""
    return "org.example.readme.%s.%s" % (test._testMethodName[:80], os.urandom(4).hex())


def key_env(config_home):
    """The variables that put a process's per-user key directory in *config_home*."""
    return {"XDG_CONFIG_HOME": config_home, "LOCALAPPDATA": config_home}


def block_env(config_home, path=None):
    """The environment of a README block's process: the checkout on its path, its key directory
    in *config_home*, and *path* (if given) first on PATH."""
    env = dict(os.environ, PYTHONPATH=support.ROOT, PYTHONIOENCODING="utf-8",
               **key_env(config_home))
    if path is not None:
        env["PATH"] = path + os.pathsep + env.get("PATH", "")
    return env


class Result:
    """How one process ended."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return "<exit %s, stdout %r, stderr %r>" % (self.code, self.out, self.err)


def run(argv, cwd, env):
    """Run *argv* to completion (bounded by support.WAIT)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = support.communicate(proc)
    return Result(proc.returncode, support.text(out), support.text(err))


def shell_commands(text):
    """The simple commands of a bash block, as word lists: comments dropped, except a comment
    that is itself a command to type ("#   python examples/quickstart.py hello ...")."""
    commands = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            stripped = stripped.lstrip("#").strip()
            if not re.match(r"(\.|python3?|pip|socket-singleton) ", stripped):
                continue
        lexer = shlex.shlex(stripped, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&"):
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(token)
    return commands


def parameters(function):
    """What a signature says, without annotations: (name, kind, default) of each parameter."""
    return [(parameter.name, parameter.kind, parameter.default)
            for parameter in inspect.signature(function).parameters.values()]


def console_scripts():
    """[project.scripts] of pyproject.toml: {name: "module:function"}."""
    with open(os.path.join(support.ROOT, "pyproject.toml"), encoding="utf-8") as project:
        text = project.read()
    section = re.search(r"(?ms)^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text)
    return dict(re.findall(r'(?m)^([\w.-]+)\s*=\s*"([^"]+)"', section.group(1) if section else ""))


class TestReadmeRunsAsWritten(unittest.TestCase):

    def setUp(self):
        self.app_id = unique_app_id(self)
        self.config_home = self.folder()  # the key directory of every process the test starts
        self.key_env = key_env(self.config_home)

    def env(self, path=None):
        return block_env(self.config_home, path)

    def start_host(self, **kwargs):
        """A host (test_app.py) with these constructor arguments and the test's key directory;
        returns (app, port)."""
        return support.start_host(self, {"kwargs": kwargs}, env=self.key_env)

    def block(self, kind):
        found = [block for block in read_blocks() if kind in kinds_of(block)]
        if len(found) != 1:
            self.fail("README.md should have one %s block, found %r" % (kind, found))
        return found[0]

    def folder(self):
        where = tempfile.TemporaryDirectory()
        self.addCleanup(where.cleanup)
        return os.path.realpath(where.name)

    def write(self, folder, name, text, mode=None):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        if mode is not None:
            os.chmod(path, mode)
        return path

    def run_python(self, text, args=(), name="snippet.py"):
        folder = self.folder()
        self.write(folder, name, text)
        return run([sys.executable, name, *args], folder, self.env())

    def shims(self):
        """A directory for PATH in which `python` and `socket-singleton` are this interpreter
        (the latter as `python -m Socket_Singleton`), so bash lines run exactly as written."""
        if shutil.which("bash") is None:
            self.skipTest("bash is not on PATH")
        folder = self.folder()
        python = shlex.quote(sys.executable)
        for name, command in (("python", python), ("socket-singleton",
                                                   python + " -m Socket_Singleton")):
            self.write(folder, name, '#!/bin/sh\nexec %s "$@"\n' % command,
                       stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
        return folder

    def ready_line(self, app_block):
        """The line the quick start app prints once it is the host."""
        ready = re.findall(r'print\("([^"]*)", flush=True\)', app_block.text)
        self.assertEqual(len(ready), 1, "the quick start app should say once that it runs")
        return ready[0]

    def documented_exit(self, command, *words):
        """The exit status the README's table gives *command* ("status" or "send") for the
        case described with *words*."""
        rows = re.findall(r"(?m)^\| (\d+) \| (.*?) \| (.*?) \|$", readme_text())
        self.assertTrue(rows, "README.md has no exit status table")
        found = []
        for code, status_text, send_text in rows:
            text = send_text if command == "send" else status_text
            if text.startswith("same"):
                text = status_text + " " + text
            if all(word in text for word in words):
                found.append(int(code))
        self.assertEqual(len(found), 1, "the exit status table should have one row for %s %r"
                         % (command, words))
        return found[0]

    # -- the catalogue ------------------------------------------------------------------------

    def test_every_block_is_one_this_test_checks(self):
        blocks = read_blocks()
        problems = []
        for block in blocks:
            kinds = kinds_of(block)
            if block.language not in ("python", "bash", *UNTAGGED):
                problems.append("%r: this test cannot check a ```%s block"
                                % (block, block.language))
            elif len(kinds) != 1:
                problems.append("%r is %s, not one known block; teach tests/test_readme.py to "
                                "run it:\n%s" % (block, kinds or "unknown", block.text))
        for kind in KINDS:
            count = sum(kind in kinds_of(block) for block in blocks)
            if count != 1 and not (kind in SEVERAL and count):
                problems.append("README.md should have one %s block, found %d" % (kind, count))
        self.assertEqual(problems, [], "\n".join(problems))

    # -- ```python blocks ---------------------------------------------------------------------

    def test_the_readme_port_lies_outside_every_ephemeral_range(self):
        from .test_examples import EPHEMERAL_RANGES

        with open(README, encoding="utf-8") as readme:
            self.assertIn("port=%s" % README_PORT, readme.read())
        for system, (low, high) in EPHEMERAL_RANGES.items():
            self.assertFalse(low <= int(README_PORT) <= high, system)

    def test_the_readme_shows_a_port_the_id_really_has(self):
        self.assertEqual(_identity.validate_app_id(README_APP_ID), README_APP_ID)
        self.assertEqual(str(_identity.port_for(README_APP_ID, "user", EXAMPLE_USER)),
                         README_APP_PORT)
        prose = readme_prose()
        self.assertIn("listens on %s (user scope) on 127.0.0.1:%s (pid" % (README_APP_ID,
                                                                          README_APP_PORT),
                      prose)
        self.assertIn("on port %s." % README_APP_PORT, self.block("strict=False").text)

    def test_only_the_blocks_about_ports_pass_one(self):
        # The quick start and every example name the application; only NUMBERED_BLOCKS give a
        # port, and each of them still does (else it should leave the list).
        numbered = set()
        for block in read_blocks():
            kinds = kinds_of(block)
            if block.language == "python":
                calls = [node for node in ast.walk(ast.parse(block.text))
                         if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                         and node.func.id == "Socket_Singleton"]
                keywords = [keyword.arg for call in calls for keyword in call.keywords]
                for call in calls:
                    self.assertFalse(call.args, "%r passes arguments by position" % block)
                gives_a_port = "port" in keywords or README_PORT in block.text
                if calls and not gives_a_port:
                    self.assertIn("app_id", keywords, block)
            elif block.language == "bash":
                gives_a_port = "--port" in block.text or README_PORT in block.text
            else:
                gives_a_port = "port=" in block.text
            if gives_a_port:
                numbered.update(kinds)
                self.assertTrue(set(kinds) & set(NUMBERED_BLOCKS),
                                "%r gives a port; name the application instead:\n%s"
                                % (block, block.text))
        self.assertEqual(numbered & set(NUMBERED_BLOCKS), set(NUMBERED_BLOCKS))
        for kind in ("smallest use", "quick start app", "strict=False",
                     "open-with wrapper (bash)"):
            self.assertIn(README_APP_ID, self.block(kind).text, kind)
        # The command line shows --app-id first: every line before the numbered one names it.
        lines = [line for line in self.block("command line (bash)").text.splitlines()
                 if line.strip()]
        self.assertIn("--port", lines[-1])
        for line in lines[:-1]:
            self.assertIn("--app-id %s" % README_APP_ID, line)
            self.assertNotIn("--port", line)

    def test_import_block(self):
        result = self.run_python(self.block("import").text)
        self.assertEqual((result.code, result.out, result.err), (0, "", ""), result)

    def test_smallest_use_block(self):
        block = self.block("smallest use")
        text = with_app_id(block, self.app_id, 'Socket_Singleton(app_id="org.example.Editor")')
        # Alone, it is the host and ends with its script; its key is in the test's directory.
        alone = self.run_python(text)
        self.assertEqual((alone.code, alone.out, alone.err), (0, "", ""), alone)
        self.assertTrue(os.path.isfile(os.path.join(self.config_home, "socket-singleton",
                                                    "key")))
        # A second copy exits at once: a launch without arguments, handed to the running one.
        app, port = self.start_host(app_id=self.app_id, deliver_empty=True)
        self.assertIn(port, _identity.candidates(self.app_id, "user"))
        second = self.run_python(text)
        self.assertEqual((second.code, second.out, second.err), (0, "", ""), second)
        self.assertEqual(support.decode_args(app.wait_for("launch")), [])

    def test_quick_start_app_block(self):
        block = self.block("quick start app")
        prose = readme_prose()
        self.assertIn("Save this as `app.py`", prose)
        told = re.search(r"Run `python app\.py` in one terminal and `python app\.py ([^`]*)` in "
                         r"another: the second exits with status (\d+) and the first prints "
                         r"`([^`]*)`", prose)
        self.assertIsNotNone(told, "README.md no longer says how to run the quick start app")
        args, status, printed = shlex.split(told.group(1)), int(told.group(2)), told.group(3)
        self.assertIn("/where/you/ran/it", printed)

        # Two terminals, each in a folder of its own where the block was saved as app.py.
        text = with_app_id(block, self.app_id, 'Socket_Singleton(app_id="org.example.Editor")')
        first, second = self.folder(), self.folder()
        for folder in (first, second):
            self.write(folder, "app.py", text)
        host = support.LineProcess(self, [sys.executable, "app.py"], first, self.env())
        self.assertEqual(host.next_line(), self.ready_line(block))

        launch = run([sys.executable, "app.py", *args], second, self.env())
        self.assertEqual((launch.code, launch.out, launch.err), (status, "", ""), launch)
        self.assertEqual(host.next_line(), printed.replace("/where/you/ran/it", second))
        code = host.ctrl_c()  # "(Ctrl+C stops)"
        if code is not None:
            self.assertEqual((code, host.output[2:]), (0, []), host.output)

    def test_constructor_signature_block(self):
        block = self.block("constructor signature")
        with self.subTest("it states the real signature"):
            head, sep, tail = block.text.strip().partition("(")
            self.assertEqual((head, sep), ("Socket_Singleton", "("))
            namespace = {}
            exec(compile("def stated(self, " + tail + ":\n    pass\n", README, "exec"),
                 namespace)
            self.assertEqual(parameters(namespace["stated"]), parameters(Socket_Singleton.__init__))
        if block.language == "python":
            with self.subTest("it runs as written"):
                result = self.run_python(block.text)
                self.assertEqual(
                    result.code, 0, "%r is tagged python but does not run as written: it is a "
                    "signature, not a program (tag it ```text, or make it one):\n%s"
                    % (block, result.err))

    def test_strict_false_block(self):
        block = self.block("strict=False")
        text = with_app_id(block, self.app_id, 'app_id="org.example.Editor"')
        # What it prints against a host, as its comments say.
        reason = re.search(r'print\(err\.reason, err\.delivered\)\s+# e\.g\. "([^"]*)"', text)
        self.assertIsNotNone(reason, "the block no longer says what err.reason prints")
        lines = text.splitlines()
        self.assertIn("    print(err)", lines)
        # The comment lines after print(err) are its output: wrapped lines join with a space,
        # a bare "#" stands for an empty line.
        printed, wrapped = [], []
        for line in lines[lines.index("    print(err)") + 1:]:
            line = line.strip()
            if not line.startswith("#"):
                break
            line = line.lstrip("#").strip()
            if line:
                wrapped.append(line)
                continue
            if wrapped:
                printed.append(" ".join(wrapped))
                wrapped = []
            printed.append("")
        if wrapped:
            printed.append(" ".join(wrapped))
        self.assertTrue(printed, "the block no longer shows the message")
        shown = "on port %s." % README_APP_PORT
        self.assertEqual(sum(line.count(shown) for line in printed), 1, printed)

        alone = self.run_python(text)
        self.assertEqual((alone.code, alone.out, alone.err), (0, "we are the host\n", ""), alone)
        _, port = self.start_host(app_id=self.app_id)
        printed = [line.replace(shown, "on port %d." % port) for line in printed]
        turned_away = self.run_python(text, ["notes.txt"])  # a launch that has something to hand
        self.assertEqual((turned_away.code, turned_away.out.splitlines(), turned_away.err),
                         (0, [reason.group(1), *printed], ""), turned_away)

    def test_observer_fragments_use_what_a_launch_has(self):
        from Socket_Singleton import Launch

        launch = Launch(("x",))
        fragments = [block for block in read_blocks() if "observer fragment" in kinds_of(block)]
        self.assertGreaterEqual(len(fragments), 3)  # a reply, raising a Tk and a Qt window
        for block in fragments:
            tree = ast.parse(block.text)  # it is Python
            used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name) and node.value.id == "launch"}
            self.assertTrue(used, block)
            for name in used:
                self.assertTrue(hasattr(launch, name), "%r uses launch.%s, which a Launch "
                                "does not have" % (block, name))
            for call in ast.walk(tree):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "reply"):
                    inspect.signature(launch.reply).bind(*call.args, **{
                        keyword.arg: None for keyword in call.keywords})

    def test_raw_client_block(self):
        block = self.block("raw client")
        sent = re.search(r'sock\.sendall\((b"[^"]*")\)', block.text)
        self.assertIsNotNone(sent, "the raw client no longer sends a bytes literal")
        expected = ast.literal_eval(sent.group(1)).split(b"\0")
        self.assertEqual(expected.pop(), b"", "the raw client's message should end with NUL")
        app, port = support.start_host(self, support.config(support.free_port()))
        result = self.run_python(with_port(block, port, '("127.0.0.1", 24621)'))
        self.assertEqual((result.code, result.out, result.err), (0, "", ""), result)
        event = app.wait_for("launch")
        self.assertEqual((support.decode_args(event), event["cwd"], event["pid"]),
                         (expected, None, None))

    # -- ```bash blocks -----------------------------------------------------------------------

    def test_command_line_block(self):
        block = self.block("command line (bash)")
        lines = [line for line in block.text.splitlines() if line.strip()]
        named = [line for line in lines if "--app-id" in line]
        status = [line for line in named if " status " in line]
        send = [line for line in named if " send " in line and "--secret-env" not in line]
        secret_send = [line for line in named if "--secret-env" in line]
        numbered = [line for line in lines if "--port" in line]
        self.assertEqual((len(status), len(send), len(secret_send), len(numbered), len(lines)),
                         (1, 1, 1, 1, 4), lines)
        self.assertIn(" send ", numbered[0])
        assignment = re.match(r"(\w+)=(\S+) socket-singleton send .*--secret-env (\w+) ",
                              secret_send[0])
        self.assertIsNotNone(assignment, secret_send[0])
        self.assertEqual(assignment.group(1), assignment.group(3), secret_send[0])
        shims, here = self.shims(), self.folder()

        def bash(line, app_id=None, port=None):
            """Run *line* with the README's id and port put in place where it names them; a
            line given only one of them must not name the other."""
            text = with_app_id(Block("bash", line, block.line), app_id or "",
                               *(["--app-id " + README_APP_ID] if app_id else []))
            text = with_port(Block("bash", text, block.line), port or 0,
                             *(["--port 24621"] if port else []))
            return run(["bash", "-c", text], here, self.env(shims))

        def arguments(line):
            words = shlex.split(line, comments=True)
            return [arg.encode() for arg in words[words.index("--") + 1:]]

        app, port = self.start_host(app_id=self.app_id)
        result = bash(status[0], app_id=self.app_id)
        self.assertEqual(result.code, self.documented_exit("status", "host answered"), result)
        self.assertEqual(result.out, "a Socket_Singleton host listens on %s (user scope) on "
                         "127.0.0.1:%d (pid %d)\n" % (self.app_id, port, app.host_pid))
        result = bash(send[0], app_id=self.app_id)
        self.assertEqual((result.code, result.err), (self.documented_exit("send", "took"), ""),
                         result)
        event = app.wait_for("launch")
        self.assertEqual((support.decode_args(event), event["cwd"]), (arguments(send[0]), here))
        # This host has no secret: in scope user it is passed over, as the README says.
        result = bash(secret_send[0], app_id=self.app_id)
        self.assertEqual(result.code, self.documented_exit("send", "no host of the application"),
                         result)
        self.assertIn("no host of %s, user scope answers on any of its 8 candidate ports"
                      % self.app_id, result.err)

        secret_id = unique_app_id(self)
        secret_app, _ = self.start_host(app_id=secret_id, secret=assignment.group(2))
        result = bash(secret_send[0], app_id=secret_id)
        self.assertEqual((result.code, result.err), (self.documented_exit("send", "took"), ""),
                         result)
        event = secret_app.wait_for("launch")
        self.assertEqual(support.decode_args(event), arguments(secret_send[0]))

        numbered_app, numbered_port = support.start_host(
            self, support.config(support.free_port()))
        result = bash(numbered[0], port=numbered_port)
        self.assertEqual((result.code, result.err), (self.documented_exit("send", "took"), ""),
                         result)
        event = numbered_app.wait_for("launch")
        self.assertEqual(support.decode_args(event), arguments(numbered[0]))

        nobody, nothing = unique_app_id(self), support.free_port()
        for line, command in ((status[0], "status"), (send[0], "send"), (secret_send[0], "send"),
                              (numbered[0], "send")):
            with self.subTest(line=line):
                if "--port" in line:
                    result = bash(line, port=nothing)
                else:
                    result = bash(line, app_id=nobody)
                self.assertEqual(result.code, self.documented_exit(command, "nothing listens"),
                                 result)

    def wrapper(self, folder, app_id):
        """The README's open-with wrapper and quick start app, saved in *folder* for *app_id*."""
        app_block = self.block("quick start app")
        self.write(folder, "app.py", with_app_id(
            app_block, app_id, 'Socket_Singleton(app_id="org.example.Editor")'))
        self.write(folder, "open-with.sh", with_app_id(
            self.block("open-with wrapper (bash)"), app_id, "--app-id org.example.Editor"))
        return self.ready_line(app_block)

    def wrapper_starts_then_hands_over(self):
        """Run the open-with wrapper twice: the first run starts the application, the second
        hands its file to it. Returns the second run's Result."""
        shims, first, second = self.shims(), self.folder(), self.folder()
        ready = self.wrapper(first, self.app_id)

        # Nothing runs: the wrapper starts the application, which becomes the host.
        host = support.LineProcess(self, ["bash", "open-with.sh", "notes.txt"], first,
                                   self.env(shims))
        self.assertTrue(host.next_line().startswith("socket-singleton: "), host.output)
        self.assertEqual(host.next_line(), ready)
        # It runs: the wrapper hands the arguments over.
        result = run(["bash", os.path.join(first, "open-with.sh"), "todo.txt"], second,
                     self.env(shims))
        self.assertEqual((result.code, result.err), (0, ""), result)
        self.assertEqual(host.next_line(),
                         "a later launch passed %r from %s" % (("todo.txt",), second))
        code = host.ctrl_c()
        if code is not None:
            self.assertEqual(code, 0, host.output)
        return result

    def test_open_with_wrapper_block(self):
        self.wrapper_starts_then_hands_over()

    def test_open_with_wrapper_passes_over_a_foreign_program_on_the_first_port(self):
        ports = _identity.candidates(self.app_id, "user")
        foreign = support.FakeServer(self, support.FOREIGN_PROGRAMS["garbage"], port=ports[0])
        result = self.wrapper_starts_then_hands_over()
        self.assertIn("127.0.0.1:%d" % ports[1], result.out)  # the application's next port
        foreign.assert_nothing_of_the_users(self, ["notes.txt", "todo.txt"])

    def test_open_with_wrapper_fails_when_the_application_refuses(self):
        shims, here = self.shims(), self.folder()
        self.wrapper(here, self.app_id)
        support.start_host(self, {"kwargs": {"app_id": self.app_id},
                                  "tuning": {"max_message_size": 256}}, env=self.key_env)
        result = run(["bash", "open-with.sh", "x" * 1024], here, self.env(shims))
        # send's status for a refusal, and the application was not started.
        self.assertEqual((result.code, result.out),
                         (self.documented_exit("send", "too large"), ""), result)
        self.assertEqual(len(result.err.splitlines()), 1, result)
        self.assertIn("accepts at most 256", result.err)

    def test_bash_commands_refer_to_what_exists(self):
        commands = [(block, words) for block in read_blocks() if block.language == "bash"
                    for words in shell_commands(block.text)]
        self.assertTrue(commands, "README.md has no bash commands")
        for block, words in commands:
            with self.subTest(block=block, command=" ".join(words)):
                while words and re.match(r"[A-Za-z_]\w*=", words[0]):
                    words = words[1:]  # NAME=value before the command, or alone
                while words[:1] in (["exec"], ["if"], ["then"]):
                    words = words[1:]
                name = words[0] if words else ""
                if name in ("", "[", "fi", "exit"):
                    continue  # shell syntax: an assignment, a test, the end of an if, exit
                if name == "pip":
                    self.check_pip(words)
                elif name in ("python", "python3"):
                    self.check_python(words)
                elif name == ".":
                    self.check_activate(words)
                elif name == "socket-singleton":
                    self.check_console_script(words)
                else:
                    self.fail("this test does not know the command %r" % name)

    def check_pip(self, words):
        # "From a checkout of this repository": "." must be the repository root.
        self.assertEqual(words[1:2], ["install"])
        self.assertEqual([word for word in words[2:] if not word.startswith("-")], ["."])
        self.assertTrue(os.path.isfile(os.path.join(support.ROOT, "pyproject.toml")))

    def check_python(self, words):
        options, rest = [], words[1:]
        while rest and rest[0] == "-W":
            options += rest[:2]
            rest = rest[2:]
        if rest[:2] == ["-m", "venv"]:
            self.assertEqual(len(rest), 3, "python -m venv DIRECTORY")
            self.assertEqual(rest[2], VENV)
        elif rest[:2] == ["-m", "unittest"]:
            names = [word for word in rest[2:] if not word.startswith("-")]
            self.assertTrue(names, "the README runs named tests")
            result = run([sys.executable, *options, "-c", LOAD_TESTS, *names], support.ROOT,
                         dict(os.environ))
            self.assertEqual((result.code, result.err), (0, ""), result)
        elif rest[:2] == ["-m", "benchmarks"]:
            # Not run here (minutes long): every option the README gives must be one it has.
            result = run([sys.executable, "-m", "benchmarks", "--help"], support.ROOT,
                         dict(os.environ))
            self.assertEqual(result.code, 0, result)
            for word in rest[2:]:
                if word.startswith("--"):
                    self.assertIn(word, result.out)
        elif rest and not rest[0].startswith("-"):
            if options:
                result = run([sys.executable, *options, "-c", ""], support.ROOT, self.env())
                self.assertEqual((result.code, result.err), (0, ""), result)
            if rest[0] == "app.py":  # the quick start, saved as app.py: run in its own tests
                self.assertIn("Save this as `app.py`", readme_prose())
            else:
                self.assertTrue(os.path.isfile(os.path.join(support.ROOT, rest[0])),
                                "%s does not exist" % rest[0])
        else:
            self.fail("this test does not know how to check python %s" % " ".join(rest))

    def check_activate(self, words):
        # ". DIR/bin/activate": DIR is the virtual environment the README creates.
        self.assertEqual(words, [".", VENV + "/bin/activate"])
        made = [words for block in read_blocks() if block.language == "bash"
                for words in shell_commands(block.text) if words[1:3] == ["-m", "venv"]]
        self.assertTrue(made, "README.md activates a virtual environment it never creates")

    def check_console_script(self, words):
        # Run for real by test_command_line_block; here: it is the installed command, and it
        # is the program `python -m Socket_Singleton` runs.
        target = console_scripts().get("socket-singleton")
        self.assertEqual(target, "Socket_Singleton._cli:main", "pyproject.toml [project.scripts]")
        self.assertIn(words[1:2], (["status"], ["send"]))
        self.assertTrue(os.path.isfile(os.path.join(support.ROOT, "Socket_Singleton",
                                                    "__main__.py")))


if __name__ == "__main__":
    unittest.main()
