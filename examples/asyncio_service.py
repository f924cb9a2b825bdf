"""An asyncio service that receives later launches as jobs.

    python examples/asyncio_service.py              # the service (Ctrl+C or `stop` ends it)
    python examples/asyncio_service.py job-1 job-2  # hands two jobs to it, exits
    python examples/asyncio_service.py stop         # asks the running service to stop

Observers run on the library's dispatch thread; ``loop.call_soon_threadsafe`` is the one safe
way to hand something to an event loop from another thread.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from Socket_Singleton import Socket_Singleton

APP_ID = os.environ.get("ASYNCIO_DEMO_APP_ID", "org.example.demo.AsyncioService")


async def serve() -> None:
    loop = asyncio.get_running_loop()
    launches: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
    with Socket_Singleton(app_id=APP_ID) as app:
        app.trace(lambda launch: loop.call_soon_threadsafe(launches.put_nowait, launch))
        print("service ready on port %d" % app.port, flush=True)
        while True:
            launch = await launches.get()
            if launch == ("stop",):
                print("stopping", flush=True)
                return
            for job in launch:
                await asyncio.sleep(0)  # the real work would go here
                print("done", job, flush=True)


def stop() -> int:
    # "stop" must never start a service of its own, so it does not construct Socket_Singleton
    # (which would become the host when nothing runs): the command line's `send` hands the
    # word over, or says that no service answers (exit status 3).
    return subprocess.call([sys.executable, "-m", "Socket_Singleton", "send",
                            "--app-id", APP_ID, "--", "stop"])


def main() -> int:
    if sys.argv[1:] == ["stop"]:
        return stop()
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:  # Ctrl+C: the port is already released, say so and end quietly
        print("interrupted, stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
