//! `[run]`: the run's name, the launcher that starts it and its threads.

use serde::Serialize;

use super::raw;
use crate::choice_enum;
use crate::config::Checker;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    /// Name of runs of this experiment; defaults to the file name without `.toml`.
    pub name: String,
    pub tags: Vec<String>,
    pub notes: String,
    /// Where its runs train: on this machine, or as Slurm jobs (see `[slurm]`).
    pub launcher: LauncherKind,
}

choice_enum! {
    /// Where runs train.
    pub enum LauncherKind {
        /// On this machine, started by segtop's queue as cores and memory allow.
        Local => "local",
        /// As Slurm batch jobs, submitted with `sbatch` (settings in `[slurm]`).
        Slurm => "slurm",
    }
}

/// Runs train on this machine unless an experiment says otherwise.
impl Default for LauncherKind {
    fn default() -> LauncherKind {
        LauncherKind::Local
    }
}

/// Whether `name` can name a run directory: letters, digits, `-`, `_` and `.`, not leading `.`.
pub fn is_valid_run_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn check_run(check: &mut Checker, raw: raw::RawRun) -> RunConfig {
    let stem = check
        .source
        .path()
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match raw.name {
        Some(name) if !is_valid_run_name(&name) => {
            check.error(
                "run.name",
                format!("run.name = '{name}' is not allowed: use up to 100 letters, digits, '-', '_' or '.', not starting with '.'"),
            );
            name
        }
        Some(name) => name,
        // A file name that cannot name a run gets a neutral default rather than an error.
        None if is_valid_run_name(&stem) => stem,
        None => "run".to_string(),
    };
    RunConfig {
        name,
        tags: raw.tags.unwrap_or_default(),
        notes: raw.notes.unwrap_or_default(),
        launcher: check.choice("run.launcher", raw.launcher.as_deref(), LauncherKind::Local),
    }
}
