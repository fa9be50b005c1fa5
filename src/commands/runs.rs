//! `segtop runs`: the runs of the workspace for scripts and quick looks, from the same
//! facts the dashboard uses (event files, launch records, live processes).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use segtop::run::events::{BratsScores, RegionScores};
use segtop::run::process::Halt;
use segtop::run::{RunDir, find_id};
use segtop::runs::format_duration;
use segtop::runs::lists::{FoldGroup, RunSort, fold_groups, sort_runs};
use segtop::runs::model::{EvaluationSummary, RunModel, RunState};
use segtop::runs::watch::snapshot;
use segtop::workspace::Workspace;

#[derive(clap::Args)]
pub struct RunsArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
    /// Order of the list [default: started; dice with --sweep]
    #[arg(long, value_enum)]
    pub sort: Option<RunSort>,
    /// Only runs in this state: queued, paused, pending, starting, running, done, early-stop, stopped, failed or lost
    #[arg(long, value_parser = parse_state)]
    pub state: Option<RunState>,
    /// Only the runs of this sweep (its id, or a part only it has), with the values each varies
    #[arg(long, value_name = "ID")]
    pub sweep: Option<String>,
}

fn parse_state(text: &str) -> Result<RunState, String> {
    RunState::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = RunState::ALL.iter().map(|s| s.name()).collect();
        format!("'{text}' is not one of: {}", names.join(", "))
    })
}

/// One run as `--json` prints it.
#[derive(Serialize)]
struct RunRecord<'a> {
    id: &'a str,
    name: &'a str,
    state: &'static str,
    epoch: u32,
    /// Epochs to train, once the trainer has said (null while queued or starting).
    epochs: Option<u32>,
    best_epoch: Option<u32>,
    best_dice: Option<RegionScores>,
    patches_per_s: Option<f64>,
    elapsed_s: Option<f64>,
    /// Seconds left: of its time budget when it has one, else at its pace so far.
    eta_s: Option<f64>,
    /// Its time budget (`train.budget`) in seconds.
    budget_s: Option<f64>,
    /// Its cross-validation fold and how many there are (`data.fold`, `data.folds`).
    fold: Option<[u32; 2]>,
    pid: Option<u32>,
    host: Option<&'a str>,
    peak_rss_mb: Option<f64>,
    error: Option<String>,
    /// Place in the queue, while queued; why it waits (in the queue, or in Slurm's).
    queue_place: Option<usize>,
    waiting: Option<String>,
    /// Its Slurm job as last seen, for runs submitted to Slurm.
    job: Option<&'a segtop::schedule::slurm::JobStatus>,
    sweep: Option<&'a segtop::experiment::sweep::SweepTag>,
    /// The latest end-of-run evaluation of the best weights, when there is one.
    evaluation: Option<EvaluationRecord<'a>>,
    path: String,
}

/// The end-of-run evaluation as `--json` prints it: per region the lesion-wise and legacy
/// Dice, raw and after the learned post-processing.
#[derive(Serialize)]
struct EvaluationRecord<'a> {
    epoch: u32,
    challenge: &'a str,
    tta: bool,
    /// The post-processing in words.
    postprocess: Option<&'a str>,
    raw: DiceRecord,
    postprocessed: Option<DiceRecord>,
}

#[derive(Serialize)]
struct DiceRecord {
    lesion_dice: RegionScores,
    legacy_dice: RegionScores,
}

impl DiceRecord {
    fn of(regions: &[BratsScores]) -> DiceRecord {
        DiceRecord {
            lesion_dice: BratsScores::lesion_dice(regions),
            legacy_dice: BratsScores::legacy_dice(regions),
        }
    }
}

impl<'a> EvaluationRecord<'a> {
    fn of(evaluation: &'a EvaluationSummary) -> EvaluationRecord<'a> {
        EvaluationRecord {
            epoch: evaluation.epoch,
            challenge: &evaluation.challenge,
            tta: evaluation.tta,
            postprocess: evaluation.postprocess.as_deref(),
            raw: DiceRecord::of(&evaluation.mean),
            postprocessed: evaluation.postprocessed.as_deref().map(DiceRecord::of),
        }
    }
}

pub fn runs(workspace: &Workspace, args: &RunsArgs) -> anyhow::Result<()> {
    let models = snapshot(workspace);
    let now = chrono::Utc::now();
    let sweep = match &args.sweep {
        Some(query) => {
            let mut ids: Vec<&str> = models
                .values()
                .filter_map(|r| r.observed.sweep.as_ref().map(|t| t.sweep.as_str()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Some(
                find_id(ids.iter().copied(), query)
                    .context("among the sweeps")?
                    .to_string(),
            )
        }
        None => None,
    };
    let mut runs: Vec<&RunModel> = models
        .values()
        .filter(|r| args.state.is_none_or(|s| r.state() == s))
        .filter(|r| {
            sweep
                .as_ref()
                .is_none_or(|id| r.observed.sweep.as_ref().is_some_and(|t| t.sweep == *id))
        })
        .collect();
    let default_sort = if sweep.is_some() {
        RunSort::Dice
    } else {
        RunSort::Started
    };
    sort_runs(&mut runs, args.sort.unwrap_or(default_sort));
    if args.json {
        let records: Vec<RunRecord> = runs
            .iter()
            .map(|r| RunRecord {
                id: &r.id,
                name: &r.name,
                state: r.state().name(),
                epoch: r.epoch,
                epochs: (r.epochs > 0).then_some(r.epochs),
                best_epoch: r.best.map(|(e, _)| e),
                best_dice: r.best.map(|(_, d)| d),
                patches_per_s: r.patches_per_s(),
                elapsed_s: r.elapsed(now),
                eta_s: r.eta(now),
                budget_s: r.budget,
                fold: r.fold(),
                pid: r.pid,
                host: r.host.as_deref(),
                peak_rss_mb: r.peak_rss_mb,
                error: r.error(),
                queue_place: r.observed.queue.as_ref().map(|q| q.position),
                waiting: r.waiting(),
                job: r.observed.job.as_ref(),
                sweep: r.observed.sweep.as_ref(),
                evaluation: r.evaluation.as_ref().map(EvaluationRecord::of),
                path: r.dir.display().to_string(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!(
            "no runs{} in {}",
            args.state.map(|s| format!(" {}", s.name())).unwrap_or_default(),
            workspace.runs_dir().display()
        );
        return Ok(());
    }
    if let Some(id) = &sweep {
        println!("sweep {id}: {} runs", runs.len());
    }
    print!("{}", table(&runs, now, sweep.is_some(), terminal_columns()));
    print!("{}", folds_table(&fold_groups(&runs)));
    Ok(())
}

/// Per configuration run over cross-validation folds: how many folds have validated, and
/// their best validation Dice as mean ± standard deviation. Empty without fold runs.
fn folds_table(groups: &[FoldGroup]) -> String {
    if groups.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nover folds (best validation Dice, mean ± sd)\n");
    let width = groups.iter().map(|g| g.label.chars().count()).max().unwrap_or(0);
    let score = |mean: f64, sd: f64| {
        if mean.is_nan() {
            "        –".to_string()
        } else {
            format!("{mean:.3}±{sd:.3}")
        }
    };
    for group in groups {
        out.push_str(&format!(
            "  {:<width$}  {}/{} folds  ET {}  TC {}  WT {}\n",
            group.label,
            group.scored,
            group.folds,
            score(group.mean.et, group.spread.et),
            score(group.mean.tc, group.spread.tc),
            score(group.mean.wt, group.spread.wt),
        ));
    }
    out
}

/// The terminal's width when printing to one; 80 columns into a pipe or file.
fn terminal_columns() -> usize {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        crossterm::terminal::size().map_or(80, |(width, _)| usize::from(width))
    } else {
        80
    }
}

/// The runs as a table that fits 80 columns for the usual run names. When `columns` leave
/// room, an `LW WT` column adds the end-of-run evaluation's lesion-wise whole-tumour Dice
/// (post-processed when the run learned post-processing, else raw).
fn table(runs: &[&RunModel], now: chrono::DateTime<chrono::Utc>, values: bool, columns: usize) -> String {
    let width = runs.iter().map(|r| r.id.chars().count()).max().unwrap_or(3).max(3);
    // run, state, epoch, ET TC WT, p/s, left, and their separators.
    let base = width + 2 + 10 + 1 + 7 + 2 + 4 + 1 + 4 + 1 + 4 + 1 + 6 + 1 + 7;
    let lesion_wise = base + 6 <= columns;
    let lw_header = if lesion_wise {
        format!(" {:>5}", "LW WT")
    } else {
        String::new()
    };
    let mut out = format!(
        "{:<width$}  {:<10} {:>7}  {:>4} {:>4} {:>4}{lw_header} {:>6} {:>7}\n",
        "run", "state", "epoch", "ET", "TC", "WT", "p/s", "left"
    );
    let dash = "–".to_string();
    for run in runs {
        // As the dashboard shows it: a queued run's place, else how far it is.
        let epoch = match (&run.observed.queue, run.epochs) {
            (Some(place), _) => format!("#{}", place.position),
            (None, 0) => dash.clone(),
            (None, epochs) => format!("{}/{epochs}", run.epoch),
        };
        let dice = |pick: fn(&RegionScores) -> f64| run.best.map_or(dash.clone(), |(_, d)| format!("{:.2}", pick(&d)));
        let lw = if lesion_wise {
            let wt = run
                .evaluation
                .as_ref()
                .map(|e| BratsScores::lesion_dice(e.postprocessed.as_deref().unwrap_or(&e.mean)).wt);
            format!(" {:>5}", wt.map_or(dash.clone(), |wt| format!("{wt:.2}")))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<width$}  {:<10} {:>7}  {:>4} {:>4} {:>4}{lw} {:>6} {:>7}\n",
            run.id,
            run.state().name(),
            epoch,
            dice(|d| d.et),
            dice(|d| d.tc),
            dice(|d| d.wt),
            run.patches_per_s().map_or(dash.clone(), |p| format!("{p:.1}")),
            run.eta(now).map_or(dash.clone(), format_duration),
        ));
        if let Some(budget) = run.budget {
            let used = run.elapsed(now).unwrap_or(0.0);
            out.pop();
            out.push_str(&format!(
                "  budget {} of {}\n",
                format_duration(used),
                format_duration(budget)
            ));
        }
        if values && let Some(tag) = &run.observed.sweep {
            out.pop();
            out.push_str(&format!("  {}\n", tag.describe()));
        }
        if let Some(job) = run.job_line() {
            out.pop();
            out.push_str(&format!("  {job}\n"));
        }
        if let Some(rung) = run.rung_line() {
            out.pop();
            out.push_str(&format!("  {rung}\n"));
        }
    }
    out
}

/// The run a command names: its id, a part of the id that only it has, or its directory.
/// A run of another user (their trainer on this machine, or a directory of theirs) is
/// refused by name: nobody acts on someone else's runs.
pub fn find<'a>(runs: &'a BTreeMap<String, RunModel>, query: &str) -> anyhow::Result<&'a RunModel> {
    match find_id(runs.keys().map(String::as_str), query) {
        Ok(id) => Ok(&runs[id]),
        Err(error) => match someone_elses(query) {
            Some((run, user)) => anyhow::bail!(
                "{run} is a run of user {user}: only they can stop, resume, move or remove it \
                 (segtop top lists every run on this machine)"
            ),
            None => Err(error.into()),
        },
    }
}

/// The run and owner when `query` names a run of another user: a trainer of theirs in the
/// machine's register (by id or a part of it, or its directory), or a directory they own.
fn someone_elses(query: &str) -> Option<(String, String)> {
    use segtop::schedule::machine::{Register, current_uid, user_name};
    use std::os::unix::fs::MetadataExt;
    let me = current_uid();
    let (records, _) = Register::here().live();
    let path = std::path::Path::new(query);
    let canonical = std::fs::canonicalize(path).ok();
    if let Some(record) = records.iter().find(|r| {
        r.uid != me && (r.run == query || r.run.contains(query) || canonical.as_deref() == Some(r.run_dir.as_path()))
    }) {
        return Some((record.run.clone(), record.user.clone()));
    }
    let owner = std::fs::metadata(path).ok()?.uid();
    let is_run = RunDir::open(path).experiment().is_file() || path.join(RunDir::EVENTS).is_file();
    (owner != me && is_run).then(|| {
        let name = path
            .file_name()
            .map_or_else(|| query.to_string(), |n| n.to_string_lossy().into_owned());
        (name, user_name(owner))
    })
}

/// `segtop stop RUN [--kill]`.
pub fn stop(workspace: &Workspace, query: &str, kill: bool) -> anyhow::Result<()> {
    let runs = snapshot(workspace);
    let run = find(&runs, query)?;
    let state = run.state();
    anyhow::ensure!(
        !matches!(state, RunState::Queued | RunState::Paused),
        "{} is {}: take it out of the queue with: segtop queue --remove {}",
        run.id,
        state.name(),
        run.id
    );
    anyhow::ensure!(state.is_active(), "{} is {}: nothing to stop", run.id, state.name());
    let slurm = run.observed.job.is_some();
    if let Some(host) = run.host.as_ref().filter(|_| !slurm) {
        let here = sysinfo::System::host_name().unwrap_or_default();
        anyhow::ensure!(*host == here, "{} runs on {host}; stop it there", run.id);
    }
    let halt = if kill { Halt::Kill } else { Halt::Stop };
    let how = segtop::schedule::launcher::halt_run(&run.dir, run.pid, run.pid_start, halt)
        .with_context(|| format!("cannot stop {}", run.id))?;
    if kill || state == RunState::Pending {
        println!(
            "ended {} ({how}); resume it from its last checkpoint with: segtop resume {}",
            run.id, run.id
        );
    } else {
        println!(
            "asked {} ({how}) to stop; it finishes its step and writes a checkpoint first",
            run.id
        );
    }
    Ok(())
}

/// `segtop resume RUN`: queue a stopped, failed or lost run to continue, in the background.
pub fn resume(workspace: &Workspace, query: &str) -> anyhow::Result<()> {
    let runs = snapshot(workspace);
    let run = find(&runs, query)?;
    match run.state() {
        RunState::Stopped | RunState::Failed | RunState::Lost => {}
        RunState::Pruned => {
            // Resumed by hand, a pruned run leaves its sweep's rungs and trains to its full budget.
            for file in [segtop::run::RunDir::PRUNED, segtop::run::RunDir::RUNG] {
                let path = run.dir.join(file);
                if path.exists() {
                    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
                }
            }
        }
        state if state.is_active() => anyhow::bail!("{} is {}: it is still going", run.id, state.name()),
        state => anyhow::bail!("{} is {}: there is nothing left to train", run.id, state.name()),
    }
    let dir = RunDir::open(&run.dir);
    match segtop::schedule::queue::Queue::new(workspace).resume(workspace, &dir)? {
        segtop::schedule::queue::Resumed::Queued => {
            segtop::supervisor::ensure(workspace)?;
            println!(
                "queued {} to resume from its last checkpoint; it starts when cores and memory allow (output: {})",
                run.id,
                dir.log().display()
            );
        }
        segtop::schedule::queue::Resumed::Submitted { job } => println!(
            "resubmitted {} to Slurm as job {job} to resume from its last checkpoint (output: {})",
            run.id,
            dir.log().display()
        ),
    }
    Ok(())
}

/// `segtop rm RUN [--yes]`: deletes a run directory, never a live run's.
pub fn remove(workspace: &Workspace, query: &str, yes: bool) -> anyhow::Result<bool> {
    let runs = snapshot(workspace);
    let run = find(&runs, query)?;
    let state = run.state();
    anyhow::ensure!(
        !state.is_active(),
        "{} is {}: stop it first (segtop stop {})",
        run.id,
        state.name(),
        run.id
    );
    if !yes {
        use std::io::IsTerminal;
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "not removing {} without a confirmation: run it in a terminal or pass --yes",
            run.id
        );
        eprint!(
            "remove {} ({}, {})? [y/N] ",
            run.dir.display(),
            state.name(),
            size_of(&run.dir)
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("kept {}", run.id);
            return Ok(false);
        }
    }
    if run.observed.queue.is_some() {
        segtop::schedule::queue::Queue::new(workspace).remove(&run.id)?;
    }
    if run.dir.exists() {
        std::fs::remove_dir_all(&run.dir).with_context(|| format!("cannot remove {}", run.dir.display()))?;
    }
    println!("removed {}", run.id);
    Ok(true)
}

/// A directory's size on disk, for the confirmation.
fn size_of(dir: &std::path::Path) -> String {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    format!("{:.1} MB", walk(dir) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use segtop::run::events::Event;

    fn brats(region: &str, lesion_dice: f64, legacy_dice: f64) -> BratsScores {
        BratsScores {
            region: region.into(),
            lesion_dice,
            lesion_hd95: 10.0,
            lesion_nsd_10: 0.5,
            legacy_dice,
            legacy_hd95: 8.0,
            num_tp: 1,
            num_fp: 0,
            num_fn: 0,
        }
    }

    /// A finished run whose end-of-run evaluation scored whole-tumour lesion-wise Dice
    /// `raw`, and `postprocessed` after post-processing when given.
    fn evaluated(id: &str, raw: f64, postprocessed: Option<f64>) -> RunModel {
        let mut run = RunModel::new(id, format!("runs/{id}"));
        let time = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("valid time");
        run.apply(&Event::Evaluation {
            time,
            epoch: 6,
            challenge: "BraTS-SSA".into(),
            mean: vec![brats("WT", raw, 0.77)],
            cases: vec![],
            tta: true,
            postprocess: postprocessed.map(|_| "WT: remove components under 500 voxels".into()),
            postprocessed: postprocessed.map(|wt| vec![brats("WT", wt, 0.80)]),
            postprocessed_cases: vec![],
            seconds: 1.0,
        });
        run
    }

    #[test]
    fn wide_terminals_get_the_lesion_wise_whole_tumour_dice() {
        let runs = [
            evaluated("20261126-204650-unet-base8", 0.13, Some(0.78)),
            evaluated("20261126-204747-wide-filters", 0.42, None),
            RunModel::new("20261126-204742-bad-data", "runs/bad-data"),
        ];
        let runs: Vec<&RunModel> = runs.iter().collect();
        let now = chrono::Utc::now();

        let narrow = table(&runs, now, false, 80);
        assert!(!narrow.contains("LW WT"), "{narrow}");
        assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");

        let wide = table(&runs, now, false, 120);
        let lines: Vec<Vec<&str>> = wide.lines().map(|l| l.split_whitespace().collect()).collect();
        let column = lines[0].iter().position(|h| *h == "LW").expect("an LW WT column");
        assert_eq!(lines[0][column + 1], "WT", "{wide}");
        // Post-processed when there is post-processing, else raw, else nothing. The header's
        // `LW WT` is two words, so a row's value sits at the header's `LW`.
        let values: Vec<&str> = lines[1..].iter().map(|row| row[column]).collect();
        assert_eq!(values, ["0.78", "0.42", "–"], "{wide}");
        assert!(wide.lines().all(|l| l.chars().count() <= 120), "{wide}");
    }

    /// A queued run shows its place in the queue, as the dashboard shows it.
    #[test]
    fn a_queued_run_shows_its_place() {
        let mut queued = RunModel::new("20261126-204742-waiting", "runs/waiting");
        queued.observed.queue = Some(segtop::runs::model::QueuePlace {
            position: 1,
            paused: false,
            waiting: None,
        });
        let listed = table(&[&queued], chrono::Utc::now(), false, 80);
        let row: Vec<&str> = listed.lines().nth(1).expect("a row").split_whitespace().collect();
        assert_eq!(row[2], "#1", "{listed}");
    }

    #[test]
    fn the_json_evaluation_holds_raw_and_post_processed_dice() {
        let run = evaluated("r", 0.13, Some(0.78));
        let evaluation = run.evaluation.as_ref().expect("evaluated");
        let json = serde_json::to_value(EvaluationRecord::of(evaluation)).expect("serializes");
        assert_eq!(json["epoch"], 6);
        assert_eq!(json["tta"], true);
        assert_eq!(json["raw"]["lesion_dice"]["wt"], 0.13);
        assert_eq!(json["raw"]["legacy_dice"]["wt"], 0.77);
        assert_eq!(json["postprocessed"]["lesion_dice"]["wt"], 0.78);
        assert_eq!(json["postprocessed"]["legacy_dice"]["wt"], 0.80);
        assert_eq!(json["postprocess"], "WT: remove components under 500 voxels");

        let raw_only = evaluated("r", 0.42, None);
        let json = serde_json::to_value(EvaluationRecord::of(raw_only.evaluation.as_ref().expect("evaluated")))
            .expect("serializes");
        assert!(
            json["postprocessed"].is_null() && json["postprocess"].is_null(),
            "{json}"
        );
    }
}
