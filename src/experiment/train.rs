//! `[train]`: how long and how the network learns (epochs or a time budget, optimizer,
//! schedule, patches, precision) and `[train.loss]`.

use serde::Serialize;

use super::raw;
use super::{MAX_BUDGET_EPOCHS, ModelConfig, check_patch, non_negative, positive, probability};
use crate::budget::Budget;
use crate::choice_enum;
use crate::config::Checker;

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

pub(super) fn check_train(check: &mut Checker, mut raw: raw::RawTrain, model: &ModelConfig) -> TrainConfig {
    let defaults = TrainConfig::default();
    let patch_size = check_patch("train.patch_size", check, raw.patch_size, defaults.patch_size, model);
    let (lr, min_lr) = check_learning_rates(check, &raw, &defaults);
    let loss = check_loss(check, std::mem::take(&mut raw.loss));
    let budget = check_budget(check, raw.budget.as_deref());
    let mut train = TrainConfig {
        patch_size,
        budget,
        lr,
        min_lr,
        loss,
        ..defaults
    };
    check_epochs_and_patches(check, &raw, &mut train);
    check_optimizer(check, &raw, &mut train);
    check_schedule(check, &raw, &mut train);
    train.seed = raw.seed.unwrap_or(train.seed);
    train.freeze = check_freeze(check, raw.freeze, model);
    train.threads = check.value(
        "train.threads",
        raw.threads,
        train.threads,
        |n| n <= 1024,
        "must be at most 1024 (0 for automatic)",
    );
    train.precision = check.choice("train.precision", raw.precision.as_deref(), train.precision);
    train
}

/// The learning rate and the floor the schedule lowers it to, which must not be above it.
fn check_learning_rates(check: &mut Checker, raw: &raw::RawTrain, defaults: &TrainConfig) -> (f64, f64) {
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
    (lr, min_lr)
}

/// A time budget is free text, so one that does not parse is reported and ignored.
fn check_budget(check: &mut Checker, raw: Option<&str>) -> Option<Budget> {
    raw.and_then(|text| match Budget::parse(text) {
        Ok(budget) => Some(budget),
        Err(problem) => {
            check.error("train.budget", format!("train.budget = {problem}"));
            None
        }
    })
}

/// How much each epoch trains on and how patches are drawn; `train` holds the defaults, and
/// its budget decides how many epochs are allowed by default.
fn check_epochs_and_patches(check: &mut Checker, raw: &raw::RawTrain, train: &mut TrainConfig) {
    train.batch_size = check.value(
        "train.batch_size",
        raw.batch_size,
        train.batch_size,
        |n| (1..=256).contains(&n),
        "must be between 1 and 256",
    );
    let default_epochs = if train.budget.is_some() {
        MAX_BUDGET_EPOCHS
    } else {
        train.epochs
    };
    train.epochs = check.value(
        "train.epochs",
        raw.epochs,
        default_epochs,
        |n| n >= 1,
        "must be at least 1",
    );
    train.patches_per_epoch = check.value(
        "train.patches_per_epoch",
        raw.patches_per_epoch,
        train.patches_per_epoch,
        |n| n >= 1,
        "must be at least 1",
    );
    train.foreground_fraction = check.value(
        "train.foreground_fraction",
        raw.foreground_fraction,
        train.foreground_fraction,
        probability,
        "must be between 0 and 1",
    );
    train.foreground_sampling = check.choice(
        "train.foreground_sampling",
        raw.foreground_sampling.as_deref(),
        train.foreground_sampling,
    );
}

/// The optimizer and its settings other than the learning rate; `train` holds the defaults.
fn check_optimizer(check: &mut Checker, raw: &raw::RawTrain, train: &mut TrainConfig) {
    train.optimizer = check.choice("train.optimizer", raw.optimizer.as_deref(), train.optimizer);
    train.weight_decay = check.value(
        "train.weight_decay",
        raw.weight_decay,
        train.weight_decay,
        non_negative,
        "must be at least 0",
    );
    train.momentum = check.value(
        "train.momentum",
        raw.momentum,
        train.momentum,
        |m| (0.0..1.0).contains(&m),
        "must be at least 0 and below 1",
    );
    train.grad_clip = check.value(
        "train.grad_clip",
        raw.grad_clip,
        train.grad_clip,
        non_negative,
        "must be at least 0 (0 turns clipping off)",
    );
}

/// The learning-rate schedule and when training stops early; `train` holds the defaults.
fn check_schedule(check: &mut Checker, raw: &raw::RawTrain, train: &mut TrainConfig) {
    train.schedule = check.choice("train.schedule", raw.schedule.as_deref(), train.schedule);
    train.plateau_factor = check.value(
        "train.plateau_factor",
        raw.plateau_factor,
        train.plateau_factor,
        |f| f > 0.0 && f < 1.0,
        "must be above 0 and below 1",
    );
    train.plateau_patience = check.value(
        "train.plateau_patience",
        raw.plateau_patience,
        train.plateau_patience,
        |n| n >= 1,
        "must be at least 1",
    );
    train.warmup_epochs = raw.warmup_epochs.unwrap_or(train.warmup_epochs);
    train.early_stopping_patience = raw.early_stopping_patience.unwrap_or(train.early_stopping_patience);
}

/// `train.freeze`: each entry a block of the network or a prefix of block names (`enc`).
pub(super) fn check_freeze(check: &mut Checker, raw: Option<Vec<String>>, model: &ModelConfig) -> Vec<String> {
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

pub(super) fn check_loss(check: &mut Checker, raw: raw::RawLoss) -> LossConfig {
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
