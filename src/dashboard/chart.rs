//! Line charts of run histories: braille (or block or dot) lines with y-axis labels, the
//! latest values in the top border and the x range and best values in the bottom border,
//! so the plot keeps every row of a small panel.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Widget};

use crate::runs::history::History;
use crate::settings::ChartMarker;
use crate::theme::Theme;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub style: Style,
    pub history: &'a History,
}

/// A bordered chart over one or more series.
pub struct LineChart<'a> {
    title: &'a str,
    series: Vec<Series<'a>>,
    marker: ChartMarker,
    log_y: bool,
    /// Fixed y range (e.g. 0-1 for Dice); else the data's.
    y_range: Option<(f64, f64)>,
    x_unit: &'a str,
    /// Decimals of the values in the border; `None`: as precise as 6 characters allow.
    decimals: Option<usize>,
    bottom: Option<Line<'a>>,
    /// One marker per series, overriding the chosen one (the compare view tells runs apart
    /// by marker as well as colour).
    markers: Option<Vec<Marker>>,
    theme: &'a Theme,
}

impl<'a> LineChart<'a> {
    pub fn new(title: &'a str, theme: &'a Theme, marker: ChartMarker) -> LineChart<'a> {
        LineChart {
            title,
            series: Vec::new(),
            marker,
            log_y: false,
            y_range: None,
            x_unit: "",
            decimals: None,
            bottom: None,
            markers: None,
            theme,
        }
    }

    pub fn series(mut self, name: &'a str, style: Style, history: &'a History) -> Self {
        self.series.push(Series { name, style, history });
        self
    }

    pub fn log_y(mut self, log_y: bool) -> Self {
        self.log_y = log_y;
        self
    }

    pub fn y_range(mut self, low: f64, high: f64) -> Self {
        self.y_range = Some((low, high));
        self
    }

    /// The x axis's unit, shown with its range in the bottom border.
    pub fn x_unit(mut self, unit: &'a str) -> Self {
        self.x_unit = unit;
        self
    }

    /// Shows the latest values with this many decimals.
    pub fn decimals(mut self, decimals: usize) -> Self {
        self.decimals = Some(decimals);
        self
    }

    /// Extra text for the bottom border (best values, ...).
    pub fn bottom(mut self, line: Line<'a>) -> Self {
        self.bottom = Some(line);
        self
    }

    /// Draws series `i` with `markers[i]` (cycling).
    pub fn markers(mut self, markers: Vec<Marker>) -> Self {
        self.markers = Some(markers).filter(|m| !m.is_empty());
        self
    }

    fn marker(&self, index: usize) -> Marker {
        if let Some(markers) = &self.markers {
            return markers[index % markers.len()];
        }
        // Without colour, series differ by their marks.
        let base = match self.marker {
            ChartMarker::Braille => Marker::Braille,
            ChartMarker::Blocks => Marker::HalfBlock,
            ChartMarker::Dots => Marker::Dot,
        };
        if self.theme.monochrome && index > 0 {
            [Marker::Dot, Marker::Block, Marker::Bar][(index - 1) % 3]
        } else {
            base
        }
    }

    fn y(&self, value: f64) -> f64 {
        if self.log_y { value.max(1e-9).log10() } else { value }
    }
}

impl<'a> LineChart<'a> {
    /// The top border carries the title and each series' latest value, so the plot keeps every row.
    fn top_title(&self) -> Line<'a> {
        let theme = self.theme;
        let mut top = vec![Span::styled(
            format!(" {}", self.title),
            Style::new().fg(theme.ui.title),
        )];
        if self.log_y {
            top.push(Span::styled(" (log)", Style::new().fg(theme.ui.dim)));
        }
        for series in &self.series {
            if let Some(last) = series.history.last() {
                let label = if series.name == self.title {
                    " ".to_string()
                } else {
                    format!(" {} ", series.name)
                };
                top.push(Span::styled(label, series.style));
                top.push(Span::styled(
                    self.latest_value_text(last),
                    Style::new().fg(theme.ui.text).bold(),
                ));
            }
        }
        top.push(Span::raw(" "));
        Line::from(top)
    }

    /// Latest values honour the chosen decimals, else fall back to the 6-character format.
    fn latest_value_text(&self, last: f64) -> String {
        match self.decimals {
            // Scores below 1 read as .87, as in papers' tables.
            Some(decimals) => {
                let text = format!("{last:.decimals$}");
                text.strip_prefix('0')
                    .filter(|t| t.starts_with('.'))
                    .map_or(text.clone(), str::to_string)
            }
            None => format_value(last),
        }
    }

    /// The x span covering every series, or `None` while no series has data.
    fn x_range(&self) -> Option<(f64, f64)> {
        self.series
            .iter()
            .filter_map(|s| s.history.x_range())
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    }

    /// The bottom border carries the caller's extra text followed by the x range and unit.
    /// The caller's text first; the x range after it only where both fit in `width` (the
    /// caller's, `best 0.86/0.84/0.96 @6`, matters more).
    fn bottom_title(&self, x_range: Option<(f64, f64)>, width: u16) -> Line<'a> {
        let mut bottom = Vec::new();
        if let Some(line) = self.bottom.clone() {
            bottom.extend(line.spans);
        }
        if let Some((low, high)) = x_range {
            let range = Span::styled(
                format!(" {}–{} {} ", axis_value(low), axis_value(high), self.x_unit),
                Style::new().fg(self.theme.ui.dim),
            );
            let used: usize = bottom.iter().map(Span::width).sum();
            if used + range.width() + 2 <= usize::from(width) {
                bottom.push(range);
            }
        }
        Line::from(bottom).right_aligned()
    }

    /// The y bounds in plot space: the fixed range if set, else the data's padded range.
    fn y_bounds(&self) -> (f64, f64) {
        match self.y_range {
            Some((low, high)) => (self.y(low), self.y(high)),
            None => {
                let low = self
                    .series
                    .iter()
                    .filter_map(|s| s.history.min())
                    .reduce(f64::min)
                    .unwrap_or(0.0);
                let high = self
                    .series
                    .iter()
                    .filter_map(|s| s.history.max())
                    .reduce(f64::max)
                    .unwrap_or(1.0);
                let (padded_low, padded_high) = padded(self.y(low), self.y(high));
                // Losses and speeds are never negative: no axis below zero for them.
                let floor = if low >= 0.0 && !self.log_y {
                    0.0
                } else {
                    f64::NEG_INFINITY
                };
                (padded_low.max(floor), padded_high)
            }
        }
    }

    /// Bottom, middle and top y labels in real values, undoing the log scale if any.
    fn y_labels(&self, y_low: f64, y_high: f64) -> Vec<Span<'static>> {
        let unlog = |v: f64| if self.log_y { 10f64.powf(v) } else { v };
        vec![
            Span::raw(format_value(unlog(y_low))),
            Span::raw(format_value(unlog((y_low + y_high) / 2.0))),
            Span::raw(format_value(unlog(y_high))),
        ]
    }

    /// Each series' points mapped into plot space (log10 when the y axis is logarithmic).
    fn plot_points(&self) -> Vec<Vec<(f64, f64)>> {
        self.series
            .iter()
            .map(|s| s.history.points().into_iter().map(|(x, y)| (x, self.y(y))).collect())
            .collect()
    }

    /// One line dataset per series, each with its own marker and style.
    fn datasets<'d>(&self, data: &'d [Vec<(f64, f64)>]) -> Vec<Dataset<'d>> {
        self.series
            .iter()
            .zip(data)
            .enumerate()
            .map(|(i, (series, points))| {
                Dataset::default()
                    .marker(self.marker(i))
                    .graph_type(GraphType::Line)
                    .style(series.style)
                    .data(points)
            })
            .collect()
    }
}

impl Widget for LineChart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = self.theme;
        let x_range = self.x_range();
        let block = Block::new()
            .borders(Borders::ALL)
            .border_style(Style::new().fg(theme.ui.border))
            .title_top(self.top_title())
            .title_bottom(self.bottom_title(x_range, area.width));
        let Some((x_low, x_high)) = x_range else {
            let inner = block.inner(area);
            block.render(area, buf);
            Line::styled("no data yet", Style::new().fg(theme.ui.dim)).render(inner, buf);
            return;
        };
        let data = self.plot_points();
        let (y_low, y_high) = self.y_bounds();
        let labels = self.y_labels(y_low, y_high);
        let x_high = if x_high > x_low { x_high } else { x_low + 1.0 };
        Chart::new(self.datasets(&data))
            .block(block)
            .legend_position(None)
            .x_axis(Axis::default().bounds([x_low, x_high]))
            .y_axis(
                Axis::default()
                    .bounds([y_low, y_high])
                    .labels(labels)
                    .style(Style::new().fg(theme.ui.dim)),
            )
            .render(area, buf);
    }
}

/// A y range with a little room, never empty.
fn padded(low: f64, high: f64) -> (f64, f64) {
    if high - low < 1e-12 {
        let pad = (low.abs() * 0.1).max(1e-3);
        (low - pad, high + pad)
    } else {
        let pad = (high - low) * 0.05;
        (low - pad, high + pad)
    }
}

/// A number in at most 6 characters (7 when negative), as precise as that allows.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0".to_string()
    } else if magnitude >= 100_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if magnitude >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if magnitude >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.01 {
        format!("{value:.3}")
    } else {
        format!("{value:.1e}")
    }
}

/// An x-axis end as people read epochs: whole where it is (`12`), else one decimal (`0.1`,
/// `5.4`), never `0.050`.
fn axis_value(x: f64) -> String {
    if (x - x.round()).abs() < 0.05 || x.abs() >= 100.0 {
        format!("{:.0}", x.round())
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(chart: LineChart, width: u16, height: u16) -> Buffer {
        let mut buf = Buffer::empty(Rect::new(0, 0, width, height));
        chart.render(buf.area, &mut buf);
        buf
    }

    fn text(buf: &Buffer) -> Vec<String> {
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
            .collect()
    }

    fn falling() -> History {
        let mut history = History::default();
        for i in 0..=20 {
            history.push(f64::from(i) / 4.0, 1.0 / (1.0 + f64::from(i)));
        }
        history
    }

    #[test]
    fn a_braille_chart_shows_its_values_labels_and_range() {
        let theme = Theme::monochrome();
        let history = falling();
        let rows = text(&render(
            LineChart::new("loss", &theme, ChartMarker::Braille)
                .series("loss", Style::new(), &history)
                .x_unit("epochs"),
            40,
            8,
        ));
        assert!(rows[0].contains("loss 0.048"), "{rows:#?}");
        assert!(rows[7].contains("0–5 epochs"), "{rows:#?}");
        // y labels: the top is the maximum (plus padding), the bottom the minimum.
        assert!(rows[1].contains("1.0"), "{rows:#?}");
        let plot: String = rows[1..7].concat();
        assert!(
            plot.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
            "{rows:#?}"
        );
        // The line falls: its first dots are in the top rows, its last ones at the bottom.
        let first_dot_row = rows
            .iter()
            .position(|r| r.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)));
        assert_eq!(first_dot_row, Some(1), "{rows:#?}");
    }

    #[test]
    fn without_braille_the_line_is_drawn_in_blocks_or_dots() {
        let theme = Theme::monochrome();
        let history = falling();
        for (marker, expect) in [
            (ChartMarker::Blocks, ['▀', '▄', '█']),
            (ChartMarker::Dots, ['•', '•', '•']),
        ] {
            let rows = text(&render(
                LineChart::new("loss", &theme, marker).series("loss", Style::new(), &history),
                40,
                8,
            ));
            let plot: String = rows[1..7].concat();
            assert!(
                !plot.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
                "{rows:#?}"
            );
            assert!(plot.chars().any(|c| expect.contains(&c)), "{marker:?} {rows:#?}");
        }
    }

    #[test]
    fn log_scale_labels_show_real_values() {
        let theme = Theme::monochrome();
        let mut history = History::default();
        for (i, loss) in [10.0, 1.0, 0.1, 0.01].iter().enumerate() {
            history.push(i as f64, *loss);
        }
        let rows = text(&render(
            LineChart::new("loss", &theme, ChartMarker::Braille)
                .series("loss", Style::new(), &history)
                .log_y(true),
            40,
            9,
        ));
        assert!(rows[0].contains("(log)"), "{rows:#?}");
        // Between 0.01 and 10 on a log axis the middle label is about 0.3, not 5.
        let labels: String = rows[1..8].iter().map(|r| r[..6].to_string()).collect();
        assert!(labels.contains("0.3"), "{rows:#?}");
        assert!(!labels.contains("5.0"), "{rows:#?}");
    }

    #[test]
    fn an_empty_history_says_so() {
        let theme = Theme::monochrome();
        let history = History::default();
        let rows = text(&render(
            LineChart::new("Dice", &theme, ChartMarker::Braille).series("WT", Style::new(), &history),
            30,
            5,
        ));
        assert!(rows[1].contains("no data yet"), "{rows:#?}");
    }

    #[test]
    fn values_fit_six_characters() {
        for (value, shown) in [
            (0.0, "0"),
            (0.4123, "0.412"),
            (1.23456, "1.235"),
            (42.42, "42.4"),
            (812.0, "812"),
            (5.0, "5"),
            (2048.0, "2.0k"),
            (0.0005, "5.0e-4"),
        ] {
            assert_eq!(format_value(value), shown);
        }
    }

    #[test]
    fn axis_ends_read_as_epochs() {
        assert_eq!(axis_value(0.05), "0.1");
        assert_eq!(axis_value(5.4), "5.4");
        assert_eq!(axis_value(12.02), "12");
        assert_eq!(axis_value(0.0), "0");
        assert_eq!(axis_value(1350.0), "1350");
    }
}
