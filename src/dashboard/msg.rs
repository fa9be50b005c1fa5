//! What flows into the dashboard's state ([`Msg`]: keys, the watcher's looks, answers from
//! the worker) and out of it ([`Effect`]: what the loop or its worker carries out).

use std::path::PathBuf;

use crossterm::event::Event;

use crate::dashboard::catalog::ExperimentEntry;
use crate::run::process::Halt;
use crate::runs::watch::Watch;
use crate::settings::Settings;

/// Everything that can change the dashboard's state.
#[derive(Debug)]
pub enum Msg {
    Terminal(Event),
    /// A fresh reading of `experiments/`.
    Experiments(Vec<ExperimentEntry>),
    /// A line for the status bar about work in the background (`None` clears it).
    Notice(Option<String>),
    /// What the watcher found in `runs/` and on the host.
    Watch(Box<Watch>),
    /// Runs were queued from here (a new run, a sweep's runs, or a resume): ids and
    /// directories; the supervisor starts them.
    Queued {
        runs: Vec<(String, PathBuf)>,
        resume: bool,
        /// The sweep's id, when the experiment file has one.
        sweep: Option<String>,
        /// The Slurm job they were submitted as, instead of queued here (`12`, `12_0`).
        job: Option<String>,
    },
    /// A run's preview was loaded (`None`: it has none yet), or could not be.
    Preview {
        run: String,
        previews: u32,
        modality: crate::experiment::Modality,
        epoch: Option<u32>,
        result: Result<Option<Box<crate::runs::preview::PreviewData>>, String>,
    },
    /// The experiment editor is ready on a clone (or the source could not be read).
    Editor(Result<Box<super::editor::Editor>, String>),
    /// How saving the editor's file went.
    Saved {
        path: PathBuf,
        outcome: super::editor::SaveOutcome,
    },
    /// Something the loop was asked to do failed; the message says what.
    Failed(String),
    /// A signal asked the dashboard to end.
    Quit,
}

/// Work for the loop: the only ways the dashboard acts on the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create a run for this experiment file and queue it (it starts at once when it fits).
    Launch(PathBuf),
    /// Hold (or release) a run's pending Slurm job.
    HoldJob {
        id: String,
        job: String,
        hold: bool,
    },
    /// Launch with this launcher, whatever the experiment's `run.launcher` says.
    LaunchOn(PathBuf, crate::experiment::LauncherKind),
    Halt {
        id: String,
        dir: PathBuf,
        /// The trainer's pid, when known (a Slurm run's job is in its launch record).
        pid: Option<u32>,
        /// The process's start time, when known: a reused pid is not signalled.
        pid_start: Option<u64>,
        halt: Halt,
    },
    /// Queue a stopped, failed or lost run to continue from its latest checkpoint.
    Resume {
        id: String,
        dir: PathBuf,
    },
    /// Load the latest preview of a run (on a thread; answered by `Msg::Preview`).
    LoadPreview {
        run: String,
        dir: PathBuf,
        previews: u32,
        modality: crate::experiment::Modality,
        epoch: Option<u32>,
    },
    /// Rearrange the queue.
    Requeue {
        id: String,
        change: QueueChange,
    },
    SaveSettings(Settings),
    /// Open the experiment editor on a clone of this file (an experiment or a run's frozen
    /// copy): `from` is how the form names it, `base` the name the clone's is made from.
    Clone {
        source: PathBuf,
        from: String,
        base: String,
    },
    /// Write the editor's file; a file already there is replaced only when `overwrite`.
    SaveExperiment {
        path: PathBuf,
        text: String,
        overwrite: bool,
    },
    /// Hand the terminal to `$VISUAL`/`$EDITOR` on this experiment file, then check it.
    EditFile(PathBuf),
    /// Read these runs' charts (their whole histories): they are on screen.
    LoadCharts(Vec<String>),
}

/// Changes to a queued run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueChange {
    Earlier,
    Later,
    Hold,
    Release,
    Remove,
}
