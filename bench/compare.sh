#!/usr/bin/env bash
# segtop against PyTorch on the CPU, at every instruction-set level this machine can emulate,
# run alternately in the same invocation and reported as medians and ratios.
#
#   bench/compare.sh [ROUNDS] [THREADS] [NETS] [LEVELS]
#
# LEVELS (default: every one this CPU has) are amx, avx512-bf16, avx512 and avx2: each caps
# oneDNN and MKL for both sides (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), which is how one
# machine stands in for older ones. NETS (default "default seed lite") are the default
# experiment's network (only [data] set), experiments/seed-tutorial.toml's and
# experiments/lite.toml's. Each round, at each level and for each network, runs one after the
# other:
#   - training, batch 2 of 64^3: segtop in float32, PyTorch eager and channels-last (and where
#     the level has bfloat16, segtop in bfloat16 and PyTorch channels-last with autocast);
#   - sliding-window inference of one random 240x240x155 case with the experiment's windows:
#     segtop, and PyTorch eager and channels-last with segtop's window batch (and in bfloat16);
#   - `segtop predict` of whole cases as a user runs it (reading the NIfTI files, cropping as
#     the experiment says, the sliding window over the crop, writing the label map; the median
#     of the first CASES_LIMIT=3 cases of CASES, a BraTS dataset folder, else of synthetic ones),
#     against the same PyTorch sliding window over the cases' whole grid, which is what the
#     reference does with a case (it does not crop, and reads nothing);
#   - the level's ceiling: an sgemm of 2048^2 and the forward convolution of the network's
#     largest layer (16 to 16 channels, 3x3x3, 64^3, batch 2, channels-last), in PyTorch.
# Then one row per level, network and case: segtop's best against PyTorch's fastest mode at that
# level, and segtop's training GFLOP/s as a share of the convolution ceiling.
#
# The reference is bench/pytorch_reference.py, or any script with its options (REFERENCE=...,
# e.g. the shared pytorch_seed_unet.py). Needs a Python with torch 2.13 (CPU) and numpy:
# PYTHON=/path/to/python (see docs/src/benchmarks.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
reference=${REFERENCE:-bench/pytorch_reference.py}
rounds=${1:-2}
threads=${2:-2}
nets=${3:-default seed lite}
wanted=${4:-all}
"$python" -c 'import torch, numpy' 2>/dev/null ||
    { echo "bench/compare.sh: $python lacks torch/numpy; set PYTHON to one that has them" >&2; exit 1; }
[ -f "$reference" ] || { echo "bench/compare.sh: no reference script at $reference" >&2; exit 1; }
cargo build --release --quiet --bin segtop-train
trainer=target/release/segtop-train
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
# The cases `segtop predict` is timed on: links to the first few of CASES, or synthetic ones
# (their brain's box is 139x170x126 voxels; real BraTS brains are a little larger).
mkdir "$work/cases"
if [ -n "${CASES:-}" ]; then
    find -L "$CASES" -mindepth 1 -maxdepth 1 -type d | sort | head -n "${CASES_LIMIT:-3}" |
        while read -r case; do ln -s "$(realpath "$case")" "$work/cases/"; done
    [ -n "$(ls "$work/cases")" ] || { echo "bench/compare.sh: no case folders in $CASES" >&2; exit 1; }
else
    cargo build --release --quiet --bin segtop
    target/release/segtop synth --out "$work/cases" --cases "${CASES_LIMIT:-3}" >/dev/null
fi
# The default experiment: nothing set but the (unused) data folder.
printf '[data]\nroot = "%s"\n' "$work" >"$work/default.toml"
experiment_of() {
    case $1 in
        default) echo "$work/default.toml" ;;
        seed) echo experiments/seed-tutorial.toml ;;
        lite) echo experiments/lite.toml ;;
        *) echo "bench/compare.sh: unknown network '$1' (default, seed, lite)" >&2; exit 2 ;;
    esac
}

# Levels: name, oneDNN cap, MKL cap, whether it computes bfloat16.
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ $flags == *" $1 "* ]]; }
levels=()
has amx_bf16 && levels+=("amx AVX512_CORE_AMX AVX512 yes")
has avx512_bf16 && levels+=("avx512-bf16 AVX512_CORE_BF16 AVX512 yes")
has avx512f && levels+=("avx512 AVX512_CORE AVX512 no")
has avx2 && levels+=("avx2 AVX2 AVX2 no")
if [ "$wanted" != all ]; then
    chosen=()
    for level in "${levels[@]}"; do
        [[ " $wanted " == *" ${level%% *} "* ]] && chosen+=("$level")
    done
    levels=("${chosen[@]}")
fi
[ ${#levels[@]} -gt 0 ] || { echo "bench/compare.sh: none of the levels '$wanted' on this CPU" >&2; exit 1; }
lscpu | sed -n 's/^Model name: *//p'
echo "bench/compare.sh: levels: ${levels[*]%% *}; networks: $nets; $threads threads; reference $reference" >&2

# Runs one measurement under the level's caps and appends its JSON line, tagged.
measure() {
    local tags=$1
    shift
    echo "bench/compare.sh: $tags: $*" >&2
    (export ONEDNN_MAX_CPU_ISA="$isa" MKL_ENABLE_INSTRUCTIONS="$mkl"; "$@") |
        "$python" -c 'import json, sys; r = json.loads(sys.stdin.read().strip().splitlines()[-1]); r.update(json.loads(sys.argv[1])); print(json.dumps(r))' "$tags" >>"$results"
}

ceiling() {
    "$python" - "$threads" "$1" <<'PY'
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
kind = torch.bfloat16 if sys.argv[2] == "bf16" else torch.float32
def best(f, flop):
    f()
    times = []
    for _ in range(5):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return flop / sorted(times)[len(times) // 2] / 1e9
a = torch.randn(2048, 2048, dtype=kind)
gemm = best(lambda: a @ a, 2 * 2048 ** 3)
conv = torch.nn.Conv3d(16, 16, 3, padding=1).to(kind).to(memory_format=torch.channels_last_3d)
x = torch.randn(2, 16, 64, 64, 64, dtype=kind).to(memory_format=torch.channels_last_3d)
with torch.no_grad():
    conv_rate = best(lambda: conv(x), 2 * 2 * 16 * 16 * 27 * 64 ** 3)
print(json.dumps({"impl": "ceiling", "gemm_gflops": gemm, "conv_gflops": conv_rate}))
PY
}

for round in $(seq "$rounds"); do
    for level in "${levels[@]}"; do
        read -r name isa mkl bf16 <<<"$level"
        echo "bench/compare.sh: round $round of $rounds, level $name" >&2
        measure "{\"level\": \"$name\", \"case\": \"ceiling\", \"precision\": \"float32\"}" ceiling f32
        [ "$bf16" = yes ] && measure "{\"level\": \"$name\", \"case\": \"ceiling\", \"precision\": \"bfloat16\"}" ceiling bf16
        for net in $nets; do
            experiment=$(experiment_of "$net")
            tag() { echo "{\"level\": \"$name\", \"net\": \"$net\", \"case\": \"$1\", \"precision\": \"$2\"}"; }
            precisions=(float32)
            [ "$bf16" = yes ] && precisions+=(bfloat16)
            for precision in "${precisions[@]}"; do
                measure "$(tag train "$precision")" "$trainer" bench "$experiment" --patch 64 --batch 2 --steps 6 \
                    --threads "$threads" --no-inference --json --precision "$precision"
            done
            ref=("$python" "$reference" --net "$net" --threads "$threads")
            measure "$(tag train float32)" "${ref[@]}" --patch 64 --batch 2 --steps 6
            measure "$(tag train float32)" "${ref[@]}" --patch 64 --batch 2 --steps 6 --channels-last
            [ "$bf16" = yes ] && measure "$(tag train bfloat16)" "${ref[@]}" --patch 64 --batch 2 --steps 6 --channels-last --bf16
            for precision in "${precisions[@]}"; do
                measure "$(tag infer "$precision")" "$trainer" bench "$experiment" --steps 2 --patch 16 \
                    --threads "$threads" --json --precision "$precision"
                measure "$(tag predict "$precision")" "$trainer" bench "$experiment" --steps 2 --patch 16 \
                    --threads "$threads" --json --precision "$precision" --no-inference --cases "$work/cases"
            done
            read -r window overlap gaussian window_batch < <(tail -2 "$results" | head -1 | "$python" -c \
                'import json, sys; i = json.load(sys.stdin)["inference"]; print(i["window"][0], i["overlap"], int(i["gaussian"]), i["window_batch"])')
            infer=("${ref[@]}" --infer --window "$window" --overlap "$overlap" --gaussian "$gaussian" --window-batch "$window_batch")
            measure "$(tag infer float32)" "${infer[@]}"
            measure "$(tag infer float32)" "${infer[@]}" --channels-last
            [ "$bf16" = yes ] && measure "$(tag infer bfloat16)" "${infer[@]}" --channels-last --bf16
        done
    done
done

"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(values):
    values = list(values)
    return statistics.median(values) if values else None
def seconds(r):
    if r["case"] == "predict":
        return r["predict"]["median_s"]
    return r["inference"]["seconds"] if r["case"] == "infer" and "inference" in r else r.get("seconds", r.get("median_step_s"))
def rss(r):
    if r["case"] == "predict":
        return r["predict"]["peak_rss_mb"]
    return r["inference"]["peak_rss_mb"] if r["case"] == "infer" and "inference" in r else r["peak_rss_mb"]
print("| level | network | case | segtop | PyTorch's fastest | segtop × | segtop GFLOP/s (share of the conv ceiling) | peak RSS segtop / PyTorch |")
print("|---|---|---|---|---|---|---|---|")
for level in dict.fromkeys(r["level"] for r in rows):
    ceil = {p: med(r["conv_gflops"] for r in rows if r["level"] == level and r["case"] == "ceiling" and r["precision"] == p)
            for p in ("float32", "bfloat16")}
    gemm = med(r["gemm_gflops"] for r in rows if r["level"] == level and r["case"] == "ceiling" and r["precision"] == "float32")
    for net in dict.fromkeys(r["net"] for r in rows if "net" in r):
        for case in ("train", "infer", "predict"):
            # PyTorch's side of a predict row is its sliding window over the same grid.
            theirs_case = "infer" if case == "predict" else case
            mine = [r for r in rows if r.get("level") == level and r.get("net") == net and
                    r["case"] == (case if r["impl"].startswith("segtop") else theirs_case)]
            modes = {}
            for r in mine:
                key = f"segtop {r['precision']}" if r["impl"].startswith("segtop") else r["impl"]
                modes.setdefault(key, []).append(r)
            timed = {k: (med(seconds(r) for r in v), med(rss(r) for r in v), v) for k, v in modes.items()}
            ours = {k: t for k, t in timed.items() if k.startswith("segtop")}
            theirs = {k: t for k, t in timed.items() if not k.startswith("segtop")}
            if not ours or not theirs:
                continue
            ok, (ot, orss, ov) = min(ours.items(), key=lambda kv: kv[1][0])
            tk, (tt, trss, _) = min(theirs.items(), key=lambda kv: kv[1][0])
            unit = "s/step" if case == "train" else "s/case"
            if case == "predict":
                grids = {tuple(c["grid"]) for r in ov for c in r["predict"]["cases"]}
                windows = med(c["windows"] for r in ov for c in r["predict"]["cases"])
                crops = sorted({"x".join(map(str, c["cropped"])) for r in ov for c in r["predict"]["cases"]})
                share = f"cropped to {', '.join(crops)}: {windows:.0f} windows (median)"
                if grids != {(240, 240, 155)}:
                    share += f"; NOT comparable: the cases' grids {sorted(grids)} are not the reference's 240x240x155"
            share = ""
            if case == "train":
                gflops = med(r["gflops"] for r in ov)
                precision = ov[0]["precision"]
                if ceil.get(precision):
                    share = f"{gflops:.0f} ({gflops / ceil[precision]:.0%} of {ceil[precision]:.0f})"
            print(f"| {level} | {net} | {case} | {ot:.3f} {unit} ({ok.split(' ', 1)[1]}) | {tt:.3f} ({tk}) | "
                  f"{tt / ot:.2f} | {share} | {orss:.0f} / {trss:.0f} MB |")
    print(f"| {level} | | ceiling | sgemm 2048^2 {gemm:.0f} GFLOP/s, conv 16-16 64^3 fwd {ceil['float32']:.0f} GFLOP/s float32"
          + (f", {ceil['bfloat16']:.0f} bfloat16" if ceil.get("bfloat16") else "") + " | | | | |")
print()
print("Every mode's median:")
for r in sorted({(r.get("level"), r.get("net"), r["case"], r["impl"], r["precision"]) for r in rows if r["case"] != "ceiling"}, key=str):
    sel = [x for x in rows if (x.get("level"), x.get("net"), x["case"], x["impl"], x["precision"]) == r]
    print(f"  {r[0]:<12}{r[1]:<9}{r[2]:<9}{r[3]:<46}{r[4]:<10}{med(seconds(x) for x in sel):8.3f} s  {med(rss(x) for x in sel):6.0f} MB  (n={len(sel)})")
PY
