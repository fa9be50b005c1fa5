#!/usr/bin/env python3
"""One line from a `segtop eval --json` report: per region, the mean lesion-wise and legacy
Dice over the cases, the ground-truth lesions missed out of all of them, and the false-positive
components per case.

    bench/eval_summary.py REPORT.json NAME
"""
import json
import statistics
import sys

doc = json.load(open(sys.argv[1]))
cases = doc["cases"]
cells = []
for region in ("WT", "TC", "ET"):
    rows = [next(r for r in c["regions"] if r["region"] == region) for c in cases]
    missed = sum(r["num_fn"] for r in rows)
    lesions = missed + sum(r["num_tp"] for r in rows)
    cells.append(
        f"{region} lesion {statistics.mean(r['lesion_dice'] for r in rows):.3f} "
        f"legacy {statistics.mean(r['legacy_dice'] for r in rows):.3f} "
        f"missed {missed}/{lesions} FP/case {sum(r['num_fp'] for r in rows) / len(rows):.2f}"
    )
print(f"{sys.argv[2]:<24} " + " | ".join(cells))
