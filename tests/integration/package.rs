//! `segtop package`: model packages of trained runs, run by `segtop predict --package` and by
//! the package's own `predict.py`, and every way a package or its input can be wrong.

#![cfg(feature = "trainer")]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::train::{labels, tiny_run, trainer};
use super::{segtop, stderr, stdout};

/// The label maps in `folder`, by file name.
fn maps(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| (f.file_name().expect("a name").to_string_lossy().into_owned(), labels(f)))
        .collect()
}

/// Runs `command`, returning whether it succeeded and all it said.
fn said(command: &mut Command) -> (bool, String) {
    let output = command.output().expect("runs");
    (output.status.success(), stdout(&output) + &stderr(&output))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `segtop package ARGS` in `ws`.
fn package(ws: &Path, args: &[&str]) -> (bool, String) {
    let output = segtop(ws, &[&["package"], args].concat());
    (output.status.success(), stdout(&output) + &stderr(&output))
}

fn predict(ws: &Path, args: &[&str]) -> (bool, String) {
    said(trainer(ws).arg("predict").args(args))
}

/// A copy of the first case of `ws/data` without its T2 file, as `ws/incomplete`.
fn copy_without_t2w(ws: &Path) {
    let case = ws.join("incomplete");
    let source = std::fs::read_dir(ws.join("data"))
        .expect("data")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a case folder");
    std::fs::create_dir_all(&case).expect("mkdir");
    for file in std::fs::read_dir(&source).expect("case").flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if !name.contains("-t2w.") {
            std::fs::copy(file.path(), case.join(&name)).expect("copy");
        }
    }
}

#[test]
fn a_package_predicts_what_its_runs_predict_and_refuses_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let regions = tiny_run(dir.path(), "regions");
    let labels_run = tiny_run(dir.path(), "labels");
    let ws = dir.path().join("regions");

    // One run: the same label maps as predicting with the run.
    let (ok, out) = package(&ws, &[path(&regions), "--out", "pkg"]);
    assert!(ok, "{out}");
    for file in ["package.toml", "model-1.onnx", "predict.py", "MODEL.md"] {
        assert!(ws.join("pkg").join(file).is_file(), "{file}: {out}");
    }
    let card = std::fs::read_to_string(ws.join("pkg/MODEL.md")).expect("card");
    assert!(card.contains("not a medical device"), "{card}");
    let (ok, out) = predict(&ws, &["--package", "pkg", "--cases", "data", "--out", "by-package"]);
    assert!(ok, "{out}");
    // A package computes in float32 (its weights' and ONNX's precision) unless told
    // otherwise; a run in its train.precision, bfloat16 where the CPU has it. Compare alike.
    let (ok, out) = predict(
        &ws,
        &[
            "--run",
            path(&regions),
            "--cases",
            "data",
            "--out",
            "by-run",
            "--precision",
            "float32",
        ],
    );
    assert!(ok, "{out}");
    let by_package = maps(&ws.join("by-package"));
    assert_eq!(by_package.len(), 4);
    assert_eq!(by_package, maps(&ws.join("by-run")));

    // Two runs, regions and labels: an ensemble, as `predict --run A --run B` averages it.
    let (ok, out) = package(&ws, &[path(&regions), path(&labels_run), "--out", "pkg2"]);
    assert!(ok, "{out}");
    let manifest = std::fs::read_to_string(ws.join("pkg2/package.toml")).expect("manifest");
    assert!(manifest.contains("average = \"regions\""), "{manifest}");
    assert_eq!(manifest.matches("\n[[member]]\n").count(), 2, "{manifest}");
    let (ok, out) = predict(
        &ws,
        &["--package", "pkg2", "--cases", "data", "--out", "ensemble-package"],
    );
    assert!(ok, "{out}");
    let (ok, out) = predict(
        &ws,
        &[
            "--run",
            path(&regions),
            "--run",
            path(&labels_run),
            "--cases",
            "data",
            "--out",
            "ensemble-runs",
            "--precision",
            "float32",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(maps(&ws.join("ensemble-package")), maps(&ws.join("ensemble-runs")));

    // A folder that is not empty: refused, unless --force.
    let (ok, out) = package(&ws, &[path(&regions), "--out", "pkg"]);
    assert!(
        !ok && out.contains("pkg: the folder is not empty") && out.contains("--force"),
        "{out}"
    );
    let (ok, out) = package(&ws, &[path(&regions), "--out", "pkg", "--force"]);
    assert!(ok, "{out}");

    // A changed file and a missing one: refused, naming the file.
    let onnx = ws.join("pkg2/model-2.onnx");
    let mut bytes = std::fs::read(&onnx).expect("read");
    bytes.push(0);
    std::fs::write(&onnx, bytes).expect("write");
    let (ok, out) = predict(&ws, &["--package", "pkg2", "--cases", "data", "--out", "x"]);
    assert!(
        !ok && out.contains("model-2.onnx: changed since it was packaged"),
        "{out}"
    );
    std::fs::remove_file(ws.join("pkg/MODEL.md")).expect("remove");
    let (ok, out) = predict(&ws, &["--package", "pkg", "--cases", "data", "--out", "x"]);
    assert!(!ok && out.contains("MODEL.md: missing"), "{out}");
    assert!(!out.contains("panicked"), "{out}");

    // A value out of range in package.toml: located at its line and column, in the
    // experiment's own words.
    let (ok, out) = package(&ws, &[path(&regions), "--out", "pkg", "--force"]);
    assert!(ok, "{out}");
    let manifest_path = ws.join("pkg/package.toml");
    let text = std::fs::read_to_string(&manifest_path).expect("manifest");
    let line = text
        .lines()
        .position(|l| l.starts_with("overlap = "))
        .expect("an overlap key")
        + 1;
    let edited = text.replace("overlap = 0.5", "overlap = 1.5");
    std::fs::write(&manifest_path, edited).expect("write");
    let (ok, out) = predict(&ws, &["--package", "pkg", "--cases", "data", "--out", "x"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("package.toml:{line}:11: validate.overlap")),
        "{out}"
    );
    std::fs::write(&manifest_path, text.replace("[predict]\n", "[predict]\nwindow = 3\n")).expect("write");
    let (ok, out) = predict(&ws, &["--package", "pkg", "--cases", "data", "--out", "x"]);
    assert!(
        !ok && out.contains("pkg/package.toml:24:1: unknown key 'predict.window'"),
        "{out}"
    );
    std::fs::write(&manifest_path, &text).expect("write");

    // A run without a best checkpoint, and runs that read their input differently.
    let bare = ws.join("runs/20990101-000000-bare");
    std::fs::create_dir_all(&bare).expect("mkdir");
    for file in ["experiment.toml", "split.json", "events.jsonl"] {
        std::fs::copy(regions.join(file), bare.join(file)).expect("copy");
    }
    let (ok, out) = package(&ws, &[path(&bare), "--out", "pkg3"]);
    assert!(!ok && out.contains("has no best checkpoint"), "{out}");
    std::fs::create_dir_all(bare.join("checkpoints")).expect("mkdir");
    std::fs::copy(
        regions.join("checkpoints/best.safetensors"),
        bare.join("checkpoints/best.safetensors"),
    )
    .expect("copy");
    let frozen = std::fs::read_to_string(bare.join("experiment.toml")).expect("frozen");
    let clipped = frozen.replace("clip_percentiles = [0.5, 99.5]", "clip_percentiles = [1.0, 99.0]");
    assert_ne!(clipped, frozen);
    std::fs::write(bare.join("experiment.toml"), clipped).expect("write");
    let (ok, out) = package(&ws, &[path(&regions), path(&bare), "--out", "pkg3"]);
    assert!(
        !ok && out.contains("they differ in data.clip_percentiles ([0.5, 99.5] against [1.0, 99.0])"),
        "{out}"
    );
    assert!(!ws.join("pkg3/package.toml").exists());

    // A case without one of the modalities the package reads.
    copy_without_t2w(&ws);
    let (ok, out) = predict(&ws, &["--package", "pkg", "--case", "incomplete", "--out", "x"]);
    assert!(!ok && out.contains("t2w"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

/// A python3 with what `predict.py` needs, if there is one (`quickstart.sh test` installs it).
fn python_for_packages() -> Option<Command> {
    let make = || {
        let mut command = Command::new("python3");
        if let Some(path) = std::env::var_os("SEGTOP_TEST_PYTHONPATH") {
            command.env("PYTHONPATH", path);
        }
        command
    };
    let probe = make()
        .args(["-c", "import numpy, nibabel, scipy, onnxruntime"])
        .output()
        .ok()?;
    probe.status.success().then(make)
}

/// The affine of a NIfTI file, through segtop's reader.
fn affine(path: &Path) -> [[f64; 4]; 3] {
    segtop::data::volume::read_volume(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .affine
}

/// Share of equal voxels of two label maps.
fn agreement(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

#[test]
#[ignore = "needs python3 with numpy, nibabel, scipy and onnxruntime; quickstart.sh test installs them and runs it"]
fn predict_py_reproduces_segtop_predict_with_one_run_and_an_ensemble() {
    let python = || python_for_packages().expect("python3 with numpy, nibabel, scipy and onnxruntime");
    let dir = tempfile::tempdir().expect("temp dir");
    let regions = tiny_run(dir.path(), "regions");
    let labels_run = tiny_run(dir.path(), "labels");
    let ws = dir.path().join("regions");
    for (name, runs) in [("single", vec![&regions]), ("ensemble", vec![&regions, &labels_run])] {
        let package_dir = format!("pkg-{name}");
        let mut args: Vec<&str> = runs.iter().map(|r| path(r)).collect();
        args.extend(["--out", &package_dir]);
        let (ok, out) = package(&ws, &args);
        assert!(ok, "{out}");
        let ours = format!("segtop-{name}");
        let mut predict_args = Vec::new();
        for run in &runs {
            predict_args.extend(["--run", path(run)]);
        }
        predict_args.extend(["--cases", "data", "--out", &ours, "--precision", "float32"]);
        let (ok, out) = predict(&ws, &predict_args);
        assert!(ok, "{out}");
        let theirs = format!("python-{name}");
        let (ok, out) = said(
            python()
                .current_dir(&ws)
                .arg(ws.join(&package_dir).join("predict.py"))
                .args(["--cases", "data", "--out", &theirs]),
        );
        assert!(ok, "{out}");
        let segtop_maps = maps(&ws.join(&ours));
        let python_maps = maps(&ws.join(&theirs));
        assert_eq!(segtop_maps.len(), 4);
        assert_eq!(
            segtop_maps.iter().map(|m| &m.0).collect::<Vec<_>>(),
            python_maps.iter().map(|m| &m.0).collect::<Vec<_>>()
        );
        for ((file, a), (_, b)) in segtop_maps.iter().zip(&python_maps) {
            let share = agreement(a, b);
            assert!(share >= 0.999, "{name} {file}: only {share} of voxels equal");
            assert_eq!(
                affine(&ws.join(&ours).join(file)),
                affine(&ws.join(&theirs).join(file)),
                "{file}"
            );
        }
    }
    // predict.py refuses a changed package and a case without a modality, in words.
    let onnx = ws.join("pkg-single/model-1.onnx");
    let mut bytes = std::fs::read(&onnx).expect("read");
    bytes.push(0);
    std::fs::write(&onnx, bytes).expect("write");
    let (ok, out) = said(
        python()
            .current_dir(&ws)
            .arg(ws.join("pkg-single/predict.py"))
            .args(["--cases", "data", "--out", "x"]),
    );
    assert!(
        !ok && out.contains("model-1.onnx: changed since it was packaged"),
        "{out}"
    );
    assert!(!out.contains("Traceback"), "{out}");
    copy_without_t2w(&ws);
    let (ok, out) = said(python().current_dir(&ws).arg(ws.join("pkg-ensemble/predict.py")).args([
        "--case",
        "incomplete",
        "--out",
        "x",
    ]));
    assert!(!ok && out.contains("no t2w file"), "{out}");
    assert!(!out.contains("Traceback"), "{out}");
}
