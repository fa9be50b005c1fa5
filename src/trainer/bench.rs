//! `segtop-train bench`: how fast this machine trains and runs an experiment's network.
//!
//! Training steps go through the trainer's own step (forward, loss, backward, clipping,
//! optimizer) on random batches of the experiment's patch and batch size; inference is the
//! validation's sliding window over one full BraTS-sized case. Nothing is read from the
//! dataset, so the numbers measure the network and libtorch alone, and compare with
//! `bench/pytorch_seed_unet.py` run the same way.
//!
//! With `--cases`, it also times what a user waits for: `segtop predict` on each real case,
//! end to end (reading the NIfTI files, normalising, cropping as the experiment says, the
//! sliding window over the crop, writing the label map), with the network at its initial
//! weights. The work does not depend on the weights.

use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use segtop::cost;
use segtop::data::case::CaseFiles;
use segtop::data::sampler::Batch;
use segtop::experiment::{Experiment, Precision};

use crate::infer::SlidingWindow;
use crate::model::UNet;
use crate::predict::{self, Model};

/// What to measure; `None` takes the experiment's value.
pub struct Options {
    pub steps: usize,
    pub patch: Option<u32>,
    pub batch: Option<u32>,
    pub threads: Option<u32>,
    pub precision: Option<Precision>,
    /// Also time sliding-window inference over a case of this shape (`[x, y, z]`).
    pub case: Option<[i64; 3]>,
    /// Also time `segtop predict` on each of these cases.
    pub cases: Vec<CaseFiles>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(rename = "impl")]
    pub implementation: &'static str,
    pub params: u64,
    pub threads: i32,
    /// What the network computed in, and why.
    pub precision: Precision,
    pub precision_reason: String,
    pub patch: [u32; 3],
    pub batch: u32,
    pub steps: usize,
    /// Median over the steps after the first.
    pub median_step_s: f64,
    pub patches_per_s: f64,
    /// Forward and backward work per second: 6 FLOP per forward multiply-accumulate.
    pub gflops: f64,
    /// Peak resident memory of the process after the training steps, in MB.
    pub peak_rss_mb: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predict: Option<PredictReport>,
}

#[derive(Debug, Serialize)]
pub struct InferenceReport {
    pub case: [i64; 3],
    pub window: [u32; 3],
    pub overlap: f64,
    pub gaussian: bool,
    pub windows: usize,
    /// Windows per forward pass.
    pub window_batch: u32,
    pub seconds: f64,
    pub voxels_per_s: f64,
    /// Peak resident memory after inference, in MB.
    pub peak_rss_mb: f64,
}

/// `segtop predict` on real cases, one after the other.
#[derive(Debug, Serialize)]
pub struct PredictReport {
    /// Each case: its id, the grid of its files `[x, y, z]`, the cropped volume the network
    /// saw, the windows run, and the seconds from reading to the written label map.
    pub cases: Vec<PredictedCase>,
    pub median_s: f64,
    /// Peak resident memory after the cases, in MB.
    pub peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
pub struct PredictedCase {
    pub id: String,
    pub grid: [usize; 3],
    pub cropped: [usize; 3],
    pub windows: usize,
    pub seconds: f64,
}

pub fn run(experiment: &Experiment, options: &Options, progress: &dyn Fn(&str)) -> anyhow::Result<Report> {
    let mut experiment = experiment.clone();
    if let Some(precision) = options.precision {
        experiment.train.precision = precision;
    }
    let experiment = &experiment;
    let threads = options
        .threads
        .unwrap_or_else(|| crate::train::threads(experiment))
        .max(1);
    tch::set_num_threads(threads as i32);
    let patch = options.patch.map_or(experiment.train.patch_size, |p| [p; 3]);
    let batch_size = options.batch.unwrap_or(experiment.train.batch_size).max(1);
    let channels = experiment.data.modalities.len();

    let crate::train::Network {
        vs,
        net,
        precision,
        mut optimizer,
        loss,
        parameter_count,
    } = crate::train::Network::build(experiment);

    let batch = random_batch(
        batch_size as usize,
        channels,
        patch.map(|n| n as usize),
        experiment.train.seed,
    );
    let steps = options.steps.max(2);
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps {
        let start = Instant::now();
        crate::train::train_step(&net, &loss, &mut optimizer, &batch, experiment.model.deep_supervision);
        let seconds = start.elapsed().as_secs_f64();
        times.push(seconds);
        progress(&format!("training step {}/{steps}: {seconds:.2} s", step + 1));
    }
    let median = median(&times[1..]);
    let macs = cost::macs_per_patch(&experiment.model, channels as u64, patch) as f64;
    let peak_rss_mb = peak_rss_mb();

    let inference = options
        .case
        .map(|case| infer_case(&net, experiment, channels, case, progress));
    let predict = if options.cases.is_empty() {
        None
    } else {
        let model = Model::untrained(experiment.clone(), net, vs);
        Some(predict_cases(&model, &options.cases, progress)?)
    };
    Ok(Report {
        implementation: match precision.0 {
            Precision::Bfloat16 => "segtop-bf16",
            Precision::Float32 | Precision::Auto => "segtop",
        },
        params: parameter_count,
        threads: tch::get_num_threads(),
        precision: precision.0,
        precision_reason: precision.1,
        patch,
        batch: batch_size,
        steps,
        median_step_s: median,
        patches_per_s: f64::from(batch_size) / median,
        gflops: 6.0 * macs * f64::from(batch_size) / median / 1e9,
        peak_rss_mb,
        inference,
        predict,
    })
}

/// `segtop predict` (without post-processing) on each case, into a folder deleted afterwards.
fn predict_cases(model: &Model, cases: &[CaseFiles], progress: &dyn Fn(&str)) -> anyhow::Result<PredictReport> {
    let out = tempfile::tempdir()?;
    let models = std::slice::from_ref(model);
    let mut report = Vec::with_capacity(cases.len());
    for (i, files) in cases.iter().enumerate() {
        let start = Instant::now();
        let (_, work) = predict::predict_case(
            models,
            files,
            &segtop::postprocess::Plan::NONE,
            predict::Labels::Dataset,
            out.path(),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        progress(&format!(
            "predict {}/{}: {} ({}, {} windows) {seconds:.1} s",
            i + 1,
            cases.len(),
            files.id,
            work.shape.map(|n| n.to_string()).join("x"),
            work.windows
        ));
        report.push(PredictedCase {
            id: files.id.clone(),
            grid: work.grid,
            cropped: work.shape,
            windows: work.windows,
            seconds,
        });
    }
    let seconds: Vec<f64> = report.iter().map(|c| c.seconds).collect();
    Ok(PredictReport {
        median_s: median(&seconds),
        cases: report,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// Sliding-window inference, as validation runs it, over one random case of `shape`.
fn infer_case(
    net: &UNet,
    experiment: &Experiment,
    channels: usize,
    shape: [i64; 3],
    progress: &dyn Fn(&str),
) -> InferenceReport {
    let [x, y, z] = shape;
    let volume = Tensor::randn([1, channels as i64, z, y, x], (Kind::Float, Device::Cpu));
    let validate = &experiment.validate;
    let sliding = SlidingWindow::new(validate);
    let windows = sliding.count([z, y, x]);
    progress(&format!(
        "inference: {windows} windows over {x}x{y}x{z}, {} at a time",
        validate.window_batch
    ));
    let start = Instant::now();
    let labels = sliding.labels(net, &volume);
    let seconds = start.elapsed().as_secs_f64();
    debug_assert_eq!(labels.len() as i64, x * y * z);
    InferenceReport {
        case: shape,
        window: validate.window,
        overlap: validate.overlap,
        gaussian: validate.gaussian,
        windows,
        window_batch: validate.window_batch,
        seconds,
        voxels_per_s: (x * y * z) as f64 / seconds,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// A batch of normally distributed images and uniformly drawn labels.
fn random_batch(size: usize, channels: usize, patch: [usize; 3], seed: u64) -> Batch {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut batch = Batch::new(size, channels, patch);
    for v in &mut batch.images {
        // Sum of uniforms: close enough to normal for timing, no extra dependency.
        *v = (0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0;
    }
    for l in &mut batch.labels {
        *l = rng.random_range(0..4u8);
    }
    batch
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The process's peak resident memory so far, in MiB (as Python's `ru_maxrss / 1024`, so the
/// reference's figures compare).
fn peak_rss_mb() -> f64 {
    crate::train::peak_rss_kib().map_or(f64::NAN, |kib| kib / 1024.0)
}

impl Report {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut text = format!(
            "network      {} parameters, {} threads\n\
             precision    {}\n\
             training     batch {} of {}x{}x{}: {:.3} s/step (median of {}), {:.2} patches/s, {:.1} GFLOP/s\n\
             peak RSS     {:.0} MB after training\n",
            self.params,
            self.threads,
            self.precision_reason,
            self.batch,
            self.patch[0],
            self.patch[1],
            self.patch[2],
            self.median_step_s,
            self.steps - 1,
            self.patches_per_s,
            self.gflops,
            self.peak_rss_mb,
        );
        if let Some(i) = &self.inference {
            text.push_str(&format!(
                "inference    {}x{}x{} case, {} windows of {}x{}x{} (overlap {}, {} at a time): {:.1} s, {:.2} Mvoxels/s, peak RSS {:.0} MB\n",
                i.case[0],
                i.case[1],
                i.case[2],
                i.windows,
                i.window[0],
                i.window[1],
                i.window[2],
                i.overlap,
                i.window_batch,
                i.seconds,
                i.voxels_per_s / 1e6,
                i.peak_rss_mb
            ));
        }
        if let Some(p) = &self.predict {
            let windows: Vec<f64> = p.cases.iter().map(|c| c.windows as f64).collect();
            text.push_str(&format!(
                "predict      {} case(s) end to end: {:.1} s per case (median; {} windows median), peak RSS {:.0} MB\n",
                p.cases.len(),
                p.median_s,
                median(&windows),
                p.peak_rss_mb
            ));
        }
        text
    }
}
