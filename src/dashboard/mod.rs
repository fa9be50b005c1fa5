//! The `segtop` dashboard: a terminal UI over the workspace's experiments and runs.
//!
//! State lives in [`app::App`] and changes only in `App::update`; [`view::draw`] renders it
//! without mutating. Keyboard input, workspace scanning and the effects that run other
//! programs ([`worker`]: queueing, Slurm, signals) run on their own threads and send
//! [`app::Msg`]s over one channel; the loop drains them and redraws at most every 100 ms,
//! and only when something changed. The UI thread never waits on another program, but for
//! the user's own editor, which it hands the terminal to.

pub mod app;
pub mod catalog;
pub mod chart;
pub mod editor;
pub mod hits;
pub mod msg;
pub mod preview;
pub mod screens;
pub mod view;
pub mod worker;

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};

use crate::dashboard::catalog::{ExperimentEntry, ExperimentStatus};
use crate::graphics::{Graphics, GraphicsChoice};
use crate::runs::watch;
use crate::settings::Settings;
use crate::theme::Theme;
use crate::workspace::Workspace;
use app::{App, Effect, Msg};
use hits::Hits;

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
    /// How slice previews are drawn (`--graphics`, else the setting).
    pub graphics: GraphicsChoice,
}

/// Opens the dashboard on `workspace` and runs it until the user quits.
pub fn run(workspace: Workspace, options: Options) -> anyhow::Result<()> {
    // One malloc arena for all threads: the watcher builds what the UI thread keeps, and with
    // an arena of its own the memory it freed stayed resident beside the UI's (glibc).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets a malloc tunable before this process starts any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // ratatui::try_init switches to the alternate screen and installs a panic hook that
    // gives the terminal back before the panic message prints; mouse capture is ours to undo.
    let mut terminal = ratatui::try_init().context("cannot open the terminal")?;
    let ratatui_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        ratatui_hook(info);
    }));
    // The terminal's answer to the graphics query arrives as input: ask before anything
    // else reads the terminal.
    let graphics = Graphics::detect(options.graphics, crate::render::ColorMode::detect());
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    let result = run_on(&mut terminal, workspace, options, graphics);
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

/// The dashboard on an open terminal: its threads, then the loop that takes their messages
/// and draws.
fn run_on(
    terminal: &mut ratatui::DefaultTerminal,
    workspace: Workspace,
    options: Options,
    graphics: Graphics,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let gate = std::sync::Arc::new(InputGate::default());
    spawn_input(tx.clone(), gate.clone())?;
    spawn_signals(tx.clone(), gate.clone())?;
    spawn_scanner(workspace.clone(), tx.clone())?;
    let (look, requests) = mpsc::channel();
    watch::spawn(
        workspace.clone(),
        tx.clone(),
        |look| Msg::Watch(Box::new(look)),
        requests,
    )
    .context("cannot start the watcher thread")?;
    spawn_demo_data(workspace.clone(), tx.clone())?;
    let worker = worker::spawn(workspace.clone(), tx.clone(), look.clone())?;

    let notice = options.notice.or_else(|| graphics.hint.clone());
    let mut app = App::new(workspace.clone(), options.theme)
        .with_choices(options.themes, options.settings)
        .with_graphics(graphics);
    app.update(Msg::Notice(notice));
    if let Ok(size) = terminal.size() {
        app.update(Msg::Terminal(crossterm::event::Event::Resize(size.width, size.height)));
    }
    let mut last_frame = Instant::now() - FRAME_INTERVAL;
    loop {
        if app.needs_redraw() {
            // Draw no more often than FRAME_INTERVAL: keep taking messages until it has passed.
            let wait = FRAME_INTERVAL.saturating_sub(last_frame.elapsed());
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    take(&mut app, msg);
                    perform(&mut app, &workspace, &tx, &look, &worker, terminal, &gate);
                    if app.should_quit() {
                        return Ok(());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let hits = draw(&app, terminal)?;
            app.drawn(hits);
            perform(&mut app, &workspace, &tx, &look, &worker, terminal, &gate);
            last_frame = Instant::now();
        }
        let Ok(msg) = rx.recv() else {
            return Ok(());
        };
        take(&mut app, msg);
        perform(&mut app, &workspace, &tx, &look, &worker, terminal, &gate);
        if app.should_quit() {
            return Ok(());
        }
    }
}

/// Draws a frame; the whole screen again when a picture's pixels would stay behind.
fn draw(app: &App, terminal: &mut ratatui::DefaultTerminal) -> anyhow::Result<Hits> {
    let mut hits = Hits::default();
    let stale = std::cell::Cell::new(false);
    let mut draw = |frame: &mut ratatui::Frame| {
        hits = view::draw(app, frame);
        stale.set(app.graphics.settle(frame.buffer_mut()));
    };
    terminal.draw(&mut draw).context("cannot draw")?;
    if stale.get() {
        terminal.clear().context("cannot clear the screen")?;
        terminal.draw(&mut draw).context("cannot draw")?;
    }
    Ok(hits)
}

/// Hands `msg` to the app. After a look that found many runs (the first one, in a large
/// workspace), the memory that carried them is given back to the system (glibc keeps freed
/// memory otherwise, and the dashboard would stay as large as that one moment).
fn take(app: &mut App, msg: Msg) {
    let found = match &msg {
        Msg::Watch(watch) => watch.runs.iter().filter(|u| u.found.is_some()).count(),
        _ => 0,
    };
    app.update(msg);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if found >= 64 {
        // SAFETY: malloc_trim only returns free memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = found;
}

/// Carries out the effects `update` asked for; outcomes come back as messages.
fn perform(
    app: &mut App,
    workspace: &Workspace,
    tx: &Sender<Msg>,
    look: &Sender<watch::Request>,
    worker: &Sender<Effect>,
    terminal: &mut ratatui::DefaultTerminal,
    gate: &InputGate,
) {
    for effect in app.take_effects() {
        match effect {
            // Those that run programs go to the worker, which answers with messages and asks
            // the watcher to look itself.
            effect @ (Effect::Launch(_)
            | Effect::LaunchOn(..)
            | Effect::Resume { .. }
            | Effect::Halt { .. }
            | Effect::HoldJob { .. }
            | Effect::Requeue { .. }) => {
                if worker.send(effect).is_err() {
                    app.update(Msg::Failed(
                        "the effects thread has stopped; restart segtop".to_string(),
                    ));
                }
                continue;
            }
            Effect::Clone { source, from, base } => open_clone_editor(app, workspace, &source, from, &base),
            Effect::SaveExperiment { path, text, overwrite } => {
                let outcome = save_experiment(&path, &text, overwrite);
                if outcome == editor::SaveOutcome::Saved {
                    app.update(Msg::Experiments(ExperimentEntry::scan(workspace)));
                }
                app.update(Msg::Saved { path, outcome });
            }
            Effect::EditFile(path) => edit_and_check(app, workspace, terminal, gate, &path),
            Effect::LoadPreview {
                run,
                dir,
                previews,
                modality,
                epoch,
            } => {
                let root = workspace.root().to_path_buf();
                if let Err(error) = spawn_preview_loader(tx.clone(), root, run, dir, previews, modality, epoch) {
                    app.update(Msg::Failed(format!("cannot load the preview: {error}")));
                }
            }
            Effect::SaveSettings(settings) => {
                if let Some(path) = Settings::path()
                    && let Err(error) = settings.save(&path)
                {
                    app.update(Msg::Failed(error.to_string()));
                }
            }
            Effect::LoadCharts(ids) => {
                // The watcher reads them at once, and looks.
                let _ = look.send(watch::Request::Charts(ids));
                continue;
            }
        }
        let _ = look.send(watch::Request::Look);
    }
}

/// Opens the editor on a copy of `source`, steering its new name clear of every experiment's.
fn open_clone_editor(app: &mut App, workspace: &Workspace, source: &std::path::Path, from: String, base: &str) {
    let taken: Vec<String> = app
        .experiments
        .entries
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    let editor = crate::config::read_text(source)
        .map_err(|e| format!("cannot clone {from}: {e}"))
        .and_then(|text| editor::Editor::new(from, &text, base, taken, workspace.root()))
        .map(Box::new);
    app.update(Msg::Editor(editor));
}

/// Hands the terminal to the user's editor on `path`, then rereads the experiments and says
/// whether the edited file still checks.
fn edit_and_check(
    app: &mut App,
    workspace: &Workspace,
    terminal: &mut ratatui::DefaultTerminal,
    gate: &InputGate,
    path: &std::path::Path,
) {
    let edited = edit_file(terminal, gate, path);
    // One reading of the files: the list, and the edited file's status from it.
    let entries = ExperimentEntry::scan(workspace);
    let shown = path
        .strip_prefix(workspace.root())
        .unwrap_or(path)
        .display()
        .to_string();
    let notice = match (edited, entries.iter().find(|e| e.path == path).map(|e| &e.status)) {
        (Err(error), _) => format!("{error:#}"),
        (Ok(()), None) => format!("{shown} is not in experiments/ any more"),
        (Ok(()), Some(ExperimentStatus::Invalid(problems))) => {
            format!("{shown}: {} problem(s), shown in its details", problems.len())
        }
        (Ok(()), Some(ExperimentStatus::Missing(..))) => {
            format!("{shown} checks, but see its details")
        }
        (Ok(()), Some(ExperimentStatus::Ready(_))) => format!("{shown} checks: ⏎ launches it"),
    };
    app.update(Msg::Experiments(entries));
    app.update(Msg::Failed(notice));
}

/// Reads a preview on its own thread, so a large volume never stalls the UI; the result comes
/// back as `Msg::Preview`.
fn spawn_preview_loader(
    tx: Sender<Msg>,
    root: std::path::PathBuf,
    run: String,
    dir: std::path::PathBuf,
    previews: u32,
    modality: crate::experiment::Modality,
    epoch: Option<u32>,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("preview".into())
        .spawn(move || {
            let result = crate::runs::preview::load_epoch(&root, &dir, modality, epoch)
                .map(|p| p.map(Box::new))
                .map_err(|e| format!("{e:#}"));
            let _ = tx.send(Msg::Preview {
                run,
                previews,
                modality,
                epoch,
                result,
            });
        })
        .map(drop)
}

/// Writes a new experiment file whole or not at all; an existing file is replaced only
/// when `overwrite`.
fn save_experiment(path: &std::path::Path, text: &str, overwrite: bool) -> editor::SaveOutcome {
    use std::io::Write;
    let write = || -> std::io::Result<Result<(), tempfile::PersistError>> {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut file = tempfile::Builder::new().prefix(".segtop-edit").tempfile_in(dir)?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        Ok(if overwrite {
            file.persist(path).map(drop)
        } else {
            file.persist_noclobber(path).map(drop)
        })
    };
    match write() {
        Ok(Ok(())) => editor::SaveOutcome::Saved,
        Ok(Err(error)) if error.error.kind() == std::io::ErrorKind::AlreadyExists => editor::SaveOutcome::Exists,
        Ok(Err(error)) => editor::SaveOutcome::Failed(format!("{}: {}", path.display(), error.error)),
        Err(error) => editor::SaveOutcome::Failed(format!("{}: {error}", path.display())),
    }
}

/// Gives the terminal to the user's editor on `path` and takes it back afterwards.
fn edit_file(terminal: &mut ratatui::DefaultTerminal, gate: &InputGate, path: &std::path::Path) -> anyhow::Result<()> {
    let editor = std::env::var("VISUAL")
        .ok()
        .or_else(|| std::env::var("EDITOR").ok())
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    // The input thread must not read the keys meant for the editor.
    let _paused = gate.pause();
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    // Through the shell, as git does, so EDITOR may carry arguments ("code -w").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status();
    crossterm::terminal::enable_raw_mode().context("cannot take the terminal back")?;
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All),
        EnableMouseCapture
    )
    .context("cannot take the terminal back")?;
    // A new terminal has empty buffers, so the next frame is drawn whole. (Terminal::clear
    // would ask the terminal where its cursor is, and not every terminal answers.)
    *terminal = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))
        .context("cannot take the terminal back")?;
    let status = status.with_context(|| format!("cannot run the editor '{editor}'"))?;
    if !status.success() {
        anyhow::bail!("the editor '{editor}' ended with {status}; the file is as it left it");
    }
    Ok(())
}

/// Lets the dashboard stop the input thread reading the terminal while another program
/// has it.
#[derive(Default)]
struct InputGate {
    paused: std::sync::atomic::AtomicBool,
    reading: std::sync::Mutex<()>,
}

impl InputGate {
    /// Holds the input thread until the returned guard is dropped.
    fn pause(&self) -> impl Drop + '_ {
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        // The input thread holds the lock only while it polls; it waits at most one poll.
        let guard = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        Paused {
            gate: self,
            _guard: guard,
        }
    }

    fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Paused<'a> {
    gate: &'a InputGate,
    _guard: std::sync::MutexGuard<'a, ()>,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.gate.paused.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// SIGTERM, SIGHUP (the SSH connection went away) and SIGINT end the dashboard cleanly,
/// terminal restored; runs keep going.
fn spawn_signals(tx: Sender<Msg>, gate: std::sync::Arc<InputGate>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT]).context("cannot listen for signals")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                // Ctrl-C in the user's editor is the editor's.
                if signal == SIGINT && gate.is_paused() {
                    continue;
                }
                let _ = tx.send(Msg::Quit);
                break;
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// How long the input thread waits for a key before it checks whether to let go of the
/// terminal.
const INPUT_POLL: Duration = Duration::from_millis(250);

fn spawn_input(tx: Sender<Msg>, gate: std::sync::Arc<InputGate>) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                if gate.is_paused() {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let reading = gate.reading.lock().unwrap_or_else(|e| e.into_inner());
                let event = match crossterm::event::poll(INPUT_POLL) {
                    Ok(true) => crossterm::event::read(),
                    Ok(false) => continue,
                    Err(error) => Err(error),
                };
                drop(reading);
                let Ok(event) = event else {
                    break;
                };
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
                let (root, spec) = (
                    experiment.data.root.clone(),
                    crate::data::synth::SynthSpec::of(synthetic),
                );
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
                let notice = generate(&root, &spec, &progress)
                    .err()
                    .map(|error| format!("cannot generate demo data: {error:#}"));
                if tx.send(Msg::Notice(notice)).is_err() {
                    return;
                }
                done.push((root, spec));
            }
        })
        .context("cannot start the demo-data thread")?;
    Ok(())
}

/// Generates a synthetic dataset with `segtop synth` in a child process, so the dashboard
/// never holds the volumes (a full-size case is hundreds of MB while it is written).
fn generate(
    root: &std::path::Path,
    spec: &crate::data::synth::SynthSpec,
    progress: &dyn Fn(u32, u32),
) -> anyhow::Result<()> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("cannot find the running segtop executable")?;
    let [x, y, z] = spec.shape;
    let mut child = Command::new(&exe)
        .arg("synth")
        .arg("--out")
        .arg(root)
        .args(["--cases", &spec.cases.to_string()])
        .args(["--size", &format!("{x}x{y}x{z}")])
        .args(["--seed", &spec.seed.to_string()])
        .arg("--progress-lines")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} synth", exe.display()))?;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((finished, total)) = line.split_once(' ')
                && let (Ok(finished), Ok(total)) = (finished.parse(), total.parse())
            {
                progress(finished, total);
            }
        }
    }
    let output = child.wait_with_output().context("segtop synth did not finish")?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message");
    anyhow::bail!("segtop synth {}: {said}", output.status)
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
