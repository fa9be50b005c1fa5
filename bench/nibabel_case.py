#!/usr/bin/env python3
"""The Python way to do what `segtop data bench` measures, for a side-by-side ratio.

Loads one BraTS case (4 modalities + seg) with nibabel as float32, then preprocesses it as
segtop's defaults do: z-score over brain (non-zero) voxels after clipping to the 0.5 and
99.5 percentiles, crop to the bounding box of the brain. Prints one JSON line with the
median wall times. Needs numpy and nibabel.
"""
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

MODALITIES = ("t1n", "t1c", "t2f", "t2w")


def load(case: Path):
    cid = case.name
    images = [np.asarray(nib.load(case / f"{cid}-{m}.nii.gz").get_fdata(dtype=np.float32)) for m in MODALITIES]
    seg = np.asarray(nib.load(case / f"{cid}-seg.nii.gz").dataobj).astype(np.uint8)
    return images, seg


def preprocess(images, seg):
    out = []
    for image in images:
        brain = image[image != 0]
        lo, hi = np.percentile(brain, [0.5, 99.5])
        clipped = np.clip(image, lo, hi)
        mask = image != 0
        mean, std = clipped[mask].mean(), clipped[mask].std()
        out.append(np.where(mask, (clipped - mean) / max(std, 1e-8), 0).astype(np.float32))
    nonzero = np.any(np.stack([i != 0 for i in images]), axis=0)
    box = tuple(slice(w.min(), w.max() + 1) for w in np.nonzero(nonzero))
    return [o[box] for o in out], seg[box]


def main():
    case = Path(sys.argv[1])
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    loads, totals = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        images, seg = load(case)
        loaded = time.perf_counter()
        preprocess(images, seg)
        loads.append(loaded - start)
        totals.append(time.perf_counter() - start)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    print(json.dumps({"impl": "nibabel+numpy", "load_s": round(median(loads), 4),
                      "load_preprocess_s": round(median(totals), 4)}))


if __name__ == "__main__":
    main()
