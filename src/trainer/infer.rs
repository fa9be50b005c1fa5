//! Whole-volume inference by sliding window: overlapping windows, each weighted by a
//! Gaussian centred in it (nnU-Net's sigma of an eighth of the window), so that window edges,
//! where the network sees least context, count least.

use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use segtop::data::cache::CachedCase;
use segtop::experiment::{NUM_CLASSES, ValidateConfig};

use crate::model::UNet;

/// Start positions of windows of `window` voxels covering `size` with `overlap`.
pub fn window_starts(size: i64, window: i64, overlap: f64) -> Vec<i64> {
    if size <= window {
        return vec![0];
    }
    let stride = ((window as f64 * (1.0 - overlap)).round() as i64).max(1);
    let mut starts: Vec<i64> = (0..).map(|i| i * stride).take_while(|&s| s + window < size).collect();
    starts.push(size - window);
    starts
}

/// Per-voxel weights of one window, `[z, y, x]`.
pub fn gaussian_weights(window: [i64; 3], gaussian: bool) -> Tensor {
    if !gaussian {
        return Tensor::ones(window, (Kind::Float, Device::Cpu));
    }
    let axis = |n: i64| {
        let sigma = n as f64 / 8.0;
        let centre = (n as f64 - 1.0) / 2.0;
        let values: Vec<f32> = (0..n)
            .map(|i| (-(i as f64 - centre).powi(2) / (2.0 * sigma * sigma)).exp() as f32)
            .collect();
        Tensor::from_slice(&values)
    };
    let [z, y, x] = window;
    let weights = axis(z).view([z, 1, 1]) * axis(y).view([1, y, 1]) * axis(x).view([1, 1, x]);
    // Keep every voxel's weight above zero so no voxel is left undivided.
    let max = weights.max().double_value(&[]);
    (&weights / max).clamp_min(1e-3)
}

/// The case's channels as a `[1, channels, z, y, x]` float tensor.
pub fn case_tensor(case: &CachedCase) -> Tensor {
    let [x, y, z] = case.header.shape.map(|n| n as i64);
    let channels: Vec<Tensor> = (0..case.header.channels)
        .map(|c| {
            let floats: Vec<f32> = case.channel(c).iter().map(|v| v.to_f32()).collect();
            Tensor::from_slice(&floats).view([z, y, x])
        })
        .collect();
    Tensor::stack(&channels, 0).unsqueeze(0)
}

/// Sliding-window inference as an experiment's `[validate]` table sets it.
pub struct SlidingWindow {
    /// Window size `[z, y, x]`.
    size: [i64; 3],
    /// Overlap of neighbouring windows, as a fraction of the window.
    overlap: f64,
    /// Windows run through the network at once.
    batch: usize,
    /// Per-voxel weights of one window, `[1, 1, z, y, x]`.
    weights: Tensor,
    /// Test-time augmentation: every combination of mirrorings over these tensor dimensions
    /// (2 z, 3 y, 4 x) is run and the probabilities averaged (none: one pass).
    mirrors: Vec<Vec<i64>>,
}

impl SlidingWindow {
    pub fn new(config: &ValidateConfig) -> SlidingWindow {
        let [x, y, z] = config.window.map(i64::from);
        let size = [z, y, x];
        SlidingWindow {
            size,
            overlap: config.overlap,
            batch: config.window_batch.max(1) as usize,
            weights: gaussian_weights(size, config.gaussian).view([1, 1, z, y, x]),
            mirrors: vec![Vec::new()],
        }
    }

    /// The same windows with mirror test-time augmentation over the experiment's flip axes
    /// (0, 1, 2 = x, y, z): up to 8 passes per window, probabilities averaged, as nnU-Net does.
    pub fn with_mirroring(mut self, flip_axes: &[u32]) -> SlidingWindow {
        let mut dims: Vec<i64> = flip_axes.iter().map(|&a| 4 - i64::from(a.min(2))).collect();
        dims.sort_unstable();
        dims.dedup();
        self.mirrors = (0..1usize << dims.len())
            .map(|mask| {
                dims.iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, &d)| d)
                    .collect()
            })
            .collect();
        self
    }

    /// Network passes per window (1 without test-time augmentation).
    pub fn passes(&self) -> usize {
        self.mirrors.len()
    }

    /// Softmax probabilities of a batch of windows, averaged over the mirrorings.
    fn window_probabilities(&self, net: &UNet, windows: &Tensor) -> Tensor {
        let mut sum: Option<Tensor> = None;
        for dims in &self.mirrors {
            let probs = if dims.is_empty() {
                net.forward_t(windows, false).softmax(1, Kind::Float)
            } else {
                net.forward_t(&windows.flip(dims.as_slice()), false)
                    .softmax(1, Kind::Float)
                    .flip(dims.as_slice())
            };
            sum = Some(match sum {
                None => probs,
                Some(total) => total + probs,
            });
        }
        let passes = self.mirrors.len().max(1) as f64;
        match sum {
            Some(total) if passes > 1.0 => total / passes,
            Some(total) => total,
            None => net.forward_t(windows, false).softmax(1, Kind::Float),
        }
    }

    /// Windows over a volume of `shape` (`[z, y, x]`).
    pub fn count(&self, shape: [i64; 3]) -> usize {
        (0..3)
            .map(|i| window_starts(shape[i].max(self.size[i]), self.size[i], self.overlap).len())
            .product()
    }

    /// Seconds to segment cases of these shapes (`[x, y, z]`, as cached), from one batch of
    /// windows timed through the network after an untimed warm-up pass: what a time budget
    /// plans with before the first validation has been measured.
    pub fn estimate_seconds(&self, net: &UNet, channels: usize, shapes: impl Iterator<Item = [usize; 3]>) -> f64 {
        let _guard = tch::no_grad_guard();
        let [z, y, x] = self.size;
        let input = Tensor::zeros(
            [self.batch as i64, channels as i64, z, y, x],
            (Kind::Float, Device::Cpu),
        );
        let _ = self.window_probabilities(net, &input);
        let start = std::time::Instant::now();
        let _ = self.window_probabilities(net, &input);
        let per_batch = start.elapsed().as_secs_f64();
        shapes
            .map(|[x, y, z]| self.count([z as i64, y as i64, x as i64]).div_ceil(self.batch) as f64 * per_batch)
            .sum()
    }

    /// Class probabilities `[1, 4, z, y, x]` of a whole volume `[1, channels, z, y, x]`.
    pub fn probabilities(&self, net: &UNet, volume: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let window = self.size;
        let size = volume.size();
        let (shape, channels) = ([size[2], size[3], size[4]], size[1]);
        // Pad a volume smaller than the window up to it (at the end of each axis).
        let padded_shape: [i64; 3] = std::array::from_fn(|i| shape[i].max(window[i]));
        let padded = if padded_shape == shape {
            volume.shallow_clone()
        } else {
            let out = Tensor::zeros(
                [1, channels, padded_shape[0], padded_shape[1], padded_shape[2]],
                (Kind::Float, Device::Cpu),
            );
            out.narrow(2, 0, shape[0])
                .narrow(3, 0, shape[1])
                .narrow(4, 0, shape[2])
                .copy_(volume);
            out
        };
        let classes = NUM_CLASSES as i64;
        let sum = Tensor::zeros(
            [1, classes, padded_shape[0], padded_shape[1], padded_shape[2]],
            (Kind::Float, Device::Cpu),
        );
        let count = Tensor::zeros(
            [1, 1, padded_shape[0], padded_shape[1], padded_shape[2]],
            (Kind::Float, Device::Cpu),
        );
        let [zs, ys, xs] = [0, 1, 2].map(|i| window_starts(padded_shape[i], window[i], self.overlap));
        let mut corners = Vec::with_capacity(zs.len() * ys.len() * xs.len());
        for &z in &zs {
            for &y in &ys {
                corners.extend(xs.iter().map(|&x| [z, y, x]));
            }
        }
        let crop = |t: &Tensor, [z, y, x]: [i64; 3]| {
            t.narrow(2, z, window[0])
                .narrow(3, y, window[1])
                .narrow(4, x, window[2])
        };
        for group in corners.chunks(self.batch) {
            let crops: Vec<Tensor> = group.iter().map(|&c| crop(&padded, c)).collect();
            let probs = self.window_probabilities(net, &Tensor::cat(&crops, 0));
            for (i, &corner) in group.iter().enumerate() {
                let _ = crop(&sum, corner).g_add_(&(probs.narrow(0, i as i64, 1) * &self.weights));
                let _ = crop(&count, corner).g_add_(&self.weights);
            }
        }
        (sum / count)
            .narrow(2, 0, shape[0])
            .narrow(3, 0, shape[1])
            .narrow(4, 0, shape[2])
    }

    /// Labels, `x` fastest, of a whole volume `[1, channels, z, y, x]`.
    pub fn labels(&self, net: &UNet, volume: &Tensor) -> Vec<u8> {
        labels_of(&self.probabilities(net, volume))
    }
}

/// Labels `x` fastest, as the cache stores them, from probabilities `[1, 4, z, y, x]`.
pub fn labels_of(probabilities: &Tensor) -> Vec<u8> {
    // Contiguous first, so the copy is x-fastest whatever layout the network's output has.
    let labels = probabilities
        .argmax(1, false)
        .to_kind(Kind::Uint8)
        .contiguous()
        .flatten(0, -1);
    let mut out = vec![0u8; labels.numel()];
    labels.copy_data(&mut out, labels.numel());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_axis_and_end_flush() {
        assert_eq!(window_starts(10, 4, 0.5), [0, 2, 4, 6]);
        assert_eq!(window_starts(4, 4, 0.5), [0]);
        assert_eq!(window_starts(3, 4, 0.5), [0]);
        assert_eq!(window_starts(11, 4, 0.0), [0, 4, 7]);
    }

    #[test]
    fn labels_read_the_same_from_either_memory_layout() {
        let probabilities = Tensor::rand([1, 4, 3, 4, 5], (Kind::Float, Device::Cpu));
        let channels_last = crate::model::channels_last(&probabilities);
        assert!(!channels_last.is_contiguous());
        let labels = labels_of(&probabilities);
        assert_eq!(labels_of(&channels_last), labels);
        // x fastest: voxel (x 1, y 2, z 0) is at 1 + 5 * 2.
        let at = probabilities.argmax(1, false).int64_value(&[0, 0, 2, 1]);
        assert_eq!(i64::from(labels[11]), at);
    }

    #[test]
    fn windows_batched_give_the_probabilities_of_windows_one_at_a_time() {
        use segtop::experiment::Experiment;
        use std::path::Path;
        let text = "[data]\nroot = \"d\"\n[model]\nbase_filters = 4\ndepth = 2\n\
                    [train]\npatch_size = [8, 8, 8]\n[validate]\nwindow_batch = 1\n";
        let mut experiment = Experiment::parse(Path::new("x.toml"), text, Path::new("/ws")).expect("valid");
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), &experiment.model, 4);
        // z 12, y 10, x 9 with 8^3 windows: 2 x 2 x 2 windows, and an odd batch of 3 leaves a
        // last batch of 2.
        let volume = Tensor::randn([1, 4, 12, 10, 9], (Kind::Float, Device::Cpu));
        let one = SlidingWindow::new(&experiment.validate);
        assert_eq!(one.count([12, 10, 9]), 8);
        let single = one.probabilities(&net, &volume);
        assert_eq!(single.size(), [1, 4, 12, 10, 9]);
        for batch in [2, 3, 8] {
            experiment.validate.window_batch = batch;
            let batched = SlidingWindow::new(&experiment.validate).probabilities(&net, &volume);
            let difference = (&batched - &single).abs().max().double_value(&[]);
            assert!(difference < 1e-5, "window batch {batch}: differs by {difference}");
        }
        // Probabilities: the classes sum to one everywhere.
        let total = single.sum_dim_intlist(1, false, Kind::Float);
        assert!((total - 1.0).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn mirroring_averages_the_flipped_passes() {
        use segtop::experiment::Experiment;
        use std::path::Path;
        let text = "[data]\nroot = \"d\"\n[model]\nbase_filters = 4\ndepth = 2\n[train]\npatch_size = [8, 8, 8]\n";
        let experiment = Experiment::parse(Path::new("x.toml"), text, Path::new("/ws")).expect("valid");
        tch::manual_seed(3);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), &experiment.model, 4);
        let volume = Tensor::randn([1, 4, 8, 8, 8], (Kind::Float, Device::Cpu));
        let plain = SlidingWindow::new(&experiment.validate);
        assert_eq!(plain.passes(), 1);
        // Mirroring over x alone: the mean of the plain pass and the x-flipped pass.
        let x_only = SlidingWindow::new(&experiment.validate).with_mirroring(&[0]);
        assert_eq!(x_only.passes(), 2);
        let flipped = plain.probabilities(&net, &volume.flip([4])).flip([4]);
        let expected = (plain.probabilities(&net, &volume) + flipped) / 2.0;
        let difference = (x_only.probabilities(&net, &volume) - &expected)
            .abs()
            .max()
            .double_value(&[]);
        assert!(difference < 1e-5, "differs by {difference}");
        assert_eq!(
            SlidingWindow::new(&experiment.validate)
                .with_mirroring(&[0, 1, 2, 2])
                .passes(),
            8
        );
        // The result of all 8 passes is the same for a mirrored input, mirrored back.
        let all = SlidingWindow::new(&experiment.validate).with_mirroring(&[0, 1, 2]);
        let a = all.probabilities(&net, &volume);
        let b = all.probabilities(&net, &volume.flip([2, 3])).flip([2, 3]);
        let difference = (a - b).abs().max().double_value(&[]);
        assert!(difference < 1e-5, "differs by {difference}");
    }

    #[test]
    fn gaussian_weights_peak_in_the_middle() {
        let w = gaussian_weights([8, 8, 8], true);
        assert!((w.double_value(&[4, 4, 4]) - w.max().double_value(&[])).abs() < 0.1);
        assert!(w.double_value(&[0, 0, 0]) < 0.01);
        assert!(w.min().double_value(&[]) > 0.0);
    }
}
