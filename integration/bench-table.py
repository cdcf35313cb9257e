#!/usr/bin/env python3
"""Prints the stock-vs-patched table of a bench.sh run (integration/containers-storage and
integration/podman): from a TSV of case, build, wall s, user+sys s, max RSS KiB (and optionally
user s, sys s), one row per timed run, in the order run.

Usage: bench-table.py RESULTS.tsv [LABEL [BASELINE,OURS]]    (default: case, stock,patched)

Per case: median (min-max) wall time of each build; the ratio of the medians; the ratio pair by
pair (run i of stock over run i of patched, which ran next to each other), median (min-max),
which is what shows through a noisy machine; CPU and RSS medians. A "floor" case (build "-") is
printed first; any other build (e.g. "stock, classic overlay") gets a row under its case with its
ratio to patched.
"""
import statistics
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
label = sys.argv[2] if len(sys.argv) > 2 else "case"
base, ours = sys.argv[3].split(",") if len(sys.argv) > 3 else ("stock", "patched")
split_cpu = all(len(r) >= 7 for r in rows)
cases, extra = [], []
for r in rows:
    if r[0] not in cases:
        cases.append(r[0])
    if r[1] not in (base, ours, "-") and (r[0], r[1]) not in extra:
        extra.append((r[0], r[1]))


width = max([30] + [len(c) + 2 for c in cases])


def values(case, build, col):
    return [float(r[col]) for r in rows if r[0] == case and r[1] == build]


def spread(v):
    return f"{statistics.median(v):6.2f} ({min(v):.2f}-{max(v):.2f})"


for c in cases:
    if values(c, "-", 2):
        print(f"{c}: {statistics.median(values(c, '-', 2)):.2f} s")
def both(c, col, scale=1.0, fmt="5.2f"):
    a, b = statistics.median(values(c, base, col)) / scale, statistics.median(values(c, ours, col)) / scale
    return f"{a:{fmt}}/{b:<{fmt}}"


cpu_heads = f"{'user s':>11} {'sys s':>11}" if split_cpu else f"{'cpu s':>11}"
print(f"{label:{width}} {base + ' wall s':>18} {ours + ' wall s':>18} {'ratio':>7} {'pairs':>18} {cpu_heads} {'RSS MiB':>12}")
for c in cases:
    s, p = values(c, base, 2), values(c, ours, 2)
    if not s or not p:
        continue
    pairs = [a / b for a, b in zip(s, p)]
    cpu = f"{both(c, 5)} {both(c, 6)}" if split_cpu else both(c, 3)
    rss = both(c, 4, 1024, "5.0f")
    ratio = statistics.median(s) / statistics.median(p)
    pr = f"{statistics.median(pairs):5.2f}x ({min(pairs):.2f}-{max(pairs):.2f})"
    print(f"{c:{width}} {spread(s)} {spread(p)} {ratio:6.2f}x {pr:>18} {cpu} {rss}")
    for case, build in extra:
        if case == c:
            k = values(case, build, 2)
            print(f"{'  ' + build:{width}} {spread(k)} {'':18} {statistics.median(k) / statistics.median(p):6.2f}x  ({build} / {ours})")
