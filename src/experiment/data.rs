//! `[data]`: where the cases are, how they are named, split, normalised and cropped, and the
//! synthetic demo dataset.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::raw;
use super::{MAX_FOLDS, non_negative, range_pair, resolve};
use crate::choice_enum;
use crate::config::{Checker, Choice};

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

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            cases: 12,
            seed: 7,
            shape: [240, 240, 155],
        }
    }
}

pub(super) fn check_data(check: &mut Checker, raw: raw::RawData, workspace: &Path) -> DataConfig {
    let defaults = DataConfig::default();
    let root = check_root(check, raw.root.as_deref(), workspace);
    let layout = check.choice("data.layout", raw.layout.as_deref(), defaults.layout);
    let modalities = match raw.modalities {
        None => defaults.modalities,
        Some(names) => check_modalities(check, &names),
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
        Some(split) => check_split(check, split, defaults.split),
    };
    let cache_dir = check_cache_dir(check, raw.cache_dir.as_deref(), workspace, &defaults.cache_dir);
    let synthetic = raw.synthetic.map(|raw| check_synthetic(check, raw));
    let folds = check.value(
        "data.folds",
        raw.folds,
        defaults.folds,
        |k| k == 0 || (2..=MAX_FOLDS).contains(&k),
        &format!("use 2 to {MAX_FOLDS} folds, or 0 for none"),
    );
    let fold = match raw.fold {
        Some(fold) => check_fold(check, fold, folds),
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

/// The dataset folder has no sensible default, so a missing or empty `data.root` is an error.
fn check_root(check: &mut Checker, raw: Option<&str>, workspace: &Path) -> PathBuf {
    match raw {
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
    }
}

/// Each listed name must be a known modality, listed once, and the list must not be empty.
fn check_modalities(check: &mut Checker, names: &[String]) -> Vec<Modality> {
    let mut modalities = Vec::new();
    for name in names {
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

/// The train, validation and test fractions must form a partition with some cases to train on.
fn check_split(check: &mut Checker, split: [f64; 3], default: [f64; 3]) -> [f64; 3] {
    let sum: f64 = split.iter().sum();
    if split.iter().any(|f| !non_negative(*f)) || (sum - 1.0).abs() > 1e-6 || split[0] <= 0.0 {
        check.error(
            "data.split",
            format!(
                "data.split = [{}, {}, {}] is out of range: train, validation and test fractions must be non-negative, sum to 1, and train above 0",
                split[0], split[1], split[2]
            ),
        );
        default
    } else {
        split
    }
}

/// The cache folder, resolved against the workspace; an empty one falls back to `cache`.
fn check_cache_dir(check: &mut Checker, raw: Option<&str>, workspace: &Path, default: &Path) -> PathBuf {
    match raw {
        Some("") => {
            check.error("data.cache_dir", "data.cache_dir = '' is empty".to_string());
            resolve(workspace, "cache")
        }
        Some(dir) => resolve(workspace, dir),
        None => workspace.join(default),
    }
}

/// `[data.synthetic]`: how many demo cases to generate and how large, within what is practical.
fn check_synthetic(check: &mut Checker, raw: raw::RawSynthetic) -> SyntheticConfig {
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
}

/// The fold validated on only means something with folds, and must be one of them (else 0).
fn check_fold(check: &mut Checker, fold: u32, folds: u32) -> u32 {
    if folds == 0 && fold > 0 {
        check.error(
            "data.fold",
            format!("data.fold = {fold} needs data.folds: set data.folds = 5 (say) for 5-fold cross-validation"),
        );
        0
    } else if folds > 0 && fold >= folds {
        check.error(
            "data.fold",
            format!(
                "data.fold = {fold} is out of range: with data.folds = {folds} the folds are numbered 0 to {}",
                folds - 1
            ),
        );
        0
    } else {
        fold
    }
}

pub(super) fn check_crop(check: &mut Checker, value: &toml::Value) -> Crop {
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
