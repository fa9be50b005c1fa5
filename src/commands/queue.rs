//! `segtop queue`: queue experiments (a sweep queues all its runs), and look at or rearrange
//! the queue. The supervisor starts what was queued as cores and memory allow.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use segtop::cost;
use segtop::experiment::{Experiment, LauncherKind};
use segtop::run::RunDir;
use segtop::schedule::queue::{ByteSize, Queue, QueueFile};
use segtop::settings::Settings;
use segtop::workspace::Workspace;

use segtop::run::find_id;

#[derive(clap::Args)]
pub struct QueueArgs {
    /// Experiment files to queue; a file with a [sweep] table queues every run of the sweep.
    /// Without files (and options), lists the queue.
    #[arg(value_name = "EXPERIMENT")]
    pub experiments: Vec<PathBuf>,
    /// Hold a queued run: it keeps its place, the queue passes over it (a pending Slurm job: scontrol hold)
    #[arg(long, value_name = "RUN", group = "change")]
    pub pause: Option<String>,
    /// Let a held run start again
    #[arg(long, value_name = "RUN", group = "change")]
    pub release: Option<String>,
    /// Take a run out of the queue (a run that never started is removed with its directory)
    #[arg(long, value_name = "RUN", group = "change")]
    pub remove: Option<String>,
    /// Move a queued run to a place in the queue (1: the next to start)
    #[arg(long = "move", value_names = ["RUN", "PLACE"], num_args = 2, group = "change")]
    pub move_to: Option<Vec<String>>,
    /// Where the runs train: local (this machine's queue) or slurm (sbatch) [default: the experiment's run.launcher]
    #[arg(long, value_parser = parse_launcher, value_name = "LAUNCHER")]
    pub launcher: Option<LauncherKind>,
    /// Queue every cross-validation fold of each experiment (it sets data.folds): a sweep
    /// over data.fold, beside any keys its [sweep] varies
    #[arg(long, requires = "experiments")]
    pub folds: bool,
    /// Print the queue as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_launcher(text: &str) -> Result<LauncherKind, String> {
    use segtop::config::Choice;
    LauncherKind::from_name(text).ok_or_else(|| format!("'{text}' is not one of: {}", LauncherKind::NAMES.join(", ")))
}

pub fn queue(workspace: &Workspace, args: &QueueArgs) -> anyhow::Result<()> {
    let queue = Queue::new(workspace);
    if !args.experiments.is_empty() {
        let mut local = false;
        for file in &args.experiments {
            local |= add(workspace, &queue, file, args.launcher, args.folds)?;
        }
        if local {
            start_supervisor(workspace);
        }
        return Ok(());
    }
    let find = |query: &str| -> anyhow::Result<String> {
        let file = queue.read()?;
        let ids: Vec<&str> = file.entries.iter().map(|e| e.run.as_str()).collect();
        find_id(ids.iter().copied(), query)
            .map(str::to_string)
            .with_context(|| "in the queue".to_string())
    };
    if let Some(run) = &args.pause {
        if let Some(job) = slurm_job(workspace, run, &queue)? {
            segtop::schedule::launcher::slurm::hold(&job.1, true)?;
            println!(
                "held {}'s Slurm job {}; release it with: segtop queue --release {}",
                job.0, job.1, job.0
            );
            return Ok(());
        }
        let id = find(run)?;
        queue.set_paused(&id, true)?;
        println!("held {id}; let it start again with: segtop queue --release {id}");
    } else if let Some(run) = &args.release {
        if let Some(job) = slurm_job(workspace, run, &queue)? {
            segtop::schedule::launcher::slurm::hold(&job.1, false)?;
            println!("released {}'s Slurm job {}", job.0, job.1);
            return Ok(());
        }
        let id = find(run)?;
        queue.set_paused(&id, false)?;
        println!("released {id}");
        start_supervisor(workspace);
    } else if let Some(run) = &args.remove {
        let id = find(run)?;
        let entry = queue.remove(&id)?;
        let kept = if entry.resume { " (the run is kept)" } else { "" };
        println!("took {id} out of the queue{kept}");
    } else if let Some([run, place]) = args.move_to.as_deref() {
        let id = find(run)?;
        let place: usize = place
            .parse()
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| anyhow::anyhow!("'{place}' is not a place in the queue (1 is the next to start)"))?;
        let at = queue.move_to(&id, place - 1)?;
        println!("{id} is now number {} in the queue", at + 1);
    } else {
        list(workspace, &queue.read()?, args.json)?;
    }
    Ok(())
}

/// The run `query` names and its Slurm job, when it is not in the local queue but waits in
/// Slurm's (a pending job is held and released there).
fn slurm_job(workspace: &Workspace, query: &str, queue: &Queue) -> anyhow::Result<Option<(String, String)>> {
    let queued = queue.read()?;
    if find_id(queued.entries.iter().map(|e| e.run.as_str()), query).is_ok() {
        return Ok(None);
    }
    let runs = segtop::runs::watch::snapshot(workspace);
    let Ok(run) = super::runs::find(&runs, query) else {
        return Ok(None);
    };
    match (&run.observed.job, run.state()) {
        (Some(job), segtop::runs::model::RunState::Pending) => Ok(Some((run.id.clone(), job.id.clone()))),
        (Some(_), state) => anyhow::bail!(
            "{} is {}: only a pending Slurm job can be held or released",
            run.id,
            state.name()
        ),
        (None, _) => Ok(None),
    }
}

/// Queues the runs of one experiment file: one run, or every run of its sweep. Returns
/// whether any joined the local queue (rather than Slurm's).
fn add(
    workspace: &Workspace,
    queue: &Queue,
    file: &Path,
    launcher: Option<LauncherKind>,
    folds: bool,
) -> anyhow::Result<bool> {
    let mut text = segtop::config::read_text(file)?;
    if folds {
        text = segtop::experiment::sweep::with_folds(file, &text)?;
    }
    let queued = queue.add_text(workspace, file, &text, launcher)?;
    let shown = segtop::schedule::launcher::shown(workspace.root(), file);
    let sweep = queued.first().and_then(|q| q.sweep.as_ref()).map(|t| t.sweep.clone());
    if let Some(id) = &sweep {
        println!("sweep {id}: {} runs of {}", queued.len(), shown.display());
    }
    for q in &queued {
        let job = q.submitted.as_ref().and_then(|l| l.job.as_deref());
        match (&q.sweep, job) {
            (Some(tag), Some(job)) => println!("  submitted {} as Slurm job {job}  {}", q.run.id(), tag.describe()),
            (None, Some(job)) => println!(
                "submitted {} ({}) as Slurm job {job}; its output: {}",
                q.run.id(),
                shown.display(),
                q.run.log().display()
            ),
            (Some(tag), None) => println!("  queued {}  {}", q.run.id(), tag.describe()),
            (None, None) => println!(
                "queued {} ({}, needs about {})",
                q.run.id(),
                shown.display(),
                ByteSize(q.peak_bytes)
            ),
        }
    }
    if let Some(id) = sweep {
        println!("rank them as they finish with: segtop runs --sweep {id}");
    }
    Ok(queued.iter().any(|q| q.submitted.is_none()))
}

fn start_supervisor(workspace: &Workspace) {
    match segtop::supervisor::ensure(workspace) {
        Ok(_) => println!(
            "the supervisor starts them as cores and memory allow; see: segtop queue, segtop runs (log: {})",
            segtop::supervisor::log_path(workspace).display()
        ),
        Err(error) => eprintln!(
            "segtop: warning: cannot start the supervisor ({error:#}); the runs wait until a dashboard or `segtop queue` starts it"
        ),
    }
}

#[derive(Serialize)]
struct Row {
    place: usize,
    run: String,
    experiment: PathBuf,
    state: &'static str,
    resume: bool,
    needs_bytes: Option<u64>,
    waiting: Option<String>,
}

fn list(workspace: &Workspace, file: &QueueFile, json: bool) -> anyhow::Result<()> {
    let rows: Vec<Row> = file
        .entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let run = RunDir::open(workspace.runs_dir().join(&entry.run));
            let needs_bytes = Experiment::load_frozen(&run.experiment(), workspace.root())
                .ok()
                .map(|e| cost::peak_bytes(&e));
            Row {
                place: i + 1,
                run: entry.run.clone(),
                experiment: entry.experiment.clone(),
                state: if entry.paused { "paused" } else { "queued" },
                resume: entry.resume,
                needs_bytes,
                waiting: entry.waiting.clone(),
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let settings = Settings::queue();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let supervisor = if segtop::supervisor::is_running(workspace) {
        "running"
    } else {
        "not running"
    };
    println!(
        "budget {} cores, {} runs at once, {} threads each, {} kept free · supervisor {supervisor}",
        settings.cores(cores),
        settings.max_concurrent(cores),
        settings.share(cores),
        settings.reserve_ram
    );
    if rows.is_empty() {
        println!("the queue is empty; queue a run with: segtop queue experiments/NAME.toml");
        return Ok(());
    }
    println!("{:>3}  {:<34} {:<7} {:>8}  waiting for", "#", "run", "state", "needs");
    for row in rows {
        let needs = row
            .needs_bytes
            .map_or_else(|| "?".to_string(), |b| ByteSize(b).to_string());
        let state = if row.resume && row.state == "queued" {
            "resume"
        } else {
            row.state
        };
        println!(
            "{:>3}  {:<34} {:<7} {:>8}  {}",
            row.place,
            row.run,
            state,
            needs,
            row.waiting.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
