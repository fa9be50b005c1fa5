//! The 3D U-Net: the seed tutorial's network and its lighter variants.
//!
//! With `norm = "none"`, `residual = false`, transposed up-sampling and no deep supervision,
//! the network is exactly the seed's: parameter names and shapes equal the PyTorch
//! `state_dict` of `SeedUNet` in the reference benchmark (`enc.0.0.weight`, `up.0.weight`,
//! `dec.3.3.bias`, `out.weight`, ...), so weights move between the two in safetensors. Each
//! level is laid out like an `nn.Sequential`: conv, [norm], activation, dropout, conv, [norm],
//! activation, and the indices of the parameters follow that order.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use segtop::experiment::{Activation, ModelConfig, Norm, Output, Precision, Upsample};

/// The share of a training patch's voxels a region head starts by calling tumour: about what
/// the whole tumour fills of a foreground-oversampled 64^3 patch of BraTS.
const RARE_REGION_PRIOR: f64 = 0.1;

/// He-uniform weights (Keras's `he_uniform`), zero biases, as the seed initialises.
fn conv_config(padding: i64) -> nn::ConvConfigND<i64> {
    nn::ConvConfigND {
        padding,
        ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    }
}

/// A 3D convolution (stride 1) with channels-last weights (see [`channels_last`]), run in the
/// network's compute kind.
#[derive(Debug)]
struct Conv {
    layer: nn::Conv3D,
    padding: i64,
}

impl Conv {
    fn new(vs: nn::Path, cin: i64, cout: i64, kernel: i64) -> Conv {
        let padding = (kernel - 1) / 2;
        let mut layer = nn::conv3d(vs, cin, cout, kernel, conv_config(padding));
        store_channels_last(&mut layer.ws);
        Conv { layer, padding }
    }

    /// Starts the biases at the logit of [`RARE_REGION_PRIOR`]: a region head then begins by
    /// calling few voxels tumour, as few are, instead of half of them (a sigmoid of 0), which
    /// the losses otherwise spend their first hundred steps unlearning (RetinaNet's prior
    /// initialisation).
    fn start_rare(&self) {
        if let Some(bias) = &self.layer.bs {
            let logit = (RARE_REGION_PRIOR / (1.0 - RARE_REGION_PRIOR)).ln();
            tch::no_grad(|| {
                let _ = bias.shallow_clone().fill_(logit);
            });
        }
    }

    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        let weight = in_kind(&self.layer.ws, kind);
        let bias = self.layer.bs.as_ref().map(|b| in_kind(b, kind));
        in_kind(x, kind).conv3d(&weight, bias.as_ref(), [1; 3], [self.padding; 3], [1; 3], 1)
    }
}

/// A 2x2x2 transposed convolution of stride 2 with channels-last weights.
#[derive(Debug)]
struct ConvTranspose {
    layer: nn::ConvTranspose3D,
}

impl ConvTranspose {
    fn new(vs: nn::Path, cin: i64, cout: i64) -> ConvTranspose {
        let config = nn::ConvTransposeConfigND {
            stride: 2,
            ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let mut layer = nn::conv_transpose3d(vs, cin, cout, 2, config);
        store_channels_last(&mut layer.ws);
        ConvTranspose { layer }
    }

    fn forward(&self, x: &Tensor, kind: Kind) -> Tensor {
        let weight = in_kind(&self.layer.ws, kind);
        let y = in_kind(x, kind).conv_transpose3d(&weight, None::<Tensor>, [2; 3], [0; 3], [0; 3], 1, [1; 3]);
        // The bias is added apart: oneDNN 3.12 has no optimised bfloat16 bias gradient for
        // channels-last transposed convolutions, and its reference one took 4% of a seed U-Net
        // step, where autograd's sum over the broadcast costs next to nothing.
        match &self.layer.bs {
            Some(bias) => y + in_kind(bias, kind).view([1, -1, 1, 1, 1]),
            None => y,
        }
    }
}

/// `x` in `kind`, keeping its memory layout. Casting a parameter is part of the autograd graph,
/// as under PyTorch's autocast: the bfloat16 copy's gradient reaches the float32 master weight.
fn in_kind(x: &Tensor, kind: Kind) -> Tensor {
    if x.kind() == kind {
        x.shallow_clone()
    } else {
        x.to_kind(kind)
    }
}

/// Re-lays a parameter's storage channels-last, in place: the variable store sees the same
/// tensor, and gradients and optimizer moments (`zeros_like`) follow its layout. With the
/// activations alone channels-last, oneDNN reorders the weights and their gradients at every
/// call; for the seed U-Net at 128^3 batch 1 that cost 9.1 s a step in PyTorch against 6.6-7.5 s
/// with both channels-last. Checkpoints are written contiguous, so files do not change.
fn store_channels_last(weight: &mut Tensor) {
    let _guard = tch::no_grad_guard();
    let relaid = channels_last(weight);
    weight.set_data(&relaid);
}

/// A normalisation layer over channels.
#[derive(Debug)]
enum NormLayer {
    Batch(nn::BatchNorm),
    /// Instance norm with a learned scale and shift per channel.
    Instance {
        weight: Tensor,
        bias: Tensor,
    },
    Group(nn::GroupNorm),
}

impl NormLayer {
    fn new(vs: nn::Path, norm: Norm, channels: i64, groups: i64) -> Option<NormLayer> {
        match norm {
            Norm::None => None,
            Norm::Batch => Some(NormLayer::Batch(nn::batch_norm3d(vs, channels, Default::default()))),
            Norm::Instance => Some(NormLayer::Instance {
                weight: vs.var("weight", &[channels], nn::Init::Const(1.0)),
                bias: vs.var("bias", &[channels], nn::Init::Const(0.0)),
            }),
            Norm::Group => Some(NormLayer::Group(nn::group_norm(
                vs,
                groups,
                channels,
                Default::default(),
            ))),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            NormLayer::Batch(bn) => bn.forward_t(x, train),
            // Instance norm as batch norm over each sample alone: the same function, and the
            // fastest kernels libtorch has for it on channels-last tensors. Its instance norm
            // makes the tensor contiguous (and the next convolution converts it back); its group
            // norm keeps channels-last but has slow kernels: in bfloat16 none at all (119 ms
            // forward and backward for 2x16x64^3 with the activation, against 30 ms), and in
            // float32 a backward pass that took 11% of a real run's time (the default network on
            // an AVX2 CPU), where this path made a step 13% shorter.
            NormLayer::Instance { weight, bias } => {
                if !train && let Some(y) = instance_norm_by_sums(x, weight, bias) {
                    return y;
                }
                let samples: Vec<Tensor> = x
                    .split(1, 0)
                    .iter()
                    .map(|sample| {
                        sample.batch_norm(
                            Some(weight),
                            Some(bias),
                            None::<&Tensor>,
                            None::<&Tensor>,
                            true,
                            0.1,
                            1e-5,
                            false,
                        )
                    })
                    .collect();
                Tensor::cat(&samples, 0)
            }
            NormLayer::Group(gn) => gn.forward_t(x, train),
        }
    }
}

/// Voxels per channel from which [`instance_norm_by_sums`] takes the layer: with 8 and 16
/// channels at 64^3 it was 2.5-3.5x faster than libtorch's path (batch 2, AVX2, 2 threads); at
/// 32^3 the two were even, and taking every layer made no difference to a whole case.
const SUMS_NORM_MIN_VOXELS: i64 = 1 << 17;

/// Above this ratio of a channel's squared mean to its variance, the one-pass variance loses
/// too many digits in float32 and [`instance_norm_by_sums`] leaves the layer to libtorch.
const SUMS_NORM_MAX_MEAN_TO_VARIANCE: f64 = 1e3;

/// Instance norm without autograd of a large float32 channels-last batch with few channels:
/// each sample's voxels `[voxels, channels]` summed, their squares summed, and one fused
/// multiply-add. libtorch's batch norm on channels-last tensors spent a fifth of the lite
/// network's inference collecting these statistics, and splitting the batch into samples cost a
/// copy. `None` where it does not apply (autograd, other kinds and layouts, small or wide
/// layers, or a channel whose mean dwarfs its spread).
fn instance_norm_by_sums(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Option<Tensor> {
    let size = x.size();
    let [n, c, d, h, w] = size[..] else {
        return None;
    };
    let voxels = d * h * w;
    let channels_last_strides = [voxels * c, 1, h * w * c, w * c, c];
    if x.kind() != Kind::Float
        || x.requires_grad()
        || c > 16
        || voxels < SUMS_NORM_MIN_VOXELS
        || x.stride() != channels_last_strides
    {
        return None;
    }
    let _guard = tch::no_grad_guard();
    let rows = x.permute([0, 2, 3, 4, 1]).view([n, voxels, c]);
    let mean = rows.sum_dim_intlist(1, false, Kind::Float) / voxels as f64;
    let squares = rows.square().sum_dim_intlist(1, false, Kind::Float) / voxels as f64;
    let variance = (squares - mean.square()).clamp_min(0.0);
    let conditioning = (mean.square() / variance.clamp_min(1e-12)).max().double_value(&[]);
    if !conditioning.is_finite() || conditioning > SUMS_NORM_MAX_MEAN_TO_VARIANCE {
        return None;
    }
    let scale = weight.view([1, c]) * (variance + 1e-5).rsqrt();
    let shift = bias.view([1, c]) - &mean * &scale;
    Some(shift.view([n, c, 1, 1, 1]).addcmul(x, &scale.view([n, c, 1, 1, 1])))
}

/// Two 3x3x3 convolutions with normalisation, activation and dropout between: one level.
#[derive(Debug)]
struct Block {
    conv1: Conv,
    norm1: Option<NormLayer>,
    conv2: Conv,
    norm2: Option<NormLayer>,
    /// 1x1x1 projection of the input for residual blocks whose channels change.
    skip: Option<Conv>,
    residual: bool,
    dropout: f64,
    activation: Activation,
}

impl Block {
    fn new(vs: nn::Path, cin: i64, cout: i64, dropout: f64, config: &ModelConfig) -> Block {
        let norm = config.norm != Norm::None;
        let groups = i64::from(config.groups);
        // Sequential indices: conv, [norm], act, dropout, conv, [norm], act.
        let (conv1, norm1, conv2, norm2) = if norm { (0, 1, 4, 5) } else { (0, 0, 3, 0) };
        Block {
            conv1: Conv::new(&vs / conv1, cin, cout, 3),
            norm1: NormLayer::new(&vs / norm1, config.norm, cout, groups),
            conv2: Conv::new(&vs / conv2, cout, cout, 3),
            norm2: NormLayer::new(&vs / norm2, config.norm, cout, groups),
            skip: (config.residual && cin != cout).then(|| Conv::new(&vs / "skip", cin, cout, 1)),
            residual: config.residual,
            dropout,
            activation: config.activation,
        }
    }

    /// The activation's slope below zero.
    fn negative_slope(&self) -> f64 {
        match self.activation {
            Activation::Relu => 0.0,
            // libtorch's default, which `leaky_relu_` uses.
            Activation::LeakyRelu => 0.01,
        }
    }

    fn activate(&self, mut x: Tensor) -> Tensor {
        match self.activation {
            Activation::Relu => x.relu_(),
            Activation::LeakyRelu => x.leaky_relu_(),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool, kind: Kind) -> Tensor {
        let mut h = self.conv1.forward(x, kind);
        if let Some(norm) = &self.norm1 {
            h = norm.forward_t(&h, train);
        }
        // With dropout, the activation and the dropout are one product with a mask drawn in
        // Rust (see [`activated_dropout`]): the backward pass keeps the mask alone, and neither
        // the activation nor its gradient is a pass of its own.
        h = if train && self.dropout > 0.0 {
            activated_dropout(&h, self.dropout, self.negative_slope())
        } else {
            self.activate(h)
        };
        h = self.conv2.forward(&h, kind);
        if let Some(norm) = &self.norm2 {
            h = norm.forward_t(&h, train);
        }
        if self.residual {
            h = match &self.skip {
                Some(skip) => h + skip.forward(x, kind),
                None => h + x,
            };
        }
        self.activate(h)
    }
}

/// Doubles the resolution and halves the channels.
#[derive(Debug)]
enum Up {
    Transposed(ConvTranspose),
    /// Trilinear interpolation, then a 1x1x1 convolution.
    Trilinear(Conv),
}

/// The U-Net.
#[derive(Debug)]
pub struct UNet {
    enc: Vec<Block>,
    up: Vec<Up>,
    dec: Vec<Block>,
    out: Conv,
    /// 1x1x1 heads on the lower decoder levels, for deep supervision.
    deep: Vec<Conv>,
    /// What the output channels stand for.
    output: Output,
    /// What the convolutions compute in: `Float`, or `BFloat16` with float32 parameters.
    kind: Kind,
}

impl UNet {
    /// Builds the network `config` describes for `in_channels` inputs, its parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &ModelConfig, in_channels: i64) -> UNet {
        let filters: Vec<i64> = config.filters().iter().map(|&f| i64::from(f)).collect();
        let depth = filters.len();
        let mut enc = Vec::with_capacity(depth);
        let mut cin = in_channels;
        for (level, &f) in filters.iter().enumerate() {
            enc.push(Block::new(vs / "enc" / level, cin, f, config.dropout[level], config));
            cin = f;
        }
        let mut up = Vec::with_capacity(depth - 1);
        let mut dec = Vec::with_capacity(depth - 1);
        let mut deep = Vec::new();
        let heads = config.output.channels() as i64;
        for (i, level) in (1..depth).rev().enumerate() {
            let (from, to) = (filters[level], filters[level - 1]);
            up.push(match config.upsample {
                Upsample::Transposed => Up::Transposed(ConvTranspose::new(vs / "up" / i, from, to)),
                Upsample::Trilinear => Up::Trilinear(Conv::new(vs / "up" / i, from, to, 1)),
            });
            dec.push(Block::new(
                vs / "dec" / i,
                2 * to,
                to,
                config.dropout[level - 1],
                config,
            ));
            if config.deep_supervision && level > 1 {
                deep.push(Conv::new(vs / "deep" / i, to, heads, 1));
            }
        }
        let out = Conv::new(vs / "out", filters[0], heads, 1);
        if config.output == Output::Regions {
            for head in deep.iter().chain([&out]) {
                head.start_rare();
            }
        }
        UNet {
            enc,
            up,
            dec,
            out,
            deep,
            output: config.output,
            kind: Kind::Float,
        }
    }

    /// The network computing in `precision` (float32 until set). Parameters stay float32
    /// whatever it is, so checkpoints do not change; in bfloat16 the convolutions take bfloat16
    /// copies of their weights and inputs, the activations between them stay bfloat16 (half
    /// the memory autograd keeps), and the logits come out float32 for the softmax and loss.
    pub fn with_precision(mut self, precision: Precision) -> UNet {
        self.kind = match precision {
            Precision::Bfloat16 => Kind::BFloat16,
            Precision::Float32 | Precision::Auto => Kind::Float,
        };
        self
    }

    /// What the output channels stand for.
    pub fn output(&self) -> Output {
        self.output
    }

    /// Probabilities `[batch, channels, z, y, x]` of the network's logits: a softmax over the
    /// labels, or a sigmoid per region.
    pub fn probabilities(&self, logits: &Tensor) -> Tensor {
        match self.output {
            Output::Labels => logits.softmax(1, Kind::Float),
            Output::Regions => logits.sigmoid(),
        }
    }

    /// Logits `[batch, 4 labels or 3 regions, z, y, x]` for input `[batch, channels, z, y, x]`, and, with deep
    /// supervision, logits of the lower decoder levels (coarsest first).
    pub fn forward_all(&self, x: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut skips = Vec::with_capacity(self.enc.len());
        let kind = self.kind;
        let mut h = in_kind(&channels_last(x), kind);
        for (level, block) in self.enc.iter().enumerate() {
            h = block.forward_t(&h, train, kind);
            if level + 1 < self.enc.len() {
                skips.push(h.shallow_clone());
                h = h.max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false);
            }
        }
        let mut aux = Vec::new();
        let mut deep = self.deep.iter();
        for (i, (up, block)) in self.up.iter().zip(&self.dec).enumerate() {
            let skip = skips.pop().unwrap_or_else(|| h.shallow_clone());
            let upsampled = match up {
                Up::Transposed(conv) => conv.forward(&h, kind),
                Up::Trilinear(conv) => {
                    let size = skip.size();
                    let upsampled = h.upsample_trilinear3d([size[2], size[3], size[4]], false, None, None, None);
                    conv.forward(&upsampled, kind)
                }
            };
            h = block.forward_t(&Tensor::cat(&[upsampled, skip], 1), train, kind);
            if i + 1 < self.dec.len()
                && let Some(head) = deep.next()
            {
                aux.push(head.forward(&h, kind).to_kind(Kind::Float));
            }
        }
        (self.out.forward(&h, kind).to_kind(Kind::Float), aux)
    }
}

/// An activation (ReLU, or leaky ReLU of `negative_slope`) followed by dropout, as one product
/// `x * mask`: each value is kept with probability `1 - p` and scaled by `1 / (1 - p)`, as
/// libtorch's `dropout` does, and the mask folds the activation's slope in (`1 / (1 - p)` where
/// `x > 0`, `negative_slope / (1 - p)` elsewhere, 0 where dropped). The gradient, the mask
/// again, is the composition's. libtorch draws dropout masks with `bernoulli_` (~16 ns a value
/// here: a sixth of a seed U-Net training step at 64^3); this mask comes from xoshiro256++,
/// seeded from libtorch's generator so that `tch::manual_seed` fixes it.
fn activated_dropout(x: &Tensor, p: f64, negative_slope: f64) -> Tensor {
    let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
    activated_dropout_seeded(x, p, negative_slope, seed as u64)
}

/// [`activated_dropout`] with the mask drawn from `seed`.
fn activated_dropout_seeded(x: &Tensor, p: f64, negative_slope: f64, seed: u64) -> Tensor {
    if p >= 1.0 {
        return x * 0.0;
    }
    match x.kind() {
        Kind::Float => activated_dropout_with::<f32>(x, p, negative_slope, seed),
        Kind::BFloat16 => activated_dropout_with::<half::bf16>(x, p, negative_slope, seed),
        _ => {
            let activated = if negative_slope == 0.0 {
                x.relu()
            } else {
                x.leaky_relu()
            };
            activated.dropout(p, true)
        }
    }
}

/// [`activated_dropout`] with `T`, `x`'s element type.
fn activated_dropout_with<T: MaskValue>(x: &Tensor, p: f64, negative_slope: f64, seed: u64) -> Tensor {
    // `empty_like` keeps a dense tensor's memory layout, so the mask lines up with `x` value
    // for value in memory; a view that is not dense is made so first.
    let mut mask = x.empty_like();
    let x = if mask.stride() == x.stride() {
        x.shallow_clone()
    } else {
        let dense = x.contiguous();
        mask = dense.empty_like();
        dense
    };
    let len = mask.numel();
    // SAFETY: `x` and `mask` are dense with the same strides and `len` values of the kind `T`
    // has the layout of; `mask` was just allocated and nothing else refers to it while the
    // slices live, and `x` is only read.
    let (values, out) = unsafe {
        (
            std::slice::from_raw_parts(x.data_ptr().cast::<T>().cast_const(), len),
            std::slice::from_raw_parts_mut(mask.data_ptr().cast::<T>(), len),
        )
    };
    fill_dropout_mask(out, values, p, negative_slope, seed);
    x * mask
}

/// A number a dropout mask holds: float32, or bfloat16 (where `1 / (1 - p)` rounds to 8
/// significant bits, as libtorch's own bfloat16 dropout rounds it). Masks are built on the
/// values' bit patterns, without branches, so the fill loop vectorises.
trait MaskValue: Copy {
    /// The bit pattern, as an unsigned integer of the same width.
    type Bits: Copy + Default;
    fn of(value: f32) -> Self::Bits;
    /// Whether the value is above zero (sign bit clear and not zero; NaN counts as above).
    fn is_positive(bits: Self::Bits) -> bool;
}

impl MaskValue for f32 {
    type Bits = u32;
    fn of(value: f32) -> u32 {
        value.to_bits()
    }
    fn is_positive(bits: u32) -> bool {
        (bits as i32) > 0
    }
}

impl MaskValue for half::bf16 {
    type Bits = u16;
    fn of(value: f32) -> u16 {
        half::bf16::from_f32(value).to_bits()
    }
    fn is_positive(bits: u16) -> bool {
        (bits as i16) > 0
    }
}

/// Fills `mask` for the values `x` (see [`activated_dropout`]): each value is kept when 16
/// random bits fall below `(1 - p) * 2^16` (so `p` counts to 1/65536), four values per 64-bit
/// draw of a generator seeded with `seed`. One thread: filling on two measured no faster in a
/// training step, as libtorch's idle intra-op threads spin on the other core meanwhile.
fn fill_dropout_mask<T: MaskValue>(mask: &mut [T], x: &[T], p: f64, negative_slope: f64, seed: u64) {
    debug_assert_eq!(mask.len(), x.len());
    // SAFETY: `T` and `T::Bits` have the same size and every bit pattern is valid for both.
    let (mask, x) = unsafe {
        (
            std::slice::from_raw_parts_mut(mask.as_mut_ptr().cast::<T::Bits>(), mask.len()),
            std::slice::from_raw_parts(x.as_ptr().cast::<T::Bits>(), x.len()),
        )
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let threshold = ((1.0 - p) * 65_536.0).round() as u32;
    let scale = 1.0 / (1.0 - p);
    let (above, below) = (T::of(scale as f32), T::of((scale * negative_slope) as f32));
    let zero = T::Bits::default();
    let value = |bits: u64, x: T::Bits| {
        let slope = if T::is_positive(x) { above } else { below };
        if ((bits & 0xffff) as u32) < threshold {
            slope
        } else {
            zero
        }
    };
    let mut out = mask.chunks_exact_mut(4);
    let mut values = x.chunks_exact(4);
    for (m, x) in (&mut out).zip(&mut values) {
        let bits = rng.next_u64();
        m[0] = value(bits, x[0]);
        m[1] = value(bits >> 16, x[1]);
        m[2] = value(bits >> 32, x[2]);
        m[3] = value(bits >> 48, x[3]);
    }
    let bits = rng.next_u64();
    for (k, (m, &x)) in out.into_remainder().iter_mut().zip(values.remainder()).enumerate() {
        *m = value(bits >> (16 * k), x);
    }
}

/// The same values with channels the fastest-moving axis in memory (PyTorch's
/// `channels_last_3d`) under the same `[batch, channels, z, y, x]` shape. oneDNN's 3D
/// convolutions are much faster on it, and their outputs keep it, so converting the input
/// once converts the whole network.
pub fn channels_last(x: &Tensor) -> Tensor {
    if x.dim() != 5 {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 4, 1]).contiguous().permute([0, 4, 1, 2, 3])
}

impl nn::ModuleT for UNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_all(x, train).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segtop::experiment::Norm;

    #[test]
    fn dropout_masks_keep_one_minus_p_of_the_values_independently_scaled_to_keep_the_mean() {
        let ones = vec![1f32; 200_001];
        let mut mask = vec![0f32; ones.len()];
        fill_dropout_mask(&mut mask, &ones, 0.3, 0.0, 11);
        let scale = (1.0 / 0.7) as f32;
        assert!(
            mask.iter().all(|&m| m == 0.0 || m == scale),
            "values other than 0 and 1/(1-p)"
        );
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / mask.len() as f64;
        // Binomial standard deviation at n = 200001 is 0.001.
        assert!((kept - 0.7).abs() < 0.005, "kept {kept}");
        let mean = mask.iter().map(|&m| f64::from(m)).sum::<f64>() / mask.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        // Neighbouring values (parts of one draw) are independent.
        for offset in 1..4 {
            let pairs = mask.len() / 4;
            let both = mask.chunks_exact(4).filter(|q| q[0] > 0.0 && q[offset] > 0.0).count() as f64 / pairs as f64;
            assert!((both - 0.49).abs() < 0.01, "both kept at offset {offset}: {both}");
        }
        let mut again = vec![0f32; mask.len()];
        fill_dropout_mask(&mut again, &ones, 0.3, 0.0, 11);
        assert_eq!(mask, again, "same seed, same mask");
        fill_dropout_mask(&mut again, &ones, 0.3, 0.0, 12);
        assert_ne!(mask, again);
    }

    #[test]
    fn bfloat16_masks_hold_the_rounded_scale_and_the_same_draws() {
        let ones = vec![half::bf16::ONE; 1001];
        let mut mask = vec![half::bf16::ZERO; ones.len()];
        fill_dropout_mask(&mut mask, &ones, 0.3, 0.0, 11);
        let mut reference = vec![0f32; ones.len()];
        fill_dropout_mask(&mut reference, &vec![1f32; ones.len()], 0.3, 0.0, 11);
        let scale = half::bf16::from_f32(1.0 / 0.7);
        for (m, r) in mask.iter().zip(&reference) {
            assert_eq!(*m == scale, *r > 0.0, "the same values are kept");
            assert!(*m == scale || *m == half::bf16::ZERO);
        }
    }

    /// An instance-norm layer with these scales and shifts, and the store that holds them.
    fn instance_norm(weights: &[f32], biases: &[f32]) -> (nn::VarStore, NormLayer) {
        let vs = nn::VarStore::new(Device::Cpu);
        let norm = NormLayer::new(vs.root(), Norm::Instance, weights.len() as i64, 8).expect("a norm");
        let NormLayer::Instance { weight, bias } = &norm else {
            panic!("an instance norm")
        };
        tch::no_grad(|| {
            weight.shallow_clone().copy_(&Tensor::from_slice(weights));
            bias.shallow_clone().copy_(&Tensor::from_slice(biases));
        });
        (vs, norm)
    }

    /// libtorch's own instance norm, the reference.
    fn libtorch_instance_norm(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
        Tensor::instance_norm(
            &x.contiguous(),
            Some(weight),
            Some(bias),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.1,
            1e-5,
            false,
        )
    }

    #[test]
    fn instance_norm_as_batch_norm_per_sample_equals_libtorch_instance_norm() {
        let (_vs, norm) = instance_norm(&[0.5, 1.0, 2.0, -1.0, 0.0, 3.0], &[0.0, 1.0, -1.0, 0.5, 2.0, 0.0]);
        let NormLayer::Instance { weight, bias } = &norm else {
            panic!("an instance norm")
        };
        let x = channels_last(&(Tensor::randn([2, 6, 5, 4, 3], (Kind::Float, Device::Cpu)) * 3.0 + 1.0))
            .set_requires_grad(true);
        let ours = norm.forward_t(&x, true);
        let reference = libtorch_instance_norm(&x, weight, bias);
        let difference = (&ours - &reference).abs().max().double_value(&[]);
        assert!(difference < 1e-5, "differs by {difference}");
        assert_eq!(ours.stride(), x.stride(), "the output stays channels-last");
        // The same gradients too, for the input and both parameters.
        let upstream = Tensor::randn(ours.size(), (Kind::Float, Device::Cpu));
        let gradients = |out: &Tensor| {
            let inputs = [x.shallow_clone(), weight.shallow_clone(), bias.shallow_clone()];
            Tensor::run_backward(&[(out * &upstream).sum(Kind::Float)], &inputs, true, false)
        };
        for (ours, reference) in gradients(&ours).iter().zip(gradients(&reference).iter()) {
            let difference = (ours - reference).abs().max().double_value(&[]);
            assert!(difference < 1e-4, "gradients differ by {difference}");
        }
    }

    #[test]
    fn instance_norm_in_inference_by_sums_equals_libtorch_instance_norm_and_falls_back_when_unfit() {
        let (_vs, norm) = instance_norm(
            &[0.5, 1.0, 2.0, -1.0, 0.0, 3.0, 1.5, 0.25],
            &[0.0, 1.0, -1.0, 0.5, 2.0, 0.0, -0.5, 0.1],
        );
        let NormLayer::Instance { weight, bias } = &norm else {
            panic!("an instance norm")
        };
        // Channels of different offsets and spreads, one of them constant.
        let offsets = Tensor::from_slice(&[0.0f32, 5.0, -3.0, 20.0, 1.0, 0.0, 2.0, 7.0]).view([1, 8, 1, 1, 1]);
        let spreads = Tensor::from_slice(&[1.0f32, 3.0, 0.5, 2.0, 1.0, 0.0, 4.0, 1.0]).view([1, 8, 1, 1, 1]);
        let x = channels_last(&(Tensor::randn([2, 8, 64, 64, 32], (Kind::Float, Device::Cpu)) * spreads + offsets));
        let fast = tch::no_grad(|| instance_norm_by_sums(&x, weight, bias)).expect("the path applies");
        let difference = (&fast - libtorch_instance_norm(&x, weight, bias))
            .abs()
            .max()
            .double_value(&[]);
        assert!(difference < 1e-3, "differs by {difference}");
        assert_eq!(fast.stride(), x.stride(), "the output stays channels-last");
        // The layer takes it in inference and gives the same values as in training.
        let layer = tch::no_grad(|| norm.forward_t(&x, false));
        let trained = tch::no_grad(|| norm.forward_t(&x, true));
        assert!((&layer - &fast).abs().max().double_value(&[]) == 0.0);
        assert!((&layer - &trained).abs().max().double_value(&[]) < 1e-3);
        // Where it does not apply: a mean that dwarfs the spread, a small layer, a contiguous
        // tensor, an input that needs gradients.
        let shifted = &x + 1e4;
        assert!(tch::no_grad(|| instance_norm_by_sums(&shifted, weight, bias)).is_none());
        let (inference, training) = tch::no_grad(|| (norm.forward_t(&shifted, false), norm.forward_t(&shifted, true)));
        assert!(
            inference.equal(&training),
            "the layer falls back to the per-sample batch norm"
        );
        let small = x.narrow(2, 0, 16).contiguous();
        assert!(tch::no_grad(|| instance_norm_by_sums(&channels_last(&small), weight, bias)).is_none());
        assert!(tch::no_grad(|| instance_norm_by_sums(&x.contiguous(), weight, bias)).is_none());
        assert!(instance_norm_by_sums(&x.set_requires_grad(true), weight, bias).is_none());
    }

    #[test]
    fn bfloat16_instance_norm_matches_float32_and_stays_channels_last() {
        let vs = nn::VarStore::new(Device::Cpu);
        let norm = NormLayer::new(vs.root(), Norm::Instance, 6, 8).expect("a norm");
        let x = channels_last(&(Tensor::randn([2, 6, 5, 4, 3], (Kind::Float, Device::Cpu)) * 3.0 + 1.0));
        let reference = norm.forward_t(&x, true);
        let half = norm.forward_t(&x.to_kind(Kind::BFloat16), true);
        assert_eq!(half.kind(), Kind::BFloat16);
        assert_eq!(half.stride(), x.stride(), "the output stays channels-last");
        let difference = (half.to_kind(Kind::Float) - &reference).abs().max().double_value(&[]);
        // Normalised values are within a few units; bfloat16 keeps 8 significant bits.
        assert!(difference < 0.05, "differs by {difference}");
    }

    #[test]
    fn dropout_follows_its_seed_and_keeps_the_layout_and_gradient() {
        let x = channels_last(&Tensor::ones([2, 3, 4, 5, 6], (Kind::Float, Device::Cpu))).set_requires_grad(true);
        let a = activated_dropout_seeded(&x, 0.5, 0.0, 5);
        let b = activated_dropout_seeded(&x, 0.5, 0.0, 5);
        assert!(a.equal(&b), "the seed fixes the mask");
        assert!(!a.equal(&activated_dropout_seeded(&x, 0.5, 0.0, 6)));
        assert_eq!(a.stride(), x.stride(), "the output keeps channels-last");
        let kept = a.gt(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!((200..520).contains(&kept), "kept {kept} of 720");
        assert_eq!(a.max().double_value(&[]), 2.0);
        a.sum(Kind::Float).backward();
        // The gradient is the scaled mask: 2 where kept, 0 where dropped.
        assert!(x.grad().equal(&a), "gradient equals the mask");
        // A view that is not dense gets a dense mask, with the same statistics.
        let strided = Tensor::ones([40, 40], (Kind::Float, Device::Cpu)).slice(1, 0, 40, 2);
        let kept = activated_dropout(&strided, 0.5, 0.0)
            .gt(0.0)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert!((300..500).contains(&kept), "kept {kept} of 800");
    }

    #[test]
    fn activated_dropout_is_the_activation_then_dropout_in_either_precision() {
        for (kind, tolerance) in [(Kind::Float, 1e-6), (Kind::BFloat16, 1e-2)] {
            for (slope, activation) in [(0.0, Activation::Relu), (0.01, Activation::LeakyRelu)] {
                let x = channels_last(&Tensor::randn([2, 3, 4, 5, 6], (Kind::Float, Device::Cpu)))
                    .to_kind(kind)
                    .set_requires_grad(true);
                let out = activated_dropout(&x, 0.25, slope);
                out.sum(Kind::Float).backward();
                let mask = x.grad().to_kind(Kind::Float);
                // Where the mask is 0 the value was dropped (or, for ReLU, below zero, where
                // the activation is 0 anyway).
                let kept = mask.ne(0.0);
                let activated = match activation {
                    Activation::Relu => x.relu(),
                    Activation::LeakyRelu => x.leaky_relu(),
                }
                .detach()
                .to_kind(Kind::Float);
                let expected = activated * kept.to_kind(Kind::Float) / 0.75;
                // Relative: bfloat16 rounds the scale and the product to 8 significant bits.
                let difference = ((out.detach().to_kind(Kind::Float) - &expected).abs() / (expected.abs() + 1.0))
                    .max()
                    .double_value(&[]);
                assert!(
                    difference < tolerance,
                    "{kind:?} {activation:?}: differs by {difference}"
                );
                // The gradient is the composition's: 1/(1-p) or slope/(1-p) where kept, else 0.
                let positive = x.detach().gt(0.0).to_kind(Kind::Float);
                let slope_mask = (positive * (1.0 - slope) + slope) * kept.to_kind(Kind::Float) / 0.75;
                let difference = (mask - slope_mask).abs().max().double_value(&[]);
                assert!(
                    difference < tolerance,
                    "{kind:?} {activation:?}: gradient differs by {difference}"
                );
                if slope > 0.0 {
                    let share = kept.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
                    assert!((0.55..0.95).contains(&share), "kept {share}");
                }
            }
        }
    }
}

/// The ONNX graph `segtop package` writes (`segtop::package::onnx`) against this network:
/// ONNX Runtime's output for the same weights and input, within 1e-4. Needs a python3 with
/// numpy and onnxruntime (`quickstart.sh test` installs them and runs these tests).
#[cfg(test)]
mod onnx_tests {
    use std::path::Path;

    use prost::Message;
    use segtop::experiment::{Experiment, ModelConfig};
    use segtop::package::onnx;
    use tch::nn::ModuleT;

    use super::*;

    fn shipped(name: &str) -> ModelConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments").join(name);
        Experiment::load(&path, Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("a shipped experiment")
            .model
    }

    /// ONNX Runtime's probabilities for `input` through the ONNX file at `model`.
    fn onnx_runtime(model: &Path, input: &Tensor) -> Tensor {
        let dir = model.parent().expect("a folder");
        let size = input.size();
        let values: Vec<f32> = Vec::<f32>::try_from(input.contiguous().flatten(0, -1)).expect("floats");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("input.f32"), bytes).expect("write");
        let script = r#"
import sys, numpy as np, onnxruntime as ort
model, folder, *shape = sys.argv[1:]
x = np.fromfile(f"{folder}/input.f32", dtype="<f4").reshape([int(s) for s in shape])
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
session.run(["probabilities"], {"image": x})[0].astype("<f4").tofile(f"{folder}/output.f32")
"#;
        let mut python = std::process::Command::new("python3");
        if let Some(path) = std::env::var_os("SEGTOP_TEST_PYTHONPATH") {
            python.env("PYTHONPATH", path);
        }
        let output = python
            .arg("-c")
            .arg(script)
            .arg(model)
            .arg(dir)
            .args(size.iter().map(|s| s.to_string()))
            .output()
            .expect("python3 runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let bytes = std::fs::read(dir.join("output.f32")).expect("output");
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_slice(&floats)
    }

    fn assert_onnx_matches(name: &str, config: &ModelConfig, shape: [i64; 5]) {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet::new(&vs.root(), config, shape[1]);
        // Trained-looking statistics: normalisation scales and shifts away from 1 and 0.
        tch::no_grad(|| {
            for (name, mut variable) in vs.variables() {
                if variable.dim() == 1 && !name.starts_with("out") {
                    variable.copy_(&(Tensor::rand_like(&variable) + 0.5));
                }
            }
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let weights_path = dir.path().join("w.safetensors");
        Tensor::write_safetensors(&crate::checkpoint::contiguous(vs.variables()), &weights_path).expect("save");
        let weights = onnx::Weights::read_safetensors(&weights_path).expect("reads");
        let model = onnx::export(config, shape[1] as usize, &weights, &[]).expect("exports");
        let model_path = dir.path().join("m.onnx");
        std::fs::write(&model_path, model.encode_to_vec()).expect("write");
        let input = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let ours = tch::no_grad(|| net.probabilities(&net.forward_t(&input, false)))
            .contiguous()
            .flatten(0, -1);
        let theirs = onnx_runtime(&model_path, &input);
        assert_eq!(ours.size(), theirs.size(), "{name}");
        let difference = (ours - theirs).abs().max().double_value(&[]);
        assert!(difference < 1e-4, "{name}: ONNX Runtime differs by {difference}");
    }

    #[test]
    #[ignore = "needs python3 with numpy and onnxruntime; quickstart.sh test installs them and runs it"]
    fn onnx_runtime_computes_what_segtop_computes_for_the_default_seed_and_lite_networks() {
        let default = ModelConfig::default();
        assert_onnx_matches("default", &default, [2, 4, 32, 32, 32]);
        assert_onnx_matches(
            "default with deep supervision",
            &ModelConfig {
                deep_supervision: true,
                ..default.clone()
            },
            [1, 4, 32, 32, 32],
        );
        assert_onnx_matches("seed-tutorial", &shipped("seed-tutorial.toml"), [1, 4, 32, 32, 32]);
        assert_onnx_matches("lite", &shipped("lite.toml"), [1, 4, 32, 48, 32]);
        // The other choices of [model]: batch and group norm, ReLU, trilinear up-sampling,
        // residual blocks, labels.
        let other = ModelConfig {
            depth: 3,
            base_filters: 8,
            norm: Norm::Group,
            groups: 4,
            activation: Activation::Relu,
            upsample: Upsample::Trilinear,
            residual: true,
            output: Output::Labels,
            ..ModelConfig::default()
        };
        assert_onnx_matches("group norm, trilinear, residual", &other, [1, 4, 16, 24, 16]);
        assert_onnx_matches(
            "batch norm",
            &ModelConfig {
                norm: Norm::Batch,
                ..other
            },
            [2, 4, 16, 16, 16],
        );
    }
}
