"""The few statistics the benchmark needs, and how its numbers are written."""

import math


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with at least *p* % of the values at or
    below it (p99 of 200 values is the second largest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def number(x):
    """Three significant figures or so, without exponents."""
    if x is None or math.isnan(x):
        return "n/a"
    magnitude = abs(x)
    if magnitude >= 100 or x == int(x):
        return "%.0f" % x
    if magnitude >= 10:
        return "%.1f" % x
    if magnitude >= 1:
        return "%.2f" % x
    return "%.3f" % x


def spread(values, scale=1.0):
    """``median [min..max]`` of *values* multiplied by *scale*."""
    if not values:
        return "n/a"
    scaled = [v * scale for v in values]
    if len(scaled) == 1:
        return number(scaled[0])
    return "%s [%s..%s]" % (number(median(scaled)), number(min(scaled)), number(max(scaled)))


def times(r):
    return "n/a" if r is None else "%.2fx" % r
