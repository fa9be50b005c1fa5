#!/usr/bin/env bash
# A shared server: USERS Unix users each queue RUNS runs of the default network at the same
# moment, each in a workspace and with a supervisor of their own. Measured twice: each
# supervisor seeing only its own workspace's runs (as segtop did before the machine's register:
# every user's register is private), and all of them sharing the register. Prints, per mode, the
# wall time until every run is done, the machine's patches/s over it, and for each user the
# time until their last run finished and the patches/s they got.
#
#   sudo bench/shared_server.sh [USERS] [RUNS] [EPOCHS]      (defaults 4 2 2)
#
# MODES="shared" measures one mode only (default "private shared").
#
# Needs root (it creates users segtop-bench-N and removes them at the end) and a release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

users=${1:-4} runs=${2:-2} epochs=${3:-2}
patches=16 # per epoch
[ "$(id -u)" = 0 ] || { echo "$0: run as root (it creates users)" >&2; exit 2; }
bin=target/release
[ -x "$bin/segtop-train" ] || { echo "$0: build first: cargo build --release --bins" >&2; exit 2; }

base=$(mktemp -d /tmp/segtop-shared.XXXXXX)
chmod 755 "$base"
mkdir "$base/bin" "$base/libtorch"
cp "$bin/segtop" "$bin/segtop-train" "$base/bin/"
libs=$(ldd "$bin/segtop-train" | sed -n 's/.*=> \(.*\)\/libtorch_cpu.so.*/\1/p' | head -1)
mount --bind -o ro "$libs" "$base/libtorch"
names=()
cleanup() {
    for name in "${names[@]}"; do pkill -KILL -u "$name" 2>/dev/null || true; userdel "$name" 2>/dev/null || true; done
    umount "$base/libtorch" 2>/dev/null || true
    rm -rf "$base"
}
trap cleanup EXIT
for i in $(seq 1 "$users"); do
    name=segtop-bench-$i
    userdel "$name" 2>/dev/null || true
    useradd --no-create-home --shell /usr/sbin/nologin --user-group "$name"
    names+=("$name")
done

# One synthetic dataset every user reads (made once, as root).
"$bin/segtop" synth --out "$base/data" --cases 6 --size 96 --seed 7 >/dev/null
chmod -R a+rX "$base/data"

as_user() { # USER WORKSPACE REGISTER ARGS...
    local user=$1 ws=$2 register=$3; shift 3
    setpriv --reuid="$user" --regid="$user" --clear-groups \
        env -i PATH=/usr/bin:/bin HOME="$ws" XDG_CONFIG_HOME="$ws/config" \
        SEGTOP_MACHINE_DIR="$register" LD_LIBRARY_PATH="$base/libtorch" \
        sh -c 'cd "$0" && exec "$@"' "$ws" "$base/bin/segtop" "$@"
}

run_mode() { # MODE (private|shared)
    local mode=$1
    local start end
    rm -rf "$base/ws" "$base/register"
    mkdir -p "$base/ws" "$base/register"
    chmod 1777 "$base/register"
    for name in "${names[@]}"; do
        local ws=$base/ws/$name
        mkdir -p "$ws"
        cat >"$ws/default.toml" <<EOF
[data]
root = "$base/data"
cache_dir = "cache"
split = [0.67, 0.33, 0.0]
[train]
epochs = $epochs
patches_per_epoch = $patches
warmup_epochs = 0
[validate]
every = $epochs
[run]
name = "$name"
EOF
        chown -R "$name:$name" "$ws"
    done
    start=$(date +%s.%N)
    for name in "${names[@]}"; do
        local register=$base/register
        [ "$mode" = private ] && register=$base/ws/$name/.register
        for _ in $(seq 1 "$runs"); do
            as_user "$name" "$base/ws/$name" "$register" queue default.toml >/dev/null
        done
    done
    # Every run finished: run_finished in each of the users x runs event files.
    local want=$((users * runs)) done_at=()
    declare -A last
    while :; do
        local finished=0
        for name in "${names[@]}"; do
            local mine=0
            for events in "$base/ws/$name"/runs/*/events.jsonl; do
                [ -f "$events" ] && grep -q '"run_finished"' "$events" && mine=$((mine + 1))
            done
            finished=$((finished + mine))
            if [ "$mine" = "$runs" ] && [ -z "${last[$name]:-}" ]; then
                last[$name]=$(date +%s.%N)
            fi
        done
        [ "$finished" -ge "$want" ] && break
        sleep 1
    done
    end=$(date +%s.%N)
    python3 - "$mode" "$start" "$end" "$users" "$runs" "$epochs" "$patches" "$(for n in "${names[@]}"; do echo "$n=${last[$n]}"; done)" <<'EOF'
import sys
mode, start, end, users, runs, epochs, patches, lasts = sys.argv[1:]
start, end = float(start), float(end)
per_run = int(epochs) * int(patches)
total = int(users) * int(runs) * per_run
print(f"| {mode} | {end - start:.0f} s | {total / (end - start):.2f} |", end="")
for line in lasts.split():
    name, t = line.split("=")
    took = float(t) - start
    print(f" {name[-1]}: {took:.0f} s, {int(runs) * per_run / took:.2f} p/s |", end="")
print()
EOF
    # Nothing of this mode may run on into the next.
    for name in "${names[@]}"; do pkill -KILL -u "$name" 2>/dev/null || true; done
    sleep 1
}

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $users users x $runs runs of the default network, $epochs epochs x $patches patches"
echo
echo "| register | wall time | machine patches/s | each user: last run done, patches/s |"
echo "|---|---|---|---|"
for mode in ${MODES:-private shared}; do
    run_mode "$mode"
done
