#!/usr/bin/env bash
# Does cropping to the brain change what a run segments? `segtop predict` runs the sliding
# window over the brain's bounding box (or the experiment's data.crop box); PyTorch's reference
# (and the seed tutorial's own inference) slides the same windows over the whole grid, which
# does more work. This predicts every case both ways with the run's best weights and reports:
# the seconds per case, the Dice between the two label maps per region (WT, TC, ET), and the
# official lesion-wise and legacy Dice of each against the ground truth, raw and after the run's
# post-processing.
#
#   bench/crop_agreement.sh CASES_DIR OUT_DIR RUN
#
# CASES_DIR is a BraTS dataset folder with label maps (CASES_LIMIT=N takes its first N cases);
# OUT_DIR receives both sets of predictions and the scores. Needs python3 with numpy and
# nibabel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ $# -eq 3 ] || { echo "usage: $0 CASES_DIR OUT_DIR RUN" >&2; exit 2; }
cases=$1 out=$2 run=$3
[ -f "$run/experiment.toml" ] || { echo "bench/crop_agreement.sh: $run is not a run directory" >&2; exit 1; }
weights="$run/checkpoints/best.safetensors"
[ -f "$weights" ] || weights=$( (ls -d "$run"/checkpoints/step-* 2>/dev/null || true) | sort | tail -1)/model.safetensors
[ -f "$weights" ] || { echo "bench/crop_agreement.sh: $run has no checkpoint" >&2; exit 1; }
bin=target/release
python3 -c 'import numpy, nibabel' 2>/dev/null ||
    { echo "bench/crop_agreement.sh: python3 lacks numpy or nibabel" >&2; exit 1; }
mkdir -p "$out/cases"
find -L "$cases" -mindepth 1 -maxdepth 1 -type d | sort | head -n "${CASES_LIMIT:-100000}" |
    while read -r case; do ln -sfn "$(realpath "$case")" "$out/cases/"; done
# The same experiment, windows over the whole grid.
sed 's/^crop = .*/crop = "none"/' "$run/experiment.toml" >"$out/whole-grid.toml"

lscpu | sed -n 's/^Model name: *//p'
predict() {
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    "$bin/segtop-train" predict "$@" --cases "$out/cases" --out "$out/$name" --no-postprocess >"$out/$name.log" 2>&1 ||
        { cat "$out/$name.log" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "$name: $(python3 -c "print(f'{($end - $start) / $(ls "$out/cases" | wc -l):.1f}')") s per case" \
        "($(grep -o '[0-9]* windows' "$out/$name.log" | awk '{s += $1} END {print s / NR}') windows a case)"
}
predict cropped --run "$run"
predict whole-grid --checkpoint "$weights" --experiment "$out/whole-grid.toml"

python3 - "$out/cropped" "$out/whole-grid" <<'EOF'
import glob, os, statistics, sys
import nibabel as nib
import numpy as np
regions = {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (3, 4)}
rows = {r: [] for r in regions}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.nii.gz"))):
    a = np.asarray(nib.load(path).dataobj)
    b = np.asarray(nib.load(os.path.join(sys.argv[2], os.path.basename(path))).dataobj)
    for region, labels in regions.items():
        x, y = np.isin(a, labels), np.isin(b, labels)
        total = x.sum() + y.sum()
        rows[region].append(1.0 if total == 0 else 2 * (x & y).sum() / total)
print("label maps cropped vs whole grid, Dice (mean, min over cases): " + " | ".join(
    f"{r} {statistics.mean(v):.4f} {min(v):.4f}" for r, v in rows.items()))
EOF

score() {
    local name=$1 plan=$2; shift 2
    "$bin/segtop" eval --pred "$out/$name" --gt "$out/cases" --json "$@" >"$out/$name-$plan.json"
    bench/eval_summary.py "$out/$name-$plan.json" "$name $plan"
}
for name in cropped whole-grid; do
    score "$name" raw
    [ -f "$run/postprocess.toml" ] && score "$name" run-plan --postprocess "$run/postprocess.toml"
done
