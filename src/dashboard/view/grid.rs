//! The grid: live runs side by side (then the most recent others), each a card with its
//! state, epoch, process and sparklines of loss and whole-tumour Dice.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline, Widget};

use super::panel;
use super::runs::{process_line, short_id, state_style};
use crate::dashboard::app::App;
use crate::dashboard::chart::format_value;
use crate::dashboard::hits::Hits;
use crate::runs::format_duration;
use crate::runs::history::History;
use crate::runs::model::RunModel;

const CARD_WIDTH: u16 = 40;
const CARD_HEIGHT: u16 = 11;

/// Cards across a terminal `width` columns wide.
fn grid_columns(width: u16) -> usize {
    usize::from((width / CARD_WIDTH).max(1))
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let runs = app.grid_runs();
    if runs.is_empty() {
        frame.render_widget(
            Paragraph::new("No runs yet: launch one from the experiments (1).").block(panel(&app.theme, "grid")),
            area,
        );
        return;
    }
    let columns = grid_columns(area.width);
    hits.grid_columns = Some(columns);
    let rows = usize::from((area.height / CARD_HEIGHT).max(1));
    let fits = columns * rows;
    // Keep the selected card on screen.
    let selected = app
        .list
        .selected
        .as_ref()
        .and_then(|id| runs.iter().position(|r| &r.id == id))
        .unwrap_or(0);
    let first = (selected / fits) * fits;
    let row_areas = Layout::vertical(vec![Constraint::Fill(1); rows]).split(area);
    let buf = frame.buffer_mut();
    for (r, row_area) in row_areas.iter().enumerate() {
        let cells = Layout::horizontal(vec![Constraint::Fill(1); columns]).split(*row_area);
        for (c, cell) in cells.iter().enumerate() {
            let index = first + r * columns + c;
            if let Some(run) = runs.get(index) {
                hits.charted.push(run.id.clone());
                card(app, run, index == selected, *cell, buf);
            }
        }
    }
}

fn card(app: &App, run: &RunModel, selected: bool, area: Rect, buf: &mut Buffer) {
    let theme = &app.theme;
    let border = if selected {
        Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(theme.ui.border)
    };
    let state = run.state();
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(border)
        .title(Line::from(vec![
            Span::styled(format!(" {} ", short_id(&run.id)), Style::new().fg(theme.ui.title)),
            Span::styled(format!("{} ", state.name()), state_style(theme, state)),
        ]));
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height < 2 {
        return;
    }
    let dim = Style::new().fg(theme.ui.dim);
    let mut progress = String::new();
    if run.epochs > 0 {
        progress.push_str(&format!("epoch {}/{}", run.epoch, run.epochs));
    }
    if let Some(eta) = run.eta(app.now) {
        progress.push_str(&format!(" · {} left", format_duration(eta)));
    } else if let Some(elapsed) = run.elapsed(app.now) {
        progress.push_str(&format!(" · {}", format_duration(elapsed)));
    }
    let [info, process, loss, dice] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(inner);
    if let Some(place) = &run.observed.queue {
        progress = format!("#{} in the queue", place.position);
    }
    Line::styled(progress, dim).render(info, buf);
    match run
        .observed
        .queue
        .as_ref()
        .and_then(|q| q.waiting.clone())
        .or_else(|| run.job_line())
    {
        Some(why) => Line::styled(why, Style::new().fg(theme.ui.warn)).render(process, buf),
        None => Line::styled(process_line(run), dim).render(process, buf),
    }
    labelled_sparkline(
        app,
        buf,
        loss,
        format!("loss {}", run.charts.loss.last().map_or("–".to_string(), format_value)),
        &run.charts.loss,
        theme.series.loss,
    );
    labelled_sparkline(
        app,
        buf,
        dice,
        format!(
            "WT {}",
            run.charts.dice[2].last().map_or("–".to_string(), |d| format!("{d:.2}"))
        ),
        &run.charts.dice[2],
        theme.series.dice_wt,
    );
}

/// A label and a sparkline of the run's whole history, as many spans as fit beside it,
/// scaled to their range: a falling loss reads as falling.
fn labelled_sparkline(
    app: &App,
    buf: &mut Buffer,
    area: Rect,
    label: String,
    history: &History,
    color: ratatui::style::Color,
) {
    let [text, spark] = Layout::horizontal([Constraint::Length(11), Constraint::Fill(1)]).areas(area);
    Line::styled(label, Style::new().fg(app.theme.ui.text)).render(text, buf);
    let values = history.resampled(usize::from(spark.width));
    Sparkline::default()
        .data(scaled(&values))
        .max(100)
        .style(Style::new().fg(color))
        .render(spark, buf);
}

/// Values mapped onto 1-100 over their own range, so a flat-lining loss still shows.
pub(super) fn scaled(values: &[f64]) -> Vec<u64> {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (high - low).max(1e-12);
    values
        .iter()
        .map(|v| 1 + ((v - low) / span * 99.0).round() as u64)
        .collect()
}
