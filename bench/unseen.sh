#!/usr/bin/env bash
# A run (or an ensemble of runs) on cases it never saw: the official BraTS-SSA lesion-wise Dice,
# legacy Dice, missed lesions and false positives per case, raw and post-processed.
#
#   bench/unseen.sh CASES_DIR OUT_DIR RUN [RUN...] [-- PLAN.toml...]
#
# CASES_DIR is a BraTS dataset folder of cases none of the runs trained or validated on (with
# their label maps); OUT_DIR receives the raw predictions and the scores. The runs segment every
# case once without post-processing (`segtop predict --no-postprocess`); then `segtop eval`
# scores the raw maps, the maps after the first run's own postprocess.toml (what `segtop predict`
# does by default), and after each PLAN given after `--` (`segtop eval --postprocess`). One line
# per configuration: means over cases, and missed ground-truth lesions out of all of them.
# bench/degrade_cases.py makes a degraded copy of CASES_DIR to run this on too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ $# -ge 3 ] || { echo "usage: $0 CASES_DIR OUT_DIR RUN [RUN...] [-- PLAN.toml...]" >&2; exit 2; }
cases=$1 out=$2
shift 2
runs=() plans=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do runs+=(--run "$1"); shift; done
[ $# -gt 0 ] && shift
plans=("$@")
bin=target/release
mkdir -p "$out"

lscpu | sed -n 's/^Model name: *//p'
start=$(date +%s.%N)
"$bin/segtop-train" predict "${runs[@]}" --cases "$cases" --out "$out/raw" --no-postprocess >"$out/predict.log" 2>&1 ||
    { cat "$out/predict.log" >&2; exit 1; }
end=$(date +%s.%N)
echo "predicted $(ls "$out/raw" | wc -l) case(s) in $(python3 -c "print(f'{$end - $start:.0f}')") s"

score() {
    local name=$1; shift
    "$bin/segtop" eval --pred "$out/raw" --gt "$cases" --json "$@" >"$out/$name.json"
    bench/eval_summary.py "$out/$name.json" "$name"
}

score raw
first=$(printf '%s\n' "${runs[@]}" | sed -n 2p)
[ -f "$first/postprocess.toml" ] && score "run-plan" --postprocess "$first/postprocess.toml"
for plan in "${plans[@]}"; do
    score "$(basename "$plan" .toml)" --postprocess "$plan"
done
