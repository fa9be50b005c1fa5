//! Run directories written by an earlier segtop still read: their events, records and
//! summaries (`tests/data/runs-2026-12-06`).

use crate::{repo, segtop, stdout};

/// A scratch workspace holding a copy of the saved run directories.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let from = repo().join("tests/data/runs-2026-12-06/runs");
    for run in std::fs::read_dir(&from).expect("saved runs").flatten() {
        let to = dir.path().join("runs").join(run.file_name());
        std::fs::create_dir_all(&to).expect("run dir");
        for file in std::fs::read_dir(run.path()).expect("run files").flatten() {
            std::fs::copy(file.path(), to.join(file.file_name())).expect("copy");
        }
    }
    dir
}

#[test]
fn runs_written_before_the_reorganisation_list_as_they_did() {
    let dir = workspace();
    let saved = repo().join("tests/data/runs-2026-12-06");
    let mut listed: serde_json::Value =
        serde_json::from_str(&stdout(&segtop(dir.path(), &["runs", "--json"]))).expect("runs --json is JSON");
    for run in listed.as_array_mut().expect("a list") {
        run.as_object_mut().expect("a run").remove("path");
    }
    let then: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("runs.json")).expect("runs.json"))
            .expect("saved JSON");
    assert_eq!(listed, then);
    let table = stdout(&segtop(dir.path(), &["runs"]));
    assert_eq!(
        table,
        std::fs::read_to_string(saved.join("runs.txt")).expect("runs.txt")
    );
}

#[test]
fn a_summary_written_before_the_reorganisation_is_read_not_refolded() {
    let dir = workspace();
    let run = dir.path().join("runs/20261206-232350-compat");
    let summary = std::fs::read(run.join("summary.json")).expect("summary.json");
    let config = segtop::runs::summary::frozen_config(&segtop::run::RunDir::open(&run));
    let from_summary = segtop::runs::summary::fold("20261206-232350-compat", &run, &config, false);
    // Charts are not in a summary: incomplete charts say the summary was taken.
    assert!(!from_summary.model.charts.complete, "the summary was not used");
    assert!(from_summary.warnings.is_empty(), "{:?}", from_summary.warnings);
    let from_events = segtop::runs::summary::fold("20261206-232350-compat", &run, &config, true);
    assert!(from_events.warnings.is_empty(), "{:?}", from_events.warnings);
    let saved = |folded: &segtop::runs::summary::Folded| serde_json::to_value(&folded.model).expect("serializes");
    assert_eq!(saved(&from_summary), saved(&from_events));
    assert_eq!(from_summary.model.epoch, 3);
    assert!(from_summary.model.evaluation.is_some());
    // Nothing was behind, so nothing was written again.
    assert_eq!(std::fs::read(run.join("summary.json")).expect("summary.json"), summary);
    // Its learned post-processing still loads.
    segtop::postprocess::Plan::load(&run.join("postprocess.toml")).expect("postprocess.toml loads");
}
