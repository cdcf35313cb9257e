#!/usr/bin/env python3
"""Side-by-side report of integration/containers-storage/run.sh: c/storage's Go tests, the
end-to-end checks and the layer dirs, stock vs patched. Prints the tables and a closing
"containers-storage: N passed, M failed" line; exits 1 on any failure.

A failure is: a patched end-to-end check that fails; a stock check that fails for another reason
than a SPEC §10 defect (the harness or machine is broken then); a Go test that passes on stock
and not patched; a layer dir that differs from stock's where stock is right (a layer without
whiteouts whose lowers have no top-level two-hex-digit name), or an object set that differs.

Usage: report.py SCRATCH
"""
import os
import re
import sys

scratch = sys.argv[1]
EMPTY_OBJECT = "e3/b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0"
passed = failed = 0


def count(ok):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1


def read_lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [l.rstrip("\n") for l in f if l.strip()]
    except FileNotFoundError:
        return []


# --- Go tests
go = {}
for build in ("stock", "patched"):
    go[build] = dict(l.rsplit(" ", 1) for l in read_lines(os.path.join(scratch, f"gotest-{build}.txt")))
print("c/storage's own Go tests (go test -json, subtests included)")
print(f"  {'':10} {'pass':>6} {'fail':>6} {'skip':>6}")
for build in ("stock", "patched"):
    vals = list(go[build].values())
    print(f"  {build:10} {vals.count('pass'):6} {vals.count('fail'):6} {vals.count('skip'):6}")
if not go["stock"] or not go["patched"]:
    print("  error: no Go test results")
    count(False)
regressions = sorted(t for t, r in go["stock"].items() if r == "pass" and go["patched"].get(t) != "pass")
both_fail = sorted(t for t, r in go["stock"].items() if r == "fail" and go["patched"].get(t) == "fail")
stock_only = sorted(t for t, r in go["stock"].items() if r == "fail" and go["patched"].get(t) == "pass")
for t in regressions:
    print(f"  REGRESSION: {t} passes on stock, {go['patched'].get(t, 'missing')} patched")
for t in both_fail:
    print(f"  fails on both: {t}")
for t in stock_only:
    print(f"  fails on stock only: {t}")
count(not regressions and bool(go["stock"]) and bool(go["patched"]))

# --- bats
def tap(path):
    out = {}
    for l in read_lines(path):
        m = re.match(r"(not ok|ok) (\d+) (.*?)( # skip.*)?$", l)
        if m:
            out[m.group(3)] = "skip" if m.group(4) else ("pass" if m.group(1) == "ok" else "fail")
    return out


bats = {b: tap(os.path.join(scratch, f"bats-{b}.tap")) for b in ("stock", "patched")}
print()
print("c/storage's bats suite (storage/tests, STORAGE_OPTION=overlay.use_composefs=true)")
print(f"  {'':10} {'pass':>6} {'fail':>6} {'skip':>6}")
for build in ("stock", "patched"):
    vals = list(bats[build].values())
    print(f"  {build:10} {vals.count('pass'):6} {vals.count('fail'):6} {vals.count('skip'):6}")
bats_regressions = sorted(t for t, r in bats["stock"].items() if r == "pass" and bats["patched"].get(t) != "pass")
for t in bats_regressions:
    print(f"  REGRESSION: {t} passes on stock, {bats['patched'].get(t, 'missing')} patched")
for t in sorted(t for t, r in bats["stock"].items() if r == "fail"):
    print(f"  fails on stock: {t} (patched: {bats['patched'].get(t, 'missing')})")
count(not bats_regressions and bool(bats["stock"]) and bool(bats["patched"]))

# --- End to end
e2e = {}
order = []
for build in ("stock", "patched"):
    e2e[build] = {}
    for l in read_lines(os.path.join(scratch, f"e2e-{build}.tsv")):
        check, result, detail = (l.split("\t") + ["", ""])[:3]
        e2e[build][check] = (result, detail)
        if check not in order:
            order.append(check)
print()
print("End to end (containers-storage CLI + cfs-pull, composefs on, convert_images on)")
width = max([len(c) for c in order] + [10])
print(f"  {'check':{width}}  {'stock':24}  patched")
for check in order:
    s = e2e["stock"].get(check, ("missing", ""))
    p = e2e["patched"].get(check, ("missing", ""))
    defect = "SPEC 10" in check
    s_text = s[0] + (" (SPEC 10 defect)" if s[0] == "FAIL" and defect else "")
    print(f"  {check:{width}}  {s_text:24}  {p[0]}")
    for build, r in (("stock", s), ("patched", p)):
        if r[0] != "PASS" and r[1]:
            print(f"  {'':{width}}    {build}: {r[1][:150]}")
    count(p[0] == "PASS")
    if s[0] != "PASS" and not defect:
        count(False)
if not order:
    print("  error: no end-to-end results")
    count(False)

# --- Bad input: the same error class as stock (the step that failed, and whether containers/image
# may fall back to an ordinary download: errors.As ErrFallbackToOrdinaryLayerDownload).
classes = {}
for build in ("stock", "patched"):
    classes[build] = dict((l.split("\t") + [""])[:2] for l in read_lines(os.path.join(scratch, f"e2e-{build}-classes.tsv")))
print()
print("Bad input: error class (failed step, fallback to an ordinary download or not), stock vs patched")
for what in classes["stock"]:
    s, p = classes["stock"][what] or "none", classes["patched"].get(what) or "none"
    print(f"  {what:{width}}  {s:34}  {p}  {'same' if s == p else 'DIFFERENT'}")
    count(s == p and s != "none")
if not classes["stock"]:
    print("  error: no bad-input classes recorded")
    count(False)

# --- Layer dirs
print()
print("Layer dirs, patched vs stock (blob sha256, object set)")
stock_dir, patched_dir = os.path.join(scratch, "e2e-stock"), os.path.join(scratch, "e2e-patched")
names = sorted(n for n in os.listdir(stock_dir) if n.startswith("fingerprint-")) if os.path.isdir(stock_dir) else []
for n in names:
    s = read_lines(os.path.join(stock_dir, n))
    p = read_lines(os.path.join(patched_dir, n))
    if not s or not p:
        print(f"  {n[12:]:40} missing")
        count(False)
        continue
    # Stock is wrong for layers with whiteouts (the upper test layers, the handmade corpus
    # layers): its blob keeps them as empty files, which also need the empty object.
    fixed = any(k in n for k in ("upper", "handmade-pax", "handmade-archive"))
    same_blob, objects_s, objects_p = s[0] == p[0], set(s[1:]), set(p[1:])
    extra = objects_s ^ objects_p
    if fixed:
        ok = not same_blob and extra <= {EMPTY_OBJECT}
        what = "blob differs (whiteouts fixed)" + (", objects equal" if not extra else ", no empty object (whiteouts were its only empty files)")
    else:
        ok = same_blob and not extra
        what = "identical blob and objects"
    if not ok:
        what = f"unexpected: blob {s[0]} vs {p[0]}, objects only on one side: {sorted(extra)[:3]}"
    print(f"  {n[12:]:40} {what}")
    count(ok)
if not names:
    print("  error: no layer fingerprints")
    count(False)

print()
print(f"containers-storage: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
