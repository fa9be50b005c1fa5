#!/usr/bin/env bash
# Makes docs/dashboard.png from a real session: builds segtop, queues the demo experiment in a
# scratch workspace, opens the dashboard in tmux on that run once it has trained a few epochs,
# and draws what the terminal shows as a picture (scripts/ansi_png.py).
#
#   scripts/screenshot.sh [OUT.png]     default: docs/dashboard.png
#
# Needs tmux, python3 with pip (Pillow is installed into target/screenshot-python once) and the
# DejaVu fonts (Debian: fonts-dejavu-core). Environment: COLUMNS_ROWS (default 120x40),
# EPOCHS (how many epochs to wait for, default 12).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$repo/docs/dashboard.png}")
size=${COLUMNS_ROWS:-120x40}
epochs=${EPOCHS:-12}
die() { printf 'screenshot: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'screenshot: %s\n' "$*" >&2; }
command -v tmux >/dev/null || die "tmux is not installed (apt-get install tmux)"

cd "$repo"
scripts/setup-libtorch.sh
cargo build --release --bins
pylib=target/screenshot-python
if [ ! -d "$pylib/PIL" ]; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$pylib" 'pillow>=10,<12'
fi

workspace=$(mktemp -d)
session="segtop-screenshot-$$"
cleanup() {
    tmux kill-session -t "$session" 2>/dev/null || true
    "$repo/target/release/segtop" -C "$workspace" stop --kill quick-demo >/dev/null 2>&1 || true
    rm -rf "$workspace"
}
trap cleanup EXIT
cp -r experiments themes "$workspace/"
segtop=("$repo/target/release/segtop" -C "$workspace")
"${segtop[@]}" queue experiments/quick-demo.toml >&2

say "waiting for the demo run to reach epoch $epochs"
for _ in $(seq 600); do
    epoch=$("${segtop[@]}" runs --json | python3 -c 'import json, sys; runs = json.load(sys.stdin); print(runs[0]["epoch"] or 0 if runs else 0)')
    [ "$epoch" -ge "$epochs" ] && break
    sleep 1
done
[ "$epoch" -ge "$epochs" ] || die "the demo run did not reach epoch $epochs in 10 minutes"

tmux new-session -d -s "$session" -x "${size%x*}" -y "${size#*x}" \
    "cd '$workspace' && TERM=xterm-256color COLORTERM=truecolor '$repo/target/release/segtop'"
sleep 2
tmux send-keys -t "$session" 2   # the runs screen
sleep 1
tmux send-keys -t "$session" Enter   # the run's view
sleep 3
capture=$(mktemp)
tmux capture-pane -t "$session" -e -p > "$capture"
PYTHONPATH="$repo/$pylib" python3 scripts/ansi_png.py "$capture" "$out"
rm -f "$capture"
say "wrote $out"
