//! The epochs: each trains its steps on the prefetched batches, plans again under a time
//! budget, records its mean loss, validates when due (`validate`), and ends with a checkpoint,
//! where early stopping or the end of a halving rung may end the run.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;

use segtop::data::sampler::{Batch, Prefetcher, Sampler};
use segtop::run::events::Event;

use super::budgeted::PROBE_STEPS;
use super::network::batch_labels_predicted;
use super::validate::Verdict;
use super::{End, Trainer, mix, train_step};

/// Where an epoch stands once its steps are trained: whether it is the last, and whether it
/// ends the run's halving rung.
struct Planned {
    last: bool,
    rung_end: Option<End>,
}

impl Trainer<'_> {
    /// Trains epochs until the plan is done or something ends the run before.
    pub(super) fn train(&mut self) -> anyhow::Result<End> {
        while self.state.epoch < self.epochs() {
            if let Some(end) = self.no_room_for_epoch()? {
                return Ok(end);
            }
            if let Some(end) = self.epoch()? {
                return Ok(end);
            }
        }
        Ok(End::Completed)
    }

    /// Before an epoch that follows a validated one, with a time budget: the run ends when
    /// the rung, or the budget, has no room left for a whole epoch and its validation.
    fn no_room_for_epoch(&mut self) -> anyhow::Result<Option<End>> {
        if !self.validated_last || self.state.step != 0 {
            return Ok(None);
        }
        let used = self.used();
        let Some(b) = &mut self.budget else {
            return Ok(None);
        };
        if b.rung
            .as_ref()
            .is_some_and(|(_, rung)| !rung.room_for_epoch(used, &b.pace))
        {
            return Ok(self.rung_end());
        }
        if b.planner.room_for_epoch(used, &b.pace) {
            return Ok(None);
        }
        let console = &self.console;
        console.line("time budget: no time for another epoch and its validation: ending here");
        b.replan(self.state.epoch, used, &mut self.events, &|text| console.line(text))?;
        Ok(Some(End::Completed))
    }

    /// One epoch: its steps, the plan at their pace, its record, a validation when one is due
    /// (every `validate.every` epochs, and on the last of the plan or of the rung), and its
    /// checkpoint. Returns what ends the run, if anything does.
    fn epoch(&mut self) -> anyhow::Result<Option<End>> {
        let epoch_start = match self.train_epoch()? {
            ControlFlow::Continue(epoch_start) => epoch_start,
            ControlFlow::Break(stopped) => return Ok(Some(stopped)),
        };
        let planned = self.plan_after_epoch()?;
        let seconds = self.record_epoch(epoch_start)?;
        let every = match &self.budget {
            Some(b) => b.validate_every(),
            None => self.experiment.validate.every.epochs(),
        };
        let validate_now = (self.state.epoch + 1).is_multiple_of(every) || planned.last || planned.rung_end.is_some();
        self.validated_last = validate_now && !self.cases.validation.is_empty();
        let mut verdict = Verdict::default();
        if self.validated_last {
            match self.validate(seconds)? {
                ControlFlow::Continue(validated) => verdict = validated,
                // A stop in the validation at the end of a rung ends the run as the end of the
                // rung (unvalidated, and with no checkpoint of its own), as it always has.
                ControlFlow::Break(stopped) => return Ok(Some(planned.rung_end.unwrap_or(stopped))),
            }
        }
        self.end_epoch(verdict, planned.rung_end)
    }

    /// Trains the epoch's steps (those left, in a resumed epoch) until its last, or until the
    /// time budget has room for no more. Returns when the epoch started (earlier by the
    /// seconds it trained before a resume), or breaks where a stop came.
    fn train_epoch(&mut self) -> anyhow::Result<ControlFlow<End, Instant>> {
        let epoch = self.state.epoch;
        let epochs = self.epochs();
        self.network.optimizer.lr = self.state.scheduler.lr_for_epoch(&self.experiment.train, epoch, epochs);
        let prefetcher = self.batches()?;
        let epoch_start = Instant::now() - Duration::from_secs_f64(self.state.epoch_seconds);
        self.console.epoch(epoch + 1, epochs, self.steps_per_epoch);
        while self.state.step < self.steps_per_epoch {
            if !self.room_for_step() {
                break;
            }
            let step_start = Instant::now();
            let batch = prefetcher.next().context("the sampler stopped")?;
            let (loss, parts) = self.step(&batch);
            prefetcher.recycle(batch);
            let seconds = step_start.elapsed().as_secs_f64();
            self.record_step(epoch_start, epochs, loss, parts, seconds)?;
            self.pace_step(seconds)?;
            if self.stop.requested() {
                self.state.epoch_seconds = epoch_start.elapsed().as_secs_f64();
                let at = format!("epoch {}, step {}", epoch + 1, self.state.step);
                return Ok(ControlFlow::Break(End::Stopped { at }));
            }
        }
        Ok(ControlFlow::Continue(epoch_start))
    }

    /// The epoch's batches, from a sampler seeded by (seed, epoch). A resumed epoch skips the
    /// batches it already trained on: the sampler is deterministic. Stopped after its last
    /// step, it takes the seed Dice's batch from them.
    fn batches(&mut self) -> anyhow::Result<Prefetcher> {
        let config = &self.experiment.train;
        let sampler = Sampler::new(
            self.cases.train.clone(),
            config.patch_size.map(|n| n as usize),
            (config.foreground_fraction, config.foreground_sampling),
            self.experiment.augment.clone(),
            mix(config.seed, self.state.epoch, 0),
        );
        let channels = self.experiment.data.modalities.len();
        let prefetcher = Prefetcher::spawn(sampler, config.batch_size as usize, channels, 2)?;
        for skipped in 1..=self.state.step {
            let batch = prefetcher.next().context("the sampler stopped")?;
            if skipped == self.steps_per_epoch {
                self.last_batch = Some((batch_labels_predicted(&self.network.net, &batch), batch.labels.clone()));
            }
            prefetcher.recycle(batch);
        }
        Ok(prefetcher)
    }

    /// With a time budget, once planned: whether one more step leaves time for the epoch's
    /// validation and the end of the run (and fits in the rung). When it does not, the epoch
    /// ends here, as the last.
    fn room_for_step(&mut self) -> bool {
        let used = self.used();
        let Some(b) = &self.budget else {
            return true;
        };
        if b.planned.is_none() || self.state.step == 0 || b.room_for_step(used) {
            return true;
        }
        self.cut_short_rung = !b.room_in_rung(used);
        self.console.line(&format!(
            "time budget: ending epoch {} after {} of {} steps to leave time for validation and evaluation",
            self.state.epoch + 1,
            self.state.step,
            self.steps_per_epoch
        ));
        self.cut_short = true;
        false
    }

    /// One optimizer step on `batch`, libtorch's generator seeded by (seed, epoch, step); its
    /// loss goes into the epoch's sums. Keeps the epoch's last batch for the seed Dice.
    fn step(&mut self, batch: &Batch) -> (f64, BTreeMap<String, f64>) {
        let network = &mut self.network;
        let state = &mut self.state;
        tch::manual_seed(mix(self.experiment.train.seed, state.epoch, state.step + 1) as i64);
        let deep_supervision = self.experiment.model.deep_supervision;
        let (value, parts) = train_step(
            &network.net,
            &network.loss,
            &mut network.optimizer,
            batch,
            deep_supervision,
        );
        state.step += 1;
        state.global_step += 1;
        state.epoch_loss += value;
        for (name, v) in &parts {
            *state.epoch_parts.entry(name.clone()).or_default() += v;
        }
        if state.step == self.steps_per_epoch {
            self.last_batch = Some((batch_labels_predicted(&network.net, batch), batch.labels.clone()));
        }
        (value, parts)
    }

    /// The step taken, `seconds` long: on the progress bar (with the time left in the run,
    /// of `epochs`) and as a `step` event.
    fn record_step(
        &mut self,
        epoch_start: Instant,
        epochs: u32,
        loss: f64,
        parts: BTreeMap<String, f64>,
        seconds: f64,
    ) -> anyhow::Result<()> {
        let (epoch, step) = (self.state.epoch, self.state.step);
        let patches_per_s = f64::from(self.experiment.train.batch_size) / seconds.max(1e-9);
        let steps_left = u64::from(epochs - epoch) * u64::from(self.steps_per_epoch) - u64::from(step);
        let mean_step = epoch_start.elapsed().as_secs_f64() / f64::from(step);
        let seconds_left = match &self.budget {
            Some(b) => b.limit.seconds() as f64 - self.used(),
            None => steps_left as f64 * mean_step,
        };
        self.console.step(step, loss, patches_per_s, seconds_left);
        self.events.emit(&Event::Step {
            time: Utc::now(),
            epoch: epoch + 1,
            step,
            loss,
            loss_parts: parts,
            lr: self.network.optimizer.lr,
            patches_per_s,
            seconds,
        })?;
        Ok(())
    }

    /// With a time budget: the step's `seconds` into the pace (but the session's first), and
    /// the first plan once the first steps are timed, refusing a budget too small for one
    /// epoch, its validation and the end of the run.
    fn pace_step(&mut self, seconds: f64) -> anyhow::Result<()> {
        let used = self.used();
        let Some(b) = &mut self.budget else {
            return Ok(());
        };
        // The session's first step pays for setting up the kernels: not the pace.
        if self.warm {
            b.time_step(seconds);
        }
        self.warm = true;
        let (step, steps_per_epoch) = (self.state.step, self.steps_per_epoch);
        if b.planned.is_none() && (step == PROBE_STEPS.min(steps_per_epoch) || step == steps_per_epoch) {
            b.planner
                .check_fits(used, step, &b.pace)
                .map_err(|too_small| anyhow::anyhow!("{too_small}"))?;
            let steps_left = f64::from(steps_per_epoch - step);
            let planned = b
                .planner
                .plan(used + steps_left * b.pace.step, self.state.epoch + 1, &b.pace);
            let console = &self.console;
            b.replan(planned, used, &mut self.events, &|text| console.line(text))?;
        }
        Ok(())
    }

    /// After the epoch's steps, with a time budget: plans again at their pace, the last
    /// planned epoch being validated; the rung ends here when the epoch was cut short for it
    /// or its plan has no epoch after this one. Without, the last is the experiment's.
    fn plan_after_epoch(&mut self) -> anyhow::Result<Planned> {
        let epoch = self.state.epoch + 1;
        let used = self.used();
        let (cut_short, cut_short_rung) = (self.cut_short, self.cut_short_rung);
        let Some(b) = &mut self.budget else {
            return Ok(Planned {
                last: epoch == self.experiment.train.epochs,
                rung_end: None,
            });
        };
        let rung_end = b
            .rung
            .as_ref()
            .is_some_and(|(_, rung)| cut_short_rung || rung.replan(None, used, epoch, &b.pace) == epoch);
        let planned = if cut_short && !cut_short_rung {
            epoch
        } else {
            b.planner.replan(b.planned, used, epoch, &b.pace)
        };
        let console = &self.console;
        b.replan(planned, used, &mut self.events, &|text| console.line(text))?;
        Ok(Planned {
            last: planned == epoch,
            rung_end: if rung_end { self.rung_end() } else { None },
        })
    }

    /// The epoch's mean loss (and its parts) and speed: an `epoch_end` event and a line.
    /// Returns the epoch's seconds.
    fn record_epoch(&mut self, epoch_start: Instant) -> anyhow::Result<f64> {
        let state = &self.state;
        let steps = f64::from(state.step.max(1));
        let seconds = epoch_start.elapsed().as_secs_f64();
        let mean_parts: BTreeMap<String, f64> = state.epoch_parts.iter().map(|(k, v)| (k.clone(), v / steps)).collect();
        let mean_loss = state.epoch_loss / steps;
        let patches_per_s = steps * f64::from(self.experiment.train.batch_size) / seconds.max(1e-9);
        let lr = self.network.optimizer.lr;
        self.events.emit(&Event::EpochEnd {
            time: Utc::now(),
            epoch: state.epoch + 1,
            loss: mean_loss,
            loss_parts: mean_parts.clone(),
            lr,
            patches_per_s,
            seconds,
        })?;
        let parts: Vec<String> = mean_parts.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        self.console.line(&format!(
            "epoch {}/{}  loss {mean_loss:.4} ({})  lr {lr:.2e}  {patches_per_s:.2} patches/s",
            state.epoch + 1,
            self.epochs(),
            parts.join(", "),
        ));
        Ok(seconds)
    }

    /// Ends the epoch: the state moves on to the next one and is checkpointed (with the best
    /// weights, when the validation found them); then early stopping, or the end of the rung,
    /// may end the run.
    fn end_epoch(&mut self, verdict: Verdict, rung_end: Option<End>) -> anyhow::Result<Option<End>> {
        let state = &mut self.state;
        state.epoch += 1;
        state.step = 0;
        state.epoch_loss = 0.0;
        state.epoch_parts.clear();
        state.epoch_seconds = 0.0;
        state.plan = self.budget.as_ref().and_then(|b| Some((b.planned?, b.pace)));
        let checkpoint_start = Instant::now();
        let path = self.save_checkpoint(verdict.best)?;
        if let Some(b) = &mut self.budget {
            b.pace.checkpoint = checkpoint_start.elapsed().as_secs_f64();
        }
        let epoch = self.state.epoch;
        self.events.emit(&Event::Checkpoint {
            time: Utc::now(),
            epoch,
            path,
            best: verdict.best,
        })?;
        if !verdict.stop_early {
            return Ok(rung_end);
        }
        let patience = self.experiment.train.early_stopping_patience;
        self.events.emit(&Event::EarlyStop {
            time: Utc::now(),
            epoch,
            patience,
        })?;
        self.console
            .line(&format!("early stop: no improvement in {patience} validations"));
        Ok(Some(End::EarlyStopped))
    }
}
