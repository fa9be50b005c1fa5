//! Whole-volume inference by sliding window: overlapping windows, each weighted by a
//! Gaussian centred in it (nnU-Net's sigma of an eighth of the window), so that window edges,
//! where the network sees least context, count least.
//!
//! And the way from probabilities to labels for either kind of network output
//! ([`labels_of`]): the most probable label, or the regions thresholded at 0.5 and nested
//! outermost first, as nnU-Net's `regions_class_order` does.

use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use segtop::data::cache::CachedCase;
use segtop::experiment::{Output, ValidateConfig};

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

    /// Probabilities of a batch of windows (labels' softmax or regions' sigmoids), averaged
    /// over the mirrorings.
    fn window_probabilities(&self, net: &UNet, windows: &Tensor) -> Tensor {
        let mut sum: Option<Tensor> = None;
        for dims in &self.mirrors {
            let probs = if dims.is_empty() {
                net.probabilities(&net.forward_t(windows, false))
            } else {
                net.probabilities(&net.forward_t(&windows.flip(dims.as_slice()), false))
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
            None => net.probabilities(&net.forward_t(windows, false)),
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

    /// Probabilities `[1, 4 labels or 3 regions, z, y, x]` of a whole volume
    /// `[1, channels, z, y, x]`.
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
        let classes = net.output().channels() as i64;
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
                // One fused pass: the weighted probabilities are not made first.
                let _ = crop(&sum, corner).addcmul_(&probs.narrow(0, i as i64, 1), &self.weights);
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
        labels_of(net.output(), &self.probabilities(net, volume))
    }
}

/// Labels `x` fastest, as the cache stores them (BraTS 2023: 1 NCR, 2 ED, 3 ET), from
/// probabilities `[batch, channels, z, y, x]` of an `output` kind.
///
/// Labels: the most probable. Regions (WT, TC, ET): a voxel whose whole-tumour probability is
/// above 0.5 is oedema, above 0.5 for tumour core necrosis, above 0.5 for enhancing tumour
/// enhancing, each overriding the one before; exactly 0.5 is outside. An inner region above
/// 0.5 thus wins over an outer one below, so the labels' regions stay nested (ET inside TC
/// inside WT) whatever the network says.
pub fn labels_of(output: Output, probabilities: &Tensor) -> Vec<u8> {
    let labels = match output {
        Output::Labels => probabilities.argmax(1, false).to_kind(Kind::Uint8),
        Output::Regions => {
            let above = |region: i64| probabilities.select(1, region).gt(0.5);
            let mut labels = probabilities.select(1, 0).zeros_like().to_kind(Kind::Uint8);
            for (region, label) in [(0, 2), (1, 1), (2, 3)] {
                labels = labels.masked_fill(&above(region), label);
            }
            labels
        }
    };
    // Contiguous first, so the copy is x-fastest whatever layout the network's output has.
    let labels = labels.contiguous().flatten(0, -1);
    let mut out = vec![0u8; labels.numel()];
    labels.copy_data(&mut out, labels.numel());
    out
}

/// Region probabilities `[batch, 3, z, y, x]` (WT, TC, ET) of probabilities of an `output`
/// kind: a label softmax sums into the regions each label belongs to (WT = NCR + ED + ET,
/// TC = NCR + ET, ET), which is the probability of each region under the softmax. Networks
/// of both kinds average in this form.
pub fn as_regions(output: Output, probabilities: &Tensor) -> Tensor {
    match output {
        Output::Regions => probabilities.shallow_clone(),
        Output::Labels => {
            let label = |l: i64| probabilities.narrow(1, l, 1);
            let et = label(3);
            let tc = label(1) + &et;
            let wt = &tc + label(2);
            Tensor::cat(&[wt, tc, et], 1)
        }
    }
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
        let labels = labels_of(Output::Labels, &probabilities);
        assert_eq!(labels_of(Output::Labels, &channels_last), labels);
        assert_eq!(
            labels_of(Output::Regions, &channels_last.narrow(1, 0, 3)),
            labels_of(Output::Regions, &probabilities.narrow(1, 0, 3))
        );
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
        // Three region probabilities by default.
        assert_eq!(single.size(), [1, 3, 12, 10, 9]);
        for batch in [2, 3, 8] {
            experiment.validate.window_batch = batch;
            let batched = SlidingWindow::new(&experiment.validate).probabilities(&net, &volume);
            let difference = (&batched - &single).abs().max().double_value(&[]);
            assert!(difference < 1e-5, "window batch {batch}: differs by {difference}");
        }
        // Region probabilities: each a sigmoid, in (0, 1).
        assert!(single.min().double_value(&[]) > 0.0 && single.max().double_value(&[]) < 1.0);
        // Label probabilities: the classes sum to one everywhere.
        experiment.model.output = Output::Labels;
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let labels_net = UNet::new(&vs.root(), &experiment.model, 4);
        let labels = SlidingWindow::new(&experiment.validate).probabilities(&labels_net, &volume);
        assert_eq!(labels.size(), [1, 4, 12, 10, 9]);
        let total = labels.sum_dim_intlist(1, false, Kind::Float);
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

    /// Probabilities `[1, 3, 1, 1, n]` of regions WT, TC, ET, one voxel per triple.
    fn regions(voxels: &[[f32; 3]]) -> Tensor {
        let n = voxels.len() as i64;
        let flat: Vec<f32> = (0..3).flat_map(|r| voxels.iter().map(move |v| v[r])).collect();
        Tensor::from_slice(&flat).view([1, 3, 1, 1, n])
    }

    #[test]
    fn regions_become_nested_labels_innermost_winning_and_one_half_is_outside() {
        let labels = labels_of(
            Output::Regions,
            &regions(&[
                [0.1, 0.1, 0.1], // background
                [0.9, 0.1, 0.1], // oedema
                [0.9, 0.8, 0.2], // necrosis
                [0.9, 0.8, 0.7], // enhancing
                [0.2, 0.1, 0.9], // enhancing although WT says no: inner wins, regions stay nested
                [0.3, 0.6, 0.4], // necrosis inside nothing: still tumour core, so tumour
                [0.5, 0.5, 0.5], // exactly one half: outside every region
                [0.5001, 0.5, 0.5],
            ]),
        );
        assert_eq!(labels, [0, 2, 1, 3, 3, 1, 0, 2]);
        // Every label's regions hold: ET inside TC inside WT.
        for l in labels {
            assert!(l <= 3);
        }
    }

    #[test]
    fn label_probabilities_sum_into_regions_and_keep_their_labels() {
        // Softmax over (background, NCR, ED, ET) for four voxels.
        let probs = [
            [0.7f32, 0.1, 0.1, 0.1],
            [0.1, 0.2, 0.6, 0.1],
            [0.1, 0.45, 0.1, 0.35],
            [0.05, 0.1, 0.15, 0.7],
        ];
        let flat: Vec<f32> = (0..4).flat_map(|c| probs.iter().map(move |p| p[c])).collect();
        let labels_probs = Tensor::from_slice(&flat).view([1, 4, 1, 1, 4]);
        let as_r = as_regions(Output::Labels, &labels_probs);
        assert_eq!(as_r.size(), [1, 3, 1, 1, 4]);
        let at = |r: i64, v: i64| as_r.double_value(&[0, r, 0, 0, v]);
        assert!((at(0, 1) - 0.9).abs() < 1e-6 && (at(1, 1) - 0.3).abs() < 1e-6 && (at(2, 1) - 0.1).abs() < 1e-6);
        // Here the label argmax and the thresholded regions agree.
        assert_eq!(
            labels_of(Output::Regions, &as_r),
            labels_of(Output::Labels, &labels_probs)
        );
        // Region probabilities pass through unchanged.
        let r = regions(&[[0.9, 0.2, 0.1]]);
        assert!(as_regions(Output::Regions, &r).equal(&r));
    }

    #[test]
    fn gaussian_weights_peak_in_the_middle() {
        let w = gaussian_weights([8, 8, 8], true);
        assert!((w.double_value(&[4, 4, 4]) - w.max().double_value(&[])).abs() < 0.1);
        assert!(w.double_value(&[0, 0, 0]) < 0.01);
        assert!(w.min().double_value(&[]) > 0.0);
    }
}
