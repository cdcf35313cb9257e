#!/usr/bin/env python3
"""Reads `go test -json` output; prints one "<package>.<Test> <pass|fail|skip>" line per test
(subtests included), and "<package> fail" for a package that failed without a failing test (a build
or setup error)."""
import json
import sys

results = {}
pkg_fail = set()
failed_tests_in = set()
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    for line in f:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        action, pkg, test = ev.get("Action"), ev.get("Package", ""), ev.get("Test")
        if action not in ("pass", "fail", "skip"):
            continue
        if test:
            results[f"{pkg}.{test}"] = action
            if action == "fail":
                failed_tests_in.add(pkg)
        elif action == "fail":
            pkg_fail.add(pkg)
for name in sorted(results):
    print(name, results[name])
for pkg in sorted(pkg_fail - failed_tests_in):
    print(pkg, "fail")
