#!/usr/bin/env bash
# The dashboard's cost on a shared server: while 4 runs train, each screen of segtop (run
# list, run view, grid) and htop are opened in a tmux window of the same size and measured
# over the same time: CPU (% of one core), resident memory at the end, and bytes written to
# the terminal per second after a 3 s settling time. Also the dashboard with no runs at all,
# and its first launch on the bundled demo experiment: the demo data is generated then (in a
# child process); the dashboard's peak and final resident memory and the time it took.
#
# usage: bench/dashboard.sh [SECONDS] [COLSxROWS]     (default 60 80x24)
# needs: tmux, htop, and a release build (cargo build --release).
set -euo pipefail
secs=${1:-60}
size=${2:-80x24}
cols=${size%x*}
rows=${size#*x}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release
for tool in tmux htop; do
    command -v "$tool" >/dev/null || { echo "bench/dashboard.sh needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[ -x "$bin/segtop" ] && [ -x "$bin/segtop-train" ] || { echo "build first: cargo build --release" >&2; exit 2; }

work=$(mktemp -d)
session=segtop-bench-$$
trainers=()
cleanup() {
    tmux kill-session -t "$session" 2>/dev/null || true
    for pid in "${trainers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
hz=$(getconf CLK_TCK)

# measure NAME KEYS COMMAND...: one program in a fresh tmux window.
measure() {
    local name=$1 keys=$2
    shift 2
    local out=$work/bytes
    : > "$out"
    tmux new-session -d -s "$session" -x "$cols" -y "$rows" "$*"
    sleep 2
    local pid
    pid=$(tmux list-panes -t "$session" -F '#{pane_pid}')
    for key in $keys; do tmux send-keys -t "$session" "$key"; sleep 0.3; done
    sleep 3
    tmux pipe-pane -o -t "$session" "cat >> $out"
    local t1 t2 rss bytes
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep "$secs"
    t2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    tmux pipe-pane -t "$session"
    bytes=$(stat -c %s "$out")
    tmux kill-session -t "$session"
    awk -v n="$name" -v t=$((t2 - t1)) -v hz="$hz" -v s="$secs" -v r="$rss" -v b="$bytes" \
        'BEGIN { printf "%-22s %7.2f %9.1f %10.0f\n", n, 100 * t / hz / s, r / 1024, b / s }'
}

# first_launch: the dashboard opened on a workspace holding the bundled quick-demo experiment,
# until its demo data is complete.
first_launch() {
    mkdir -p "$work/first/experiments"
    cp "$repo/experiments/quick-demo.toml" "$work/first/experiments/"
    tmux new-session -d -s "$session" -x "$cols" -y "$rows" -c "$work/first" "$bin/segtop"
    sleep 1
    local pid start=$SECONDS
    pid=$(tmux list-panes -t "$session" -F '#{pane_pid}')
    until [ -f "$work/first/data/demo/segtop-synthetic.toml" ]; do
        ((SECONDS - start < 1800)) || { echo "the demo data was not generated in 30 minutes" >&2; exit 1; }
        sleep 1
    done
    local took=$((SECONDS - start))
    sleep 3
    local peak rss
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    tmux kill-session -t "$session"
    awk -v p="$peak" -v r="$rss" -v t="$took" \
        'BEGIN { printf "segtop, first launch: demo data in %d s; dashboard peak rss %.1f MB, rss after %.1f MB\n\n", t, p / 1024, r / 1024 }'
}
first_launch

printf '%-22s %7s %9s %10s\n' "program ($size, ${secs}s)" "cpu %" "rss MB" "bytes/s"
mkdir -p experiments
measure "segtop, no runs" "" "$bin/segtop"

"$bin/segtop" synth --out data --cases 4 --size 48x48x32 --seed 3 >/dev/null 2>&1
cat > experiments/bench.toml <<'TOML'
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
name = "bench"
TOML
for _ in 1 2 3 4; do
    "$bin/segtop-train" train experiments/bench.toml >/dev/null 2>&1 &
    trainers+=($!)
    sleep 1.1 # one run directory per second
done
until [ "$(cat runs/*/events.jsonl 2>/dev/null | grep -c '"run_started"')" -ge 4 ]; do sleep 0.5; done

measure "segtop run list" "2" "$bin/segtop"
measure "segtop run view" "2 Enter" "$bin/segtop"
measure "segtop grid" "3" "$bin/segtop"
measure "htop" "" htop
