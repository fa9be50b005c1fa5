//! Checkpoints: the model, the optimizer's moments and the training state, written so that a
//! run killed at any moment resumes from the last complete one.
//!
//! ```text
//! checkpoints/
//!   step-000300/        the latest complete checkpoint (older ones are removed)
//!     model.safetensors       parameters, named as PyTorch names them
//!     optimizer.safetensors   first and second moments by parameter
//!     state.json              epoch, step, schedule, best scores, optimizer scalars
//!   best.safetensors    parameters of the best validation so far
//! ```
//!
//! A checkpoint is written into a hidden folder, synced, then renamed into place, so a
//! folder named `step-*` is always complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use segtop::experiment::TrainConfig;
use segtop::run::RunDir;
use segtop::run::events::RegionScores;

use crate::optim::{Optimizer, Scheduler};

/// Where training is, beyond the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// 0-based epoch being trained (equal to `epochs` when done).
    pub epoch: u32,
    /// Steps of `epoch` already taken.
    pub step: u32,
    /// Steps over all epochs.
    pub global_step: u64,
    /// Sums over the steps of `epoch` taken so far, for its mean loss.
    pub epoch_loss: f64,
    pub epoch_parts: BTreeMap<String, f64>,
    pub epoch_seconds: f64,
    pub scheduler: Scheduler,
    pub best_dice: Option<RegionScores>,
    pub best_epoch: Option<u32>,
    /// Training time before this process, for the total.
    pub seconds: f64,
    pub optimizer: BTreeMap<String, f64>,
    /// With a time budget: the epochs planned and the pace measured, so a resumed run
    /// plans from where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<(u32, segtop::budget::Pace)>,
}

impl TrainState {
    /// Before the first step.
    pub fn new(config: &TrainConfig) -> TrainState {
        TrainState {
            epoch: 0,
            step: 0,
            global_step: 0,
            epoch_loss: 0.0,
            epoch_parts: BTreeMap::new(),
            epoch_seconds: 0.0,
            scheduler: Scheduler::new(config),
            best_dice: None,
            best_epoch: None,
            seconds: 0.0,
            optimizer: BTreeMap::new(),
            plan: None,
        }
    }
}

fn sync(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Writes a checkpoint; with `best`, also makes its weights the best ones. Returns the
/// checkpoint folder, relative to the run directory.
pub fn save(
    run: &RunDir,
    vs: &nn::VarStore,
    optimizer: &Optimizer,
    state: &TrainState,
    best: bool,
) -> anyhow::Result<String> {
    let root = run.checkpoints();
    let target = run.step(state.global_step);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temporary);
    if let Err(error) = write_files(&temporary, vs, optimizer, state) {
        // A full disk or a size limit: the previous checkpoint stays the latest complete one.
        let _ = std::fs::remove_dir_all(&temporary);
        return Err(error);
    }
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&temporary, &target).with_context(|| format!("cannot rename to {}", target.display()))?;
    if best {
        let staged = root.join(format!(".best.tmp-{}", std::process::id()));
        std::fs::copy(target.join(RunDir::STEP_WEIGHTS), &staged)?;
        sync(&staged)?;
        std::fs::rename(&staged, run.best_weights())?;
    }
    sync(&root)?;
    // Only the newest complete checkpoint is kept.
    for entry in std::fs::read_dir(&root)?.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with(RunDir::STEP_PREFIX) && file_name != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(format!("{}/{name}", RunDir::CHECKPOINTS))
}

/// Named tensors in the standard (row-major) layout that safetensors files hold; the network
/// keeps its weights channels-last in memory.
pub fn contiguous(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// The checkpoint's files in `temporary`, each synced.
fn write_files(temporary: &Path, vs: &nn::VarStore, optimizer: &Optimizer, state: &TrainState) -> anyhow::Result<()> {
    std::fs::create_dir_all(temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    let model = temporary.join(RunDir::STEP_WEIGHTS);
    Tensor::write_safetensors(&contiguous(vs.variables()), &model)
        .with_context(|| format!("cannot write {}", model.display()))?;
    let (moments, scalars) = optimizer.state();
    let optimizer_file = temporary.join(RunDir::STEP_OPTIMIZER);
    Tensor::write_safetensors(&contiguous(moments), &optimizer_file)
        .with_context(|| format!("cannot write {}", optimizer_file.display()))?;
    let mut state = state.clone();
    state.optimizer = scalars;
    let state_file = temporary.join(RunDir::STEP_STATE);
    std::fs::write(&state_file, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("cannot write {}", state_file.display()))?;
    for file in [RunDir::STEP_WEIGHTS, RunDir::STEP_OPTIMIZER, RunDir::STEP_STATE] {
        sync(&temporary.join(file)).with_context(|| format!("cannot write {}", temporary.join(file).display()))?;
    }
    Ok(())
}

/// Loads a checkpoint folder into the model and optimizer; returns the training state.
pub fn load(dir: &Path, vs: &mut nn::VarStore, optimizer: &mut Optimizer) -> anyhow::Result<TrainState> {
    let state: TrainState = serde_json::from_slice(&std::fs::read(dir.join(RunDir::STEP_STATE))?)
        .with_context(|| format!("{}: unreadable training state", dir.display()))?;
    vs.load(dir.join(RunDir::STEP_WEIGHTS))
        .with_context(|| format!("{}: cannot load the model", dir.display()))?;
    let moments: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.join(RunDir::STEP_OPTIMIZER))
        .with_context(|| format!("{}: cannot load the optimizer", dir.display()))?
        .into_iter()
        .collect();
    optimizer.restore(&moments, &state.optimizer)?;
    Ok(state)
}

/// What loading `model.init` did.
#[derive(Debug, Default, PartialEq)]
pub struct InitReport {
    /// Tensors of the network set from the file.
    pub loaded: usize,
    /// Tensors of the network left at their initialisation, each with the reason.
    pub left: Vec<String>,
    /// Tensors in the file that this network has no place for.
    pub unused: Vec<String>,
}

/// Sets the network's tensors from a weights file (`model.init`), matched by name and shape.
/// Any tensor of the network the file does not match is refused, naming them all, unless
/// `partial`; a file that matches nothing is refused either way.
pub fn load_init(vs: &nn::VarStore, path: &Path, partial: bool) -> anyhow::Result<InitReport> {
    let file: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("model.init: cannot read {} as safetensors", path.display()))?
        .into_iter()
        .collect();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut report = InitReport::default();
    let mut matched = Vec::new();
    for (name, variable) in &variables {
        match file.get(name) {
            Some(tensor) if tensor.size() == variable.size() => matched.push((variable, tensor)),
            Some(tensor) => report.left.push(format!(
                "{name}: {:?} in the file, {:?} in this network",
                tensor.size(),
                variable.size()
            )),
            None => report.left.push(format!("{name}: not in the file")),
        }
    }
    report.unused = file
        .keys()
        .filter(|name| !vs.variables().contains_key(*name))
        .cloned()
        .collect();
    if matched.is_empty() {
        anyhow::bail!(
            "model.init: {} has no tensor this network can take (its names: {}): is it a segtop or seed U-Net's weights?",
            path.display(),
            file.keys().take(4).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if !report.left.is_empty() && !partial {
        const SHOWN: usize = 6;
        let more = report.left.len().saturating_sub(SHOWN);
        anyhow::bail!(
            "model.init: {} does not fit this network in {} of its {} tensors ({}{}); set model.init_partial = true \
             to load the {} that fit and train the rest from their initialisation",
            path.display(),
            report.left.len(),
            variables.len(),
            report.left[..report.left.len().min(SHOWN)].join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            },
            matched.len()
        );
    }
    tch::no_grad(|| {
        for (variable, tensor) in &matched {
            let mut variable = variable.shallow_clone();
            variable.copy_(&tensor.to_kind(variable.kind()));
        }
    });
    report.loaded = matched.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UNet;
    use segtop::experiment::Experiment;

    fn network(seed: i64) -> (Experiment, nn::VarStore, UNet, Optimizer) {
        let text = "[data]\nroot = \"d\"\n[model]\nbase_filters = 4\ndepth = 2\n";
        let experiment = Experiment::parse(Path::new("x.toml"), text, Path::new("/ws")).expect("valid");
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = UNet::new(&vs.root(), &experiment.model, 4);
        let optimizer = Optimizer::new(vs.variables().into_iter().collect(), &experiment.train);
        (experiment, vs, net, optimizer)
    }

    #[test]
    fn channels_last_weights_are_saved_in_the_standard_layout_and_load_back() {
        let (experiment, vs, net, optimizer) = network(1);
        let weight = &vs.variables()["enc.0.0.weight"];
        assert_eq!(weight.size(), [4, 4, 3, 3, 3]);
        assert_eq!(weight.stride()[1], 1, "weights are kept channels-last");
        let state = TrainState::new(&experiment.train);
        let dir = tempfile::tempdir().expect("temp dir");
        write_files(dir.path(), &vs, &optimizer, &state).expect("written");
        // The file holds the weights row-major, as PyTorch's state_dict would.
        let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.path().join("model.safetensors"))
            .expect("readable")
            .into_iter()
            .collect();
        let file_weight = &saved["enc.0.0.weight"];
        assert!(file_weight.is_contiguous());
        assert!(file_weight.equal(weight));
        let (_, mut other_vs, other_net, mut other_optimizer) = network(2);
        let input = Tensor::randn([1, 4, 8, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
        let before = tch::nn::ModuleT::forward_t(&net, &input, false);
        assert!(!tch::nn::ModuleT::forward_t(&other_net, &input, false).equal(&before));
        load(dir.path(), &mut other_vs, &mut other_optimizer).expect("loaded");
        let after = tch::nn::ModuleT::forward_t(&other_net, &input, false);
        assert!(
            after.allclose(&before, 1e-6, 1e-6, false),
            "the loaded network computes the same"
        );
        assert_eq!(
            other_vs.variables()["enc.0.0.weight"].stride()[1],
            1,
            "still channels-last"
        );
    }

    fn unet(model: &str, seed: i64) -> (nn::VarStore, UNet) {
        let text = format!("[data]\nroot = \"d\"\n[model]\n{model}\n");
        let experiment = Experiment::parse(Path::new("x.toml"), &text, Path::new("/ws")).expect("valid");
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let net = UNet::new(&vs.root(), &experiment.model, 4);
        (vs, net)
    }

    #[test]
    fn init_weights_load_by_name_and_shape_and_mismatches_are_refused_unless_partial() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("best.safetensors");
        let (source, source_net) = unet("base_filters = 4\ndepth = 3", 1);
        Tensor::write_safetensors(&contiguous(source.variables()), &file).expect("saved");
        let input = Tensor::randn([1, 4, 16, 16, 16], (tch::Kind::Float, tch::Device::Cpu));
        let expected = tch::nn::ModuleT::forward_t(&source_net, &input, false);

        // The same network: every tensor loads and it computes the same.
        let (same, same_net) = unet("base_filters = 4\ndepth = 3", 2);
        let report = load_init(&same, &file, false).expect("fits");
        assert_eq!((report.loaded, report.left.len()), (same.variables().len(), 0));
        let output = tch::nn::ModuleT::forward_t(&same_net, &input, false);
        assert!(output.allclose(&expected, 1e-6, 1e-6, false));

        // Wider: only the classifier's bias (one per class) has the same shape.
        let (wide, _) = unet("base_filters = 8\ndepth = 3", 2);
        let report = load_init(&wide, &file, true).expect("partial");
        assert_eq!(report.loaded, 1);
        assert!(
            report
                .left
                .iter()
                .any(|l| l.starts_with("enc.0.0.weight: [4, 4, 3, 3, 3] in the file"))
        );
        // A file of other names: refused even with init_partial.
        let other = dir.path().join("other.safetensors");
        Tensor::write_safetensors(
            &[(
                "encoder.weight",
                Tensor::zeros([4], (tch::Kind::Float, tch::Device::Cpu)),
            )],
            &other,
        )
        .expect("saved");
        let error = load_init(&wide, &other, true).expect_err("no tensor fits").to_string();
        assert!(
            error.contains("has no tensor this network can take (its names: encoder.weight)"),
            "{error}"
        );

        // Deeper: the top levels fit, the rest does not: refused, naming them...
        let (deeper, _) = unet("base_filters = 4\ndepth = 4", 2);
        let before = deeper.variables()["enc.3.0.weight"].copy();
        let error = load_init(&deeper, &file, false).expect_err("does not fit").to_string();
        assert!(error.contains("model.init_partial = true"), "{error}");
        assert!(
            error.contains("does not fit this network in 38 of its 64 tensors"),
            "{error}"
        );
        assert!(
            error.contains("dec.0.0.weight: [8, 16, 3, 3, 3] in the file, [16, 32, 3, 3, 3] in this network"),
            "{error}"
        );
        assert!(error.contains("and 32 more"), "{error}");
        // ...and nothing was changed by the refusal.
        assert!(!deeper.variables()["enc.0.0.weight"].equal(&source.variables()["enc.0.0.weight"]));
        // With init_partial: what fits loads, the rest keeps its initialisation.
        let report = load_init(&deeper, &file, true).expect("partial");
        assert!(report.loaded > 0 && !report.left.is_empty());
        assert_eq!(report.loaded + report.left.len(), deeper.variables().len());
        assert!(deeper.variables()["enc.0.0.weight"].equal(&source.variables()["enc.0.0.weight"]));
        assert!(deeper.variables()["enc.3.0.weight"].equal(&before));
        // The other way round, the deeper network's bottleneck has no place in the shallower one.
        let deep_file = dir.path().join("deep.safetensors");
        Tensor::write_safetensors(&contiguous(deeper.variables()), &deep_file).expect("saved");
        let (shallow, _) = unet("base_filters = 4\ndepth = 3", 3);
        let report = load_init(&shallow, &deep_file, true).expect("partial");
        assert!(
            report.unused.contains(&"enc.3.0.weight".to_string()),
            "{:?}",
            report.unused
        );

        // Not a weights file at all.
        std::fs::write(dir.path().join("bad.safetensors"), b"not safetensors").expect("write");
        let error = load_init(&same, &dir.path().join("bad.safetensors"), true).expect_err("unreadable");
        assert!(error.to_string().contains("cannot read"), "{error}");
    }
}
