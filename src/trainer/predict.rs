//! `segtop-train predict`: segment whole cases with one trained network or an ensemble of
//! several, and write BraTS label maps on each case's original grid, with its geometry, named
//! `<case id>.nii.gz`.
//!
//! Between the network and the file, as nnU-Net does it: optional mirror test-time
//! augmentation (`--tta`); the probabilities of every model averaged (`--run A --run B`: label
//! softmaxes as they are; when region-trained networks take part, every model's probabilities
//! as regions, see [`crate::infer::as_regions`]); the run's learned post-processing (`postprocess.toml`, unless `--no-postprocess`); and
//! the labels written in the dataset's own convention (enhancing tumour 4 in older BraTS).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use tch::{Device, Tensor, nn};

use segtop::config::Choice;
use segtop::data::case::{self, CaseFiles, Naming};
use segtop::data::dataset::Split;
use segtop::data::preprocess;
use segtop::data::volume;
use segtop::experiment::{Experiment, Layout, Output, Precision};
use segtop::metrics::grid::Grid;
use segtop::postprocess::Plan;
use segtop::run::RunDir;

use crate::infer::{SlidingWindow, as_regions, labels_of};
use crate::model::UNet;

/// Which label convention the written maps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Labels {
    /// Each case's own: enhancing tumour 4 for older BraTS names (`_t1ce`), else 3.
    Dataset,
    /// BraTS 2023 and later: 1 NCR, 2 ED, 3 ET.
    Brats2023,
    /// BraTS 2021 and earlier: 1 NCR, 2 ED, 4 ET.
    Legacy,
}

/// Where the post-processing comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostprocessChoice {
    /// The (first) run's `postprocess.toml`, when it has one.
    FromRun,
    /// A plan file given on the command line.
    File(PathBuf),
    /// None (`--no-postprocess`).
    Off,
}

/// How to predict, beyond which models and cases.
#[derive(Debug, Clone)]
pub struct Options {
    pub tta: bool,
    pub postprocess: PostprocessChoice,
    pub labels: Labels,
}

/// One trained network, ready to segment.
pub struct Model {
    /// Where it came from (a run directory or a weights file), for messages.
    pub source: String,
    pub experiment: Experiment,
    net: UNet,
    /// Holds the network's weights.
    _vs: nn::VarStore,
    window: SlidingWindow,
}

/// The weights and experiment of a run: its best checkpoint, else its latest.
pub fn from_run(run_dir: &Path) -> anyhow::Result<(Experiment, PathBuf)> {
    let run = RunDir::open(run_dir);
    if !run_dir.is_dir() {
        bail!("run {}: no such run directory", run_dir.display());
    }
    let experiment = Experiment::load_frozen(&run.experiment(), run_dir)
        .with_context(|| format!("{} is not a run directory", run_dir.display()))?;
    let weights = run
        .weights()
        .with_context(|| format!("run {} has no checkpoint yet", run_dir.display()))?;
    Ok((experiment, weights))
}

impl Model {
    /// Builds the experiment's network and loads `weights` into it.
    pub fn load(
        source: String,
        experiment: Experiment,
        weights: &Path,
        tta: bool,
        precision: Precision,
    ) -> anyhow::Result<Model> {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net =
            UNet::new(&vs.root(), &experiment.model, experiment.data.modalities.len() as i64).with_precision(precision);
        vs.load(weights)
            .with_context(|| format!("cannot load {} into {source}'s network", weights.display()))?;
        let mut window = SlidingWindow::new(&experiment.validate);
        if tta {
            window = window.with_mirroring(&experiment.augment.flip_axes);
        }
        Ok(Model {
            source,
            experiment,
            net,
            _vs: vs,
            window,
        })
    }
}

impl Model {
    /// The network `net` with its weights in `vs` as they are (the benchmark's, at their
    /// initial values).
    pub fn untrained(experiment: Experiment, net: UNet, vs: nn::VarStore) -> Model {
        let window = SlidingWindow::new(&experiment.validate);
        Model {
            source: "the benchmark's network".to_string(),
            experiment,
            net,
            _vs: vs,
            window,
        }
    }

    /// A member of a model package: its network built from the package's `[member.model]`
    /// and its weights read back from the member's ONNX file.
    pub fn from_package(member: &segtop::package::Member, tta: bool, precision: Precision) -> anyhow::Result<Model> {
        let experiment = member.experiment.clone();
        let vs = nn::VarStore::new(Device::Cpu);
        let net =
            UNet::new(&vs.root(), &experiment.model, experiment.data.modalities.len() as i64).with_precision(precision);
        let file = &member.file;
        let tensors = segtop::package::onnx::read_initializers(file)?;
        tch::no_grad(|| -> anyhow::Result<()> {
            for (name, mut variable) in vs.variables() {
                if name.starts_with("deep.") {
                    // Deep supervision heads are not part of the exported network.
                    continue;
                }
                let (shape, values) = tensors.get(&name).with_context(|| {
                    format!(
                        "{}: no weights '{name}', which the package's network needs",
                        file.display()
                    )
                })?;
                if values.len() as i64 != variable.numel() as i64 {
                    bail!(
                        "{}: weights '{name}' have shape {shape:?}, the network needs {:?}",
                        file.display(),
                        variable.size()
                    );
                }
                let source = Tensor::from_slice(values).view(variable.size().as_slice());
                variable.copy_(&source);
            }
            Ok(())
        })?;
        let mut window = SlidingWindow::new(&experiment.validate);
        if tta {
            window = window.with_mirroring(&experiment.augment.flip_axes);
        }
        Ok(Model {
            source: format!("{} (run {})", file.display(), member.run),
            experiment,
            net,
            _vs: vs,
            window,
        })
    }
}

/// Refuses an ensemble whose models would not see the same input: each must read the same
/// modalities in the same order and preprocess them the same way.
pub fn check_ensemble(models: &[Model]) -> anyhow::Result<()> {
    let Some((first, rest)) = models.split_first() else {
        bail!("no model to predict with");
    };
    let facts = |m: &Model| {
        let d = &m.experiment.data;
        let modalities: Vec<&str> = d.modalities.iter().map(|m| m.name()).collect();
        [
            ("data.modalities", format!("{modalities:?}")),
            ("data.crop", d.crop.to_string()),
            ("data.normalization", d.normalization.to_string()),
            ("data.clip_percentiles", format!("{:?}", d.clip_percentiles)),
        ]
    };
    let reference = facts(first);
    for model in rest {
        for ((key, a), (_, b)) in reference.iter().zip(facts(model)) {
            if *a != b {
                bail!(
                    "cannot ensemble {} and {}: they differ in {key} ({a} against {b}); the models of an \
                     ensemble must read the same modalities preprocessed the same way",
                    first.source,
                    model.source
                );
            }
        }
    }
    Ok(())
}

/// The form an ensemble's probabilities are averaged in: label softmaxes when every model
/// outputs labels (as one model alone does), else regions, which every model's output can be
/// turned into.
pub fn ensemble_output(models: &[Model]) -> Output {
    Output::averaged(models.iter().map(|m| m.net.output()))
}

/// The post-processing to apply, and a line saying where it came from.
pub fn choose_plan(runs: &[PathBuf], choice: &PostprocessChoice) -> anyhow::Result<(Plan, String)> {
    match choice {
        PostprocessChoice::Off => Ok((Plan::NONE, "post-processing: off".to_string())),
        PostprocessChoice::File(path) => {
            let plan = Plan::load(path)?;
            Ok((
                plan,
                format!("post-processing: {} (from {})", plan.describe(), path.display()),
            ))
        }
        PostprocessChoice::FromRun => {
            let Some(run) = runs.first() else {
                return Ok((Plan::NONE, "post-processing: none (no run given)".to_string()));
            };
            let path = RunDir::open(run).postprocess();
            if !path.is_file() {
                return Ok((
                    Plan::NONE,
                    format!(
                        "post-processing: none ({} has none; `segtop postprocess {}` learns one)",
                        run.display(),
                        run.display()
                    ),
                ));
            }
            let plan = Plan::load(&path)?;
            let also = if runs.len() > 1 { " for the whole ensemble" } else { "" };
            Ok((
                plan,
                format!("post-processing: {} (from {}{also})", plan.describe(), path.display()),
            ))
        }
    }
}

/// The cases of `split` (`train`, `validation` or `test`) of a run, found under its dataset
/// folder.
pub fn split_cases(run_dir: &Path, experiment: &Experiment, split: &str) -> anyhow::Result<Vec<CaseFiles>> {
    let path = RunDir::open(run_dir).split();
    let text = std::fs::read(&path).with_context(|| format!("{}: cannot read the run's split", path.display()))?;
    let parts: Split =
        serde_json::from_slice(&text).with_context(|| format!("{}: not a split file", path.display()))?;
    let ids = match split {
        "train" => parts.train,
        "validation" => parts.validation,
        "test" => parts.test,
        other => bail!("--split {other}: give train, validation or test"),
    };
    if ids.is_empty() {
        bail!("{}: the {split} split has no cases", path.display());
    }
    let root = &experiment.data.root;
    let found = case::discover(root, experiment.data.layout)
        .with_context(|| format!("{}: cannot list the run's dataset", root.display()))?;
    ids.iter()
        .map(|id| {
            found
                .cases
                .iter()
                .find(|c| &c.id == id)
                .cloned()
                .with_context(|| format!("case {id} of the {split} split is no longer in {}", root.display()))
        })
        .collect()
}

/// Every case under `source` (one case folder or a dataset folder).
pub fn cases_under(source: &Path) -> anyhow::Result<Vec<CaseFiles>> {
    let found = case::discover(source, Layout::Auto).with_context(|| format!("{}: cannot list", source.display()))?;
    if found.cases.is_empty() {
        bail!("{}: no BraTS cases found", source.display());
    }
    for problem in &found.problems {
        eprintln!("warning: {problem}");
    }
    Ok(found.cases)
}

/// Segments `cases` with the (averaged) `models` into `out`, post-processed with `plan`.
pub fn run(models: &[Model], cases: &[CaseFiles], plan: &Plan, options: &Options, out: &Path) -> anyhow::Result<()> {
    check_ensemble(models)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let passes: usize = models.iter().map(|m| m.window.passes()).sum();
    if ensemble_output(models) == Output::Regions && models.len() > 1 {
        println!("averaging the models' probabilities as regions (WT, TC, ET): some output regions");
    }
    println!(
        "segmenting {} case(s) with {} model(s), {} pass(es) per window{}",
        cases.len(),
        models.len(),
        passes,
        if options.tta {
            " (mirror test-time augmentation)"
        } else {
            ""
        }
    );
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(cases.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    for (i, files) in cases.iter().enumerate() {
        bar.set_message(files.id.clone());
        let case_start = Instant::now();
        let (written, work) = predict_case(models, files, plan, options.labels, out)?;
        bar.suspend(|| {
            println!(
                "{}/{} {}  {:.1} s  ({}, {} windows)",
                i + 1,
                cases.len(),
                written.display(),
                case_start.elapsed().as_secs_f64(),
                work.shape.map(|n| n.to_string()).join("x"),
                work.windows,
            );
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "wrote {} segmentation(s) to {} in {:.1} s ({:.1} s per case)",
        cases.len(),
        out.display(),
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() / cases.len().max(1) as f64
    );
    Ok(())
}

/// What the network did for one case: the grid of its files and the cropped volume's shape
/// (`[x, y, z]`), and the windows run through the networks (all models' together).
pub struct Work {
    pub grid: [usize; 3],
    pub shape: [usize; 3],
    pub windows: usize,
}

/// Segments one case with the (averaged) `models`, post-processes it with `plan` and writes
/// `<case id>.nii.gz` into `out`.
pub fn predict_case(
    models: &[Model],
    files: &CaseFiles,
    plan: &Plan,
    labels: Labels,
    out: &Path,
) -> anyhow::Result<(PathBuf, Work)> {
    let first = models.first().context("no model to predict with")?;
    let data = &first.experiment.data;
    let images_only = CaseFiles {
        seg: None,
        ..files.clone()
    };
    let loaded = case::load_case(&images_only, &data.modalities)?;
    let prepared = preprocess::prepare(&loaded, data);
    let [x, y, z] = prepared.shape.map(|n| n as i64);
    let channels: Vec<Tensor> = prepared
        .channels
        .iter()
        .map(|c| Tensor::from_slice(c).view([z, y, x]))
        .collect();
    let volume = Tensor::stack(&channels, 0).unsqueeze(0);
    let output = ensemble_output(models);
    let mut sum: Option<Tensor> = None;
    let mut work = Work {
        grid: prepared.original_shape,
        shape: prepared.shape,
        windows: 0,
    };
    for model in models {
        let probabilities = model.window.probabilities(&model.net, &volume);
        work.windows += model.window.count([z, y, x]) * model.window.passes();
        let probabilities = match output {
            Output::Labels => probabilities,
            Output::Regions => as_regions(model.net.output(), &probabilities),
        };
        sum = Some(match sum {
            None => probabilities,
            Some(total) => total + probabilities,
        });
    }
    let probabilities = sum.context("no model to predict with")? / models.len() as f64;
    let cropped = labels_of(output, &probabilities);
    let mut full = preprocess::uncrop(&cropped, prepared.shape, prepared.origin, prepared.original_shape);
    plan.apply(Grid::new(prepared.original_shape), &mut full);
    let legacy = match labels {
        Labels::Dataset => files.naming == Naming::Legacy,
        Labels::Brats2023 => false,
        Labels::Legacy => true,
    };
    if legacy {
        full.iter_mut().filter(|l| **l == 3).for_each(|l| *l = 4);
    }
    let reference = files.image(data.modalities[0]).context("no image file")?;
    let path = out.join(format!("{}.nii.gz", files.id));
    volume::write_labels_like(reference, &path, prepared.original_shape, &full)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, work))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(text: &str) -> Model {
        let experiment = Experiment::parse(Path::new("x.toml"), text, Path::new("/ws")).expect("valid");
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), &experiment.model, experiment.data.modalities.len() as i64);
        Model {
            source: "runs/a".into(),
            window: SlidingWindow::new(&experiment.validate),
            experiment,
            net,
            _vs: vs,
        }
    }

    const TINY: &str = "[data]\nroot = \"d\"\n[model]\nbase_filters = 4\ndepth = 2\n[train]\npatch_size = [8, 8, 8]\n";

    #[test]
    fn an_ensemble_must_read_the_same_input() {
        let a = model(TINY);
        // Another network on the same input is fine.
        let wider = model(&TINY.replace("base_filters = 4", "base_filters = 8"));
        assert!(check_ensemble(&[a, wider]).is_ok());
        let a = model(TINY);
        let mut other = model(&TINY.replace("root = \"d\"", "root = \"d\"\nnormalization = \"volume-minmax\""));
        other.source = "runs/b".into();
        let error = check_ensemble(&[a, other]).expect_err("differs").to_string();
        assert!(
            error.contains(
                "cannot ensemble runs/a and runs/b: they differ in data.normalization (zscore against volume-minmax)"
            ),
            "{error}"
        );
        let a = model(TINY);
        let mut fewer = model(&TINY.replace("root = \"d\"", "root = \"d\"\nmodalities = [\"t1c\", \"t2f\"]"));
        fewer.source = "runs/c".into();
        let error = check_ensemble(&[a, fewer]).expect_err("differs").to_string();
        assert!(error.contains("differ in data.modalities"), "{error}");
    }

    #[test]
    fn a_missing_run_or_split_is_named() {
        let error = from_run(Path::new("/nonexistent/run"))
            .expect_err("missing")
            .to_string();
        assert!(error.contains("run /nonexistent/run: no such run directory"), "{error}");
        let dir = tempfile::tempdir().expect("temp dir");
        let experiment = model(TINY).experiment;
        let error = split_cases(dir.path(), &experiment, "test").expect_err("no split");
        assert!(
            format!("{error:#}").contains("split.json: cannot read the run's split"),
            "{error:#}"
        );
    }

    #[test]
    fn the_plan_comes_from_the_run_or_a_file_or_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().to_path_buf();
        let (plan, said) = choose_plan(std::slice::from_ref(&run), &PostprocessChoice::FromRun).expect("no file");
        assert!(plan.is_none());
        assert!(said.contains("segtop postprocess"), "{said}");
        std::fs::write(RunDir::open(&run).postprocess(), "[wt]\noperation = \"keep-largest\"\n").expect("write");
        let (plan, _) = choose_plan(std::slice::from_ref(&run), &PostprocessChoice::FromRun).expect("reads");
        assert_eq!(plan.wt, segtop::postprocess::Operation::KeepLargest);
        let (plan, _) = choose_plan(std::slice::from_ref(&run), &PostprocessChoice::Off).expect("off");
        assert!(plan.is_none());
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[wt]\noperation = 3\n").expect("write");
        let error = choose_plan(&[], &PostprocessChoice::File(bad))
            .expect_err("malformed")
            .to_string();
        assert!(error.contains("bad.toml:2:"), "{error}");
    }
}
