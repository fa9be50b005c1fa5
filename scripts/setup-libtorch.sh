#!/usr/bin/env bash
# Makes a CPU-only libtorch 2.13.0 available to this checkout, once per machine.
#
# tch 0.26 needs libtorch 2.13.0. The official CPU zip is not on a package registry, so this
# script assembles the CPU part of PyPI's torch wheel (plus the two small CUDA runtime
# libraries its profiler links against, which load fine without a GPU) into a cache
# directory, and points `.libtorch` in the checkout at it. `.cargo/config.toml` hands that
# path to the build as LIBTORCH, and build.rs bakes it into the trainer's rpath, so a plain
# `cargo build` works afterwards with nothing set by hand.
#
# Idempotent: a second run finds the assembled directory and downloads nothing.
# If LIBTORCH is already set (e.g. the official libtorch 2.13 CPU zip), that one is used.
#
# Environment:
#   LIBTORCH          use this libtorch 2.13 instead of assembling one
#   SEGTOP_CACHE_DIR  where to assemble (default: ${XDG_CACHE_HOME:-~/.cache}/segtop)
set -euo pipefail

TORCH_VERSION=2.13.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
link="$repo/.libtorch"

say() { printf 'setup-libtorch: %s\n' "$*" >&2; }
die() { printf 'setup-libtorch: error: %s\n' "$*" >&2; exit 1; }

# Reads the version a libtorch directory declares ('2.13.0+cpu'), or nothing.
libtorch_version() {
    if [ -f "$1/build-version" ]; then
        head -n 1 "$1/build-version"
    elif [ -f "$1/include/torch/csrc/api/include/torch/version.h" ]; then
        sed -n 's/^#define TORCH_VERSION "\(.*\)"/\1/p' "$1/include/torch/csrc/api/include/torch/version.h"
    fi
}

point_checkout_at() {
    ln -sfn "$1" "$link"
    say "libtorch $(libtorch_version "$1") at $1"
}

if [ -n "${LIBTORCH:-}" ]; then
    [ -f "$LIBTORCH/lib/libtorch_cpu.so" ] ||
        die "LIBTORCH='$LIBTORCH' has no lib/libtorch_cpu.so; point it at an unpacked libtorch $TORCH_VERSION, or unset it to assemble one from PyPI"
    found=$(libtorch_version "$LIBTORCH")
    case "$found" in
        "$TORCH_VERSION"*) point_checkout_at "$(cd "$LIBTORCH" && pwd)"; exit 0 ;;
        *) die "LIBTORCH='$LIBTORCH' is libtorch '${found:-unknown version}'; segtop's tch 0.26 needs $TORCH_VERSION" ;;
    esac
fi

cache=${SEGTOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/segtop}
dest="$cache/libtorch-$TORCH_VERSION-cpu"
if [ -f "$dest/.complete" ]; then
    point_checkout_at "$dest"
    exit 0
fi

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "assembling libtorch from PyPI is supported on Linux x86_64 only; on $(uname -s)-$(uname -m) unpack libtorch $TORCH_VERSION yourself and set LIBTORCH to it" ;;
esac
command -v python3 >/dev/null ||
    die "python3 not found; install it (Debian/Ubuntu: sudo apt-get install python3-pip) or set LIBTORCH to a libtorch $TORCH_VERSION"
python3 -m pip --version >/dev/null 2>&1 ||
    die "pip for python3 not found; install it (Debian/Ubuntu: sudo apt-get install python3-pip) or set LIBTORCH to a libtorch $TORCH_VERSION"
command -v cc >/dev/null ||
    die "no C compiler 'cc' found; install one (Debian/Ubuntu: sudo apt-get install build-essential)"

mkdir -p "$cache"
work=$(mktemp -d "$cache/.assemble.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Pinned wheels; pip refuses any file whose sha256 differs.
cat > "$work/requirements.txt" <<REQ
torch==$TORCH_VERSION --hash=sha256:60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7
nvidia-cuda-runtime==13.0.96 --hash=sha256:7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
nvidia-cuda-cupti==13.0.85 --hash=sha256:4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8
REQ

say "downloading PyTorch $TORCH_VERSION wheels from PyPI (about 540 MB, once per machine)"
# The wheels' libraries do not depend on the Python version: ask for the cp311 build whatever
# python3 this machine has, so that the pinned hashes always apply.
if ! python3 -m pip download --no-deps --require-hashes --only-binary=:all: \
        --implementation cp --python-version 3.11 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -r "$work/requirements.txt" -d "$work/wheels"; then
    die "pip could not download the pinned wheels (is PyPI reachable from here? see pip's message above); or set LIBTORCH to a libtorch $TORCH_VERSION"
fi

say "unpacking the CPU libraries and headers"
python3 - "$work/wheels" "$work/libtorch" <<'PY'
import pathlib, shutil, sys, zipfile

wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wanted = {
    "torch/lib/libtorch_cpu.so": "lib/libtorch_cpu.so",
    "torch/lib/libc10.so": "lib/libc10.so",
    "torch/lib/libgomp.so.1": "lib/libgomp.so.1",
    "nvidia/cu13/lib/libcudart.so.13": "lib/libcudart.so.13",
    "nvidia/cu13/lib/libcupti.so.13": "lib/libcupti.so.13",
}
found = set()
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if name in wanted:
                target = out / wanted[name]
            elif name.startswith("torch/include/") and not name.endswith("/"):
                target = out / name[len("torch/"):]
            else:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            found.add(name)
missing = set(wanted) - found
if missing:
    sys.exit("setup-libtorch: error: the wheels lack " + ", ".join(sorted(missing)))
PY

# torch-sys links -ltorch; the wheel's libtorch.so is a shim that pulls in the CUDA build.
# An empty library satisfies the linker and keeps the GPU stack out.
echo 'void segtop_libtorch_stub(void) {}' > "$work/stub.c"
cc -shared -fPIC -o "$work/libtorch/lib/libtorch.so" "$work/stub.c"
ln -s libgomp.so.1 "$work/libtorch/lib/libgomp.so"
echo "$TORCH_VERSION+cpu" > "$work/libtorch/build-version"
touch "$work/libtorch/.complete"

rm -rf "$dest"
mv "$work/libtorch" "$dest"
say "assembled $(du -sh "$dest" | cut -f1) in $dest"
point_checkout_at "$dest"
