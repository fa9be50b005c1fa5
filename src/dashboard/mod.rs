//! The `segtop` dashboard: a terminal UI over the workspace's experiments and runs.
//!
//! State lives in [`app::App`] and changes only in `App::update`; [`view::draw`] renders it
//! without mutating. Keyboard input and workspace scanning run on their own threads and send
//! [`app::Msg`]s over one channel; the loop drains them and redraws at most every 100 ms,
//! and only when something changed.

pub mod app;
pub mod chart;
pub mod history;
pub mod preview;
pub mod run;
pub mod settings;
pub mod view;
pub mod watch;

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};

use crate::theme::Theme;
use crate::workspace::Workspace;
use app::{App, Effect, ExperimentEntry, Msg};
use settings::Settings;

/// Shortest time between two frames.
const FRAME_INTERVAL: Duration = Duration::from_millis(100);
/// How often the experiment files are re-read.
const SCAN_INTERVAL: Duration = Duration::from_secs(2);

/// How the dashboard starts.
pub struct Options {
    pub theme: Theme,
    /// The themes `t` cycles through.
    pub themes: Vec<Theme>,
    /// Remembered choices, saved back when the user changes them.
    pub settings: Settings,
    /// A first line for the status bar (e.g. a settings file that did not read).
    pub notice: Option<String>,
}

/// Opens the dashboard on `workspace` and runs it until the user quits.
pub fn run(workspace: Workspace, options: Options) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    spawn_input(tx.clone())?;
    spawn_signals(tx.clone())?;
    spawn_scanner(workspace.clone(), tx.clone())?;
    let (look, requests) = mpsc::channel();
    watch::spawn(workspace.clone(), tx.clone(), requests).context("cannot start the watcher thread")?;
    spawn_demo_data(workspace.clone(), tx.clone())?;

    let mut app = App::new(workspace.clone(), options.theme).with_choices(options.themes, options.settings);
    app.update(Msg::Notice(options.notice));
    // ratatui::try_init switches to the alternate screen and installs a panic hook that
    // gives the terminal back before the panic message prints; mouse capture is ours to undo.
    let mut terminal = ratatui::try_init().context("cannot open the terminal")?;
    let ratatui_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        ratatui_hook(info);
    }));
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    if let Ok(size) = terminal.size() {
        app.update(Msg::Terminal(crossterm::event::Event::Resize(size.width, size.height)));
    }
    let result = (|| -> anyhow::Result<()> {
        let mut last_frame = Instant::now() - FRAME_INTERVAL;
        loop {
            if app.needs_redraw() {
                // Draw no more often than FRAME_INTERVAL: keep taking messages until it has passed.
                let wait = FRAME_INTERVAL.saturating_sub(last_frame.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(msg) => {
                        app.update(msg);
                        perform(&mut app, &workspace, &tx, &look);
                        if app.should_quit() {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
                terminal.draw(|frame| view::draw(&app, frame)).context("cannot draw")?;
                app.drawn();
                last_frame = Instant::now();
            }
            let Ok(msg) = rx.recv() else {
                return Ok(());
            };
            app.update(msg);
            perform(&mut app, &workspace, &tx, &look);
            if app.should_quit() {
                return Ok(());
            }
        }
    })();
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

/// Carries out the effects `update` asked for; outcomes come back as messages.
fn perform(app: &mut App, workspace: &Workspace, tx: &Sender<Msg>, look: &Sender<watch::Request>) {
    for effect in app.take_effects() {
        match effect {
            Effect::Launch(file) => {
                let queue = crate::queue::Queue::new(workspace);
                match queue.add(workspace, &file) {
                    Ok(queued) => {
                        app.update(Msg::Queued {
                            runs: queued
                                .iter()
                                .map(|q| (q.run.id(), q.run.path().to_path_buf()))
                                .collect(),
                            resume: false,
                            sweep: queued.first().and_then(|q| q.sweep.as_ref()).map(|t| t.sweep.clone()),
                        });
                        supervise(app, workspace);
                    }
                    Err(error) => app.update(Msg::Failed(format!("cannot queue {}: {error:#}", file.display()))),
                }
            }
            Effect::Resume { id, dir } => {
                let run = crate::rundir::RunDir::open(&dir);
                let experiment = run.read_launch().map_or_else(|| run.experiment(), |l| l.experiment);
                match crate::queue::Queue::new(workspace).add_resume(&run, experiment) {
                    Ok(()) => {
                        app.update(Msg::Queued {
                            runs: vec![(id, dir)],
                            resume: true,
                            sweep: None,
                        });
                        supervise(app, workspace);
                    }
                    Err(error) => app.update(Msg::Failed(format!("cannot resume {id}: {error:#}"))),
                }
            }
            Effect::Halt {
                id,
                pid,
                pid_start,
                halt,
            } => {
                if let Err(error) = crate::launcher::halt(pid, pid_start, halt) {
                    app.update(Msg::Failed(format!("{id}: {error:#}")));
                }
            }
            Effect::LoadPreview {
                run,
                dir,
                previews,
                modality,
                epoch,
            } => {
                let (tx, root) = (tx.clone(), workspace.root().to_path_buf());
                let spawned = thread::Builder::new().name("preview".into()).spawn(move || {
                    let result = preview::load_epoch(&root, &dir, modality, epoch)
                        .map(|p| p.map(Box::new))
                        .map_err(|e| format!("{e:#}"));
                    let _ = tx.send(Msg::Preview {
                        run,
                        previews,
                        modality,
                        epoch,
                        result,
                    });
                });
                if let Err(error) = spawned {
                    app.update(Msg::Failed(format!("cannot load the preview: {error}")));
                }
            }
            Effect::Requeue { id, change } => {
                if let Err(error) = requeue(workspace, &id, change) {
                    app.update(Msg::Failed(format!("{id}: {error:#}")));
                }
            }
            Effect::SaveSettings(settings) => {
                if let Some(path) = Settings::path()
                    && let Err(error) = settings.save(&path)
                {
                    app.update(Msg::Failed(error));
                }
            }
        }
        let _ = look.send(watch::Request::Look);
    }
}

fn requeue(workspace: &Workspace, id: &str, change: app::QueueChange) -> anyhow::Result<()> {
    use app::QueueChange;
    let queue = crate::queue::Queue::new(workspace);
    let place = || -> anyhow::Result<usize> {
        let file = queue.read()?;
        file.entries
            .iter()
            .position(|e| e.run == id)
            .ok_or_else(|| anyhow::anyhow!("not in the queue any more"))
    };
    match change {
        QueueChange::Earlier => queue.move_to(id, place()?.saturating_sub(1)).map(drop),
        QueueChange::Later => queue.move_to(id, place()? + 1).map(drop),
        QueueChange::Hold => queue.set_paused(id, true),
        QueueChange::Release => {
            queue.set_paused(id, false)?;
            crate::supervisor::ensure(workspace).map(drop)
        }
        QueueChange::Remove => queue.remove(id).map(drop),
    }
}

/// Makes sure the workspace's supervisor is running to start what was queued.
fn supervise(app: &mut App, workspace: &Workspace) {
    if let Err(error) = crate::supervisor::ensure(workspace) {
        app.update(Msg::Failed(format!("cannot start the supervisor: {error:#}")));
    }
}

/// SIGTERM, SIGHUP (the SSH connection went away) and SIGINT end the dashboard cleanly,
/// terminal restored; runs keep going.
fn spawn_signals(tx: Sender<Msg>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT]).context("cannot listen for signals")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = tx.send(Msg::Quit);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn spawn_input(tx: Sender<Msg>) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if tx.send(Msg::Terminal(event)).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the input thread")?;
    Ok(())
}

/// Generates the synthetic data of experiments that use it and do not have it yet, so the
/// demo works on first use; progress goes to the status line.
fn spawn_demo_data(workspace: Workspace, tx: Sender<Msg>) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("demo-data".into())
        .spawn(move || {
            let mut done = Vec::new();
            for entry in ExperimentEntry::scan(&workspace) {
                let Some(experiment) = entry.experiment() else {
                    continue;
                };
                let Some(synthetic) = &experiment.data.synthetic else {
                    continue;
                };
                let (root, spec) = (experiment.data.root.clone(), synthetic.spec());
                if done.contains(&(root.clone(), spec)) || crate::data::synth::is_complete(&root, &spec) {
                    continue;
                }
                let shown = root
                    .strip_prefix(workspace.root())
                    .unwrap_or(&root)
                    .display()
                    .to_string();
                let progress = |finished: u32, total: u32| {
                    let _ = tx.send(Msg::Notice(Some(format!(
                        "generating demo data in {shown}: {finished}/{total} cases"
                    ))));
                };
                progress(0, spec.cases);
                let threads = thread::available_parallelism().map_or(1, usize::from);
                let notice = match crate::data::synth::write_dataset(&root, &spec, threads, &progress) {
                    Ok(_) => None,
                    Err(error) => Some(format!("cannot generate demo data: {error}")),
                };
                if tx.send(Msg::Notice(notice)).is_err() {
                    return;
                }
                done.push((root, spec));
            }
        })
        .context("cannot start the demo-data thread")?;
    Ok(())
}

fn spawn_scanner(workspace: Workspace, tx: Sender<Msg>) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("scanner".into())
        .spawn(move || {
            let mut last: Option<Vec<ExperimentEntry>> = None;
            loop {
                let entries = ExperimentEntry::scan(&workspace);
                if last.as_ref() != Some(&entries) {
                    if tx.send(Msg::Experiments(entries.clone())).is_err() {
                        break;
                    }
                    last = Some(entries);
                }
                thread::sleep(SCAN_INTERVAL);
            }
        })
        .context("cannot start the scanner thread")?;
    Ok(())
}
