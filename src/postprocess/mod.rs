//! Post-processing of predicted label maps, learned on a run's validation cases.
//!
//! The official lesion-wise BraTS metrics count every predicted connected component that meets
//! no ground-truth lesion as a lesion of its own with Dice 0, so a few specks far from the
//! tumour cost more than a wrong border. After training (and with `segtop postprocess RUN`),
//! [`search`] tries simple operations on the validation cases' predictions, region by region
//! in the order whole tumour, tumour core, enhancing tumour, and keeps for each the one that
//! raises that region's mean lesion-wise Dice most:
//!
//! - remove 26-connected components of fewer voxels than a size (a grid up to 5,000 voxels);
//! - remove components smaller than a fraction of the case's largest one (2% to 50%): a
//!   threshold that scales with the tumour, so it carries over to cases whose tumour and
//!   false positives are larger or smaller than the validation cases';
//! - keep only the largest component;
//! - then relabel a case's enhancing tumour as necrosis when it has fewer voxels than a size.
//!
//! Learned from a handful of cases, a choice can fit them and nothing else. So the search
//! scores every candidate case by case, adopts an operation only when it beats doing nothing
//! on the mean *and* does no harm on at least half the cases, and estimates by leave-one-out
//! (the whole choice made again without each case, then scored on it) what the plan can be
//! expected to give on cases it has not seen, with the spread over the cases left out.
//!
//! A voxel taken out of a region moves to the next region out: enhancing tumour becomes
//! necrosis (still tumour core), tumour core becomes oedema (still whole tumour), whole tumour
//! becomes background. So a choice for an inner region never changes an outer region's score.
//!
//! The chosen [`Plan`] is stored as `postprocess.toml` in the run directory, with the
//! validation scores before and after; `segtop predict` and the end-of-run evaluation apply it.
//! Label maps here use the BraTS 2023 labels: 1 NCR, 2 ED, 3 ET.

use std::fmt;
use std::time::Instant;

use crate::metrics::brats::{self, Challenge};
use crate::metrics::grid::{Bounds, Grid, lesions_by_dilation};
use crate::run::events::{BratsScores, CaseEvaluation};

mod file;

pub use file::RawPlan;

/// Component sizes (voxels) the search tries as "remove smaller than".
pub const REMOVE_BELOW: [u32; 12] = [20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000];

/// Fractions (percent) of the largest component the search tries as "remove components
/// smaller than".
pub const REMOVE_BELOW_PERCENT: [u32; 6] = [2, 5, 10, 20, 30, 50];

/// The fewest cases from which the search tries absolute component sizes. A size in voxels
/// learned from a few cases fits their tumours' sizes: on 22 unseen real BraTS cases, "ET:
/// remove components under 1,500 voxels" (learned from 3 validation cases) missed 9 of 31
/// enhancing-tumour lesions and scored lesion-wise 0.593, where 10% of each case's largest
/// component missed 4 and scored 0.642. A share of the largest scales with each tumour.
pub const MIN_CASES_FOR_ABSOLUTE_SIZES: usize = 10;

/// Enhancing-tumour volumes (voxels) the search tries as "relabel as necrosis below".
pub const ET_TO_NCR_BELOW: [u32; 10] = [20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000];

/// Scores closer than this count as equal, so that ties go to the simpler operation.
const TIE: f64 = 1e-9;

/// The regions post-processing acts on, outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Wt,
    Tc,
    Et,
}

impl Region {
    pub const ALL: [Region; 3] = [Region::Wt, Region::Tc, Region::Et];

    /// The region's name in the metrics' tables (`WT`).
    pub fn name(self) -> &'static str {
        match self {
            Region::Wt => "WT",
            Region::Tc => "TC",
            Region::Et => "ET",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Region::Wt => "wt",
            Region::Tc => "tc",
            Region::Et => "et",
        }
    }

    fn contains(self, label: u8) -> bool {
        match self {
            Region::Wt => (1..=3).contains(&label),
            Region::Tc => label == 1 || label == 3,
            Region::Et => label == 3,
        }
    }

    /// The label a voxel taken out of this region gets: that of the next region out.
    fn replacement(self) -> u8 {
        match self {
            Region::Wt => 0,
            Region::Tc => 2,
            Region::Et => 1,
        }
    }
}

/// What happens to one region's connected components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// The region as predicted.
    #[default]
    None,
    /// Components of fewer voxels than this leave the region.
    RemoveSmall(u32),
    /// Components of fewer voxels than this percentage of the case's largest component (of
    /// the region) leave the region.
    RemoveRelative(u32),
    /// Every component but the largest leaves the region.
    KeepLargest,
}

impl Operation {
    const NAMES: [&'static str; 4] = ["none", "remove-small", "remove-relative", "keep-largest"];

    fn name(self) -> &'static str {
        match self {
            Operation::None => "none",
            Operation::RemoveSmall(_) => "remove-small",
            Operation::RemoveRelative(_) => "remove-relative",
            Operation::KeepLargest => "keep-largest",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::None => f.write_str("as predicted"),
            Operation::RemoveSmall(size) => write!(f, "remove components under {size} voxels"),
            Operation::RemoveRelative(percent) => {
                write!(f, "remove components under {percent}% of the largest")
            }
            Operation::KeepLargest => f.write_str("keep the largest component"),
        }
    }
}

/// A post-processing of label maps: one operation per region, applied whole tumour first,
/// then the enhancing-tumour volume rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    pub wt: Operation,
    pub tc: Operation,
    pub et: Operation,
    /// A case whose enhancing tumour has fewer voxels than this has it relabelled as
    /// necrosis (0: never).
    pub et_to_ncr_below: u32,
}

impl Plan {
    /// The plan that changes nothing.
    pub const NONE: Plan = Plan {
        wt: Operation::None,
        tc: Operation::None,
        et: Operation::None,
        et_to_ncr_below: 0,
    };

    pub fn operation(&self, region: Region) -> Operation {
        match region {
            Region::Wt => self.wt,
            Region::Tc => self.tc,
            Region::Et => self.et,
        }
    }

    fn set(&mut self, region: Region, operation: Operation) {
        match region {
            Region::Wt => self.wt = operation,
            Region::Tc => self.tc = operation,
            Region::Et => self.et = operation,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Plan::NONE
    }

    /// Applies the plan to a label map on `grid` (x fastest, BraTS 2023 labels).
    pub fn apply(&self, grid: Grid, labels: &mut [u8]) {
        for region in Region::ALL {
            apply_operation(grid, labels, region, self.operation(region));
        }
        if self.et_to_ncr_below > 0 {
            let et = labels.iter().filter(|&&l| l == 3).count();
            if et < self.et_to_ncr_below as usize {
                labels.iter_mut().filter(|l| **l == 3).for_each(|l| *l = 1);
            }
        }
    }

    /// The plan in one line, for logs and events.
    pub fn describe(&self) -> String {
        if self.is_none() {
            return "none".to_string();
        }
        let mut parts: Vec<String> = Region::ALL
            .iter()
            .filter(|r| self.operation(**r) != Operation::None)
            .map(|r| format!("{}: {}", r.name(), self.operation(*r)))
            .collect();
        if self.et_to_ncr_below > 0 {
            parts.push(format!("ET under {} voxels to necrosis", self.et_to_ncr_below));
        }
        parts.join("; ")
    }
}

/// Applies one region's operation in place.
fn apply_operation(grid: Grid, labels: &mut [u8], region: Region, operation: Operation) {
    if operation == Operation::None {
        return;
    }
    let voxels: Vec<usize> = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| region.contains(**l))
        .map(|(i, _)| i)
        .collect();
    let components = lesions_by_dilation(grid, &voxels, 0);
    let largest = components
        .iter()
        .enumerate()
        .max_by_key(|(i, c)| (c.len(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    let largest_size = largest.map_or(0, |i| components[i].len());
    for (i, component) in components.iter().enumerate() {
        let remove = match operation {
            Operation::None => false,
            Operation::RemoveSmall(size) => component.len() < size as usize,
            // Compared in whole numbers: size < percent% of the largest.
            Operation::RemoveRelative(percent) => component.len() * 100 < largest_size * percent as usize,
            Operation::KeepLargest => Some(i) != largest,
        };
        if remove {
            for &v in component {
                labels[v] = region.replacement();
            }
        }
    }
}

/// One validation case: the network's raw prediction and the ground truth, on one grid.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub grid: Grid,
    pub spacing: [f64; 3],
    pub prediction: Vec<u8>,
    pub truth: Vec<u8>,
}

impl Case {
    /// The case cut down to the box around its predicted and true tumour, with a margin wider
    /// than the metrics' dilation, so that scores stay the same and cost a fraction.
    pub fn cropped(self) -> Case {
        let mut bounds = Bounds::EMPTY;
        for (i, (&p, &t)) in self.prediction.iter().zip(&self.truth).enumerate() {
            if p != 0 || t != 0 {
                bounds.include(self.grid.coords(i));
            }
        }
        if bounds.is_empty() {
            return self;
        }
        let bounds = bounds.grow(CROP_MARGIN, self.grid);
        let dims = bounds.dims();
        let grid = Grid::new(dims);
        let mut prediction = Vec::with_capacity(grid.len());
        let mut truth = Vec::with_capacity(grid.len());
        for z in bounds.lo[2]..bounds.hi[2] {
            for y in bounds.lo[1]..bounds.hi[1] {
                let row = self.grid.index([bounds.lo[0], y, z]);
                prediction.extend_from_slice(&self.prediction[row..row + dims[0]]);
                truth.extend_from_slice(&self.truth[row..row + dims[0]]);
            }
        }
        Case {
            grid,
            prediction,
            truth,
            ..self
        }
    }

    /// The case's prediction after `plan`.
    fn planned(&self, plan: &Plan) -> Vec<u8> {
        let mut prediction = self.prediction.clone();
        plan.apply(self.grid, &mut prediction);
        prediction
    }

    /// The official lesion-wise Dice of one region of the case's prediction after `plan`,
    /// without the surface distances the full evaluation also computes.
    pub fn lesion_dice(&self, challenge: Challenge, plan: &Plan, region: Region) -> f64 {
        let prediction = self.planned(plan);
        brats::evaluate_some(
            challenge,
            self.grid,
            self.spacing,
            &prediction,
            &self.truth,
            Some(&[region.name()]),
            brats::Detail::Dice,
        )
        .first()
        .map_or(0.0, |r| r.lesion_dice)
    }

    /// The official scores of the case's prediction after `plan`.
    pub fn evaluate(&self, challenge: Challenge, plan: &Plan) -> CaseEvaluation {
        self.evaluate_at(challenge, plan, brats::Detail::Full)
    }

    /// [`Case::evaluate`] at a `detail`: with [`brats::Detail::Dice`], the distances are NaN.
    pub fn evaluate_at(&self, challenge: Challenge, plan: &Plan, detail: brats::Detail) -> CaseEvaluation {
        let prediction = self.planned(plan);
        let reports = brats::evaluate_some(
            challenge,
            self.grid,
            self.spacing,
            &prediction,
            &self.truth,
            None,
            detail,
        );
        CaseEvaluation {
            case: self.id.clone(),
            regions: reports.iter().map(BratsScores::from).collect(),
        }
    }
}

/// Voxels kept around a cropped case: more than the lesion-grouping dilation of any challenge
/// (at most 5), so cropping never changes which lesions merge.
const CROP_MARGIN: usize = 7;

/// What a plan did on the validation cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub challenge: String,
    /// The epoch whose weights made the predictions.
    pub epoch: u32,
    pub cases: Vec<String>,
    /// With `segtop postprocess --folds`: the cross-validation runs whose out-of-fold
    /// predictions the cases are (empty: one run's own validation cases).
    pub runs: Vec<String>,
    /// Per region, the means over cases before and after the plan.
    pub before: Vec<BratsScores>,
    pub after: Vec<BratsScores>,
    /// Per case, before and after.
    pub cases_before: Vec<CaseEvaluation>,
    pub cases_after: Vec<CaseEvaluation>,
    /// Per region, the leave-one-out estimate of the plan's lesion-wise Dice on cases it was
    /// not learned on (none for a single case, or a region the search did not reach).
    pub expected: Vec<Expected>,
    /// The step ("TC", "ET volume") at which a search with a deadline stopped; it and the
    /// steps after it kept what they had tried so far (nothing: `none`).
    pub cut_short_at: Option<&'static str>,
}

/// Finds the plan that maximises the mean lesion-wise Dice of the validation cases, region by
/// region (WT, then TC, then ET's components, then ET's volume rule), each choice made with
/// the earlier ones applied. A region keeps `none` unless an operation beats it on the mean
/// and does no harm on at least half the cases (see [`choose`]); between equal scores the
/// simpler operation wins (none, then relative sizes, absolute sizes, keep-largest), and among
/// equally good sizes the middle of their run, which leaves the most margin for cases not
/// seen. Absolute sizes are tried only from [`MIN_CASES_FOR_ABSOLUTE_SIZES`] cases on. Each
/// step is also made again without each case in turn and scored on it: the
/// leave-one-out estimate in [`Validation::expected`]. `progress` is told each step's name as
/// it starts.
///
/// With a `deadline` (a time-budgeted run's end), no candidate is tried once what is left
/// would not also cover scoring the chosen plan in full (timed on the first, full scoring of
/// the raw predictions): a step cut short chooses among what it tried, later steps keep
/// `none`, and [`Validation::cut_short_at`] says where it stopped.
pub fn search(
    challenge: Challenge,
    cases: &[Case],
    epoch: u32,
    threads: usize,
    progress: &dyn Fn(&str),
    deadline: Option<Instant>,
) -> (Plan, Validation) {
    let mut plan = Plan::NONE;
    let started = Instant::now();
    let before = evaluate_all(challenge, cases, &plan, threads);
    let full_scoring = started.elapsed();
    let out_of_time = || deadline.is_some_and(|d| Instant::now() + full_scoring >= d);
    let mut cut_short_at = None;
    let mut left_out: Vec<(Region, Vec<f64>)> = Vec::new();
    let (candidates, runs) = region_candidates(cases.len());
    for region in Region::ALL {
        if cut_short_at.is_some() || out_of_time() {
            cut_short_at = cut_short_at.or(Some(region.name()));
            break;
        }
        progress(region.name());
        let mut scores = Vec::with_capacity(candidates.len());
        for &operation in &candidates {
            if !scores.is_empty() && out_of_time() {
                cut_short_at = Some(region.name());
                break;
            }
            let mut trial = plan;
            trial.set(region, operation);
            scores.push(case_lesion_dice(challenge, cases, &trial, region, threads));
        }
        plan.set(region, candidates[choose(&scores, &runs)]);
        left_out.push((region, leave_one_out(&scores, &runs)));
    }
    if cut_short_at.is_none() && out_of_time() {
        cut_short_at = Some(ET_VOLUME);
    }
    if cut_short_at.is_none() {
        progress(ET_VOLUME);
        let (et_left_out, ran_out_of_time) = choose_et_volume(challenge, cases, &mut plan, threads, &out_of_time);
        if ran_out_of_time {
            cut_short_at = Some(ET_VOLUME);
        }
        // ET's estimate is that of its last step, the volume rule, made after its components.
        left_out.retain(|(region, _)| *region != Region::Et);
        left_out.push((Region::Et, et_left_out));
    }
    let after = if plan == Plan::NONE {
        before.clone()
    } else {
        evaluate_all(challenge, cases, &plan, threads)
    };
    let regions = challenge.regions();
    let validation = Validation {
        challenge: challenge.name().to_string(),
        epoch,
        cases: cases.iter().map(|c| c.id.clone()).collect(),
        runs: Vec::new(),
        before: CaseEvaluation::mean(&before, regions),
        after: CaseEvaluation::mean(&after, regions),
        cases_before: before,
        cases_after: after,
        expected: expected_on_unseen_cases(left_out),
        cut_short_at,
    };
    (plan, validation)
}

/// Summarises each region's leave-one-out scores; a region has none with fewer than two cases.
fn expected_on_unseen_cases(left_out: Vec<(Region, Vec<f64>)>) -> Vec<Expected> {
    left_out
        .into_iter()
        .filter(|(_, scores)| !scores.is_empty())
        .map(|(region, scores)| Expected::of(region.name(), &scores))
        .collect()
}

/// The last step, the enhancing-tumour volume rule, chosen with the region operations of
/// `plan` applied and set in it; returns its leave-one-out scores and whether it stopped
/// because time ran out.
fn choose_et_volume(
    challenge: Challenge,
    cases: &[Case],
    plan: &mut Plan,
    threads: usize,
    out_of_time: &dyn Fn() -> bool,
) -> (Vec<f64>, bool) {
    let mut ran_out_of_time = false;
    let mut scores = vec![case_lesion_dice(challenge, cases, plan, Region::Et, threads)];
    for &size in &ET_TO_NCR_BELOW {
        if out_of_time() {
            ran_out_of_time = true;
            break;
        }
        let trial = Plan {
            et_to_ncr_below: size,
            ..*plan
        };
        scores.push(case_lesion_dice(challenge, cases, &trial, Region::Et, threads));
    }
    let volume_sizes = 1..scores.len();
    let sizes = std::slice::from_ref(&volume_sizes);
    let chosen = choose(&scores, sizes);
    plan.et_to_ncr_below = if chosen == 0 { 0 } else { ET_TO_NCR_BELOW[chosen - 1] };
    (leave_one_out(&scores, sizes), ran_out_of_time)
}

/// The operations one region's step tries, in order of preference on a tie, and the ranges of
/// them that are one operation at growing sizes.
fn region_candidates(cases: usize) -> (Vec<Operation>, Vec<std::ops::Range<usize>>) {
    let mut candidates = vec![Operation::None];
    let relative = candidates.len()..candidates.len() + REMOVE_BELOW_PERCENT.len();
    candidates.extend(REMOVE_BELOW_PERCENT.iter().map(|&p| Operation::RemoveRelative(p)));
    let mut runs = vec![relative];
    if cases >= MIN_CASES_FOR_ABSOLUTE_SIZES {
        runs.push(candidates.len()..candidates.len() + REMOVE_BELOW.len());
        candidates.extend(REMOVE_BELOW.iter().map(|&s| Operation::RemoveSmall(s)));
    }
    candidates.push(Operation::KeepLargest);
    (candidates, runs)
}

/// What a plan can be expected to give on one region of cases it was not learned on: the
/// leave-one-out scores' mean and standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub region: &'static str,
    /// Mean lesion-wise Dice over the cases left out.
    pub lesion_dice: f64,
    /// Their standard deviation (0 for one case).
    pub spread: f64,
    /// Cases left out, one at a time.
    pub cases: usize,
}

impl Expected {
    fn of(region: &'static str, scores: &[f64]) -> Expected {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Expected {
            region,
            lesion_dice: mean,
            spread: variance.sqrt(),
            cases: scores.len(),
        }
    }
}

/// For each case, the score on it of the candidate [`choose`] takes from the other cases'
/// scores (`scores[candidate][case]`): the choice's leave-one-out scores. Empty for fewer than
/// two cases, where nothing is left to choose from.
fn leave_one_out(scores: &[Vec<f64>], runs: &[std::ops::Range<usize>]) -> Vec<f64> {
    let cases = scores.first().map_or(0, Vec::len);
    if cases < 2 {
        return Vec::new();
    }
    (0..cases)
        .map(|held_out| {
            let others: Vec<Vec<f64>> = scores
                .iter()
                .map(|per_case| {
                    per_case
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != held_out)
                        .map(|(_, &s)| s)
                        .collect()
                })
                .collect();
            scores[choose(&others, runs)][held_out]
        })
        .collect()
}

/// The name of the search's last step, the enhancing-tumour volume rule.
const ET_VOLUME: &str = "ET volume";

/// Searches the plan for a run's validation cases, writes it to the run's `postprocess.toml`
/// (replacing any earlier one whole), and returns it.
pub fn learn(
    run: &crate::run::RunDir,
    cases: &[Case],
    epoch: u32,
    threads: usize,
    progress: &dyn Fn(&str),
    deadline: Option<Instant>,
) -> std::io::Result<(Plan, Validation)> {
    let (plan, validation) = search(Challenge::Ssa, cases, epoch, threads, progress, deadline);
    crate::run::write_text(run.path(), &run.postprocess(), &plan.to_toml(Some(&validation)))?;
    Ok((plan, validation))
}

/// The validation scores before and after a plan, as table lines for a terminal.
pub fn table(validation: &Validation) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<3} {:>16} {:>16} {:>16} {:>18}",
        "", "lesion-wise Dice", "legacy Dice", "FP per case", "unseen (LOO)"
    )];
    let n = validation.cases.len().max(1) as f64;
    for (before, after) in validation.before.iter().zip(&validation.after) {
        let expected = validation
            .expected
            .iter()
            .find(|e| e.region == before.region)
            .map_or_else(
                || "-".to_string(),
                |e| format!("{:.3} +- {:.3}", e.lesion_dice, e.spread),
            );
        lines.push(format!(
            "{:<3} {:>7.3} -> {:<5.3} {:>7.3} -> {:<5.3} {:>7.1} -> {:<5.1} {:>18}",
            before.region,
            before.lesion_dice,
            after.lesion_dice,
            before.legacy_dice,
            after.legacy_dice,
            before.num_fp as f64 / n,
            after.num_fp as f64 / n,
            expected,
        ));
    }
    lines
}

/// The index of the chosen candidate, from each candidate's per-case scores
/// (`scores[candidate][case]`): `scores[0]` is doing nothing, and each range of `runs` is one
/// operation at growing sizes. A candidate is eligible when it scores at least as well as
/// doing nothing on at least half the cases (a gain on one case that costs the others is not
/// taken). Doing nothing is kept unless an eligible candidate beats its mean; ties go to the
/// earlier (simpler) candidate, except that among tied sizes of one operation the middle of
/// the first run of them is taken.
fn choose(scores: &[Vec<f64>], runs: &[std::ops::Range<usize>]) -> usize {
    let Some(nothing) = scores.first() else {
        return 0;
    };
    let mean = |s: &Vec<f64>| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let means: Vec<f64> = scores.iter().map(mean).collect();
    let eligible = |c: usize| {
        let held = scores[c].iter().zip(nothing).filter(|(s, n)| **s >= **n - TIE).count();
        c == 0 || held * 2 >= nothing.len()
    };
    let Some(best) = (0..scores.len())
        .filter(|&c| eligible(c))
        .map(|c| means[c])
        .reduce(f64::max)
    else {
        return 0;
    };
    if best <= means[0] + TIE {
        return 0;
    }
    let tied = |c: usize| eligible(c) && means[c] >= best - TIE;
    let first = (0..scores.len()).find(|&c| tied(c)).unwrap_or(0);
    let Some(run) = runs.iter().find(|r| r.contains(&first)) else {
        return first;
    };
    let run_end = (first..run.end).take_while(|&c| tied(c)).last().unwrap_or(first);
    first + (run_end - first) / 2
}

/// Each case's lesion-wise Dice of one region after `plan`, in the cases' order.
fn case_lesion_dice(challenge: Challenge, cases: &[Case], plan: &Plan, region: Region, threads: usize) -> Vec<f64> {
    on_threads(cases, threads, |case| case.lesion_dice(challenge, plan, region))
}

/// Every case's scores after `plan`, on up to `threads` threads, in the cases' order.
pub fn evaluate_all(challenge: Challenge, cases: &[Case], plan: &Plan, threads: usize) -> Vec<CaseEvaluation> {
    on_threads(cases, threads, |case| case.evaluate(challenge, plan))
}

/// `score` of every case, on up to `threads` threads, in the cases' order.
fn on_threads<T: Send>(cases: &[Case], threads: usize, score: impl Fn(&Case) -> T + Sync) -> Vec<T> {
    let threads = threads.clamp(1, cases.len().max(1));
    let chunk = cases.len().div_ceil(threads).max(1);
    let score = &score;
    std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(score).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                // A panic in a metric thread is a bug in segtop; pass it on unchanged.
                h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use std::time::Duration;

    const SHAPE: [usize; 3] = [40, 40, 30];

    fn grid() -> Grid {
        Grid::new(SHAPE)
    }

    /// Paints a box of `label` from `lo` (inclusive) to `hi` (exclusive).
    fn paint(labels: &mut [u8], lo: [usize; 3], hi: [usize; 3], label: u8) {
        let g = grid();
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                for x in lo[0]..hi[0] {
                    labels[g.index([x, y, z])] = label;
                }
            }
        }
    }

    fn count(labels: &[u8], label: u8) -> usize {
        labels.iter().filter(|&&l| l == label).count()
    }

    /// A tumour: oedema around a core of necrosis and enhancing tumour.
    fn tumour(labels: &mut [u8], at: [usize; 3]) {
        let [x, y, z] = at;
        paint(labels, [x, y, z], [x + 12, y + 12, z + 10], 2);
        paint(labels, [x + 3, y + 3, z + 3], [x + 9, y + 9, z + 7], 3);
        paint(labels, [x + 5, y + 5, z + 4], [x + 7, y + 7, z + 6], 1);
    }

    #[test]
    fn remove_small_takes_small_components_out_of_the_region_only() {
        let mut labels = vec![0u8; grid().len()];
        tumour(&mut labels, [2, 2, 2]);
        // A speck of 8 voxels of enhancing tumour far away.
        paint(&mut labels, [30, 30, 20], [32, 32, 22], 3);
        let mut wt = labels.clone();
        apply_operation(grid(), &mut wt, Region::Wt, Operation::RemoveSmall(9));
        assert_eq!(count(&wt, 3), count(&labels, 3) - 8);
        assert_eq!(wt[grid().index([30, 30, 20])], 0);
        // Tumour core: the speck becomes oedema, so whole tumour keeps it.
        let mut tc = labels.clone();
        apply_operation(grid(), &mut tc, Region::Tc, Operation::RemoveSmall(9));
        assert_eq!(tc[grid().index([30, 30, 20])], 2);
        // Enhancing tumour: it becomes necrosis, still tumour core.
        let mut et = labels.clone();
        apply_operation(grid(), &mut et, Region::Et, Operation::RemoveSmall(9));
        assert_eq!(et[grid().index([30, 30, 20])], 1);
        // A size no component is under changes nothing.
        let mut same = labels.clone();
        apply_operation(grid(), &mut same, Region::Wt, Operation::RemoveSmall(8));
        assert_eq!(same, labels);
    }

    #[test]
    fn keep_largest_keeps_one_component_and_diagonal_neighbours_are_one() {
        let mut labels = vec![0u8; grid().len()];
        tumour(&mut labels, [2, 2, 2]);
        paint(&mut labels, [25, 25, 15], [30, 30, 20], 2);
        // Touching the second blob only by a corner: the same 26-connected component.
        paint(&mut labels, [30, 30, 20], [31, 31, 21], 2);
        let big = count(&labels, 1) + count(&labels, 2) + count(&labels, 3) - 126;
        apply_operation(grid(), &mut labels, Region::Wt, Operation::KeepLargest);
        assert_eq!(count(&labels, 1) + count(&labels, 2) + count(&labels, 3), big);
        assert_eq!(labels[grid().index([30, 30, 20])], 0);
    }

    #[test]
    fn small_enhancing_tumour_becomes_necrosis_below_the_volume() {
        let mut labels = vec![0u8; grid().len()];
        paint(&mut labels, [5, 5, 5], [8, 8, 8], 3);
        let plan = Plan {
            et_to_ncr_below: 28,
            ..Plan::NONE
        };
        let mut small = labels.clone();
        plan.apply(grid(), &mut small);
        assert_eq!((count(&small, 3), count(&small, 1)), (0, 27));
        let plan = Plan {
            et_to_ncr_below: 27,
            ..Plan::NONE
        };
        plan.apply(grid(), &mut labels);
        assert_eq!(count(&labels, 3), 27);
    }

    /// One run of sizes.
    fn sizes(run: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
        vec![run]
    }

    /// Per-case scores of candidates that score the same on every case.
    fn flat(means: &[f64], cases: usize) -> Vec<Vec<f64>> {
        means.iter().map(|&m| vec![m; cases]).collect()
    }

    #[test]
    fn choice_keeps_nothing_unless_beaten_and_takes_the_middle_of_a_tie() {
        // Doing nothing is as good as anything: keep it.
        assert_eq!(choose(&flat(&[0.5, 0.5, 0.4, 0.5], 2), &sizes(1..4)), 0);
        // Sizes 2..=4 tie at the best: the middle one (index 3).
        assert_eq!(choose(&flat(&[0.1, 0.3, 0.6, 0.6, 0.6, 0.2, 0.6], 2), &sizes(1..6)), 3);
        // An even run takes its lower middle.
        assert_eq!(choose(&flat(&[0.1, 0.6, 0.6, 0.2], 2), &sizes(1..4)), 1);
        // An operation after the sizes wins only when it is strictly better.
        assert_eq!(choose(&flat(&[0.1, 0.2, 0.3, 0.7], 2), &sizes(1..3)), 3);
        assert_eq!(choose(&flat(&[0.1, 0.2, 0.7, 0.7], 2), &sizes(1..3)), 2);
        // A tie run stays inside its own operation's sizes.
        assert_eq!(choose(&flat(&[0.1, 0.2, 0.7, 0.7, 0.7, 0.7], 2), &[1..3, 3..6]), 2);
    }

    #[test]
    fn a_gain_on_one_case_that_costs_the_others_is_not_taken() {
        // Better on the mean, but worse than nothing on two of three cases.
        let scores = vec![vec![0.5, 0.5, 0.5], vec![1.0, 0.45, 0.45]];
        assert_eq!(choose(&scores, &[]), 0);
        // Worse on one case of three: taken.
        let scores = vec![vec![0.5, 0.5, 0.5], vec![1.0, 0.6, 0.45]];
        assert_eq!(choose(&scores, &[]), 1);
    }

    #[test]
    fn leave_one_out_scores_each_case_with_the_choice_made_without_it() {
        // Candidate 1 wins on the mean only thanks to cases 0 and 1; without case 2 it is
        // chosen and fails case 2, without case 0 or 1 candidate 2 is.
        let scores = vec![vec![0.5, 0.5, 0.5], vec![0.9, 0.9, 0.1], vec![0.6, 0.6, 0.6]];
        assert_eq!(choose(&scores, &[]), 1);
        assert_eq!(leave_one_out(&scores, &[]), [0.6, 0.6, 0.1]);
        let expected = Expected::of("WT", &leave_one_out(&scores, &[]));
        assert!((expected.lesion_dice - 1.3 / 3.0).abs() < 1e-12);
        assert!((expected.spread - (0.25f64 / 3.0).sqrt()).abs() < 1e-12, "{expected:?}");
        // One case: nothing to leave out.
        assert!(leave_one_out(&[vec![0.5], vec![0.7]], &[]).is_empty());
    }

    #[test]
    fn relative_sizes_remove_what_is_small_for_its_case() {
        let mut labels = vec![0u8; grid().len()];
        tumour(&mut labels, [2, 2, 2]);
        // 1,440 voxels of tumour; components of 100 (6.9%) and 180 (12.5%) voxels.
        paint(&mut labels, [4, 30, 20], [9, 35, 24], 2);
        paint(&mut labels, [28, 4, 4], [34, 10, 9], 2);
        let mut ten = labels.clone();
        apply_operation(grid(), &mut ten, Region::Wt, Operation::RemoveRelative(10));
        assert_eq!(ten[grid().index([4, 30, 20])], 0, "6.9% of the largest goes");
        assert_eq!(ten[grid().index([28, 4, 4])], 2, "12.5% stays");
        let mut fifteen = labels.clone();
        apply_operation(grid(), &mut fifteen, Region::Wt, Operation::RemoveRelative(15));
        assert_eq!(fifteen[grid().index([28, 4, 4])], 0);
        assert_ne!(fifteen[grid().index([5, 5, 5])], 0, "the largest always stays");
    }

    #[test]
    fn the_search_takes_a_relative_size_where_tumours_differ_in_size() {
        let g = grid();
        // A large tumour with a real second focus (180 voxels) and a false positive of 100;
        // a small tumour of 180 voxels with a false positive of 12. No absolute size removes
        // both false positives and keeps both 180-voxel lesions; 10% of the largest does.
        let mut big = vec![0u8; g.len()];
        tumour(&mut big, [2, 2, 2]);
        paint(&mut big, [28, 4, 4], [34, 10, 9], 2);
        let mut big_prediction = big.clone();
        paint(&mut big_prediction, [4, 30, 20], [9, 35, 24], 2);
        let mut small = vec![0u8; g.len()];
        paint(&mut small, [10, 10, 10], [16, 16, 15], 2);
        let mut small_prediction = small.clone();
        paint(&mut small_prediction, [30, 30, 20], [33, 32, 22], 2);
        let cases = vec![
            Case {
                id: "big".into(),
                grid: g,
                spacing: [1.0; 3],
                prediction: big_prediction,
                truth: big,
            },
            Case {
                id: "small".into(),
                grid: g,
                spacing: [1.0; 3],
                prediction: small_prediction,
                truth: small,
            },
        ];
        let (plan, validation) = search(Challenge::Ssa, &cases, 1, 2, &|_| {}, None);
        assert!(matches!(plan.wt, Operation::RemoveRelative(10)), "{plan:?}");
        let wt = |scores: &[BratsScores]| scores.iter().find(|s| s.region == "WT").map(|s| s.lesion_dice);
        assert_eq!(wt(&validation.after), Some(1.0));
        assert_eq!(validation.expected.len(), 3, "{:?}", validation.expected);
        let text = plan.to_toml(Some(&validation));
        assert!(text.contains("operation = \"remove-relative\""), "{text}");
        assert!(text.contains("[validation.expected]"), "{text}");
        assert_eq!(Plan::parse(Path::new("p.toml"), &text).expect("reads back"), plan);
    }

    /// Two synthetic validation cases, each a two-focus tumour (the second focus smaller
    /// but real) plus false-positive blobs planted far from it.
    /// A large tumour (1,440 voxels) and a small one (384), each with a real second focus of
    /// 180 voxels and a false positive of 64: the false positive is 4.4% of the large
    /// tumour's largest component and 17% of the small one's, the focus 12.5% and 47%. No
    /// share of the largest removes both false positives and keeps both foci; 100 voxels does.
    fn sizes_only_an_absolute_threshold_separates(copies: usize) -> Vec<Case> {
        let g = grid();
        let case = |i: usize, large: bool| {
            let mut truth = vec![0u8; g.len()];
            if large {
                tumour(&mut truth, [2, 2, 2]);
            } else {
                paint(&mut truth, [2, 2, 2], [10, 10, 8], 2);
            }
            paint(&mut truth, [28, 4, 4], [34, 10, 9], 2);
            let mut prediction = truth.clone();
            paint(&mut prediction, [4, 30, 20], [8, 34, 24], 2);
            Case {
                id: format!("case-{i}"),
                grid: g,
                spacing: [1.0; 3],
                prediction,
                truth,
            }
        };
        (0..copies)
            .flat_map(|i| [case(2 * i, true), case(2 * i + 1, false)])
            .collect()
    }

    #[test]
    fn absolute_sizes_are_tried_only_when_learned_from_enough_cases() {
        // From 2 cases: no absolute size is tried, and no share of the largest does no harm
        // on half of them and beats nothing, so WT stays as predicted.
        let few = sizes_only_an_absolute_threshold_separates(1);
        assert!(few.len() < MIN_CASES_FOR_ABSOLUTE_SIZES);
        let (plan, _) = search(Challenge::Ssa, &few, 1, 2, &|_| {}, None);
        assert!(!matches!(plan.wt, Operation::RemoveSmall(_)), "{plan:?}");
        // From 10: "under 100 voxels" is tried and taken, and every case comes out right.
        let enough = sizes_only_an_absolute_threshold_separates(MIN_CASES_FOR_ABSOLUTE_SIZES / 2);
        assert_eq!(enough.len(), MIN_CASES_FOR_ABSOLUTE_SIZES);
        let (plan, validation) = search(Challenge::Ssa, &enough, 1, 2, &|_| {}, None);
        assert_eq!(plan.wt, Operation::RemoveSmall(100), "{plan:?}");
        let wt = |scores: &[BratsScores]| scores.iter().find(|s| s.region == "WT").map(|s| s.lesion_dice);
        assert_eq!(wt(&validation.after), Some(1.0));
    }

    fn planted_cases() -> Vec<Case> {
        let g = grid();
        (0..2)
            .map(|i| {
                let mut truth = vec![0u8; g.len()];
                tumour(&mut truth, [2, 2, 2]);
                // The second focus: 6x6x5 = 180 voxels of oedema.
                paint(&mut truth, [28, 4, 4], [34, 10, 9], 2);
                let mut prediction = truth.clone();
                // False positives of 64 and 80 voxels, far from both foci.
                paint(&mut prediction, [4, 30, 20], [8, 34, 24], 2);
                paint(&mut prediction, [30 - i, 28, 20], [34 - i, 32, 25], 3);
                Case {
                    id: format!("case-{i}"),
                    grid: g,
                    spacing: [1.0; 3],
                    prediction,
                    truth,
                }
            })
            .collect()
    }

    #[test]
    fn the_search_removes_planted_blobs_and_keeps_the_second_focus() {
        let cases = planted_cases();
        let (plan, validation) = search(Challenge::Ssa, &cases, 3, 2, &|_| {}, None);
        // Blobs of 64 and 80 voxels (4.4% and 5.6% of the 1,440-voxel tumour) go, the
        // 180-voxel focus (12.5%) stays: of the relative sizes, only 10% does both, and it is
        // preferred to the absolute size that does too (100 voxels). Keeping the largest
        // component would lose the focus.
        assert_eq!(plan.wt, Operation::RemoveRelative(10));
        let wt = |scores: &[BratsScores]| scores.iter().find(|s| s.region == "WT").map(|s| s.lesion_dice);
        assert!(wt(&validation.before) < Some(0.99), "{:?}", validation.before);
        assert_eq!(wt(&validation.after), Some(1.0));
        for case in &cases {
            let mut labels = case.prediction.clone();
            plan.apply(case.grid, &mut labels);
            assert_eq!(labels, case.truth, "{}", case.id);
        }
        // Never worse than nothing, and nothing to gain once the blobs are gone.
        assert_eq!(
            (plan.tc, plan.et, plan.et_to_ncr_below),
            (Operation::None, Operation::None, 0)
        );
    }

    #[test]
    fn a_search_out_of_time_keeps_what_it_chose_and_says_where_it_stopped() {
        let cases = planted_cases();
        // No time at all: nothing is tried, the raw predictions are the result.
        let told = std::sync::Mutex::new(Vec::new());
        let progress = |step: &str| told.lock().expect("lock").push(step.to_string());
        let (plan, validation) = search(Challenge::Ssa, &cases, 3, 2, &progress, Some(Instant::now()));
        assert!(plan.is_none(), "{plan:?}");
        assert_eq!(validation.cut_short_at, Some("WT"));
        assert_eq!(validation.before, validation.after);
        assert!(told.lock().expect("lock").is_empty());
        assert!(plan.to_toml(Some(&validation)).contains("# The search stopped at WT"));
        // Time runs out while TC starts (the progress call waits past the deadline): WT's
        // choice stands, TC keeps the one candidate it tried (none), and the rest is left.
        // (WT's search must end before the deadline: 10 s leaves room on a loaded machine and
        // in an unoptimised build.)
        let deadline = Instant::now() + Duration::from_secs(10);
        let progress = |step: &str| {
            if step == "TC" {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            }
        };
        let (plan, validation) = search(Challenge::Ssa, &cases, 3, 2, &progress, Some(deadline));
        assert_eq!(plan.wt, Operation::RemoveRelative(10));
        assert_eq!((plan.tc, plan.et), (Operation::None, Operation::None));
        assert_eq!(validation.cut_short_at, Some("TC"));
        // With time to spare, the search is the one without a deadline.
        let far = Instant::now() + Duration::from_secs(3600);
        let (with, validation) = search(Challenge::Ssa, &cases, 3, 2, &|_| {}, Some(far));
        assert_eq!(with, search(Challenge::Ssa, &cases, 3, 2, &|_| {}, None).0);
        assert_eq!(validation.cut_short_at, None);
    }

    #[test]
    fn the_search_keeps_a_clean_prediction_as_it_is() {
        let cases: Vec<Case> = planted_cases()
            .into_iter()
            .map(|c| Case {
                prediction: c.truth.clone(),
                ..c
            })
            .collect();
        let (plan, validation) = search(Challenge::Ssa, &cases, 3, 1, &|_| {}, None);
        assert!(plan.is_none(), "{plan:?}");
        assert_eq!(validation.before, validation.after);
    }

    #[test]
    fn cropping_keeps_the_scores() {
        let mut one_corner = planted_cases().remove(0);
        one_corner.truth = vec![0; grid().len()];
        tumour(&mut one_corner.truth, [2, 2, 2]);
        one_corner.prediction = one_corner.truth.clone();
        paint(&mut one_corner.prediction, [4, 4, 4], [6, 7, 13], 1);
        paint(&mut one_corner.prediction, [16, 2, 2], [20, 6, 6], 3);
        for case in planted_cases().into_iter().chain([one_corner.clone()]) {
            let full = case.evaluate(Challenge::Ssa, &Plan::NONE);
            let cropped = case.clone().cropped();
            assert!(cropped.grid.len() <= case.grid.len());
            assert_eq!(cropped.evaluate(Challenge::Ssa, &Plan::NONE), full);
        }
        // Tumour up to x 20, y 14, z 13, and 7 voxels of margin: a smaller box than 40x40x30.
        assert_eq!(one_corner.cropped().grid.shape, [27, 21, 20]);
    }

    #[test]
    fn a_plan_reads_back_as_written() {
        let plan = Plan {
            wt: Operation::RemoveSmall(500),
            tc: Operation::None,
            et: Operation::KeepLargest,
            et_to_ncr_below: 200,
        };
        let text = plan.to_toml(None);
        assert_eq!(Plan::parse(Path::new("p.toml"), &text).expect("reads back"), plan);
        let cases = planted_cases();
        let (_, validation) = search(Challenge::Ssa, &cases, 3, 2, &|_| {}, None);
        let text = plan.to_toml(Some(&validation));
        assert!(text.contains("[validation.after]"), "{text}");
        assert_eq!(Plan::parse(Path::new("p.toml"), &text).expect("reads back"), plan);
    }

    #[test]
    fn a_malformed_plan_names_the_file_line_and_key() {
        let bad = "[wt]\noperation = \"remove-smal\"\n";
        let error = Plan::parse(Path::new("run/postprocess.toml"), bad).expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "run/postprocess.toml:2:13: wt.operation = 'remove-smal' is not one of: none, remove-small, remove-relative, keep-largest"
        );
        let missing = "[tc]\noperation = \"remove-small\"\n";
        let error = Plan::parse(Path::new("p.toml"), missing).expect_err("invalid");
        assert!(error.to_string().contains("needs tc.min_voxels"), "{error}");
        let misplaced = "[wt]\nrelabel_below = 3\n";
        let error = Plan::parse(Path::new("p.toml"), misplaced).expect_err("invalid");
        assert!(
            error.to_string().starts_with("p.toml:2:17: wt.relabel_below"),
            "{error}"
        );
        let fraction = "[wt]\noperation = \"remove-relative\"\nmin_fraction = 1.5\n";
        let error = Plan::parse(Path::new("p.toml"), fraction).expect_err("invalid");
        assert!(
            error.to_string().contains("wt.min_fraction = 1.5 is out of range"),
            "{error}"
        );
        let unknown = "[et]\nsize = 3\n";
        let error = Plan::parse(Path::new("p.toml"), unknown).expect_err("invalid");
        assert!(error.to_string().contains("unknown key 'et.size'"), "{error}");
        let syntax = "[et\n";
        assert!(Plan::parse(Path::new("p.toml"), syntax).is_err());
    }
}
