//! A dataset ready for training: every usable case preprocessed into the cache and mapped,
//! the cases that could not be used named with their reasons, and the train/validation/test
//! split.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::Choice;
use crate::experiment::DataConfig;

use super::cache::{self, CacheError, CachedCase, SourceStamp};
use super::case::{self, CaseFiles};
use super::preprocess;

/// Bumped whenever preprocessing changes what it computes, so old cache files are rebuilt.
const PREPROCESS_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: cannot list the dataset folder: {error}", root.display())]
    Unreadable { root: PathBuf, error: std::io::Error },
    #[error("{}: no BraTS cases found (files named like BraTS-SSA-00002-000-t1n.nii.gz or BraTS2021_00000_t1.nii.gz)", .0.display())]
    Empty(PathBuf),
    #[error("{} of {total} cases cannot be used (set data.skip_bad_cases = true to train without them):\n  {}", problems.len(), problems.join("\n  "))]
    BadCases { total: usize, problems: Vec<String> },
    #[error("no case is left to train on: {0}")]
    NothingLeft(String),
}

/// The settings that decide what preprocessing produces, as text stored in each cache file.
pub fn settings_text(config: &DataConfig) -> String {
    let modalities: Vec<&str> = config.modalities.iter().map(|m| m.name()).collect();
    format!(
        "v{PREPROCESS_VERSION} modalities={} crop={} normalization={} clip={:?}",
        modalities.join(","),
        config.crop,
        config.normalization,
        config.clip_percentiles
    )
}

/// The usable cases of a dataset, each in the cache.
pub struct Dataset {
    pub cases: Vec<Arc<CachedCase>>,
    /// Cases that failed to load, with the reason (only with `skip_bad_cases`).
    pub skipped: Vec<String>,
    /// Cases left out on purpose: no labels, or too little tumour.
    pub excluded: Vec<String>,
}

/// Where the cache file of a case lives: per dataset folder and per settings.
fn cache_path(config: &DataConfig, settings: &str, id: &str) -> PathBuf {
    let root = config.root.canonicalize().unwrap_or_else(|_| config.root.clone());
    let dataset = cache::fingerprint(&root.to_string_lossy());
    config
        .cache_dir
        .join(&dataset[..12])
        .join(format!("{id}-{}.segc", &cache::fingerprint(settings)[..12]))
}

/// Opens (building where needed) the cache of every case under `config.root`, on up to
/// `threads` threads, calling `progress(done, total)` after each case.
pub fn open(
    config: &DataConfig,
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Dataset, DatasetError> {
    let found = case::discover(&config.root, config.layout).map_err(|source| DatasetError::Unreadable {
        root: config.root.clone(),
        error: source,
    })?;
    if found.cases.is_empty() {
        return Err(DatasetError::Empty(config.root.clone()));
    }
    let settings = settings_text(config);
    let total = found.cases.len();
    let results: Vec<Mutex<Option<Result<CachedCase, String>>>> =
        found.cases.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, total) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(files) = found.cases.get(index) else {
                        break;
                    };
                    let result = cached_case(files, config, &settings);
                    if let Ok(mut slot) = results[index].lock() {
                        *slot = Some(result);
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                }
            });
        }
    });

    let mut problems: Vec<String> = found.problems.clone();
    let mut cases = Vec::new();
    let mut excluded = Vec::new();
    for slot in results {
        match slot.into_inner().ok().flatten() {
            Some(Ok(cached)) if !cached.header.has_labels => {
                excluded.push(format!(
                    "{}: no seg file (usable for prediction only)",
                    cached.header.id
                ));
            }
            Some(Ok(cached))
                if config.min_tumour_fraction > 0.0 && cached.header.tumour_fraction <= config.min_tumour_fraction =>
            {
                excluded.push(format!(
                    "{}: {:.2}% tumour, not more than data.min_tumour_fraction = {}",
                    cached.header.id,
                    cached.header.tumour_fraction * 100.0,
                    config.min_tumour_fraction
                ));
            }
            Some(Ok(cached)) => cases.push(Arc::new(cached)),
            Some(Err(problem)) => problems.push(problem),
            None => problems.push("a case was not checked: a worker thread failed".to_string()),
        }
    }
    if !problems.is_empty() && !config.skip_bad_cases {
        return Err(DatasetError::BadCases { total, problems });
    }
    if cases.is_empty() {
        let why = excluded.first().or(problems.first()).cloned().unwrap_or_default();
        return Err(DatasetError::NothingLeft(why));
    }
    Ok(Dataset {
        cases,
        skipped: problems,
        excluded,
    })
}

/// The case's cache file, fresh: opened as it is, or rebuilt from the NIfTI files.
fn cached_case(files: &CaseFiles, config: &DataConfig, settings: &str) -> Result<CachedCase, String> {
    let mut sources = Vec::new();
    for path in config
        .modalities
        .iter()
        .filter_map(|m| files.image(*m))
        .chain(files.seg.as_deref())
    {
        sources.push(SourceStamp::of(path).map_err(|e| format!("{}: {}: cannot read: {e}", files.id, path.display()))?);
    }
    let path = cache_path(config, settings, &files.id);
    if let Ok(cached) = CachedCase::open(&path)
        && cached.is_fresh(settings, &sources)
    {
        return Ok(cached);
    }
    let loaded = case::load_case(files, &config.modalities).map_err(|e| e.to_string())?;
    let prepared = preprocess::prepare(&loaded, config);
    drop(loaded);
    let describe = |e: CacheError| format!("{}: cannot write the cache: {e}", files.id);
    cache::write(&path, &prepared, settings, sources).map_err(describe)?;
    CachedCase::open(&path).map_err(describe)
}

/// Which cases train, which validate, which are held out for testing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub seed: u64,
    /// With cross-validation: which fold validates, of how many (`[fold, folds]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<[u32; 2]>,
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
}

/// Why the cases cannot be split as an experiment asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error(
        "data.folds = {folds} is more than the {left} cases left for training and validation ({cases} cases, \
         {held_out} held out for testing): use at most {left} folds"
    )]
    TooManyFolds {
        folds: u32,
        left: usize,
        cases: usize,
        held_out: usize,
    },
}

/// The split an experiment's data section asks for: `data.split` by fractions, or with
/// `data.folds` the cross-validation fold `data.fold` (see [`fold_split`]).
pub fn split_for(ids: &[String], config: &crate::experiment::DataConfig) -> Result<Split, SplitError> {
    if config.folds == 0 {
        Ok(split(ids, config.split, config.split_seed))
    } else {
        fold_split(ids, config.split[2], config.split_seed, config.folds, config.fold)
    }
}

/// Cross-validation fold `fold` of `folds`: the test cases are those [`split`] holds out
/// with the same test fraction and seed (so the test set is the same with or without
/// folds); the rest, in the same seeded order, are dealt into the folds in turn. Fold `fold`
/// validates and the others train, so every case validates in exactly one fold.
pub fn fold_split(ids: &[String], test_fraction: f64, seed: u64, folds: u32, fold: u32) -> Result<Split, SplitError> {
    let held_out = split(ids, [1.0 - test_fraction, 0.0, test_fraction], seed);
    let mut remaining: Vec<String> = ids.to_vec();
    remaining.sort();
    remaining.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    remaining.retain(|id| !held_out.test.contains(id));
    if (remaining.len() as u64) < u64::from(folds) {
        return Err(SplitError::TooManyFolds {
            folds,
            left: remaining.len(),
            cases: ids.len(),
            held_out: held_out.test.len(),
        });
    }
    let mut train = Vec::new();
    let mut validation = Vec::new();
    for (i, id) in remaining.into_iter().enumerate() {
        if i as u64 % u64::from(folds) == u64::from(fold) {
            validation.push(id);
        } else {
            train.push(id);
        }
    }
    Ok(Split {
        seed,
        fold: Some([fold, folds]),
        train,
        validation,
        test: held_out.test,
    })
}

/// Splits case ids by `fractions` (train, validation, test), the same way for the same ids
/// and seed whatever order they come in. Every part that should get a case gets at least one
/// when there are enough; train always keeps at least one.
pub fn split(ids: &[String], fractions: [f64; 3], seed: u64) -> Split {
    let mut ids: Vec<String> = ids.to_vec();
    ids.sort();
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = ids.len();
    let count = |f: f64| {
        if f > 0.0 && n >= 3 {
            ((n as f64 * f).round() as usize).max(1)
        } else {
            (n as f64 * f).round() as usize
        }
    };
    let validation = count(fractions[1]).min(n.saturating_sub(1));
    let test = count(fractions[2]).min(n.saturating_sub(1 + validation));
    let test_ids = ids.split_off(n - test);
    let validation_ids = ids.split_off(ids.len() - validation);
    Split {
        seed,
        fold: None,
        train: ids,
        validation: validation_ids,
        test: test_ids,
    }
}

/// Cases of `dataset` named in `ids`, in that order.
pub fn select(dataset: &Dataset, ids: &[String]) -> Vec<Arc<CachedCase>> {
    ids.iter()
        .filter_map(|id| dataset.cases.iter().find(|c| &c.header.id == id).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("case-{i:03}")).collect()
    }

    #[test]
    fn split_is_deterministic_and_order_independent() {
        let a = split(&ids(95), [0.75, 0.15, 0.10], 42);
        let mut reversed = ids(95);
        reversed.reverse();
        let b = split(&reversed, [0.75, 0.15, 0.10], 42);
        assert_eq!(a, b);
        assert_eq!((a.train.len(), a.validation.len(), a.test.len()), (71, 14, 10));
        let c = split(&ids(95), [0.75, 0.15, 0.10], 7);
        assert_ne!(a.train, c.train);
    }

    #[test]
    fn folds_are_stable_disjoint_cover_every_case_once_and_keep_the_test_set() {
        let all = ids(23);
        let plain = split(&all, [0.75, 0.15, 0.10], 42);
        let mut validated: Vec<String> = Vec::new();
        for fold in 0..5 {
            let s = fold_split(&all, 0.10, 42, 5, fold).expect("enough cases");
            assert_eq!(s.fold, Some([fold, 5]));
            // The same test cases as the plain split, in none of the folds.
            assert_eq!(s.test, plain.test);
            assert!(s.train.iter().chain(&s.validation).all(|id| !s.test.contains(id)));
            // Train and validation are disjoint and cover the rest.
            assert!(s.train.iter().all(|id| !s.validation.contains(id)));
            assert_eq!(s.train.len() + s.validation.len() + s.test.len(), 23);
            // 21 cases in 5 folds: 5, 4, 4, 4, 4.
            assert_eq!(s.validation.len(), if fold == 0 { 5 } else { 4 });
            // The same whatever order the ids come in, and again.
            let mut reversed = all.clone();
            reversed.reverse();
            assert_eq!(fold_split(&reversed, 0.10, 42, 5, fold).expect("again"), s);
            validated.extend(s.validation);
        }
        validated.sort();
        validated.dedup();
        assert_eq!(validated.len(), 21, "every case validates in exactly one fold");
        // Another seed deals other folds.
        assert_ne!(
            fold_split(&all, 0.10, 7, 5, 0).expect("folds").validation,
            fold_split(&all, 0.10, 42, 5, 0).expect("folds").validation
        );
    }

    #[test]
    fn more_folds_than_cases_is_refused() {
        let error = fold_split(&ids(6), 0.2, 1, 6, 0)
            .expect_err("5 cases, 6 folds")
            .to_string();
        assert!(
            error.starts_with("data.folds = 6 is more than the 5 cases left"),
            "{error}"
        );
        assert!(fold_split(&ids(6), 0.2, 1, 5, 4).is_ok());
    }

    #[test]
    fn small_datasets_still_get_a_validation_case() {
        let s = split(&ids(4), [0.75, 0.15, 0.10], 1);
        assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (2, 1, 1));
        let one = split(&ids(1), [0.75, 0.15, 0.10], 1);
        assert_eq!((one.train.len(), one.validation.len(), one.test.len()), (1, 0, 0));
    }
}
