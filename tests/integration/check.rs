//! `segtop check`: every broken experiment file gets one exact, located message.

use std::fs;

use crate::{segtop, stderr, stdout};

/// A file body that is valid but for the lines after it.
const VALID_HEAD: &str = "[data]\nroot = \"brats\"\n";

fn check_text(text: &[u8]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join("brats")).expect("data dir");
    fs::write(dir.path().join("x.toml"), text).expect("write");
    let output = segtop(dir.path(), &["check", "x.toml"]);
    (output.status.success(), stdout(&output), stderr(&output))
}

#[test]
fn broken_files_give_exact_located_messages() {
    let allowed_train_keys = "patch_size, batch_size, epochs, budget, freeze, patches_per_epoch, foreground_fraction, foreground_sampling, optimizer, lr, \
         weight_decay, momentum, grad_clip, schedule, plateau_factor, plateau_patience, min_lr, warmup_epochs, \
         early_stopping_patience, seed, threads, precision, loss";
    let cases: Vec<(&str, String, String)> = vec![
        (
            "unknown key",
            format!("{VALID_HEAD}[train]\noptimiser = \"adam\"\n"),
            format!("x.toml:4:1: unknown key 'train.optimiser'; allowed here: {allowed_train_keys}"),
        ),
        (
            "unknown section",
            format!("{VALID_HEAD}[trian]\nlr = 1.0\n"),
            "x.toml:3:2: unknown key 'trian'; allowed here: data, model, train, augment, validate, preview, run, slurm, sweep"
                .to_string(),
        ),
        (
            "wrong type",
            format!("{VALID_HEAD}[train]\nepochs = \"ten\"\n"),
            "x.toml:4:10: train.epochs: invalid type: string \"ten\", expected a whole number of at least 0"
                .to_string(),
        ),
        (
            "wrong array length",
            format!("{VALID_HEAD}[train]\npatch_size = [64, 64]\n"),
            "x.toml:4:14: train.patch_size: invalid length 2, expected an array of length 3".to_string(),
        ),
        (
            "bad enum value",
            format!("{VALID_HEAD}[train]\noptimizer = 'adma'\n"),
            "x.toml:4:13: train.optimizer = 'adma' is not one of: nadam, adam, adamw, sgd".to_string(),
        ),
        (
            "bad modality",
            "[data]\nroot = \"brats\"\nmodalities = [\"t1n\", \"flair\"]\n".to_string(),
            "x.toml:3:14: data.modalities: 'flair' is not one of: t1n, t1c, t2w, t2f".to_string(),
        ),
        (
            "negative budget",
            format!("{VALID_HEAD}[train]\nbudget = \"-5m\"\n"),
            "x.toml:4:10: train.budget = '-5m' is not a duration: write it as whole numbers with units, like \"30m\", \"2h\" or \"1h30m\""
                .to_string(),
        ),
        (
            "freezing a block the network does not have",
            format!("{VALID_HEAD}[model]\ndepth = 4\n[train]\nfreeze = [\"enc.0\", \"enc.9\"]\n"),
            "x.toml:6:10: train.freeze: 'enc.9' is not a block of this network (depth 4): its blocks are enc.0-enc.3, up.0-up.2, dec.0-dec.2, out, or a prefix of them such as 'enc'"
                .to_string(),
        ),
        (
            "more folds than cases",
            "[data]\nroot = \"brats\"\nfolds = 4\n[data.synthetic]\ncases = 4\n".to_string(),
            "x.toml:3:9: data.folds = 4 is more than the 3 cases left for training and validation (4 cases, 1 held out for testing): use at most 3 folds\n\
             x.toml:2:8: data.root = '<ws>/brats' does not hold its 4 synthetic demo cases yet; they are generated on first use (note)"
                .to_string(),
        ),
        (
            "a fold beyond the folds",
            "[data]\nroot = \"brats\"\nfolds = 5\nfold = 5\n".to_string(),
            "x.toml:4:8: data.fold = 5 is out of range: with data.folds = 5 the folds are numbered 0 to 4".to_string(),
        ),
        (
            "one fold",
            "[data]\nroot = \"brats\"\nfolds = 1\n".to_string(),
            "x.toml:3:9: data.folds = 1 is out of range: use 2 to 20 folds, or 0 for none".to_string(),
        ),
        (
            "an init run that does not exist",
            format!("{VALID_HEAD}[model]\ninit = \"pretrained\"\n"),
            "x.toml:4:8: model.init = 'pretrained' is not a run in <ws>/runs: name a run id, a run directory or a .safetensors file"
                .to_string(),
        ),
        (
            "an init file that does not exist",
            format!("{VALID_HEAD}[model]\ninit = \"weights/best.safetensors\"\n"),
            "x.toml:4:8: model.init = '<ws>/weights/best.safetensors' does not exist: name a run, a run directory or a .safetensors file"
                .to_string(),
        ),
        (
            "out of range",
            format!("{VALID_HEAD}[train]\nlr = 0.0\n"),
            "x.toml:4:6: train.lr = 0 is out of range: must be above 0".to_string(),
        ),
        (
            "patch not divisible by the down-sampling",
            format!("{VALID_HEAD}[train]\npatch_size = [64, 60, 64]\n"),
            "x.toml:4:14: train.patch_size = [64, 60, 64] is out of range: each side must be a multiple of 16 \
             (2^(model.depth - 1)) and at most 512"
                .to_string(),
        ),
        (
            "split that does not sum to one",
            "[data]\nroot = \"brats\"\nsplit = [0.8, 0.2, 0.2]\n".to_string(),
            "x.toml:3:9: data.split = [0.8, 0.2, 0.2] is out of range: train, validation and test fractions must be \
             non-negative, sum to 1, and train above 0"
                .to_string(),
        ),
        (
            "missing data root key",
            "[train]\nepochs = 3\n".to_string(),
            "x.toml:1:1: data.root is missing: set it to your BraTS folder, e.g. root = \"data/BraTS-Africa\""
                .to_string(),
        ),
        (
            "data root that does not exist",
            "[data]\nroot = \"nowhere\"\n".to_string(),
            "x.toml:2:8: data.root = '<ws>/nowhere' does not exist: point it at your BraTS folder".to_string(),
        ),
        (
            "syntax error",
            "[data\nroot = \"brats\"\n".to_string(),
            "x.toml:1:6: unclosed table, expected `]`".to_string(),
        ),
    ];
    for (what, text, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("brats")).expect("data dir");
        fs::write(dir.path().join("x.toml"), &text).expect("write");
        let output = segtop(dir.path(), &["check", "x.toml"]);
        let expected = expected.replace("<ws>", &dir.path().display().to_string());
        assert!(!output.status.success(), "{what}: accepted");
        assert_eq!(stderr(&output).trim_end(), expected, "{what}");
        assert_eq!(stdout(&output), "", "{what}: printed an experiment");
    }
}

#[test]
fn several_problems_are_reported_together() {
    let (ok, _, errors) = check_text(format!("{VALID_HEAD}[train]\nlr = -1.0\noptimizer = 'x'\n").as_bytes());
    assert!(!ok);
    assert_eq!(
        errors.lines().collect::<Vec<_>>(),
        [
            "x.toml:4:6: train.lr = -1 is out of range: must be above 0",
            "x.toml:5:13: train.optimizer = 'x' is not one of: nadam, adam, adamw, sgd",
        ]
    );
}

#[test]
fn unreadable_files_are_named() {
    let (ok, _, errors) = check_text(b"[data]\nroot = \"\xff\"\n");
    assert!(!ok);
    assert_eq!(
        errors.trim_end(),
        "x.toml: cannot read: stream did not contain valid UTF-8"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let output = segtop(dir.path(), &["check", "absent.toml"]);
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output).trim_end(),
        "absent.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn resolved_experiment_round_trips_through_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join("brats")).expect("data dir");
    fs::write(
        dir.path().join("x.toml"),
        "[data]\nroot = \"brats\"\n[model]\nbase_filters = 8\n",
    )
    .expect("write");
    let first = segtop(dir.path(), &["check", "x.toml"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let resolved = stdout(&first);
    // Every section is written out, with the defaults filled in.
    for section in [
        "[data]",
        "[model]",
        "[train]",
        "[train.loss]",
        "[augment]",
        "[validate]",
        "[preview]",
        "[run]",
    ] {
        assert!(resolved.lines().any(|l| l == section), "no {section} in:\n{resolved}");
    }
    assert!(resolved.contains("optimizer = \"adamw\""), "{resolved}");
    assert!(resolved.contains("base_filters = 8"), "{resolved}");

    // The printed file, checked again from elsewhere, prints itself.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    fs::write(elsewhere.path().join("x.toml"), &resolved).expect("write");
    let second = segtop(elsewhere.path(), &["check", "x.toml"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&second), resolved);
}

/// Several files: a line each (ok, with its sweep, or how many problems) and a count, not
/// hundreds of filled-in lines; `--full` prints the forms, as one file always does.
#[test]
fn several_files_get_a_line_each_and_full_prints_their_forms() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join("brats")).expect("data dir");
    fs::write(dir.path().join("a.toml"), VALID_HEAD).expect("write");
    fs::write(
        dir.path().join("b.toml"),
        format!("{VALID_HEAD}[sweep]\n\"train.lr\" = [1e-3, 3e-3]\n"),
    )
    .expect("write");
    fs::write(dir.path().join("c.toml"), format!("{VALID_HEAD}[train]\nepochs = 0\n")).expect("write");
    let output = segtop(dir.path(), &["check", "a.toml", "b.toml", "c.toml"]);
    assert!(!output.status.success());
    assert_eq!(
        stdout(&output),
        "a.toml: ok\nb.toml: ok, a sweep of 2 runs\nc.toml: 1 problem(s)\n3 files: 2 ok, 1 with problems\n"
    );
    assert!(
        stderr(&output).starts_with("c.toml:4:10: train.epochs = 0"),
        "{}",
        stderr(&output)
    );
    let full = segtop(dir.path(), &["check", "--full", "a.toml", "b.toml"]);
    assert!(full.status.success(), "{}", stderr(&full));
    let text = stdout(&full);
    assert!(text.starts_with("# a.toml\n[data]\n"), "{text}");
    assert!(
        text.contains("\n# b.toml\n") && text.contains("# [sweep]: 2 runs, each checked"),
        "{text}"
    );
    let one = stdout(&segtop(dir.path(), &["check", "a.toml"]));
    assert!(one.starts_with("[data]\n"), "{one}");
}
