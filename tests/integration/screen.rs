//! Whole-screen tests of the dashboard at 80x24 and 160x48, and its state driven by keys,
//! fed from recorded event files.
//!
//! `tests/data/runs/` holds the event records of four tiny synthetic runs, with host and
//! paths anonymised: one completed, one stopped, one that failed on an empty dataset, and
//! one cut mid-run (with a garbage line and a half-written last line) standing for a live run.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use segtop::dashboard::app::{App, Effect, Msg, Screen};
use segtop::dashboard::catalog::{ExperimentEntry, ExperimentStatus};
use segtop::dashboard::view;
use segtop::experiment::Experiment;
use segtop::run::events::EventTail;
use segtop::run::process::Halt;
use segtop::runs::model::{Liveness, ProcessSample, QueuePlace, RunState};
use segtop::runs::watch::{HostSample, RunFound, RunUpdate, Watch, log_tail};
use segtop::theme::Theme;
use segtop::workspace::Workspace;

use super::repo;

const LIVE: &str = "20261126-204703-lite-lr1e-2";
const QUEUED: &str = "20261126-204600-seed-tutorial";
const FAILED: &str = "20261126-204742-bad-data";

/// What the recorded runs' frozen experiments say about the keys they differ in.
fn recorded_config(id: &str) -> segtop::runs::config::Config {
    let (lr, filters) = match id {
        "20261126-204703-lite-lr1e-2" => ("0.01", "8"),
        "20261126-204747-wide-filters" => ("0.003", "16"),
        _ => ("0.003", "8"),
    };
    [
        ("train.lr", lr),
        ("model.base_filters", filters),
        ("train.epochs", "12"),
        ("run.name", &id[16..]),
    ]
    .into_iter()
    .collect()
}

fn entry(name: &str, text: &str) -> ExperimentEntry {
    let path = PathBuf::from(format!("/ws/experiments/{name}.toml"));
    let status = match Experiment::parse(Path::new(&format!("experiments/{name}.toml")), text, Path::new("/ws")) {
        Ok(e) => ExperimentStatus::Ready(Box::new(e)),
        Err(error) => ExperimentStatus::Invalid(error.to_string().lines().map(str::to_string).collect()),
    };
    ExperimentEntry {
        path,
        name: name.to_string(),
        status,
        sweep: None,
    }
}

fn render(app: &App) -> String {
    render_at(app, 80, 24)
}

fn render_at(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| {
            view::draw(app, frame);
        })
        .expect("draws");
    terminal.backend().to_string()
}

/// Draws a frame at the app's size as the loop does: the app learns where things went.
fn draw(app: &mut App) -> String {
    let (width, height) = app.size;
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    let mut hits = Default::default();
    terminal.draw(|frame| hits = view::draw(app, frame)).expect("draws");
    app.drawn(hits);
    terminal.backend().to_string()
}

fn key(app: &mut App, code: KeyCode) {
    app.update(Msg::Terminal(TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))));
}

fn keys(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// In the editor form: finds the key containing `search`, and types `value` over its value.
fn retype(app: &mut App, search: &str, value: &str) {
    keys(app, &format!("/{search}"));
    key(app, KeyCode::Enter);
    key(app, KeyCode::Enter);
    app.update(Msg::Terminal(TermEvent::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    ))));
    keys(app, value);
    key(app, KeyCode::Enter);
}

fn host() -> HostSample {
    HostSample {
        cpu_percent: 97.0,
        used_memory_mb: 3100.0,
        total_memory_mb: 24_000.0,
        load: [2.1, 1.9, 1.5],
        cores: 2,
    }
}

/// A dashboard that has read the recorded runs, as the watcher would send them, and then
/// sampled the live run's process for 30 seconds.
fn dashboard_with_recorded_runs(width: u16, height: u16) -> App {
    let recorded = repo().join("tests/data/runs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&recorded)
        .expect("recorded runs")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let mut latest = DateTime::<Utc>::UNIX_EPOCH;
    let mut runs = Vec::new();
    for dir in dirs {
        let id = dir.file_name().expect("name").to_string_lossy().into_owned();
        let (events, warnings) = EventTail::new(dir.join("events.jsonl")).poll().expect("reads");
        let first = events.first().map(|e| e.time());
        latest = latest.max(events.last().map_or(latest, |e| e.time()));
        let shown = recorded.display().to_string();
        runs.push(RunUpdate {
            halving: None,
            fold: None,
            dir: PathBuf::from("/ws/runs").join(&id),
            found: Some(RunFound {
                name: id[16..].to_string(),
                created: first,
                experiment: None,
                pid: None,
                pid_start: None,
                sweep: None,
                config: recorded_config(&id),
            }),
            events,
            warnings: warnings.iter().map(|w| w.replace(&shown, "/ws/runs")).collect(),
            log_tail: Some(log_tail(&dir.join("train.log"))),
            sample: None,
            exit: None,
            launch: None,
            job: None,
            id,
        });
    }
    // A run waiting in the queue: a directory with its frozen experiment and nothing else yet.
    runs.push(RunUpdate {
        id: QUEUED.to_string(),
        dir: PathBuf::from("/ws/runs").join(QUEUED),
        found: Some(RunFound {
            name: "seed-tutorial".to_string(),
            created: Some(latest),
            experiment: None,
            pid: None,
            pid_start: None,
            sweep: None,
            config: Default::default(),
        }),
        ..RunUpdate::default()
    });
    let queue = [(
        QUEUED.to_string(),
        QueuePlace {
            position: 1,
            paused: false,
            waiting: Some("needs 2.1 GB, 1.4 GB free (reserve 1.0 GB)".to_string()),
        },
    )];
    let mut app = App::new(Workspace::new("/ws"), Theme::default());
    app.update(Msg::Terminal(TermEvent::Resize(width, height)));
    app.update(Msg::Experiments(vec![
        entry("lite", "[data]\nroot = \"data/brats\"\n[model]\nbase_filters = 8\n"),
        entry("seed-tutorial", "[data]\nroot = \"data/brats\"\n"),
    ]));
    app.update(Msg::Watch(Box::new(Watch {
        time: latest,
        runs,
        removed: vec![],
        host: Some(host()),
        queue: Some(queue.into_iter().collect()),
        machine: None,
    })));
    for second in 1..=30 {
        let time = latest + Duration::seconds(second);
        app.update(Msg::Watch(Box::new(Watch {
            time,
            runs: vec![RunUpdate {
                id: LIVE.to_string(),
                dir: PathBuf::from("/ws/runs").join(LIVE),
                sample: Some(ProcessSample {
                    time,
                    liveness: Liveness::Alive,
                    cpu_percent: 150.0 + ((second * 7) % 40) as f64,
                    rss_mb: 600.0 + 5.0 * second as f64,
                }),
                ..RunUpdate::default()
            }],
            removed: vec![],
            host: Some(host()),
            queue: None,
            machine: None,
        })));
    }
    app
}

/// Frames drawn while the watcher sends `looks` looks a second apart, each made by `look`.
fn frames_over(app: &mut App, looks: i64, look: impl Fn(DateTime<Utc>) -> Watch) -> usize {
    let start = app.now;
    let mut frames = 0;
    for second in 1..=looks {
        app.update(Msg::Watch(Box::new(look(start + Duration::seconds(second)))));
        if app.needs_redraw() {
            draw(app);
            frames += 1;
        }
    }
    frames
}

#[test]
fn the_dashboard_draws_only_on_change_not_on_every_look() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    draw(&mut app);
    let sample = |time, liveness| RunUpdate {
        id: LIVE.to_string(),
        dir: PathBuf::from("/ws/runs").join(LIVE),
        sample: Some(ProcessSample {
            time,
            liveness,
            cpu_percent: 150.0,
            rss_mb: 700.0,
        }),
        ..RunUpdate::default()
    };
    // A live run: its clock ticks and its samples arrive every second.
    let live = frames_over(&mut app, 10, |time| Watch {
        time,
        runs: vec![sample(time, Liveness::Alive)],
        host: Some(host()),
        ..Watch::default()
    });
    assert_eq!(live, 10);
    // Its process goes; then nothing is live and the looks bring no news.
    app.update(Msg::Watch(Box::new(Watch {
        time: app.now + Duration::seconds(1),
        runs: vec![sample(app.now + Duration::seconds(1), Liveness::Gone)],
        host: Some(host()),
        ..Watch::default()
    })));
    assert!(!app.runs.values().any(|r| r.state().is_live()));
    draw(&mut app);
    let idle = frames_over(&mut app, 30, |time| Watch {
        time,
        host: Some(host()),
        ..Watch::default()
    });
    assert_eq!(idle, 0, "an idle dashboard redraws nothing");
    // A change the header shows draws once; one too small to show draws nothing.
    let busier = HostSample {
        cpu_percent: 12.0,
        ..host()
    };
    let changed = frames_over(&mut app, 5, |time| Watch {
        time,
        host: Some(busier),
        ..Watch::default()
    });
    assert_eq!(changed, 1);
    let unseen = frames_over(&mut app, 5, |time| Watch {
        time,
        host: Some(HostSample {
            cpu_percent: 12.2,
            ..busier
        }),
        ..Watch::default()
    });
    assert_eq!(unseen, 0);
}

/// The recorded runs on every screen at both sizes.
#[test]
fn screens_of_recorded_runs() {
    for (width, height) in [(80, 24), (160, 48)] {
        let mut app = dashboard_with_recorded_runs(width, height);
        key(&mut app, KeyCode::Char('2'));
        insta::assert_snapshot!(format!("runs_{width}x{height}"), render_at(&app, width, height));
        // Newest first: wide-filters, bad-data, lite-lr1e-2 (live), unet-base8.
        keys(&mut app, "jj");
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.run.open.as_deref(), Some(LIVE));
        insta::assert_snapshot!(format!("live_run_{width}x{height}"), render_at(&app, width, height));
        key(&mut app, KeyCode::Char('3'));
        insta::assert_snapshot!(format!("grid_{width}x{height}"), render_at(&app, width, height));
    }
}

#[test]
fn a_failed_run_shows_its_error_and_a_small_terminal_gets_tabs() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    key(&mut app, KeyCode::Char('2'));
    // Newest first: wide-filters, bad-data, ...
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.run.open.as_deref(), Some(FAILED));
    let screen = render(&app);
    assert!(screen.contains("failed"), "{screen}");
    assert!(
        screen.contains("✗ /srv/segtop/nodata: no BraTS cases found"),
        "{screen}"
    );

    let mut app = dashboard_with_recorded_runs(60, 20);
    key(&mut app, KeyCode::Char('2'));
    keys(&mut app, "jj");
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("live_run_60x20_tabs", render_at(&app, 60, 20));
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    let screen = render_at(&app, 60, 20);
    assert!(screen.contains("cpu 18") || screen.contains("cpu 1"), "{screen}");
    assert!(screen.contains("resources"), "{screen}");
    // The slice preview is a tab too (the last one: Left wraps round to it).
    assert!(!screen.contains("┌ preview"), "{screen}");
    for _ in 0..3 {
        key(&mut app, KeyCode::Left);
    }
    key(&mut app, KeyCode::Left);
    let screen = render_at(&app, 60, 20);
    assert!(screen.contains("┌ preview"), "{screen}");
}

#[test]
fn the_help_lists_every_key() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    key(&mut app, KeyCode::Char('?'));
    let screen = render(&app);
    for (keys, _) in view::HELP {
        assert!(screen.contains(keys), "{keys} missing:\n{screen}");
    }
    insta::assert_snapshot!("help_80x24", screen);
    // Larger terminals: the same keys, whole.
    let large = render_at(&app, 120, 40);
    for (keys, what) in view::HELP {
        assert!(
            large.contains(keys) && large.contains(what),
            "{keys} {what} missing:\n{large}"
        );
    }
    insta::assert_snapshot!("help_120x40", large);
}

#[test]
fn garbage_in_an_event_file_is_a_visible_warning_and_the_rest_is_read() {
    let app = dashboard_with_recorded_runs(80, 24);
    let live = &app.runs[LIVE];
    assert_eq!(live.state(), RunState::Running);
    assert_eq!(live.epoch, 8, "records after the garbage line are read");
    assert_eq!(live.observed.warnings.len(), 1, "{:?}", live.observed.warnings);
    assert!(
        live.observed.warnings[0].contains("events.jsonl:90: not an event record"),
        "{:?}",
        live.observed.warnings
    );
}

#[test]
fn keys_launch_stop_kill_filter_and_sort() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    // Enter on a ready experiment asks for a launch.
    key(&mut app, KeyCode::Char('1'));
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_effects(),
        [Effect::Launch(PathBuf::from("/ws/experiments/lite.toml"))]
    );
    // The live run gets a pid once it is known; stopping and killing it both ask first, so
    // a stray key does not interrupt a long run.
    key(&mut app, KeyCode::Char('2'));
    keys(&mut app, "jj");
    assert_eq!(app.list.selected.as_deref(), Some(LIVE));
    key(&mut app, KeyCode::Char('x'));
    assert!(app.take_effects().is_empty(), "stop waits for a confirmation");
    assert!(render(&app).contains("r resumes it later"));
    key(&mut app, KeyCode::Char('x'));
    assert!(
        app.take_effects().is_empty() && app.confirm.is_none(),
        "any other key keeps it"
    );
    key(&mut app, KeyCode::Char('x'));
    key(&mut app, KeyCode::Char('y'));
    let pid = app.runs[LIVE].pid.expect("pid from run_started");
    let dir = app.runs[LIVE].dir.clone();
    let stop = Effect::Halt {
        id: LIVE.into(),
        dir: dir.clone(),
        pid: Some(pid),
        pid_start: None,
        halt: Halt::Stop,
    };
    assert_eq!(app.take_effects(), [stop]);
    key(&mut app, KeyCode::Char('K'));
    assert!(app.take_effects().is_empty(), "kill waits for a confirmation");
    assert!(render(&app).contains("Work since its last checkpoint is lost."));
    key(&mut app, KeyCode::Char('n'));
    assert!(app.take_effects().is_empty() && app.confirm.is_none());
    key(&mut app, KeyCode::Char('K'));
    key(&mut app, KeyCode::Char('y'));
    let kill = Effect::Halt {
        id: LIVE.into(),
        dir,
        pid: Some(pid),
        pid_start: None,
        halt: Halt::Kill,
    };
    assert_eq!(app.take_effects(), [kill]);
    // A failed run resumes from its checkpoint; a live one does not.
    key(&mut app, KeyCode::Char('r'));
    assert!(app.take_effects().is_empty(), "the live run is still going");
    key(&mut app, KeyCode::Char('k'));
    assert_eq!(app.list.selected.as_deref(), Some(FAILED));
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(
        app.take_effects(),
        [Effect::Resume {
            id: FAILED.into(),
            dir: PathBuf::from("/ws/runs").join(FAILED)
        }]
    );
    // A finished run cannot be stopped.
    key(&mut app, KeyCode::Char('g'));
    key(&mut app, KeyCode::Char('x'));
    assert!(app.take_effects().is_empty());
    assert!(
        app.notice.text().is_some_and(|n| n.contains("nothing to stop")),
        "{:?}",
        app.notice.text()
    );
    // Filtering narrows the list; Esc clears it.
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "wide");
    key(&mut app, KeyCode::Enter);
    let ids: Vec<&str> = app.visible_runs().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["20261126-204747-wide-filters"]);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.visible_runs().len(), 5);
    // Sorting by best Dice puts the best mean first and runs without validations last.
    keys(&mut app, "sss");
    let means: Vec<f64> = app
        .visible_runs()
        .iter()
        .map(|r| r.best.map_or(-1.0, |(_, d)| d.mean()))
        .collect();
    assert!(means.windows(2).all(|w| w[0] >= w[1]), "{means:?}");
    assert_eq!(app.visible_runs().last().map(|r| r.id.as_str()), Some(FAILED));
    // Views switch with their keys and Esc goes back.
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Run);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Runs);
}

#[test]
fn experiment_list_with_a_valid_and_a_broken_file() {
    let mut app = App::new(Workspace::new("/ws"), Theme::default());
    app.update(Msg::Experiments(vec![
        entry("broken", "[data]\nroot = \"d\"\n[train]\noptimizer = 'adma'\n"),
        entry("lite", "[data]\nroot = \"data/brats\"\n[model]\nbase_filters = 8\n"),
    ]));
    insta::assert_snapshot!("broken_selected", render(&app));
    app.update(Msg::Terminal(crossterm::event::Event::Key(
        crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Down),
    )));
    insta::assert_snapshot!("lite_selected", render(&app));
}

#[test]
fn empty_workspace_says_where_it_looked() {
    let mut app = App::new(Workspace::new("/ws"), Theme::monochrome());
    app.update(Msg::Experiments(vec![]));
    let screen = render(&app);
    assert!(screen.contains("no *.toml files in"), "{screen}");
    assert!(screen.contains("/ws/experiments"), "{screen}");
}

#[test]
fn every_screen_survives_tiny_terminals() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    for screen in ["1", "2", "2jj\r", "2jj\rv", "3", "2 j 4", "?"] {
        for c in screen.chars() {
            key(&mut app, if c == '\r' { KeyCode::Enter } else { KeyCode::Char(c) });
        }
        for (width, height) in [(1, 1), (10, 3), (20, 5), (40, 10), (79, 23)] {
            app.update(Msg::Terminal(TermEvent::Resize(width, height)));
            let text = render_at(&app, width, height);
            assert_eq!(
                text.lines().count(),
                usize::from(height),
                "{screen} at {width}x{height}"
            );
        }
        key(&mut app, KeyCode::Esc);
    }
}

#[test]
fn only_the_runs_on_screen_keep_their_charts_and_the_others_are_read_again_when_shown() {
    const DONE: &str = "20261126-204650-unet-base8";
    let mut app = dashboard_with_recorded_runs(80, 24);
    // As if read from their summaries: finished runs come without charts.
    for run in app.runs.values_mut().filter(|r| r.finished.is_some()) {
        run.drop_charts();
    }
    key(&mut app, KeyCode::Char('2'));
    draw(&mut app);
    assert!(app.take_effects().is_empty(), "the run list draws no charts");
    // Opening a finished run asks once for its charts.
    app.list.selected = Some(DONE.to_string());
    key(&mut app, KeyCode::Enter);
    draw(&mut app);
    let asked = |effects: Vec<Effect>| {
        effects
            .into_iter()
            .filter(|e| matches!(e, Effect::LoadCharts(_)))
            .collect::<Vec<_>>()
    };
    assert_eq!(asked(app.take_effects()), [Effect::LoadCharts(vec![DONE.to_string()])]);
    draw(&mut app);
    assert!(asked(app.take_effects()).is_empty(), "asked once");
    // The watcher reads the run again; its charts arrive.
    let dir = repo().join("tests/data/runs").join(DONE);
    let folded = segtop::runs::summary::fold(DONE, &dir, &Default::default(), true);
    assert!(folded.model.charts.complete);
    app.update(Msg::Watch(Box::new(Watch {
        time: app.now,
        runs: vec![RunUpdate {
            id: DONE.to_string(),
            dir: PathBuf::from("/ws/runs").join(DONE),
            fold: Some(Box::new(folded.model)),
            ..RunUpdate::default()
        }],
        ..Watch::default()
    })));
    let run = &app.runs[DONE];
    assert!(run.charts.complete && !run.charts.loss.is_empty(), "charts on screen");
    assert!(render(&app).contains("loss"), "{}", render(&app));
    // Back to the list and through other runs: the run stays among the last few charted...
    key(&mut app, KeyCode::Esc);
    draw(&mut app);
    assert!(app.runs[DONE].charts.complete);
    // ... until 8 other runs have been charted since.
    for i in 0..8 {
        let id = format!("20261201-00000{i}-other");
        app.runs.insert(
            id.clone(),
            segtop::runs::model::RunModel::new(id.clone(), PathBuf::from("/ws/runs").join(&id)),
        );
        app.run.open = Some(id);
        app.screen = Screen::Run;
        draw(&mut app);
    }
    assert!(
        !app.runs[DONE].charts.complete && app.runs[DONE].charts.loss.is_empty(),
        "let go off screen"
    );
    // A live run keeps its charts whatever is on screen.
    assert!(app.runs[LIVE].charts.complete && !app.runs[LIVE].charts.loss.is_empty());
}

#[test]
fn the_mouse_selects_and_opens_runs_and_the_wheel_scrolls() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut app = dashboard_with_recorded_runs(80, 24);
    key(&mut app, KeyCode::Char('2'));
    let mouse = |kind, row| {
        Msg::Terminal(TermEvent::Mouse(MouseEvent {
            kind,
            column: 10,
            row,
            modifiers: KeyModifiers::NONE,
        }))
    };
    // Rows: title, border, header, then wide-filters, bad-data, lite (row 5).
    draw(&mut app);
    app.update(mouse(MouseEventKind::Down(MouseButton::Left), 5));
    assert_eq!(app.list.selected.as_deref(), Some(LIVE));
    app.update(mouse(MouseEventKind::ScrollDown, 5));
    assert_eq!(app.list.selected.as_deref(), Some("20261126-204650-unet-base8"));
    app.update(mouse(MouseEventKind::ScrollUp, 5));
    // A click on the selected run opens it; one on the border hits nothing.
    draw(&mut app);
    app.update(mouse(MouseEventKind::Down(MouseButton::Left), 1));
    assert_eq!(app.screen, Screen::Runs);
    app.update(mouse(MouseEventKind::Down(MouseButton::Left), 5));
    assert_eq!((app.screen, app.run.open.as_deref()), (Screen::Run, Some(LIVE)));
    // A list scrolled to its end: a click selects the run drawn on that row.
    key(&mut app, KeyCode::Esc);
    app.update(Msg::Terminal(TermEvent::Resize(80, 9)));
    key(&mut app, KeyCode::Char('G'));
    let screen = draw(&mut app);
    let row = screen.lines().nth(3).expect("row 3").to_string();
    app.update(mouse(MouseEventKind::Down(MouseButton::Left), 3));
    let selected = app.list.selected.clone().expect("a run is selected");
    let name = &app.runs[&selected].name;
    assert!(row.contains(name.as_str()), "clicked {row:?}, selected {selected}");
    assert_ne!(app.visible_runs()[0].id, selected, "the list was scrolled");
}

#[test]
fn the_compare_view_overlays_marked_runs_and_shows_the_keys_they_differ_in() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    key(&mut app, KeyCode::Char('2'));
    // Newest first: wide-filters, bad-data, lite-lr1e-2, unet-base8; mark all but bad-data.
    key(&mut app, KeyCode::Char(' '));
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Char(' '));
    key(&mut app, KeyCode::Char(' '));
    assert_eq!(app.list.marked.len(), 3, "{:?}", app.list.marked);
    key(&mut app, KeyCode::Char('4'));
    let screen = render(&app);
    assert!(screen.contains("4:compare (3)"), "{screen}");
    assert!(screen.contains("3 runs · 2 keys differ"), "{screen}");
    assert!(screen.contains("base_filters") && screen.contains("lr"), "{screen}");
    assert!(
        !screen.contains("epochs  "),
        "a key all runs share is not a column:\n{screen}"
    );
    insta::assert_snapshot!("compare_80x24", screen);
    // Sorting by the best WT Dice puts the best first.
    for _ in 0..6 {
        key(&mut app, KeyCode::Char('s'));
    }
    let sorted = render(&app);
    assert!(sorted.contains("sorted by WT"), "{sorted}");
    let rows: Vec<&str> = sorted
        .lines()
        .filter(|l| l.contains("│") && l.contains(" 1126-20"))
        .collect();
    assert!(rows.len() >= 3, "{sorted}");
    assert!(rows[0].contains("wide-filters"), "WT .90 first:\n{sorted}");
}

#[test]
fn the_editor_clones_an_experiment_and_shows_what_the_check_finds_in_the_form() {
    use segtop::dashboard::editor::Editor;
    let mut app = dashboard_with_recorded_runs(80, 24);
    // c asks for a clone of the selected experiment, or of a run's frozen copy; e on a run
    // explains that a frozen copy is not edited.
    key(&mut app, KeyCode::Char('1'));
    app.update(Msg::Experiments(vec![entry(
        "quick-demo",
        "[data]\nroot = \"data/demo\"\n",
    )]));
    key(&mut app, KeyCode::Char('c'));
    let effects = app.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Clone { source, base, .. }]
            if source == Path::new("/ws/experiments/quick-demo.toml") && base == "quick-demo"),
        "{effects:?}"
    );
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('c'));
    let effects = app.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::Clone { source, from, .. }]
            if source.ends_with("experiment.toml") && from.starts_with("run ")),
        "{effects:?}"
    );
    key(&mut app, KeyCode::Char('e'));
    assert!(
        app.notice.text().is_some_and(|n| n.contains("frozen")),
        "{:?}",
        app.notice.text()
    );

    let text = std::fs::read_to_string(repo().join("experiments/quick-demo.toml")).expect("shipped experiment");
    let editor = Editor::new(
        "experiments/quick-demo.toml".to_string(),
        &text,
        "quick-demo",
        vec!["quick-demo".to_string()],
        Path::new("/ws"),
    )
    .expect("the shipped experiment is TOML");
    app.update(Msg::Editor(Ok(Box::new(editor))));
    // Base filters 12, then find train.lr, type a negative rate and keep it.
    keys(&mut app, "/filters");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Backspace);
    keys(&mut app, "12");
    key(&mut app, KeyCode::Enter);
    retype(&mut app, "lr", "-1");
    keys(&mut app, "s");
    assert!(app.take_effects().is_empty(), "a form with a problem is not saved");
    let screen = render(&app);
    assert!(
        screen.contains("✗ train.lr = -1 is out of range: must be above 0"),
        "{screen}"
    );
    assert!(screen.contains("not saved: 1 problem(s)"), "{screen}");
    assert!(screen.contains("✗train.lr") && screen.contains("2 changed"), "{screen}");
    insta::assert_snapshot!("editor_80x24", screen);
    // Fixed, it saves into experiments/, the source's comments kept.
    retype(&mut app, "lr", "0.002");
    keys(&mut app, "s");
    let effects = app.take_effects();
    let [
        Effect::SaveExperiment {
            path,
            text,
            overwrite: false,
        },
    ] = effects.as_slice()
    else {
        panic!("s saves a valid form: {effects:?}");
    };
    assert_eq!(path, Path::new("/ws/experiments/quick-demo-2.toml"));
    assert!(
        text.starts_with("# A small U-Net") && text.contains("lr = 0.002\n") && text.contains("base_filters = 12\n")
    );
}

#[test]
fn the_compare_view_shows_two_runs_predictions_on_one_slice_beside_the_truth() {
    use segtop::data::volume::Volume;
    use segtop::experiment::Modality;
    use segtop::runs::preview::PreviewData;
    let mut app = dashboard_with_recorded_runs(80, 24);
    app.preview.view.mode = segtop::render::ColorMode::TrueColor;
    key(&mut app, KeyCode::Char('2'));
    // Mark wide-filters and bad-data; say each has written a preview.
    keys(&mut app, "  ");
    let marked: Vec<String> = app.list.marked.iter().cloned().collect();
    for id in &marked {
        app.runs.get_mut(id).expect("marked run").previews = 2;
    }
    // The run view on the first asked for its preview already: the compare view's answer
    // must still reach the compare view.
    app.run.open = Some(marked[0].clone());
    app.screen = Screen::Run;
    app.update(Msg::Notice(None));
    assert!(matches!(app.take_effects().as_slice(), [Effect::LoadPreview { .. }]));
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('v'));
    let asked: Vec<String> = app
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::LoadPreview { run, epoch: None, .. } => Some(run),
            _ => None,
        })
        .collect();
    assert_eq!(asked, marked, "both runs' latest previews are asked for");
    // A 12x12x3 case: a 6x6 tumour on slice 1 only; run 1 gets it all, run 2 its left half.
    fn volume<T>(data: Vec<T>) -> Volume<T> {
        Volume {
            shape: [12, 12, 3],
            spacing: [1.0; 3],
            affine: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            data,
        }
    }
    let index = |x: usize, y: usize, z: usize| x + 12 * (y + 12 * z);
    let mut truth = vec![0u8; 432];
    let mut half = vec![0u8; 432];
    for x in 3..9 {
        for y in 3..9 {
            truth[index(x, y, 1)] = 2;
            if x < 6 {
                half[index(x, y, 1)] = 2;
            }
        }
    }
    let image: Vec<f32> = (0..432).map(|i| (i % 12) as f32).collect();
    for (run, prediction, epoch) in [(&marked[0], truth.clone(), 4), (&marked[1], half, 6)] {
        let data = PreviewData::new(
            run.clone(),
            epoch,
            "case-1".into(),
            Modality::T2f,
            volume(image.clone()),
            Some(volume(truth.clone())),
            volume(prediction),
        );
        app.update(Msg::Preview {
            run: run.clone(),
            previews: 2,
            modality: Modality::T2f,
            epoch: None,
            result: Ok(Some(Box::new(data))),
        });
    }
    let screen = render(&app);
    assert!(
        screen.contains("t2f axial 2/3 · truth | 1⣿ epoch 4 | 2• epoch 6"),
        "{screen}"
    );
    assert!(screen.contains("slice WT 1⣿ 1.00 2• 0.67"), "{screen}");
    // The slice keys move both: slice 3 has no tumour, and no run predicted any there.
    key(&mut app, KeyCode::Char(']'));
    let screen = render(&app);
    assert!(screen.contains("t2f axial 3/3"), "{screen}");
    assert!(screen.contains("slice WT 1⣿ 1.00 2• 1.00"), "{screen}");
    key(&mut app, KeyCode::Char('v'));
    assert!(render(&app).contains("keys differ"), "v goes back to the table");
}

/// Long runs' progress is shown whole in the run list at 80 columns, however many epochs.
#[test]
fn the_run_list_shows_long_runs_epochs_whole() {
    let time = DateTime::parse_from_rfc3339("2026-11-26T20:46:50Z")
        .expect("time")
        .to_utc();
    let run = |id: &str, epoch: u32, epochs: u32| {
        let lines = [
            format!(
                r#"{{"event":"run_started","time":"{}","schema":1,"pid":1,"host":"node1","name":"long","experiment_hash":"0","epochs":{epochs},"steps_per_epoch":8,"parameters":1,"threads":2,"libtorch":"2.13.0+cpu"}}"#,
                time.to_rfc3339()
            ),
            format!(
                r#"{{"event":"epoch_end","time":"{}","epoch":{epoch},"loss":1.0,"loss_parts":{{}},"lr":0.003,"patches_per_s":20.0,"seconds":0.7}}"#,
                (time + Duration::seconds(60)).to_rfc3339()
            ),
        ];
        let events = lines
            .iter()
            .map(|line| segtop::run::events::Event::from_line(line).expect("a valid event"))
            .collect();
        RunUpdate {
            id: id.to_string(),
            dir: PathBuf::from("/ws/runs").join(id),
            found: Some(RunFound {
                name: "long".to_string(),
                created: Some(time),
                experiment: None,
                pid: None,
                pid_start: None,
                sweep: None,
                config: Default::default(),
            }),
            events,
            ..RunUpdate::default()
        }
    };
    let mut app = App::new(Workspace::new("/ws"), Theme::default());
    app.update(Msg::Terminal(TermEvent::Resize(80, 24)));
    app.update(Msg::Watch(Box::new(Watch {
        time: time + Duration::seconds(61),
        runs: vec![
            run("20261126-204650-long", 108, 3000),
            run("20261126-204651-longer", 1234, 20000),
        ],
        removed: vec![],
        host: Some(host()),
        queue: None,
        machine: None,
    })));
    key(&mut app, KeyCode::Char('2'));
    let screen = render_at(&app, 80, 24);
    for shown in ["108/3000", "1234/20000"] {
        assert!(
            screen.contains(&format!(" {shown} ")),
            "{shown} not whole in:\n{screen}"
        );
    }
}

/// The run view's scores panel shows the end-of-run evaluation raw and, once post-processing
/// was learned, raw → post-processed side by side; `d` switches the Dice chart to
/// lesion-wise Dice.
#[test]
fn the_run_view_shows_raw_and_post_processed_scores_and_d_shows_lesion_wise_dice() {
    use segtop::run::events::{BratsScores, Event, RegionScores};
    const COMPLETED: &str = "20261126-204650-unet-base8";
    let mut app = dashboard_with_recorded_runs(120, 36);
    key(&mut app, KeyCode::Char('2'));
    // Newest first: wide-filters, bad-data, lite-lr1e-2, unet-base8.
    keys(&mut app, "jjj");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.run.open.as_deref(), Some(COMPLETED));
    let screen = render_at(&app, 120, 36);
    // The evaluation's epoch and the Dice chart's best are one epoch, named alike.
    assert!(screen.contains("BraTS-SSA, best @6 "), "{screen}");
    assert!(screen.contains("best 0.00/0.00/0.86 @6 "), "{screen}");
    assert!(screen.contains("WT  LW .865  HD95 5.0  legacy .865"), "{screen}");
    assert!(
        !screen.contains("TTA") && !screen.contains("post-processing"),
        "{screen}"
    );

    // `segtop postprocess` learns post-processing and evaluates again; a validation that
    // reports lesion-wise Dice arrives too.
    let time = app.now;
    let brats = |region: &str, lesion_dice: f64, legacy_dice: f64| BratsScores {
        region: region.into(),
        lesion_dice,
        lesion_hd95: 10.0,
        lesion_nsd_10: 0.5,
        legacy_dice,
        legacy_hd95: 8.0,
        num_tp: 1,
        num_fp: 0,
        num_fn: 0,
    };
    let regions = |wt: (f64, f64)| vec![brats("WT", wt.0, wt.1), brats("TC", 0.5, 0.6), brats("ET", 0.3, 0.4)];
    let description = "WT: remove components under 500 voxels; ET under 200 voxels to necrosis; TC: keep the largest";
    let events = vec![
        Event::Evaluation {
            time,
            epoch: 6,
            challenge: "BraTS-SSA".into(),
            mean: regions((0.13, 0.77)),
            cases: vec![],
            tta: true,
            postprocess: Some(description.into()),
            postprocessed: Some(regions((0.78, 0.8))),
            postprocessed_cases: vec![],
            seconds: 2.0,
        },
        Event::Validation {
            time,
            epoch: 12,
            dice: RegionScores {
                et: 0.1,
                tc: 0.2,
                wt: 0.3,
            },
            hd95: None,
            seed_dice: 0.5,
            lesion_dice: Some(RegionScores {
                et: 0.41,
                tc: 0.52,
                wt: 0.63,
            }),
            cases: vec![],
            seconds: 1.0,
        },
    ];
    app.update(Msg::Watch(Box::new(Watch {
        time,
        runs: vec![RunUpdate {
            id: COMPLETED.to_string(),
            dir: PathBuf::from("/ws/runs").join(COMPLETED),
            events,
            ..RunUpdate::default()
        }],
        removed: vec![],
        host: Some(host()),
        queue: None,
        machine: None,
    })));
    for (width, height) in [(120, 36), (160, 48)] {
        app.update(Msg::Terminal(TermEvent::Resize(width, height)));
        let screen = render_at(&app, width, height);
        assert!(screen.contains("BraTS-SSA, best @6 · TTA"), "{screen}");
        assert!(screen.contains("WT  LW .130 → .780  legacy .770 → .800"), "{screen}");
        assert!(screen.contains("TC  LW .500 → .500  legacy .600 → .600"), "{screen}");
        assert!(screen.contains("ET  LW .300 → .300  legacy .400 → .400"), "{screen}");
        // The description is cut to the panel, not wrapped over the log.
        assert!(screen.contains("post-processing: WT: remove components"), "{screen}");
        assert!(!screen.contains(description), "{screen}");
        assert!(screen.contains('…'), "{screen}");
        // Where the panel is wide enough, the title says what the arrows mean.
        assert_eq!(screen.contains("raw → post-processed"), width == 160, "{screen}");
    }

    // `d`: the Dice chart shows lesion-wise Dice, and says so; again: legacy Dice.
    app.update(Msg::Terminal(TermEvent::Resize(80, 24)));
    assert!(render(&app).contains("┌ Dice ET .10 TC .20 WT .30 seed .50"));
    key(&mut app, KeyCode::Char('d'));
    assert!(app.run.lesion_wise_dice);
    let screen = render(&app);
    assert!(screen.contains("┌ LW Dice ET .41 TC .52 WT .63 "), "{screen}");
    assert!(
        !screen.contains("seed"),
        "no seed Dice beside lesion-wise Dice:\n{screen}"
    );
    key(&mut app, KeyCode::Char('d'));
    assert!(render(&app).contains("┌ Dice ET .10"));
}

/// A long message is cut at 80 columns with a pointer to where it reads whole; `N` shows the
/// latest messages whole, wrapped, and any key closes them.
#[test]
fn a_long_message_is_cut_with_a_pointer_and_n_shows_it_whole() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    let message = "experiments/x.toml is not TOML: TOML parse error at line 3, column 9: expected a value, \
                   found a newline (the line reads `lr =`)";
    app.update(Msg::Failed(message.to_string()));
    let screen = render(&app);
    let status = screen.lines().last().expect("a status line");
    assert!(status.contains("… N: whole"), "{status}");
    insta::assert_snapshot!("status_line_80", status);
    key(&mut app, KeyCode::Char('N'));
    let whole = render(&app);
    assert!(whole.contains("messages · any key closes"), "{whole}");
    // Wrapped over lines, all of it is there.
    let text: String = whole.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("(the line reads `lr =`)"), "{whole}");
    insta::assert_snapshot!("messages_80x24", clock_masked(&whole));
    key(&mut app, KeyCode::Char('x'));
    assert!(!app.show_messages && !app.should_quit());
    assert!(!render(&app).contains("messages · any key closes"));
}

/// The screen with every `hh:mm:ss` clock reading (local time) replaced, for snapshots.
fn clock_masked(screen: &str) -> String {
    let mut chars: Vec<char> = screen.chars().collect();
    let digit = |c: char| c.is_ascii_digit();
    for i in 0..chars.len().saturating_sub(7) {
        let w = &chars[i..i + 8];
        if digit(w[0])
            && digit(w[1])
            && w[2] == ':'
            && digit(w[3])
            && digit(w[4])
            && w[5] == ':'
            && digit(w[6])
            && digit(w[7])
        {
            chars.splice(i..i + 8, "hh:mm:ss".chars());
        }
    }
    chars.into_iter().collect()
}

/// The full-screen preview: Esc leaves it before the run, and another run opens in its panels.
#[test]
fn esc_leaves_the_full_screen_preview_first_and_runs_open_in_their_panels() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    key(&mut app, KeyCode::Char('2'));
    keys(&mut app, "jj");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Run);
    key(&mut app, KeyCode::Char('v'));
    assert!(app.preview.full);
    key(&mut app, KeyCode::Esc);
    assert!(
        !app.preview.full && app.screen == Screen::Run,
        "Esc left the full screen only"
    );
    key(&mut app, KeyCode::Char('v'));
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Enter);
    assert!(
        app.screen == Screen::Run && !app.preview.full,
        "a run opens in its panels"
    );
}

/// A key that closes the help also does what it means, instead of being swallowed.
#[test]
fn a_key_that_closes_the_help_also_acts() {
    let mut app = dashboard_with_recorded_runs(80, 24);
    key(&mut app, KeyCode::Char('?'));
    key(&mut app, KeyCode::Char('2'));
    assert!(!app.show_help);
    assert_eq!(app.screen, Screen::Runs);
    key(&mut app, KeyCode::Char('?'));
    key(&mut app, KeyCode::Esc);
    assert!(!app.show_help && app.screen == Screen::Runs, "Esc only closes the help");
}

/// The machine screen: three users' trainers from the machine's register (this workspace's
/// live run among them, one whose run directory the viewer cannot read), and every user's
/// waiting runs in the order they are expected to start.
#[test]
fn the_machine_screen_lists_every_users_trainers_and_whose_turn_comes_next() {
    use segtop::schedule::machine::TrainerRecord;
    use segtop::schedule::overview::{MachineView, Progress, Trainer};
    use segtop::schedule::shares::Queued;
    let mut app = dashboard_with_recorded_runs(80, 24);
    let now = app.now;
    let trainer = |user: &str, run: &str, threads: u32, gb: u64, progress: Option<Progress>| Trainer {
        record: TrainerRecord {
            version: 1,
            user: user.to_string(),
            uid: 1000,
            pid: 4000,
            pid_start: 1,
            run: run.to_string(),
            run_dir: PathBuf::from("/home").join(user).join("runs").join(run),
            threads,
            peak_bytes: gb << 30,
            started: now - Duration::minutes(42),
        },
        rss_bytes: (gb << 30) / 2,
        progress,
    };
    let queued = |position: usize, user: &str, run: &str, minutes: i64| Queued {
        position,
        user: user.to_string(),
        run: run.to_string(),
        cores: 1,
        since: now - Duration::minutes(minutes),
    };
    let progress = Progress {
        epoch: 12,
        epochs: 40,
        patches_per_s: Some(1.87),
        best_dice: Some([0.612, 0.705, 0.874]),
    };
    let machine = MachineView {
        trainers: vec![
            trainer("ta01", "20261207-091500-default-lr3e-3", 1, 2, Some(progress)),
            // Another user's run whose directory the viewer may not read.
            trainer("ta03", "20261207-093000-lite", 1, 1, None),
            trainer(
                "me",
                LIVE,
                1,
                1,
                Some(Progress {
                    epoch: 3,
                    epochs: 10,
                    patches_per_s: None,
                    best_dice: None,
                }),
            ),
        ],
        queued: vec![
            queued(1, "ta02", "20261207-100000-default", 12),
            queued(2, "ta01", "20261207-101500-default-lr1e-3", 5),
            queued(3, "ta02", "20261207-100100-lite-dropout", 12),
        ],
        warnings: vec!["/var/tmp/segtop-machine/1003-77.json: skipped: not a segtop record".into()],
    };
    app.update(Msg::Watch(Box::new(Watch {
        time: now,
        host: Some(host()),
        machine: Some(machine.clone()),
        ..Watch::default()
    })));
    key(&mut app, KeyCode::Char('5'));
    assert_eq!(app.screen, Screen::Machine);
    let screen = render_at(&app, 80, 24);
    insta::assert_snapshot!("machine_80x24", screen);
    // Memory that moves redraws the machine screen, and nothing else (with no live run of
    // this workspace, whose clock would redraw every look).
    app.update(Msg::Watch(Box::new(Watch {
        time: now,
        runs: vec![RunUpdate {
            id: LIVE.to_string(),
            dir: PathBuf::from("/ws/runs").join(LIVE),
            sample: Some(ProcessSample {
                time: now,
                liveness: Liveness::Gone,
                cpu_percent: 0.0,
                rss_mb: 0.0,
            }),
            ..RunUpdate::default()
        }],
        machine: Some(machine.clone()),
        ..Watch::default()
    })));
    draw(&mut app);
    let mut moved = machine.clone();
    moved.trainers[0].rss_bytes += 1 << 20;
    app.update(Msg::Watch(Box::new(Watch {
        time: now,
        machine: Some(moved.clone()),
        ..Watch::default()
    })));
    assert!(app.needs_redraw());
    key(&mut app, KeyCode::Char('2'));
    draw(&mut app);
    moved.trainers[0].rss_bytes += 1 << 20;
    app.update(Msg::Watch(Box::new(Watch {
        time: now,
        machine: Some(moved),
        ..Watch::default()
    })));
    assert!(
        !app.needs_redraw(),
        "the runs screen does not show the machine's memory"
    );
}
