//! The watcher: once a second, notices run directories under `runs/`, reads what each run's
//! `events.jsonl` gained (only the new bytes), the end of its `train.log` when it grew, and
//! samples the CPU and memory of live runs' processes and of the host. Everything it learns
//! goes to its reader (the dashboard's UI thread) as one [`Watch`] message.
//!
//! Finished runs are re-read only every few seconds (a resume can append to them).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

use super::config::Config;
use super::model::{LOG_LINES, Liveness, ProcessSample, QueuePlace};
use crate::experiment::sweep::SweepTag;
use crate::run::RunDir;
use crate::run::events::{Event, EventTail};
use crate::run::process::is_trainer_name;
use crate::schedule::machine::Register;
use crate::schedule::overview::MachineView;
use crate::schedule::slurm::{JobRef, JobStatus, Phase};
use crate::workspace::Workspace;

/// Time between two looks.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Finished runs are looked at once in this many intervals.
const FINISHED_EVERY: u64 = 10;
/// The whole process table is read once in this many intervals, to find new child processes.
const PROCESS_TABLE_EVERY: u64 = 10;
/// Slurm is asked about unfinished jobs once in this many intervals (and at once about a
/// job just submitted): a shared cluster's controller is not to be polled every second.
const SLURM_EVERY: u64 = 10;
/// Runs seen for the first time in one look, at most: a workspace of a thousand runs arrives
/// in a few looks in a row, newest first, so the first screen comes at once and no look holds
/// every run twice on its way to the reader.
const FIRST_SIGHT_BATCH: usize = 100;
/// Bytes read from the end of a grown `train.log`.
const LOG_TAIL_BYTES: u64 = 8192;

/// What one look found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Watch {
    pub time: DateTime<Utc>,
    /// Runs with something new (every run, the first time).
    pub runs: Vec<RunUpdate>,
    /// Runs whose directory disappeared.
    pub removed: Vec<String>,
    pub host: Option<HostSample>,
    /// The queue's waiting runs by id, when `queue.json` changed (every run not in it has left).
    pub queue: Option<BTreeMap<String, QueuePlace>>,
    /// Every segtop trainer on the machine, of every user (the machine's register).
    pub machine: Option<MachineView>,
}

/// What applying one run's update brought that a reader may want to say or know.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub id: String,
    /// The newest warning its update carried.
    pub warning: Option<String>,
    /// Its events were read afresh with complete charts.
    pub charts: bool,
}

impl Watch {
    /// Folds this look's runs into `runs`: removed runs leave, new ones are made, every
    /// update is applied and, when the queue changed, every run's place in it is set. The
    /// dashboard and the commands that print keep their runs this one way.
    pub fn apply_runs(&mut self, runs: &mut BTreeMap<String, super::model::RunModel>) -> Vec<Applied> {
        for id in self.removed.drain(..) {
            runs.remove(&id);
        }
        let mut applied = Vec::with_capacity(self.runs.len());
        for update in self.runs.drain(..) {
            applied.push(Applied {
                id: update.id.clone(),
                warning: update.warnings.last().cloned(),
                charts: update.fold.as_ref().is_some_and(|fold| fold.charts.complete),
            });
            let run = runs
                .entry(update.id.clone())
                .or_insert_with(|| super::model::RunModel::new(update.id.clone(), update.dir.clone()));
            update.apply_to(run);
        }
        if let Some(queue) = self.queue.take() {
            for run in runs.values_mut() {
                run.observed.queue = queue.get(&run.id).cloned();
            }
        }
        applied
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunUpdate {
    pub id: String,
    pub dir: PathBuf,
    /// A halving-sweep run's rung record and pruning, when they changed.
    pub halving: Option<HalvingFiles>,
    /// Set the first time a run is seen.
    pub found: Option<RunFound>,
    /// The run's events folded afresh (from its summary the first time it is seen, with
    /// charts when they were asked for); `events` follow on from where it ends.
    pub fold: Option<Box<super::model::RunModel>>,
    pub events: Vec<Event>,
    pub warnings: Vec<String>,
    /// The last lines of `train.log`, when it changed.
    pub log_tail: Option<Vec<String>>,
    pub sample: Option<ProcessSample>,
    /// How its trainer process ended, when its launcher recorded it.
    pub exit: Option<crate::run::ExitRecord>,
    /// Its launch record, when it is new (a first launch, a resume).
    pub launch: Option<crate::run::Launch>,
    /// Its Slurm job's state, when it changed.
    pub job: Option<JobStatus>,
}

impl RunUpdate {
    /// Whether the update carries anything for the reader.
    fn has_news(&self) -> bool {
        self.found.is_some()
            || self.fold.is_some()
            || !self.events.is_empty()
            || !self.warnings.is_empty()
            || self.log_tail.is_some()
            || self.sample.is_some()
            || self.exit.is_some()
            || self.halving.is_some()
            || self.launch.is_some()
            || self.job.is_some()
    }

    /// Folds what the watcher found into the run's model.
    pub fn apply_to(self, run: &mut super::model::RunModel) {
        if let Some(fold) = self.fold {
            run.take_fold(*fold);
        }
        if let Some(found) = self.found {
            run.name = found.name;
            run.observed.created = found.created;
            run.observed.experiment = found.experiment;
            run.observed.sweep = found.sweep;
            run.observed.config = found.config;
            if run.pid.is_none() {
                run.pid = found.pid;
                run.pid_start = found.pid_start;
            }
        }
        for warning in self.warnings {
            run.warn(warning);
        }
        for event in &self.events {
            run.apply(event);
        }
        if let Some(lines) = self.log_tail {
            run.set_log_tail(lines);
        }
        if let Some(exit) = self.exit {
            run.observed.exit = Some(exit);
        }
        if let Some((rung, pruned)) = self.halving {
            run.observed.rung = rung;
            run.observed.pruned = pruned;
        }
        if let Some(launch) = self.launch {
            run.observed.launched = Some(launch.time);
            if launch.job != run.observed.job.as_ref().map(|j| j.id.clone()) {
                run.observed.job = None;
            }
        }
        if let Some(job) = self.job {
            run.observed.job = Some(job);
        }
        if let Some(sample) = self.sample {
            run.sample(sample);
        }
    }
}

/// What a run directory says about itself before its events do.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFound {
    pub name: String,
    pub created: Option<DateTime<Utc>>,
    /// The experiment file it was launched from (dashboard launches only).
    pub experiment: Option<PathBuf>,
    /// The launched trainer's pid and its start time (dashboard launches only).
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// The sweep it belongs to (`sweep.json`).
    pub sweep: Option<SweepTag>,
    /// The frozen experiment as dotted keys and values.
    pub config: Config,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostSample {
    /// Percent of all cores (100 = every core busy).
    pub cpu_percent: f64,
    pub used_memory_mb: f64,
    pub total_memory_mb: f64,
    pub load: [f64; 3],
    pub cores: usize,
}

/// Requests to the watcher thread.
pub enum Request {
    /// A run was just launched: look now.
    Look,
    /// These runs are on screen: read their charts (their whole events) at the next look.
    Charts(Vec<String>),
}

struct Tracked {
    run: RunDir,
    tail: EventTail,
    pid: Option<u32>,
    /// The process's start time, when recorded: a process with the pid but another start
    /// time is not the run's.
    pid_start: Option<u64>,
    /// The process lives on this host, so it can be sampled here.
    local: bool,
    finished: bool,
    /// The process was gone at the last look: a resume may have started a new one.
    gone: bool,
    /// The exit record was read for the process that is gone.
    exit_read: bool,
    log_len: Option<u64>,
    /// Its Slurm job, and its state at the last poll.
    job: Option<JobRef>,
    job_status: Option<JobStatus>,
    /// Its events were read at least once (a finished run is not asked about).
    read: bool,
    /// In a halving sweep: its rung record and pruning as last read (read every look).
    halving: Option<HalvingFiles>,
}

/// A halving-sweep run's `rung.json` and `pruned.json`.
pub type HalvingFiles = (Option<crate::run::RungRecord>, Option<crate::run::Pruned>);

pub struct Watcher {
    workspace: Workspace,
    host: String,
    runs: BTreeMap<String, Tracked>,
    system: Option<System>,
    looks: u64,
    /// `queue.json`'s modification time and length at the last read.
    queue_stamp: Option<(std::time::SystemTime, u64)>,
    /// What Slurm's commands said when they last failed.
    slurm_error: Option<String>,
    /// Ask Slurm at the next look, whether due or not (the user just did something).
    pub slurm_now: bool,
    /// Runs whose charts were asked for, to read at the next look.
    pub charts_wanted: Vec<String>,
    /// Run directories the last look left for the next (see [`FIRST_SIGHT_BATCH`]).
    unseen: usize,
    /// The machine's trainers' runs, read on at each look.
    progresses: super::machine::Progresses,
}

impl Watcher {
    pub fn new(workspace: Workspace) -> Watcher {
        Watcher {
            workspace,
            host: System::host_name().unwrap_or_default(),
            runs: BTreeMap::new(),
            system: System::new().ok(),
            looks: 0,
            queue_stamp: None,
            slurm_error: None,
            slurm_now: false,
            charts_wanted: Vec::new(),
            unseen: 0,
            progresses: super::machine::Progresses::default(),
        }
    }

    /// Whether the last look saw every run directory (else look again at once).
    pub fn settled(&self) -> bool {
        self.unseen == 0
    }

    /// Looks at every run and the host once.
    pub fn look(&mut self) -> Watch {
        let time = Utc::now();
        let mut watch = Watch {
            time,
            ..Watch::default()
        };
        let ids = crate::run::run_directories(&self.workspace.runs_dir());
        let gone: Vec<String> = self.runs.keys().filter(|id| !ids.contains_key(*id)).cloned().collect();
        for id in gone {
            self.runs.remove(&id);
            watch.removed.push(id);
        }
        let mut updates = self.first_sight(ids);
        let recheck = self.looks.is_multiple_of(SLURM_EVERY);
        self.relaunched(recheck, &mut updates);
        let now = std::mem::take(&mut self.slurm_now);
        let jobs = self.poll_slurm(recheck || now);
        // Processes before events: a trainer writes run_finished before it exits, so a run
        // whose process is gone here has its last record on disk for the read below.
        let samples = self.sample_processes(time);
        for (id, sample) in &samples {
            if let Some(tracked) = self.runs.get_mut(id) {
                tracked.gone = sample.liveness == Liveness::Gone;
            }
        }
        self.read_charts_wanted(&mut updates);
        self.read_runs(&mut updates, &samples, &jobs);
        watch.runs = updates.into_values().filter(RunUpdate::has_news).collect();
        watch.queue = self.read_queue();
        watch.host = self.sample_host();
        if let Some(system) = self.system.as_mut() {
            let mut machine = MachineView::look(&Register::here(), system);
            self.progresses.fill(&mut machine);
            watch.machine = Some(machine);
        }
        self.looks += 1;
        watch
    }

    /// Starts tracking the run directories not seen before, newest first, at most
    /// [`FIRST_SIGHT_BATCH`] a look; their first updates.
    fn first_sight(&mut self, ids: BTreeMap<String, PathBuf>) -> BTreeMap<String, RunUpdate> {
        let mut updates: BTreeMap<String, RunUpdate> = BTreeMap::new();
        self.unseen = 0;
        for (id, dir) in ids.into_iter().rev() {
            if self.runs.contains_key(&id) {
                continue;
            }
            if updates.len() == FIRST_SIGHT_BATCH {
                self.unseen += 1;
                continue;
            }
            let (tracked, update) = self.track(id.clone(), dir);
            self.runs.insert(id.clone(), tracked);
            updates.insert(id, update);
        }
        updates
    }

    /// What a run directory seen for the first time says: its records, its frozen experiment
    /// and its events so far (from its summary when it has one: a finished run's history is
    /// read again only when it is on screen).
    fn track(&self, id: String, dir: PathBuf) -> (Tracked, RunUpdate) {
        let run = RunDir::open(&dir);
        let launch = run.read_launch();
        // The frozen experiment, read once: its keys for comparing, its run name for the list.
        let config = super::summary::frozen_config(&run);
        let found = RunFound {
            name: config.get("run.name").map_or_else(|| run.id(), str::to_string),
            created: created(&dir),
            experiment: launch.as_ref().map(|l| l.experiment.clone()),
            pid: launch.as_ref().and_then(|l| l.pid),
            pid_start: launch.as_ref().and_then(|l| l.pid_start),
            sweep: run.read_sweep(),
            config,
        };
        let folded = super::summary::fold(&id, &dir, &found.config, false);
        let mut model = folded.model;
        if model.finished.is_some() {
            model.drop_charts();
        }
        let tracked = Tracked {
            tail: folded.tail,
            // The trainer's own record of its host wins over the launch's.
            local: model.host.as_ref().map_or_else(
                || launch.as_ref().is_none_or(|l| l.host == self.host),
                |host| *host == self.host,
            ),
            pid_start: model.pid_start.or(launch.as_ref().and_then(|l| l.pid_start)),
            pid: model.pid.or(launch.as_ref().and_then(|l| l.pid)),
            job: launch.as_ref().and_then(JobRef::of),
            job_status: None,
            read: false,
            run,
            finished: model.finished.is_some(),
            gone: false,
            exit_read: false,
            halving: found
                .sweep
                .as_ref()
                .and_then(|t| t.halving.as_ref())
                .map(|_| (None, None)),
            log_len: None,
        };
        let update = RunUpdate {
            id,
            dir,
            found: Some(found),
            fold: Some(Box::new(model)),
            warnings: folded.warnings,
            launch,
            ..RunUpdate::default()
        };
        (tracked, update)
    }

    /// A run resumed elsewhere (another dashboard, `segtop resume`), or started from the
    /// queue, has a new launch record: a new process, or a new Slurm job.
    fn relaunched(&mut self, recheck: bool, updates: &mut BTreeMap<String, RunUpdate>) {
        for (id, tracked) in &mut self.runs {
            if !(tracked.gone || tracked.pid.is_none() || (tracked.job.is_some() && recheck)) {
                continue;
            }
            let Some(launch) = tracked.run.read_launch() else {
                continue;
            };
            let job = JobRef::of(&launch);
            let new_process = launch.pid.is_some() && launch.pid != tracked.pid;
            if new_process || job != tracked.job {
                if launch.pid.is_some() {
                    tracked.pid = launch.pid;
                    tracked.pid_start = launch.pid_start;
                    tracked.local = launch.host == self.host;
                }
                tracked.job = job;
                tracked.job_status = None;
                tracked.finished = false;
                tracked.gone = false;
                tracked.exit_read = false;
                update_for(updates, id, tracked).launch = Some(launch);
            }
        }
    }

    /// Reads the whole histories of the runs whose charts were asked for.
    fn read_charts_wanted(&mut self, updates: &mut BTreeMap<String, RunUpdate>) {
        for id in std::mem::take(&mut self.charts_wanted) {
            let Some(tracked) = self.runs.get_mut(&id) else {
                continue;
            };
            let config = super::summary::frozen_config(&tracked.run);
            let folded = super::summary::fold(&id, tracked.run.path(), &config, true);
            tracked.tail = folded.tail;
            update_for(updates, &id, tracked).fold = Some(Box::new(folded.model));
        }
    }

    /// Reads what each run gained since the last look (a finished run only every
    /// [`FINISHED_EVERY`] looks): events, its log's tail, its process sample and Slurm job,
    /// its halving records, how its process ended.
    fn read_runs(
        &mut self,
        updates: &mut BTreeMap<String, RunUpdate>,
        samples: &BTreeMap<String, ProcessSample>,
        jobs: &BTreeMap<String, Result<JobStatus, String>>,
    ) {
        for (id, tracked) in &mut self.runs {
            let fresh = updates.contains_key(id);
            if tracked.finished && !fresh && !self.looks.is_multiple_of(FINISHED_EVERY) {
                continue;
            }
            let update = update_for(updates, id, tracked);
            tracked.read = true;
            read_events(tracked, update, &self.host);
            let log = tracked.run.log();
            let length = std::fs::metadata(&log).map(|m| m.len()).ok();
            if length != tracked.log_len {
                tracked.log_len = length;
                update.log_tail = Some(length.map_or_else(Vec::new, |_| log_tail(&log)));
            }
            update.sample = samples.get(id).copied();
            if let Some(job) = jobs.get(id) {
                match job {
                    Ok(status) => update.job = Some(status.clone()),
                    Err(warning) => update.warnings.push(warning.clone()),
                }
            }
            if tracked.halving.is_some() {
                let files = (tracked.run.read_rung(), tracked.run.read_pruned());
                if tracked.halving.as_ref() != Some(&files) {
                    tracked.halving = Some(files.clone());
                    update.halving = Some(files);
                }
            }
            if tracked.gone && !tracked.exit_read {
                tracked.exit_read = true;
                update.exit = tracked.run.read_exit();
            }
        }
    }

    /// The Slurm jobs of unfinished runs, by run id, when their state changed; a job Slurm
    /// no longer knows reads `UNKNOWN`. Asks Slurm every [`SLURM_EVERY`] looks (`due`), and at
    /// once about a job not asked about yet. A failing Slurm command is a warning on the runs,
    /// once per message.
    fn poll_slurm(&mut self, due: bool) -> BTreeMap<String, Result<JobStatus, String>> {
        let mut changed = BTreeMap::new();
        let open = |t: &Tracked| {
            t.read && !t.finished && t.job.is_some() && t.job_status.as_ref().is_none_or(|s| s.phase() != Phase::Ended)
        };
        let fresh = self.runs.values().any(|t| open(t) && t.job_status.is_none());
        if !(due || fresh) {
            return changed;
        }
        let asked: Vec<(String, JobRef)> = self
            .runs
            .iter()
            .filter(|(_, t)| open(t))
            .filter_map(|(id, t)| Some((id.clone(), t.job.clone()?)))
            .collect();
        if asked.is_empty() {
            return changed;
        }
        let refs: Vec<JobRef> = asked.iter().map(|(_, j)| j.clone()).collect();
        match crate::schedule::slurm::poll(&refs) {
            Ok(states) => {
                self.slurm_error = None;
                for (id, job) in asked {
                    let status = states.get(&job.id).cloned().unwrap_or_else(|| JobStatus {
                        id: job.id.clone(),
                        state: crate::schedule::slurm::UNKNOWN.to_string(),
                        reason: None,
                        exit_code: None,
                        nodes: None,
                    });
                    if let Some(tracked) = self.runs.get_mut(&id)
                        && tracked.job_status.as_ref() != Some(&status)
                    {
                        tracked.job_status = Some(status.clone());
                        changed.insert(id, Ok(status));
                    }
                }
            }
            Err(error) => {
                let message = format!("cannot ask Slurm about its jobs: {error:#}");
                if self.slurm_error.as_ref() != Some(&message) {
                    for (id, _) in asked {
                        changed.insert(id, Err(message.clone()));
                    }
                    self.slurm_error = Some(message);
                }
            }
        }
        changed
    }

    /// The queue's places by run id, when `queue.json` changed since the last look.
    fn read_queue(&mut self) -> Option<BTreeMap<String, QueuePlace>> {
        let queue = crate::schedule::queue::Queue::new(&self.workspace);
        let stamp = std::fs::metadata(queue.path())
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.queue_stamp && self.looks > 0 {
            return None;
        }
        self.queue_stamp = stamp;
        // A queue file that does not read changes nothing here; the supervisor reports it.
        let file = queue.read().ok()?;
        Some(
            file.entries
                .into_iter()
                .enumerate()
                .map(|(i, entry)| {
                    let place = QueuePlace {
                        position: i + 1,
                        paused: entry.paused,
                        waiting: entry.waiting,
                    };
                    (entry.run, place)
                })
                .collect(),
        )
    }

    /// CPU and RSS of the process tree of every unfinished local run with a known pid.
    fn sample_processes(&mut self, time: DateTime<Utc>) -> BTreeMap<String, ProcessSample> {
        let mut samples = BTreeMap::new();
        let Some(system) = &mut self.system else {
            return samples;
        };
        let watched: Vec<(String, Pid, Option<u64>)> = self
            .runs
            .iter()
            .filter(|(_, t)| !t.finished && t.local)
            .filter_map(|(id, t)| Some((id.clone(), Pid::from_u32(t.pid?), t.pid_start)))
            .collect();
        if watched.is_empty() {
            return samples;
        }
        // Threads are listed as processes of their own unless told otherwise; their CPU and
        // memory are already the process's.
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory().without_tasks();
        if self.looks.is_multiple_of(PROCESS_TABLE_EVERY) {
            system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        } else {
            let mut pids: Vec<Pid> = watched.iter().map(|(_, pid, _)| *pid).collect();
            pids.extend(descendants(system, &pids));
            system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        }
        for (id, pid, start) in watched {
            let alive = system.process(pid).is_some_and(|p| {
                p.status() != ProcessStatus::Zombie
                    && is_trainer_name(&p.name().to_string_lossy())
                    && start.is_none_or(|s| crate::run::process::same_start(p.start_time(), s))
            });
            let mut sample = ProcessSample {
                time,
                liveness: if alive { Liveness::Alive } else { Liveness::Gone },
                cpu_percent: 0.0,
                rss_mb: 0.0,
            };
            if alive {
                for member in std::iter::once(pid).chain(descendants(system, &[pid])) {
                    if let Some(process) = system.process(member) {
                        sample.cpu_percent += f64::from(process.cpu_usage());
                        sample.rss_mb += process.memory() as f64 / 1e6;
                    }
                }
            }
            samples.insert(id, sample);
        }
        samples
    }

    fn sample_host(&mut self) -> Option<HostSample> {
        let system = self.system.as_mut()?;
        system.refresh_cpu_usage();
        system.refresh_memory();
        let load = System::load_average().map_or([0.0; 3], |l| [l.one, l.five, l.fifteen]);
        Some(HostSample {
            cpu_percent: f64::from(system.global_cpu_usage()),
            used_memory_mb: system.used_memory() as f64 / 1e6,
            total_memory_mb: system.total_memory() as f64 / 1e6,
            load,
            cores: system.cpus().len().max(1),
        })
    }
}

/// The run's update in this look, made when it has none yet.
fn update_for<'a>(updates: &'a mut BTreeMap<String, RunUpdate>, id: &str, tracked: &Tracked) -> &'a mut RunUpdate {
    updates.entry(id.to_string()).or_insert_with(|| RunUpdate {
        id: id.to_string(),
        dir: tracked.run.path().to_path_buf(),
        ..RunUpdate::default()
    })
}

/// Reads the run's new events into its update, noting a new trainer process or the end of
/// the run on the way.
fn read_events(tracked: &mut Tracked, update: &mut RunUpdate, host: &str) {
    match tracked.tail.poll() {
        Ok((events, warnings)) => {
            for event in &events {
                match event {
                    Event::RunStarted {
                        pid,
                        host: started_on,
                        pid_start,
                        ..
                    } => {
                        tracked.pid = Some(*pid);
                        tracked.pid_start = *pid_start;
                        tracked.local = started_on == host;
                        tracked.finished = false;
                    }
                    Event::RunFinished { .. } => tracked.finished = true,
                    _ => {}
                }
            }
            update.events = events;
            update.warnings.extend(warnings);
        }
        Err(error) => update
            .warnings
            .push(format!("{}: cannot read: {error}", tracked.run.events().display())),
    }
}

/// The workspace's runs as the dashboard would show them after its first looks: for
/// commands that print and exit.
pub fn snapshot(workspace: &Workspace) -> BTreeMap<String, super::model::RunModel> {
    let mut watcher = Watcher::new(workspace.clone());
    let mut runs: BTreeMap<String, super::model::RunModel> = BTreeMap::new();
    let take = |mut watch: Watch, runs: &mut BTreeMap<String, super::model::RunModel>| {
        watch.apply_runs(runs);
    };
    // The first looks read the runs (a batch at a time) and learn the pids; one more, a
    // moment later, finds out which processes are alive.
    loop {
        take(watcher.look(), &mut runs);
        if watcher.settled() {
            break;
        }
    }
    if runs.values().any(|r| r.state().is_live()) {
        std::thread::sleep(Duration::from_millis(200));
        take(watcher.look(), &mut runs);
    }
    runs
}

/// Every process below `roots` in the process table as last refreshed.
fn descendants(system: &System, roots: &[Pid]) -> Vec<Pid> {
    let mut found: HashSet<Pid> = roots.iter().copied().collect();
    let mut members = Vec::new();
    loop {
        let before = members.len();
        for (pid, process) in system.processes() {
            let child = process.thread_kind().is_none() && process.parent().is_some_and(|p| found.contains(&p));
            if !found.contains(pid) && child {
                found.insert(*pid);
                members.push(*pid);
            }
        }
        if members.len() == before {
            return members;
        }
    }
}

fn created(dir: &Path) -> Option<DateTime<Utc>> {
    let metadata = std::fs::metadata(dir).ok()?;
    let time = metadata.created().or_else(|_| metadata.modified()).ok()?;
    Some(DateTime::<Utc>::from(time))
}

/// The last lines of a log: only its end is read. Progress-bar redraws (carriage returns)
/// keep their latest state.
pub fn log_tail(path: &Path) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(LOG_TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text
        .lines()
        .skip(usize::from(start > 0)) // the first line may be cut
        .map(|line| {
            let shown = line.rsplit('\r').find(|part| !part.trim().is_empty()).unwrap_or("");
            shown.chars().filter(|c| !c.is_control() || *c == '\t').collect()
        })
        .collect();
    lines.drain(..lines.len().saturating_sub(LOG_LINES));
    lines
}

/// Runs the watcher on its own thread, sending each look as `wrap(look)` until the receiver
/// goes away.
pub fn spawn<M: Send + 'static>(
    workspace: Workspace,
    tx: Sender<M>,
    wrap: fn(Watch) -> M,
    requests: Receiver<Request>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("watcher".into()).spawn(move || {
        let mut watcher = Watcher::new(workspace);
        loop {
            if tx.send(wrap(watcher.look())).is_err() {
                return;
            }
            if !watcher.settled() {
                continue;
            }
            match requests.recv_timeout(INTERVAL) {
                Ok(Request::Look) => watcher.slurm_now = true,
                Ok(Request::Charts(ids)) => watcher.charts_wanted.extend(ids),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_finds_runs_and_sends_only_news() {
        let workspace = tempfile::tempdir().expect("temp dir");
        let run = workspace.path().join("runs/20261126-090000-quick");
        std::fs::create_dir_all(&run).expect("mkdir");
        let started = r#"{"event":"error","time":"2026-11-26T10:00:00Z","message":"boom"}"#;
        std::fs::write(run.join("events.jsonl"), format!("{started}\nnot json\n")).expect("write");
        std::fs::write(run.join("train.log"), "one\ntwo\rthree\n").expect("write");
        let mut watcher = Watcher::new(Workspace::new(workspace.path()));
        let first = watcher.look();
        assert_eq!(first.runs.len(), 1);
        let update = &first.runs[0];
        assert_eq!(update.id, "20261126-090000-quick");
        assert_eq!(
            update.found.as_ref().map(|f| f.name.as_str()),
            Some("20261126-090000-quick")
        );
        // What the events held so far arrives folded; what is appended later, as events.
        let fold = update.fold.as_ref().expect("the run's events, folded");
        assert_eq!(fold.last_error.as_deref(), Some("boom"));
        assert!(update.events.is_empty());
        assert_eq!(update.warnings.len(), 1, "{:?}", update.warnings);
        assert_eq!(
            update.log_tail.as_deref(),
            Some(&["one".to_string(), "three".to_string()][..])
        );
        // Nothing new: no update for the run.
        assert!(watcher.look().runs.is_empty());
        let mut events = std::fs::OpenOptions::new()
            .append(true)
            .open(run.join("events.jsonl"))
            .expect("open");
        std::io::Write::write_all(&mut events, format!("{started}\n").as_bytes()).expect("append");
        let news = watcher.look();
        assert_eq!(news.runs.len(), 1);
        assert!(news.runs[0].fold.is_none());
        assert_eq!(news.runs[0].events.len(), 1);
        std::fs::remove_dir_all(&run).expect("rm");
        assert_eq!(watcher.look().removed, ["20261126-090000-quick"]);
    }

    #[test]
    fn a_long_log_is_read_from_its_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("train.log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        let tail = log_tail(&path);
        assert_eq!(tail.len(), LOG_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 4999"));
    }
    #[test]
    fn a_large_workspace_arrives_in_batches_newest_first() {
        let workspace = tempfile::tempdir().expect("temp dir");
        for i in 0..250 {
            let run = workspace.path().join(format!("runs/20260101-{i:06}-r"));
            std::fs::create_dir_all(&run).expect("mkdir");
            std::fs::write(run.join(RunDir::EXPERIMENT), "[run]\nname = \"r\"\n").expect("write");
        }
        let mut watcher = Watcher::new(Workspace::new(workspace.path()));
        let mut looks: Vec<Vec<String>> = Vec::new();
        for _ in 0..3 {
            let found = watcher.look().runs.into_iter().filter(|u| u.found.is_some());
            looks.push(found.map(|u| u.id).collect());
        }
        assert!(watcher.settled());
        assert_eq!(looks.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        // Newest first: every run of a look is newer than every run of the next.
        for pair in looks.windows(2) {
            assert!(pair[0].iter().min() > pair[1].iter().max(), "{pair:?}");
        }
    }
}
