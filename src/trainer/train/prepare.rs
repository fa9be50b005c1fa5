//! Before the first step: the cases (generated, cached and split), the network, the weights
//! it starts from (`model.init`, or the latest checkpoint on resume), the `run_started` record
//! and, with a time budget, its plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;

use segtop::budget::{Pace, clock};
use segtop::data::dataset::{self, Dataset, Split};
use segtop::data::synth;
use segtop::experiment::Experiment;
use segtop::run::RunDir;
use segtop::run::events::{Event, EventLog, SCHEMA};

use crate::checkpoint::{self, TrainState};
use crate::infer::SlidingWindow;

use super::budgeted::{Budgeted, SCORING_GUESS, VALIDATION_OVERHEAD};
use super::{Cases, Console, Network, ResourceReporter, Stop, Trainer, threads};

/// Where a session starts from, for its `run_started` record.
pub(super) struct Start {
    /// The weights of `model.init`, when a new run started from them.
    init: Option<PathBuf>,
    /// The epoch of the checkpoint the session resumed from.
    resumed_from: Option<u32>,
}

impl Cases {
    /// Generates the synthetic cases where asked for, opens the dataset (caching its cases),
    /// and takes the run's split: its `split.json`, written on the first session.
    fn prepare(run: &RunDir, experiment: &Experiment, threads: usize, console: &Console) -> anyhow::Result<Cases> {
        let say = |text: &str| console.line(text);
        // Data: synthetic cases first where asked for, then the cache.
        let data = &experiment.data;
        if let Some(synthetic) = &data.synthetic {
            let spec = segtop::data::synth::SynthSpec::of(synthetic);
            if !synth::is_complete(&data.root, &spec) {
                say(&format!(
                    "generating {} synthetic cases in {}",
                    spec.cases,
                    data.root.display()
                ));
                synth::write_dataset(&data.root, &spec, threads, &|_, _| {})?;
            }
        }
        say(&format!("preparing the dataset in {}", data.root.display()));
        let opened = dataset::open(data, threads, &|_, _| {})?;
        for line in opened
            .skipped
            .iter()
            .map(|l| format!("skipped: {l}"))
            .chain(opened.excluded.iter().map(|l| format!("left out: {l}")))
        {
            say(&line);
        }
        let split = split(run, experiment, &opened)?;
        let train_cases = dataset::select(&opened, &split.train);
        let mut validation_cases = dataset::select(&opened, &split.validation);
        if experiment.validate.cases > 0 {
            validation_cases.truncate(experiment.validate.cases as usize);
        }
        if train_cases.is_empty() {
            bail!("no training cases: the split left none (check data.split)");
        }
        say(&format!(
            "{} training cases, {} validation cases",
            train_cases.len(),
            validation_cases.len()
        ));
        // The case the dashboard previews: the configured one, else the first validation case.
        let preview_case = match experiment.preview.case.as_str() {
            "" => validation_cases.first().cloned(),
            id => Some(
                opened
                    .cases
                    .iter()
                    .find(|c| c.header.id == id)
                    .cloned()
                    .with_context(|| format!("preview.case = '{id}' is not a case of the dataset"))?,
            ),
        };
        Ok(Cases {
            train: train_cases,
            validation: validation_cases,
            preview: preview_case,
        })
    }
}

/// The run's split: read from its `split.json`, else made from the dataset's cases and
/// written there, so that every session of the run trains and validates on the same cases.
fn split(run: &RunDir, experiment: &Experiment, opened: &Dataset) -> anyhow::Result<Split> {
    if run.split().is_file() {
        return serde_json::from_slice(&std::fs::read(run.split())?).context("split.json is unreadable");
    }
    let ids: Vec<String> = opened.cases.iter().map(|c| c.header.id.clone()).collect();
    let split = dataset::split_for(&ids, &experiment.data).map_err(|message| anyhow::anyhow!("{message}"))?;
    std::fs::write(run.split(), serde_json::to_vec_pretty(&split)?)?;
    Ok(split)
}

impl<'a> Trainer<'a> {
    /// Opens the run's event log, prepares the cases and builds the network (seeded), on the
    /// torch threads the run is given.
    pub(super) fn new(run: &'a RunDir, experiment: &'a Experiment, stop: &'a Stop) -> anyhow::Result<Trainer<'a>> {
        let started = Instant::now();
        let console = Console::new();
        let threads = threads(experiment);
        tch::set_num_threads(threads as i32);
        let config = &experiment.train;
        let events =
            EventLog::open(&run.events()).with_context(|| format!("cannot write {}", run.events().display()))?;
        let cases = Cases::prepare(run, experiment, threads as usize, &console)?;
        let network = Network::build(experiment);
        console.line(&format!("precision: {}", network.precision.1));
        Ok(Trainer {
            run,
            experiment,
            stop,
            started,
            console,
            threads,
            events,
            cases,
            network,
            state: TrainState::new(config),
            first_step: 0,
            steps_per_epoch: config.patches_per_epoch.div_ceil(config.batch_size),
            window: SlidingWindow::new(&experiment.validate),
            budget: None,
            resources: None,
            last_batch: None,
            warm: false,
            cut_short: false,
            cut_short_rung: false,
            validated_last: false,
        })
    }

    /// Loads the weights the session starts from: those of `model.init` for a run not
    /// resuming, then, when `resume`, the latest checkpoint (weights, optimizer and state).
    pub(super) fn restore(&mut self, resume: bool) -> anyhow::Result<Start> {
        let init = self.init_path()?;
        let resuming = resume && self.run.latest_step().is_some();
        if let Some(path) = init.as_ref().filter(|_| !resuming) {
            self.load_init(path)?;
        }
        let freeze = &self.experiment.train.freeze;
        if !freeze.is_empty() {
            self.console.line(&format!("frozen: {}", freeze.join(", ")));
        }
        let mut resumed_from = None;
        if resume {
            if let Some(dir) = self.run.latest_step() {
                self.state = checkpoint::load(&dir, &mut self.network.vs, &mut self.network.optimizer)?;
                resumed_from = Some(self.state.epoch);
                self.console.line(&format!(
                    "resuming from {} (epoch {}, step {})",
                    dir.display(),
                    self.state.epoch + 1,
                    self.state.step
                ));
            } else {
                self.console.line(&format!(
                    "no checkpoint in {} yet: training from the start",
                    self.run.path().display()
                ));
            }
        }
        Ok(Start { init, resumed_from })
    }

    /// `model.init` resolved to an absolute path (a run's name is looked for beside this run).
    fn init_path(&self) -> anyhow::Result<Option<PathBuf>> {
        let Some(init) = &self.experiment.model.init else {
            return Ok(None);
        };
        let runs = self
            .run
            .path()
            .parent()
            .map_or_else(|| "runs".into(), Path::to_path_buf);
        segtop::run::resolve_init(init, &runs)
            .map(|path| Some(std::path::absolute(&path).unwrap_or(path)))
            .map_err(anyhow::Error::from)
    }

    /// Loads `model.init`'s weights into the network, saying what was and was not used. Weights
    /// of a run whose network outputs the other kind (labels against regions) have output
    /// layers of another meaning, not only another shape: refused unless `model.init_partial`,
    /// and then those layers start from their initialisation.
    fn load_init(&self, path: &Path) -> anyhow::Result<()> {
        let model = &self.experiment.model;
        if let Some(theirs) = init_output(path)
            && theirs != model.output
        {
            if !model.init_partial {
                anyhow::bail!(
                    "model.init: {} comes from a network with model.output = '{theirs}' ({} output channels), \
                     this experiment has model.output = '{}' ({}): their output layers mean different things; \
                     set model.output = '{theirs}', or model.init_partial = true to start from everything but the \
                     output layers",
                    path.display(),
                    theirs.channels(),
                    model.output,
                    model.output.channels()
                );
            }
            self.console.line(&format!(
                "model.init: its network outputs {theirs}, this one {}: the output layers start from their \
                 initialisation",
                model.output
            ));
        }
        let report = checkpoint::load_init(&self.network.vs, path, self.experiment.model.init_partial)?;
        self.console.line(&format!(
            "starting from {}: {} tensors loaded",
            path.display(),
            report.loaded
        ));
        for line in report.left.iter().map(|l| format!("  left at its initialisation: {l}")) {
            self.console.line(&line);
        }
        if !report.unused.is_empty() {
            self.console
                .line(&format!("  not used from the file: {}", report.unused.join(", ")));
        }
        Ok(())
    }

    /// Records `run_started`, starts the resource reporter and, with a time budget, plans.
    pub(super) fn start(&mut self, start: Start) -> anyhow::Result<()> {
        self.first_step = self.state.global_step;
        let experiment = self.experiment;
        let config = &experiment.train;
        self.events.emit(&Event::RunStarted {
            time: Utc::now(),
            schema: SCHEMA,
            pid: std::process::id(),
            host: sysinfo::System::host_name().unwrap_or_default(),
            name: experiment.run.name.clone(),
            experiment_hash: segtop::data::cache::fingerprint(&experiment.to_toml()),
            epochs: config.epochs,
            steps_per_epoch: self.steps_per_epoch,
            parameters: self.network.parameter_count,
            threads: self.threads,
            libtorch: option_env!("SEGTOP_LIBTORCH_VERSION").unwrap_or("unknown").to_string(),
            precision: Some(self.network.precision.0.to_string()),
            resumed_from: start.resumed_from,
            pid_start: segtop::run::process::start_time(std::process::id()),
            slurm_job: segtop::schedule::slurm::current_job(),
            budget_seconds: config.budget.map(|b| b.seconds() as f64),
            init: start.init.as_ref().map(|p| p.display().to_string()),
        })?;
        self.resources = Some(ResourceReporter::spawn(&self.run.events())?);
        self.budget = self.budgeted();
        self.start_budget()
    }

    /// With `train.budget`: its planner, at the pace the checkpoint kept when resumed, else
    /// with no step timed yet and a validation estimated by timing the network on a window.
    fn budgeted(&self) -> Option<Budgeted> {
        let experiment = self.experiment;
        let plan = self.state.plan;
        experiment.train.budget.map(|limit| {
            let pace = plan.map(|(_, pace)| pace).unwrap_or_else(|| {
                let validation = VALIDATION_OVERHEAD
                    * self.window.estimate_seconds(
                        &self.network.net,
                        experiment.data.modalities.len(),
                        self.cases.validation.iter().map(|c| c.header.shape),
                    );
                Pace {
                    step: 0.0,
                    validation,
                    checkpoint: 1.0,
                    scoring: SCORING_GUESS * validation,
                }
            });
            Budgeted::new(
                limit,
                self.run.read_rung(),
                experiment,
                self.steps_per_epoch,
                pace,
                plan.map(|(planned, _)| planned),
            )
        })
    }

    /// Says the time budget before the first step: a resumed run's plan carries on, and a new
    /// run is refused when one epoch's validation and the end of the run alone do not fit.
    fn start_budget(&mut self) -> anyhow::Result<()> {
        let console = &self.console;
        if let Some(b) = &mut self.budget
            && let Some(planned) = b.planned.take()
        {
            // Resumed: the plan carries on, said again for this session's readers.
            b.replan(planned, self.state.seconds, &mut self.events, &|text| {
                console.line(text)
            })?;
        }
        let Some(b) = &self.budget else {
            return Ok(());
        };
        if b.planned.is_none() {
            // Refused before the first step when validation and evaluation alone do not fit.
            b.planner
                .check_fits(self.used(), self.steps_per_epoch, &b.pace)
                .map_err(|too_small| anyhow::anyhow!("{too_small}"))?;
        }
        console.line(&format!(
            "time budget {}: {} used before this session; one validation estimated at {}",
            b.limit,
            clock(self.state.seconds),
            clock(b.pace.validation)
        ));
        Ok(())
    }
}

/// What the network of a run's weights file (`<run>/checkpoints/best.safetensors`) outputs,
/// from the run's frozen experiment; `None` for a weights file outside a run.
fn init_output(weights: &Path) -> Option<segtop::experiment::Output> {
    let checkpoints = weights.parent()?;
    if checkpoints.file_name()? != RunDir::CHECKPOINTS {
        return None;
    }
    let run_dir = checkpoints.parent()?;
    let run = RunDir::open(run_dir);
    segtop::experiment::Experiment::load_frozen(&run.experiment(), run_dir)
        .ok()
        .map(|e| e.model.output)
}
