//! `segtop report RUN --out DIR`: pictures of a run for slides and papers.
//!
//! - `curves.png`: training loss (and its terms), validation Dice per region and the
//!   learning rate, per epoch.
//! - `montage.png`: the preview case's latest prediction against its ground truth, on the
//!   axial, coronal and sagittal slices with the most tumour: the image, the ground truth
//!   over it, and the prediction over it.
//!
//! Text is set in DejaVu Sans, compiled in, so a server without fonts draws the same PNGs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use segtop::config::Choice;
use segtop::experiment::{Axis, Modality};
use segtop::render::{self, Overlay, Palette, Slice};
use segtop::run::RunDir;
use segtop::run::events::RegionScores;
use segtop::runs::preview::{self, PreviewData};
use segtop::theme::Theme;
use segtop::workspace::Workspace;

use super::export::{EpochRow, history};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The run: its id, a part only it has, or its directory
    pub run: String,
    /// Folder to write the pictures into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Modality under the labels in the montage: t1n, t1c, t2w or t2f
    #[arg(long, default_value = "t2f", value_parser = crate::parse_choice::<Modality>)]
    pub modality: Modality,
}

const FONT: &str = "sans-serif";

pub fn report(workspace: &Workspace, args: &ReportArgs) -> anyhow::Result<()> {
    let runs = segtop::runs::watch::snapshot(workspace);
    let model = super::runs::find(&runs, &args.run)?;
    let run = RunDir::open(&model.dir);
    register_font()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let rows = history(&run)?;
    anyhow::ensure!(
        rows.iter().any(|r| r.loss.is_some()),
        "{} has no finished epoch yet: nothing to draw",
        model.id
    );
    let curves = args.out.join("curves.png");
    draw_curves(&curves, &model.id, &rows).with_context(|| format!("cannot draw {}", curves.display()))?;
    println!("wrote {}", curves.display());
    let montage = args.out.join("montage.png");
    match preview::load(workspace.root(), run.path(), args.modality)? {
        Some(preview) => {
            draw_montage(&montage, &model.id, &preview, &Theme::default())
                .with_context(|| format!("cannot draw {}", montage.display()))?;
            println!("wrote {}", montage.display());
        }
        None => println!("no preview prediction in {} yet: no montage", run.preview().display()),
    }
    Ok(())
}

fn register_font() -> anyhow::Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the compiled-in font does not load"))?;
    plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| anyhow::anyhow!("the compiled-in font does not load"))
}

fn draw_error<E: std::error::Error + Send + Sync + 'static>(error: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

/// Loss, Dice and learning rate over epochs, side by side.
fn draw_curves(path: &Path, title: &str, rows: &[EpochRow]) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1800, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root
        .titled(title, (FONT, 28).into_font().style(FontStyle::Bold))
        .map_err(draw_error)?;
    let panels = root.split_evenly((1, 3));
    let last = rows.iter().map(|r| r.epoch).max().unwrap_or(1).max(2);
    let x = 1f64..f64::from(last);

    let series = loss_series(rows);
    let top = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.05;
    line_panel(&panels[0], "training loss", "loss", x.clone(), 0.0..top, &series, false)?;
    line_panel(
        &panels[1],
        "validation Dice",
        "Dice",
        x.clone(),
        0.0..1.0,
        &dice_series(rows),
        true,
    )?;
    lr_panel(&panels[2], x, last, rows)?;
    root.present().map_err(draw_error)
}

/// The total training loss and each of its terms, one series per name, terms sorted.
fn loss_series(rows: &[EpochRow]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![(
        "total".to_string(),
        rows.iter()
            .filter_map(|r| Some((f64::from(r.epoch), r.loss?)))
            .collect(),
    )];
    let mut terms: Vec<&String> = rows.iter().flat_map(|r| r.loss_parts.keys()).collect();
    terms.sort();
    terms.dedup();
    for term in terms {
        series.push((
            term.clone(),
            rows.iter()
                .filter_map(|r| Some((f64::from(r.epoch), *r.loss_parts.get(term)?)))
                .collect(),
        ));
    }
    series
}

/// Validation Dice per region (ET, TC, WT), over the epochs that were validated.
fn dice_series(rows: &[EpochRow]) -> Vec<(String, Vec<(f64, f64)>)> {
    type Pick = fn(&RegionScores) -> f64;
    let pick: [(&str, Pick); 3] = [("ET", |d| d.et), ("TC", |d| d.tc), ("WT", |d| d.wt)];
    pick.iter()
        .map(|(name, f)| {
            (
                name.to_string(),
                rows.iter()
                    .filter_map(|r| Some((f64::from(r.epoch), f(r.dice.as_ref()?))))
                    .collect(),
            )
        })
        .collect()
}

/// The learning rate on a log scale; left empty when no epoch logged a positive rate, since a
/// log axis cannot hold zero.
fn lr_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    x: std::ops::Range<f64>,
    last: u32,
    rows: &[EpochRow],
) -> anyhow::Result<()> {
    let lr: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((f64::from(r.epoch), r.lr?)))
        .filter(|p| p.1 > 0.0)
        .collect();
    let (lo, hi) = lr
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if lr.is_empty() {
        return Ok(());
    }
    let mut chart = ChartBuilder::on(area)
        .caption("learning rate", (FONT, 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x, (lo * 0.8..hi * 1.25).log_scale())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epoch_labels(last))
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style((FONT, 15))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(LineSeries::new(lr, BLUE.stroke_width(2)))
        .map_err(draw_error)?;
    Ok(())
}

/// How many epoch labels to ask of the x axis ending at epoch `last`: at most one per epoch,
/// so short runs get whole-epoch ticks (plotters picks 1, 2, 5 x 10^k steps within the count).
fn epoch_labels(last: u32) -> usize {
    (last as usize).clamp(2, 10)
}

/// An epoch tick's label: whole epochs only, so a tick between two epochs is left unlabelled
/// rather than rounded onto a neighbour's number.
fn epoch_label(value: &f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        String::new()
    }
}

const PALETTE: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];

fn line_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    series: &[(String, Vec<(f64, f64)>)],
    points: bool,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), y)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epoch_labels(x.end as u32))
        .x_label_formatter(&epoch_label)
        .y_desc(y_desc)
        .label_style((FONT, 15))
        .draw()
        .map_err(draw_error)?;
    for (i, (name, data)) in series.iter().enumerate() {
        if data.is_empty() {
            continue;
        }
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        if points {
            chart
                .draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw_error)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)
}

/// Space between montage panels, in pixels.
const GAP: i32 = 12;
/// Height of the montage's header: title, column headings and the label legend.
const HEADER: i32 = 100;
/// Height of the line naming each montage row's slice.
const LABEL: i32 = 28;

/// One montage row: the axis, the slice index, and that slice under the truth and the prediction.
type MontageRow = (Axis, usize, Slice, Slice);

/// Rows: axial, coronal, sagittal through the most tumour; columns: image, ground truth,
/// prediction.
fn draw_montage(path: &Path, title: &str, preview: &PreviewData, theme: &Theme) -> anyhow::Result<()> {
    let truth = preview
        .truth
        .as_ref()
        .with_context(|| format!("the preview case {} has no labels to compare with", preview.case))?;
    let rows = montage_rows(preview, truth);
    // At least twice the voxels, and panels at least 300 pixels wide for small volumes.
    let widest = rows.iter().map(|r| r.2.width.max(r.2.height)).max().unwrap_or(1) as f64;
    let scale = (300.0 / widest).max(2.0);
    let column_width = rows.iter().map(|r| panel_size(&r.2, scale).0).max().unwrap_or(1);
    let width = (3 * column_width + 4 * GAP).max(960);
    let height = HEADER
        + rows
            .iter()
            .map(|r| panel_size(&r.2, scale).1 + LABEL + GAP)
            .sum::<i32>();
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&BLACK).map_err(draw_error)?;
    let dice = preview.dice.context("no ground truth to score against")?;
    draw_montage_headings(&root, title, preview, dice, column_width)?;
    let palette = theme.labels.palette();
    draw_label_legend(&root, &label_colors(&palette))?;
    let mut y = HEADER;
    for row in &rows {
        y = draw_montage_row(&root, row, y, (column_width, scale), &palette)?;
    }
    root.present().map_err(draw_error)
}

/// The slice with the most tumour along each axis, rendered once with the truth and once
/// with the prediction.
fn montage_rows(preview: &PreviewData, truth: &segtop::data::volume::Volume<u8>) -> Vec<MontageRow> {
    let (image, window) = (&preview.image, preview.window);
    let mut rows = Vec::new();
    for axis in [Axis::Axial, Axis::Coronal, Axis::Sagittal] {
        let index = render::slice_with_most_tumour(truth, axis);
        let with_truth = render::slice(image, Some(truth), axis, index, window);
        let with_prediction = render::slice(image, Some(&preview.prediction), axis, index, window);
        rows.push((axis, index, with_truth, with_prediction));
    }
    rows
}

/// A slice's size on the page: scaled, with non-square voxels stretched to their true aspect.
fn panel_size(s: &Slice, scale: f64) -> (i32, i32) {
    let [width, height] = s.natural_size();
    ((width * scale).round() as i32, (height * scale).round() as i32)
}

/// The title line (run, case, epoch, Dice) and the three column headings.
fn draw_montage_headings(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    preview: &PreviewData,
    dice: RegionScores,
    column_width: i32,
) -> anyhow::Result<()> {
    let white = (FONT, 22).into_font().color(&WHITE);
    root.draw_text(
        &format!(
            "{title} · {} · epoch {} · Dice ET {:.2} TC {:.2} WT {:.2}",
            preview.case, preview.epoch, dice.et, dice.tc, dice.wt
        ),
        &white,
        (GAP, 12),
    )
    .map_err(draw_error)?;
    let grey = (FONT, 18).into_font().color(&RGBColor(200, 200, 200));
    for (column, heading) in [preview.modality.name(), "ground truth", "prediction"]
        .into_iter()
        .enumerate()
    {
        root.draw_text(heading, &grey, (GAP + column as i32 * (column_width + GAP), 42))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// The label colours, on a line of their own, so the overlays can be read.
fn draw_label_legend(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    colors: &[RGBColor; 3],
) -> anyhow::Result<()> {
    let grey = (FONT, 18).into_font().color(&RGBColor(200, 200, 200));
    let mut x = GAP;
    for (name, color) in ["necrosis", "oedema", "enhancing"].into_iter().zip(colors) {
        root.draw(&Rectangle::new([(x, 72), (x + 14, 86)], color.filled()))
            .map_err(draw_error)?;
        root.draw_text(name, &grey, (x + 18, 68)).map_err(draw_error)?;
        let (w, _) = root.estimate_text_size(name, &grey).map_err(draw_error)?;
        x += w as i32 + 36;
    }
    Ok(())
}

/// One axis's row at height `y`: its slice label, then image, truth and prediction panels;
/// returns where the next row starts. The pair after `y` is the column width and pixel scale.
fn draw_montage_row(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    (axis, index, with_truth, with_prediction): &MontageRow,
    y: i32,
    (column_width, scale): (i32, f64),
    palette: &Palette,
) -> anyhow::Result<i32> {
    let (w, h) = panel_size(with_truth, scale);
    root.draw_text(
        &format!("{} slice {}", axis.name(), index + 1),
        &(FONT, 18).into_font().color(&WHITE),
        (GAP, y + 4),
    )
    .map_err(draw_error)?;
    let top = y + LABEL;
    for (column, (slice, overlay)) in [
        (with_truth, Overlay::None),
        (with_truth, Overlay::Fill),
        (with_prediction, Overlay::Fill),
    ]
    .into_iter()
    .enumerate()
    {
        let left = GAP + column as i32 * (column_width + GAP);
        draw_slice_panel(root, slice, (overlay, palette), (left, top), (w, h))?;
    }
    Ok(top + h + GAP)
}

/// Paints a slice at `origin`, scaled to `size`, as the terminal's images draw it: the labels
/// of `palette` laid over as `overlay` says.
fn draw_slice_panel(
    root: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    slice: &Slice,
    (overlay, palette): (Overlay, &Palette),
    (left, top): (i32, i32),
    (w, h): (i32, i32),
) -> anyhow::Result<()> {
    let picture = render::picture(slice, palette, overlay, (w.max(1) as usize, h.max(1) as usize));
    for (i, [r, g, b]) in picture.rgb.iter().enumerate() {
        let (x, y) = ((i % picture.width) as i32, (i / picture.width) as i32);
        root.draw_pixel((left + x, top + y), &RGBColor(*r, *g, *b))
            .map_err(draw_error)?;
    }
    Ok(())
}

fn label_colors(palette: &Palette) -> [RGBColor; 3] {
    palette.labels.map(|[r, g, b]| RGBColor(r, g, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::coord::ranged1d::Ranged;
    use plotters::coord::types::RangedCoordf64;

    /// The x-axis labels plotters draws for runs of `last` epochs, with the axis as drawn.
    fn labels(last: u32) -> Vec<String> {
        let axis = RangedCoordf64::from(1.0..f64::from(last));
        axis.key_points(epoch_labels(last))
            .iter()
            .map(epoch_label)
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn short_runs_get_each_epoch_once_on_the_x_axis() {
        assert_eq!(labels(6), ["1", "2", "3", "4", "5", "6"]);
        assert_eq!(labels(2), ["1", "2"]);
        for last in 2..=300 {
            let shown = labels(last);
            let mut distinct = shown.clone();
            distinct.dedup();
            assert_eq!(shown, distinct, "{last} epochs");
            assert!(shown.len() >= 2, "{last} epochs: {shown:?}");
        }
    }
}
