#!/usr/bin/env bash
# Successive halving against the full grid, on your BraTS folder: the same 8 configurations
# (4 learning rates x 2 widths of the default U-Net) once as a halving sweep (eta 2, rungs of
# RUNG, 2x, 4x and 8x RUNG per run) and once each run to the top budget (8x RUNG). Both go through
# segtop's queue with 2 runs at once and 1 thread each, the halving sweep first, then the grid.
# Prints, for each: the best validation Dice found (legacy Dice, the mean over ET, TC, WT of a
# run's best validation; the sweep ranks by it too, its default), the configuration that found
# it, and the CPU time used (the runs' training seconds x their threads); then the ratios.
#
# usage: bench/halving.sh DATA_DIR [RUNG] [WORKSPACE]   (default RUNG 2m; a new temporary workspace)
#   DATA_DIR: a BraTS folder (e.g. the 20 development cases of the reference set); RUNG like "2m".
#   Epochs are 50 patches and validations 2 cases, so that the first rung holds a few epochs at
#   one thread (about 30 s an epoch of the default U-Net on one core of a Xeon).
# needs: a release build (cargo build --release) and python3. Wall time: about 42 x RUNG (the halving
# sweep about 20 x RUNG of run time, the grid 64 x RUNG, two runs at a time).
set -euo pipefail
data=${1:?usage: bench/halving.sh DATA_DIR [RUNG] [WORKSPACE]}
rung=${2:-2m}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release
[ -x "$bin/segtop" ] && [ -x "$bin/segtop-train" ] || { echo "build first: cargo build --release" >&2; exit 2; }
data=$(cd "$data" && pwd)
work=${3:-$(mktemp -d)}
mkdir -p "$work/experiments" "$work/config/segtop"
cd "$work"
export XDG_CONFIG_HOME=$work/config
printf '[queue]\ncores = 2\nmax_concurrent = 2\nreserve_ram = "1 GB"\n' > config/segtop/settings.toml

seconds() { python3 -c "import re,sys; t=sys.argv[1]; print(sum(int(n)*{'d':86400,'h':3600,'m':60,'s':1}[u] for n,u in re.findall(r'(\d+)([dhms])', t)))" "$1"; }
top=$(( $(seconds "$rung") * 8 ))

common() {
    cat <<EOF
[data]
root = "$data"
split = [0.6, 0.2, 0.2]
[train]
threads = 1
early_stopping_patience = 0
# Short epochs and two validation cases, so that even the first rung holds a few epochs.
patches_per_epoch = 50
warmup_epochs = 1
[validate]
every = 1
cases = 2
hd95 = false
EOF
}
{ common; printf '[run]\nname = "halving"\n[sweep]\nmethod = "halving"\neta = 2\nrung = "%s"\n"train.lr" = [3e-4, 1e-3, 3e-3, 1e-2]\n"model.base_filters" = [8, 16]\n' "$rung"; } > experiments/halving.toml
{ common; printf 'budget = "%ss"\n' "$top"; printf '[run]\nname = "grid"\n[sweep]\n"train.lr" = [3e-4, 1e-3, 3e-3, 1e-2]\n"model.base_filters" = [8, 16]\n'; } \
    | sed "s/^\[train\]$/[train]/" > experiments/grid.toml
# The grid's budget belongs in [train]: move the line there.
python3 - experiments/grid.toml <<'PY'
import sys
path = sys.argv[1]
lines = open(path).read().splitlines()
budget = [l for l in lines if l.startswith("budget =")]
lines = [l for l in lines if not l.startswith("budget =")]
at = lines.index("[train]") + 1
open(path, "w").write("\n".join(lines[:at] + budget + lines[at:]) + "\n")
PY

wait_idle() {
    while "$bin/segtop" queue --json | python3 -c "import json,sys; sys.exit(0 if json.load(sys.stdin) else 1)" \
        || [ -n "$("$bin/segtop" runs --json | python3 -c "import json,sys; print(' '.join(r['id'] for r in json.load(sys.stdin) if r['state'] in ('running','starting','queued')))")" ]; do
        sleep 20
    done
}

echo "halving sweep (rungs ${rung} to ${top}s per run), $(date)"
"$bin/segtop" check -q experiments/halving.toml experiments/grid.toml
"$bin/segtop" queue experiments/halving.toml
wait_idle
echo "full grid (${top}s per run), $(date)"
"$bin/segtop" queue experiments/grid.toml
wait_idle
echo "done, $(date); workspace: $work"

"$bin/segtop" runs --json > runs.json
python3 - runs.json <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
def summary(name):
    members = [r for r in runs if r["sweep"] and r["sweep"]["sweep"].endswith("-" + name)]
    cpu = sum((r["elapsed_s"] or 0) for r in members)  # 1 thread each
    best = None
    for r in members:
        d = r["best_dice"]
        if d is None:
            continue
        legacy = (d["et"] + d["tc"] + d["wt"]) / 3
        if best is None or legacy > best[0]:
            best = (legacy, r)
    return members, cpu, best
for name in ["halving", "grid"]:
    members, cpu, best = summary(name)
    legacy, run = best
    values = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in run["sweep"]["values"].items())
    states = {}
    for r in members:
        states[r["state"]] = states.get(r["state"], 0) + 1
    print(f"{name:8} {len(members)} runs {states}: best legacy Dice (mean ET/TC/WT of its best validation) {legacy:.3f} "
          f"by {values}; CPU {cpu / 3600:.2f} h")
h = summary("halving"); g = summary("grid")
print(f"halving / grid: best Dice {h[2][0] - g[2][0]:+.3f}, CPU time {h[1] / g[1]:.2f}x")
PY
