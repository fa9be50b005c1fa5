//! The training loop: patches from the prefetching sampler, loss, optimizer step; whole-case
//! validation by sliding window; checkpoints; events for the dashboard.
//!
//! Determinism: the sampler of each epoch and libtorch's generator before each step are
//! seeded from (seed, epoch, step), so a run resumed from a checkpoint at any step continues
//! exactly as if it had never stopped (on the same machine, with the same threads).

mod budgeted;
mod console;
mod network;
mod resources;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;

use segtop::budget::{Pace, clock};
use segtop::data::cache::CachedCase;
use segtop::data::dataset::{self, Split};
use segtop::data::sampler::{Prefetcher, Sampler};
use segtop::data::synth;
use segtop::events::{CaseScores, Event, EventLog, Outcome, RegionScores, SCHEMA};
use segtop::experiment::{Experiment, Selection};
use segtop::metrics;
use segtop::rundir::RunDir;

use crate::checkpoint::{self, TrainState};
use crate::evaluate;
use crate::infer::{self, SlidingWindow};

use budgeted::{Budgeted, PROBE_STEPS, VALIDATION_OVERHEAD};
use console::Console;
use network::batch_labels_predicted;
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
    let started = Instant::now();
    let console = Console::new();
    let say = |text: &str| console.line(text);
    let threads = threads(experiment);
    tch::set_num_threads(threads as i32);
    let config = &experiment.train;
    let mut events =
        EventLog::open(&run.events()).with_context(|| format!("cannot write {}", run.events().display()))?;

    // Data: synthetic cases first where asked for, then the cache.
    let data = &experiment.data;
    if let Some(synthetic) = &data.synthetic {
        let spec = synthetic.spec();
        if !synth::is_complete(&data.root, &spec) {
            say(&format!(
                "generating {} synthetic cases in {}",
                spec.cases,
                data.root.display()
            ));
            synth::write_dataset(&data.root, &spec, threads as usize, &|_, _| {})?;
        }
    }
    say(&format!("preparing the dataset in {}", data.root.display()));
    let opened = dataset::open(data, threads as usize, &|_, _| {})?;
    for line in opened
        .skipped
        .iter()
        .map(|l| format!("skipped: {l}"))
        .chain(opened.excluded.iter().map(|l| format!("left out: {l}")))
    {
        say(&line);
    }
    let split: Split = if run.split().is_file() {
        serde_json::from_slice(&std::fs::read(run.split())?).context("split.json is unreadable")?
    } else {
        let ids: Vec<String> = opened.cases.iter().map(|c| c.header.id.clone()).collect();
        let split = dataset::split_for(&ids, data).map_err(|message| anyhow::anyhow!("{message}"))?;
        std::fs::write(run.split(), serde_json::to_vec_pretty(&split)?)?;
        split
    };
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

    let Network {
        mut vs,
        net,
        precision,
        mut optimizer,
        loss,
        parameter_count,
    } = Network::build(experiment);
    say(&format!("precision: {}", precision.1));
    let channels = data.modalities.len();
    let mut state = TrainState::new(config);
    let mut resumed_from = None;
    let init = match &experiment.model.init {
        Some(init) => Some(
            segtop::experiment::resolve_init(
                init,
                &run.path().parent().map_or_else(|| "runs".into(), Path::to_path_buf),
            )
            .map(|path| std::path::absolute(&path).unwrap_or(path))
            .map_err(|message| anyhow::anyhow!("{message}"))?,
        ),
        None => None,
    };
    let resuming = resume && checkpoint::latest(run).is_some();
    if let Some(path) = init.as_ref().filter(|_| !resuming) {
        let report = checkpoint::load_init(&vs, path, experiment.model.init_partial)?;
        say(&format!(
            "starting from {}: {} tensors loaded",
            path.display(),
            report.loaded
        ));
        for line in report.left.iter().map(|l| format!("  left at its initialisation: {l}")) {
            say(&line);
        }
        if !report.unused.is_empty() {
            say(&format!("  not used from the file: {}", report.unused.join(", ")));
        }
    }
    if !config.freeze.is_empty() {
        say(&format!("frozen: {}", config.freeze.join(", ")));
    }
    if resume {
        if let Some(dir) = checkpoint::latest(run) {
            state = checkpoint::load(&dir, &mut vs, &mut optimizer)?;
            resumed_from = Some(state.epoch);
            say(&format!(
                "resuming from {} (epoch {}, step {})",
                dir.display(),
                state.epoch + 1,
                state.step
            ));
        } else {
            say(&format!(
                "no checkpoint in {} yet: training from the start",
                run.path().display()
            ));
        }
    }

    let first_step = state.global_step;
    let batch_size = config.batch_size as usize;
    let steps_per_epoch = config.patches_per_epoch.div_ceil(config.batch_size);
    let patch = config.patch_size.map(|n| n as usize);
    events.emit(&Event::RunStarted {
        time: Utc::now(),
        schema: SCHEMA,
        pid: std::process::id(),
        host: sysinfo::System::host_name().unwrap_or_default(),
        name: experiment.run.name.clone(),
        experiment_hash: segtop::data::cache::fingerprint(&experiment.to_toml()),
        epochs: config.epochs,
        steps_per_epoch,
        parameters: parameter_count,
        threads,
        libtorch: option_env!("SEGTOP_LIBTORCH_VERSION").unwrap_or("unknown").to_string(),
        precision: Some(precision.0.to_string()),
        resumed_from,
        pid_start: segtop::rundir::process_start_time(std::process::id()),
        slurm_job: segtop::slurm::current_job(),
        budget_seconds: config.budget.map(|b| b.seconds() as f64),
        init: init.as_ref().map(|p| p.display().to_string()),
    })?;

    let resources = ResourceReporter::spawn(&run.events())?;
    let window = SlidingWindow::new(&experiment.validate);
    let used = |state: &TrainState| state.seconds + started.elapsed().as_secs_f64();
    let mut budget = config.budget.map(|limit| {
        let pace = state.plan.map(|(_, pace)| pace).unwrap_or_else(|| Pace {
            step: 0.0,
            validation: VALIDATION_OVERHEAD
                * window.estimate_seconds(&net, channels, validation_cases.iter().map(|c| c.header.shape)),
            checkpoint: 1.0,
        });
        Budgeted::new(
            limit,
            segtop::halving::read_record(run.path()),
            experiment,
            steps_per_epoch,
            pace,
            state.plan.map(|(planned, _)| planned),
        )
    });
    if let Some(b) = &mut budget
        && let Some(planned) = b.planned.take()
    {
        // Resumed: the plan carries on, said again for this session's readers.
        b.replan(planned, state.seconds, &mut events, &say)?;
    }
    if let Some(b) = &budget {
        if b.planned.is_none() {
            // Refused before the first step when validation and evaluation alone do not fit.
            b.planner
                .check_fits(used(&state), steps_per_epoch, &b.pace)
                .map_err(|too_small| anyhow::anyhow!("{too_small}"))?;
        }
        say(&format!(
            "time budget {}: {} used before this session; one validation estimated at {}",
            b.limit,
            clock(state.seconds),
            clock(b.pace.validation)
        ));
    }
    let mut last_batch: Option<(Vec<u8>, Vec<u8>)> = None;
    let finish = |events: &mut EventLog, outcome: Outcome, state: &TrainState, reason: Option<String>| {
        events.emit(&Event::RunFinished {
            time: Utc::now(),
            outcome,
            best_dice: state.best_dice,
            reason,
            seconds: state.seconds + started.elapsed().as_secs_f64(),
        })
    };

    let mut outcome = (Outcome::Completed, Finish::Completed);
    // Where a stop (SIGINT, SIGTERM, or SIGUSR1 at a Slurm time limit) came: between two steps,
    // or in a validation, which is left for the resumed run to do again.
    let mut stopped_at = None;
    let mut warm = false;
    let mut cut_short = false;
    // A halving sweep's run stops at the end of its rung, validated, for the sweep to rank.
    let mut cut_short_rung = false;
    let mut rung_stopped = false;
    // Whether the last epoch trained ended with a validation.
    let mut validated_last = false;
    while state.epoch < budget.as_ref().map_or(config.epochs, Budgeted::epochs) {
        let epoch = state.epoch;
        if let Some(b) = &budget
            && let Some((_, rung)) = &b.rung
            && validated_last
            && state.step == 0
            && !rung.room_for_epoch(used(&state), &b.pace)
        {
            rung_stopped = true;
            break;
        }
        if let Some(b) = &mut budget
            && validated_last
            && state.step == 0
            && !b.planner.room_for_epoch(used(&state), &b.pace)
        {
            say("time budget: no time for another epoch and its validation: ending here");
            b.replan(epoch, used(&state), &mut events, &say)?;
            break;
        }
        let epochs = budget.as_ref().map_or(config.epochs, Budgeted::epochs);
        optimizer.lr = state.scheduler.lr_for_epoch(config, epoch, epochs);
        let sampler = Sampler::new(
            train_cases.clone(),
            patch,
            config.foreground_fraction,
            experiment.augment.clone(),
            mix(config.seed, epoch, 0),
        );
        let prefetcher = Prefetcher::spawn(sampler, batch_size, channels, 2)?;
        // A resumed epoch skips the batches it already trained on: the sampler is deterministic.
        // Stopped after its last step, it takes the seed Dice's batch from them.
        for skipped in 1..=state.step {
            let batch = prefetcher.next().context("the sampler stopped")?;
            if skipped == steps_per_epoch {
                last_batch = Some((batch_labels_predicted(&net, &batch), batch.labels.clone()));
            }
            prefetcher.recycle(batch);
        }
        let epoch_start = Instant::now() - std::time::Duration::from_secs_f64(state.epoch_seconds);
        console.epoch(epoch + 1, epochs, steps_per_epoch);
        while state.step < steps_per_epoch {
            // A time budget ends the epoch early, as the last, when one more step would leave
            // no time for its validation and the end of the run.
            if let Some(b) = &budget
                && b.planned.is_some()
                && state.step > 0
                && !b.room_for_step(used(&state))
            {
                cut_short_rung = !b.room_in_rung(used(&state));
                say(&format!(
                    "time budget: ending epoch {} after {} of {steps_per_epoch} steps to leave time for validation and evaluation",
                    epoch + 1,
                    state.step
                ));
                cut_short = true;
                break;
            }
            let step_start = Instant::now();
            let batch = prefetcher.next().context("the sampler stopped")?;
            tch::manual_seed(mix(config.seed, epoch, state.step + 1) as i64);
            let (value, parts) = train_step(&net, &loss, &mut optimizer, &batch, experiment.model.deep_supervision);
            state.step += 1;
            state.global_step += 1;
            state.epoch_loss += value;
            for (name, v) in &parts {
                *state.epoch_parts.entry(name.clone()).or_default() += v;
            }
            if state.step == steps_per_epoch {
                last_batch = Some((batch_labels_predicted(&net, &batch), batch.labels.clone()));
            }
            prefetcher.recycle(batch);
            let seconds = step_start.elapsed().as_secs_f64();
            let steps_left = u64::from(epochs - epoch) * u64::from(steps_per_epoch) - u64::from(state.step);
            let mean_step = epoch_start.elapsed().as_secs_f64() / f64::from(state.step);
            let seconds_left = match &budget {
                Some(b) => b.limit.seconds() as f64 - used(&state),
                None => steps_left as f64 * mean_step,
            };
            console.step(state.step, value, batch_size as f64 / seconds.max(1e-9), seconds_left);
            events.emit(&Event::Step {
                time: Utc::now(),
                epoch: epoch + 1,
                step: state.step,
                loss: value,
                loss_parts: parts,
                lr: optimizer.lr,
                patches_per_s: batch_size as f64 / seconds.max(1e-9),
                seconds,
            })?;
            if let Some(b) = &mut budget {
                // The session's first step pays for setting up the kernels: not the pace.
                if warm {
                    b.time_step(seconds);
                }
                warm = true;
                if b.planned.is_none()
                    && (state.step == PROBE_STEPS.min(steps_per_epoch) || state.step == steps_per_epoch)
                {
                    let used = used(&state);
                    b.planner
                        .check_fits(used, state.step, &b.pace)
                        .map_err(|too_small| anyhow::anyhow!("{too_small}"))?;
                    let steps_left = f64::from(steps_per_epoch - state.step);
                    let planned = b.planner.plan(used + steps_left * b.pace.step, epoch + 1, &b.pace);
                    b.replan(planned, used, &mut events, &say)?;
                }
            }
            if stop.requested() {
                state.epoch_seconds = epoch_start.elapsed().as_secs_f64();
                stopped_at = Some(format!("epoch {}, step {}", epoch + 1, state.step));
                break;
            }
        }
        if stopped_at.is_some() {
            break;
        }
        // With a time budget, plan again at the pace of this epoch: the last planned epoch validates.
        let last_epoch = match &mut budget {
            Some(b) => {
                let used = used(&state);
                let rung_end = b.rung.as_ref().is_some_and(|(_, rung)| {
                    cut_short_rung || rung.replan(None, used, epoch + 1, &b.pace) == epoch + 1
                });
                rung_stopped = rung_end;
                let planned = if cut_short && !cut_short_rung {
                    epoch + 1
                } else {
                    b.planner.replan(b.planned, used, epoch + 1, &b.pace)
                };
                b.replan(planned, used, &mut events, &say)?;
                planned == epoch + 1
            }
            None => epoch + 1 == config.epochs,
        };
        let steps = f64::from(state.step.max(1));
        let seconds = epoch_start.elapsed().as_secs_f64();
        let mean_parts: BTreeMap<String, f64> = state.epoch_parts.iter().map(|(k, v)| (k.clone(), v / steps)).collect();
        let mean_loss = state.epoch_loss / steps;
        events.emit(&Event::EpochEnd {
            time: Utc::now(),
            epoch: epoch + 1,
            loss: mean_loss,
            loss_parts: mean_parts.clone(),
            lr: optimizer.lr,
            patches_per_s: steps * batch_size as f64 / seconds.max(1e-9),
            seconds,
        })?;
        let parts: Vec<String> = mean_parts.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        say(&format!(
            "epoch {}/{}  loss {mean_loss:.4} ({})  lr {:.2e}  {:.2} patches/s",
            epoch + 1,
            budget.as_ref().map_or(config.epochs, Budgeted::epochs),
            parts.join(", "),
            optimizer.lr,
            steps * batch_size as f64 / seconds.max(1e-9)
        ));

        let mut best = false;
        let mut stop_early = false;
        let validate_now = (epoch + 1).is_multiple_of(experiment.validate.every) || last_epoch || rung_stopped;
        validated_last = validate_now && !validation_cases.is_empty();
        if validate_now && !validation_cases.is_empty() {
            let validation_start = Instant::now();
            let mut preview = None;
            let mut cases = Vec::with_capacity(validation_cases.len());
            for case in &validation_cases {
                if stop.requested() {
                    state.epoch_seconds = seconds;
                    stopped_at = Some(format!("the validation after epoch {}", epoch + 1));
                    break;
                }
                let predicted = window.labels(&net, &infer::case_tensor(case));
                let truth = case.labels().unwrap_or(&[]);
                cases.push(CaseScores {
                    case: case.header.id.clone(),
                    dice: metrics::region_dice(&predicted, truth),
                    hd95: experiment
                        .validate
                        .hd95
                        .then(|| metrics::region_hd95(case.header.shape, case.header.spacing, &predicted, truth)),
                    lesion_dice: case
                        .labels()
                        .map(|truth| evaluate::lesion_dice(case, &predicted, truth)),
                });
                if preview_case.as_ref().is_some_and(|p| p.header.id == case.header.id) {
                    preview = Some(predicted);
                }
            }
            if stopped_at.is_some() {
                break;
            }
            let dice = RegionScores::average(cases.iter().map(|c| c.dice));
            let hd95 = experiment
                .validate
                .hd95
                .then(|| RegionScores::average(cases.iter().filter_map(|c| c.hd95)));
            let seed_dice = last_batch.as_ref().map_or(0.0, |(p, t)| metrics::seed_dice(p, t));
            let lesion_dice = cases
                .iter()
                .all(|c| c.lesion_dice.is_some())
                .then(|| RegionScores::average(cases.iter().filter_map(|c| c.lesion_dice)));
            let validation_seconds = validation_start.elapsed().as_secs_f64();
            events.emit(&Event::Validation {
                time: Utc::now(),
                epoch: epoch + 1,
                dice,
                hd95,
                seed_dice,
                lesion_dice,
                cases,
                seconds: validation_seconds,
            })?;

            let hd95_text = hd95.map_or(String::new(), |h| {
                format!("  HD95 ET {:.1}  TC {:.1}  WT {:.1} mm", h.et, h.tc, h.wt)
            });
            let lesion_text = lesion_dice.map_or(String::new(), |l| {
                format!("  lesion-wise ET {:.3}  TC {:.3}  WT {:.3}", l.et, l.tc, l.wt)
            });
            say(&format!(
                "validation: Dice ET {:.3}  TC {:.3}  WT {:.3}{lesion_text}{hd95_text}  (seed Dice {seed_dice:.3})",
                dice.et, dice.tc, dice.wt
            ));
            if let Some(case) = preview_case
                .as_ref()
                .filter(|_| (epoch + 1).is_multiple_of(experiment.preview.every))
            {
                let predicted = match preview.take() {
                    Some(p) => p,
                    None => window.labels(&net, &infer::case_tensor(case)),
                };
                let path = write_preview(run, case, epoch + 1, &predicted)?;
                events.emit(&Event::PreviewWritten {
                    time: Utc::now(),
                    epoch: epoch + 1,
                    case: case.header.id.clone(),
                    path,
                })?;
            }
            if let Some(b) = &mut budget {
                // The preview written after it counts too: both happen at every validation.
                b.pace.validation = validation_start.elapsed().as_secs_f64();
            }
            let selected = match experiment.validate.select {
                Selection::Legacy => dice,
                Selection::Lesion => lesion_dice.unwrap_or(dice),
            };
            best = state.scheduler.observe(config, selected.mean());
            if best {
                state.best_dice = Some(dice);
                state.best_epoch = Some(epoch + 1);
            }
            stop_early = state.scheduler.should_stop(config);
        }
        state.epoch += 1;
        state.step = 0;
        state.epoch_loss = 0.0;
        state.epoch_parts.clear();
        state.epoch_seconds = 0.0;
        state.plan = budget.as_ref().and_then(|b| Some((b.planned?, b.pace)));
        let elapsed = started.elapsed().as_secs_f64();
        let checkpoint_start = Instant::now();
        state.seconds += elapsed;
        let path = checkpoint::save(run, &vs, &optimizer, &state, best)?;
        state.seconds -= elapsed;
        if let Some(b) = &mut budget {
            b.pace.checkpoint = checkpoint_start.elapsed().as_secs_f64();
        }
        events.emit(&Event::Checkpoint {
            time: Utc::now(),
            epoch: epoch + 1,
            path,
            best,
        })?;
        if stop_early {
            events.emit(&Event::EarlyStop {
                time: Utc::now(),
                epoch: epoch + 1,
                patience: config.early_stopping_patience,
            })?;
            say(&format!(
                "early stop: no improvement in {} validations",
                config.early_stopping_patience
            ));
            outcome = (Outcome::EarlyStopped, Finish::EarlyStopped);
            rung_stopped = false;
            break;
        }
        if rung_stopped {
            break;
        }
    }
    if rung_stopped
        && let Some((number, until)) = budget
            .as_ref()
            .and_then(|b| Some((b.rung.as_ref()?.0, b.rung_until()?)))
    {
        // Stopped, validated and checkpointed at the end of its rung: the sweep decides.
        let reason = format!(
            "{} {number} ({until}): waiting for the sweep to promote or prune it",
            segtop::halving::RUNG_END
        );
        say(&reason);
        drop(resources);
        finish(&mut events, Outcome::Stopped, &state, Some(reason))?;
        return Ok(Finish::Stopped {
            time_limit: false,
            steps: state.global_step - first_step,
        });
    }
    if let Some(at) = stopped_at {
        state.seconds += started.elapsed().as_secs_f64();
        let path = checkpoint::save(run, &vs, &optimizer, &state, false)?;
        events.emit(&Event::Checkpoint {
            time: Utc::now(),
            epoch: state.epoch + 1,
            path,
            best: false,
        })?;
        say(&format!("stopped at {at}: checkpoint written"));
        state.seconds -= started.elapsed().as_secs_f64();
        let time_limit = stop.at_time_limit();
        let reason = if time_limit {
            "the Slurm job's time limit is near"
        } else {
            "asked to stop"
        };
        // The reporter ends first, so that run_finished is the last line.
        drop(resources);
        finish(&mut events, Outcome::Stopped, &state, Some(reason.to_string()))?;
        return Ok(Finish::Stopped {
            time_limit,
            steps: state.global_step - first_step,
        });
    }
    let best_epoch = if run.checkpoints().join("best.safetensors").exists() {
        state.best_epoch.unwrap_or(state.epoch)
    } else {
        state.epoch
    };
    evaluate::FinalEvaluation {
        run,
        experiment,
        cases: &validation_cases,
        best_epoch,
        threads: threads as usize,
        deadline: budget.as_ref().map(|b| b.deadline(used(&state))),
        say: &say,
    }
    .run(&mut vs, &net, &mut events)?;
    drop(resources);
    finish(&mut events, outcome.0, &state, None)?;
    Ok(outcome.1)
}

/// Writes a preview prediction on the case's original grid, with its source geometry, as
/// `preview/epoch-NNNN.nii.gz`; returns the path relative to the run directory.
fn write_preview(run: &RunDir, case: &CachedCase, epoch: u32, predicted: &[u8]) -> anyhow::Result<String> {
    let header = &case.header;
    let full = segtop::data::preprocess::uncrop(predicted, header.shape, header.origin, header.original_shape);
    let reference = header
        .sources
        .first()
        .map(|s| s.path.clone())
        .context("the cached case names no source file")?;
    let name = format!("epoch-{epoch:04}.nii.gz");
    segtop::data::volume::write_labels_like(&reference, &run.preview().join(&name), header.original_shape, &full)
        .with_context(|| format!("cannot write the preview {name}"))?;
    Ok(format!("{}/{name}", RunDir::PREVIEW))
}
