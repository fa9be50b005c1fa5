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
//! `pruned.json` saying at which rung and why (both owned by [`crate::run`]). [`decide`] is the
//! pure decision on those records; the supervisor reads them and carries the decisions out.

use crate::budget::Budget;
pub use crate::experiment::halving::{DEFAULT_ETA, Halving, Rules};
use crate::run::RungRecord;
use crate::run::events::RegionScores;

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
    let scores = rung_scores(members, &mut decisions);
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

/// Each member's scores at the ends of the rungs it finished, with the one it has just
/// reached (and a decision to record it) where it is not recorded yet.
fn rung_scores(members: &[Member], decisions: &mut Vec<Decision>) -> Vec<Vec<f64>> {
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
    scores
}

/// The score that ranks a run: the mean over ET, TC and WT of its best validation, by the
/// sweep's metric (lesion-wise where the validation has it, else legacy).
pub fn score(lesion: Option<RegionScores>, legacy: Option<RegionScores>, metric: &str) -> Option<f64> {
    match (metric, lesion) {
        ("lesion", Some(lesion)) => Some(lesion.mean()),
        _ => legacy.map(|dice| dice.mean()),
    }
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
}
