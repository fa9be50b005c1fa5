//! `segtop top [--json]`: every segtop trainer running on this machine, of every user and
//! workspace, from the machine's register (see `segtop::schedule::machine`): whose it is, the
//! run, its epoch, cores and memory, its speed and best Dice where its run directory is
//! readable to the viewer.

use serde::Serialize;
use sysinfo::System;

use segtop::run::RunDir;
use segtop::runs::cut_left;
use segtop::schedule::machine::{Register, TrainerRecord};
use segtop::schedule::queue::ByteSize;

#[derive(clap::Args)]
pub struct TopArgs {
    /// One JSON object per trainer
    #[arg(long)]
    pub json: bool,
}

/// One trainer as `top` lists it.
#[derive(Debug, Serialize)]
struct Row {
    user: String,
    run: String,
    pid: u32,
    state: &'static str,
    /// Cores it was given (torch threads).
    cores: u32,
    memory_bytes: u64,
    peak_bytes: u64,
    started: chrono::DateTime<chrono::Utc>,
    /// From the run directory, when the viewer may read it.
    epoch: Option<u32>,
    epochs: Option<u32>,
    patches_per_s: Option<f64>,
    best_dice: Option<[f64; 3]>,
}

pub fn top(args: &TopArgs) -> anyhow::Result<()> {
    let register = Register::here();
    let mut system = System::new().map_err(|e| anyhow::anyhow!("cannot read the process table: {e}"))?;
    let view = register.view(&mut system);
    for warning in &view.warnings {
        eprintln!("warning: {warning}");
    }
    let rows: Vec<Row> = view.trainers.iter().map(|(record, rss)| row(record, *rss)).collect();
    let queued: Vec<Waiting> = view
        .waiting
        .iter()
        .enumerate()
        .map(|(i, w)| Waiting {
            user: w.user.clone(),
            runs: w.waiting,
            since: w.since,
            turn: i + 1,
        })
        .collect();
    if args.json {
        let listing = Listing {
            trainers: rows,
            waiting: queued,
        };
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let used: u32 = rows.iter().map(|r| r.cores).sum();
    let users = {
        let mut names: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    println!(
        "{} trainer(s) of {users} user(s) on this machine: {used} of {cores} cores given out ({})",
        rows.len(),
        register.dir().display()
    );
    print_waiting(&queued);
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "{:<10} {:<28} {:>7} {:>5} {:>9} {:>9} {:>9}  BEST DICE ET/TC/WT",
        "USER", "RUN", "EPOCH", "CORES", "MEMORY", "PEAK", "PATCH/S"
    );
    for r in rows {
        let epoch = match (r.epoch, r.epochs) {
            (Some(e), Some(n)) if n > 0 => format!("{e}/{n}"),
            (Some(e), _) => e.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<10} {:<28} {:>7} {:>5} {:>9} {:>9} {:>9}  {}",
            cut_left(&r.user, 10),
            cut_left(&r.run, 28),
            epoch,
            r.cores,
            ByteSize(r.memory_bytes).to_string(),
            ByteSize(r.peak_bytes).to_string(),
            r.patches_per_s.map_or_else(|| "-".into(), |p| format!("{p:.2}")),
            r.best_dice
                .map_or_else(|| "-".into(), |d| format!("{:.3} {:.3} {:.3}", d[0], d[1], d[2])),
        );
    }
}

/// What `top --json` prints.
#[derive(Debug, Serialize)]
struct Listing {
    trainers: Vec<Row>,
    /// Users with runs waiting, in the order their turns come.
    waiting: Vec<Waiting>,
}

/// A user's waiting runs, as their supervisor tells the register.
#[derive(Debug, Serialize)]
struct Waiting {
    user: String,
    runs: u32,
    since: chrono::DateTime<chrono::Utc>,
    /// 1: the next run to start on this machine is theirs.
    turn: usize,
}

fn print_waiting(queued: &[Waiting]) {
    for w in queued {
        println!(
            "waiting: {} run(s) of user {} since {} (turn {})",
            w.runs,
            w.user,
            w.since.with_timezone(&chrono::Local).format("%H:%M:%S"),
            w.turn
        );
    }
}

fn row(record: &TrainerRecord, rss: u64) -> Row {
    let run = RunDir::open(&record.run_dir);
    // Another user's run directory is read only where its permissions let the viewer.
    let model = run.events().is_file().then(|| {
        let config = segtop::runs::summary::frozen_config(&run);
        segtop::runs::summary::fold(&record.run, &record.run_dir, &config, false).model
    });
    Row {
        user: record.user.clone(),
        run: record.run.clone(),
        pid: record.pid,
        state: "running",
        cores: record.threads,
        memory_bytes: rss,
        peak_bytes: record.peak_bytes,
        started: record.started,
        epoch: model.as_ref().map(|m| m.epoch),
        epochs: model.as_ref().map(|m| m.epochs),
        patches_per_s: model.as_ref().and_then(|m| m.last_patches_per_s),
        best_dice: model
            .as_ref()
            .and_then(|m| m.best.as_ref())
            .map(|(_, d)| [d.et, d.tc, d.wt]),
    }
}
