//! The compare view: the marked runs' loss and whole-tumour Dice overlaid, one colour per run,
//! and a table of only the experiment keys they differ in, with their best and last scores,
//! sortable by any column.

use std::collections::BTreeSet;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget, Wrap};

use super::panel;
use super::runs::short_id;
use crate::dashboard::app::App;
use crate::dashboard::chart::{LineChart, format_value};
use crate::dashboard::hits::Hits;
use crate::runs::lists::{FoldGroup, fold_groups};
use crate::runs::model::RunModel;

/// Run colours, in marking order; they repeat after eight runs.
const COLOURS: [Color; 8] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::LightRed,
    Color::LightBlue,
    Color::White,
    Color::LightMagenta,
];

/// Run markers, in marking order, with the glyph that stands for each in the legend: runs
/// differ by mark too, for 16-colour and monochrome terminals.
const MARKERS: [(Marker, char); 4] = [
    (Marker::Braille, '⣿'),
    (Marker::Dot, '•'),
    (Marker::HalfBlock, '▀'),
    (Marker::Bar, '▄'),
];

/// A run's number and mark, `1⣿`, as the charts' legend and the table show it.
fn label(i: usize) -> String {
    format!("{}{}", i + 1, MARKERS[i % MARKERS.len()].1)
}

/// Keys that differ between runs by nature, not by choice.
const IGNORED: [&str; 3] = ["run.name", "run.notes", "run.tags"];

pub fn draw(app: &App, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let theme = &app.theme;
    let runs = app.marked_runs();
    if runs.len() < 2 {
        let text = format!(
            "{} run(s) marked. In the run list (2), space marks a run and w marks every run of the \
             selected run's sweep; come back here (4) to see them side by side.",
            runs.len()
        );
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .block(panel(theme, "compare")),
            area,
        );
        return;
    }
    let [charts, table] = Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
    let [loss, dice] = Layout::horizontal([Constraint::Fill(1); 2]).areas(charts);
    let buf = frame.buffer_mut();
    let names: Vec<String> = (0..runs.len()).map(label).collect();
    let markers: Vec<Marker> = MARKERS.iter().map(|(m, _)| *m).collect();
    let mut loss_chart = LineChart::new("loss", theme, app.marker())
        .x_unit("epochs")
        .markers(markers.clone());
    let mut dice_chart = LineChart::new("WT Dice", theme, app.marker())
        .x_unit("epochs")
        .markers(markers);
    for (i, run) in runs.iter().enumerate() {
        hits.charted.push(run.id.clone());
        let style = Style::new().fg(COLOURS[i % COLOURS.len()]);
        loss_chart = loss_chart.series(&names[i], style, &run.charts.loss);
        dice_chart = dice_chart.series(&names[i], style, &run.charts.dice[2]);
    }
    loss_chart.render(loss, buf);
    dice_chart.render(dice, buf);
    let groups = fold_groups(&runs);
    if app.compare.previews {
        draw_previews(app, table, buf);
    } else if groups.iter().any(|g| g.runs.len() > 1) {
        // Runs over cross-validation folds: each configuration's mean and spread under the table.
        let height = groups.len().min(6) as u16 + 2;
        let [runs_area, folds_area] = Layout::vertical([Constraint::Fill(1), Constraint::Length(height)]).areas(table);
        draw_table(app, &runs, runs_area, buf);
        draw_folds(app, &groups, folds_area, buf);
    } else {
        draw_table(app, &runs, table, buf);
    }
}

/// One line per configuration: folds validated, and the best WT, TC and ET Dice over them.
fn draw_folds(app: &App, groups: &[FoldGroup], area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let theme = &app.theme;
    let width = groups
        .iter()
        .map(|g| g.label.chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    let score = |mean: f64, sd: f64| {
        if mean.is_nan() {
            "–".to_string()
        } else {
            format!("{mean:.3}±{sd:.3}")
        }
    };
    let lines: Vec<Line> = groups
        .iter()
        .map(|g| {
            let label: String = g.label.chars().take(width).collect();
            Line::from(vec![
                Span::styled(format!("{label:<width$} "), Style::new().fg(theme.ui.text)),
                Span::styled(format!("{}/{} ", g.scored, g.folds), Style::new().fg(theme.ui.dim)),
                Span::styled(
                    format!(
                        "WT {}  TC {}  ET {}",
                        score(g.mean.wt, g.spread.wt),
                        score(g.mean.tc, g.spread.tc),
                        score(g.mean.et, g.spread.et)
                    ),
                    Style::new().fg(theme.ui.text),
                ),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(panel(theme, "over folds · best Dice mean±sd"))
        .render(area, buf);
}

/// The first two marked runs' latest predictions on one slice of the preview case, beside
/// its ground truth: truth | run 1 | run 2.
fn draw_previews(app: &App, area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let theme = &app.theme;
    let runs = app.compared_runs();
    let loaded: Vec<_> = runs.iter().filter_map(|r| app.compare.shown.get(&r.id)).collect();
    let [first, second] = loaded.as_slice() else {
        let waiting: Vec<String> = runs
            .iter()
            .filter(|r| !app.compare.shown.contains_key(&r.id))
            .map(|r| match r.previews {
                0 => format!("{} has no preview yet", short_id(&r.id)),
                _ => format!("loading {}…", short_id(&r.id)),
            })
            .collect();
        Paragraph::new(waiting.join(" · "))
            .style(Style::new().fg(theme.ui.dim))
            .wrap(Wrap { trim: true })
            .block(panel(theme, "previews"))
            .render(area, buf);
        return;
    };
    // One slice for both: the shown one, else the first run's most tumour.
    let mut view = app.preview.view;
    view.slice = Some(first.slice_index(&view).min(second.slices(view.axis).saturating_sub(1)));
    let index = first.slice_index(&view);
    let mut title = format!(
        "{} {} {}/{} · truth",
        first.modality,
        view.axis,
        index + 1,
        first.slices(view.axis)
    );
    let mut scores = String::from(" slice WT");
    for (i, preview) in [first, second].iter().enumerate() {
        title.push_str(&format!(" | {} epoch {}", label(i), preview.epoch));
        if let (Some(truth), predicted) = preview.slice_pair(&view) {
            let d = crate::metrics::region_dice(&predicted.labels, &truth.labels);
            scores.push_str(&format!(" {} {:.2}", label(i), d.wt));
        }
    }
    if first.case != second.case {
        title.push_str(&format!(" · cases differ: {} / {}", first.case, second.case));
    }
    let block = panel(theme, &title).title_bottom(Line::styled(
        format!("{scores} · [ ] slice · a axis · M modality "),
        Style::new().fg(theme.ui.dim),
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let [pair, right] = Layout::horizontal([Constraint::Fill(2), Constraint::Fill(1)]).areas(inner);
    let palette = theme.labels.palette();
    first.draw(
        &crate::dashboard::preview::PreviewView {
            side_by_side: true,
            ..view
        },
        &palette,
        &app.graphics,
        pair,
        buf,
    );
    second.draw(
        &crate::dashboard::preview::PreviewView {
            side_by_side: false,
            ..view
        },
        &palette,
        &app.graphics,
        right,
        buf,
    );
}

/// The experiment keys whose values are not the same in every run.
pub fn differing_keys(runs: &[&RunModel]) -> Vec<String> {
    let keys: BTreeSet<&str> = runs.iter().flat_map(|r| r.observed.config.keys()).collect();
    keys.into_iter()
        .filter(|key| !IGNORED.contains(key))
        .filter(|key| {
            let first = runs[0].observed.config.get(key);
            runs.iter().any(|r| r.observed.config.get(key) != first)
        })
        .map(str::to_string)
        .collect()
}

/// A table cell's value, for sorting: numbers as numbers, else text.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Value {
    Number(f64),
    Text(String),
    Missing,
}

fn draw_table(app: &App, runs: &[&RunModel], area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let theme = &app.theme;
    let keys = differing_keys(runs);
    // A halving sweep's runs: the rung each reached, so the table sorts by it.
    let rungs = runs.iter().any(|r| r.observed.rung.is_some());
    let header = table_header(&keys, rungs);
    let rows: Vec<(usize, Vec<Value>)> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| (i, row_values(i, run, &keys, rungs)))
        .collect();
    let column = app.compare.sort % header.len();
    let order = sorted_rows(&rows, &header[column], column, app.compare.reverse);
    let table_rows: Vec<Row> = order
        .iter()
        .map(|(i, values)| {
            let mut cells: Vec<Cell> = values.iter().map(|v| Cell::from(value_text(v))).collect();
            cells[0] = Cell::from(Span::styled(
                label(*i),
                Style::new().fg(COLOURS[i % COLOURS.len()]).add_modifier(Modifier::BOLD),
            ));
            Row::new(cells).style(Style::new().fg(theme.ui.text))
        })
        .collect();
    let widths = column_widths(&header, &rows, keys.len(), rungs);
    let title = table_title(runs.len(), keys.len(), &header[column]);
    Table::new(table_rows, widths)
        .header(header_row(theme, &header, column))
        .column_spacing(1)
        .block(panel(theme, &title))
        .render(area, buf);
}

/// Column names: number, run, the rung if any run has one, each differing key's last part, then scores.
fn table_header(keys: &[String], rungs: bool) -> Vec<String> {
    let mut header: Vec<String> = vec!["#".into(), "run".into()];
    if rungs {
        header.push("rung".into());
    }
    header.extend(keys.iter().map(|k| k.rsplit('.').next().unwrap_or(k).to_string()));
    header.extend(["ET", "TC", "WT", "loss"].map(String::from));
    header
}

/// One run's cells as sortable values, in the same order as the header.
fn row_values(i: usize, run: &RunModel, keys: &[String], rungs: bool) -> Vec<Value> {
    let mut values = vec![Value::Number(i as f64 + 1.0), Value::Text(short_id(&run.id))];
    if rungs {
        values.push(match (&run.observed.rung, &run.observed.pruned) {
            (Some(rung), None) => Value::Number(f64::from(rung.rung)),
            (Some(rung), Some(_)) => Value::Text(format!("{}✗", rung.rung)),
            (None, _) => Value::Missing,
        });
    }
    for key in keys {
        values.push(match run.observed.config.get(key) {
            Some(v) => v
                .parse::<f64>()
                .map_or_else(|_| Value::Text(v.to_string()), Value::Number),
            None => Value::Missing,
        });
    }
    let best = run.best.map(|(_, d)| d);
    for score in [best.map(|d| d.et), best.map(|d| d.tc), best.map(|d| d.wt)] {
        values.push(score.map_or(Value::Missing, Value::Number));
    }
    values.push(run.charts.loss.last().map_or(Value::Missing, Value::Number));
    values
}

/// How a value reads in a cell; also sizes the key columns.
fn value_text(value: &Value) -> String {
    match value {
        Value::Number(n) => format_value(*n),
        Value::Text(t) => t.clone(),
        Value::Missing => "–".to_string(),
    }
}

/// The rows ordered by the sort column: missing values last, Dice scores best first, then the
/// user's reversal on top.
fn sorted_rows<'r>(
    rows: &'r [(usize, Vec<Value>)],
    column_name: &str,
    column: usize,
    reverse: bool,
) -> Vec<&'r (usize, Vec<Value>)> {
    let mut order: Vec<&(usize, Vec<Value>)> = rows.iter().collect();
    order.sort_by(|a, b| {
        let (x, y) = (&a.1[column], &b.1[column]);
        // Missing values last whatever the direction; scores best first by default.
        let ordering = match (x, y) {
            (Value::Missing, Value::Missing) => std::cmp::Ordering::Equal,
            (Value::Missing, _) => return std::cmp::Ordering::Greater,
            (_, Value::Missing) => return std::cmp::Ordering::Less,
            _ => x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal),
        };
        let descending = column_name == "ET" || column_name == "TC" || column_name == "WT";
        let ordering = if descending { ordering.reverse() } else { ordering };
        if reverse { ordering.reverse() } else { ordering }
    });
    order
}

/// Fixed widths for number, run, rung and scores; each key's column fits its name or widest value.
fn column_widths(header: &[String], rows: &[(usize, Vec<Value>)], key_count: usize, rungs: bool) -> Vec<Constraint> {
    let mut widths = vec![Constraint::Length(3), Constraint::Min(12)];
    if rungs {
        widths.push(Constraint::Length(4));
    }
    // Each key's column as wide as its name or widest value (up to 14).
    let first_key = if rungs { 3 } else { 2 };
    for (k, name) in header.iter().enumerate().skip(first_key).take(key_count) {
        let widest = rows
            .iter()
            .map(|(_, v)| value_text(&v[k]).chars().count())
            .max()
            .unwrap_or(0);
        widths.push(Constraint::Length(widest.max(name.chars().count()).min(14) as u16));
    }
    widths.extend([Constraint::Length(5); 3]);
    widths.push(Constraint::Length(6));
    widths
}

/// The header row, with the sort column underlined so the user sees what the order follows.
fn header_row<'h>(theme: &crate::theme::Theme, header: &'h [String], column: usize) -> Row<'h> {
    Row::new(header.iter().enumerate().map(|(i, h)| {
        let mut style = Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD);
        if i == column {
            style = style.add_modifier(Modifier::UNDERLINED);
        }
        Cell::from(h.clone()).style(style)
    }))
}

/// The panel title: how many runs, how many keys differ (or that none do), and the sort column.
fn table_title(run_count: usize, key_count: usize, sorted_by: &str) -> String {
    if key_count == 0 {
        format!("{run_count} runs · same experiment settings · sorted by {sorted_by}")
    } else {
        format!("{run_count} runs · {key_count} keys differ · sorted by {sorted_by}")
    }
}
