//! The training loss: `dice x soft Dice + ce x cross-entropy + focal x focal loss`, each term
//! reported on its own so the dashboard can chart them.

use tch::{Kind, Reduction, Tensor};

use segtop::experiment::{LossConfig, NUM_CLASSES};

/// The loss and its weighted parts.
pub struct LossValue {
    pub total: Tensor,
    /// (name, weighted value) of each term with a weight above 0.
    pub parts: Vec<(&'static str, Tensor)>,
}

pub struct Loss {
    config: LossConfig,
    class_weights: Tensor,
}

impl Loss {
    pub fn new(config: &LossConfig) -> Loss {
        let weights: Vec<f32> = config.class_weights.iter().map(|&w| w as f32).collect();
        Loss {
            config: config.clone(),
            class_weights: Tensor::from_slice(&weights),
        }
    }

    /// `logits` `[batch, 4, z, y, x]`, `target` `[batch, z, y, x]` of class indices (int64).
    pub fn compute(&self, logits: &Tensor, target: &Tensor) -> LossValue {
        let c = &self.config;
        let mut parts = Vec::new();
        let log_probs = logits.log_softmax(1, Kind::Float);
        let one_hot = target
            .one_hot(NUM_CLASSES as i64)
            .permute([0, 4, 1, 2, 3])
            .to_kind(Kind::Float);
        // One exponential for both the Dice and the focal term.
        let probs = (c.dice > 0.0 || c.focal > 0.0).then(|| log_probs.exp());
        if let Some(probs) = probs.as_ref().filter(|_| c.dice > 0.0) {
            parts.push(("dice", self.soft_dice(probs, &one_hot) * c.dice));
        }
        if c.ce > 0.0 {
            let ce = logits.cross_entropy_loss(target, Some(&self.class_weights), Reduction::Mean, -100, 0.0);
            parts.push(("ce", ce * c.ce));
        }
        if let Some(probs) = probs.as_ref().filter(|_| c.focal > 0.0) {
            parts.push(("focal", self.focal(probs, &log_probs, &one_hot) * c.focal));
        }
        let total = parts
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::from(0.0f32));
        LossValue { total, parts }
    }

    /// 1 minus the weighted mean over classes of the Dice of probabilities and the one-hot
    /// target, over the whole batch (background counted only when configured).
    fn soft_dice(&self, probs: &Tensor, one_hot: &Tensor) -> Tensor {
        let dims: &[i64] = &[0, 2, 3, 4];
        let intersection = (probs * one_hot).sum_dim_intlist(dims, false, Kind::Float);
        let denominator =
            probs.sum_dim_intlist(dims, false, Kind::Float) + one_hot.sum_dim_intlist(dims, false, Kind::Float);
        let dice = (intersection * 2.0 + 1e-5) / (denominator + 1e-5);
        // A new tensor, not an in-place product: the class weights are shared with the
        // cross-entropy.
        let weights = if self.config.dice_include_background {
            self.class_weights.shallow_clone()
        } else {
            &self.class_weights * Tensor::from_slice(&[0.0f32, 1.0, 1.0, 1.0])
        };
        let mean = (dice * &weights).sum(Kind::Float) / weights.sum(Kind::Float).clamp_min(1e-12);
        mean.neg() + 1.0
    }

    /// Categorical focal loss: `-sum_c w_c y_c (1 - p_c)^gamma log p_c`, averaged over voxels.
    fn focal(&self, probs: &Tensor, log_probs: &Tensor, one_hot: &Tensor) -> Tensor {
        let modulation = (probs.neg() + 1.0).pow_tensor_scalar(self.config.focal_gamma);
        let weights = self.class_weights.view([1, NUM_CLASSES as i64, 1, 1, 1]);
        (one_hot * modulation * log_probs * weights)
            .sum_dim_intlist([1].as_slice(), false, Kind::Float)
            .mean(Kind::Float)
            .neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dice: f64, ce: f64, focal: f64) -> LossConfig {
        LossConfig {
            dice,
            ce,
            focal,
            ..LossConfig::default()
        }
    }

    /// Logits that put almost all probability on `labels`.
    fn confident(labels: &Tensor) -> Tensor {
        labels.one_hot(4).permute([0, 4, 1, 2, 3]).to_kind(Kind::Float) * 40.0
    }

    #[test]
    fn a_perfect_prediction_costs_nothing() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 3, 2, 1, 0]).view([1, 2, 2, 2]);
        let loss = Loss::new(&config(1.0, 1.0, 1.0)).compute(&confident(&labels), &labels);
        assert!(loss.total.double_value(&[]).abs() < 1e-4);
        assert_eq!(
            loss.parts.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["dice", "ce", "focal"]
        );
    }

    #[test]
    fn a_wrong_prediction_costs_and_weights_scale_the_parts() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 3, 2, 1, 0]).view([1, 2, 2, 2]);
        let wrong = confident(&((&labels + 1).remainder(4)));
        let single = Loss::new(&config(1.0, 0.0, 0.0))
            .compute(&wrong, &labels)
            .total
            .double_value(&[]);
        let double = Loss::new(&config(2.0, 0.0, 0.0))
            .compute(&wrong, &labels)
            .total
            .double_value(&[]);
        assert!(single > 0.99, "{single}");
        assert!((double - 2.0 * single).abs() < 1e-6);
        let ce = Loss::new(&config(0.0, 1.0, 0.0))
            .compute(&wrong, &labels)
            .total
            .double_value(&[]);
        assert!(ce > 30.0, "{ce}");
    }

    #[test]
    fn a_batch_of_background_only_has_a_finite_loss_every_time() {
        // Regression: the Dice's background mask once zeroed the shared class weights in place,
        // after which cross-entropy over background-only targets divided by zero.
        let labels = Tensor::zeros([2, 4, 4, 4], (Kind::Int64, tch::Device::Cpu));
        let logits = Tensor::randn([2, 4, 4, 4, 4], (Kind::Float, tch::Device::Cpu));
        let loss = Loss::new(&config(1.0, 1.0, 0.0));
        for _ in 0..2 {
            let value = loss.compute(&logits, &labels).total.double_value(&[]);
            assert!(value.is_finite(), "{value}");
        }
    }

    #[test]
    fn uniform_logits_give_the_textbook_values() {
        let labels = Tensor::from_slice(&[1i64; 8]).view([1, 2, 2, 2]);
        let uniform = Tensor::zeros([1, 4, 2, 2, 2], (Kind::Float, tch::Device::Cpu));
        let ce = Loss::new(&config(0.0, 1.0, 0.0))
            .compute(&uniform, &labels)
            .total
            .double_value(&[]);
        assert!((ce - 4f64.ln()).abs() < 1e-5, "{ce}");
        let focal = Loss::new(&LossConfig {
            focal_gamma: 2.0,
            ..config(0.0, 0.0, 1.0)
        })
        .compute(&uniform, &labels)
        .total
        .double_value(&[]);
        assert!((focal - 0.75f64.powi(2) * 4f64.ln()).abs() < 1e-5, "{focal}");
    }
}
