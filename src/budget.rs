//! Time budgets: `train.budget = "30m"` sizes a run by wall-clock time instead of epochs.
//!
//! The trainer measures its own pace (seconds per step, per validation, per checkpoint) and
//! asks a [`Planner`] how many epochs fit in what is left of the budget, keeping back time
//! for the last validation, the end-of-run evaluation and the last checkpoint. It asks again
//! at the end of every epoch, so a slow-down (another run starting on the same cores) shortens
//! the plan, and before every step, so a run never starts a step it could not finish in time.
//! The learning-rate schedule runs over the planned epochs.
//!
//! Everything here is arithmetic on seconds the caller measured: no clock is read, which is
//! what lets the tests drive it with a fake one.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a duration should be written, for the messages below.
const SHAPE: &str = "write it as whole numbers with units, like \"30m\", \"2h\" or \"1h30m\"";

/// Why a duration did not parse; each says the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("'{0}' is empty: {SHAPE}")]
    Empty(String),
    #[error("'{0}' is not a duration: {SHAPE}")]
    NotADuration(String),
    #[error("'{0}' has a number without a unit: {SHAPE}")]
    NoUnit(String),
    #[error("'{0}' is no time at all: give at least a minute, like \"10m\"")]
    Zero(String),
    #[error("'{0}' is too long: at most a week (\"7d\")")]
    TooLong(String),
}

/// A duration written like `"30m"`, `"2h"`, `"1h30m"` or `"90s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Budget {
    seconds: u64,
}

/// The most a budget may be: a week, far beyond any run and far below any overflow.
const MAX_SECONDS: u64 = 7 * 24 * 3600;

impl Budget {
    pub fn from_seconds(seconds: u64) -> Budget {
        Budget { seconds }
    }

    pub fn seconds(self) -> u64 {
        self.seconds
    }

    /// Parses `"1h30m"`, `"45m"`, `"2h"`, `"90s"`, `"1d"`: whole numbers each followed by a unit
    /// (d, h, m, s), largest first, at least one second in all, at most a week.
    pub fn parse(text: &str) -> Result<Budget, BudgetError> {
        let text_of = || text.to_string();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(BudgetError::Empty(text_of()));
        }
        let mut seconds: u64 = 0;
        let mut number = String::new();
        let mut last_unit = u64::MAX;
        for c in trimmed.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(BudgetError::NotADuration(text_of())),
            };
            if number.is_empty() || unit >= last_unit {
                return Err(BudgetError::NotADuration(text_of()));
            }
            let value: u64 = number.parse().map_err(|_| BudgetError::TooLong(text_of()))?;
            seconds = value
                .checked_mul(unit)
                .and_then(|s| s.checked_add(seconds))
                .ok_or_else(|| BudgetError::TooLong(text_of()))?;
            number.clear();
            last_unit = unit;
        }
        if !number.is_empty() {
            return Err(BudgetError::NoUnit(text_of()));
        }
        if seconds == 0 {
            return Err(BudgetError::Zero(text_of()));
        }
        if seconds > MAX_SECONDS {
            return Err(BudgetError::TooLong(text_of()));
        }
        Ok(Budget { seconds })
    }
}

impl fmt::Display for Budget {
    /// The shortest spelling that parses back: `1h30m`, `45m`, `2h`, `1m05s` becomes `1m5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.seconds;
        let mut wrote = false;
        for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{name}", rest / unit)?;
                rest %= unit;
                wrote = true;
            }
        }
        if !wrote {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Budget, D::Error> {
        let text = String::deserialize(deserializer)?;
        Budget::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `1h02m`, `12m05s`, `45s`: seconds for a person, to the second below an hour.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What the run has measured of its own pace, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// One training step, as the latest epoch (or the steps so far) took it.
    pub step: f64,
    /// One validation, as the latest one took it (before the first: an estimate from a timed
    /// forward pass of one window batch).
    pub validation: f64,
    /// Writing one checkpoint.
    pub checkpoint: f64,
    /// The lesion-wise scoring of every validation case's prediction in the latest
    /// validation: the unit of the end-of-run post-processing search's cost (before the first
    /// validation: an estimate). Runs checkpointed before it was measured read 0.
    #[serde(default)]
    pub scoring: f64,
}

/// The fixed parts of a run a plan is made for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// The budget in seconds, counted over every session of the run (data preparation included).
    pub budget: f64,
    /// The most epochs to plan (`train.epochs`).
    pub max_epochs: u32,
    pub steps_per_epoch: u32,
    /// `validate.every`: a number of epochs, or `None` for "auto" ([`auto_every`]).
    pub validate_every: Option<u32>,
    /// The end-of-run evaluation's segmentation (and writing) as a multiple of one validation.
    pub final_factor: f64,
    /// The end-of-run post-processing search as a multiple of one validation's scoring (0:
    /// no search).
    pub search_factor: f64,
}

/// Why a budget cannot hold even one epoch, one validation and the end of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct TooSmall {
    pub budget: f64,
    /// Seconds already used (preparing the data, the steps taken so far).
    pub used: f64,
    /// What the rest of one epoch and its checkpoint need (unknown before a step is timed).
    pub epoch: Option<f64>,
    pub validation: f64,
    pub finish: f64,
}

impl TooSmall {
    /// The least budget that would do, rounded up to a whole minute.
    pub fn needed(&self) -> Budget {
        let total = self.used + self.epoch.unwrap_or(0.0) + self.validation + self.finish;
        Budget::from_seconds(((total / 60.0).ceil() as u64).max(1) * 60)
    }
}

impl fmt::Display for TooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let epoch = match self.epoch {
            Some(seconds) => format!("one epoch needs about {}", clock(seconds)),
            None => "before any training step".to_string(),
        };
        write!(
            f,
            "train.budget = '{}' is too small for one epoch and one validation: {} went to preparing data and \
             warming up, {epoch}, one validation {} and the end of the run (evaluation and checkpoint) {}; give \
             at least '{}', or fewer train.patches_per_epoch or validation cases",
            Budget::from_seconds(self.budget.round() as u64),
            clock(self.used),
            clock(self.validation),
            clock(self.finish),
            self.needed()
        )
    }
}

/// The most of a time-budgeted run's training and validating that validations take under
/// `validate.every = "auto"`. Validations pick the best weights and drive early stopping; the
/// rest of the budget trains. Measured on real BraTS cases at 2 threads without bfloat16, one
/// validation of 3 cases took as long as an epoch of 100 patches: validating every epoch
/// would give half the budget to it.
pub const AUTO_VALIDATION_SHARE: f64 = 0.2;

/// Under `validate.every = "auto"`: the fewest epochs between validations that keep them to
/// [`AUTO_VALIDATION_SHARE`] of the time, at `pace`. Validating every `k` epochs of `e`
/// seconds, a validation of `v` seconds takes `v / (k e + v)` of the time, at most the share
/// `s` when `k >= v (1 - s) / (s e)`. Every epoch while no step has been timed.
pub fn auto_every(pace: &Pace, steps_per_epoch: u32) -> u32 {
    let epoch = pace.step * f64::from(steps_per_epoch) + pace.checkpoint;
    if pace.step <= 0.0 || epoch <= 0.0 {
        return 1;
    }
    let share = AUTO_VALIDATION_SHARE;
    let every = (pace.validation * (1.0 - share) / (share * epoch)).ceil();
    every.clamp(1.0, 10_000.0) as u32
}

/// Plans how many epochs fit in a time budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Planner {
    pub shape: Shape,
}

impl Planner {
    /// Time kept back against a mis-estimate: 3% of the budget, at least 5 seconds.
    pub fn margin(&self) -> f64 {
        (0.03 * self.shape.budget).max(5.0)
    }

    /// Seconds the end of the run takes after the last epoch's validation: the final
    /// evaluation (segmentation, then the post-processing search) and the last checkpoint.
    pub fn finish(&self, pace: &Pace) -> f64 {
        pace.validation * self.shape.final_factor + pace.scoring * self.shape.search_factor + pace.checkpoint
    }

    /// Validate every this many epochs, at `pace`.
    pub fn every(&self, pace: &Pace) -> u32 {
        self.shape
            .validate_every
            .unwrap_or_else(|| auto_every(pace, self.shape.steps_per_epoch))
            .max(1)
    }

    fn validates(&self, epoch: u32, pace: &Pace) -> bool {
        epoch.is_multiple_of(self.every(pace))
    }

    /// The total number of epochs to train, decided when `epoch` (1-based) has finished its
    /// steps and `used` seconds have gone: epoch `epoch` itself and as many more as fit, each
    /// with its step time, checkpoint and scheduled validations, the last one validated, and
    /// the end of the run after it. At least `epoch` (the one just trained always counts:
    /// it is validated if it is the last); at most `max_epochs`.
    pub fn plan(&self, used: f64, epoch: u32, pace: &Pace) -> u32 {
        let limit = self.shape.budget - self.margin() - used - self.finish(pace);
        let epoch_cost = pace.step * f64::from(self.shape.steps_per_epoch) + pace.checkpoint;
        // Checkpoints and training of epochs `epoch..=last`, and the validations scheduled
        // before `last` (the last one validates in any case).
        let mut trained = pace.checkpoint;
        let mut validations = 0.0;
        let mut planned = epoch;
        for last in epoch..=self.shape.max_epochs.max(epoch) {
            if last > epoch {
                trained += epoch_cost;
                if trained + validations + pace.validation > limit {
                    break;
                }
            }
            planned = last;
            if self.validates(last, pace) {
                validations += pace.validation;
            }
        }
        planned
    }

    /// [`Planner::plan`] against an earlier plan: a shorter plan is taken at once, a longer
    /// one only if it holds at a 5% slower pace too, so step-to-step noise does not make the
    /// plan (and the learning-rate schedule over it) flap between two lengths.
    pub fn replan(&self, current: Option<u32>, used: f64, epoch: u32, pace: &Pace) -> u32 {
        let planned = self.plan(used, epoch, pace);
        match current {
            Some(current) if planned > current => {
                let slower = Pace {
                    step: pace.step * 1.05,
                    ..*pace
                };
                self.plan(used, epoch, &slower).max(current)
            }
            _ => planned,
        }
    }

    /// Before the first epoch ends: whether one epoch (`steps_done` of it taken in `used`
    /// seconds), its validation and the end of the run fit at all.
    pub fn check_fits(&self, used: f64, steps_done: u32, pace: &Pace) -> Result<(), TooSmall> {
        let steps_left = self.shape.steps_per_epoch.saturating_sub(steps_done);
        let epoch = pace.step * f64::from(steps_left) + pace.checkpoint;
        let finish = self.finish(pace);
        if used + epoch + pace.validation + finish <= self.shape.budget - self.margin() {
            Ok(())
        } else {
            Err(TooSmall {
                budget: self.shape.budget,
                used,
                epoch: (pace.step > 0.0).then_some(epoch),
                validation: pace.validation,
                finish,
            })
        }
    }

    /// Before an epoch: whether all of it, its validation and the end of the run still fit.
    /// When they do not and the epoch before was validated, the run ends there instead of
    /// training a fraction of an epoch and validating almost the same weights again.
    pub fn room_for_epoch(&self, used: f64, pace: &Pace) -> bool {
        used + pace.step * f64::from(self.shape.steps_per_epoch) + pace.validation + pace.checkpoint + self.finish(pace)
            <= self.shape.budget - self.margin()
    }

    /// Before a step: whether one more step still leaves time for this epoch's validation and
    /// the end of the run. When it does not, the epoch ends here and is the last.
    pub fn room_for_step(&self, used: f64, pace: &Pace) -> bool {
        used + pace.step + pace.validation + pace.checkpoint + self.finish(pace) <= self.shape.budget - self.margin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, seconds, shown) in [
            ("30m", 1800, "30m"),
            ("2h", 7200, "2h"),
            ("1h30m", 5400, "1h30m"),
            ("90s", 90, "1m30s"),
            ("1d2h", 93_600, "1d2h"),
            (" 45m ", 2700, "45m"),
            ("7d", MAX_SECONDS, "7d"),
        ] {
            let budget = Budget::parse(text).expect("a duration");
            assert_eq!(budget.seconds(), seconds, "{text}");
            assert_eq!(budget.to_string(), shown, "{text}");
            assert_eq!(Budget::parse(shown).expect("prints back"), budget);
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for (text, says) in [
            ("-5m", "not a duration"),
            ("", "empty"),
            ("30", "without a unit"),
            ("1h30", "without a unit"),
            ("0m", "no time at all"),
            ("30m1h", "not a duration"),
            ("1.5h", "not a duration"),
            ("m", "not a duration"),
            ("8d", "at most a week"),
            ("99999999999999999999h", "too long"),
            ("1 hour", "not a duration"),
        ] {
            let error = Budget::parse(text).expect_err("not a duration").to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains(&format!("'{text}'")), "{text}: {error}");
        }
        assert_eq!(
            Budget::parse("30").expect_err("no unit").to_string(),
            "'30' has a number without a unit: write it as whole numbers with units, like \"30m\", \"2h\" or \"1h30m\""
        );
    }

    fn planner(budget: f64, max_epochs: u32, every: u32) -> Planner {
        Planner {
            shape: Shape {
                budget,
                max_epochs,
                steps_per_epoch: 10,
                validate_every: Some(every),
                final_factor: 3.0,
                search_factor: 10.0,
            },
        }
    }

    const PACE: Pace = Pace {
        step: 1.0,
        validation: 5.0,
        checkpoint: 1.0,
        scoring: 0.2,
    };

    /// Seconds a run of `epochs` epochs takes at `pace`, every validation and the end included.
    fn run_seconds(planner: &Planner, epochs: u32, pace: &Pace) -> f64 {
        let validations = (1..=epochs)
            .filter(|&e| planner.validates(e, pace) || e == epochs)
            .count() as f64;
        f64::from(epochs) * (10.0 * pace.step + pace.checkpoint) + validations * pace.validation + planner.finish(pace)
    }

    #[test]
    fn the_plan_is_the_most_epochs_that_fit() {
        // Each epoch 11 s, a validation every 2 epochs 5 s, the end 18 s (evaluation 15 s,
        // search 2 s, checkpoint 1 s), margin 18 s of 600.
        let planner = planner(600.0, 1000, 2);
        let epochs = planner.plan(10.0, 1, &PACE);
        assert!(run_seconds(&planner, epochs, &PACE) <= 600.0 - planner.margin());
        assert!(run_seconds(&planner, epochs + 1, &PACE) > 600.0 - planner.margin());
        assert_eq!(epochs, 41);
    }

    #[test]
    fn the_plan_stops_at_max_epochs() {
        assert_eq!(planner(600.0, 12, 2).plan(11.0, 1, &PACE), 12);
    }

    #[test]
    fn a_slow_down_shortens_the_plan_and_a_speed_up_lengthens_it() {
        let planner = planner(600.0, 1000, 2);
        let first = planner.plan(11.0, 1, &PACE);
        let slow = Pace { step: 2.0, ..PACE };
        let after = planner.plan(11.0 * 10.0, 10, &slow);
        assert!(after < first, "{after} >= {first}");
        assert!(after > 10);
        let fast = Pace { step: 0.5, ..PACE };
        assert!(planner.plan(110.0, 10, &fast) > first);
    }

    #[test]
    fn noise_does_not_lengthen_the_plan_but_a_slow_down_shortens_it() {
        let planner = planner(600.0, 1000, 2);
        let first = planner.plan(10.0, 1, &PACE);
        // 1% faster: the plain plan may grow by one; the replan keeps the current one.
        let noisy = Pace { step: 0.97, ..PACE };
        assert!(planner.plan(10.0, 1, &noisy) > first);
        assert_eq!(planner.replan(Some(first), 10.0, 1, &noisy), first);
        // Much faster: it grows.
        let fast = Pace { step: 0.5, ..PACE };
        assert!(planner.replan(Some(first), 10.0, 1, &fast) > first);
        // Any slow-down shortens it.
        let slow = Pace { step: 1.03, ..PACE };
        assert!(planner.replan(Some(first), 10.0, 1, &slow) < first);
        assert_eq!(planner.replan(None, 10.0, 1, &noisy), planner.plan(10.0, 1, &noisy));
    }

    #[test]
    fn the_plan_never_goes_below_the_epoch_just_trained() {
        let planner = planner(100.0, 1000, 2);
        assert_eq!(planner.plan(99.0, 7, &PACE), 7);
    }

    /// A run driven by a fake clock: each step advances it by the pace of the moment (which
    /// doubles halfway, as when another run starts), with re-planning and the step guard as
    /// the trainer does them. It must end, validated and evaluated, inside the budget.
    #[test]
    fn a_run_on_a_fake_clock_ends_inside_its_budget_after_a_slow_down() {
        let slow_validation = Pace {
            validation: 20.0,
            ..PACE
        };
        for (budget, every, start) in [
            (600.0, Some(1), PACE),
            (600.0, Some(3), PACE),
            (900.0, Some(2), PACE),
            (200.0, Some(5), PACE),
            (900.0, None, PACE),
            (900.0, None, slow_validation),
        ] {
            let planner = Planner {
                shape: Shape {
                    validate_every: every,
                    ..planner(budget, 1000, 1).shape
                },
            };
            let mut clock = 4.0; // data preparation
            let mut pace = start;
            let mut planned = planner.plan(clock + 11.0, 1, &pace);
            let first_plan = planned;
            let mut epoch = 0;
            let mut validated_last = false;
            while epoch < planned {
                if epoch > 0 && validated_last && !planner.room_for_epoch(clock, &pace) {
                    break;
                }
                epoch += 1;
                let slow = clock > budget / 2.0;
                let step = if slow { 2.0 * PACE.step } else { PACE.step };
                let mut steps = 0;
                while steps < 10 && planner.room_for_step(clock, &pace) {
                    clock += step;
                    steps += 1;
                }
                pace.step = step;
                let cut_short = steps < 10;
                planned = if cut_short {
                    epoch
                } else {
                    planner.replan(Some(planned), clock, epoch, &pace)
                };
                validated_last = planner.validates(epoch, &pace) || epoch == planned;
                if validated_last {
                    clock += pace.validation;
                }
                clock += pace.checkpoint;
            }
            clock += pace.validation * planner.shape.final_factor + pace.scoring * planner.shape.search_factor;
            assert!(validated_last, "budget {budget}: the last epoch was not validated");
            assert!(clock <= budget, "budget {budget}, every {every:?}: ended at {clock}");
            assert!(
                planned < first_plan,
                "budget {budget}: the slow-down did not shorten the plan"
            );
            // Not wasteful: the unused time is less than an epoch at the slow pace plus the margin.
            assert!(
                budget - clock < 2.0 * 10.0 + pace.validation + 1.0 + planner.margin(),
                "budget {budget}: ended at {clock}"
            );
        }
    }

    /// The share of the time validations take, validating every `every` epochs at `pace`.
    fn validation_share(pace: &Pace, every: u32) -> f64 {
        let epoch = 10.0 * pace.step + pace.checkpoint;
        pace.validation / (f64::from(every) * epoch + pace.validation)
    }

    #[test]
    fn auto_validates_as_often_as_the_share_allows() {
        for step in [0.05, 0.3, 1.0, 2.5] {
            for validation in [0.5, 5.0, 11.0, 40.0, 300.0] {
                let pace = Pace {
                    step,
                    validation,
                    ..PACE
                };
                let every = auto_every(&pace, 10);
                let share = validation_share(&pace, every);
                assert!(
                    share <= AUTO_VALIDATION_SHARE + 1e-12,
                    "{pace:?}: every {every} gives {share}"
                );
                if every > 1 {
                    let more_often = validation_share(&pace, every - 1);
                    assert!(
                        more_often > AUTO_VALIDATION_SHARE,
                        "{pace:?}: every {} would do",
                        every - 1
                    );
                }
            }
        }
        // A validation as long as an epoch (what real cases at 2 threads give): every 4th.
        assert_eq!(
            auto_every(
                &Pace {
                    validation: 10.0,
                    ..PACE
                },
                10
            ),
            4
        );
        // Cheap validations, as on the demo: every epoch.
        assert_eq!(
            auto_every(
                &Pace {
                    validation: 0.5,
                    ..PACE
                },
                10
            ),
            1
        );
        // No step timed yet: every epoch.
        assert_eq!(auto_every(&Pace { step: 0.0, ..PACE }, 10), 1);
    }

    #[test]
    fn auto_plans_more_epochs_than_validating_each_one() {
        let pace = Pace {
            validation: 10.0,
            ..PACE
        };
        let each = planner(1800.0, 1000, 1);
        let auto = Planner {
            shape: Shape {
                validate_every: None,
                ..each.shape
            },
        };
        assert_eq!(auto.every(&pace), 4);
        let (planned_each, planned_auto) = (each.plan(15.0, 1, &pace), auto.plan(15.0, 1, &pace));
        // 21 s an epoch with its validation against 13.5 s with a quarter of one.
        assert!(
            f64::from(planned_auto) > 1.5 * f64::from(planned_each),
            "{planned_auto} against {planned_each}"
        );
        assert!(run_seconds(&auto, planned_auto, &pace) <= 1800.0 - auto.margin());
    }

    #[test]
    fn the_end_of_the_run_counts_the_search_by_the_scoring_it_repeats() {
        let planner = planner(600.0, 1000, 1);
        // Segmenting the validation cases again (3 validations of 5 s), the search (10
        // scorings of 0.2 s) and the checkpoint (1 s).
        assert!((planner.finish(&PACE) - 18.0).abs() < 1e-9);
        let slow_scoring = Pace { scoring: 2.0, ..PACE };
        assert!((planner.finish(&slow_scoring) - 36.0).abs() < 1e-9);
        assert!(planner.plan(10.0, 1, &slow_scoring) < planner.plan(10.0, 1, &PACE));
        // A checkpoint from before the scoring was measured reads it as 0.
        let old: Pace = serde_json::from_str(r#"{"step": 1.0, "validation": 5.0, "checkpoint": 1.0}"#).expect("reads");
        assert_eq!(old.scoring, 0.0);
    }

    #[test]
    fn too_small_a_budget_is_refused_with_the_estimate() {
        let planner = planner(60.0, 1000, 1);
        let error = planner.check_fits(28.0, 3, &PACE).expect_err("too small");
        // 7 steps + checkpoint, a validation, the end 18 s: 28 + 8 + 5 + 18 = 59 > 60 - 5.
        assert!(planner.check_fits(10.0, 3, &PACE).is_ok());
        assert_eq!(error.needed(), Budget::from_seconds(60));
        let text = error.to_string();
        assert!(text.contains("train.budget = '1m' is too small"), "{text}");
        assert!(text.contains("one validation 5s"), "{text}");
        let big = planner.check_fits(2000.0, 0, &PACE).expect_err("too small");
        assert_eq!(big.needed().to_string(), "34m");
    }

    #[test]
    fn a_step_is_taken_only_with_room_for_the_end() {
        let planner = planner(100.0, 1000, 1);
        // step 1 + validation 5 + checkpoint 1 + end 18 = 25; margin 5.
        assert!(planner.room_for_step(70.0, &PACE));
        assert!(!planner.room_for_step(70.5, &PACE));
    }
}
