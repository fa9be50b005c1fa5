//! The local launcher: the trainer as a detached process on this machine, in a session of
//! its own, its output in the run's `train.log`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;

use super::{Launcher, Request, Started, trainer_path};
use crate::experiment::LauncherKind;
use crate::run::process::Halt;
use crate::run::{Launch, RunDir};

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
}

impl Launcher for Local {
    fn kind(&self) -> LauncherKind {
        LauncherKind::Local
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
        crate::run::process::detach(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.trainer.display()))?;
        let launch = Launch {
            pid: Some(child.id()),
            pid_start: crate::run::process::start_time(child.id()),
            host: sysinfo::System::host_name().unwrap_or_default(),
            time: chrono::Utc::now(),
            experiment: request.experiment.clone(),
            launcher: self.kind(),
            oom_kills: crate::run::process::oom_kills(),
            threads: request.threads,
            peak_bytes: request.peak_bytes,
            job: None,
            job_name: None,
            script: None,
        };
        // The trainer runs either way; without the record a later look only finds its
        // process once it writes run_started.
        let _ = run.write_launch(&launch);
        // Counted by every supervisor on the machine from now on; the trainer writes its own
        // record again once it runs (and so does one started by hand).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        if let Some(record) = crate::schedule::machine::record_of(
            child.id(),
            &run.id(),
            run.path(),
            request.threads.unwrap_or(cores),
            request.peak_bytes.unwrap_or(0),
        ) {
            let _ = crate::schedule::machine::Register::here().register(&record);
        }
        Ok(Started {
            launch,
            child: Some(child),
        })
    }

    fn halt(&self, launch: &Launch, how: Halt) -> anyhow::Result<()> {
        let pid = launch
            .pid
            .ok_or_else(|| anyhow::anyhow!("the launch record names no process"))?;
        crate::run::process::signal(pid, launch.pid_start, how)
    }
}
