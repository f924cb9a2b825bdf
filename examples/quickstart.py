"""Quick start: run this once (it becomes the host), then run it again with arguments.

    terminal 1:  python examples/quickstart.py
    terminal 2:  python examples/quickstart.py hello "two words"

The second launch hands its arguments to the first and exits; the first prints them.
Stop the host with Ctrl+C.
"""

import os
import threading

from Socket_Singleton import Socket_Singleton

# The application's name, from which the library derives its port: use a reverse-DNS id of
# your own. The environment variable only lets the tests run this file under an id that no
# other process uses.
APP_ID = os.environ.get("QUICKSTART_APP_ID", "org.example.demo.QuickStart")


def on_launch(args):
    # Runs on the library's dispatch thread, once per later launch.
    print("a later launch passed %r (from %s, pid %s)" % (tuple(args), args.cwd, args.pid),
          flush=True)


def main():
    with Socket_Singleton(app_id=APP_ID) as app:
        app.trace(on_launch)
        print("host on port %d; run me again with arguments (Ctrl+C stops)" % app.port,
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
