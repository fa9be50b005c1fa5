//! Drawing MRI slices with tumour labels in a terminal, two voxels per character cell.
//!
//! A slice is taken along a world axis (axial, coronal, sagittal) in radiological display
//! orientation whatever the file's voxel order, using the affine: the patient's right on the
//! left of the screen, anterior (axial) or superior (coronal, sagittal) at the top. It is
//! scaled to the available cells keeping the voxel aspect (a cell holds two pixels stacked,
//! so cells are square enough for this), intensities are windowed to percentiles, and labels
//! are blended over the image. Cells are `▀` with the upper pixel as foreground colour and
//! the lower as background, in 24-bit colour, the 256-colour cube, the 16 ANSI colours, or
//! plain ASCII (a density ramp for intensity, letters for labels) for dumb terminals and
//! NO_COLOR. The `segtop data show` command and the dashboard's preview both use this.

use std::fmt::Write;

use crate::data::volume::Volume;
use crate::experiment::Axis;

/// How colours reach the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    TrueColor,
    Indexed256,
    Ansi16,
    /// No colour: characters only.
    Ascii,
}

impl ColorMode {
    /// The best mode the environment announces: NO_COLOR, TERM and COLORTERM.
    pub fn detect() -> ColorMode {
        let var = |name| std::env::var(name).unwrap_or_default();
        let term = var("TERM");
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) || term == "dumb" {
            ColorMode::Ascii
        } else if matches!(var("COLORTERM").as_str(), "truecolor" | "24bit") {
            ColorMode::TrueColor
        } else if term.contains("256color") {
            ColorMode::Indexed256
        } else {
            ColorMode::Ansi16
        }
    }
}

/// A slice ready to draw: intensities in [0, 1] and labels, row by row from the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub width: usize,
    pub height: usize,
    pub intensity: Vec<f32>,
    pub labels: Vec<u8>,
    /// Physical size of a pixel (mm) across and down, for aspect-correct scaling.
    pub pixel_mm: [f64; 2],
}

/// How one voxel axis maps onto a display direction.
#[derive(Debug, Clone, Copy)]
struct Direction {
    voxel_axis: usize,
    /// Walk the voxel axis backwards.
    reversed: bool,
}

/// For each world axis (x, y, z in RAS), the voxel axis that runs most along it and whether
/// it runs the same way.
fn orientation<T>(volume: &Volume<T>) -> [Direction; 3] {
    let mut used = [false; 3];
    let mut out = [Direction {
        voxel_axis: 0,
        reversed: false,
    }; 3];
    for (world, row) in volume.affine.iter().enumerate() {
        let mut best = None;
        for (voxel, &value) in row.iter().take(3).enumerate() {
            if used[voxel] {
                continue;
            }
            if best.is_none_or(|(_, v): (usize, f64)| value.abs() > v.abs()) {
                best = Some((voxel, value));
            }
        }
        let (voxel, value) = best.unwrap_or((world, 1.0));
        used[voxel] = true;
        out[world] = Direction {
            voxel_axis: voxel,
            reversed: value < 0.0,
        };
    }
    out
}

/// The (column, row, through) directions of a view, as world axes and whether the screen
/// runs against them: radiological, so columns run from the patient's right (world -x).
fn view_axes(axis: Axis) -> [(usize, bool); 3] {
    match axis {
        // Columns: right to left (-x); rows: anterior to posterior (-y); through: z.
        Axis::Axial => [(0, true), (1, true), (2, false)],
        // Columns: right to left; rows: superior to inferior (-z); through: y.
        Axis::Coronal => [(0, true), (2, true), (1, false)],
        // Columns: anterior to posterior (-y); rows: superior to inferior; through: x.
        Axis::Sagittal => [(1, true), (2, true), (0, false)],
    }
}

/// Number of slices along `axis`.
pub fn slice_count<T>(volume: &Volume<T>, axis: Axis) -> usize {
    let through = view_axes(axis)[2].0;
    volume.shape[orientation(volume)[through].voxel_axis]
}

/// Maps (column, row, slice) of a view to a voxel index.
struct ViewMap {
    strides: [usize; 3],
    extents: [usize; 3],
    reversed: [bool; 3],
    voxel_axes: [usize; 3],
}

impl ViewMap {
    fn new<T>(volume: &Volume<T>, axis: Axis) -> ViewMap {
        let orient = orientation(volume);
        let [nx, ny, _] = volume.shape;
        let voxel_strides = [1, nx, nx * ny];
        let axes = view_axes(axis);
        let mut map = ViewMap {
            strides: [0; 3],
            extents: [0; 3],
            reversed: [false; 3],
            voxel_axes: [0; 3],
        };
        for (i, (world, against)) in axes.iter().enumerate() {
            let d = orient[*world];
            map.voxel_axes[i] = d.voxel_axis;
            map.strides[i] = voxel_strides[d.voxel_axis];
            map.extents[i] = volume.shape[d.voxel_axis];
            map.reversed[i] = d.reversed != *against;
        }
        map
    }

    fn index(&self, column: usize, row: usize, slice: usize) -> usize {
        let at = |i: usize, k: usize| {
            let k = if self.reversed[i] { self.extents[i] - 1 - k } else { k };
            k * self.strides[i]
        };
        at(0, column) + at(1, row) + at(2, slice)
    }
}

/// The column and row ranges of `axis`'s view that show the voxels in `bounds` (a voxel range
/// per voxel axis).
pub fn view_ranges<T>(
    volume: &Volume<T>,
    axis: Axis,
    bounds: &[std::ops::Range<usize>; 3],
) -> [std::ops::Range<usize>; 2] {
    let map = ViewMap::new(volume, axis);
    [0, 1].map(|i| {
        let (extent, range) = (map.extents[i], &bounds[map.voxel_axes[i]]);
        let (start, end) = (range.start.min(extent), range.end.min(extent));
        if map.reversed[i] {
            extent - end..extent - start
        } else {
            start..end
        }
    })
}

impl Slice {
    /// Its size in pixels at one pixel per voxel along the finer axis, the other stretched to
    /// keep the physical aspect (thick slices drawn as tall as they are).
    pub fn natural_size(&self) -> [f64; 2] {
        let finest = self.pixel_mm[0].min(self.pixel_mm[1]).max(1e-6);
        [
            self.width as f64 * self.pixel_mm[0] / finest,
            self.height as f64 * self.pixel_mm[1] / finest,
        ]
    }

    /// The part of the slice in `columns` x `rows`.
    pub fn crop(&self, columns: std::ops::Range<usize>, rows: std::ops::Range<usize>) -> Slice {
        let columns = columns.start.min(self.width)..columns.end.min(self.width);
        let rows = rows.start.min(self.height)..rows.end.min(self.height);
        let mut intensity = Vec::with_capacity(columns.len() * rows.len());
        let mut labels = Vec::with_capacity(columns.len() * rows.len());
        for row in rows.clone() {
            let line = row * self.width;
            intensity.extend_from_slice(&self.intensity[line + columns.start..line + columns.end]);
            labels.extend_from_slice(&self.labels[line + columns.start..line + columns.end]);
        }
        Slice {
            width: columns.len(),
            height: rows.len(),
            intensity,
            labels,
            pixel_mm: self.pixel_mm,
        }
    }
}

/// Intensity window: values at these percentiles of the non-zero voxels map to 0 and 1.
pub fn auto_window(volume: &Volume<f32>, low: f64, high: f64) -> (f32, f32) {
    let mut values: Vec<f32> = volume.data.iter().copied().filter(|v| *v != 0.0).step_by(7).collect();
    if values.is_empty() {
        return (0.0, 1.0);
    }
    values.sort_by(f32::total_cmp);
    let pick = |p: f64| values[((values.len() - 1) as f64 * p / 100.0).round() as usize];
    let (lo, hi) = (pick(low), pick(high));
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

/// Takes slice `index` along `axis` of `image` (and of `labels`, when given), windowed.
pub fn slice(image: &Volume<f32>, labels: Option<&Volume<u8>>, axis: Axis, index: usize, window: (f32, f32)) -> Slice {
    let map = ViewMap::new(image, axis);
    let [width, height, depth] = map.extents;
    let index = index.min(depth.saturating_sub(1));
    let (lo, hi) = window;
    let mut intensity = Vec::with_capacity(width * height);
    let mut out_labels = Vec::with_capacity(width * height);
    for row in 0..height {
        for column in 0..width {
            let i = map.index(column, row, index);
            intensity.push(((image.data[i] - lo) / (hi - lo)).clamp(0.0, 1.0));
            out_labels.push(labels.map_or(0, |l| l.data.get(i).copied().unwrap_or(0)));
        }
    }
    let spacing = |k: usize| image.spacing[map.voxel_axes[k]];
    Slice {
        width,
        height,
        intensity,
        labels: out_labels,
        pixel_mm: [spacing(0), spacing(1)],
    }
}

/// The slice along `axis` with the most tumour voxels (the middle one when there is none).
pub fn slice_with_most_tumour(labels: &Volume<u8>, axis: Axis) -> usize {
    let map = ViewMap::new(labels, axis);
    let [width, height, depth] = map.extents;
    let mut counts = vec![0usize; depth];
    for (slice, count) in counts.iter_mut().enumerate() {
        for row in 0..height {
            for column in 0..width {
                *count += usize::from(labels.data[map.index(column, row, slice)] > 0);
            }
        }
    }
    match counts.iter().enumerate().max_by_key(|(_, c)| **c) {
        Some((slice, &count)) if count > 0 => slice,
        _ => depth / 2,
    }
}

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Label colours for labels 1, 2 and 3.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub labels: [Rgb; 3],
    /// How much of a label's colour covers the image, 0 to 1.
    pub opacity: f32,
}

impl Default for Palette {
    fn default() -> Self {
        Palette {
            labels: [[0xe6, 0x3c, 0x3c], [0x3c, 0xc8, 0x4b], [0xf0, 0xd2, 0x28]],
            opacity: 0.6,
        }
    }
}

/// One character cell: a glyph and, in colour modes, its two colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub glyph: char,
    pub fg: Rgb,
    pub bg: Rgb,
}

/// The slice scaled to fit `columns` x `rows` cells, keeping its physical aspect, as cells
/// (rows of cells from the top). In colour modes each cell holds two pixels stacked.
pub fn cells(slice: &Slice, columns: usize, rows: usize, mode: ColorMode, palette: &Palette) -> Vec<Vec<Cell>> {
    if slice.width == 0 || slice.height == 0 || columns == 0 || rows == 0 {
        return Vec::new();
    }
    // Pixels per cell: 1 across, 2 down in colour; ASCII gets 1 x 1 with cells twice as tall
    // as wide, which the same arithmetic covers with a vertical pixel per cell.
    let pixels_down_per_cell = if mode == ColorMode::Ascii { 1.0 } else { 2.0 };
    let width_mm = slice.width as f64 * slice.pixel_mm[0];
    let height_mm = slice.height as f64 * slice.pixel_mm[1];
    // A cell is about half as wide as tall: one column covers `mm` across, a row `2 * mm` down.
    let mm_per_column = (width_mm / columns as f64).max(height_mm / (rows as f64 * 2.0));
    let out_columns = ((width_mm / mm_per_column).round() as usize).clamp(1, columns);
    let out_rows = ((height_mm / (mm_per_column * 2.0)).round() as usize).clamp(1, rows);
    let pixel_rows = (out_rows as f64 * pixels_down_per_cell) as usize;
    let sample = |column: usize, pixel_row: usize| {
        let x = ((column as f64 + 0.5) / out_columns as f64 * slice.width as f64) as usize;
        let y = ((pixel_row as f64 + 0.5) / pixel_rows as f64 * slice.height as f64) as usize;
        let i = y.min(slice.height - 1) * slice.width + x.min(slice.width - 1);
        (slice.intensity[i], slice.labels[i])
    };
    (0..out_rows)
        .map(|row| {
            (0..out_columns)
                .map(|column| match mode {
                    ColorMode::Ascii => ascii_cell(sample(column, row)),
                    _ => {
                        let top = blend(sample(column, row * 2), palette);
                        let bottom = blend(sample(column, row * 2 + 1), palette);
                        Cell {
                            glyph: '▀',
                            fg: top,
                            bg: bottom,
                        }
                    }
                })
                .collect()
        })
        .collect()
}

/// How labels are laid over the image in a [`Picture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlay {
    /// The image alone.
    None,
    /// Each label's colour blended over its voxels.
    #[default]
    Fill,
    /// Only the voxels on a label's border are coloured: the image shows through inside.
    Outline,
}

/// An RGB picture, row by row from the top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<Rgb>,
}

impl Picture {
    /// The pixels as bytes, three per pixel.
    pub fn bytes(&self) -> Vec<u8> {
        self.rgb.iter().flatten().copied().collect()
    }
}

/// The size in pixels the slice takes inside `width` x `height` pixels, keeping its physical
/// aspect: whole multiples of its voxels when there is room for them (crisp, and no more
/// bytes than that to send), scaled down smoothly when there is not.
pub fn fit(slice: &Slice, width: usize, height: usize) -> (usize, usize) {
    let natural = slice.natural_size();
    let scale = (width as f64 / natural[0]).min(height as f64 / natural[1]);
    let scale = if scale >= 1.0 { scale.floor() } else { scale };
    let size = |n: f64, most: usize| ((n * scale).round() as usize).clamp(1, most.max(1));
    (size(natural[0], width), size(natural[1], height))
}

/// The slice drawn at `width` x `height` pixels (nearest voxel, so labels keep their edges),
/// with its labels laid over as `overlay` says. The terminal's images and the report's
/// montage both come from here.
pub fn picture(slice: &Slice, palette: &Palette, overlay: Overlay, (width, height): (usize, usize)) -> Picture {
    let border = match overlay {
        Overlay::Outline => borders(slice),
        _ => Vec::new(),
    };
    // Borders are drawn opaque: thin lines half blended over the image would not read.
    let palette = Palette {
        opacity: if overlay == Overlay::Outline {
            1.0
        } else {
            palette.opacity
        },
        ..*palette
    };
    let mut rgb = Vec::with_capacity(width * height);
    if slice.width > 0 && slice.height > 0 {
        for y in 0..height {
            let sy = (y * slice.height / height.max(1)).min(slice.height - 1);
            for x in 0..width {
                let sx = (x * slice.width / width.max(1)).min(slice.width - 1);
                let i = sy * slice.width + sx;
                let label = match overlay {
                    Overlay::None => 0,
                    Overlay::Fill => slice.labels[i],
                    Overlay::Outline if border[i] => slice.labels[i],
                    Overlay::Outline => 0,
                };
                rgb.push(blend((slice.intensity[i], label), &palette));
            }
        }
    }
    Picture { width, height, rgb }
}

/// For each pixel of the slice: a label whose 4-neighbourhood holds another label (or the
/// slice's edge).
fn borders(slice: &Slice) -> Vec<bool> {
    let (w, h) = (slice.width, slice.height);
    let label = |x: usize, y: usize| slice.labels[y * w + x];
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let here = label(x, y);
            if here == 0 {
                continue;
            }
            let edge = x == 0 || y == 0 || x + 1 == w || y + 1 == h;
            out[y * w + x] = edge
                || label(x - 1, y) != here
                || label(x + 1, y) != here
                || label(x, y - 1) != here
                || label(x, y + 1) != here;
        }
    }
    out
}

fn blend((intensity, label): (f32, u8), palette: &Palette) -> Rgb {
    let grey = intensity * 255.0;
    if label == 0 || label > 3 {
        let g = grey.round() as u8;
        return [g, g, g];
    }
    let colour = palette.labels[usize::from(label) - 1];
    let a = palette.opacity;
    colour.map(|c| (f32::from(c) * a + grey * (1.0 - a)).round() as u8)
}

fn ascii_cell((intensity, label): (f32, u8)) -> Cell {
    const RAMP: &[u8] = b" .:-=+*#%@";
    let glyph = match label {
        1 => 'N',
        2 => 'o',
        3 => 'E',
        _ => char::from(RAMP[((intensity * (RAMP.len() - 1) as f32).round() as usize).min(RAMP.len() - 1)]),
    };
    Cell {
        glyph,
        fg: [255; 3],
        bg: [0; 3],
    }
}

/// The nearest colour of the 256-colour palette (its 6x6x6 cube and grey ramp).
pub fn to_256(rgb: Rgb) -> u8 {
    let level = |c: u8| {
        if c < 48 {
            0
        } else if c < 115 {
            1
        } else {
            (c - 35) / 40
        }
    };
    let [r, g, b] = rgb.map(level);
    let cube = 16 + 36 * r + 6 * g + b;
    let cube_rgb = [r, g, b].map(|l| if l == 0 { 0 } else { 55 + 40 * l });
    let grey_level = ((u16::from(rgb[0]) + u16::from(rgb[1]) + u16::from(rgb[2])) / 3) as u8;
    let grey_index = if grey_level > 238 {
        23
    } else {
        grey_level.saturating_sub(3) / 10
    };
    let grey = 8 + 10 * grey_index;
    let distance = |c: [u8; 3]| -> i32 {
        c.iter()
            .zip(rgb)
            .map(|(a, b)| (i32::from(*a) - i32::from(b)).pow(2))
            .sum()
    };
    if distance([grey; 3]) < distance(cube_rgb) {
        232 + grey_index
    } else {
        cube
    }
}

/// The nearest of the 16 ANSI colours, as its index 0-15.
pub fn to_16(rgb: Rgb) -> u8 {
    const ANSI: [Rgb; 16] = [
        [0, 0, 0],
        [205, 0, 0],
        [0, 205, 0],
        [205, 205, 0],
        [0, 0, 238],
        [205, 0, 205],
        [0, 205, 205],
        [229, 229, 229],
        [127, 127, 127],
        [255, 0, 0],
        [0, 255, 0],
        [255, 255, 0],
        [92, 92, 255],
        [255, 0, 255],
        [0, 255, 255],
        [255, 255, 255],
    ];
    let distance = |c: &Rgb| -> i32 {
        c.iter()
            .zip(rgb)
            .map(|(a, b)| (i32::from(*a) - i32::from(b)).pow(2))
            .sum()
    };
    ANSI.iter()
        .enumerate()
        .min_by_key(|(_, c)| distance(c))
        .map_or(0, |(i, _)| i as u8)
}

/// The cells as text with ANSI escapes for `mode`, one line per row, colours reset at the end
/// of each line.
pub fn to_ansi(cells: &[Vec<Cell>], mode: ColorMode) -> String {
    let mut out = String::new();
    for row in cells {
        for cell in row {
            match mode {
                ColorMode::Ascii => {}
                ColorMode::TrueColor => {
                    let ([r, g, b], [br, bg, bb]) = (cell.fg, cell.bg);
                    let _ = write!(out, "\x1b[38;2;{r};{g};{b};48;2;{br};{bg};{bb}m");
                }
                ColorMode::Indexed256 => {
                    let _ = write!(out, "\x1b[38;5;{};48;5;{}m", to_256(cell.fg), to_256(cell.bg));
                }
                ColorMode::Ansi16 => {
                    let code = |i: u8, base: u8| if i < 8 { base + i } else { base + 60 + i - 8 };
                    let _ = write!(out, "\x1b[{};{}m", code(to_16(cell.fg), 30), code(to_16(cell.bg), 40));
                }
            }
            out.push(cell.glyph);
        }
        if mode != ColorMode::Ascii {
            out.push_str("\x1b[0m");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x3x2 volume with the BraTS affine (x and y flipped), voxel value = its index.
    fn volume() -> Volume<f32> {
        Volume {
            shape: [4, 3, 2],
            spacing: [1.0; 3],
            affine: [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0]],
            data: (0..24).map(|i| i as f32).collect(),
        }
    }

    #[test]
    fn axial_view_of_a_brats_volume_is_in_voxel_order() {
        // BraTS voxels run towards the patient's left and posterior: exactly radiological.
        let s = slice(&volume(), None, Axis::Axial, 1, (0.0, 23.0));
        assert_eq!((s.width, s.height), (4, 3));
        let raw: Vec<f32> = s.intensity.iter().map(|v| (v * 23.0).round()).collect();
        assert_eq!(raw, (12..24).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn a_ras_volume_is_flipped_into_radiological_view() {
        let mut v = volume();
        v.affine = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]];
        let s = slice(&v, None, Axis::Axial, 0, (0.0, 23.0));
        let first_row: Vec<f32> = s.intensity[..4].iter().map(|v| (v * 23.0).round()).collect();
        // Top row is the most anterior (y = 2), leftmost column the patient's right (x = 3).
        assert_eq!(first_row, [11.0, 10.0, 9.0, 8.0]);
        assert_eq!(slice_count(&v, Axis::Sagittal), 4);
        assert_eq!(slice_count(&v, Axis::Coronal), 3);
    }

    #[test]
    fn cells_keep_the_aspect_and_stack_two_pixels() {
        let s = Slice {
            width: 4,
            height: 4,
            intensity: vec![
                0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0,
            ],
            labels: vec![0; 16],
            pixel_mm: [1.0, 1.0],
        };
        let grid = cells(&s, 40, 40, ColorMode::TrueColor, &Palette::default());
        // Square in mm: twice as many columns as rows, each row two pixels.
        assert_eq!(grid.len() * 2, grid[0].len());
        assert_eq!(grid[0][0].fg, [0, 0, 0]);
        assert!(grid.iter().all(|row| row.iter().all(|c| c.glyph == '▀')));
    }

    #[test]
    fn ascii_mode_writes_labels_as_letters() {
        let s = Slice {
            width: 3,
            height: 1,
            intensity: vec![0.0, 1.0, 0.5],
            labels: vec![0, 0, 3],
            pixel_mm: [1.0, 2.0],
        };
        let text = to_ansi(
            &cells(&s, 3, 1, ColorMode::Ascii, &Palette::default()),
            ColorMode::Ascii,
        );
        assert_eq!(text, " @E\n");
    }

    fn blob() -> Slice {
        // A 6x4 slice: a 3x2 block of oedema with one enhancing voxel inside its border.
        let mut labels = vec![0; 24];
        for (x, y) in [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)] {
            labels[y * 6 + x] = 2;
        }
        labels[6 + 2] = 3;
        Slice {
            width: 6,
            height: 4,
            intensity: vec![0.5; 24],
            labels,
            pixel_mm: [1.0, 1.0],
        }
    }

    #[test]
    fn pictures_fit_in_whole_multiples_or_scale_down() {
        let s = blob();
        assert_eq!(fit(&s, 100, 100), (96, 64));
        assert_eq!(fit(&s, 13, 100), (12, 8), "twice: the largest whole multiple");
        assert_eq!(fit(&s, 3, 100), (3, 2), "half size");
        let thick = Slice {
            pixel_mm: [1.0, 5.0],
            ..blob()
        };
        assert_eq!(fit(&thick, 600, 600), (180, 600), "thick slices stretched to their mm");
    }

    #[test]
    fn fill_colours_every_labelled_pixel_and_outline_only_borders() {
        let s = blob();
        let palette = Palette::default();
        let grey = [128, 128, 128];
        let fill = picture(&s, &palette, Overlay::Fill, (6, 4));
        let coloured = |p: &Picture| p.rgb.iter().filter(|c| **c != grey).count();
        assert_eq!(coloured(&fill), 6);
        // Scaled up twice, nearest: every voxel becomes 2x2 pixels.
        assert_eq!(coloured(&picture(&s, &palette, Overlay::Fill, (12, 8))), 24);
        let none = picture(&s, &palette, Overlay::None, (6, 4));
        assert_eq!(coloured(&none), 0);
        // A 3x4-voxel oedema block with the enhancing voxel: every voxel touches the outside
        // or the other label, so all six are border; in a larger blob the inside stays grey.
        let outline = picture(&s, &palette, Overlay::Outline, (6, 4));
        assert_eq!(coloured(&outline), 6);
        assert_eq!(outline.rgb[6 + 2], palette.labels[2], "outline colours are opaque");
        let mut big = Slice {
            width: 7,
            height: 7,
            intensity: vec![0.5; 49],
            labels: vec![0; 49],
            pixel_mm: [1.0, 1.0],
        };
        for y in 1..6 {
            for x in 1..6 {
                big.labels[y * 7 + x] = 2;
            }
        }
        let ring = picture(&big, &palette, Overlay::Outline, (7, 7));
        assert_eq!(coloured(&ring), 16, "the 5x5 block's ring of 16, not its 9 inside");
        assert_eq!(ring.rgb[3 * 7 + 3], grey);
    }

    #[test]
    fn palette_approximations_pick_the_nearest_colour() {
        assert_eq!(to_256([0, 0, 0]), 16);
        assert_eq!(to_256([255, 0, 0]), 196);
        assert_eq!(to_256([128, 128, 128]), 244);
        assert_eq!(to_16([250, 10, 10]), 9);
        assert_eq!(to_16([250, 250, 250]), 15);
        assert_eq!(to_16([230, 230, 230]), 7);
    }
}
