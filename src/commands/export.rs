//! `segtop export RUN... --csv|--json`: runs' metric histories, one row per epoch, for
//! spreadsheets, plots and papers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;

use segtop::run::RunDir;
use segtop::run::events::{BratsScores, Event, EventTail, RegionScores};
use segtop::run::run_directories;
use segtop::workspace::Workspace;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Runs: ids, parts of ids only one run has, or run directories
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<String>,
    /// Comma-separated values, one row per run and epoch
    #[arg(long, conflicts_with = "json", required_unless_present = "json")]
    pub csv: bool,
    /// One JSON object per run with its epochs
    #[arg(long)]
    pub json: bool,
    /// Write here instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

/// One epoch of one run: its training means and, when it was validated, the scores.
#[derive(Debug, Default, Clone, Serialize)]
pub struct EpochRow {
    pub epoch: u32,
    pub loss: Option<f64>,
    pub loss_parts: BTreeMap<String, f64>,
    pub lr: Option<f64>,
    pub patches_per_s: Option<f64>,
    pub seconds: Option<f64>,
    pub dice: Option<RegionScores>,
    pub seed_dice: Option<f64>,
    pub hd95: Option<RegionScores>,
    /// The validation's official lesion-wise Dice, when it reported one.
    pub lesion_dice: Option<RegionScores>,
    /// On the evaluated epoch's row, the latest end-of-run evaluation: lesion-wise and
    /// legacy Dice of the raw predictions, and after the learned post-processing.
    pub eval_lesion_dice: Option<RegionScores>,
    pub eval_legacy_dice: Option<RegionScores>,
    pub pp_lesion_dice: Option<RegionScores>,
    pub pp_legacy_dice: Option<RegionScores>,
}

#[derive(Serialize)]
struct RunHistory {
    run: String,
    epochs: Vec<EpochRow>,
}

pub fn export(workspace: &Workspace, args: &ExportArgs) -> anyhow::Result<()> {
    // Only the named runs' event files are read, each once.
    let runs = run_directories(&workspace.runs_dir());
    let mut histories = Vec::new();
    for query in &args.runs {
        let id = segtop::run::find_id(runs.keys().map(String::as_str), query)?;
        histories.push(RunHistory {
            run: id.to_string(),
            epochs: history(&RunDir::open(&runs[id]))?,
        });
    }
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&histories)?;
        text.push('\n');
        text
    } else {
        csv(&histories)
    };
    match &args.out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Epoch rows from a run's events; a resumed run's repeated epochs keep their latest values.
pub fn history(run: &RunDir) -> anyhow::Result<Vec<EpochRow>> {
    let (events, warnings) = EventTail::new(run.events())
        .poll()
        .with_context(|| format!("cannot read {}", run.events().display()))?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let mut rows: BTreeMap<u32, EpochRow> = BTreeMap::new();
    // The latest evaluation counts (`segtop postprocess` records another one).
    let mut evaluation = None;
    for event in events {
        match event {
            Event::EpochEnd {
                epoch,
                loss,
                loss_parts,
                lr,
                patches_per_s,
                seconds,
                ..
            } => {
                let row = rows.entry(epoch).or_default();
                row.loss = Some(loss);
                row.loss_parts = loss_parts;
                row.lr = Some(lr);
                row.patches_per_s = Some(patches_per_s);
                row.seconds = Some(seconds);
            }
            Event::Validation {
                epoch,
                dice,
                hd95,
                seed_dice,
                lesion_dice,
                ..
            } => {
                let row = rows.entry(epoch).or_default();
                row.dice = Some(dice);
                row.hd95 = hd95;
                row.seed_dice = Some(seed_dice);
                row.lesion_dice = lesion_dice;
            }
            Event::Evaluation {
                epoch,
                mean,
                postprocessed,
                ..
            } => evaluation = Some((epoch, mean, postprocessed)),
            _ => {}
        }
    }
    if let Some((epoch, raw, postprocessed)) = evaluation {
        let row = rows.entry(epoch).or_default();
        row.eval_lesion_dice = Some(BratsScores::lesion_dice(&raw));
        row.eval_legacy_dice = Some(BratsScores::legacy_dice(&raw));
        row.pp_lesion_dice = postprocessed.as_deref().map(BratsScores::lesion_dice);
        row.pp_legacy_dice = postprocessed.as_deref().map(BratsScores::legacy_dice);
    }
    Ok(rows.into_iter().map(|(epoch, row)| EpochRow { epoch, ..row }).collect())
}

/// A row's per-region score columns after HD95, named as the CSV header names them (with
/// `_et`, `_tc`, `_wt`): validation lesion-wise Dice, then the end-of-run evaluation's raw
/// and post-processed Dice.
fn score_columns(row: &EpochRow) -> [(&'static str, Option<RegionScores>); 5] {
    [
        ("lesion_dice", row.lesion_dice),
        ("eval_lesion_dice", row.eval_lesion_dice),
        ("eval_legacy_dice", row.eval_legacy_dice),
        ("pp_lesion_dice", row.pp_lesion_dice),
        ("pp_legacy_dice", row.pp_legacy_dice),
    ]
}

fn csv(histories: &[RunHistory]) -> String {
    let parts: BTreeSet<&str> = histories
        .iter()
        .flat_map(|h| h.epochs.iter().flat_map(|r| r.loss_parts.keys().map(String::as_str)))
        .collect();
    let mut out = String::from("run,epoch,loss");
    for part in &parts {
        let _ = write!(out, ",loss_{part}");
    }
    out.push_str(",lr,patches_per_s,seconds,dice_et,dice_tc,dice_wt,seed_dice,hd95_et,hd95_tc,hd95_wt");
    for (scores, _) in score_columns(&EpochRow::default()) {
        for region in ["et", "tc", "wt"] {
            let _ = write!(out, ",{scores}_{region}");
        }
    }
    out.push('\n');
    let value = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for history in histories {
        for row in &history.epochs {
            let _ = write!(out, "{},{},{}", history.run, row.epoch, value(row.loss));
            for part in &parts {
                let _ = write!(out, ",{}", value(row.loss_parts.get(*part).copied()));
            }
            let scores =
                |s: Option<RegionScores>| s.map_or(",,".to_string(), |s| format!("{},{},{}", s.et, s.tc, s.wt));
            let _ = write!(
                out,
                ",{},{},{},{},{},{}",
                value(row.lr),
                value(row.patches_per_s),
                value(row.seconds),
                scores(row.dice),
                value(row.seed_dice),
                scores(row.hd95)
            );
            for (_, column) in score_columns(row) {
                let _ = write!(out, ",{}", scores(column));
            }
            out.push('\n');
        }
    }
    out
}
