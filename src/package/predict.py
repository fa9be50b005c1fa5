#!/usr/bin/env python3
"""Segment BraTS cases with a segtop model package, without segtop.

    python predict.py --case CASE_FOLDER --out SEGMENTATIONS
    python predict.py --cases DATASET_FOLDER --out SEGMENTATIONS [--tta] [--no-postprocess]

Needs numpy, nibabel, scipy and onnxruntime (and tomli on Python before 3.11; `--runtime
openvino` runs the same ONNX files with OpenVINO instead). Reproduces
`segtop predict --package` step by step, reading every setting from package.toml beside this
file: each modality normalised over the whole volume, the brain's bounding box cropped,
Gaussian-weighted sliding windows through every member's ONNX network (optionally mirrored),
the members' probabilities averaged, turned into labels, put back on the case's grid,
post-processed, and written as <case>.nii.gz with the first modality's affine and header.
Research use only; not a medical device.
"""

import argparse
import hashlib
import math
import os
import sys
import time

import nibabel as nib
import numpy as np
from scipy import ndimage

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
# Names of each modality's files: BraTS 2023 suffixes, then the older ones.
SUFFIXES = {
    "brats2023": {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"},
    "legacy": {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"},
}
SEPARATORS = {"brats2023": "-", "legacy": "_"}


def fail(message):
    sys.exit(f"predict.py: error: {message}")


def load_package(folder):
    path = os.path.join(folder, "package.toml")
    try:
        with open(path, "rb") as f:
            package = tomllib.load(f)
    except OSError as e:
        fail(f"{path}: cannot read: {e}")
    except tomllib.TOMLDecodeError as e:
        fail(f"{path}: {e}")
    if package.get("format") != 1:
        fail(f"{path}: format {package.get('format')} is not the format 1 this script reads")
    for name, expected in package["files"].items():
        file = os.path.join(folder, name)
        try:
            with open(file, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            fail(f"{file}: missing (package.toml lists it); the package is incomplete")
        if digest != expected:
            fail(f"{file}: changed since it was packaged (its SHA-256 is not the one package.toml records)")
    return package


def parse_name(name):
    """(case id, naming, part) of a BraTS file name, or None."""
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        stem = name[:-7]
    elif lower.endswith(".nii"):
        stem = name[:-4]
    else:
        return None
    for naming in ("brats2023", "legacy"):
        case, sep, suffix = stem.rpartition(SEPARATORS[naming])
        if not sep or not case:
            continue
        suffix = suffix.lower()
        if suffix == "seg":
            return case, naming, "seg"
        for modality, s in SUFFIXES[naming].items():
            if suffix == s:
                return case, naming, modality
    return None


def find_cases(root):
    """{case id: (naming, {modality: path})} of every BraTS file under root."""
    cases = {}
    for folder, _, names in os.walk(root, followlinks=True):
        for name in sorted(names):
            parsed = parse_name(name)
            if parsed is None or parsed[2] == "seg":
                continue
            case, naming, modality = parsed
            entry = cases.setdefault(case, (naming, {}))
            entry[1][modality] = os.path.join(folder, name)
    return dict(sorted(cases.items()))


def load_volume(path):
    """The volume as float32 [z, y, x] (x fastest, as segtop holds it), and its image."""
    try:
        image = nib.load(path)
        data = np.asarray(image.get_fdata(dtype=np.float64), dtype=np.float32)
    except Exception as e:  # nibabel raises many kinds
        fail(f"{path}: cannot read as NIfTI: {e}")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        fail(f"{path}: a {data.ndim}-D image; each modality must be one 3-D volume")
    return np.ascontiguousarray(data.T), image


def crop_box(images, crop):
    """(origin, size) per axis [z, y, x] of the region kept."""
    shape = images[0].shape
    if crop == "none":
        return (0, 0, 0), shape
    if crop == "foreground":
        mask = np.zeros(shape, dtype=bool)
        for image in images:
            mask |= image != 0
        if not mask.any():
            return (0, 0, 0), shape
        lows, sizes = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            hits = np.flatnonzero(mask.any(axis=other))
            lows.append(int(hits[0]))
            sizes.append(int(hits[-1]) + 1 - int(hits[0]))
        return tuple(lows), tuple(sizes)
    # A fixed box, [start, end) per axis x, y, z.
    (x0, x1), (y0, y1), (z0, z1) = crop
    return (z0, y0, x0), (z1 - z0, y1 - y0, x1 - x0)


def crop(data, origin, size, fill=0):
    out = np.full(size, fill, dtype=data.dtype)
    src = tuple(slice(max(o, 0), min(o + s, n)) for o, s, n in zip(origin, size, data.shape))
    dst = tuple(slice(sl.start - o, sl.stop - o) for sl, o in zip(src, origin))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = data[src]
    return out


def percentile(values, p):
    rank = int(math.floor((len(values) - 1) * p / 100.0 + 0.5))
    return np.partition(values, rank)[rank]


def normalise(data, cropped, origin, mode, clip):
    """The cropped channel normalised as fitted on the whole volume, as segtop does."""
    if mode == "volume-minmax":
        low, high = data.min(), data.max()
        span = np.float32(high - low)
        return (cropped - low) / span if span > 0 else np.zeros_like(cropped)
    if mode == "slice-minmax":
        out = np.zeros_like(cropped)
        for z in range(cropped.shape[0]):
            source = origin[0] + z
            if not 0 <= source < data.shape[0]:
                continue
            low, high = data[source].min(), data[source].max()
            span = np.float32(high - low)
            out[z] = (cropped[z] - low) / span if span > 0 else 0
        return out
    brain = data[data != 0]
    if len(brain) < 2:
        return cropped.copy()
    low, high = percentile(brain.copy(), clip[0]), percentile(brain.copy(), clip[1])
    clipped = np.clip(brain, low, high).astype(np.float64)
    n = len(clipped)
    mean = clipped.sum() / n
    std = max(math.sqrt(max((clipped * clipped).sum() / n - mean * mean, 0.0)), 1e-8)
    mean32, inv_std32 = np.float32(mean), np.float32(1.0 / std)
    inside = cropped != 0
    out = cropped.copy()
    out[inside] = (np.clip(cropped[inside], low, high) - mean32) * inv_std32
    return out


def window_starts(size, window, overlap):
    if size <= window:
        return [0]
    stride = max(int(math.floor(window * (1.0 - overlap) + 0.5)), 1)
    starts = list(range(0, size - window, stride))
    starts.append(size - window)
    return starts


def gaussian_weights(window, gaussian, sigma_fraction):
    if not gaussian:
        return np.ones(window, dtype=np.float32)

    def axis(n):
        sigma = n * sigma_fraction
        centre = (n - 1) / 2.0
        return np.array([math.exp(-((i - centre) ** 2) / (2 * sigma * sigma)) for i in range(n)], dtype=np.float32)

    z, y, x = window
    weights = axis(z)[:, None, None] * axis(y)[None, :, None] * axis(x)[None, None, :]
    return np.maximum(weights / weights.max(), np.float32(1e-3))


class Member:
    """One network of the package, run by ONNX Runtime (or OpenVINO, reading the same file)."""

    def __init__(self, folder, member, package, threads, runtime):
        path = os.path.join(folder, member["file"])
        self.output = member["output"]
        self.batch = max(int(package["validate"].get("window_batch", 1)), 1)
        if runtime == "openvino":
            try:
                import openvino as ov
            except ImportError:
                fail("--runtime openvino needs the openvino package (pip install openvino)")
            config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
            # float32 throughout, as segtop computes (OpenVINO may otherwise pick bfloat16).
            config["INFERENCE_PRECISION_HINT"] = "f32"
            compiled = ov.Core().compile_model(path, "CPU", config)
            output = compiled.output("probabilities")
            self.run = lambda windows: compiled([windows])[output]
        else:
            try:
                import onnxruntime as ort
            except ImportError:
                fail("this script needs onnxruntime (pip install onnxruntime)")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self.run = lambda windows: session.run(["probabilities"], {"image": windows})[0]


def mirrors(flip_axes):
    dims = sorted({4 - min(a, 2) for a in flip_axes})
    return [[d for bit, d in enumerate(dims) if mask & (1 << bit)] for mask in range(1 << len(dims))]


def sliding_window(member, volume, package, tta):
    """Probabilities [channels, z, y, x] of a [channels, z, y, x] volume."""
    validate = package["validate"]
    window = tuple(reversed(validate["window"]))  # x, y, z -> z, y, x
    overlap = validate["overlap"]
    weights = gaussian_weights(window, validate["gaussian"], package["predict"]["gaussian_sigma"])
    flips = mirrors(package["augment"]["flip_axes"]) if tta else [[]]
    channels, *shape = volume.shape
    padded_shape = [max(s, w) for s, w in zip(shape, window)]
    padded = np.zeros([1, channels] + padded_shape, dtype=np.float32)
    padded[0, :, : shape[0], : shape[1], : shape[2]] = volume
    classes = 4 if member.output == "labels" else 3
    total = np.zeros([classes] + padded_shape, dtype=np.float32)
    count = np.zeros(padded_shape, dtype=np.float32)
    starts = [window_starts(padded_shape[i], window[i], overlap) for i in range(3)]
    corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]

    def box(c):
        return tuple(slice(c[i], c[i] + window[i]) for i in range(3))

    for first in range(0, len(corners), member.batch):
        group = corners[first : first + member.batch]
        windows = np.concatenate([padded[(slice(None), slice(None)) + box(c)] for c in group], axis=0)
        probs = None
        for dims in flips:
            if dims:
                p = np.flip(member.run(np.ascontiguousarray(np.flip(windows, dims))), dims)
            else:
                p = member.run(windows)
            probs = p if probs is None else probs + p
        if len(flips) > 1:
            probs = probs / np.float32(len(flips))
        for i, c in enumerate(group):
            total[(slice(None),) + box(c)] += probs[i] * weights
            count[box(c)] += weights
    return (total / count)[:, : shape[0], : shape[1], : shape[2]]


def as_regions(output, probs):
    if output == "regions":
        return probs
    et = probs[3]
    tc = probs[1] + et
    wt = tc + probs[2]
    return np.stack([wt, tc, et])


def labels_of(average, probs, threshold):
    if average == "labels":
        return np.argmax(probs, axis=0).astype(np.uint8)
    labels = np.zeros(probs.shape[1:], dtype=np.uint8)
    for region, label in ((0, 2), (1, 1), (2, 3)):
        labels[probs[region] > threshold] = label
    return labels


REGIONS = {"wt": ((1, 2, 3), 0), "tc": ((1, 3), 2), "et": ((3,), 1)}


def postprocess(labels, plan):
    """The run's learned plan: per region (26-connected components), then the ET rule."""
    structure = np.ones((3, 3, 3), dtype=bool)
    for region in ("wt", "tc", "et"):
        step = plan.get(region, {})
        operation = step.get("operation", "none")
        if operation == "none":
            continue
        members, replacement = REGIONS[region]
        components, n = ndimage.label(np.isin(labels, members), structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        largest = int(sizes.max())
        if operation == "remove-small":
            remove = sizes < step["min_voxels"]
        elif operation == "remove-relative":
            percent = min(max(int(math.floor(step["min_fraction"] * 100 + 0.5)), 1), 99)
            remove = sizes * 100 < largest * percent
        elif operation == "keep-largest":
            remove = np.ones(n, dtype=bool)
            remove[int(np.argmax(sizes))] = False
        else:
            fail(f"post-processing operation '{operation}' is unknown to this script")
        gone = np.isin(components, np.flatnonzero(remove) + 1)
        labels[gone] = replacement
    below = plan.get("et", {}).get("relabel_below", 0)
    if below > 0 and np.count_nonzero(labels == 3) < below:
        labels[labels == 3] = 1
    return labels


def predict_case(case, naming, files, package, members, plan, tta, out):
    modalities = package["data"]["modalities"]
    missing = [m for m in modalities if m not in files]
    if missing:
        fail(f"case {case}: no {', '.join(missing)} file (the package reads {', '.join(modalities)})")
    loaded = [load_volume(files[m]) for m in modalities]
    images = [data for data, _ in loaded]
    shape = images[0].shape
    for m, data in zip(modalities, images):
        if data.shape != shape:
            fail(f"{files[m]}: shape {data.shape[::-1]} differs from {files[modalities[0]]}'s {shape[::-1]}")
    data_config = package["data"]
    origin, size = crop_box(images, data_config["crop"])
    volume = np.stack(
        [
            normalise(data, crop(data, origin, size), origin, data_config["normalization"], data_config["clip_percentiles"])
            for data in images
        ]
    ).astype(np.float32)
    average = package["predict"]["average"]
    total = None
    for member in members:
        probs = sliding_window(member, volume, package, tta)
        if average == "regions":
            probs = as_regions(member.output, probs)
        total = probs if total is None else total + probs
    probs = total / np.float32(len(members))
    cropped = labels_of(average, probs, package["predict"]["threshold"])
    labels = np.zeros(shape, dtype=np.uint8)
    src = tuple(slice(max(-o, 0), min(s, n - o)) for o, s, n in zip(origin, size, shape))
    dst = tuple(slice(sl.start + o, sl.stop + o) for sl, o in zip(src, origin))
    labels[dst] = cropped[src]
    labels = postprocess(labels, plan)
    if naming == "legacy":
        labels[labels == 3] = package["predict"]["legacy_enhancing_label"]
    reference = loaded[0][1]
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header["descrip"] = b"segtop segmentation"
    image = nib.Nifti1Image(np.ascontiguousarray(labels.T), reference.affine, header)
    image.header.set_slope_inter(1, 0)
    path = os.path.join(out, f"{case}.nii.gz")
    nib.save(image, path)
    return path, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--case", help="one case folder (its four modalities)")
    source.add_argument("--cases", help="a dataset folder: every case under it")
    parser.add_argument("--out", required=True, help="folder for the <case>.nii.gz label maps")
    parser.add_argument("--package", default=HERE, help="the package folder (default: this script's)")
    parser.add_argument("--tta", action="store_true", help="mirror test-time augmentation over augment.flip_axes")
    parser.add_argument("--no-postprocess", action="store_true", help="skip the learned post-processing")
    parser.add_argument("--threads", type=int, default=0, help="threads of the runtime (default: its own choice)")
    parser.add_argument(
        "--runtime", choices=["onnxruntime", "openvino"], default="onnxruntime", help="what runs the ONNX networks"
    )
    args = parser.parse_args()

    package = load_package(args.package)
    members = [Member(args.package, m, package, args.threads, args.runtime) for m in package["member"]]
    plan = {} if args.no_postprocess else package.get("postprocess", {})
    tta = args.tta or package["predict"].get("tta", False)
    root = args.case or args.cases
    cases = find_cases(root)
    if not cases:
        fail(f"{root}: no BraTS cases found")
    if args.case and len(cases) > 1:
        fail(f"{root}: holds {len(cases)} cases; use --cases for a dataset folder")
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    for i, (case, (naming, files)) in enumerate(cases.items()):
        case_start = time.time()
        path, size = predict_case(case, naming, files, package, members, plan, tta, args.out)
        print(f"{i + 1}/{len(cases)} {path}  {time.time() - case_start:.1f} s  ({'x'.join(map(str, size[::-1]))})")
    print(f"wrote {len(cases)} segmentation(s) to {args.out} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
