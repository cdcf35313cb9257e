#!/usr/bin/env python3
"""Generates a C test that calls every function of include/composefs-storage.h with NULL pointers.

So that a new export is covered without editing any test:
- a function returning cfs_status with pointer arguments, called with every pointer NULL (and
  scalars 0, file descriptors -1), must return CFS_STATUS_NULL_ARGUMENT and hand back an error object of that status
  (and return the same with err == NULL);
- cfs_*_free(NULL) must be a no-op;
- any other function taking pointers must not crash on NULL.
Functions listed in tests/c/null-exempt.txt (where all-NULL is valid input) skip the status check.

Usage: gen-null-tests.py HEADER EXEMPT_LIST OUTPUT.c
"""
import re
import sys

SCALARS = {"bool", "char", "int", "unsigned", "long", "short", "size_t", "ssize_t", "double", "float",
           "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t",
           "intptr_t", "uintptr_t"}


def strip(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    lines = [l for l in src.splitlines() if not l.lstrip().startswith("#") and l.strip() != 'extern "C" {']
    return "\n".join(lines)


def statements(src):
    """Top-level statements (text up to ';' outside braces); a stray '}' from extern "C" is dropped."""
    out, cur, depth = [], [], 0
    for ch in src:
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                continue
            depth -= 1
        if ch == ";" and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    return out


def split_params(text):
    params, cur, depth = [], [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            params.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    last = "".join(cur).strip()
    if last and last != "void":
        params.append(last)
    return params


def parse(header):
    src = strip(header)
    enums = set(re.findall(r"typedef\s+enum\s+\w*\s*\{[^}]*\}\s*(\w+)", src))
    # typedef'd function pointers (callbacks) take NULL; typedef'd scalars take 0.
    fnptrs = set(re.findall(r"typedef[^;{}]*\(\s*\*\s*(\w+)\s*\)", src))
    aliases = {name for ty, name in re.findall(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;", src)
               if set(ty.replace("const", "").split()) - {"unsigned", "signed"} <= SCALARS}
    funcs = []
    for st in statements(src):
        st = " ".join(st.split())
        if st.startswith("typedef"):
            continue
        m = re.search(r"\b(cfs_\w+)\s*\(", st)
        if not m:
            continue
        ret, name = st[: m.start()].strip(), m.group(1)
        open_at = m.end() - 1
        depth, close_at = 0, None
        for i in range(open_at, len(st)):
            depth += {"(": 1, ")": -1}.get(st[i], 0)
            if depth == 0:
                close_at = i
                break
        funcs.append((ret, name, split_params(st[open_at + 1 : close_at])))
    return funcs, enums | aliases, fnptrs


def param_type(p):
    """The type of a parameter declaration without its name."""
    return re.sub(r"\b\w+$", "", p).strip()


def argument(p, enums, fnptrs):
    ty = param_type(p)
    if "*" in p or "(" in p or ty in fnptrs:
        return "NULL"
    words = set(ty.replace("const", "").split()) - {"enum", "unsigned", "signed"}
    if words <= SCALARS or words <= enums or ty.startswith("enum "):
        # A file descriptor gets -1, never 0 (stdin): the call must fail before touching it.
        if re.search(r"fd$", p) and "unsigned" not in ty and not ty.startswith("uint"):
            return "(%s)-1" % ty
        return "(%s)0" % ty
    return None  # a struct by value: cannot make one up


def main():
    header_path, exempt_path, out_path = sys.argv[1:4]
    funcs, enums, fnptrs = parse(open(header_path).read())
    exempt = set()
    with open(exempt_path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                exempt.add(line)
    body, names = [], []
    for ret, name, params in funcs:
        ptrs = [p for p in params if "*" in p or "(" in p or param_type(p) in fnptrs]
        if not ptrs:
            continue
        has_err = bool(params) and re.match(r"(struct\s+)?cfs_error\s*\*\s*\*", params[-1]) is not None
        args = [argument(p, enums, fnptrs) for p in params]
        if None in args:
            body.append("    /* %s: skipped, takes a struct by value */" % name)
            print("gen-null-tests: %s skipped: it takes a struct by value" % name)
            continue
        returns_status = ret in ("cfs_status", "enum cfs_status")
        other_ptrs = len(ptrs) - (1 if has_err else 0)
        names.append(name)
        if returns_status and other_ptrs > 0 and name not in exempt:
            body.append("    {")
            if has_err:
                with_err = ", ".join(args[:-1] + ["&err"])
                body.append("        cfs_error *err = NULL;")
                body.append("        cfs_status st = %s(%s);" % (name, with_err))
                body.append('        check_failed(__FILE__, __LINE__, "%s(NULL...)", st, err, CFS_STATUS_NULL_ARGUMENT);' % name)
            body.append("        CHECK(%s(%s) == CFS_STATUS_NULL_ARGUMENT);" % (name, ", ".join(args)))
            body.append("    }")
        elif ret == "void":
            body.append("    %s(%s);" % (name, ", ".join(args)))
            body.append("    CHECK(1); /* %s(NULL) returned */" % name)
        else:
            body.append("    (void)%s(%s);" % (name, ", ".join(args)))
            body.append("    CHECK(1); /* %s(NULL) returned */" % name)
    with open(out_path, "w") as out:
        out.write("/* Generated by scripts/gen-null-tests.py from %s: do not edit. */\n" % header_path)
        out.write('#include <stddef.h>\n#include "harness.h"\n\nint main(void)\n{\n')
        out.write("\n".join(body))
        out.write('\n    return harness_summary("test_null_args");\n}\n')
    print("gen-null-tests: %d functions with pointer arguments: %s" % (len(names), " ".join(names)))


if __name__ == "__main__":
    main()
