#!/usr/bin/env bash
# Checks that the dashboard draws slice previews as pictures in a real sixel terminal: trains
# the demo experiment for a few epochs in a scratch workspace, opens segtop in xterm (started
# as a VT340, so it speaks sixel) under Xvfb, opens the run's full-screen preview, takes a
# screenshot and measures how finely the preview is drawn. The same with `--graphics blocks`
# is the control: half blocks change colour at most twice per character cell down and once
# across, a picture at the scan's resolution nearly every pixel.
#
#   bench/graphics_xterm.sh [OUT_DIR]    screenshots go there (default: a temporary folder)
#
# Needs xterm, xvfb, xdotool and imagemagick (Debian: apt-get install xterm xvfb xdotool
# imagemagick). Exits 1 when the picture is not finer than the half blocks.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$(mktemp -d)}")
die() { printf 'graphics_xterm: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'graphics_xterm: %s\n' "$*" >&2; }
for tool in xterm Xvfb xdotool import convert; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install xterm xvfb xdotool imagemagick)"
done
mkdir -p "$out"
cd "$repo"
scripts/setup-libtorch.sh >/dev/null
cargo build --release --bins

workspace=$(mktemp -d)
display=":$((90 + RANDOM % 9))"
cleanup() {
    "$repo/target/release/segtop" -C "$workspace" stop --kill quick-demo >/dev/null 2>&1 || true
    [ -n "${xvfb:-}" ] && kill "$xvfb" 2>/dev/null || true
    rm -rf "$workspace"
}
trap cleanup EXIT
cp -r experiments themes "$workspace/"
# Long enough to stay live (a new preview every 2 epochs) through every measurement.
sed -i 's/^epochs = .*/epochs = 400/' "$workspace/experiments/quick-demo.toml"
segtop=("$repo/target/release/segtop" -C "$workspace")
"${segtop[@]}" queue experiments/quick-demo.toml >&2
say "waiting for the demo run's first preview (its first validation)"
for _ in $(seq 900); do
    compgen -G "$workspace/runs/*/preview/*.nii.gz" >/dev/null && break
    sleep 1
done
compgen -G "$workspace/runs/*/preview/*.nii.gz" >/dev/null || die "the demo run wrote no preview in 15 minutes"

Xvfb "$display" -screen 0 1280x800x24 >/dev/null 2>&1 &
xvfb=$!
sleep 1
export DISPLAY=$display

# One screenshot of the full-screen preview with segtop's `--graphics $1`, into $out/$1.png.
shoot() {
    local how=$1 shot="$out/$1.png"
    xterm -ti vt340 -xrm 'XTerm*decTerminalID: vt340' -xrm 'XTerm*numColorRegisters: 256' \
        -xrm 'XTerm*allowWindowOps: true' -geometry 100x40+0+0 \
        -e env TERM=xterm-256color bash -c "cd '$workspace' && '$repo/target/release/segtop' --graphics $how" &
    local term=$!
    sleep 3
    xdotool mousemove 300 300
    for key in 2 Return v; do
        xdotool key "$key"
        sleep 1
    done
    sleep 2
    local window
    window=$(xdotool search --pid "$term" | head -1)
    import -window "${window:-root}" "$shot"
    xdotool key q
    sleep 1
    kill "$term" 2>/dev/null || true
    echo "$shot"
}

# How often neighbouring pixels differ inside the preview's picture, down and across: the
# share of pixel rows (columns) that differ from the one before, over the slice's extent.
fineness() {
    convert "$1" -depth 8 ppm:- | python3 -c '
import sys
data = sys.stdin.buffer.read()
parts = data.split(maxsplit=4)
w, h = int(parts[1]), int(parts[2])
pixels = parts[4]
def px(x, y):
    i = 3 * (y * w + x)
    return pixels[i:i + 3]
# The slice: pixels that are neither the black around the head nor the terminal background.
grey = [(x, y) for y in range(0, h, 2) for x in range(0, w, 2)
        if 40 < sum(px(x, y)) < 700 and len(set(px(x, y))) <= 2]
if not grey:
    print("0 0 0 0"); sys.exit()
xs = sorted(p[0] for p in grey); ys = sorted(p[1] for p in grey)
x0, x1 = xs[len(xs) // 10], xs[9 * len(xs) // 10]
y0, y1 = ys[len(ys) // 10], ys[9 * len(ys) // 10]
down = sum(pixels[3 * (y * w + x0):3 * (y * w + x1)] != pixels[3 * ((y - 1) * w + x0):3 * ((y - 1) * w + x1)]
           for y in range(y0 + 1, y1)) / max(1, y1 - y0 - 1)
column = lambda x: bytes(b for y in range(y0, y1) for b in px(x, y))
across = sum(column(x) != column(x - 1) for x in range(x0 + 1, x1)) / max(1, x1 - x0 - 1)
print(f"{down:.3f} {across:.3f} {x1 - x0} {y1 - y0}")
'
}

# The bytes segtop (`--graphics $3`) sends to xterm over $2 seconds at $1 (COLSxROWS) on the
# live run's view, recorded by script(1) between segtop and the terminal: bytes per second,
# pictures sent and bytes per picture.
live() {
    local size=$1 seconds=$2 how=$3 log="$out/live-$1-$3.typescript"
    rm -f "$log"
    xterm -ti vt340 -xrm 'XTerm*decTerminalID: vt340' -xrm 'XTerm*numColorRegisters: 256' \
        -xrm 'XTerm*allowWindowOps: true' -geometry "$size+0+0" \
        -e env TERM=xterm-256color script -q -f -c "cd '$workspace' && '$repo/target/release/segtop' --graphics $how" "$log" &
    local term=$!
    sleep 3
    xdotool mousemove 300 300
    for key in 2 Return; do
        xdotool key "$key"
        sleep 1
    done
    sleep 3
    local start
    start=$(stat -c %s "$log")
    sleep "$seconds"
    python3 - "$log" "$start" "$seconds" "$size" "$how" <<'PY'
import sys
path, start, seconds, size, how = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
data = open(path, "rb").read()[start:]
pictures = []
at = data.find(b"\x1bP")
while at >= 0:
    end = data.find(b"\x1b\\", at)
    if end < 0:
        break
    pictures.append(end + 2 - at)
    at = data.find(b"\x1bP", end)
per = sum(pictures) / len(pictures) if pictures else 0
print(f"graphics_xterm: live run view at {size}, --graphics {how}: {len(data) / seconds:.0f} bytes/s over {seconds:.0f} s, "
      f"{len(pictures)} pictures sent, {per:.0f} bytes per picture", file=sys.stderr)
PY
    xdotool key q
    sleep 1
    kill "$term" 2>/dev/null || true
}

for size in 80x24 160x48; do
    for how in auto blocks; do
        live "$size" "${SECONDS_LIVE:-40}" "$how"
    done
done
"${segtop[@]}" stop quick-demo >/dev/null 2>&1 || true

pictures=$(shoot auto)
blocks=$(shoot blocks)
read -r pd pa pw ph <<<"$(fineness "$pictures")"
read -r bd ba bw bh <<<"$(fineness "$blocks")"
say "sixel:       rows differing $pd, columns differing $pa over ${pw}x${ph} px ($pictures)"
say "half blocks: rows differing $bd, columns differing $ba over ${bw}x${bh} px ($blocks)"
python3 -c "
import sys
pd, pa, bd, ba = map(float, sys.argv[1:])
# xterm's cells are 6x13 pixels: half blocks change at most every 6.5 rows and 6 columns.
ok = pd > 0.4 and pa > 0.4 and bd < 0.25 and ba < 0.25
print('graphics_xterm:', 'the preview is a picture at pixel resolution' if ok else 'FAILED: the preview is not finer than half blocks')
sys.exit(0 if ok else 1)
" "$pd" "$pa" "$bd" "$ba"
