#!/usr/bin/env python3
"""Lists the files of src/ over 900 lines and the functions over 80 lines, tests left out.

Counts each file up to its `#[cfg(test)] mod tests`; a function from its `fn` line to the
brace that closes it at the same indent. The official-metric port (src/metrics/brats.rs)
follows the reference code's functions and is listed apart. Exits 1 when anything else is
over its limit.
"""
import os
import re
import sys

FILE_LINES = 900
FUNCTION_LINES = 80
PORT = os.path.join("metrics", "brats.rs")


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    over, port = [], []
    for folder, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            shown = os.path.relpath(path, root)
            found = port if shown == PORT else over
            lines = open(path, encoding="utf-8").read().split("\n")
            end = next(
                (i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]") and i + 1 < len(lines)
                 and lines[i + 1].startswith("mod tests")),
                len(lines),
            )
            if end > FILE_LINES:
                found.append(f"file {shown}: {end} lines")
            i = 0
            while i < end:
                m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(const )?(unsafe )?fn (\w+)", lines[i])
                if not m:
                    i += 1
                    continue
                indent, j = m.group(1), i
                while j < end and not lines[j].rstrip().endswith(("{", ";")):
                    j += 1
                if j < end and lines[j].rstrip().endswith(";"):
                    i = j + 1
                    continue
                k = j + 1
                while k < end and lines[k].rstrip() != indent + "}":
                    k += 1
                if k - i + 1 > FUNCTION_LINES:
                    found.append(f"fn {shown}:{i + 1} {m.group(6)}: {k - i + 1} lines")
                i = j + 1
    for line in over:
        print(line)
    for line in port:
        print(f"{line} (the official-metric port)")
    print(f"{len(over)} over the limits ({FILE_LINES} lines a file, {FUNCTION_LINES} a function)")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
