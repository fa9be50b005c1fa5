//! The rules of a successive-halving sweep (`[sweep] method = "halving"`) and the plan they
//! make for a number of runs; the decisions on the runs themselves are
//! [`crate::schedule::halving`]'s.

use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::config::Choice;
use crate::experiment::Selection;

/// Default promotion rate: the top third of each rung goes on.
pub const DEFAULT_ETA: u32 = 3;

/// The rules of a halving sweep as `[sweep]` gives them, before the number of runs is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    eta: Option<u32>,
    rung: Option<Budget>,
    budget: Option<Budget>,
    metric: Option<Selection>,
}

impl Rules {
    /// Takes one of `eta`, `rung`, `budget`, `metric` from `[sweep]`.
    pub fn set(&mut self, key: &str, value: &toml_edit::Value) -> Result<(), String> {
        let duration = |value: &toml_edit::Value| -> Result<Budget, String> {
            let text = value
                .as_str()
                .ok_or_else(|| format!("sweep.{key}: a duration like \"10m\""))?;
            Budget::parse(text).map_err(|problem| format!("sweep.{key} = {problem}"))
        };
        match key {
            "eta" => {
                let eta = value.as_integer().filter(|&n| (2..=10).contains(&n));
                self.eta = Some(eta.ok_or_else(|| "sweep.eta: a whole number from 2 to 10".to_string())? as u32);
            }
            "rung" => self.rung = Some(duration(value)?),
            "budget" => self.budget = Some(duration(value)?),
            "metric" => {
                let name = value.as_str().unwrap_or_default();
                let metric = Selection::from_name(name)
                    .ok_or_else(|| format!("sweep.metric = '{name}' is not one of: {}", Selection::NAMES.join(", ")))?;
                self.metric = Some(metric);
            }
            _ => return Err(format!("sweep.{key}: not a halving setting")),
        }
        Ok(())
    }

    /// Whether any halving setting was given.
    pub fn is_set(&self) -> bool {
        *self != Rules::default()
    }

    /// The plan for `runs` configurations: `floor(log_eta(runs))` rungs above the first, each
    /// `eta` times the one below. The first rung is `rung`, or what makes the whole sweep fit
    /// `budget` (every rung costs about the same: fewer runs, each longer). Runs are ranked by
    /// legacy Dice unless `metric` says otherwise: at the first rungs a network is young, and
    /// the lesion-wise Dice of its raw predictions counts its scattered false positives more
    /// than its segmentation (on real scans it fell from epoch to epoch while legacy Dice rose).
    pub fn plan(&self, runs: usize) -> Result<Halving, String> {
        let eta = self.eta.unwrap_or(DEFAULT_ETA);
        let mut levels = 0u32;
        while (eta as usize).pow(levels + 1) <= runs {
            levels += 1;
        }
        if levels == 0 {
            return Err(format!(
                "a halving sweep of {runs} runs with eta = {eta} has nothing to halve: give it at least {eta} runs"
            ));
        }
        // Time per run over all rungs, in units of the first rung's budget: rung k adds
        // (eta^k - eta^(k-1)) to each of runs / eta^k runs.
        let units = 1.0 + f64::from(levels) * f64::from(eta - 1) / f64::from(eta);
        let first = match (self.rung, self.budget) {
            (Some(rung), _) => rung.seconds(),
            (None, Some(total)) => (total.seconds() as f64 / (runs as f64 * units)).floor() as u64,
            (None, None) => {
                return Err(
                    "a halving sweep needs sweep.rung (the first rung's time per run, like \"10m\") or \
                     sweep.budget (the whole sweep's, like \"8h\")"
                        .to_string(),
                );
            }
        };
        if self.rung.is_none() && first < 60 {
            return Err(format!(
                "sweep.budget = '{}' leaves {}s per run at the first rung: give at least a minute a run ({} runs)",
                self.budget.map_or_else(String::new, |b| b.to_string()),
                first,
                runs
            ));
        }
        let rungs: Vec<u64> = (0..=levels).map(|k| first * u64::from(eta).pow(k)).collect();
        Ok(Halving {
            eta,
            rungs,
            budget: self.budget.map(Budget::seconds),
            metric: self.metric.unwrap_or(Selection::Legacy).name().to_string(),
        })
    }
}

/// A halving sweep's plan, recorded in each of its runs' `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halving {
    pub eta: u32,
    /// Each rung's time per run, cumulative (seconds): the run stops at `rungs[k]` in rung k.
    pub rungs: Vec<u64>,
    /// The whole sweep's budget in seconds of training, over all its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// `lesion` or `legacy`: the Dice whose mean over ET, TC, WT ranks the runs.
    pub metric: String,
}

impl Halving {
    /// The top rung's time per run: the runs' `train.budget`.
    pub fn top(&self) -> Budget {
        Budget::from_seconds(self.rungs.last().copied().unwrap_or(0))
    }
}
