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
    /// The voxels worth showing, per voxel axis: the head and every label, with a margin.
    /// Slices are cut to them, so the black around the head takes no room on screen.
    pub bounds: [std::ops::Range<usize>; 3],
}

/// Voxels of black kept around the head.
const MARGIN: usize = 4;

/// The smallest box (a voxel range per axis) holding every non-zero voxel of the image and
/// every label, widened by [`MARGIN`]; the whole volume when there is none.
fn bounds(image: &Volume<f32>, labels: &[&Volume<u8>]) -> [std::ops::Range<usize>; 3] {
    let [nx, ny, nz] = image.shape;
    let (mut low, mut high) = ([usize::MAX; 3], [0usize; 3]);
    for z in 0..nz {
        for y in 0..ny {
            let line = (z * ny + y) * nx;
            for x in 0..nx {
                let i = line + x;
                let shown = image.data[i] != 0.0 || labels.iter().any(|l| l.data.get(i).is_some_and(|v| *v != 0));
                if shown {
                    for (axis, at) in [x, y, z].into_iter().enumerate() {
                        low[axis] = low[axis].min(at);
                        high[axis] = high[axis].max(at);
                    }
                }
            }
        }
    }
    [0, 1, 2].map(|axis| {
        if low[axis] > high[axis] {
            0..image.shape[axis]
        } else {
            low[axis].saturating_sub(MARGIN)..(high[axis] + 1 + MARGIN).min(image.shape[axis])
        }
    })
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
        let labels: Vec<&Volume<u8>> = truth.iter().chain([&prediction]).collect();
        let bounds = bounds(&image, &labels);
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
            bounds,
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

    /// Ground truth and prediction on slice `index` along `axis`, cut to the head and labels.
    pub fn slice_pair(&self, axis: Axis, index: usize) -> (Option<Slice>, Slice) {
        let [columns, rows] = render::view_ranges(&self.image, axis, &self.bounds);
        let cut = |labels: &Volume<u8>| {
            render::slice(&self.image, Some(labels), axis, index, self.window).crop(columns.clone(), rows.clone())
        };
        (self.truth.as_ref().map(cut), cut(&self.prediction))
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
            bounds: [0..4, 0..4, 0..2],
        }
    }

    #[test]
    fn slices_are_cut_to_the_head_and_every_label_with_a_margin() {
        // A 20x20x3 volume, the head at x 8..12, y 6..14 on the middle slice only, and one
        // predicted voxel far outside it (a false positive must stay in view).
        let shape = [20, 20, 3];
        let mut image = Volume {
            shape,
            spacing: [1.0; 3],
            affine: [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            data: vec![0.0; 1200],
        };
        for y in 6..14 {
            for x in 8..12 {
                image.data[400 + y * 20 + x] = 1.0;
            }
        }
        let mut prediction = Volume {
            data: vec![0u8; 1200],
            shape,
            spacing: image.spacing,
            affine: image.affine,
        };
        assert_eq!(bounds(&image, &[&prediction]), [4..16, 2..18, 0..3]);
        prediction.data[400 + 19 * 20 + 1] = 2;
        let data = PreviewData::new("r".into(), 1, "c".into(), Modality::T2f, image, None, prediction);
        assert_eq!(data.bounds, [0..16, 2..20, 0..3]);
        let (_, slice) = data.slice_pair(Axis::Axial, 1);
        assert_eq!((slice.width, slice.height), (16, 18));
        // Radiological view of a BraTS-oriented volume: voxel order; the speck is still there.
        assert_eq!(slice.labels.iter().filter(|l| **l == 2).count(), 1);
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
