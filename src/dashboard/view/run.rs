//! The run view: one run's loss, Dice (legacy, or lesion-wise with `d`), learning rate and
//! speed over time, its process and the host, the end of its log, and its slice preview
//! (`v`: over the whole view).
//!
//! From 80x24 up every panel is on screen; at 120x36 and more the learning rate and speed
//! get charts of their own and the log, preview and scores (HD95, the end-of-run evaluation
//! raw and post-processed) a column. Below 80x24 the panels become tabs, one at a time,
//! rather than squeezing.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Widget, Wrap};

use super::panel;
use super::runs::{process_line, short_id, state_style};
use crate::config::Choice;
use crate::dashboard::app::{App, MIN_HEIGHT, MIN_WIDTH};
use crate::dashboard::chart::{LineChart, format_value};
use crate::dashboard::hits::Hits;
use crate::dashboard::screens::RUN_PANELS;
use crate::runs::format_duration;
use crate::runs::model::RunModel;

pub fn draw(app: &App, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let Some(run) = app.open_run() else {
        let text = match &app.run.open {
            Some(id) => format!("waiting for {id} to write its first records…"),
            None => "no run open: press 2 and pick one".to_string(),
        };
        frame.render_widget(Paragraph::new(text).block(panel(&app.theme, "run")), area);
        return;
    };
    hits.charted.push(run.id.clone());
    let [header, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(header_line(app, run), header);
    let buf = frame.buffer_mut();
    // The body of an 80x24 terminal: everything but the title, key and header rows.
    if app.preview.full {
        draw_preview(app, run, body, buf);
    } else if area.width < MIN_WIDTH || area.height + 2 < MIN_HEIGHT {
        draw_tabs(app, run, body, buf);
    } else if area.width >= 120 && area.height >= 34 {
        draw_wide(app, run, body, buf);
    } else {
        draw_compact(app, run, body, buf);
    }
}

fn header_line<'a>(app: &App, run: &'a RunModel) -> Line<'a> {
    let theme = &app.theme;
    let state = run.state();
    let dim = Style::new().fg(theme.ui.dim);
    let mut spans = vec![
        Span::styled(
            format!(" {} ", short_id(&run.id)),
            Style::new().fg(theme.ui.title).add_modifier(Modifier::BOLD),
        ),
        Span::styled(state.name(), state_style(theme, state)),
    ];
    if let Some(place) = &run.observed.queue {
        spans.push(Span::styled(format!(" #{}", place.position), dim));
        if let Some(why) = &place.waiting {
            spans.push(Span::styled(format!(" · {why}"), Style::new().fg(theme.ui.warn)));
        }
    }
    if let Some(job) = run.job_line() {
        spans.push(Span::styled(format!(" · {job}"), Style::new().fg(theme.ui.warn)));
    }
    if run.epochs > 0 {
        spans.push(Span::styled(format!(" · {}/{}", run.epoch, run.epochs), dim));
    }
    if let Some(precision) = &run.precision {
        spans.push(Span::styled(format!(" · {}", short_precision(precision)), dim));
    }
    if let Some(source) = run.init_source() {
        let name = crate::run::split_id(&source).map_or(source.as_str(), |(_, name)| name);
        spans.push(Span::styled(format!(" · from {name}"), dim));
    }
    match (run.elapsed(app.now), run.budget) {
        (Some(elapsed), Some(budget)) => spans.push(Span::styled(
            format!(" · {} of {} budget", format_duration(elapsed), format_duration(budget)),
            dim,
        )),
        (Some(elapsed), None) => spans.push(Span::styled(format!(" · {}", format_duration(elapsed)), dim)),
        (None, Some(budget)) => spans.push(Span::styled(format!(" · {} budget", format_duration(budget)), dim)),
        (None, None) => {}
    }
    if let Some(eta) = run.eta(app.now) {
        spans.push(Span::styled(format!(" · {} left", format_duration(eta)), dim));
    }
    let process = process_line(run);
    if !process.is_empty() {
        spans.push(Span::styled(format!(" · {process}"), dim));
    }
    Line::from(spans)
}

/// `bf16` and `fp32`, as the header has little room; other names as they are.
fn short_precision(name: &str) -> &str {
    match name {
        "bfloat16" => "bf16",
        "float32" => "fp32",
        other => other,
    }
}

fn draw_compact(app: &App, run: &RunModel, area: Rect, buf: &mut Buffer) {
    let bottom = if area.height >= 24 { 8 } else { 6 };
    let [top, middle, lower] =
        Layout::vertical([Constraint::Fill(1), Constraint::Fill(1), Constraint::Length(bottom)]).areas(area);
    let [loss, dice] = Layout::horizontal([Constraint::Fill(1); 2]).areas(top);
    let [speed, resources] = Layout::horizontal([Constraint::Fill(1); 2]).areas(middle);
    let [log, preview] = Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).areas(lower);
    loss_chart(app, run).render(loss, buf);
    dice_chart(app, run).render(dice, buf);
    speed_chart(app, run, true).render(speed, buf);
    draw_resources(app, run, resources, buf);
    draw_log(app, run, log, buf);
    draw_preview(app, run, preview, buf);
}

fn draw_wide(app: &App, run: &RunModel, area: Rect, buf: &mut Buffer) {
    let [left, right] = Layout::horizontal([Constraint::Percentage(62), Constraint::Fill(1)]).areas(area);
    let [a, b, c] = Layout::vertical([Constraint::Fill(1); 3]).areas(left);
    let [loss, dice] = Layout::horizontal([Constraint::Fill(1); 2]).areas(a);
    let [lr, speed] = Layout::horizontal([Constraint::Fill(1); 2]).areas(b);
    loss_chart(app, run).render(loss, buf);
    dice_chart(app, run).render(dice, buf);
    LineChart::new("lr", &app.theme, app.marker())
        .series("lr", Style::new().fg(app.theme.series.lr), &run.charts.lr)
        .x_unit("epochs")
        .render(lr, buf);
    speed_chart(app, run, false).render(speed, buf);
    draw_resources(app, run, c, buf);
    // The scores panel is as tall as its lines (the evaluation's), at least 6 rows.
    let lines = score_lines(app, run, right.width.saturating_sub(2));
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX).max(6);
    let [preview, scores, log] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(height), Constraint::Fill(1)]).areas(right);
    draw_preview(app, run, preview, buf);
    draw_scores(app, lines, scores, buf);
    draw_log(app, run, log, buf);
}

/// One panel at a time, chosen with ← →.
fn draw_tabs(app: &App, run: &RunModel, area: Rect, buf: &mut Buffer) {
    let [tabs, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let mut spans = Vec::new();
    for (i, name) in RUN_PANELS.iter().enumerate() {
        let style = if i == app.run.tab {
            super::selected_style(&app.theme)
        } else {
            Style::new().fg(app.theme.ui.dim)
        };
        spans.push(Span::styled(format!(" {name} "), style));
    }
    spans.push(Span::styled(" ← →", Style::new().fg(app.theme.ui.accent)));
    Line::from(spans).render(tabs, buf);
    match RUN_PANELS.get(app.run.tab).copied().unwrap_or("loss") {
        "dice" => dice_chart(app, run).render(body, buf),
        "speed" => speed_chart(app, run, true).render(body, buf),
        "resources" => draw_resources(app, run, body, buf),
        "log" => draw_log(app, run, body, buf),
        "preview" => draw_preview(app, run, body, buf),
        _ => loss_chart(app, run).render(body, buf),
    }
}

fn loss_chart<'a>(app: &'a App, run: &'a RunModel) -> LineChart<'a> {
    let series = &app.theme.series;
    let mut chart = LineChart::new("loss", &app.theme, app.marker())
        .series("loss", Style::new().fg(series.loss), &run.charts.loss)
        .log_y(app.run.log_scale)
        .x_unit("epochs");
    for (part, color) in run
        .charts
        .loss_parts
        .iter()
        .zip([series.seed_dice, series.lr, series.ram])
    {
        chart = chart.series(part.0, Style::new().fg(color), part.1);
    }
    if let Some(min) = run.charts.loss.min() {
        chart = chart.bottom(Line::styled(
            format!(" min {} ", format_value(min)),
            Style::new().fg(app.theme.ui.dim),
        ));
    }
    chart
}

/// Validation Dice per region over epochs: legacy Dice with the seed tutorial's, or the
/// official lesion-wise Dice (`d`), named in the title.
fn dice_chart<'a>(app: &'a App, run: &'a RunModel) -> LineChart<'a> {
    let series = &app.theme.series;
    let (title, histories, best) = if app.run.lesion_wise_dice {
        ("LW Dice", &run.charts.lesion_dice, run.best_lesion_dice)
    } else {
        ("Dice", &run.charts.dice, run.best.map(|(_, dice)| dice))
    };
    let mut chart = LineChart::new(title, &app.theme, app.marker())
        .series("ET", Style::new().fg(series.dice_et), &histories[0])
        .series("TC", Style::new().fg(series.dice_tc), &histories[1])
        .series("WT", Style::new().fg(series.dice_wt), &histories[2]);
    if !app.run.lesion_wise_dice {
        chart = chart.series("seed", Style::new().fg(series.seed_dice), &run.charts.seed_dice);
    }
    chart = chart.y_range(0.0, 1.0).decimals(2).x_unit("epochs");
    if let (Some((epoch, _)), Some(best)) = (run.best, best) {
        chart = chart.bottom(Line::styled(
            format!(" best {:.2}/{:.2}/{:.2} @{epoch} ", best.et, best.tc, best.wt),
            Style::new().fg(app.theme.ui.dim),
        ));
    }
    chart
}

/// Patches per second; in the compact layout the learning rate rides along in the border.
fn speed_chart<'a>(app: &'a App, run: &'a RunModel, with_lr: bool) -> LineChart<'a> {
    let mut chart = LineChart::new("patches/s", &app.theme, app.marker())
        .series(
            "patches/s",
            Style::new().fg(app.theme.series.cpu),
            &run.charts.throughput,
        )
        .x_unit("epochs");
    if with_lr && let Some(lr) = run.charts.lr.last() {
        chart = chart.bottom(Line::styled(
            format!(" lr {lr:.1e} "),
            Style::new().fg(app.theme.series.lr),
        ));
    }
    chart
}

/// The run's CPU and memory over time, and the host's.
fn draw_resources(app: &App, run: &RunModel, area: Rect, buf: &mut Buffer) {
    let theme = &app.theme;
    let block = panel(theme, "resources");
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 || inner.width < 10 {
        return;
    }
    let label_width = 16.min(inner.width / 2);
    let spark_rows = inner.height.saturating_sub(1) / 2;
    let rows = Layout::vertical([
        Constraint::Length(spark_rows.max(1)),
        Constraint::Length(spark_rows.max(1)),
        Constraint::Fill(1),
    ])
    .split(inner);
    let mut draw_series = |row: Rect, label: String, values: Vec<f64>, color, max: Option<f64>| {
        let [text, spark] = Layout::horizontal([Constraint::Length(label_width), Constraint::Fill(1)]).areas(row);
        Paragraph::new(label)
            .style(Style::new().fg(theme.ui.text))
            .wrap(Wrap { trim: true })
            .render(text, buf);
        let width = usize::from(spark.width);
        let values = &values[values.len().saturating_sub(width)..];
        // CPU against the machine's cores; memory over its own range, so growth shows.
        let (data, top) = match max {
            Some(max) => (
                values.iter().map(|v| v.max(0.0).round() as u64).collect(),
                max.max(1.0) as u64,
            ),
            None => (super::grid::scaled(values), 100),
        };
        Sparkline::default()
            .data(&data)
            .max(top)
            .style(Style::new().fg(color))
            .render(spark, buf);
    };
    let live = run.state().is_live();
    let cores = app.host.map_or(1, |h| h.cores) as f64;
    let cpu = match (run.charts.cpu.last(), live) {
        (Some(cpu), true) => format!("cpu {cpu:.0}%\nof {:.0}%", cores * 100.0),
        _ => "cpu –".to_string(),
    };
    let rss = match (run.charts.rss.last(), live, run.peak_rss_mb) {
        (Some(rss), true, peak) => format!("rss {rss:.0} MB\npeak {:.0} MB", peak.unwrap_or(rss)),
        (_, _, Some(peak)) => format!("peak rss\n{peak:.0} MB"),
        _ => "rss –".to_string(),
    };
    draw_series(
        rows[0],
        cpu,
        run.charts.cpu.tail(512),
        theme.series.cpu,
        Some(cores * 100.0),
    );
    draw_series(rows[1], rss, run.charts.rss.tail(512), theme.series.ram, None);
    if let Some(host) = app.host {
        Line::styled(
            format!(
                "host cpu {:.0}% · ram {:.1}/{:.0}G · load {:.1} {:.1} {:.1}",
                host.cpu_percent,
                host.used_memory_mb / 1000.0,
                host.total_memory_mb / 1000.0,
                host.load[0],
                host.load[1],
                host.load[2]
            ),
            Style::new().fg(theme.ui.dim),
        )
        .render(rows[2], buf);
    }
}

/// The end of `train.log`, under the last error and any warnings about the event file.
fn draw_log(app: &App, run: &RunModel, area: Rect, buf: &mut Buffer) {
    let theme = &app.theme;
    let block = panel(theme, crate::run::RunDir::LOG);
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines = Vec::new();
    if let Some(error) = &run.error() {
        lines.push(Line::styled(format!("✗ {error}"), Style::new().fg(theme.ui.error)));
    }
    for warning in &run.observed.warnings {
        lines.push(Line::styled(format!("⚠ {warning}"), Style::new().fg(theme.ui.warn)));
    }
    let room = usize::from(inner.height).saturating_sub(lines.len());
    let log = &run.observed.log_tail[run.observed.log_tail.len().saturating_sub(room)..];
    lines.extend(
        log.iter()
            .map(|l| Line::styled(l.as_str(), Style::new().fg(theme.ui.text))),
    );
    Paragraph::new(lines).render(inner, buf);
}

/// The preview case's latest prediction against its ground truth, or why there is none.
fn draw_preview(app: &App, run: &RunModel, area: Rect, buf: &mut Buffer) {
    let theme = &app.theme;
    let view = &app.preview.view;
    let Some(preview) = app.preview.shown.as_ref().filter(|p| p.run == run.id) else {
        let text = match (&app.preview.status, run.previews) {
            (_, 0) => "no preview yet: the trainer writes one at each validation".to_string(),
            (Some(status), _) => status.clone(),
            (None, _) => "loading the preview…".to_string(),
        };
        Paragraph::new(text)
            .style(Style::new().fg(theme.ui.dim))
            .wrap(Wrap { trim: true })
            .block(panel(theme, "preview"))
            .render(area, buf);
        return;
    };
    let index = preview.slice_index(view);
    let sides = if view.side_by_side && preview.truth.is_some() {
        "truth | prediction"
    } else {
        "prediction"
    };
    let title = format!(
        "{} {} {}/{} · epoch {} · {sides}",
        preview.modality.name(),
        view.axis.name(),
        index + 1,
        preview.slices(view.axis),
        preview.epoch
    );
    let mut block = panel(theme, &title);
    let (truth, predicted) = preview.slice_pair(view);
    if let Some(truth) = truth {
        let d = crate::metrics::region_dice(&predicted.labels, &truth.labels);
        let mut scores = format!(" slice {:.2}/{:.2}/{:.2}", d.et, d.tc, d.wt);
        if let Some(v) = preview.dice {
            scores.push_str(&format!(" · case {:.2}/{:.2}/{:.2}", v.et, v.tc, v.wt));
        }
        block = block.title_bottom(Line::styled(
            format!("{scores} ET/TC/WT "),
            Style::new().fg(theme.ui.dim),
        ));
    }
    let inner = block.inner(area);
    block.render(area, buf);
    preview.draw(view, &theme.labels.palette(), &app.graphics, inner, buf);
}

/// The latest validation's HD95 and the latest end-of-run evaluation, when there are any:
/// per region its lesion-wise (LW) and legacy Dice, raw → post-processed when the run
/// learned post-processing, and what the post-processing does.
fn score_lines(app: &App, run: &RunModel, width: u16) -> Vec<Line<'static>> {
    let theme = &app.theme;
    let width = usize::from(width);
    let mut lines = Vec::new();
    if let Some(hd95) = run.hd95 {
        lines.push(Line::raw(format!(
            "HD95 mm  ET {:.1}  TC {:.1}  WT {:.1}",
            hd95.et, hd95.tc, hd95.wt
        )));
    }
    if let Some(evaluation) = &run.evaluation {
        let mut title = format!("{}, best @{}", evaluation.challenge, evaluation.epoch);
        if evaluation.tta {
            title.push_str(" · TTA");
        }
        let arrows = " · raw → post-processed";
        if evaluation.postprocessed.is_some() && title.chars().count() + arrows.chars().count() <= width {
            title.push_str(arrows);
        }
        lines.push(Line::styled(fit(&title, width), Style::new().fg(theme.ui.accent)));
        for raw in &evaluation.mean {
            let after = evaluation
                .postprocessed
                .as_ref()
                .and_then(|regions| regions.iter().find(|r| r.region == raw.region));
            let text = match after {
                Some(after) => format!(
                    "{:<3} LW {} → {}  legacy {} → {}",
                    raw.region,
                    score(raw.lesion_dice),
                    score(after.lesion_dice),
                    score(raw.legacy_dice),
                    score(after.legacy_dice)
                ),
                None => format!(
                    "{:<3} LW {}  HD95 {:.1}  legacy {}",
                    raw.region,
                    score(raw.lesion_dice),
                    raw.lesion_hd95,
                    score(raw.legacy_dice)
                ),
            };
            lines.push(Line::raw(fit(&text, width)));
        }
        if let Some(postprocess) = &evaluation.postprocess {
            lines.push(Line::styled(
                fit(&format!("post-processing: {postprocess}"), width),
                Style::new().fg(theme.ui.dim),
            ));
        }
    }
    if lines.is_empty() {
        lines.push(Line::styled("no validation scores yet", Style::new().fg(theme.ui.dim)));
    }
    lines
}

/// A score as papers' tables print it: `.865`.
fn score(value: f64) -> String {
    let text = format!("{value:.3}");
    text.strip_prefix('0').map_or(text.clone(), str::to_string)
}

/// `text` cut to `width` characters, with `…` where it was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        cut.push('…');
    }
    cut
}

fn draw_scores(app: &App, lines: Vec<Line<'_>>, area: Rect, buf: &mut Buffer) {
    Paragraph::new(lines)
        .style(Style::new().fg(app.theme.ui.text))
        .block(panel(&app.theme, "scores"))
        .render(area, buf);
}
