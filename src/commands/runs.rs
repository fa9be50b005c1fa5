//! `segtop runs`: the runs of the workspace for scripts and quick looks, from the same
//! facts the dashboard uses (event files, launch records, live processes).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use segtop::dashboard::run::{RunModel, RunSort, RunState, sort_runs};
use segtop::dashboard::view::format_duration;
use segtop::dashboard::watch::snapshot;
use segtop::events::RegionScores;
use segtop::launcher::Halt;
use segtop::rundir::RunDir;
use segtop::workspace::Workspace;

#[derive(clap::Args)]
pub struct RunsArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
    /// Order of the list [default: started; dice with --sweep]
    #[arg(long, value_enum)]
    pub sort: Option<RunSort>,
    /// Only runs in this state: queued, paused, pending, starting, running, done, early-stop, stopped, failed or lost
    #[arg(long, value_parser = parse_state)]
    pub state: Option<RunState>,
    /// Only the runs of this sweep (its id, or a part only it has), with the values each varies
    #[arg(long, value_name = "ID")]
    pub sweep: Option<String>,
}

fn parse_state(text: &str) -> Result<RunState, String> {
    RunState::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = RunState::ALL.iter().map(|s| s.name()).collect();
        format!("'{text}' is not one of: {}", names.join(", "))
    })
}

/// One run as `--json` prints it.
#[derive(Serialize)]
struct RunRecord<'a> {
    id: &'a str,
    name: &'a str,
    state: &'static str,
    epoch: u32,
    epochs: u32,
    best_epoch: Option<u32>,
    best_dice: Option<RegionScores>,
    patches_per_s: Option<f64>,
    elapsed_s: Option<f64>,
    eta_s: Option<f64>,
    pid: Option<u32>,
    host: Option<&'a str>,
    peak_rss_mb: Option<f64>,
    error: Option<String>,
    /// Place in the queue, while queued; why it waits (in the queue, or in Slurm's).
    queue_place: Option<usize>,
    waiting: Option<String>,
    /// Its Slurm job as last seen, for runs submitted to Slurm.
    job: Option<&'a segtop::slurm::JobStatus>,
    sweep: Option<&'a segtop::experiment::sweep::SweepTag>,
    path: String,
}

pub fn runs(workspace: &Workspace, args: &RunsArgs) -> anyhow::Result<()> {
    let models = snapshot(workspace);
    let now = chrono::Utc::now();
    let sweep = match &args.sweep {
        Some(query) => {
            let mut ids: Vec<&str> = models
                .values()
                .filter_map(|r| r.sweep.as_ref().map(|t| t.sweep.as_str()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Some(
                find_id(ids.iter().copied(), query)
                    .context("among the sweeps")?
                    .to_string(),
            )
        }
        None => None,
    };
    let mut runs: Vec<&RunModel> = models
        .values()
        .filter(|r| args.state.is_none_or(|s| r.state() == s))
        .filter(|r| {
            sweep
                .as_ref()
                .is_none_or(|id| r.sweep.as_ref().is_some_and(|t| t.sweep == *id))
        })
        .collect();
    let default_sort = if sweep.is_some() {
        RunSort::Dice
    } else {
        RunSort::Started
    };
    sort_runs(&mut runs, args.sort.unwrap_or(default_sort));
    if args.json {
        let records: Vec<RunRecord> = runs
            .iter()
            .map(|r| RunRecord {
                id: &r.id,
                name: &r.name,
                state: r.state().name(),
                epoch: r.epoch,
                epochs: r.epochs,
                best_epoch: r.best.map(|(e, _)| e),
                best_dice: r.best.map(|(_, d)| d),
                patches_per_s: r.patches_per_s(),
                elapsed_s: r.elapsed(now),
                eta_s: r.eta(now),
                pid: r.pid,
                host: r.host.as_deref(),
                peak_rss_mb: r.peak_rss_mb,
                error: r.error(),
                queue_place: r.queue.as_ref().map(|q| q.position),
                waiting: r.waiting(),
                job: r.job.as_ref(),
                sweep: r.sweep.as_ref(),
                path: r.dir.display().to_string(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!(
            "no runs{} in {}",
            args.state.map(|s| format!(" {}", s.name())).unwrap_or_default(),
            workspace.runs_dir().display()
        );
        return Ok(());
    }
    if let Some(id) = &sweep {
        println!("sweep {id}: {} runs", runs.len());
    }
    print!("{}", table(&runs, now, sweep.is_some()));
    Ok(())
}

/// The runs as a table that fits 80 columns for the usual run names.
fn table(runs: &[&RunModel], now: chrono::DateTime<chrono::Utc>, values: bool) -> String {
    let width = runs.iter().map(|r| r.id.chars().count()).max().unwrap_or(3).max(3);
    let mut out = format!(
        "{:<width$}  {:<10} {:>7}  {:>4} {:>4} {:>4} {:>6} {:>7}\n",
        "run", "state", "epoch", "ET", "TC", "WT", "p/s", "left"
    );
    let dash = "–".to_string();
    for run in runs {
        let epoch = if run.epochs > 0 {
            format!("{}/{}", run.epoch, run.epochs)
        } else {
            dash.clone()
        };
        let dice = |pick: fn(&RegionScores) -> f64| run.best.map_or(dash.clone(), |(_, d)| format!("{:.2}", pick(&d)));
        out.push_str(&format!(
            "{:<width$}  {:<10} {:>7}  {:>4} {:>4} {:>4} {:>6} {:>7}\n",
            run.id,
            run.state().name(),
            epoch,
            dice(|d| d.et),
            dice(|d| d.tc),
            dice(|d| d.wt),
            run.patches_per_s().map_or(dash.clone(), |p| format!("{p:.1}")),
            run.eta(now).map_or(dash.clone(), format_duration),
        ));
        if values && let Some(tag) = &run.sweep {
            out.pop();
            out.push_str(&format!("  {}\n", tag.describe()));
        }
        if let Some(job) = run.job_line() {
            out.pop();
            out.push_str(&format!("  {job}\n"));
        }
    }
    out
}

/// The run a command names: its id, a part of the id that only it has, or its directory.
pub fn find<'a>(runs: &'a BTreeMap<String, RunModel>, query: &str) -> anyhow::Result<&'a RunModel> {
    let id = find_id(runs.keys().map(String::as_str), query)?;
    Ok(&runs[id])
}

/// Which of `ids` a command means by `query`: the id itself, its run directory, or a part
/// of the id that no other run has.
pub fn find_id<'a>(ids: impl Iterator<Item = &'a str> + Clone, query: &str) -> anyhow::Result<&'a str> {
    let as_path = std::path::Path::new(query);
    let named = |id: &str| id == query || (as_path.file_name().is_some_and(|n| n == id) && as_path.is_dir());
    if let Some(id) = ids.clone().find(|id| named(id)) {
        return Ok(id);
    }
    let matches: Vec<&str> = ids.clone().filter(|id| id.contains(query)).collect();
    match matches.as_slice() {
        [id] => Ok(id),
        [] => {
            let all: Vec<&str> = ids.collect();
            anyhow::bail!(
                "no run '{query}' (runs: {})",
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.join(", ")
                }
            )
        }
        several => anyhow::bail!(
            "'{query}' matches {} runs: {}; give more of the id",
            several.len(),
            several.join(", ")
        ),
    }
}

/// `segtop stop RUN [--kill]`.
pub fn stop(workspace: &Workspace, query: &str, kill: bool) -> anyhow::Result<()> {
    let runs = snapshot(workspace);
    let run = find(&runs, query)?;
    let state = run.state();
    anyhow::ensure!(
        !matches!(state, RunState::Queued | RunState::Paused),
        "{} is {}: take it out of the queue with: segtop queue --remove {}",
        run.id,
        state.name(),
        run.id
    );
    anyhow::ensure!(state.is_active(), "{} is {}: nothing to stop", run.id, state.name());
    let slurm = run.job.is_some();
    if let Some(host) = run.host.as_ref().filter(|_| !slurm) {
        let here = sysinfo::System::host_name().unwrap_or_default();
        anyhow::ensure!(*host == here, "{} runs on {host}; stop it there", run.id);
    }
    let halt = if kill { Halt::Kill } else { Halt::Stop };
    let how = segtop::launcher::halt_run(&run.dir, run.pid, run.pid_start, halt)
        .with_context(|| format!("cannot stop {}", run.id))?;
    if kill || state == RunState::Pending {
        println!(
            "ended {} ({how}); resume it from its last checkpoint with: segtop resume {}",
            run.id, run.id
        );
    } else {
        println!(
            "asked {} ({how}) to stop; it finishes its step and writes a checkpoint first",
            run.id
        );
    }
    Ok(())
}

/// `segtop resume RUN`: queue a stopped, failed or lost run to continue, in the background.
pub fn resume(workspace: &Workspace, query: &str) -> anyhow::Result<()> {
    let runs = snapshot(workspace);
    let run = find(&runs, query)?;
    match run.state() {
        RunState::Stopped | RunState::Failed | RunState::Lost => {}
        state if state.is_active() => anyhow::bail!("{} is {}: it is still going", run.id, state.name()),
        state => anyhow::bail!("{} is {}: there is nothing left to train", run.id, state.name()),
    }
    let dir = RunDir::open(&run.dir);
    match segtop::queue::Queue::new(workspace).resume(workspace, &dir)? {
        segtop::queue::Resumed::Queued => {
            segtop::supervisor::ensure(workspace)?;
            println!(
                "queued {} to resume from its last checkpoint; it starts when cores and memory allow (output: {})",
                run.id,
                dir.log().display()
            );
        }
        segtop::queue::Resumed::Submitted { job } => println!(
            "resubmitted {} to Slurm as job {job} to resume from its last checkpoint (output: {})",
            run.id,
            dir.log().display()
        ),
    }
    Ok(())
}

/// `segtop rm RUN [--yes]`: deletes a run directory, never a live run's.
pub fn remove(workspace: &Workspace, query: &str, yes: bool) -> anyhow::Result<bool> {
    let runs = snapshot(workspace);
    let run = find(&runs, query)?;
    let state = run.state();
    anyhow::ensure!(
        !state.is_active(),
        "{} is {}: stop it first (segtop stop {})",
        run.id,
        state.name(),
        run.id
    );
    if !yes {
        use std::io::IsTerminal;
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "not removing {} without a confirmation: run it in a terminal or pass --yes",
            run.id
        );
        eprint!(
            "remove {} ({}, {})? [y/N] ",
            run.dir.display(),
            state.name(),
            size_of(&run.dir)
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("kept {}", run.id);
            return Ok(false);
        }
    }
    if run.queue.is_some() {
        segtop::queue::Queue::new(workspace).remove(&run.id)?;
    }
    if run.dir.exists() {
        std::fs::remove_dir_all(&run.dir).with_context(|| format!("cannot remove {}", run.dir.display()))?;
    }
    println!("removed {}", run.id);
    Ok(true)
}

/// A directory's size on disk, for the confirmation.
fn size_of(dir: &std::path::Path) -> String {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    format!("{:.1} MB", walk(dir) as f64 / 1e6)
}
