#!/usr/bin/env bash
# One model package, three ways to run it, on real cases: `segtop predict --package` (libtorch),
# the package's predict.py with ONNX Runtime, and predict.py with OpenVINO reading the same ONNX
# files (when the openvino package imports). Seconds per case, peak memory, and the Dice between
# each way's label maps and segtop's, per region (WT, TC, ET) and the share of equal voxels.
#
#   bench/package.sh PACKAGE_DIR CASES_DIR OUT_DIR [THREADS]
#
# PYTHON (default python3) must import numpy, nibabel, scipy and onnxruntime (PYTHONPATH is
# passed on). THREADS (default: every core) is given to all three.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ $# -ge 3 ] || { echo "usage: $0 PACKAGE_DIR CASES_DIR OUT_DIR [THREADS]" >&2; exit 2; }
package=$1 cases=$2 out=$3
threads=${4:-$(nproc)}
python=${PYTHON:-python3}
bin=target/release
mkdir -p "$out"

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $threads thread(s); $(ls -d "$cases"/*/ | wc -l) case(s)"

# Runs a command, timed; prints "seconds peak_MB".
timed() {
    local log=$1; shift
    /usr/bin/time -f '%e %M' -o "$log.time" "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    awk '{ printf "%.1f %.0f\n", $1, $2 / 1024 }' "$log.time"
}

runs=()
read -r s m < <(OMP_NUM_THREADS=$threads timed "$out/segtop.log" "$bin/segtop-train" predict --package "$package" --cases "$cases" --out "$out/segtop")
runs+=("segtop predict --package (libtorch)|$s|$m|segtop")
read -r s m < <(timed "$out/onnxruntime.log" "$python" "$package/predict.py" --cases "$cases" --out "$out/onnxruntime" --threads "$threads")
runs+=("predict.py, ONNX Runtime|$s|$m|onnxruntime")
if "$python" -c 'import openvino' 2>/dev/null; then
    read -r s m < <(timed "$out/openvino.log" "$python" "$package/predict.py" --cases "$cases" --out "$out/openvino" --threads "$threads" --runtime openvino)
    runs+=("predict.py, OpenVINO|$s|$m|openvino")
else
    echo "(openvino does not import: its row is left out)"
fi

n=$(ls "$out/segtop" | wc -l)
echo
echo "| runtime | seconds per case | peak memory (MB) | Dice with segtop's maps WT / TC / ET | equal voxels |"
echo "|---|---|---|---|---|"
for row in "${runs[@]}"; do
    IFS='|' read -r name seconds peak folder <<<"$row"
    agreement=$("$python" - "$out/segtop" "$out/$folder" <<'EOF'
import os, sys
import nibabel as nib
import numpy as np
ours, theirs = sys.argv[1:3]
dice = {"WT": [], "TC": [], "ET": []}
equal = []
for name in sorted(os.listdir(ours)):
    a = np.asarray(nib.load(os.path.join(ours, name)).dataobj)
    b = np.asarray(nib.load(os.path.join(theirs, name)).dataobj)
    equal.append((a == b).mean())
    for region, labels in (("WT", (1, 2, 3, 4)), ("TC", (1, 3, 4)), ("ET", (3, 4))):
        x, y = np.isin(a, labels), np.isin(b, labels)
        total = x.sum() + y.sum()
        dice[region].append(1.0 if total == 0 else 2 * (x & y).sum() / total)
print(" / ".join(f"{np.mean(d):.4f}" for d in dice.values()), f"| {100 * np.mean(equal):.4f}%", sep=" ")
EOF
)
    echo "| $name | $(awk -v s="$seconds" -v n="$n" 'BEGIN { printf "%.1f", s / n }') | $peak | $agreement |"
done
