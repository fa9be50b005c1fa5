//! Lists of runs: the orders they are sorted in (the dashboard's `s`, `segtop runs --sort`)
//! and cross-validation runs grouped by configuration, with their mean and spread over folds.

use super::model::RunModel;
use crate::run::events::RegionScores;

/// Orders for lists of runs, in the dashboard (`s` cycles) and `segtop runs --sort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunSort {
    /// Newest first.
    Started,
    Name,
    State,
    /// Best mean Dice over ET, TC and WT, highest first.
    Dice,
    /// Best enhancing-tumour Dice.
    Et,
    /// Best tumour-core Dice.
    Tc,
    /// Best whole-tumour Dice.
    Wt,
    /// Latest patches per second, fastest first.
    Speed,
}

impl RunSort {
    pub fn name(self) -> &'static str {
        match self {
            RunSort::Started => "started",
            RunSort::Name => "name",
            RunSort::State => "state",
            RunSort::Dice => "best Dice",
            RunSort::Et => "best ET",
            RunSort::Tc => "best TC",
            RunSort::Wt => "best WT",
            RunSort::Speed => "patches/s",
        }
    }

    pub fn next(self) -> RunSort {
        match self {
            RunSort::Started => RunSort::Name,
            RunSort::Name => RunSort::State,
            RunSort::State => RunSort::Dice,
            RunSort::Dice => RunSort::Et,
            RunSort::Et => RunSort::Tc,
            RunSort::Tc => RunSort::Wt,
            RunSort::Wt => RunSort::Speed,
            RunSort::Speed => RunSort::Started,
        }
    }
}

/// Sorts runs by `sort`; ties (and runs without the value, which go last) by id.
pub fn sort_runs(runs: &mut [&RunModel], sort: RunSort) {
    let started = |run: &RunModel| run.created_at();
    let best = |run: &RunModel, pick: fn(&RegionScores) -> f64| run.best.map_or(-1.0, |(_, d)| pick(&d));
    let by_value = |runs: &mut [&RunModel], value: &dyn Fn(&RunModel) -> f64| {
        runs.sort_by(|a, b| value(b).total_cmp(&value(a)).then(a.id.cmp(&b.id)));
    };
    match sort {
        RunSort::Started => runs.sort_by(|a, b| started(b).cmp(&started(a)).then(b.id.cmp(&a.id))),
        RunSort::Name => runs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        RunSort::State => runs.sort_by(|a, b| a.state().cmp(&b.state()).then(b.id.cmp(&a.id))),
        RunSort::Dice => by_value(runs, &|r| best(r, RegionScores::mean)),
        RunSort::Et => by_value(runs, &|r| best(r, |d| d.et)),
        RunSort::Tc => by_value(runs, &|r| best(r, |d| d.tc)),
        RunSort::Wt => by_value(runs, &|r| best(r, |d| d.wt)),
        RunSort::Speed => by_value(runs, &|r| r.patches_per_s().unwrap_or(-1.0)),
    }
}

/// The runs of one configuration over cross-validation folds, and their best validation
/// Dice as a mean and spread over folds.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldGroup {
    /// What sets the configuration apart from the other groups (`lr=0.003 base_filters=16`),
    /// else the run name.
    pub label: String,
    /// The runs, by id, in fold order.
    pub runs: Vec<String>,
    /// `data.folds`.
    pub folds: u32,
    /// Runs that have validated (those the scores are over).
    pub scored: usize,
    /// Mean and sample standard deviation over folds of each run's best validation Dice.
    pub mean: RegionScores,
    pub spread: RegionScores,
}

/// Keys that differ between runs without making them another configuration.
const NOT_CONFIGURATION: [&str; 4] = ["data.fold", "run.name", "run.notes", "run.tags"];

/// Groups the cross-validation runs among `runs` (those with `data.folds`) by configuration:
/// runs whose frozen experiments differ only in `data.fold` (and names) are one group.
pub fn fold_groups(runs: &[&RunModel]) -> Vec<FoldGroup> {
    let mut groups: Vec<(Configuration, Vec<&RunModel>)> = Vec::new();
    for run in runs.iter().copied().filter(|r| config_number(r, "data.folds") > 0) {
        let key = configuration(run);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(run),
            None => groups.push((key, vec![run])),
        }
    }
    let distinguishing = distinguishing_keys(&groups);
    groups
        .into_iter()
        .map(|(key, mut members)| {
            members.sort_by_key(|r| (config_number(r, "data.fold"), r.id.clone()));
            let label = if distinguishing.is_empty() {
                members[0]
                    .name
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                    .to_string()
            } else {
                distinguishing
                    .iter()
                    .filter_map(|d| key.iter().find(|(k, _)| k == d))
                    .map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let scores: Vec<RegionScores> = members.iter().filter_map(|r| r.best.map(|(_, d)| d)).collect();
            let (mean, spread) = mean_and_spread(&scores);
            FoldGroup {
                label,
                runs: members.iter().map(|r| r.id.clone()).collect(),
                folds: config_number(members[0], "data.folds"),
                scored: scores.len(),
                mean,
                spread,
            }
        })
        .collect()
}

/// A configuration: its frozen experiment's keys and values but those of [`NOT_CONFIGURATION`].
type Configuration = Vec<(String, String)>;

fn configuration(run: &RunModel) -> Configuration {
    run.observed
        .config
        .iter()
        .filter(|(key, _)| !NOT_CONFIGURATION.contains(key))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A whole-number key of the run's frozen experiment (`data.folds`), 0 when absent.
fn config_number(run: &RunModel, key: &str) -> u32 {
    run.observed
        .config
        .get(key)
        .and_then(|k| k.parse::<u32>().ok())
        .unwrap_or(0)
}

/// The keys whose values tell the groups apart.
fn distinguishing_keys(groups: &[(Configuration, Vec<&RunModel>)]) -> Vec<String> {
    let Some((first, _)) = groups.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|(key, value)| {
            groups
                .iter()
                .any(|(other, _)| other.iter().find(|(k, _)| k == key).map(|(_, v)| v) != Some(value))
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Mean and sample standard deviation over folds of each region's score (NaN without scores).
fn mean_and_spread(scores: &[RegionScores]) -> (RegionScores, RegionScores) {
    let stats = |pick: fn(&RegionScores) -> f64| -> [f64; 2] {
        let n = scores.len() as f64;
        if scores.is_empty() {
            return [f64::NAN; 2];
        }
        let mean = scores.iter().map(pick).sum::<f64>() / n;
        let variance = if scores.len() > 1 {
            scores.iter().map(|s| (pick(s) - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        [mean, variance.sqrt()]
    };
    let [et, et_sd] = stats(|s| s.et);
    let [tc, tc_sd] = stats(|s| s.tc);
    let [wt, wt_sd] = stats(|s| s.wt);
    (
        RegionScores { et, tc, wt },
        RegionScores {
            et: et_sd,
            tc: tc_sd,
            wt: wt_sd,
        },
    )
}
