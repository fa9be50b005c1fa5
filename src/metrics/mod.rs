//! Segmentation scores on BraTS label maps (0 background, 1 NCR, 2 ED, 3 ET) by the regions
//! the challenge evaluates: whole tumour (1, 2, 3), tumour core (1, 3), enhancing tumour (3).

use crate::run::events::RegionScores;

pub mod brats;
mod edt;
pub mod grid;
pub mod surface;

use grid::Grid;

/// The HD95 that a missed region or a region predicted where there is none scores (the BraTS
/// reference's penalty).
pub const HD95_PENALTY: f64 = 374.0;

/// Whether a label belongs to a region.
pub type InRegion = fn(u8) -> bool;

/// The evaluated regions, in the order ET, TC, WT.
pub const REGIONS: [(&str, InRegion); 3] = [
    ("ET", |l| l == 3),
    ("TC", |l| l == 1 || l == 3),
    ("WT", |l| (1..=3).contains(&l)),
];

/// Whole-image Dice of each region; a region empty in both is a perfect 1 (as BraTS scores it).
pub fn region_dice(prediction: &[u8], truth: &[u8]) -> RegionScores {
    let mut counts = [[0u64; 3]; 3]; // per region: |P and T|, |P|, |T|
    for (&p, &t) in prediction.iter().zip(truth) {
        for (r, (_, inside)) in REGIONS.iter().enumerate() {
            let (ip, it) = (inside(p), inside(t));
            counts[r][0] += u64::from(ip && it);
            counts[r][1] += u64::from(ip);
            counts[r][2] += u64::from(it);
        }
    }
    let dice = |[both, p, t]: [u64; 3]| {
        if p + t == 0 {
            1.0
        } else {
            2.0 * both as f64 / (p + t) as f64
        }
    };
    RegionScores {
        et: dice(counts[0]),
        tc: dice(counts[1]),
        wt: dice(counts[2]),
    }
}

/// HD95 in mm of each region on the plain region masks (no lesion grouping), the way the
/// `surface_distance` package computes it: 0 when both are empty, [`HD95_PENALTY`] when one is.
pub fn region_hd95(shape: [usize; 3], spacing: [f64; 3], prediction: &[u8], truth: &[u8]) -> RegionScores {
    let grid = Grid::new(shape);
    let hd95 = |inside: InRegion| {
        let voxels = |map: &[u8]| -> Vec<(usize, u8)> {
            map.iter()
                .enumerate()
                .filter(|(_, l)| inside(**l))
                .map(|(i, _)| (i, 1))
                .collect()
        };
        let (p, t) = (voxels(prediction), voxels(truth));
        if p.is_empty() && t.is_empty() {
            return 0.0;
        }
        let hd = surface::robust_hausdorff(&surface::surfel_distances(grid, spacing, &t, &p), 95.0);
        if hd.is_finite() { hd } else { HD95_PENALTY }
    };
    RegionScores {
        et: hd95(REGIONS[0].1),
        tc: hd95(REGIONS[1].1),
        wt: hd95(REGIONS[2].1),
    }
}

/// The seed tutorial's "Dice": the mean over the 4 classes, background included, of each
/// class's Dice. Not a BraTS metric.
pub fn seed_dice(prediction: &[u8], truth: &[u8]) -> f64 {
    let mut counts = [[0u64; 3]; 4];
    for (&p, &t) in prediction.iter().zip(truth) {
        for (class, count) in counts.iter_mut().enumerate() {
            let (ip, it) = (usize::from(p) == class, usize::from(t) == class);
            count[0] += u64::from(ip && it);
            count[1] += u64::from(ip);
            count[2] += u64::from(it);
        }
    }
    let dice = |[both, p, t]: [u64; 3]| {
        if p + t == 0 {
            1.0
        } else {
            2.0 * both as f64 / (p + t) as f64
        }
    };
    counts.iter().map(|c| dice(*c)).sum::<f64>() / 4.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_nest_as_brats_defines_them() {
        let truth = [0, 1, 2, 3, 3, 0];
        let prediction = [0, 1, 2, 2, 3, 0];
        let d = region_dice(&prediction, &truth);
        // ET: truth {3, 4}, prediction {4}: 2 * 1 / 3.
        assert!((d.et - 2.0 / 3.0).abs() < 1e-12);
        // TC: truth {1, 3, 4}, prediction {1, 4}: 2 * 2 / 5.
        assert!((d.tc - 0.8).abs() < 1e-12);
        assert_eq!(d.wt, 1.0);
    }

    #[test]
    fn empty_regions_score_one_when_both_are_empty_and_zero_otherwise() {
        assert_eq!(region_dice(&[0, 0], &[0, 0]).et, 1.0);
        assert_eq!(region_dice(&[3, 0], &[0, 0]).et, 0.0);
    }

    #[test]
    fn seed_dice_counts_background() {
        assert_eq!(seed_dice(&[0, 1, 2, 3], &[0, 1, 2, 3]), 1.0);
        // All background predicted: background Dice 2/3, the other classes 0.
        let d = seed_dice(&[0, 0, 0], &[0, 0, 1]);
        assert!((d - (0.8 + 0.0 + 1.0 + 1.0) / 4.0).abs() < 1e-12);
    }
}
