#!/usr/bin/env bash
# segtop eval against the official BraTS 2024 metric code, on generated prediction/ground-truth
# pairs: the largest difference of every metric, and both programs' times.
#
#   bench/metrics_agreement.sh REFERENCE_CHECKOUT PYTHON [CASES] [SIZE] [CHALLENGE]
#
# REFERENCE_CHECKOUT is a checkout of github.com/rachitsaluja/BraTS-2024-Metrics; PYTHON has its
# requirements.txt installed (numpy 1.26, scipy 1.10, nibabel, pandas, cc3d, medpy: a venv with
# `pip install -r requirements.txt` on Python 3.11). CASES synthetic cases (default 2) of SIZE
# voxels (default 96x96x64) give 14 pairs each. The reference is slow on full-size volumes
# (minutes per pair), hence the small default. Never run by CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
reference=${1:?usage: bench/metrics_agreement.sh REFERENCE_CHECKOUT PYTHON [CASES] [SIZE] [CHALLENGE]}
python=${2:?usage: bench/metrics_agreement.sh REFERENCE_CHECKOUT PYTHON [CASES] [SIZE] [CHALLENGE]}
cases=${3:-2}
size=${4:-96x96x64}
challenge=${5:-ssa}
[ -f "$reference/metrics_SSA.py" ] || { echo "$reference has no metrics_SSA.py: not a BraTS-2024-Metrics checkout" >&2; exit 1; }
"$python" -c 'import cc3d, medpy, pandas, scipy, nibabel' 2>/dev/null ||
    { echo "$python lacks the reference's requirements (pip install -r $reference/requirements.txt)" >&2; exit 1; }
cargo build --release --quiet --bin segtop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/segtop synth --out "$work/cases" --cases "$cases" --size "$size" --seed 11 2>/dev/null
"$python" bench/metrics_agreement.py --reference "$(cd "$reference" && pwd)" --segtop "$PWD/target/release/segtop" \
    --cases "$work/cases" --work "$work" --challenge "$challenge" ${LIMIT:+--limit "$LIMIT"}
