"""A long-running tool whose later invocations ask it how it is doing, print its answer and exit
with the status it chose: the running instance answers each launch with ``launch.reply()``.

    python examples/status_tool.py          # the tool; it runs until stopped
    python examples/status_tool.py status   # prints, say, "running for 12 s (pid 4242);
                                            # launches so far: 1", and exits with status 0
    python examples/status_tool.py stop     # stops it (status 0)
    python examples/status_tool.py frob     # an unknown command: the running tool says so, status 3

A command when no tool runs says so and fails (status 1): it never starts a tool of its own.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from Socket_Singleton import Launch, Socket_Singleton

APP_ID = os.environ.get("STATUS_TOOL_APP_ID", "org.example.demo.StatusTool")
UNKNOWN = 3  # the exit status of an unknown command


def main() -> int:
    # wait=True: a later invocation waits for the reply (however busy the tool is), prints its
    # text and exits with its status, all inside this constructor.
    app = Socket_Singleton(app_id=APP_ID, wait=True, deliver_empty=True)
    if sys.argv[1:]:  # a command, but no tool runs to answer it
        app.release()
        sys.stderr.write("status_tool.py: not running\n")
        return 1
    started = time.monotonic()
    stop = threading.Event()

    def answer(launch: Launch) -> None:  # on the library's dispatch thread
        command = " ".join(launch)
        if command == "status":
            launch.reply("running for %d s (pid %d); launches so far: %d\n"
                         % (time.monotonic() - started, os.getpid(), app.clients))
        elif command == "stop":
            launch.reply("stopping (pid %d)\n" % os.getpid())
            stop.set()
        else:
            launch.reply("unknown command %r; try: status, stop\n" % command, UNKNOWN)

    with app:
        app.trace(answer)
        print("tool running on port %d" % app.port, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
