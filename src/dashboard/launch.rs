//! Starting trainer processes that outlive the dashboard, and signalling them.
//!
//! A launched trainer gets its own session (so closing the terminal or the SSH connection
//! sends it no hangup), reads nothing from the terminal, and writes its output to the run's
//! `train.log`. The dashboard creates the run directory itself and hands it to
//! `segtop-train train --resume DIR`, which starts from the beginning when there is no
//! checkpoint: so the log has a home from the first byte.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::experiment::Experiment;
use crate::rundir::{Launch, RunDir};
use crate::workspace::Workspace;

/// A trainer started by this dashboard.
pub struct Launched {
    pub run: RunDir,
    pub child: Child,
}

/// The trainer binary: installed next to `segtop`.
pub fn trainer_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running segtop executable")?;
    let trainer = exe.with_file_name("segtop-train");
    anyhow::ensure!(
        trainer.is_file(),
        "cannot launch: {} does not exist (segtop was built without the trainer)",
        trainer.display()
    );
    Ok(trainer)
}

/// Creates a run directory for the experiment in `file` and starts its trainer, detached.
pub fn launch(workspace: &Workspace, file: &Path) -> anyhow::Result<Launched> {
    let trainer = trainer_path()?;
    let shown = file.strip_prefix(workspace.root()).unwrap_or(file);
    let experiment = Experiment::load(file, workspace.root())?;
    let runs = workspace.runs_dir();
    let run = RunDir::create(&runs, &experiment, chrono::Local::now())
        .with_context(|| format!("cannot create a run directory in {}", runs.display()))?;
    match start(workspace, &trainer, &run, shown, false) {
        Ok(child) => Ok(Launched { run, child }),
        Err(error) => {
            // Nothing ran in it: leave no run directory behind that would look like a run.
            let _ = std::fs::remove_dir_all(run.path());
            Err(error)
        }
    }
}

/// Continues a stopped, failed or lost run from its latest checkpoint, detached.
pub fn resume(workspace: &Workspace, run: &RunDir) -> anyhow::Result<Child> {
    let trainer = trainer_path()?;
    let experiment = run.read_launch().map_or_else(|| run.experiment(), |l| l.experiment);
    start(workspace, &trainer, run, &experiment, true)
}

/// Starts `segtop-train train --resume DIR` detached, with its output appended to (or, for a
/// new run, written to) `train.log`, and records the launch.
fn start(
    workspace: &Workspace,
    trainer: &Path,
    run: &RunDir,
    experiment: &Path,
    append: bool,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(run.log())
        .with_context(|| format!("cannot open {}", run.log().display()))?;
    let log_err = log
        .try_clone()
        .with_context(|| format!("cannot share {}", run.log().display()))?;
    let mut command = Command::new(trainer);
    command
        .arg("train")
        .arg("--resume")
        .arg(run.path())
        .current_dir(workspace.root())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    detach(&mut command);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", trainer.display()))?;
    let record = Launch {
        pid: child.id(),
        pid_start: crate::rundir::process_start_time(child.id()),
        host: sysinfo::System::host_name().unwrap_or_default(),
        time: chrono::Utc::now(),
        experiment: experiment.to_path_buf(),
    };
    // The trainer runs either way; without the record a later dashboard only finds its
    // process once it writes run_started.
    let _ = run.write_launch(&record);
    Ok(child)
}

/// Puts the child in a session of its own, away from the terminal's hangup and Ctrl-C.
fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How to end a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// SIGTERM: the trainer finishes its step, checkpoints and exits.
    Stop,
    /// SIGKILL to the trainer's whole process group: immediate, loses work since the last checkpoint.
    Kill,
}

/// Sends the signal for `halt` to the trainer with `pid`, after checking that `pid` is still
/// a segtop trainer, and the same process when its start time is known (pids are reused).
pub fn halt(pid: u32, pid_start: Option<u64>, halt: Halt) -> anyhow::Result<()> {
    let same = pid_start.is_none_or(|start| {
        crate::rundir::process_start_time(pid).is_some_and(|now| crate::rundir::same_start(now, start))
    });
    anyhow::ensure!(
        same && is_trainer(pid),
        "process {pid} is not this run's trainer any more; nothing was signalled"
    );
    let pid = libc::pid_t::try_from(pid).context("process id out of range")?;
    // SAFETY: plain system calls on a checked process id.
    let result = unsafe {
        match halt {
            Halt::Stop => libc::kill(pid, libc::SIGTERM),
            Halt::Kill if libc::getpgid(pid) == pid => libc::kill(-pid, libc::SIGKILL),
            Halt::Kill => libc::kill(pid, libc::SIGKILL),
        }
    };
    if result == -1 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot signal process {pid}"));
    }
    Ok(())
}

/// Whether the process `pid` runs the segtop trainer.
pub fn is_trainer(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| is_trainer_name(name.trim_end()))
}

/// The kernel keeps 15 characters of a process name.
pub fn is_trainer_name(name: &str) -> bool {
    "segtop-train".starts_with(name) && name.len() >= "segtop-tr".len()
}
