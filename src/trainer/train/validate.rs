//! The validation after an epoch: every validation case segmented whole by the sliding
//! window and scored, a `validation` event and a line, the dashboard's preview when due, and
//! the choice of the best weights by `validate.select`.

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;

use segtop::data::cache::CachedCase;
use segtop::experiment::Selection;
use segtop::metrics;
use segtop::run::RunDir;
use segtop::run::events::{CaseScores, Event, RegionScores};

use crate::evaluate;
use crate::infer;

use super::{End, Trainer};

/// What a validation decides.
#[derive(Default)]
pub(super) struct Verdict {
    /// The weights are the best so far: the checkpoint makes them `best.safetensors`.
    pub(super) best: bool,
    /// No better validation for `train.early_stopping_patience` of them: the run ends.
    pub(super) stop_early: bool,
}

impl Trainer<'_> {
    /// Validates the epoch whose training took `seconds`; the time it takes, with the
    /// preview written after it, is the pace of a validation. Breaks when a stop comes in it,
    /// for the resumed run to do it again.
    pub(super) fn validate(&mut self, seconds: f64) -> anyhow::Result<ControlFlow<End, Verdict>> {
        let validation_start = Instant::now();
        let Some((cases, preview, scoring)) = self.score_cases() else {
            self.state.epoch_seconds = seconds;
            let at = format!("the validation after epoch {}", self.state.epoch + 1);
            return Ok(ControlFlow::Break(End::Stopped { at }));
        };
        let (dice, lesion_dice) = self.record_validation(cases, validation_start)?;
        self.preview(preview)?;
        if let Some(b) = &mut self.budget {
            // The preview written after it counts too: both happen at every validation.
            b.pace.validation = validation_start.elapsed().as_secs_f64();
            b.pace.scoring = scoring;
        }
        Ok(ControlFlow::Continue(self.select(dice, lesion_dice)))
    }

    /// Each validation case segmented and scored, the preview case's labels when it is one of
    /// them, and the seconds the lesion-wise scoring took (what the end-of-run post-processing
    /// search repeats); `None` when a stop comes first.
    fn score_cases(&self) -> Option<(Vec<CaseScores>, Option<Vec<u8>>, f64)> {
        let hd95 = self.experiment.validate.hd95;
        let mut preview = None;
        let mut scoring = 0.0;
        let mut cases = Vec::with_capacity(self.cases.validation.len());
        for case in &self.cases.validation {
            if self.stop.requested() {
                return None;
            }
            let predicted = self.window.labels(&self.network.net, &infer::case_tensor(case));
            let truth = case.labels().unwrap_or(&[]);
            cases.push(CaseScores {
                case: case.header.id.clone(),
                dice: metrics::region_dice(&predicted, truth),
                hd95: hd95.then(|| metrics::region_hd95(case.header.shape, case.header.spacing, &predicted, truth)),
                lesion_dice: case.labels().map(|truth| {
                    let start = Instant::now();
                    let scores = evaluate::lesion_dice(case, &predicted, truth);
                    scoring += start.elapsed().as_secs_f64();
                    scores
                }),
            });
            if self
                .cases
                .preview
                .as_ref()
                .is_some_and(|p| p.header.id == case.header.id)
            {
                preview = Some(predicted);
            }
        }
        Some((cases, preview, scoring))
    }

    /// The validation's means over its `cases` (and the seed Dice of the epoch's last batch):
    /// a `validation` event and a line. Returns the mean Dice and lesion-wise Dice.
    fn record_validation(
        &mut self,
        cases: Vec<CaseScores>,
        validation_start: Instant,
    ) -> anyhow::Result<(RegionScores, Option<RegionScores>)> {
        let dice = RegionScores::average(cases.iter().map(|c| c.dice));
        let hd95 = self
            .experiment
            .validate
            .hd95
            .then(|| RegionScores::average(cases.iter().filter_map(|c| c.hd95)));
        let seed_dice = self.last_batch.as_ref().map_or(0.0, |(p, t)| metrics::seed_dice(p, t));
        let lesion_dice = cases
            .iter()
            .all(|c| c.lesion_dice.is_some())
            .then(|| RegionScores::average(cases.iter().filter_map(|c| c.lesion_dice)));
        let validation_seconds = validation_start.elapsed().as_secs_f64();
        self.events.emit(&Event::Validation {
            time: Utc::now(),
            epoch: self.state.epoch + 1,
            dice,
            hd95,
            seed_dice,
            lesion_dice,
            cases,
            seconds: validation_seconds,
        })?;

        let hd95_text = hd95.map_or(String::new(), |h| {
            format!("  HD95 ET {:.1}  TC {:.1}  WT {:.1} mm", h.et, h.tc, h.wt)
        });
        let lesion_text = lesion_dice.map_or(String::new(), |l| {
            format!("  lesion-wise ET {:.3}  TC {:.3}  WT {:.3}", l.et, l.tc, l.wt)
        });
        self.console.line(&format!(
            "validation: Dice ET {:.3}  TC {:.3}  WT {:.3}{lesion_text}{hd95_text}  (seed Dice {seed_dice:.3})",
            dice.et, dice.tc, dice.wt
        ));
        Ok((dice, lesion_dice))
    }

    /// Every `preview.every` epochs: the preview case's labels (`predicted` when it was
    /// validated, else segmented now) written for the dashboard, and a `preview_written` event.
    fn preview(&mut self, predicted: Option<Vec<u8>>) -> anyhow::Result<()> {
        let epoch = self.state.epoch + 1;
        let Some(case) = self
            .cases
            .preview
            .as_ref()
            .filter(|_| epoch.is_multiple_of(self.experiment.preview.every))
        else {
            return Ok(());
        };
        let predicted = match predicted {
            Some(p) => p,
            None => self.window.labels(&self.network.net, &infer::case_tensor(case)),
        };
        let path = write_preview(self.run, case, epoch, &predicted)?;
        self.events.emit(&Event::PreviewWritten {
            time: Utc::now(),
            epoch,
            case: case.header.id.clone(),
            path,
        })?;
        Ok(())
    }

    /// Whether the validation's score (`validate.select`: its Dice, or lesion-wise Dice) is
    /// the best so far, which the state records, and whether the schedule stops early.
    fn select(&mut self, dice: RegionScores, lesion_dice: Option<RegionScores>) -> Verdict {
        let config = &self.experiment.train;
        let selected = match self.experiment.validate.select {
            Selection::Legacy => dice,
            Selection::Lesion => lesion_dice.unwrap_or(dice),
        };
        let best = self.state.scheduler.observe(config, selected.mean());
        if best {
            self.state.best_dice = Some(dice);
            self.state.best_epoch = Some(self.state.epoch + 1);
        }
        Verdict {
            best,
            stop_early: self.state.scheduler.should_stop(config),
        }
    }
}

/// Writes a preview prediction on the case's original grid, with its source geometry, as
/// `preview/epoch-NNNN.nii.gz`; returns the path relative to the run directory.
fn write_preview(run: &RunDir, case: &CachedCase, epoch: u32, predicted: &[u8]) -> anyhow::Result<String> {
    let header = &case.header;
    let full = segtop::data::preprocess::uncrop(predicted, header.shape, header.origin, header.original_shape);
    let reference = header
        .sources
        .first()
        .map(|s| s.path.clone())
        .context("the cached case names no source file")?;
    let name = format!("epoch-{epoch:04}.nii.gz");
    segtop::data::volume::write_labels_like(&reference, &run.preview().join(&name), header.original_shape, &full)
        .with_context(|| format!("cannot write the preview {name}"))?;
    Ok(format!("{}/{name}", RunDir::PREVIEW))
}
