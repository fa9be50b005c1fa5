//! The run directory: everything one training run writes, in one folder under `runs/`.
//!
//! ```text
//! runs/<YYYYMMDD-HHMMSS>-<name>/
//!   experiment.toml   the checked experiment with every default written out, as launched
//!   split.json        which cases train, validate and test
//!   events.jsonl      event records (crate::events), appended by the trainer
//!   train.log         the trainer's stdout and stderr
//!   launch.json       who started the trainer: launcher, pid or Slurm job, host, time, threads
//!   slurm.sh          the job script of a run submitted to Slurm
//!   exit.json         how the trainer process ended: exit code or signal (when its launcher saw it)
//!   sweep.json        the sweep the run belongs to and the values it varies (sweep runs)
//!   checkpoints/      model and optimizer state, for resuming and predicting
//!   preview/          predictions of the preview case, for the slice view
//!   validation/       the best weights' raw predictions of the validation cases (end of run)
//!   postprocess.toml  the post-processing learned on them, with its validation scores
//! ```
//!
//! The trainer reads only `experiment.toml`, so a run started by hand with `segtop-train`
//! looks exactly like one started from the dashboard.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};

use crate::experiment::{Experiment, LauncherKind};

/// Paths inside one run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub const EXPERIMENT: &'static str = "experiment.toml";
    pub const EVENTS: &'static str = "events.jsonl";
    pub const LOG: &'static str = "train.log";
    pub const SPLIT: &'static str = "split.json";
    pub const CHECKPOINTS: &'static str = "checkpoints";
    pub const PREVIEW: &'static str = "preview";
    pub const LAUNCH: &'static str = "launch.json";
    pub const EXIT: &'static str = "exit.json";
    pub const SWEEP: &'static str = "sweep.json";
    pub const VALIDATION: &'static str = "validation";

    /// An existing run directory.
    pub fn open(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    /// Creates a new run directory for `experiment` under `runs`, named after the run and
    /// the time, and writes the experiment into it. Never reuses an existing directory.
    ///
    /// `model.init` is resolved here to the weights file it names, which the frozen
    /// experiment then records; a name that resolves to nothing is an error and no directory
    /// is made.
    pub fn create(runs: &Path, experiment: &Experiment, now: DateTime<Local>) -> io::Result<RunDir> {
        let mut experiment = experiment.clone();
        if let Some(init) = &experiment.model.init {
            let weights = crate::experiment::resolve_init(init, runs).map_err(io::Error::other)?;
            let weights = std::path::absolute(&weights).unwrap_or(weights);
            experiment.model.init = Some(weights.display().to_string());
        }
        let experiment = &experiment;
        std::fs::create_dir_all(runs)?;
        let stem = format!("{}-{}", now.format("%Y%m%d-%H%M%S"), experiment.run.name);
        let mut attempt = 1;
        let path = loop {
            let name = if attempt == 1 {
                stem.clone()
            } else {
                format!("{stem}-{attempt}")
            };
            let path = runs.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
                Err(error) => return Err(error),
            }
        };
        let run = RunDir { path };
        std::fs::create_dir(run.checkpoints())?;
        std::fs::create_dir(run.preview())?;
        std::fs::write(run.experiment(), experiment.to_toml())?;
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run's id: its directory name.
    pub fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn experiment(&self) -> PathBuf {
        self.path.join(Self::EXPERIMENT)
    }

    pub fn events(&self) -> PathBuf {
        self.path.join(Self::EVENTS)
    }

    pub fn log(&self) -> PathBuf {
        self.path.join(Self::LOG)
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join(Self::CHECKPOINTS)
    }

    pub fn preview(&self) -> PathBuf {
        self.path.join(Self::PREVIEW)
    }

    pub fn split(&self) -> PathBuf {
        self.path.join(Self::SPLIT)
    }

    pub fn launch(&self) -> PathBuf {
        self.path.join(Self::LAUNCH)
    }

    pub fn exit(&self) -> PathBuf {
        self.path.join(Self::EXIT)
    }

    pub fn sweep(&self) -> PathBuf {
        self.path.join(Self::SWEEP)
    }

    /// Raw predictions of the validation cases by the best weights (`<case id>.nii.gz`, on each
    /// case's original grid, BraTS 2023 labels), from which post-processing is learned.
    pub fn validation(&self) -> PathBuf {
        self.path.join(Self::VALIDATION)
    }

    /// The post-processing learned on the validation cases (see `crate::postprocess`).
    pub fn postprocess(&self) -> PathBuf {
        self.path.join(crate::postprocess::FILE)
    }

    /// The launch record, when the run was started by a launcher and the file reads.
    pub fn read_launch(&self) -> Option<Launch> {
        read_json(&self.launch())
    }

    /// Writes the launch record atomically.
    pub fn write_launch(&self, launch: &Launch) -> io::Result<()> {
        write_json(&self.path, &self.launch(), launch)
    }

    /// The sweep the run belongs to, when it does.
    pub fn read_sweep(&self) -> Option<crate::experiment::sweep::SweepTag> {
        read_json(&self.sweep())
    }

    /// How the last launched trainer ended, when its launcher saw it end.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        read_json(&self.exit())
    }

    pub fn write_exit(&self, exit: &ExitRecord) -> io::Result<()> {
        write_json(&self.path, &self.exit(), exit)
    }
}

/// A run or sweep id's time and name (`20261126-090512-quick` -> `20261126-090512`, `quick`);
/// `None` for an id not made by [`RunDir::create`].
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    let bytes = id.as_bytes();
    let dated = bytes.len() > 16
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'-'
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && bytes[15] == b'-';
    dated.then(|| (&id[..15], &id[16..]))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `value` to `path` atomically: a reader sees the old file or the new one.
pub fn write_json<T: serde::Serialize>(dir: &Path, path: &Path, value: &T) -> io::Result<()> {
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut file, value)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `text` to `path` atomically, as [`write_json`] does.
pub fn write_text(dir: &Path, path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Who started a run's trainer, so a later dashboard can find its process before the
/// trainer writes `run_started` (it may spend a while preparing data first).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// The trainer's process id, for launchers that start it themselves (`local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The process's start time (see [`crate::process::start_time`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    pub host: String,
    pub time: DateTime<chrono::Utc>,
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    pub pid: u32,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub time: DateTime<chrono::Utc>,
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
            (None, Some(signal)) => format!("was killed by {}", crate::process::signal_name(signal)),
            (None, None) => "ended".to_string(),
        }
    }

    /// Whether the process ended the way a trainer ends when all went well or it was asked
    /// to stop.
    pub fn clean(&self) -> bool {
        self.code.is_some_and(crate::process::exit::clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn runs_created_in_the_same_second_get_distinct_directories() {
        let runs = tempfile::tempdir().expect("temp dir");
        let experiment = Experiment::parse(Path::new("quick.toml"), "[data]\nroot = \"d\"\n", Path::new("/ws"))
            .expect("valid experiment");
        let now = Local
            .with_ymd_and_hms(2026, 11, 26, 9, 5, 0)
            .single()
            .expect("valid time");
        let first = RunDir::create(runs.path(), &experiment, now).expect("created");
        let second = RunDir::create(runs.path(), &experiment, now).expect("created");
        assert_eq!(first.id(), "20261126-090500-quick");
        assert_eq!(second.id(), "20261126-090500-quick-2");
        let saved = Experiment::load(&second.experiment(), Path::new("/elsewhere")).expect("saved file parses");
        assert_eq!(saved, experiment);
        assert!(second.checkpoints().is_dir() && second.preview().is_dir());
    }
}
