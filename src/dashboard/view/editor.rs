//! The experiment editor's form: every key of the schema with its value, and below it what
//! the selected key takes and what the check finds.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{panel, selected_style};
use crate::dashboard::editor::{Editor, Stage};
use crate::theme::Theme;

/// Rows under the form for the selected key's kind, problems and prompts.
const INFO_ROWS: u16 = 6;

pub fn draw(editor: &Editor, theme: &Theme, frame: &mut Frame, area: Rect) {
    let [form, info] = Layout::vertical([Constraint::Min(3), Constraint::Length(INFO_ROWS)]).areas(area);
    let title = format!("clone {} → experiments/{}.toml", editor.from, editor.name);
    let block = panel(theme, &title);
    let inner = block.inner(form);
    frame.render_widget(block, form);
    let key_width = editor
        .fields
        .iter()
        .map(|f| f.key.chars().count())
        .max()
        .unwrap_or(10)
        .max(9)
        + 2;
    let rows = usize::from(inner.height);
    // The selected key in the middle, with its neighbours around it.
    let offset = editor
        .selected
        .saturating_sub(rows / 2)
        .min(editor.rows().saturating_sub(rows));
    let mut lines = Vec::with_capacity(rows);
    for row in offset..(offset + rows).min(editor.rows()) {
        let selected = row == editor.selected;
        let (key, value, mark, value_style) = match row.checked_sub(1).and_then(|i| editor.fields.get(i)) {
            None => (
                "file name".to_string(),
                format!("experiments/{}.toml", editor.name),
                if editor
                    .problems
                    .iter()
                    .any(|p| p.key.is_none() && p.message.starts_with("file name"))
                {
                    '✗'
                } else {
                    ' '
                },
                Style::new().fg(theme.ui.text).add_modifier(Modifier::BOLD),
            ),
            Some(field) => {
                let bad = editor.problems_of(&field.key).next().is_some();
                let style = if bad {
                    Style::new().fg(theme.ui.error).add_modifier(Modifier::BOLD)
                } else if field.changed {
                    Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD)
                } else if field.set {
                    Style::new().fg(theme.ui.text)
                } else {
                    Style::new().fg(theme.ui.dim)
                };
                let mark = match (bad, field.changed) {
                    (true, _) => '✗',
                    (false, true) => '●',
                    (false, false) => ' ',
                };
                (field.key.clone(), field.text.clone(), mark, style)
            }
        };
        let value = match (&editor.input, selected) {
            (Some(input), true) => format!("{input}▏"),
            _ => value,
        };
        let key_style = if selected {
            selected_style(theme)
        } else {
            Style::new().fg(theme.ui.text)
        };
        lines.push(Line::from(vec![
            Span::styled(mark.to_string(), value_style),
            Span::styled(format!("{key:<key_width$}"), key_style),
            Span::styled(value, value_style),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
    draw_info(editor, theme, frame, info);
}

fn draw_info(editor: &Editor, theme: &Theme, frame: &mut Frame, area: Rect) {
    let key = Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(theme.ui.dim);
    let mut lines = Vec::new();
    match &editor.stage {
        Stage::ConfirmOverwrite(path) => {
            lines.push(Line::styled(
                format!("{} is already there.", shown(path)),
                Style::new().fg(theme.ui.warn).add_modifier(Modifier::BOLD),
            ));
            lines.push(Line::from(vec![
                Span::styled("y", key),
                Span::raw(" replaces it   any other key: back to the form"),
            ]));
        }
        Stage::Saved(path) => {
            lines.push(Line::styled(
                format!("✓ saved {}", shown(path)),
                Style::new().fg(theme.ui.ok).add_modifier(Modifier::BOLD),
            ));
            lines.push(Line::from(vec![
                Span::styled("⏎", key),
                Span::raw(" queue it now   "),
                Span::styled("Esc", key),
                Span::raw(" later (it is in the experiment list)"),
            ]));
        }
        Stage::Editing => {
            let hint = match editor.selected_field() {
                Some(field) => format!("{}: {}", field.key, field.kind.hint()),
                None => "the new file, under experiments/ · ⏎ types it".to_string(),
            };
            lines.push(Line::styled(hint, dim));
            if let Some(message) = &editor.message {
                lines.push(Line::styled(message.clone(), Style::new().fg(theme.ui.warn)));
            }
            if editor.problems.is_empty() {
                lines.push(Line::styled(
                    "✓ checks as segtop check would · s saves",
                    Style::new().fg(theme.ui.ok),
                ));
            }
            for problem in &editor.problems {
                lines.push(Line::styled(
                    format!("✗ {}", problem.message),
                    Style::new().fg(theme.ui.error),
                ));
            }
        }
    }
    let title = match editor.problems.len() {
        0 => format!("check · {} changed", editor.changed()),
        n => format!("check: {n} problem(s) · {} changed", editor.changed()),
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(panel(theme, &title)),
        area,
    );
}

/// A path under the workspace as `experiments/name.toml`.
fn shown(path: &std::path::Path) -> String {
    let parts: Vec<_> = path.iter().rev().take(2).collect();
    parts
        .iter()
        .rev()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
