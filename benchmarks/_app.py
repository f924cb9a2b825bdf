"""The launched application: one Socket_Singleton on $BENCH_PORT (or named $BENCH_APP_ID) and
nothing else.

Run as ``python _app.py ARG...`` while a benchmark host holds the port, it is the
turned-away launch whose whole-process time the benchmark measures. It imports only what
a real app would, so that the library's cost is not hidden under the benchmark's own.
"""

import os
import sys

from Socket_Singleton import Socket_Singleton

if not sys.modules["Socket_Singleton"].__file__.startswith(os.environ["BENCH_EXPECT"]):
    sys.stderr.write("imported %s, expected %s\n"
                     % (sys.modules["Socket_Singleton"].__file__, os.environ["BENCH_EXPECT"]))
    sys.exit(97)
if os.environ.get("BENCH_APP_ID"):
    Socket_Singleton(app_id=os.environ["BENCH_APP_ID"])
else:
    Socket_Singleton(port=int(os.environ["BENCH_PORT"]))
sys.exit(98)  # we became the host: the benchmark's host was not there
