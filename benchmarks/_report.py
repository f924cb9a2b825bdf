"""The printed table, one row per figure, and the issue's targets read off it."""

import sys

from ._stats import median, number, ratio, spread, times

LABEL_WIDTH = 48
CELL_WIDTH = 30


class Report:
    """Rows are printed as soon as a figure adds them; ``metrics`` keeps the raw numbers
    (by key, then by implementation label) for the targets."""

    def __init__(self, labels, out=sys.stdout):
        self.labels = labels  # this checkout first, then 2.0.0 when measured
        self.out = out
        self.metrics = {}

    def header(self):
        cells = "".join(label.ljust(CELL_WIDTH) for label in self.labels)
        ratio_title = "ratio" if len(self.labels) > 1 else ""
        self._line("figure".ljust(LABEL_WIDTH) + cells + ratio_title)
        self._line("-" * (LABEL_WIDTH + CELL_WIDTH * len(self.labels) + len(ratio_title)))

    def section(self, title):
        self._line(title)

    def samples(self, key, label, data, scale=1.0):
        """*data*: implementation label -> list of samples; cells are median [min..max]."""
        self.metrics[key] = data
        medians = [median(data[who]) for who in self.labels]
        self._row(label, [spread(data[who], scale) for who in self.labels], self._ratio(medians))

    def counts(self, key, label, data):
        """*data*: implementation label -> (count, out of)."""
        self.metrics[key] = data
        self._row(label, ["%d/%d" % data[who] for who in self.labels], "")

    def value(self, key, label, data):
        """*data*: implementation label -> one number."""
        self.metrics[key] = data
        values = [data[who] for who in self.labels]
        self._row(label, [number(v) for v in values], self._ratio(values))

    def text(self, label, data):
        self._row(label, [data[who] for who in self.labels], "")

    def _ratio(self, values):
        return times(ratio(values[0], values[1])) if len(values) > 1 else ""

    def _row(self, label, cells, ratio_cell):
        self._line(label.ljust(LABEL_WIDTH) + "".join(c.ljust(CELL_WIDTH) for c in cells)
                   + ratio_cell)

    def _line(self, text):
        self.out.write(text.rstrip() + "\n")
        self.out.flush()


def _median_ratio(metrics, key, num, den):
    """Ratio of the medians of ``metrics[key][num]`` and ``metrics[key][den]``."""
    try:
        return ratio(median(metrics[key][num]), median(metrics[key][den]))
    except KeyError:
        return None


def _floor_ratio(metrics, key, floor_key, label):
    try:
        return ratio(median(metrics[key][label]), median(metrics[floor_key][label]))
    except KeyError:
        return None


def _at_most(r, limit):
    if r is None:
        return None, "n/a"
    return r <= limit, "%.3fx" % r


def _at_least(r, limit):
    if r is None:
        return None, "n/a"
    return r >= limit, "%.3fx" % r


def _none_of(metrics, keys, label):
    try:
        found = [metrics[key][label] for key in keys]
    except KeyError:
        return None, "n/a"
    return all(n == 0 for n, _ in found), ", ".join("%d/%d" % pair for pair in found)


def targets(report):
    """(target, verdict, measured) for each target of the issue that this run measured."""
    m = report.metrics
    ours = report.labels[0]
    base = report.labels[1] if len(report.labels) > 1 else None
    checks = []
    if base is not None:
        checks += [
            ("import cost <= 1.10x 2.0.0", _at_most(_median_ratio(m, "import", ours, base), 1.10)),
            ("  the same in CPU time (hardly moved by other load)",
             _at_most(_median_ratio(m, "import_cpu", ours, base), 1.10)),
            ("turned-away launch <= 1.05x 2.0.0",
             _at_most(_median_ratio(m, "launch", ours, base), 1.05)),
            ("  the same in CPU time (hardly moved by other load)",
             _at_most(_median_ratio(m, "launch_cpu", ours, base), 1.05)),
        ]
        for k in (8, 64):
            checks.append(("K=%d: >= 10x 2.0.0's messages/s" % k,
                           _at_least(_median_ratio(m, "rate%d" % k, ours, base), 10.0)))
    checks += [
        ("delivery p50 <= 1.5x the bare server",
         _at_most(_floor_ratio(m, "p50", "floor_p50", ours), 1.5)),
        ("delivery p99 <= 3x the bare server",
         _at_most(_floor_ratio(m, "p99", "floor_p99", ours), 3.0)),
        ("K=8 and K=64: no connect stalled over 0.5 s",
         _none_of(m, ("stalled8", "stalled64"), ours)),
        ("K=8 and K=64: no message lost", _none_of(m, ("lost8", "lost64"), ours)),
        ("release() return -> bindable: 0 failures", _none_of(m, ("bind_failures",), ours)),
    ]
    if "delivered100" in m:
        got, total = m["delivered100"][ours]
        checks.append(("100 simultaneous launches: all delivered",
                       (got == total, "%d/%d" % (got, total))))
    if base is not None:
        checks.append(("100 simultaneous launches: last delivery no later than 2.0.0's",
                       _at_most(_median_ratio(m, "last100", ours, base), 1.0)))
    if "idle_switches" in m:
        # A periodic wake-up, even at 1 Hz, would show several switches per window.
        worst = max(m["idle_switches"][ours])
        checks.append(("idle host: no periodic wake-ups",
                       (worst <= 1, "at most %d context switches per window" % worst)))
    lines = []
    for name, (ok, measured) in checks:
        if measured == "n/a":
            continue  # not measured in this run
        verdict = "met" if ok else "MISSED"
        lines.append("%-64s %-7s %s" % (name, verdict, measured))
    return lines
