//! Preprocessing a loaded case into network input: intensity normalisation per modality,
//! then cropping (or padding) to the configured box.
//!
//! Normalisation runs on the whole volume, before the crop, as the seed tutorial does (its
//! slice-wise MinMaxScaler sees whole 240x240 slices).

use crate::experiment::{Crop, DataConfig, Normalization};

use super::case::Case;

/// A preprocessed case: channels in the configured order, cropped, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub id: String,
    /// Shape after cropping.
    pub shape: [usize; 3],
    /// One volume per modality, x fastest.
    pub channels: Vec<Vec<f32>>,
    pub labels: Option<Vec<u8>>,
    /// Where the crop starts in the original volume (negative when padded).
    pub origin: [i64; 3],
    pub original_shape: [usize; 3],
    pub spacing: [f64; 3],
    pub affine: [[f64; 4]; 3],
}

impl Prepared {
    /// Fraction of voxels labelled tumour (any label above 0); 0 without labels.
    pub fn tumour_fraction(&self) -> f64 {
        match &self.labels {
            Some(labels) if !labels.is_empty() => {
                labels.iter().filter(|&&l| l > 0).count() as f64 / labels.len() as f64
            }
            _ => 0.0,
        }
    }
}

/// Normalises and crops `case` as `config` says. The normalisation is fitted on the whole
/// volume and applied to the cropped part only; channels run in parallel.
pub fn prepare(case: &Case, config: &DataConfig) -> Prepared {
    let shape = case.shape();
    let (origin, size) = crop_box(case, config.crop);
    let channels = std::thread::scope(|scope| {
        let workers: Vec<_> = case
            .images
            .iter()
            .map(|image| {
                scope.spawn(move || {
                    let fitted = Fitted::fit(&image.data, shape, config.normalization, config.clip_percentiles);
                    let mut cropped = crop(&image.data, shape, origin, size, 0.0);
                    fitted.apply(&mut cropped, size, origin);
                    cropped
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let labels = case.labels.as_ref().map(|l| crop(&l.data, shape, origin, size, 0));
    let first = case.images.first();
    Prepared {
        id: case.id.clone(),
        shape: size,
        channels,
        labels,
        origin,
        original_shape: shape,
        spacing: case.spacing(),
        affine: first.map_or([[0.0; 4]; 3], |v| v.affine),
    }
}

/// Start (possibly negative) and size of the region to keep.
fn crop_box(case: &Case, crop: Crop) -> ([i64; 3], [usize; 3]) {
    let shape = case.shape();
    match crop {
        Crop::None => ([0; 3], shape),
        Crop::Box(bounds) => (
            bounds.map(|[start, _]| i64::from(start)),
            bounds.map(|[start, end]| (end - start) as usize),
        ),
        Crop::Foreground => {
            let [nx, ny, nz] = shape;
            let (mut low, mut high) = (shape, [0usize; 3]);
            for image in &case.images {
                for z in 0..nz {
                    for y in 0..ny {
                        let row = &image.data[(z * ny + y) * nx..(z * ny + y + 1) * nx];
                        let Some(first) = row.iter().position(|&v| v != 0.0) else {
                            continue;
                        };
                        let last = row.iter().rposition(|&v| v != 0.0).unwrap_or(first);
                        low = [low[0].min(first), low[1].min(y), low[2].min(z)];
                        high = [high[0].max(last + 1), high[1].max(y + 1), high[2].max(z + 1)];
                    }
                }
            }
            if (0..3).any(|axis| low[axis] >= high[axis]) {
                return ([0; 3], shape);
            }
            (
                low.map(|l| l as i64),
                std::array::from_fn(|axis| high[axis] - low[axis]),
            )
        }
    }
}

/// A normalisation fitted to one whole volume, to apply to any part of it.
enum Fitted {
    /// `(v - low) / (high - low)`, or 0 when the volume is constant.
    MinMax { low: f32, high: f32 },
    /// One min-max per axial slice, by slice index in the whole volume.
    SliceMinMax(Vec<(f32, f32)>),
    /// Non-zero voxels: clip to `[low, high]`, subtract `mean`, divide by `std`.
    ZScore { low: f32, high: f32, mean: f64, std: f64 },
}

impl Fitted {
    fn fit(data: &[f32], shape: [usize; 3], mode: Normalization, clip_percentiles: [f64; 2]) -> Fitted {
        match mode {
            Normalization::VolumeMinMax => {
                let (low, high) = min_max_of(data);
                Fitted::MinMax { low, high }
            }
            Normalization::SliceMinMax => {
                Fitted::SliceMinMax(data.chunks(shape[0] * shape[1]).map(min_max_of).collect())
            }
            Normalization::ZScore => {
                let mut brain: Vec<f32> = data.iter().copied().filter(|&v| v != 0.0).collect();
                if brain.len() < 2 {
                    return Fitted::ZScore {
                        low: f32::MIN,
                        high: f32::MAX,
                        mean: 0.0,
                        std: 1.0,
                    };
                }
                let low = percentile(&mut brain, clip_percentiles[0]);
                let high = percentile(&mut brain, clip_percentiles[1]);
                let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
                for &v in &brain {
                    let c = f64::from(v.clamp(low, high));
                    sum += c;
                    sum_sq += c * c;
                }
                let n = brain.len() as f64;
                let mean = sum / n;
                let std = (sum_sq / n - mean * mean).max(0.0).sqrt().max(1e-8);
                Fitted::ZScore { low, high, mean, std }
            }
        }
    }

    /// Applies the normalisation to `data`, the box of `size` at `origin` of the volume.
    fn apply(&self, data: &mut [f32], size: [usize; 3], origin: [i64; 3]) {
        let scale = |v: &mut f32, (low, high): (f32, f32)| {
            let range = high - low;
            *v = if range > 0.0 { (*v - low) / range } else { 0.0 };
        };
        match self {
            Fitted::MinMax { low, high } => data.iter_mut().for_each(|v| scale(v, (*low, *high))),
            Fitted::SliceMinMax(slices) => {
                for (z, slice) in data.chunks_mut(size[0] * size[1]).enumerate() {
                    // A padded slice outside the volume has no fit: it stays as padded (0).
                    let Some(&fit) = usize::try_from(origin[2] + z as i64).ok().and_then(|z| slices.get(z)) else {
                        continue;
                    };
                    slice.iter_mut().for_each(|v| scale(v, fit));
                }
            }
            Fitted::ZScore { low, high, mean, std } => {
                let (low, high, mean, inv_std) = (*low, *high, *mean as f32, (1.0 / *std) as f32);
                for v in data.iter_mut() {
                    if *v != 0.0 {
                        *v = (v.clamp(low, high) - mean) * inv_std;
                    }
                }
            }
        }
    }
}

fn min_max_of(data: &[f32]) -> (f32, f32) {
    data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    })
}

/// Copies the box at `origin` of `size` out of `data` (of `shape`), filling with `fill`
/// where the box reaches outside the volume.
pub fn crop<T: Copy>(data: &[T], shape: [usize; 3], origin: [i64; 3], size: [usize; 3], fill: T) -> Vec<T> {
    let [nx, ny, nz] = shape.map(|n| n as i64);
    let mut out = vec![fill; size.iter().product()];
    let mut i = 0;
    for z in 0..size[2] as i64 {
        let sz = origin[2] + z;
        for y in 0..size[1] as i64 {
            let sy = origin[1] + y;
            let row_inside = (0..nz).contains(&sz) && (0..ny).contains(&sy);
            // Copy the part of the row inside the volume in one go.
            let x0 = (-origin[0]).clamp(0, size[0] as i64);
            let x1 = (nx - origin[0]).clamp(x0, size[0] as i64);
            if row_inside && x1 > x0 {
                let src = ((sz * ny + sy) * nx + origin[0] + x0) as usize;
                let len = (x1 - x0) as usize;
                out[i + x0 as usize..i + x0 as usize + len].copy_from_slice(&data[src..src + len]);
            }
            i += size[0];
        }
    }
    out
}

/// Puts a cropped box back into a volume of `shape` (zeros elsewhere): the inverse of
/// [`crop`], for writing predictions on the original grid.
pub fn uncrop<T: Copy + Default>(box_data: &[T], size: [usize; 3], origin: [i64; 3], shape: [usize; 3]) -> Vec<T> {
    let mut out = vec![T::default(); shape.iter().product()];
    let [nx, ny, nz] = shape.map(|n| n as i64);
    for z in 0..size[2] as i64 {
        let vz = origin[2] + z;
        if !(0..nz).contains(&vz) {
            continue;
        }
        for y in 0..size[1] as i64 {
            let vy = origin[1] + y;
            if !(0..ny).contains(&vy) {
                continue;
            }
            for x in 0..size[0] as i64 {
                let vx = origin[0] + x;
                if (0..nx).contains(&vx) {
                    out[((vz * ny + vy) * nx + vx) as usize] =
                        box_data[((z * size[1] as i64 + y) * size[0] as i64 + x) as usize];
                }
            }
        }
    }
    out
}

/// Normalises one whole volume in place.
pub fn normalize(data: &mut [f32], shape: [usize; 3], mode: Normalization, clip_percentiles: [f64; 2]) {
    Fitted::fit(data, shape, mode, clip_percentiles).apply(data, shape, [0; 3]);
}

/// The `p`-th percentile (0-100) by selection, reordering `values`.
fn percentile(values: &mut [f32], p: f64) -> f32 {
    let rank = ((values.len() - 1) as f64 * p / 100.0).round() as usize;
    *values.select_nth_unstable_by(rank, f32::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_pads_where_the_box_leaves_the_volume() {
        // 3x2x1 volume: values 0..6.
        let data: Vec<i32> = (0..6).collect();
        let out = crop(&data, [3, 2, 1], [-1, 1, 0], [3, 2, 1], -9);
        assert_eq!(out, [-9, 3, 4, -9, -9, -9]);
        let inside = crop(&data, [3, 2, 1], [1, 0, 0], [2, 2, 1], -9);
        assert_eq!(inside, [1, 2, 4, 5]);
    }

    #[test]
    fn uncrop_undoes_crop_inside_the_volume() {
        let data: Vec<i32> = (1..=24).collect();
        let (origin, size) = ([1, 0, 1], [2, 2, 1]);
        let cropped = crop(&data, [3, 4, 2], origin, size, 0);
        let back = uncrop(&cropped, size, origin, [3, 4, 2]);
        for (i, (&b, &d)) in back.iter().zip(&data).enumerate() {
            let (x, y, z) = (i % 3, (i / 3) % 4, i / 12);
            let inside = (1..3).contains(&x) && y < 2 && z == 1;
            assert_eq!(b, if inside { d } else { 0 }, "voxel {i}");
        }
    }

    #[test]
    fn slice_min_max_scales_each_axial_slice_alone() {
        let mut data = vec![0.0, 2.0, 4.0, 10.0, 20.0, 30.0];
        normalize(&mut data, [3, 1, 2], Normalization::SliceMinMax, [0.0, 100.0]);
        assert_eq!(data, [0.0, 0.5, 1.0, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn z_score_uses_brain_voxels_only_and_keeps_background_zero() {
        let mut data = vec![0.0, 0.0, 1.0, 2.0, 3.0, 0.0];
        normalize(&mut data, [6, 1, 1], Normalization::ZScore, [0.0, 100.0]);
        let std = (2.0f32 / 3.0).sqrt();
        assert_eq!(&data[..2], &[0.0, 0.0]);
        assert!((data[2] + 1.0 / std).abs() < 1e-5 && data[3].abs() < 1e-6 && (data[4] - 1.0 / std).abs() < 1e-5);
        assert_eq!(data[5], 0.0);
    }

    #[test]
    fn z_score_clips_outliers_to_percentiles() {
        let mut data: Vec<f32> = (1..=100).map(|v| v as f32).collect();
        data[99] = 1e6;
        normalize(&mut data, [100, 1, 1], Normalization::ZScore, [0.0, 99.0]);
        // The outlier is clipped to the 99th percentile (value 99), so it lands next to it.
        assert!((data[99] - data[98]).abs() < 1e-6);
    }
}
