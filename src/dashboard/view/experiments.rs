//! The experiments screen: every `experiments/*.toml`, whether it checks, and what it trains.

use std::path::Path;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};

use super::{panel, record_rows, selected_style};
use crate::dashboard::app::App;
use crate::dashboard::catalog::{ExperimentEntry, ExperimentStatus};
use crate::dashboard::hits::{Hits, Target};
use crate::experiment::{Every, Experiment, Norm};
use crate::theme::Theme;

/// The experiment list and the selected experiment's summary.
pub fn draw(app: &App, frame: &mut Frame, body: Rect, hits: &mut Hits) {
    // The list is as wide as its longest name (mark and borders included), within reason.
    let longest = app
        .experiments
        .entries
        .iter()
        .flatten()
        .map(|e| e.name.chars().count())
        .max()
        .unwrap_or(28);
    let list_width = (longest as u16 + 4).clamp(16, 32);
    let [list, detail] = Layout::horizontal([Constraint::Length(list_width), Constraint::Min(20)]).areas(body);
    draw_list(app, frame, list, hits);
    draw_detail(app, frame, detail);
}

fn status_mark(theme: &Theme, status: &ExperimentStatus) -> Span<'static> {
    match status {
        ExperimentStatus::Ready(_) => Span::styled("✓ ", Style::new().fg(theme.ui.ok)),
        ExperimentStatus::Missing(..) => Span::styled("! ", Style::new().fg(theme.ui.warn)),
        ExperimentStatus::Invalid(_) => Span::styled("✗ ", Style::new().fg(theme.ui.error)),
    }
}

fn draw_list(app: &App, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let theme = &app.theme;
    let block = panel(theme, "experiments");
    let Some(entries) = &app.experiments.entries else {
        frame.render_widget(Paragraph::new("reading…").block(block), area);
        return;
    };
    if entries.is_empty() {
        let text = format!("no *.toml files in\n{}", app.workspace.experiments_dir().display());
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(block), area);
        return;
    }
    let items: Vec<ListItem> = entries
        .iter()
        .map(|entry| {
            ListItem::new(Line::from(vec![
                status_mark(theme, &entry.status),
                Span::raw(entry.name.clone()),
            ]))
        })
        .collect();
    let list = List::new(items).block(block).highlight_style(selected_style(theme));
    let mut state = ListState::default().with_selected(Some(app.experiments.selected));
    frame.render_stateful_widget(list, area, &mut state);
    record_rows(
        hits,
        area,
        0,
        state.offset(),
        (0..entries.len()).map(Target::Experiment),
    );
}

fn draw_detail(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let Some(entry) = app.experiments.selected() else {
        frame.render_widget(panel(theme, "details"), area);
        return;
    };
    let lines = detail_lines(app, entry);
    let paragraph = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(panel(theme, "details"));
    frame.render_widget(paragraph, area);
}

fn detail_lines(app: &App, entry: &ExperimentEntry) -> Vec<Line<'static>> {
    let theme = &app.theme;
    let shown = entry.path.strip_prefix(app.workspace.root()).unwrap_or(&entry.path);
    let mut lines = vec![Line::styled(shown.display().to_string(), Style::new().fg(theme.ui.dim))];
    match &entry.status {
        ExperimentStatus::Ready(experiment) => {
            lines.extend(summary(theme, experiment, app.workspace.root()));
            lines.extend(sweep_line(theme, entry));
        }
        ExperimentStatus::Missing(experiment, problems) => {
            lines.extend(summary(theme, experiment, app.workspace.root()));
            lines.extend(sweep_line(theme, entry));
            lines.push(Line::raw(""));
            for problem in problems {
                lines.push(Line::styled(format!("! {problem}"), Style::new().fg(theme.ui.warn)));
            }
        }
        ExperimentStatus::Invalid(errors) => {
            for error in errors {
                lines.push(Line::styled(error.clone(), Style::new().fg(theme.ui.error)));
            }
        }
    }
    lines
}

fn sweep_line(theme: &Theme, entry: &ExperimentEntry) -> Option<Line<'static>> {
    let sweep = entry.sweep.as_ref()?;
    Some(Line::from(vec![
        Span::styled(format!("{:<9}", "sweep"), Style::new().fg(theme.ui.accent)),
        Span::styled(
            format!("{sweep} · Enter queues them all"),
            Style::new().fg(theme.ui.text),
        ),
    ]))
}

/// The experiment in a few lines: what a user scans to tell experiments apart.
fn summary(theme: &Theme, e: &Experiment, workspace: &Path) -> Vec<Line<'static>> {
    let label = |name: &str| Span::styled(format!("{name:<9}"), Style::new().fg(theme.ui.accent));
    let text = |s: String| Span::styled(s, Style::new().fg(theme.ui.text));
    let root = e.data.root.strip_prefix(workspace).unwrap_or(&e.data.root);
    let modalities: Vec<&str> = e
        .data
        .modalities
        .iter()
        .map(|m| crate::config::Choice::name(*m))
        .collect();
    let filters = e.model.filters();
    let norm = match e.model.norm {
        Norm::None => "no norm".to_string(),
        norm => format!("{norm} norm"),
    };
    let [px, py, pz] = e.train.patch_size;
    let mut loss = Vec::new();
    for (weight, name) in [
        (e.train.loss.dice, "dice"),
        (e.train.loss.ce, "ce"),
        (e.train.loss.focal, "focal"),
    ] {
        if weight > 0.0 {
            loss.push(format!("{weight}×{name}"));
        }
    }
    vec![
        Line::from(vec![
            label("data"),
            text(format!(
                "{} · {} · {} · crop {}",
                root.display(),
                modalities.join(" "),
                e.data.normalization,
                e.data.crop
            )),
        ]),
        Line::from(vec![
            label("model"),
            text(format!(
                "U-Net {} levels · filters {}-{} · {} · {}",
                e.model.depth,
                filters.first().copied().unwrap_or(0),
                filters.last().copied().unwrap_or(0),
                norm,
                e.model.activation
            )),
        ]),
        Line::from(vec![
            label("train"),
            text(format!(
                "patch {px}×{py}×{pz} · batch {} · {} epochs × {} patches",
                e.train.batch_size, e.train.epochs, e.train.patches_per_epoch
            )),
        ]),
        Line::from(vec![
            label("optim"),
            text(format!(
                "{} lr {} · {} schedule · loss {}",
                e.train.optimizer,
                e.train.lr,
                e.train.schedule,
                loss.join(" + ")
            )),
        ]),
        Line::from(vec![
            label("validate"),
            text(format!(
                "every {} · overlap {}",
                match e.validate.every {
                    Every::Epochs(n) => format!("{n} epoch(s)"),
                    Every::Auto => "epoch (fewer under a budget)".to_string(),
                },
                e.validate.overlap
            )),
        ]),
    ]
}
