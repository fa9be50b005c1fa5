#!/usr/bin/env python3
"""A degraded copy of a BraTS dataset: scans as older, lower-field scanners make them.

    bench/degrade_cases.py SOURCE_DIR OUT_DIR [--slice-mm 5] [--noise 0.03] [--bias 0.3] [--seed 1]

For every case folder under SOURCE_DIR, writes a folder of the same name under OUT_DIR with
the same files: each image modality is

1. acquired with thick axial slices: every group of `--slice-mm` slices averaged (partial
   volume), then linearly interpolated back to the 1 mm grid, as a thick-sliced scan
   resampled to the BraTS grid looks;
2. multiplied by a smooth bias field: exp of a random second-order polynomial over the
   volume, of up to `--bias` in the logarithm (scanner inhomogeneity);
3. given Gaussian noise of `--noise` times the brain's 99th intensity percentile, inside the
   brain only (the skull-stripped background stays 0).

The label map is copied unchanged, so a model's scores on the copy and on the original are
directly comparable. Each case's random draws come from the seed and the case name, so the
copy is the same on every run. Needs numpy and nibabel. Never run by CI.
"""
import argparse
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

IMAGE_SUFFIXES = ("_t1", "_t1ce", "_t2", "_flair", "-t1n", "-t1c", "-t2w", "-t2f")


def is_image(name: str) -> bool:
    stem = name.removesuffix(".gz").removesuffix(".nii")
    return stem.endswith(IMAGE_SUFFIXES)


def thick_slices(volume: np.ndarray, thickness: int) -> np.ndarray:
    """Averages groups of `thickness` slices along the last axis, interpolates back."""
    n = volume.shape[2]
    groups = int(np.ceil(n / thickness))
    coarse = np.stack([volume[:, :, g * thickness:(g + 1) * thickness].mean(axis=2) for g in range(groups)], axis=2)
    centres = np.array([min(g * thickness + (thickness - 1) / 2, n - 1) for g in range(groups)])
    out = np.empty_like(volume, dtype=np.float32)
    for k in range(n):
        j = np.searchsorted(centres, k)
        if j == 0:
            out[:, :, k] = coarse[:, :, 0]
        elif j >= groups:
            out[:, :, k] = coarse[:, :, -1]
        else:
            t = (k - centres[j - 1]) / (centres[j] - centres[j - 1])
            out[:, :, k] = (1 - t) * coarse[:, :, j - 1] + t * coarse[:, :, j]
    return out


def bias_field(shape, strength: float, rng: np.random.Generator) -> np.ndarray:
    axes = [np.linspace(-1, 1, n) for n in shape]
    u, v, w = np.meshgrid(*axes, indexing="ij")
    terms = [u, v, w, u * u, v * v, w * w, u * v, v * w, u * w]
    c = rng.uniform(-1, 1, len(terms))
    p = sum(ci * t for ci, t in zip(c, terms))
    return np.exp(strength * p / 3.0).astype(np.float32)


def degrade_case(case: Path, out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    seed = int.from_bytes(hashlib.sha256(f"{args.seed}:{case.name}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    for file in sorted(case.iterdir()):
        if not file.name.endswith((".nii", ".nii.gz")):
            continue
        if not is_image(file.name):
            shutil.copyfile(file, out / file.name)
            continue
        image = nib.load(str(file))
        data = np.asarray(image.dataobj, dtype=np.float32)
        brain = data != 0
        degraded = thick_slices(data, args.slice_mm)
        degraded *= bias_field(data.shape, args.bias, rng)
        scale = np.percentile(data[brain], 99) if brain.any() else 1.0
        degraded += rng.normal(0.0, args.noise * scale, data.shape).astype(np.float32)
        degraded[~brain] = 0
        degraded = np.clip(degraded, 0, None)
        header = image.header.copy()
        header.set_data_dtype(np.float32)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        nib.save(nib.Nifti1Image(degraded, image.affine, header), str(out / file.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--slice-mm", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--bias", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cases = sorted(p.resolve() for p in args.source.iterdir() if p.is_dir())
    for i, case in enumerate(cases, 1):
        degrade_case(case, args.out / case.name, args)
        print(f"{i}/{len(cases)} {case.name}", flush=True)


if __name__ == "__main__":
    main()
