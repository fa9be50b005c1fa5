//! `segtop postprocess RUN`: learn a run's post-processing (again) from its validation cases,
//! as the end of training does: the best weights' raw predictions in the run's `validation/`
//! folder against the dataset's ground truth. A run trained before segtop kept those
//! predictions has them made first by the trainer (`segtop predict --split validation`).
//! The plan goes to `postprocess.toml`, and an `evaluation` event with the scores before and
//! after is appended to the run's events, so the dashboard, `segtop runs` and `export` show it.
//!
//! With `--folds`, the cases are those of every fold's run of a cross-validation
//! configuration: each case predicted by the one run that did not train on it. One plan is
//! learned from all of them (every development case instead of one fold's share) and
//! written into each run, so `segtop predict --folds` applies it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;

use segtop::data::case;
use segtop::data::volume;
use segtop::experiment::Experiment;
use segtop::metrics::brats::Challenge;
use segtop::metrics::grid::Grid;
use segtop::postprocess::{self, Case};
use segtop::run::RunDir;
use segtop::run::events::{CaseEvaluation, Event, EventLog, EventTail};
use segtop::runs::RunModel;
use segtop::workspace::Workspace;

/// Which run, and how.
#[derive(clap::Args)]
pub struct PostprocessArgs {
    /// The run: its id, a part only it has, or its directory
    run: String,
    /// With a cross-validation run: learn one plan from the validation predictions of every
    /// fold's run of its configuration (out-of-fold predictions of all the cases), and write
    /// it into each of them
    #[arg(long)]
    folds: bool,
    /// Cases scored at once [default: the number of cores]
    #[arg(long)]
    threads: Option<usize>,
}

/// One run whose validation predictions the plan is learned from.
struct Source {
    run: RunDir,
    experiment: Experiment,
    /// The epoch of the weights that made the predictions.
    epoch: u32,
    cases: Vec<Case>,
}

impl Source {
    /// A run that has ended, with its validation predictions (made first when it kept none)
    /// and their ground truth.
    fn open(runs: &BTreeMap<String, RunModel>, dir: &Path, workspace: &Workspace) -> anyhow::Result<Source> {
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let model = super::runs::find(runs, &id)?;
        anyhow::ensure!(
            !model.state().is_active(),
            "{} is {}: post-processing is learned once its training has ended",
            model.id,
            model.state().name()
        );
        let run = RunDir::open(&model.dir);
        let experiment = Experiment::load_frozen(&run.experiment(), workspace.root())
            .with_context(|| format!("{} is not a run directory", run.path().display()))?;
        let mut predictions = prediction_files(&run.validation())?;
        if predictions.is_empty() {
            println!(
                "{} keeps no validation predictions yet: segmenting its validation cases with its best weights",
                run.id()
            );
            predict_validation(&run, &experiment)?;
            predictions = prediction_files(&run.validation())?;
            if predictions.is_empty() {
                bail!("{}: the trainer wrote no predictions", run.validation().display());
            }
        }
        let cases = load_cases(&experiment, &predictions)?;
        let epoch = evaluated_epoch(&run).unwrap_or(0);
        Ok(Source {
            run,
            experiment,
            epoch,
            cases,
        })
    }
}

/// Learns and stores the plan; prints the validation scores before and after.
pub fn postprocess(workspace: &Workspace, args: &PostprocessArgs) -> anyhow::Result<()> {
    let runs = segtop::runs::watch::snapshot(workspace);
    let model = super::runs::find(&runs, &args.run)?;
    let dirs = if args.folds {
        segtop::run::fold_runs(&model.dir)?
    } else {
        vec![model.dir.clone()]
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let start = Instant::now();
    let sources = dirs
        .iter()
        .map(|dir| Source::open(&runs, dir, workspace))
        .collect::<anyhow::Result<Vec<Source>>>()?;
    if args.folds {
        println!(
            "--folds: the validation predictions of {} of {} folds' runs of {}'s configuration",
            sources.len(),
            sources[0].experiment.data.folds,
            model.id
        );
    }
    let cases = pooled_cases(&sources)?;
    println!(
        "learning post-processing on {} validation case(s) of {}",
        cases.len(),
        sources.iter().map(|s| s.run.id()).collect::<Vec<_>>().join(", ")
    );
    let (plan, mut validation) = postprocess::search(
        Challenge::Ssa,
        &cases,
        sources[0].epoch,
        threads,
        &|step| println!("  choosing {step}"),
        None,
    );
    if args.folds {
        validation.runs = sources.iter().map(|s| s.run.id()).collect();
    }
    println!("post-processing: {}", plan.describe());
    for line in postprocess::table(&validation) {
        println!("  {line}");
    }
    let text = plan.to_toml(Some(&validation));
    for source in &sources {
        let run = &source.run;
        segtop::run::write_text(run.path(), &run.postprocess(), &text)
            .with_context(|| format!("cannot write {}", run.postprocess().display()))?;
        record_evaluation(source, &plan, &validation, start)?;
        println!("wrote {}", run.postprocess().display());
    }
    Ok(())
}

/// Every source's cases in one list; a case in two of them (two runs of one fold) is refused.
fn pooled_cases(sources: &[Source]) -> anyhow::Result<Vec<Case>> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for source in sources {
        for case in &source.cases {
            if let Some(first) = seen.insert(&case.id, source.run.id()) {
                bail!(
                    "case {} is a validation case of both {first} and {}: keep one run per fold (segtop rm the other)",
                    case.id,
                    source.run.id()
                );
            }
        }
    }
    Ok(sources.iter().flat_map(|s| s.cases.iter().cloned()).collect())
}

/// An `evaluation` event in the run's events: its own validation cases before and after the
/// plan now in its `postprocess.toml`, so the dashboard, `segtop runs` and `export` show it.
fn record_evaluation(
    source: &Source,
    plan: &postprocess::Plan,
    validation: &postprocess::Validation,
    start: Instant,
) -> anyhow::Result<()> {
    let own = |cases: &[CaseEvaluation]| -> Vec<CaseEvaluation> {
        cases
            .iter()
            .filter(|c| source.cases.iter().any(|own| own.id == c.case))
            .cloned()
            .collect()
    };
    let (before, after) = (own(&validation.cases_before), own(&validation.cases_after));
    let run = &source.run;
    let mut events =
        EventLog::open(&run.events()).with_context(|| format!("cannot write {}", run.events().display()))?;
    let regions = Challenge::Ssa.regions();
    events.emit(&Event::Evaluation {
        time: Utc::now(),
        epoch: source.epoch,
        challenge: validation.challenge.clone(),
        mean: CaseEvaluation::mean(&before, regions),
        cases: before,
        tta: source.experiment.validate.tta,
        postprocess: Some(plan.describe()),
        postprocessed: Some(CaseEvaluation::mean(&after, regions)),
        postprocessed_cases: after,
        seconds: start.elapsed().as_secs_f64(),
    })?;
    Ok(())
}

/// The NIfTI files in a run's `validation/` folder (none when it does not exist).
fn prediction_files(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("{}: cannot list", folder.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".nii.gz"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Has the trainer write the validation cases' raw predictions into the run's `validation/`.
fn predict_validation(run: &RunDir, experiment: &Experiment) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the running segtop executable")?;
    let trainer = exe.with_file_name("segtop-train");
    if !trainer.is_file() {
        bail!(
            "{} has no validation predictions, and making them needs the trainer, which this segtop \
             was built without ({} does not exist)",
            run.id(),
            trainer.display()
        );
    }
    let mut command = std::process::Command::new(&trainer);
    command
        .arg("predict")
        .arg("--run")
        .arg(run.path())
        .args([
            "--split",
            "validation",
            "--no-postprocess",
            "--labels",
            "brats2023",
            "--out",
        ])
        .arg(run.validation());
    if experiment.validate.tta {
        command.arg("--tta");
    }
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", trainer.display()))?;
    if !status.success() {
        bail!("the trainer could not segment {}'s validation cases", run.id());
    }
    Ok(())
}

/// Each prediction with its ground truth from the run's dataset, cut down to the tumour.
fn load_cases(experiment: &Experiment, predictions: &[PathBuf]) -> anyhow::Result<Vec<Case>> {
    let root = &experiment.data.root;
    let found = case::discover(root, experiment.data.layout)
        .with_context(|| format!("{}: cannot list the run's dataset", root.display()))?;
    predictions
        .iter()
        .map(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let id = name.trim_end_matches(".nii.gz");
            let files = found.cases.iter().find(|c| c.id == id).with_context(|| {
                format!(
                    "{}: case {id} is not in the run's dataset {}",
                    path.display(),
                    root.display()
                )
            })?;
            if files.seg.is_none() {
                bail!("case {id} in {} has no label map to learn from", root.display());
            }
            let truth = case::load_case(files, &[])?
                .labels
                .with_context(|| format!("case {id} has no label map"))?;
            let prediction = read_prediction(path)?;
            if prediction.shape != truth.shape {
                bail!(
                    "{} is {:?} voxels but case {id}'s label map is {:?}",
                    path.display(),
                    prediction.shape,
                    truth.shape
                );
            }
            Ok(Case {
                id: id.to_string(),
                grid: Grid::new(truth.shape),
                spacing: truth.spacing,
                prediction: prediction.data,
                truth: truth.data,
            }
            .cropped())
        })
        .collect()
}

/// A raw prediction in BraTS 2023 labels (0-3).
fn read_prediction(path: &Path) -> anyhow::Result<volume::Volume<u8>> {
    let mut bad = None;
    let read = volume::read_volume_map(path, |v| {
        if !(v == 0.0 || v == 1.0 || v == 2.0 || v == 3.0) && bad.is_none() {
            bad = Some(v);
        }
        v as u8
    })
    .with_context(|| format!("{}", path.display()))?;
    if let Some(v) = bad {
        bail!(
            "{}: label {v} is not a BraTS 2023 label (0-3); validation predictions are written in those",
            path.display()
        );
    }
    Ok(read)
}

/// The epoch of the weights behind the latest end-of-run evaluation.
fn evaluated_epoch(run: &RunDir) -> Option<u32> {
    let (events, _) = EventTail::new(run.events()).poll().ok()?;
    events.iter().rev().find_map(|e| match e {
        Event::Evaluation { epoch, .. } => Some(*epoch),
        _ => None,
    })
}
