//! The training loss: `dice x soft Dice + ce x cross-entropy + focal x focal loss`, each term
//! reported on its own so the dashboard can chart them.
//!
//! For a network that outputs labels, over the softmax of the four labels (class weights
//! apply). For one that outputs regions, over each region's sigmoid against that region of the
//! label map (WT = labels 1-3, TC = 1 and 3, ET = 3): soft Dice per region, binary
//! cross-entropy, and the binary focal loss, every region weighted the same.

use tch::{Kind, Reduction, Tensor};

use segtop::experiment::{LossConfig, NUM_CLASSES, Output};

/// The loss and its weighted parts.
pub struct LossValue {
    pub total: Tensor,
    /// (name, weighted value) of each term with a weight above 0.
    pub parts: Vec<(&'static str, Tensor)>,
}

impl LossValue {
    /// The sum of `parts`.
    fn of(parts: Vec<(&'static str, Tensor)>) -> LossValue {
        let total = parts
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::from(0.0f32));
        LossValue { total, parts }
    }
}

/// The evaluated regions of a label map `[batch, z, y, x]` (int64, BraTS 2023 labels) as
/// float masks `[batch, 3, z, y, x]`: WT (1, 2, 3), TC (1, 3), ET (3).
pub fn region_targets(labels: &Tensor) -> Tensor {
    let et = labels.eq(3);
    let tc = labels.eq(1).logical_or(&et);
    let wt = labels.gt(0);
    Tensor::stack(&[wt, tc, et], 1).to_kind(Kind::Float)
}

pub struct Loss {
    config: LossConfig,
    output: Output,
    class_weights: Tensor,
}

impl Loss {
    pub fn new(config: &LossConfig, output: Output) -> Loss {
        let weights: Vec<f32> = config.class_weights.iter().map(|&w| w as f32).collect();
        Loss {
            config: config.clone(),
            output,
            class_weights: Tensor::from_slice(&weights),
        }
    }

    /// `logits` `[batch, 4 labels or 3 regions, z, y, x]`, `target` `[batch, z, y, x]` of
    /// labels (int64, 0-3).
    pub fn compute(&self, logits: &Tensor, target: &Tensor) -> LossValue {
        match self.output {
            Output::Labels => self.labels(logits, target),
            Output::Regions => self.regions(logits, target),
        }
    }

    /// The loss of region logits `[batch, 3, z, y, x]`.
    fn regions(&self, logits: &Tensor, target: &Tensor) -> LossValue {
        let c = &self.config;
        let mut parts = Vec::new();
        let regions = region_targets(target);
        let probs = (c.dice > 0.0 || c.focal > 0.0).then(|| logits.sigmoid());
        if let Some(probs) = probs.as_ref().filter(|_| c.dice > 0.0) {
            let dims: &[i64] = &[0, 2, 3, 4];
            let intersection = (probs * &regions).sum_dim_intlist(dims, false, Kind::Float);
            let denominator =
                probs.sum_dim_intlist(dims, false, Kind::Float) + regions.sum_dim_intlist(dims, false, Kind::Float);
            let dice = (intersection * 2.0 + 1e-5) / (denominator + 1e-5);
            parts.push(("dice", (dice.mean(Kind::Float).neg() + 1.0) * c.dice));
        }
        if c.ce > 0.0 {
            let bce =
                logits.binary_cross_entropy_with_logits(&regions, None::<&Tensor>, None::<&Tensor>, Reduction::Mean);
            parts.push(("ce", bce * c.ce));
        }
        if let Some(probs) = probs.as_ref().filter(|_| c.focal > 0.0) {
            // -[y (1-p)^g log p + (1-y) p^g log(1-p)], with log p = logsigmoid(x) and
            // log(1-p) = logsigmoid(-x) for stability.
            let gamma = c.focal_gamma;
            let positive = &regions * (probs.neg() + 1.0).pow_tensor_scalar(gamma) * logits.log_sigmoid();
            let negative = (regions.neg() + 1.0) * probs.pow_tensor_scalar(gamma) * logits.neg().log_sigmoid();
            parts.push(("focal", (positive + negative).mean(Kind::Float).neg() * c.focal));
        }
        LossValue::of(parts)
    }

    /// The loss of label logits `[batch, 4, z, y, x]`.
    fn labels(&self, logits: &Tensor, target: &Tensor) -> LossValue {
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
        LossValue::of(parts)
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

    impl Loss {
        /// The loss of a label-trained network.
        fn labelled(config: &LossConfig) -> Loss {
            Loss::new(config, Output::Labels)
        }
    }

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
        let loss = Loss::labelled(&config(1.0, 1.0, 1.0)).compute(&confident(&labels), &labels);
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
        let single = Loss::labelled(&config(1.0, 0.0, 0.0))
            .compute(&wrong, &labels)
            .total
            .double_value(&[]);
        let double = Loss::labelled(&config(2.0, 0.0, 0.0))
            .compute(&wrong, &labels)
            .total
            .double_value(&[]);
        assert!(single > 0.99, "{single}");
        assert!((double - 2.0 * single).abs() < 1e-6);
        let ce = Loss::labelled(&config(0.0, 1.0, 0.0))
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
        let loss = Loss::labelled(&config(1.0, 1.0, 0.0));
        for _ in 0..2 {
            let value = loss.compute(&logits, &labels).total.double_value(&[]);
            assert!(value.is_finite(), "{value}");
        }
    }

    #[test]
    fn uniform_logits_give_the_textbook_values() {
        let labels = Tensor::from_slice(&[1i64; 8]).view([1, 2, 2, 2]);
        let uniform = Tensor::zeros([1, 4, 2, 2, 2], (Kind::Float, tch::Device::Cpu));
        let ce = Loss::labelled(&config(0.0, 1.0, 0.0))
            .compute(&uniform, &labels)
            .total
            .double_value(&[]);
        assert!((ce - 4f64.ln()).abs() < 1e-5, "{ce}");
        let focal = Loss::labelled(&LossConfig {
            focal_gamma: 2.0,
            ..config(0.0, 0.0, 1.0)
        })
        .compute(&uniform, &labels)
        .total
        .double_value(&[]);
        assert!((focal - 0.75f64.powi(2) * 4f64.ln()).abs() < 1e-5, "{focal}");
    }

    /// Region logits that put almost all probability on the regions of `labels`.
    fn confident_regions(labels: &Tensor) -> Tensor {
        (region_targets(labels) * 2.0 - 1.0) * 40.0
    }

    #[test]
    fn region_targets_nest_the_labels() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]).view([1, 1, 1, 4]);
        let regions = region_targets(&labels);
        assert_eq!(regions.size(), [1, 3, 1, 1, 4]);
        let row = |r: i64| Vec::<f32>::try_from(regions.select(1, r).flatten(0, -1)).expect("floats");
        assert_eq!(row(0), [0.0, 1.0, 1.0, 1.0], "WT");
        assert_eq!(row(1), [0.0, 1.0, 0.0, 1.0], "TC");
        assert_eq!(row(2), [0.0, 0.0, 0.0, 1.0], "ET");
    }

    #[test]
    fn the_region_loss_is_zero_when_right_high_when_wrong_and_textbook_when_unsure() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 3, 2, 1, 0]).view([1, 2, 2, 2]);
        let loss = Loss::new(&config(1.0, 1.0, 1.0), Output::Regions);
        let right = loss.compute(&confident_regions(&labels), &labels);
        assert!(
            right.total.double_value(&[]).abs() < 1e-4,
            "{}",
            right.total.double_value(&[])
        );
        assert_eq!(
            right.parts.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["dice", "ce", "focal"]
        );
        let wrong = loss.compute(&confident_regions(&labels).neg(), &labels);
        assert!(
            wrong.total.double_value(&[]) > 30.0,
            "{}",
            wrong.total.double_value(&[])
        );
        // Zero logits: every sigmoid 0.5, so binary cross-entropy is ln 2 and the focal
        // loss 0.25 ln 2 at gamma 2.
        let unsure = Tensor::zeros([1, 3, 2, 2, 2], (Kind::Float, tch::Device::Cpu));
        let ce = Loss::new(&config(0.0, 1.0, 0.0), Output::Regions)
            .compute(&unsure, &labels)
            .total
            .double_value(&[]);
        assert!((ce - 2f64.ln()).abs() < 1e-5, "{ce}");
        let focal = Loss::new(&config(0.0, 0.0, 1.0), Output::Regions)
            .compute(&unsure, &labels)
            .total
            .double_value(&[]);
        assert!((focal - 0.25 * 2f64.ln()).abs() < 1e-5, "{focal}");
        // Dice: each region's soft Dice is 2 * 0.5 * |R| / (0.5 * 8 + |R|) with |R| 6, 4, 2.
        let dice = Loss::new(&config(1.0, 0.0, 0.0), Output::Regions)
            .compute(&unsure, &labels)
            .total
            .double_value(&[]);
        let expected = 1.0 - [6.0, 4.0, 2.0].iter().map(|r: &f64| r / (4.0 + r)).sum::<f64>() / 3.0;
        assert!((dice - expected).abs() < 1e-4, "{dice} against {expected}");
    }

    #[test]
    fn the_region_loss_has_gradients_for_every_region() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 3, 2, 1, 0]).view([1, 2, 2, 2]);
        let logits = Tensor::zeros([1, 3, 2, 2, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        Loss::new(&config(1.0, 1.0, 0.0), Output::Regions)
            .compute(&logits, &labels)
            .total
            .backward();
        let grad = logits.grad();
        for region in 0..3 {
            let norm = grad.select(1, region).abs().sum(Kind::Float).double_value(&[]);
            assert!(norm > 1e-3, "region {region} gets no gradient");
        }
    }
}
