//! A run's summary: the fold of its events that lists need (state, progress, best Dice,
//! evaluation), kept in the run directory as `summary.json` beside `events.jsonl`.
//!
//! Events stay the truth. The summary records how much of `events.jsonl` it folded (bytes
//! and lines); a reader restores the summary and reads on from there, so a workspace of a
//! thousand finished runs opens without parsing their histories. A summary whose file
//! shrank, that does not parse, or that an older segtop wrote is ignored and the events are
//! read from the start. Charts are not in it: they are read from the events for the runs
//! on screen.
//!
//! Whoever folds a finished run's events writes its summary (the trainer at its end, a
//! reader that found it missing or behind); a live run's is not written, since it changes
//! every step. Writing is best effort: a read-only run directory is read from its events.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::Config;
use super::model::RunModel;
use crate::run::RunDir;
use crate::run::events::EventTail;

/// The summary's file name in a run directory.
const FILE: &str = RunDir::SUMMARY;
/// Bumped when the model's folded fields change meaning, so older summaries are refolded.
const SCHEMA: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    schema: u32,
    /// The bytes of `events.jsonl` folded (complete lines only) and the next line's number.
    events: (u64, u64),
    model: RunModel,
}

/// A run's model folded from its events, and the tail that reads on from where the fold
/// ended.
pub struct Folded {
    pub model: RunModel,
    pub tail: EventTail,
    /// Lines of the events that could not be read.
    pub warnings: Vec<String>,
}

/// Reads the run in `dir`, whose frozen experiment is `config` (it says how the best
/// validation is chosen): from its summary and what its events gained since, else from all
/// its events; writes the summary when the run has finished and it was missing or behind.
/// With `charts`, the events are always read from the start so the charts are complete.
pub fn fold(id: &str, dir: &Path, config: &Config, charts: bool) -> Folded {
    let run = RunDir::open(dir);
    let stored = read(dir);
    let on_disk = stored.as_ref().map(|s| s.events);
    let (mut model, mut tail, from_summary) = match stored.filter(|_| !charts) {
        Some(stored) => (stored.model, EventTail::resume(run.events(), stored.events), true),
        None => (RunModel::new(id, dir), EventTail::new(run.events()), false),
    };
    model.id = id.to_string();
    model.dir = dir.to_path_buf();
    model.observed.config = config.clone();
    let mut warnings = match tail.read_each(|event| model.apply(&event)) {
        Ok(warnings) => warnings,
        Err(error) => vec![format!("{}: cannot read: {error}", run.events().display())],
    };
    // A file that shrank was read again from the start, onto a model that already held it.
    if from_summary && warnings.iter().any(|w| w.ends_with("reading it again from the start")) {
        return fold(id, dir, config, true);
    }
    model.charts.complete = !from_summary;
    if model.finished.is_some() && on_disk != Some(tail.position()) {
        write(dir, &model, tail.position());
    }
    warnings.dedup();
    Folded { model, tail, warnings }
}

/// Writes the summary of a finished run from its events (the trainer, at its end).
pub fn refresh(dir: &Path) {
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fold(&id, dir, &frozen_config(&RunDir::open(dir)), true);
}

/// The run's frozen experiment as keys and values; empty when it cannot be read.
pub fn frozen_config(run: &RunDir) -> Config {
    std::fs::read_to_string(run.experiment())
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .map(|table| Config::from_table(&table))
        .unwrap_or_default()
}

fn read(dir: &Path) -> Option<Stored> {
    let text = std::fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice::<Stored>(&text)
        .ok()
        .filter(|stored| stored.schema == SCHEMA)
}

fn write(dir: &Path, model: &RunModel, events: (u64, u64)) {
    #[derive(Serialize)]
    struct Writing<'a> {
        schema: u32,
        events: (u64, u64),
        model: &'a RunModel,
    }
    let stored = Writing {
        schema: SCHEMA,
        events,
        model,
    };
    // Best effort: without it, readers fold the events as before.
    let _ = crate::run::write_json(dir, &dir.join(FILE), &stored);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::events::{Event, EventLog};

    fn recorded(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs").join(name)
    }

    /// A copy of a recorded run in a temporary directory.
    fn copy(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().join(name);
        std::fs::create_dir(&run).expect("mkdir");
        std::fs::copy(recorded(name).join("events.jsonl"), run.join("events.jsonl")).expect("copy");
        (dir, run)
    }

    /// The model's fields that lists show, compared between two reads.
    fn listed(model: &RunModel) -> String {
        format!(
            "{} {:?} {} {} {:?} {:?} {:?} {:?} {:?} {}",
            model.name,
            model.finished,
            model.epoch,
            model.epochs,
            model.best,
            model.evaluation.as_ref().map(|e| e.mean.len()),
            model.patches_per_s(),
            model.started,
            model.last_error,
            model.previews
        )
    }

    #[test]
    fn a_finished_run_is_read_from_its_summary_as_from_its_events() {
        let name = "20261126-204650-unet-base8";
        let (_dir, run) = copy(name);
        let first = fold(name, &run, &Config::default(), false);
        assert!(first.model.charts.complete && !first.model.charts.loss.is_empty());
        assert!(run.join(FILE).is_file(), "a finished run's summary is written");
        let second = fold(name, &run, &Config::default(), false);
        assert!(
            !second.model.charts.complete && second.model.charts.loss.is_empty(),
            "no charts from a summary"
        );
        assert_eq!(listed(&second.model), listed(&first.model));
        assert_eq!(second.model.state(), first.model.state());
        assert_eq!(second.tail.position(), first.tail.position());
    }

    #[test]
    fn events_appended_after_the_summary_are_read_on_top_of_it() {
        let name = "20261126-204650-unet-base8";
        let (_dir, run) = copy(name);
        fold(name, &run, &Config::default(), false);
        // A resume appends a new start.
        let mut log = EventLog::open(&run.join("events.jsonl")).expect("open");
        log.emit_failure("out of memory", 3.0).expect("append");
        let again = fold(name, &run, &Config::default(), false);
        let whole = fold(name, &run, &Config::default(), true);
        assert_eq!(again.model.last_error.as_deref(), Some("out of memory"));
        assert_eq!(listed(&again.model), listed(&whole.model));
        // The summary caught up with the file.
        let stored = read(&run).expect("summary");
        assert_eq!(stored.events, whole.tail.position());
    }

    #[test]
    fn a_broken_stale_or_foreign_summary_is_ignored_and_rewritten() {
        let name = "20261126-204650-unet-base8";
        let (_dir, run) = copy(name);
        let truth = listed(&fold(name, &run, &Config::default(), true).model);
        for bad in ["{ not json", "{\"schema\": 999, \"events\": [0, 1], \"model\": {}}"] {
            std::fs::write(run.join(FILE), bad).expect("write");
            assert_eq!(
                listed(&fold(name, &run, &Config::default(), false).model),
                truth,
                "{bad}"
            );
        }
        // Events replaced by a shorter file: read again from the start.
        fold(name, &run, &Config::default(), false);
        let text = std::fs::read_to_string(run.join("events.jsonl")).expect("read");
        let first_lines: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        std::fs::write(run.join("events.jsonl"), &first_lines).expect("write");
        let shorter = fold(name, &run, &Config::default(), false);
        assert!(
            shorter.model.finished.is_none() && shorter.model.epoch == 1,
            "{}",
            listed(&shorter.model)
        );
        let _ = Event::from_line(first_lines.lines().next().expect("a line")).expect("still events");
    }
    #[test]
    fn the_best_validation_follows_the_frozen_experiments_selection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().join("r");
        std::fs::create_dir(&run).expect("mkdir");
        let mut log = EventLog::open(&run.join("events.jsonl")).expect("open");
        let scores = |v: f64| crate::run::events::RegionScores { et: v, tc: v, wt: v };
        let time = chrono::Utc::now();
        // Legacy Dice is best at epoch 1, lesion-wise Dice at epoch 2.
        for (epoch, legacy, lesion) in [(1, 0.8, 0.2), (2, 0.6, 0.5)] {
            log.emit(&Event::Validation {
                time,
                epoch,
                dice: scores(legacy),
                hd95: None,
                seed_dice: 0.5,
                lesion_dice: Some(scores(lesion)),
                cases: vec![],
                seconds: 1.0,
            })
            .expect("append");
        }
        log.emit_failure("stopped here", 1.0).expect("append");
        let lesion: Config = [("validate.select", "lesion")].into_iter().collect();
        assert_eq!(fold("r", &run, &lesion, false).model.best.map(|b| b.0), Some(2));
        assert_eq!(
            fold("r", &run, &lesion, false).model.best.map(|b| b.0),
            Some(2),
            "from the summary"
        );
        assert_eq!(
            fold("r", &run, &Config::default(), true).model.best.map(|b| b.0),
            Some(1)
        );
    }
}
