"""The printed table, one row per figure, and a short summary read off it."""

import sys

from ._stats import median, number, ratio, spread, times

LABEL_WIDTH = 48
CELL_WIDTH = 30


class Report:
    """Rows are printed as soon as a figure adds them; ``metrics`` keeps the raw numbers
    (by key, then by implementation label) for the summary."""

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
    """Ratio of the medians of ``metrics[key][num]`` and ``metrics[key][den]``, as text."""
    try:
        return "%.2fx" % ratio(median(metrics[key][num]), median(metrics[key][den]))
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _floor_ratio(metrics, key, floor_key, label):
    try:
        return "%.2fx" % ratio(median(metrics[key][label]), median(metrics[floor_key][label]))
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _counts(metrics, keys, label):
    try:
        return ", ".join("%d/%d" % metrics[key][label] for key in keys)
    except KeyError:
        return None


def summary(report):
    """(what, measured) lines for the figures this run measured: this checkout against 2.0.0
    (when measured) and against the floors."""
    m = report.metrics
    ours = report.labels[0]
    base = report.labels[1] if len(report.labels) > 1 else None
    lines = []
    if base is not None:
        lines += [
            ("import cost, this checkout / 2.0.0", _median_ratio(m, "import", ours, base)),
            ("turned-away launch, this checkout / 2.0.0", _median_ratio(m, "launch", ours, base)),
            ("app-id launch, this checkout / 2.0.0's numbered one",
             _median_ratio(m, "launch_id", ours, base)),
            ("constructor call, this checkout / 2.0.0",
             _median_ratio(m, "construct_us", ours, base)),
            ("release() call, this checkout / 2.0.0", _median_ratio(m, "release_us", ours, base)),
        ]
        for k in (1, 8, 64):
            lines.append(("K=%d senders: messages/s, this checkout / 2.0.0" % k,
                          _median_ratio(m, "rate%d" % k, ours, base)))
    lines += [
        ("delivery p50, this checkout / a bare stdlib server", _floor_ratio(m, "p50", "floor_p50",
                                                                           ours)),
        ("delivery p99, this checkout / a bare stdlib server", _floor_ratio(m, "p99", "floor_p99",
                                                                           ours)),
        ("delivery p50, this checkout / the thread-hop floor", _floor_ratio(m, "p50", "hop_p50",
                                                                            ours)),
        ("delivery p99, this checkout / the thread-hop floor", _floor_ratio(m, "p99", "hop_p99",
                                                                            ours)),
        ("K=8, K=64: connects stalled over 0.5 s", _counts(m, ("stalled8", "stalled64"), ours)),
        ("K=8, K=64: messages lost", _counts(m, ("lost8", "lost64"), ours)),
        ("release() return -> bindable: failures", _counts(m, ("bind_failures",), ours)),
        ("100 and 400 simultaneous launches: delivered",
         _counts(m, ("delivered100", "delivered400"), ours)),
    ]
    if base is not None:
        for n in (100, 400):
            lines.append(("%d simultaneous launches: last delivery, this checkout / 2.0.0" % n,
                          _median_ratio(m, "last%d" % n, ours, base)))
    if "idle_added" in m:
        lines.append(("idle host: RSS it added (MiB), median",
                      "%.2f" % median(m["idle_added"][ours])))
    if "idle_switches" in m:
        lines.append(("idle host: context switches per window, at most",
                      "%d" % max(m["idle_switches"][ours])))
    return ["%-64s %s" % (what, measured) for what, measured in lines if measured is not None]
