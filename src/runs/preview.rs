//! A run's latest preview: its predicted labels for the preview case, with the case's image
//! (one modality) and ground truth, read from the run directory and the experiment's data.
//! The dashboard draws it in character cells; `segtop report` draws it as a picture.
//!
//! Loading reads three NIfTI files (a second or so for a full-size case): callers that must
//! stay responsive load on a thread of their own.

use std::path::Path;

use anyhow::Context;

use crate::data::case;
use crate::data::volume::Volume;
use crate::experiment::{Axis, Experiment, Modality};
use crate::render::{self, Slice};
use crate::run::RunDir;
use crate::run::events::{Event, EventTail, RegionScores};

/// A run's latest preview, loaded.
#[derive(Debug)]
pub struct PreviewData {
    pub run: String,
    pub epoch: u32,
    pub case: String,
    pub modality: Modality,
    pub image: Volume<f32>,
    pub truth: Option<Volume<u8>>,
    pub prediction: Volume<u8>,
    /// Intensity window: the 0.5th and 99.5th percentiles of the brain.
    pub window: (f32, f32),
    /// Dice of the whole predicted volume per region, when there is ground truth.
    pub dice: Option<RegionScores>,
}

/// Loads the latest preview of the run in `dir`: its predicted labels, and the preview
/// case's `modality` and labels from the experiment's dataset. `None` before any preview.
pub fn load(workspace: &Path, dir: &Path, modality: Modality) -> anyhow::Result<Option<PreviewData>> {
    load_epoch(workspace, dir, modality, None)
}

/// Loads the preview written at `epoch` (the latest at or before it; `None`: the latest).
pub fn load_epoch(
    workspace: &Path,
    dir: &Path,
    modality: Modality,
    epoch: Option<u32>,
) -> anyhow::Result<Option<PreviewData>> {
    let run = RunDir::open(dir);
    let (events, _) = EventTail::new(run.events())
        .poll()
        .with_context(|| format!("cannot read {}", run.events().display()))?;
    let Some((epoch, case_id, path)) = events
        .into_iter()
        .rev()
        .filter_map(|e| match e {
            Event::PreviewWritten { epoch, case, path, .. } => Some((epoch, case, path)),
            _ => None,
        })
        .find(|(e, ..)| epoch.is_none_or(|wanted| *e <= wanted))
    else {
        return Ok(None);
    };
    let experiment = Experiment::load_frozen(&run.experiment(), workspace)?;
    let found = case::discover(&experiment.data.root, experiment.data.layout)
        .with_context(|| format!("cannot read {}", experiment.data.root.display()))?;
    let files = found.cases.into_iter().find(|c| c.id == case_id).ok_or_else(|| {
        anyhow::anyhow!(
            "the preview case {case_id} is not in {} any more",
            experiment.data.root.display()
        )
    })?;
    let mut loaded = case::load_case(&files, &[modality])?;
    let image = loaded.images.remove(0);
    let prediction = crate::data::volume::read_volume_map(&run.path().join(&path), |v| v.round().clamp(0.0, 3.0) as u8)
        .with_context(|| format!("cannot read the preview {path}"))?;
    anyhow::ensure!(
        prediction.shape == image.shape,
        "the preview {path} is {:?}, its case {:?}",
        prediction.shape,
        image.shape
    );
    Ok(Some(PreviewData::new(
        run.id(),
        epoch,
        case_id,
        modality,
        image,
        loaded.labels,
        prediction,
    )))
}

impl PreviewData {
    /// A preview of `prediction` over `image` (one modality), with the ground truth when
    /// there is one; the intensity window and the case's Dice are computed here.
    pub fn new(
        run: String,
        epoch: u32,
        case: String,
        modality: Modality,
        image: Volume<f32>,
        truth: Option<Volume<u8>>,
        prediction: Volume<u8>,
    ) -> PreviewData {
        let dice = truth
            .as_ref()
            .map(|truth| crate::metrics::region_dice(&prediction.data, &truth.data));
        PreviewData {
            run,
            epoch,
            case,
            modality,
            window: render::auto_window(&image, 0.5, 99.5),
            image,
            truth,
            prediction,
            dice,
        }
    }

    /// Slices along `axis`.
    pub fn slices(&self, axis: Axis) -> usize {
        render::slice_count(&self.image, axis)
    }

    /// The slice to show along `axis`: `slice`, else the one with the most tumour (in the
    /// ground truth, else the prediction), clamped to the volume.
    pub fn slice_index(&self, axis: Axis, slice: Option<usize>) -> usize {
        let count = self.slices(axis).max(1);
        slice
            .unwrap_or_else(|| render::slice_with_most_tumour(self.truth.as_ref().unwrap_or(&self.prediction), axis))
            .min(count - 1)
    }

    /// Ground truth and prediction on slice `index` along `axis`.
    pub fn slice_pair(&self, axis: Axis, index: usize) -> (Option<Slice>, Slice) {
        let truth = self
            .truth
            .as_ref()
            .map(|t| render::slice(&self.image, Some(t), axis, index, self.window));
        let prediction = render::slice(&self.image, Some(&self.prediction), axis, index, self.window);
        (truth, prediction)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 4x4x2 volume: intensity rising left to right, a 2x2 tumour (label 2, inside it 3).
    pub(crate) fn data() -> PreviewData {
        let shape = [4, 4, 2];
        let affine = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]];
        let n = 32;
        let image = Volume {
            shape,
            spacing: [1.0; 3],
            affine,
            data: (0..n).map(|i| (i % 4) as f32).collect(),
        };
        let mut truth = vec![0u8; n];
        for i in [5, 6, 9, 10] {
            truth[i] = 2;
        }
        truth[5] = 3;
        let mut predicted = truth.clone();
        predicted[6] = 0;
        PreviewData {
            run: "r".into(),
            epoch: 4,
            case: "c".into(),
            modality: Modality::T2f,
            window: (0.0, 3.0),
            dice: Some(crate::metrics::region_dice(&predicted, &truth)),
            truth: Some(Volume {
                data: truth,
                shape,
                spacing: [1.0; 3],
                affine,
            }),
            prediction: Volume {
                data: predicted,
                shape,
                spacing: [1.0; 3],
                affine,
            },
            image,
        }
    }

    #[test]
    fn the_case_dice_counts_each_region() {
        let d = data().dice.expect("truth");
        // WT: 4 truth voxels, 3 predicted, all 3 right: 2*3/7.
        assert!((d.wt - 6.0 / 7.0).abs() < 1e-9, "{d:?}");
        assert_eq!(d.et, 1.0);
        assert_eq!(d.tc, 1.0);
    }

    #[test]
    fn the_default_slice_has_the_most_tumour() {
        let data = data();
        assert_eq!(data.slice_index(Axis::Axial, None), 0);
        assert_eq!(data.slice_index(Axis::Axial, Some(9)), 1, "clamped to the last slice");
    }
}
