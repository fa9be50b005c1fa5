#!/usr/bin/env python3
"""Checks the import structure of src/: no circles, and every import pointing up the flow.

Reads every `crate::` and `segtop::` path in src/ (outside `#[cfg(test)] mod tests`), resolves
it to the file of the module it names, and reports
  - circles among files (a file and the files of its own folder aside: a parent re-exports
    and checks through its children);
  - imports against the flow: each top-level module may import only from those listed
    before it in LAYERS.
Exits 1 when it finds either. `-v` prints every file's imports.
"""
import collections
import os
import re
import sys

# The flow, from an experiment file to what a user sees (docs/src/development.md, Layout).
LAYERS = [
    "config", "budget", "workspace", "experiment", "cpu", "cost", "data", "render", "theme",
    "graphics", "run", "metrics", "postprocess", "package", "schedule", "settings", "runs",
    "supervisor", "trainer", "dashboard", "commands", "",
]


def modules(root):
    """Module path (`run::events`) -> file, for every .rs file under root."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                files["::".join(parts)] = path
    return files


def imports(root, files):
    known = set(files)

    def resolve(path):
        parts = path.split("::")
        for n in range(len(parts), 0, -1):
            if "::".join(parts[:n]) in known:
                return "::".join(parts[:n])
        return None

    edges = collections.defaultdict(set)
    for module, path in files.items():
        text = open(path, encoding="utf-8").read()
        text = text.split("#[cfg(test)]\nmod tests")[0]
        text = re.sub(r"//.*", "", text)
        # In the trainer binary `crate::` is the trainer itself; `segtop::` is the library.
        in_trainer = path.startswith(os.path.join(root, "trainer"))
        for match in re.finditer(
            r"\b(crate|segtop)::((?:[A-Za-z_]\w*::)*)(\{[^;]*?\}|[A-Za-z_]\w*)", text
        ):
            base = "trainer::" if in_trainer and match.group(1) == "crate" else ""
            prefix, tail = match.group(2), match.group(3)
            items = re.findall(r"[A-Za-z_][\w:]*", tail) if tail.startswith("{") else [tail]
            for item in items:
                target = resolve(base + prefix + item) or resolve(base + prefix.rstrip(":"))
                if target and target != module:
                    edges[module].add(target)
    return edges


def related(a, b):
    return a.startswith(b + "::") or b.startswith(a + "::")


def circles(files, edges):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if related(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(files):
        if v not in index:
            visit(v)
    return found


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    files = modules(root)
    edges = imports(root, files)
    if "-v" in sys.argv:
        for module in sorted(edges):
            print(f"{module or 'main'} -> {' '.join(sorted(edges[module]))}")
    bad = 0
    for group in circles(files, edges):
        bad += 1
        print("circle:", " ".join(group))
        for a in group:
            print("   ", a, "->", " ".join(sorted(b for b in edges[a] if b in group and not related(a, b))))
    rank = {name: i for i, name in enumerate(LAYERS)}
    for module in sorted(edges):
        top = module.split("::")[0]
        for target in sorted(edges[module]):
            other = target.split("::")[0]
            if other == top:
                continue
            if top not in rank or other not in rank:
                bad += 1
                print(f"not in LAYERS: {top or other}")
            elif rank[other] > rank[top]:
                bad += 1
                print(f"against the flow: {module or 'main'} -> {target}")
    print(f"{len(files)} files, {sum(len(e) for e in edges.values())} imports, {bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
