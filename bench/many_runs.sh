#!/usr/bin/env bash
# A workspace of many runs, as a lab has after months: RUNS finished runs of EPOCHS epochs
# each (10 steps and one validation an epoch, with per-case scores and a preview record),
# generated as event files, plus 2 live tiny trainings. Measures, against it:
#   - segtop runs --json: wall time and peak RSS (median of 5);
#   - the dashboard in an 80x24 tmux window: time until the run list shows, its RSS then and
#     after 30 s, and its CPU over those 30 s.
#
# usage: bench/many_runs.sh [RUNS] [EPOCHS]      (default 1000 100)
#        SEGTOP=path/to/other/segtop bench/many_runs.sh   measures another build's segtop
# needs: tmux, python3, and a release build (cargo build --release).
set -euo pipefail
runs=${1:-1000}
epochs=${2:-100}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release
command -v tmux >/dev/null || { echo "bench/many_runs.sh needs tmux (apt-get install tmux)" >&2; exit 2; }
[ -x "$bin/segtop" ] && [ -x "$bin/segtop-train" ] || { echo "build first: cargo build --release" >&2; exit 2; }
segtop=${SEGTOP:-$bin/segtop}
work=$(mktemp -d)
session=segtop-many-$$
trainers=()
cleanup() {
    tmux kill-session -t "$session" 2>/dev/null || true
    for pid in "${trainers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
mkdir -p experiments runs
# The experiment of the live runs; the generated runs freeze it as segtop check resolves it.
"$bin/segtop" synth --out data --cases 4 --size 48x48x32 --seed 3 >/dev/null 2>&1
cat > experiments/live.toml <<'TOML'
[data]
root = "data"
cache_dir = "cache"
split = [0.5, 0.5, 0.0]
[model]
base_filters = 4
depth = 3
[train]
patch_size = [16, 16, 16]
batch_size = 2
epochs = 100000
patches_per_epoch = 32
warmup_epochs = 0
threads = 1
[validate]
every = 5
[run]
name = "live"
TOML
"$bin/segtop" check experiments/live.toml > frozen.toml
python3 - "$runs" "$epochs" frozen.toml <<'PY'
import json, os, random, sys, datetime
runs, epochs = int(sys.argv[1]), int(sys.argv[2])
frozen = open(sys.argv[3]).read()
random.seed(1)
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
for r in range(runs):
    t = start + datetime.timedelta(hours=r)
    rid = t.strftime("%Y%m%d-%H%M%S") + f"-gen-{r % 7}"
    d = os.path.join("runs", rid)
    os.makedirs(d)
    with open(os.path.join(d, "experiment.toml"), "w") as f:
        f.write(frozen.replace('name = "live"', f'name = "gen-{r % 7}"').replace("lr = 0.003", f"lr = {random.choice([3e-4, 1e-3, 3e-3])}"))
    lines = [dict(event="run_started", time=stamp(t), schema=1, pid=100000 + r, host="node1", name=f"gen-{r % 7}",
                  experiment_hash="0" * 16, epochs=epochs, steps_per_epoch=10, parameters=86012, threads=1,
                  libtorch="2.13.0+cpu")]
    loss, best = 3.0, None
    for e in range(1, epochs + 1):
        for s in range(1, 11):
            t += datetime.timedelta(seconds=1)
            loss *= 0.995
            lines.append(dict(event="step", time=stamp(t), epoch=e, step=s, loss=loss,
                              loss_parts={"ce": loss * 0.6, "dice": loss * 0.4}, lr=1e-3, patches_per_s=20.0 + random.random(),
                              seconds=1.0))
        lines.append(dict(event="epoch_end", time=stamp(t), epoch=e, loss=loss, loss_parts={"ce": loss * 0.6, "dice": loss * 0.4},
                          lr=1e-3, patches_per_s=20.0, seconds=10.0))
        dice = {k: min(0.95, 0.1 + 0.8 * e / epochs + 0.02 * random.random()) for k in ("et", "tc", "wt")}
        cases = [dict(case=f"BraTS-SSA-{c:05d}-000", dice=dice, hd95={"et": 5.0, "tc": 5.0, "wt": 5.0}) for c in range(2)]
        lines.append(dict(event="validation", time=stamp(t), epoch=e, dice=dice, hd95={"et": 5.0, "tc": 5.0, "wt": 5.0},
                          seed_dice=sum(dice.values()) / 3, cases=cases, seconds=2.0))
        lines.append(dict(event="preview_written", time=stamp(t), epoch=e, case="BraTS-SSA-00000-000",
                          path=f"preview/epoch-{e:04d}.nii.gz"))
        lines.append(dict(event="checkpoint", time=stamp(t), epoch=e, path=f"checkpoints/step-{e * 10:06d}", best=True))
        best = dice
    lines.append(dict(event="run_finished", time=stamp(t), outcome="completed", best_dice=best, seconds=float(epochs * 12)))
    with open(os.path.join(d, "events.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
PY
size=$(du -sh runs | cut -f1)

# Two live runs: tiny trainings that go on while we measure.


for _ in 1 2; do
    "$bin/segtop-train" train experiments/live.toml >/dev/null 2>&1 &
    trainers+=($!)
    sleep 1.1
done
until [ "$(cat runs/*-live/events.jsonl 2>/dev/null | grep -c '"run_started"')" -ge 2 ]; do sleep 0.5; done
echo "workspace: $runs finished runs of $epochs epochs ($size of runs/) and 2 live runs"

# segtop runs --json: the first time (no summaries yet: every history is read and each
# finished run's summary.json written), then the median wall time and peak RSS of 5.
/usr/bin/time -f '%e %M' "$segtop" runs --json 2>"$work/cold" >/dev/null
awk '{ printf "segtop runs --json, first (writes the summaries): %.2f s, peak rss %.1f MB\n", $1, $2 / 1024 }' "$work/cold"
for _ in 1 2 3 4 5; do
    /usr/bin/time -f '%e %M' "$segtop" runs --json 2>>"$work/time" >/dev/null
done
sort -n "$work/time" | awk '{ t[NR] = $1; m[NR] = $2 } END { printf "segtop runs --json: median %.2f s, peak rss %.1f MB (of 5)\n", t[3], m[3] / 1024 }'

# The dashboard: time to the run list, memory then and 30 s later, CPU over those 30 s.
hz=$(getconf CLK_TCK)
t0=$(date +%s.%N)
tmux new-session -d -s "$session" -x 80 -y 24 "$segtop"
tmux send-keys -t "$session" 2
until tmux capture-pane -p -t "$session" | grep -q "gen-"; do sleep 0.05; done
t1=$(date +%s.%N)
pid=$(tmux list-panes -t "$session" -F '#{pane_pid}')
rss1=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
sleep 30
c2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
rss2=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
awk -v a="$t0" -v b="$t1" -v r1="$rss1" -v r2="$rss2" -v h="$hwm" -v c=$((c2 - c1)) -v hz="$hz" 'BEGIN {
    printf "dashboard: run list after %.2f s; rss %.1f MB then, %.1f MB 30 s later (peak %.1f MB); cpu %.2f%% of one core over the 30 s\n",
        b - a, r1 / 1024, r2 / 1024, h / 1024, 100 * c / hz / 30 }'
