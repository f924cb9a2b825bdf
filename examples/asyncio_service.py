"""An asyncio service that receives later launches as jobs.

    python examples/asyncio_service.py              # the service
    python examples/asyncio_service.py job-1 job-2  # hands two jobs to it, exits
    python examples/asyncio_service.py stop         # asks it to stop

Observers run on the library's dispatch thread; ``loop.call_soon_threadsafe`` is the one safe
way to hand something to an event loop from another thread.
"""

from __future__ import annotations

import asyncio
import os

from Socket_Singleton import Socket_Singleton

PORT = int(os.environ.get("ASYNCIO_DEMO_PORT", "50125"))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    launches: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
    with Socket_Singleton(port=PORT) as app:
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


if __name__ == "__main__":
    asyncio.run(serve())
