"""An $EDITOR that hands each file to the editor already running, and returns only once the file
was closed there (as ``code --wait`` does): the way ``git commit`` wants its editor.

    terminal 1:  python examples/editor.py            # the editor; keep it running
    terminal 2:  GIT_EDITOR="python examples/editor.py" git commit
                 # git waits; the editor says "opened /path/to/repo/.git/COMMIT_EDITMSG"
    terminal 3:  python examples/editor.py --close .git/COMMIT_EDITMSG --text "Fix the frobnicator"
                 # the editor saves that text and closes the file: git goes on and commits it
    python examples/editor.py --quit                  # ends the editor

Each later run is a launch with ``wait=True``: it waits for the editor's ``launch.reply()``,
prints the reply's text and exits with its status. A real editor would show the file and reply
when the user closes it; here ``--close`` (a launch too) stands in for the user. A run with a file
when no editor runs says so and fails, so that git aborts the commit instead of hanging.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Dict

from Socket_Singleton import Launch, Socket_Singleton

APP_ID = os.environ.get("EDITOR_DEMO_APP_ID", "org.example.demo.Editor")
USAGE = "usage: editor.py [FILE | --close FILE [--text TEXT] | --quit]\n"


class Editor:
    """The running editor's state. Every method runs on the library's dispatch thread, one
    launch at a time, so the open files need no lock."""

    def __init__(self) -> None:
        self.open: Dict[str, Launch] = {}  # path -> the waiting run that opened it
        self.quit = threading.Event()

    def on_launch(self, launch: Launch) -> None:
        args = list(launch)
        if not args:
            launch.reply("the editor is already running (pid %d)\n" % os.getpid(), 1)
        elif args == ["--quit"]:
            for path, waiting in self.open.items():
                waiting.reply("the editor quit before %s was closed\n" % path, 1)
            self.open.clear()
            launch.reply("", 0)
            self.quit.set()
        elif args[0] == "--close" and len(args) in (2, 4) and args[2:3] in ([], ["--text"]):
            self.close(launch, self.path(launch, args[1]), args[3] if len(args) == 4 else None)
        elif len(args) == 1 and not args[0].startswith("--"):
            path = self.path(launch, args[0])
            if path in self.open:
                launch.reply("%s is open already\n" % path, 1)
            else:
                self.open[path] = launch  # replied to when it is closed
                print("opened", path, flush=True)
        else:
            launch.reply(USAGE, 2)

    def close(self, launch: Launch, path: str, text: str | None) -> None:
        waiting = self.open.pop(path, None)
        if waiting is None:
            launch.reply("%s is not open\n" % path, 1)
            return
        if text is not None:  # what the user typed, saved
            with open(path, "w", encoding="utf-8") as file:
                file.write(text + "\n")
        print("closed", path, flush=True)
        waiting.reply("", 0)  # the run that opened it returns now, with status 0
        launch.reply("", 0)

    @staticmethod
    def path(launch: Launch, name: str) -> str:
        # relative to the directory the run was started in, not the editor's
        return os.path.normpath(os.path.join(launch.cwd or "", name))


def main() -> int:
    # wait=True: a later run waits for the editor's reply, prints it and exits with its status
    # (deliver_empty: a second editor.py without arguments is told one runs).
    app = Socket_Singleton(app_id=APP_ID, wait=True, deliver_empty=True)
    if sys.argv[1:]:  # a file for an editor that is not running
        app.release()
        sys.stderr.write("editor.py: no editor is running; start one with: python %s\n"
                         % sys.argv[0])
        return 1
    editor = Editor()
    with app:
        app.trace(editor.on_launch)
        print("editor ready on port %d" % app.port, flush=True)
        try:
            editor.quit.wait()
        except KeyboardInterrupt:  # the runs still waiting are told the editor ended
            pass
    print("editor quit", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
