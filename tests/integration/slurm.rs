//! Runs on a real Slurm cluster: submitted, pending, running, completed, cancelled with a
//! checkpoint, resumed by resubmission, a sweep as a job array.
//!
//! They need the one-node cluster `scripts/slurm-test-cluster.sh` starts on localhost, and
//! send jobs to no other cluster. Rust cannot skip a test at run time, so they are marked
//! ignored and a plain `cargo test` reports them so; `./quickstart.sh test`, run as root, starts
//! the cluster and then runs them with `cargo test --release --test integration slurm:: --
//! --ignored`. Run on purpose, they fail when no test cluster answers. The workspace is under
//! the target directory, and the tests take the cluster one at a time.

#![cfg(feature = "trainer")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use segtop::run::RunDir;
use segtop::run::events::{Event, Outcome};

use super::wait::poll_until;
use super::{stderr, stdout};

static CLUSTER: Mutex<()> = Mutex::new(());

/// Fails the test unless segtop's test cluster answers.
fn require_cluster() {
    let state = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    let why = match state {
        Ok(out) if out.status.success() && !stdout(&out).trim().is_empty() => {
            // Test jobs go only to the test cluster, never to a real one this machine reaches.
            let config = Command::new("scontrol").args(["show", "config"]).output();
            let name = config.map(|c| stdout(&c)).unwrap_or_default();
            let name = name
                .lines()
                .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == "ClusterName"))
                .map_or(String::new(), |(_, v)| v.trim().to_string());
            if name == "segtop-test" {
                return;
            }
            format!("the cluster that answers is '{name}', not segtop's test cluster; no test jobs are sent to it")
        }
        Ok(out) => format!("sinfo failed: {}", stderr(&out).trim()),
        Err(error) => format!("sinfo cannot run ({error}): Slurm's client commands are not installed"),
    };
    panic!(
        "the Slurm tests need segtop's test cluster: {why}.\n\
         As root: scripts/slurm-test-cluster.sh install && scripts/slurm-test-cluster.sh start"
    );
}

/// A workspace for one test, under the target directory (a path the job sees as we do).
fn workspace(name: &str) -> tempfile::TempDir {
    let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tempfile::Builder::new()
        .prefix(&format!("slurm-{name}-"))
        .tempdir_in(parent)
        .expect("temp dir")
}

fn segtop(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_segtop"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("SEGTOP_MACHINE_DIR", dir.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .output()
        .expect("segtop runs");
    assert!(output.status.success(), "segtop {args:?}: {}", stderr(&output));
    output
}

fn tiny(dir: &Path, file: &str, epochs: u32, extra: &str) {
    let text = format!(
        "[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
         [data.synthetic]\ncases = 4\nseed = 3\nshape = [48, 48, 32]\n\
         [model]\nbase_filters = 4\ndepth = 3\n\
         [train]\npatch_size = [16, 16, 16]\nbatch_size = 2\nepochs = {epochs}\npatches_per_epoch = 8\nwarmup_epochs = 0\n\
         early_stopping_patience = 0\n\
         [validate]\nevery = 1\n[run]\nname = \"tiny\"\nlauncher = \"slurm\"\n[slurm]\ncpus_per_task = 1\n{extra}"
    );
    std::fs::write(dir.join(file), text).expect("write");
}

/// `segtop runs --json`, by run id.
fn runs(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&stdout(&segtop(dir, &["runs", "--json"]))).expect("JSON")
}

fn run_state(dir: &Path, id: &str) -> Option<serde_json::Value> {
    runs(dir).into_iter().find(|r| r["id"] == id)
}

/// Polls `segtop runs` until `id` is in `state` (and `also` holds); every state seen, in order.
fn wait_for(
    dir: &Path,
    id: &str,
    state: &str,
    also: impl Fn(&serde_json::Value) -> bool,
    seen: &mut Vec<String>,
) -> serde_json::Value {
    let mut last = None;
    poll_until(&format!("{id} to be {state}"), Duration::from_secs(180), || {
        let run = run_state(dir, id)?;
        let now = run["state"].as_str().unwrap_or_default().to_string();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == state && also(&run) {
            return Some(run);
        }
        last = Some(run);
        None
    })
    .unwrap_or_else(|timeout| {
        timeout.fail(format_args!(
            "states seen: {seen:?}\nlast: {last:?}\nsqueue: {}\nlog: {}",
            stdout(&Command::new("squeue").output().expect("squeue")),
            std::fs::read_to_string(dir.join("runs").join(id).join("train.log")).unwrap_or_default()
        ))
    })
}

fn events(run: &RunDir) -> Vec<Event> {
    let text = std::fs::read_to_string(run.events()).unwrap_or_default();
    text.lines().filter_map(|line| Event::from_line(line).ok()).collect()
}

/// The one id of the run `segtop queue` printed.
fn submitted_id(said: &str) -> String {
    said.split_whitespace().nth(1).expect("an id").to_string()
}

/// A job that takes every core of the node, so the next one waits; cancelled on drop.
struct Blocker(String);

impl Blocker {
    fn new() -> Blocker {
        let cpus = stdout(&Command::new("sinfo").args(["-h", "-o", "%c"]).output().expect("sinfo"));
        let out = Command::new("sbatch")
            .args(["--parsable", "-J", "segtop-test-blocker", "-o", "/dev/null"])
            .arg(format!("--cpus-per-task={}", cpus.trim()))
            .args(["--wrap", "sleep 600"])
            .output()
            .expect("sbatch");
        assert!(out.status.success(), "{}", stderr(&out));
        Blocker(stdout(&out).trim().to_string())
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs a Slurm cluster: ./quickstart.sh test, as root, starts one and runs these"]
fn a_run_submitted_to_slurm_is_seen_pending_then_running_then_completed() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_cluster();
    let dir = workspace("states");
    tiny(dir.path(), "tiny.toml", 60, "");
    let blocker = Blocker::new();
    let said = stdout(&segtop(dir.path(), &["queue", "tiny.toml"]));
    assert!(said.contains("as Slurm job"), "{said}");
    let id = submitted_id(&said);
    let mut seen = Vec::new();
    // Slurm names a reason at once (Priority, for its first half second, or another while the
    // node finishes the previous test's job), and Resources once the blocker holds every core.
    wait_for(dir.path(), &id, "pending", |r| r["waiting"] == "Resources", &mut seen);
    let mut table = String::new();
    poll_until("segtop runs to show the reason", Duration::from_secs(30), || {
        table = stdout(&segtop(dir.path(), &["runs"]));
        (table.contains("Slurm job") && table.contains("pending (Resources)")).then_some(())
    })
    .unwrap_or_else(|timeout| timeout.fail(&table));

    // Held and released, from the command line as from the dashboard's `p`.
    let said = stdout(&segtop(dir.path(), &["queue", "--pause", &id]));
    assert!(said.starts_with("held") && said.contains("Slurm job"), "{said}");
    let held = wait_for(
        dir.path(),
        &id,
        "pending",
        |r| r["waiting"].as_str().is_some_and(|w| w.starts_with("JobHeld")),
        &mut seen,
    );
    assert_eq!(held["job"]["state"], "PENDING", "{held}");
    segtop(dir.path(), &["queue", "--release", &id]);
    wait_for(
        dir.path(),
        &id,
        "pending",
        |r| r["waiting"].as_str().is_some_and(|w| !w.starts_with("JobHeld")),
        &mut seen,
    );

    drop(blocker);
    let running = wait_for(dir.path(), &id, "running", |r| r["epoch"].as_u64() > Some(0), &mut seen);
    assert_eq!(running["job"]["state"], "RUNNING", "{running}");
    let done = wait_for(dir.path(), &id, "done", |_| true, &mut seen);
    assert_eq!(done["epoch"], 60);
    // Starting may pass between two looks; the rest may not.
    seen.retain(|s| s != "starting");
    assert_eq!(seen, ["pending", "running", "done"]);

    let run = RunDir::open(dir.path().join("runs").join(&id));
    let launch = run.read_launch().expect("launch.json");
    assert_eq!(launch.launcher, segtop::experiment::LauncherKind::Slurm);
    let job = launch.job.expect("a job id");
    assert!(job.bytes().all(|b| b.is_ascii_digit()), "{job}");
    let script = std::fs::read_to_string(run.path().join("slurm.sh")).expect("the job script");
    for line in [
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --signal=B:USR1@180",
        "#SBATCH --open-mode=append",
    ] {
        assert!(script.contains(line), "{script}");
    }
    // The trainer's output went into the run directory; it used the cores Slurm granted.
    let log = std::fs::read_to_string(run.log()).expect("train.log");
    assert!(log.contains("epoch 60/60"), "{log}");
    let started = events(&run).iter().find_map(|e| match e {
        Event::RunStarted { threads, slurm_job, .. } => Some((*threads, slurm_job.clone())),
        _ => None,
    });
    assert_eq!(started, Some((1, Some(job))), "the trainer names its job");
}

#[test]
#[ignore = "needs a Slurm cluster: ./quickstart.sh test, as root, starts one and runs these"]
fn a_run_cancelled_mid_run_stops_with_a_checkpoint_and_resumes_by_resubmission() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_cluster();
    let dir = workspace("cancel");
    tiny(dir.path(), "long.toml", 5000, "");
    let id = submitted_id(&stdout(&segtop(dir.path(), &["queue", "long.toml"])));
    let run = RunDir::open(dir.path().join("runs").join(&id));
    let mut seen = Vec::new();
    wait_for(
        dir.path(),
        &id,
        "running",
        |r| r["epoch"].as_u64() >= Some(2),
        &mut seen,
    );
    let first = run.read_launch().and_then(|l| l.job).expect("a job");

    // Cancelled from outside segtop, as a user or an administrator would.
    let cancelled = Command::new("scancel").arg(&first).output().expect("scancel");
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let stopped = wait_for(dir.path(), &id, "stopped", |_| true, &mut seen);
    let epoch = stopped["epoch"].as_u64().expect("an epoch");
    let said_stopped = events(&run).iter().any(|e| {
        matches!(
            e,
            Event::RunFinished {
                outcome: Outcome::Stopped,
                ..
            }
        )
    });
    assert!(said_stopped, "no run_finished stopped: {:?}", events(&run));
    assert!(
        std::fs::read_dir(run.checkpoints()).expect("checkpoints/").count() > 0,
        "no checkpoint"
    );

    // Resumed: a new job, and the trainer goes on from the checkpoint.
    let said = stdout(&segtop(dir.path(), &["resume", &id]));
    assert!(
        said.contains("resubmitted") && said.contains("to Slurm as job"),
        "{said}"
    );
    let second = run.read_launch().and_then(|l| l.job).expect("a job");
    assert_ne!(first, second);
    wait_for(
        dir.path(),
        &id,
        "running",
        |r| r["epoch"].as_u64() > Some(epoch),
        &mut seen,
    );
    let resumed = events(&run).iter().any(|e| {
        matches!(e, Event::RunStarted { resumed_from: Some(from), .. } if u64::from(*from) >= epoch.saturating_sub(1))
    });
    assert!(resumed, "no run_started resumed from the checkpoint");

    // segtop's own stop: the trainer alone gets SIGTERM and stops in its own time.
    let said = stdout(&segtop(dir.path(), &["stop", &id]));
    assert!(said.contains(&format!("Slurm job {second}")), "{said}");
    wait_for(dir.path(), &id, "stopped", |_| true, &mut seen);
    let log = std::fs::read_to_string(run.log()).expect("train.log");
    assert!(log.matches("checkpoint written").count() >= 2, "{log}");
}

#[test]
#[ignore = "needs a Slurm cluster: ./quickstart.sh test, as root, starts one and runs these"]
fn a_run_at_its_jobs_time_limit_checkpoints_and_goes_on_in_a_new_job() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_cluster();
    let dir = workspace("time-limit");
    // Three minutes, told 100 s before: Slurm sends SIGUSR1 20 to 80 s into each job.
    tiny(dir.path(), "long.toml", 5000, "time = \"3\"\nsignal_seconds = 100\n");
    let id = submitted_id(&stdout(&segtop(dir.path(), &["queue", "long.toml"])));
    let run = RunDir::open(dir.path().join("runs").join(&id));
    let first = run.read_launch().and_then(|l| l.job).expect("a job");
    let mut seen = Vec::new();
    // The trainer itself submits the run again once its checkpoint is written.
    let again = wait_for(
        dir.path(),
        &id,
        "running",
        |r| r["job"]["id"].as_str().is_some_and(|j| j != first) && r["epoch"].as_u64() > Some(0),
        &mut seen,
    );
    let second = again["job"]["id"].as_str().expect("a job id").to_string();
    let sessions: Vec<Event> = events(&run);
    let stopped_at_limit = sessions.iter().any(|e| {
        matches!(e, Event::RunFinished { outcome: Outcome::Stopped, reason: Some(r), .. } if r.contains("time limit"))
    });
    assert!(stopped_at_limit, "no run_finished at the time limit: {sessions:?}");
    let resumed = sessions
        .iter()
        .any(|e| matches!(e, Event::RunStarted { resumed_from: Some(_), slurm_job: Some(j), .. } if *j == second));
    assert!(resumed, "the new job did not resume from the checkpoint: {sessions:?}");
    let log = std::fs::read_to_string(run.log()).expect("train.log");
    assert!(log.contains(&format!("submitted again as Slurm job {second}")), "{log}");

    // A stop is a stop, not a time limit: the run is not submitted again.
    segtop(dir.path(), &["stop", &id]);
    wait_for(dir.path(), &id, "stopped", |_| true, &mut seen);
    // Not a wait: time in which a wrongly resubmitted job would show up, to prove none does.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(run.read_launch().and_then(|l| l.job), Some(second));
    assert_eq!(run_state(dir.path(), &id).expect("the run")["state"], "stopped");
}

#[test]
#[ignore = "needs a Slurm cluster: ./quickstart.sh test, as root, starts one and runs these"]
fn a_sweep_goes_to_slurm_as_one_job_array_unless_its_runs_ask_for_different_resources() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    require_cluster();
    let dir = workspace("array");
    tiny(dir.path(), "sweep.toml", 3, "[sweep]\n\"train.lr\" = [1e-3, 3e-3]\n");
    let said = stdout(&segtop(dir.path(), &["queue", "sweep.toml"]));
    let sweep = said
        .split_whitespace()
        .nth(1)
        .map(|s| s.trim_end_matches(':').to_string())
        .expect("the sweep id");
    let ids: Vec<String> = said
        .lines()
        .filter(|l| l.trim_start().starts_with("submitted"))
        .map(|l| l.split_whitespace().nth(1).expect("an id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{said}");
    let jobs: Vec<String> = ids
        .iter()
        .map(|id| {
            RunDir::open(dir.path().join("runs").join(id))
                .read_launch()
                .and_then(|l| l.job)
                .expect("a job")
        })
        .collect();
    let array = jobs[0].split('_').next().expect("an array id").to_string();
    assert_eq!(jobs, [format!("{array}_0"), format!("{array}_1")]);
    let mut seen = Vec::new();
    for (id, job) in ids.iter().zip(&jobs) {
        wait_for(dir.path(), id, "done", |_| true, &mut seen);
        let named = events(&RunDir::open(dir.path().join("runs").join(id)))
            .iter()
            .any(|e| matches!(e, Event::RunStarted { slurm_job: Some(j), .. } if j == job));
        assert!(named, "{id}'s trainer names its array task {job}");
        let log = std::fs::read_to_string(dir.path().join("runs").join(id).join("train.log")).expect("train.log");
        assert!(
            log.contains(id.as_str()),
            "each task writes into its own run's log: {log}"
        );
    }
    let ranked: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&segtop(dir.path(), &["runs", "--sweep", &sweep, "--json"]))).expect("JSON");
    assert_eq!(ranked.len(), 2);

    // Runs that differ in what they ask of Slurm go as separate jobs.
    tiny(
        dir.path(),
        "mem.toml",
        1,
        "[sweep]\n\"slurm.mem\" = [\"1000M\", \"1100M\"]\n",
    );
    let said = stdout(&segtop(dir.path(), &["queue", "mem.toml"]));
    let jobs: Vec<&str> = said
        .lines()
        .filter_map(|l| l.split("as Slurm job ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(jobs.len(), 2, "{said}");
    assert!(jobs.iter().all(|j| !j.contains('_')) && jobs[0] != jobs[1], "{said}");
    for id in said.lines().filter(|l| l.contains("as Slurm job")) {
        let id = id.split_whitespace().nth(1).expect("an id");
        wait_for(dir.path(), id, "done", |_| true, &mut seen);
    }
}
