"""Compare `segtop eval` with the official BraTS 2024 metric code on generated pairs.

Run through bench/metrics_agreement.sh, with a Python that has the reference's pinned
requirements (numpy 1.26, scipy 1.10, nibabel, pandas, cc3d, medpy). Steps:

1. `segtop synth` writes ground-truth cases; this script derives prediction/ground-truth pairs
   from them: identical, shifted, eroded, dilated, relabelled, speckled with false positives,
   lesions of exactly 50 and 51 voxels, lesions merged by dilation, empty on either side,
   anisotropic spacing.
2. The reference's get_LesionWiseResults scores each pair (in a scratch folder, since it
   writes temporary files into the working directory); segtop eval scores them all.
3. Prints the largest absolute difference of every metric and region, the pair it occurs on,
   and both programs' times.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
from scipy import ndimage

COLUMNS = {
    "LesionWise_Score_Dice": "lesion_dice",
    "LesionWise_Score_HD95": "lesion_hd95",
    "LesionWise_Score_NSD @ 0.5": "lesion_nsd_05",
    "LesionWise_Score_NSD @ 1.0": "lesion_nsd_10",
    "Legacy_Dice": "legacy_dice",
    "Legacy_HD95": "legacy_hd95",
    "Legacy NSD @ 0.5": "legacy_nsd_05",
    "Legacy NSD @ 1.0": "legacy_nsd_10",
    "Sensitivity": "sensitivity",
    "Specificity": "specificity",
    "Num_TP": "num_tp",
    "Num_FP": "num_fp",
    "Num_FN": "num_fn",
    "GT_Complete_Volume": "gt_volume",
}


def blob(shape, centre, voxels, rng):
    """A connected blob of exactly `voxels` voxels grown from `centre`."""
    mask = np.zeros(shape, bool)
    frontier = [tuple(centre)]
    count = 0
    while frontier and count < voxels:
        p = frontier.pop(rng.integers(len(frontier)))
        if mask[p]:
            continue
        mask[p] = True
        count += 1
        for axis in range(3):
            for step in (-1, 1):
                q = list(p)
                q[axis] += step
                if 0 <= q[axis] < shape[axis] and not mask[tuple(q)]:
                    frontier.append(tuple(q))
    return mask


def background_point(labels, rng, margin=8):
    shape = labels.shape
    tumour = ndimage.binary_dilation(labels > 0, iterations=margin)
    for _ in range(1000):
        p = tuple(int(rng.integers(margin, n - margin)) for n in shape)
        if not tumour[p]:
            return p
    raise RuntimeError("no free background point")


def variants(gt, rng):
    """(name, prediction, ground truth, spacing or None) pairs derived from one label map."""
    out = [("same", gt.copy(), gt, None)]
    out.append(("shifted", np.roll(gt, (2, -1, 1), axis=(0, 1, 2)), gt, None))
    eroded = gt.copy()
    eroded[~ndimage.binary_erosion(gt > 0, iterations=1)] = 0
    out.append(("eroded", eroded, gt, None))
    grown = ndimage.grey_dilation(gt, size=(3, 3, 3))
    out.append(("dilated", grown, gt, None))
    relabelled = gt.copy()
    flip = (gt > 0) & (rng.random(gt.shape) < 0.2)
    relabelled[flip] = rng.integers(1, 4, flip.sum())
    out.append(("relabelled", relabelled, gt, None))
    speckled = gt.copy()
    for size in (1, 5, 27, 49, 64, 120):
        speckled[blob(gt.shape, background_point(gt, rng), size, rng)] = int(rng.integers(1, 4))
    out.append(("speckled", speckled, gt, None))
    # Lesions of exactly 50 and 51 voxels in the ground truth, predicted and not.
    small = gt.copy()
    a, b = background_point(gt, rng), background_point(gt, rng)
    small[blob(gt.shape, a, 50, rng)] = 3
    small[blob(gt.shape, b, 51, rng)] = 3
    pred_small = gt.copy()
    pred_small[blob(gt.shape, b, 51, rng)] = 3
    out.append(("lesions-50-51", pred_small, small, None))
    # Two ground-truth lesions a few voxels apart (merged by the dilation), one predicted.
    two = gt.copy()
    c = np.array(background_point(gt, rng))
    two[blob(gt.shape, c, 80, rng)] = 1
    two[blob(gt.shape, c + np.array([0, 7, 0]), 80, rng)] = 1
    one = gt.copy()
    one[blob(gt.shape, c, 80, rng)] = 1
    out.append(("merged-by-dilation", one, two, None))
    missed = gt.copy()
    missed[missed == 3] = 1
    out.append(("missed-et", missed, gt, None))
    out.append(("empty-pred", np.zeros_like(gt), gt, None))
    out.append(("empty-gt", gt.copy(), np.zeros_like(gt), None))
    out.append(("both-empty", np.zeros_like(gt), np.zeros_like(gt), None))
    out.append(("anisotropic", np.roll(eroded, 1, axis=2), gt, (0.9, 1.1, 2.5)))
    messy = relabelled.copy()
    messy[ndimage.binary_opening(messy > 0, iterations=1) == 0] = 0
    for size in (3, 30, 70):
        messy[blob(gt.shape, background_point(gt, rng), size, rng)] = 3
    out.append(("messy", np.roll(messy, (1, 1, 0), axis=(0, 1, 2)), gt, None))
    return out


def write(path, labels, affine):
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", required=True, help="checkout of BraTS-2024-Metrics")
    parser.add_argument("--segtop", required=True, help="the segtop binary")
    parser.add_argument("--cases", required=True, help="folder of synthetic BraTS cases")
    parser.add_argument("--work", required=True, help="scratch folder")
    parser.add_argument("--challenge", default="ssa")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N pairs")
    args = parser.parse_args()

    rng = np.random.default_rng(2024)
    pred_dir = os.path.join(args.work, "pred")
    gt_dir = os.path.join(args.work, "gt")
    os.makedirs(pred_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    segs = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(args.cases)
        for f in files
        if f.endswith("-seg.nii.gz")
    )
    pairs = []
    for seg in segs:
        image = nib.load(seg)
        gt = np.asarray(image.dataobj).astype(np.uint8)
        case = os.path.basename(seg)[: -len("-seg.nii.gz")]
        for name, pred, truth, spacing in variants(gt, rng):
            pair = f"{case}-{name}"
            affine = image.affine.copy()
            if spacing is not None:
                affine[:3, :3] = np.diag(spacing) @ np.sign(affine[:3, :3])
            write(os.path.join(pred_dir, f"{pair}.nii.gz"), pred, affine)
            write(os.path.join(gt_dir, f"{pair}.nii.gz"), truth, affine)
            pairs.append(pair)
    if args.limit:
        keep = set(pairs[: args.limit])
        for d in (pred_dir, gt_dir):
            for f in os.listdir(d):
                if f[: -len(".nii.gz")] not in keep:
                    os.remove(os.path.join(d, f))
        pairs = pairs[: args.limit]
    print(f"{len(pairs)} pairs from {len(segs)} cases", flush=True)

    started = time.perf_counter()
    run = subprocess.run(
        [args.segtop, "eval", "--pred", pred_dir, "--gt", gt_dir, "--challenge", args.challenge,
         "--json", "--threads", "1"],
        capture_output=True, text=True,
    )
    segtop_seconds = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"segtop eval failed:\n{run.stderr}")
    ours = {c["case"]: c for c in json.loads(run.stdout)["cases"]}

    sys.path.insert(0, args.reference)
    module = importlib.import_module(f"metrics_{args.challenge.upper()}")
    scratch = os.path.join(args.work, "reference-tmp")
    os.makedirs(scratch, exist_ok=True)
    here = os.getcwd()
    os.chdir(scratch)
    worst = {}
    seen = {}
    reference_seconds = 0.0
    try:
        for i, pair in enumerate(pairs):
            started = time.perf_counter()
            results, _ = module.get_LesionWiseResults(
                os.path.join(pred_dir, f"{pair}.nii.gz"),
                os.path.join(gt_dir, f"{pair}.nii.gz"),
                f"BraTS-{args.challenge.upper()}",
            )
            reference_seconds += time.perf_counter() - started
            regions = {r["region"]: r for r in ours[pair]["regions"]}
            for _, row in results.iterrows():
                mine = regions[row["Labels"]]
                for column, key in COLUMNS.items():
                    diff = abs(float(row[column]) - float(mine[key]))
                    low, high = seen.get((row["Labels"], key), (np.inf, -np.inf))
                    seen[(row["Labels"], key)] = (min(low, float(row[column])), max(high, float(row[column])))
                    best = worst.get((row["Labels"], key))
                    if best is None or diff > best[0]:
                        worst[(row["Labels"], key)] = (diff, pair, float(row[column]), float(mine[key]))
            print(f"  {i + 1}/{len(pairs)} {pair}: reference {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        os.chdir(here)

    print(f"\nlargest differences over {len(pairs)} pairs (reference vs segtop):")
    print(f"  {'':<4} {'metric':<14} {'max diff':>9}  {'reference range':>21}  worst pair: reference vs segtop")
    for (region, key), (diff, pair, theirs, mine) in sorted(worst.items()):
        flag = "" if diff <= (1e-3 if "hd95" in key else 1e-6) else "   <-- over target"
        low, high = seen[(region, key)]
        print(f"  {region:<4} {key:<14} {diff:>9.3g}  {low:>10.4g}..{high:<10.4g}  {pair}: {theirs:.6g} vs {mine:.6g}{flag}")
    per_case_ours = sum(c["seconds"] for c in ours.values()) / len(pairs)
    print(f"\nreference: {reference_seconds:.1f} s for {len(pairs)} pairs ({reference_seconds / len(pairs):.2f} s per pair)")
    print(f"segtop eval --threads 1: {segtop_seconds:.1f} s wall ({per_case_ours:.3f} s per pair inside)")
    print(f"speed ratio (reference / segtop, wall): {reference_seconds / segtop_seconds:.1f}x")


if __name__ == "__main__":
    main()
