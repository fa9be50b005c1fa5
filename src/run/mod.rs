//! The run directory: everything one training run writes, in one folder under `runs/`.
//!
//! ```text
//! runs/<YYYYMMDD-HHMMSS>-<name>/
//!   experiment.toml   the checked experiment with every default written out, as launched
//!   split.json        which cases train, validate and test
//!   events.jsonl      event records (crate::run::events), appended by the trainer
//!   train.log         the trainer's stdout and stderr
//!   launch.json       who started the trainer: launcher, pid or Slurm job, host, time, threads
//!   slurm.sh          the job script of a run submitted to Slurm
//!   exit.json         how the trainer process ended: exit code or signal (when its launcher saw it)
//!   sweep.json        the sweep the run belongs to and the values it varies (sweep runs)
//!   checkpoints/      model and optimizer state, for resuming and predicting:
//!     step-<N>/         the newest complete checkpoint: model.safetensors,
//!                       optimizer.safetensors, state.json
//!     best.safetensors  the weights of the best validation so far
//!   preview/          predictions of the preview case, for the slice view
//!   validation/       the best weights' raw predictions of the validation cases (end of run)
//!   postprocess.toml  the post-processing learned on them, with its validation scores
//!   summary.json      the fold of the events that run lists need (crate::runs::summary)
//!   rung.json         a halving sweep's run: its rung and scores (crate::schedule::halving)
//!   pruned.json       a halving sweep's run stopped for good, and why
//! ```
//!
//! [`RunDir`] owns these names: everyone else asks it for a path, or reads and writes the
//! JSON records ([`Launch`], [`ExitRecord`], [`RungRecord`], [`Pruned`], the sweep tag) through
//! it. The trainer reads only `experiment.toml`, so a run started by hand with `segtop-train`
//! looks exactly like one started from the dashboard.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};

use crate::experiment::Experiment;

pub mod events;
pub mod process;
mod records;

pub use records::{ExitRecord, Launch, Pruned, RungRecord};

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
    pub const POSTPROCESS: &'static str = "postprocess.toml";
    pub const SUMMARY: &'static str = "summary.json";
    pub const RUNG: &'static str = "rung.json";
    pub const PRUNED: &'static str = "pruned.json";
    pub const SLURM_SCRIPT: &'static str = "slurm.sh";
    /// The best validation's weights, in `checkpoints/`.
    pub const BEST_WEIGHTS: &'static str = "best.safetensors";
    /// A checkpoint folder's files: the weights, the optimizer's moments, the training state.
    pub const STEP_WEIGHTS: &'static str = "model.safetensors";
    pub const STEP_OPTIMIZER: &'static str = "optimizer.safetensors";
    pub const STEP_STATE: &'static str = "state.json";
    /// How a checkpoint folder's name starts (`step-000120`).
    pub const STEP_PREFIX: &'static str = "step-";

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
            let weights = resolve_init(init, runs).map_err(io::Error::other)?;
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
        self.path.join(Self::POSTPROCESS)
    }

    /// The fold of the run's events that lists need (see `crate::runs::summary`).
    pub fn summary(&self) -> PathBuf {
        self.path.join(Self::SUMMARY)
    }

    pub fn rung(&self) -> PathBuf {
        self.path.join(Self::RUNG)
    }

    pub fn pruned(&self) -> PathBuf {
        self.path.join(Self::PRUNED)
    }

    /// The job script of a run submitted to Slurm on its own.
    pub fn slurm_script(&self) -> PathBuf {
        self.path.join(Self::SLURM_SCRIPT)
    }

    /// The weights of the best validation so far.
    pub fn best_weights(&self) -> PathBuf {
        self.checkpoints().join(Self::BEST_WEIGHTS)
    }

    /// The checkpoint folder of global step `step`.
    pub fn step(&self, step: u64) -> PathBuf {
        self.checkpoints().join(format!("{}{step:06}", Self::STEP_PREFIX))
    }

    /// The newest complete checkpoint folder (one with its training state written), if any.
    pub fn latest_step(&self) -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.checkpoints())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(Self::STEP_PREFIX))
                    && p.join(Self::STEP_STATE).is_file()
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// The weights `predict` and `model.init` take: the best validation's, else the newest
    /// checkpoint's; `None` before the first checkpoint.
    pub fn weights(&self) -> Option<PathBuf> {
        let best = self.best_weights();
        if best.is_file() {
            return Some(best);
        }
        self.latest_step().map(|dir| dir.join(Self::STEP_WEIGHTS))
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

    pub fn write_sweep(&self, tag: &crate::experiment::sweep::SweepTag) -> io::Result<()> {
        write_json(&self.path, &self.sweep(), tag)
    }

    /// How the last launched trainer ended, when its launcher saw it end.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        read_json(&self.exit())
    }

    pub fn write_exit(&self, exit: &ExitRecord) -> io::Result<()> {
        write_json(&self.path, &self.exit(), exit)
    }

    /// The run's place in its halving sweep, when it belongs to one and the file reads.
    pub fn read_rung(&self) -> Option<RungRecord> {
        read_json(&self.rung())
    }

    pub fn write_rung(&self, record: &RungRecord) -> io::Result<()> {
        write_json(&self.path, &self.rung(), record)
    }

    /// Why its halving sweep stopped the run for good, when it did.
    pub fn read_pruned(&self) -> Option<Pruned> {
        read_json(&self.pruned())
    }

    pub fn write_pruned(&self, pruned: &Pruned) -> io::Result<()> {
        write_json(&self.path, &self.pruned(), pruned)
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

/// The weights file `model.init` names: a `.safetensors` file; a run directory (its
/// `checkpoints/best.safetensors`); or a run in `runs` by its id or a part of it only that
/// run's id holds.
pub fn resolve_init(init: &str, runs: &Path) -> Result<PathBuf, InitError> {
    let best = |dir: &Path| {
        let file = RunDir::open(dir).best_weights();
        if file.is_file() {
            Ok(file)
        } else {
            Err(InitError::NoBestWeights {
                init: init.to_string(),
                run: dir.to_path_buf(),
            })
        }
    };
    if crate::experiment::looks_like_path(init) {
        let path = Path::new(init);
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else if path.is_dir() {
            best(path)
        } else {
            Err(InitError::Missing(init.to_string()))
        };
    }
    let ids: Vec<String> = std::fs::read_dir(runs)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    match find_id(ids.iter().map(String::as_str), init) {
        Ok(id) => best(&runs.join(id)),
        Err(RunNameError::NoSuchRun { .. }) => Err(InitError::NotARun {
            init: init.to_string(),
            runs: runs.to_path_buf(),
        }),
        Err(RunNameError::Ambiguous { matches, .. }) => Err(InitError::Ambiguous {
            init: init.to_string(),
            matches,
        }),
    }
}

/// Why `model.init` names no weights file; the messages quote the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error(
        "model.init = '{init}': the run {} has no best weights yet ({} is missing)",
        run.display(),
        Path::new(RunDir::CHECKPOINTS).join(RunDir::BEST_WEIGHTS).display()
    )]
    NoBestWeights { init: String, run: PathBuf },
    #[error("model.init = '{0}' does not exist: name a run, a run directory or a .safetensors file")]
    Missing(String),
    #[error(
        "model.init = '{init}' is not a run in {}: name a run id, a run directory or a .safetensors file",
        runs.display()
    )]
    NotARun { init: String, runs: PathBuf },
    #[error("model.init = '{init}' matches {} runs ({}): give more of the id", matches.len(), matches.join(", "))]
    Ambiguous { init: String, matches: Vec<String> },
}

/// Problems with what `experiment` points at that can change after it is written (a missing
/// dataset folder, a `model.init` run without best weights yet): the dataset's, then the
/// initial weights'.
pub fn path_problems(experiment: &Experiment, workspace: &Path) -> Vec<crate::experiment::PathProblem> {
    let mut problems = crate::data::probe::problems(&experiment.data);
    if let Some(init) = &experiment.model.init
        && let Err(error) = resolve_init(init, &crate::workspace::Workspace::new(workspace).runs_dir())
    {
        // Listed after the folds and before the dataset folder.
        let at = problems
            .iter()
            .position(|p| p.key == "data.root")
            .unwrap_or(problems.len());
        problems.insert(
            at,
            crate::experiment::PathProblem {
                key: "model.init",
                message: error.to_string(),
                fatal: true,
            },
        );
    }
    problems
}

/// The runs beside `run_dir` (in the same `runs/` folder) that train the same configuration
/// on the other cross-validation folds: frozen experiments equal but for `data.fold` and the
/// run name, with best weights. `run_dir` first, then the others by fold.
pub fn fold_runs(run_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let run = RunDir::open(run_dir);
    if !run_dir.is_dir() {
        anyhow::bail!("run {}: no such run directory", run_dir.display());
    }
    let experiment = Experiment::load_frozen(&run.experiment(), run_dir)
        .with_context(|| format!("{} is not a run directory", run_dir.display()))?;
    if experiment.data.folds == 0 {
        anyhow::bail!(
            "--folds: run {} is not a cross-validation run (its experiment sets no data.folds)",
            run_dir.display()
        );
    }
    let same_configuration = |other: &Experiment| {
        let mut other = other.clone();
        other.data.fold = experiment.data.fold;
        other.run.name = experiment.run.name.clone();
        other == experiment
    };
    let parent = run_dir.parent().unwrap_or(Path::new("."));
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(parent)
        .with_context(|| format!("cannot list {}", parent.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| RunDir::open(dir).best_weights().is_file())
        .filter(|dir| dir.file_name() != run_dir.file_name())
        .filter_map(|dir| {
            let other = Experiment::load_frozen(&RunDir::open(&dir).experiment(), &dir).ok()?;
            same_configuration(&other).then_some((other.data.fold, dir))
        })
        .collect();
    found.sort();
    let mut runs = vec![run_dir.to_path_buf()];
    runs.extend(found.into_iter().map(|(_, dir)| dir));
    Ok(runs)
}

/// Directories under `runs/` that look like runs (an experiment or event file inside).
pub fn run_directories(runs: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join(RunDir::EXPERIMENT).is_file() || path.join(RunDir::EVENTS).is_file())
        .filter_map(|path| Some((path.file_name()?.to_string_lossy().into_owned(), path)))
        .collect()
}

/// Which run a command means by `query`: its id, its run directory, or a part of its id that
/// no other run in `runs` has. Every command that takes a run takes these forms.
pub fn find(runs: &Path, query: &str) -> Result<RunDir, RunNameError> {
    let directories = run_directories(runs);
    let id = find_id(directories.keys().map(String::as_str), query)?.to_string();
    Ok(RunDir::open(&directories[&id]))
}

/// [`find`] among the ids of runs already listed.
pub fn find_id<'a>(ids: impl Iterator<Item = &'a str> + Clone, query: &str) -> Result<&'a str, RunNameError> {
    let as_path = Path::new(query);
    let named = |id: &str| id == query || (as_path.file_name().is_some_and(|n| n == id) && as_path.is_dir());
    if let Some(id) = ids.clone().find(|id| named(id)) {
        return Ok(id);
    }
    let matches: Vec<&str> = ids.clone().filter(|id| id.contains(query)).collect();
    match matches.as_slice() {
        [id] => Ok(id),
        [] => Err(RunNameError::NoSuchRun {
            query: query.to_string(),
            runs: ids.map(str::to_string).collect(),
        }),
        several => Err(RunNameError::Ambiguous {
            query: query.to_string(),
            matches: several.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// Why a name given for a run names none, or more than one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNameError {
    #[error(
        "no run '{query}' (runs: {})",
        if runs.is_empty() { "none".to_string() } else { runs.join(", ") }
    )]
    NoSuchRun { query: String, runs: Vec<String> },
    #[error("'{query}' matches {} runs: {}; give more of the id", matches.len(), matches.join(", "))]
    Ambiguous { query: String, matches: Vec<String> },
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
