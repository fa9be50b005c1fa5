#!/usr/bin/env bash
# segtop's quick start. Does all set-up (CPU libtorch once per machine, the build), then
#   ./quickstart.sh          opens the dashboard on the bundled demo experiments
#   ./quickstart.sh test     runs the whole test suite (lints included where installed)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }
command -v cargo >/dev/null ||
    die "cargo not found; install Rust with rustup (https://rustup.rs), then open a new shell"

# A missing lint tool is a warning on a user's machine and a failure in CI (CI set), so CI
# cannot lose its lint gate without anyone noticing.
lint_missing() {
    [ -z "${CI:-}" ] || die "$1 is not installed (rustup component add $1); CI needs the $2"
    echo "quickstart: $1 is not installed (rustup component add $1): $2 skipped" >&2
}

scripts/setup-libtorch.sh

case "${1:-demo}" in
    demo)
        cargo build --release --bins
        exec target/release/segtop
        ;;
    test)
        # Formatting and lints first: they take seconds and fail fastest.
        if cargo fmt --version >/dev/null 2>&1; then
            cargo fmt --all -- --check
        else
            lint_missing rustfmt "format check"
        fi
        if cargo clippy --version >/dev/null 2>&1; then
            cargo clippy --release --all-targets -- -D warnings
            # The login-node build: segtop alone, without the trainer and libtorch.
            cargo clippy --release --no-default-features --lib --bin segtop -- -D warnings
        else
            lint_missing clippy lints
        fi
        # nibabel, for the test that reads synthetic cases with it too (skipped without it), and
        # what a model package's predict.py needs (scipy, onnxruntime), for the package tests.
        pylib=target/test-python
        if [ ! -d "$pylib/nibabel" ] || [ ! -d "$pylib/onnxruntime" ]; then
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$pylib" \
                'nibabel==5.4.2' 'numpy<3' 'scipy<2' 'onnxruntime<2' ||
                echo "quickstart: could not install nibabel, scipy and onnxruntime; the tests that need them will be skipped or show as ignored" >&2
        fi
        # The Slurm tests need a Slurm cluster, so they are marked ignored. As root, a one-node
        # cluster on localhost from Debian's packages (scripts/slurm-test-cluster.sh; it never
        # touches a Slurm this machine already has) is started here and stopped afterwards, and
        # the Slurm tests run after the others; SEGTOP_TEST_SLURM=0 opts out, SEGTOP_TEST_SLURM=1
        # runs them against a test cluster started beforehand. Otherwise they show as ignored.
        if [ "$(id -u)" = 0 ] && [ "${SEGTOP_TEST_SLURM:-}" != 0 ] && command -v apt-get >/dev/null; then
            running=$(sinfo -h -o %t 2>/dev/null || true)
            if scripts/slurm-test-cluster.sh install && scripts/slurm-test-cluster.sh start; then
                export SEGTOP_TEST_SLURM=1
                # Left running when it already was.
                [ -n "$running" ] || trap 'scripts/slurm-test-cluster.sh stop || true' EXIT
            else
                echo "quickstart: WARNING: could not start the test Slurm cluster; the Slurm tests will show as ignored" >&2
            fi
        fi
        SEGTOP_TEST_PYTHONPATH="$PWD/$pylib" cargo test --release
        # The model-package tests run ONNX Runtime and predict.py: marked ignored, run here when
        # their Python packages import, and shown as ignored otherwise.
        if PYTHONPATH="$PWD/$pylib" python3 -c 'import numpy, nibabel, scipy, onnxruntime' 2>/dev/null; then
            SEGTOP_TEST_PYTHONPATH="$PWD/$pylib" cargo test --release --bin segtop-train onnx_tests -- --ignored
            SEGTOP_TEST_PYTHONPATH="$PWD/$pylib" cargo test --release --test integration package:: -- --ignored
        else
            echo "quickstart: WARNING: no python3 with numpy, nibabel, scipy and onnxruntime; the model-package tests show as ignored" >&2
        fi
        if [ "${SEGTOP_TEST_SLURM:-}" = 1 ]; then
            # Only the ignored tests in tests/integration/slurm.rs; they fail if no cluster answers.
            cargo test --release --test integration slurm:: -- --ignored
        fi
        # The tests of real resources running out need root: the full-disk ones mount a small
        # tmpfs as a run or cache directory, the out-of-memory one makes a memory cgroup; so
        # does the test of several users sharing the machine (it creates them).
        # Where the kernel does not let us, they show as ignored.
        probe=$(mktemp -d)
        if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m tmpfs "$probe" 2>/dev/null; then
            umount "$probe"
            skip=()
            cgroup=/sys/fs/cgroup/segtop-probe-$$
            [ -d /sys/fs/cgroup/memory ] && cgroup=/sys/fs/cgroup/memory/segtop-probe-$$
            if mkdir "$cgroup" 2>/dev/null; then
                rmdir "$cgroup"
            else
                echo "quickstart: cannot make a memory cgroup here; its test shows as ignored" >&2
                skip=(--skip memory_cgroup)
            fi
            cargo test --release --test integration disk:: -- --ignored "${skip[@]}"
            # Several Unix users on one machine (the machine's register of trainers): needs
            # useradd and a bind mount (libtorch may sit in root's home).
            if command -v useradd >/dev/null; then
                cargo test --release --test integration machine:: -- --ignored
            else
                echo "quickstart: no useradd here; the several-users test shows as ignored" >&2
            fi
        else
            echo "quickstart: cannot mount a tmpfs here; the full-disk and memory tests show as ignored" >&2
        fi
        rmdir "$probe"
        ;;
    *)
        die "unknown argument '$1'; use no argument (dashboard) or 'test'"
        ;;
esac
