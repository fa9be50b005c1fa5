//! Dashboard colour themes, read from `themes/*.toml`.
//!
//! A theme file sets any subset of the keys below; the rest come from the built-in default
//! (the same values as `themes/default.toml`), so a user theme can change two colours and
//! nothing else. Colours are names of the 16 terminal colours (`red`, `lightcyan`,
//! `darkgray`, ...), `reset` for the terminal's own colour, an index `0`-`255`, or
//! `#rrggbb`. `monochrome = true` tells the dashboard to draw with characters and text
//! attributes only, for terminals without colour and for NO_COLOR.

use std::path::Path;
use std::str::FromStr;

use ratatui::style::Color;
use serde::Deserialize;

use crate::config::{Checker, ConfigError, Source};

/// Every colour the dashboard uses, by purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub monochrome: bool,
    pub ui: UiColors,
    pub labels: LabelColors,
    pub series: SeriesColors,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UiColors {
    pub text: Color,
    pub dim: Color,
    pub accent: Color,
    pub border: Color,
    pub title: Color,
    pub selection_fg: Color,
    pub selection_bg: Color,
    pub ok: Color,
    pub warn: Color,
    pub error: Color,
}

/// Colours of the BraTS labels in slice previews.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelColors {
    /// Label 1: necrotic / non-enhancing tumour core.
    pub ncr: Color,
    /// Label 2: peritumoural oedema (SNFH).
    pub ed: Color,
    /// Label 3: enhancing tumour.
    pub et: Color,
}

/// Colours of chart series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesColors {
    pub loss: Color,
    pub dice_et: Color,
    pub dice_tc: Color,
    pub dice_wt: Color,
    pub seed_dice: Color,
    pub lr: Color,
    pub cpu: Color,
    pub ram: Color,
}

impl Default for Theme {
    fn default() -> Self {
        Theme {
            name: "default".to_string(),
            monochrome: false,
            ui: UiColors {
                text: Color::Reset,
                dim: Color::DarkGray,
                accent: Color::Cyan,
                border: Color::DarkGray,
                title: Color::LightCyan,
                selection_fg: Color::Black,
                selection_bg: Color::Cyan,
                ok: Color::Green,
                warn: Color::Yellow,
                error: Color::Red,
            },
            labels: LabelColors {
                ncr: Color::Rgb(0xe6, 0x3c, 0x3c),
                ed: Color::Rgb(0x3c, 0xc8, 0x4b),
                et: Color::Rgb(0xf0, 0xd2, 0x28),
            },
            series: SeriesColors {
                loss: Color::LightBlue,
                dice_et: Color::Yellow,
                dice_tc: Color::LightRed,
                dice_wt: Color::LightGreen,
                seed_dice: Color::Gray,
                lr: Color::Magenta,
                cpu: Color::Cyan,
                ram: Color::LightMagenta,
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTheme {
    name: Option<String>,
    monochrome: Option<bool>,
    ui: RawUi,
    labels: RawLabels,
    series: RawSeries,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUi {
    text: Option<String>,
    dim: Option<String>,
    accent: Option<String>,
    border: Option<String>,
    title: Option<String>,
    selection_fg: Option<String>,
    selection_bg: Option<String>,
    ok: Option<String>,
    warn: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLabels {
    ncr: Option<String>,
    ed: Option<String>,
    et: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSeries {
    loss: Option<String>,
    dice_et: Option<String>,
    dice_tc: Option<String>,
    dice_wt: Option<String>,
    seed_dice: Option<String>,
    lr: Option<String>,
    cpu: Option<String>,
    ram: Option<String>,
}

impl LabelColors {
    /// The colours for the slice renderer; a colour that is not RGB (a named terminal
    /// colour) keeps the renderer's default for that label.
    pub fn palette(&self) -> crate::render::Palette {
        let default = crate::render::Palette::default();
        let rgb = |c: Color, fallback: [u8; 3]| match c {
            Color::Rgb(r, g, b) => [r, g, b],
            _ => fallback,
        };
        crate::render::Palette {
            labels: [
                rgb(self.ncr, default.labels[0]),
                rgb(self.ed, default.labels[1]),
                rgb(self.et, default.labels[2]),
            ],
            ..default
        }
    }
}

impl Theme {
    /// Reads and checks the theme file at `path`.
    pub fn load(path: &Path) -> Result<Theme, ConfigError> {
        Theme::parse(path, &crate::config::read_text(path)?)
    }

    /// Parses and checks theme text that was read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Theme, ConfigError> {
        let (raw, source) = Source::parse::<RawTheme>(path, text)?;
        let mut check = Checker::new(source);
        let d = Theme::default();
        let mut color = |key: &str, raw: Option<String>, default: Color| match raw {
            None => default,
            Some(text) => match Color::from_str(&text) {
                Ok(color) => color,
                Err(_) => {
                    check.error(
                        key,
                        format!("{key} = '{text}' is not a colour: use a name (red, lightcyan, darkgray, reset, ...), 0-255 or #rrggbb"),
                    );
                    default
                }
            },
        };
        let ui = UiColors {
            text: color("ui.text", raw.ui.text, d.ui.text),
            dim: color("ui.dim", raw.ui.dim, d.ui.dim),
            accent: color("ui.accent", raw.ui.accent, d.ui.accent),
            border: color("ui.border", raw.ui.border, d.ui.border),
            title: color("ui.title", raw.ui.title, d.ui.title),
            selection_fg: color("ui.selection_fg", raw.ui.selection_fg, d.ui.selection_fg),
            selection_bg: color("ui.selection_bg", raw.ui.selection_bg, d.ui.selection_bg),
            ok: color("ui.ok", raw.ui.ok, d.ui.ok),
            warn: color("ui.warn", raw.ui.warn, d.ui.warn),
            error: color("ui.error", raw.ui.error, d.ui.error),
        };
        let labels = LabelColors {
            ncr: color("labels.ncr", raw.labels.ncr, d.labels.ncr),
            ed: color("labels.ed", raw.labels.ed, d.labels.ed),
            et: color("labels.et", raw.labels.et, d.labels.et),
        };
        let series = SeriesColors {
            loss: color("series.loss", raw.series.loss, d.series.loss),
            dice_et: color("series.dice_et", raw.series.dice_et, d.series.dice_et),
            dice_tc: color("series.dice_tc", raw.series.dice_tc, d.series.dice_tc),
            dice_wt: color("series.dice_wt", raw.series.dice_wt, d.series.dice_wt),
            seed_dice: color("series.seed_dice", raw.series.seed_dice, d.series.seed_dice),
            lr: color("series.lr", raw.series.lr, d.series.lr),
            cpu: color("series.cpu", raw.series.cpu, d.series.cpu),
            ram: color("series.ram", raw.series.ram, d.series.ram),
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let theme = Theme {
            name: raw.name.or(stem).unwrap_or(d.name),
            monochrome: raw.monochrome.unwrap_or(false),
            ui,
            labels,
            series,
        };
        check.finish(theme)
    }

    /// A theme with no colour at all, for NO_COLOR and terminals without colour.
    pub fn monochrome() -> Theme {
        let none = Color::Reset;
        Theme {
            name: "mono".to_string(),
            monochrome: true,
            ui: UiColors {
                text: none,
                dim: none,
                accent: none,
                border: none,
                title: none,
                selection_fg: none,
                selection_bg: none,
                ok: none,
                warn: none,
                error: none,
            },
            labels: LabelColors {
                ncr: none,
                ed: none,
                et: none,
            },
            series: SeriesColors {
                loss: none,
                dice_et: none,
                dice_tc: none,
                dice_wt: none,
                seed_dice: none,
                lr: none,
                cpu: none,
                ram: none,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_theme_keeps_the_other_defaults() {
        let theme = Theme::parse(Path::new("themes/x.toml"), "[ui]\naccent = \"#102030\"\n").expect("valid");
        assert_eq!(theme.ui.accent, Color::Rgb(0x10, 0x20, 0x30));
        assert_eq!(theme.ui.ok, Theme::default().ui.ok);
        assert_eq!(theme.name, "x");
    }

    #[test]
    fn a_bad_colour_names_key_and_position() {
        let error = Theme::parse(Path::new("themes/x.toml"), "[labels]\net = \"gold\"\n").expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "themes/x.toml:2:6: labels.et = 'gold' is not a colour: use a name (red, lightcyan, darkgray, reset, ...), 0-255 or #rrggbb"
        );
    }
}
