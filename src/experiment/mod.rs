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

pub mod augment;
pub mod data;
pub mod document;
pub mod halving;
pub mod model;
pub mod raw;
pub mod run;
pub mod slurm;
pub mod sweep;
pub mod train;
pub mod validate;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Checker, ConfigError, Source};
pub use augment::AugmentConfig;
pub use data::{Crop, DataConfig, Layout, Modality, Normalization, SyntheticConfig};
pub use document::{choices, get_value, remove_value, set_value};
pub use model::{Activation, ModelConfig, Norm, Output, Upsample, looks_like_path};
use raw::RawExperiment;
pub use run::{LauncherKind, RunConfig, is_valid_run_name};
pub use slurm::SlurmConfig;
pub use train::{ForegroundSampling, LossConfig, Optimizer, Precision, Schedule, TrainConfig, blocks_frozen};
pub use validate::{Axis, Every, PreviewConfig, Selection, ValidateConfig};

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
    let data = data::check_data(check, raw.data, workspace);
    let model = model::check_model(check, raw.model, workspace);
    let train = train::check_train(check, raw.train, &model);
    let augment = augment::check_augment(check, raw.augment);
    let validate = validate::check_validate(check, raw.validate, &train, &model);
    let preview = validate::check_preview(check, raw.preview);
    let run = run::check_run(check, raw.run);
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
    fn validate_every_takes_a_number_of_epochs_or_auto() {
        let every = |text: &str| parse(&format!("[data]\nroot = \"d\"\n[validate]\n{text}\n"));
        assert_eq!(
            parse("[data]\nroot = \"d\"\n").expect("valid").validate.every,
            Every::Auto
        );
        assert_eq!(every("every = \"auto\"").expect("valid").validate.every, Every::Auto);
        assert_eq!(every("every = 3").expect("valid").validate.every, Every::Epochs(3));
        for (text, shown) in [
            ("every = 0", "0"),
            ("every = \"often\"", "\"often\""),
            ("every = 1.5", "1.5"),
        ] {
            assert_eq!(
                every(text).expect_err("invalid").to_string(),
                format!(
                    "experiments/x.toml:4:9: validate.every = {shown} is not allowed: give a number of epochs (at least 1) or \"auto\""
                )
            );
        }
        // Written out and read back, both forms stay what they were.
        for text in ["every = \"auto\"", "every = 7"] {
            let experiment = every(text).expect("valid");
            let again = parse(&experiment.to_toml()).expect("parses back");
            assert_eq!(again.validate.every, experiment.validate.every, "{text}");
        }
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
