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

use segtop::experiment::{Activation, ModelConfig, NUM_CLASSES, Norm, Upsample};

/// He-uniform weights (Keras's `he_uniform`), zero biases, as the seed initialises.
fn conv_config(padding: i64, stride: i64) -> nn::ConvConfigND<i64> {
    nn::ConvConfigND {
        padding,
        stride,
        ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    }
}

/// A 3D convolution with channels-last weights (see [`channels_last`]).
fn conv3d(vs: nn::Path, cin: i64, cout: i64, kernel: i64, config: nn::ConvConfigND<i64>) -> nn::Conv3D {
    let mut conv = nn::conv3d(vs, cin, cout, kernel, config);
    store_channels_last(&mut conv.ws);
    conv
}

/// A 3D transposed convolution with channels-last weights.
fn conv_transpose3d(
    vs: nn::Path,
    cin: i64,
    cout: i64,
    kernel: i64,
    config: nn::ConvTransposeConfigND<i64>,
) -> nn::ConvTranspose3D {
    let mut conv = nn::conv_transpose3d(vs, cin, cout, kernel, config);
    store_channels_last(&mut conv.ws);
    conv
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
            // Instance norm as group norm with one group per channel: the same function, but
            // libtorch's group norm keeps channels-last, where its instance norm makes the
            // tensor contiguous and the next convolution converts it back.
            NormLayer::Instance { weight, bias } => {
                x.group_norm(weight.size()[0], Some(weight), Some(bias), 1e-5, false)
            }
            NormLayer::Group(gn) => gn.forward_t(x, train),
        }
    }
}

/// Two 3x3x3 convolutions with normalisation, activation and dropout between: one level.
#[derive(Debug)]
struct Block {
    conv1: nn::Conv3D,
    norm1: Option<NormLayer>,
    conv2: nn::Conv3D,
    norm2: Option<NormLayer>,
    /// 1x1x1 projection of the input for residual blocks whose channels change.
    skip: Option<nn::Conv3D>,
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
            conv1: conv3d(&vs / conv1, cin, cout, 3, conv_config(1, 1)),
            norm1: NormLayer::new(&vs / norm1, config.norm, cout, groups),
            conv2: conv3d(&vs / conv2, cout, cout, 3, conv_config(1, 1)),
            norm2: NormLayer::new(&vs / norm2, config.norm, cout, groups),
            skip: (config.residual && cin != cout).then(|| conv3d(&vs / "skip", cin, cout, 1, conv_config(0, 1))),
            residual: config.residual,
            dropout,
            activation: config.activation,
        }
    }

    fn activate(&self, mut x: Tensor) -> Tensor {
        match self.activation {
            Activation::Relu => x.relu_(),
            Activation::LeakyRelu => x.leaky_relu_(),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.apply(&self.conv1);
        if let Some(norm) = &self.norm1 {
            h = norm.forward_t(&h, train);
        }
        // Dropout before the activation: with a mask of 0 and 1/(1-p) the two commute (ReLU and
        // leaky ReLU are positively homogeneous), and in this order the activation runs in
        // place on dropout's output, so the backward pass keeps one tensor for the activation
        // and the next convolution, besides the mask.
        if train && self.dropout > 0.0 {
            h = dropout(&h, self.dropout);
        }
        h = self.activate(h);
        h = h.apply(&self.conv2);
        if let Some(norm) = &self.norm2 {
            h = norm.forward_t(&h, train);
        }
        if self.residual {
            h = match &self.skip {
                Some(skip) => h + x.apply(skip),
                None => h + x,
            };
        }
        self.activate(h)
    }
}

/// Doubles the resolution and halves the channels.
#[derive(Debug)]
enum Up {
    Transposed(nn::ConvTranspose3D),
    /// Trilinear interpolation, then a 1x1x1 convolution.
    Trilinear(nn::Conv3D),
}

/// The U-Net.
#[derive(Debug)]
pub struct UNet {
    enc: Vec<Block>,
    up: Vec<Up>,
    dec: Vec<Block>,
    out: nn::Conv3D,
    /// 1x1x1 heads on the lower decoder levels, for deep supervision.
    deep: Vec<nn::Conv3D>,
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
        for (i, level) in (1..depth).rev().enumerate() {
            let (from, to) = (filters[level], filters[level - 1]);
            up.push(match config.upsample {
                Upsample::Transposed => Up::Transposed(conv_transpose3d(
                    vs / "up" / i,
                    from,
                    to,
                    2,
                    nn::ConvTransposeConfigND {
                        stride: 2,
                        ws_init: nn::init::DEFAULT_KAIMING_UNIFORM,
                        bs_init: nn::Init::Const(0.0),
                        ..Default::default()
                    },
                )),
                Upsample::Trilinear => Up::Trilinear(conv3d(vs / "up" / i, from, to, 1, conv_config(0, 1))),
            });
            dec.push(Block::new(
                vs / "dec" / i,
                2 * to,
                to,
                config.dropout[level - 1],
                config,
            ));
            if config.deep_supervision && level > 1 {
                deep.push(conv3d(vs / "deep" / i, to, NUM_CLASSES as i64, 1, conv_config(0, 1)));
            }
        }
        let out = conv3d(vs / "out", filters[0], NUM_CLASSES as i64, 1, conv_config(0, 1));
        UNet {
            enc,
            up,
            dec,
            out,
            deep,
        }
    }

    /// Class logits `[batch, 4, z, y, x]` for input `[batch, channels, z, y, x]`, and, with deep
    /// supervision, logits of the lower decoder levels (coarsest first).
    pub fn forward_all(&self, x: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut h = channels_last(x);
        for (level, block) in self.enc.iter().enumerate() {
            h = block.forward_t(&h, train);
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
                Up::Transposed(conv) => h.apply(conv),
                Up::Trilinear(conv) => {
                    let size = skip.size();
                    h.upsample_trilinear3d([size[2], size[3], size[4]], false, None, None, None)
                        .apply(conv)
                }
            };
            h = block.forward_t(&Tensor::cat(&[upsampled, skip], 1), train);
            if i + 1 < self.dec.len()
                && let Some(head) = deep.next()
            {
                aux.push(h.apply(head));
            }
        }
        (h.apply(&self.out), aux)
    }
}

/// Element-wise dropout: each value is kept with probability `1 - p` and scaled by `1 / (1 - p)`,
/// as libtorch's `dropout` does, in less time. libtorch draws its mask with `bernoulli_` (~16 ns
/// a value here: a sixth of a seed U-Net training step at 64^3); here the mask comes from
/// xoshiro256++, seeded from libtorch's generator so that `tch::manual_seed` fixes it.
fn dropout(x: &Tensor, p: f64) -> Tensor {
    if p >= 1.0 {
        return x * 0.0;
    }
    if x.kind() != Kind::Float {
        return x.dropout(p, true);
    }
    let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
    // `empty_like` keeps `x`'s memory layout when `x` is dense (so the product runs in one
    // layout) and is dense in any case.
    let mask = x.empty_like();
    let len = mask.numel();
    // SAFETY: `mask` was just allocated, dense, of `len` floats; nothing else refers to it while
    // the slice lives.
    let values = unsafe { std::slice::from_raw_parts_mut(mask.data_ptr().cast::<f32>(), len) };
    fill_dropout_mask(values, p, seed as u64);
    x * mask
}

/// Fills `mask` with `1 / (1 - p)` (kept, probability `1 - p`) or 0 (dropped), two values per
/// 64-bit draw of a generator seeded with `seed`. One thread: splitting the fill over threads
/// measured slower, as libtorch's idle intra-op threads spin on the other cores meanwhile.
fn fill_dropout_mask(mask: &mut [f32], p: f64, seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // A value is kept when its 32 random bits fall below (1 - p) * 2^32.
    let threshold = ((1.0 - p) * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    let scale = (1.0 / (1.0 - p)) as f32;
    let keep = |bits: u32| if bits < threshold { scale } else { 0.0 };
    let mut pairs = mask.chunks_exact_mut(2);
    for pair in &mut pairs {
        let bits = rng.next_u64();
        pair[0] = keep(bits as u32);
        pair[1] = keep((bits >> 32) as u32);
    }
    if let [last] = pairs.into_remainder() {
        *last = keep(rng.next_u64() as u32);
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
        let mut mask = vec![0f32; 200_001];
        fill_dropout_mask(&mut mask, 0.3, 11);
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
        // Neighbouring values (the two halves of one draw) are independent.
        let both = mask.chunks_exact(2).filter(|p| p[0] > 0.0 && p[1] > 0.0).count() as f64 / 100_000.0;
        assert!((both - 0.49).abs() < 0.01, "both kept {both}");
        let mut again = vec![0f32; mask.len()];
        fill_dropout_mask(&mut again, 0.3, 11);
        assert_eq!(mask, again, "same seed, same mask");
        fill_dropout_mask(&mut again, 0.3, 12);
        assert_ne!(mask, again);
    }

    #[test]
    fn instance_norm_as_one_group_per_channel_equals_libtorch_instance_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let norm = NormLayer::new(vs.root(), Norm::Instance, 6, 8).expect("a norm");
        let NormLayer::Instance { weight, bias } = &norm else {
            panic!("an instance norm")
        };
        tch::no_grad(|| {
            weight
                .shallow_clone()
                .copy_(&Tensor::from_slice(&[0.5f32, 1.0, 2.0, -1.0, 0.0, 3.0]));
            bias.shallow_clone()
                .copy_(&Tensor::from_slice(&[0.0f32, 1.0, -1.0, 0.5, 2.0, 0.0]));
        });
        let x = channels_last(&(Tensor::randn([2, 6, 5, 4, 3], (Kind::Float, Device::Cpu)) * 3.0 + 1.0));
        let ours = norm.forward_t(&x, true);
        let reference = Tensor::instance_norm(
            &x.contiguous(),
            Some(weight),
            Some(bias),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.1,
            1e-5,
            false,
        );
        let difference = (&ours - &reference).abs().max().double_value(&[]);
        assert!(difference < 1e-5, "differs by {difference}");
        assert_eq!(ours.stride(), x.stride(), "the output stays channels-last");
    }

    #[test]
    fn dropout_follows_the_torch_seed_and_keeps_the_layout_and_gradient() {
        let x = channels_last(&Tensor::ones([2, 3, 4, 5, 6], (Kind::Float, Device::Cpu))).set_requires_grad(true);
        tch::manual_seed(5);
        let a = dropout(&x, 0.5);
        tch::manual_seed(5);
        let b = dropout(&x, 0.5);
        assert!(a.equal(&b), "tch::manual_seed fixes the mask");
        assert_eq!(a.stride(), x.stride(), "the output keeps channels-last");
        let kept = a.gt(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!((200..520).contains(&kept), "kept {kept} of 720");
        assert_eq!(a.max().double_value(&[]), 2.0);
        a.sum(Kind::Float).backward();
        // The gradient is the scaled mask: 2 where kept, 0 where dropped.
        assert!(x.grad().equal(&a), "gradient equals the mask");
        // A view that is not dense gets a dense mask, with the same statistics.
        let strided = Tensor::ones([40, 40], (Kind::Float, Device::Cpu)).slice(1, 0, 40, 2);
        let kept = dropout(&strided, 0.5).gt(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!((300..500).contains(&kept), "kept {kept} of 800");
    }
}
