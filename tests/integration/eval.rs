//! `segtop eval`: pairing predictions with ground truth, the table, CSV and JSON, and clear
//! errors for predictions that are missing or on another grid.

use std::fs;
use std::path::Path;

use segtop::data::synth;
use segtop::data::volume;

use crate::{segtop, stderr, stdout};

/// Ground truth (synthetic BraTS case folders) under `gt/`, and under `pred/` each case's
/// label map as a prediction named `<id>.nii.gz`, with voxels of label 2 changed as `edit` says.
fn predictions_and_truth(dir: &Path, cases: u32, edit: impl Fn(&str, &mut Vec<u8>)) -> Vec<String> {
    let spec = synth::SynthSpec {
        cases,
        shape: [48, 48, 32],
        seed: 5,
    };
    synth::write_dataset(&dir.join("gt"), &spec, 2, &|_, _| {}).expect("synthesised");
    fs::create_dir_all(dir.join("pred")).expect("mkdir");
    let mut ids = Vec::new();
    for index in 1..=cases {
        let id = format!("BraTS-SSA-9{index:04}-000");
        let seg = dir.join(format!("gt/{id}/{id}-seg.nii.gz"));
        let truth = volume::read_volume(&seg).expect("readable");
        let mut labels: Vec<u8> = truth.data.iter().map(|&v| v as u8).collect();
        edit(&id, &mut labels);
        volume::write_labels_like(&seg, &dir.join(format!("pred/{id}.nii.gz")), truth.shape, &labels).expect("written");
        ids.push(id);
    }
    ids
}

#[test]
fn perfect_predictions_score_one_and_the_csv_has_case_and_summary_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = predictions_and_truth(dir.path(), 3, |_, _| {});
    let out = segtop(
        dir.path(),
        &["eval", "--pred", "pred", "--gt", "gt", "--csv", "scores.csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("BraTS-SSA metrics, 3 case(s)"), "{table}");
    for id in &ids {
        assert!(table.contains(id.as_str()), "{table}");
    }
    let csv = fs::read_to_string(dir.path().join("scores.csv")).expect("csv written");
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("case,region,LesionWise_Dice,LesionWise_HD95"),
        "{}",
        rows[0]
    );
    // 3 cases x 3 regions, then 5 statistics x 3 regions.
    assert_eq!(rows.len(), 1 + 9 + 15, "{csv}");
    let mean_wt: Vec<&str> = rows
        .iter()
        .find(|r| r.starts_with("Mean,WT"))
        .expect("a mean row")
        .split(',')
        .collect();
    assert_eq!(
        (mean_wt[2], mean_wt[3]),
        ("1", "0"),
        "lesion-wise Dice and HD95 of perfect predictions"
    );
}

#[test]
fn json_lists_lesions_and_a_worse_prediction_scores_lower() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every oedema voxel predicted as background: the whole tumour shrinks.
    predictions_and_truth(dir.path(), 1, |_, labels| {
        labels.iter_mut().filter(|l| **l == 2).for_each(|l| *l = 0)
    });
    let out = segtop(dir.path(), &["eval", "--pred", "pred", "--gt", "gt", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    let wt = &doc["cases"][0]["regions"][0];
    assert_eq!(wt["region"], "WT");
    let dice = wt["legacy_dice"].as_f64().expect("a number");
    assert!(dice > 0.0 && dice < 1.0, "{wt}");
    assert!(wt["lesions"].as_array().is_some_and(|l| !l.is_empty()), "{wt}");
    // TC and ET are untouched.
    assert_eq!(doc["cases"][0]["regions"][1]["legacy_dice"], 1.0);
}

#[test]
fn a_plan_applied_before_scoring_removes_a_planted_false_positive() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A 5x5x5 blob of oedema in a corner, far from the tumour: a false-positive lesion (the
    // metric itself drops predicted lesions of 50 voxels or fewer).
    predictions_and_truth(dir.path(), 1, |_, labels| {
        for z in 1..6 {
            for y in 1..6 {
                for x in 1..6 {
                    labels[x + 48 * (y + 48 * z)] = 2;
                }
            }
        }
    });
    fs::write(
        dir.path().join("plan.toml"),
        "[wt]\noperation = \"remove-small\"\nmin_voxels = 126\n",
    )
    .expect("write");
    let wt_of = |extra: &[&str]| {
        let mut args = vec!["eval", "--pred", "pred", "--gt", "gt", "--json"];
        args.extend_from_slice(extra);
        let out = segtop(dir.path(), &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
        let wt = &doc["cases"][0]["regions"][0];
        (
            wt["lesion_dice"].as_f64().expect("a number"),
            wt["num_fp"].as_u64().expect("a count"),
        )
    };
    let (raw, raw_fp) = wt_of(&[]);
    assert_eq!(raw_fp, 1, "the blob is a false positive");
    assert!(raw < 0.9, "{raw}");
    let (planned, planned_fp) = wt_of(&["--postprocess", "plan.toml"]);
    assert_eq!((planned, planned_fp), (1.0, 0));
    // The prediction files are left as they were.
    assert_eq!(wt_of(&[]), (raw, raw_fp));
    // A bad plan is refused with its place; a challenge with other labels refuses plans.
    fs::write(dir.path().join("bad.toml"), "[wt]\noperation = \"remove-relative\"\n").expect("write");
    // (remove-relative without its fraction)
    let out = segtop(
        dir.path(),
        &["eval", "--pred", "pred", "--gt", "gt", "--postprocess", "bad.toml"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs wt.min_fraction"), "{}", stderr(&out));
    let out = segtop(
        dir.path(),
        &[
            "eval",
            "--pred",
            "pred",
            "--gt",
            "gt",
            "--postprocess",
            "plan.toml",
            "--challenge",
            "gli",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("plans act on labels 1 NCR, 2 ED, 3 ET"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_case_without_prediction_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = predictions_and_truth(dir.path(), 2, |_, _| {});
    fs::remove_file(dir.path().join(format!("pred/{}.nii.gz", ids[1]))).expect("removed");
    let out = segtop(dir.path(), &["eval", "--pred", "pred", "--gt", "gt"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("1 case(s) in gt have no prediction in pred") && err.contains(ids[1].as_str()),
        "{err}"
    );
}

#[test]
fn a_prediction_on_another_grid_or_with_foreign_labels_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ids = predictions_and_truth(dir.path(), 2, |id, labels| {
        if id.ends_with("90002-000") {
            labels[0] = 7;
        }
    });
    // The first case's prediction on a smaller grid.
    let seg = dir.path().join(format!("gt/{0}/{0}-seg.nii.gz", ids[0]));
    volume::write_labels_like(
        &seg,
        &dir.path().join(format!("pred/{}.nii.gz", ids[0])),
        [40, 48, 32],
        &[0; 40 * 48 * 32],
    )
    .expect("written");
    let out = segtop(dir.path(), &["eval", "--pred", "pred", "--gt", "gt"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is [40, 48, 32] voxels but ground truth"), "{err}");
    assert!(
        err.contains("label 7 at voxel (0, 0, 0) is not one of the challenge's labels"),
        "{err}"
    );
}

/// Ground truth in the older BraTS layout and labels (`BraTS2021_0000N_seg.nii.gz`,
/// enhancing tumour 4) made from synthetic cases, and predictions: the first case's in the
/// BraTS 2023 labels, the second's in the legacy ones, both equal to the truth.
fn legacy_truth_and_predictions(dir: &Path) -> Vec<String> {
    let ids = predictions_and_truth(dir, 2, |_, _| {});
    let mut legacy_ids = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let legacy = format!("BraTS2021_0000{n}");
        let case = dir.join("legacy").join(&legacy);
        fs::create_dir_all(&case).expect("mkdir");
        let seg = dir.join(format!("gt/{id}/{id}-seg.nii.gz"));
        let truth = volume::read_volume(&seg).expect("readable");
        let brats2023: Vec<u8> = truth.data.iter().map(|&v| v as u8).collect();
        let legacy_labels: Vec<u8> = brats2023.iter().map(|&l| if l == 3 { 4 } else { l }).collect();
        assert!(legacy_labels.contains(&4), "the synthetic case has enhancing tumour");
        volume::write_labels_like(
            &seg,
            &case.join(format!("{legacy}_seg.nii.gz")),
            truth.shape,
            &legacy_labels,
        )
        .expect("written");
        let prediction = if n == 0 { &brats2023 } else { &legacy_labels };
        let pred = dir.join(format!("legacy-pred/{legacy}.nii.gz"));
        volume::write_labels_like(&seg, &pred, truth.shape, prediction).expect("written");
        legacy_ids.push(legacy);
    }
    legacy_ids
}

#[test]
fn legacy_label_maps_and_folders_are_scored_with_enhancing_tumour_4() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(dir.path().join("legacy-pred")).expect("mkdir");
    let ids = legacy_truth_and_predictions(dir.path());
    let out = segtop(
        dir.path(),
        &["eval", "--pred", "legacy-pred", "--gt", "legacy", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    for case in cases {
        assert!(ids.iter().any(|id| case["case"] == id.as_str()), "{case}");
        for region in case["regions"].as_array().expect("regions") {
            assert_eq!(region["legacy_dice"], 1.0, "{region}");
            assert_eq!(region["lesion_dice"], 1.0, "{region}");
        }
    }
    // Told that the maps are BraTS 2023 ones, the legacy truth's label 4 is refused.
    let out = segtop(
        dir.path(),
        &[
            "eval",
            "--pred",
            "legacy-pred",
            "--gt",
            "legacy",
            "--labels",
            "brats2023",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not one of the challenge's labels [0, 1, 2, 3]"),
        "{}",
        stderr(&out)
    );
    // A map with both 3 and 4 follows neither convention.
    let seg = dir.path().join(format!("legacy/{0}/{0}_seg.nii.gz", ids[1]));
    let truth = volume::read_volume(&seg).expect("readable");
    let mut mixed: Vec<u8> = truth.data.iter().map(|&v| v as u8).collect();
    mixed[0] = 3;
    volume::write_labels_like(
        &seg,
        &dir.path().join(format!("legacy-pred/{}.nii.gz", ids[1])),
        truth.shape,
        &mixed,
    )
    .expect("written");
    let out = segtop(dir.path(), &["eval", "--pred", "legacy-pred", "--gt", "legacy"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds both label 3 and label 4"),
        "{}",
        stderr(&out)
    );
}
