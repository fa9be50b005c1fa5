//! The experiments and themes the repository ships are valid and say what they claim.

use std::path::Path;

use segtop::experiment::{Crop, Experiment, Modality, Norm, Normalization, Optimizer, Schedule};
use segtop::theme::Theme;
use segtop::workspace::Workspace;

use crate::repo;

#[test]
fn every_shipped_experiment_and_theme_parses() {
    let workspace = Workspace::new(repo());
    let experiments = workspace.experiment_files().expect("experiments/ lists");
    assert!(experiments.len() >= 3, "{experiments:?}");
    for path in experiments {
        Experiment::load(&path, workspace.root()).unwrap_or_else(|error| panic!("{error}"));
    }
    let themes: Vec<_> = ["default", "light", "mono", "high-contrast"]
        .iter()
        .map(|name| workspace.theme_file(name))
        .collect();
    for path in &themes {
        Theme::load(path).unwrap_or_else(|error| panic!("{error}"));
    }
}

#[test]
fn the_shipped_sweep_expands_into_four_checked_runs() {
    let path = repo().join("experiments/quick-sweep.toml");
    let text = std::fs::read_to_string(&path).expect("shipped");
    let sweep = segtop::experiment::sweep::expand(&path, &text, Path::new("/ws"))
        .expect("valid")
        .expect("a sweep");
    let runs: Vec<(String, f64, u32)> = sweep
        .members
        .iter()
        .map(|m| {
            (
                m.experiment.run.name.clone(),
                m.experiment.train.lr,
                m.experiment.model.base_filters,
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            ("quick-sweep-1".to_string(), 1e-3, 6),
            ("quick-sweep-2".to_string(), 1e-3, 8),
            ("quick-sweep-3".to_string(), 3e-3, 6),
            ("quick-sweep-4".to_string(), 3e-3, 8),
        ]
    );
}

#[test]
fn theme_files_match_the_built_in_themes() {
    let default = Theme::load(&repo().join("themes/default.toml")).expect("valid");
    assert_eq!(default, Theme::default());
    let mono = Theme::load(&repo().join("themes/mono.toml")).expect("valid");
    assert_eq!(mono, Theme::monochrome());
}

#[test]
fn seed_tutorial_is_the_seed_recipe() {
    let e = Experiment::load(&repo().join("experiments/seed-tutorial.toml"), Path::new("/ws")).expect("valid");
    assert_eq!(
        e.data.modalities,
        [Modality::T1n, Modality::T1c, Modality::T2f, Modality::T2w]
    );
    assert_eq!(e.data.crop, Crop::Box([[56, 184], [56, 184], [13, 141]]));
    assert_eq!(e.data.normalization, Normalization::SliceMinMax);
    assert_eq!(e.data.min_tumour_fraction, 0.01);
    assert_eq!((e.data.split, e.data.split_seed), ([0.75, 0.15, 0.10], 42));
    assert_eq!(e.model.filters(), [16, 32, 64, 128, 256]);
    assert_eq!(e.model.dropout, [0.1, 0.1, 0.2, 0.2, 0.3]);
    assert_eq!(e.model.norm, Norm::None);
    assert_eq!(
        (e.train.patch_size, e.train.batch_size, e.train.epochs),
        ([64, 64, 64], 2, 100)
    );
    assert_eq!(
        (e.train.optimizer, e.train.lr, e.train.grad_clip),
        (Optimizer::Nadam, 1e-3, 1.0)
    );
    assert_eq!(e.train.schedule, Schedule::Plateau);
    assert_eq!(
        (e.train.plateau_factor, e.train.plateau_patience, e.train.min_lr),
        (0.5, 5, 1e-5)
    );
    assert_eq!(e.train.early_stopping_patience, 10);
    let loss = &e.train.loss;
    assert_eq!((loss.dice, loss.ce, loss.focal), (0.2, 0.0, 0.2));
    assert_eq!(loss.class_weights, [0.25; 4]);
    assert!(loss.dice_include_background);
    assert_eq!(e.augment.flip_axes, [0, 1]);
    assert_eq!(
        (e.augment.rotate_degrees, e.augment.brightness, e.augment.gamma),
        (15.0, [0.9, 1.1], [0.8, 1.2])
    );
    assert_eq!(
        (e.augment.noise_sigma, e.augment.noise_p, e.augment.gamma_p),
        (0.02, 0.5, 0.5)
    );
}

#[test]
fn lite_is_lighter_than_the_seed() {
    let lite = Experiment::load(&repo().join("experiments/lite.toml"), Path::new("/ws")).expect("valid");
    assert_eq!(lite.model.base_filters, 8);
    assert_eq!(lite.model.norm, Norm::Instance);
}

#[test]
fn quick_demo_brings_its_own_data() {
    let demo = Experiment::load(&repo().join("experiments/quick-demo.toml"), Path::new("/ws")).expect("valid");
    assert!(demo.data.synthetic.is_some());
    let problems = segtop::run::path_problems(&demo, Path::new("/ws"));
    assert!(problems.iter().all(|p| !p.fatal), "{problems:?}");
}

/// The key reference's text for each top-level section: from its `` ## `[section]` `` heading
/// to the next heading of that level.
fn key_reference_sections() -> std::collections::BTreeMap<String, String> {
    let path = repo().join("docs/src/experiment-files.md");
    let text = std::fs::read_to_string(&path).expect("docs/src/experiment-files.md");
    let mut sections = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            if let Some((name, body)) = current.take() {
                sections.insert(name, body);
            }
            let name = heading.trim().trim_matches('`').trim_matches(['[', ']']);
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections.extend(current);
    sections
}

/// Every key `segtop check` writes out is documented in its own section of the key reference
/// (a nested table such as `[train.loss]` in its parent's), not merely somewhere in the docs.
#[test]
fn the_key_reference_documents_every_experiment_key_in_its_section() {
    let sections = key_reference_sections();
    let mut text = "[data]\nroot = \"d\"\n[data.synthetic]\n".to_string();
    text.push_str("[train]\n");
    let experiment = Experiment::parse(Path::new("x.toml"), &text, Path::new("/ws")).expect("valid");
    let resolved: toml::Table = toml::from_str(&experiment.to_toml()).expect("check output is TOML");
    let mut missing = Vec::new();
    let mut visit: Vec<(String, &toml::Table)> = resolved
        .iter()
        .filter_map(|(key, value)| value.as_table().map(|table| (key.clone(), table)))
        .collect();
    while let Some((section, table)) = visit.pop() {
        let top = section.split('.').next().unwrap_or_default();
        let Some(body) = sections.get(top) else {
            missing.push(format!("[{section}] (no section)"));
            continue;
        };
        if section != top && !body.contains(&format!("[{section}]")) {
            missing.push(format!("[{section}]"));
        }
        for (key, value) in table {
            match value {
                toml::Value::Table(inner) => visit.push((format!("{section}.{key}"), inner)),
                _ if !body.contains(&format!("`{key}`")) => missing.push(format!("{section}.{key}")),
                _ => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/src/experiment-files.md does not document, in the key's own section: {missing:?}"
    );
}

/// The book's table of contents lists every chapter there is, and every chapter it lists
/// exists; the README links only to files that exist.
#[test]
fn the_book_lists_its_chapters_and_links_resolve() {
    let docs = repo().join("docs/src");
    let summary = std::fs::read_to_string(docs.join("SUMMARY.md")).expect("docs/src/SUMMARY.md");
    let listed: Vec<&str> = summary
        .lines()
        .filter_map(|line| line.split("](").nth(1)?.split(')').next())
        .collect();
    let mut chapters: Vec<String> = std::fs::read_dir(&docs)
        .expect("docs/src")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .collect();
    chapters.sort();
    let mut sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(sorted, chapters, "SUMMARY.md and the chapters in docs/src differ");
    let mut broken = Vec::new();
    let mut files: Vec<std::path::PathBuf> = chapters.iter().map(|c| docs.join(c)).collect();
    files.push(repo().join("README.md"));
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let dir = file.parent().expect("in a folder");
        for target in text.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") {
                continue;
            }
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to files that do not exist: {broken:?}");
}

/// No import circles among the files of `src/`, and no import against the flow the Layout
/// chapter describes (`scripts/imports.py` says which and where).
#[test]
fn the_source_imports_follow_the_flow() {
    source_check_passes("scripts/imports.py");
}

/// Runs one of the source checks in `scripts/` and insists that it found nothing.
fn source_check_passes(script: &str) {
    let output = std::process::Command::new("python3")
        .arg(repo().join(script))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// No file of `src/` over 900 lines and no function over 80, tests and the official-metric
/// port aside (`scripts/sizes.py` says which and where).
#[test]
fn no_source_file_or_function_outgrows_its_limit() {
    source_check_passes("scripts/sizes.py");
}
