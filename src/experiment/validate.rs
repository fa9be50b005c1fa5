//! `[validate]` and `[preview]`: when and how the network is scored during training, and the
//! slices drawn of the preview case.

use serde::{Serialize, Serializer};

use super::raw;
use super::{Modality, ModelConfig, TrainConfig, check_patch};
use crate::choice_enum;
use crate::config::Checker;

choice_enum! {
    pub enum Axis {
        Axial => "axial",
        Coronal => "coronal",
        Sagittal => "sagittal",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidateConfig {
    /// How often to validate.
    pub every: Every,
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

/// How often a run validates (`validate.every`): a number of epochs, or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Every this many epochs.
    Epochs(u32),
    /// Every epoch without a time budget. Under `train.budget`, as seldom as keeps validations
    /// to a share of the run's time (see `budget::auto_every`), so a slow validation does not
    /// eat the epochs the budget is for.
    Auto,
}

impl Every {
    /// The interval without a time budget to decide it.
    pub fn epochs(self) -> u32 {
        self.fixed().unwrap_or(1)
    }

    /// The interval when a number was given, `None` for `"auto"`.
    pub fn fixed(self) -> Option<u32> {
        match self {
            Every::Epochs(n) => Some(n),
            Every::Auto => None,
        }
    }
}

impl Serialize for Every {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Every::Epochs(n) => serializer.serialize_u32(*n),
            Every::Auto => serializer.serialize_str("auto"),
        }
    }
}

fn check_every(check: &mut Checker, value: Option<toml::Value>) -> Every {
    match value {
        None => Every::Auto,
        Some(toml::Value::String(text)) if text == "auto" => Every::Auto,
        Some(toml::Value::Integer(n)) if (1..=i64::from(u32::MAX)).contains(&n) => Every::Epochs(n as u32),
        Some(other) => {
            check.error(
                "validate.every",
                format!("validate.every = {other} is not allowed: give a number of epochs (at least 1) or \"auto\""),
            );
            Every::Auto
        }
    }
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

impl Selection {
    /// The least rise of the selected mean Dice that counts as a better validation: the
    /// trainer's choice of the best weights and the dashboard's `best @epoch` both follow it,
    /// so they name the same epoch.
    pub const MIN_IMPROVEMENT: f64 = 1e-4;

    /// Whether a validation scoring `score` beats the best so far.
    pub fn improves(best: Option<f64>, score: f64) -> bool {
        best.is_none_or(|best| score > best + Self::MIN_IMPROVEMENT)
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

pub(super) fn check_validate(
    check: &mut Checker,
    raw: raw::RawValidate,
    train: &TrainConfig,
    model: &ModelConfig,
) -> ValidateConfig {
    ValidateConfig {
        every: check_every(check, raw.every),
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

pub(super) fn check_preview(check: &mut Checker, raw: raw::RawPreview) -> PreviewConfig {
    let d = PreviewConfig::default();
    PreviewConfig {
        case: raw.case.unwrap_or(d.case),
        modality: check.choice("preview.modality", raw.modality.as_deref(), d.modality),
        axis: check.choice("preview.axis", raw.axis.as_deref(), d.axis),
        every: check.value("preview.every", raw.every, d.every, |n| n >= 1, "must be at least 1"),
    }
}
