#!/usr/bin/env bash
# Loading and preprocessing one full-size BraTS case: segtop against nibabel + numpy, run
# alternately in the same invocation, reported as medians and ratios.
#
#   bench/data.sh [CASE_DIR] [ROUNDS]
#
# Without CASE_DIR a synthetic 240x240x155 case is generated. Needs a Python with numpy and
# nibabel: PYTHON=/path/to/python (default python3); see the README for a one-time venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
rounds=${2:-5}
"$python" -c 'import nibabel, numpy' 2>/dev/null ||
    { echo "bench/data.sh: $python lacks nibabel/numpy; set PYTHON to one that has them (see README)" >&2; exit 1; }
cargo build --release --quiet --bin segtop
case_dir=${1:-}
if [ -z "$case_dir" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    target/release/segtop synth --out "$work" --cases 1 --size 240x240x155 --seed 1 2>/dev/null
    case_dir="$work/BraTS-SSA-90001-000"
fi
results=$(mktemp)
for _ in $(seq "$rounds"); do
    target/release/segtop data bench "$case_dir" --repeats 3 --json >> "$results"
    "$python" bench/nibabel_case.py "$case_dir" 3 >> "$results"
done
"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(impl, key):
    return statistics.median(r[key] for r in rows if r["impl"] == impl)
seg = {k: med("segtop", k) for k in ("load_s", "load_preprocess_s", "cache_s")}
nib = {k: med("nibabel+numpy", k) for k in ("load_s", "load_preprocess_s")}
print(f"medians over {len(rows) // 2} alternating rounds (seconds):")
print(f"  load 4 modalities + seg      segtop {seg['load_s']:.3f}   nibabel {nib['load_s']:.3f}   ratio {nib['load_s'] / seg['load_s']:.1f}x")
print(f"  load + preprocess            segtop {seg['load_preprocess_s']:.3f}   nibabel {nib['load_preprocess_s']:.3f}   ratio {nib['load_preprocess_s'] / seg['load_preprocess_s']:.1f}x")
print(f"  preprocessed, from cache     segtop {seg['cache_s']:.3f}   (vs nibabel load + preprocess: {nib['load_preprocess_s'] / seg['cache_s']:.0f}x)")
PY
rm -f "$results"
