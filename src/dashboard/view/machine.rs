//! The machine: every segtop trainer on this machine, of every user and workspace (the
//! machine's register), how far each has come, and every user's waiting runs in the order
//! they are expected to start. An instructor sees the whole class at a glance.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::panel;
use crate::dashboard::app::App;
use crate::runs::{cut_left, format_duration};
use crate::schedule::overview::{Progress, Trainer};
use crate::schedule::queue::ByteSize;

/// Inner widths from which the trainers' peak memory and running time are shown too.
const WIDE: usize = 100;

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let machine = &app.machine;
    let cores = app.host.map_or(0, |h| h.cores);
    let given: u32 = machine.trainers.iter().map(|t| t.record.threads).sum();
    let mut users: Vec<&str> = machine.trainers.iter().map(|t| t.record.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let title = format!(
        "machine: {} trainer(s) of {} user(s), {given} of {cores} cores given out",
        machine.trainers.len(),
        users.len()
    );
    let dim = Style::new().fg(theme.ui.dim);
    let head = Style::new().fg(theme.ui.title).add_modifier(Modifier::BOLD);
    let inner = usize::from(area.width.saturating_sub(2));
    let wide = inner >= WIDE;
    let run_width = inner.saturating_sub(56 + if wide { 18 } else { 0 }).clamp(8, 40);
    let mut lines = Vec::new();
    if machine.trainers.is_empty() {
        lines.push(Line::styled("No segtop trainer is running on this machine.", dim));
    } else {
        let extra = if wide {
            format!(" {:>8} {:>8}", "PEAK", "RUNNING")
        } else {
            String::new()
        };
        lines.push(Line::styled(
            format!(
                "{:<9} {:<run_width$} {:>7} {:>5} {:>8} {:>6}  {:<14}{extra}",
                "USER", "RUN", "EPOCH", "CORES", "MEMORY", "P/S", "DICE ET TC WT"
            ),
            head,
        ));
        for trainer in &machine.trainers {
            let style = if app.runs.contains_key(&trainer.record.run) {
                Style::new().fg(theme.ui.accent)
            } else {
                Style::new().fg(theme.ui.text)
            };
            lines.push(Line::styled(trainer_row(app, trainer, run_width, wide), style));
        }
    }
    lines.push(Line::raw(""));
    if machine.queued.is_empty() {
        lines.push(Line::styled("Nobody's runs are waiting.", dim));
    } else {
        lines.push(Line::styled("Waiting, in the order they are expected to start:", head));
        for queued in &machine.queued {
            let waited = (app.now - queued.since).num_seconds().max(0) as f64;
            lines.push(Line::from(vec![
                Span::styled(format!("{:>3}. ", queued.position), dim),
                Span::raw(format!(
                    "{:<9} {:<run_width$} {:>2} core(s), waiting {}",
                    cut_left(&queued.user, 9),
                    cut_left(&queued.run, run_width),
                    queued.cores,
                    format_duration(waited)
                )),
            ]));
        }
    }
    if !machine.warnings.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!(
                "{} warning(s) about the register: segtop top lists them",
                machine.warnings.len()
            ),
            Style::new().fg(theme.ui.warn),
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(panel(theme, &title)), area);
}

/// One trainer's line: user, run, progress where readable, cores and memory.
fn trainer_row(app: &App, trainer: &Trainer, run_width: usize, wide: bool) -> String {
    let record = &trainer.record;
    let progress = trainer.progress.as_ref();
    let (epoch, speed, dice) = progress.map_or_else(
        || ("-".to_string(), "-".to_string(), "-".to_string()),
        |p: &Progress| {
            (
                if p.epochs > 0 {
                    format!("{}/{}", p.epoch, p.epochs)
                } else {
                    p.epoch.to_string()
                },
                p.patches_per_s.map_or_else(|| "-".into(), |s| format!("{s:.2}")),
                p.best_dice
                    .map_or_else(|| "-".into(), |d| format!("{:.2} {:.2} {:.2}", d[0], d[1], d[2])),
            )
        },
    );
    let mut row = format!(
        "{:<9} {:<run_width$} {:>7} {:>5} {:>8} {:>6}  {:<14}",
        cut_left(&record.user, 9),
        cut_left(&record.run, run_width),
        epoch,
        record.threads,
        ByteSize(trainer.rss_bytes).to_string(),
        speed,
        dice,
    );
    if wide {
        let age = (app.now - record.started).num_seconds().max(0) as f64;
        row.push_str(&format!(
            " {:>8} {:>8}",
            ByteSize(record.peak_bytes).to_string(),
            format_duration(age)
        ));
    }
    row
}
