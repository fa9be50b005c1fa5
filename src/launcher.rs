//! Starting trainer processes that outlive whoever started them, and signalling them.
//!
//! A [`Launcher`] starts `segtop-train train --resume DIR` for a run directory that already
//! holds its frozen experiment, and records the launch in `launch.json`. `--resume` on a
//! fresh directory trains from the start, so the log has a home from the first byte and a
//! queued run, a resumed run and a new one start the same way.
//!
//! [`Local`] is the default: the trainer gets its own session (closing the terminal or the
//! SSH connection sends it no hangup), reads nothing from the terminal, and writes its output
//! to the run's `train.log`. Whoever holds its [`Started::child`] reaps it and records how it
//! ended with [`record_exit`], so a run that dies without a word (out of memory, killed) still
//! reads as failed with a reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::Context;

use crate::rundir::{ExitRecord, Launch, RunDir};

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

/// How to end a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// SIGTERM: the trainer finishes its step, checkpoints and exits.
    Stop,
    /// SIGKILL to the trainer's whole process group: immediate, loses work since the last checkpoint.
    Kill,
}

/// Where runs execute.
pub trait Launcher {
    /// The name recorded in `launch.json` (`local`, ...).
    fn name(&self) -> &'static str;

    /// Starts the trainer for `run` and writes its launch record.
    fn start(&self, run: &RunDir, request: &Request) -> anyhow::Result<Started>;

    /// Ends the run `launch` records.
    fn halt(&self, launch: &Launch, halt: Halt) -> anyhow::Result<()>;
}

/// Runs on this machine, as detached processes.
#[derive(Debug, Clone)]
pub struct Local {
    trainer: PathBuf,
}

impl Local {
    /// The launcher for the trainer installed next to the running `segtop`.
    pub fn new() -> anyhow::Result<Local> {
        Ok(Local {
            trainer: trainer_path()?,
        })
    }

    /// A launcher that starts `trainer` (tests start stand-ins).
    pub fn with_trainer(trainer: impl Into<PathBuf>) -> Local {
        Local {
            trainer: trainer.into(),
        }
    }
}

impl Launcher for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn start(&self, run: &RunDir, request: &Request) -> anyhow::Result<Started> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(request.append_log)
            .write(true)
            .truncate(!request.append_log)
            .open(run.log())
            .with_context(|| format!("cannot open {}", run.log().display()))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("cannot share {}", run.log().display()))?;
        // An exit record of an earlier process would describe this one once it is gone.
        let _ = std::fs::remove_file(run.exit());
        let mut command = Command::new(&self.trainer);
        command
            .arg("train")
            .arg("--resume")
            .arg(run.path())
            .current_dir(&request.workspace)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(threads) = request.threads {
            command.env("SEGTOP_THREADS", threads.to_string());
        }
        detach(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.trainer.display()))?;
        let launch = Launch {
            pid: Some(child.id()),
            pid_start: crate::rundir::process_start_time(child.id()),
            host: sysinfo::System::host_name().unwrap_or_default(),
            time: chrono::Utc::now(),
            experiment: request.experiment.clone(),
            launcher: self.name().to_string(),
            threads: request.threads,
            peak_bytes: request.peak_bytes,
            job: None,
            job_name: None,
            script: None,
        };
        // The trainer runs either way; without the record a later look only finds its
        // process once it writes run_started.
        let _ = run.write_launch(&launch);
        Ok(Started {
            launch,
            child: Some(child),
        })
    }

    fn halt(&self, launch: &Launch, how: Halt) -> anyhow::Result<()> {
        let pid = launch
            .pid
            .ok_or_else(|| anyhow::anyhow!("the launch record names no process"))?;
        halt(pid, launch.pid_start, how)
    }
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
    let record = ExitRecord {
        pid,
        code: status.code(),
        signal: status.signal(),
        time: chrono::Utc::now(),
    };
    // Nothing else to do when the run directory is gone or full: the events still tell.
    let _ = run.write_exit(&record);
}

/// Puts the child in a session of its own, away from the terminal's hangup and Ctrl-C.
pub fn detach(command: &mut Command) {
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

/// Ends the run in `dir`: through Slurm when its latest launch was a Slurm job, else by
/// signalling its trainer `pid` (from its events or launch record). Returns what was done,
/// in words.
pub fn halt_run(dir: &Path, pid: Option<u32>, pid_start: Option<u64>, how: Halt) -> anyhow::Result<String> {
    let launch = RunDir::open(dir).read_launch();
    if let Some(launch) = launch.filter(|l| l.launcher == crate::slurm::NAME)
        && let Some(job) = &launch.job
    {
        crate::slurm::cancel(job, how)?;
        return Ok(format!("Slurm job {job}"));
    }
    let pid = pid.ok_or_else(|| anyhow::anyhow!("no known process yet; try again in a moment"))?;
    halt(pid, pid_start, how)?;
    Ok(format!("pid {pid}"))
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

/// The workspace-relative form of `file`, for records and messages.
pub fn shown(workspace: &Path, file: &Path) -> PathBuf {
    file.strip_prefix(workspace).unwrap_or(file).to_path_buf()
}
