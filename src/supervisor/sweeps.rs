//! The supervisor's side of halving sweeps: it reads each sweep's runs through the read model
//! (their summaries, then what their events gained since), asks [`halving::decide`] what to do,
//! and carries that out: scores into `rung.json`, promoted runs back into the queue, the rest
//! marked with `pruned.json`.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::budget::Budget;
use crate::run::events::Outcome;
use crate::run::{Pruned, RunDir, RungRecord};
use crate::runs::model::RunModel;
use crate::schedule::halving::{self, Decision, Halving, Member, Progress};
use crate::schedule::queue::Queue;
use crate::workspace::Workspace;

/// One look at the workspace's halving sweeps: records the scores of runs that reached the
/// end of their rung, queues the promoted ones to continue, prunes the rest. Returns what it
/// did, a line each, for the supervisor's log.
pub fn tick(workspace: &Workspace, queue: &Queue) -> anyhow::Result<Vec<String>> {
    let sweeps = halving_sweeps(workspace);
    if sweeps.is_empty() {
        return Ok(Vec::new());
    }
    let queued: Vec<String> = queue.read()?.entries.into_iter().map(|e| e.run).collect();
    let mut said = Vec::new();
    for (sweep, (halving, runs)) in sweeps {
        let members: Vec<Member> = runs.iter().map(|run| member(run, &halving, &queued)).collect();
        for decision in halving::decide(&halving, &members) {
            if let Some(line) = carry_out(decision, &members, &halving, workspace, queue)? {
                said.push(format!("{sweep}: {line}"));
            }
        }
    }
    Ok(said)
}

/// The runs of each halving sweep in the workspace, by sweep id, with the sweep's plan.
fn halving_sweeps(workspace: &Workspace) -> BTreeMap<String, (Halving, Vec<RunDir>)> {
    let mut sweeps: BTreeMap<String, (Halving, Vec<RunDir>)> = BTreeMap::new();
    for dir in crate::run::run_directories(&workspace.runs_dir()).into_values() {
        let run = RunDir::open(dir);
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
    sweeps
}

/// What the supervisor knows of `run`: its rung record, and where it is, from its summary.
fn member(run: &RunDir, halving: &Halving, queued: &[String]) -> Member {
    let id = run.id();
    let record = run.read_rung().unwrap_or(RungRecord {
        rung: 0,
        until_seconds: halving.rungs.first().copied().unwrap_or(0),
        scores: Vec::new(),
    });
    let model = read_model(run);
    // Launched again since it last finished (its new trainer has not said so yet).
    let relaunched = run
        .read_launch()
        .is_some_and(|launch| model.finished_at.is_some_and(|finished| launch.time > finished));
    let progress = if run.read_pruned().is_some() {
        Progress::Pruned
    } else if queued.contains(&id) || relaunched {
        Progress::Training
    } else {
        match &model.finished {
            Some((Outcome::Stopped, Some(reason), _)) if reason.starts_with(halving::RUNG_END) => {
                Progress::AtRungEnd(halving::score(
                    model.best_lesion_dice,
                    model.best.map(|(_, dice)| dice),
                    &halving.metric,
                ))
            }
            Some((Outcome::Completed | Outcome::EarlyStopped, ..)) => Progress::Finished,
            Some((Outcome::Stopped | Outcome::Failed, ..)) => Progress::Out,
            None => Progress::Training,
        }
    };
    Member {
        id,
        record,
        progress,
        seconds: model.elapsed(Utc::now()).unwrap_or(0.0),
    }
}

/// The run as lists show it: its summary when it has one, plus the events written since.
fn read_model(run: &RunDir) -> RunModel {
    let config = crate::runs::summary::frozen_config(run);
    crate::runs::summary::fold(&run.id(), run.path(), &config, false).model
}

/// Carries one decision out; the line that says what it did.
fn carry_out(
    decision: Decision,
    members: &[Member],
    halving: &Halving,
    workspace: &Workspace,
    queue: &Queue,
) -> anyhow::Result<Option<String>> {
    let member = |id: &str| members.iter().find(|m| m.id == id);
    let run = |id: &str| RunDir::open(workspace.runs_dir().join(id));
    Ok(match decision {
        Decision::Record { id, rung, score } => member(&id)
            .map(|m| {
                let mut record = m.record.clone();
                record.scores.push(score);
                run(&id).write_rung(&record)?;
                anyhow::Ok(format!(
                    "{id} finished rung {rung} with {} Dice {score:.3}",
                    halving.metric
                ))
            })
            .transpose()?,
        Decision::Promote { id, rung } => member(&id)
            .map(|m| {
                let run = run(&id);
                let mut record = run.read_rung().unwrap_or_else(|| m.record.clone());
                record.rung = rung;
                record.until_seconds = halving.rungs[rung as usize];
                run.write_rung(&record)?;
                let experiment = run.read_launch().map_or_else(|| run.experiment(), |l| l.experiment);
                queue.add_resume(&run, experiment)?;
                anyhow::Ok(format!(
                    "{id} promoted to rung {rung} ({} in all)",
                    Budget::from_seconds(record.until_seconds)
                ))
            })
            .transpose()?,
        Decision::Prune { id, rung, reason } => {
            let pruned = Pruned {
                rung,
                reason: reason.clone(),
                time: Utc::now(),
            };
            run(&id).write_pruned(&pruned)?;
            Some(format!("{id} pruned: {reason}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::halving::RUNG_END;

    fn halving(eta: u32, rungs: &[u64], budget: Option<u64>) -> Halving {
        Halving {
            eta,
            rungs: rungs.to_vec(),
            budget,
            metric: "legacy".into(),
        }
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
            RunDir::open(&run)
                .write_rung(&RungRecord {
                    rung: 0,
                    until_seconds: 10,
                    scores: vec![],
                })
                .expect("rung.json");
            let events = format!(
                "{{\"event\":\"run_started\",\"time\":\"2026-12-04T07:00:00Z\",\"schema\":1,\"pid\":1,\"host\":\"h\",\"name\":\"s\",\"experiment_hash\":\"x\",\"epochs\":9,\"steps_per_epoch\":4,\"parameters\":1,\"threads\":1,\"libtorch\":\"x\"}}\n\
                 {{\"event\":\"validation\",\"time\":\"2026-12-04T07:00:05Z\",\"epoch\":1,\"dice\":{{\"et\":{dice},\"tc\":{dice},\"wt\":{dice}}},\"seed_dice\":0.1,\"cases\":[],\"seconds\":1.0}}\n\
                 {{\"event\":\"run_finished\",\"time\":\"2026-12-04T07:00:10Z\",\"outcome\":\"stopped\",\"reason\":\"{RUNG_END} 0 (10s)\",\"seconds\":10.0}}\n"
            );
            std::fs::write(run.join("events.jsonl"), events).expect("events");
        }
        let queue = crate::schedule::queue::Queue::new(&workspace);
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
        let scores = |id: &str| RunDir::open(runs.join(id)).read_rung().expect("rung.json").scores;
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
