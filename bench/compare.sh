#!/usr/bin/env bash
# Training and inference speed of the seed U-Net: segtop against PyTorch eager, run
# alternately in the same invocation and reported as medians and ratios.
#
#   bench/compare.sh [ROUNDS] [THREADS]
#
# Each round runs, one after the other:
#   - training, batch 2 of 64^3 (seed-tutorial): segtop, PyTorch, PyTorch --channels-last;
#   - training, batch 1 of 128^3: the same three;
#   - sliding-window inference of one 240x240x155 case with seed-tutorial's windows and
#     overlap: segtop; PyTorch and PyTorch --channels-last, one window at a time (the plain
#     loop); and PyTorch --channels-last with segtop's window batch;
#   - training of experiments/lite.toml (64^3 batch 2): segtop, its twin in PyTorch
#     (pytorch_reference.py --lite), and the twin --channels-last.
# segtop runs in float32 there; on a CPU with bfloat16 instructions (what `segtop-train info`
# reports as auto's pick), every case also runs segtop --precision bfloat16 and PyTorch
# --channels-last --bf16 (autocast), its fastest CPU mode.
# Needs a Python with torch 2.13 (CPU) and numpy: PYTHON=/path/to/python; see the README.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
rounds=${1:-3}
threads=${2:-2}
"$python" -c 'import torch, numpy' 2>/dev/null ||
    { echo "bench/compare.sh: $python lacks torch/numpy; set PYTHON to one that has them (see README)" >&2; exit 1; }
cargo build --release --quiet --bin segtop-train
trainer=target/release/segtop-train
reference=bench/pytorch_reference.py
seed=experiments/seed-tutorial.toml
results=$(mktemp)
trap 'rm -f "$results"' EXIT
# Runs one measurement and appends its JSON line, tagged with the case it belongs to.
measure() {
    local tag=$1
    shift
    echo "bench/compare.sh: $tag: $*" >&2
    "$@" | "$python" -c 'import json, sys; r = json.loads(sys.stdin.read()); r["case_tag"] = sys.argv[1]; print(json.dumps(r))' "$tag" >> "$results"
}
# segtop's inference settings for the seed experiment, for the reference to use the same.
read -r window overlap gaussian window_batch < <("$trainer" bench "$seed" --steps 2 --patch 16 --case 16x16x16 --json 2>/dev/null |
    "$python" -c 'import json, sys; i = json.load(sys.stdin)["inference"]; print(i["window"][0], i["overlap"], int(i["gaussian"]), i["window_batch"])')
bf16=no
"$trainer" info | grep -q "auto picks bfloat16" && bf16=yes
echo "bench/compare.sh: bfloat16 rows: $bf16" >&2
for round in $(seq "$rounds"); do
    echo "bench/compare.sh: round $round of $rounds" >&2
    # patch, batch, steps (the first step of each is a warm-up left out of the median)
    for shape in "64 2 6" "128 1 4"; do
        set -- $shape
        tag="train-$1-b$2"
        measure "$tag" "$trainer" bench "$seed" --patch "$1" --batch "$2" --steps "$3" --threads "$threads" --no-inference --json --precision float32
        measure "$tag" "$python" "$reference" --patch "$1" --batch "$2" --steps "$3" --threads "$threads"
        measure "$tag" "$python" "$reference" --patch "$1" --batch "$2" --steps "$3" --threads "$threads" --channels-last
        if [ "$bf16" = yes ]; then
            measure "$tag" "$trainer" bench "$seed" --patch "$1" --batch "$2" --steps "$3" --threads "$threads" --no-inference --json --precision bfloat16
            measure "$tag" "$python" "$reference" --patch "$1" --batch "$2" --steps "$3" --threads "$threads" --channels-last --bf16
        fi
    done
    measure infer "$trainer" bench "$seed" --steps 2 --patch 16 --threads "$threads" --json --precision float32
    measure infer "$python" "$reference" --infer --window "$window" --overlap "$overlap" --gaussian "$gaussian" --threads "$threads"
    measure infer "$python" "$reference" --infer --window "$window" --overlap "$overlap" --gaussian "$gaussian" --threads "$threads" --channels-last
    if [ "$window_batch" -gt 1 ]; then
        measure infer "$python" "$reference" --infer --window "$window" --overlap "$overlap" --gaussian "$gaussian" --threads "$threads" --channels-last --window-batch "$window_batch"
    fi
    if [ "$bf16" = yes ]; then
        measure infer "$trainer" bench "$seed" --steps 2 --patch 16 --threads "$threads" --json --precision bfloat16
        measure infer "$python" "$reference" --infer --window "$window" --overlap "$overlap" --gaussian "$gaussian" --threads "$threads" --channels-last --window-batch "$window_batch" --bf16
    fi
    measure lite "$trainer" bench experiments/lite.toml --steps 6 --threads "$threads" --no-inference --json --precision float32
    measure lite "$python" "$reference" --lite --patch 64 --batch 2 --steps 6 --threads "$threads"
    measure lite "$python" "$reference" --lite --patch 64 --batch 2 --steps 6 --threads "$threads" --channels-last
    if [ "$bf16" = yes ]; then
        measure lite "$trainer" bench experiments/lite.toml --steps 6 --threads "$threads" --no-inference --json --precision bfloat16
        measure lite "$python" "$reference" --lite --patch 64 --batch 2 --steps 6 --threads "$threads" --channels-last --bf16
    fi
done
"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]

def median(tag, impl, key):
    values = []
    for r in rows:
        if r["case_tag"] != tag or r["impl"] != impl:
            continue
        if tag == "infer" and impl.startswith("segtop"):
            r = r["inference"]
        values.append(r[key])
    return statistics.median(values) if values else None

print(f"{'case':<16}{'implementation':<44}{'median':>10}{'rate':>14}{'peak RSS':>10}{'segtop ×':>12}{'segtop bf16 ×':>15}")
for tag, what in [("train-64-b2", "s/step"), ("train-128-b1", "s/step"), ("infer", "s/case"), ("lite", "s/step")]:
    key, rate = ("seconds", "voxels_per_s") if tag == "infer" else ("median_step_s", "patches_per_s")
    ours = median(tag, "segtop", key)
    ours_bf16 = median(tag, "segtop-bf16", key)
    impls = ["segtop", "segtop-bf16", "pytorch-eager", "pytorch-eager-channels-last", "pytorch-eager-channels-last-bf16"]
    if tag == "infer":
        impls += sorted({r["impl"] for r in rows if "window-batch" in r["impl"]})
    for impl in impls:
        t = median(tag, impl, key)
        if t is None:
            continue
        r = median(tag, impl, rate)
        rss = median(tag, impl, "peak_rss_mb")
        shown_rate = f"{r / 1e6:.2f} Mvox/s" if tag == "infer" else f"{r:.3f} p/s"
        speed = "" if impl == "segtop" or ours is None else f"{t / ours:.2f}x"
        speed_bf16 = "" if impl == "segtop-bf16" or ours_bf16 is None else f"{t / ours_bf16:.2f}x"
        print(f"{tag:<16}{impl:<44}{t:>8.3f} s{shown_rate:>14}{rss:>7.0f} MB{speed:>12}{speed_bf16:>15}")
    print()
seg = [r for r in rows if r["impl"] == "segtop" and r["case_tag"] == "train-64-b2"]
ref = [r for r in rows if r["impl"] == "pytorch-eager" and r["case_tag"] == "train-64-b2"]
if seg and ref:
    ratio = statistics.median(r["peak_rss_mb"] for r in seg) / statistics.median(r["peak_rss_mb"] for r in ref)
    print(f"peak RSS, training 64^3 batch 2: segtop / PyTorch = {ratio:.2f}")
print(f"{len(rows)} measurements, {sum(1 for r in rows if r['impl'] == 'segtop')} of them segtop's; medians over rounds")
PY
