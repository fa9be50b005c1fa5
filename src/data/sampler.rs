//! Training patches: where to cut them, how to augment them, and a thread that keeps a few
//! batches ready so the trainer never waits on the data.
//!
//! A patch centre is a tumour voxel with probability `foreground_fraction` (nnU-Net's
//! oversampling), else any voxel; the patch may reach past the volume, which reads as 0. The
//! tumour voxel is drawn per class by default (one of the tumour labels the case has, each
//! equally likely, then a voxel of it), so that the small sub-regions the metrics weigh as
//! much as the whole tumour (enhancing tumour, necrosis) are at the centre of a third of those
//! patches each, instead of the share of the tumour they fill.
//! Spatial augmentation (small and quarter-turn rotations, zoom, mirroring) is folded into the mapping from patch
//! voxels to volume coordinates, so it costs one pass and never leaves empty corners: images
//! are sampled trilinearly, labels by nearest neighbour (never interpolated). Intensity
//! augmentation (brightness, gamma, noise) follows per channel. Before it, the patch may be made
//! to look like a scan of lower quality, as many of BraTS-Africa's are: a lower resolution,
//! thick slices interpolated back to the grid, a smooth intensity inhomogeneity (bias field).
//! Everything is drawn from one seeded generator: the same seed gives the same batches.
//!
//! Batches are laid out for the network: images `[batch][channel][z][y][x]`, labels
//! `[batch][z][y][x]` (x fastest, as the cache stores volumes).

use std::f64::consts::PI;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::experiment::{AugmentConfig, ForegroundSampling};

use super::cache::CachedCase;

/// At most this many tumour voxels are remembered per case for foreground sampling.
const MAX_FOREGROUND_SAMPLES: usize = 20_000;

/// A batch of patches in network layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub channels: usize,
    /// Patch size in voxels, `[x, y, z]`.
    pub patch: [usize; 3],
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Batch {
    pub fn new(size: usize, channels: usize, patch: [usize; 3]) -> Batch {
        let voxels: usize = patch.iter().product();
        Batch {
            size,
            channels,
            patch,
            images: vec![0.0; size * channels * voxels],
            labels: vec![0; size * voxels],
        }
    }
}

/// Tumour voxels of one case that patches may be centred on.
enum Foreground {
    /// Indices of (some) tumour voxels, whatever their label.
    Any(Vec<u32>),
    /// Indices of (some) voxels of each tumour label (1, 2, 3) the case has; labels it lacks
    /// are left out.
    ByLabel(Vec<Vec<u32>>),
}

/// Draws augmented patches from a set of cached cases.
pub struct Sampler {
    cases: Vec<Arc<CachedCase>>,
    /// Where each case's foreground patches may be centred.
    foreground: Vec<Foreground>,
    patch: [usize; 3],
    foreground_fraction: f64,
    augment: AugmentConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(
        cases: Vec<Arc<CachedCase>>,
        patch: [usize; 3],
        (foreground_fraction, sampling): (f64, ForegroundSampling),
        augment: AugmentConfig,
        seed: u64,
    ) -> Sampler {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let foreground = cases
            .iter()
            .map(|case| match sampling {
                ForegroundSampling::AnyTumour => Foreground::Any(spread(foreground_voxels(case), &mut rng)),
                ForegroundSampling::ClassBalanced => Foreground::ByLabel(
                    voxels_by_label(case)
                        .into_iter()
                        .map(|voxels| spread(voxels, &mut rng))
                        .filter(|voxels| !voxels.is_empty())
                        .collect(),
                ),
            })
            .collect();
        Sampler {
            cases,
            foreground,
            patch,
            foreground_fraction,
            augment,
            rng,
        }
    }

    /// Fills `batch` with fresh patches.
    pub fn fill(&mut self, batch: &mut Batch) {
        let voxels: usize = self.patch.iter().product();
        for b in 0..batch.size {
            let image_range = b * batch.channels * voxels..(b + 1) * batch.channels * voxels;
            let label_range = b * voxels..(b + 1) * voxels;
            self.patch_into(&mut batch.images[image_range], &mut batch.labels[label_range]);
        }
    }

    fn patch_into(&mut self, images: &mut [f32], labels: &mut [u8]) {
        if self.cases.is_empty() {
            images.fill(0.0);
            labels.fill(0);
            return;
        }
        let index = self.rng.random_range(0..self.cases.len());
        let case = Arc::clone(&self.cases[index]);
        let shape = case.header.shape;
        let tumour = match &self.foreground[index] {
            Foreground::Any(voxels) => Some(voxels),
            Foreground::ByLabel(labels) if labels.is_empty() => None,
            Foreground::ByLabel(labels) => Some(&labels[self.rng.random_range(0..labels.len())]),
        };
        let centre = match tumour {
            Some(fg) if !fg.is_empty() && self.rng.random_bool(self.foreground_fraction) => {
                let i = fg[self.rng.random_range(0..fg.len())] as usize;
                [i % shape[0], (i / shape[0]) % shape[1], i / (shape[0] * shape[1])].map(|v| v as f64)
            }
            _ => shape.map(|n| self.rng.random_range(0..n.max(1)) as f64),
        };
        let transform = self.spatial_transform();
        extract(&case, centre, self.patch, &transform, images, labels);
        self.degrade(images);
        self.intensity(images);
    }

    /// A lower resolution, thick slices and a bias field, each with its probability.
    fn degrade(&mut self, images: &mut [f32]) {
        let a = &self.augment;
        if !a.enabled {
            return;
        }
        let patch = self.patch;
        let voxels: usize = patch.iter().product();
        if a.thick_slices_p > 0.0 && self.rng.random_bool(a.thick_slices_p) {
            let axis = self.rng.random_range(0..3);
            let thickness = self.rng.random_range(a.thick_slices[0]..=a.thick_slices[1]);
            for channel in images.chunks_mut(voxels) {
                resample_axis(channel, patch, axis, thickness);
            }
        }
        for channel in images.chunks_mut(voxels) {
            if a.lowres_p > 0.0 && self.rng.random_bool(a.lowres_p) {
                let zoom = self.rng.random_range(a.lowres_zoom[0]..=a.lowres_zoom[1]);
                for axis in 0..3 {
                    resample_axis(channel, patch, axis, 1.0 / zoom);
                }
            }
            if a.bias_field > 0.0 && a.bias_field_p > 0.0 && self.rng.random_bool(a.bias_field_p) {
                let coefficients: [f64; 9] = std::array::from_fn(|_| self.rng.random_range(-1.0..=1.0));
                apply_bias_field(channel, patch, &coefficients, a.bias_field);
            }
        }
    }

    /// A random rotation, zoom and mirroring, as a matrix from patch offsets to volume offsets.
    fn spatial_transform(&mut self) -> [[f64; 3]; 3] {
        let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let a = &self.augment;
        if !a.enabled {
            return m;
        }
        if a.rotate_degrees > 0.0 && self.rng.random_bool(a.rotate_p) {
            let max = a.rotate_degrees.to_radians();
            for axis in 0..3 {
                let angle = self.rng.random_range(-max..=max);
                m = multiply(&rotation(axis, angle), &m);
            }
        }
        if self.rng.random_bool(a.rotate90_p) {
            let axis = self.rng.random_range(0..3);
            let turns = self.rng.random_range(1..=3);
            m = multiply(
                &rotation(axis, f64::from(turns) * PI / 2.0).map(|row| row.map(f64::round)),
                &m,
            );
        }
        if a.scale[0] != a.scale[1] && self.rng.random_bool(a.scale_p) {
            // Zooming in by s means sampling the volume 1/s as far from the centre.
            let s = self.rng.random_range(a.scale[0]..=a.scale[1]);
            m = m.map(|row| row.map(|v| v / s));
        }
        for &axis in &a.flip_axes {
            if self.rng.random_bool(a.flip_p) {
                for row in &mut m {
                    row[axis as usize] = -row[axis as usize];
                }
            }
        }
        m
    }

    /// Brightness, gamma and noise, each channel drawn separately.
    fn intensity(&mut self, images: &mut [f32]) {
        let a = &self.augment;
        if !a.enabled {
            return;
        }
        let voxels: usize = self.patch.iter().product();
        for channel in images.chunks_mut(voxels) {
            if self.rng.random_bool(a.brightness_p) {
                let factor = self.rng.random_range(a.brightness[0]..=a.brightness[1]) as f32;
                channel.iter_mut().for_each(|v| *v *= factor);
            }
            if self.rng.random_bool(a.gamma_p) {
                let gamma = self.rng.random_range(a.gamma[0]..=a.gamma[1]) as f32;
                // nnU-Net's way: rescale to [0, 1], apply gamma, scale back.
                let (lo, hi) = channel
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
                if hi > lo {
                    let range = hi - lo;
                    channel
                        .iter_mut()
                        .for_each(|v| *v = ((*v - lo) / range).powf(gamma) * range + lo);
                }
            }
            if a.noise_sigma > 0.0 && self.rng.random_bool(a.noise_p) {
                let sigma = a.noise_sigma as f32;
                for v in channel.iter_mut() {
                    *v += sigma * gaussian(&mut self.rng);
                }
            }
        }
    }
}

/// Resamples every line of `channel` (`[z][y][x]`, sizes `patch` `[x, y, z]`) along `axis` as
/// an acquisition with voxels `factor` times as long would see it: each line averaged over
/// consecutive windows of `factor` voxels (fractions counted by their overlap), then linearly
/// interpolated back from the windows' centres. A factor of 1 or less changes nothing.
fn resample_axis(channel: &mut [f32], patch: [usize; 3], axis: usize, factor: f64) {
    let n = patch[axis];
    if factor <= 1.0 || n < 2 {
        return;
    }
    let coarse_len = ((n as f64 / factor).ceil() as usize).max(1);
    let stride = [1, patch[0], patch[0] * patch[1]][axis];
    let mut line = vec![0f32; n];
    let mut coarse = vec![0f64; coarse_len];
    // Line starts: every position along the axes faster than `axis` (`inner`), for every
    // position along the slower ones (`outer`).
    let starts =
        (0..channel.len() / (n * stride)).flat_map(|outer| (0..stride).map(move |inner| outer * n * stride + inner));
    for start in starts {
        for (k, value) in line.iter_mut().enumerate() {
            *value = channel[start + k * stride];
        }
        for (j, mean) in coarse.iter_mut().enumerate() {
            let (lo, hi) = (j as f64 * factor, ((j + 1) as f64 * factor).min(n as f64));
            let (mut sum, mut weight) = (0.0, 0.0);
            let mut k = lo.floor() as usize;
            while (k as f64) < hi && k < n {
                let overlap = (hi.min(k as f64 + 1.0) - lo.max(k as f64)).max(0.0);
                sum += overlap * f64::from(line[k]);
                weight += overlap;
                k += 1;
            }
            *mean = if weight > 0.0 { sum / weight } else { 0.0 };
        }
        for k in 0..n {
            // Window j's centre sits at voxel (j + 0.5) * factor - 0.5.
            let position = ((k as f64 + 0.5) / factor - 0.5).clamp(0.0, (coarse_len - 1) as f64);
            let below = position.floor() as usize;
            let above = (below + 1).min(coarse_len - 1);
            let t = position - below as f64;
            channel[start + k * stride] = ((1.0 - t) * coarse[below] + t * coarse[above]) as f32;
        }
    }
}

/// Multiplies `channel` (sizes `patch` `[x, y, z]`) by `exp(strength * p(x, y, z) / 3)`, where
/// `p` is the second-order polynomial with `coefficients` (each in [-1, 1]) over coordinates
/// scaled to [-1, 1]: a smooth field that changes intensities by up to about `strength` in
/// the logarithm across the patch. Background (0) stays 0.
fn apply_bias_field(channel: &mut [f32], patch: [usize; 3], coefficients: &[f64; 9], strength: f64) {
    let scaled = |i: usize, n: usize| {
        if n < 2 {
            0.0
        } else {
            2.0 * i as f64 / (n - 1) as f64 - 1.0
        }
    };
    let c = coefficients;
    let mut index = 0;
    for z in 0..patch[2] {
        let w = scaled(z, patch[2]);
        for y in 0..patch[1] {
            let v = scaled(y, patch[1]);
            for x in 0..patch[0] {
                let u = scaled(x, patch[0]);
                let p = c[0] * u
                    + c[1] * v
                    + c[2] * w
                    + c[3] * u * u
                    + c[4] * v * v
                    + c[5] * w * w
                    + c[6] * u * v
                    + c[7] * v * w
                    + c[8] * u * w;
                channel[index] *= (strength * p / 3.0).exp() as f32;
                index += 1;
            }
        }
    }
}

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u: f64 = rng.random();
    let v: f64 = rng.random();
    ((-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * PI * v).cos()) as f32
}

fn rotation(axis: usize, angle: f64) -> [[f64; 3]; 3] {
    let (s, c) = angle.sin_cos();
    match axis {
        0 => [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        1 => [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]],
        _ => [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    }
}

fn multiply(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

/// Indices of a case's tumour voxels.
fn foreground_voxels(case: &CachedCase) -> Vec<u32> {
    let labels = case.labels().unwrap_or(&[]);
    (0..labels.len() as u32).filter(|&i| labels[i as usize] > 0).collect()
}

/// Indices of a case's voxels of each tumour label (1, 2, 3), in one pass over its labels.
fn voxels_by_label(case: &CachedCase) -> [Vec<u32>; 3] {
    let mut by_label: [Vec<u32>; 3] = Default::default();
    for (i, &label) in case.labels().unwrap_or(&[]).iter().enumerate() {
        if let Some(voxels) = by_label.get_mut(usize::from(label).wrapping_sub(1)) {
            voxels.push(i as u32);
        }
    }
    by_label
}

/// At most MAX_FOREGROUND_SAMPLES of `all`, drawn over all of them.
fn spread(all: Vec<u32>, rng: &mut ChaCha8Rng) -> Vec<u32> {
    if all.len() <= MAX_FOREGROUND_SAMPLES {
        return all;
    }
    (0..MAX_FOREGROUND_SAMPLES)
        .map(|_| all[rng.random_range(0..all.len())])
        .collect()
}

/// Cuts the patch of `size` around `centre` with the spatial `transform`, writing channels
/// and labels; outside the volume reads as 0.
fn extract(
    case: &CachedCase,
    centre: [f64; 3],
    size: [usize; 3],
    transform: &[[f64; 3]; 3],
    images: &mut [f32],
    labels: &mut [u8],
) {
    let shape = case.header.shape;
    let [nx, ny, nz] = shape;
    let voxels: usize = size.iter().product();
    let channels: Vec<&[half::f16]> = (0..case.header.channels).map(|c| case.channel(c)).collect();
    let source_labels = case.labels();
    let identity = *transform == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let half_size = size.map(|n| (n as f64 - 1.0) / 2.0);
    let mut out = 0;
    for z in 0..size[2] {
        for y in 0..size[1] {
            for x in 0..size[0] {
                let offset = [
                    x as f64 - half_size[0],
                    y as f64 - half_size[1],
                    z as f64 - half_size[2],
                ];
                let p: [f64; 3] =
                    std::array::from_fn(|i| centre[i] + (0..3).map(|k| transform[i][k] * offset[k]).sum::<f64>());
                // Labels: nearest voxel.
                let nearest = p.map(|v| v.round() as i64);
                let inside = nearest[0] >= 0
                    && nearest[1] >= 0
                    && nearest[2] >= 0
                    && (nearest[0] as usize) < nx
                    && (nearest[1] as usize) < ny
                    && (nearest[2] as usize) < nz;
                let nearest_index =
                    inside.then(|| nearest[0] as usize + nx * (nearest[1] as usize + ny * nearest[2] as usize));
                labels[out] = match (source_labels, nearest_index) {
                    (Some(l), Some(i)) => l[i],
                    _ => 0,
                };
                if identity {
                    for (c, channel) in channels.iter().enumerate() {
                        images[c * voxels + out] = nearest_index.map_or(0.0, |i| channel[i].to_f32());
                    }
                } else {
                    // One stencil for every channel: the corners and weights are the same.
                    let stencil = Stencil::at(shape, p);
                    for (c, channel) in channels.iter().enumerate() {
                        images[c * voxels + out] = stencil.apply(channel);
                    }
                }
                out += 1;
            }
        }
    }
}

/// The voxels trilinear interpolation at a point reads, and their weights: those inside the
/// volume with a weight above 0 (outside is 0).
struct Stencil {
    index: [usize; 8],
    weight: [f32; 8],
    len: usize,
}

impl Stencil {
    fn at(shape: [usize; 3], p: [f64; 3]) -> Stencil {
        let base = p.map(f64::floor);
        let frac = [p[0] - base[0], p[1] - base[1], p[2] - base[2]];
        let base = base.map(|v| v as i64);
        let [nx, ny, nz] = shape.map(|n| n as i64);
        let mut stencil = Stencil {
            index: [0; 8],
            weight: [0.0; 8],
            len: 0,
        };
        for corner in 0..8 {
            let d = [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1];
            let q = [base[0] + d[0], base[1] + d[1], base[2] + d[2]];
            if q[0] < 0 || q[1] < 0 || q[2] < 0 || q[0] >= nx || q[1] >= ny || q[2] >= nz {
                continue;
            }
            let w: f64 = (0..3)
                .map(|i| if d[i] == 1 { frac[i] } else { 1.0 - frac[i] })
                .product();
            if w > 0.0 {
                stencil.index[stencil.len] = (q[0] + nx * (q[1] + ny * q[2])) as usize;
                stencil.weight[stencil.len] = w as f32;
                stencil.len += 1;
            }
        }
        stencil
    }

    /// The interpolated value of `data`.
    fn apply(&self, data: &[half::f16]) -> f32 {
        (0..self.len)
            .map(|k| self.weight[k] * data[self.index[k]].to_f32())
            .sum()
    }
}

/// A thread that fills batches ahead of the trainer, in a bounded queue, reusing buffers.
pub struct Prefetcher {
    ready: Receiver<Batch>,
    spent: SyncSender<Batch>,
}

impl Prefetcher {
    /// Starts the thread; `depth` batches are kept ready.
    pub fn spawn(
        mut sampler: Sampler,
        batch_size: usize,
        channels: usize,
        depth: usize,
    ) -> std::io::Result<Prefetcher> {
        let depth = depth.max(1);
        let (ready_tx, ready) = sync_channel::<Batch>(depth);
        let (spent, spent_rx) = sync_channel::<Batch>(depth + 2);
        let patch = sampler.patch;
        std::thread::Builder::new().name("sampler".into()).spawn(move || {
            loop {
                let mut batch = spent_rx
                    .try_recv()
                    .unwrap_or_else(|_| Batch::new(batch_size, channels, patch));
                sampler.fill(&mut batch);
                if ready_tx.send(batch).is_err() {
                    break;
                }
            }
        })?;
        Ok(Prefetcher { ready, spent })
    }

    /// The next batch, waiting if none is ready; `None` if the sampler thread ended.
    pub fn next(&self) -> Option<Batch> {
        self.ready.recv().ok()
    }

    /// Gives a used batch back for its buffers to be refilled.
    pub fn recycle(&self, batch: Batch) {
        let _ = self.spent.try_send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache;
    use crate::data::preprocess::Prepared;

    /// A cached 8x6x4 case: channel 0 holds each voxel's index, channel 1 its negative;
    /// labels mark a 2x2x2 block.
    fn case(dir: &std::path::Path) -> Arc<CachedCase> {
        let n = 8 * 6 * 4;
        let mut labels = vec![0u8; n];
        for (x, y, z) in [
            (4, 3, 2),
            (5, 3, 2),
            (4, 4, 2),
            (5, 4, 2),
            (4, 3, 3),
            (5, 3, 3),
            (4, 4, 3),
            (5, 4, 3),
        ] {
            labels[x + 8 * (y + 6 * z)] = 3;
        }
        let prepared = Prepared {
            id: "c".to_string(),
            shape: [8, 6, 4],
            channels: vec![
                (0..n).map(|i| i as f32).collect(),
                (0..n).map(|i| -(i as f32)).collect(),
            ],
            labels: Some(labels),
            origin: [0; 3],
            original_shape: [8, 6, 4],
            spacing: [1.0; 3],
            affine: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
        };
        let path = dir.join("c.segc");
        cache::write(&path, &prepared, "", vec![]).expect("written");
        Arc::new(CachedCase::open(&path).expect("opens"))
    }

    #[test]
    fn an_unaugmented_patch_is_a_plain_crop_padded_with_zeros() {
        let dir = tempfile::tempdir().expect("temp dir");
        let case = case(dir.path());
        let identity = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut images = vec![0.0; 2 * 8];
        let mut labels = vec![0; 8];
        // A 2x2x2 patch centred between voxels (4, 3, 2) and (5, 4, 3).
        extract(&case, [4.5, 3.5, 2.5], [2, 2, 2], &identity, &mut images, &mut labels);
        let index = |x: usize, y: usize, z: usize| (x + 8 * (y + 6 * z)) as f32;
        assert_eq!(
            images[..8],
            [
                index(4, 3, 2),
                index(5, 3, 2),
                index(4, 4, 2),
                index(5, 4, 2),
                index(4, 3, 3),
                index(5, 3, 3),
                index(4, 4, 3),
                index(5, 4, 3)
            ]
        );
        assert_eq!(images[8], -index(4, 3, 2));
        assert_eq!(labels, [3; 8]);
        // At the corner, the patch reaches outside: zeros there.
        extract(
            &case,
            [-0.5, -0.5, -0.5],
            [2, 2, 2],
            &identity,
            &mut images,
            &mut labels,
        );
        assert_eq!(images[..8], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(images[7], 0.0);
        extract(&case, [0.5, 0.5, 0.5], [2, 2, 2], &identity, &mut images, &mut labels);
        assert_eq!(images[7], index(1, 1, 1));
    }

    #[test]
    fn the_stencil_interpolates_trilinearly_with_zero_outside() {
        // A 2x2x2 volume holding each voxel's index.
        let data: Vec<half::f16> = (0..8).map(|v| half::f16::from_f32(v as f32)).collect();
        let shape = [2, 2, 2];
        // The centre: the mean of all eight.
        assert_eq!(Stencil::at(shape, [0.5, 0.5, 0.5]).apply(&data), 3.5);
        // On a voxel: that voxel alone, exactly.
        let on = Stencil::at(shape, [1.0, 0.0, 1.0]);
        assert_eq!((on.len, on.apply(&data)), (1, 5.0));
        // A quarter along x from voxel 1 (x = 1) out of the volume: three quarters of it.
        assert_eq!(Stencil::at(shape, [1.25, 0.0, 0.0]).apply(&data), 0.75);
        assert_eq!(Stencil::at(shape, [-3.0, 0.5, 0.5]).len, 0);
    }

    #[test]
    fn mirroring_reverses_the_axis() {
        let dir = tempfile::tempdir().expect("temp dir");
        let case = case(dir.path());
        let mirror_x = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let mut images = vec![0.0; 2 * 4];
        let mut labels = vec![0; 4];
        extract(&case, [3.5, 2.0, 1.0], [4, 1, 1], &mirror_x, &mut images, &mut labels);
        let index = |x: usize| (x + 8 * (2 + 6)) as f32;
        assert_eq!(images[..4], [index(5), index(4), index(3), index(2)]);
    }

    #[test]
    fn rotated_labels_are_never_interpolated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let augment = AugmentConfig {
            rotate_p: 1.0,
            rotate_degrees: 30.0,
            scale_p: 1.0,
            ..AugmentConfig::default()
        };
        let mut sampler = Sampler::new(
            vec![case(dir.path())],
            [4, 4, 4],
            (1.0, ForegroundSampling::ClassBalanced),
            augment,
            5,
        );
        let mut batch = Batch::new(8, 2, [4, 4, 4]);
        sampler.fill(&mut batch);
        assert!(batch.labels.iter().all(|&l| l == 0 || l == 3));
        // Foreground sampling: every patch holds some tumour.
        assert!(batch.labels.chunks(64).all(|patch| patch.contains(&3)));
    }

    /// Augmentation on, but every transform's probability 0.
    fn no_transform() -> AugmentConfig {
        AugmentConfig {
            rotate_p: 0.0,
            rotate90_p: 0.0,
            scale_p: 0.0,
            flip_p: 0.0,
            brightness_p: 0.0,
            gamma_p: 0.0,
            noise_p: 0.0,
            lowres_p: 0.0,
            thick_slices_p: 0.0,
            bias_field_p: 0.0,
            ..AugmentConfig::default()
        }
    }

    #[test]
    fn quarter_turns_move_voxels_without_blending_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let augment = AugmentConfig {
            rotate90_p: 1.0,
            ..no_transform()
        };
        let mut sampler = Sampler::new(
            vec![case(dir.path())],
            [3, 3, 3],
            (0.0, ForegroundSampling::ClassBalanced),
            augment,
            3,
        );
        let mut batch = Batch::new(6, 2, [3, 3, 3]);
        sampler.fill(&mut batch);
        // Channel 0 holds voxel indices: every sampled value is a whole index (or 0 outside).
        assert!(batch.images.iter().all(|v| v.fract() == 0.0), "{:?}", batch.images);
        assert!(batch.images.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn the_same_seed_gives_the_same_batches_through_the_prefetcher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = case(dir.path());
        let make = |seed| {
            Sampler::new(
                vec![Arc::clone(&c)],
                [4, 4, 4],
                (0.5, ForegroundSampling::ClassBalanced),
                AugmentConfig::default(),
                seed,
            )
        };
        let mut direct = make(9);
        let prefetcher = Prefetcher::spawn(make(9), 2, 2, 2).expect("thread");
        for _ in 0..3 {
            let mut expected = Batch::new(2, 2, [4, 4, 4]);
            direct.fill(&mut expected);
            let got = prefetcher.next().expect("a batch");
            assert_eq!(got, expected);
            prefetcher.recycle(got);
        }
        let mut other = Batch::new(2, 2, [4, 4, 4]);
        make(10).fill(&mut other);
        let mut first = Batch::new(2, 2, [4, 4, 4]);
        make(9).fill(&mut first);
        assert_ne!(other, first);
    }

    /// A cached 40x40x20 case with a big block of oedema (label 2, 2,000 voxels) around small
    /// cores of necrosis (label 1, 27 voxels) and enhancing tumour (label 3, 8 voxels).
    fn tumour_case(dir: &std::path::Path) -> Arc<CachedCase> {
        let shape = [40usize, 40, 20];
        let n = shape.iter().product();
        let mut labels = vec![0u8; n];
        let index = |x: usize, y: usize, z: usize| x + shape[0] * (y + shape[1] * z);
        for z in 0..20 {
            for y in 10..20 {
                for x in 10..20 {
                    labels[index(x, y, z)] = 2;
                }
            }
        }
        for z in 5..8 {
            for y in 12..15 {
                for x in 12..15 {
                    labels[index(x, y, z)] = 1;
                }
            }
        }
        for z in 10..12 {
            for y in 16..18 {
                for x in 16..18 {
                    labels[index(x, y, z)] = 3;
                }
            }
        }
        let prepared = Prepared {
            id: "t".to_string(),
            shape,
            channels: vec![vec![1.0; n]],
            labels: Some(labels),
            origin: [0; 3],
            original_shape: shape,
            spacing: [1.0; 3],
            affine: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
        };
        let path = dir.join("t.segc");
        cache::write(&path, &prepared, "", vec![]).expect("written");
        Arc::new(CachedCase::open(&path).expect("opens"))
    }

    /// The share of 6,000 single-voxel patches whose voxel has each label (0 to 3).
    fn centre_label_rates(case: Arc<CachedCase>, fraction: f64, sampling: ForegroundSampling) -> [f64; 4] {
        let augment = AugmentConfig {
            enabled: false,
            ..AugmentConfig::default()
        };
        let channels = case.header.channels;
        let mut sampler = Sampler::new(vec![case], [1, 1, 1], (fraction, sampling), augment, 17);
        let mut batch = Batch::new(6_000, channels, [1, 1, 1]);
        sampler.fill(&mut batch);
        let mut counts = [0usize; 4];
        for &label in &batch.labels {
            counts[label as usize] += 1;
        }
        counts.map(|c| c as f64 / batch.labels.len() as f64)
    }

    #[test]
    fn class_balanced_sampling_centres_each_tumour_label_equally_often() {
        let dir = tempfile::tempdir().expect("temp dir");
        let case = tumour_case(dir.path());
        // All patches on tumour: a third per label, however small (binomial sd at n 6000: 0.006).
        let rates = centre_label_rates(Arc::clone(&case), 1.0, ForegroundSampling::ClassBalanced);
        assert_eq!(rates[0], 0.0, "{rates:?}");
        for label in 1..=3 {
            assert!((rates[label] - 1.0 / 3.0).abs() < 0.03, "label {label}: {rates:?}");
        }
        // Drawing any tumour voxel: each label by its share of the tumour (2,000 - 35 oedema,
        // 27 necrosis, 8 enhancing voxels), so enhancing tumour is almost never the centre.
        let rates = centre_label_rates(Arc::clone(&case), 1.0, ForegroundSampling::AnyTumour);
        assert!(rates[2] > 0.95, "{rates:?}");
        assert!(rates[3] < 0.02, "{rates:?}");
        // Half the patches on tumour: a sixth per label, plus the uniform half's share (the
        // volume is 32,000 voxels: 6% oedema, under 0.1% of each core label).
        let rates = centre_label_rates(case, 0.5, ForegroundSampling::ClassBalanced);
        assert!((rates[3] - 1.0 / 6.0).abs() < 0.03, "{rates:?}");
        assert!((rates[1] - 1.0 / 6.0).abs() < 0.03, "{rates:?}");
        assert!((rates[2] - (1.0 / 6.0 + 0.5 * 0.061)).abs() < 0.03, "{rates:?}");
        assert!((rates[0] - 0.5 * 0.938).abs() < 0.03, "{rates:?}");
    }

    #[test]
    fn a_case_without_some_labels_draws_among_those_it_has() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The small test case has enhancing tumour only.
        let rates = centre_label_rates(case(dir.path()), 1.0, ForegroundSampling::ClassBalanced);
        assert_eq!(rates[3], 1.0, "{rates:?}");
    }

    #[test]
    fn thick_slices_average_along_one_axis_and_keep_the_others() {
        // A 6x4x4 patch whose values rise along x only: thick slices along y change nothing,
        // along x they smooth the ramp and keep its mean.
        let patch = [6usize, 4, 4];
        let ramp: Vec<f32> = (0..96).map(|i| (i % 6) as f32).collect();
        let mut along_y = ramp.clone();
        resample_axis(&mut along_y, patch, 1, 2.0);
        assert_eq!(along_y, ramp);
        let mut along_x = ramp.clone();
        resample_axis(&mut along_x, patch, 0, 3.0);
        // Windows [0, 3) and [3, 6) average 1 and 4; interpolated back from centres 1 and 4.
        assert_eq!(&along_x[..6], &[1.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&along_x) - mean(&ramp)).abs() < 1e-5);
        // An alternating pattern (finest detail) is erased by thickness 2.
        let mut stripes: Vec<f32> = (0..96).map(|i| if (i / 6) % 2 == 0 { 1.0 } else { -1.0 }).collect();
        resample_axis(&mut stripes, patch, 1, 2.0);
        assert!(stripes.iter().all(|v| v.abs() < 1e-6), "{stripes:?}");
        // A factor of 1 changes nothing.
        let mut same = ramp.clone();
        resample_axis(&mut same, patch, 2, 1.0);
        assert_eq!(same, ramp);
    }

    #[test]
    fn a_bias_field_is_smooth_bounded_and_keeps_background() {
        let patch = [8usize, 8, 8];
        let mut channel = vec![1.0f32; 512];
        channel[0] = 0.0;
        apply_bias_field(&mut channel, patch, &[1.0; 9], 0.3);
        assert_eq!(channel[0], 0.0);
        // |p| is at most 9, so the factor stays within exp(+-0.9).
        assert!(channel[1..].iter().all(|&v| v > (-0.91f32).exp() && v < 0.91f32.exp()));
        // Smooth: neighbours differ by a small fraction.
        for i in 1..511 {
            if (i + 1) % 8 != 0 {
                assert!((channel[i + 1] / channel[i] - 1.0).abs() < 0.2, "at {i}");
            }
        }
        assert!(
            channel[1..].iter().any(|&v| (v - 1.0).abs() > 0.1),
            "the field changes something"
        );
    }

    #[test]
    fn degrading_augmentation_changes_images_and_never_labels() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = no_transform();
        let degraded = AugmentConfig {
            lowres_p: 1.0,
            thick_slices_p: 1.0,
            bias_field_p: 1.0,
            ..plain.clone()
        };
        let draw = |augment: AugmentConfig| {
            let mut sampler = Sampler::new(
                vec![tumour_case(dir.path())],
                [8, 8, 8],
                (1.0, ForegroundSampling::ClassBalanced),
                augment,
                4,
            );
            let mut batch = Batch::new(1, 1, [8, 8, 8]);
            sampler.fill(&mut batch);
            batch
        };
        let (a, b) = (draw(plain), draw(degraded));
        assert_eq!(a.labels, b.labels, "the same patches, labels untouched");
        assert_ne!(a.images, b.images);
    }
}
