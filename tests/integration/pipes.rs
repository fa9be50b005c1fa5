//! Output piped into a reader that stops early (`| head`, `less` then `q`, `grep -q`): every
//! command that prints ends quietly, as Unix tools do, never with a panic.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::{repo, segtop, stderr};

/// Runs `segtop ARGS` in `dir` with its stdout a pipe whose reading end is already closed.
fn into_a_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_segtop"))
        .args(args)
        .current_dir(dir)
        .env("SEGTOP_MACHINE_DIR", dir.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("segtop runs")
}

#[test]
fn every_command_that_prints_ends_quietly_when_its_reader_has_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = dir.path();
    // Runs as an earlier segtop left them, the shipped experiments, and two small cases.
    let saved = repo().join("tests/data/runs-2026-12-06/runs");
    for run in std::fs::read_dir(&saved).expect("saved runs").flatten() {
        let to = ws.join("runs").join(run.file_name());
        std::fs::create_dir_all(&to).expect("run dir");
        for file in std::fs::read_dir(run.path()).expect("files").flatten() {
            std::fs::copy(file.path(), to.join(file.file_name())).expect("copy");
        }
    }
    std::fs::create_dir_all(ws.join("experiments")).expect("experiments");
    for name in ["quick-demo.toml", "lite.toml"] {
        std::fs::copy(repo().join("experiments").join(name), ws.join("experiments").join(name)).expect("copy");
    }
    let made = segtop(
        ws,
        &["synth", "--out", "data", "--cases", "2", "--size", "32", "--seed", "3"],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let case = std::fs::read_dir(ws.join("data"))
        .expect("cases")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a case");
    let case = case.to_string_lossy().into_owned();
    let seg = std::fs::read_dir(&case)
        .expect("case files")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-seg.nii.gz"))
        .expect("a label map");
    let seg = seg.to_string_lossy().into_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["check", "experiments/quick-demo.toml", "experiments/lite.toml"],
        vec!["runs"],
        vec!["runs", "--json"],
        vec!["queue"],
        vec!["queue", "--json"],
        vec!["export", "232350-compat", "--csv"],
        vec!["export", "232350-compat", "--json"],
        vec!["data", "scan", "data"],
        vec!["data", "show", &case],
        vec!["eval", "--pred", &seg, "--gt", &seg],
        vec!["--help"],
        // Handed over to the trainer.
        vec!["info"],
        vec!["summary", "experiments/lite.toml"],
    ];
    for args in commands {
        let output = into_a_closed_pipe(ws, &args);
        let said = stderr(&output);
        let quiet = output.status.success() || output.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "segtop {args:?}: {:?}\n{said}", output.status);
        assert!(
            !said.contains("panicked") && !said.contains("Broken pipe"),
            "segtop {args:?}: {said}"
        );
    }
}
