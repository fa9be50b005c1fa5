//! The training loop: patches from the prefetching sampler, loss, optimizer step; whole-case
//! validation by sliding window; checkpoints; events for the dashboard.
//!
//! A run is a [`Trainer`] going through its steps, each in a file of its own: `prepare`
//! (the cases, the network, the weights it starts from, the plan of a time budget), `epoch`
//! (training an epoch and ending it: the plan again, the checkpoint, early stopping),
//! `validate` (whole cases, the preview, the best weights so far) and `finish` (the end of a
//! rung, a stop's checkpoint, or the evaluation of the best weights). The helpers they share
//! are in `budgeted`, `console`, `network` and `resources`.
//!
//! Determinism: the sampler of each epoch and libtorch's generator before each step are
//! seeded from (seed, epoch, step), so a run resumed from a checkpoint at any step continues
//! exactly as if it had never stopped (on the same machine, with the same threads).

mod budgeted;
mod console;
mod epoch;
mod finish;
mod network;
mod prepare;
mod resources;
mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use segtop::budget::Budget;
use segtop::data::cache::CachedCase;
use segtop::experiment::Experiment;
use segtop::run::RunDir;
use segtop::run::events::EventLog;

use crate::checkpoint::{self, TrainState};
use crate::infer::SlidingWindow;

use budgeted::Budgeted;
use console::Console;
pub(crate) use network::{Network, train_step};
use resources::ResourceReporter;
pub(crate) use resources::peak_rss_kib;

/// How a training run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Completed,
    EarlyStopped,
    /// Stopped with a checkpoint, having trained `steps` steps in this session.
    Stopped {
        time_limit: bool,
        steps: u64,
    },
}

/// What asks the training loop to checkpoint and stop, between two steps.
#[derive(Default)]
pub struct Stop {
    /// SIGINT or SIGTERM: a person (or `segtop stop`) asked.
    pub asked: Arc<AtomicBool>,
    /// SIGUSR1: the Slurm job's time limit is near.
    pub time_limit: Arc<AtomicBool>,
}

impl Stop {
    fn requested(&self) -> bool {
        self.asked.load(Ordering::Relaxed) || self.time_limit.load(Ordering::Relaxed)
    }

    /// A time limit counts only when nobody also asked to stop.
    fn at_time_limit(&self) -> bool {
        self.time_limit.load(Ordering::Relaxed) && !self.asked.load(Ordering::Relaxed)
    }
}

/// A seed for (seed, epoch, step), mixed so that neighbours differ in every bit.
fn mix(seed: u64, epoch: u32, step: u32) -> u64 {
    let mut x = seed ^ (u64::from(epoch) << 32 | u64::from(step)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

/// Torch threads: the experiment's, else the launcher's budget (SEGTOP_THREADS), else all cores.
pub fn threads(experiment: &Experiment) -> u32 {
    if experiment.train.threads > 0 {
        return experiment.train.threads;
    }
    std::env::var("SEGTOP_THREADS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

/// A line of the run's log: the local time, then `text`.
pub fn timestamped(text: &str) -> String {
    format!("{} {text}", chrono::Local::now().format("%H:%M:%S"))
}

/// Trains `experiment` in `run`, from its latest checkpoint when `resume`.
pub fn run(run: &RunDir, experiment: &Experiment, resume: bool, stop: &Stop) -> anyhow::Result<Finish> {
    let mut trainer = Trainer::new(run, experiment, stop)?;
    let start = trainer.restore(resume)?;
    trainer.start(start)?;
    let end = trainer.train()?;
    trainer.finish(end)
}

/// A training run in this process: what the steps of the loop share.
struct Trainer<'a> {
    run: &'a RunDir,
    experiment: &'a Experiment,
    stop: &'a Stop,
    /// When this session started: the run's training time is `state.seconds` and the time since.
    started: Instant,
    console: Console,
    threads: u32,
    events: EventLog,
    cases: Cases,
    network: Network,
    /// Where training is: what a checkpoint keeps beyond the tensors.
    state: TrainState,
    /// The global step this session started from, for the steps it trained.
    first_step: u64,
    steps_per_epoch: u32,
    /// The validation's sliding window.
    window: SlidingWindow,
    /// With `train.budget`: its plan and the pace measured.
    budget: Option<Budgeted>,
    /// Reports CPU and memory until just before the run's last record.
    resources: Option<ResourceReporter>,
    /// The labels predicted for the epoch's last batch, and its true ones, for the seed Dice.
    last_batch: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether this session has taken a step: its first pays for setting up the kernels.
    warm: bool,
    /// Whether the time budget ended an epoch before its last step (it is then the last).
    cut_short: bool,
    /// Whether that was the end of the halving rung, rather than of the budget.
    cut_short_rung: bool,
    /// Whether the last epoch trained ended with a validation.
    validated_last: bool,
}

/// The cases a run trains and validates on, from its split.
struct Cases {
    train: Vec<Arc<CachedCase>>,
    validation: Vec<Arc<CachedCase>>,
    /// The case the dashboard previews: the configured one, else the first validation case.
    preview: Option<Arc<CachedCase>>,
}

/// What ended the epochs, and so how the run ends.
enum End {
    /// Every planned epoch trained, or the time budget had no room for another.
    Completed,
    /// No better validation in `train.early_stopping_patience` of them.
    EarlyStopped,
    /// In a halving sweep, the end of its `rung` (`until` into the budget), for the sweep to
    /// promote or prune the run.
    Rung { rung: u32, until: Budget },
    /// A stop came `at` this point (between two steps, or in a validation, which the resumed
    /// run does again).
    Stopped { at: String },
}

impl Trainer<'_> {
    /// Seconds of training so far, over every session of the run.
    fn used(&self) -> f64 {
        self.state.seconds + self.started.elapsed().as_secs_f64()
    }

    /// Epochs to train: the time budget's plan, else the experiment's.
    fn epochs(&self) -> u32 {
        self.budget
            .as_ref()
            .map_or(self.experiment.train.epochs, Budgeted::epochs)
    }

    /// The end of the run's rung, when it is in a halving sweep below the top rung.
    fn rung_end(&self) -> Option<End> {
        let budget = self.budget.as_ref()?;
        Some(End::Rung {
            rung: budget.rung.as_ref()?.0,
            until: budget.rung_until()?,
        })
    }

    /// Checkpoints where training is; with `best`, its weights become the best ones. The
    /// state written counts this session's seconds so far. Returns the checkpoint's folder.
    fn save_checkpoint(&self, best: bool) -> anyhow::Result<String> {
        let state = TrainState {
            seconds: self.used(),
            ..self.state.clone()
        };
        checkpoint::save(self.run, &self.network.vs, &self.network.optimizer, &state, best)
    }
}
