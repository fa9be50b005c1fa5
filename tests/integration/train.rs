//! Training from the command line on small synthetic data: the run directory, the events,
//! checkpoints, and an exact resume after SIGKILL.

#![cfg(feature = "trainer")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segtop::run::events::Event;

use super::wait::poll_until;

/// A tiny experiment on 4 synthetic 48x48x32 cases, written into `dir`.
pub fn experiment(dir: &Path, epochs: u32) -> PathBuf {
    experiment_on(dir, epochs, [48, 48, 32])
}

/// The tiny experiment on 4 synthetic cases of `shape`.
fn experiment_on(dir: &Path, epochs: u32, [x, y, z]: [u32; 3]) -> PathBuf {
    let text = format!(
        "[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
         [data.synthetic]\ncases = 4\nseed = 3\nshape = [{x}, {y}, {z}]\n\
         [model]\nbase_filters = 4\ndepth = 3\n\
         [train]\npatch_size = [16, 16, 16]\nbatch_size = 2\nepochs = {epochs}\npatches_per_epoch = 8\nwarmup_epochs = 0\n\
         [validate]\nevery = 1\n[run]\nname = \"tiny\"\n"
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).expect("write");
    path
}

pub fn trainer(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_segtop-train"));
    command
        .current_dir(dir)
        .env("SEGTOP_THREADS", "1")
        .env("SEGTOP_MACHINE_DIR", dir.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0");
    command
}

/// Runs the trainer to its end and insists that it succeeded.
pub fn succeed(command: &mut Command) {
    let output = command.output().expect("the trainer runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn events(run: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap_or_default();
    text.lines().filter_map(|line| Event::from_line(line).ok()).collect()
}

/// The run under `dir/runs` whose name ends with `-name`.
fn run_named(dir: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(dir.join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&format!("-{name}")))
        .unwrap_or_else(|| panic!("no run named {name}"))
}

pub fn only_run(dir: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// Starts training `experiment` in `dir` in the background and waits (up to 5 minutes) until
/// its events satisfy `ready`; fails, the trainer killed, if they never do.
pub fn start_and_wait(dir: &Path, experiment: &Path, ready: impl Fn(&[Event]) -> bool) -> std::process::Child {
    let mut child = trainer(dir)
        .arg("train")
        .arg(experiment)
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let run = || {
        dir.join("runs")
            .read_dir()
            .ok()
            .and_then(|mut runs| runs.next())
            .and_then(|run| run.ok())
            .map(|run| run.path())
    };
    let waited = poll_until("the trainer's events to be ready", Duration::from_secs(300), || {
        run().filter(|run| ready(&events(run)))
    });
    if let Err(timeout) = waited {
        let _ = child.kill();
        let _ = child.wait();
        let last = run().map(|run| events(&run)).and_then(|events| events.last().cloned());
        timeout.fail(format_args!("the last event: {last:?}"));
    }
    child
}

/// Sends `child` the signal named `name` (`TERM`, `USR1`).
fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} failed");
}

fn last_validation(events: &[Event]) -> segtop::run::events::RegionScores {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Validation { dice, .. } => Some(*dice),
            _ => None,
        })
        .expect("a validation")
}

#[test]
fn a_tiny_run_writes_a_complete_run_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 2);
    succeed(trainer(dir.path()).arg("train").arg(&path));
    let run = only_run(dir.path());
    assert!(run.file_name().expect("name").to_string_lossy().ends_with("-tiny"));
    for file in [
        "experiment.toml",
        "split.json",
        "events.jsonl",
        "checkpoints/best.safetensors",
    ] {
        assert!(run.join(file).is_file(), "no {file}");
    }
    let events = events(&run);
    assert!(matches!(
        events.first(),
        Some(Event::RunStarted {
            epochs: 2,
            steps_per_epoch: 4,
            ..
        })
    ));
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Step { .. })).count(), 8);
    assert_eq!(events.iter().filter(|e| matches!(e, Event::EpochEnd { .. })).count(), 2);
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::Validation { .. })).count(),
        2
    );
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: segtop::run::events::Outcome::Completed,
            ..
        })
    ));
    let dice = last_validation(&events);
    assert!((0.0..=1.0).contains(&dice.wt));
    let Some(Event::Validation { hd95: Some(hd95), .. }) =
        events.iter().rfind(|e| matches!(e, Event::Validation { .. }))
    else {
        panic!("the validation has no HD95");
    };
    assert!((0.0..=374.0).contains(&hd95.wt), "{hd95:?}");
    // The official metrics once at the end, before run_finished.
    let Some(Event::Evaluation {
        challenge, mean, cases, ..
    }) = events.iter().find(|e| matches!(e, Event::Evaluation { .. }))
    else {
        panic!("no evaluation event");
    };
    assert_eq!(challenge, "BraTS-SSA");
    assert_eq!(
        mean.iter().map(|m| m.region.as_str()).collect::<Vec<_>>(),
        ["WT", "TC", "ET"]
    );
    assert!(!cases.is_empty() && cases.iter().all(|c| c.regions.len() == 3));
    assert!(
        mean.iter()
            .all(|m| (0.0..=1.0).contains(&m.lesion_dice) && (0.0..=374.0).contains(&m.lesion_hd95))
    );
    // The evaluation is the run's last record before run_finished, but for the resource
    // samples its reporter thread may write while the run ends.
    assert!(matches!(
        events
            .iter()
            .rev()
            .skip(1)
            .find(|e| !matches!(e, Event::Resources { .. })),
        Some(Event::Evaluation { .. })
    ));

    // A preview per validation, on the source grid with the source's affine.
    let previews: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::PreviewWritten { case, path, .. } => Some((case.clone(), path.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(previews.len(), 2);
    let (case, path) = &previews[1];
    assert_eq!(path, "preview/epoch-0002.nii.gz");
    let preview = segtop::data::volume::read_volume(&run.join(path)).expect("a readable NIfTI");
    let source =
        segtop::data::volume::read_volume(&dir.path().join(format!("data/{case}/{case}-t1n.nii.gz"))).expect("source");
    assert_eq!(preview.shape, [48, 48, 32]);
    assert_eq!(preview.affine, source.affine);
    assert!(preview.data.iter().all(|&l| [0.0, 1.0, 2.0, 3.0].contains(&l)));

    // predict writes one segmentation per case, on each case's grid, with its affine.
    let out = dir.path().join("predictions");
    succeed(
        trainer(dir.path())
            .args(["predict", "--run"])
            .arg(&run)
            .args(["--cases", "data", "--out"])
            .arg(&out),
    );
    for index in 1..=4 {
        let id = format!("BraTS-SSA-9000{index}-000");
        let written = out.join(format!("{id}.nii.gz"));
        let labels = segtop::data::volume::read_volume(&written).expect("readable");
        let source =
            segtop::data::volume::read_volume(&dir.path().join(format!("data/{id}/{id}-t2f.nii.gz"))).expect("source");
        assert_eq!((labels.shape, labels.affine), (source.shape, source.affine), "{id}");
        assert!(labels.data.iter().all(|&l| [0.0, 1.0, 2.0, 3.0].contains(&l)), "{id}");
        if let Some(mut python) = crate::data::python_with_nibabel() {
            let script = "import sys, nibabel as nib, numpy as np\n\
                p, s = nib.load(sys.argv[1]), nib.load(sys.argv[2])\n\
                assert p.shape == s.shape and np.allclose(p.affine, s.affine), (p.shape, p.affine)\n\
                assert set(np.unique(np.asarray(p.dataobj))) <= {0, 1, 2, 3}";
            let source = dir.path().join(format!("data/{id}/{id}-t2f.nii.gz"));
            let status = python
                .arg("-c")
                .arg(script)
                .arg(&written)
                .arg(&source)
                .status()
                .expect("python runs");
            assert!(status.success(), "nibabel disagrees about {id}");
        }
    }
}

#[test]
fn every_command_takes_the_workspace_from_dash_c_and_resolves_files_in_it() {
    let workspace = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    experiment(workspace.path(), 1);
    let ws = workspace.path().to_str().expect("utf-8 path");
    let segtop = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_segtop"))
            .args(args)
            .current_dir(elsewhere.path())
            .env("SEGTOP_THREADS", "1")
            .env("SEGTOP_MACHINE_DIR", elsewhere.path().join(".machine"))
            .env("SEGTOP_OTHER_LOAD", "0")
            .output()
            .expect("segtop runs")
    };
    // `tiny.toml` is the workspace's, as `git -C` reads paths.
    let trained = segtop(&["-C", ws, "train", "tiny.toml"]);
    assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
    let run = only_run(workspace.path());
    assert!(
        !elsewhere.path().join("runs").exists(),
        "nothing is written where segtop was started"
    );
    let listed = segtop(&["-C", ws, "runs", "--json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let id = run.file_name().expect("run id").to_string_lossy().into_owned();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    let missing = segtop(&["-C", "no-such-workspace", "runs"]);
    assert!(!missing.status.success());
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        said.contains("-C no-such-workspace: cannot enter the workspace"),
        "{said}"
    );
}

#[test]
fn a_time_budgeted_run_plans_its_epochs_and_ends_on_a_validated_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 1);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace(
            "epochs = 1\n",
            "budget = \"30s\"\nlr = 0.01\nearly_stopping_patience = 0\n",
        )
        // One window per case: validation and evaluation stay cheap even on a loaded machine.
        .replace(
            "[validate]\nevery = 1\n",
            "[validate]\nevery = 1\nwindow = [48, 48, 32]\n",
        ),
    )
    .expect("write");
    succeed(trainer(dir.path()).arg("train").arg(&path));
    let events = events(&only_run(dir.path()));
    assert!(matches!(
        events.first(),
        Some(Event::RunStarted {
            budget_seconds: Some(30.0),
            ..
        })
    ));
    let plans: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Plan { epochs, .. } => Some(*epochs),
            _ => None,
        })
        .collect();
    let ends: Vec<(u32, f64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::EpochEnd { epoch, lr, .. } => Some((*epoch, *lr)),
            _ => None,
        })
        .collect();
    let (last, last_lr) = *ends.last().expect("epochs");
    assert!(!plans.is_empty(), "no plan event");
    assert_eq!(plans.last(), Some(&last), "trained {last} epochs, planned {plans:?}");
    assert!(last > 1, "the plan should hold more than one epoch of 4 steps");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Validation { epoch, .. } if *epoch == last)),
        "the last epoch was not validated"
    );
    // The schedule ran over the plan: the rate fell towards its minimum by the end.
    assert!(last_lr < 0.5 * ends[0].1.max(0.01), "last lr {last_lr}");
    assert!(events.iter().any(|e| matches!(e, Event::Evaluation { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: segtop::run::events::Outcome::Completed,
            ..
        })
    ));
}

#[test]
fn a_budget_too_small_for_one_epoch_is_refused_with_the_estimate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 1);
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("epochs = 1\n", "budget = \"1s\"\n")).expect("write");
    let output = trainer(dir.path()).arg("train").arg(&path).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("train.budget = '1s' is too small for one epoch and one validation"),
        "{stderr}"
    );
    assert!(stderr.contains("give at least '1m'"), "{stderr}");
    let events = events(&only_run(dir.path()));
    assert!(!events.iter().any(|e| matches!(e, Event::Step { .. })), "it trained");
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: segtop::run::events::Outcome::Failed,
            ..
        })
    ));
}

#[test]
fn a_fine_tuned_run_starts_from_another_runs_best_weights_and_keeps_frozen_blocks_as_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 2);
    succeed(trainer(dir.path()).arg("train").arg(&path));
    let source = only_run(dir.path());
    let source_id = source.file_name().expect("id").to_string_lossy().into_owned();

    let text = std::fs::read_to_string(&path).expect("read");
    let tuned = dir.path().join("tuned.toml");
    let text = text
        .replace("depth = 3\n", &format!("depth = 3\ninit = \"{source_id}\"\n"))
        .replace(
            "epochs = 2\n",
            "epochs = 2\nfreeze = [\"enc.0\", \"enc.1\"]\nlr = 0.01\n",
        )
        .replace("name = \"tiny\"", "name = \"tuned\"");
    std::fs::write(&tuned, text).expect("write");
    succeed(trainer(dir.path()).arg("train").arg(&tuned));
    let run = run_named(dir.path(), "tuned");
    let weights = source.join("checkpoints/best.safetensors");
    let recorded = weights.display().to_string();
    // The run records where its weights came from: in its frozen experiment and its events.
    let frozen = std::fs::read_to_string(run.join("experiment.toml")).expect("frozen");
    assert!(frozen.contains(&format!("init = \"{recorded}\"")), "{frozen}");
    let events = events(&run);
    assert!(
        matches!(events.first(), Some(Event::RunStarted { init: Some(init), .. }) if *init == recorded),
        "{:?}",
        events.first()
    );
    // Frozen blocks hold the source's weights exactly; the rest trained on.
    let read = |path: &Path| -> std::collections::BTreeMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(path)
            .expect("weights")
            .into_iter()
            .collect()
    };
    let before = read(&weights);
    let after = read(&run.join("checkpoints/best.safetensors"));
    for (name, tensor) in &after {
        let frozen = name.starts_with("enc.0.") || name.starts_with("enc.1.");
        assert_eq!(tensor.equal(&before[name]), frozen, "{name}");
    }

    // A run that is not there is refused before any directory is made.
    let missing = dir.path().join("missing.toml");
    let text = std::fs::read_to_string(&tuned)
        .expect("read")
        .replace(&source_id, "no-such-run");
    std::fs::write(&missing, text).expect("write");
    let output = trainer(dir.path()).arg("train").arg(&missing).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("model.init = 'no-such-run' is not a run in"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(dir.path().join("runs")).expect("runs/").count(), 2);
}

#[test]
fn cross_validation_folds_split_disjointly_summarise_over_folds_and_predict_as_one_ensemble() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 1);
    let text = std::fs::read_to_string(&path).expect("read");
    // 6 cases: 1 held out for testing, 5 dealt into 2 folds.
    let text = text
        .replace("cases = 4", "cases = 6")
        .replace("split = [0.5, 0.5, 0.0]", "split = [0.8, 0.0, 0.2]\nfolds = 2");
    let mut runs = Vec::new();
    for fold in 0..2 {
        let file = dir.path().join(format!("cv-{fold}.toml"));
        let text = text
            .replace("folds = 2", &format!("folds = 2\nfold = {fold}"))
            .replace("name = \"tiny\"", &format!("name = \"cv-{fold}\""));
        std::fs::write(&file, text).expect("write");
        succeed(trainer(dir.path()).arg("train").arg(&file));
        runs.push(run_named(dir.path(), &format!("cv-{fold}")));
    }
    let split = |run: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join("split.json")).expect("split.json")).expect("JSON")
    };
    let (first, second) = (split(&runs[0]), split(&runs[1]));
    assert_eq!(first["fold"], serde_json::json!([0, 2]));
    assert_eq!(first["test"], second["test"]);
    assert_eq!(first["test"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        first["validation"], second["train"],
        "each fold validates on what the other trains on"
    );
    assert_eq!(first["train"], second["validation"]);

    // segtop runs: the two folds as one configuration, with mean and spread.
    let output = crate::segtop(dir.path(), &["runs"]);
    let listed = crate::stdout(&output);
    assert!(
        listed.contains("over folds (best validation Dice, mean ± sd)"),
        "{listed}"
    );
    assert!(listed.contains("  cv  2/2 folds  ET "), "{listed}");
    let json = crate::stdout(&crate::segtop(dir.path(), &["runs", "--json"]));
    assert!(json.contains("\"fold\": [\n      1,\n      2\n    ]"), "{json}");

    // predict --folds: one ensemble of both folds.
    let out = dir.path().join("predictions");
    let output = trainer(dir.path())
        .args(["predict", "--folds", "--split", "test", "--run"])
        .arg(&runs[1])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("--folds: an ensemble of 2 runs"), "{stdout}");
    assert_eq!(std::fs::read_dir(&out).expect("predictions").count(), 1);

    // postprocess --folds: one plan from both folds' validation cases (all 5 development
    // cases, each predicted by the run that did not train on it), written into each run.
    let output = crate::segtop(dir.path(), &["postprocess", "--folds", "cv-1", "--threads", "2"]);
    let said = crate::stdout(&output);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains("the validation predictions of 2 of 2 folds' runs"),
        "{said}"
    );
    assert!(
        said.contains("learning post-processing on 5 validation case(s) of"),
        "{said}"
    );
    let plans: Vec<String> = runs
        .iter()
        .map(|run| std::fs::read_to_string(run.join("postprocess.toml")).expect("postprocess.toml"))
        .collect();
    assert_eq!(plans[0], plans[1]);
    let ids = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_str().expect("id").to_string())
            .collect()
    };
    for case in ids(&first["validation"]).iter().chain(&ids(&second["validation"])) {
        assert!(
            plans[0].contains(&format!("\"{case}\"")),
            "{case} missing from {}",
            plans[0]
        );
    }
    for run in &runs {
        let id = run.file_name().expect("id").to_string_lossy();
        assert!(
            plans[0].contains(&format!("\"{id}\"")),
            "{id} missing from {}",
            plans[0]
        );
        // Each run's own evaluation event scores its own validation cases under the plan.
        let evaluations: Vec<usize> = events(run)
            .iter()
            .filter_map(|e| match e {
                Event::Evaluation { cases, .. } => Some(cases.len()),
                _ => None,
            })
            .collect();
        assert_eq!(
            evaluations.last(),
            Some(&split(run)["validation"].as_array().expect("ids").len())
        );
    }
    // A run without folds is refused.
    let plain = experiment(dir.path(), 1);
    succeed(trainer(dir.path()).arg("train").arg(&plain));
    let tiny = run_named(dir.path(), "tiny");
    let output = trainer(dir.path())
        .args(["predict", "--folds", "--run"])
        .arg(&tiny)
        .args(["--cases", "data", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a cross-validation run"));
}

#[test]
fn a_run_killed_mid_training_resumes_to_the_same_result() {
    // The uninterrupted run.
    let straight = tempfile::tempdir().expect("temp dir");
    let path = experiment(straight.path(), 3);
    succeed(trainer(straight.path()).arg("train").arg(&path));
    let expected = last_validation(&events(&only_run(straight.path())));

    // The same, killed with SIGKILL after its first checkpoint, then resumed.
    let broken = tempfile::tempdir().expect("temp dir");
    let path = experiment(broken.path(), 3);
    let mut child = start_and_wait(broken.path(), &path, |events| {
        events.iter().any(|e| matches!(e, Event::Checkpoint { .. }))
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let run = only_run(broken.path());
    assert!(
        !events(&run).iter().any(|e| matches!(e, Event::RunFinished { .. })),
        "finished before the kill"
    );
    succeed(trainer(broken.path()).arg("train").arg("--resume").arg(&run));
    let resumed = events(&run);
    assert!(resumed.iter().any(|e| matches!(
        e,
        Event::RunStarted {
            resumed_from: Some(_),
            ..
        }
    )));
    let got = last_validation(&resumed);
    for (a, b) in [(got.et, expected.et), (got.tc, expected.tc), (got.wt, expected.wt)] {
        assert!((a - b).abs() < 1e-6, "resumed {got:?} vs uninterrupted {expected:?}");
    }
}

/// Every validation's (epoch, Dice, seed Dice).
fn validations(events: &[Event]) -> Vec<(u32, segtop::run::events::RegionScores, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Validation {
                epoch, dice, seed_dice, ..
            } => Some((*epoch, *dice, *seed_dice)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_run_stopped_in_a_validation_validates_again_on_resume_to_the_same_result() {
    // Cases large enough that a validation takes seconds, so the signal lands in one.
    let write = |dir: &Path| experiment_on(dir, 2, [96, 96, 64]);
    let straight = tempfile::tempdir().expect("temp dir");
    let path = write(straight.path());
    succeed(trainer(straight.path()).arg("train").arg(&path));
    let expected = validations(&events(&only_run(straight.path())));
    assert_eq!(expected.len(), 2);

    // SIGUSR1 (a Slurm time limit) as soon as epoch 1's steps are done.
    let broken = tempfile::tempdir().expect("temp dir");
    let path = write(broken.path());
    let mut child = start_and_wait(broken.path(), &path, |events| {
        events.iter().any(|e| matches!(e, Event::EpochEnd { epoch: 1, .. }))
    });
    signal(&child, "USR1");
    assert_eq!(child.wait().expect("exits").code(), Some(3));
    let run = only_run(broken.path());
    let stopped = events(&run);
    assert!(
        validations(&stopped).is_empty(),
        "the stop did not land in the validation: {stopped:?}"
    );
    assert!(matches!(
        stopped.last(),
        Some(Event::RunFinished {
            outcome: segtop::run::events::Outcome::Stopped,
            reason: Some(reason),
            ..
        }) if reason.contains("time limit")
    ));

    // Resumed: the validation runs again on the same weights, the seed Dice on the same batch.
    succeed(trainer(broken.path()).arg("train").arg("--resume").arg(&run));
    let got = validations(&events(&run));
    assert_eq!(got.len(), 2, "{got:?}");
    for ((epoch, dice, seed), (want_epoch, want, want_seed)) in got.iter().zip(&expected) {
        assert_eq!(epoch, want_epoch);
        for (a, b) in [
            (dice.et, want.et),
            (dice.tc, want.tc),
            (dice.wt, want.wt),
            (*seed, *want_seed),
        ] {
            assert!(
                (a - b).abs() < 1e-6,
                "epoch {epoch}: resumed {dice:?} {seed} vs uninterrupted {want:?} {want_seed}"
            );
        }
    }
}

#[test]
fn sigterm_checkpoints_and_stops_with_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 200);
    let mut child = start_and_wait(dir.path(), &path, |events| {
        events.iter().any(|e| matches!(e, Event::Step { .. }))
    });
    signal(&child, "TERM");
    let code = child.wait().expect("exits").code();
    assert_eq!(code, Some(3));
    let events = events(&only_run(dir.path()));
    assert!(events.iter().any(|e| matches!(e, Event::Checkpoint { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: segtop::run::events::Outcome::Stopped,
            ..
        })
    ));
}

/// A trainer that dies of a fatal signal (a crash in libtorch's native code, here sent from
/// outside) records why in its events before the signal ends it, and still exits by it.
#[test]
fn a_crash_in_native_code_is_recorded_in_the_events_and_ends_the_trainer_by_its_signal() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = experiment(dir.path(), 200);
    let mut child = start_and_wait(dir.path(), &path, |events| {
        events.iter().any(|e| matches!(e, Event::Step { .. }))
    });
    signal(&child, "SEGV");
    let status = child.wait().expect("exits");
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    let events = events(&only_run(dir.path()));
    let [
        ..,
        Event::Error { message, .. },
        Event::RunFinished {
            outcome: segtop::run::events::Outcome::Failed,
            reason: Some(reason),
            seconds,
            ..
        },
    ] = &events[..]
    else {
        panic!("the events do not end with the crash: {:?}", events.last());
    };
    assert_eq!(message, reason);
    // "the trainer crashed (SIGSEGV); ...", or out of memory on a machine
    // with next to nothing free.
    assert!(reason.contains("(SIGSEGV)"), "{reason}");
    assert!(*seconds > 0.0);
}

/// Trains the learning experiment (a little wider and longer than the tiny one) in `dir`,
/// computing in `precision`, its network's output `output` (labels or regions); returns its run
/// and the whole-tumour Dice of each validation.
fn learn(dir: &Path, precision: &str, output: &str) -> (PathBuf, Vec<f64>) {
    let text = format!(
        "[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
         [data.synthetic]\ncases = 4\nseed = 3\nshape = [48, 48, 32]\n\
         [model]\nbase_filters = 8\ndepth = 3\noutput = \"{output}\"\n\
         [train]\npatch_size = [24, 24, 24]\nbatch_size = 2\nepochs = 10\npatches_per_epoch = 16\nlr = 3e-3\nwarmup_epochs = 0\n\
         precision = \"{precision}\"\n\
         [validate]\nevery = 1\n[run]\nname = \"learn\"\n"
    );
    std::fs::write(dir.join("learn.toml"), text).expect("write");
    succeed(trainer(dir).env("SEGTOP_THREADS", "2").args(["train", "learn.toml"]));
    let run = only_run(dir);
    let wt: Vec<f64> = events(&run)
        .iter()
        .filter_map(|e| match e {
            Event::Validation { dice, .. } => Some(dice.wt),
            _ => None,
        })
        .collect();
    assert_eq!(wt.len(), 10);
    // The untrained network finds no tumour (label argmax on background, or region heads that
    // start calling few voxels tumour); ten epochs must find them, and improve on the first.
    let (first, last) = (wt[0], wt[9]);
    assert!(
        last > 0.6 && last > first,
        "{precision} {output}: whole-tumour Dice by epoch: {wt:?}"
    );
    let started = events(&run).into_iter().find_map(|e| match e {
        Event::RunStarted { precision, .. } => Some(precision),
        _ => None,
    });
    assert_eq!(
        started,
        Some(Some(precision.to_string())),
        "run_started records the precision"
    );
    (run, wt)
}

#[test]
fn training_learns_the_synthetic_tumours_and_the_run_predicts_alone_ensembled_and_relabelled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (run, _) = learn(dir.path(), "float32", "regions");
    predictions_of_a_trained_run(dir.path(), &run);
}

/// The dtypes of the tensors in a safetensors file, by name.
fn safetensors_dtypes(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let length = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + length]).expect("a JSON header");
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, tensor)| (name, tensor["dtype"].as_str().unwrap_or("?").to_string()))
        .collect()
}

#[test]
fn bfloat16_training_learns_as_float32_does_and_its_float32_checkpoint_predicts_in_either_precision() {
    // Whatever the CPU: without bfloat16 instructions oneDNN emulates them (slowly).
    let dir = tempfile::tempdir().expect("temp dir");
    let (run, _) = learn(dir.path(), "bfloat16", "labels");
    let latest = std::fs::read_dir(run.join("checkpoints"))
        .expect("checkpoints/")
        .flatten()
        .map(|e| e.path().join("model.safetensors"))
        .filter(|p| p.is_file())
        .max()
        .expect("a checkpoint directory");
    for checkpoint in [run.join("checkpoints/best.safetensors"), latest] {
        let dtypes = safetensors_dtypes(&checkpoint);
        assert!(dtypes.iter().any(|(name, _)| name == "enc.0.0.weight"), "{dtypes:?}");
        assert!(
            dtypes.iter().all(|(_, dtype)| dtype == "F32"),
            "{} is not float32 throughout: {dtypes:?}",
            checkpoint.display()
        );
    }
    // The weights load into float32 inference, and it segments as bfloat16 inference does.
    let run_arg = run.to_str().expect("a UTF-8 path");
    let mut predicted = Vec::new();
    for precision in ["float32", "bfloat16"] {
        let output = trainer(dir.path())
            .args(["predict", "--run", run_arg, "--split", "validation", "--no-postprocess"])
            .args(["--precision", precision, "--out", precision])
            .output()
            .expect("the trainer runs");
        let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{said}");
        assert!(said.contains(&format!("precision: {precision}, as asked")), "{said}");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path().join(precision))
            .expect("predictions")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        assert!(!files.is_empty());
        predicted.push(files.iter().flat_map(|f| labels(f)).collect::<Vec<u8>>());
    }
    let tumour = |labels: &[u8]| labels.iter().map(|&l| l > 0).collect::<Vec<bool>>();
    let (a, b) = (tumour(&predicted[0]), tumour(&predicted[1]));
    let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count() as f64;
    let overlap = 2.0 * both / (a.iter().filter(|x| **x).count() + b.iter().filter(|x| **x).count()).max(1) as f64;
    assert!(
        overlap > 0.95,
        "float32 and bfloat16 inference agree on the tumour only to Dice {overlap}"
    );
}

/// Reads a labels file as integers.
pub fn labels(path: &Path) -> Vec<u8> {
    let volume = segtop::data::volume::read_volume(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    volume.data.iter().map(|&l| l as u8).collect()
}

/// What a trained run leaves for prediction, and `predict`'s ensembles, label conventions,
/// post-processing choices and errors, on `run` (trained in `dir` on synthetic BraTS 2023 cases).
fn predictions_of_a_trained_run(dir: &Path, run: &Path) {
    // The end of training kept the raw validation predictions and learned a readable plan.
    let split: segtop::data::dataset::Split =
        serde_json::from_slice(&std::fs::read(run.join("split.json")).expect("split.json")).expect("a split");
    for id in &split.validation {
        assert!(
            run.join(format!("validation/{id}.nii.gz")).is_file(),
            "no validation/{id}.nii.gz"
        );
    }
    segtop::postprocess::Plan::load(&run.join("postprocess.toml")).expect("a valid postprocess.toml");
    let evaluation = events(run)
        .into_iter()
        .find(|e| matches!(e, Event::Evaluation { .. }))
        .expect("an evaluation");
    let Event::Evaluation {
        postprocessed: Some(after),
        postprocess: Some(_),
        mean,
        ..
    } = evaluation
    else {
        panic!("the evaluation has no post-processed scores: {evaluation:?}");
    };
    // Never worse than nothing on the cases it was learned on.
    for (raw, processed) in mean.iter().zip(&after) {
        assert!(processed.lesion_dice >= raw.lesion_dice - 1e-9, "{raw:?} {processed:?}");
    }

    let predict = |out: &str, extra: &[&str]| {
        let output = trainer(dir)
            .args(["predict", "--split", "validation", "--out", out])
            .args(extra)
            .output()
            .expect("the trainer runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let run_arg = run.to_str().expect("a UTF-8 path");
    let id = &split.validation[0];
    let file = |out: &str| dir.join(out).join(format!("{id}.nii.gz"));

    // One run, raw labels; the same run twice as an ensemble gives the same labels.
    let (ok, said) = predict("single", &["--run", run_arg, "--no-postprocess"]);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("{id}.nii.gz")) && said.contains(" s"),
        "a line per case with its time: {said}"
    );
    // Through segtop, the run is named as every command names runs: by a part of its id.
    let run_id = run.file_name().expect("a run id").to_string_lossy().into_owned();
    let part = &run_id[9..];
    let by_name = crate::segtop(
        dir,
        &[
            "predict",
            "--run",
            part,
            "--split",
            "validation",
            "--no-postprocess",
            "--out",
            "by-name",
        ],
    );
    assert!(by_name.status.success(), "{}", crate::stderr(&by_name));
    assert_eq!(
        std::fs::read(file("by-name")).expect("written"),
        std::fs::read(file("single")).expect("written")
    );
    let unknown = crate::segtop(
        dir,
        &["predict", "--run", "no-such-run", "--split", "validation", "--out", "x"],
    );
    let said = crate::stderr(&unknown);
    assert!(!unknown.status.success());
    assert!(
        said.starts_with(&format!("segtop: error: no run 'no-such-run' (runs: {run_id}")),
        "{said}"
    );
    assert!(!said.contains("segtop-train"), "{said}");
    let single = labels(&file("single"));
    let (ok, said) = predict("twice", &["--run", run_arg, "--run", run_arg, "--no-postprocess"]);
    assert!(ok && said.contains("2 model(s)"), "{said}");
    assert_eq!(
        labels(&file("twice")),
        single,
        "an ensemble of one run twice is that run"
    );
    // The raw predictions are what the end of training kept: the same weights' labels, up to
    // a voxel where a region's probability sits at the threshold and the last bits differ
    // (the trainer infers from its cached case, held in 16-bit floats; `predict` from the
    // NIfTI files).
    let kept = labels(&run.join(format!("validation/{id}.nii.gz")));
    let differ = kept.iter().zip(&single).filter(|(a, b)| a != b).count();
    assert_eq!(kept.len(), single.len());
    assert!(
        differ <= kept.len() / 10_000,
        "{differ} of {} voxels differ between the kept and the predicted labels",
        kept.len()
    );

    // The label convention: a copy of the run whose output layer favours enhancing tumour
    // everywhere (its bias for class 3 raised, or for a region network every region's) writes
    // ET as 3, or as 4 in the legacy convention, and nothing else changes.
    let enhancing = dir.join("enhancing");
    std::fs::create_dir_all(enhancing.join("checkpoints")).expect("mkdir");
    for file in ["split.json", "experiment.toml"] {
        std::fs::copy(run.join(file), enhancing.join(file)).expect("copy");
    }
    let tensors = tch::Tensor::read_safetensors(run.join("checkpoints/best.safetensors")).expect("weights");
    let tensors: Vec<(String, tch::Tensor)> = tensors
        .into_iter()
        .map(|(name, tensor)| {
            let tensor = if name == "out.bias" {
                let raise: &[f32] = if tensor.size() == [3] {
                    &[100.0, 100.0, 100.0]
                } else {
                    &[0.0, 0.0, 0.0, 100.0]
                };
                tensor + tch::Tensor::from_slice(raise)
            } else {
                tensor
            };
            (name, tensor)
        })
        .collect();
    tch::Tensor::write_safetensors(&tensors, enhancing.join("checkpoints/best.safetensors")).expect("write weights");
    let enhancing_arg = enhancing.to_str().expect("UTF-8");
    let (ok, said) = predict("et", &["--run", enhancing_arg, "--no-postprocess"]);
    assert!(ok, "{said}");
    let et = labels(&file("et"));
    assert!(
        et.contains(&3) && et.iter().all(|&l| l == 0 || l == 3),
        "ET everywhere in the crop"
    );
    let (ok, said) = predict(
        "legacy",
        &["--run", enhancing_arg, "--no-postprocess", "--labels", "legacy"],
    );
    assert!(ok, "{said}");
    let expected: Vec<u8> = et.iter().map(|&l| if l == 3 { 4 } else { l }).collect();
    assert_eq!(labels(&file("legacy")), expected);

    // A plan from a file is applied: keeping the largest whole-tumour component leaves one.
    std::fs::write(dir.join("largest.toml"), "[wt]\noperation = \"keep-largest\"\n").expect("write");
    let (ok, said) = predict("largest", &["--run", run_arg, "--postprocess", "largest.toml"]);
    assert!(ok && said.contains("keep the largest"), "{said}");
    let largest = labels(&file("largest"));
    let kept = largest.iter().filter(|&&l| l > 0).count();
    assert!(kept > 0 && kept <= single.iter().filter(|&&l| l > 0).count());
    assert!(
        largest.iter().zip(&single).all(|(&a, &b)| a == 0 || a == b),
        "only removes"
    );

    // Errors name what is wrong.
    std::fs::write(dir.join("bad.toml"), "[wt]\noperation = \"keep-bigest\"\n").expect("write");
    let (ok, said) = predict("bad", &["--run", run_arg, "--postprocess", "bad.toml"]);
    assert!(
        !ok && said.contains("bad.toml:2") && said.contains("keep-bigest"),
        "{said}"
    );
    let (ok, said) = predict("none", &["--run", "runs/no-such-run"]);
    assert!(!ok && said.contains("runs/no-such-run"), "{said}");
    let other = dir.join("other");
    std::fs::create_dir_all(other.join("checkpoints")).expect("mkdir");
    std::fs::copy(
        run.join("checkpoints/best.safetensors"),
        other.join("checkpoints/best.safetensors"),
    )
    .expect("copy");
    std::fs::copy(run.join("split.json"), other.join("split.json")).expect("copy");
    let frozen = std::fs::read_to_string(run.join("experiment.toml")).expect("experiment.toml");
    let changed = frozen.replace("normalization = \"zscore\"", "normalization = \"volume-minmax\"");
    assert_ne!(changed, frozen, "the frozen experiment names its normalization");
    std::fs::write(other.join("experiment.toml"), changed).expect("write");
    let (ok, said) = predict("mixed", &["--run", run_arg, "--run", other.to_str().expect("UTF-8")]);
    assert!(!ok && said.contains("differ in data.normalization"), "{said}");

    // `segtop postprocess` learns the plan again, predicting the validation cases first when
    // the run kept none, and records a second evaluation.
    std::fs::remove_dir_all(run.join("validation")).expect("rm validation/");
    std::fs::remove_file(run.join("postprocess.toml")).expect("rm postprocess.toml");
    let output = crate::segtop(dir, &["postprocess", run_arg, "--threads", "2"]);
    let said = crate::stdout(&output) + &crate::stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("segmenting its validation cases") && said.contains("lesion-wise Dice"),
        "{said}"
    );
    segtop::postprocess::Plan::load(&run.join("postprocess.toml")).expect("learned again");
    assert_eq!(labels(&run.join(format!("validation/{id}.nii.gz"))), single);
    let evaluations = events(run)
        .iter()
        .filter(|e| matches!(e, Event::Evaluation { .. }))
        .count();
    assert_eq!(evaluations, 2);
}

/// Trains the tiny experiment for one epoch with `output` in its own folder of `dir`; returns
/// the run.
pub fn tiny_run(dir: &Path, output: &str) -> PathBuf {
    let folder = dir.join(output);
    std::fs::create_dir_all(&folder).expect("mkdir");
    let path = experiment(&folder, 1);
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replace("[model]\n", &format!("[model]\noutput = \"{output}\"\n"));
    std::fs::write(&path, text).expect("write");
    succeed(trainer(&folder).args(["train", "tiny.toml"]));
    only_run(&folder)
}

#[test]
fn region_and_label_runs_ensemble_as_regions_refuse_each_others_heads_and_old_runs_still_predict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let regions = tiny_run(dir.path(), "regions");
    let labels_run = tiny_run(dir.path(), "labels");
    let frozen = std::fs::read_to_string(regions.join("experiment.toml")).expect("frozen");
    assert!(frozen.contains("output = \"regions\""), "{frozen}");
    let predict = |out: &str, runs: &[&Path], extra: &[&str]| {
        let mut command = trainer(dir.path());
        command.args(["predict", "--split", "validation", "--no-postprocess", "--out", out]);
        for run in runs {
            command.arg("--run").arg(run);
        }
        let output = command.args(extra).output().expect("the trainer runs");
        let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{said}");
        said
    };
    // A mixed ensemble averages as regions and says so.
    let said = predict("mixed", &[&regions, &labels_run], &[]);
    assert!(said.contains("as regions (WT, TC, ET)"), "{said}");
    let said = predict("labels-only", &[&labels_run, &labels_run], &[]);
    assert!(!said.contains("as regions"), "{said}");
    // Every written label map holds BraTS labels only.
    for out in ["mixed", "labels-only"] {
        for file in std::fs::read_dir(dir.path().join(out)).expect("predictions").flatten() {
            assert!(labels(&file.path()).iter().all(|&l| l <= 3), "{out}");
        }
    }

    // A run made before model.output existed (its frozen experiment lacks the key) trained
    // labels: it still loads and predicts, as labels.
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("checkpoints")).expect("mkdir");
    std::fs::copy(labels_run.join("split.json"), old.join("split.json")).expect("copy");
    std::fs::copy(
        labels_run.join("checkpoints/best.safetensors"),
        old.join("checkpoints/best.safetensors"),
    )
    .expect("copy");
    let frozen = std::fs::read_to_string(labels_run.join("experiment.toml")).expect("frozen");
    let before: String = frozen
        .lines()
        .filter(|l| !l.starts_with("output =") && !l.starts_with("foreground_sampling ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(old.join("experiment.toml"), before).expect("write");
    predict("old", &[&old], &[]);
    let mut ours = std::fs::read_dir(dir.path().join("labels-only"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>();
    ours.sort();
    for file in ours {
        let name = file.file_name().expect("a name");
        assert_eq!(
            labels(&dir.path().join("old").join(name)),
            labels(&file),
            "the old run predicts as before"
        );
    }

    // A region run as model.init of a label experiment: refused, naming both outputs, unless
    // init_partial, when all but the output layer load.
    let fine = dir.path().join("fine");
    std::fs::create_dir_all(&fine).expect("mkdir");
    let path = experiment(&fine, 1);
    let text = std::fs::read_to_string(&path).expect("read");
    let init = format!("[model]\noutput = \"labels\"\ninit = \"{}\"\n", regions.display());
    std::fs::write(&path, text.replace("[model]\n", &init)).expect("write");
    let output = trainer(&fine)
        .args(["train", "tiny.toml"])
        .output()
        .expect("the trainer runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("model.output = 'regions'")
            && said.contains("model.output = 'labels'")
            && said.contains("init_partial"),
        "{said}"
    );
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replace("[model]\n", "[model]\ninit_partial = true\n")).expect("write");
    std::fs::remove_dir_all(fine.join("runs")).expect("rm the failed run");
    let output = trainer(&fine)
        .args(["train", "tiny.toml"])
        .output()
        .expect("the trainer runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("the output layers start from their initialisation"),
        "{said}"
    );
    assert!(said.contains("left at its initialisation: out.weight"), "{said}");
}

#[test]
fn bench_times_training_steps_and_a_sliding_window_case_and_reports_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = experiment(dir.path(), 1);
    let output = trainer(dir.path())
        .args(["bench", "tiny.toml", "--steps", "3", "--case", "40x24x20", "--json"])
        .output()
        .expect("the trainer runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    let checked = segtop::experiment::Experiment::load(&experiment, dir.path()).expect("experiment");
    let params = segtop::cost::parameter_count(&checked.model, 4);
    assert_eq!(report["params"].as_u64(), Some(params), "{report}");
    assert_eq!(report["patch"], serde_json::json!([16, 16, 16]));
    assert_eq!((report["batch"].as_u64(), report["steps"].as_u64()), (Some(2), Some(3)));
    for key in ["median_step_s", "patches_per_s", "gflops", "peak_rss_mb"] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
    }
    // Windows of 16 with overlap 0.5 (stride 8), the last flush with the end:
    // x 0 8 16 24, y 0 8, z 0 4.
    let inference = &report["inference"];
    assert_eq!(inference["windows"].as_u64(), Some(16), "{report}");
    assert!(inference["voxels_per_s"].as_f64().is_some_and(|v| v > 0.0), "{report}");
    // Nothing was read from the dataset: the tiny experiment's data does not exist.
    assert!(!dir.path().join("data").exists());

    // --cases times `segtop predict` on real case files: each case's grid, its crop (the
    // synthetic head's box, smaller than the grid) and the windows over that crop.
    let made = super::segtop(
        dir.path(),
        &["synth", "--out", "cases", "--cases", "2", "--size", "40x32x24"],
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let output = trainer(dir.path())
        .args([
            "bench",
            "tiny.toml",
            "--steps",
            "2",
            "--no-inference",
            "--cases",
            "cases",
            "--json",
        ])
        .output()
        .expect("the trainer runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert!(report.get("inference").is_none(), "{report}");
    let cases = report["predict"]["cases"].as_array().expect("predicted cases");
    assert_eq!(cases.len(), 2, "{report}");
    for case in cases {
        assert_eq!(case["grid"], serde_json::json!([40, 32, 24]), "{case}");
        let cropped: Vec<u64> = case["cropped"]
            .as_array()
            .expect("crop")
            .iter()
            .flat_map(|n| n.as_u64())
            .collect();
        assert!(
            cropped.len() == 3 && cropped.iter().zip([40, 32, 24]).all(|(&c, g)| c > 0 && c <= g),
            "{case}"
        );
        assert!(cropped.iter().zip([40, 32, 24]).any(|(&c, g)| c < g), "no crop: {case}");
        let expected: usize = cropped.iter().map(|&n| window_count(n, 16)).product();
        assert_eq!(case["windows"].as_u64(), Some(expected as u64), "{case}");
        assert!(case["seconds"].as_f64().is_some_and(|s| s > 0.0), "{case}");
    }
    // The label maps went to a folder of their own, not among the cases.
    let listed: Vec<_> = std::fs::read_dir(dir.path().join("cases"))
        .expect("cases")
        .flatten()
        .collect();
    assert_eq!(listed.len(), 3, "two case folders and the synthetic data's description");
    // A folder without cases is refused, named.
    let output = trainer(dir.path())
        .args(["bench", "tiny.toml", "--no-inference", "--cases", "nowhere"])
        .output()
        .expect("the trainer runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");
    // A patch the network cannot halve down to its bottom level is refused with the reason.
    let output = trainer(dir.path())
        .args(["bench", "tiny.toml", "--patch", "18", "--no-inference"])
        .output()
        .expect("the trainer runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--patch: a size from 8 to 512 that divides by 4"),
        "{stderr}"
    );
}

/// SIGKILL at moments spread over a whole run (steps, checkpoint and preview writes,
/// validations, the end-of-run evaluation): every run resumes from a complete checkpoint to
/// the numbers of the run never interrupted, or had already finished with them.
#[test]
fn a_run_killed_at_any_moment_resumes_to_the_same_result() {
    const TRIALS: u32 = 8;
    let straight = tempfile::tempdir().expect("temp dir");
    let path = experiment(straight.path(), 3);
    // Its data and cache made first, so the timed run below is training only.
    succeed(trainer(straight.path()).arg("train").arg(&path));
    let start = Instant::now();
    succeed(trainer(straight.path()).arg("train").arg(&path));
    let length = start.elapsed();
    let runs: Vec<PathBuf> = std::fs::read_dir(straight.path().join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .collect();
    let expected = last_validation(&events(&runs[0]));
    let mut resumed_after = Vec::new();
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = experiment(dir.path(), 3);
        // Data and cache first (as above), then the run that is killed.
        std::fs::create_dir_all(dir.path().join("cache")).expect("mkdir");
        succeed(trainer(dir.path()).args(["train", "--runs", "warm"]).arg(&path));
        let mut child = trainer(dir.path())
            .arg("train")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        // Not a wait: the moment of the kill, spread over the run's length.
        std::thread::sleep(length.mul_f64((f64::from(trial) + 0.5) / f64::from(TRIALS)));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let made = std::fs::read_dir(dir.path().join("runs")).map_or(0, |runs| runs.count());
        if made == 0 {
            continue; // killed before it made its run directory: nothing to resume
        }
        let run = only_run(dir.path());
        let finished = events(&run).iter().any(|e| matches!(e, Event::RunFinished { .. }));
        if !finished {
            // What the run had written last when it was killed.
            let last = events(&run)
                .last()
                .map(|e| format!("{e:?}").split([' ', '{']).next().unwrap_or("").to_string());
            resumed_after.push(last.unwrap_or_else(|| "nothing".to_string()));
            let resumed = trainer(dir.path())
                .args(["train", "--resume"])
                .arg(&run)
                .output()
                .expect("the trainer runs");
            assert!(
                resumed.status.success(),
                "trial {trial}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
        }
        let got = last_validation(&events(&run));
        for (a, b) in [(got.et, expected.et), (got.tc, expected.tc), (got.wt, expected.wt)] {
            assert!(
                (a - b).abs() < 1e-6,
                "trial {trial} (finished before the kill: {finished}): resumed {got:?} vs {expected:?}"
            );
        }
    }
    // Most kills land in the middle of the run, at different records.
    eprintln!("killed after: {resumed_after:?}");
    assert!(resumed_after.len() >= TRIALS as usize / 2, "{resumed_after:?}");
}

/// Windows of `window` at overlap 0.5 covering `size` voxels, the last flush with the end.
fn window_count(size: u64, window: u64) -> usize {
    if size <= window {
        return 1;
    }
    (0..).map(|i| i * window / 2).take_while(|&s| s + window < size).count() + 1
}
