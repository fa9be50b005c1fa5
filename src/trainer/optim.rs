//! Optimizers and learning-rate schedules, written out so that all of their state can be
//! saved with a checkpoint and a resumed run continues exactly where it stopped.
//!
//! The update rules are PyTorch's (`torch.optim.Adam`, `AdamW`, `NAdam`, `SGD` with Nesterov
//! momentum), so curves compare with the reference implementation.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use segtop::experiment::{Optimizer as OptimizerKind, Schedule, TrainConfig};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
/// NAdam's momentum decay (PyTorch's default).
const MOMENTUM_DECAY: f64 = 0.004;

/// One optimizer over named parameters, with its moment tensors.
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<(String, Tensor)>,
    /// First moments (Adam family) or momentum buffers (SGD).
    m: Vec<Tensor>,
    /// Second moments (Adam family).
    v: Vec<Tensor>,
    pub step: i64,
    /// NAdam's running product of momentum coefficients.
    mu_product: f64,
    pub lr: f64,
    weight_decay: f64,
    momentum: f64,
    grad_clip: f64,
}

impl Optimizer {
    pub fn new(params: Vec<(String, Tensor)>, config: &TrainConfig) -> Optimizer {
        let zeros = |params: &[(String, Tensor)]| params.iter().map(|(_, p)| p.zeros_like()).collect();
        Optimizer {
            kind: config.optimizer,
            m: zeros(&params),
            v: zeros(&params),
            params,
            step: 0,
            mu_product: 1.0,
            lr: config.lr,
            weight_decay: config.weight_decay,
            momentum: config.momentum,
            grad_clip: config.grad_clip,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// Clips the gradient norm (when configured), applies one update and returns the norm
    /// before clipping.
    pub fn step(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        let norm = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.pow_tensor_scalar(2).sum(Kind::Float).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        let clip = if self.grad_clip > 0.0 && norm > self.grad_clip {
            self.grad_clip / (norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as f64;
        let (mu, mu_next) = (
            BETA1 * (1.0 - 0.5 * 0.96f64.powf(t * MOMENTUM_DECAY)),
            BETA1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * MOMENTUM_DECAY)),
        );
        if self.kind == OptimizerKind::Nadam {
            self.mu_product *= mu;
        }
        let lr = self.lr;
        for (i, (_, p)) in self.params.iter_mut().enumerate() {
            let grad = &grads[i];
            if !grad.defined() {
                continue;
            }
            let mut g = if clip < 1.0 { grad * clip } else { grad.shallow_clone() };
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            match self.kind {
                OptimizerKind::Sgd => {
                    // New tensors, not in-place sums: `g` may share the gradient's storage.
                    if self.weight_decay > 0.0 {
                        g = &g + &*p * self.weight_decay;
                    }
                    let _ = m.g_mul_scalar_(self.momentum).g_add_(&g);
                    let update = g + &*m * self.momentum;
                    let _ = p.g_sub_(&(update * lr));
                }
                OptimizerKind::Adamw | OptimizerKind::Adam | OptimizerKind::Nadam => {
                    if self.kind == OptimizerKind::Adamw {
                        let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                    } else if self.weight_decay > 0.0 {
                        g = &g + &*p * self.weight_decay;
                    }
                    let _ = m.g_mul_scalar_(BETA1).g_add_(&(&g * (1.0 - BETA1)));
                    let _ = v.g_mul_scalar_(BETA2).g_add_(&(g.square() * (1.0 - BETA2)));
                    let bias2 = 1.0 - BETA2.powf(t);
                    let denom = (&*v / bias2).sqrt() + EPS;
                    if self.kind == OptimizerKind::Nadam {
                        let a = lr * (1.0 - mu) / (1.0 - self.mu_product);
                        let b = lr * mu_next / (1.0 - self.mu_product * mu_next);
                        let _ = p.g_sub_(&(g / &denom * a + &*m / &denom * b));
                    } else {
                        let bias1 = 1.0 - BETA1.powf(t);
                        let _ = p.g_sub_(&(&*m / denom * (lr / bias1)));
                    }
                }
            }
        }
        norm
    }

    /// Everything needed to continue: moments by parameter name, and the scalars.
    pub fn state(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, f64>) {
        let mut tensors = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            tensors.push((format!("m.{name}"), self.m[i].shallow_clone()));
            tensors.push((format!("v.{name}"), self.v[i].shallow_clone()));
        }
        let scalars = BTreeMap::from([
            ("step".to_string(), self.step as f64),
            ("mu_product".to_string(), self.mu_product),
            ("lr".to_string(), self.lr),
        ]);
        (tensors, scalars)
    }

    /// Restores a state saved by [`Optimizer::state`]; names it lacks are an error.
    pub fn restore(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        scalars: &BTreeMap<String, f64>,
    ) -> anyhow::Result<()> {
        let _guard = tch::no_grad_guard();
        for (i, (name, _)) in self.params.iter().enumerate() {
            for (moments, prefix) in [(&mut self.m, "m"), (&mut self.v, "v")] {
                let key = format!("{prefix}.{name}");
                let saved = tensors
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("the checkpoint has no optimizer state '{key}'"))?;
                moments[i].copy_(saved);
            }
        }
        let get = |key: &str| {
            scalars
                .get(key)
                .copied()
                .ok_or_else(|| anyhow::anyhow!("the checkpoint has no optimizer '{key}'"))
        };
        self.step = get("step")? as i64;
        self.mu_product = get("mu_product")?;
        self.lr = get("lr")?;
        Ok(())
    }
}

/// The learning rate over epochs, and for `plateau`, the memory it needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scheduler {
    pub best: Option<f64>,
    pub bad_validations: u32,
    pub lr: f64,
}

impl Scheduler {
    pub fn new(config: &TrainConfig) -> Scheduler {
        Scheduler {
            best: None,
            bad_validations: 0,
            lr: config.lr,
        }
    }

    /// The learning rate for (0-based) `epoch`.
    pub fn lr_for_epoch(&self, config: &TrainConfig, epoch: u32) -> f64 {
        match config.schedule {
            Schedule::None | Schedule::Plateau => self.lr,
            Schedule::Cosine => {
                let warmup = config.warmup_epochs;
                if epoch < warmup {
                    return config.lr * f64::from(epoch + 1) / f64::from(warmup + 1);
                }
                let span = f64::from(config.epochs.saturating_sub(warmup).max(1));
                let progress = f64::from(epoch - warmup) / span;
                config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Takes a validation score (higher is better); lowers the rate on a plateau. Returns true
    /// when the score is the best so far.
    pub fn observe(&mut self, config: &TrainConfig, score: f64) -> bool {
        let improved = self.best.is_none_or(|best| score > best + 1e-4);
        if improved {
            self.best = Some(score);
            self.bad_validations = 0;
        } else {
            self.bad_validations += 1;
            if config.schedule == Schedule::Plateau && self.bad_validations.is_multiple_of(config.plateau_patience) {
                self.lr = (self.lr * config.plateau_factor).max(config.min_lr);
            }
        }
        improved
    }

    /// Whether early stopping should end the run now.
    pub fn should_stop(&self, config: &TrainConfig) -> bool {
        config.early_stopping_patience > 0 && self.bad_validations >= config.early_stopping_patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(optimizer: OptimizerKind) -> TrainConfig {
        TrainConfig {
            optimizer,
            lr: 0.1,
            weight_decay: 0.0,
            grad_clip: 0.0,
            ..TrainConfig::default()
        }
    }

    /// Minimises (x - 3)^2 from x = 0.
    fn descend(kind: OptimizerKind, steps: usize) -> f64 {
        let x = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(vec![("x".to_string(), x.shallow_clone())], &config(kind));
        for _ in 0..steps {
            opt.zero_grad();
            (&x - 3.0).square().sum(Kind::Float).backward();
            opt.step();
        }
        x.double_value(&[0])
    }

    #[test]
    fn every_optimizer_descends() {
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::Adamw,
            OptimizerKind::Nadam,
            OptimizerKind::Sgd,
        ] {
            let x = descend(kind, 300);
            assert!((x - 3.0).abs() < 0.05, "{kind}: {x}");
        }
    }

    #[test]
    fn adam_takes_lr_sized_first_steps() {
        // Adam's first step is lr * sign(gradient).
        assert!((descend(OptimizerKind::Adam, 1) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_min_lr() {
        let c = TrainConfig {
            lr: 1.0,
            min_lr: 0.0,
            epochs: 10,
            warmup_epochs: 1,
            ..TrainConfig::default()
        };
        let s = Scheduler::new(&c);
        assert_eq!(s.lr_for_epoch(&c, 0), 0.5);
        assert_eq!(s.lr_for_epoch(&c, 1), 1.0);
        assert!(s.lr_for_epoch(&c, 9) < 0.05);
    }

    #[test]
    fn plateau_halves_the_rate_and_early_stopping_counts() {
        let c = TrainConfig {
            schedule: Schedule::Plateau,
            lr: 1.0,
            plateau_factor: 0.5,
            plateau_patience: 2,
            early_stopping_patience: 3,
            ..TrainConfig::default()
        };
        let mut s = Scheduler::new(&c);
        assert!(s.observe(&c, 0.5));
        assert!(!s.observe(&c, 0.4));
        assert_eq!(s.lr, 1.0);
        assert!(!s.observe(&c, 0.5));
        assert_eq!(s.lr, 0.5);
        assert!(!s.should_stop(&c));
        s.observe(&c, 0.3);
        assert!(s.should_stop(&c));
    }
}
