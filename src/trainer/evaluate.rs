//! The end-of-run evaluation: the best weights segment every validation case on its original
//! grid (with mirror test-time augmentation when `validate.tta` asks), the raw predictions are
//! kept in the run's `validation/` folder, post-processing is learned on them
//! (`crate::postprocess`, unless `validate.postprocess = false`), and the official BraTS-SSA
//! scores before and after go into one `evaluation` event. The numbers equal `segtop eval` on
//! `segtop predict`'s output for the same cases.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use tch::nn;

use segtop::data::cache::CachedCase;
use segtop::data::preprocess::uncrop;
use segtop::experiment::Experiment;
use segtop::metrics::brats::{Challenge, Detail};
use segtop::metrics::grid::Grid;
use segtop::postprocess::{self, Plan};
use segtop::run::RunDir;
use segtop::run::events::{BratsScores, CaseEvaluation, Event, EventLog, RegionScores};

use crate::infer::{self, SlidingWindow};
use crate::model::UNet;

/// The challenge whose metrics a run is scored by (BraTS-Africa's).
pub const CHALLENGE: Challenge = Challenge::Ssa;

/// The official lesion-wise Dice of one validation case's raw prediction, on the case's
/// cached grid, for model selection during training.
pub fn lesion_dice(case: &CachedCase, predicted: &[u8], truth: &[u8]) -> RegionScores {
    let case = postprocess::Case {
        id: case.header.id.clone(),
        grid: Grid::new(case.header.shape),
        spacing: case.header.spacing,
        prediction: predicted.to_vec(),
        truth: truth.to_vec(),
    }
    .cropped();
    BratsScores::lesion_dice(&case.evaluate_at(CHALLENGE, &Plan::NONE, Detail::Dice).regions)
}

/// What the end-of-run evaluation needs from the training run.
pub struct FinalEvaluation<'a> {
    pub run: &'a RunDir,
    pub experiment: &'a Experiment,
    /// The validation cases (those without labels are passed over).
    pub cases: &'a [Arc<CachedCase>],
    /// The epoch of the weights in `best.safetensors`, else the last epoch.
    pub best_epoch: u32,
    pub threads: usize,
    /// When a time-budgeted run must be done: the post-processing search stops in time.
    pub deadline: Option<Instant>,
    pub say: &'a dyn Fn(&str),
}

/// The evaluation's scores per case: before post-processing, the plan learned (when
/// `validate.postprocess`) and the scores after it.
type Scores = (Vec<CaseEvaluation>, Option<Plan>, Option<Vec<CaseEvaluation>>);

impl FinalEvaluation<'_> {
    /// Loads the best weights into `vs` (they stay loaded), evaluates, learns post-processing
    /// and emits the `evaluation` event.
    pub fn run(&self, vs: &mut nn::VarStore, net: &UNet, events: &mut EventLog) -> anyhow::Result<()> {
        let cases: Vec<&Arc<CachedCase>> = self.cases.iter().filter(|c| c.labels().is_some()).collect();
        if cases.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let best = self.run.best_weights();
        if best.exists() {
            vs.load(&best)
                .with_context(|| format!("cannot load {}", best.display()))?;
        }
        let scored = self.segment(&cases, net)?;
        let (raw, plan, after) = self.score(&scored)?;
        let regions = CHALLENGE.regions();
        let mean = CaseEvaluation::mean(&raw, regions);
        let postprocessed = after.as_deref().map(|a| CaseEvaluation::mean(a, regions));
        self.say_means(&mean, postprocessed.as_deref());
        events.emit(&Event::Evaluation {
            time: Utc::now(),
            epoch: self.best_epoch,
            challenge: CHALLENGE.name().to_string(),
            mean,
            cases: raw,
            tta: self.experiment.validate.tta,
            postprocess: plan.map(|p| p.describe()),
            postprocessed,
            postprocessed_cases: after.unwrap_or_default(),
            seconds: start.elapsed().as_secs_f64(),
        })?;
        Ok(())
    }

    /// Segments each case on its original grid (with mirrored passes under TTA) and writes the
    /// prediction into the run's `validation/` folder; returns the cases to score, cropped.
    fn segment(&self, cases: &[&Arc<CachedCase>], net: &UNet) -> anyhow::Result<Vec<postprocess::Case>> {
        let say = self.say;
        let validate = &self.experiment.validate;
        let mut window = SlidingWindow::new(validate);
        if validate.tta {
            window = window.with_mirroring(&self.experiment.augment.flip_axes);
        }
        say(&format!(
            "evaluating epoch {}'s weights on {} validation case(s) with the BraTS metrics{}",
            self.best_epoch,
            cases.len(),
            if validate.tta {
                format!(" ({} mirrored passes per window)", window.passes())
            } else {
                String::new()
            }
        ));
        let folder = self.run.validation();
        std::fs::create_dir_all(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
        let mut scored = Vec::with_capacity(cases.len());
        for case in cases {
            let h = &case.header;
            let case_start = Instant::now();
            let predicted = window.labels(net, &infer::case_tensor(case));
            let prediction = uncrop(&predicted, h.shape, h.origin, h.original_shape);
            let truth = uncrop(case.labels().unwrap_or(&[]), h.shape, h.origin, h.original_shape);
            let reference = h
                .sources
                .first()
                .map(|s| s.path.clone())
                .context("the cached case names no source file")?;
            let path = folder.join(format!("{}.nii.gz", h.id));
            segtop::data::volume::write_labels_like(&reference, &path, h.original_shape, &prediction)
                .with_context(|| format!("cannot write {}", path.display()))?;
            say(&format!(
                "  {} segmented in {:.1} s",
                h.id,
                case_start.elapsed().as_secs_f64()
            ));
            scored.push(
                postprocess::Case {
                    id: h.id.clone(),
                    grid: Grid::new(h.original_shape),
                    spacing: h.spacing,
                    prediction,
                    truth,
                }
                .cropped(),
            );
        }
        Ok(scored)
    }

    /// Scores the cases with the BraTS metrics: with `validate.postprocess`, post-processing
    /// is learned on them (before the deadline), and scored before and after.
    fn score(&self, scored: &[postprocess::Case]) -> anyhow::Result<Scores> {
        if !self.experiment.validate.postprocess {
            let raw = postprocess::evaluate_all(CHALLENGE, scored, &Plan::NONE, self.threads);
            return Ok((raw, None, None));
        }
        let say = self.say;
        say("learning post-processing on the validation cases");
        let search_start = Instant::now();
        let progress = |step: &str| say(&format!("  choosing {step}"));
        let (plan, validation) = postprocess::learn(
            self.run,
            scored,
            self.best_epoch,
            self.threads,
            &progress,
            self.deadline,
        )
        .with_context(|| format!("cannot write {}", self.run.postprocess().display()))?;
        if let Some(step) = validation.cut_short_at {
            say(&format!(
                "  the search stopped at {step} to stay inside the time budget (`segtop postprocess {}` searches in full)",
                self.run.id()
            ));
        }
        say(&format!(
            "post-processing: {} (searched in {:.1} s)",
            plan.describe(),
            search_start.elapsed().as_secs_f64()
        ));
        for line in postprocess::table(&validation) {
            say(&format!("  {line}"));
        }
        Ok((validation.cases_before, Some(plan), Some(validation.cases_after)))
    }

    /// A line per region: the mean scores, and those after post-processing when learned.
    fn say_means(&self, mean: &[BratsScores], postprocessed: Option<&[BratsScores]>) {
        for (i, m) in mean.iter().enumerate() {
            let after = postprocessed.and_then(|p| p.get(i));
            (self.say)(&format!(
                "  {:<3} lesion-wise Dice {:.3}{}  HD95 {:.1} mm   legacy Dice {:.3}{}  HD95 {:.1} mm   TP {} FP {} FN {}",
                m.region,
                m.lesion_dice,
                after.map_or(String::new(), |a| format!(" (post-processed {:.3})", a.lesion_dice)),
                m.lesion_hd95,
                m.legacy_dice,
                after.map_or(String::new(), |a| format!(" ({:.3})", a.legacy_dice)),
                m.legacy_hd95,
                m.num_tp,
                m.num_fp,
                m.num_fn
            ));
        }
    }
}
