//! The experiment file as written: every key optional, nothing checked yet.
//!
//! serde rejects unknown keys and wrong types here; ranges, names and paths are checked
//! when [`super::Experiment`] is built from it. Named choices stay strings so that a bad
//! name gets segtop's own message listing what is allowed.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawExperiment {
    pub data: RawData,
    pub model: RawModel,
    pub train: RawTrain,
    pub augment: RawAugment,
    pub validate: RawValidate,
    pub preview: RawPreview,
    pub run: RawRun,
    pub slurm: RawSlurm,
    /// Checked and expanded by [`super::sweep`]; a single run ignores it.
    pub sweep: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawData {
    pub root: Option<String>,
    pub layout: Option<String>,
    pub modalities: Option<Vec<String>>,
    /// `"none"`, `"foreground"` or `[[x0, x1], [y0, y1], [z0, z1]]`.
    pub crop: Option<toml::Value>,
    pub normalization: Option<String>,
    pub clip_percentiles: Option<[f64; 2]>,
    pub min_tumour_fraction: Option<f64>,
    pub split: Option<[f64; 3]>,
    pub split_seed: Option<u64>,
    pub folds: Option<u32>,
    pub fold: Option<u32>,
    pub cache_dir: Option<String>,
    pub skip_bad_cases: Option<bool>,
    pub synthetic: Option<RawSynthetic>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSynthetic {
    pub cases: Option<u32>,
    pub seed: Option<u64>,
    pub shape: Option<[u32; 3]>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    pub base_filters: Option<u32>,
    pub depth: Option<u32>,
    /// One probability for every level, or one per level.
    pub dropout: Option<toml::Value>,
    pub norm: Option<String>,
    pub groups: Option<u32>,
    pub activation: Option<String>,
    pub upsample: Option<String>,
    pub residual: Option<bool>,
    pub deep_supervision: Option<bool>,
    pub output: Option<String>,
    /// A run id, a run directory or a `.safetensors` file to start from.
    pub init: Option<String>,
    pub init_partial: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrain {
    pub patch_size: Option<[u32; 3]>,
    pub batch_size: Option<u32>,
    pub epochs: Option<u32>,
    /// A duration like `"30m"` or `"1h30m"`.
    pub budget: Option<String>,
    /// Blocks of the network (`"enc.0"`) whose weights stay fixed.
    pub freeze: Option<Vec<String>>,
    pub patches_per_epoch: Option<u32>,
    pub foreground_fraction: Option<f64>,
    pub foreground_sampling: Option<String>,
    pub optimizer: Option<String>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub momentum: Option<f64>,
    pub grad_clip: Option<f64>,
    pub schedule: Option<String>,
    pub plateau_factor: Option<f64>,
    pub plateau_patience: Option<u32>,
    pub min_lr: Option<f64>,
    pub warmup_epochs: Option<u32>,
    pub early_stopping_patience: Option<u32>,
    pub seed: Option<u64>,
    pub threads: Option<u32>,
    pub precision: Option<String>,
    pub loss: RawLoss,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoss {
    pub dice: Option<f64>,
    pub ce: Option<f64>,
    pub focal: Option<f64>,
    pub focal_gamma: Option<f64>,
    pub dice_include_background: Option<bool>,
    pub class_weights: Option<[f64; 4]>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAugment {
    pub enabled: Option<bool>,
    pub rotate_degrees: Option<f64>,
    pub rotate_p: Option<f64>,
    pub rotate90_p: Option<f64>,
    pub scale: Option<[f64; 2]>,
    pub scale_p: Option<f64>,
    pub flip_axes: Option<Vec<u32>>,
    pub flip_p: Option<f64>,
    pub brightness: Option<[f64; 2]>,
    pub brightness_p: Option<f64>,
    pub gamma: Option<[f64; 2]>,
    pub gamma_p: Option<f64>,
    pub noise_sigma: Option<f64>,
    pub noise_p: Option<f64>,
    pub lowres_p: Option<f64>,
    pub lowres_zoom: Option<[f64; 2]>,
    pub thick_slices_p: Option<f64>,
    pub thick_slices: Option<[f64; 2]>,
    pub bias_field_p: Option<f64>,
    pub bias_field: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawValidate {
    /// A number of epochs, or `"auto"`.
    pub every: Option<toml::Value>,
    pub window: Option<[u32; 3]>,
    pub overlap: Option<f64>,
    pub gaussian: Option<bool>,
    pub window_batch: Option<u32>,
    pub cases: Option<u32>,
    pub hd95: Option<bool>,
    pub select: Option<String>,
    pub tta: Option<bool>,
    pub postprocess: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPreview {
    pub case: Option<String>,
    pub modality: Option<String>,
    pub axis: Option<String>,
    pub every: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRun {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub notes: Option<String>,
    pub launcher: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSlurm {
    pub partition: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub extra_args: Option<Vec<String>>,
    pub signal_seconds: Option<u32>,
    pub requeue: Option<bool>,
    pub trainer: Option<String>,
}
