//! The supervisor: one background `segtop supervise` process per workspace that starts queued
//! runs as resources allow, is the parent of the trainers it starts and records how each one
//! ended (`exit.json`), so a run that dies without a word still reads as failed with a reason.
//!
//! Whoever queues a run (the dashboard, `segtop queue`, `segtop resume`) calls [`ensure`],
//! which starts the supervisor when none holds `runs/.supervisor.lock`. It leaves when the
//! queue holds nothing it could start and none of its trainers is alive, so nothing stays
//! behind on a shared server. Closing the dashboard or the SSH session touches neither the
//! supervisor nor the trainers: each has a session of its own. When the supervisor is killed,
//! its trainers carry on; their exit is then known from their events only.
//!
//! On a shared server every supervisor also counts the trainers of other users and
//! workspaces, from the machine's register ([`crate::schedule::machine`]): their cores and
//! the memory they will still take. Supervisors take turns looking and starting under the
//! register's admission lock, so two of them never hand out the same free cores, and users
//! with waiting runs take turns as fair share gives them ([`crate::schedule::shares`]).

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

use crate::run::RunDir;
use crate::run::events::EventLog;
use crate::schedule::admission::{Ahead, LiveRun, Machine};
use crate::schedule::launcher::{self, Launcher};
use crate::schedule::machine::{MAX_LISTED_RUNS, Register, TrainerRecord, Turn, WaitingRun, current_uid};
use crate::schedule::queue::{self, Outcome, Queue, QueueSettings, Scheduled};
use crate::schedule::shares::{self, Shares};
use crate::workspace::Workspace;

pub mod sweeps;

const LOCK_FILE: &str = ".supervisor.lock";
pub const LOG_FILE: &str = "supervisor.log";

/// How often the supervisor looks at the queue and its trainers.
const TICK: Duration = Duration::from_millis(500);
/// How long a supervisor waits for the machine's admission lock before it admits without it.
const ADMISSION_PATIENCE: Duration = Duration::from_secs(5);

/// Ticks between two looks at halving sweeps (besides one whenever a trainer ends).
const HALVING_TICKS: u32 = 6;

fn lock_path(workspace: &Workspace) -> PathBuf {
    workspace.runs_dir().join(LOCK_FILE)
}

/// Takes the supervisor lock without waiting; `None` when another supervisor holds it.
fn try_lock(workspace: &Workspace) -> anyhow::Result<Option<File>> {
    queue::lock_file(&lock_path(workspace), libc::LOCK_EX | libc::LOCK_NB)
}

/// Whether a supervisor is running for the workspace.
pub fn is_running(workspace: &Workspace) -> bool {
    matches!(try_lock(workspace), Ok(None))
}

/// Starts the supervisor in the background unless one is running. Returns whether it started one.
pub fn ensure(workspace: &Workspace) -> anyhow::Result<bool> {
    if is_running(workspace) {
        return Ok(false);
    }
    let exe = std::env::current_exe().context("cannot find the running segtop executable")?;
    let log_path = workspace.runs_dir().join(LOG_FILE);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_err = log.try_clone().context("cannot share the supervisor log")?;
    let root = std::fs::canonicalize(workspace.root()).unwrap_or_else(|_| workspace.root().to_path_buf());
    let mut command = Command::new(exe);
    command
        .arg("--workspace")
        .arg(&root)
        .arg("supervise")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    crate::run::process::detach(&mut command);
    let mut child = command.spawn().context("cannot start the segtop supervisor")?;
    // The supervisor outlives us; a thread waits for it so it leaves no zombie while we live.
    std::thread::spawn(move || child.wait());
    Ok(true)
}

/// The supervisor's loop: `segtop supervise`. Returns at once when another one is running.
pub fn run(workspace: &Workspace, launcher: &dyn Launcher, settings: &dyn Fn() -> QueueSettings) -> anyhow::Result<()> {
    let Some(_lock) = try_lock(workspace)? else {
        return Ok(());
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    say(&format!("supervising {}", workspace.runs_dir().display()));
    let mut admission = Admission {
        system: System::new_with_specifics(RefreshKind::nothing())
            .map_err(|e| anyhow::anyhow!("cannot read the process table: {e}"))?,
        host: System::host_name().unwrap_or_default(),
        register: Register::here(),
        said: HashSet::new(),
        turn: Turn::default(),
        contending: false,
        last_error: String::new(),
        load: OtherLoad::default(),
    };
    admission.prime(workspace, &settings());
    let queue = Queue::new(workspace);
    let mut children: Vec<(RunDir, Child)> = Vec::new();
    let mut ticks: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let before = children.len();
        reap(&mut children, &admission.register);
        let ended = children.len() < before;
        // Halving sweeps: promote or prune the runs that reached the end of their rung (a
        // look every few ticks, and whenever a trainer ended).
        ticks += 1;
        if ticks.is_multiple_of(HALVING_TICKS) || ended {
            match sweeps::tick(workspace, &queue) {
                Ok(lines) => lines.iter().for_each(|line| say(line)),
                Err(error) => say(&format!("halving: {error:#}")),
            }
        }
        admission.schedule(workspace, &settings(), launcher, &queue, &mut children);
        let waiting = queue
            .read()
            .map(|q| q.entries.iter().any(|e| !e.paused))
            .unwrap_or(true);
        if !waiting && children.is_empty() {
            break;
        }
        std::thread::sleep(TICK);
    }
    admission.register.withdraw_waiting(current_uid(), std::process::id());
    say("nothing left to start; supervisor done");
    Ok(())
}

/// What the supervisor keeps from one look at the machine to the next.
struct Admission {
    system: System,
    host: String,
    /// The machine's register of trainers and waiting runs.
    register: Register,
    /// Register warnings already logged.
    said: HashSet<String>,
    /// Where this supervisor stands in fair share's turns.
    turn: Turn,
    /// Whether the register holds a waiting record of ours (we contend for cores).
    contending: bool,
    /// The queue's latest error, logged once.
    last_error: String,
    /// Cores other programs keep busy.
    load: OtherLoad,
}

impl Admission {
    /// Starts the queued runs that fit now (the trainers started join `children`), then
    /// tells the register what still waits, all under the machine's admission lock.
    fn schedule(
        &mut self,
        workspace: &Workspace,
        settings: &QueueSettings,
        launcher: &dyn Launcher,
        queue: &Queue,
        children: &mut Vec<(RunDir, Child)>,
    ) {
        let (shares, problem) = Shares::here();
        if let Some(problem) = problem
            && self.said.insert(problem.clone())
        {
            say(&problem);
        }
        // One supervisor of the machine at a time looks and starts (see Register::lock).
        let machine_lock = self.register.lock(ADMISSION_PATIENCE);
        let scheduled = self.look_and_start(workspace, settings, launcher, queue);
        match scheduled {
            Ok(scheduled) => {
                self.last_error.clear();
                self.publish(&scheduled);
                drop(machine_lock);
                for outcome in scheduled.outcomes {
                    if let Outcome::Started { started, .. } = &outcome {
                        let weight = shares.weight(&crate::schedule::machine::user_name(current_uid()));
                        self.turn.last_started = Some(Utc::now());
                        self.turn.pass += f64::from(started.launch.threads.unwrap_or(1).max(1)) / weight;
                    }
                    if let Some(child) = report(workspace, outcome) {
                        children.push(child);
                    }
                }
            }
            Err(error) => {
                self.publish(&Scheduled::default());
                drop(machine_lock);
                // A broken queue file stays as it is for the user to fix; say so once.
                let message = format!("{error:#}");
                if message != self.last_error {
                    say(&message);
                    self.last_error = message;
                }
            }
        }
    }

    /// One look at the machine and the queue: starts what fits (see [`queue::schedule`]),
    /// other users' turns counted.
    fn look_and_start(
        &mut self,
        workspace: &Workspace,
        settings: &QueueSettings,
        launcher: &dyn Launcher,
        queue: &Queue,
    ) -> anyhow::Result<Scheduled> {
        let since = queue
            .read()
            .ok()
            .and_then(|file| file.entries.iter().filter(|e| !e.paused).map(|e| e.added).min());
        let (register, system, host, said, load) = (
            &self.register,
            &mut self.system,
            &self.host,
            &mut self.said,
            &mut self.load,
        );
        let (turn, contending) = (&mut self.turn, self.contending);
        let mut look = || {
            let mut machine = machine(workspace, register, system, host, settings, load);
            if let Some(since) = since {
                let alive: Vec<u32> = machine.live.iter().map(|r| r.pid).collect();
                machine.ahead = users_ahead(register, since, turn, contending, &alive, &mut machine.warnings);
            }
            for warning in &machine.warnings {
                if said.insert(warning.clone()) {
                    say(&format!("machine register: {warning}"));
                }
            }
            machine
        };
        queue::schedule(workspace, settings, launcher, &mut look)
    }

    /// Takes a first sample of the machine's CPU time and of the registered trainers', so that
    /// the first look measures the load of other programs over an interval (a single sample
    /// says nothing): a supervisor that just started sees a busy machine as busy.
    fn prime(&mut self, workspace: &Workspace, settings: &QueueSettings) {
        let mut load = OtherLoad::default();
        machine(
            workspace,
            &self.register,
            &mut self.system,
            &self.host,
            settings,
            &mut load,
        );
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(250)));
    }

    /// Tells other users' supervisors what of ours still waits, to take turns with it (or
    /// that nothing does).
    fn publish(&mut self, scheduled: &Scheduled) {
        let runs: Vec<WaitingRun> = scheduled
            .waiting
            .iter()
            .map(|(run, cores)| WaitingRun {
                run: run.clone(),
                cores: *cores,
            })
            .collect();
        let record = scheduled.since.and_then(|since| {
            let mut record = crate::schedule::machine::waiting_of(&runs, since, self.turn)?;
            record.wants = scheduled.wants;
            record.running = scheduled.running.iter().copied().take(MAX_LISTED_RUNS).collect();
            record.max_concurrent = scheduled.max_concurrent;
            Some(record)
        });
        self.contending = match record {
            Some(record) => self.register.publish_waiting(&record).is_ok(),
            None => {
                self.register.withdraw_waiting(current_uid(), std::process::id());
                false
            }
        };
    }
}

/// Records how each trainer that ended did (`exit.json`) and lets it go.
fn reap(children: &mut Vec<(RunDir, Child)>, register: &Register) {
    children.retain_mut(|(run, child)| match child.try_wait() {
        Ok(Some(status)) => {
            launcher::record_exit(run, child.id(), status);
            // A trainer that died without a word leaves its record; it counts no more.
            register.unregister(current_uid(), child.id());
            let record = run.read_exit().map_or_else(|| format!("{status}"), |r| r.describe());
            say(&format!("{} ended: {record}", run.id()));
            false
        }
        Ok(None) => true,
        Err(error) => {
            say(&format!("{}: cannot wait for its trainer: {error}", run.id()));
            false
        }
    });
}

/// Logs what scheduling did with a run; a trainer it started as our child, to reap later.
fn report(workspace: &Workspace, outcome: Outcome) -> Option<(RunDir, Child)> {
    match outcome {
        Outcome::Started { run, started } => {
            let launch = &started.launch;
            say(&format!(
                "started {} (pid {}, {} threads, needs about {})",
                run.id(),
                launch.pid.map_or_else(|| "?".to_string(), |p| p.to_string()),
                launch.threads.map_or_else(|| "all".to_string(), |t| t.to_string()),
                queue::ByteSize(launch.peak_bytes.unwrap_or(0))
            ));
            started.child.map(|child| (run, child))
        }
        Outcome::Dropped { run, reason } => {
            say(&format!("{run} cannot start: {reason}"));
            mark_failed(&RunDir::open(workspace.runs_dir().join(&run)), &reason);
            None
        }
    }
}

/// Writes a failure into a run that could not start, so it reads failed with the reason.
fn mark_failed(run: &RunDir, reason: &str) {
    if !run.path().is_dir() {
        return;
    }
    if let Ok(mut events) = EventLog::open(&run.events()) {
        let _ = events.emit_failure(reason, 0.0);
    }
}

fn say(message: &str) {
    println!("{} {message}", chrono::Local::now().format("%Y-%m-%d %H:%M:%S"));
}

/// The machine's cores and memory, and the runs alive on it that were launched here.
pub fn machine(
    workspace: &Workspace,
    register: &Register,
    system: &mut System,
    host: &str,
    settings: &QueueSettings,
    load: &mut OtherLoad,
) -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut ours = Vec::new();
    system.refresh_memory();
    let mut launched = Vec::new();
    for dir in crate::run::run_directories(&workspace.runs_dir()).into_values() {
        let run = RunDir::open(dir);
        if let Some(launch) = run.read_launch()
            && launch.host == host
            && let Some(pid) = launch.pid
            && run.read_exit().is_none_or(|exit| exit.pid != pid)
        {
            launched.push((run, launch, pid));
        }
    }
    let pids: Vec<Pid> = launched.iter().map(|(.., pid)| Pid::from_u32(*pid)).collect();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing().with_memory().with_cpu().without_tasks(),
    );
    let mut live = Vec::new();
    for (run, launch, pid) in launched {
        let Some(process) = system.process(Pid::from_u32(pid)) else {
            continue;
        };
        let same = launch
            .pid_start
            .is_none_or(|start| crate::run::process::same_start(process.start_time(), start));
        if !same || process.thread_kind().is_some() {
            continue;
        }
        let peak_bytes = launch.peak_bytes.unwrap_or_else(|| {
            crate::experiment::Experiment::load_frozen(&run.experiment(), workspace.root())
                .map_or(0, |e| crate::cost::peak_bytes(&e))
        });
        live.push(LiveRun {
            id: run.id(),
            pid,
            threads: launch.threads.unwrap_or_else(|| settings.share(cores)),
            peak_bytes,
            rss_bytes: process.memory(),
            owner: None,
        });
        ours.push(pid);
    }
    let own_cpu: f32 = ours
        .iter()
        .filter_map(|pid| system.process(Pid::from_u32(*pid)))
        .map(|p| p.cpu_usage())
        .sum();
    let (others, warnings, their_cpu) = others(register, system, &ours);
    live.extend(others);
    // What the machine is busy with beyond segtop's trainers, in cores.
    system.refresh_cpu_usage();
    let busy = f64::from(system.global_cpu_usage()) / 100.0 * f64::from(cores);
    load.observe((busy - f64::from(own_cpu + their_cpu) / 100.0).max(0.0));
    Machine {
        cores,
        total_ram: system.total_memory(),
        available_ram: system.available_memory(),
        live,
        warnings,
        ahead: Vec::new(),
        other_load: if settings.other_load { load.cores(cores) } else { 0 },
    }
}

/// The cores other programs keep busy, smoothed over the supervisor's last few looks so that a
/// moment's burst does not hold a run back and a steady load does.
#[derive(Debug, Default)]
pub struct OtherLoad {
    /// None before the first look, which is taken as it is.
    cores: Option<f64>,
}

impl OtherLoad {
    /// Weight of the newest look (at 2 looks a second: about 2 s to follow a change).
    const NEWEST: f64 = 0.3;

    fn observe(&mut self, busy_cores: f64) {
        let smoothed = self
            .cores
            .map_or(busy_cores, |cores| cores + Self::NEWEST * (busy_cores - cores));
        self.cores = Some(smoothed);
    }

    /// Whole cores counted as taken: a core busy 70% of the time or more counts.
    fn cores(&self, machine_cores: u32) -> u32 {
        ((self.cores.unwrap_or(0.0) + 0.3).floor().max(0.0) as u32).min(machine_cores)
    }
}

/// Other users whose turn comes before this supervisor's (see [`shares::ahead_of`]); a
/// supervisor that starts waiting (not yet `contending`) first catches up with their pass.
fn users_ahead(
    register: &Register,
    since: DateTime<Utc>,
    turn: &mut Turn,
    contending: bool,
    alive: &[u32],
    warnings: &mut Vec<String>,
) -> Vec<Ahead> {
    let (records, problems) = register.waiting();
    warnings.extend(problems);
    let Some(mut mine) = crate::schedule::machine::waiting_of(&[], since, *turn) else {
        return Vec::new();
    };
    let ahead = shares::ahead_of(&records, &mut mine, !contending, alive);
    turn.pass = mine.pass;
    ahead
}

/// The trainers in the machine's register that are not among `ours` (pids): other users'
/// and other workspaces' runs, and the warnings about records that were skipped.
fn others(register: &Register, system: &mut System, ours: &[u32]) -> (Vec<LiveRun>, Vec<String>, f32) {
    let (records, warnings) = register.live();
    let records: Vec<TrainerRecord> = records.into_iter().filter(|r| !ours.contains(&r.pid)).collect();
    let pids: Vec<Pid> = records.iter().map(|r| Pid::from_u32(r.pid)).collect();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing().with_memory().with_cpu().without_tasks(),
    );
    let cpu: f32 = pids
        .iter()
        .filter_map(|pid| system.process(*pid))
        .map(|p| p.cpu_usage())
        .sum();
    let live = records
        .into_iter()
        .map(|record| LiveRun {
            pid: record.pid,
            rss_bytes: system.process(Pid::from_u32(record.pid)).map_or(0, |p| p.memory()),
            id: record.run,
            threads: record.threads,
            peak_bytes: record.peak_bytes,
            owner: Some(record.user),
        })
        .collect();
    (live, warnings, cpu)
}

/// The workspace-relative path of the supervisor's log.
pub fn log_path(workspace: &Workspace) -> PathBuf {
    workspace.runs_dir().join(LOG_FILE)
}
