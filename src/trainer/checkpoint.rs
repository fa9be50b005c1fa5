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
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use segtop::events::RegionScores;
use segtop::rundir::RunDir;

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
    let name = format!("step-{:06}", state.global_step);
    let temporary = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temporary);
    if let Err(error) = write_files(&temporary, vs, optimizer, state) {
        // A full disk or a size limit: the previous checkpoint stays the latest complete one.
        let _ = std::fs::remove_dir_all(&temporary);
        return Err(error);
    }
    let target = root.join(&name);
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&temporary, &target).with_context(|| format!("cannot rename to {}", target.display()))?;
    if best {
        let staged = root.join(format!(".best.tmp-{}", std::process::id()));
        std::fs::copy(target.join("model.safetensors"), &staged)?;
        sync(&staged)?;
        std::fs::rename(&staged, root.join("best.safetensors"))?;
    }
    sync(&root)?;
    // Only the newest complete checkpoint is kept.
    for entry in std::fs::read_dir(&root)?.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with("step-") && file_name != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(format!("{}/{name}", RunDir::CHECKPOINTS))
}

/// The checkpoint's files in `temporary`, each synced.
fn write_files(temporary: &Path, vs: &nn::VarStore, optimizer: &Optimizer, state: &TrainState) -> anyhow::Result<()> {
    std::fs::create_dir_all(temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    let model = temporary.join("model.safetensors");
    vs.save(&model)
        .with_context(|| format!("cannot write {}", model.display()))?;
    let (moments, scalars) = optimizer.state();
    let optimizer_file = temporary.join("optimizer.safetensors");
    Tensor::write_safetensors(&moments, &optimizer_file)
        .with_context(|| format!("cannot write {}", optimizer_file.display()))?;
    let mut state = state.clone();
    state.optimizer = scalars;
    let state_file = temporary.join("state.json");
    std::fs::write(&state_file, serde_json::to_vec_pretty(&state)?)
        .with_context(|| format!("cannot write {}", state_file.display()))?;
    for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        sync(&temporary.join(file)).with_context(|| format!("cannot write {}", temporary.join(file).display()))?;
    }
    Ok(())
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run: &RunDir) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(run.checkpoints())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")) && p.join("state.json").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

/// Loads a checkpoint folder into the model and optimizer; returns the training state.
pub fn load(dir: &Path, vs: &mut nn::VarStore, optimizer: &mut Optimizer) -> anyhow::Result<TrainState> {
    let state: TrainState = serde_json::from_slice(&std::fs::read(dir.join("state.json"))?)
        .with_context(|| format!("{}: unreadable training state", dir.display()))?;
    vs.load(dir.join("model.safetensors"))
        .with_context(|| format!("{}: cannot load the model", dir.display()))?;
    let moments: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.join("optimizer.safetensors"))
        .with_context(|| format!("{}: cannot load the optimizer", dir.display()))?
        .into_iter()
        .collect();
    optimizer.restore(&moments, &state.optimizer)?;
    Ok(state)
}
