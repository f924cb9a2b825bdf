"""A command-line tool whose later invocations queue work onto the running one.

    python examples/queue_tool.py a b    # no worker yet: this becomes the worker, runs a and b
    python examples/queue_tool.py c      # a worker runs: c is queued on it; says so and exits

The worker exits once it has been idle for IDLE seconds. It releases the port *before* it
looks at its queue a last time, so a launch either reaches this worker's queue (and is run) or
becomes the next worker: no job is lost in between.
"""

from __future__ import annotations

import os
import queue
import sys

from Socket_Singleton import MultipleSingletonsError, Socket_Singleton

APP_ID = os.environ.get("QUEUE_TOOL_APP_ID", "org.example.demo.QueueTool")
IDLE = float(os.environ.get("QUEUE_TOOL_IDLE", "5"))


def run(job: str) -> None:
    print("ran", job, flush=True)  # the real work would go here


def main() -> int:
    try:
        app = Socket_Singleton(app_id=APP_ID, strict=False)
    except MultipleSingletonsError as err:
        if err.delivered:
            print("queued on the running worker (pid %s)" % err.host_pid)
            return 0
        print("not accepted: %s" % err.detail, file=sys.stderr)
        return 1

    jobs: queue.Queue[str] = queue.Queue()
    for job in sys.argv[1:]:
        jobs.put(job)
    app.trace(lambda launch: [jobs.put(job) for job in launch])
    print("worker started (pid %d)" % os.getpid(), flush=True)
    while True:
        try:
            run(jobs.get(timeout=IDLE))
        except queue.Empty:
            break
    app.release()  # from now on, a new invocation becomes the next worker
    while not jobs.empty():  # launches delivered before the release
        run(jobs.get())
    for launch in app.arguments:  # acknowledged as queued but not yet delivered
        for job in launch:
            run(job)
    print("worker idle, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
