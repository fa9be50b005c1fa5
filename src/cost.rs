//! What an experiment's network costs, from its configuration alone: parameters, work per
//! patch and peak memory. The queue uses the memory estimate to admit runs, so this lives
//! with the schema and needs no libtorch; the trainer's tests check the counts against the
//! network it builds.

use crate::experiment::{Experiment, LauncherKind, ModelConfig, Norm, Precision, Upsample};

/// Bytes per float32.
const F32: u64 = 4;

/// Bytes of each activation value the network keeps between its convolutions, in tenths:
/// 40 in float32; in bfloat16 the values take 2 bytes, and the float32 statistics, masks and
/// buffers around them bring the measured share of the float32 figure to 0.55 (the seed U-Net's
/// training, with the fixed [`BF16_WORKSPACE`] apart: 0.47-0.58 of float32's per-batch memory
/// from 64^3 batch 2 to 128^3 batch 1). Inputs, logits, the loss's tensors and the whole-case
/// sums stay float32.
fn activation_tenth_bytes(precision: Precision) -> u64 {
    match precision {
        Precision::Bfloat16 => 22,
        Precision::Float32 | Precision::Auto => 10 * F32,
    }
}

/// Resident size of a process that has run libtorch on the CPU (measured: about 117 MB).
const RUNTIME: u64 = 120_000_000;

/// Values the network stores: weights and biases, and batch norm's running statistics, as
/// libtorch's variable store holds them.
pub fn parameter_count(config: &ModelConfig, in_channels: u64) -> u64 {
    let filters: Vec<u64> = config.filters().iter().map(|&f| u64::from(f)).collect();
    let conv = |cin: u64, cout: u64, k: u64| k * k * k * cin * cout + cout;
    let norm = |c: u64| match config.norm {
        Norm::None => 0,
        Norm::Batch => 4 * c,
        Norm::Instance | Norm::Group => 2 * c,
    };
    let block = |cin: u64, cout: u64| {
        let skip = if config.residual && cin != cout {
            conv(cin, cout, 1)
        } else {
            0
        };
        conv(cin, cout, 3) + conv(cout, cout, 3) + 2 * norm(cout) + skip
    };
    let mut count = 0;
    let mut cin = in_channels;
    for &f in &filters {
        count += block(cin, f);
        cin = f;
    }
    let classes = config.output.channels() as u64;
    for level in (1..filters.len()).rev() {
        let (from, to) = (filters[level], filters[level - 1]);
        count += match config.upsample {
            Upsample::Transposed => conv(from, to, 2),
            Upsample::Trilinear => conv(from, to, 1),
        };
        count += block(2 * to, to);
        if config.deep_supervision && level > 1 {
            count += conv(to, classes, 1);
        }
    }
    count + conv(filters[0], classes, 1)
}

/// Multiply-accumulates of one forward pass over one patch of `patch` voxels (`[x, y, z]`):
/// convolutions and transposed convolutions, which are all but all of the work.
pub fn macs_per_patch(config: &ModelConfig, in_channels: u64, patch: [u32; 3]) -> u64 {
    let filters: Vec<u64> = config.filters().iter().map(|&f| u64::from(f)).collect();
    let voxels = |level: usize| patch.iter().map(|&n| u64::from(n) >> level).product::<u64>();
    let mut macs = 0;
    let mut cin = in_channels;
    for (level, &f) in filters.iter().enumerate() {
        macs += voxels(level) * 27 * (cin * f + f * f);
        if config.residual && cin != f {
            macs += voxels(level) * cin * f;
        }
        cin = f;
    }
    for level in (1..filters.len()).rev() {
        let (from, to) = (filters[level], filters[level - 1]);
        macs += match config.upsample {
            // Each input voxel feeds 8 outputs.
            Upsample::Transposed => voxels(level) * 8 * from * to,
            Upsample::Trilinear => voxels(level - 1) * from * to,
        };
        macs += voxels(level - 1) * 27 * (2 * to * to + to * to);
        if config.residual {
            macs += voxels(level - 1) * 2 * to * to;
        }
    }
    macs + voxels(0) * filters[0] * config.output.channels() as u64
}

/// Peak memory of training: libtorch itself, the parameters with their gradients and two
/// optimizer moments, and the activations the backward pass keeps (each convolution's and
/// activation's output, the concatenations and the loss's softmax), plus the input batch.
pub fn training_bytes(experiment: &Experiment, precision: Precision) -> u64 {
    let parameters = parameter_count(&experiment.model, experiment.data.modalities.len() as u64);
    let filters: Vec<u64> = experiment.model.filters().iter().map(|&f| u64::from(f)).collect();
    let patch = experiment.train.patch_size;
    let voxels = |level: usize| patch.iter().map(|&n| u64::from(n) >> level).product::<u64>();
    // Tensors autograd keeps per block and channel: two convolution outputs and their
    // activations; with normalisation, also the normalised outputs and their statistics
    // (9 fits the measured lite network: 1140-1175 MB at 64^3, batch 2).
    let kept_per_block = if experiment.model.norm == Norm::None { 4 } else { 9 };
    let mut values = 0;
    for (level, &f) in filters.iter().enumerate() {
        values += voxels(level) * f * kept_per_block;
        if level > 0 {
            // Up-sampled tensor, concatenation, decoder block.
            let to = filters[level - 1];
            values += voxels(level - 1) * (to + 2 * to + to * kept_per_block);
        }
    }
    let channels = experiment.data.modalities.len() as u64;
    let floats = voxels(0) * (channels + 3 * experiment.model.output.channels() as u64);
    let counted = values * activation_tenth_bytes(precision) / 10 + floats * F32;
    // Calibration: the count above misses autograd's extra buffers, the allocator's slack and
    // the mapped cache pages the sampler touches. Training the seed at 64^3, batch 2 peaked at
    // 1229 MB RSS where this count gave 735 MB (120 runtime + 90 parameters + 525 per batch):
    // the per-batch part is scaled to match.
    const MEASURED_OVER_COUNTED: f64 = 1.9;
    let activations = (counted * u64::from(experiment.train.batch_size)) as f64 * MEASURED_OVER_COUNTED;
    RUNTIME + parameters * F32 * 4 + activations as u64 + bfloat16_workspace(precision)
}

/// What bfloat16 adds whatever the batch: oneDNN's bfloat16 kernels and their buffers, and
/// the bfloat16 copies of the weights (see [`BF16_WORKSPACE`]).
fn bfloat16_workspace(precision: Precision) -> u64 {
    match precision {
        Precision::Bfloat16 => BF16_WORKSPACE,
        Precision::Float32 | Precision::Auto => 0,
    }
}

/// See [`bfloat16_workspace`]. Fitted with [`activation_tenth_bytes`] to `segtop-train bench`
/// of the seed U-Net on an Intel Xeon with AMX (peak RSS, float32 against bfloat16): 827 / 726
/// MB at 64^3 batch 2, 1418 / 1005 MB at batch 4, 1338 / 1072 MB at 96^3 batch 1 and 2197 /
/// 1484 MB at 128^3 batch 1.
const BF16_WORKSPACE: u64 = 200_000_000;

/// Voxels of a typical BraTS case after cropping to the brain (160 x 192 x 144).
const BRATS_CROPPED_VOXELS: u64 = 160 * 192 * 144;

/// Peak memory of a validation pass: libtorch, the parameters with the optimizer's state
/// (still resident), one forward pass of `validate.window_batch` windows without autograd (the
/// encoder's outputs kept for the skip connections plus the top decoder level's working
/// tensors), and the whole-case tensors: the input, the weighted class-score sum, the weight
/// sum and the probabilities.
///
/// The same in either precision: the whole-case tensors stay float32, and bfloat16 windows
/// measured only 1-7% below float32's peak (808 / 797 MB for the seed U-Net's 64^3 windows over
/// a 240x240x155 case, 895 / 829 MB for the default network's), what bfloat16's own kernels
/// and buffers take back.
pub fn validation_bytes(experiment: &Experiment) -> u64 {
    let parameters = parameter_count(&experiment.model, experiment.data.modalities.len() as u64);
    let filters: Vec<u64> = experiment.model.filters().iter().map(|&f| u64::from(f)).collect();
    let window = experiment.validate.window;
    let voxels = |level: usize| window.iter().map(|&n| u64::from(n) >> level).product::<u64>();
    let mut window_floats: u64 = filters.iter().enumerate().map(|(level, &f)| voxels(level) * f).sum();
    let top = filters.first().copied().unwrap_or(0);
    let classes = experiment.model.output.channels() as u64;
    window_floats += voxels(0) * (5 * top + 2 * classes);
    let channels = experiment.data.modalities.len() as u64;
    let case_floats = BRATS_CROPPED_VOXELS * (channels + 2 * classes + 1);
    // Calibration: validating the seed network with 128^3 windows peaked at 1814 MB RSS where
    // this count gives 1357 MB (917 MB of it the window's tensors); the window part, which
    // misses the convolution workspace and the allocator's slack, is scaled to match. One
    // measurement only: treat the figure as a guide for admission, not a bound. A second
    // 128^3 window in the same pass added 742 MB (0.8 of its count): the workspace and slack
    // are not doubled.
    const MEASURED_OVER_COUNTED: f64 = 1.5;
    const FURTHER_WINDOW_OVER_COUNTED: f64 = 0.8;
    let further = f64::from(experiment.validate.window_batch.max(1) - 1);
    let window_bytes = (window_floats * F32) as f64 * (MEASURED_OVER_COUNTED + further * FURTHER_WINDOW_OVER_COUNTED);
    RUNTIME + parameters * F32 * 4 + window_bytes as u64 + case_floats * F32
}

/// What a run of `experiment` needs at its peak: the larger of training and validation, in
/// the precision it will compute in (see [`run_precision`]).
pub fn peak_bytes(experiment: &Experiment) -> u64 {
    peak_bytes_in(experiment, run_precision(experiment))
}

/// [`peak_bytes`] computing in `precision` (`auto` counts as float32).
pub fn peak_bytes_in(experiment: &Experiment, precision: Precision) -> u64 {
    training_bytes(experiment, precision).max(validation_bytes(experiment))
}

/// The precision a run of `experiment` will compute in: `train.precision` resolved on this
/// machine for runs here; for Slurm runs, whose node is not known yet, bfloat16 only when
/// asked for outright (`auto` counts as float32, which needs more memory).
pub fn run_precision(experiment: &Experiment) -> Precision {
    match (experiment.run.launcher, experiment.train.precision) {
        (LauncherKind::Slurm, Precision::Bfloat16) => Precision::Bfloat16,
        (LauncherKind::Slurm, _) => Precision::Float32,
        (_, precision) => crate::cpu::resolve_here(precision).0,
    }
}
