//! The network a run trains, built from its experiment, and one optimizer step on a batch.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor, nn};

use segtop::data::sampler::Batch;
use segtop::experiment::{Experiment, Precision, blocks_frozen};

use crate::infer;
use crate::loss::Loss;
use crate::model::UNet;
use crate::optim::Optimizer;

/// The experiment's network (seeded), its parameters, optimizer and loss.
pub(crate) struct Network {
    pub vs: nn::VarStore,
    pub net: UNet,
    /// `train.precision` resolved on this machine, and why.
    pub precision: (Precision, String),
    pub optimizer: Optimizer,
    pub loss: Loss,
    pub parameter_count: u64,
}

impl Network {
    pub fn build(experiment: &Experiment) -> Network {
        let vs = nn::VarStore::new(Device::Cpu);
        tch::manual_seed(experiment.train.seed as i64);
        let channels = experiment.data.modalities.len();
        let precision = segtop::cpu::resolve_here(experiment.train.precision);
        let net = UNet::new(&vs.root(), &experiment.model, channels as i64).with_precision(precision.0);
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let parameter_count: u64 = params.iter().map(|(_, p)| p.numel() as u64).sum();
        // Frozen blocks: no gradient, and no place in the optimizer (so no state either).
        let frozen = &experiment.train.freeze;
        params.retain_mut(|(name, parameter)| {
            let keep = !blocks_frozen(frozen, name);
            if !keep {
                let _ = parameter.set_requires_grad(false);
            }
            keep
        });
        let optimizer = Optimizer::new(params, &experiment.train);
        let loss = Loss::new(&experiment.train.loss, experiment.model.output);
        Network {
            vs,
            net,
            precision,
            optimizer,
            loss,
            parameter_count,
        }
    }
}

/// One optimizer step on a batch; returns the loss and its parts.
pub(crate) fn train_step(
    net: &UNet,
    loss: &Loss,
    optimizer: &mut Optimizer,
    batch: &Batch,
    deep_supervision: bool,
) -> (f64, BTreeMap<String, f64>) {
    let [x, y, z] = batch.patch.map(|n| n as i64);
    let (b, c) = (batch.size as i64, batch.channels as i64);
    let images = Tensor::from_slice(&batch.images).view([b, c, z, y, x]);
    let labels = Tensor::from_slice(&batch.labels)
        .to_kind(Kind::Int64)
        .view([b, z, y, x]);
    optimizer.zero_grad();
    let (logits, aux) = net.forward_all(&images, true);
    let main = loss.compute(&logits, &labels);
    let total = if deep_supervision && !aux.is_empty() {
        // nnU-Net's weighting: halve per level down, normalised; targets by nearest down-sampling.
        let mut weighted = vec![main.total.shallow_clone()];
        let mut weight_sum = 1.0;
        for (i, out) in aux.iter().rev().enumerate() {
            let stride = 2i64 << i;
            let target = labels
                .slice(1, 0, None, stride)
                .slice(2, 0, None, stride)
                .slice(3, 0, None, stride);
            let w = 0.5f64.powi(i as i32 + 1);
            weight_sum += w;
            weighted.push(loss.compute(out, &target).total * w);
        }
        Tensor::stack(&weighted, 0).sum(Kind::Float) / weight_sum
    } else {
        main.total.shallow_clone()
    };
    total.backward();
    optimizer.step();
    let parts = main
        .parts
        .iter()
        .map(|(name, t)| (name.to_string(), t.double_value(&[])))
        .collect();
    (total.double_value(&[]), parts)
}

/// The network's labels for a training batch, without gradients, for the seed Dice.
pub(super) fn batch_labels_predicted(net: &UNet, batch: &Batch) -> Vec<u8> {
    let _guard = tch::no_grad_guard();
    let [x, y, z] = batch.patch.map(|n| n as i64);
    let images = Tensor::from_slice(&batch.images).view([batch.size as i64, batch.channels as i64, z, y, x]);
    let logits = tch::nn::ModuleT::forward_t(net, &images, false);
    infer::labels_of(net.output(), &net.probabilities(&logits))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn frozen_blocks_keep_their_weights_through_steps_and_have_no_optimizer_state() {
        let text = "[data]\nroot = \"d\"\n[model]\nbase_filters = 4\ndepth = 3\n\
                    [train]\nfreeze = [\"enc.0\", \"up\"]\nlr = 0.01\nprecision = \"float32\"\n";
        let experiment = Experiment::parse(Path::new("x.toml"), text, Path::new("/ws")).expect("valid");
        let Network {
            vs,
            net,
            mut optimizer,
            loss,
            ..
        } = Network::build(&experiment);
        let before: BTreeMap<String, Tensor> = vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
        let mut batch = Batch::new(2, 4, [16, 16, 16]);
        for (i, value) in batch.images.iter_mut().enumerate() {
            *value = ((i * 7919) % 101) as f32 / 50.0 - 1.0;
        }
        for (i, label) in batch.labels.iter_mut().enumerate() {
            *label = ((i / 300) % 4) as u8;
        }
        for _ in 0..3 {
            train_step(&net, &loss, &mut optimizer, &batch, false);
        }
        let frozen = ["enc.0".to_string(), "up".to_string()];
        let mut changed = 0;
        for (name, tensor) in vs.variables() {
            let same = tensor.equal(&before[&name]);
            if blocks_frozen(&frozen, &name) {
                assert!(same, "{name} is frozen but changed");
            } else if !same {
                changed += 1;
            }
        }
        assert!(changed > 10, "only {changed} trainable tensors changed");
        let (moments, _) = optimizer.state();
        assert!(!moments.is_empty());
        for (name, _) in moments {
            let parameter = name.split_once('.').map_or(name.as_str(), |(_, p)| p);
            assert!(
                !blocks_frozen(&frozen, parameter),
                "optimizer state for frozen {parameter}"
            );
        }
    }
}
