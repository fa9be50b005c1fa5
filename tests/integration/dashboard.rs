//! The dashboard in a real pseudo-terminal: a user opens it at 80x24, waits for the demo
//! data, launches a tiny experiment with Enter, sees its loss on screen; the dashboard is
//! SIGKILLed, a new one finds the run still running, quits, and the run goes on to finish
//! without any dashboard.

#![cfg(feature = "trainer")]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

use segtop::run::events::{Event, EventTail};

use super::wait::{poll_until, wait_until};

/// A terminal screen fed by the program's output on a reader thread.
struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
}

impl Screen {
    /// The program left the alternate screen and turned mouse reporting off (waiting for the
    /// reader thread, which may still be feeding the screen the program's last output).
    fn assert_restored(&self) {
        let restored = || {
            let parser = self.parser.lock().expect("parser lock");
            let screen = parser.screen();
            (screen.alternate_screen(), screen.mouse_protocol_mode())
        };
        poll_until("the terminal to be restored", Duration::from_secs(10), || {
            (restored() == (false, vt100::MouseProtocolMode::None)).then_some(())
        })
        .unwrap_or_else(|timeout| {
            let (alternate, mouse) = restored();
            timeout.fail(format_args!(
                "alternate screen: {alternate}, mouse reporting: {mouse:?}"
            ))
        });
    }

    fn text(&self) -> String {
        self.parser.lock().expect("parser lock").screen().contents()
    }

    /// Waits until `ready` holds for the screen's text; panics with the screen after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
        poll_until(what, limit, || Some(self.text()).filter(|text| ready(text)))
            .unwrap_or_else(|timeout| timeout.fail(format_args!("the screen:\n{}", self.text())))
    }
}

/// Whether the loss chart's title shows a number: `┌ loss 1.234`.
fn shows_loss(screen: &str) -> bool {
    screen
        .split("┌ loss ")
        .skip(1)
        .any(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

#[test]
fn a_user_launches_a_tiny_experiment_from_the_keyboard_and_sees_its_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let workspace = dir.path();
    std::fs::create_dir(workspace.join("experiments")).expect("mkdir");
    std::fs::write(
        workspace.join("experiments/tiny.toml"),
        "[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
         [data.synthetic]\ncases = 4\nseed = 3\nshape = [48, 48, 32]\n\
         [model]\nbase_filters = 4\ndepth = 3\n\
         [train]\npatch_size = [16, 16, 16]\nbatch_size = 2\nepochs = 12\npatches_per_epoch = 8\nwarmup_epochs = 0\n\
         [validate]\nevery = 1\n[run]\nname = \"tiny\"\n",
    )
    .expect("write");

    let (screen, mut keys, mut child) = open_dashboard(workspace);

    // The demo data is generated on first open; the experiment turns ready when it is there.
    screen.wait_for("ready experiment", Duration::from_secs(120), |s| s.contains("✓ tiny"));
    keys.write_all(b"\r").expect("Enter");
    let shown = screen.wait_for("loss on screen", Duration::from_secs(180), shows_loss);
    assert!(shown.contains("tiny"), "{shown}");
    assert!(shown.contains("Dice"), "{shown}");

    // The dashboard is SIGKILLed: no clean-up at all. The run trains on, and a new dashboard
    // finds it running.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &child.process_id().expect("pid").to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    child.wait().expect("the killed dashboard is reaped");
    let (screen, mut keys, mut child) = open_dashboard(workspace);
    screen.wait_for("first frame", Duration::from_secs(30), |s| s.contains("1:experiments"));
    keys.write_all(b"2").expect("2");
    let list = screen.wait_for("the run, running", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.contains("tiny") && l.contains("running"))
    });
    assert!(list.contains("1 live"), "{list}");

    // Quitting gives the terminal back (alternate screen and mouse reporting off) ...
    keys.write_all(b"q").expect("q");
    let status = wait_until("segtop to quit", Duration::from_secs(10), || {
        child.try_wait().expect("wait")
    });
    assert!(status.success(), "{status:?}");
    screen.assert_restored();

    // ... and the run, detached from the dashboard, trains on to its end.
    let run = only_run(workspace);
    assert_completes(&run);
    let log = std::fs::read_to_string(run.join("train.log")).expect("train.log");
    assert!(log.contains("epoch 12/12"), "{log}");
    assert!(run.join("launch.json").is_file());
}

#[test]
fn a_user_edits_an_experiment_clones_it_with_new_values_and_launches_the_clone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let workspace = dir.path();
    std::fs::create_dir(workspace.join("experiments")).expect("mkdir");
    let source = "# Tiny: trains in seconds.\n[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
         [data.synthetic]\ncases = 4\nseed = 3\nshape = [48, 48, 32]\n\
         [model]\nbase_filters = 4 # small\ndepth = 3\n\
         [train]\npatch_size = [16, 16, 16]\nbatch_size = 2\nepochs = 2\npatches_per_epoch = 4\nwarmup_epochs = 0\nlr = 3e-3\n\
         [validate]\nevery = 1\n[run]\nname = \"tiny\"\n";
    std::fs::write(workspace.join("experiments/tiny.toml"), source).expect("write");
    // The user's editor, standing in for vi: it changes the epochs in place.
    let (screen, mut keys, mut child) = open_dashboard_with(workspace, &[("EDITOR", "sed -i s/^epochs.=.2/epochs=3/")]);
    screen.wait_for("ready experiment", Duration::from_secs(120), |s| s.contains("✓ tiny"));

    // e: the editor has the terminal, then the dashboard takes it back and checks the file.
    keys.write_all(b"e").expect("e");
    screen.wait_for("the check after editing", Duration::from_secs(20), |s| {
        s.contains("tiny.toml checks")
    });
    let edited = std::fs::read_to_string(workspace.join("experiments/tiny.toml")).expect("read");
    assert!(edited.contains("\nepochs=3\n"), "{edited}");

    // c: a form over a clone; the keys still reach the dashboard after the editor.
    keys.write_all(b"c").expect("c");
    screen.wait_for("the form", Duration::from_secs(20), |s| {
        s.contains("clone experiments/tiny.toml → experiments/tiny-2.toml")
    });
    // The learning rate, typed over (Ctrl-U clears), and the base filters.
    keys.write_all(b"/lr\r\r\x150.002\r").expect("keys");
    keys.write_all(b"/base_f\r\r\x156\r").expect("keys");
    screen.wait_for("the new values", Duration::from_secs(10), |s| {
        s.contains("model.base_filters") && s.contains("3 changed")
    });
    keys.write_all(b"s").expect("s");
    screen.wait_for("saved", Duration::from_secs(10), |s| {
        s.contains("saved experiments/tiny-2.toml")
    });
    let saved = std::fs::read_to_string(workspace.join("experiments/tiny-2.toml")).expect("the clone");
    assert!(saved.starts_with("# Tiny: trains in seconds."), "{saved}");
    assert!(
        saved.contains("base_filters = 6 # small\n") && saved.contains("lr = 0.002\n"),
        "{saved}"
    );
    assert!(saved.contains("name = \"tiny-2\""), "{saved}");
    // Enter queues it now; the run view opens on it.
    keys.write_all(b"\r").expect("Enter");
    screen.wait_for("the new run's view", Duration::from_secs(30), |s| {
        !s.contains("clone experiments") && s.contains("tiny-2")
    });

    let run = only_run(workspace);
    assert!(run.to_string_lossy().ends_with("-tiny-2"), "{run:?}");
    let frozen: toml::Table = std::fs::read_to_string(run.join("experiment.toml"))
        .expect("frozen experiment")
        .parse()
        .expect("TOML");
    assert_eq!(frozen["train"]["lr"].as_float(), Some(0.002));
    assert_eq!(frozen["model"]["base_filters"].as_integer(), Some(6));
    assert_eq!(frozen["train"]["epochs"].as_integer(), Some(3));
    assert_eq!(frozen["run"]["name"].as_str(), Some("tiny-2"));
    assert_completes(&run);
    keys.write_all(b"q").expect("q");
    wait_until("segtop to quit", Duration::from_secs(10), || {
        child.try_wait().expect("wait")
    });
}

#[test]
fn sigterm_and_sighup_end_the_dashboard_with_the_terminal_restored() {
    for signal in ["TERM", "HUP"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (screen, _keys, mut child) = open_dashboard(dir.path());
        screen.wait_for("first frame", Duration::from_secs(30), |s| s.contains("1:experiments"));
        let pid = child.process_id().expect("pid");
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        wait_until(&format!("SIG{signal} to end segtop"), Duration::from_secs(10), || {
            child.try_wait().expect("wait")
        });
        screen.assert_restored();
    }
}

#[test]
fn previews_fall_back_to_half_blocks_and_the_status_line_says_why() {
    // A terminal that never answers: half blocks, a hint, and keys work afterwards.
    let dir = tempfile::tempdir().expect("temp dir");
    let (screen, mut keys, mut child) = open_dashboard_with(dir.path(), &[("SEGTOP_TEST_SILENT", "1")]);
    screen.wait_for("the hint", Duration::from_secs(30), |s| {
        s.contains("did not answer in time")
    });
    keys.write_all(b"q").expect("q");
    wait_until("q to end segtop", Duration::from_secs(10), || {
        child.try_wait().expect("wait")
    });
    screen.assert_restored();

    // Inside tmux with passthrough off (a `tmux` on PATH that says so): the fix is named.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin/");
    let tmux = bin.join("tmux");
    std::fs::write(&tmux, "#!/bin/sh\necho off\n").expect("fake tmux");
    std::fs::set_permissions(&tmux, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let (screen, mut keys, mut child) =
        open_dashboard_with(dir.path(), &[("TMUX", "/tmp/tmux-0/default,1,0"), ("PATH", &path)]);
    screen.wait_for("the tmux hint", Duration::from_secs(30), |s| {
        s.contains("allow-passthrough on")
    });
    keys.write_all(b"q").expect("q");
    wait_until("q to end segtop", Duration::from_secs(10), || {
        child.try_wait().expect("wait")
    });

    // NO_COLOR: half blocks without asking, so a silent terminal costs nothing and says nothing.
    let (screen, mut keys, mut child) =
        open_dashboard_with(dir.path(), &[("SEGTOP_TEST_SILENT", "1"), ("NO_COLOR", "1")]);
    screen.wait_for("first frame", Duration::from_secs(30), |s| s.contains("1:experiments"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!screen.text().contains("pictures:"), "{}", screen.text());
    keys.write_all(b"q").expect("q");
    wait_until("q to end segtop", Duration::from_secs(10), || {
        child.try_wait().expect("wait")
    });
}

/// Starts `segtop` in an 80x24 pseudo-terminal on `workspace`, with its own settings folder.
fn open_dashboard(
    workspace: &Path,
) -> (
    Screen,
    Box<dyn Write + Send>,
    Box<dyn portable_pty::Child + Send + Sync>,
) {
    open_dashboard_with(workspace, &[])
}

/// As [`open_dashboard`], with more environment variables.
fn open_dashboard_with(
    workspace: &Path,
    env: &[(&str, &str)],
) -> (
    Screen,
    Box<dyn Write + Send>,
    Box<dyn portable_pty::Child + Send + Sync>,
) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_segtop"));
    command.cwd(workspace);
    command.env("TERM", "xterm-256color");
    command.env("XDG_CONFIG_HOME", workspace.join("config"));
    command.env("SEGTOP_MACHINE_DIR", workspace.join(".machine"));
    command.env("SEGTOP_OTHER_LOAD", "0");
    command.env_remove("NO_COLOR");
    for (name, value) in env {
        command.env(name, value);
    }
    let child = pty.slave.spawn_command(command).expect("segtop starts");
    drop(pty.slave);
    let rows = std::num::NonZero::new(24).expect("rows");
    let columns = std::num::NonZero::new(80).expect("columns");
    let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, columns, 0)));
    let mut reader = pty.master.try_clone_reader().expect("reader");
    let feed = Arc::clone(&parser);
    let keys = SharedWriter(Arc::new(Mutex::new(pty.master.take_writer().expect("writer"))));
    let mut answers = keys.clone();
    // Like a terminal, it answers status reports (a terminal that never answers is tested
    // with SEGTOP_TEST_SILENT set).
    let silent = env.iter().any(|(name, _)| *name == "SEGTOP_TEST_SILENT");
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            if !silent && buf[..n].windows(4).any(|w| w == b"\x1b[5n") {
                let _ = answers.write_all(b"\x1b[0n");
            }
            feed.lock().expect("parser lock").process(&buf[..n]);
        }
    });
    let keys: Box<dyn Write + Send> = Box::new(keys);
    // The master must outlive the child, or the child gets a hangup.
    std::mem::forget(pty.master);
    (Screen { parser }, keys, child)
}

/// The pseudo-terminal's input, shared by the test's key presses and the terminal's answers.
#[derive(Clone)]
struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("writer lock").write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("writer lock").flush()
    }
}

/// The workspace's one run directory.
fn only_run(workspace: &Path) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(workspace.join("runs"))
        .expect("runs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().expect("one run")
}

/// Waits for the run to finish and insists that it completed.
fn assert_completes(run: &Path) {
    let finished = wait_for_finish(run, Duration::from_secs(300));
    assert!(
        matches!(
            finished,
            Event::RunFinished {
                outcome: segtop::run::events::Outcome::Completed,
                ..
            }
        ),
        "{finished:?}"
    );
}

fn wait_for_finish(run: &Path, limit: Duration) -> Event {
    let mut tail = EventTail::new(run.join("events.jsonl"));
    wait_until("the run to finish", limit, || {
        let (events, _) = tail.poll().expect("events");
        events.into_iter().find(|e| matches!(e, Event::RunFinished { .. }))
    })
}

/// The watcher's sample of a live trainer counts the process once, not once per thread.
#[test]
fn the_watcher_samples_a_live_trainer_as_one_process() {
    use segtop::runs::model::Liveness;
    use segtop::runs::watch::Watcher;
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = super::train::experiment(dir.path(), 200);
    let mut child = super::train::start_and_wait(dir.path(), &experiment, |events| {
        events.iter().any(|e| matches!(e, Event::Step { .. }))
    });
    // An impostor: a run whose record names the same pid but a process started earlier,
    // as when a pid is reused. It must not be taken for alive.
    let start = segtop::run::process::start_time(child.id()).expect("the trainer's start time");
    let impostor = dir.path().join("runs/20261126-000000-impostor");
    std::fs::create_dir_all(&impostor).expect("mkdir");
    let record = Event::RunStarted {
        time: chrono::Utc::now(),
        schema: 1,
        pid: child.id(),
        host: sysinfo::System::host_name().unwrap_or_default(),
        name: "impostor".into(),
        experiment_hash: String::new(),
        epochs: 1,
        steps_per_epoch: 1,
        parameters: 1,
        threads: 1,
        libtorch: String::new(),
        precision: None,
        resumed_from: None,
        pid_start: Some(start - 1000),
        slurm_job: None,
        budget_seconds: None,
        init: None,
    };
    std::fs::write(impostor.join("events.jsonl"), record.to_line()).expect("write");
    let mut watcher = Watcher::new(segtop::workspace::Workspace::new(dir.path()));
    // The watcher reads the whole process table every tenth look and only the run's
    // processes in between: sample both ways.
    let mut samples = Vec::new();
    for _ in 0..12 {
        // Not a wait: time for the process to use CPU between two looks, which measure it.
        std::thread::sleep(Duration::from_millis(250));
        for update in watcher.look().runs {
            match (update.id.as_str(), update.sample) {
                ("20261126-000000-impostor", Some(sample)) => assert_eq!(sample.liveness, Liveness::Gone),
                (_, Some(sample)) => samples.push(sample),
                _ => {}
            }
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads");
    let _ = child.kill();
    let _ = child.wait();
    // Killed without run_finished: the next look finds the process gone (the run is lost).
    let gone = watcher
        .look()
        .runs
        .iter()
        .filter(|u| u.id != "20261126-000000-impostor")
        .find_map(|u| u.sample)
        .expect("a sample after the kill");
    assert_eq!(gone.liveness, Liveness::Gone);
    // The first look reads the pid from the events before it samples: every look samples.
    assert_eq!(samples.len(), 12, "one sample per look: {samples:?}");
    assert!(threads > 1, "the trainer should be multi-threaded ({threads})");
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let rss_mb = rss_kb * 1024.0 / 1e6;
    for sample in samples {
        assert_eq!(sample.liveness, Liveness::Alive);
        assert!(
            sample.cpu_percent <= 100.0 * cores + 20.0,
            "cpu {}% on {cores} cores",
            sample.cpu_percent
        );
        assert!(
            sample.rss_mb > 0.5 * rss_mb && sample.rss_mb < 1.5 * rss_mb,
            "sampled {} MB, the kernel says {rss_mb} MB",
            sample.rss_mb
        );
    }
}
