//! Experiment files: what to train on, which network, how to train, validate and preview it.
//!
//! An experiment is a TOML file in `experiments/`. [`Experiment::load`] parses it into
//! [`raw::RawExperiment`], then checks every value and fills unset keys with the defaults
//! below (each section's `Default`), so the checked [`Experiment`] is the only form that
//! travels on: into `segtop check`, into a run directory, into the trainer.
//!
//! Relative paths (`data.root`, `data.cache_dir`) are resolved against the workspace: the
//! directory segtop runs in, which holds `experiments/` and `runs/`.
//!
//! The defaults follow what works on real skull-stripped multi-modal MRI (nnU-Net's
//! choices where they apply: z-score over brain voxels, foreground-oversampled patches drawn
//! per tumour label, instance norm, the evaluated regions as outputs with Dice + binary
//! cross-entropy, as nnU-Net's BraTS configuration), plus augmentation that makes scans look
//! like those of older scanners (thick slices, low resolution, bias fields). `experiments/seed-tutorial.toml` spells out the
//! seed tutorial's recipe value for value instead.

pub mod catalog;
pub mod cost;
pub mod raw;
pub mod slurm;
pub mod sweep;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::budget::Budget;
use crate::choice_enum;
use crate::config::{Checker, Choice, ConfigError, Source};
use raw::RawExperiment;
pub use slurm::SlurmConfig;

/// The most cross-validation folds (`data.folds`).
pub const MAX_FOLDS: u32 = 20;

/// The most epochs a time budget may plan when `train.epochs` is not set beside it.
pub const MAX_BUDGET_EPOCHS: u32 = 10_000;

/// Keys added after runs were first frozen, each with the value (TOML) that does what segtop
/// did before the key existed (see [`Experiment::load_frozen`]).
pub const KEYS_ADDED_LATER: &[(&str, &str)] = &[
    ("model.output", "'labels'"),
    ("train.foreground_sampling", "'any-tumour'"),
    ("augment.lowres_p", "0.0"),
    ("augment.thick_slices_p", "0.0"),
    ("augment.bias_field_p", "0.0"),
];

/// Keys that have no default and are written out only when set, with the key the
/// experiment editor lists each after.
pub const OPTIONAL_KEYS: &[(&str, &str)] = &[
    ("model.init", "model.deep_supervision"),
    ("train.budget", "train.epochs"),
];

/// Number of labels a label-trained network scores: background, NCR/NETC, ED/SNFH, ET.
pub const NUM_CLASSES: usize = 4;

/// Number of evaluated regions a region-trained network scores: WT, TC, ET.
pub const NUM_REGIONS: usize = 3;

/// A checked experiment: every value in range, every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub augment: AugmentConfig,
    pub validate: ValidateConfig,
    pub preview: PreviewConfig,
    pub run: RunConfig,
    /// Written out only when it differs from the defaults (runs on this machine ignore it).
    #[serde(skip_serializing_if = "SlurmConfig::is_default")]
    pub slurm: SlurmConfig,
}

choice_enum! {
    /// The MRI sequences of a BraTS case, by their BraTS 2023+ file suffixes.
    pub enum Modality {
        /// Native T1 (older BraTS: `t1`).
        T1n => "t1n",
        /// Contrast-enhanced T1 (older BraTS: `t1ce`).
        T1c => "t1c",
        /// T2-weighted (older BraTS: `t2`).
        T2w => "t2w",
        /// T2 FLAIR (older BraTS: `flair`).
        T2f => "t2f",
    }
}

choice_enum! {
    /// How case folders and files are named.
    pub enum Layout {
        /// Detect per dataset: BraTS 2023+ suffixes first, then the older ones.
        Auto => "auto",
        /// `BraTS-SSA-00002-000-t1n.nii.gz`, labels 0-3.
        Brats2023 => "brats2023",
        /// `BraTS2021_00000_t1ce.nii.gz`, enhancing tumour labelled 4.
        Legacy => "legacy",
    }
}

choice_enum! {
    /// Intensity normalisation applied to each modality of each case.
    pub enum Normalization {
        /// The seed notebook's MinMaxScaler: each axial slice scaled to [0, 1] on its own.
        SliceMinMax => "slice-minmax",
        /// The whole volume scaled to [0, 1].
        VolumeMinMax => "volume-minmax",
        /// nnU-Net style: clip to percentiles, then zero mean and unit variance over brain
        /// (non-zero) voxels; background stays 0.
        ZScore => "zscore",
    }
}

choice_enum! {
    pub enum Norm {
        None => "none",
        Batch => "batch",
        Instance => "instance",
        Group => "group",
    }
}

choice_enum! {
    /// What the network's output channels stand for.
    pub enum Output {
        /// One channel per label (background, NCR, ED, ET) under a softmax: each voxel gets
        /// the label of highest probability.
        Labels => "labels",
        /// One channel per evaluated region (WT, TC, ET), each its own sigmoid, trained with
        /// Dice and binary cross-entropy per region (nnU-Net's BraTS configuration). Turned
        /// back into labels by thresholding the regions at 0.5, outermost first.
        Regions => "regions",
    }
}

impl Output {
    /// Channels of the network's last layer.
    pub fn channels(self) -> usize {
        match self {
            Output::Labels => NUM_CLASSES,
            Output::Regions => NUM_REGIONS,
        }
    }
}

choice_enum! {
    /// Where patches centred on tumour are centred.
    pub enum ForegroundSampling {
        /// A tumour label present in the case is drawn first, each equally likely, then a
        /// voxel of it: small sub-regions (enhancing tumour, necrosis) are centred as often as
        /// oedema (nnU-Net's per-class oversampling).
        ClassBalanced => "class-balanced",
        /// A tumour voxel drawn uniformly: mostly oedema, the largest sub-region.
        AnyTumour => "any-tumour",
    }
}

choice_enum! {
    pub enum Activation {
        Relu => "relu",
        LeakyRelu => "leaky-relu",
    }
}

choice_enum! {
    pub enum Upsample {
        Transposed => "transposed",
        Trilinear => "trilinear",
    }
}

choice_enum! {
    pub enum Optimizer {
        Nadam => "nadam",
        Adam => "adam",
        Adamw => "adamw",
        Sgd => "sgd",
    }
}

choice_enum! {
    pub enum Schedule {
        /// Multiply the learning rate by `plateau_factor` when the validation score has not
        /// improved for `plateau_patience` validations, down to `min_lr`.
        Plateau => "plateau",
        /// Linear warm-up for `warmup_epochs`, then cosine decay to `min_lr`.
        Cosine => "cosine",
        None => "none",
    }
}

choice_enum! {
    /// The number format the network computes in (see [`crate::cpu`]).
    pub enum Precision {
        /// bfloat16 where the CPU has bfloat16 instructions (AVX512-BF16 or AMX), else float32.
        Auto => "auto",
        Float32 => "float32",
        /// Convolutions in bfloat16, with float32 master weights, optimizer, normalisation
        /// statistics, softmax and loss.
        Bfloat16 => "bfloat16",
    }
}

choice_enum! {
    pub enum Axis {
        Axial => "axial",
        Coronal => "coronal",
        Sagittal => "sagittal",
    }
}

/// Which part of each volume is kept before patches are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    /// The whole volume.
    None,
    /// The bounding box of non-zero voxels over all modalities (the brain).
    Foreground,
    /// A fixed box, `[start, end)` voxel indices per axis.
    Box([[u32; 2]; 3]),
}

impl Serialize for Crop {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Crop::None => serializer.serialize_str("none"),
            Crop::Foreground => serializer.serialize_str("foreground"),
            Crop::Box(bounds) => bounds.serialize(serializer),
        }
    }
}

impl fmt::Display for Crop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Crop::None => f.write_str("none"),
            Crop::Foreground => f.write_str("foreground"),
            Crop::Box([x, y, z]) => write!(f, "[{}:{}, {}:{}, {}:{}]", x[0], x[1], y[0], y[1], z[0], z[1]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataConfig {
    /// The dataset folder (absolute once resolved).
    pub root: PathBuf,
    pub layout: Layout,
    /// Input channels, in this order.
    pub modalities: Vec<Modality>,
    pub crop: Crop,
    pub normalization: Normalization,
    /// Percentiles (of brain voxels) that intensities are clipped to before z-scoring.
    pub clip_percentiles: [f64; 2],
    /// Cases whose cropped volume is at most this fraction tumour are left out (0: keep all).
    pub min_tumour_fraction: f64,
    /// Train, validation and test fractions; they sum to 1.
    pub split: [f64; 3],
    pub split_seed: u64,
    /// Cross-validation: the cases left after the test fraction, dealt into this many folds
    /// (0: no folds; `split`'s validation fraction then applies).
    pub folds: u32,
    /// The fold validated on (0-based); the other folds train.
    pub fold: u32,
    /// Where preprocessed cases are cached (absolute once resolved).
    pub cache_dir: PathBuf,
    /// Train without cases that fail to load, naming them, instead of stopping.
    pub skip_bad_cases: bool,
    /// Generate this many synthetic BraTS-layout cases into `root` when it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticConfig>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: PathBuf::new(),
            layout: Layout::Auto,
            modalities: vec![Modality::T1n, Modality::T1c, Modality::T2f, Modality::T2w],
            crop: Crop::Foreground,
            normalization: Normalization::ZScore,
            clip_percentiles: [0.5, 99.5],
            min_tumour_fraction: 0.0,
            split: [0.75, 0.15, 0.10],
            split_seed: 42,
            folds: 0,
            fold: 0,
            cache_dir: PathBuf::from("cache"),
            skip_bad_cases: false,
            synthetic: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticConfig {
    pub cases: u32,
    pub seed: u64,
    /// Volume shape; BraTS volumes are 240x240x155.
    pub shape: [u32; 3],
}

impl SyntheticConfig {
    /// What to generate, in the generator's terms.
    pub fn spec(&self) -> crate::data::synth::SynthSpec {
        crate::data::synth::SynthSpec {
            cases: self.cases,
            shape: self.shape.map(|n| n as usize),
            seed: self.seed,
        }
    }
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            cases: 12,
            seed: 7,
            shape: [240, 240, 155],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// Filters of the first level; each deeper level doubles them.
    pub base_filters: u32,
    /// Number of resolution levels (the seed U-Net has 5).
    pub depth: u32,
    /// Dropout between the two convolutions of each level, from the top level down.
    pub dropout: Vec<f64>,
    pub norm: Norm,
    /// Groups for `norm = "group"`.
    pub groups: u32,
    pub activation: Activation,
    pub upsample: Upsample,
    pub residual: bool,
    pub deep_supervision: bool,
    /// What the output channels stand for: labels (softmax) or regions (sigmoids).
    pub output: Output,
    /// Weights to start from: a run id, a run directory or a `.safetensors` file (see
    /// [`resolve_init`]); paths absolute once checked, and the weights file itself in a run's
    /// frozen experiment, which so records where its weights came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Load the tensors of `init` that match this network by name and shape and leave the
    /// rest at their initialisation, instead of refusing.
    pub init_partial: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            base_filters: 16,
            depth: 5,
            dropout: vec![0.0; 5],
            norm: Norm::Instance,
            groups: 8,
            activation: Activation::LeakyRelu,
            upsample: Upsample::Transposed,
            residual: false,
            deep_supervision: false,
            output: Output::Regions,
            init: None,
            init_partial: false,
        }
    }
}

impl ModelConfig {
    /// Filters per level, from the top level down (`[16, 32, 64, 128, 256]` for the seed).
    pub fn filters(&self) -> Vec<u32> {
        (0..self.depth).map(|level| self.base_filters << level).collect()
    }

    /// The network's blocks by the names its weights start with: `enc.0` (the top encoder
    /// level) to `enc.<depth-1>` (the bottleneck), `up.0`/`dec.0` (the deepest decoder level)
    /// onwards, `deep.N` for deep supervision, `out` (the 1x1 classifier).
    pub fn blocks(&self) -> Vec<String> {
        let depth = self.depth as usize;
        let mut blocks: Vec<String> = (0..depth).map(|i| format!("enc.{i}")).collect();
        for i in 0..depth.saturating_sub(1) {
            blocks.push(format!("up.{i}"));
            blocks.push(format!("dec.{i}"));
        }
        if self.deep_supervision {
            blocks.extend((0..depth.saturating_sub(2)).map(|i| format!("deep.{i}")));
        }
        blocks.push("out".to_string());
        blocks
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    pub patch_size: [u32; 3],
    pub batch_size: u32,
    /// Epochs to train; with a `budget`, the most the plan may reach.
    pub epochs: u32,
    /// Wall-clock time for the whole run (see [`crate::budget`]): the trainer plans the epochs
    /// that fit and runs the learning-rate schedule over them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    pub patches_per_epoch: u32,
    /// Share of patches centred on a tumour voxel; the rest are drawn uniformly.
    pub foreground_fraction: f64,
    /// How the tumour voxel those patches centre on is drawn.
    pub foreground_sampling: ForegroundSampling,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub weight_decay: f64,
    /// Momentum for `optimizer = "sgd"` (Nesterov).
    pub momentum: f64,
    /// Gradient-norm clipping (0: off).
    pub grad_clip: f64,
    pub schedule: Schedule,
    pub plateau_factor: f64,
    pub plateau_patience: u32,
    pub min_lr: f64,
    pub warmup_epochs: u32,
    /// Stop after this many validations without improvement (0: never).
    pub early_stopping_patience: u32,
    pub seed: u64,
    /// Blocks of the network (names from [`ModelConfig::blocks`], or a prefix of one such as
    /// `enc`) whose weights stay as initialised or loaded: no gradient, no optimizer state.
    pub freeze: Vec<String>,
    /// Torch threads (0: as many as the launcher grants, by default all cores).
    pub threads: u32,
    /// What the convolutions compute in, for training, validation and the end-of-run
    /// evaluation.
    pub precision: Precision,
    pub loss: LossConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            patch_size: [64, 64, 64],
            batch_size: 2,
            epochs: 100,
            budget: None,
            patches_per_epoch: 100,
            foreground_fraction: 0.33,
            foreground_sampling: ForegroundSampling::ClassBalanced,
            optimizer: Optimizer::Adamw,
            lr: 1e-3,
            weight_decay: 1e-4,
            momentum: 0.99,
            grad_clip: 1.0,
            schedule: Schedule::Cosine,
            plateau_factor: 0.5,
            plateau_patience: 5,
            min_lr: 1e-5,
            warmup_epochs: 2,
            early_stopping_patience: 15,
            seed: 42,
            freeze: Vec::new(),
            threads: 0,
            precision: Precision::Auto,
            loss: LossConfig::default(),
        }
    }
}

/// The training loss: `dice x soft Dice + ce x cross-entropy + focal x focal loss`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossConfig {
    pub dice: f64,
    pub ce: f64,
    pub focal: f64,
    pub focal_gamma: f64,
    pub dice_include_background: bool,
    /// Per-class weights (background, NCR, ED, ET) for Dice and cross-entropy.
    pub class_weights: [f64; 4],
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            dice: 1.0,
            ce: 1.0,
            focal: 0.0,
            focal_gamma: 2.0,
            dice_include_background: false,
            class_weights: [1.0; 4],
        }
    }
}

/// Random transforms of training patches; each applies with its probability `*_p`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AugmentConfig {
    pub enabled: bool,
    /// Rotation about each axis, up to this many degrees either way (labels: nearest).
    pub rotate_degrees: f64,
    pub rotate_p: f64,
    /// Probability of a quarter turn (90, 180 or 270 degrees) in a random plane.
    pub rotate90_p: f64,
    /// Isotropic zoom factor range.
    pub scale: [f64; 2],
    pub scale_p: f64,
    /// Axes (0, 1, 2 = x, y, z) that may be mirrored, each with `flip_p`.
    pub flip_axes: Vec<u32>,
    pub flip_p: f64,
    /// Multiplicative intensity range.
    pub brightness: [f64; 2],
    pub brightness_p: f64,
    pub gamma: [f64; 2],
    pub gamma_p: f64,
    pub noise_sigma: f64,
    pub noise_p: f64,
    /// Probability (per channel) of a lower-resolution scan: the patch down-sampled by a
    /// factor drawn from `lowres_zoom` on every axis and interpolated back.
    pub lowres_p: f64,
    pub lowres_zoom: [f64; 2],
    /// Probability (per patch) of thick slices along one random axis: groups of a thickness
    /// drawn from `thick_slices` (voxels) averaged, then interpolated back to the grid, as a
    /// thick-sliced acquisition resampled to 1 mm looks.
    pub thick_slices_p: f64,
    pub thick_slices: [f64; 2],
    /// Probability (per channel) of a smooth multiplicative intensity field (scanner
    /// inhomogeneity), `exp` of a random second-order polynomial of up to `bias_field` across
    /// the patch.
    pub bias_field_p: f64,
    pub bias_field: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: true,
            rotate_degrees: 15.0,
            rotate_p: 0.2,
            rotate90_p: 0.0,
            scale: [0.85, 1.25],
            scale_p: 0.2,
            flip_axes: vec![0, 1, 2],
            flip_p: 0.5,
            brightness: [0.75, 1.25],
            brightness_p: 0.15,
            gamma: [0.7, 1.5],
            gamma_p: 0.3,
            noise_sigma: 0.1,
            noise_p: 0.1,
            lowres_p: 0.15,
            lowres_zoom: [0.5, 1.0],
            thick_slices_p: 0.2,
            thick_slices: [2.0, 6.0],
            bias_field_p: 0.2,
            bias_field: 0.3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidateConfig {
    /// Validate every this many epochs.
    pub every: u32,
    /// Sliding-window size; defaults to the training patch size.
    pub window: [u32; 3],
    /// Overlap between neighbouring windows, as a fraction of the window.
    pub overlap: f64,
    /// Weight each window's voxels by a Gaussian centred in the window.
    pub gaussian: bool,
    /// Windows run through the network at once.
    pub window_batch: u32,
    /// Validation cases used during training (0: all of them).
    pub cases: u32,
    /// Compute HD95 at every validation, not only at the end.
    pub hd95: bool,
    /// Which Dice picks the best checkpoint and drives early stopping and the plateau schedule.
    pub select: Selection,
    /// Mirror test-time augmentation (over `augment.flip_axes`) in the end-of-run evaluation.
    pub tta: bool,
    /// Learn post-processing on the validation cases at the end of the run and apply it in
    /// the end-of-run evaluation.
    pub postprocess: bool,
}

choice_enum! {
    /// The validation score that model selection follows.
    pub enum Selection {
        /// Whole-image Dice per region (BraTS "legacy" Dice).
        Legacy => "legacy",
        /// The official lesion-wise Dice per region (BraTS-SSA 2024 parameters).
        Lesion => "lesion",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewConfig {
    /// Case id shown in the slice preview ("" for the first validation case).
    pub case: String,
    pub modality: Modality,
    pub axis: Axis,
    /// Save a prediction of the preview case every this many epochs.
    pub every: u32,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig {
            case: String::new(),
            modality: Modality::T2f,
            axis: Axis::Axial,
            every: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    /// Name of runs of this experiment; defaults to the file name without `.toml`.
    pub name: String,
    pub tags: Vec<String>,
    pub notes: String,
    /// Where its runs train: on this machine, or as Slurm jobs (see `[slurm]`).
    pub launcher: LauncherKind,
}

choice_enum! {
    /// Where runs train.
    pub enum LauncherKind {
        /// On this machine, started by segtop's queue as cores and memory allow.
        Local => "local",
        /// As Slurm batch jobs, submitted with `sbatch` (settings in `[slurm]`).
        Slurm => "slurm",
    }
}

/// Runs train on this machine unless an experiment says otherwise.
impl Default for LauncherKind {
    fn default() -> LauncherKind {
        LauncherKind::Local
    }
}

impl Experiment {
    /// Reads, parses and checks the experiment file at `path`; relative paths inside it
    /// are resolved against `workspace`.
    pub fn load(path: &Path, workspace: &Path) -> Result<Experiment, ConfigError> {
        Experiment::parse(path, &crate::config::read_text(path)?, workspace)
    }

    /// Reads a run's frozen experiment (`experiment.toml` in its run directory). Frozen
    /// experiments spell out every key, so a key missing from one was added to segtop after
    /// the run was made: it gets the value that reproduces what segtop did then
    /// ([`KEYS_ADDED_LATER`]), not today's default, and old runs resume, predict and
    /// fine-tune as they trained.
    pub fn load_frozen(path: &Path, workspace: &Path) -> Result<Experiment, ConfigError> {
        let text = crate::config::read_text(path)?;
        let Ok(mut document) = text.parse::<toml_edit::DocumentMut>() else {
            // Not TOML: the parse below reports where.
            return Experiment::parse(path, &text, workspace);
        };
        let mut added = false;
        for (key, before) in KEYS_ADDED_LATER {
            if get_value(&document, key).is_none()
                && let Ok(value) = before.parse::<toml_edit::Value>()
            {
                set_value(&mut document, key, value);
                added = true;
            }
        }
        if !added {
            return Experiment::parse(path, &text, workspace);
        }
        Experiment::parse(path, &document.to_string(), workspace)
    }

    /// Parses and checks experiment text that was read from `path`.
    pub fn parse(path: &Path, text: &str, workspace: &Path) -> Result<Experiment, ConfigError> {
        let (raw, source) = Source::parse::<RawExperiment>(path, text)?;
        let mut check = Checker::new(source);
        let experiment = check_experiment(&mut check, raw, workspace);
        check.finish(experiment)
    }

    /// The experiment as a TOML file with every default written out, which parses back into
    /// an equal `Experiment`.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of numbers, strings and arrays cannot fail.
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot serialize: {error}\n"))
    }

    /// Problems with the files the experiment points at, which can change after it is
    /// written, so they are not parse errors: a missing dataset folder, say.
    pub fn check_paths(&self, workspace: &Path) -> Vec<PathProblem> {
        let root = &self.data.root;
        let mut problems = Vec::new();
        if self.data.folds > 0 {
            // The folds need cases: as many as the dataset has, or will have once generated.
            let cases = match &self.data.synthetic {
                Some(synthetic) => Some(synthetic.cases as usize),
                None => crate::data::case::discover(root, self.data.layout)
                    .ok()
                    .map(|d| d.cases.len()),
            };
            if let Some(cases) = cases {
                let ids: Vec<String> = (0..cases).map(|i| format!("{i:06}")).collect();
                let data = &self.data;
                if let Err(message) =
                    crate::data::dataset::fold_split(&ids, data.split[2], data.split_seed, data.folds, data.fold)
                {
                    problems.push(PathProblem {
                        key: "data.folds",
                        message,
                        fatal: true,
                    });
                }
            }
        }
        if let Some(init) = &self.model.init
            && let Err(message) = resolve_init(init, &workspace.join("runs"))
        {
            problems.push(PathProblem {
                key: "model.init",
                message,
                fatal: true,
            });
        }
        if let Some(synthetic) = &self.data.synthetic {
            if !crate::data::synth::is_complete(root, &synthetic.spec()) {
                problems.push(PathProblem {
                    key: "data.root",
                    message: format!(
                        "data.root = '{}' does not hold its {} synthetic demo cases yet; they are generated on first use",
                        root.display(),
                        synthetic.cases
                    ),
                    fatal: false,
                });
            }
        } else if !root.exists() {
            problems.push(PathProblem {
                key: "data.root",
                message: format!(
                    "data.root = '{}' does not exist: point it at your BraTS folder",
                    root.display()
                ),
                fatal: true,
            });
        } else if !root.is_dir() {
            problems.push(PathProblem {
                key: "data.root",
                message: format!("data.root = '{}' is not a folder", root.display()),
                fatal: true,
            });
        }
        problems
    }
}

/// Sets the dotted `key` (`train.lr`) in an experiment document to `value`, creating the
/// tables on the way. A value already there keeps its place and its comments.
pub fn set_value(document: &mut toml_edit::DocumentMut, key: &str, value: toml_edit::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, tables)) = parts.split_last() else {
        return;
    };
    let mut table = document.as_table_mut() as &mut dyn toml_edit::TableLike;
    for part in tables {
        let entry = table.entry(part).or_insert_with(|| {
            let mut new = toml_edit::Table::new();
            new.set_implicit(true);
            toml_edit::Item::Table(new)
        });
        let Some(next) = entry.as_table_like_mut() else {
            // A key that is not a table here: the experiment check reports the bad value.
            return;
        };
        table = next;
    }
    let mut value = value;
    if let Some(old) = table.get(last).and_then(toml_edit::Item::as_value) {
        *value.decor_mut() = old.decor().clone();
    }
    table.insert(last, toml_edit::Item::Value(value));
}

/// The dotted `key`'s item in an experiment document, if it is there.
pub fn get_value<'a>(document: &'a toml_edit::DocumentMut, key: &str) -> Option<&'a toml_edit::Value> {
    let mut item = document.as_item();
    for part in key.split('.') {
        item = item.as_table_like()?.get(part)?;
    }
    item.as_value()
}

/// Removes the dotted `key` from an experiment document (it goes back to its default).
pub fn remove_value(document: &mut toml_edit::DocumentMut, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, tables)) = parts.split_last() else {
        return;
    };
    let mut table = document.as_table_mut() as &mut dyn toml_edit::TableLike;
    for part in tables {
        let Some(next) = table.get_mut(part).and_then(toml_edit::Item::as_table_like_mut) else {
            return;
        };
        table = next;
    }
    table.remove(last);
}

/// The names a named-choice key accepts (`train.optimizer`: adamw, nadam, ...), for keys
/// that take one name.
pub fn choices(key: &str) -> Option<&'static [&'static str]> {
    Some(match key {
        "data.layout" => Layout::NAMES,
        "data.normalization" => Normalization::NAMES,
        "model.norm" => Norm::NAMES,
        "model.activation" => Activation::NAMES,
        "model.upsample" => Upsample::NAMES,
        "model.output" => Output::NAMES,
        "train.foreground_sampling" => ForegroundSampling::NAMES,
        "train.optimizer" => Optimizer::NAMES,
        "train.schedule" => Schedule::NAMES,
        "train.precision" => Precision::NAMES,
        "preview.modality" => Modality::NAMES,
        "preview.axis" => Axis::NAMES,
        "run.launcher" => LauncherKind::NAMES,
        _ => return None,
    })
}

/// Something an experiment points at that is not (yet) there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem {
    /// The dotted key whose value points there.
    pub key: &'static str,
    pub message: String,
    /// Whether a run cannot start until the user fixes it (rather than segtop providing it).
    pub fatal: bool,
}

fn check_experiment(check: &mut Checker, raw: RawExperiment, workspace: &Path) -> Experiment {
    let data = check_data(check, raw.data, workspace);
    let model = check_model(check, raw.model, workspace);
    let train = check_train(check, raw.train, &model);
    let augment = check_augment(check, raw.augment);
    let validate = check_validate(check, raw.validate, &train, &model);
    let preview = check_preview(check, raw.preview);
    let run = check_run(check, raw.run);
    let slurm = slurm::check(check, raw.slurm, &train);
    Experiment {
        data,
        model,
        train,
        augment,
        validate,
        preview,
        run,
        slurm,
    }
}

fn resolve(workspace: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace.join(path)
    }
}

fn probability(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

fn non_negative(x: f64) -> bool {
    x >= 0.0 && x.is_finite()
}

/// Checks a `[low, high]` pair: both allowed by `each`, and in order.
fn range_pair(
    check: &mut Checker,
    key: &str,
    raw: Option<[f64; 2]>,
    default: [f64; 2],
    each: fn(f64) -> bool,
    rule: &str,
) -> [f64; 2] {
    let Some([low, high]) = raw else {
        return default;
    };
    if !each(low) || !each(high) {
        check.error(key, format!("{key} = [{low}, {high}] is out of range: {rule}"));
        default
    } else if low > high {
        check.error(
            key,
            format!("{key} = [{low}, {high}] is out of range: the first value must not exceed the second"),
        );
        default
    } else {
        [low, high]
    }
}

fn check_data(check: &mut Checker, raw: raw::RawData, workspace: &Path) -> DataConfig {
    let defaults = DataConfig::default();
    let root = match raw.root.as_deref() {
        Some("") => {
            check.error(
                "data.root",
                "data.root = '' is empty: set it to your BraTS folder".to_string(),
            );
            PathBuf::new()
        }
        Some(root) => resolve(workspace, root),
        None => {
            check.error(
                "data",
                "data.root is missing: set it to your BraTS folder, e.g. root = \"data/BraTS-Africa\"".to_string(),
            );
            PathBuf::new()
        }
    };
    let layout = check.choice("data.layout", raw.layout.as_deref(), defaults.layout);

    let modalities = match raw.modalities {
        None => defaults.modalities,
        Some(names) => {
            let mut modalities = Vec::new();
            for name in &names {
                match Modality::from_name(name) {
                    Some(m) if modalities.contains(&m) => {
                        check.error("data.modalities", format!("data.modalities lists '{name}' twice"));
                    }
                    Some(m) => modalities.push(m),
                    None => check.error(
                        "data.modalities",
                        format!(
                            "data.modalities: '{name}' is not one of: {}",
                            Modality::NAMES.join(", ")
                        ),
                    ),
                }
            }
            if names.is_empty() {
                check.error(
                    "data.modalities",
                    "data.modalities = [] is empty: list at least one of t1n, t1c, t2w, t2f".to_string(),
                );
            }
            modalities
        }
    };

    let crop = match raw.crop {
        None => defaults.crop,
        Some(value) => check_crop(check, &value),
    };
    let normalization = check.choice(
        "data.normalization",
        raw.normalization.as_deref(),
        defaults.normalization,
    );
    let clip_percentiles = range_pair(
        check,
        "data.clip_percentiles",
        raw.clip_percentiles,
        defaults.clip_percentiles,
        |p| (0.0..=100.0).contains(&p),
        "percentiles must be between 0 and 100",
    );
    let min_tumour_fraction = check.value(
        "data.min_tumour_fraction",
        raw.min_tumour_fraction,
        defaults.min_tumour_fraction,
        |f| (0.0..1.0).contains(&f),
        "must be at least 0 and below 1",
    );
    let split = match raw.split {
        None => defaults.split,
        Some(split) => {
            let sum: f64 = split.iter().sum();
            if split.iter().any(|f| !non_negative(*f)) || (sum - 1.0).abs() > 1e-6 || split[0] <= 0.0 {
                check.error(
                    "data.split",
                    format!(
                        "data.split = [{}, {}, {}] is out of range: train, validation and test fractions must be non-negative, sum to 1, and train above 0",
                        split[0], split[1], split[2]
                    ),
                );
                defaults.split
            } else {
                split
            }
        }
    };
    let cache_dir = match raw.cache_dir.as_deref() {
        Some("") => {
            check.error("data.cache_dir", "data.cache_dir = '' is empty".to_string());
            resolve(workspace, "cache")
        }
        Some(dir) => resolve(workspace, dir),
        None => workspace.join(&defaults.cache_dir),
    };
    let synthetic = raw.synthetic.map(|raw| {
        let defaults = SyntheticConfig::default();
        let cases = check.value(
            "data.synthetic.cases",
            raw.cases,
            defaults.cases,
            |n| (3..=1000).contains(&n),
            "must be between 3 and 1000",
        );
        let shape = match raw.shape {
            Some(shape) if shape.iter().any(|&n| !(16..=512).contains(&n)) => {
                check.error(
                    "data.synthetic.shape",
                    format!(
                        "data.synthetic.shape = [{}, {}, {}] is out of range: each side must be between 16 and 512",
                        shape[0], shape[1], shape[2]
                    ),
                );
                defaults.shape
            }
            Some(shape) => shape,
            None => defaults.shape,
        };
        SyntheticConfig {
            cases,
            seed: raw.seed.unwrap_or(defaults.seed),
            shape,
        }
    });
    let folds = check.value(
        "data.folds",
        raw.folds,
        defaults.folds,
        |k| k == 0 || (2..=MAX_FOLDS).contains(&k),
        &format!("use 2 to {MAX_FOLDS} folds, or 0 for none"),
    );
    let fold = match raw.fold {
        Some(fold) if folds == 0 && fold > 0 => {
            check.error(
                "data.fold",
                format!("data.fold = {fold} needs data.folds: set data.folds = 5 (say) for 5-fold cross-validation"),
            );
            0
        }
        Some(fold) if folds > 0 && fold >= folds => {
            check.error(
                "data.fold",
                format!(
                    "data.fold = {fold} is out of range: with data.folds = {folds} the folds are numbered 0 to {}",
                    folds - 1
                ),
            );
            0
        }
        Some(fold) => fold,
        None => defaults.fold,
    };
    DataConfig {
        folds,
        fold,
        root,
        layout,
        modalities,
        crop,
        normalization,
        clip_percentiles,
        min_tumour_fraction,
        split,
        split_seed: raw.split_seed.unwrap_or(defaults.split_seed),
        cache_dir,
        skip_bad_cases: raw.skip_bad_cases.unwrap_or(defaults.skip_bad_cases),
        synthetic,
    }
}

fn check_crop(check: &mut Checker, value: &toml::Value) -> Crop {
    const RULE: &str = "must be 'none', 'foreground' or [[x0, x1], [y0, y1], [z0, z1]] with 0 <= start < end";
    match value {
        toml::Value::String(name) if name == "none" => return Crop::None,
        toml::Value::String(name) if name == "foreground" => return Crop::Foreground,
        toml::Value::Array(axes) if axes.len() == 3 => {
            let mut bounds = [[0u32; 2]; 3];
            let mut ok = true;
            for (axis, pair) in axes.iter().enumerate() {
                let pair = pair
                    .as_array()
                    .map(|p| p.iter().filter_map(toml::Value::as_integer).collect::<Vec<_>>());
                match pair.as_deref() {
                    Some(&[start, end]) if 0 <= start && start < end && end <= u32::MAX as i64 => {
                        bounds[axis] = [start as u32, end as u32];
                    }
                    _ => ok = false,
                }
            }
            if ok {
                return Crop::Box(bounds);
            }
        }
        _ => {}
    }
    check.error("data.crop", format!("data.crop = {value} is not allowed: {RULE}"));
    Crop::Foreground
}

/// Whether `model.init` names a file or folder (rather than a run id in `runs/`).
fn looks_like_path(text: &str) -> bool {
    text.contains('/') || text.ends_with(".safetensors") || text == "." || text == ".."
}

fn check_model(check: &mut Checker, raw: raw::RawModel, workspace: &Path) -> ModelConfig {
    let defaults = ModelConfig::default();
    let base_filters = check.value(
        "model.base_filters",
        raw.base_filters,
        defaults.base_filters,
        |n| (1..=256).contains(&n),
        "must be between 1 and 256",
    );
    let depth = check.value(
        "model.depth",
        raw.depth,
        defaults.depth,
        |n| (2..=7).contains(&n),
        "must be between 2 and 7",
    );
    let dropout = match raw.dropout {
        None => vec![0.0; depth as usize],
        Some(value) => check_dropout(check, &value, depth),
    };
    let norm = check.choice("model.norm", raw.norm.as_deref(), defaults.norm);
    let groups = check.value(
        "model.groups",
        raw.groups,
        defaults.groups,
        |g| g >= 1,
        "must be at least 1",
    );
    if norm == Norm::Group && !base_filters.is_multiple_of(groups) {
        check.error(
            "model.groups",
            format!("model.groups = {groups} is out of range: must divide model.base_filters = {base_filters} for group norm"),
        );
    }
    ModelConfig {
        base_filters,
        depth,
        dropout,
        norm,
        groups,
        activation: check.choice("model.activation", raw.activation.as_deref(), defaults.activation),
        upsample: check.choice("model.upsample", raw.upsample.as_deref(), defaults.upsample),
        residual: raw.residual.unwrap_or(defaults.residual),
        deep_supervision: raw.deep_supervision.unwrap_or(defaults.deep_supervision),
        output: check.choice("model.output", raw.output.as_deref(), defaults.output),
        init: match raw.init.as_deref() {
            Some("") => {
                check.error(
                    "model.init",
                    "model.init = '' is empty: name a run, a run directory or a .safetensors file".to_string(),
                );
                None
            }
            Some(init) if looks_like_path(init) => Some(resolve(workspace, init).display().to_string()),
            Some(run) => Some(run.to_string()),
            None => None,
        },
        init_partial: raw.init_partial.unwrap_or(defaults.init_partial),
    }
}

fn check_dropout(check: &mut Checker, value: &toml::Value, depth: u32) -> Vec<f64> {
    let as_probability = |v: &toml::Value| match v {
        toml::Value::Float(f) if (0.0..1.0).contains(f) => Some(*f),
        toml::Value::Integer(0) => Some(0.0),
        _ => None,
    };
    match value {
        toml::Value::Array(levels) => {
            let parsed: Option<Vec<f64>> = levels.iter().map(as_probability).collect();
            match parsed {
                Some(levels) if levels.len() == depth as usize => return levels,
                Some(levels) => check.error(
                    "model.dropout",
                    format!(
                        "model.dropout has {} values but model.depth = {depth}: give one per level, or a single number",
                        levels.len()
                    ),
                ),
                None => check.error(
                    "model.dropout",
                    format!("model.dropout = {value} is out of range: each must be at least 0 and below 1"),
                ),
            }
        }
        single => match as_probability(single) {
            Some(p) => return vec![p; depth as usize],
            None => check.error(
                "model.dropout",
                format!("model.dropout = {value} is not allowed: give a probability in [0, 1) or one per level"),
            ),
        },
    }
    vec![0.0; depth as usize]
}

fn check_train(check: &mut Checker, raw: raw::RawTrain, model: &ModelConfig) -> TrainConfig {
    let defaults = TrainConfig::default();
    let patch_size = check_patch("train.patch_size", check, raw.patch_size, defaults.patch_size, model);
    let lr = check.value("train.lr", raw.lr, defaults.lr, positive, "must be above 0");
    let min_lr = check.value(
        "train.min_lr",
        raw.min_lr,
        defaults.min_lr,
        non_negative,
        "must be at least 0",
    );
    if min_lr > lr {
        check.error(
            "train.min_lr",
            format!("train.min_lr = {min_lr} is out of range: must not exceed train.lr = {lr}"),
        );
    }
    let loss = check_loss(check, raw.loss);
    let budget = raw.budget.as_deref().and_then(|text| match Budget::parse(text) {
        Ok(budget) => Some(budget),
        Err(problem) => {
            check.error("train.budget", format!("train.budget = {problem}"));
            None
        }
    });
    TrainConfig {
        patch_size,
        batch_size: check.value(
            "train.batch_size",
            raw.batch_size,
            defaults.batch_size,
            |n| (1..=256).contains(&n),
            "must be between 1 and 256",
        ),
        epochs: check.value(
            "train.epochs",
            raw.epochs,
            if budget.is_some() {
                MAX_BUDGET_EPOCHS
            } else {
                defaults.epochs
            },
            |n| n >= 1,
            "must be at least 1",
        ),
        budget,
        patches_per_epoch: check.value(
            "train.patches_per_epoch",
            raw.patches_per_epoch,
            defaults.patches_per_epoch,
            |n| n >= 1,
            "must be at least 1",
        ),
        foreground_fraction: check.value(
            "train.foreground_fraction",
            raw.foreground_fraction,
            defaults.foreground_fraction,
            probability,
            "must be between 0 and 1",
        ),
        foreground_sampling: check.choice(
            "train.foreground_sampling",
            raw.foreground_sampling.as_deref(),
            defaults.foreground_sampling,
        ),
        optimizer: check.choice("train.optimizer", raw.optimizer.as_deref(), defaults.optimizer),
        lr,
        weight_decay: check.value(
            "train.weight_decay",
            raw.weight_decay,
            defaults.weight_decay,
            non_negative,
            "must be at least 0",
        ),
        momentum: check.value(
            "train.momentum",
            raw.momentum,
            defaults.momentum,
            |m| (0.0..1.0).contains(&m),
            "must be at least 0 and below 1",
        ),
        grad_clip: check.value(
            "train.grad_clip",
            raw.grad_clip,
            defaults.grad_clip,
            non_negative,
            "must be at least 0 (0 turns clipping off)",
        ),
        schedule: check.choice("train.schedule", raw.schedule.as_deref(), defaults.schedule),
        plateau_factor: check.value(
            "train.plateau_factor",
            raw.plateau_factor,
            defaults.plateau_factor,
            |f| f > 0.0 && f < 1.0,
            "must be above 0 and below 1",
        ),
        plateau_patience: check.value(
            "train.plateau_patience",
            raw.plateau_patience,
            defaults.plateau_patience,
            |n| n >= 1,
            "must be at least 1",
        ),
        min_lr,
        warmup_epochs: raw.warmup_epochs.unwrap_or(defaults.warmup_epochs),
        early_stopping_patience: raw.early_stopping_patience.unwrap_or(defaults.early_stopping_patience),
        seed: raw.seed.unwrap_or(defaults.seed),
        freeze: check_freeze(check, raw.freeze, model),
        threads: check.value(
            "train.threads",
            raw.threads,
            defaults.threads,
            |n| n <= 1024,
            "must be at most 1024 (0 for automatic)",
        ),
        precision: check.choice("train.precision", raw.precision.as_deref(), defaults.precision),
        loss,
    }
}

/// `train.freeze`: each entry a block of the network or a prefix of block names (`enc`).
fn check_freeze(check: &mut Checker, raw: Option<Vec<String>>, model: &ModelConfig) -> Vec<String> {
    let Some(names) = raw else {
        return Vec::new();
    };
    let blocks = model.blocks();
    let mut frozen = Vec::new();
    for name in names {
        let covers = |block: &String| block == &name || block.starts_with(&format!("{name}."));
        if !blocks.iter().any(covers) {
            let depth = model.depth;
            check.error(
                "train.freeze",
                format!(
                    "train.freeze: '{name}' is not a block of this network (depth {depth}): its blocks are enc.0-enc.{}, \
                     up.0-up.{last}, dec.0-dec.{last}{}, out, or a prefix of them such as 'enc'",
                    depth - 1,
                    if model.deep_supervision { ", deep.N" } else { "" },
                    last = depth.saturating_sub(2),
                ),
            );
        } else if !frozen.contains(&name) {
            frozen.push(name);
        }
    }
    if !frozen.is_empty() && blocks.iter().all(|block| blocks_frozen(&frozen, block)) {
        check.error(
            "train.freeze",
            "train.freeze covers every block of the network: nothing would train".to_string(),
        );
    }
    frozen
}

/// Whether a weight or block name lies in one of the `frozen` blocks (`enc.0` covers
/// `enc.0.0.weight`, `enc` covers every `enc.N`).
pub fn blocks_frozen(frozen: &[String], name: &str) -> bool {
    frozen.iter().any(|block| {
        name == block
            || name
                .strip_prefix(block.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The weights file `model.init` names: a `.safetensors` file; a run directory (its
/// `checkpoints/best.safetensors`); or a run in `runs` by its id or a part of it only that
/// run's id holds.
pub fn resolve_init(init: &str, runs: &Path) -> Result<PathBuf, String> {
    let best = |dir: &Path| {
        let file = dir.join("checkpoints").join("best.safetensors");
        if file.is_file() {
            Ok(file)
        } else {
            Err(format!(
                "model.init = '{init}': the run {} has no best weights yet ({} is missing)",
                dir.display(),
                Path::new("checkpoints").join("best.safetensors").display()
            ))
        }
    };
    if looks_like_path(init) {
        let path = Path::new(init);
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else if path.is_dir() {
            best(path)
        } else {
            Err(format!(
                "model.init = '{init}' does not exist: name a run, a run directory or a .safetensors file"
            ))
        };
    }
    let ids: Vec<String> = std::fs::read_dir(runs)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if ids.iter().any(|id| id == init) {
        return best(&runs.join(init));
    }
    let matches: Vec<&String> = ids.iter().filter(|id| id.contains(init)).collect();
    match matches.as_slice() {
        [id] => best(&runs.join(id)),
        [] => Err(format!(
            "model.init = '{init}' is not a run in {}: name a run id, a run directory or a .safetensors file",
            runs.display()
        )),
        several => Err(format!(
            "model.init = '{init}' matches {} runs ({}): give more of the id",
            several.len(),
            several.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// A patch or window: each side at least one voxel per level of down-sampling and divisible
/// by the total down-sampling factor, so the U-Net's skip connections line up.
fn check_patch(
    key: &str,
    check: &mut Checker,
    raw: Option<[u32; 3]>,
    default: [u32; 3],
    model: &ModelConfig,
) -> [u32; 3] {
    let Some(size) = raw else {
        return default;
    };
    let factor = 1u32 << (model.depth - 1);
    if size.iter().any(|&n| n == 0 || n % factor != 0 || n > 512) {
        check.error(
            key,
            format!(
                "{key} = [{}, {}, {}] is out of range: each side must be a multiple of {factor} (2^(model.depth - 1)) and at most 512",
                size[0], size[1], size[2]
            ),
        );
        return default;
    }
    size
}

fn check_loss(check: &mut Checker, raw: raw::RawLoss) -> LossConfig {
    let defaults = LossConfig::default();
    let dice = check.value(
        "train.loss.dice",
        raw.dice,
        defaults.dice,
        non_negative,
        "must be at least 0",
    );
    let ce = check.value("train.loss.ce", raw.ce, defaults.ce, non_negative, "must be at least 0");
    let focal = check.value(
        "train.loss.focal",
        raw.focal,
        defaults.focal,
        non_negative,
        "must be at least 0",
    );
    if dice + ce + focal == 0.0 {
        check.error(
            "train.loss",
            "train.loss: dice, ce and focal are all 0; give at least one a weight above 0".to_string(),
        );
    }
    let class_weights = match raw.class_weights {
        Some(w) if w.iter().any(|x| !non_negative(*x)) || w.iter().all(|x| *x == 0.0) => {
            check.error(
                "train.loss.class_weights",
                format!("train.loss.class_weights = [{}, {}, {}, {}] is out of range: weights must be at least 0 and not all 0", w[0], w[1], w[2], w[3]),
            );
            defaults.class_weights
        }
        Some(w) => w,
        None => defaults.class_weights,
    };
    LossConfig {
        dice,
        ce,
        focal,
        focal_gamma: check.value(
            "train.loss.focal_gamma",
            raw.focal_gamma,
            defaults.focal_gamma,
            non_negative,
            "must be at least 0",
        ),
        dice_include_background: raw.dice_include_background.unwrap_or(defaults.dice_include_background),
        class_weights,
    }
}

fn check_augment(check: &mut Checker, raw: raw::RawAugment) -> AugmentConfig {
    let d = AugmentConfig::default();
    const P_RULE: &str = "must be between 0 and 1";
    let flip_axes = match raw.flip_axes {
        Some(axes) if axes.iter().any(|&a| a > 2) => {
            check.error(
                "augment.flip_axes",
                format!("augment.flip_axes = {axes:?} is out of range: axes are 0, 1 and 2"),
            );
            d.flip_axes.clone()
        }
        Some(axes) => axes,
        None => d.flip_axes.clone(),
    };
    AugmentConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        rotate_degrees: check.value(
            "augment.rotate_degrees",
            raw.rotate_degrees,
            d.rotate_degrees,
            |a| (0.0..=180.0).contains(&a),
            "must be between 0 and 180",
        ),
        rotate_p: check.value("augment.rotate_p", raw.rotate_p, d.rotate_p, probability, P_RULE),
        rotate90_p: check.value("augment.rotate90_p", raw.rotate90_p, d.rotate90_p, probability, P_RULE),
        scale: range_pair(
            check,
            "augment.scale",
            raw.scale,
            d.scale,
            positive,
            "factors must be above 0",
        ),
        scale_p: check.value("augment.scale_p", raw.scale_p, d.scale_p, probability, P_RULE),
        flip_axes,
        flip_p: check.value("augment.flip_p", raw.flip_p, d.flip_p, probability, P_RULE),
        brightness: range_pair(
            check,
            "augment.brightness",
            raw.brightness,
            d.brightness,
            positive,
            "factors must be above 0",
        ),
        brightness_p: check.value(
            "augment.brightness_p",
            raw.brightness_p,
            d.brightness_p,
            probability,
            P_RULE,
        ),
        gamma: range_pair(
            check,
            "augment.gamma",
            raw.gamma,
            d.gamma,
            positive,
            "exponents must be above 0",
        ),
        gamma_p: check.value("augment.gamma_p", raw.gamma_p, d.gamma_p, probability, P_RULE),
        noise_sigma: check.value(
            "augment.noise_sigma",
            raw.noise_sigma,
            d.noise_sigma,
            non_negative,
            "must be at least 0",
        ),
        noise_p: check.value("augment.noise_p", raw.noise_p, d.noise_p, probability, P_RULE),
        lowres_p: check.value("augment.lowres_p", raw.lowres_p, d.lowres_p, probability, P_RULE),
        lowres_zoom: range_pair(
            check,
            "augment.lowres_zoom",
            raw.lowres_zoom,
            d.lowres_zoom,
            |z| z > 0.0 && z <= 1.0,
            "zoom factors must be above 0 and at most 1",
        ),
        thick_slices_p: check.value(
            "augment.thick_slices_p",
            raw.thick_slices_p,
            d.thick_slices_p,
            probability,
            P_RULE,
        ),
        thick_slices: range_pair(
            check,
            "augment.thick_slices",
            raw.thick_slices,
            d.thick_slices,
            |t| (1.0..=16.0).contains(&t),
            "thicknesses must be between 1 and 16 voxels",
        ),
        bias_field_p: check.value(
            "augment.bias_field_p",
            raw.bias_field_p,
            d.bias_field_p,
            probability,
            P_RULE,
        ),
        bias_field: check.value(
            "augment.bias_field",
            raw.bias_field,
            d.bias_field,
            |b| (0.0..=2.0).contains(&b),
            "must be between 0 and 2",
        ),
    }
}

fn check_validate(
    check: &mut Checker,
    raw: raw::RawValidate,
    train: &TrainConfig,
    model: &ModelConfig,
) -> ValidateConfig {
    ValidateConfig {
        every: check.value("validate.every", raw.every, 1, |n| n >= 1, "must be at least 1"),
        window: check_patch("validate.window", check, raw.window, train.patch_size, model),
        overlap: check.value(
            "validate.overlap",
            raw.overlap,
            0.5,
            |o| (0.0..0.95).contains(&o),
            "must be at least 0 and below 0.95",
        ),
        gaussian: raw.gaussian.unwrap_or(true),
        window_batch: check.value(
            "validate.window_batch",
            raw.window_batch,
            2,
            |n| (1..=64).contains(&n),
            "must be between 1 and 64",
        ),
        cases: raw.cases.unwrap_or(0),
        hd95: raw.hd95.unwrap_or(true),
        select: check.choice("validate.select", raw.select.as_deref(), Selection::Legacy),
        tta: raw.tta.unwrap_or(false),
        postprocess: raw.postprocess.unwrap_or(true),
    }
}

fn check_preview(check: &mut Checker, raw: raw::RawPreview) -> PreviewConfig {
    let d = PreviewConfig::default();
    PreviewConfig {
        case: raw.case.unwrap_or(d.case),
        modality: check.choice("preview.modality", raw.modality.as_deref(), d.modality),
        axis: check.choice("preview.axis", raw.axis.as_deref(), d.axis),
        every: check.value("preview.every", raw.every, d.every, |n| n >= 1, "must be at least 1"),
    }
}

/// Whether `name` can name a run directory: letters, digits, `-`, `_` and `.`, not leading `.`.
pub fn is_valid_run_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_run(check: &mut Checker, raw: raw::RawRun) -> RunConfig {
    let stem = check
        .source
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match raw.name {
        Some(name) if !is_valid_run_name(&name) => {
            check.error(
                "run.name",
                format!("run.name = '{name}' is not allowed: use up to 100 letters, digits, '-', '_' or '.', not starting with '.'"),
            );
            name
        }
        Some(name) => name,
        // A file name that cannot name a run gets a neutral default rather than an error.
        None if is_valid_run_name(&stem) => stem,
        None => "run".to_string(),
    };
    RunConfig {
        name,
        tags: raw.tags.unwrap_or_default(),
        notes: raw.notes.unwrap_or_default(),
        launcher: check.choice("run.launcher", raw.launcher.as_deref(), LauncherKind::Local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiment, ConfigError> {
        Experiment::parse(Path::new("experiments/x.toml"), text, Path::new("/ws"))
    }

    #[test]
    fn minimal_file_takes_every_default() {
        let experiment = parse("[data]\nroot = \"data/brats\"\n").expect("valid");
        assert_eq!(experiment.data.root, Path::new("/ws/data/brats"));
        assert_eq!(experiment.data.cache_dir, Path::new("/ws/cache"));
        assert_eq!(experiment.model, ModelConfig::default());
        assert_eq!(experiment.train, TrainConfig::default());
        assert_eq!(experiment.validate.window, [64, 64, 64]);
        assert_eq!(experiment.run.name, "x");
    }

    #[test]
    fn every_problem_in_a_file_is_reported() {
        let error = parse("[data]\nroot = \"d\"\n[train]\nlr = -1.0\nbatch_size = 0\n").expect_err("invalid");
        let lines: Vec<String> = error.diagnostics().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "experiments/x.toml:4:6: train.lr = -1 is out of range: must be above 0",
                "experiments/x.toml:5:14: train.batch_size = 0 is out of range: must be between 1 and 256",
            ]
        );
    }

    #[test]
    fn dropout_takes_one_value_or_one_per_level() {
        let one = parse("[data]\nroot = \"d\"\n[model]\ndepth = 3\ndropout = 0.1\n").expect("valid");
        assert_eq!(one.model.dropout, [0.1, 0.1, 0.1]);
        let wrong = parse("[data]\nroot = \"d\"\n[model]\ndepth = 3\ndropout = [0.1, 0.2]\n").expect_err("invalid");
        assert_eq!(
            wrong.to_string(),
            "experiments/x.toml:5:11: model.dropout has 2 values but model.depth = 3: give one per level, or a single number"
        );
    }

    #[test]
    fn seed_filters_double_per_level() {
        assert_eq!(ModelConfig::default().filters(), [16, 32, 64, 128, 256]);
    }

    #[test]
    fn run_names_are_safe_directory_names() {
        assert!(is_valid_run_name("seed-tutorial_v2.1"));
        assert!(!is_valid_run_name("../etc"));
        assert!(!is_valid_run_name("a b"));
        assert!(!is_valid_run_name(""));
    }

    #[test]
    fn a_frozen_experiment_from_before_a_key_existed_keeps_what_segtop_did_then() {
        let dir = tempfile::tempdir().expect("temp dir");
        let current = parse("[data]\nroot = \"d\"\n").expect("valid");
        assert_eq!(current.model.output, Output::Regions);
        assert_eq!(current.train.foreground_sampling, ForegroundSampling::ClassBalanced);
        // A frozen file as an older segtop wrote it: every key of its day, none of the later ones.
        let old: String = current
            .to_toml()
            .lines()
            .filter(|line| {
                !KEYS_ADDED_LATER.iter().any(|(key, _)| {
                    key.rsplit('.')
                        .next()
                        .is_some_and(|k| line.starts_with(&format!("{k} =")))
                })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(!old.contains("output ="), "{old}");
        let path = dir.path().join("experiment.toml");
        std::fs::write(&path, &old).expect("write");
        let frozen = Experiment::load_frozen(&path, dir.path()).expect("loads");
        assert_eq!(frozen.model.output, Output::Labels);
        assert_eq!(frozen.train.foreground_sampling, ForegroundSampling::AnyTumour);
        assert_eq!(
            (
                frozen.augment.lowres_p,
                frozen.augment.thick_slices_p,
                frozen.augment.bias_field_p
            ),
            (0.0, 0.0, 0.0)
        );
        // A frozen file that has the keys keeps them, and a new run's file takes today's defaults.
        std::fs::write(&path, current.to_toml()).expect("write");
        assert_eq!(Experiment::load_frozen(&path, dir.path()).expect("loads"), current);
        // Bad text is reported with its place, as for any experiment.
        std::fs::write(&path, "[model]\noutput = \"region\"\n[data]\nroot = \"d\"\n").expect("write");
        let error = Experiment::load_frozen(&path, dir.path())
            .expect_err("misspelt")
            .to_string();
        assert!(
            error.contains("model.output = 'region'") && error.contains("labels, regions"),
            "{error}"
        );
    }
}
