"""``python -m benchmarks``: choose the implementations, run the figures, print the table."""

import argparse
import datetime
import os
import platform
import sys
import time

from . import _figures
from ._impl import BenchmarkError, baseline, checkout, make_baseline, resolve
from ._report import Report, summary

# name -> (function, what it measures)
FIGURES = {
    "import": (_figures.import_cost, "import cost and modules pulled in"),
    "launch": (_figures.turned_away, "turned-away launch while a host runs"),
    "launch-id": (_figures.turned_away_named,
                  "the same, named by an app id here (numbered in 2.0.0)"),
    "cycles": (_figures.cycles, "constructor -> listening, release() -> bindable"),
    "latency": (_figures.latency, "delivery latency next to a bare stdlib server"),
    "concurrency": (_figures.concurrency, "K = 1, 8, 64 concurrent raw senders"),
    "simultaneous": (_figures.simultaneous, "N = 25, 100, 400 simultaneous launches"),
    "big": (_figures.big_argv, "a 1 MiB argument list"),
    "idle": (_figures.idle, "an idle host"),
}

MODES = {
    "quick": {
        "import_reps": 12, "launch_reps": 12, "cycle_chunks": 2, "cycle_n": 250,
        "lat_blocks": 3, "lat_n": 100, "conc_reps": 1, "conc_total": 512, "sim_reps": 1,
        "big_reps": 2, "idle_windows": 1, "idle_seconds": 5.0,
    },
    "full": {
        "import_reps": 40, "launch_reps": 40, "cycle_chunks": 10, "cycle_n": 1000,
        "lat_blocks": 10, "lat_n": 300, "conc_reps": 3, "conc_total": 1024, "sim_reps": 5,
        "big_reps": 5, "idle_windows": 3, "idle_seconds": 5.0,
    },
}


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure this checkout of Socket_Singleton, and the 2.0.0 release side "
                    "by side when given one, alternating the two so that machine drift "
                    "weighs on both alike. Prints median [min..max] and the ratio of medians "
                    "(this checkout / 2.0.0).",
        epilog="figures: " + "; ".join("%s (%s)" % (name, what)
                                       for name, (_, what) in FIGURES.items()))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--against", metavar="PYTHON",
                       help="an interpreter where socket-singleton==2.0.0 is installed")
    group.add_argument("--make-baseline", metavar="DIR",
                       help="create (or reuse) a virtual environment in DIR with "
                            "socket-singleton==2.0.0 installed by pip, and measure against it")
    parser.add_argument("--python", metavar="PYTHON",
                        help="interpreter for this checkout (default: the 2.0.0 one, so that "
                             "only the library differs; without 2.0.0, this interpreter)")
    parser.add_argument("--only", metavar="FIGURE[,FIGURE]",
                        help="run only these figures: " + ", ".join(FIGURES))
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(FIGURES)
        if unknown:
            parser.error("unknown figure(s): %s" % ", ".join(sorted(unknown)))
    return args


def setup(args):
    against = None
    if args.make_baseline:
        against = make_baseline(args.make_baseline, resolve(args.python or sys.executable))
    elif args.against:
        against = args.against
    if against is not None:
        against = resolve(against)
    ours = resolve(args.python) if args.python else (against or resolve(sys.executable))
    impls = [checkout(ours)]
    if against is not None:
        impls.append(baseline(against))
    return impls


def header(impls, mode):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "Socket_Singleton benchmarks, %s mode, %s" % (mode, now),
        "command: python -m benchmarks %s" % " ".join(sys.argv[1:]),
        "machine: %s %s %s, %d CPUs (nproc), load average at start %s" % (
            platform.system(), platform.release(), platform.machine(),
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            " ".join("%.2f" % x for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"),
    ]
    for impl in impls:
        lines.append("%s: Socket_Singleton %s from %s, Python %s (%s)" % (
            impl.label, impl.version, impl.file, impl.python_version, impl.python))
    return "\n".join(lines)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    mode = "quick" if args.quick else "full"
    cfg = MODES[mode]
    try:
        impls = setup(args)
        print(header(impls, mode), flush=True)
        print()
        report = Report([impl.label for impl in impls])
        report.header()
        chosen = args.only.split(",") if args.only else list(FIGURES)
        started = time.monotonic()
        for name in chosen:
            function, what = FIGURES[name]
            print("... %s" % what, file=sys.stderr, flush=True)
            began = time.monotonic()
            function(report, impls, cfg)
            print("    %.1f s" % (time.monotonic() - began), file=sys.stderr, flush=True)
        print()
        print("Summary (this checkout):")
        for line in summary(report):
            print("  " + line)
        print("\ntotal time %.0f s; load average at end %s" % (
            time.monotonic() - started,
            " ".join("%.2f" % x for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"))
    except BenchmarkError as err:
        print("benchmark error: %s" % err, file=sys.stderr)
        return 2
    return 0
