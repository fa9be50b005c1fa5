//! `MODEL.md`: the model card of a package, generated from its runs.

use std::fmt::Write as _;

use crate::config::Choice;
use crate::experiment::Output;
use crate::postprocess::Plan;

use super::{MemberSource, Provenance, Scores};

/// The card of a package of `members`, post-processed with `plan` (and where it came from).
pub fn render(provenance: &Provenance, members: &[MemberSource], plan: &(Plan, String), average: Output) -> String {
    let mut out = String::new();
    let kind = if members.len() > 1 {
        format!("an ensemble of {} 3D U-Nets", members.len())
    } else {
        "a 3D U-Net".to_string()
    };
    let _ = writeln!(
        out,
        "# Brain tumour segmentation model ({})\n",
        provenance.runs.join(", ")
    );
    let _ = writeln!(
        out,
        "**Research use only. This is not a medical device** and has not been validated for \
         clinical use: do not base any decision about a patient on its output.\n"
    );
    let _ = writeln!(
        out,
        "Packaged by segtop {} on {}: {kind} that segments brain tumours in the four BraTS MRI \
         modalities into necrosis / non-enhancing core (1), oedema (2) and enhancing tumour (3; 4 \
         in the older BraTS naming).\n",
        provenance.segtop_version, provenance.created
    );
    members_table(&mut out, members);
    method(&mut out, members, plan, average);
    scores(&mut out, members);
    running(&mut out, members);
    out
}

/// The members: each run's network and data.
fn members_table(out: &mut String, members: &[MemberSource]) {
    let _ = writeln!(out, "## Members\n");
    let _ = writeln!(
        out,
        "| file | run | network | output | epoch | training / validation cases |\n|---|---|---|---|---|---|"
    );
    for (i, member) in members.iter().enumerate() {
        let model = &member.experiment.model;
        let _ = writeln!(
            out,
            "| model-{}.onnx | {} | depth {}, {} filters at the top, {} norm, {} | {} | {} | {} / {} |",
            i + 1,
            member.run,
            model.depth,
            model.base_filters,
            model.norm,
            model.upsample,
            model.output,
            member.epoch.map_or("-".to_string(), |e| e.to_string()),
            member.training_cases,
            member.validation_cases,
        );
    }
}

/// What goes in and how the label map is made.
fn method(out: &mut String, members: &[MemberSource], plan: &(Plan, String), average: Output) {
    let data = &members[0].experiment.data;
    let validate = &members[0].experiment.validate;
    let mut datasets: Vec<String> = members
        .iter()
        .map(|m| {
            let root = &m.experiment.data.root;
            root.file_name()
                .map_or_else(|| root.display().to_string(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    datasets.dedup();
    let _ = writeln!(
        out,
        "\nTrained on the dataset folder{} `{}` (each run's own training cases; the split is in its run \
         directory's `split.json`).",
        if datasets.len() > 1 { "s" } else { "" },
        datasets.join("`, `")
    );
    let modalities: Vec<&str> = data.modalities.iter().map(|m| m.name()).collect();
    let _ = writeln!(out, "\n## Input and method\n");
    let _ = writeln!(
        out,
        "- Modalities, in channel order: {} (BraTS 2023 names; `t1`, `t1ce`, `t2`, `flair` in older \
         BraTS). Every case's volumes must share one grid (BraTS data are co-registered, skull-stripped, \
         1 mm isotropic).",
        modalities.join(", ")
    );
    let _ = writeln!(
        out,
        "- Preprocessing: crop {}, normalisation {} (clipped to percentiles {:?} of brain voxels).",
        data.crop, data.normalization, data.clip_percentiles
    );
    let _ = writeln!(
        out,
        "- Sliding window {}x{}x{} voxels (x, y, z), overlap {}, {} weighting; members averaged as {}.",
        validate.window[0],
        validate.window[1],
        validate.window[2],
        validate.overlap,
        if validate.gaussian { "Gaussian" } else { "uniform" },
        average
    );
    let _ = writeln!(out, "- Post-processing: {} ({}).", plan.0.describe(), plan.1);
}

/// Each run's validation scores, raw and post-processed.
fn scores(out: &mut String, members: &[MemberSource]) {
    let _ = writeln!(out, "\n## Validation scores\n");
    let scored: Vec<(&MemberSource, &Scores)> = members.iter().filter_map(|m| Some((m, m.scores.as_ref()?))).collect();
    if scored.is_empty() {
        let _ = writeln!(out, "The runs recorded no end-of-run evaluation.");
    } else {
        let _ = writeln!(
            out,
            "Each run's own validation cases, mean per region (WT / TC / ET), from its end-of-run \
             evaluation (BraTS lesion-wise Dice and legacy Dice).\n"
        );
        let _ = writeln!(
            out,
            "| run | cases | lesion-wise Dice | legacy Dice | post-processed lesion-wise | post-processed legacy |\n|---|---|---|---|---|---|"
        );
        let three = |s: &[f64; 3]| format!("{:.3} / {:.3} / {:.3}", s[0], s[1], s[2]);
        let maybe = |s: &Option<[f64; 3]>| s.as_ref().map_or("-".to_string(), three);
        for (member, scores) in scored {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                member.run,
                scores.cases,
                three(&scores.lesion_dice),
                three(&scores.legacy_dice),
                maybe(&scores.postprocessed_lesion_dice),
                maybe(&scores.postprocessed_legacy_dice),
            );
        }
    }
}

/// How to run it, and what it cannot do.
fn running(out: &mut String, members: &[MemberSource]) {
    let _ = writeln!(out, "\n## Running it\n");
    let _ = writeln!(
        out,
        "With segtop: `segtop predict --package DIR --cases DATASET --out SEGMENTATIONS`.\n\n\
         Without segtop, with Python 3.9+ and `pip install numpy nibabel scipy onnxruntime`:\n\n\
         ```sh\npython predict.py --case CASE_FOLDER --out SEGMENTATIONS\npython predict.py --cases DATASET_FOLDER --out SEGMENTATIONS\n```\n\n\
         `predict.py` checks every file's SHA-256 against `package.toml`, and writes \
         `<case>.nii.gz` label maps on each case's own grid with its affine. Any ONNX runtime can run \
         the `model-N.onnx` files; `package.toml` says what goes in and comes out."
    );
    let _ = writeln!(out, "\n## Limitations\n");
    let _ = writeln!(
        out,
        "- Trained on {} case(s) and validated on {}: validation scores from few cases have a wide spread, \
         and scores on scans from other scanners and populations will differ.\n\
         - Expects BraTS-style preprocessing (co-registration, skull stripping, 1 mm resampling); raw \
         clinical scans must be preprocessed the same way first.\n\
         - Trained on CPU for a limited time; see the runs' experiments (their SHA-256 is in \
         `package.toml`) for the exact recipe.",
        members.iter().map(|m| m.training_cases).max().unwrap_or(0),
        members.iter().map(|m| m.validation_cases).max().unwrap_or(0),
    );
}
