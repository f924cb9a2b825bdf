"""Quick start: run this once (it becomes the host), then run it again with arguments.

    terminal 1:  python examples/quickstart.py
    terminal 2:  python examples/quickstart.py hello "two words"

The second launch hands its arguments to the first and exits; the first prints them.
Stop the host with Ctrl+C.
"""

import os
import threading

from Socket_Singleton import Socket_Singleton

# A fixed port of your own is the application's identity; the environment variable only lets
# the tests run this file on a port that is free at the time.
PORT = int(os.environ.get("QUICKSTART_PORT", "24621"))


def on_launch(args):
    # Runs on the library's dispatch thread, once per later launch.
    print("a later launch passed %r (from %s, pid %s)" % (tuple(args), args.cwd, args.pid),
          flush=True)


def main():
    with Socket_Singleton(port=PORT) as app:
        app.trace(on_launch)
        print("host on port %d; run me again with arguments (Ctrl+C stops)" % app.port,
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
