//! `segtop top [--json]`: every segtop trainer running on this machine, of every user and
//! workspace, from the machine's register (see `segtop::schedule::machine`): whose it is, the
//! run, its epoch, cores and memory, its speed and best Dice where its run directory is
//! readable to the viewer; and every user's waiting runs, in the order they are expected to
//! start (see `segtop::schedule::shares`).

use serde::Serialize;
use sysinfo::System;

use segtop::runs::cut_left;
use segtop::runs::machine::Progresses;
use segtop::schedule::machine::Register;
use segtop::schedule::overview::{MachineView, Progress, Trainer};
use segtop::schedule::queue::ByteSize;
use segtop::schedule::shares::Queued;

#[derive(clap::Args)]
pub struct TopArgs {
    /// Print the listing as one JSON object (trainers, waiting runs, warnings)
    #[arg(long)]
    pub json: bool,
}

/// One trainer as `top` lists it.
#[derive(Debug, Serialize)]
struct Row<'a> {
    user: &'a str,
    run: &'a str,
    pid: u32,
    state: &'static str,
    /// Cores it was given (torch threads).
    cores: u32,
    memory_bytes: u64,
    peak_bytes: u64,
    started: chrono::DateTime<chrono::Utc>,
    /// From the run directory, when the viewer may read it.
    #[serde(flatten)]
    progress: Option<&'a Progress>,
}

/// What `top --json` prints.
#[derive(Debug, Serialize)]
struct Listing<'a> {
    trainers: Vec<Row<'a>>,
    /// Every user's waiting runs, in the order they are expected to start.
    waiting: &'a [Queued],
    /// Records of the register that were skipped, an untrusted settings file, and why.
    warnings: &'a [String],
}

pub fn top(args: &TopArgs) -> anyhow::Result<()> {
    let register = Register::here();
    let mut system = System::new().map_err(|e| anyhow::anyhow!("cannot read the process table: {e}"))?;
    let mut view = MachineView::look(&register, &mut system);
    Progresses::default().fill(&mut view);
    let rows: Vec<Row> = view.trainers.iter().map(row).collect();
    if args.json {
        let listing = Listing {
            trainers: rows,
            waiting: &view.queued,
            warnings: &view.warnings,
        };
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    for warning in &view.warnings {
        eprintln!("warning: {warning}");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let used: u32 = rows.iter().map(|r| r.cores).sum();
    let users = {
        let mut names: Vec<&str> = rows.iter().map(|r| r.user).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    };
    println!(
        "{} trainer(s) of {users} user(s) on this machine: {used} of {cores} cores given out ({})",
        rows.len(),
        register.dir().display()
    );
    print_table(&rows);
    print_waiting(&view.queued);
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
        let epoch = match r.progress {
            Some(p) if p.epochs > 0 => format!("{}/{}", p.epoch, p.epochs),
            Some(p) => p.epoch.to_string(),
            None => "-".into(),
        };
        println!(
            "{:<10} {:<28} {:>7} {:>5} {:>9} {:>9} {:>9}  {}",
            cut_left(r.user, 10),
            cut_left(r.run, 28),
            epoch,
            r.cores,
            ByteSize(r.memory_bytes).to_string(),
            ByteSize(r.peak_bytes).to_string(),
            r.progress
                .and_then(|p| p.patches_per_s)
                .map_or_else(|| "-".into(), |p| format!("{p:.2}")),
            r.progress
                .and_then(|p| p.best_dice)
                .map_or_else(|| "-".into(), |d| format!("{:.3} {:.3} {:.3}", d[0], d[1], d[2])),
        );
    }
}

fn print_waiting(queued: &[Queued]) {
    if queued.is_empty() {
        return;
    }
    println!("waiting, in the order they are expected to start:");
    for q in queued {
        println!(
            "{:>4}. {:<10} {:<28} {:>2} core(s), user's oldest queued {}",
            q.position,
            cut_left(&q.user, 10),
            cut_left(&q.run, 28),
            q.cores,
            q.since.with_timezone(&chrono::Local).format("%H:%M:%S"),
        );
    }
}

fn row(trainer: &Trainer) -> Row<'_> {
    let record = &trainer.record;
    Row {
        user: &record.user,
        run: &record.run,
        pid: record.pid,
        state: "running",
        cores: record.threads,
        memory_bytes: trainer.rss_bytes,
        peak_bytes: record.peak_bytes,
        started: record.started,
        progress: trainer.progress.as_ref(),
    }
}
