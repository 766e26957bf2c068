#!/usr/bin/env python3
"""Fail when the `use crate::` / `super::` module graph of a crate has a cycle.

Nodes are the crate's source files as module paths (`local::db`, `repl`,
`net::wire`); an edge a -> b means a's code names something of b through a
`crate::` or `super::` path. A file's own `#[cfg(test)] mod tests` counts
as the file (tests importing a module are still an import). Paths that name
a child module declared by the file itself (`mod x;` then `x::Y`) are the
parent using its child, which is an edge too.

Only modules in the library's tree count (reached through `mod` from
lib.rs); a program's modules pulled in with `#[path]` are the program's.

KNOWN lists cycles that are still there on purpose, as a ratchet: a cycle
within one of those sets is reported but passes; one that reaches outside
it, or any other cycle, fails.

Usage: tests/import_cycles.py [--print] [SRC_DIR ...]
  default SRC_DIRs: core/src ffi/src (relative to the repository root).
  --print   print each crate's graph (one `module -> deps` line per module).
Exits 1 listing every cycle found, 0 when every graph is acyclic.
"""
import os
import re
import sys

PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_RE = re.compile(r"\b(crate|super)::\{")
LINE_COMMENT = re.compile(r"//.*")


def modules(src):
    """Map module path tuple -> file, for every .rs file under src."""
    out = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(root, f)
            rel = os.path.relpath(full, src)
            parts = rel[:-3].split(os.sep)
            if parts == ["lib"] or parts[0] == "bin":
                parts = [] if parts == ["lib"] else None
            elif parts[-1] == "mod":
                parts = parts[:-1]
            if parts is None:
                continue
            out[tuple(parts)] = full
    return out


# Cycles allowed on purpose, per source dir, as a ratchet (each a set of
# modules). None is left: the replication runtime's circle was broken by
# splitting repl/mod.rs into config, status, runtime and api, with dialers
# spawned from session (see core/src/repl/runtime.rs).
KNOWN = {}


def declared(text):
    return re.findall(
        r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M
    )


def library_tree(mods):
    """The modules reached from the crate root through `mod x;`."""
    seen, todo = set(), [()]
    while todo:
        m = todo.pop()
        if m in seen or m not in mods:
            continue
        seen.add(m)
        with open(mods[m], encoding="utf-8") as fh:
            text = strip(fh.read())
        todo.extend(m + (c,) for c in declared(text))
    return {m: f for m, f in mods.items() if m in seen}


def strip(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        # Strings rarely hold `crate::`; comments (docs included) often do.
        lines.append(LINE_COMMENT.sub("", line))
    return "\n".join(lines)


def group_paths(text):
    """Expand `crate::{a::B, c}` / `super::{...}` into their first segments."""
    for m in GROUP_RE.finditer(text):
        depth, i = 1, m.end()
        start = i
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[start:i - 1]
        # Only the top level of the group names modules of the crate root.
        level, item = 0, ""
        for ch in body + ",":
            if ch == "{":
                level += 1
            elif ch == "}":
                level -= 1
            if ch == "," and level == 0:
                first = item.strip().split("::")[0].strip()
                if first and first not in ("self",):
                    yield m.group(1), "::" + item.strip()
                item = ""
            else:
                item += ch


def resolve(mods, here, kind, rest):
    segs = [s for s in rest.split("::") if s]
    if kind == "crate":
        base = []
    elif kind == "self":
        base = list(here)
    else:
        base = list(here[:-1])
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
    path = base + segs
    # The longest prefix that is a module file is the target.
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


def graph(src):
    mods = library_tree(modules(src))
    edges = {m: set() for m in mods}
    for mod, file in mods.items():
        with open(file, encoding="utf-8") as fh:
            text = strip(fh.read())
        found = [(m.group(1), m.group(2)) for m in PATH_RE.finditer(text)]
        found += list(group_paths(text))
        # A parent naming its own child module (`mod x;` then `x::Y`).
        for child in declared(text):
            if re.search(r"(?<![:\w])" + child + r"::", text):
                found.append(("self", "::" + child))
        for kind, rest in found:
            target = resolve(mods, mod, kind, rest)
            if target is not None and target != mod:
                # A module reaching into its own ancestors' re-exports
                # (`crate::Result` from lib.rs) names the root only; the
                # root is the public facade, not a layer, so skip it.
                if target == ():
                    continue
                edges[mod].add(target)
    return edges


def name(m):
    return "::".join(m) if m else "crate"


def cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    show = "--print" in argv
    srcs = [a for a in argv if not a.startswith("--")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not srcs:
        srcs = [os.path.join(root, "core/src"), os.path.join(root, "ffi/src")]
    bad = False
    for src in srcs:
        edges = graph(src)
        if show:
            print(f"# {os.path.relpath(src, root)}")
            for m in sorted(edges):
                deps = ", ".join(name(d) for d in sorted(edges[m]))
                print(f"{name(m)} -> {deps}")
        rel = os.path.relpath(src, root)
        for comp in cycles(edges):
            members = set(comp)
            known = any({name(m) for m in comp} <= k for k in KNOWN.get(rel, []))
            bad = bad or not known
            inner = [
                f"{name(a)} -> {name(b)}"
                for a in comp
                for b in sorted(edges[a])
                if b in members
            ]
            print(
                ("known " if known else "")
                + f"import cycle in {rel} among "
                f"{', '.join(name(m) for m in comp)}:\n  " + "\n  ".join(inner),
                file=sys.stderr,
            )
    if bad:
        print("break each cycle: move the shared item into a lower module, or "
              "pass it in (trait, context struct, hook)", file=sys.stderr)
        return 1
    if not show:
        print("no import cycles (but the known ones above)" if any(KNOWN.values()) else "no import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
