//! The queue and supervisor with real trainers: a sweep on two cores, an experiment edited
//! while its run runs, a trainer out of memory and a disk that fills while checkpointing.

#![cfg(feature = "trainer")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use segtop::run::RunDir;
use segtop::run::events::{Event, Outcome};

use super::stdout;
use super::wait::{poll_until, wait_until};

/// `segtop ARGS` in `dir`, with settings (`[queue]`) from `dir/config`.
fn segtop(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segtop"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("SEGTOP_MACHINE_DIR", dir.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .env_remove("NO_COLOR")
        .output()
        .expect("segtop runs")
}

fn settings(dir: &Path, queue: &str) {
    std::fs::create_dir_all(dir.join("config/segtop")).expect("mkdir");
    std::fs::write(dir.join("config/segtop/settings.toml"), format!("[queue]\n{queue}")).expect("write");
}

pub(crate) fn events(run: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap_or_default();
    text.lines().filter_map(|line| Event::from_line(line).ok()).collect()
}

pub(crate) fn finished(run: &Path) -> Option<(Outcome, Option<String>)> {
    events(run).into_iter().rev().find_map(|e| match e {
        Event::RunFinished { outcome, reason, .. } => Some((outcome, reason)),
        _ => None,
    })
}

/// Waits until every run directory under `dir/runs` has finished and the supervisor is gone.
fn wait_for_all(dir: &Path, runs: usize, limit: Duration) -> Vec<PathBuf> {
    let run_dirs = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
            .expect("runs/")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    let what = format!("{runs} runs to finish and the supervisor to end");
    poll_until(&what, limit, || {
        let dirs = run_dirs();
        let workspace = segtop::workspace::Workspace::new(dir);
        let done = dirs.len() == runs
            && dirs
                .iter()
                .all(|d| finished(d).is_some() && d.join(RunDir::EXIT).is_file())
            && !segtop::supervisor::is_running(&workspace);
        done.then_some(dirs)
    })
    .unwrap_or_else(|timeout| {
        timeout.fail(format_args!(
            "runs: {:?}\n{}",
            run_dirs(),
            std::fs::read_to_string(dir.join("runs/supervisor.log")).unwrap_or_default()
        ))
    })
}

pub(crate) fn tiny_text(epochs: u32) -> String {
    format!(
        "[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
         [data.synthetic]\ncases = 4\nseed = 3\nshape = [48, 48, 32]\n\
         [model]\nbase_filters = 4\ndepth = 3\n\
         [train]\npatch_size = [16, 16, 16]\nbatch_size = 2\nepochs = {epochs}\npatches_per_epoch = 8\nwarmup_epochs = 0\n\
         [validate]\nevery = 1\n[run]\nname = \"tiny\"\n"
    )
}

/// A sweep of 4 runs on a 2-core budget, 2 at once: never more than 2 trainers alive, each
/// with 1 thread; all finish; `runs --sweep` ranks them with the values they vary.
#[test]
fn a_sweep_of_four_runs_shares_two_cores_and_every_run_finishes() {
    let dir = tempfile::tempdir().expect("temp dir");
    settings(dir.path(), "cores = 2\nmax_concurrent = 2\nreserve_ram = 0\n");
    let file = dir.path().join("sweep.toml");
    std::fs::write(
        &file,
        format!(
            "{}\n[sweep]\n\"train.lr\" = [1e-3, 3e-3]\n\"model.base_filters\" = [4, 6]\n",
            tiny_text(2)
        ),
    )
    .expect("write");
    let queued = segtop(dir.path(), &["queue", "sweep.toml"]);
    assert!(queued.status.success(), "{queued:?}");
    let said = stdout(&queued);
    assert!(said.contains("4 runs of sweep.toml"), "{said}");
    let sweep_id = said
        .split_whitespace()
        .nth(1)
        .map(|s| s.trim_end_matches(':').to_string())
        .expect("the sweep id");

    let runs = wait_for_all(dir.path(), 4, Duration::from_secs(300));
    let mut spans = Vec::new();
    for run in &runs {
        let run = RunDir::open(run);
        assert!(
            matches!(finished(run.path()), Some((Outcome::Completed, _))),
            "{}",
            run.id()
        );
        let launch = run.read_launch().expect("launch.json");
        assert_eq!(launch.threads, Some(1));
        let exit = run.read_exit().expect("exit.json");
        assert_eq!((Some(exit.pid), exit.code), (launch.pid, Some(0)));
        spans.push((launch.time, exit.time));
    }
    // At most two trainers at once, and two did run together.
    let most = spans
        .iter()
        .map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count())
        .max();
    assert_eq!(most, Some(2), "{spans:?}");

    let ranked = segtop(dir.path(), &["runs", "--sweep", &sweep_id, "--json"]);
    assert!(ranked.status.success(), "{ranked:?}");
    let ranked: Vec<serde_json::Value> = serde_json::from_str(&stdout(&ranked)).expect("JSON");
    assert_eq!(ranked.len(), 4);
    let means: Vec<f64> = ranked
        .iter()
        .map(|r| {
            let d = &r["best_dice"];
            ["et", "tc", "wt"]
                .iter()
                .map(|k| d[k].as_f64().expect("dice"))
                .sum::<f64>()
                / 3.0
        })
        .collect();
    assert!(means.windows(2).all(|w| w[0] >= w[1]), "{means:?}");
    let mut values: Vec<String> = ranked
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["sweep"]["values"]["train.lr"], r["sweep"]["values"]["model.base_filters"]
            )
        })
        .collect();
    values.sort();
    assert_eq!(values, ["0.001 4", "0.001 6", "0.003 4", "0.003 6"]);
    let table = stdout(&segtop(dir.path(), &["runs", "--sweep", "tiny"]));
    assert!(table.contains("base_filters=6 lr=0.003"), "{table}");
    let queue = stdout(&segtop(dir.path(), &["queue"]));
    assert!(queue.contains("the queue is empty"), "{queue}");

    // The report of the best run: curves and a montage whose truth and prediction columns
    // carry label colours over the grey image.
    let best = ranked[0]["id"].as_str().expect("id").to_string();
    let out = dir.path().join("report");
    let report = segtop(dir.path(), &["report", &best, "--out", out.to_str().expect("utf-8")]);
    assert!(report.status.success(), "{report:?}");
    let (width, height, _) = png_pixels(&out.join("curves.png"));
    assert_eq!((width, height), (1800, 600));
    let (width, height, pixels) = png_pixels(&out.join("montage.png"));
    assert!(width >= 960 && height > 300, "{width}x{height}");
    // Below the title, headings and colour legend.
    let coloured = |x0: usize, x1: usize| {
        (100..height)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = &pixels[(y * width + x) * 3..][..3];
                p.iter().max().unwrap_or(&0) - p.iter().min().unwrap_or(&0) > 40
            })
            .count()
    };
    let third = width / 3;
    assert_eq!(coloured(0, third), 0, "the image column is grey");
    assert!(coloured(third, 2 * third) > 100, "the ground truth is drawn in colour");
}

/// Width, height and RGB bytes of a PNG.
/// A halving sweep of 3 runs (eta 3) with real trainers: each stops at the end of rung 0,
/// validated; the best continues from its checkpoint to the top rung and completes, the other
/// two are pruned with their reason, and a pruned run reads as pruned.
#[test]
fn a_halving_sweep_promotes_the_best_run_from_its_checkpoint_and_prunes_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    settings(dir.path(), "cores = 2\nmax_concurrent = 2\nreserve_ram = 0\n");
    let text = tiny_text(10_000).replace(
        "warmup_epochs = 0\n",
        "warmup_epochs = 0\nearly_stopping_patience = 0\n",
    );
    std::fs::write(
        dir.path().join("halve.toml"),
        format!("{text}\n[sweep]\nmethod = \"halving\"\nrung = \"10s\"\n\"train.lr\" = [1e-3, 3e-3, 1e-2]\n"),
    )
    .expect("write");
    let queued = segtop(dir.path(), &["queue", "halve.toml"]);
    assert!(queued.status.success(), "{queued:?}");
    let runs = wait_for_all(dir.path(), 3, Duration::from_secs(300));
    let log = std::fs::read_to_string(dir.path().join("runs/supervisor.log")).unwrap_or_default();
    let record = |run: &Path| segtop::run::RunDir::open(run).read_rung().expect("rung.json");
    let (promoted, pruned): (Vec<&PathBuf>, Vec<&PathBuf>) = runs
        .iter()
        .partition(|run| segtop::run::RunDir::open(run).read_pruned().is_none());
    assert_eq!((promoted.len(), pruned.len()), (1, 2), "{log}");
    let best = promoted[0];
    // It stopped at the end of rung 0, then went on from its checkpoint and completed.
    let best_events = events(best);
    let starts: Vec<Option<u32>> = best_events
        .iter()
        .filter_map(|e| match e {
            Event::RunStarted { resumed_from, .. } => Some(*resumed_from),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{log}");
    assert!(starts[1].is_some(), "the promoted run started again from scratch");
    assert!(matches!(finished(best), Some((Outcome::Completed, _))), "{log}");
    assert!(best_events.iter().any(|e| matches!(e, Event::Evaluation { .. })));
    let best_record = record(best);
    assert_eq!((best_record.rung, best_record.scores.len()), (1, 1));
    // The pruned ones stopped at the end of rung 0, scored no better, and say why.
    for run in &pruned {
        let (outcome, reason) = finished(run).expect("finished");
        assert_eq!(outcome, Outcome::Stopped);
        assert!(
            reason
                .unwrap_or_default()
                .starts_with(segtop::schedule::halving::RUNG_END)
        );
        let record = record(run);
        assert_eq!((record.rung, record.scores.len()), (0, 1));
        assert!(record.scores[0] <= best_record.scores[0], "{log}");
        let why = segtop::run::RunDir::open(run)
            .read_pruned()
            .expect("pruned.json")
            .reason;
        assert!(why.starts_with("rung 0: legacy Dice"), "{why}");
        assert!(!events(run).iter().any(|e| matches!(e, Event::Evaluation { .. })));
    }
    assert!(
        log.contains("promoted to rung 1") && log.contains("pruned: rung 0"),
        "{log}"
    );
    let listed = stdout(&segtop(dir.path(), &["runs"]));
    assert_eq!(listed.matches(" pruned ").count(), 2, "{listed}");
}

fn png_pixels(path: &Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("the PNG exists"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("decodes");
    assert_eq!(info.color_type, png::ColorType::Rgb, "{path:?}");
    pixels.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, pixels)
}

/// The run keeps the experiment it was queued with: editing the file meanwhile changes
/// nothing about it.
#[test]
fn an_experiment_edited_while_its_run_runs_does_not_change_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    settings(dir.path(), "reserve_ram = 0\n");
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, tiny_text(6)).expect("write");
    let queued = segtop(dir.path(), &["queue", "tiny.toml"]);
    assert!(queued.status.success(), "{queued:?}");
    let run = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a run directory");
    let frozen = std::fs::read_to_string(run.join("experiment.toml")).expect("frozen");
    wait_until("the run to train", Duration::from_secs(120), || {
        events(&run)
            .iter()
            .any(|e| matches!(e, Event::Step { .. }))
            .then_some(())
    });
    std::fs::write(
        &file,
        tiny_text(6)
            .replace("epochs = 6", "epochs = 1")
            .replace("base_filters = 4", "base_filters = 9"),
    )
    .expect("edit");
    wait_for_all(dir.path(), 1, Duration::from_secs(300));
    assert_eq!(
        std::fs::read_to_string(run.join("experiment.toml")).expect("frozen"),
        frozen
    );
    let epochs = events(&run)
        .iter()
        .filter(|e| matches!(e, Event::EpochEnd { .. }))
        .count();
    assert_eq!(epochs, 6);
    assert!(matches!(finished(&run), Some((Outcome::Completed, _))));
}

/// A trainer that runs out of memory ends failed with the reason in plain words, and the
/// queue moves on to the next run.
#[test]
fn a_trainer_out_of_memory_fails_with_a_reason_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    settings(dir.path(), "max_concurrent = 1\nreserve_ram = 0\n");
    let workspace = segtop::workspace::Workspace::new(dir.path());
    let big = dir.path().join("big.toml");
    std::fs::write(
        &big,
        tiny_text(1)
            .replace("base_filters = 4", "base_filters = 16")
            .replace(
                "patch_size = [16, 16, 16]\nbatch_size = 2",
                "patch_size = [48, 48, 32]\nbatch_size = 8",
            )
            .replace("name = \"tiny\"", "name = \"big\""),
    )
    .expect("write");
    let tiny = dir.path().join("tiny.toml");
    std::fs::write(&tiny, tiny_text(2)).expect("write");
    // Queued here, without a supervisor: the test starts its own under a memory limit.
    let queue = segtop::schedule::queue::Queue::new(&workspace);
    let big_run = queue.add(&workspace, &big, None).expect("queued").remove(0).run;
    let tiny_run = queue.add(&workspace, &tiny, None).expect("queued").remove(0).run;
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_segtop"));
    supervisor
        .args(["supervise"])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(std::fs::File::create(dir.path().join("supervisor.out")).expect("create"))
        .stderr(std::process::Stdio::null());
    limit(&mut supervisor, libc::RLIMIT_AS, 800 << 20);
    let mut supervisor = supervisor.spawn().expect("the supervisor runs");
    let status = poll_until("the supervisor to finish", Duration::from_secs(300), || {
        supervisor.try_wait().expect("wait")
    })
    .unwrap_or_else(|timeout| {
        let _ = supervisor.kill();
        timeout.fail("a trainer hangs instead of failing")
    });
    assert!(status.success(), "{status:?}");

    let (outcome, reason) = finished(big_run.path()).unwrap_or_else(|| {
        let log = std::fs::read_to_string(big_run.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        panic!(
            "the big run has no run_finished; exit {:?}; events end {:?}; train.log ends {tail:?}",
            big_run.read_exit(),
            events(big_run.path()).last()
        )
    });
    assert_eq!(outcome, Outcome::Failed);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with("out of memory: libtorch could not allocate"),
        "{reason}"
    );
    // libtorch either reports the allocation it could not make (segtop exits with 1) or,
    // when oneDNN cannot map a kernel it generated, crashes on it (SIGSEGV); the reason above
    // is recorded either way.
    let exit = big_run.read_exit().expect("an exit record");
    assert!(exit.code == Some(1) || exit.signal == Some(libc::SIGSEGV), "{exit:?}");
    let runs = segtop(dir.path(), &["runs", "--json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&stdout(&runs)).expect("JSON");
    let big_row = runs.iter().find(|r| r["id"] == big_run.id().as_str()).expect("listed");
    assert_eq!(big_row["state"], "failed");
    assert!(
        big_row["error"].as_str().is_some_and(|e| e.contains("out of memory")),
        "{big_row}"
    );
    assert!(matches!(finished(tiny_run.path()), Some((Outcome::Completed, _))));
}

/// A checkpoint that cannot be written (the file size limit stands in for a full disk)
/// leaves the previous checkpoint complete, and the run failed with the reason; it resumes
/// from that checkpoint once there is room.
#[test]
fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = dir.path().join("tiny.toml");
    std::fs::write(&experiment, tiny_text(4)).expect("write");
    let mut first = super::train::start_and_wait(dir.path(), &experiment, |events| {
        events.iter().any(|e| matches!(e, Event::Checkpoint { .. }))
    });
    let stopped = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    assert_eq!(first.wait().expect("stops").code(), Some(3));
    let run = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a run");
    let checkpoints = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
            .expect("checkpoints/")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = checkpoints();
    let step = before
        .iter()
        .find(|n| n.starts_with("step-"))
        .expect("a checkpoint")
        .clone();
    let state_before = std::fs::read(run.join("checkpoints").join(&step).join("state.json")).expect("state");

    // Resume with files limited to 60 kB: events and previews fit, the 90 kB model does not.
    let mut resumed = Command::new(env!("CARGO_BIN_EXE_segtop-train"));
    resumed
        .args(["train", "--resume"])
        .arg(&run)
        .current_dir(dir.path())
        .env("SEGTOP_THREADS", "1")
        .env("SEGTOP_MACHINE_DIR", dir.path().join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    limit(&mut resumed, libc::RLIMIT_FSIZE, 60_000);
    let output = resumed.output().expect("runs");
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (outcome, reason) = finished(&run).expect("finished");
    assert_eq!(outcome, Outcome::Failed);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("File too large") && reason.contains("model.safetensors"),
        "{reason}"
    );
    assert_eq!(checkpoints(), before, "no half-written checkpoint left behind");
    assert_eq!(
        std::fs::read(run.join("checkpoints").join(&step).join("state.json")).expect("state"),
        state_before
    );

    // With room again, it resumes from that checkpoint and finishes.
    let done = Command::new(env!("CARGO_BIN_EXE_segtop-train"))
        .args(["train", "--resume"])
        .arg(&run)
        .current_dir(dir.path())
        .env("SEGTOP_THREADS", "1")
        .env("SEGTOP_MACHINE_DIR", dir.path().join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .output()
        .expect("runs");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(matches!(finished(&run), Some((Outcome::Completed, _))));
}

/// Sets a resource limit on the child before it runs.
fn limit(command: &mut Command, resource: libc::__rlimit_resource_t, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(resource, &limit) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What the supervisors of a workspace wrote to `runs/supervisor.log`: how many supervised at
/// the same time at most, and how many times each run was started.
fn supervision(log: &str) -> (usize, std::collections::BTreeMap<String, usize>) {
    let (mut at_once, mut most) = (0usize, 0usize);
    let mut started = std::collections::BTreeMap::new();
    for line in log.lines() {
        if line.contains(" supervising ") {
            at_once += 1;
            most = most.max(at_once);
        } else if line.ends_with("supervisor done") {
            at_once = at_once.saturating_sub(1);
        } else if let Some(rest) = line.split(" started ").nth(1) {
            let id = rest.split_whitespace().next().unwrap_or_default().to_string();
            *started.entry(id).or_insert(0) += 1;
        }
    }
    (most, started)
}

#[test]
fn queue_commands_and_supervisors_started_at_the_same_moment_start_each_run_once() {
    const REPETITIONS: usize = 12;
    for repetition in 0..REPETITIONS {
        let dir = tempfile::tempdir().expect("temp dir");
        let ws = dir.path();
        for sub in ["experiments", "data", "runs"] {
            std::fs::create_dir_all(ws.join(sub)).expect("mkdir");
        }
        // An empty dataset: each trainer fails at once, after it has been started.
        for name in ["a", "b"] {
            let text = format!("[data]\nroot = \"data\"\n[train]\nepochs = 1\n[run]\nname = \"{name}\"\n");
            std::fs::write(ws.join(format!("experiments/{name}.toml")), text).expect("write");
        }
        // Four processes spin until the barrier file appears, then become segtop at once.
        let spawn = |args: &[&str], output: &str| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("while [ ! -e go ]; do :; done; exec \"$0\" \"$@\" {output}"))
                .arg(env!("CARGO_BIN_EXE_segtop"))
                .args(args)
                .current_dir(ws)
                .env("XDG_CONFIG_HOME", ws.join("config"))
                .env("SEGTOP_MACHINE_DIR", ws.join(".machine"))
                .env("SEGTOP_OTHER_LOAD", "0")
                .spawn()
                .expect("sh runs")
        };
        let log = ">> runs/supervisor.log 2>&1";
        let mut children = vec![
            spawn(&["queue", "experiments/a.toml"], "> /dev/null 2>&1"),
            spawn(&["queue", "experiments/b.toml"], "> /dev/null 2>&1"),
            spawn(&["supervise"], log),
            spawn(&["supervise"], log),
        ];
        std::fs::write(ws.join("go"), "").expect("barrier");
        for child in &mut children {
            assert!(child.wait().expect("wait").success(), "repetition {repetition}");
        }
        let workspace = segtop::workspace::Workspace::new(ws);
        let run_dirs = || -> Vec<PathBuf> {
            std::fs::read_dir(ws.join("runs"))
                .expect("runs/")
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        };
        let what = "both runs to end and the supervisors to leave";
        let runs = poll_until(what, Duration::from_secs(60), || {
            let runs = run_dirs();
            (runs.len() == 2
                && runs.iter().all(|r| finished(r).is_some())
                && !segtop::supervisor::is_running(&workspace))
            .then_some(runs)
        })
        .unwrap_or_else(|timed_out| {
            let ended: Vec<_> = run_dirs().iter().map(|r| (r.clone(), finished(r).is_some())).collect();
            let queue = std::fs::read_to_string(ws.join("runs/queue.json")).unwrap_or_default();
            timed_out.fail(format!(
                "repetition {repetition}: runs (ended?) {ended:?}; queue.json {queue}"
            ))
        });
        let text = std::fs::read_to_string(ws.join("runs/supervisor.log")).expect("supervisor.log");
        let (at_once, started) = supervision(&text);
        assert_eq!(
            at_once, 1,
            "repetition {repetition}: supervisors at the same time\n{text}"
        );
        for run in &runs {
            let id = run.file_name().expect("id").to_string_lossy().into_owned();
            assert_eq!(
                started.get(&id),
                Some(&1),
                "repetition {repetition}: {id} starts\n{text}"
            );
            let ends = events(run)
                .iter()
                .filter(|e| matches!(e, Event::RunFinished { .. }))
                .count();
            assert_eq!(ends, 1, "repetition {repetition}: {id} ran more than once");
        }
        assert!(
            segtop::schedule::queue::Queue::new(&workspace)
                .read()
                .expect("queue")
                .entries
                .is_empty(),
            "repetition {repetition}: the queue emptied"
        );
    }
}
