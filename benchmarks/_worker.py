"""What the benchmark runs in its subprocesses, one mode per command line:

* ``host PORT``: a Socket_Singleton host whose observer reports each call on stdout;
* ``host-id PORT``: the same, named by ``$BENCH_APP_ID`` (its port derived; PORT unused);
* ``bare PORT``: a floor, a bare standard-library server (a thread accepts, reads each
  connection to EOF and calls the same reporting function);
* ``hop PORT``: the thread-hop floor, the same server handing each message to a second thread
  through a ``queue.Queue``, which calls the reporting function (as a host that keeps its
  observers off the accepting thread must);
* ``cycles PORT N``: N rounds of constructor -> port listening, release() -> port bindable;
* ``send PORT K M PREFIX``: K threads, each sending M raw plain-form messages.

Servers print ``READY pid port rss_kib file`` once the observer is registered, then one line
``D t_ns nargs nbytes key`` per observer call (``t_ns`` from ``time.monotonic_ns()``, the
clock every process shares; ``key`` is the first argument, or the SHA-256 of all of them
when they are large). They release and exit at the end of stdin.

The benchmark sets $BENCH_EXPECT to the file the library must be imported from; a worker
that imports any other copy stops with status 97.

This script imports nothing from the benchmarks package: it runs under another interpreter.
"""

import os
import socket
import sys
import threading
import time

BIG = 4096  # bytes of arguments from which a report carries a hash instead of the argument


def library():
    import Socket_Singleton

    expect = os.environ["BENCH_EXPECT"]
    if not Socket_Singleton.__file__.startswith(expect):
        sys.stderr.write("benchmark worker: imported %s, expected %s\n"
                         % (Socket_Singleton.__file__, expect))
        sys.exit(97)
    return Socket_Singleton


def report(args):
    t = time.monotonic_ns()
    fields = [os.fsencode(arg) for arg in args]
    nbytes = sum(len(field) for field in fields)
    key = args[0] if args else "-"
    if nbytes >= BIG:
        import hashlib

        key = hashlib.sha256(b"\0".join(fields)).hexdigest()
    os.write(1, ("D %d %d %d %s\n" % (t, len(args), nbytes, key)).encode())


def rss_kib():
    """This process's resident set size in KiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def ready(port, where, base_kib=0):
    """*base_kib*: the RSS before the server was made (the library imported, threading too)."""
    os.write(1, ("READY %d %d %d %s\n" % (os.getpid(), port, base_kib, where)).encode())


def host(port, app_id=None):
    lib = library()
    base = rss_kib()
    named = {"app_id": app_id} if app_id else {"port": port}
    try:
        app = lib.Socket_Singleton(**named, client=False, strict=False)
    except lib.MultipleSingletonsError:
        sys.exit(3)  # someone else holds the port: the benchmark picks another
    app.trace(report)  # before READY: 2.0.0 drops what arrives before trace()
    ready(app.port, lib.__file__, base)
    sys.stdin.read()
    app.release()


def bare(port, hop=False):
    base = rss_kib()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))
    except OSError:
        sys.exit(3)
    server.listen(socket.SOMAXCONN)

    def serve():
        while True:
            conn, _ = server.accept()
            with conn:
                chunks = []
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
            body = b"".join(chunks)
            if body.endswith(b"\0"):
                body = body[:-1]
            args = tuple(os.fsdecode(field) for field in body.split(b"\0")) if body else ()
            if hop:
                handoff.put(args)
            else:
                report(args)

    def deliver():
        while True:
            report(handoff.get())

    if hop:
        import queue

        handoff = queue.Queue()
        threading.Thread(target=deliver, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    ready(port, "-", base)
    sys.stdin.read()
    server.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connect_once(port):
    with socket.socket() as sock:
        try:
            sock.connect(("127.0.0.1", port))
            return True
        except ConnectionRefusedError:
            return False


def bindable(port):
    with socket.socket() as sock:  # a plain socket: no SO_REUSEADDR
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cycles(port, n):
    import json

    lib = library()
    construct_us, listen_us, release_us = [], [], []
    refused_at_return = never_listened = bind_failures = still_held = moved = 0
    longest_wait = 0.0
    done = 0
    while done < n:
        called = time.perf_counter()
        try:
            app = lib.Socket_Singleton(port=port, client=False, strict=False)
        except lib.MultipleSingletonsError:
            port, moved = free_port(), moved + 1  # another process took the port meanwhile
            continue
        returned = time.perf_counter()
        construct_us.append((returned - called) * 1e6)
        if not connect_once(port):
            refused_at_return += 1
            while not connect_once(port):
                if time.perf_counter() - returned > 5:
                    never_listened += 1
                    break
        listen_us.append((time.perf_counter() - returned) * 1e6)
        start = time.perf_counter()
        app.release()
        released = time.perf_counter()
        release_us.append((released - start) * 1e6)
        if not bindable(port):
            bind_failures += 1
            # Wait, so that every cycle starts from a free port.
            while not bindable(port):
                if time.perf_counter() - released > 10:
                    still_held += 1  # the next cycle finds the port taken and moves on
                    break
                time.sleep(0.001)
            longest_wait = max(longest_wait, time.perf_counter() - released)
        done += 1
    print(json.dumps({
        "construct_us": construct_us, "listen_us": listen_us, "release_us": release_us,
        "refused_at_return": refused_at_return,
        "never_listened": never_listened, "bind_failures": bind_failures,
        "still_held": still_held, "moved": moved,
        "longest_wait_s": longest_wait,
    }))


STALL = 0.5  # seconds: a connect slower than this has stalled


def send(port, threads, per_thread, prefix):
    import json

    barrier = threading.Barrier(threads + 1)
    lock = threading.Lock()
    totals = {"sent": 0, "stalled": 0, "failed": 0, "slowest_connect_s": 0.0}

    def sender(j):
        sent = stalled = failed = 0
        slowest = 0.0
        barrier.wait()
        for m in range(per_thread):
            message = ("%s-%d-%d" % (prefix, j, m)).encode() + b"\0"
            with socket.socket() as sock:
                start = time.perf_counter()
                try:
                    sock.connect(("127.0.0.1", port))
                except OSError:
                    failed += 1
                    continue
                took = time.perf_counter() - start
                slowest = max(slowest, took)
                stalled += took > STALL
                try:
                    sock.sendall(message)
                except OSError:
                    failed += 1
                    continue
            sent += 1
        with lock:
            totals["sent"] += sent
            totals["stalled"] += stalled
            totals["failed"] += failed
            totals["slowest_connect_s"] = max(totals["slowest_connect_s"], slowest)

    workers = [threading.Thread(target=sender, args=(j,)) for j in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    totals["start_ns"] = time.monotonic_ns()
    for worker in workers:
        worker.join()
    totals["end_ns"] = time.monotonic_ns()
    print(json.dumps(totals))


def main(argv):
    mode, port = argv[0], int(argv[1])
    if mode == "host":
        host(port)
    elif mode == "host-id":  # this checkout only: a host named by BENCH_APP_ID, port derived
        host(port, os.environ["BENCH_APP_ID"])
    elif mode == "bare":
        bare(port)
    elif mode == "hop":
        bare(port, hop=True)
    elif mode == "cycles":
        cycles(port, int(argv[2]))
    elif mode == "send":
        send(port, int(argv[2]), int(argv[3]), argv[4])
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main(sys.argv[1:])
