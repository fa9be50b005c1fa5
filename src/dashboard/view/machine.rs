//! The machine: every segtop trainer on this machine, of every user and workspace (the
//! machine's register), the cores they were given, and whose turn comes next among the users
//! with runs waiting. An instructor sees the whole class at a glance.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::panel;
use crate::dashboard::app::App;
use crate::runs::{cut_left, format_duration};
use crate::schedule::queue::ByteSize;

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let theme = &app.theme;
    let machine = &app.machine;
    let cores = app.host.map_or(0, |h| h.cores);
    let given: u32 = machine.trainers.iter().map(|(r, _)| r.threads).sum();
    let mut users: Vec<&str> = machine.trainers.iter().map(|(r, _)| r.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let title = format!(
        "machine: {} trainer(s) of {} user(s), {given} of {cores} cores given out",
        machine.trainers.len(),
        users.len()
    );
    let dim = Style::new().fg(theme.ui.dim);
    let head = Style::new().fg(theme.ui.title).add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    if machine.trainers.is_empty() {
        lines.push(Line::styled("No segtop trainer is running on this machine.", dim));
    } else {
        let run_width = usize::from(area.width.saturating_sub(2))
            .saturating_sub(10 + 6 + 9 + 9 + 8 + 5)
            .clamp(8, 40);
        lines.push(Line::styled(
            format!(
                "{:<10}{:<run_width$} {:>5} {:>8} {:>8} {:>8}",
                "USER", "RUN", "CORES", "MEMORY", "PEAK", "RUNNING"
            ),
            head,
        ));
        for (record, rss) in &machine.trainers {
            let mine = app.runs.contains_key(&record.run);
            let style = if mine {
                Style::new().fg(theme.ui.accent)
            } else {
                Style::new().fg(theme.ui.text)
            };
            let age = (app.now - record.started).num_seconds().max(0) as f64;
            lines.push(Line::styled(
                format!(
                    "{:<10}{:<run_width$} {:>5} {:>8} {:>8} {:>8}",
                    cut_left(&record.user, 9),
                    cut_left(&record.run, run_width.saturating_sub(1)),
                    record.threads,
                    ByteSize(*rss).to_string(),
                    ByteSize(record.peak_bytes).to_string(),
                    format_duration(age),
                ),
                style,
            ));
        }
    }
    lines.push(Line::raw(""));
    if machine.waiting.is_empty() {
        lines.push(Line::styled("Nobody's runs are waiting.", dim));
    } else {
        lines.push(Line::styled("Waiting, in the order of their turns:", head));
        for (turn, waiting) in machine.waiting.iter().enumerate() {
            let waited = (app.now - waiting.since).num_seconds().max(0) as f64;
            lines.push(Line::from(vec![
                Span::styled(format!("{:>3}. ", turn + 1), dim),
                Span::raw(format!(
                    "{} run(s) of user {}, waiting {}",
                    waiting.waiting,
                    waiting.user,
                    format_duration(waited)
                )),
            ]));
        }
    }
    frame.render_widget(Paragraph::new(lines).block(panel(theme, &title)), area);
}
