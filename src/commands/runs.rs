//! `segtop runs`: the runs of the workspace for scripts and quick looks, from the same
//! facts the dashboard uses (event files, launch records, live processes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use segtop::dashboard::run::{RunModel, RunSort, RunState, sort_runs};
use segtop::dashboard::view::format_duration;
use segtop::dashboard::watch::Watcher;
use segtop::events::RegionScores;
use segtop::workspace::Workspace;

#[derive(clap::Args)]
pub struct RunsArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,
    /// Order of the list
    #[arg(long, value_enum, default_value = "started")]
    pub sort: RunSort,
    /// Only runs in this state: starting, running, done, early-stop, stopped, failed or lost
    #[arg(long, value_parser = parse_state)]
    pub state: Option<RunState>,
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
    error: Option<&'a str>,
    path: String,
}

pub fn runs(workspace: &Workspace, args: &RunsArgs) -> anyhow::Result<()> {
    let mut watcher = Watcher::new(workspace.clone());
    let mut models: BTreeMap<String, RunModel> = BTreeMap::new();
    // The first look reads the event files and learns the pids; a second one, a moment
    // later, finds out which processes are alive.
    for look in 0..2 {
        let watch = watcher.look();
        for update in watch.runs {
            let run = models
                .entry(update.id.clone())
                .or_insert_with(|| RunModel::new(update.id.clone(), update.dir.clone()));
            update.apply_to(run);
        }
        if look == 0 {
            if !models.values().any(|r| r.state().is_live()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let now = chrono::Utc::now();
    let mut runs: Vec<&RunModel> = models
        .values()
        .filter(|r| args.state.is_none_or(|s| r.state() == s))
        .collect();
    sort_runs(&mut runs, args.sort);
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
                error: r.last_error.as_deref(),
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
    print!("{}", table(&runs, now));
    Ok(())
}

/// The runs as a table that fits 80 columns for the usual run names.
fn table(runs: &[&RunModel], now: chrono::DateTime<chrono::Utc>) -> String {
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
    }
    out
}
