//! The run queue: runs waiting for cores and memory, on disk so they survive every process.
//!
//! ```text
//! runs/
//!   queue.json        the waiting runs, in order (see README: "The queue file")
//!   .queue.lock       advisory lock: whoever changes queue.json or starts a run holds it
//! ```
//!
//! A queued run already has its run directory with the frozen `experiment.toml`, so editing
//! the experiment file after queueing changes nothing. [`schedule`] starts the runs at the head
//! of the queue that fit, under the lock: it reads the queue, starts, removes the started
//! entries and writes the queue back before letting go, so two schedulers racing for one run
//! start it once.
//!
//! What may start and what waits is decided by admission ([`super::admission`]).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::experiment::sweep::{self, SweepTag};
use crate::experiment::{Experiment, LauncherKind};
use crate::run::RunDir;
use crate::schedule::admission::{Candidate, Decision, Machine, Plan, granted, plan};
use crate::schedule::launcher::{Launcher, Request, Started};
use crate::workspace::Workspace;

pub const QUEUE_FILE: &str = "queue.json";
const LOCK_FILE: &str = ".queue.lock";

/// How many runs the queue starts at once and what it leaves free (`[queue]` in settings.toml).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Cores the queue may use; 0: all of the machine's.
    pub cores: u32,
    /// Runs at once; 0: one per two cores of the budget (at least one).
    pub max_concurrent: u32,
    /// Memory left for everything else, e.g. `"1 GB"`.
    pub reserve_ram: ByteSize,
    /// Count the cores that programs other than segtop's trainers keep busy (measured over
    /// the last seconds) as taken. `SEGTOP_OTHER_LOAD=0` turns it off for one process.
    pub other_load: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            cores: 0,
            max_concurrent: 0,
            reserve_ram: ByteSize(1_000_000_000),
            other_load: true,
        }
    }
}

impl QueueSettings {
    /// The core budget on a machine with `machine_cores`.
    pub fn cores(&self, machine_cores: u32) -> u32 {
        if self.cores == 0 {
            machine_cores.max(1)
        } else {
            self.cores
        }
    }

    pub fn max_concurrent(&self, machine_cores: u32) -> u32 {
        if self.max_concurrent == 0 {
            (self.cores(machine_cores) / 2).max(1)
        } else {
            self.max_concurrent
        }
    }

    /// Torch threads for each run: an equal share of the budget.
    pub fn share(&self, machine_cores: u32) -> u32 {
        (self.cores(machine_cores) / self.max_concurrent(machine_cores)).max(1)
    }
}

/// A number of bytes, written in settings as `"1.5 GB"`, `"512 MB"`, `"2 GiB"` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a size like \"1.5 GB\" or \"512 MB\""))?;
        let scale = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown unit '{other}' in '{text}' (use B, KB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        Ok(ByteSize((number * scale).round() as u64))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0 as f64;
        if bytes >= 1e9 {
            write!(f, "{:.1} GB", bytes / 1e9)
        } else {
            write!(f, "{:.0} MB", bytes / 1e6)
        }
    }
}

impl ByteSize {
    /// The size in the largest unit that holds it exactly (`"1536 MiB"`, `"2 GB"`), else in
    /// bytes: it reads back as the same number, which the rounded `Display` does not.
    pub fn exact(self) -> String {
        const UNITS: [(u64, &str); 6] = [
            (1 << 30, "GiB"),
            (1_000_000_000, "GB"),
            (1 << 20, "MiB"),
            (1_000_000, "MB"),
            (1 << 10, "KiB"),
            (1_000, "KB"),
        ];
        match UNITS
            .iter()
            .find(|(unit, _)| self.0 >= *unit && self.0.is_multiple_of(*unit))
        {
            Some((unit, name)) => format!("{} {name}", self.0 / unit),
            None => format!("{} B", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.exact())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `runs/queue.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueFile {
    pub version: u32,
    pub entries: Vec<Entry>,
}

impl Default for QueueFile {
    fn default() -> Self {
        QueueFile {
            version: 1,
            entries: Vec::new(),
        }
    }
}

/// One waiting run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The run directory's name under `runs/`.
    pub run: String,
    /// The experiment file it was queued from, for the record.
    pub experiment: PathBuf,
    pub added: DateTime<Utc>,
    /// Held: the scheduler passes over it until it is released.
    #[serde(default)]
    pub paused: bool,
    /// Continue from the run's checkpoint (a resume) rather than start it.
    #[serde(default)]
    pub resume: bool,
    /// Why it is still waiting, as the scheduler last saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// A run that was queued, or submitted to Slurm.
#[derive(Debug, Clone)]
pub struct Queued {
    pub run: RunDir,
    /// Its estimated peak memory.
    pub peak_bytes: u64,
    /// The sweep it belongs to, when its file has one.
    pub sweep: Option<SweepTag>,
    /// Its launch record, when it went to Slurm rather than into the local queue.
    pub submitted: Option<crate::run::Launch>,
}

/// How a run was resumed.
pub enum Resumed {
    /// At the head of the local queue.
    Queued,
    /// Resubmitted to Slurm as this job.
    Submitted { job: String },
}

/// The queue of one workspace.
#[derive(Debug, Clone)]
pub struct Queue {
    runs: PathBuf,
}

/// Holds the queue's advisory lock until dropped.
pub struct Locked {
    _file: File,
}

impl Queue {
    pub fn new(workspace: &Workspace) -> Queue {
        Queue {
            runs: workspace.runs_dir(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.runs.join(QUEUE_FILE)
    }

    /// Takes the queue's lock, waiting for whoever holds it.
    pub fn lock(&self) -> anyhow::Result<Locked> {
        let file = lock_file(&self.runs.join(LOCK_FILE), libc::LOCK_EX)?;
        let file = file.ok_or_else(|| anyhow::anyhow!("cannot lock the queue"))?;
        Ok(Locked { _file: file })
    }

    /// Reads the queue; a missing file is an empty queue, a broken one an error naming it
    /// (and left as it is, so nothing in it is lost).
    pub fn read(&self) -> anyhow::Result<QueueFile> {
        let path = self.path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a segtop queue file; fix or remove it", path.display())),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(QueueFile::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write(&self, queue: &QueueFile) -> anyhow::Result<()> {
        crate::run::write_json(&self.runs, &self.path(), queue)
            .with_context(|| format!("cannot write {}", self.path().display()))
    }

    /// Changes the queue under its lock; writes it back only when `change` changed it.
    pub fn update<T>(&self, change: impl FnOnce(&mut QueueFile) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let _lock = self.lock()?;
        let before = self.read()?;
        let mut queue = before.clone();
        let result = change(&mut queue)?;
        if queue != before {
            self.write(&queue)?;
        }
        Ok(result)
    }

    /// Queues the runs of the experiment file `file`: one run, or every run of its `[sweep]`.
    /// Each run directory is created now with its frozen experiment (and `sweep.json`), so
    /// later edits of the file change none of them; all of them join the queue at once.
    /// Runs whose launcher (`run.launcher`, or `launcher` when given) is Slurm are submitted
    /// to it instead, a sweep as one job array where its runs ask for the same resources.
    pub fn add(
        &self,
        workspace: &Workspace,
        file: &Path,
        launcher: Option<LauncherKind>,
    ) -> anyhow::Result<Vec<Queued>> {
        let text = crate::config::read_text(file)?;
        self.add_text(workspace, file, &text, launcher)
    }

    /// [`Queue::add`] for experiment text read from `file` (and perhaps changed since, as
    /// `segtop queue --folds` adds a sweep over the folds).
    pub fn add_text(
        &self,
        workspace: &Workspace,
        file: &Path,
        text: &str,
        launcher: Option<LauncherKind>,
    ) -> anyhow::Result<Vec<Queued>> {
        let now = chrono::Local::now();
        let (mut members, sweep_id) = expand(workspace, file, text, now)?;
        if let Some(kind) = launcher {
            for (experiment, _) in &mut members {
                experiment.run.launcher = kind;
            }
        }
        let runs = workspace.runs_dir();
        let mut queued: Vec<Queued> = Vec::with_capacity(members.len());
        let created = members.iter().try_for_each(|(experiment, tag)| -> anyhow::Result<()> {
            let run = RunDir::create(&runs, experiment, now)
                .with_context(|| format!("cannot create a run directory in {}", runs.display()))?;
            queued.push(Queued {
                run: run.clone(),
                peak_bytes: crate::cost::peak_bytes(experiment),
                sweep: tag.clone(),
                submitted: None,
            });
            // In `queued` already: a failure here takes its directory away with the others.
            tag.as_ref().map_or(Ok(()), |tag| write_tags(&run, tag))
        });
        let shown = crate::schedule::launcher::shown(workspace.root(), file);
        let result = created
            .and_then(|()| submit_to_slurm(workspace, &members, &mut queued, sweep_id, &shown))
            .and_then(|()| {
                self.update(|queue| {
                    for q in queued.iter().filter(|q| q.submitted.is_none()) {
                        queue.entries.push(Entry {
                            run: q.run.id(),
                            experiment: shown.clone(),
                            added: Utc::now(),
                            paused: false,
                            resume: false,
                            waiting: None,
                        });
                    }
                    Ok(())
                })
            });
        if let Err(error) = result {
            // Not queued: leave no directories behind that would look like runs (a job
            // that was submitted keeps its run).
            for q in queued.iter().filter(|q| q.submitted.is_none()) {
                let _ = std::fs::remove_dir_all(q.run.path());
            }
            return Err(error);
        }
        Ok(queued)
    }

    /// Continues a stopped, failed or lost run from its checkpoint: resubmitted to Slurm when
    /// its frozen experiment says so, else at the head of the local queue.
    pub fn resume(&self, workspace: &Workspace, run: &RunDir) -> anyhow::Result<Resumed> {
        let launch = run.read_launch();
        let experiment = launch
            .as_ref()
            .map_or_else(|| run.experiment(), |l| l.experiment.clone());
        let frozen = Experiment::load_frozen(&run.experiment(), workspace.root())?;
        let slurm = frozen.run.launcher == LauncherKind::Slurm
            || launch.as_ref().is_some_and(|l| l.launcher == LauncherKind::Slurm);
        if !slurm {
            self.add_resume(run, experiment)?;
            return Ok(Resumed::Queued);
        }
        let request = Request {
            workspace: workspace.root().to_path_buf(),
            experiment,
            threads: None,
            peak_bytes: Some(crate::cost::peak_bytes(&frozen)),
            append_log: true,
        };
        let launch = crate::schedule::launcher::slurm::Slurm::new().submit_one(run, &frozen, &request)?;
        Ok(Resumed::Submitted {
            job: launch.job.unwrap_or_default(),
        })
    }

    /// Queues an existing run to continue from its checkpoint, at the head of the queue (a
    /// resume is a run someone already waited for).
    pub fn add_resume(&self, run: &RunDir, experiment: PathBuf) -> anyhow::Result<()> {
        let id = run.id();
        self.update(|queue| {
            anyhow::ensure!(
                !queue.entries.iter().any(|e| e.run == id),
                "{id} is already in the queue"
            );
            queue.entries.insert(
                0,
                Entry {
                    run: id.clone(),
                    experiment,
                    added: Utc::now(),
                    paused: false,
                    resume: true,
                    waiting: None,
                },
            );
            Ok(())
        })
    }

    /// Takes `id` out of the queue. A run that never started has nothing in its directory but
    /// the frozen experiment, which is removed with it; a resume keeps its run.
    pub fn remove(&self, id: &str) -> Result<Entry, EditError> {
        self.edit(id, |queue, at| {
            let entry = queue.entries.remove(at);
            if !entry.resume {
                let run = RunDir::open(self.runs.join(&entry.run));
                if !run.events().exists() && !run.launch().exists() {
                    std::fs::remove_dir_all(run.path())
                        .with_context(|| format!("cannot remove {}", run.path().display()))?;
                }
            }
            Ok(entry)
        })
    }

    /// Holds (`true`) or releases a queued run.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<(), EditError> {
        self.edit(id, |queue, at| {
            queue.entries[at].paused = paused;
            Ok(())
        })
    }

    /// Moves a queued run to `to` (0: the head), clamped to the queue; its new place.
    pub fn move_to(&self, id: &str, to: usize) -> Result<usize, EditError> {
        self.move_with(id, |_| to)
    }

    /// Moves a queued run `by` places (negative: towards the head), clamped; its new place.
    pub fn move_by(&self, id: &str, by: isize) -> Result<usize, EditError> {
        self.move_with(id, |at| at.saturating_add_signed(by))
    }

    fn move_with(&self, id: &str, to: impl FnOnce(usize) -> usize) -> Result<usize, EditError> {
        self.edit(id, |queue, at| {
            let entry = queue.entries.remove(at);
            let to = to(at).min(queue.entries.len());
            queue.entries.insert(to, entry);
            Ok(to)
        })
    }

    /// Changes the entry of run `id` (at its place in the queue) under the queue's lock.
    fn edit<T>(
        &self,
        id: &str,
        change: impl FnOnce(&mut QueueFile, usize) -> anyhow::Result<T>,
    ) -> Result<T, EditError> {
        let result = self.update(|queue| match queue.entries.iter().position(|e| e.run == id) {
            Some(at) => change(queue, at).map(Some),
            None => Ok(None),
        });
        match result {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(EditError::NotQueued(id.to_string())),
            Err(error) => Err(EditError::Failed(error)),
        }
    }
}

/// Why a change to a queued run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The run is not (or no longer) in the queue: it started, or was removed.
    #[error("{0} is not in the queue")]
    NotQueued(String),
    /// The queue could not be read, locked or written, or the change itself failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Opens the lock file `path` (creating it and its folder) and takes `flock(operation)` on
/// it; `None` when `LOCK_NB` was asked for and another process holds the lock.
pub fn lock_file(path: &Path, operation: libc::c_int) -> anyhow::Result<Option<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match flock(&file, operation) {
        Ok(()) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// `flock(2)` on an open file: an advisory lock every segtop process honours, released
/// when the file is closed (also when the process dies).
pub fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: a plain system call on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// One run the scheduler started or failed to start.
pub enum Outcome {
    Started {
        run: RunDir,
        started: Box<Started>,
    },
    /// The run could not start (its directory is gone, its experiment no longer reads, the
    /// launcher failed); it left the queue with this reason.
    Dropped {
        run: String,
        reason: String,
    },
}

/// What one look at the queue did, and what still waits.
#[derive(Default)]
pub struct Scheduled {
    pub outcomes: Vec<Outcome>,
    /// The runs left waiting (held ones aside), in queue order, with the cores each will take.
    pub waiting: Vec<(String, u32)>,
    /// When the oldest of them was queued.
    pub since: Option<DateTime<Utc>>,
    /// See [`Plan::wants`].
    pub wants: u32,
    /// The processes of this workspace's live runs, and how many may run at once: whether
    /// its runs wait only for its own to end.
    pub running: Vec<u32>,
    pub max_concurrent: u32,
}

/// Starts what fits, under the queue's lock: reads the queue and the machine, starts the
/// runs admission allows, takes them out of the queue and records why the rest wait.
pub fn schedule(
    workspace: &Workspace,
    settings: &QueueSettings,
    launcher: &dyn Launcher,
    machine: &mut dyn FnMut() -> Machine,
) -> anyhow::Result<Scheduled> {
    let queue = Queue::new(workspace);
    queue.update(|file| {
        if file.entries.is_empty() {
            return Ok(Scheduled::default());
        }
        let machine = machine();
        let mut scheduled = Scheduled::default();
        let outcomes = &mut scheduled.outcomes;
        let mut candidates = Vec::with_capacity(file.entries.len());
        let mut kept = Vec::with_capacity(file.entries.len());
        for entry in file.entries.drain(..) {
            let run = RunDir::open(workspace.runs_dir().join(&entry.run));
            match Experiment::load_frozen(&run.experiment(), workspace.root()) {
                Ok(experiment) => {
                    candidates.push(Candidate {
                        id: entry.run.clone(),
                        paused: entry.paused,
                        peak_bytes: crate::cost::peak_bytes(&experiment),
                        threads: (experiment.train.threads > 0).then_some(experiment.train.threads),
                    });
                    kept.push(entry);
                }
                Err(error) => outcomes.push(Outcome::Dropped {
                    run: entry.run,
                    reason: format!("{error}"),
                }),
            }
        }
        let Plan { decisions, wants } = plan(&candidates, &machine, settings);
        scheduled.wants = wants;
        scheduled.running = machine
            .live
            .iter()
            .filter(|r| r.owner.is_none())
            .map(|r| r.pid)
            .collect();
        scheduled.max_concurrent = settings.max_concurrent(machine.cores);
        for ((mut entry, candidate), decision) in kept.into_iter().zip(&candidates).zip(decisions) {
            match decision {
                Decision::Start { threads } => {
                    outcomes.push(start(workspace, launcher, entry, candidate.peak_bytes, threads));
                }
                Decision::Wait(reason) => {
                    let cores = granted(candidate, &machine, settings);
                    scheduled.waiting.push((entry.run.clone(), cores));
                    scheduled.since = Some(scheduled.since.map_or(entry.added, |s| s.min(entry.added)));
                    entry.waiting = Some(reason);
                    file.entries.push(entry);
                }
                Decision::Paused => {
                    entry.waiting = None;
                    file.entries.push(entry);
                }
            }
        }
        Ok(scheduled)
    })
}

/// The experiments an experiment file stands for, each with its sweep tag when it has one.
type Members = Vec<(Experiment, Option<SweepTag>)>;

/// Starts the queued run of `entry` with `threads` torch threads.
fn start(workspace: &Workspace, launcher: &dyn Launcher, entry: Entry, peak_bytes: u64, threads: u32) -> Outcome {
    let run = RunDir::open(workspace.runs_dir().join(&entry.run));
    let request = Request {
        workspace: workspace.root().to_path_buf(),
        experiment: entry.experiment.clone(),
        threads: Some(threads),
        peak_bytes: Some(peak_bytes),
        append_log: entry.resume,
    };
    match launcher.start(&run, &request) {
        Ok(started) => Outcome::Started {
            run,
            started: Box::new(started),
        },
        Err(error) => Outcome::Dropped {
            run: entry.run,
            reason: format!("{error:#}"),
        },
    }
}

/// The checked experiments an experiment file stands for (one, or a sweep's runs with their
/// tags), and the sweep's id when it is one.
fn expand(
    workspace: &Workspace,
    file: &Path,
    text: &str,
    now: chrono::DateTime<chrono::Local>,
) -> anyhow::Result<(Members, Option<String>)> {
    Ok(match sweep::expand(file, text, workspace.root())? {
        None => (vec![(Experiment::parse(file, text, workspace.root())?, None)], None),
        Some(sweep) => {
            let id = format!("{}-{}", now.format("%Y%m%d-%H%M%S"), sweep.name);
            let members = sweep
                .members
                .iter()
                .map(|m| (m.experiment.clone(), Some(sweep.tag(&id, m))))
                .collect();
            (members, Some(id))
        }
    })
}

/// Writes a sweep's run its tag and, in a halving sweep, its first rung.
fn write_tags(run: &RunDir, tag: &SweepTag) -> anyhow::Result<()> {
    run.write_sweep(tag)
        .with_context(|| format!("cannot write {}", run.sweep().display()))?;
    if let Some(halving) = &tag.halving {
        // A halving sweep's runs start in its first rung.
        let record = crate::run::RungRecord {
            rung: 0,
            until_seconds: halving.rungs.first().copied().unwrap_or(0),
            scores: Vec::new(),
        };
        run.write_rung(&record)
            .with_context(|| format!("cannot write {}", run.rung().display()))?;
    }
    Ok(())
}

/// Submits the runs whose launcher is Slurm, together (a sweep's as one job array where they
/// can be), and notes each one's job in `queued`.
fn submit_to_slurm(
    workspace: &Workspace,
    members: &[(Experiment, Option<SweepTag>)],
    queued: &mut [Queued],
    sweep_id: Option<String>,
    shown: &Path,
) -> anyhow::Result<()> {
    let slurm: Vec<usize> = members
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| e.run.launcher == LauncherKind::Slurm)
        .map(|(i, _)| i)
        .collect();
    if slurm.is_empty() {
        return Ok(());
    }
    let batch: Vec<(RunDir, Experiment, u64)> = slurm
        .iter()
        .map(|&i| (queued[i].run.clone(), members[i].0.clone(), queued[i].peak_bytes))
        .collect();
    let name = sweep_id.unwrap_or_else(|| queued[slurm[0]].run.id());
    let launches = crate::schedule::launcher::slurm::Slurm::new().submit_all(workspace, &batch, &name, shown)?;
    for (&i, launch) in slurm.iter().zip(launches) {
        queued[i].submitted = Some(launch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::schedule::admission::tests::{machine, settings};

    /// Starts nothing, slowly, and counts: a stand-in for a trainer launch.
    struct Counting {
        starts: std::sync::atomic::AtomicUsize,
    }

    impl Launcher for Counting {
        fn kind(&self) -> LauncherKind {
            LauncherKind::Local
        }

        fn start(&self, run: &RunDir, request: &Request) -> anyhow::Result<Started> {
            self.starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Wide enough a window for a second scheduler to read the queue meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(150));
            let launch = crate::run::Launch {
                pid: Some(1),
                pid_start: None,
                host: "test".into(),
                time: Utc::now(),
                experiment: request.experiment.clone(),
                launcher: self.kind(),
                oom_kills: None,
                threads: request.threads,
                peak_bytes: request.peak_bytes,
                job: None,
                job_name: None,
                script: None,
            };
            run.write_launch(&launch)?;
            Ok(Started { launch, child: None })
        }

        fn halt(&self, _: &crate::run::Launch, _: crate::run::process::Halt) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn workspace_with_experiment() -> (tempfile::TempDir, Workspace, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let workspace = Workspace::new(dir.path());
        let file = dir.path().join("tiny.toml");
        std::fs::write(&file, "[data]\nroot = \"data\"\n[model]\nbase_filters = 4\ndepth = 3\n").expect("write");
        (dir, workspace, file)
    }

    #[test]
    fn schedulers_racing_for_one_queued_run_start_it_once() {
        let (_dir, workspace, file) = workspace_with_experiment();
        let queue = Queue::new(&workspace);
        let run = queue.add(&workspace, &file, None).expect("queued").remove(0).run;
        let launcher = Counting {
            starts: std::sync::atomic::AtomicUsize::new(0),
        };
        let roomy = || machine(8, 24, 20.0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    schedule(&workspace, &settings(4), &launcher, &mut || roomy()).expect("schedules");
                });
            }
        });
        assert_eq!(launcher.starts.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(queue.read().expect("reads").entries.is_empty());
        assert!(run.read_launch().is_some());
    }

    #[test]
    fn the_queue_file_keeps_order_holds_and_reasons_and_a_broken_one_is_kept() {
        let (_dir, workspace, file) = workspace_with_experiment();
        let queue = Queue::new(&workspace);
        let a = queue.add(&workspace, &file, None).expect("queued")[0].run.id();
        let b = queue.add(&workspace, &file, None).expect("queued")[0].run.id();
        let c = queue.add(&workspace, &file, None).expect("queued")[0].run.id();
        queue.move_to(&c, 0).expect("moves");
        queue.set_paused(&a, true).expect("holds");
        let launcher = Counting {
            starts: std::sync::atomic::AtomicUsize::new(0),
        };
        // Room for one run: c (now first) starts, a is held, b waits with its reason.
        let started = schedule(&workspace, &settings(1), &launcher, &mut || machine(2, 24, 20.0)).expect("schedules");
        assert!(matches!(started.outcomes.as_slice(), [Outcome::Started { run, .. }] if run.id() == c));
        // b waits for this workspace's own limit: for c to end, on its 2 cores.
        assert_eq!(started.waiting, [(b.clone(), 2)]);
        assert_eq!(started.wants, 2);
        let file_now = queue.read().expect("reads");
        let left: Vec<(&str, bool, Option<&str>)> = file_now
            .entries
            .iter()
            .map(|e| (e.run.as_str(), e.paused, e.waiting.as_deref()))
            .collect();
        assert_eq!(
            left,
            [
                (a.as_str(), true, None),
                (b.as_str(), false, Some("1 of 1 runs at once are running"))
            ]
        );
        // Removing a run that never started removes its directory; the queue is rewritten.
        queue.remove(&b).expect("removes");
        assert!(!workspace.runs_dir().join(&b).exists());
        assert!(matches!(queue.remove(&b), Err(EditError::NotQueued(id)) if id == b));
        assert!(matches!(queue.move_by(&b, -1), Err(EditError::NotQueued(_))));
        // A broken queue file is an error naming it, and stays for the user to fix.
        std::fs::write(queue.path(), "{ not json").expect("write");
        let error = format!("{:#}", queue.read().expect_err("broken"));
        assert!(
            error.contains("queue.json") && error.contains("fix or remove it"),
            "{error}"
        );
        assert!(queue.add(&workspace, &file, None).is_err());
        assert_eq!(std::fs::read_to_string(queue.path()).expect("kept"), "{ not json");
    }

    #[test]
    fn sizes_read_and_print() {
        assert_eq!("1.5 GB".parse(), Ok(ByteSize(1_500_000_000)));
        assert_eq!("512MB".parse(), Ok(ByteSize(512_000_000)));
        assert_eq!("2 GiB".parse(), Ok(ByteSize(2 << 30)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("3 TB".parse::<ByteSize>().expect_err("unknown unit").contains("TB"));
        assert_eq!(ByteSize(2_100_000_000).to_string(), "2.1 GB");
        let settings: QueueSettings = toml::from_str("reserve_ram = \"2 GB\"\nmax_concurrent = 2\n").expect("reads");
        assert_eq!(settings.reserve_ram, ByteSize(2_000_000_000));
        assert!(toml::from_str::<QueueSettings>("reserve_ram = \"much\"\n").is_err());
    }

    #[test]
    fn sizes_are_written_exactly() {
        for (bytes, text) in [
            (1536 << 20, "1536 MiB"),
            (2_000_000_000, "2 GB"),
            (3 << 30, "3 GiB"),
            (1_500_000_000, "1500 MB"),
            (1_000_000_001, "1000000001 B"),
            (0, "0 B"),
        ] {
            assert_eq!(ByteSize(bytes).exact(), text);
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }
}
