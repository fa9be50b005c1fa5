//! `segtop-train`: the binary that owns every tensor. It trains and runs the network on
//! the CPU with libtorch (through tch); the `segtop` dashboard hands `train`, `predict` and
//! the other network commands over to it, and never loads libtorch itself.

#![deny(clippy::unwrap_used)]

mod bench;
mod checkpoint;
mod crash;
mod evaluate;
mod infer;
mod loss;
mod model;
mod optim;
mod predict;
mod summary;
mod train;

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};

use segtop::config::Choice;
use segtop::experiment::{Experiment, Precision};
use segtop::run::process::exit;

#[derive(Parser)]
#[command(
    name = "segtop-train",
    version,
    about = "segtop's trainer: runs the network on the CPU with libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the libtorch this trainer runs on: version, devices, threads, CPU back-ends.
    Info,
    /// Describe an experiment's network: layers, parameters, work per patch, memory.
    Summary {
        /// The experiment file
        experiment: PathBuf,
    },
    /// Measure how fast this machine trains an experiment's network (random batches of its
    /// patch and batch size) and segments one full case with its sliding window
    Bench(BenchArgs),
    /// Train an experiment in a new run directory, or resume a run.
    Train {
        /// The experiment file (not with --resume)
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        experiment: Option<PathBuf>,
        /// Continue this run (its id, a part only it has, or its directory) from its latest
        /// checkpoint, or start it there when it has none
        #[arg(long, value_name = "RUN")]
        resume: Option<PathBuf>,
        /// Where new run directories go
        #[arg(long, default_value = "runs", value_name = "DIR")]
        runs: PathBuf,
    },
    /// Segment cases with a trained run, an ensemble of runs, or a checkpoint and its experiment.
    Predict(PredictArgs),
}

#[derive(clap::Args, Clone)]
struct PredictArgs {
    /// A run whose best (else latest) checkpoint to use: its id, a part only it has, or its
    /// directory; give several to average their probabilities (an ensemble)
    #[arg(
        long,
        value_name = "RUN",
        required_unless_present_any = ["checkpoint", "package"],
        conflicts_with_all = ["checkpoint", "package"]
    )]
    run: Vec<PathBuf>,
    /// A model package folder (`segtop package`): its networks, preprocessing and post-processing
    #[arg(long, value_name = "DIR", conflicts_with_all = ["checkpoint", "split", "folds"])]
    package: Option<PathBuf>,
    /// A model.safetensors or best.safetensors file (needs --experiment)
    #[arg(long, value_name = "FILE", requires = "experiment")]
    checkpoint: Option<PathBuf>,
    /// The experiment the checkpoint was trained with
    #[arg(long, value_name = "FILE")]
    experiment: Option<PathBuf>,
    /// One case folder
    #[arg(long, value_name = "DIR", required_unless_present_any = ["cases", "split"], conflicts_with_all = ["cases", "split"])]
    case: Option<PathBuf>,
    /// A dataset folder: every case in it
    #[arg(long, value_name = "DIR", conflicts_with = "split")]
    cases: Option<PathBuf>,
    /// The (first) run's own train, validation or test cases, from its split.json
    #[arg(long, value_name = "PART", requires = "run", value_parser = ["train", "validation", "test"])]
    split: Option<String>,
    /// Where to write <case id>.nii.gz
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// With one --run of a cross-validation run: ensemble it with the runs of its other
    /// folds (same configuration, in the same runs/ folder, with best weights)
    #[arg(long, requires = "run", conflicts_with = "checkpoint")]
    folds: bool,
    /// Mirror test-time augmentation over the experiment's flip axes (up to 8 passes per window)
    #[arg(long)]
    tta: bool,
    /// Write the network's labels as they are, without the run's post-processing
    #[arg(long, conflicts_with = "postprocess")]
    no_postprocess: bool,
    /// Apply this post-processing file instead of the (first) run's postprocess.toml
    #[arg(long, value_name = "FILE")]
    postprocess: Option<PathBuf>,
    /// Label convention of the written maps: each case's own (enhancing tumour 4 for older
    /// BraTS names), BraTS 2023+ (3), or legacy (4)
    #[arg(long, value_enum, default_value = "dataset")]
    labels: predict::Labels,
    /// Compute in this precision (auto: bfloat16 where the CPU has bfloat16 instructions; the
    /// weights are float32 either way) [default: the (first) run's train.precision, as its
    /// validation computed]
    #[arg(long, value_parser = PossibleValuesParser::new(Precision::NAMES))]
    precision: Option<String>,
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Train { .. }) {
        segtop::run::process::end_quietly_when_the_reader_goes();
    }
    let result = match cli.command {
        Command::Info => info().map(|()| exit::FINISHED),
        Command::Summary { experiment } => summary(&experiment).map(|()| exit::FINISHED),
        Command::Bench(args) => bench(&args).map(|()| exit::FINISHED),
        Command::Train {
            experiment,
            resume,
            runs,
        } => train(experiment.as_deref(), resume.as_deref(), &runs),
        Command::Predict(args) => predict(&args).map(|()| exit::FINISHED),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("{}: error: {error:#}", program_name());
            std::process::exit(exit::FAILED);
        }
    }
}

/// Makes glibc keep the memory libtorch frees for the next allocation instead of handing it
/// back to the kernel. Every training step (and every window batch) frees and allocates the
/// same activation buffers, most of them above glibc's 32 MB limit for heap blocks, so each
/// went back to the kernel and came back as fresh pages to be faulted in and zeroed: 6% of a
/// real run's time in page faults (the default network, float32, on an AVX2 CPU), where
/// keeping them made a step 16% shorter and sliding-window inference 15% shorter, for about
/// 20% more peak resident memory. Setting any of glibc's own malloc variables
/// (`MALLOC_MMAP_MAX_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, `GLIBC_TUNABLES`)
/// leaves glibc as they say: `MALLOC_MMAP_MAX_=65536` restores its default.
fn keep_freed_memory() {
    let chosen = [
        "MALLOC_MMAP_MAX_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_MMAP_THRESHOLD_",
        "GLIBC_TUNABLES",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some());
    if chosen {
        return;
    }
    // SAFETY: mallopt only sets glibc's malloc parameters; it runs before any other thread
    // exists. Large blocks then come from the heap, which is never trimmed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The run directory a command means: a directory given as a path, else a run of the
/// workspace's `runs/` by its id or a part only it has (as every segtop command takes runs).
fn run_named(named: &std::path::Path) -> anyhow::Result<PathBuf> {
    if named.is_dir() {
        return Ok(named.to_path_buf());
    }
    let runs = segtop::workspace::Workspace::new(".").runs_dir();
    Ok(segtop::run::find(&runs, &named.to_string_lossy())?.path().to_path_buf())
}

/// The name this program was started as, for its messages: `segtop` when `segtop train`,
/// `predict`, `summary` or `info` handed over to it, else its own.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|arg| PathBuf::from(arg).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "segtop-train".to_string())
}

fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    let resolved: Vec<PathBuf> = args
        .run
        .iter()
        .map(|run| run_named(run))
        .collect::<anyhow::Result<_>>()?;
    let args = &PredictArgs {
        run: resolved,
        ..args.clone()
    };
    if let Some(dir) = &args.package {
        return predict_package(dir, args);
    }
    let options = predict::Options {
        tta: args.tta,
        postprocess: match (&args.postprocess, args.no_postprocess) {
            (_, true) => predict::PostprocessChoice::Off,
            (Some(file), false) => predict::PostprocessChoice::File(file.clone()),
            (None, false) => predict::PostprocessChoice::FromRun,
        },
        labels: args.labels,
    };
    let mut sources = Vec::new();
    let runs = match args.run.first() {
        Some(first) if args.folds => {
            let runs = segtop::run::fold_runs(first)?;
            println!(
                "--folds: an ensemble of {} runs of {}'s configuration",
                runs.len(),
                first.display()
            );
            runs
        }
        _ => args.run.clone(),
    };
    for run in &runs {
        let (experiment, weights) = predict::from_run(run)?;
        sources.push((run.display().to_string(), experiment, weights));
    }
    if let (Some(checkpoint), Some(experiment)) = (&args.checkpoint, &args.experiment) {
        sources.push((
            checkpoint.display().to_string(),
            load_experiment(experiment)?,
            checkpoint.clone(),
        ));
    }
    let requested = match (&args.precision, sources.first()) {
        (Some(name), _) => precision_named(name),
        (None, Some((_, experiment, _))) => experiment.train.precision,
        (None, None) => Precision::Auto,
    };
    let (precision, why) = segtop::cpu::resolve_here(requested);
    println!("precision: {why}");
    let mut models = Vec::new();
    for (source, experiment, weights) in sources {
        models.push(predict::Model::load(source, experiment, &weights, args.tta, precision)?);
    }
    let first = models
        .first()
        .context("give --run RUN_DIR (one or more), or --checkpoint FILE with --experiment FILE")?;
    let cases = match (&args.case, &args.cases, &args.split, args.run.first()) {
        (Some(source), _, _, _) | (None, Some(source), _, _) => predict::cases_under(source)?,
        (None, None, Some(split), Some(run)) => predict::split_cases(run, &first.experiment, split)?,
        _ => anyhow::bail!("give --case DIR, --cases DIR or --split PART"),
    };
    let (plan, said) = predict::choose_plan(&args.run, &options.postprocess)?;
    println!("{said}");
    predict::run(&models, &cases, &plan, &options, &args.out)
}

/// `predict --package DIR`: the package's members, windows and post-processing, as
/// `predict.py` runs them; float32 (the weights' and ONNX's precision) unless --precision.
fn predict_package(dir: &std::path::Path, args: &PredictArgs) -> anyhow::Result<()> {
    let package = segtop::package::Package::load(dir)?;
    let tta = args.tta || package.predict.tta;
    let precision = match &args.precision {
        Some(name) => segtop::cpu::resolve_here(precision_named(name)).0,
        None => Precision::Float32,
    };
    let mut models = Vec::new();
    for member in &package.members {
        models.push(predict::Model::from_package(member, tta, precision)?);
    }
    let cases = match (&args.case, &args.cases) {
        (Some(source), _) | (None, Some(source)) => predict::cases_under(source)?,
        (None, None) => anyhow::bail!("give --case DIR or --cases DIR"),
    };
    let (plan, said) = match (&args.postprocess, args.no_postprocess) {
        (_, true) => (segtop::postprocess::Plan::NONE, "post-processing: off".to_string()),
        (Some(file), false) => predict::choose_plan(&[], &predict::PostprocessChoice::File(file.clone()))?,
        (None, false) => (
            package.plan,
            format!(
                "post-processing: {} (from {})",
                package.plan.describe(),
                dir.join(segtop::package::MANIFEST).display()
            ),
        ),
    };
    println!(
        "package {}: {} member(s), {}",
        dir.display(),
        models.len(),
        package.provenance.runs.join(", ")
    );
    println!("{said}");
    let options = predict::Options {
        tta,
        postprocess: predict::PostprocessChoice::Off,
        labels: args.labels,
    };
    predict::run(&models, &cases, &plan, &options, &args.out)
}

fn train(
    experiment: Option<&std::path::Path>,
    resume: Option<&std::path::Path>,
    runs: &std::path::Path,
) -> anyhow::Result<i32> {
    use segtop::run::RunDir;
    let (run, experiment) = match (resume, experiment) {
        (Some(named), _) => {
            let dir = &run_named(named)?;
            let run = RunDir::open(dir);
            let experiment = Experiment::load_frozen(&run.experiment(), dir)
                .with_context(|| format!("{} is not a run directory", dir.display()))?;
            (run, experiment)
        }
        (None, Some(path)) => {
            let experiment = load_experiment(path)?;
            let run = RunDir::create(runs, &experiment, chrono::Local::now())
                .with_context(|| format!("cannot create a run directory in {}", runs.display()))?;
            println!("run directory: {}", run.path().display());
            (run, experiment)
        }
        (None, None) => anyhow::bail!("give an experiment file or --resume RUN_DIR"),
    };
    crash::install(run.events());
    // A file size limit (SIGXFSZ) makes writes fail with an error the run reports, like a
    // full disk, instead of killing the trainer without a word.
    // SAFETY: only changes the process-wide disposition of SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // SIGINT and SIGTERM ask the loop to finish its step and checkpoint; a second one kills.
    // SIGUSR1 is a Slurm job's time limit coming (`--signal=B:USR1@N`).
    let stop = train::Stop::default();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, std::sync::Arc::clone(&stop.asked))?;
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop.asked))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, std::sync::Arc::clone(&stop.time_limit))?;
    // Every supervisor on the machine counts this trainer's cores and memory while it runs.
    let _registered = Registered::new(&run, &experiment);
    let ended = match train::run(&run, &experiment, resume.is_some(), &stop) {
        Ok(train::Finish::Completed | train::Finish::EarlyStopped) => Ok(exit::FINISHED),
        Ok(train::Finish::Stopped { time_limit, steps }) => {
            if time_limit {
                go_on_in_a_new_job(&run, &experiment, steps);
            }
            Ok(exit::STOPPED)
        }
        Err(error) => {
            if let Ok(mut events) = segtop::run::events::EventLog::open(&run.events()) {
                let _ = events.emit_failure(&format!("{error:#}"), 0.0);
            }
            Err(error)
        }
    };
    // Lists read the run's summary rather than its whole history.
    segtop::runs::summary::refresh(run.path());
    ended
}

/// This trainer's record in the machine's register, removed when training ends.
struct Registered {
    register: segtop::schedule::machine::Register,
}

impl Registered {
    fn new(run: &segtop::run::RunDir, experiment: &Experiment) -> Option<Registered> {
        use segtop::schedule::machine::{Register, record_of};
        let register = Register::here();
        let record = record_of(
            std::process::id(),
            &run.id(),
            run.path(),
            train::threads(experiment),
            segtop::cost::peak_bytes(experiment),
        )?;
        match register.register(&record) {
            Ok(()) => Some(Registered { register }),
            Err(problem) => {
                say(&format!(
                    "not in the machine's register ({problem}): supervisors of other users will not count this run"
                ));
                None
            }
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.register
            .unregister(segtop::schedule::machine::current_uid(), std::process::id());
    }
}

/// After the checkpoint at a Slurm job's time limit: the run goes on in a new job (`slurm.requeue`),
/// submitted as `segtop resume` would, unless this job trained nothing (it would only run out
/// of time again). What happened goes to the run's log; the run stays stopped when it fails.
fn go_on_in_a_new_job(run: &segtop::run::RunDir, experiment: &Experiment, steps: u64) {
    if segtop::schedule::slurm::current_job().is_none() {
        return;
    }
    let by_hand = format!("go on with: segtop resume {}", run.id());
    if !experiment.slurm.requeue {
        say(&format!(
            "time limit near: stopped with a checkpoint (slurm.requeue = false); {by_hand}"
        ));
        return;
    }
    if steps == 0 {
        say(&format!(
            "time limit near: this job trained no step, so the run is not submitted again \
             (give it a longer slurm.time); {by_hand}"
        ));
        return;
    }
    let Some(workspace) = run.path().parent().and_then(std::path::Path::parent) else {
        return;
    };
    let workspace = segtop::workspace::Workspace::new(workspace);
    match segtop::schedule::queue::Queue::new(&workspace).resume(&workspace, run) {
        Ok(segtop::schedule::queue::Resumed::Submitted { job }) => {
            say(&format!(
                "time limit near: submitted again as Slurm job {job}, to go on from the checkpoint"
            ));
        }
        Ok(segtop::schedule::queue::Resumed::Queued) => {
            say("time limit near: queued to go on from the checkpoint");
        }
        Err(error) => say(&format!("error: could not submit the run again: {error:#}; {by_hand}")),
    }
}

/// A line in the run's log, as the training loop writes its lines.
fn say(text: &str) {
    println!("{}", train::timestamped(text));
}

fn load_experiment(path: &std::path::Path) -> anyhow::Result<Experiment> {
    let workspace = std::env::current_dir().context("cannot read the current directory")?;
    Ok(Experiment::load(path, &workspace)?)
}

fn summary(path: &std::path::Path) -> anyhow::Result<()> {
    let experiment = load_experiment(path)?;
    print!("{}", summary::Summary::of(&experiment).render());
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The experiment file
    experiment: PathBuf,
    /// Training steps to time (the first, a warm-up, is left out of the median)
    #[arg(long, default_value_t = 6)]
    steps: usize,
    /// Cubic patch size instead of the experiment's
    #[arg(long)]
    patch: Option<u32>,
    /// Batch size instead of the experiment's
    #[arg(long)]
    batch: Option<u32>,
    /// Torch threads [default: the experiment's, else all cores]
    #[arg(long)]
    threads: Option<u32>,
    /// Shape of the case segmented with the sliding window, XxYxZ
    #[arg(long, default_value = "240x240x155", value_name = "XxYxZ")]
    case: String,
    /// Windows per forward pass instead of the experiment's validate.window_batch
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    window_batch: Option<u32>,
    /// Compute in this precision instead of the experiment's train.precision (auto: bfloat16
    /// where the CPU has bfloat16 instructions)
    #[arg(long, value_parser = PossibleValuesParser::new(Precision::NAMES))]
    precision: Option<String>,
    /// Time training only (and the --cases)
    #[arg(long)]
    no_inference: bool,
    /// Also time `segtop predict` end to end on every case in this dataset folder (or one case
    /// folder): reading, cropping, the sliding window, writing; the seconds a user waits per case
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Print one JSON line instead of text
    #[arg(long)]
    json: bool,
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        steps,
        patch,
        batch,
        threads,
        ref case,
        window_batch,
        no_inference,
        json,
        ..
    } = *args;
    let mut experiment = load_experiment(&args.experiment)?;
    if let Some(n) = window_batch {
        experiment.validate.window_batch = n;
    }
    let shape: Vec<i64> = case
        .split('x')
        .map(|n| n.trim().parse::<i64>().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()
        .filter(|v: &Vec<i64>| v.len() == 3)
        .ok_or_else(|| anyhow::anyhow!("--case {case}: give three sizes, like 240x240x155"))?;
    // Every level halves the patch: it must divide by 2^(depth - 1), as the experiment check asks.
    let multiple = 1u32 << experiment.model.depth.saturating_sub(1);
    anyhow::ensure!(
        patch.is_none_or(|p| (8..=512).contains(&p) && p % multiple == 0),
        "--patch: a size from 8 to 512 that divides by {multiple} (the network has {} levels)",
        experiment.model.depth
    );
    let options = bench::Options {
        steps,
        patch,
        batch,
        threads,
        precision: args.precision.as_deref().map(precision_named),
        case: (!no_inference).then(|| [shape[0], shape[1], shape[2]]),
        cases: match &args.cases {
            Some(dir) => predict::cases_under(dir)?,
            None => Vec::new(),
        },
    };
    // Progress on stderr, so --json's stdout stays one line.
    let report = bench::run(&experiment, &options, &|line| eprintln!("{line}"))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// A precision clap has checked against `Precision::NAMES`.
fn precision_named(name: &str) -> Precision {
    Precision::from_name(name).unwrap_or(Precision::Auto)
}

fn info() -> anyhow::Result<()> {
    // One small computation proves libtorch loads and runs, not only that it links.
    let sum = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0])
        .sum(tch::Kind::Float)
        .double_value(&[]);
    anyhow::ensure!(sum == 6.0, "libtorch computed 1 + 2 + 3 = {sum}");
    let version = option_env!("SEGTOP_LIBTORCH_VERSION").unwrap_or("unknown");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("libtorch      {version}");
    println!("cuda          {}", yes_no(tch::Cuda::is_available()));
    println!("threads       {}", tch::get_num_threads());
    println!("mkl           {}", yes_no(tch::utils::has_mkl()));
    println!("onednn        {}", yes_no(tch::utils::has_mkldnn()));
    println!("openmp        {}", yes_no(tch::utils::has_openmp()));
    let flags = segtop::cpu::flags();
    let found = segtop::cpu::bf16_flags(flags);
    println!(
        "bfloat16      {}",
        if found.is_empty() {
            "no instructions (emulated)".to_string()
        } else {
            found.join(" ")
        }
    );
    println!(
        "precision     auto picks {}",
        segtop::cpu::resolve(Precision::Auto, flags).1
    );
    Ok(())
}
