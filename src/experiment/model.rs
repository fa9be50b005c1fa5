//! `[model]`: the U-Net: its width, depth, layers, output and initial weights.

use std::path::Path;

use serde::Serialize;

use super::raw;
use super::{NUM_CLASSES, NUM_REGIONS, resolve};
use crate::choice_enum;
use crate::config::Checker;

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

    /// The form an ensemble of networks with these outputs is averaged in: label softmaxes
    /// when every one outputs labels (as one alone does), else regions, which every output can
    /// be turned into.
    pub fn averaged(outputs: impl IntoIterator<Item = Output>) -> Output {
        if outputs.into_iter().all(|o| o == Output::Labels) {
            Output::Labels
        } else {
            Output::Regions
        }
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

/// Whether `model.init` names a file or folder (rather than a run id in `runs/`).
pub fn looks_like_path(text: &str) -> bool {
    text.contains('/') || text.ends_with(".safetensors") || text == "." || text == ".."
}

pub(super) fn check_model(check: &mut Checker, raw: raw::RawModel, workspace: &Path) -> ModelConfig {
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

pub(super) fn check_dropout(check: &mut Checker, value: &toml::Value, depth: u32) -> Vec<f64> {
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
