#!/usr/bin/env python3
"""Where a multi-threaded run's time goes, thread by thread, from a `perf record -g` file.

    scripts/perf-threads.py timeline DATA [BUCKET_MS]
        samples per thread in time buckets (default 25 ms): which threads are busy when, where
        one core waits for another (at `perf record -F 4000`, a full core is 4 per ms)
    scripts/perf-threads.py window DATA FROM_MS TO_MS [TOP]
        the leaf symbols of each thread between two times (ms from the first sample)
    scripts/perf-threads.py blocked DATA
        (a `perf record -g -e sched:sched_switch` file) the time each thread spent blocked, by
        where it blocked (the first Rust or Go frame of its stack): who waits for whom

A developer's tool (integration/containers-storage/pairs.sh PERF_AT= records such files); it
reads `perf script` output and needs `perf` on PATH.
"""
import collections
import re
import signal
import subprocess
import sys

# A sample's first line: "COMM TID TIME: [TRACE]" (COMM right-aligned when there is no call chain).
HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+(\d+\.\d+):\s*(.*)$")
SWITCH = re.compile(r"prev_comm=.* prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.* next_pid=(\d+)")


def samples(data, fields):
    """(thread, time in s, trace text, frames) for each sample of `perf script -i DATA`."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", fields], capture_output=True, text=True, check=True).stdout
    sample = None
    for line in out.splitlines():
        if not line.strip():
            continue
        m = HEADER.match(line)
        if m:
            if sample:
                yield sample
            sample = (f"{m.group(1)}/{m.group(2)}", float(m.group(3)), m.group(4), [])
        elif sample:  # a frame of its call chain
            sample[3].append(line.strip().split(None, 1)[-1])
    if sample:
        yield sample


def timeline(data, bucket_ms=25.0):
    rows = [(t, when) for t, when, _, _ in samples(data, "comm,tid,time")]
    start = min(w for _, w in rows)
    counts = collections.defaultdict(collections.Counter)
    for thread, when in rows:
        counts[thread][int((when - start) * 1000 / bucket_ms)] += 1
    last = max(k for c in counts.values() for k in c) + 1
    print("thread".ljust(28), " ".join(f"{int(i * bucket_ms):>4}" for i in range(last)))
    for thread, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        if sum(c.values()) >= 5:
            print(thread[:27].ljust(28), " ".join(f"{c.get(i, 0):>4}" for i in range(last)))


def window(data, from_ms, to_ms, top=10):
    rows = list(samples(data, "comm,tid,time,ip,sym"))
    start = min(w for _, w, _, _ in rows)
    counts = collections.defaultdict(collections.Counter)
    for thread, when, _, frames in rows:
        if from_ms <= (when - start) * 1000 < to_ms:
            counts[thread][frames[0] if frames else "?"] += 1
    for thread, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"== {thread}: {sum(c.values())} samples")
        for sym, n in c.most_common(top):
            print(f"   {n:5} {sym[:150]}")


def blocked(data):
    waiting = {}  # tid -> (since, state, where, thread)
    total = collections.defaultdict(collections.Counter)
    for thread, when, trace, frames in samples(data, "comm,tid,time,trace,ip,sym"):
        m = SWITCH.search(trace)
        if not m:
            continue
        prev, state, nxt = m.groups()
        if state.startswith(("S", "D")):
            where = next((f for f in frames if "::" in f or f.startswith("runtime.") or "github.com" in f), None)
            where = where or " < ".join(frames[2:4])
            waiting[prev] = (when, state[0], where, thread)
        if nxt in waiting:
            since, st, where, who = waiting.pop(nxt)
            total[who][(st, where)] += when - since
    for thread, c in sorted(total.items(), key=lambda kv: -sum(kv[1].values())):
        if sum(c.values()) < 0.002:
            continue
        print(f"== {thread}: {sum(c.values()) * 1000:.0f} ms blocked")
        for (st, where), secs in c.most_common(6):
            if secs >= 0.001:
                print(f"   {secs * 1000:6.0f} ms  {st}  {where[:140]}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "timeline":
        timeline(argv[1], *(float(a) for a in argv[2:3]))
    elif len(argv) >= 4 and argv[0] == "window":
        window(argv[1], float(argv[2]), float(argv[3]), *(int(a) for a in argv[4:5]))
    elif len(argv) == 2 and argv[0] == "blocked":
        blocked(argv[1])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quietly, into `head`
    sys.exit(main(sys.argv[1:]))
