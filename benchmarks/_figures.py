"""The figures. Each takes the report, the implementations and the mode's settings, measures
the implementations alternately, and adds its rows to the report.

Deliveries are timed where they happen: the host's observer stamps each call with
``time.monotonic_ns()``, the clock every process on the machine shares, and reports it on
stdout (2.0.0's client waits for no acknowledgement, so only the host knows).
"""

import hashlib
import json
import os
import subprocess
import time

from ._impl import (
    APP,
    WAIT,
    WORKER,
    BenchmarkError,
    Servers,
    alternate,
    free_port,
    neutral_dir,
    send_raw,
)
from ._stats import percentile

MS, US = 1e3, 1e6


def _check_launch(impl, code, err):
    if code == 97:
        raise BenchmarkError("%s: the launched app imported the wrong copy:\n%s"
                             % (impl.label, err))
    if code == 98:
        raise BenchmarkError("%s: the launched app became the host: no host was running"
                             % impl.label)
    return code == 0


def import_cost(report, impls, cfg):
    cost, cpu, floor = ({impl.label: [] for impl in impls} for _ in range(3))
    for _, impl in alternate(impls, cfg["import_reps"]):
        bare, _, _, bare_cpu = impl.run(["-c", "pass"])
        full, code, err, full_cpu = impl.run(["-c", "import Socket_Singleton"])
        if code:
            raise BenchmarkError("%s: import failed:\n%s" % (impl.label, err))
        cost[impl.label].append(full - bare)
        cpu[impl.label].append(full_cpu - bare_cpu)
        floor[impl.label].append(bare)
    report.samples("import", "import cost (ms)", cost, MS)
    report.samples("import_cpu", "  the same in CPU time (ms)", cpu, MS)
    report.samples("python_floor", "  floor: python -c pass (ms)", floor, MS)
    code = ("import sys; before = set(sys.modules); import Socket_Singleton; "
            "print(len(set(sys.modules) - before))")
    report.value("modules", "  modules it pulls in",
                 {impl.label: int(impl.output(code)) for impl in impls})


def turned_away(report, impls, cfg):
    _turned_away(report, impls, cfg, "launch", "turned-away launch, whole process (ms)")


def turned_away_named(report, impls, cfg):
    """This checkout's launch named by an app id (the quick start's), beside 2.0.0's numbered
    launch: what an application pays for moving to an id. The user's key lives in a directory
    of the benchmark's own."""
    keys = os.path.join(neutral_dir(), "keys")
    os.makedirs(keys, 0o700, exist_ok=True)
    env = {"BENCH_APP_ID": "org.example.bench.N%s" % os.urandom(4).hex(),
           "XDG_CONFIG_HOME": keys, "LOCALAPPDATA": keys}
    _turned_away(report, impls, cfg, "launch_id",
                 "app-id launch (2.0.0: numbered) (ms)", {
                     impl.label: env if impl.label == "this checkout" else {}
                     for impl in impls})


def _turned_away(report, impls, cfg, name, title, named=None):
    """*named*: per implementation's label, the variables that name its host and launches by
    app id."""
    named = named or {impl.label: {} for impl in impls}
    wall, cpu, floor, above = ({impl.label: [] for impl in impls} for _ in range(4))
    failed = {impl.label: 0 for impl in impls}
    keys = {impl.label: [] for impl in impls}
    with Servers(impls, named=named) as hosts:
        _launches(impls, cfg, hosts, named, wall, cpu, floor, above, failed, keys)
        delivered = {label: len(host.wait_keys(keys[label])) for label, host in hosts.items()}
    n = cfg["launch_reps"]
    report.samples(name, title, wall, MS)
    if name == "launch":  # the named launch's floor is the same: one set of these rows is enough
        report.samples("launch_cpu", "  its CPU time (ms)", cpu, MS)
        report.samples("launch_floor", '  floor: python -c "import socket, threading"', floor,
                       MS)
        report.samples("launch_above", "  launch minus floor (ms)", above, MS)
    report.counts(name + "_delivered", "  delivered",
                  {who: (d, n) for who, d in delivered.items()})
    report.counts(name + "_failed", "  exit status not 0",
                  {who: (f, n) for who, f in failed.items()})


def _launches(impls, cfg, hosts, named, wall, cpu, floor, above, failed, keys):
    def env(impl):
        return dict(named[impl.label], BENCH_PORT=str(hosts[impl.label].port))

    for impl in impls:
        impl.run([APP, "warm-up"], env(impl))
    for rep, impl in alternate(impls, cfg["launch_reps"]):
        key = "away-%d" % rep
        took, code, err, took_cpu = impl.run([APP, key], env(impl))
        failed[impl.label] += not _check_launch(impl, code, err)
        keys[impl.label].append(key)
        bare, _, _, _ = impl.run(["-c", "import socket, threading"])
        wall[impl.label].append(took)
        cpu[impl.label].append(took_cpu)
        floor[impl.label].append(bare)
        above[impl.label].append(took - bare)


def cycles(report, impls, cfg):
    merged = {impl.label: {} for impl in impls}
    for _, impl in alternate(impls, cfg["cycle_chunks"]):
        proc = impl.popen([WORKER, "cycles", str(free_port()), str(cfg["cycle_n"])],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=60 * 60)
        if proc.returncode:
            raise BenchmarkError("%s: cycles worker failed (status %d):\n%s"
                                 % (impl.label, proc.returncode, err.decode(errors="replace")))
        for name, value in json.loads(out).items():
            into = merged[impl.label]
            if isinstance(value, list):
                into.setdefault(name, []).extend(value)
            elif name == "longest_wait_s":
                into[name] = max(into.get(name, 0.0), value)
            else:
                into[name] = into.get(name, 0) + value
    n = cfg["cycle_chunks"] * cfg["cycle_n"]

    def pick(name):
        return {label: figures[name] for label, figures in merged.items()}

    report.samples("construct_us", "constructor call (us)", pick("construct_us"))
    report.samples("listen_us", "constructor return -> port listening (us)", pick("listen_us"))
    report.counts("refused", "  connect refused right after return",
                  {who: (c, n) for who, c in pick("refused_at_return").items()})
    report.samples("release_us", "release() call (us)", pick("release_us"))
    report.counts("bind_failures", "release() return -> bindable: failures",
                  {who: (c, n) for who, c in pick("bind_failures").items()})
    report.value("longest_wait", "  longest wait until bindable (ms)",
                 {who: s * MS for who, s in pick("longest_wait_s").items()})
    if any(pick("still_held").values()):
        report.counts("still_held", "  port still held 10 s after release()",
                      {who: (c, n) for who, c in pick("still_held").items()})
    if any(pick("never_listened").values()):
        report.counts("never_listened", "  never listening within 5 s",
                      {who: (c, n) for who, c in pick("never_listened").items()})


def latency(report, impls, cfg):
    lost = {impl.label: 0 for impl in impls}
    sent = cfg["lat_blocks"] * cfg["lat_n"]
    p50, p99, floor_p50, floor_p99, hop_p50, hop_p99 = (
        {impl.label: [] for impl in impls} for _ in range(6))
    with Servers(impls) as hosts, Servers(impls, "bare") as floors, \
            Servers(impls, "hop") as hops:
        servers = [(label, host, p50, p99) for label, host in hosts.items()]
        servers += [(label, bare, floor_p50, floor_p99) for label, bare in floors.items()]
        servers += [(label, hop, hop_p50, hop_p99) for label, hop in hops.items()]
        for block in range(cfg["lat_blocks"]):
            samples = {id(server): [] for _, server, _, _ in servers}
            for i in range(cfg["lat_n"]):
                shift = i % len(servers)
                for label, server, _, _ in servers[shift:] + servers[:shift]:
                    key = "lat-%d-%d" % (block, i)
                    start = time.monotonic_ns()
                    send_raw(server.port, key.encode() + b"\0")
                    delivery = server.wait_key(key, 10.0)
                    if delivery is None:
                        lost[label] += server.kind == "host"
                    else:
                        samples[id(server)].append((delivery.t_ns - start) / 1e9)
            for label, server, p50s, p99s in servers:
                p50s[label].append(percentile(samples[id(server)], 50))
                p99s[label].append(percentile(samples[id(server)], 99))
    report.samples("p50", "delivery latency, connect -> observer, p50 (us)", p50, US)
    report.samples("p99", "  p99 (us)", p99, US)
    report.samples("floor_p50", "  floor: bare stdlib server, p50 (us)", floor_p50, US)
    report.samples("floor_p99", "  floor: bare stdlib server, p99 (us)", floor_p99, US)
    report.samples("hop_p50", "  floor: the same + a thread hop, p50 (us)", hop_p50, US)
    report.samples("hop_p99", "  floor: the same + a thread hop, p99 (us)", hop_p99, US)
    report.counts("lat_lost", "  lost", {who: (c, sent) for who, c in lost.items()})


def concurrency(report, impls, cfg):
    with Servers(impls) as hosts:
        for k in (1, 8, 64):
            per_thread = max(1, cfg["conc_total"] // k)
            rate = {impl.label: [] for impl in impls}
            tally = {impl.label: {"stalled": 0, "lost": 0, "failed": 0, "connects": 0, "sent": 0}
                     for impl in impls}
            for rep, impl in alternate(impls, cfg["conc_reps"]):
                host = hosts[impl.label]
                prefix = "k%dr%d" % (k, rep)
                proc = impl.popen([WORKER, "send", str(host.port), str(k), str(per_thread), prefix],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
                out, err = proc.communicate(timeout=10 * 60)
                if proc.returncode:
                    raise BenchmarkError("%s: sender failed:\n%s"
                                         % (impl.label, err.decode(errors="replace")))
                totals = json.loads(out)
                keys = ["%s-%d-%d" % (prefix, j, m) for j in range(k) for m in range(per_thread)]
                found = host.wait_keys(keys)
                if found:
                    last = max(d.t_ns for d in found)
                    rate[impl.label].append(len(found) / max(last - totals["start_ns"], 1) * 1e9)
                t = tally[impl.label]
                t["stalled"] += totals["stalled"]
                t["failed"] += totals["failed"]
                t["lost"] += totals["sent"] - len(found)
                t["connects"] += len(keys)
                t["sent"] += totals["sent"]
            report.samples("rate%d" % k, "K=%d raw senders: delivered messages/s" % k, rate)
            report.counts("stalled%d" % k, "  connects stalled over 0.5 s",
                          {who: (t["stalled"], t["connects"]) for who, t in tally.items()})
            report.counts("lost%d" % k, "  lost (sent, never delivered)",
                          {who: (t["lost"], t["sent"]) for who, t in tally.items()})
            if any(t["failed"] for t in tally.values()):
                report.counts("failed%d" % k, "  connect or send failed",
                              {who: (t["failed"], t["connects"]) for who, t in tally.items()})


def simultaneous(report, impls, cfg):
    with Servers(impls) as hosts:
        for n in (25, 100, 400):
            last = {impl.label: [] for impl in impls}
            delivered = {impl.label: 0 for impl in impls}
            failed = {impl.label: 0 for impl in impls}
            for rep, impl in alternate(impls, cfg["sim_reps"]):
                host = hosts[impl.label]
                env = {"BENCH_PORT": str(host.port)}
                keys = ["n%dr%d-%d" % (n, rep, i) for i in range(n)]
                start = time.monotonic_ns()
                procs = []
                try:
                    for key in keys:
                        procs.append(impl.popen([APP, key], env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                    for proc in procs:
                        _, err = proc.communicate(timeout=2 * WAIT)
                        failed[impl.label] += not _check_launch(
                            impl, proc.returncode, err.decode(errors="replace"))
                finally:
                    for proc in procs:  # only after a failure is any of them still running
                        if proc.poll() is None:
                            proc.kill()
                        proc.communicate()
                found = host.wait_keys(keys)
                delivered[impl.label] += len(found)
                if found:
                    last[impl.label].append((max(d.t_ns for d in found) - start) / 1e9)
            total = n * cfg["sim_reps"]
            report.counts("delivered%d" % n, "N=%d simultaneous launches: delivered" % n,
                          {who: (d, total) for who, d in delivered.items()})
            report.samples("last%d" % n, "  start -> last delivery (s)", last)
            report.counts("failed%d" % n, "  exit status not 0",
                          {who: (f, total) for who, f in failed.items()})


def _big_arguments():
    """1024 distinct arguments of 1023 characters: 1 MiB with their NUL separators."""
    filler = "abcdefghijklmnopqrstuvwxyz0123456789" * 29
    return [("%04d:" % i + filler)[:1023] for i in range(1024)]


def big_argv(report, impls, cfg):
    args = _big_arguments()
    fields = [os.fsencode(arg) for arg in args]
    expected = (len(args), sum(map(len, fields)), hashlib.sha256(b"\0".join(fields)).hexdigest())
    took = {impl.label: [] for impl in impls}
    intact = {impl.label: 0 for impl in impls}
    seen = {impl.label: "" for impl in impls}
    with Servers(impls) as hosts:
        for _, impl in alternate(impls, cfg["big_reps"]):
            host = hosts[impl.label]
            before = host.count()
            start = time.monotonic_ns()
            _, code, err, _ = impl.run([APP, *args], {"BENCH_PORT": str(host.port)})
            _check_launch(impl, code, err)
            if not host.wait_count(before + 1, quiet=5.0):
                seen[impl.label] = "nothing delivered"
                continue
            d = host.deliveries[before]
            took[impl.label].append((d.t_ns - start) / 1e9)
            if (d.nargs, d.nbytes, d.key) == expected:
                intact[impl.label] += 1
            else:
                seen[impl.label] = "got %d of %d args, %d of %d bytes" % (
                    d.nargs, expected[0], d.nbytes, expected[1])
    n = cfg["big_reps"]
    report.text("1 MiB argument list: delivered intact",
                {who: ("%d/%d" % (intact[who], n)) + (" (%s)" % seen[who] if seen[who] else "")
                 for who in intact})
    report.samples("big_ms", "  launch start -> observer call (ms)", took, MS)


def _counters(pid):
    """CPU seconds, context switches and threads summed over the threads of *pid*; RSS in MiB."""
    cpu = switches = threads = 0
    task_dir = "/proc/%d/task" % pid
    for tid in os.listdir(task_dir):
        threads += 1
        try:
            with open(os.path.join(task_dir, tid, "schedstat")) as f:
                cpu += int(f.read().split()[0]) / 1e9
        except OSError:
            with open(os.path.join(task_dir, tid, "stat")) as f:
                fields = f.read().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(os.path.join(task_dir, tid, "status")) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.endswith("ctxt_switches"):  # voluntary and nonvoluntary
                    switches += int(value)
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    return cpu, switches, threads, rss


def idle(report, impls, cfg):
    seconds = cfg["idle_seconds"]
    if not os.path.isdir("/proc/self/task"):
        report.text("idle host over %g s" % seconds, {impl.label: "n/a (needs /proc)"
                                                      for impl in impls})
        return
    cpu, switches, threads, rss, added = ({impl.label: [] for impl in impls} for _ in range(5))
    with Servers(impls) as hosts:
        for host in hosts.values():  # a host that has served once, as a real one has
            send_raw(host.port, b"idle-warm-up\0")
            host.wait_key("idle-warm-up")
        time.sleep(0.5)  # let the warm-up's work end before the window opens
        for _ in range(cfg["idle_windows"]):
            before = {label: _counters(host.pid) for label, host in hosts.items()}
            time.sleep(seconds)  # the measurement window itself
            for label, host in hosts.items():
                after = _counters(host.pid)
                cpu[label].append(after[0] - before[label][0])
                switches[label].append(after[1] - before[label][1])
                threads[label].append(after[2])
                rss[label].append(after[3])
                added[label].append(after[3] - host.base_kib / 1024)
    report.samples("idle_cpu", "idle host over %g s: CPU time (ms)" % seconds, cpu, MS)
    report.samples("idle_switches", "  context switches (all threads)", switches)
    report.samples("idle_threads", "  threads", threads)
    report.samples("idle_rss", "  RSS (MiB)", rss)
    report.samples("idle_added", "  RSS the host added to its process (MiB)", added)
