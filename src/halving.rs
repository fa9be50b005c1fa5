//! Successive-halving sweeps (`[sweep] method = "halving"`), asynchronous as ASHA does it.
//!
//! Every configuration starts with the first rung's time budget. A run that reaches the end
//! of its rung validates, checkpoints and stops; the supervisor then reads its score (the best
//! validation Dice so far, lesion-wise or legacy) and, as soon as the score is in the top
//! `1/eta` of the runs that have finished that rung, queues it to continue from its checkpoint
//! to the next rung (`eta` times the budget). Nobody waits for a whole rung: a run is promoted
//! the moment enough others have finished for it to rank. Once every run that entered a rung
//! has finished it, those left below the top `1/eta` are pruned. The top rung's budget is the
//! runs' `train.budget`, so each run's learning-rate schedule is planned for the top rung from
//! the start and a promoted run continues it rather than starting a new one.
//!
//! The rungs a run has reached and its scores live in its `rung.json`; a pruned run has a
//! `pruned.json` saying at which rung and why. [`decide`] is the pure decision on those
//! records; [`tick`] reads them from the run directories and carries the decisions out.

use std::path::Path;

use chrono::{DateTime, Utc};
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
                self.metric = Some(match name {
                    "lesion" => Selection::Lesion,
                    "legacy" => Selection::Legacy,
                    _ => return Err(format!("sweep.metric = '{name}' is not one of: lesion, legacy")),
                });
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

/// A run's place in its halving sweep (`rung.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungRecord {
    /// The rung it trains in (0: the first).
    pub rung: u32,
    /// Where that rung ends: seconds of the run's training in all.
    pub until_seconds: u64,
    /// Its score at the end of each rung it finished, in order.
    pub scores: Vec<f64>,
}

/// Why a run of a halving sweep stopped for good (`pruned.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruned {
    pub rung: u32,
    pub reason: String,
    pub time: DateTime<Utc>,
}

/// What the supervisor knows of one run of a halving sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub record: RungRecord,
    pub progress: Progress,
    /// Seconds it has trained.
    pub seconds: f64,
}

/// Where a member is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// Queued or training in its rung.
    Training,
    /// Stopped at the end of its rung with this score (best validation so far).
    AtRungEnd(Option<f64>),
    /// Trained its top rung to the end, or stopped early by early stopping.
    Finished,
    Pruned,
    /// Failed, stopped by hand or lost: out of the ranking.
    Out,
}

/// What to do with a member.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Its score at the end of `rung` is in: note it in `rung.json`.
    Record {
        id: String,
        rung: u32,
        score: f64,
    },
    /// Continue it to `rung` (from its checkpoint).
    Promote {
        id: String,
        rung: u32,
    },
    Prune {
        id: String,
        rung: u32,
        reason: String,
    },
}

/// The asynchronous successive-halving decisions for a sweep's members, as they stand.
pub fn decide(halving: &Halving, members: &[Member]) -> Vec<Decision> {
    let mut decisions = Vec::new();
    // Scores at each member's current rung end, recorded or about to be.
    let mut scores: Vec<Vec<f64>> = Vec::with_capacity(members.len());
    for member in members {
        let mut list = member.record.scores.clone();
        if let Progress::AtRungEnd(score) = member.progress
            && list.len() == member.record.rung as usize
        {
            // No validation at all counts as the worst score.
            let score = score.unwrap_or(0.0);
            decisions.push(Decision::Record {
                id: member.id.clone(),
                rung: member.record.rung,
                score,
            });
            list.push(score);
        }
        scores.push(list);
    }
    let mut spent: f64 = members.iter().map(|m| m.seconds).sum();
    let top_rung = halving.rungs.len().saturating_sub(1) as u32;
    // A rung is closed when nobody can enter or finish it any more: the rung below is closed,
    // no promotion into it is pending, and everyone who entered it has finished it.
    let mut below_closed = true;
    let mut promoted_into = false;
    for rung in 0..top_rung {
        let k = rung as usize;
        // Everyone that finished rung k, best first.
        let mut finished: Vec<(f64, usize)> = scores
            .iter()
            .enumerate()
            .filter(|(i, list)| list.len() > k && members[*i].progress != Progress::Out)
            .map(|(i, list)| (list[k], i))
            .collect();
        finished.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let promotable = finished.len() / halving.eta as usize;
        // Those still training in rung k (or queued for it) may yet finish it.
        let entered = members
            .iter()
            .filter(|m| m.record.rung >= rung && m.progress != Progress::Out)
            .count();
        let rung_closed = below_closed && !promoted_into && finished.len() == entered;
        promoted_into = false;
        let target = (entered / halving.eta as usize).max(1);
        for (place, &(score, i)) in finished.iter().enumerate() {
            let member = &members[i];
            let waiting = member.record.rung == rung && matches!(member.progress, Progress::AtRungEnd(_));
            if !waiting {
                continue;
            }
            let extra = (halving.rungs[k + 1] - halving.rungs[k]) as f64;
            let affordable = halving.budget.is_none_or(|budget| spent + extra <= budget as f64);
            if place < promotable && affordable {
                decisions.push(Decision::Promote {
                    id: member.id.clone(),
                    rung: rung + 1,
                });
                spent += extra;
                promoted_into = true;
            } else if !affordable {
                decisions.push(Decision::Prune {
                    id: member.id.clone(),
                    rung,
                    reason: format!(
                        "the sweep's budget ({}) cannot take rung {} ({} more)",
                        Budget::from_seconds(halving.budget.unwrap_or(0)),
                        rung + 1,
                        Budget::from_seconds(extra as u64)
                    ),
                });
            } else if rung_closed && place >= target {
                decisions.push(Decision::Prune {
                    id: member.id.clone(),
                    rung,
                    reason: format!(
                        "rung {rung}: {} Dice {score:.3} is not in the top {target} of {}",
                        halving.metric,
                        finished.len()
                    ),
                });
            }
        }
        below_closed = rung_closed;
    }
    decisions
}

/// The score that ranks a run: the mean over ET, TC and WT of its best validation, by the
/// sweep's metric (lesion-wise where the validation has it, else legacy).
pub fn score(run: &crate::runs::model::RunModel, metric: &str) -> Option<f64> {
    match (metric, run.best_lesion_dice) {
        ("lesion", Some(lesion)) => Some(lesion.mean()),
        _ => run.best.map(|(_, dice)| dice.mean()),
    }
}

/// Reads a run's `rung.json`.
pub fn read_record(run: &Path) -> Option<RungRecord> {
    serde_json::from_slice(&std::fs::read(run.join(RUNG_FILE)).ok()?).ok()
}

/// Reads a run's `pruned.json`.
pub fn read_pruned(run: &Path) -> Option<Pruned> {
    serde_json::from_slice(&std::fs::read(run.join(PRUNED_FILE)).ok()?).ok()
}

/// The run-directory files of halving sweeps.
pub const RUNG_FILE: &str = "rung.json";
pub const PRUNED_FILE: &str = "pruned.json";

/// One look at the workspace's halving sweeps: records the scores of runs that reached the
/// end of their rung, queues the promoted ones to continue, prunes the rest. Returns what it
/// did, a line each, for the supervisor's log.
pub fn tick(workspace: &crate::workspace::Workspace, queue: &crate::queue::Queue) -> anyhow::Result<Vec<String>> {
    use std::collections::BTreeMap;

    use crate::rundir::RunDir;

    let runs_dir = workspace.runs_dir();
    let Ok(entries) = std::fs::read_dir(&runs_dir) else {
        return Ok(Vec::new());
    };
    let mut sweeps: BTreeMap<String, (Halving, Vec<RunDir>)> = BTreeMap::new();
    for entry in entries.flatten() {
        let run = RunDir::open(entry.path());
        if let Some(tag) = run.read_sweep()
            && let Some(halving) = tag.halving
        {
            sweeps
                .entry(tag.sweep)
                .or_insert_with(|| (halving, Vec::new()))
                .1
                .push(run);
        }
    }
    if sweeps.is_empty() {
        return Ok(Vec::new());
    }
    let queued: Vec<String> = queue.read()?.entries.into_iter().map(|e| e.run).collect();
    let now = Utc::now();
    let mut said = Vec::new();
    for (sweep, (halving, runs)) in sweeps {
        let mut members = Vec::with_capacity(runs.len());
        for run in &runs {
            let id = run.id();
            let record = read_record(run.path()).unwrap_or(RungRecord {
                rung: 0,
                until_seconds: halving.rungs.first().copied().unwrap_or(0),
                scores: Vec::new(),
            });
            let mut model = crate::runs::model::RunModel::new(id.clone(), run.path());
            for line in std::fs::read_to_string(run.events()).unwrap_or_default().lines() {
                if let Ok(event) = crate::events::Event::from_line(line) {
                    model.apply(&event);
                }
            }
            // Launched again since it last finished (its new trainer has not said so yet).
            let relaunched = run
                .read_launch()
                .is_some_and(|launch| model.finished_at.is_some_and(|finished| launch.time > finished));
            let progress = if read_pruned(run.path()).is_some() {
                Progress::Pruned
            } else if queued.contains(&id) || relaunched {
                Progress::Training
            } else {
                use crate::events::Outcome;
                match &model.finished {
                    Some((Outcome::Stopped, Some(reason), _)) if reason.starts_with(RUNG_END) => {
                        Progress::AtRungEnd(score(&model, &halving.metric))
                    }
                    Some((Outcome::Completed | Outcome::EarlyStopped, ..)) => Progress::Finished,
                    Some((Outcome::Stopped | Outcome::Failed, ..)) => Progress::Out,
                    None => Progress::Training,
                }
            };
            members.push(Member {
                id,
                record,
                progress,
                seconds: model.elapsed(now).unwrap_or(0.0),
            });
        }
        for decision in decide(&halving, &members) {
            let member = |id: &str| members.iter().find(|m| m.id == id);
            match decision {
                Decision::Record { id, rung, score } => {
                    if let Some(m) = member(&id) {
                        let mut record = m.record.clone();
                        record.scores.push(score);
                        write_record(&runs_dir.join(&id), &record)?;
                        said.push(format!(
                            "{sweep}: {id} finished rung {rung} with {} Dice {score:.3}",
                            halving.metric
                        ));
                    }
                }
                Decision::Promote { id, rung } => {
                    if let Some(m) = member(&id) {
                        let run = RunDir::open(runs_dir.join(&id));
                        let mut record = read_record(run.path()).unwrap_or_else(|| m.record.clone());
                        record.rung = rung;
                        record.until_seconds = halving.rungs[rung as usize];
                        write_record(run.path(), &record)?;
                        let experiment = run.read_launch().map_or_else(|| run.experiment(), |l| l.experiment);
                        queue.add_resume(&run, experiment)?;
                        said.push(format!(
                            "{sweep}: {id} promoted to rung {rung} ({} in all)",
                            Budget::from_seconds(record.until_seconds)
                        ));
                    }
                }
                Decision::Prune { id, rung, reason } => {
                    let pruned = Pruned {
                        rung,
                        reason: reason.clone(),
                        time: now,
                    };
                    let dir = runs_dir.join(&id);
                    crate::rundir::write_json(&dir, &dir.join(PRUNED_FILE), &pruned)?;
                    said.push(format!("{sweep}: {id} pruned: {reason}"));
                }
            }
        }
    }
    Ok(said)
}

/// Writes a run's `rung.json`.
pub fn write_record(run: &Path, record: &RungRecord) -> std::io::Result<()> {
    crate::rundir::write_json(run, &run.join(RUNG_FILE), record)
}

/// How a run's `run_finished` reason starts when it stopped at the end of its rung.
pub const RUNG_END: &str = "halving: end of rung";

#[cfg(test)]
mod tests {
    use super::*;

    fn halving(eta: u32, rungs: &[u64], budget: Option<u64>) -> Halving {
        Halving {
            eta,
            rungs: rungs.to_vec(),
            budget,
            metric: "legacy".into(),
        }
    }

    fn member(id: &str, rung: u32, scores: &[f64], progress: Progress) -> Member {
        Member {
            id: id.into(),
            record: RungRecord {
                rung,
                until_seconds: 0,
                scores: scores.to_vec(),
            },
            progress,
            seconds: 0.0,
        }
    }

    #[test]
    fn the_plan_has_log_eta_rungs_and_fits_the_budget() {
        let mut rules = Rules::default();
        rules.set("budget", &toml_edit::Value::from("8h")).expect("a duration");
        rules.set("eta", &toml_edit::Value::from(2)).expect("eta");
        let plan = rules.plan(8).expect("a plan");
        // 8 runs, eta 2: rungs for 8, 4, 2, 1; each run-rung costs about the same.
        assert_eq!(plan.rungs.len(), 4);
        assert_eq!(plan.metric, "legacy");
        let mut lesion = rules.clone();
        lesion
            .set("metric", &toml_edit::Value::from("lesion"))
            .expect("a metric");
        assert_eq!(lesion.plan(8).expect("a plan").metric, "lesion");
        let first = plan.rungs[0];
        assert_eq!(plan.rungs, [first, 2 * first, 4 * first, 8 * first]);
        let total = 8 * first + 4 * first + 2 * (2 * first) + (4 * first);
        assert!(total <= 8 * 3600, "{total}");
        assert!(total > 7 * 3600, "{total}: the budget is nearly used");
        // Too few runs, or no time given: refused.
        assert!(Rules::default().plan(8).expect_err("no time").contains("sweep.rung"));
        let mut small = Rules::default();
        small.set("rung", &toml_edit::Value::from("10m")).expect("rung");
        assert!(small.plan(2).expect_err("2 < 3").contains("nothing to halve"));
        assert!(small.set("eta", &toml_edit::Value::from(1)).is_err());
        assert!(small.set("metric", &toml_edit::Value::from("hd95")).is_err());
        assert!(
            small
                .set("rung", &toml_edit::Value::from("-5m"))
                .expect_err("negative")
                .contains("not a duration")
        );
    }

    #[test]
    fn runs_are_promoted_as_soon_as_they_rank_in_the_top_third_and_the_rest_pruned_once_the_rung_closes() {
        let plan = halving(3, &[600, 1800], None);
        // 6 runs: two have finished rung 0.
        let mut members = vec![
            member("a", 0, &[], Progress::AtRungEnd(Some(0.70))),
            member("b", 0, &[], Progress::AtRungEnd(Some(0.50))),
            member("c", 0, &[], Progress::Training),
            member("d", 0, &[], Progress::Training),
            member("e", 0, &[], Progress::Training),
            member("f", 0, &[], Progress::Training),
        ];
        let decisions = decide(&plan, &members);
        // Both scores recorded; 2 finished: floor(2/3) = 0 may go on yet; nobody is pruned.
        assert_eq!(
            decisions,
            [
                Decision::Record {
                    id: "a".into(),
                    rung: 0,
                    score: 0.70
                },
                Decision::Record {
                    id: "b".into(),
                    rung: 0,
                    score: 0.50
                },
            ]
        );
        // A third finishes, lower: a is in the top third of 3 and goes on at once.
        members[0].record.scores = vec![0.70];
        members[1].record.scores = vec![0.50];
        members[2].progress = Progress::AtRungEnd(Some(0.40));
        let decisions = decide(&plan, &members);
        assert!(
            decisions.contains(&Decision::Promote {
                id: "a".into(),
                rung: 1
            }),
            "{decisions:?}"
        );
        assert!(
            !decisions.iter().any(|d| matches!(d, Decision::Prune { .. })),
            "{decisions:?}"
        );
        // The rest finish; a is training in rung 1. The rung closes: the top 2 of 6 go on
        // (a already did, then the best waiting), the other four are pruned.
        members[0].record.rung = 1;
        members[0].progress = Progress::Training;
        members[2].record.scores = vec![0.40];
        members[3].progress = Progress::AtRungEnd(Some(0.90));
        members[4].progress = Progress::AtRungEnd(Some(0.30));
        members[5].progress = Progress::AtRungEnd(None);
        let decisions = decide(&plan, &members);
        let promoted: Vec<&str> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Promote { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(promoted, ["d"]);
        let pruned: Vec<&str> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Prune { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(pruned, ["b", "c", "e", "f"]);
        assert!(decisions.iter().any(|d| matches!(d,
            Decision::Prune { id, reason, .. } if id == "b" && reason == "rung 0: legacy Dice 0.500 is not in the top 2 of 6")));
    }

    #[test]
    fn a_higher_rung_closes_only_after_the_rungs_below() {
        // 8 runs, eta 2: two finished rung 0 early and went on; one of them finished rung 1.
        let plan = halving(2, &[100, 200, 400], None);
        let mut members = vec![
            member("a", 1, &[0.5, 0.6], Progress::AtRungEnd(Some(0.6))),
            member("b", 1, &[0.4], Progress::Training),
            member("c", 0, &[0.1], Progress::AtRungEnd(Some(0.1))),
        ];
        members.extend((0..5).map(|i| member(&format!("q{i}"), 0, &[], Progress::Training)));
        let decisions = decide(&plan, &members);
        // Rung 1 has one finisher of the two that entered, and more may enter from rung 0:
        // nobody is pruned at rung 1, nor at rung 0 (still open).
        assert!(
            !decisions.iter().any(|d| matches!(d, Decision::Prune { .. })),
            "{decisions:?}"
        );
        // Rung 1 would look closed once b finishes below a, but rung 0 is still open.
        members[1].progress = Progress::AtRungEnd(Some(0.3));
        members[1].record.scores = vec![0.4, 0.3];
        let decisions = decide(&plan, &members);
        assert!(
            !decisions
                .iter()
                .any(|d| matches!(d, Decision::Prune { id, .. } if id == "b")),
            "{decisions:?}"
        );
        // Everyone finishes rung 0: it closes, the best of them goes on; rung 1 then waits for it.
        for (i, m) in members.iter_mut().enumerate().skip(3) {
            m.record.scores = vec![0.05 * i as f64];
            m.progress = Progress::AtRungEnd(Some(0.05 * i as f64));
        }
        let decisions = decide(&plan, &members);
        assert!(
            decisions
                .iter()
                .any(|d| matches!(d, Decision::Promote { id, rung: 1 } if id == "q4")),
            "{decisions:?}"
        );
        assert!(
            !decisions
                .iter()
                .any(|d| matches!(d, Decision::Prune { id, .. } if id == "b")),
            "{decisions:?}"
        );
    }

    #[test]
    fn a_failed_run_leaves_the_ranking_and_the_total_budget_stops_promotions() {
        let plan = halving(2, &[600, 1200], Some(3 * 600 + 500));
        let mut members = vec![
            member("a", 0, &[0.8], Progress::AtRungEnd(Some(0.8))),
            member("b", 0, &[0.6], Progress::AtRungEnd(Some(0.6))),
            member("c", 0, &[], Progress::Out),
        ];
        for m in &mut members {
            m.seconds = 600.0;
        }
        // 1800 s spent; rung 1 costs 600 more, the budget allows 500: nobody goes on.
        let decisions = decide(&plan, &members);
        assert!(
            decisions
                .iter()
                .all(|d| matches!(d, Decision::Prune { reason, .. } if reason.contains("budget"))),
            "{decisions:?}"
        );
        assert_eq!(decisions.len(), 2);
        // With room, the better of the two that count goes on; the failed run is not waited for.
        let roomy = halving(2, &[600, 1200], None);
        let decisions = decide(&roomy, &members);
        assert_eq!(
            decisions,
            [
                Decision::Promote {
                    id: "a".into(),
                    rung: 1
                },
                Decision::Prune {
                    id: "b".into(),
                    rung: 0,
                    reason: "rung 0: legacy Dice 0.600 is not in the top 1 of 2".into()
                }
            ]
        );
    }

    /// Runs on disk as the trainer and the supervisor leave them, driven through [`tick`].
    #[test]
    fn tick_records_promotes_and_prunes_and_never_counts_a_relaunched_run_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let workspace = crate::workspace::Workspace::new(dir.path());
        let runs = workspace.runs_dir();
        let plan = halving(3, &[10, 30], None);
        for (i, dice) in [0.5, 0.7, 0.3].into_iter().enumerate() {
            let run = runs.join(format!("20261204-070000-s-{}", i + 1));
            std::fs::create_dir_all(&run).expect("run dir");
            let tag = crate::experiment::sweep::SweepTag {
                sweep: "20261204-070000-s".into(),
                index: i + 1,
                of: 3,
                values: Default::default(),
                halving: Some(plan.clone()),
            };
            std::fs::write(run.join("sweep.json"), serde_json::to_vec(&tag).expect("json")).expect("sweep.json");
            write_record(
                &run,
                &RungRecord {
                    rung: 0,
                    until_seconds: 10,
                    scores: vec![],
                },
            )
            .expect("rung.json");
            let events = format!(
                "{{\"event\":\"run_started\",\"time\":\"2026-12-04T07:00:00Z\",\"schema\":1,\"pid\":1,\"host\":\"h\",\"name\":\"s\",\"experiment_hash\":\"x\",\"epochs\":9,\"steps_per_epoch\":4,\"parameters\":1,\"threads\":1,\"libtorch\":\"x\"}}\n\
                 {{\"event\":\"validation\",\"time\":\"2026-12-04T07:00:05Z\",\"epoch\":1,\"dice\":{{\"et\":{dice},\"tc\":{dice},\"wt\":{dice}}},\"seed_dice\":0.1,\"cases\":[],\"seconds\":1.0}}\n\
                 {{\"event\":\"run_finished\",\"time\":\"2026-12-04T07:00:10Z\",\"outcome\":\"stopped\",\"reason\":\"{RUNG_END} 0 (10s)\",\"seconds\":10.0}}\n"
            );
            std::fs::write(run.join("events.jsonl"), events).expect("events");
        }
        let queue = crate::queue::Queue::new(&workspace);
        let said = tick(&workspace, &queue).expect("a tick");
        assert!(
            said.iter().any(|l| l.ends_with("s-2 promoted to rung 1 (30s in all)")),
            "{said:?}"
        );
        assert_eq!(
            said.iter().filter(|l| l.contains("pruned: rung 0")).count(),
            2,
            "{said:?}"
        );
        let scores = |id: &str| read_record(&runs.join(id)).expect("rung.json").scores;
        assert_eq!(scores("20261204-070000-s-2").len(), 1);
        assert!((scores("20261204-070000-s-2")[0] - 0.7).abs() < 1e-9);
        // The supervisor starts it: out of the queue, launched, no run_started yet.
        queue.remove("20261204-070000-s-2").expect("in the queue");
        let launch = format!(
            "{{\"host\":\"h\",\"time\":\"{}\",\"experiment\":\"s.toml\"}}",
            Utc::now().to_rfc3339()
        );
        std::fs::write(runs.join("20261204-070000-s-2/launch.json"), launch).expect("launch.json");
        let said = tick(&workspace, &queue).expect("a tick");
        assert!(
            said.is_empty(),
            "a relaunched run was taken for one at its rung end: {said:?}"
        );
        assert_eq!(scores("20261204-070000-s-2").len(), 1);
    }
}
