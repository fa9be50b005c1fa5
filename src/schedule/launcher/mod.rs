//! Starting trainer processes that outlive whoever started them, and signalling them.
//!
//! A [`Launcher`] starts `segtop-train train --resume DIR` for a run directory that already
//! holds its frozen experiment, and records the launch in `launch.json`. `--resume` on a
//! fresh directory trains from the start, so the log has a home from the first byte and a
//! queued run, a resumed run and a new one start the same way.
//!
//! [`Local`] is the default (runs on this machine), [`slurm::Slurm`] submits batch jobs.
//! A local run: the trainer gets its own session (closing the terminal or the
//! SSH connection sends it no hangup), reads nothing from the terminal, and writes its output
//! to the run's `train.log`. Whoever holds its [`Started::child`] reaps it and records how it
//! ended with [`record_exit`], so a run that dies without a word (out of memory, killed) still
//! reads as failed with a reason.

pub mod local;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};

use anyhow::Context;

pub use local::Local;

use crate::experiment::LauncherKind;
use crate::run::process::Halt;
use crate::run::{ExitRecord, Launch, RunDir};

/// What to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The workspace the trainer runs in (relative data paths resolve against it).
    pub workspace: PathBuf,
    /// The experiment file the run came from, for the record.
    pub experiment: PathBuf,
    /// Torch threads; `None` leaves the choice to the trainer (the experiment's, else all cores).
    pub threads: Option<u32>,
    /// The run's estimated peak memory, for the record (admission of later runs uses it).
    pub peak_bytes: Option<u64>,
    /// Append to `train.log` (a resumed run) rather than start it afresh.
    pub append_log: bool,
}

/// A trainer that was started.
pub struct Started {
    pub launch: Launch,
    /// The local child process, for the caller to reap; `None` for launchers whose runs are
    /// not children of this process.
    pub child: Option<Child>,
}

/// Where runs execute.
pub trait Launcher {
    /// The kind recorded in `launch.json`.
    fn kind(&self) -> LauncherKind;

    /// Starts the trainer for `run` and writes its launch record.
    fn start(&self, run: &RunDir, request: &Request) -> anyhow::Result<Started>;

    /// Ends the run `launch` records.
    fn halt(&self, launch: &Launch, halt: Halt) -> anyhow::Result<()>;
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

/// Records how the trainer `pid` of `run` ended.
pub fn record_exit(run: &RunDir, pid: u32, status: ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    let killed_for_memory = status.signal() == Some(libc::SIGKILL)
        && run
            .read_launch()
            .and_then(|launch| launch.oom_kills)
            .zip(crate::run::process::oom_kills())
            .is_some_and(|(then, now)| now > then);
    let record = ExitRecord {
        pid,
        code: status.code(),
        signal: status.signal(),
        time: chrono::Utc::now(),
        out_of_memory: killed_for_memory,
    };
    // Nothing else to do when the run directory is gone or full: the events still tell.
    let _ = run.write_exit(&record);
}

/// Ends the run in `dir`: through Slurm when its latest launch was a Slurm job, else by
/// signalling its trainer `pid` (from its events or launch record). Returns what was done,
/// in words.
pub fn halt_run(dir: &Path, pid: Option<u32>, pid_start: Option<u64>, how: Halt) -> anyhow::Result<String> {
    let launch = RunDir::open(dir).read_launch();
    if let Some(launch) = launch.filter(|l| l.launcher == LauncherKind::Slurm)
        && let Some(job) = &launch.job
    {
        slurm::cancel(job, how)?;
        return Ok(format!("Slurm job {job}"));
    }
    let pid = pid.ok_or_else(|| anyhow::anyhow!("no known process yet; try again in a moment"))?;
    crate::run::process::signal(pid, pid_start, how)?;
    Ok(format!("pid {pid}"))
}

/// The workspace-relative form of `file`, for records and messages.
pub fn shown(workspace: &Path, file: &Path) -> PathBuf {
    file.strip_prefix(workspace).unwrap_or(file).to_path_buf()
}
