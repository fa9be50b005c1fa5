//! `segtop package RUN... --out DIR`: a trained model (or an ensemble of several runs) as a
//! self-contained folder that segments cases without the run directories: ONNX networks, the
//! preprocessing, windowing and post-processing in `package.toml`, a model card and a Python
//! reference implementation (see `segtop::package`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use segtop::data::dataset::Split;
use segtop::experiment::Experiment;
use segtop::package::{self, MemberSource, Scores};
use segtop::postprocess::Plan;
use segtop::run::RunDir;
use segtop::run::events::BratsScores;
use segtop::runs::model::RunModel;
use segtop::workspace::Workspace;

#[derive(clap::Args)]
pub struct PackageArgs {
    /// Runs: ids, parts of ids only one run has, or run directories (several: an ensemble)
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<String>,
    /// The package folder to write
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a folder that is not empty (files of the same names are replaced)
    #[arg(long)]
    pub force: bool,
    /// Leave the first run's learned post-processing out of the package
    #[arg(long)]
    pub no_postprocess: bool,
}

pub fn package(workspace: &Workspace, args: &PackageArgs) -> anyhow::Result<()> {
    let runs = segtop::runs::watch::snapshot(workspace);
    let mut members = Vec::new();
    let mut first_dir = None;
    for query in &args.runs {
        let outside;
        let model = match super::runs::find(&runs, query) {
            Ok(model) => model,
            // A run directory of another workspace.
            Err(_) if RunDir::open(Path::new(query)).experiment().is_file() => {
                outside = read_run(Path::new(query));
                &outside
            }
            Err(error) => return Err(error),
        };
        if members.iter().any(|m: &MemberSource| m.run == model.id) {
            bail!("run {} is given twice", model.id);
        }
        members.push(member(workspace, model)?);
        first_dir.get_or_insert_with(|| model.dir.clone());
    }
    let plan = match &first_dir {
        Some(dir) => choose_plan(&members[0].run, dir, args.no_postprocess)?,
        None => bail!("no run to package"),
    };
    println!(
        "packaging {} run(s) into {}: {}",
        members.len(),
        args.out.display(),
        members.iter().map(|m| m.run.as_str()).collect::<Vec<_>>().join(", ")
    );
    let written = package::write(&members, plan, &args.out, args.force)?;
    for path in &written {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("  {}  {}", path.display(), human_size(size));
    }
    println!(
        "segment with: segtop predict --package {} --cases DATASET --out DIR\n\
         or without segtop: python {} --cases DATASET --out DIR",
        args.out.display(),
        args.out.join(package::SCRIPT).display()
    );
    Ok(())
}

/// What the package needs of one run; refuses runs still training and runs without best
/// weights.
fn member(workspace: &Workspace, model: &RunModel) -> anyhow::Result<MemberSource> {
    let state = model.state();
    if state.is_active() {
        bail!(
            "run {} is {}: package it once it has finished (or stop it: segtop stop {})",
            model.id,
            state.name(),
            model.id
        );
    }
    let run = RunDir::open(&model.dir);
    let weights = run.best_weights();
    if !weights.is_file() {
        bail!(
            "run {} has no best checkpoint ({} does not exist): a run has one once it has validated",
            model.id,
            weights.display()
        );
    }
    let experiment_text = std::fs::read_to_string(run.experiment())
        .with_context(|| format!("{}: cannot read", run.experiment().display()))?;
    let experiment = Experiment::load_frozen(&run.experiment(), workspace.root())
        .with_context(|| format!("{} is not a run directory", model.dir.display()))?;
    let split = read_split(&run.split());
    Ok(MemberSource {
        run: model.id.clone(),
        experiment,
        experiment_text,
        weights,
        epoch: model.best.as_ref().map(|(epoch, _)| *epoch),
        training_cases: split.as_ref().map_or(0, |s| s.train.len()),
        validation_cases: split.as_ref().map_or(0, |s| s.validation.len()),
        scores: scores(model, split.as_ref().map_or(0, |s| s.validation.len())),
    })
}

/// The run in `dir`, read as the workspace's runs are.
fn read_run(dir: &Path) -> RunModel {
    let id = dir
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let config = segtop::runs::summary::frozen_config(&RunDir::open(dir));
    segtop::runs::summary::fold(&id, dir, &config, false).model
}

fn read_split(path: &Path) -> Option<Split> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The end-of-run evaluation's mean scores, per region WT, TC, ET.
fn scores(model: &RunModel, cases: usize) -> Option<Scores> {
    let evaluation = model.evaluation.as_ref()?;
    let per_region = |scores: &[BratsScores], pick: fn(&BratsScores) -> f64| -> Option<[f64; 3]> {
        let region = |name: &str| scores.iter().find(|s| s.region == name).map(pick);
        Some([region("WT")?, region("TC")?, region("ET")?])
    };
    let post = evaluation.postprocessed.as_deref();
    Some(Scores {
        cases,
        lesion_dice: per_region(&evaluation.mean, |s| s.lesion_dice)?,
        legacy_dice: per_region(&evaluation.mean, |s| s.legacy_dice)?,
        postprocessed_lesion_dice: post.and_then(|p| per_region(p, |s| s.lesion_dice)),
        postprocessed_legacy_dice: post.and_then(|p| per_region(p, |s| s.legacy_dice)),
    })
}

/// The first run's learned plan, as `segtop predict` applies it to an ensemble of these runs.
fn choose_plan(run: &str, dir: &Path, off: bool) -> anyhow::Result<(Plan, String)> {
    if off {
        return Ok((Plan::NONE, "none (--no-postprocess)".to_string()));
    }
    let path = RunDir::open(dir).postprocess();
    if !path.is_file() {
        return Ok((Plan::NONE, format!("none: run {run} has no postprocess.toml")));
    }
    let plan = Plan::load(&path)?;
    Ok((plan, format!("learned by run {run} on its validation cases")))
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} kB", bytes as f64 / 1024.0)
    }
}
