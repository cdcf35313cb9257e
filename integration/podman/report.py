#!/usr/bin/env python3
"""Side-by-side table of the podman end-to-end run (e2e.sh's RESULTS: BUILD, CHECK, PASS|FAIL,
DETAIL). A failure is a patched check that fails, or a stock check that fails for another reason
than a SPEC §10 defect. Prints "podman: N passed, M failed" and exits 1 on any failure.

Usage: report.py RESULTS
"""
import sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
results, order = {}, []
for build, check, result, detail in (r + ["", "", "", ""][: 4 - len(r)] for r in rows):
    results[(build, check)] = (result, detail)
    if check not in order:
        order.append(check)
passed = failed = 0
width = max(len(c) for c in order) if order else 10
print(f"  {'check':{width}}  {'stock':24}  patched")
for check in order:
    if ("all", check) in results:
        r = results[("all", check)]
        print(f"  {check:{width}}  {r[0]:24}  {r[0]}")
        passed, failed = passed + (r[0] == "PASS"), failed + (r[0] != "PASS")
        continue
    s = results.get(("stock", check), ("missing", ""))
    p = results.get(("patched", check), ("missing", ""))
    defect = "SPEC 10" in check
    s_text = s[0] + (" (SPEC 10 defect)" if s[0] == "FAIL" and defect else "")
    print(f"  {check:{width}}  {s_text:24}  {p[0]}")
    for build, r in (("stock", s), ("patched", p)):
        if r[1] and (r[0] != "PASS" or check.startswith(("bad input", "partial"))):
            print(f"  {'':{width}}    {build}: {r[1][:160]}")
    ok = p[0] == "PASS" and (s[0] == "PASS" or defect)
    passed, failed = passed + ok, failed + (not ok)
if not order:
    print("  error: no results")
    failed += 1
print(f"podman: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
