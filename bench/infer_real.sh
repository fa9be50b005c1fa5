#!/usr/bin/env bash
# Sliding-window inference on real cases with a trained run: segtop's full window grid, segtop
# with `validate.refine` (overlap only where a first pass sees tumour), and the PyTorch
# reference's sliding window over a volume of each case's cropped shape (the same windows as
# segtop's full grid; channels-last and segtop's window batch, its fastest float32 mode), one
# after the other for each case. Prints a JSON line per case, then medians, ratios, and how
# close the refined label maps are to the full grid's (Dice per region, from `segtop eval`).
#
#   bench/infer_real.sh RUN CASES_DIR [MAX_CASES] [NET]
#
# RUN is a finished run directory; CASES_DIR a BraTS dataset folder; MAX_CASES (default 5) the
# first cases of it to use; NET the reference's network (`seed`, `default`, `lite`; default
# `default`, the default experiment's). Predictions are raw (no post-processing), as the
# reference's are. Needs a Python with torch 2.13 (CPU) and numpy: PYTHON=/path/to/python;
# the reference script is REFERENCE (default ../shared/bench/pytorch_seed_unet.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 2 ] || { echo "usage: $0 RUN CASES_DIR [MAX_CASES] [NET]" >&2; exit 2; }
run=$1 cases=$2 max=${3:-5} net=${4:-default}
python=${PYTHON:-python3}
reference=${REFERENCE:-../shared/bench/pytorch_seed_unet.py}
threads=$(nproc)
[ -f "$run/experiment.toml" ] || { echo "$0: $run is not a run directory (no experiment.toml)" >&2; exit 2; }
[ -f "$reference" ] || { echo "$0: no reference script at $reference; set REFERENCE" >&2; exit 2; }
"$python" -c 'import torch, numpy' 2>/dev/null ||
    { echo "$0: $python lacks torch/numpy; set PYTHON to one that has them" >&2; exit 1; }
cargo build --release --quiet --bins
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Two copies of the run that differ only in validate.refine.
for mode in full refine; do
    cp -r "$run" "$work/$mode"
    value=$([ "$mode" = refine ] && echo true || echo false)
    toml="$work/$mode/experiment.toml"
    if grep -q '^refine = ' "$toml"; then
        sed -i "s/^refine = .*/refine = $value/" "$toml"
    else
        sed -i "/^\[validate\]/a refine = $value" "$toml"
    fi
done
setting() { sed -n "/^\[validate\]/,/^\[/s/^$1 = //p" "$work/full/experiment.toml" | head -1; }
window=$(setting window | tr -d '[] ' | cut -d, -f1)
overlap=$(setting overlap)
gaussian=$([ "$(setting gaussian)" = true ] && echo 1 || echo 0)
window_batch=$(setting window_batch)

lscpu | sed -n 's/^Model name: *//p'
echo "threads $threads, window $window, overlap $overlap, window batch $window_batch, reference --net $net" >&2
results="$work/results.jsonl"
for case in $(find "$cases" -mindepth 1 -maxdepth 1 -type d | sort | head -n "$max"); do
    line=""
    for mode in full refine; do
        # `1/1 OUT/ID.nii.gz  12.3 s  (144x176x140, 37 of 80 windows)`
        out=$("$bin/segtop-train" predict --run "$work/$mode" --case "$case" --out "$work/out-$mode" \
            --no-postprocess 2>/dev/null | grep '^1/1 ')
        read -r seconds shape run_windows grid_windows < <(echo "$out" |
            sed -E 's/.*  ([0-9.]+) s  \(([0-9x]+), ([0-9]+) of ([0-9]+) windows\)/\1 \2 \3 \4/')
        line="$line\"${mode}_s\": $seconds, \"${mode}_windows\": $run_windows, "
    done
    ref=$("$python" "$reference" --net "$net" --infer --case "$shape" --window "$window" --overlap "$overlap" \
        --gaussian "$gaussian" --window-batch "$window_batch" --channels-last --threads "$threads")
    ref_s=$(echo "$ref" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["seconds"])')
    echo "{\"case\": \"$(basename "$case")\", \"shape\": \"$shape\", \"grid_windows\": $grid_windows, ${line}\"reference_s\": $ref_s}" |
        tee -a "$results"
done

"$bin/segtop" eval --pred "$work/out-refine" --gt "$work/out-full" --json >"$work/agreement.json"
"$python" - "$results" "$work/agreement.json" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
med = lambda key: statistics.median(r[key] for r in rows)
print(f"{len(rows)} cases, medians: full grid {med('full_s'):.1f} s ({med('grid_windows'):.0f} windows), "
      f"refined {med('refine_s'):.1f} s ({med('refine_windows'):.0f} windows), PyTorch {med('reference_s'):.1f} s")
ratios = lambda key: statistics.median(r["reference_s"] / r[key] for r in rows)
print(f"PyTorch / segtop, median per case: full grid {ratios('full_s'):.2f}x, refined {ratios('refine_s'):.2f}x")
cases = json.load(open(sys.argv[2]))["cases"]
for region in ("WT", "TC", "ET"):
    dice = [next(r for r in c["regions"] if r["region"] == region)["legacy_dice"] for c in cases]
    print(f"refined vs full grid, {region} Dice: mean {statistics.mean(dice):.4f}, lowest {min(dice):.4f}")
PY
