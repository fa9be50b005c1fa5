//! The slice preview: a run's latest predicted labels for its preview case against the
//! case's ground truth, drawn in character cells with [`crate::render`].
//!
//! Loading reads three NIfTI files (a second or so for a full-size case), so it happens on a
//! thread of its own; the cells are computed when the slice, axis, mode or panel size change,
//! not on every frame.

use std::cell::RefCell;
use std::path::Path;

use anyhow::Context;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;

use crate::data::case;
use crate::data::volume::Volume;
use crate::events::{Event, EventTail, RegionScores};
use crate::experiment::{Axis, Experiment, Modality};
use crate::render::{self, Cell, ColorMode, Palette, Slice};
use crate::rundir::RunDir;

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
    cache: RefCell<Option<(CacheKey, Pictures)>>,
}

/// The ground truth's and the prediction's cells.
type Pictures = [Vec<Vec<Cell>>; 2];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    axis: Axis,
    slice: usize,
    columns: u16,
    rows: u16,
    mode: ColorMode,
}

/// How the preview is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewView {
    pub axis: Axis,
    /// The slice index; `None`: the one with the most tumour.
    pub slice: Option<usize>,
    /// Prediction over the image alone, or ground truth and prediction side by side.
    pub side_by_side: bool,
    pub modality: Modality,
    pub mode: ColorMode,
    /// Step back through earlier previews: the epoch to show (`None`: the latest).
    pub epoch: Option<u32>,
}

impl PreviewView {
    pub fn new(mode: ColorMode) -> PreviewView {
        PreviewView {
            axis: Axis::Axial,
            slice: None,
            side_by_side: true,
            modality: Modality::T2f,
            mode,
            epoch: None,
        }
    }
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
    let experiment = Experiment::load(&run.experiment(), workspace)?;
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
            cache: RefCell::new(None),
        }
    }

    /// Slices along `axis`.
    pub fn slices(&self, axis: Axis) -> usize {
        render::slice_count(&self.image, axis)
    }

    /// The slice `view` shows: its own, else the one with the most tumour (in the ground
    /// truth, else the prediction).
    pub fn slice_index(&self, view: &PreviewView) -> usize {
        let count = self.slices(view.axis).max(1);
        view.slice
            .unwrap_or_else(|| {
                render::slice_with_most_tumour(self.truth.as_ref().unwrap_or(&self.prediction), view.axis)
            })
            .min(count - 1)
    }

    /// Ground truth and prediction on the shown slice.
    pub fn slice_pair(&self, view: &PreviewView) -> (Option<Slice>, Slice) {
        let index = self.slice_index(view);
        let truth = self
            .truth
            .as_ref()
            .map(|t| render::slice(&self.image, Some(t), view.axis, index, self.window));
        let prediction = render::slice(&self.image, Some(&self.prediction), view.axis, index, self.window);
        (truth, prediction)
    }

    /// Draws the preview into `area`: ground truth and prediction side by side (or the
    /// prediction alone), each scaled to its half keeping the voxel aspect.
    pub fn draw(&self, view: &PreviewView, palette: &Palette, area: Rect, buf: &mut Buffer) {
        if area.width < 2 || area.height < 1 {
            return;
        }
        let halves = if view.side_by_side && self.truth.is_some() {
            let left = Rect {
                width: area.width / 2,
                ..area
            };
            let right = Rect {
                x: area.x + area.width / 2 + (area.width % 2),
                width: area.width / 2,
                ..area
            };
            vec![left, right]
        } else {
            vec![area]
        };
        let key = CacheKey {
            axis: view.axis,
            slice: self.slice_index(view),
            columns: halves[0].width,
            rows: halves[0].height,
            mode: view.mode,
        };
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().is_none_or(|(k, _)| *k != key) {
            let (truth, prediction) = self.slice_pair(view);
            let cells = |slice: Option<&Slice>| {
                slice.map_or_else(Vec::new, |s| {
                    render::cells(s, usize::from(key.columns), usize::from(key.rows), view.mode, palette)
                })
            };
            *cache = Some((key, [cells(truth.as_ref()), cells(Some(&prediction))]));
        }
        let Some((_, [truth, prediction])) = cache.as_ref() else {
            return;
        };
        let pictures: Vec<&Vec<Vec<Cell>>> = if halves.len() == 2 {
            vec![truth, prediction]
        } else {
            vec![prediction]
        };
        for (half, cells) in halves.iter().zip(pictures) {
            put_cells(cells, *half, view.mode, buf);
        }
    }
}

/// Copies render cells into the buffer, centred in `area`.
fn put_cells(cells: &[Vec<Cell>], area: Rect, mode: ColorMode, buf: &mut Buffer) {
    let rows = cells.len() as u16;
    let columns = cells.first().map_or(0, Vec::len) as u16;
    let left = area.x + area.width.saturating_sub(columns) / 2;
    let top = area.y + area.height.saturating_sub(rows) / 2;
    for (r, row) in cells.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (x, y) = (left + c as u16, top + r as u16);
            if x >= area.right() || y >= area.bottom() {
                continue;
            }
            let target = &mut buf[(x, y)];
            target.set_char(cell.glyph);
            match mode {
                ColorMode::Ascii => {
                    target.set_fg(Color::Reset).set_bg(Color::Reset);
                }
                _ => {
                    target.set_fg(color(cell.fg, mode)).set_bg(color(cell.bg, mode));
                }
            }
        }
    }
}

fn color(rgb: [u8; 3], mode: ColorMode) -> Color {
    match mode {
        ColorMode::TrueColor => Color::Rgb(rgb[0], rgb[1], rgb[2]),
        ColorMode::Indexed256 => Color::Indexed(render::to_256(rgb)),
        ColorMode::Ansi16 | ColorMode::Ascii => Color::Indexed(render::to_16(rgb)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x4x2 volume: intensity rising left to right, a 2x2 tumour (label 2, inside it 3).
    fn data() -> PreviewData {
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
            cache: RefCell::new(None),
        }
    }

    fn view(mode: ColorMode, side_by_side: bool) -> PreviewView {
        PreviewView {
            side_by_side,
            ..PreviewView::new(mode)
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
    fn side_by_side_draws_truth_left_and_prediction_right_in_true_colour() {
        let data = data();
        let area = Rect::new(0, 0, 8, 2);
        let mut buf = Buffer::empty(area);
        data.draw(&view(ColorMode::TrueColor, true), &Palette::default(), area, &mut buf);
        // Each half is 4 columns x 2 rows = 4x4 pixels: the slice at full size.
        let fg = |x: u16, y: u16| buf[(x, y)].fg;
        let bg = |x: u16, y: u16| buf[(x, y)].bg;
        assert_eq!(buf[(0, 0)].symbol(), "▀");
        // Radiological: the patient's right (x = 3, the brightest) on the left, anterior
        // (y = 3) at the top. Screen pixel (column c, row r) is voxel (3 - c, 3 - r).
        assert_eq!(fg(0, 0), Color::Rgb(255, 255, 255));
        // Voxel (2, 1) is oedema in the truth and background in the prediction: pixel
        // (1, 2), the upper half of cell (1, 1); it differs between the halves, and only it.
        assert_ne!(fg(1, 1), fg(5, 1));
        assert_eq!(fg(2, 1), fg(6, 1));
        assert_eq!(bg(1, 1), bg(5, 1));
        // Label colours are blended over the image: voxel (1, 1) is enhancing.
        let Color::Rgb(r, g, b) = fg(2, 1) else {
            panic!("truecolour expected")
        };
        assert!(!(r == g && g == b), "label 3 is coloured: {r} {g} {b}");
    }

    #[test]
    fn every_colour_mode_draws_the_slice() {
        let data = data();
        let area = Rect::new(0, 0, 4, 2);
        for (mode, check) in [
            (ColorMode::Indexed256, "256"),
            (ColorMode::Ansi16, "16"),
            (ColorMode::Ascii, "ascii"),
        ] {
            let mut buf = Buffer::empty(area);
            data.draw(&view(mode, false), &Palette::default(), area, &mut buf);
            match mode {
                ColorMode::Ascii => {
                    // One pixel per cell (cells twice as tall as wide, so every other image
                    // row): the predicted oedema at y = 2 as letters, intensity as a ramp.
                    let text: String = (0..4).map(|x| buf[(x, 0)].symbol().to_string()).collect();
                    assert_eq!(text, "@oo ", "{check}");
                }
                _ => {
                    assert_eq!(buf[(0, 0)].symbol(), "▀", "{check}");
                    assert!(matches!(buf[(1, 0)].bg, Color::Indexed(_)), "{check}");
                    if mode == ColorMode::Ansi16 {
                        assert!(matches!(buf[(1, 0)].bg, Color::Indexed(i) if i < 16), "{check}");
                    }
                }
            }
        }
    }

    #[test]
    fn slices_scale_to_the_panel_keeping_their_aspect() {
        let data = data();
        // A wide panel: the square slice stays square (4 columns x 2 rows), centred.
        let area = Rect::new(0, 0, 20, 2);
        let mut buf = Buffer::empty(area);
        data.draw(&view(ColorMode::TrueColor, false), &Palette::default(), area, &mut buf);
        let drawn: Vec<u16> = (0..20).filter(|&x| buf[(x, 0)].symbol() == "▀").collect();
        assert_eq!(drawn, [8, 9, 10, 11]);
    }

    #[test]
    fn the_default_slice_has_the_most_tumour() {
        let data = data();
        let v = view(ColorMode::TrueColor, true);
        assert_eq!(data.slice_index(&v), 0);
        let other = PreviewView { slice: Some(9), ..v };
        assert_eq!(data.slice_index(&other), 1, "clamped to the last slice");
    }
}
