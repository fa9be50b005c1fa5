//! What readers know about one run: folded from its event records, its process
//! samples and the tail of its log. Pure state, no I/O, so it is tested without a terminal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::history::History;
use crate::config::Choice;
use crate::experiment::Selection;
use crate::run::events::{BratsScores, Event, Outcome, RegionScores};
use crate::schedule::slurm::Phase;

/// Lines of `train.log` kept for the run view.
pub const LOG_LINES: usize = 40;
/// Warnings kept per run (garbage lines in its event file, ...).
const WARNINGS: usize = 8;

/// Where a run stands, from the facts its readers have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunState {
    /// Waiting in the queue for cores and memory.
    Queued,
    /// In the queue, held: the scheduler passes over it.
    Paused,
    /// Submitted to Slurm; its job waits in the cluster's queue.
    Pending,
    /// Launched; the trainer has not written `run_started` yet (it may be preparing data).
    Starting,
    Running,
    Completed,
    EarlyStopped,
    Stopped,
    Failed,
    /// The process is gone without `run_finished` (killed, machine rebooted, ...).
    Lost,
    /// Stopped for good by its halving sweep (`pruned.json` says at which rung and why).
    Pruned,
}

impl RunState {
    pub const ALL: [RunState; 11] = [
        RunState::Queued,
        RunState::Paused,
        RunState::Pending,
        RunState::Starting,
        RunState::Running,
        RunState::Completed,
        RunState::EarlyStopped,
        RunState::Stopped,
        RunState::Failed,
        RunState::Lost,
        RunState::Pruned,
    ];

    /// The state called `name` (as [`RunState::name`] spells it).
    pub fn from_name(name: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Paused => "paused",
            RunState::Pending => "pending",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Completed => "done",
            RunState::EarlyStopped => "early-stop",
            RunState::Stopped => "stopped",
            RunState::Failed => "failed",
            RunState::Lost => "lost",
            RunState::Pruned => "pruned",
        }
    }

    /// Whether a trainer process may still be working on the run.
    pub fn is_live(self) -> bool {
        matches!(self, RunState::Starting | RunState::Running)
    }

    /// Whether the run is live or its Slurm job waits to start: something to stop, nothing
    /// to remove or resume.
    pub fn is_active(self) -> bool {
        self.is_live() || self == RunState::Pending
    }
}

/// Whether the run's process exists, as last sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Liveness {
    /// Not sampled yet, or the run lives on another host.
    #[default]
    Unknown,
    Alive,
    Gone,
}

/// One sample of the run's process tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub time: DateTime<Utc>,
    pub liveness: Liveness,
    /// Percent of one core, summed over the process tree.
    pub cpu_percent: f64,
    pub rss_mb: f64,
}

/// Where a run waits in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePlace {
    /// 1: the next to start.
    pub position: usize,
    pub paused: bool,
    /// Why it waits, as the scheduler last saw it.
    pub waiting: Option<String>,
}

/// The mean official scores of the latest end-of-run evaluation, per region, raw and after
/// the learned post-processing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvaluationSummary {
    pub challenge: String,
    pub epoch: u32,
    /// On the raw predictions.
    pub mean: Vec<BratsScores>,
    /// Whether the predictions used mirror test-time augmentation.
    pub tta: bool,
    /// The post-processing applied, in words, when there is one.
    pub postprocess: Option<String>,
    /// After post-processing, when it was applied.
    pub postprocessed: Option<Vec<BratsScores>>,
}

/// A running exponential average.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
struct Smoothed {
    biased: f64,
    steps: i32,
}

/// A run as readers know it, in three parts by where each comes from:
/// - the fields of `RunModel` itself are folded from the run's events and kept in its summary
///   (`summary.json`, see [`super::summary`]), so a list of runs opens without their events;
/// - [`Charts`]: the histories drawn as charts, read from the events for the runs on screen
///   and let go otherwise; never saved;
/// - [`Observed`]: what a reader learned besides the events (the directory, the process, the
///   queue, Slurm, the records beside the events); never saved, observed again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunModel {
    /// The run directory's name.
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub dir: PathBuf,
    #[serde(skip)]
    pub charts: Charts,
    #[serde(skip)]
    pub observed: Observed,
    /// The experiment's run name (from the frozen experiment), until `run_started` says.
    pub name: String,
    pub started: Option<DateTime<Utc>>,
    pub pid: Option<u32>,
    /// The trainer process's start time, when recorded (tells a reused pid apart).
    pub pid_start: Option<u64>,
    pub host: Option<String>,
    /// What the network computes in (`float32`, `bfloat16`), once the trainer says.
    pub precision: Option<String>,
    /// Epochs to train: the experiment's, or a time-budgeted run's latest plan.
    pub epochs: u32,
    /// A time-budgeted run's budget in seconds (`train.budget`).
    pub budget: Option<f64>,
    /// The weights file it started from (`model.init`), when not from random weights.
    pub init: Option<String>,
    pub steps_per_epoch: u32,
    /// The latest training speed, in patches per second.
    pub last_patches_per_s: Option<f64>,
    pub epoch: u32,
    pub step: u32,
    /// The best validation's epoch and Dice, chosen as the trainer chooses its best
    /// checkpoint (`validate.select`).
    pub best: Option<(u32, RegionScores)>,
    /// The best validation's lesion-wise Dice, when it reported one.
    pub best_lesion_dice: Option<RegionScores>,
    pub hd95: Option<RegionScores>,
    pub evaluation: Option<EvaluationSummary>,
    pub peak_rss_mb: Option<f64>,
    pub finished: Option<(Outcome, Option<String>, f64)>,
    pub last_error: Option<String>,
    pub previews: u32,
    /// The epochs previews were written at, in order.
    pub preview_epochs: Vec<u32>,
    /// When the trainer last wrote `run_finished`.
    pub finished_at: Option<DateTime<Utc>>,
    /// The Slurm job the latest `run_started` came from.
    pub started_job: Option<String>,
    /// Where and when the current trainer process started (epochs, time), for the time left.
    session_start: Option<(f64, DateTime<Utc>)>,
    /// The mean of the score that chose `best` (lesion-wise or legacy Dice).
    best_score: Option<f64>,
    /// Seconds the trainer reported before the latest `run_started` (resumed runs).
    seconds_before: f64,
    last_event: Option<DateTime<Utc>>,
}

/// The histories a run's charts draw, from its events (and, while it is live, the reader's
/// own samples of its process).
#[derive(Debug, Clone, PartialEq)]
pub struct Charts {
    /// They hold every event read so far; false for a run read from its summary (or whose
    /// charts were let go), until its events are read again.
    pub complete: bool,
    /// Training loss per step, smoothed, x in (fractional) epochs.
    pub loss: History,
    pub loss_parts: BTreeMap<String, History>,
    pub lr: History,
    pub throughput: History,
    /// Validation Dice per region (ET, TC, WT) over epochs.
    pub dice: [History; 3],
    /// The official lesion-wise Dice per region over epochs, from validations that report it.
    pub lesion_dice: [History; 3],
    pub seed_dice: History,
    /// CPU % and RSS of the process tree over time, x in seconds since the run started.
    pub cpu: History,
    pub rss: History,
    /// Exponentially smoothed step loss and loss parts, for calm charts.
    smoothed: BTreeMap<String, Smoothed>,
}

impl Default for Charts {
    fn default() -> Charts {
        Charts {
            complete: true,
            loss: History::default(),
            loss_parts: BTreeMap::new(),
            lr: History::default(),
            throughput: History::default(),
            dice: Default::default(),
            lesion_dice: Default::default(),
            seed_dice: History::default(),
            cpu: History::default(),
            rss: History::default(),
            smoothed: BTreeMap::new(),
        }
    }
}

/// What a reader learned of a run besides its events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// When the directory was created (for sorting runs that have not started).
    pub created: Option<DateTime<Utc>>,
    /// The experiment file it was launched from, when the dashboard launched it.
    pub experiment: Option<PathBuf>,
    /// In a halving sweep: its `rung.json` and, once pruned, its `pruned.json`.
    pub rung: Option<crate::run::RungRecord>,
    pub pruned: Option<crate::run::Pruned>,
    pub liveness: Liveness,
    pub last_sample: Option<ProcessSample>,
    pub warnings: Vec<String>,
    pub log_tail: Vec<String>,
    /// Its place in the queue, while it waits there.
    pub queue: Option<QueuePlace>,
    /// How the last trainer process ended, when its launcher recorded it.
    pub exit: Option<crate::run::ExitRecord>,
    /// When it was last launched (its launch record), and its Slurm job as last seen.
    pub launched: Option<DateTime<Utc>>,
    pub job: Option<crate::schedule::slurm::JobStatus>,
    /// The sweep it belongs to, and the values it varies.
    pub sweep: Option<crate::experiment::sweep::SweepTag>,
    /// Its frozen experiment as dotted keys and values, for comparing runs.
    pub config: super::config::Config,
}

impl Default for RunModel {
    fn default() -> RunModel {
        RunModel::new(String::new(), PathBuf::new())
    }
}

impl RunModel {
    pub fn new(id: impl Into<String>, dir: impl Into<PathBuf>) -> RunModel {
        let id = id.into();
        RunModel {
            name: id.clone(),
            id,
            dir: dir.into(),
            charts: Charts::default(),
            observed: Observed::default(),
            started: None,
            pid: None,
            pid_start: None,
            host: None,
            precision: None,
            epochs: 0,
            budget: None,
            init: None,
            steps_per_epoch: 0,
            last_patches_per_s: None,
            epoch: 0,
            step: 0,
            best: None,
            best_lesion_dice: None,
            hd95: None,
            evaluation: None,
            peak_rss_mb: None,
            finished: None,
            last_error: None,
            previews: 0,
            preview_epochs: Vec::new(),
            finished_at: None,
            started_job: None,
            session_start: None,
            best_score: None,
            seconds_before: 0.0,
            last_event: None,
        }
    }

    /// Folds one event record into the model.
    pub fn apply(&mut self, event: &Event) {
        let previous = self.last_event.replace(event.time());
        match event {
            Event::RunStarted { .. } => self.start_session(event, previous),
            Event::Step {
                epoch,
                step,
                loss,
                loss_parts,
                lr,
                patches_per_s,
                ..
            } => self.step_taken(*epoch, *step, *loss, loss_parts, *lr, *patches_per_s),
            Event::Resources {
                time,
                rss_mb,
                peak_rss_mb,
                cpu_percent,
            } => {
                self.peak_rss_mb = Some(*peak_rss_mb);
                // Samples taken here are finer; the trainer's own are for runs elsewhere.
                if self.observed.liveness == Liveness::Unknown {
                    let x = self.seconds_since_start(*time);
                    self.charts.cpu.push(x, *cpu_percent);
                    self.charts.rss.push(x, *rss_mb);
                }
            }
            Event::Plan {
                epochs, budget_seconds, ..
            } => {
                self.epochs = *epochs;
                self.budget = Some(*budget_seconds);
            }
            Event::EpochEnd { epoch, .. } => {
                self.epoch = *epoch;
                self.step = self.steps_per_epoch;
            }
            Event::Validation {
                epoch,
                dice,
                hd95,
                seed_dice,
                lesion_dice,
                ..
            } => self.validated(*epoch, *dice, *hd95, *seed_dice, *lesion_dice),
            Event::Evaluation {
                epoch,
                challenge,
                mean,
                tta,
                postprocess,
                postprocessed,
                ..
            } => {
                // A later evaluation (post-processing learned again) replaces the earlier one.
                self.evaluation = Some(EvaluationSummary {
                    challenge: challenge.clone(),
                    epoch: *epoch,
                    mean: mean.clone(),
                    tta: *tta,
                    postprocess: postprocess.clone(),
                    postprocessed: postprocessed.clone(),
                });
            }
            Event::PreviewWritten { epoch, .. } => {
                self.previews += 1;
                self.preview_epochs.push(*epoch);
            }
            Event::Checkpoint { .. } | Event::EarlyStop { .. } => {}
            Event::RunFinished {
                time,
                outcome,
                reason,
                seconds,
                best_dice,
            } => self.finish(*time, *outcome, reason.as_deref(), *seconds, *best_dice),
            Event::Error { message, .. } => self.last_error = Some(message.clone()),
        }
    }

    /// A trainer process started (the first, or one resuming the run).
    fn start_session(&mut self, event: &Event, previous: Option<DateTime<Utc>>) {
        let Event::RunStarted {
            time,
            pid,
            host,
            name,
            epochs,
            steps_per_epoch,
            resumed_from,
            pid_start,
            slurm_job,
            precision,
            budget_seconds,
            init,
            ..
        } = event
        else {
            return;
        };
        if let Some(started) = self.started {
            // A resumed run: the time before counts towards elapsed.
            let end = previous.unwrap_or(started);
            self.seconds_before += (end - started).as_seconds_f64().max(0.0);
        }
        self.started = Some(*time);
        self.pid = Some(*pid);
        self.pid_start = *pid_start;
        self.started_job = slurm_job.clone();
        self.host = Some(host.clone());
        self.precision = precision.clone();
        self.name = name.clone();
        self.epochs = *epochs;
        self.budget = *budget_seconds;
        self.init = init.clone();
        self.steps_per_epoch = *steps_per_epoch;
        self.session_start = Some((f64::from(resumed_from.unwrap_or(0)), *time));
        self.finished = None;
        self.observed.liveness = Liveness::Unknown;
    }

    /// A training step: its loss (smoothed) and loss parts, learning rate and speed charted.
    fn step_taken(
        &mut self,
        epoch: u32,
        step: u32,
        loss: f64,
        loss_parts: &BTreeMap<String, f64>,
        lr: f64,
        patches_per_s: f64,
    ) {
        self.epoch = epoch;
        self.step = step;
        let x = self.epoch_position(epoch, step);
        let loss = self.smooth("", loss);
        self.charts.loss.push(x, loss);
        for (part, value) in loss_parts {
            let value = self.smooth(part, *value);
            self.charts.loss_parts.entry(part.clone()).or_default().push(x, value);
        }
        self.charts.lr.push(x, lr);
        self.charts.throughput.push(x, patches_per_s);
        self.last_patches_per_s = Some(patches_per_s);
    }

    /// A validation: charted, and the best so far chosen as the trainer chooses its best
    /// checkpoint (lesion-wise Dice when the run selects by it and the validation has it,
    /// else legacy Dice).
    fn validated(
        &mut self,
        epoch: u32,
        dice: RegionScores,
        hd95: Option<RegionScores>,
        seed_dice: f64,
        lesion_dice: Option<RegionScores>,
    ) {
        let x = f64::from(epoch);
        for (history, value) in self.charts.dice.iter_mut().zip([dice.et, dice.tc, dice.wt]) {
            history.push(x, value);
        }
        if let Some(lesion) = lesion_dice {
            for (history, value) in self
                .charts
                .lesion_dice
                .iter_mut()
                .zip([lesion.et, lesion.tc, lesion.wt])
            {
                history.push(x, value);
            }
        }
        self.charts.seed_dice.push(x, seed_dice);
        let score = match (self.selection(), lesion_dice) {
            (Selection::Lesion, Some(lesion)) => lesion.mean(),
            _ => dice.mean(),
        };
        if Selection::improves(self.best_score, score) {
            self.best = Some((epoch, dice));
            self.best_lesion_dice = lesion_dice;
            self.best_score = Some(score);
        }
        self.hd95 = hd95;
    }

    /// The trainer said the run is over: how, and why when it was not a success.
    fn finish(
        &mut self,
        time: DateTime<Utc>,
        outcome: Outcome,
        reason: Option<&str>,
        seconds: f64,
        best_dice: Option<RegionScores>,
    ) {
        self.finished = Some((outcome, reason.map(str::to_string), seconds));
        self.finished_at = Some(time);
        if let (None, Some(best)) = (self.best, best_dice) {
            self.best = Some((self.epoch, best));
        }
        if let Some(reason) = reason
            && outcome == Outcome::Failed
        {
            self.last_error = Some(reason.to_string());
        }
    }

    /// Records a sample of the run's process.
    pub fn sample(&mut self, sample: ProcessSample) {
        self.observed.liveness = sample.liveness;
        if sample.liveness == Liveness::Alive {
            let x = self.seconds_since_start(sample.time);
            self.charts.cpu.push(x, sample.cpu_percent);
            self.charts.rss.push(x, sample.rss_mb);
            self.peak_rss_mb = Some(self.peak_rss_mb.map_or(sample.rss_mb, |p| p.max(sample.rss_mb)));
        }
        self.observed.last_sample = Some(sample);
    }

    pub fn warn(&mut self, warning: String) {
        if self.observed.warnings.len() == WARNINGS {
            self.observed.warnings.remove(0);
        }
        self.observed.warnings.push(warning);
    }

    pub fn set_log_tail(&mut self, lines: Vec<String>) {
        self.observed.log_tail = lines;
        if self.observed.log_tail.len() > LOG_LINES {
            self.observed.log_tail.drain(..self.observed.log_tail.len() - LOG_LINES);
        }
    }

    pub fn state(&self) -> RunState {
        if let Some(place) = &self.observed.queue {
            return if place.paused {
                RunState::Paused
            } else {
                RunState::Queued
            };
        }
        let job = self.current_job();
        match job.map(crate::schedule::slurm::JobStatus::phase) {
            Some(Phase::Pending) => return RunState::Pending,
            // The trainer's own records once it has started under this job.
            Some(Phase::Running) if self.started_since_launch() => return RunState::Running,
            Some(Phase::Running) => return RunState::Starting,
            Some(Phase::Ended) | None => {}
        }
        if let Some((outcome, ..)) = &self.finished
            && job.is_none()
        {
            return match outcome {
                Outcome::Completed => RunState::Completed,
                Outcome::EarlyStopped => RunState::EarlyStopped,
                Outcome::Stopped if self.observed.pruned.is_some() => RunState::Pruned,
                Outcome::Stopped => RunState::Stopped,
                Outcome::Failed => RunState::Failed,
            };
        }
        if let Some(job) = job {
            // The job ended and the trainer did not say how.
            return match job.state.as_str() {
                "CANCELLED" => RunState::Stopped,
                crate::schedule::slurm::UNKNOWN => RunState::Lost,
                _ => RunState::Failed,
            };
        }
        match (self.started.is_some(), self.observed.liveness) {
            (_, Liveness::Gone) if self.died().is_some() => RunState::Failed,
            (_, Liveness::Gone) => RunState::Lost,
            (true, _) => RunState::Running,
            (false, _) => RunState::Starting,
        }
    }

    /// The Slurm job of the latest launch, unless the trainer finished under it: then its
    /// events tell.
    fn current_job(&self) -> Option<&crate::schedule::slurm::JobStatus> {
        let job = self.observed.job.as_ref()?;
        let finished_under_it = match (self.finished_at, self.observed.launched) {
            (Some(finished), Some(launched)) => finished >= launched,
            (Some(_), None) => true,
            (None, _) => false,
        };
        (!finished_under_it).then_some(job)
    }

    /// Its Slurm job in words, while the job decides its state: `Slurm job 12 pending
    /// (Resources)`, `Slurm job 12 on node3`.
    pub fn job_line(&self) -> Option<String> {
        let job = self.current_job()?;
        Some(match job.phase() {
            Phase::Pending => format!(
                "Slurm job {} pending ({})",
                job.id,
                job.reason.as_deref().unwrap_or("queued")
            ),
            Phase::Running => match &job.nodes {
                Some(nodes) => format!("Slurm job {} on {nodes}", job.id),
                None => format!("Slurm job {} {}", job.id, job.state),
            },
            Phase::Ended => format!("Slurm job {} {}", job.id, job.describe()),
        })
    }

    /// Why the run waits, in the local queue or in Slurm's.
    pub fn waiting(&self) -> Option<String> {
        if let Some(place) = &self.observed.queue {
            return place.waiting.clone();
        }
        self.current_job()
            .filter(|j| j.phase() == Phase::Pending)
            .map(|j| j.reason.clone().unwrap_or_else(|| "queued".to_string()))
    }

    /// Whether the trainer wrote `run_started` under the current Slurm job: it names the
    /// job (trainers before it did not: then by time, as the nodes' clocks say).
    fn started_since_launch(&self) -> bool {
        if let (Some(started), Some(job)) = (&self.started_job, &self.observed.job) {
            return *started == job.id;
        }
        match (self.started, self.observed.launched) {
            (Some(started), Some(launched)) => started >= launched,
            (started, None) => started.is_some(),
            (None, Some(_)) => false,
        }
    }

    /// How the current trainer process ended when it ended badly without saying so in its
    /// events (out of memory, killed, crashed): the launcher's exit record for its pid.
    fn died(&self) -> Option<&crate::run::ExitRecord> {
        self.observed
            .exit
            .as_ref()
            .filter(|exit| !exit.clean() && self.pid.is_none_or(|pid| pid == exit.pid))
    }

    /// What went wrong: the trainer's last error, else how its process died and the last
    /// line of its log.
    pub fn error(&self) -> Option<String> {
        if let Some(job) = self
            .current_job()
            .filter(|j| j.phase() == Phase::Ended && j.state != "CANCELLED")
        {
            let last = self.observed.log_tail.iter().rev().find(|l| !l.trim().is_empty());
            let said = match job.state.as_str() {
                crate::schedule::slurm::UNKNOWN => format!("Slurm no longer knows job {}", job.id),
                _ => format!("Slurm job {} ended {}", job.id, job.describe()),
            };
            return Some(match last {
                Some(line) => format!("{said}; its log ends: {}", line.trim()),
                None => said,
            });
        }
        if let Some(error) = &self.last_error {
            return Some(error.clone());
        }
        if self.finished.is_some() || self.observed.liveness != Liveness::Gone {
            return None;
        }
        let exit = self.died()?;
        let last = self.observed.log_tail.iter().rev().find(|l| !l.trim().is_empty());
        Some(match last {
            Some(line) => format!("the trainer {}; its log ends: {}", exit.describe(), line.trim()),
            None => format!("the trainer {}", exit.describe()),
        })
    }

    /// Seconds of training so far, over every resumption.
    pub fn elapsed(&self, now: DateTime<Utc>) -> Option<f64> {
        if let Some((.., seconds)) = self.finished
            && seconds > 0.0
        {
            return Some(seconds);
        }
        let started = self.started?;
        let end = if self.state().is_live() {
            now
        } else {
            self.last_event.unwrap_or(started)
        };
        Some(self.seconds_before + (end - started).as_seconds_f64().max(0.0))
    }

    /// Its place in a halving sweep: the rung it is in and its scores so far.
    pub fn rung_line(&self) -> Option<String> {
        let rung = self.observed.rung.as_ref()?;
        let scores: Vec<String> = rung.scores.iter().map(|s| format!("{s:.3}")).collect();
        Some(match &self.observed.pruned {
            Some(pruned) => format!("pruned: {}", pruned.reason),
            None if scores.is_empty() => format!("rung {}", rung.rung),
            None => format!("rung {} (scores {})", rung.rung, scores.join(", ")),
        })
    }

    /// Its cross-validation fold and the number of folds, when it is one.
    pub fn fold(&self) -> Option<[u32; 2]> {
        let folds: u32 = self.observed.config.get("data.folds")?.parse().ok()?;
        let fold: u32 = self.observed.config.get("data.fold")?.parse().ok()?;
        (folds > 0).then_some([fold, folds])
    }

    /// Where its starting weights came from, briefly: the run id for a run's best weights
    /// (`.../runs/<id>/checkpoints/best.safetensors`), else the file name.
    pub fn init_source(&self) -> Option<String> {
        let path = Path::new(self.init.as_deref()?);
        let run = path
            .parent()
            .filter(|dir| dir.file_name().is_some_and(|n| n == crate::run::RunDir::CHECKPOINTS))
            .and_then(Path::parent)
            .and_then(Path::file_name);
        Some(run.or(path.file_name())?.to_string_lossy().into_owned())
    }

    /// Seconds of training left at the pace of the current trainer process so far,
    /// validations included.
    pub fn eta(&self, now: DateTime<Utc>) -> Option<f64> {
        if self.state() != RunState::Running {
            return None;
        }
        if let Some(budget) = self.budget {
            return Some((budget - self.elapsed(now)?).max(0.0));
        }
        let (start_epochs, start_time) = self.session_start?;
        let done = self.progress() - start_epochs;
        let seconds = (now - start_time).as_seconds_f64();
        if done <= 0.0 || seconds <= 0.0 {
            return None;
        }
        Some((f64::from(self.epochs) - self.progress()).max(0.0) * seconds / done)
    }

    /// Exponential smoothing of a noisy per-step value (TensorBoard's 0.9 weight, with
    /// its debiasing so the first steps are not pulled towards zero).
    fn smooth(&mut self, key: &str, value: f64) -> f64 {
        const WEIGHT: f64 = 0.9;
        if !value.is_finite() {
            return value;
        }
        let state = self.charts.smoothed.entry(key.to_string()).or_default();
        state.biased = WEIGHT * state.biased + (1.0 - WEIGHT) * value;
        state.steps += 1;
        state.biased / (1.0 - WEIGHT.powi(state.steps))
    }

    /// When the run was created: the time in its directory name (`RunDir::create` writes
    /// `YYYYMMDD-HHMMSS-name`, local time), else its first start, else the directory's date.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.id
            .get(..15)
            .and_then(|stamp| chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d-%H%M%S").ok())
            .and_then(|local| local.and_local_timezone(chrono::Local).earliest())
            .map(|time| time.with_timezone(&Utc))
            .or(self.started)
            .or(self.observed.created)
    }

    /// Which Dice chooses the run's best checkpoint, as its frozen experiment says
    /// (`validate.select`; legacy when it does not say, as in runs from before the key).
    pub fn selection(&self) -> Selection {
        self.observed
            .config
            .get("validate.select")
            .and_then(Selection::from_name)
            .unwrap_or(Selection::Legacy)
    }

    /// Latest patches per second.
    pub fn patches_per_s(&self) -> Option<f64> {
        self.last_patches_per_s
    }

    /// Lets the charts go (a run off screen); [`RunModel::take_fold`] of the run read again
    /// brings them back.
    pub fn drop_charts(&mut self) {
        self.charts = Charts {
            complete: false,
            ..Charts::default()
        };
    }

    /// Takes what `fold` read from the run's events (its summary and what followed, or all
    /// its events with charts), keeping what the model learned elsewhere: the directory and
    /// everything observed.
    pub fn take_fold(&mut self, fold: RunModel) {
        let kept = std::mem::replace(self, fold);
        self.id = kept.id;
        self.dir = kept.dir;
        self.observed = kept.observed;
        if self.pid.is_none() {
            self.pid = kept.pid;
            self.pid_start = kept.pid_start;
        }
        // Samples taken here while the run is live are finer than the trainer's records.
        if !kept.charts.cpu.is_empty() {
            self.charts.cpu = kept.charts.cpu;
            self.charts.rss = kept.charts.rss;
        }
    }

    /// Epochs trained, as a fraction: where the loss chart's x axis ends.
    pub fn progress(&self) -> f64 {
        self.epoch_position(self.epoch, self.step)
    }

    fn epoch_position(&self, epoch: u32, step: u32) -> f64 {
        let steps = f64::from(self.steps_per_epoch.max(1));
        f64::from(epoch.saturating_sub(1)) + f64::from(step) / steps
    }

    fn seconds_since_start(&self, time: DateTime<Utc>) -> f64 {
        let started = self.started.or(self.observed.created).unwrap_or(time);
        self.seconds_before + (time - started).as_seconds_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::lists::fold_groups;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, 0).expect("valid time")
    }

    fn started(seconds: i64) -> Event {
        Event::RunStarted {
            time: at(seconds),
            schema: 1,
            pid: 4242,
            host: "node".into(),
            name: "quick".into(),
            experiment_hash: "abc".into(),
            epochs: 2,
            steps_per_epoch: 4,
            parameters: 10,
            threads: 2,
            libtorch: "2.13.0".into(),
            precision: Some("bfloat16".into()),
            resumed_from: None,
            pid_start: None,
            slurm_job: None,
            budget_seconds: None,
            init: None,
        }
    }

    fn step(seconds: i64, epoch: u32, step: u32, loss: f64) -> Event {
        Event::Step {
            time: at(seconds),
            epoch,
            step,
            loss,
            loss_parts: BTreeMap::from([("dice".into(), loss / 2.0)]),
            lr: 1e-3,
            patches_per_s: 2.0,
            seconds: 10.0,
        }
    }

    fn validation(epoch: u32, wt: f64) -> Event {
        Event::Validation {
            time: at(100),
            epoch,
            dice: RegionScores { et: 0.1, tc: 0.2, wt },
            hd95: None,
            seed_dice: 0.5,
            lesion_dice: None,
            cases: vec![],
            seconds: 1.0,
        }
    }

    #[test]
    fn steps_fill_the_charts_and_give_progress_and_time_left() {
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        for s in 1..=2 {
            run.apply(&step(s * 10, 1, s as u32, 1.0 / s as f64));
        }
        assert_eq!(run.state(), RunState::Running);
        // Smoothed: the first step as it is, then weighted towards the past.
        let loss = run.charts.loss.points();
        assert_eq!(loss[0], (0.25, 1.0));
        assert_eq!(loss[1].0, 0.5);
        assert!((loss[1].1 - (0.09 * 1.0 + 0.1 * 0.5) / 0.19).abs() < 1e-12, "{loss:?}");
        assert!(
            run.charts.loss_parts["dice"]
                .last()
                .is_some_and(|d| d > 0.25 && d < 0.5)
        );
        assert_eq!(run.progress(), 0.5);
        // Half an epoch in 20 s: the remaining 1.5 epochs take 60 s.
        assert_eq!(run.eta(at(20)), Some(60.0));
        assert_eq!(run.elapsed(at(30)), Some(30.0));
    }

    #[test]
    fn the_best_validation_is_the_best_mean_dice() {
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        run.apply(&validation(1, 0.5));
        run.apply(&validation(2, 0.9));
        run.apply(&validation(3, 0.7));
        assert_eq!(run.best.map(|(epoch, _)| epoch), Some(2));
        assert_eq!(run.charts.dice[2].points(), [(1.0, 0.5), (2.0, 0.9), (3.0, 0.7)]);
    }

    fn scores(et: f64, tc: f64, wt: f64) -> RegionScores {
        RegionScores { et, tc, wt }
    }

    fn validation_with(epoch: u32, dice: RegionScores, lesion_dice: Option<RegionScores>) -> Event {
        Event::Validation {
            time: at(100 + i64::from(epoch)),
            epoch,
            dice,
            hd95: None,
            seed_dice: 0.5,
            lesion_dice,
            cases: vec![],
            seconds: 1.0,
        }
    }

    #[test]
    fn validations_with_lesion_wise_dice_fill_its_history() {
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        run.apply(&validation_with(1, scores(0.5, 0.6, 0.7), None));
        run.apply(&validation_with(2, scores(0.5, 0.6, 0.8), Some(scores(0.2, 0.3, 0.4))));
        run.apply(&validation_with(
            3,
            scores(0.5, 0.6, 0.9),
            Some(scores(0.25, 0.35, 0.45)),
        ));
        // Epoch 1 had no lesion-wise Dice: that history starts at epoch 2.
        assert_eq!(run.charts.lesion_dice[0].points(), [(2.0, 0.2), (3.0, 0.25)]);
        assert_eq!(run.charts.lesion_dice[2].points(), [(2.0, 0.4), (3.0, 0.45)]);
        assert_eq!(run.charts.dice[2].points(), [(1.0, 0.7), (2.0, 0.8), (3.0, 0.9)]);
        assert_eq!(run.best_lesion_dice, Some(scores(0.25, 0.35, 0.45)));
    }

    #[test]
    fn the_best_validation_follows_the_runs_selection() {
        // Legacy Dice rises while lesion-wise Dice peaks at epoch 2.
        let validations = [
            validation_with(1, scores(0.5, 0.5, 0.5), Some(scores(0.3, 0.3, 0.3))),
            validation_with(2, scores(0.6, 0.6, 0.6), Some(scores(0.5, 0.5, 0.5))),
            validation_with(3, scores(0.7, 0.7, 0.7), Some(scores(0.4, 0.4, 0.4))),
        ];
        let best_with = |select: Option<&str>| {
            let mut run = RunModel::new("r", "runs/r");
            if let Some(select) = select {
                run.observed.config.insert("validate.select", select);
            }
            run.apply(&started(0));
            for validation in &validations {
                run.apply(validation);
            }
            (run.best, run.best_lesion_dice)
        };
        assert_eq!(
            best_with(Some("lesion")),
            (Some((2, scores(0.6, 0.6, 0.6))), Some(scores(0.5, 0.5, 0.5))),
            "by lesion-wise Dice, the legacy Dice of that epoch kept"
        );
        assert_eq!(best_with(Some("legacy")).0.map(|(epoch, _)| epoch), Some(3));
        assert_eq!(best_with(None).0.map(|(epoch, _)| epoch), Some(3), "legacy by default");
        assert_eq!(best_with(Some("nonsense")).0.map(|(epoch, _)| epoch), Some(3));

        // Selecting by lesion-wise Dice without it in the records: legacy, as the trainer does.
        let mut run = RunModel::new("r", "runs/r");
        run.observed.config.insert("validate.select", "lesion");
        run.apply(&validation_with(1, scores(0.5, 0.5, 0.5), None));
        run.apply(&validation_with(2, scores(0.7, 0.7, 0.7), None));
        assert_eq!(run.best.map(|(epoch, _)| epoch), Some(2));
        assert_eq!(run.best_lesion_dice, None);
    }

    #[test]
    fn a_rise_too_small_for_the_trainer_is_no_new_best() {
        // The trainer keeps epoch 1's weights when epoch 2 is better by under
        // Selection::MIN_IMPROVEMENT; the chart's `best @N` must name the same epoch.
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        run.apply(&validation_with(1, scores(0.5, 0.5, 0.5), None));
        run.apply(&validation_with(2, scores(0.50005, 0.50005, 0.50005), None));
        assert_eq!(run.best.map(|(epoch, _)| epoch), Some(1));
        run.apply(&validation_with(3, scores(0.501, 0.501, 0.501), None));
        assert_eq!(run.best.map(|(epoch, _)| epoch), Some(3));
    }

    fn brats(region: &str, lesion_dice: f64, legacy_dice: f64) -> BratsScores {
        BratsScores {
            region: region.into(),
            lesion_dice,
            lesion_hd95: 10.0,
            lesion_nsd_10: 0.5,
            legacy_dice,
            legacy_hd95: 8.0,
            num_tp: 1,
            num_fp: 0,
            num_fn: 0,
        }
    }

    fn evaluation(seconds: i64, postprocessed: Option<Vec<BratsScores>>) -> Event {
        Event::Evaluation {
            time: at(seconds),
            epoch: 2,
            challenge: "BraTS-SSA".into(),
            mean: vec![brats("WT", 0.13, 0.77)],
            cases: vec![],
            tta: postprocessed.is_some(),
            postprocess: postprocessed
                .as_ref()
                .map(|_| "WT: remove components under 500 voxels".to_string()),
            postprocessed,
            postprocessed_cases: vec![],
            seconds: 3.0,
        }
    }

    #[test]
    fn a_later_evaluation_replaces_the_earlier_one() {
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        run.apply(&evaluation(200, None));
        let first = run.evaluation.clone().expect("an evaluation");
        assert_eq!((first.epoch, first.tta, first.postprocessed), (2, false, None));
        // `segtop postprocess` learns post-processing again and records a new evaluation.
        run.apply(&evaluation(300, Some(vec![brats("WT", 0.78, 0.80)])));
        let latest = run.evaluation.expect("an evaluation");
        assert!(latest.tta);
        assert_eq!(
            latest.postprocess.as_deref(),
            Some("WT: remove components under 500 voxels")
        );
        let after = latest.postprocessed.expect("post-processed scores");
        assert_eq!(BratsScores::lesion_dice(&after).wt, 0.78);
        assert_eq!(BratsScores::lesion_dice(&latest.mean).wt, 0.13, "the raw ones beside");
    }

    #[test]
    fn states_follow_the_facts() {
        let mut run = RunModel::new("r", "runs/r");
        assert_eq!(run.state(), RunState::Starting);
        run.apply(&started(0));
        let sample = |liveness| ProcessSample {
            time: at(5),
            liveness,
            cpu_percent: 190.0,
            rss_mb: 800.0,
        };
        run.sample(sample(Liveness::Alive));
        assert_eq!(run.state(), RunState::Running);
        assert_eq!(
            (run.charts.cpu.last(), run.charts.rss.last()),
            (Some(190.0), Some(800.0))
        );
        run.sample(sample(Liveness::Gone));
        assert_eq!(run.state(), RunState::Lost);
        // Resumed: a new run_started brings it back; a failure keeps its reason.
        run.apply(&started(50));
        assert_eq!(run.state(), RunState::Running);
        run.apply(&Event::RunFinished {
            time: at(60),
            outcome: Outcome::Failed,
            best_dice: None,
            reason: Some("out of memory".into()),
            seconds: 0.0,
        });
        assert_eq!(run.state(), RunState::Failed);
        assert_eq!(run.last_error.as_deref(), Some("out of memory"));
        assert!(run.eta(at(70)).is_none());
    }

    fn job(state: &str, reason: Option<&str>) -> crate::schedule::slurm::JobStatus {
        job_id("12", state, reason)
    }

    fn job_id(id: &str, state: &str, reason: Option<&str>) -> crate::schedule::slurm::JobStatus {
        crate::schedule::slurm::JobStatus {
            id: id.into(),
            state: state.into(),
            reason: reason.map(Into::into),
            exit_code: (state == "TIMEOUT").then(|| "0:15".into()),
            nodes: (state != "PENDING").then(|| "node3".into()),
        }
    }

    fn stopped(seconds: i64) -> Event {
        Event::RunFinished {
            time: at(seconds),
            outcome: Outcome::Stopped,
            best_dice: None,
            reason: None,
            seconds: 10.0,
        }
    }

    #[test]
    fn a_slurm_runs_state_follows_its_job_until_the_trainer_speaks() {
        let mut run = RunModel::new("r", "runs/r");
        run.observed.launched = Some(at(0));
        run.observed.job = Some(job("PENDING", Some("Resources")));
        assert_eq!(run.state(), RunState::Pending);
        assert_eq!(run.waiting().as_deref(), Some("Resources"));
        assert_eq!(run.job_line().as_deref(), Some("Slurm job 12 pending (Resources)"));
        run.observed.job = Some(job("RUNNING", None));
        assert_eq!(run.state(), RunState::Starting, "running, no run_started yet");
        run.apply(&started(5));
        assert_eq!(run.state(), RunState::Running);
        assert_eq!(run.job_line().as_deref(), Some("Slurm job 12 on node3"));
        // The trainer stops with a checkpoint; its events decide, whatever the job says.
        run.apply(&stopped(20));
        assert_eq!(run.state(), RunState::Stopped);
        assert_eq!(run.job_line(), None);

        // Resubmitted: the new job decides, although the last session said it stopped.
        run.observed.launched = Some(at(30));
        run.observed.job = Some(job("PENDING", None));
        assert_eq!(run.state(), RunState::Pending);
        assert_eq!(run.waiting().as_deref(), Some("queued"));
        run.observed.job = Some(job("RUNNING", None));
        assert_eq!(run.state(), RunState::Starting, "the old run_started is not this job's");
        // A trainer that names its job is matched by it, whatever the nodes' clocks say.
        let mut under = |job: &str, seconds: i64| {
            let mut event = started(seconds);
            if let Event::RunStarted { slurm_job, .. } = &mut event {
                *slurm_job = Some(job.to_string());
            }
            run.apply(&event);
        };
        under("12", 25);
        assert_eq!(run.state(), RunState::Running, "a clock behind the login node's");
        run.observed.job = Some(job_id("13", "RUNNING", None));
        assert_eq!(run.state(), RunState::Starting);
        run.observed.job = Some(job("RUNNING", None));
        // The job runs out of time before the trainer could say anything.
        run.observed.job = Some(job("TIMEOUT", None));
        assert_eq!(run.state(), RunState::Failed);
        assert_eq!(
            run.error().as_deref(),
            Some("Slurm job 12 ended TIMEOUT, exit code 0:15")
        );
        run.observed.job = Some(job("CANCELLED", None));
        assert_eq!((run.state(), run.error()), (RunState::Stopped, None));
        run.observed.job = Some(job(crate::schedule::slurm::UNKNOWN, None));
        assert_eq!(run.state(), RunState::Lost);
    }

    #[test]
    fn a_resumed_run_counts_time_before_the_resume() {
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        run.apply(&step(40, 1, 1, 1.0));
        run.apply(&started(1000));
        assert_eq!(run.elapsed(at(1010)), Some(50.0));
    }

    #[test]
    fn the_trainers_resource_records_chart_runs_not_sampled_here() {
        let mut run = RunModel::new("r", "runs/r");
        run.apply(&started(0));
        run.apply(&Event::Resources {
            time: at(5),
            cpu_percent: 150.0,
            rss_mb: 300.0,
            peak_rss_mb: 320.0,
        });
        assert_eq!((run.charts.cpu.last(), run.peak_rss_mb), (Some(150.0), Some(320.0)));
    }

    #[test]
    fn fold_runs_group_by_configuration_with_mean_and_spread() {
        let run = |id: &str, lr: &str, fold: u32, wt: Option<f64>| {
            let mut run = RunModel::new(id, format!("/ws/runs/{id}"));
            run.name = format!("cv-{fold}");
            for (k, v) in [
                ("data.folds", "3".to_string()),
                ("data.fold", fold.to_string()),
                ("train.lr", lr.to_string()),
                ("run.name", format!("cv-{fold}")),
            ] {
                run.observed.config.insert(k, &v);
            }
            run.best = wt.map(|wt| (4, RegionScores { et: 0.5, tc: 0.6, wt }));
            run
        };
        let runs = [
            run("a2", "0.001", 2, Some(0.80)),
            run("a0", "0.001", 0, Some(0.70)),
            run("b0", "0.003", 0, Some(0.90)),
            run("a1", "0.001", 1, Some(0.90)),
            run("b1", "0.003", 1, None),
        ];
        let mut plain = RunModel::new("p", "/ws/runs/p");
        plain.observed.config.insert("train.lr", "0.001");
        let refs: Vec<&RunModel> = runs.iter().chain([&plain]).collect();
        let groups = fold_groups(&refs);
        assert_eq!(groups.len(), 2, "the run without folds is in no group");
        let a = &groups[0];
        assert_eq!(a.label, "lr=0.001");
        assert_eq!(a.runs, ["a0", "a1", "a2"]);
        assert_eq!((a.folds, a.scored), (3, 3));
        assert!((a.mean.wt - 0.8).abs() < 1e-12);
        assert!((a.spread.wt - 0.1).abs() < 1e-12, "{}", a.spread.wt);
        assert_eq!(a.spread.et, 0.0);
        let b = &groups[1];
        assert_eq!((b.label.as_str(), b.scored, b.runs.len()), ("lr=0.003", 1, 2));
        assert_eq!((b.mean.wt, b.spread.wt), (0.9, 0.0));
        // One configuration: named after its runs.
        let one: Vec<&RunModel> = runs.iter().filter(|r| r.id.starts_with('a')).collect();
        assert_eq!(fold_groups(&one)[0].label, "cv");
    }
}
