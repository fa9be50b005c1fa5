//! The BraTS 2024 evaluation: lesion-wise Dice, HD95 and NSD, and the "legacy" whole-region
//! metrics, computed as the official reference code (`metrics_SSA.py` and its siblings for GLI,
//! PED, MEN and MET) computes them, including its quirks, so that numbers compare with the
//! leaderboards. Per region:
//!
//! 1. Lesions: the region's voxels grouped by 26-connected components of the region dilated
//!    with the 18-neighbourhood (`dilation` times). In the prediction, lesions of at most
//!    `pred_min_voxels` voxels are deleted first.
//! 2. Some regions merge lesions that touch the same lesion of a partner region (ET lesions
//!    around one necrotic core become one lesion).
//! 3. Every ground-truth lesion is matched with the predicted lesions that meet its dilation;
//!    Dice, HD95 and NSD are computed between the two. Unmatched predicted lesions are false
//!    positives (Dice 0, HD95 at the penalty); ground-truth lesions of at most `gt_min_volume`
//!    mm^3 are left out. The case score is the sum over lesions over (lesions + false positives).
//!
//! The legacy metrics are computed on the lesion maps after step 2, as the reference does:
//! small predicted lesions no longer count, and its sensitivity and specificity compare
//! lesion numbers (only voxels of lesion 1 count as true positives), as does its HD95 through
//! an 8-bit copy of the lesion map. segtop reproduces those numbers rather than correcting them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::grid::{Bounds, BoxMask, Grid, NEIGHBOURS_18, lesions_by_dilation};
use super::surface::{border_distances, normalised_surface_dice, robust_hausdorff, surfel_distances};

/// The BraTS 2024 challenges whose evaluation parameters segtop knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Challenge {
    /// Sub-Saharan Africa (BraTS-Africa): labels 1 NETC, 2 SNFH, 3 ET.
    Ssa,
    /// Adult glioma: adds 4 resection cavity.
    Gli,
    /// Paediatric tumours: 1 ET, 2 NETC, 3 cystic component, 4 ED.
    Ped,
    /// Meningioma.
    Men,
    /// Brain metastases: adds 4 resection cavity.
    Met,
}

/// How one region is scored.
#[derive(Debug, Clone)]
struct RegionRule {
    name: &'static str,
    labels: &'static [u8],
    /// Dilation steps used to group lesions and to match them.
    dilation: usize,
    /// Predicted lesions of at most this many voxels are deleted before matching.
    pred_min_voxels: Option<usize>,
    /// Ground-truth lesions of at most this volume (mm^3) are not scored.
    gt_min_volume: f64,
    /// Whether predicted voxels are grouped by dilation (otherwise plain components).
    pred_grouped_by_dilation: bool,
    /// Regions whose touching lesions merge this region's lesions, in order.
    merge_with: &'static [&'static str],
}

/// What a missed lesion or false positive costs in HD95.
#[derive(Debug, Clone, Copy)]
enum Penalty {
    Fixed(f64),
    /// The diagonal of the image in voxels (MET).
    Diagonal,
}

struct Rules {
    regions: Vec<RegionRule>,
    scored: &'static [&'static str],
    penalty: Penalty,
    /// MEN computes the legacy metrics on the plain region masks.
    legacy_on_masks: bool,
    labels: &'static [u8],
}

fn rule(name: &'static str, labels: &'static [u8], dilation: usize, min_voxels: usize, min_volume: f64) -> RegionRule {
    RegionRule {
        name,
        labels,
        dilation,
        pred_min_voxels: Some(min_voxels),
        gt_min_volume: min_volume,
        pred_grouped_by_dilation: true,
        merge_with: &[],
    }
}

impl Challenge {
    pub fn name(self) -> &'static str {
        match self {
            Challenge::Ssa => "BraTS-SSA",
            Challenge::Gli => "BraTS-GLI",
            Challenge::Ped => "BraTS-PED",
            Challenge::Men => "BraTS-MEN",
            Challenge::Met => "BraTS-MET",
        }
    }

    /// Label values a segmentation may hold.
    pub fn labels(self) -> &'static [u8] {
        self.rules().labels
    }

    /// The scored regions, in the reference's order.
    pub fn regions(self) -> &'static [&'static str] {
        self.rules().scored
    }

    fn rules(self) -> Rules {
        match self {
            Challenge::Ssa => Rules {
                regions: vec![
                    rule("WT", &[1, 2, 3], 3, 50, 50.0),
                    rule("TC", &[1, 3], 3, 50, 50.0),
                    rule("NETC", &[1], 3, 50, 50.0),
                    RegionRule {
                        merge_with: &["NETC"],
                        ..rule("ET", &[3], 3, 50, 50.0)
                    },
                ],
                scored: &["WT", "TC", "ET"],
                penalty: Penalty::Fixed(374.0),
                legacy_on_masks: false,
                labels: &[0, 1, 2, 3],
            },
            Challenge::Gli => Rules {
                // The reference spells SNFH "SFNH" where it picks dilation 5, so SNFH gets 3.
                regions: vec![
                    rule("WT", &[1, 2, 3], 3, 20, 20.0),
                    rule("TC", &[1, 3], 3, 20, 20.0),
                    RegionRule {
                        merge_with: &["ET", "RC"],
                        ..rule("NETC", &[1], 5, 20, 20.0)
                    },
                    RegionRule {
                        merge_with: &["ET", "RC", "NETC"],
                        ..rule("SNFH", &[2], 3, 20, 20.0)
                    },
                    RegionRule {
                        merge_with: &["NETC", "RC"],
                        ..rule("ET", &[3], 3, 10, 10.0)
                    },
                    RegionRule {
                        merge_with: &["ET", "NETC"],
                        ..rule("RC", &[4], 5, 20, 20.0)
                    },
                ],
                scored: &["WT", "TC", "NETC", "SNFH", "ET", "RC"],
                penalty: Penalty::Fixed(337.0),
                legacy_on_masks: false,
                labels: &[0, 1, 2, 3, 4],
            },
            Challenge::Ped => Rules {
                regions: vec![
                    rule("WT", &[1, 2, 3, 4], 5, 10, 10.0),
                    rule("TC", &[1, 2, 3], 5, 10, 10.0),
                    rule("ET", &[1], 5, 10, 10.0),
                    rule("NETC", &[2], 5, 10, 10.0),
                    rule("CC", &[3], 5, 10, 10.0),
                    rule("ED", &[4], 5, 10, 10.0),
                ],
                scored: &["WT", "TC", "ET", "NETC", "CC", "ED"],
                penalty: Penalty::Fixed(374.0),
                legacy_on_masks: false,
                labels: &[0, 1, 2, 3, 4],
            },
            Challenge::Men => {
                let plain = |name, labels| RegionRule {
                    pred_min_voxels: None,
                    pred_grouped_by_dilation: false,
                    ..rule(name, labels, 1, 0, 50.0)
                };
                Rules {
                    regions: vec![plain("WT", &[1, 2, 3]), plain("TC", &[1, 3]), plain("ET", &[3])],
                    scored: &["WT", "TC", "ET"],
                    penalty: Penalty::Fixed(374.0),
                    legacy_on_masks: true,
                    labels: &[0, 1, 2, 3],
                }
            }
            Challenge::Met => Rules {
                regions: vec![
                    rule("WT", &[1, 2, 3], 1, 2, 2.0),
                    rule("TC", &[1, 3], 1, 2, 2.0),
                    rule("NETC", &[1], 1, 2, 2.0),
                    RegionRule {
                        merge_with: &["NETC"],
                        ..rule("ET", &[3], 1, 2, 2.0)
                    },
                    rule("RC", &[4], 1, 2, 2.0),
                ],
                scored: &["WT", "TC", "ET", "RC"],
                penalty: Penalty::Diagonal,
                legacy_on_masks: false,
                labels: &[0, 1, 2, 3, 4],
            },
        }
    }
}

/// The scores of one region of one case, named as in the reference's results table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionReport {
    pub region: &'static str,
    pub lesion_dice: f64,
    pub lesion_hd95: f64,
    pub lesion_nsd_05: f64,
    pub lesion_nsd_10: f64,
    pub num_tp: usize,
    pub num_fp: usize,
    pub num_fn: usize,
    pub legacy_dice: f64,
    pub legacy_hd95: f64,
    pub legacy_nsd_05: f64,
    pub legacy_nsd_10: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    /// Ground-truth volume in mm^3.
    pub gt_volume: f64,
    /// Predicted volume in mm^3, after small predicted lesions were deleted.
    pub pred_volume: f64,
    pub lesions: Vec<LesionScore>,
}

impl From<&RegionReport> for crate::run::events::BratsScores {
    fn from(r: &RegionReport) -> Self {
        crate::run::events::BratsScores {
            region: r.region.to_string(),
            lesion_dice: r.lesion_dice,
            lesion_hd95: r.lesion_hd95,
            lesion_nsd_10: r.lesion_nsd_10,
            legacy_dice: r.legacy_dice,
            legacy_hd95: r.legacy_hd95,
            num_tp: r.num_tp,
            num_fp: r.num_fp,
            num_fn: r.num_fn,
        }
    }
}

/// One ground-truth lesion and what matched it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionScore {
    /// The lesion's number in the ground truth's lesion map.
    pub lesion: u32,
    pub volume: f64,
    /// Numbers of the predicted lesions that meet its dilation.
    pub matched: Vec<u32>,
    pub dice: f64,
    pub hd95: f64,
    pub nsd_05: f64,
    pub nsd_10: f64,
    /// Whether it is scored (larger than the challenge's threshold).
    pub counted: bool,
}

/// A labelled lesion: its number in the lesion map and its voxels (ascending indices).
#[derive(Debug, Clone, PartialEq)]
struct Lesion {
    id: u32,
    voxels: Vec<usize>,
}

/// Evaluates one case. `prediction` and `truth` are label maps on `grid` (x fastest) with
/// voxel `spacing` in mm; labels outside the challenge's set are ignored, as the reference
/// ignores them.
pub fn evaluate(
    challenge: Challenge,
    grid: Grid,
    spacing: [f64; 3],
    prediction: &[u8],
    truth: &[u8],
) -> Vec<RegionReport> {
    evaluate_some(challenge, grid, spacing, prediction, truth, None, Detail::Full)
}

/// How much of a case's scoring [`evaluate_some`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every metric.
    Full,
    /// The Dice scores (lesion-wise and legacy), lesion counts, volumes, sensitivity and
    /// specificity, without the surface distances (HD95 and NSD are NaN): the distances cost
    /// most of an evaluation, and choosing by Dice needs none.
    Dice,
}

/// [`evaluate`] for the scored regions named in `only` (all when `None`), in the
/// challenge's order, at `detail`. A region's scores are the same as in the full
/// evaluation: the regions its lesions merge with are labelled too.
pub fn evaluate_some(
    challenge: Challenge,
    grid: Grid,
    spacing: [f64; 3],
    prediction: &[u8],
    truth: &[u8],
    only: Option<&[&str]>,
    detail: Detail,
) -> Vec<RegionReport> {
    let rules = challenge.rules();
    let wanted = |name: &str| only.is_none_or(|names| names.contains(&name));
    let needed = |name: &str| {
        wanted(name)
            || rules
                .regions
                .iter()
                .any(|r| wanted(r.name) && r.merge_with.contains(&name))
    };
    let distances = detail == Detail::Full;
    let penalty = match rules.penalty {
        Penalty::Fixed(p) => p,
        Penalty::Diagonal => grid.shape.iter().map(|&n| (n * n) as f64).sum::<f64>().sqrt(),
    };
    let masks = |labels: &[u8]| -> [Vec<usize>; 2] {
        [prediction, truth].map(|map| {
            map.iter()
                .enumerate()
                .filter(|(_, l)| labels.contains(l))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        })
    };
    // Each region's voxels and lesion maps before merging (the reference's `_cc` files).
    let mut raw: HashMap<&str, RegionLesions> = HashMap::new();
    for region in rules.regions.iter().filter(|r| needed(r.name)) {
        let [pred_voxels, gt_voxels] = masks(region.labels);
        let pred_dilation = if region.pred_grouped_by_dilation {
            region.dilation
        } else {
            0
        };
        let mut pred = numbered(lesions_by_dilation(grid, &pred_voxels, pred_dilation));
        if let Some(min) = region.pred_min_voxels {
            pred.retain(|l| l.voxels.len() > min);
        }
        let gt = numbered(lesions_by_dilation(grid, &gt_voxels, region.dilation));
        raw.insert(
            region.name,
            RegionLesions {
                voxels: [pred_voxels, gt_voxels],
                lesions: [pred, gt],
            },
        );
    }
    let mut reports = Vec::new();
    for name in rules.scored.iter().filter(|name| wanted(name)) {
        let (Some(region), Some(own)) = (rules.regions.iter().find(|r| r.name == *name), raw.get(name)) else {
            continue;
        };
        let [pred, gt] = [0, 1].map(|side| {
            let partners: Vec<&[Lesion]> = region
                .merge_with
                .iter()
                .filter_map(|p| raw.get(p))
                .map(|r| r.lesions[side].as_slice())
                .collect();
            if partners.is_empty() {
                own.lesions[side].clone()
            } else {
                merge_touching(grid, own.lesions[side].clone(), &partners)
            }
        });
        let pred_numbers = numbers_by_voxel(&pred);
        let mut report = if rules.legacy_on_masks {
            let [p, t] = own.voxels.clone().map(|voxels| vec![Lesion { id: 1, voxels }]);
            legacy(
                grid,
                spacing,
                region.name,
                &p,
                &numbers_by_voxel(&p),
                &t,
                penalty,
                distances,
            )
        } else {
            legacy(
                grid,
                spacing,
                region.name,
                &pred,
                &pred_numbers,
                &gt,
                penalty,
                distances,
            )
        };
        let lesions = Lesions {
            pred: &pred,
            label_of: &pred_numbers,
            gt: &gt,
        };
        lesion_wise(grid, spacing, region, lesions, penalty, distances, &mut report);
        reports.push(report);
    }
    reports
}

/// A region's voxels and its lesions, in the prediction and in the ground truth.
struct RegionLesions {
    voxels: [Vec<usize>; 2],
    lesions: [Vec<Lesion>; 2],
}

/// The lesion number of every voxel that belongs to a lesion.
fn numbers_by_voxel(lesions: &[Lesion]) -> HashMap<usize, u32> {
    lesions
        .iter()
        .flat_map(|l| l.voxels.iter().map(move |&v| (v, l.id)))
        .collect()
}

fn numbered(groups: Vec<Vec<usize>>) -> Vec<Lesion> {
    groups
        .into_iter()
        .enumerate()
        .map(|(i, voxels)| Lesion {
            id: i as u32 + 1,
            voxels,
        })
        .collect()
}

/// Merges the lesions that touch a partner's lesions, step by step as the reference does:
/// at each step, when more than one (lesion, partner lesion) pair touches, every touching
/// lesion takes a new number shared by all lesions whose first touching partner (in sorted
/// pair order) is the same; then the lesions are renumbered 1, 2, ... in order of number.
fn merge_touching(grid: Grid, mut lesions: Vec<Lesion>, partners: &[&[Lesion]]) -> Vec<Lesion> {
    for partner in partners {
        let pairs = touching(grid, &lesions, partner);
        if pairs.len() > 1 {
            lesions = relabel(lesions, &pairs);
        }
    }
    lesions.sort_by_key(|l| l.id);
    for (i, lesion) in lesions.iter_mut().enumerate() {
        lesion.id = i as u32 + 1;
    }
    lesions
}

/// The (lesion, partner lesion) pairs that are 18-neighbours somewhere.
fn touching(grid: Grid, lesions: &[Lesion], partner: &[Lesion]) -> BTreeSet<(u32, u32)> {
    let owner = numbers_by_voxel(partner);
    let mut pairs = BTreeSet::new();
    if owner.is_empty() {
        return pairs;
    }
    for lesion in lesions {
        for &v in &lesion.voxels {
            let [x, y, z] = grid.coords(v);
            for (dx, dy, dz) in NEIGHBOURS_18 {
                let n = [x as isize + dx, y as isize + dy, z as isize + dz];
                if (0..3).any(|a| n[a] < 0 || n[a] as usize >= grid.shape[a]) {
                    continue;
                }
                if let Some(&p) = owner.get(&grid.index(n.map(|c| c as usize))) {
                    pairs.insert((lesion.id, p));
                }
            }
        }
    }
    pairs
}

fn relabel(lesions: Vec<Lesion>, pairs: &BTreeSet<(u32, u32)>) -> Vec<Lesion> {
    let mut next = lesions.iter().map(|l| l.id).max().unwrap_or(0) + 1;
    let mut partner_label: HashMap<u32, u32> = HashMap::new();
    let mut new_label: HashMap<u32, u32> = HashMap::new();
    for &(lesion, partner) in pairs {
        let label = *partner_label.entry(partner).or_insert_with(|| {
            next += 1;
            next - 1
        });
        new_label.entry(lesion).or_insert(label);
    }
    let mut merged: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for lesion in lesions {
        let id = new_label.get(&lesion.id).copied().unwrap_or(lesion.id);
        merged.entry(id).or_default().extend(lesion.voxels);
    }
    merged
        .into_iter()
        .map(|(id, mut voxels)| {
            voxels.sort_unstable();
            Lesion { id, voxels }
        })
        .collect()
}

fn voxel_volume(spacing: [f64; 3]) -> impl Fn(usize) -> f64 {
    move |count| count as f64 * spacing[0] * spacing[1] * spacing[2]
}

fn dice(both: usize, a: usize, b: usize) -> f64 {
    2.0 * both as f64 / (a + b) as f64
}

/// The whole-region ("legacy") metrics on two lesion maps; without `distances`, HD95 and NSD
/// are NaN.
#[allow(clippy::too_many_arguments)]
fn legacy(
    grid: Grid,
    spacing: [f64; 3],
    region: &'static str,
    pred: &[Lesion],
    label_of: &HashMap<usize, u32>,
    gt: &[Lesion],
    penalty: f64,
    distances: bool,
) -> RegionReport {
    let (n_pred, n_gt) = (label_of.len(), gt.iter().map(|l| l.voxels.len()).sum::<usize>());
    let mut both = 0;
    let mut both_one = 0;
    for lesion in gt {
        for v in &lesion.voxels {
            if let Some(&p) = label_of.get(v) {
                both += 1;
                both_one += usize::from(p == 1 && lesion.id == 1);
            }
        }
    }
    let (dice_score, nsd_05, nsd_10, hd95) = match (n_pred, n_gt) {
        (0, 0) => (1.0, 1.0, 1.0, 0.0),
        _ if !distances => (dice(both, n_pred, n_gt), f64::NAN, f64::NAN, f64::NAN),
        _ => {
            let (pred_all, gt_all) = (all_voxels(pred), all_voxels(gt));
            let (nsd_05, nsd_10) = if n_pred == 0 || n_gt == 0 {
                (0.0, 0.0)
            } else {
                let (a, b) = border_distances(grid, spacing, &pred_all, &gt_all);
                (
                    normalised_surface_dice(&a, &b, 0.5),
                    normalised_surface_dice(&a, &b, 1.0),
                )
            };
            let bytes = |lesions: &[Lesion]| -> Vec<(usize, u8)> {
                lesions
                    .iter()
                    .flat_map(|l| l.voxels.iter().map(move |&v| (v, l.id as u8)))
                    .collect()
            };
            let hd = robust_hausdorff(&surfel_distances(grid, spacing, &bytes(gt), &bytes(pred)), 95.0);
            (
                dice(both, n_pred, n_gt),
                nsd_05,
                nsd_10,
                if hd.is_finite() { hd } else { penalty },
            )
        }
    };
    // The reference's sensitivity and specificity sum lesion numbers and count only voxels
    // where both maps say lesion 1 as true positives.
    let label_sum = |lesions: &[Lesion]| lesions.iter().map(|l| l.id as f64 * l.voxels.len() as f64).sum::<f64>();
    let (pred_sum, gt_sum) = (label_sum(pred), label_sum(gt));
    let ones = |lesions: &[Lesion]| {
        lesions
            .iter()
            .filter(|l| l.id == 1)
            .map(|l| l.voxels.len())
            .sum::<usize>()
    };
    let tp = both_one as f64;
    let (fp, fn_) = (pred_sum - tp, gt_sum - tp);
    let tn = (grid.len() - (ones(pred) + ones(gt) - both_one)) as f64;
    let mut sensitivity = tp / (tp + fn_ + f64::MIN_POSITIVE);
    let specificity = tn / (tn + fp + f64::MIN_POSITIVE);
    if pred_sum == 0.0 && gt_sum == 0.0 {
        sensitivity = 1.0;
    }
    let volume = voxel_volume(spacing);
    RegionReport {
        region,
        lesion_dice: 1.0,
        lesion_hd95: 0.0,
        lesion_nsd_05: 1.0,
        lesion_nsd_10: 1.0,
        num_tp: 0,
        num_fp: 0,
        num_fn: 0,
        legacy_dice: dice_score,
        legacy_hd95: hd95,
        legacy_nsd_05: nsd_05,
        legacy_nsd_10: nsd_10,
        sensitivity,
        specificity,
        gt_volume: volume(n_gt),
        pred_volume: volume(n_pred),
        lesions: Vec::new(),
    }
}

fn all_voxels(lesions: &[Lesion]) -> Vec<usize> {
    let mut all: Vec<usize> = lesions.iter().flat_map(|l| l.voxels.iter().copied()).collect();
    all.sort_unstable();
    all
}

/// A region's lesions after merging: predicted, the predicted number of each voxel, true.
struct Lesions<'a> {
    pred: &'a [Lesion],
    label_of: &'a HashMap<usize, u32>,
    gt: &'a [Lesion],
}

/// Matches ground-truth lesions with predicted ones and fills in the lesion-wise scores;
/// without `distances`, HD95 and NSD are NaN.
fn lesion_wise(
    grid: Grid,
    spacing: [f64; 3],
    region: &RegionRule,
    Lesions { pred, label_of, gt }: Lesions<'_>,
    penalty: f64,
    distances: bool,
    report: &mut RegionReport,
) {
    let by_id: HashMap<u32, &Lesion> = pred.iter().map(|l| (l.id, l)).collect();
    let volume = voxel_volume(spacing);
    let mut matched_any: BTreeSet<u32> = BTreeSet::new();
    for lesion in gt {
        let bounds = Bounds::of(grid, &lesion.voxels).grow(region.dilation, grid);
        let mut reach = BoxMask::from_voxels(grid, bounds, &lesion.voxels);
        reach.dilate18(region.dilation);
        let matched: BTreeSet<u32> = reach
            .voxels(grid)
            .iter()
            .filter_map(|v| label_of.get(v).copied())
            .collect();
        matched_any.extend(&matched);
        let mut matched_voxels: Vec<usize> = matched
            .iter()
            .filter_map(|id| by_id.get(id))
            .flat_map(|l| l.voxels.iter().copied())
            .collect();
        matched_voxels.sort_unstable();
        let overlap = lesion
            .voxels
            .iter()
            .filter(|v| label_of.get(v).is_some_and(|id| matched.contains(id)))
            .count();
        let dice_score = dice(overlap, matched_voxels.len(), lesion.voxels.len());
        let (hd95, nsd_05, nsd_10) = if matched_voxels.is_empty() {
            (penalty, 0.0, 0.0)
        } else if !distances {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            let ones = |voxels: &[usize]| voxels.iter().map(|&v| (v, 1u8)).collect::<Vec<_>>();
            let hd = robust_hausdorff(
                &surfel_distances(grid, spacing, &ones(&lesion.voxels), &ones(&matched_voxels)),
                95.0,
            );
            let (a, b) = border_distances(grid, spacing, &matched_voxels, &lesion.voxels);
            (
                if hd.is_finite() { hd } else { penalty },
                normalised_surface_dice(&a, &b, 0.5),
                normalised_surface_dice(&a, &b, 1.0),
            )
        };
        let lesion_volume = volume(lesion.voxels.len());
        report.lesions.push(LesionScore {
            lesion: lesion.id,
            volume: lesion_volume,
            matched: matched.into_iter().collect(),
            dice: dice_score,
            hd95,
            nsd_05,
            nsd_10,
            counted: lesion_volume > region.gt_min_volume,
        });
    }
    let false_positives = pred.iter().filter(|l| !matched_any.contains(&l.id)).count();
    let counted: Vec<&LesionScore> = report.lesions.iter().filter(|l| l.counted).collect();
    let denominator = (counted.len() + false_positives) as f64;
    let mean_with = |score: fn(&LesionScore) -> f64, fp_value: f64, empty: f64| {
        if denominator == 0.0 {
            empty
        } else {
            (counted.iter().map(|l| score(l)).sum::<f64>() + false_positives as f64 * fp_value) / denominator
        }
    };
    report.lesion_dice = mean_with(|l| l.dice, 0.0, 1.0);
    report.lesion_hd95 = mean_with(|l| l.hd95, penalty, 0.0);
    report.lesion_nsd_05 = mean_with(|l| l.nsd_05, 0.0, 1.0);
    report.lesion_nsd_10 = mean_with(|l| l.nsd_10, 0.0, 1.0);
    report.num_tp = counted.iter().filter(|l| !l.matched.is_empty()).count();
    report.num_fn = counted.len() - report.num_tp;
    report.num_fp = false_positives;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 3] = [40, 40, 30];

    fn grid() -> Grid {
        Grid::new(SHAPE)
    }

    /// Voxels of the box at `origin` with `size` voxels per axis.
    fn block(origin: [usize; 3], size: [usize; 3]) -> Vec<usize> {
        let mut out = Vec::new();
        for z in origin[2]..origin[2] + size[2] {
            for y in origin[1]..origin[1] + size[1] {
                for x in origin[0]..origin[0] + size[0] {
                    out.push(grid().index([x, y, z]));
                }
            }
        }
        out
    }

    fn map(parts: &[(&[usize], u8)]) -> Vec<u8> {
        let mut labels = vec![0; grid().len()];
        for (voxels, label) in parts {
            for &v in *voxels {
                labels[v] = *label;
            }
        }
        labels
    }

    fn wt(prediction: &[u8], truth: &[u8], spacing: [f64; 3]) -> RegionReport {
        let reports = evaluate(Challenge::Ssa, grid(), spacing, prediction, truth);
        assert_eq!(reports.iter().map(|r| r.region).collect::<Vec<_>>(), ["WT", "TC", "ET"]);
        reports.into_iter().next().expect("three regions")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// A prediction and a truth with every label of every challenge, lesions that merge,
    /// touch, miss and are made up.
    fn busy_case() -> (Vec<u8>, Vec<u8>) {
        let truth = map(&[
            (&block([4, 4, 4], [10, 10, 8]), 2),
            (&block([6, 6, 6], [6, 6, 4]), 1),
            (&block([7, 7, 7], [3, 3, 2]), 3),
            (&block([25, 25, 15], [6, 6, 6]), 3),
            (&block([26, 10, 5], [5, 5, 5]), 4),
            (&block([34, 30, 2], [4, 4, 4]), 1),
            // Two ET lesions on one necrotic slab: one lesion where ET merges with NETC.
            (&block([5, 20, 22], [20, 4, 4]), 1),
            (&block([5, 24, 22], [4, 4, 4]), 3),
            (&block([21, 24, 22], [4, 4, 4]), 3),
        ]);
        let prediction = map(&[
            (&block([5, 4, 4], [9, 10, 8]), 2),
            (&block([6, 7, 6], [6, 5, 4]), 3),
            (&block([8, 8, 8], [2, 2, 2]), 1),
            (&block([25, 26, 15], [5, 6, 6]), 3),
            (&block([33, 33, 25], [3, 3, 3]), 2),
            (&block([26, 10, 5], [4, 5, 5]), 4),
            (&block([2, 30, 2], [4, 4, 4]), 1),
            (&block([5, 20, 22], [20, 4, 4]), 1),
            (&block([5, 24, 22], [4, 4, 4]), 3),
            (&block([21, 24, 22], [4, 4, 4]), 3),
        ]);
        (prediction, truth)
    }

    #[test]
    fn one_region_at_dice_detail_scores_as_the_full_evaluation_does() {
        let (prediction, truth) = busy_case();
        for challenge in [
            Challenge::Ssa,
            Challenge::Gli,
            Challenge::Ped,
            Challenge::Men,
            Challenge::Met,
        ] {
            let spacing = [1.0, 1.2, 0.9];
            let full = evaluate(challenge, grid(), spacing, &prediction, &truth);
            assert_eq!(full.len(), challenge.regions().len());
            for report in &full {
                let some = evaluate_some(
                    challenge,
                    grid(),
                    spacing,
                    &prediction,
                    &truth,
                    Some(&[report.region]),
                    Detail::Dice,
                );
                let [one] = &some[..] else {
                    panic!("{} {}: {some:?}", challenge.name(), report.region)
                };
                let dice = |r: &RegionReport| {
                    (
                        r.region,
                        r.lesion_dice,
                        r.legacy_dice,
                        (r.num_tp, r.num_fp, r.num_fn),
                        r.gt_volume,
                        r.pred_volume,
                        r.lesions
                            .iter()
                            .map(|l| (l.dice, l.matched.clone()))
                            .collect::<Vec<_>>(),
                    )
                };
                assert_eq!(dice(one), dice(report), "{}", challenge.name());
                assert!(one.lesion_hd95.is_nan() || one.lesion_hd95 == report.lesion_hd95);
            }
        }
        // The busy case exercises what it should: a merge, a miss and a false positive.
        let ssa = evaluate(Challenge::Ssa, grid(), [1.0; 3], &prediction, &truth);
        assert!(
            ssa.iter().any(|r| r.num_fp > 0) && ssa.iter().any(|r| r.num_fn > 0),
            "{ssa:?}"
        );
    }

    #[test]
    fn identical_masks_score_perfectly() {
        let truth = map(&[(&block([5, 5, 5], [6, 6, 6]), 2), (&block([6, 6, 6], [4, 4, 4]), 3)]);
        for r in evaluate(Challenge::Ssa, grid(), [1.0; 3], &truth, &truth) {
            assert_eq!(
                (r.lesion_dice, r.lesion_hd95, r.legacy_dice, r.legacy_hd95),
                (1.0, 0.0, 1.0, 0.0),
                "{r:?}"
            );
            // The reference adds 1e-8 to the NSD's denominator: 2 / (2 + 1e-8).
            assert!(
                close(r.lesion_nsd_10, 2.0 / (2.0 + 1e-8)) && close(r.legacy_nsd_05, 2.0 / (2.0 + 1e-8)),
                "{r:?}"
            );
        }
        let r = wt(&truth, &truth, [1.0; 3]);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (1, 0, 0));
        assert_eq!(r.gt_volume, 216.0);
    }

    #[test]
    fn disjoint_masks_are_a_miss_and_a_false_positive() {
        let truth = map(&[(&block([2, 2, 2], [4, 4, 4]), 2)]);
        let prediction = map(&[(&block([30, 30, 20], [4, 4, 4]), 2)]);
        let r = wt(&prediction, &truth, [1.0; 3]);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (0, 1, 1));
        assert_eq!(r.lesion_dice, 0.0);
        assert_eq!(r.lesion_hd95, 374.0);
        assert_eq!(r.legacy_dice, 0.0);
        // Whole-region HD95 is a real distance here, both masks being non-empty.
        assert!(r.legacy_hd95 > 30.0 && r.legacy_hd95 < 374.0, "{}", r.legacy_hd95);
    }

    #[test]
    fn a_missed_lesion_halves_the_lesion_wise_score() {
        let (a, b) = (block([2, 2, 2], [4, 4, 4]), block([30, 30, 20], [4, 4, 4]));
        let truth = map(&[(&a, 2), (&b, 2)]);
        let r = wt(&map(&[(&a, 2)]), &truth, [1.0; 3]);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (1, 0, 1));
        assert!(close(r.lesion_dice, 0.5));
        assert!(close(r.lesion_hd95, 187.0));
        assert!(close(r.legacy_dice, 2.0 * 64.0 / 192.0));
    }

    #[test]
    fn a_false_positive_lesion_counts_against_the_score() {
        let (a, b) = (block([2, 2, 2], [4, 4, 4]), block([30, 30, 20], [4, 4, 4]));
        let r = wt(&map(&[(&a, 2), (&b, 2)]), &map(&[(&a, 2)]), [1.0; 3]);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (1, 1, 0));
        assert!(close(r.lesion_dice, 0.5));
        assert!(close(r.lesion_hd95, 187.0));
    }

    #[test]
    fn ground_truth_lesions_of_50_voxels_are_left_out_and_51_counted() {
        let fifty = block([2, 2, 2], [5, 5, 2]);
        let mut fifty_one = block([30, 30, 20], [5, 5, 2]);
        fifty_one.push(grid().index([30, 30, 22]));
        let truth = map(&[(&fifty, 2), (&fifty_one, 2)]);
        // Nothing predicted: only the 51-voxel lesion counts as missed.
        let r = wt(&vec![0; grid().len()], &truth, [1.0; 3]);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (0, 0, 1));
        assert_eq!(r.lesion_dice, 0.0);
        // Only the 50-voxel lesion missed: a perfect score.
        let r = wt(&map(&[(&fifty_one, 2)]), &truth, [1.0; 3]);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (1, 0, 0));
        assert_eq!(r.lesion_dice, 1.0);
        assert_eq!(r.lesions.iter().filter(|l| l.counted).count(), 1);
    }

    #[test]
    fn predicted_lesions_of_50_voxels_are_deleted_before_matching() {
        let truth = map(&[(&block([2, 2, 2], [4, 4, 4]), 2)]);
        let fifty = block([30, 30, 20], [5, 5, 2]);
        let mut fifty_one = fifty.clone();
        fifty_one.push(grid().index([30, 30, 22]));
        let small = wt(
            &map(&[(&block([2, 2, 2], [4, 4, 4]), 2), (&fifty, 2)]),
            &truth,
            [1.0; 3],
        );
        assert_eq!((small.num_fp, small.lesion_dice, small.legacy_dice), (0, 1.0, 1.0));
        let large = wt(
            &map(&[(&block([2, 2, 2], [4, 4, 4]), 2), (&fifty_one, 2)]),
            &truth,
            [1.0; 3],
        );
        assert_eq!(large.num_fp, 1);
        assert!(close(large.lesion_dice, 0.5));
    }

    #[test]
    fn lesions_within_the_dilation_merge_into_one() {
        // Two 4x4x4 blocks 4 voxels apart: the dilation by 3 joins them.
        let (a, b) = (block([5, 5, 5], [4, 4, 4]), block([13, 5, 5], [4, 4, 4]));
        let truth = map(&[(&a, 2), (&b, 2)]);
        let r = wt(&map(&[(&a, 2)]), &truth, [1.0; 3]);
        assert_eq!(r.lesions.len(), 1);
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (1, 0, 0));
        assert!(close(r.lesion_dice, 2.0 * 64.0 / (64.0 + 128.0)));
        // Ten voxels apart they stay two lesions, one of them missed.
        let c = block([19, 5, 5], [4, 4, 4]);
        let r = wt(&map(&[(&a, 2)]), &map(&[(&a, 2), (&c, 2)]), [1.0; 3]);
        assert_eq!((r.lesions.len(), r.num_fn), (2, 1));
    }

    #[test]
    fn empty_ground_truth_scores_one_when_nothing_is_predicted_and_zero_otherwise() {
        let empty = vec![0; grid().len()];
        let r = wt(&empty, &empty, [1.0; 3]);
        assert_eq!(
            (r.lesion_dice, r.lesion_hd95, r.legacy_dice, r.legacy_hd95),
            (1.0, 0.0, 1.0, 0.0)
        );
        assert_eq!((r.sensitivity, r.lesion_nsd_05, r.legacy_nsd_10), (1.0, 1.0, 1.0));
        let r = wt(&map(&[(&block([2, 2, 2], [4, 4, 4]), 2)]), &empty, [1.0; 3]);
        assert_eq!(
            (r.lesion_dice, r.lesion_hd95, r.legacy_dice, r.legacy_hd95),
            (0.0, 374.0, 0.0, 374.0)
        );
        assert_eq!((r.num_tp, r.num_fp, r.num_fn), (0, 1, 0));
    }

    #[test]
    fn anisotropic_spacing_sets_volumes_and_distances_in_mm() {
        // 30 voxels of 1 x 1 x 2 mm are 60 mm^3: above the 50 mm^3 threshold.
        let small = block([2, 2, 2], [5, 3, 2]);
        let truth = map(&[(&small, 2)]);
        let r = wt(&vec![0; grid().len()], &truth, [1.0, 1.0, 2.0]);
        assert_eq!(r.gt_volume, 60.0);
        assert_eq!(r.num_fn, 1);
        let r = wt(&vec![0; grid().len()], &truth, [1.0; 3]);
        assert_eq!(r.num_fn, 0, "30 mm^3 is under the threshold");
        // A 6x6x6 block shifted by one slice along z: HD95 is one slice thickness.
        let a = block([10, 10, 10], [6, 6, 6]);
        let b = block([10, 10, 11], [6, 6, 6]);
        let r = wt(&map(&[(&b, 2)]), &map(&[(&a, 2)]), [1.0, 1.0, 2.5]);
        assert!(close(r.lesion_hd95, 2.5), "{}", r.lesion_hd95);
        assert!(close(r.legacy_hd95, 2.5), "{}", r.legacy_hd95);
    }

    #[test]
    fn enhancing_lesions_around_one_necrotic_core_become_one_lesion() {
        // Two ET blocks far enough apart to be two lesions, each touching a different end of one
        // NETC slab... merged into a single ET lesion as the reference does.
        let netc = block([5, 5, 5], [20, 4, 4]);
        let (e1, e2) = (block([5, 9, 5], [4, 4, 4]), block([21, 9, 5], [4, 4, 4]));
        let truth = map(&[(&netc, 1), (&e1, 3), (&e2, 3)]);
        let reports = evaluate(Challenge::Ssa, grid(), [1.0; 3], &truth, &truth);
        let et = reports.iter().find(|r| r.region == "ET").expect("ET is scored");
        assert_eq!(et.lesions.len(), 1);
        // Without the core they are two lesions.
        let apart = map(&[(&e1, 3), (&e2, 3)]);
        let reports = evaluate(Challenge::Ssa, grid(), [1.0; 3], &apart, &apart);
        assert_eq!(
            reports.iter().find(|r| r.region == "ET").map(|r| r.lesions.len()),
            Some(2)
        );
    }
}
