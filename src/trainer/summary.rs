//! `segtop-train summary`: what an experiment's network is and what it costs.

use std::fmt::Write;

use tch::nn;

use segtop::cost;
use segtop::experiment::{Experiment, Precision};

use crate::model::UNet;

/// The network of an experiment, counted.
pub struct Summary {
    /// Parameter names and shapes, in the order PyTorch's `state_dict` lists them.
    pub parameters: Vec<(String, Vec<i64>)>,
    pub parameter_count: u64,
    pub macs_per_patch: u64,
    /// Estimated peak memory of training with the configured patch and batch, in bytes.
    pub training_bytes: u64,
    /// Estimated peak memory of a validation pass (sliding window over a whole case), in bytes.
    pub validation_bytes: u64,
    /// The precision the estimates are for.
    precision: Precision,
    window: [u32; 3],
    window_batch: u32,
    patch: [u32; 3],
    batch: u32,
    depth: u32,
    filters: Vec<u32>,
}

impl Summary {
    pub fn of(experiment: &Experiment) -> Summary {
        let precision = cost::run_precision(experiment);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let in_channels = experiment.data.modalities.len() as i64;
        let _net = UNet::new(&vs.root(), &experiment.model, in_channels);
        let mut parameters: Vec<(String, Vec<i64>)> = vs
            .variables()
            .into_iter()
            .map(|(name, tensor)| (name, tensor.size()))
            .collect();
        parameters.sort_by_key(|(name, _)| state_dict_order(name));
        let parameter_count = parameters
            .iter()
            .map(|(_, shape)| shape.iter().product::<i64>() as u64)
            .sum();
        let patch = experiment.train.patch_size;
        let batch = experiment.train.batch_size;
        Summary {
            macs_per_patch: cost::macs_per_patch(&experiment.model, in_channels as u64, patch),
            training_bytes: cost::training_bytes(experiment, precision),
            validation_bytes: cost::validation_bytes(experiment),
            precision,
            window: experiment.validate.window,
            window_batch: experiment.validate.window_batch,
            parameters,
            parameter_count,
            patch,
            batch,
            depth: experiment.model.depth,
            filters: experiment.model.filters(),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let [x, y, z] = self.patch;
        let _ = writeln!(out, "U-Net, {} levels, filters {:?}", self.depth, self.filters);
        let _ = writeln!(out, "{:<28} shape", "parameter");
        for (name, shape) in &self.parameters {
            let _ = writeln!(out, "{name:<28} {shape:?}");
        }
        let _ = writeln!(
            out,
            "parameters          {} ({:.1} MB float32)",
            group(self.parameter_count),
            self.parameter_count as f64 * 4.0 / 1e6
        );
        let _ = writeln!(
            out,
            "work per patch      {:.2} GMAC forward at {x}x{y}x{z} ({:.1} GFLOP to train)",
            self.macs_per_patch as f64 / 1e9,
            self.macs_per_patch as f64 * 6.0 / 1e9
        );
        let _ = writeln!(
            out,
            "training memory     about {:.0} MB at batch {} in {} (estimate)",
            self.training_bytes as f64 / 1e6,
            self.batch,
            self.precision
        );
        let [wx, wy, wz] = self.window;
        let _ = writeln!(
            out,
            "validation memory   about {:.0} MB with {wx}x{wy}x{wz} windows, {} at a time, over a BraTS-sized case (estimate)",
            self.validation_bytes as f64 / 1e6,
            self.window_batch
        );
        let _ = writeln!(
            out,
            "peak memory         about {:.0} MB",
            self.peak_bytes() as f64 / 1e6
        );
        out
    }

    /// The larger of the training and validation estimates: what a run needs.
    pub fn peak_bytes(&self) -> u64 {
        self.training_bytes.max(self.validation_bytes)
    }
}

/// Orders names as PyTorch's `state_dict` does: by module path, numbers numerically.
fn state_dict_order(name: &str) -> Vec<(u8, u64, String)> {
    name.split('.')
        .map(|part| match part.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => (1, 0, module_rank(part).to_string() + part),
        })
        .collect()
}

/// Top-level modules in the order the network defines them; weights before biases.
fn module_rank(part: &str) -> &'static str {
    match part {
        "enc" => "0",
        "up" => "1",
        "dec" => "2",
        "deep" => "3",
        "out" => "4",
        "weight" => "5",
        "bias" => "6",
        _ => "7",
    }
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn experiment(extra: &str) -> Experiment {
        let text = format!("[data]\nroot = \"d\"\n{extra}");
        Experiment::parse(Path::new("x.toml"), &text, Path::new("/ws")).expect("valid")
    }

    fn seed() -> Experiment {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/seed-tutorial.toml"))
            .expect("shipped");
        Experiment::parse(Path::new("seed-tutorial.toml"), &text, Path::new("/ws")).expect("valid")
    }

    #[test]
    fn validation_memory_grows_with_the_window_and_counts_in_the_peak() {
        let seed = seed();
        let small = Summary::of(&seed);
        let mut large_window = seed.clone();
        large_window.validate.window = [128, 128, 128];
        large_window.validate.window_batch = 1;
        let large = Summary::of(&large_window);
        assert!(large.validation_bytes > small.validation_bytes);
        // The calibration points: 1814 MB measured for the seed network with one 128^3
        // window at a time, and 742 MB more with two.
        let mb = large.validation_bytes as f64 / 1e6;
        assert!((1650.0..2000.0).contains(&mb), "{mb} MB");
        large_window.validate.window_batch = 2;
        let two = Summary::of(&large_window).validation_bytes as f64 / 1e6;
        assert!((650.0..850.0).contains(&(two - mb)), "{two} MB with two windows");
        assert_eq!(large.peak_bytes(), large.training_bytes.max(large.validation_bytes));
        assert!(large.render().contains("validation memory"));
    }

    #[test]
    fn the_seed_network_has_the_pytorch_parameters() {
        let summary = Summary::of(&seed());
        assert_eq!(summary.parameter_count, 5_646_260);
        let names: Vec<&str> = summary.parameters.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2 * (5 * 2 + 4 + 4 * 2 + 1));
        assert_eq!(
            &names[..4],
            ["enc.0.0.weight", "enc.0.0.bias", "enc.0.3.weight", "enc.0.3.bias"]
        );
        assert!(names.contains(&"up.0.weight") && names.contains(&"dec.3.3.bias"));
        assert_eq!(&names[names.len() - 2..], ["out.weight", "out.bias"]);
        let shape = |name: &str| {
            summary
                .parameters
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
        };
        assert_eq!(shape("enc.0.0.weight"), Some(vec![16, 4, 3, 3, 3]));
        // ConvTranspose3d stores [in, out, k, k, k].
        assert_eq!(shape("up.0.weight"), Some(vec![256, 128, 2, 2, 2]));
        assert_eq!(shape("dec.3.0.weight"), Some(vec![16, 32, 3, 3, 3]));
        assert_eq!(shape("out.weight"), Some(vec![4, 16, 1, 1, 1]));
    }

    #[test]
    fn the_schema_counts_the_parameters_the_network_builds() {
        for norm in ["none", "batch", "instance", "group"] {
            for upsample in ["transposed", "trilinear"] {
                for extra in [
                    "",
                    "residual = true\ndeep_supervision = true\n",
                    "output = \"labels\"\n",
                ] {
                    let e = experiment(&format!(
                        "[model]\nbase_filters = 4\ndepth = 4\nnorm = \"{norm}\"\ngroups = 2\nupsample = \"{upsample}\"\n{extra}"
                    ));
                    let built = Summary::of(&e).parameter_count;
                    assert_eq!(cost::parameter_count(&e.model, 4), built, "{norm} {upsample} {extra}");
                }
            }
        }
        assert_eq!(cost::parameter_count(&seed().model, 4), 5_646_260);
    }

    #[test]
    fn seed_work_per_patch_matches_the_reference_figure() {
        // REFERENCE: 15.27 GMAC forward per 64^3 patch.
        let macs = Summary::of(&seed()).macs_per_patch as f64 / 1e9;
        assert!((macs - 15.27).abs() < 0.01, "{macs}");
    }

    #[test]
    fn output_shapes_follow_the_patch() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let e = experiment(
            "[model]\nbase_filters = 4\ndepth = 3\nnorm = \"instance\"\nresidual = true\ndeep_supervision = true\n",
        );
        let net = UNet::new(&vs.root(), &e.model, 4);
        for [z, y, x] in [[16i64, 16, 16], [8, 24, 32]] {
            let input = tch::Tensor::zeros([2, 4, z, y, x], (tch::Kind::Float, tch::Device::Cpu));
            let (logits, aux) = net.forward_all(&input, false);
            // Three regions (WT, TC, ET) by default.
            assert_eq!(logits.size(), [2, 3, z, y, x]);
            assert_eq!(aux.len(), 1);
            assert_eq!(aux[0].size(), [2, 3, z / 2, y / 2, x / 2]);
        }
    }

    #[test]
    fn every_norm_and_upsampling_variant_builds_and_runs() {
        for norm in ["none", "batch", "instance", "group"] {
            for upsample in ["transposed", "trilinear"] {
                let vs = nn::VarStore::new(tch::Device::Cpu);
                let e = experiment(&format!(
                    "[model]\nbase_filters = 8\ndepth = 2\nnorm = \"{norm}\"\ngroups = 4\nupsample = \"{upsample}\"\n"
                ));
                let net = UNet::new(&vs.root(), &e.model, 4);
                let input = tch::Tensor::randn([1, 4, 8, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
                let out = tch::nn::ModuleT::forward_t(&net, &input, true);
                assert_eq!(out.size(), [1, 3, 8, 8, 8], "{norm} {upsample}");
            }
        }
    }
}
