//! Integration tests: the real binaries on files the tests write or the repo ships.

mod binaries;
mod check;
mod compat;
mod dashboard;
mod data;
mod disk;
mod eval;
mod machine;
mod package;
mod pipes;
mod queue;
mod runs;
mod screen;
mod shipped;
mod slurm;
mod train;
mod wait;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, which is also a workspace (it ships experiments/ and themes/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `segtop ARGS` in `dir` with a plain environment.
pub fn segtop(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segtop"))
        .args(args)
        .current_dir(dir)
        .env("SEGTOP_MACHINE_DIR", dir.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .env_remove("NO_COLOR")
        .output()
        .expect("segtop runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
