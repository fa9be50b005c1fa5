//! The workspace's experiment files as a list: each file read, checked as `segtop check`
//! does, and what its `[sweep]` expands into. The dashboard's experiment screen shows this
//! list; reading it is file I/O, so it happens off the UI thread.

use std::path::PathBuf;

use crate::experiment::Experiment;
use crate::workspace::Workspace;

/// One experiment file and what checking it found.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentEntry {
    pub path: PathBuf,
    pub name: String,
    pub status: ExperimentStatus,
    /// What its `[sweep]` expands into (`4 runs: train.lr × model.base_filters`), if it has one.
    pub sweep: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExperimentStatus {
    /// Valid, and everything it points at is there.
    Ready(Box<Experiment>),
    /// Valid, but something it needs is missing (e.g. the dataset folder).
    Missing(Box<Experiment>, Vec<String>),
    /// The file does not parse or check; one line per problem.
    Invalid(Vec<String>),
}

impl ExperimentEntry {
    /// The checked experiment, when the file is valid.
    pub fn experiment(&self) -> Option<&Experiment> {
        match &self.status {
            ExperimentStatus::Ready(e) | ExperimentStatus::Missing(e, _) => Some(e),
            ExperimentStatus::Invalid(_) => None,
        }
    }

    /// Reads and checks every experiment file of the workspace.
    pub fn scan(workspace: &Workspace) -> Vec<ExperimentEntry> {
        let files = match workspace.experiment_files() {
            Ok(files) => files,
            Err(error) => {
                return vec![ExperimentEntry {
                    path: workspace.experiments_dir(),
                    name: "experiments/".to_string(),
                    sweep: None,
                    status: ExperimentStatus::Invalid(vec![format!(
                        "{}: cannot list: {error}",
                        workspace.experiments_dir().display()
                    )]),
                }];
            }
        };
        files
            .into_iter()
            .map(|path| ExperimentEntry::check(&path, workspace))
            .collect()
    }

    pub fn check(path: &std::path::Path, workspace: &Workspace) -> ExperimentEntry {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = path.strip_prefix(workspace.root()).unwrap_or(path);
        let mut sweep = None;
        // Read once: the experiment, then what its [sweep] expands into.
        let parsed = crate::config::read_text(shown)
            .and_then(|text| Experiment::parse(shown, &text, workspace.root()).map(|e| (e, text)));
        let status = match parsed {
            Ok((experiment, text)) => match crate::experiment::sweep::expand(shown, &text, workspace.root()) {
                Err(error) => ExperimentStatus::Invalid(format!("{error:#}").lines().map(str::to_string).collect()),
                Ok(expanded) => {
                    if let Some(expanded) = expanded {
                        let keys: Vec<&str> = expanded
                            .members
                            .first()
                            .map(|m| m.values.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        sweep = Some(format!("{} runs: {}", expanded.members.len(), keys.join(" × ")));
                    }
                    let problems = crate::run::path_problems(&experiment, workspace.root());
                    if problems.is_empty() {
                        ExperimentStatus::Ready(Box::new(experiment))
                    } else {
                        let messages = problems.into_iter().map(|p| p.message).collect();
                        ExperimentStatus::Missing(Box::new(experiment), messages)
                    }
                }
            },
            Err(error) => ExperimentStatus::Invalid(error.to_string().lines().map(str::to_string).collect()),
        };
        ExperimentEntry {
            path: path.to_path_buf(),
            name,
            status,
            sweep,
        }
    }
}
