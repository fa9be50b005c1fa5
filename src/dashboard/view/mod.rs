//! Drawing the dashboard from its state. Nothing here changes state.
//!
//! Every screen has the same frame: a title bar (screens, live runs, the host) on the first
//! row, the screen's body, and a key bar with the keys that matter here (or a notice) on the
//! last row. Help and the kill confirmation are drawn over it.

mod compare;
mod editor;
mod experiments;
mod grid;
mod machine;
mod run;
mod runs;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::app::{App, Screen};
use super::hits::{Hits, Target};
use crate::run::process::Halt;
use crate::theme::Theme;

/// Draws the whole frame; returns where the clickable rows went.
pub fn draw(app: &App, frame: &mut Frame) -> Hits {
    let mut hits = Hits::default();
    let [title, body, keys] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    frame.render_widget(title_bar(app, title.width), title);
    match (&app.editor, app.screen) {
        (Some(form), _) => editor::draw(form, &app.theme, frame, body),
        (None, Screen::Experiments) => experiments::draw(app, frame, body, &mut hits),
        (None, Screen::Runs) => runs::draw(app, frame, body, &mut hits),
        (None, Screen::Run) => run::draw(app, frame, body, &mut hits),
        (None, Screen::Grid) => grid::draw(app, frame, body, &mut hits),
        (None, Screen::Compare) => compare::draw(app, frame, body, &mut hits),
        (None, Screen::Machine) => machine::draw(app, frame, body),
    }
    frame.render_widget(key_bar(app, keys.width), keys);
    if app.show_help {
        draw_help(app, frame);
    } else if app.show_messages {
        draw_messages(app, frame);
    } else if let Some((id, halt)) = &app.confirm {
        draw_confirm(&app.theme, frame, id, *halt);
    }
    hits
}

/// Records the rows of a list drawn in `area` (inside its border, below `header` rows),
/// scrolled to `offset`: row `i` shows item `offset + i`.
fn record_rows(hits: &mut Hits, area: Rect, header: u16, offset: usize, targets: impl IntoIterator<Item = Target>) {
    let inner = Block::default().borders(Borders::ALL).inner(area);
    let first = inner.y + header;
    for (row, target) in (first..inner.bottom()).zip(targets.into_iter().skip(offset)) {
        hits.add(Rect::new(inner.x, row, inner.width, 1), target);
    }
}

fn title_bar(app: &App, width: u16) -> Line<'static> {
    let theme = &app.theme;
    let tab = |key: &str, name: String, on: bool| {
        let style = if on {
            selected_style(theme).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(theme.ui.text)
        };
        Span::styled(format!(" {key}:{name} "), style)
    };
    let experiments = app.experiments.len();
    let live = app.live_runs();
    let experiments = format!("experiments ({experiments})");
    let runs = if live > 0 {
        format!("runs ({}, {live} live)", app.runs.len())
    } else {
        format!("runs ({})", app.runs.len())
    };
    let mut spans = vec![
        Span::styled(" segtop ", Style::new().fg(theme.ui.title).add_modifier(Modifier::BOLD)),
        tab("1", experiments, app.screen == Screen::Experiments),
        tab("2", runs, matches!(app.screen, Screen::Runs | Screen::Run)),
        tab("3", "grid".to_string(), app.screen == Screen::Grid),
        tab(
            "4",
            format!("compare ({})", app.list.marked.len()),
            app.screen == Screen::Compare,
        ),
        tab("5", "machine".to_string(), app.screen == Screen::Machine),
    ];
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    if let Some(host) = &app.host {
        let text = format!(
            " cpu {:.0}% · ram {:.1}/{:.0}G · load {:.1}",
            host.cpu_percent,
            host.used_memory_mb / 1000.0,
            host.total_memory_mb / 1000.0,
            host.load[0]
        );
        let room = usize::from(width).saturating_sub(used);
        if text.chars().count() <= room {
            spans.push(Span::raw(" ".repeat(room - text.chars().count())));
            spans.push(Span::styled(text, Style::new().fg(theme.ui.dim)));
        }
    }
    Line::from(spans)
}

/// The keys that matter on the current screen, or what is being typed into the filter.
fn key_bar(app: &App, width: u16) -> Line<'static> {
    let theme = &app.theme;
    let key = Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD);
    let text = Style::new().fg(theme.ui.dim);
    if app.list.filtering {
        return Line::from(vec![
            Span::styled(" filter: ", key),
            Span::styled(format!("{}▏", app.list.filter), Style::new().fg(theme.ui.text)),
            Span::styled("  Enter keep  Esc clear", text),
        ]);
    }
    if let Some(form) = &app.editor {
        if let Some(search) = &form.search {
            return Line::from(vec![
                Span::styled(" find: ", key),
                Span::styled(format!("{search}▏"), Style::new().fg(theme.ui.text)),
                Span::styled("  Enter done", text),
            ]);
        }
        return Line::from(key_spans(editor_keys(form), key, text));
    }
    let keys = screen_keys(app.screen);
    let notice = app.notice.text();
    // With a notice, only the first keys; the notice matters more.
    let shown = if notice.is_some() { 2 } else { keys.len() };
    let mut spans = key_spans(&keys[..shown], key, text);
    if let Some(notice) = notice {
        let used: usize = spans.iter().map(Span::width).sum();
        spans.push(notice_span(
            theme,
            &fit_notice(notice, usize::from(width).saturating_sub(used)),
        ));
    }
    Line::from(spans)
}

/// A notice cut to `room` columns, saying where to read it whole when it does not fit.
fn fit_notice(notice: &str, room: usize) -> String {
    const WHOLE: &str = "… N: whole";
    if notice.chars().count() <= room {
        return notice.to_string();
    }
    let kept = room.saturating_sub(WHOLE.chars().count());
    let mut cut: String = notice.chars().take(kept).collect();
    cut.push_str(WHOLE);
    cut
}

/// The editor's keys depend on its stage and on whether a value is being typed.
fn editor_keys(form: &crate::dashboard::editor::Editor) -> &'static [(&'static str, &'static str)] {
    use crate::dashboard::editor::Stage;
    match (&form.input, &form.stage) {
        (_, Stage::Saved(_)) => &[("⏎", "queue it now"), ("Esc", "later")],
        (_, Stage::ConfirmOverwrite(_)) => &[("y", "replace the file"), ("n", "back")],
        (Some(_), _) => &[("⏎", "keep"), ("Esc", "cancel"), ("^U", "clear")],
        (None, _) => &[
            ("↑↓", "key"),
            ("⏎", "edit"),
            ("←→", "change"),
            ("/", "find"),
            ("u", "undo"),
            ("s", "save"),
            ("Esc", "close"),
        ],
    }
}

/// Each screen's most useful keys, most important first (a notice leaves room for two).
fn screen_keys(screen: Screen) -> &'static [(&'static str, &'static str)] {
    match screen {
        Screen::Experiments => &[
            ("↑↓", "select"),
            ("⏎", "launch"),
            ("b", "on Slurm"),
            ("c", "clone"),
            ("e", "edit"),
            ("2", "runs"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::Runs => &[
            ("⏎", "open"),
            ("␣", "mark"),
            ("/", "filter"),
            ("s", "sort"),
            ("x", "stop"),
            ("?", "help"),
        ],
        Screen::Run => &[
            ("Esc", "back"),
            ("↑↓", "run"),
            ("L", "log"),
            ("x", "stop"),
            ("K", "kill"),
            ("?", "help"),
        ],
        Screen::Compare => &[
            ("s", "sort"),
            ("S", "reverse"),
            ("u", "unmark all"),
            ("Esc", "runs"),
            ("?", "help"),
        ],
        Screen::Grid => &[
            ("←↑↓→", "select"),
            ("⏎", "open"),
            ("x", "stop"),
            ("K", "kill"),
            ("?", "help"),
        ],
        Screen::Machine => &[("Tab", "next screen"), ("2", "your runs"), ("?", "help")],
    }
}

/// Key-and-action pairs as the bar shows them: the key bold, its action dim, after a margin.
fn key_spans(keys: &[(&'static str, &str)], key: Style, text: Style) -> Vec<Span<'static>> {
    let mut spans = vec![Span::raw(" ")];
    for (k, what) in keys {
        spans.push(Span::styled(*k, key));
        spans.push(Span::styled(format!(" {what}  "), text));
    }
    spans
}

/// A notice in the key bar, in the warning colour when it reports a problem.
fn notice_span(theme: &Theme, notice: &str) -> Span<'static> {
    let style = if notice.starts_with('⚠') || notice.starts_with("cannot") {
        Style::new().fg(theme.ui.warn)
    } else {
        Style::new().fg(theme.ui.accent)
    };
    Span::styled(notice.to_string(), style)
}

/// A bordered panel with a title.
pub(super) fn panel<'a>(theme: &Theme, title: &'a str) -> Block<'a> {
    Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(theme.ui.border))
        .title(Span::styled(format!(" {title} "), Style::new().fg(theme.ui.title)))
}

pub(super) fn selected_style(theme: &Theme) -> Style {
    if theme.monochrome {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().fg(theme.ui.selection_fg).bg(theme.ui.selection_bg)
    }
}

/// A rectangle of at most `width` x `height` in the middle of `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// Every key, by screen.
pub const HELP: &[(&str, &str)] = &[
    ("1 2 3 4 5  Tab", "experiments · runs · grid · compare · machine"),
    ("space  w", "mark a run · its whole sweep, to compare"),
    ("↑↓ j k g G PgUp/Dn", "select, first, last (the wheel too)"),
    ("⏎  b  click", "launch · launch on Slurm · open a run"),
    ("/", "filter runs (Enter keeps, Esc clears)"),
    ("s  S", "sort runs by the next column · reverse"),
    ("x", "stop a run (asks first) · unqueue it"),
    ("K", "kill a run (asks first)"),
    ("r", "resume a stopped, failed or lost run"),
    ("+ -  p", "queued run: earlier · later · hold"),
    ("← → h l", "run view: panel tabs on small screens"),
    ("L  d", "loss on a log scale · lesion-wise Dice"),
    ("v  [ ]  PgUp PgDn", "preview: full view · slice ±1 · ±10"),
    ("a T o O M C", "axis, tumour, pair, outline, modality, colour"),
    ("< >", "preview: an earlier · a later validation's"),
    ("c  e", "clone into a form · open in $EDITOR"),
    ("m  t", "chart lines · next theme (both remembered)"),
    ("N", "messages: the latest ones, whole"),
    ("Esc  ?  F1", "back · this help"),
    ("q  Ctrl-C", "quit (runs keep going)"),
];

fn draw_help(app: &App, frame: &mut Frame) {
    let theme = &app.theme;
    // The keys, the closing line and the border.
    let popup = centered(frame.area(), 66, HELP.len() as u16 + 3);
    let key = Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| Line::from(vec![Span::styled(format!("{k:<19}"), key), Span::raw(*what)]))
        .collect();
    lines.push(Line::styled(
        format!(
            "any key closes this help · theme {} · lines {}",
            theme.name,
            app.marker().name()
        ),
        Style::new().fg(theme.ui.dim),
    ));
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(panel(theme, "keys")), popup);
}

/// The latest messages of the status line, whole and wrapped, newest last.
fn draw_messages(app: &App, frame: &mut Frame) {
    let theme = &app.theme;
    let area = frame.area();
    let popup = centered(
        area,
        area.width.saturating_sub(4).min(100),
        area.height.saturating_sub(2),
    );
    let time = Style::new().fg(theme.ui.dim);
    let mut lines: Vec<Line> = app
        .messages
        .iter()
        .map(|(at, text)| {
            Line::from(vec![
                Span::styled(
                    format!("{} ", at.with_timezone(&chrono::Local).format("%H:%M:%S")),
                    time,
                ),
                notice_span(theme, text),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::styled("no messages yet", time));
    }
    // Newest last, and the newest in view: skip what does not fit (wrapped lines counted).
    let inner_width = usize::from(popup.width.saturating_sub(2)).max(1);
    let inner_height = usize::from(popup.height.saturating_sub(2));
    let mut rows = 0;
    let mut first = lines.len();
    while first > 0 {
        let needed = lines[first - 1].width().div_ceil(inner_width).max(1);
        if rows + needed > inner_height {
            break;
        }
        rows += needed;
        first -= 1;
    }
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines.split_off(first))
            .wrap(Wrap { trim: false })
            .block(panel(theme, "messages · any key closes")),
        popup,
    );
}

fn draw_confirm(theme: &Theme, frame: &mut Frame, id: &str, halt: Halt) {
    let popup = centered(frame.area(), 56, 6);
    let (verb, consequence, keep, title) = match halt {
        Halt::Stop => (
            "Stop",
            "It writes a checkpoint and stops; r resumes it later.",
            " stop   any other key: keep it running",
            "stop",
        ),
        Halt::Kill => (
            "Kill",
            "Work since its last checkpoint is lost.",
            " kill   any other key: keep it running",
            "kill",
        ),
    };
    let lines = vec![
        Line::styled(
            format!("{verb} {id}?"),
            Style::new().fg(theme.ui.error).add_modifier(Modifier::BOLD),
        ),
        Line::raw(consequence),
        Line::from(vec![
            Span::styled("y", Style::new().fg(theme.ui.accent).add_modifier(Modifier::BOLD)),
            Span::raw(keep),
        ]),
    ];
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(panel(theme, title)),
        popup,
    );
}
