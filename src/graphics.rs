//! Slices at the terminal's pixel resolution, through a graphics protocol: kitty, sixel or
//! iTerm2's inline images (the `ratatui-image` crate encodes them and asks the terminal
//! which it speaks), with [`crate::render`]'s half blocks wherever pictures cannot be shown.
//!
//! Which one is decided once, at start-up ([`decide`], a function of what the environment
//! says and what the terminal answered): half blocks under `NO_COLOR`, in 16 colours, when
//! the terminal does not answer in time, and inside tmux unless its `allow-passthrough` is
//! on (then with a hint saying so). `--graphics` and the `graphics` setting force a protocol.

use std::cell::RefCell;
use std::fmt::Write;
use std::io::IsTerminal;
use std::time::Duration;

use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui_image::Resize;
use ratatui_image::picker::{Picker, ProtocolType, cap_parser::QueryStdioOptions};

use crate::render::{ColorMode, Picture};

/// How long the terminal has to answer the start-up query (a round trip over SSH included).
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

crate::choice_enum! {
    /// The `graphics` setting and `--graphics`: ask the terminal, or force one way.
    #[derive(Default)]
    pub enum GraphicsChoice {
        #[default]
        Auto => "auto",
        Kitty => "kitty",
        Sixel => "sixel",
        Iterm2 => "iterm2",
        Blocks => "blocks",
    }
}

impl GraphicsChoice {
    fn forced(self) -> Option<Protocol> {
        match self {
            GraphicsChoice::Kitty => Some(Protocol::Kitty),
            GraphicsChoice::Sixel => Some(Protocol::Sixel),
            GraphicsChoice::Iterm2 => Some(Protocol::Iterm2),
            GraphicsChoice::Auto | GraphicsChoice::Blocks => None,
        }
    }
}

/// A graphics protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Kitty,
    Sixel,
    Iterm2,
}

impl Protocol {
    fn of(kind: ProtocolType) -> Option<Protocol> {
        match kind {
            ProtocolType::Kitty => Some(Protocol::Kitty),
            ProtocolType::Sixel => Some(Protocol::Sixel),
            ProtocolType::Iterm2 => Some(Protocol::Iterm2),
            ProtocolType::Halfblocks => None,
        }
    }

    fn kind(self) -> ProtocolType {
        match self {
            Protocol::Kitty => ProtocolType::Kitty,
            Protocol::Sixel => ProtocolType::Sixel,
            Protocol::Iterm2 => ProtocolType::Iterm2,
        }
    }
}

/// Where segtop runs, as far as tmux is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmux {
    Outside,
    /// Inside tmux with `allow-passthrough` on: pictures reach the terminal around it.
    Passthrough,
    /// Inside tmux, which would swallow the pictures.
    NoPassthrough,
}

impl Tmux {
    /// From `$TMUX` and, inside tmux, its `allow-passthrough` option.
    pub fn detect() -> Tmux {
        if std::env::var_os("TMUX").is_none_or(|v| v.is_empty()) {
            return Tmux::Outside;
        }
        let shown = std::process::Command::new("tmux")
            .args(["show-options", "-Apv", "allow-passthrough"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        match shown {
            Ok(out) if matches!(String::from_utf8_lossy(&out.stdout).trim(), "on" | "all") => Tmux::Passthrough,
            _ => Tmux::NoPassthrough,
        }
    }
}

/// What the terminal answered to the start-up query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The best protocol it said it speaks, if any.
    pub protocol: Option<Protocol>,
    /// Kitty's version, when the terminal is kitty and said it (`CSI > q`).
    pub kitty: Option<(u32, u32)>,
}

/// The first kitty release with the placeholders its pictures are drawn with here.
const KITTY_PLACEHOLDERS: (u32, u32) = (0, 28);

/// How slices will be drawn, and why not as pictures when that is worth saying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None`: half blocks.
    pub protocol: Option<Protocol>,
    /// One line for the status bar.
    pub hint: Option<String>,
}

/// The rules. `query` asks the terminal (`None`: no answer in time); it is called only when
/// the answer can change the outcome.
pub fn decide(
    choice: GraphicsChoice,
    colors: ColorMode,
    tmux: Tmux,
    query: impl FnOnce() -> Option<Answer>,
) -> Decision {
    let blocks = |hint: Option<&str>| Decision {
        protocol: None,
        hint: hint.map(str::to_string),
    };
    let asked = choice != GraphicsChoice::Auto;
    match colors {
        ColorMode::Ascii => return blocks(asked.then_some("no pictures under NO_COLOR or TERM=dumb")),
        ColorMode::Ansi16 => return blocks(asked.then_some("no pictures in 16 colours")),
        _ => {}
    }
    if choice == GraphicsChoice::Blocks {
        return blocks(None);
    }
    if tmux == Tmux::NoPassthrough {
        return blocks(Some("pictures need `set -g allow-passthrough on` in tmux"));
    }
    let answer = query();
    match (choice.forced(), answer) {
        (Some(forced), _) => Decision {
            protocol: Some(forced),
            hint: None,
        },
        // tmux draws its panes itself: a sixel or iTerm2 picture passed through lands where
        // the outer terminal's cursor happens to be and is drawn over (tmux 3.3 under xterm
        // showed nothing); kitty's pictures are placeholder text that tmux keeps in the pane.
        (
            None,
            Some(Answer {
                protocol: Some(Protocol::Sixel | Protocol::Iterm2),
                ..
            }),
        ) if tmux == Tmux::Passthrough => blocks(Some("pictures: through tmux only kitty's show; half blocks")),
        (
            None,
            Some(Answer {
                protocol: Some(Protocol::Kitty),
                kitty: Some(version),
            }),
        ) if version < KITTY_PLACEHOLDERS => blocks(Some(&format!(
            "pictures: kitty {}.{} is older than 0.28, the first with placeholders; half blocks",
            version.0, version.1
        ))),
        (None, Some(Answer { protocol, .. })) => Decision { protocol, hint: None },
        (None, None) => blocks(Some("pictures: the terminal did not answer in time; half blocks")),
    }
}

/// What the terminal says, up to its answer to a device status report (`CSI 5 n`), when that
/// comes within `timeout`; its version is asked first (`CSI > q`, answered by those that know
/// it). Reads standard input (in raw mode, switched on here when it is not already).
fn answers_status(timeout: Duration) -> Option<Vec<u8>> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let was_raw = crossterm::terminal::is_raw_mode_enabled().unwrap_or(false);
    if !was_raw && crossterm::terminal::enable_raw_mode().is_err() {
        return None;
    }
    let mut stdout = std::io::stdout();
    let asked = stdout
        .write_all(b"\x1b[>q\x1b[5n")
        .and_then(|()| stdout.flush())
        .is_ok();
    let deadline = std::time::Instant::now() + timeout;
    let fd = std::io::stdin().as_raw_fd();
    let mut seen = Vec::new();
    let mut answered = false;
    while asked && !answered {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready <= 0 {
            break;
        }
        let mut buf = [0u8; 64];
        // SAFETY: reads at most buf.len() bytes into buf.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n as usize]);
        // The answer is `CSI 0 n` (or `CSI 3 n`: a terminal with trouble, still answering).
        answered = seen.windows(4).any(|w| w[0] == 0x1b && w[1] == b'[' && w[3] == b'n');
    }
    if !was_raw {
        let _ = crossterm::terminal::disable_raw_mode();
    }
    answered.then_some(seen)
}

/// Kitty's version in an answer to `CSI > q` (`DCS > | kitty(0.26.5) ST`).
fn kitty_version(said: &[u8]) -> Option<(u32, u32)> {
    let text = String::from_utf8_lossy(said);
    let start = text.find("kitty(")? + "kitty(".len();
    let mut numbers = text[start..].split(['.', ')']).map(|n| n.parse::<u32>());
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

/// The protocol in use and its encoder (`None` draws half blocks), and where pictures went.
#[derive(Clone, Default)]
pub struct Graphics {
    picker: Option<Picker>,
    /// Why there are no pictures, when that is worth a line.
    pub hint: Option<String>,
    frames: RefCell<Frames>,
}

/// The pictures placed on the frame being drawn, and those of the frame before with whether
/// something was drawn over them.
#[derive(Clone, Debug, Default)]
struct Frames {
    placing: Vec<Rect>,
    shown: Vec<(Rect, bool)>,
}

impl std::fmt::Debug for Graphics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graphics")
            .field("protocol", &self.protocol())
            .field("hint", &self.hint)
            .finish()
    }
}

impl Graphics {
    /// Half blocks.
    pub fn blocks() -> Graphics {
        Graphics::default()
    }

    /// Decides for this terminal, asking it when that matters. Must run in raw mode before
    /// anything else reads the terminal's input (the answer arrives there).
    pub fn detect(choice: GraphicsChoice, colors: ColorMode) -> Graphics {
        if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
            return Graphics::blocks();
        }
        let mut picker = None;
        let decision = decide(choice, colors, Tmux::detect(), || {
            // A terminal that never answers would leave the full query's reader waiting on
            // input, eating the first key pressed: a status report first, read here with a
            // deadline, tells whether it is worth asking.
            let said = answers_status(QUERY_TIMEOUT)?;
            let options = QueryStdioOptions {
                timeout: QUERY_TIMEOUT,
                // Pictures change seldom and links are slow: bytes matter more than latency.
                kitty_compression: true,
                ..QueryStdioOptions::default()
            };
            let found = Picker::from_query_stdio_with_options(options).ok()?;
            let protocol = Protocol::of(found.protocol_type());
            picker = Some(found);
            Some(Answer {
                protocol,
                kitty: kitty_version(&said),
            })
        });
        Graphics::with(decision, picker)
    }

    /// A protocol at a known cell size, for tests and for output that is not a terminal.
    pub fn forced(protocol: Protocol) -> Graphics {
        let decision = Decision {
            protocol: Some(protocol),
            hint: None,
        };
        Graphics::with(decision, None)
    }

    fn with(decision: Decision, picker: Option<Picker>) -> Graphics {
        let picker = match decision.protocol {
            Some(protocol) => {
                let mut picker = picker.unwrap_or_else(Picker::halfblocks);
                picker.set_protocol_type(protocol.kind());
                Some(picker)
            }
            None => None,
        };
        Graphics {
            picker,
            hint: decision.hint,
            ..Graphics::default()
        }
    }

    /// The protocol pictures go out in; `None`: half blocks.
    pub fn protocol(&self) -> Option<Protocol> {
        self.picker.as_ref().and_then(|p| Protocol::of(p.protocol_type()))
    }

    /// A cell's size in pixels (width, height).
    pub fn cell_pixels(&self) -> (u16, u16) {
        let size = self
            .picker
            .as_ref()
            .map_or(ratatui_image::FontSize::new(10, 20), Picker::font_size);
        (size.width.max(1), size.height.max(1))
    }

    /// `area` in pixels.
    pub fn pixels(&self, area: Size) -> (usize, usize) {
        let (w, h) = self.cell_pixels();
        (
            usize::from(area.width) * usize::from(w),
            usize::from(area.height) * usize::from(h),
        )
    }

    /// The picture encoded for the terminal, filling the cells it needs (centre it in yours
    /// with [`Image::cells`]); `None` for half blocks or a picture that does not encode.
    pub fn image(&self, picture: &Picture) -> Option<Image> {
        let picker = self.picker.as_ref()?;
        let buffer = image::RgbImage::from_raw(picture.width as u32, picture.height as u32, picture.bytes())?;
        let (w, h) = self.cell_pixels();
        let cells = Size::new(
            (picture.width as u16).div_ceil(w).max(1),
            (picture.height as u16).div_ceil(h).max(1),
        );
        let encoded = picker
            .new_protocol(image::DynamicImage::ImageRgb8(buffer), cells, Resize::Fit(None))
            .ok()?;
        Some(Image { encoded, cells })
    }

    /// Draws `image` centred in `area` and remembers where; returns the cells it took.
    pub fn draw(&self, image: &Image, area: Rect, buf: &mut Buffer) -> Rect {
        let at = image.render(area, buf);
        self.frames.borrow_mut().placing.push(at);
        at
    }

    /// Once a frame is drawn into `buf`: whether the screen must be drawn afresh. Sixel and
    /// iTerm2 pixels stay on the terminal until the cells under them are written, and cells
    /// that did not change are not: a picture that left or moved, or that something drawn
    /// over it (help, a question) no longer covers, would leave pixels or text behind.
    /// Kitty's pictures are cells of text and need none of this.
    pub fn settle(&self, buf: &Buffer) -> bool {
        let mut frames = self.frames.borrow_mut();
        let now: Vec<(Rect, bool)> = std::mem::take(&mut frames.placing)
            .into_iter()
            .map(|rect| (rect, drawn_over(rect, buf)))
            .collect();
        let stale = frames
            .shown
            .iter()
            .any(|(rect, was_covered)| match now.iter().find(|(r, _)| r == rect) {
                None => true,
                Some((_, covered)) => *was_covered && !covered,
            });
        frames.shown = now;
        stale && self.protocol() != Some(Protocol::Kitty)
    }
}

/// Whether a cell of the picture at `rect` (all but its first, which carries the picture)
/// holds something drawn after it.
fn drawn_over(rect: Rect, buf: &Buffer) -> bool {
    rect.positions().skip(1).any(|p| {
        buf.cell(p)
            .is_some_and(|cell| cell.diff_option != ratatui::buffer::CellDiffOption::Skip)
    })
}

/// A picture encoded for the terminal.
pub struct Image {
    encoded: ratatui_image::protocol::Protocol,
    /// The cells it covers.
    pub cells: Size,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("cells", &self.cells).finish()
    }
}

impl Image {
    /// The image as text to print at the cursor, in the normal screen rather than a
    /// dashboard's: its rows are made room for first (the screen scrolls if it must), and the
    /// cursor ends on the line below it.
    pub fn inline(&self) -> String {
        let area = Rect::new(0, 0, self.cells.width, self.cells.height);
        let mut buf = Buffer::empty(area);
        self.render(area, &mut buf);
        let rows = self.cells.height;
        let mut out = String::new();
        if buf
            .content
            .iter()
            .any(|c| c.diff_option == ratatui::buffer::CellDiffOption::Skip)
        {
            // Sixel and iTerm2: one sequence in the first cell draws the whole picture.
            // Make room, go back up, draw with the cursor saved, and step below it.
            let _ = write!(
                out,
                "{}\x1b[{rows}A\r\x1b7{}\x1b8",
                "\n".repeat(usize::from(rows)),
                buf[(0, 0)].symbol()
            );
            out.push_str(&"\n".repeat(usize::from(rows)));
        } else {
            // Kitty: the picture is text (placeholders in the image's colour), row by row.
            for y in 0..rows {
                for x in 0..self.cells.width {
                    let cell = &buf[(x, y)];
                    if let ratatui::style::Color::Rgb(r, g, b) = cell.fg {
                        let _ = write!(out, "\x1b[38;2;{r};{g};{b}m");
                    }
                    out.push_str(cell.symbol());
                }
                out.push_str("\x1b[0m\n");
            }
        }
        out
    }

    /// Draws the image centred in `area`; returns the cells it took.
    pub fn render(&self, area: Rect, buf: &mut Buffer) -> Rect {
        let at = Rect {
            x: area.x + area.width.saturating_sub(self.cells.width) / 2,
            y: area.y + area.height.saturating_sub(self.cells.height) / 2,
            width: self.cells.width.min(area.width),
            height: self.cells.height.min(area.height),
        };
        ratatui::widgets::Widget::render(ratatui_image::Image::new(&self.encoded), at, buf);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(protocol: Option<Protocol>) -> impl FnOnce() -> Option<Answer> {
        move || Some(Answer { protocol, kitty: None })
    }

    fn never_asked() -> Option<Answer> {
        panic!("the terminal was asked although the answer could not matter")
    }

    #[test]
    fn auto_takes_what_the_terminal_answers() {
        let sixel = decide(
            GraphicsChoice::Auto,
            ColorMode::TrueColor,
            Tmux::Outside,
            answered(Some(Protocol::Sixel)),
        );
        assert_eq!(sixel.protocol, Some(Protocol::Sixel));
        assert_eq!(sixel.hint, None);
        let none = decide(
            GraphicsChoice::Auto,
            ColorMode::Indexed256,
            Tmux::Outside,
            answered(None),
        );
        assert_eq!(
            (none.protocol, none.hint),
            (None, None),
            "a terminal without graphics is no news"
        );
        let through = decide(
            GraphicsChoice::Auto,
            ColorMode::TrueColor,
            Tmux::Passthrough,
            answered(Some(Protocol::Kitty)),
        );
        assert_eq!(through.protocol, Some(Protocol::Kitty));
        // Sixel through tmux's passthrough does not stay on screen: half blocks, unless forced.
        let tmux = |choice| {
            decide(
                choice,
                ColorMode::TrueColor,
                Tmux::Passthrough,
                answered(Some(Protocol::Sixel)),
            )
        };
        let sixel = tmux(GraphicsChoice::Auto);
        assert_eq!(sixel.protocol, None);
        assert!(sixel.hint.is_some_and(|h| h.contains("only kitty")));
        assert_eq!(tmux(GraphicsChoice::Sixel).protocol, Some(Protocol::Sixel));
    }

    #[test]
    fn no_color_and_16_colours_keep_half_blocks_without_asking() {
        for choice in [GraphicsChoice::Auto, GraphicsChoice::Sixel] {
            let d = decide(choice, ColorMode::Ascii, Tmux::Outside, never_asked);
            assert_eq!(d.protocol, None);
            let d16 = decide(choice, ColorMode::Ansi16, Tmux::Outside, never_asked);
            assert_eq!(d16.protocol, None);
            // Said only when the user asked for pictures.
            assert_eq!(d16.hint.is_some(), choice != GraphicsChoice::Auto);
        }
    }

    #[test]
    fn kitty_older_than_its_placeholders_is_half_blocks() {
        let kitty = |version| {
            decide(GraphicsChoice::Auto, ColorMode::TrueColor, Tmux::Outside, move || {
                Some(Answer {
                    protocol: Some(Protocol::Kitty),
                    kitty: version,
                })
            })
        };
        let old = kitty(kitty_version(b"\x1bP>|kitty(0.26.5)\x1b\\\x1b[0n"));
        assert_eq!(old.protocol, None);
        assert!(old.hint.is_some_and(|h| h.contains("kitty 0.26")));
        assert_eq!(
            kitty(kitty_version(b"\x1bP>|kitty(0.35.2)\x1b\\")).protocol,
            Some(Protocol::Kitty)
        );
        assert_eq!(
            kitty(None).protocol,
            Some(Protocol::Kitty),
            "WezTerm, Ghostty: no kitty version"
        );
        assert_eq!(kitty_version(b"\x1bP>|XTerm(390)\x1b\\"), None);
    }

    #[test]
    fn no_answer_in_time_is_half_blocks_with_a_hint() {
        let d = decide(GraphicsChoice::Auto, ColorMode::TrueColor, Tmux::Outside, || None);
        assert_eq!(d.protocol, None);
        assert!(d.hint.as_deref().is_some_and(|h| h.contains("did not answer")), "{d:?}");
        // A forced protocol is the user's word against a silent terminal.
        let forced = decide(GraphicsChoice::Iterm2, ColorMode::TrueColor, Tmux::Outside, || None);
        assert_eq!(forced.protocol, Some(Protocol::Iterm2));
    }

    #[test]
    fn tmux_without_passthrough_is_half_blocks_with_the_fix() {
        for choice in [GraphicsChoice::Auto, GraphicsChoice::Kitty] {
            let d = decide(choice, ColorMode::TrueColor, Tmux::NoPassthrough, never_asked);
            assert_eq!(d.protocol, None);
            assert!(
                d.hint.as_deref().is_some_and(|h| h.contains("allow-passthrough on")),
                "{d:?}"
            );
        }
    }

    /// A 4x2 picture: a grey ramp on top, a red and a green voxel below.
    fn picture() -> Picture {
        Picture {
            width: 4,
            height: 2,
            rgb: vec![
                [0, 0, 0],
                [85, 85, 85],
                [170, 170, 170],
                [255, 255, 255],
                [230, 60, 60],
                [60, 200, 75],
                [0, 0, 0],
                [0, 0, 0],
            ],
        }
    }

    /// The escape sequences written, with ESC, BEL and the other controls visible.
    fn visible(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                '\x1b' => "␛".to_string(),
                '\x07' => "␇".to_string(),
                c if c.is_control() => format!("<{:02x}>", c as u32),
                c if !c.is_ascii() => format!("<U+{:X}>", c as u32),
                c => c.to_string(),
            })
            .collect()
    }

    fn first_cell(graphics: &Graphics) -> String {
        let image = graphics.image(&picture()).expect("encodes");
        let area = Rect::new(0, 0, 4, 2);
        let mut buf = Buffer::empty(area);
        let at = graphics.draw(&image, area, &mut buf);
        buf[(at.x, at.y)].symbol().to_string()
    }

    #[test]
    fn sixel_output_is_pinned() {
        insta::assert_snapshot!(visible(&first_cell(&Graphics::forced(Protocol::Sixel))));
    }

    #[test]
    fn iterm2_output_is_a_png_pinned() {
        let text = first_cell(&Graphics::forced(Protocol::Iterm2));
        assert!(text.contains("1337;File=inline=1"), "{text}");
        insta::assert_snapshot!(visible(&text));
    }

    #[test]
    fn kitty_output_is_pinned_and_transmitted_once() {
        let graphics = Graphics::forced(Protocol::Kitty);
        let image = graphics.image(&picture()).expect("encodes");
        let area = Rect::new(0, 0, 4, 2);
        let mut first = Buffer::empty(area);
        let at = graphics.draw(&image, area, &mut first);
        let text = first[(at.x, at.y)].symbol().to_string();
        // The image number is random per picture: pinned without it, and without the
        // placeholder after the transmission, whose marks carry the number's top byte.
        let start = text.find("i=").expect("an image number") + 2;
        let id: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
        let end = text.rfind("\x1b\\").expect("a transmission") + 2;
        insta::assert_snapshot!(visible(&text[..end].replace(&format!("i={id},"), "i=ID,")));
        assert!(text[end..].starts_with('\u{10EEEE}'), "a placeholder follows");
        let mut again = Buffer::empty(area);
        graphics.draw(&image, area, &mut again);
        let again = again[(at.x, at.y)].symbol();
        assert!(!again.contains("\x1b_G"), "transmitted twice");
        assert!(again.starts_with('\u{10EEEE}'), "placeholders stay");
    }

    #[test]
    fn a_picture_that_leaves_or_is_uncovered_asks_for_a_fresh_screen() {
        let graphics = Graphics::forced(Protocol::Sixel);
        // 40x40 pixels: 4x2 cells of 10x20.
        let big = Picture {
            width: 40,
            height: 40,
            rgb: vec![[128; 3]; 1600],
        };
        let image = graphics.image(&big).expect("encodes");
        assert_eq!(image.cells, Size::new(4, 2));
        let screen = Rect::new(0, 0, 10, 4);
        let frame = |covered: bool, shown: bool| {
            let mut buf = Buffer::empty(screen);
            if shown {
                graphics.draw(&image, Rect::new(0, 0, 4, 2), &mut buf);
            }
            if covered {
                buf[(1, 1)]
                    .set_diff_option(ratatui::buffer::CellDiffOption::None)
                    .set_char('?');
            }
            graphics.settle(&buf)
        };
        assert!(!frame(false, true), "first picture: drawn over whatever was there");
        assert!(!frame(false, true), "the same again");
        assert!(!frame(true, true), "help drawn over it");
        assert!(frame(false, true), "help gone: its text would stay on the picture");
        assert!(frame(false, false), "picture gone: its pixels would stay");
        assert!(!frame(false, false));
    }

    #[test]
    fn blocks_chosen_is_blocks_without_a_word() {
        let d = decide(GraphicsChoice::Blocks, ColorMode::TrueColor, Tmux::Outside, never_asked);
        assert_eq!(
            d,
            Decision {
                protocol: None,
                hint: None
            }
        );
        use crate::config::Choice;
        assert_eq!(GraphicsChoice::from_name("iterm2"), Some(GraphicsChoice::Iterm2));
        assert_eq!(GraphicsChoice::from_name("png"), None);
    }
}
