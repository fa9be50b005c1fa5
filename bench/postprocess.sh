#!/usr/bin/env bash
# What each step between the network and the label map is worth on a run's test cases, by the
# official BraTS-SSA lesion-wise Dice and legacy Dice: raw labels, the learned post-processing,
# mirror test-time augmentation, and an ensemble of two runs.
#
#   bench/postprocess.sh RUN_A RUN_B GT_DIR [OUT_DIR]
#
# RUN_A and RUN_B are finished runs of one experiment trained with different seeds on the same
# split (their split.json must agree); GT_DIR is the dataset folder they were trained on. Each
# configuration segments RUN_A's test cases (`segtop predict --split test`) and scores them with
# `segtop eval`; the table gives means over the test cases and seconds per case.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ $# -ge 3 ] || { echo "usage: $0 RUN_A RUN_B GT_DIR [OUT_DIR]" >&2; exit 2; }
run_a=$1 run_b=$2 gt=$3 out=${4:-$(mktemp -d)}
bin=target/release
cmp -s "$run_a/split.json" "$run_b/split.json" ||
    { echo "$run_a and $run_b were trained on different splits" >&2; exit 1; }

# The ground truth of the test cases only, so that every case has a prediction.
truth="$out/truth"
mkdir -p "$truth"
python3 - "$run_a/split.json" "$gt" "$truth" <<'EOF'
import json, os, sys
split, gt, truth = sys.argv[1:]
for case in json.load(open(split))["test"]:
    link = os.path.join(truth, case)
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(gt, case)), link)
EOF

lscpu | sed -n 's/^Model name: *//p'
echo "test cases: $(ls "$truth" | wc -l)"
row() {
    local name=$1; shift
    local dir="$out/$name"
    local start end
    start=$(date +%s.%N)
    "$bin/segtop-train" predict "$@" --split test --out "$dir" >"$out/$name.log" 2>&1
    end=$(date +%s.%N)
    "$bin/segtop" eval --pred "$dir" --gt "$truth" --json >"$out/$name.json"
    python3 - "$name" "$out/$name.json" "$start" "$end" <<'EOF'
import json, sys
name, path, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
report = json.load(open(path))
cases = report["cases"]
def mean(region, key):
    values = [r[key] for c in cases for r in c["regions"] if r["region"] == region]
    return sum(values) / len(values)
cells = []
for key in ("lesion_dice", "legacy_dice", "num_fp"):
    cells.append(" / ".join(f"{mean(r, key):.3f}" if key != "num_fp" else f"{mean(r, key):.1f}" for r in ("WT", "TC", "ET")))
print(f"| {name} | " + " | ".join(cells) + f" | {(end - start) / len(cases):.1f} |")
EOF
}
echo "| configuration | lesion-wise Dice WT / TC / ET | legacy Dice WT / TC / ET | FP per case WT / TC / ET | s per case |"
echo "|---|---|---|---|---|"
row "A raw" --run "$run_a" --no-postprocess
row "A post-processed" --run "$run_a"
row "A post-processed + TTA" --run "$run_a" --tta
row "A+B ensemble post-processed" --run "$run_a" --run "$run_b"
row "A+B ensemble post-processed + TTA" --run "$run_a" --run "$run_b" --tta
echo "predictions and scores in $out"
