//! `segtop runs` over the recorded runs: states from facts, filters, sorting, JSON.

use std::path::Path;

use super::wait::poll_until;
use super::{repo, segtop, stdout};

/// A workspace holding the recorded runs, plus a copy of the live one that claims this host
/// and a process that no longer exists: a lost run.
fn workspace_with_runs(dir: &Path) {
    let recorded = repo().join("tests/data/runs");
    for entry in std::fs::read_dir(&recorded).expect("recorded runs") {
        let from = entry.expect("entry").path();
        let to = dir.join("runs").join(from.file_name().expect("name"));
        std::fs::create_dir_all(&to).expect("mkdir");
        for file in std::fs::read_dir(&from).expect("run files") {
            let file = file.expect("file").path();
            std::fs::copy(&file, to.join(file.file_name().expect("name"))).expect("copy");
        }
    }
    let mut gone = std::process::Command::new("true").spawn().expect("true runs");
    let dead_pid = gone.id();
    gone.wait().expect("true ends");
    let host = sysinfo::System::host_name().unwrap_or_default();
    let live = recorded.join("20261126-204703-lite-lr1e-2/events.jsonl");
    let events = std::fs::read_to_string(live).expect("events");
    let pid = events
        .split("\"pid\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("a pid in run_started")
        .to_string();
    let lost = events
        .replace("\"host\":\"node1\"", &format!("\"host\":\"{host}\""))
        .replace(&format!("\"pid\":{pid},"), &format!("\"pid\":{dead_pid},"));
    let dir = dir.join("runs/20261126-204800-lost");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("events.jsonl"), lost).expect("write");
}

fn json(dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["runs", "--json"];
    all.extend(args);
    let output = segtop(dir, &all);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_str::<serde_json::Value>(&stdout(&output))
        .expect("JSON")
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn runs_lists_states_from_facts_filters_and_sorts() {
    let dir = tempfile::tempdir().expect("temp dir");
    workspace_with_runs(dir.path());
    let runs = json(dir.path(), &[]);
    let states: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r["id"].as_str().expect("id"), r["state"].as_str().expect("state")))
        .collect();
    // Newest first. The cut-off run lives on another host, so it is running as far as anyone
    // here can tell; its copy on this host with a dead process is lost.
    assert_eq!(
        states,
        [
            ("20261126-204800-lost", "lost"),
            ("20261126-204747-wide-filters", "stopped"),
            ("20261126-204742-bad-data", "failed"),
            ("20261126-204703-lite-lr1e-2", "running"),
            ("20261126-204650-unet-base8", "done"),
        ]
    );
    let failed = json(dir.path(), &["--state", "failed"]);
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no BraTS cases found"))
    );

    let by_wt = json(dir.path(), &["--sort", "wt"]);
    let wt: Vec<f64> = by_wt
        .iter()
        .map(|r| r["best_dice"]["wt"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(wt.windows(2).all(|w| w[0] >= w[1]), "{wt:?}");
    assert_eq!(
        by_wt.last().and_then(|r| r["id"].as_str()),
        Some("20261126-204742-bad-data")
    );

    // The completed run's end-of-run evaluation, raw only; the others have none.
    let evaluated: Vec<(&str, &serde_json::Value)> = runs
        .iter()
        .filter(|r| !r["evaluation"].is_null())
        .map(|r| (r["id"].as_str().expect("id"), &r["evaluation"]))
        .collect();
    assert_eq!(evaluated.len(), 1, "{runs:?}");
    let (id, evaluation) = evaluated[0];
    assert_eq!(id, "20261126-204650-unet-base8");
    assert_eq!(evaluation["epoch"], 6);
    assert_eq!(evaluation["tta"], false);
    assert_eq!(evaluation["raw"]["lesion_dice"]["wt"], 0.8648807713812079);
    assert_eq!(evaluation["raw"]["legacy_dice"]["tc"], 0.0);
    assert!(evaluation["postprocessed"].is_null(), "{evaluation}");

    let table = stdout(&segtop(dir.path(), &["runs"]));
    let first: Vec<&str> = table.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(first[..3], ["20261126-204800-lost", "lost", "8/12"], "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");

    let bad = segtop(dir.path(), &["runs", "--state", "sleeping"]);
    assert!(!bad.status.success());
    assert!(
        super::stderr(&bad).contains("'sleeping' is not one of: queued, paused, pending, starting, running"),
        "{bad:?}"
    );
}

fn state_of(dir: &Path, id: &str) -> String {
    json(dir, &[])
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

/// Waits until `segtop runs` says the run is in `state`.
fn wait_for_state(dir: &Path, id: &str, state: &str) {
    let mut last = String::new();
    let what = format!("{id} to become {state}");
    poll_until(&what, std::time::Duration::from_secs(120), || {
        last = state_of(dir, id);
        (last == state).then_some(())
    })
    .unwrap_or_else(|timeout| timeout.fail(format_args!("it is {last}")));
}

/// Stop, resume, kill and remove a real run with the commands scripts use.
#[cfg(feature = "trainer")]
#[test]
fn stop_resume_kill_and_remove_a_run_from_the_command_line() {
    use segtop::run::events::Event;
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = super::train::experiment(dir.path(), 500);
    let mut child = super::train::start_and_wait(dir.path(), &experiment, |events| {
        events.iter().any(|e| matches!(e, Event::Checkpoint { .. }))
    });
    let id = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs/")
        .next()
        .expect("a run")
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .into_owned();
    assert_eq!(state_of(dir.path(), &id), "running");

    // A live run is never removed.
    let refused = segtop(dir.path(), &["rm", "--yes", "tiny"]);
    assert!(!refused.status.success());
    assert!(
        super::stderr(&refused).contains("is running: stop it first"),
        "{refused:?}"
    );

    // Stop: the trainer checkpoints and exits with its stopped code.
    let stopped = segtop(dir.path(), &["stop", "tiny"]);
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(child.wait().expect("trainer ends").code(), Some(3));
    assert_eq!(state_of(dir.path(), &id), "stopped");
    let again = segtop(dir.path(), &["stop", &id]);
    assert!(
        super::stderr(&again).contains("is stopped: nothing to stop"),
        "{again:?}"
    );

    // Resume in the background, then kill: no run_finished, so the run is lost.
    let resumed = segtop(dir.path(), &["resume", &id]);
    assert!(resumed.status.success(), "{resumed:?}");
    wait_for_state(dir.path(), &id, "running");
    let killed = segtop(dir.path(), &["stop", "--kill", &id]);
    assert!(killed.status.success(), "{killed:?}");
    // The supervisor that resumed it saw it die: failed, with the signal as the reason.
    wait_for_state(dir.path(), &id, "failed");
    let error = json(dir.path(), &[])
        .iter()
        .find(|r| r["id"] == id.as_str())
        .and_then(|r| r["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(error.contains("killed by SIGKILL"), "{error}");
    let log = std::fs::read_to_string(dir.path().join("runs").join(&id).join("train.log")).expect("log");
    assert!(log.contains("resuming from"), "{log}");

    // Removing asks; without a terminal and without --yes it refuses.
    let unasked = segtop(dir.path(), &["rm", &id]);
    assert!(!unasked.status.success());
    assert!(
        super::stderr(&unasked).contains("without a confirmation"),
        "{unasked:?}"
    );
    let removed = segtop(dir.path(), &["rm", "--yes", &id]);
    assert!(removed.status.success(), "{removed:?}");
    assert!(!dir.path().join("runs").join(&id).exists());
    let missing = segtop(dir.path(), &["stop", "tiny"]);
    assert!(
        super::stderr(&missing).contains("no run 'tiny' (runs: none)"),
        "{missing:?}"
    );
}

/// The official scores of one region, for an evaluation record.
fn brats(region: &str, lesion_dice: f64, legacy_dice: f64) -> segtop::run::events::BratsScores {
    segtop::run::events::BratsScores {
        region: region.into(),
        lesion_dice,
        lesion_hd95: 10.0,
        lesion_nsd_10: 0.5,
        legacy_dice,
        legacy_hd95: 8.0,
        num_tp: 1,
        num_fp: 0,
        num_fn: 0,
    }
}

#[test]
fn export_writes_one_row_per_run_and_epoch() {
    let dir = tempfile::tempdir().expect("temp dir");
    workspace_with_runs(dir.path());
    // `segtop postprocess` evaluated the completed run again, with post-processing: the
    // latest evaluation counts.
    let events_path = dir.path().join("runs/20261126-204650-unet-base8/events.jsonl");
    let mut events = std::fs::read_to_string(&events_path).expect("events");
    let time = chrono::DateTime::parse_from_rfc3339("2026-11-26T21:00:00Z")
        .expect("valid time")
        .to_utc();
    let regions = |wt: (f64, f64)| vec![brats("WT", wt.0, wt.1), brats("TC", 0.1, 0.2), brats("ET", 0.3, 0.4)];
    events.push_str(
        &segtop::run::events::Event::Evaluation {
            time,
            epoch: 6,
            challenge: "BraTS-SSA".into(),
            mean: regions((0.13, 0.77)),
            cases: vec![],
            tta: true,
            postprocess: Some("WT: remove components under 500 voxels".into()),
            postprocessed: Some(regions((0.78, 0.80))),
            postprocessed_cases: vec![],
            seconds: 1.0,
        }
        .to_line(),
    );
    std::fs::write(&events_path, events).expect("write");
    let out = dir.path().join("curves.csv");
    let output = segtop(
        dir.path(),
        &[
            "export",
            "unet-base8",
            "wide",
            "--csv",
            "--out",
            out.to_str().expect("utf-8"),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&out).expect("csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(header[..5], ["run", "epoch", "loss", "loss_ce", "loss_dice"]);
    assert_eq!(header.last(), Some(&"pp_legacy_dice_wt"));
    for scores in [
        "hd95",
        "lesion_dice",
        "eval_lesion_dice",
        "eval_legacy_dice",
        "pp_lesion_dice",
        "pp_legacy_dice",
    ] {
        for region in ["et", "tc", "wt"] {
            let name = format!("{scores}_{region}");
            assert!(header.contains(&name.as_str()), "{name} missing: {header:?}");
        }
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == header.len()), "{text}");
    let unet: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == "20261126-204650-unet-base8").collect();
    let wide = rows.iter().filter(|r| r[0] == "20261126-204747-wide-filters").count();
    // wide-filters was stopped in its 9th epoch: 8 epochs ended.
    assert_eq!((unet.len(), wide), (12, 8), "one row per epoch trained");
    // The last validation's whole-tumour Dice, as recorded.
    let events =
        std::fs::read_to_string(dir.path().join("runs/20261126-204650-unet-base8/events.jsonl")).expect("events");
    let last_validation: serde_json::Value = events
        .lines()
        .rfind(|l| l.contains("\"event\":\"validation\""))
        .map(|l| serde_json::from_str(l).expect("json"))
        .expect("a validation");
    let column = header.iter().position(|h| *h == "dice_wt").expect("dice_wt");
    let wt: f64 = unet[11][column].parse().expect("a number");
    assert_eq!(Some(wt), last_validation["dice"]["wt"].as_f64());
    // The evaluated epoch's row holds the latest evaluation, raw and post-processed; the
    // other rows and the recorded validations (no lesion-wise Dice) leave theirs empty.
    let cell = |row: &[&str], name: &str| {
        let column = header.iter().position(|h| *h == name).expect("a column");
        row[column].to_string()
    };
    let evaluated: Vec<&&Vec<&str>> = unet
        .iter()
        .filter(|r| !cell(r, "eval_lesion_dice_wt").is_empty())
        .collect();
    assert_eq!(evaluated.len(), 1, "{text}");
    let row = evaluated[0];
    assert_eq!(cell(row, "epoch"), "6");
    assert_eq!(
        [
            cell(row, "eval_lesion_dice_wt"),
            cell(row, "eval_legacy_dice_wt"),
            cell(row, "pp_lesion_dice_wt"),
            cell(row, "pp_legacy_dice_wt"),
            cell(row, "pp_legacy_dice_et"),
        ],
        ["0.13", "0.77", "0.78", "0.8", "0.4"]
    );
    assert!(unet.iter().all(|r| cell(r, "lesion_dice_wt").is_empty()), "{text}");
    assert!(
        rows.iter()
            .filter(|r| r[0] == "20261126-204747-wide-filters")
            .all(|r| cell(r, "eval_lesion_dice_wt").is_empty() && cell(r, "pp_lesion_dice_wt").is_empty()),
        "{text}"
    );

    let json = segtop(dir.path(), &["export", "bad-data", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(value[0]["run"], "20261126-204742-bad-data");
    assert_eq!(value[0]["epochs"].as_array().map(Vec::len), Some(0));
    let neither = segtop(dir.path(), &["export", "unet"]);
    assert!(!neither.status.success(), "--csv or --json is required");
}
