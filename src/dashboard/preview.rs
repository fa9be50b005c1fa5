//! The slice preview on screen: a run's [`PreviewData`], ground truth and prediction side by
//! side, as pictures at the terminal's pixel resolution ([`crate::graphics`]) or in character
//! cells ([`crate::render`]).
//!
//! Pictures and cells are made when the slice, axis, overlay, mode or panel size change, not
//! on every frame; a picture reaches the terminal only when it is new (the frame's cells
//! that carry it change).

use std::cell::RefCell;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;

use crate::experiment::{Axis, Modality};
use crate::graphics::{Graphics, Image};
use crate::render::{self, Cell, ColorMode, Overlay, Palette, Slice};
use crate::runs::preview::PreviewData;

/// A loaded preview with the cells last drawn from it.
#[derive(Debug)]
pub struct Preview {
    data: PreviewData,
    cache: RefCell<Option<(CacheKey, Drawn)>>,
}

/// The ground truth and the prediction, ready to draw.
#[derive(Debug)]
enum Drawn {
    Cells([Vec<Vec<Cell>>; 2]),
    Pictures([Option<Image>; 2]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    axis: Axis,
    slice: usize,
    columns: u16,
    rows: u16,
    mode: ColorMode,
    overlay: Overlay,
    pictures: bool,
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
    /// Labels filled or outlined (outlines need pictures to be seen).
    pub overlay: Overlay,
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
            overlay: Overlay::Fill,
            epoch: None,
        }
    }
}

impl std::ops::Deref for Preview {
    type Target = PreviewData;

    fn deref(&self) -> &PreviewData {
        &self.data
    }
}

impl Preview {
    pub fn new(data: PreviewData) -> Preview {
        Preview {
            data,
            cache: RefCell::new(None),
        }
    }

    /// The slice `view` shows: its own, else the one with the most tumour.
    pub fn slice_index(&self, view: &PreviewView) -> usize {
        self.data.slice_index(view.axis, view.slice)
    }

    /// Ground truth and prediction on the slice `view` shows.
    pub fn slice_pair(&self, view: &PreviewView) -> (Option<Slice>, Slice) {
        self.data.slice_pair(view.axis, self.slice_index(view))
    }

    /// Draws the preview into `area`: ground truth and prediction side by side (or the
    /// prediction alone), each scaled to its half keeping the voxel aspect; as pictures when
    /// `graphics` has a protocol and the view is in 256 colours or more.
    pub fn draw(&self, view: &PreviewView, palette: &Palette, graphics: &Graphics, area: Rect, buf: &mut Buffer) {
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
        let pictures =
            graphics.protocol().is_some() && matches!(view.mode, ColorMode::TrueColor | ColorMode::Indexed256);
        let key = CacheKey {
            axis: view.axis,
            slice: self.slice_index(view),
            columns: halves[0].width,
            rows: halves[0].height,
            mode: view.mode,
            overlay: view.overlay,
            pictures,
        };
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().is_none_or(|(k, _)| *k != key) {
            *cache = Some((key, self.make(view, palette, graphics, key)));
        }
        let Some((_, drawn)) = cache.as_ref() else {
            return;
        };
        let shown = if halves.len() == 2 { 0..2 } else { 1..2 };
        for (half, i) in halves.iter().zip(shown) {
            match drawn {
                Drawn::Cells(cells) => put_cells(&cells[i], *half, view.mode, buf),
                Drawn::Pictures(images) => {
                    if let Some(image) = &images[i] {
                        graphics.draw(image, *half, buf);
                    }
                }
            }
        }
    }

    /// The truth's and the prediction's cells or pictures for `key`.
    fn make(&self, view: &PreviewView, palette: &Palette, graphics: &Graphics, key: CacheKey) -> Drawn {
        let (truth, prediction) = self.slice_pair(view);
        let slices = [truth.as_ref(), Some(&prediction)];
        if key.pictures {
            let room = graphics.pixels(ratatui::layout::Size::new(key.columns, key.rows));
            Drawn::Pictures(slices.map(|slice| {
                let slice = slice?;
                let size = render::fit(slice, room.0, room.1);
                graphics.image(&render::picture(slice, palette, view.overlay, size))
            }))
        } else {
            Drawn::Cells(slices.map(|slice| {
                slice.map_or_else(Vec::new, |s| {
                    render::cells(s, usize::from(key.columns), usize::from(key.rows), view.mode, palette)
                })
            }))
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
    use crate::runs::preview::tests::data;

    /// The test preview drawn in half blocks into a buffer of `area`.
    fn blocks(view: &PreviewView, area: Rect) -> Buffer {
        let mut buf = Buffer::empty(area);
        Preview::new(data()).draw(view, &Palette::default(), &Graphics::blocks(), area, &mut buf);
        buf
    }

    fn view(mode: ColorMode, side_by_side: bool) -> PreviewView {
        PreviewView {
            side_by_side,
            ..PreviewView::new(mode)
        }
    }

    #[test]
    fn side_by_side_draws_truth_left_and_prediction_right_in_true_colour() {
        let buf = blocks(&view(ColorMode::TrueColor, true), Rect::new(0, 0, 8, 2));
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
        let area = Rect::new(0, 0, 4, 2);
        for (mode, check) in [
            (ColorMode::Indexed256, "256"),
            (ColorMode::Ansi16, "16"),
            (ColorMode::Ascii, "ascii"),
        ] {
            let buf = blocks(&view(mode, false), area);
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

    /// The bytes a terminal receives for each of `frames` (views) drawn in turn, as ratatui
    /// sends them: only cells that changed since the frame before.
    fn bytes_sent(graphics: &Graphics, frames: &[PreviewView]) -> Vec<Vec<u8>> {
        use ratatui::backend::CrosstermBackend;
        use ratatui::{Terminal, TerminalOptions, Viewport};
        let preview = Preview::new(data());
        let area = Rect::new(0, 0, 20, 6);
        let written = Written::default();
        let backend = CrosstermBackend::new(written.clone());
        let options = TerminalOptions {
            viewport: Viewport::Fixed(area),
        };
        let mut terminal = Terminal::with_options(backend, options).expect("a terminal in memory");
        let mut sent = Vec::new();
        for view in frames {
            terminal
                .draw(|frame| preview.draw(view, &Palette::default(), graphics, area, frame.buffer_mut()))
                .expect("draws");
            sent.push(std::mem::take(&mut *written.0.borrow_mut()));
        }
        sent
    }

    /// What a terminal in memory was sent.
    #[derive(Clone, Default)]
    struct Written(std::rc::Rc<RefCell<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pictures_are_sent_when_they_change_and_not_on_other_redraws() {
        let graphics = Graphics::forced(crate::graphics::Protocol::Sixel);
        let still = view(ColorMode::TrueColor, true);
        let next_slice = PreviewView {
            slice: Some(1),
            ..still
        };
        let outlined = PreviewView {
            overlay: Overlay::Outline,
            ..still
        };
        let sent = bytes_sent(&graphics, &[still, still, still, next_slice, next_slice, outlined]);
        let sixels = |bytes: &[u8]| bytes.windows(2).filter(|w| w == b"\x1bP").count();
        let counts: Vec<usize> = sent.iter().map(|b| sixels(b)).collect();
        // Truth and prediction on the first frame, nothing on redraws, both again for another
        // slice and for outlines.
        assert_eq!(
            counts,
            [2, 0, 0, 2, 0, 2],
            "{:?}",
            sent.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert!(
            sent[1].len() < 64,
            "a redraw that changes nothing sends next to nothing: {}",
            sent[1].len()
        );
        // In 16 colours the same preview is half blocks: no picture at all.
        let sixteen = bytes_sent(&graphics, &[view(ColorMode::Ansi16, true)]);
        assert_eq!(sixels(&sixteen[0]), 0);
        assert!(String::from_utf8_lossy(&sixteen[0]).contains('▀'));
    }

    #[test]
    fn slices_scale_to_the_panel_keeping_their_aspect() {
        // A wide panel: the square slice stays square (4 columns x 2 rows), centred.
        let buf = blocks(&view(ColorMode::TrueColor, false), Rect::new(0, 0, 20, 2));
        let drawn: Vec<u16> = (0..20).filter(|&x| buf[(x, 0)].symbol() == "▀").collect();
        assert_eq!(drawn, [8, 9, 10, 11]);
    }
}
