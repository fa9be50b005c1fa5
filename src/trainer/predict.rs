//! `segtop-train predict`: segment whole cases with a trained network and write BraTS label
//! maps on each case's original grid, with its geometry, named `<case id>.nii.gz`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tch::{Device, Tensor, nn};

use segtop::data::case::{self, CaseFiles};
use segtop::data::preprocess;
use segtop::data::volume;
use segtop::experiment::{Experiment, Layout};
use segtop::rundir::RunDir;

use crate::infer::SlidingWindow;
use crate::model::UNet;

/// The weights and experiment of a run: its best checkpoint, else its latest.
pub fn from_run(run_dir: &Path) -> anyhow::Result<(Experiment, PathBuf)> {
    let run = RunDir::open(run_dir);
    let experiment = Experiment::load(&run.experiment(), run_dir)
        .with_context(|| format!("{} is not a run directory", run_dir.display()))?;
    let best = run.checkpoints().join("best.safetensors");
    let weights = if best.is_file() {
        best
    } else {
        crate::checkpoint::latest(&run)
            .map(|dir| dir.join("model.safetensors"))
            .with_context(|| format!("{} has no checkpoint yet", run_dir.display()))?
    };
    Ok((experiment, weights))
}

/// Segments every case under `cases` (one case folder or a dataset folder) into `out`.
pub fn run(experiment: &Experiment, weights: &Path, cases: &Path, out: &Path) -> anyhow::Result<()> {
    let found = case::discover(cases, Layout::Auto).with_context(|| format!("{}: cannot list", cases.display()))?;
    if found.cases.is_empty() {
        bail!("{}: no BraTS cases found", cases.display());
    }
    for problem in &found.problems {
        eprintln!("warning: {problem}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = UNet::new(&vs.root(), &experiment.model, experiment.data.modalities.len() as i64);
    vs.load(weights)
        .with_context(|| format!("cannot load {} into this experiment's network", weights.display()))?;
    let window = SlidingWindow::new(&experiment.validate);
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(found.cases.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    for (i, files) in found.cases.iter().enumerate() {
        bar.set_message(files.id.clone());
        let written = predict_case(experiment, &net, files, &window, out)?;
        if bar.is_hidden() {
            println!("{}/{} {}", i + 1, found.cases.len(), written.display());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("wrote {} segmentations to {}", found.cases.len(), out.display());
    Ok(())
}

fn predict_case(
    experiment: &Experiment,
    net: &UNet,
    files: &CaseFiles,
    window: &SlidingWindow,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let images_only = CaseFiles {
        seg: None,
        ..files.clone()
    };
    let loaded = case::load_case(&images_only, &experiment.data.modalities)?;
    let prepared = preprocess::prepare(&loaded, &experiment.data);
    let [x, y, z] = prepared.shape.map(|n| n as i64);
    let channels: Vec<Tensor> = prepared
        .channels
        .iter()
        .map(|c| Tensor::from_slice(c).view([z, y, x]))
        .collect();
    let volume = Tensor::stack(&channels, 0).unsqueeze(0);
    let labels = window.labels(net, &volume);
    let full = preprocess::uncrop(&labels, prepared.shape, prepared.origin, prepared.original_shape);
    let reference = files.image(experiment.data.modalities[0]).context("no image file")?;
    let path = out.join(format!("{}.nii.gz", files.id));
    volume::write_labels_like(reference, &path, prepared.original_shape, &full)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
