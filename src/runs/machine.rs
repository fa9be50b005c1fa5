//! How far every trainer on the machine has come, for the machine view: each one's events
//! read where its run directory is readable to the viewer, on from where the last look ended.

use std::collections::HashMap;
use std::path::PathBuf;

use super::model::RunModel;
use super::summary;
use crate::run::RunDir;
use crate::run::events::EventTail;
use crate::schedule::overview::{MachineView, Progress};

/// The trainers' runs folded so far, by run directory.
#[derive(Default)]
pub struct Progresses {
    folded: HashMap<PathBuf, (RunModel, EventTail)>,
}

impl Progresses {
    /// Sets the progress of every trainer in `view` whose events the viewer may read, and
    /// forgets the runs no longer in it.
    pub fn fill(&mut self, view: &mut MachineView) {
        self.folded
            .retain(|dir, _| view.trainers.iter().any(|t| &t.record.run_dir == dir));
        for trainer in &mut view.trainers {
            let record = &trainer.record;
            let run = RunDir::open(&record.run_dir);
            // Another user's run directory is read only where its permissions let the viewer.
            if !run.events().is_file() {
                continue;
            }
            let (model, tail) = self.folded.entry(record.run_dir.clone()).or_insert_with(|| {
                let folded = summary::fold(&record.run, &record.run_dir, &summary::frozen_config(&run), false);
                (folded.model, folded.tail)
            });
            let _ = tail.read_each(|event| model.apply(&event));
            trainer.progress = Some(progress(model));
        }
    }
}

/// How far `model`'s run has come.
pub fn progress(model: &RunModel) -> Progress {
    Progress {
        epoch: model.epoch,
        epochs: model.epochs,
        patches_per_s: model.last_patches_per_s,
        best_dice: model.best.as_ref().map(|(_, d)| [d.et, d.tc, d.wt]),
    }
}
