//! A time-budgeted run's planning: how many epochs fit in `train.budget` (and in a halving
//! sweep's rung), replanned at the pace the run measures as it trains.

use std::time::{Duration, Instant};

use chrono::Utc;

use segtop::budget::{Budget, Pace, Planner, Shape, clock};
use segtop::experiment::Experiment;
use segtop::run::events::{Event, EventLog};

/// Steps of a time-budgeted run's first epoch timed before deciding whether the budget holds
/// one epoch, its validation and the end of the run (the first step, a warm-up, not counted).
pub(super) const PROBE_STEPS: u32 = 4;

/// A validation's cost beyond its network passes (metrics, lesion matching, the preview
/// written after it), as a factor on the timed passes: 1.7-1.9 measured on the demo.
pub(super) const VALIDATION_OVERHEAD: f64 = 1.8;

/// The end-of-run evaluation's segmentation of the validation cases on their original grids
/// and writing them, as a multiple of one validation (per mirror pass): measured at 0.95 on
/// 3 real BraTS cases (2 threads, float32), with room for a slower disk.
const SEGMENT_AGAIN: f64 = 1.2;

/// The end-of-run post-processing search as a multiple of a validation's lesion-wise scoring
/// of the same cases: it scores one region at a time for 71 candidate plans, and every
/// metric twice. Measured at 15 on 3 real BraTS cases (scored in 1.7 s, searched in 25 s);
/// twice that here, because a search that runs out of time leaves its last regions as
/// predicted, which costs far more than the seconds saved.
const SEARCH_SCORINGS: f64 = 30.0;

/// Before the first validation has measured it: the lesion-wise scoring of the validation
/// cases, as a share of a validation (measured at 0.03 on real cases at 2 threads, float32;
/// more where the network is faster).
pub(super) const SCORING_GUESS: f64 = 0.05;

/// A time-budgeted run's planning: the planner, the pace measured so far, the plan.
pub(super) struct Budgeted {
    pub(super) limit: Budget,
    pub(super) planner: Planner,
    /// In a halving sweep below its top rung: the rung and a planner for where it ends (no
    /// final evaluation there).
    pub(super) rung: Option<(u32, Planner)>,
    pub(super) pace: Pace,
    /// Epochs planned, once the first steps have been timed.
    pub(super) planned: Option<u32>,
}

impl Budgeted {
    pub(super) fn new(
        limit: Budget,
        rung: Option<segtop::run::RungRecord>,
        experiment: &Experiment,
        steps_per_epoch: u32,
        pace: Pace,
        planned: Option<u32>,
    ) -> Budgeted {
        let validate = &experiment.validate;
        let passes = if validate.tta {
            1u32 << experiment.augment.flip_axes.len().min(3)
        } else {
            1
        };
        // The end-of-run evaluation segments the same cases on their original grids (with
        // mirror passes under TTA) and writes them, then learns post-processing on them.
        let shape = Shape {
            budget: limit.seconds() as f64,
            max_epochs: experiment.train.epochs,
            steps_per_epoch,
            validate_every: validate.every.fixed(),
            final_factor: SEGMENT_AGAIN * f64::from(passes),
            search_factor: if validate.postprocess { SEARCH_SCORINGS } else { 0.0 },
        };
        let rung = rung.filter(|r| r.until_seconds < limit.seconds()).map(|r| {
            let shape = Shape {
                budget: r.until_seconds as f64,
                final_factor: 0.0,
                ..shape
            };
            (r.rung, Planner { shape })
        });
        Budgeted {
            limit,
            planner: Planner { shape },
            rung,
            pace,
            planned,
        }
    }

    /// When the run must be done, `used` seconds into its budget: its end, less half the
    /// margin (for the last records and a slow disk).
    pub(super) fn deadline(&self, used: f64) -> Instant {
        let left = self.limit.seconds() as f64 - used - 0.5 * self.planner.margin();
        Instant::now() + Duration::from_secs_f64(left.max(0.0))
    }

    /// Validate every this many epochs, at the pace measured so far.
    pub(super) fn validate_every(&self) -> u32 {
        self.planner.every(&self.pace)
    }

    /// Epochs to train: the plan, or the most allowed until there is one.
    pub(super) fn epochs(&self) -> u32 {
        self.planned.unwrap_or(self.planner.shape.max_epochs)
    }

    pub(super) fn room_for_step(&self, used: f64) -> bool {
        self.planner.room_for_step(used, &self.pace) && self.room_in_rung(used)
    }

    /// Whether one more step fits before the end of the rung (always, outside halving).
    pub(super) fn room_in_rung(&self, used: f64) -> bool {
        self.rung
            .as_ref()
            .is_none_or(|(_, rung)| rung.room_for_step(used, &self.pace))
    }

    /// Where the run's rung ends, when it is in a halving sweep below the top rung.
    pub(super) fn rung_until(&self) -> Option<Budget> {
        let (_, rung) = self.rung.as_ref()?;
        Some(Budget::from_seconds(rung.shape.budget as u64))
    }

    /// Takes one step's seconds into the pace (smoothed, so another run starting on the same
    /// cores shows within a few steps).
    pub(super) fn time_step(&mut self, seconds: f64) {
        self.pace.step = if self.pace.step > 0.0 {
            0.7 * self.pace.step + 0.3 * seconds
        } else {
            seconds
        };
    }

    /// Records a new plan: a `plan` event and a line, when it differs from the last.
    pub(super) fn replan(
        &mut self,
        planned: u32,
        used: f64,
        events: &mut EventLog,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<()> {
        if self.planned == Some(planned) {
            return Ok(());
        }
        let first = self.planned.is_none();
        self.planned = Some(planned);
        events.emit(&Event::Plan {
            time: Utc::now(),
            epochs: planned,
            budget_seconds: self.limit.seconds() as f64,
            used_seconds: used,
            step_seconds: self.pace.step,
            validation_seconds: self.pace.validation,
        })?;
        say(&format!(
            "time budget {}: {} {planned} epochs, validating every {} ({} used, {:.2} s a step, {} a validation)",
            self.limit,
            if first { "planning" } else { "now planning" },
            match self.validate_every() {
                1 => "epoch".to_string(),
                n => format!("{n} epochs"),
            },
            clock(used),
            self.pace.step,
            clock(self.pace.validation)
        ));
        Ok(())
    }
}
