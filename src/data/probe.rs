//! What an experiment's `[data]` points at on disk: the dataset folder, enough cases for its
//! folds, the synthetic demo cases. These can change after the file is written, so they are
//! problems to show beside a valid experiment, not parse errors.

use crate::data::synth::{self, SynthSpec};
use crate::experiment::{DataConfig, PathProblem};

/// Problems with the dataset `data` names, in the order a user would fix them.
pub fn problems(data: &DataConfig) -> Vec<PathProblem> {
    let root = &data.root;
    let mut problems = Vec::new();
    if data.folds > 0 {
        // The folds need cases: as many as the dataset has, or will have once generated.
        let cases = match &data.synthetic {
            Some(synthetic) => Some(synthetic.cases as usize),
            None => crate::data::case::discover(root, data.layout)
                .ok()
                .map(|d| d.cases.len()),
        };
        if let Some(cases) = cases {
            let ids: Vec<String> = (0..cases).map(|i| format!("{i:06}")).collect();
            if let Err(message) =
                crate::data::dataset::fold_split(&ids, data.split[2], data.split_seed, data.folds, data.fold)
            {
                problems.push(PathProblem {
                    key: "data.folds",
                    message: message.to_string(),
                    fatal: true,
                });
            }
        }
    }
    if let Some(synthetic) = &data.synthetic {
        if !synth::is_complete(root, &SynthSpec::of(synthetic)) {
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
