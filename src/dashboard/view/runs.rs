//! The run list: every run under `runs/` with its state, progress, best Dice and speed.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};

use super::{panel, record_rows, selected_style};
use crate::dashboard::app::App;
use crate::dashboard::hits::{Hits, Target};
use crate::runs::format_duration;
use crate::runs::model::{RunModel, RunState};
use crate::theme::Theme;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let theme = &app.theme;
    let runs = app.visible_runs();
    let title = list_title(app, runs.len());
    let mut block = panel(theme, &title);
    if let Some(footer) = selected_run_footer(app) {
        block = block.title_bottom(footer);
    }
    if runs.is_empty() {
        let text = if app.runs.is_empty() {
            format!(
                "No runs in {} yet.\nPress 1, pick an experiment and press Enter to launch one.",
                app.workspace.runs_dir().display()
            )
        } else {
            "No run matches the filter (Esc clears it).".to_string()
        };
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(block), area);
        return;
    }
    let wide = area.width >= 110;
    // Below 100 columns the run's name needs the room more than the elapsed time does.
    let elapsed = area.width >= 100;
    let (header, widths) = columns(&runs, wide, elapsed);
    let rows: Vec<Row> = runs.iter().map(|run| row(app, run, wide, elapsed)).collect();
    let header = Row::new(header).style(Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD));
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(selected_style(theme));
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
    let ids = runs.iter().map(|run| Target::Run(run.id.clone()));
    record_rows(hits, area, 1, state.offset(), ids);
}

/// The panel title names the sort, and with a filter how many of all runs it lets through.
fn list_title(app: &App, shown: usize) -> String {
    let mut title = format!("runs by {}", app.list.sort.name());
    if app.list.reverse {
        title.push_str(" (reversed)");
    }
    if !app.list.filter.is_empty() {
        title.push_str(&format!(
            " · filter '{}' · {} of {}",
            app.list.filter,
            shown,
            app.runs.len()
        ));
    }
    title
}

/// The bottom border says why the selected run waits in the queue, or which Slurm job it is.
fn selected_run_footer(app: &App) -> Option<Span<'static>> {
    let theme = &app.theme;
    let selected = app.list.selected.as_ref().and_then(|id| app.runs.get(id));
    if let Some(place) = selected.and_then(|r| r.observed.queue.as_ref()) {
        let why = match (&place.waiting, place.paused) {
            (_, true) => "held: p releases it".to_string(),
            (Some(why), false) => format!("waits: {why}"),
            (None, false) => "waits for the supervisor".to_string(),
        };
        Some(Span::styled(
            format!(" #{} {why} · + - move ", place.position),
            Style::new().fg(theme.ui.warn),
        ))
    } else {
        selected
            .and_then(RunModel::job_line)
            .map(|job| Span::styled(format!(" {job} "), Style::new().fg(theme.ui.warn)))
    }
}

/// The table's column names and widths; narrow terminals drop elapsed, wide ones add the
/// experiment, cpu and rss.
fn columns(runs: &[&RunModel], wide: bool, elapsed: bool) -> (Vec<&'static str>, Vec<Constraint>) {
    let mut header = vec!["run", "state", "epoch", "ET", "TC", "WT", "p/s", "elapsed", "left"];
    // As wide as the widest `epoch/epochs` shown, so `108/3000` is never cut to `108/300`.
    let epoch_width = runs
        .iter()
        .map(|run| epoch(run).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 11);
    let mut widths = vec![
        Constraint::Min(14),
        Constraint::Length(10),
        Constraint::Length(epoch_width as u16),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    if !elapsed {
        header.remove(7);
        widths.remove(7);
    }
    if wide {
        header.insert(1, "experiment");
        widths.insert(1, Constraint::Length(EXPERIMENT_WIDTH as u16));
        header.extend(["cpu", "rss"]);
        widths.extend([Constraint::Length(5), Constraint::Length(6)]);
    }
    (header, widths)
}

/// Columns of the run list's experiment column (wide terminals).
const EXPERIMENT_WIDTH: usize = 22;

/// The experiment file a run came from, as it fits `width` columns: without the `experiments/`
/// every file shares, and cut from the left (`…` first) so the end that tells files apart
/// (`quick-demo-2.toml`) stays.
fn experiment_cell(path: &std::path::Path, width: usize) -> String {
    let shown = path.strip_prefix("experiments").unwrap_or(path).display().to_string();
    crate::runs::cut_left(&shown, width)
}

/// The epoch column: the queue place of a queued run, else `epoch/epochs`.
fn epoch(run: &RunModel) -> String {
    if let Some(place) = &run.observed.queue {
        format!("#{}", place.position)
    } else if run.epochs > 0 {
        format!("{}/{}", run.epoch, run.epochs)
    } else {
        "–".to_string()
    }
}

fn row<'a>(app: &App, run: &'a RunModel, wide: bool, elapsed: bool) -> Row<'a> {
    let theme = &app.theme;
    let state = run.state();
    let dice = |value: Option<f64>| {
        value.map_or("–".to_string(), |v| {
            format!("{:.2}", v).trim_start_matches('0').to_string()
        })
    };
    let best = run.best.map(|(_, d)| d);
    let mut cells = vec![
        Cell::from(short_id(&run.id)),
        Cell::from(Span::styled(state.name(), state_style(theme, state))),
        Cell::from(epoch(run)),
        Cell::from(dice(best.map(|d| d.et))),
        Cell::from(dice(best.map(|d| d.tc))),
        Cell::from(dice(best.map(|d| d.wt))),
        Cell::from(run.patches_per_s().map_or("–".to_string(), |p| format!("{p:.1}"))),
        Cell::from(run.elapsed(app.now).map_or("–".to_string(), format_duration)),
        Cell::from(run.eta(app.now).map_or("–".to_string(), format_duration)),
    ];
    if !elapsed {
        cells.remove(7);
    }
    if wide {
        let experiment = run
            .observed
            .experiment
            .as_ref()
            .map_or_else(|| run.name.clone(), |e| experiment_cell(e, EXPERIMENT_WIDTH));
        cells.insert(1, Cell::from(experiment));
        let sample = run.observed.last_sample.filter(|_| state.is_live());
        cells.push(Cell::from(
            sample.map_or("–".to_string(), |s| format!("{:.0}%", s.cpu_percent)),
        ));
        cells.push(Cell::from(
            sample.map_or("–".to_string(), |s| format!("{:.0}M", s.rss_mb)),
        ));
    }
    Row::new(cells).style(Style::new().fg(theme.ui.text))
}

/// A run id without its year (`20261126-090512-quick` -> `1126-090512 quick`): runs of one
/// experiment launched in the same minute stay apart.
pub(super) fn short_id(id: &str) -> String {
    match crate::run::split_id(id) {
        Some((time, name)) => format!("{} {name}", &time[4..]),
        None => id.to_string(),
    }
}

pub(super) fn state_style(theme: &Theme, state: RunState) -> Style {
    let color = match state {
        RunState::Running | RunState::Starting => theme.ui.accent,
        RunState::Completed | RunState::EarlyStopped => theme.ui.ok,
        RunState::Queued | RunState::Pending => theme.ui.warn,
        RunState::Stopped | RunState::Paused | RunState::Pruned => theme.ui.dim,
        RunState::Failed | RunState::Lost => theme.ui.error,
    };
    let style = Style::new().fg(color);
    if theme.monochrome && matches!(state, RunState::Failed | RunState::Lost) {
        style.add_modifier(Modifier::BOLD)
    } else {
        style
    }
}

/// A one-line summary of a run's process, for headers and cards.
pub(super) fn process_line(run: &RunModel) -> String {
    match run.observed.last_sample {
        Some(sample) if run.state().is_live() => {
            format!("cpu {:.0}% · {:.0} MB", sample.cpu_percent, sample.rss_mb)
        }
        _ => match run.peak_rss_mb {
            Some(peak) => format!("peak rss {peak:.0} MB"),
            None => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_lose_their_date_but_keep_the_time() {
        assert_eq!(short_id("20261126-090512-quick-demo"), "1126-090512 quick-demo");
        assert_eq!(short_id("my-run"), "my-run");
    }

    #[test]
    fn the_experiment_column_keeps_the_end_that_tells_files_apart() {
        let cell = |p: &str| experiment_cell(std::path::Path::new(p), 22);
        assert_eq!(cell("experiments/quick-demo.toml"), "quick-demo.toml");
        assert_eq!(cell("experiments/quick-demo-2.toml"), "quick-demo-2.toml");
        assert_eq!(
            cell("lab/tuning/very-long-experiment-name.toml"),
            "…-experiment-name.toml"
        );
        assert_eq!(cell("lab/tuning/very-long-experiment-name.toml").chars().count(), 22);
    }
}
