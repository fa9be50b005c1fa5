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
    let problems = demo.check_paths(Path::new("/ws"));
    assert!(problems.iter().all(|p| !p.fatal), "{problems:?}");
}

#[test]
fn readme_documents_every_experiment_key() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let mut text = "[data]\nroot = \"d\"\n[data.synthetic]\n".to_string();
    text.push_str("[train]\n");
    let experiment = Experiment::parse(Path::new("x.toml"), &text, Path::new("/ws")).expect("valid");
    let resolved: toml::Table = toml::from_str(&experiment.to_toml()).expect("check output is TOML");
    let mut missing = Vec::new();
    let mut visit = vec![(String::new(), &resolved)];
    while let Some((section, table)) = visit.pop() {
        if !section.is_empty() && !readme.contains(&format!("[{section}]")) {
            missing.push(format!("[{section}]"));
        }
        for (key, value) in table {
            match value {
                toml::Value::Table(inner) => {
                    let name = if section.is_empty() {
                        key.clone()
                    } else {
                        format!("{section}.{key}")
                    };
                    visit.push((name, inner));
                }
                _ if !readme.contains(&format!("`{key}`")) => missing.push(format!("{section}.{key}")),
                _ => {}
            }
        }
    }
    assert!(missing.is_empty(), "README.md does not document: {missing:?}");
}
