//! The JSON records a run directory holds besides its events: who launched the trainer, how
//! it ended, and a halving sweep's rung and pruning. [`super::RunDir`] reads and writes them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::experiment::LauncherKind;

/// Who started a run's trainer, so a later dashboard can find its process before the
/// trainer writes `run_started` (it may spend a while preparing data first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// The trainer's process id, for launchers that start it themselves (`local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The process's start time (see [`crate::run::process::start_time`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub host: String,
    pub time: DateTime<Utc>,
    /// The experiment file the run was launched from, as given.
    pub experiment: PathBuf,
    /// Which launcher started it (`local`, `slurm`).
    #[serde(default)]
    pub launcher: LauncherKind,
    /// The machine's count of processes killed for want of memory when it was launched
    /// (`/proc/vmstat`), to tell such a kill from another SIGKILL when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// Torch threads the launcher granted, when it chose them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// The run's estimated peak memory when it was launched, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_bytes: Option<u64>,
    /// The Slurm job id (`123`, or `123_4` for a task of an array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The Slurm job's name: the run's id, or the sweep's for an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The job script that was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<PathBuf>,
}

/// How a launched trainer process ended, as its parent saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: u32,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub time: DateTime<Utc>,
    /// The kernel killed it for want of memory (its memory cgroup's limit, or the machine's):
    /// the machine's count of such kills rose while it ran and it died by SIGKILL.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_memory: bool,
}

impl ExitRecord {
    /// How it ended, in words: `exited with code 1`, `was killed by SIGKILL (...)`.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            _ if self.out_of_memory => "was killed by the kernel: out of memory".to_string(),
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by {}", crate::run::process::signal_name(signal)),
            (None, None) => "ended".to_string(),
        }
    }

    /// Whether the process ended the way a trainer ends when all went well or it was asked
    /// to stop.
    pub fn clean(&self) -> bool {
        self.code.is_some_and(crate::run::process::exit::clean)
    }
}

/// A run's place in its halving sweep (`rung.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungRecord {
    /// The rung it trains in (0: the first).
    pub rung: u32,
    /// Where that rung ends: seconds of the run's training in all.
    pub until_seconds: u64,
    /// Its score at the end of each rung it finished, in order.
    pub scores: Vec<f64>,
}

/// Why a run of a halving sweep stopped for good (`pruned.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    pub rung: u32,
    pub reason: String,
    pub time: DateTime<Utc>,
}
