//! `segtop`: the dashboard and every command that needs no tensors.
//!
//! This binary never calls libtorch, so it starts instantly and stays small on a shared
//! server. Commands that run the network (`train`, `predict`, ...) are handed over to the
//! `segtop-train` binary installed next to it.

#![deny(clippy::unwrap_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use segtop::config::{Choice, ConfigError, Source};
use segtop::experiment::{Axis, Experiment, Layout, Modality};
use segtop::graphics::GraphicsChoice;
use segtop::render::ColorMode;
use segtop::settings::Settings;
use segtop::theme::Theme;
use segtop::workspace::Workspace;

mod commands;

#[derive(Parser)]
#[command(
    name = "segtop",
    version,
    about = "Train lightweight 3D U-Nets for brain tumour segmentation on CPUs, from the terminal",
    long_about = "Train lightweight 3D U-Nets for brain tumour segmentation on CPUs, from the terminal.\n\n\
                  Without a command, opens the dashboard on the workspace (the current directory, \
                  which holds experiments/, runs/ and themes/)."
)]
struct Cli {
    /// Workspace directory holding experiments/, runs/ and themes/; segtop runs as if started
    /// there, so relative paths resolve against it, as with `git -C` [default: current directory]
    #[arg(short = 'C', long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,

    /// Dashboard theme: a name from themes/ or a path to a theme file [default: default; mono under NO_COLOR]
    #[arg(long, global = true, value_name = "THEME")]
    theme: Option<String>,

    /// Slice pictures: auto (ask the terminal), kitty, sixel, iterm2 or blocks (half-block
    /// characters) [default: the `graphics` setting, else auto]
    #[arg(long, global = true, value_name = "HOW", value_parser = parse_choice::<GraphicsChoice>)]
    graphics: Option<GraphicsChoice>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check experiment files and print each with every default filled in.
    Check {
        /// Experiment files (or theme files, with --themes)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The files are themes, not experiments
        #[arg(long)]
        themes: bool,
        /// Only report problems; print nothing for valid files
        #[arg(short, long)]
        quiet: bool,
        /// Print every valid file with its defaults filled in, also when several are given
        /// (one file always is; several get a line each)
        #[arg(long, conflicts_with = "quiet")]
        full: bool,
    },
    /// Generate synthetic BraTS-Africa-layout cases (NIfTI, for demos and tests).
    Synth {
        /// Folder to write the cases into (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Number of cases
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
        cases: u32,
        /// Volume size: XxYxZ voxels, or one number for a cube
        #[arg(long, default_value = "240x240x155", value_parser = parse_size)]
        size: [usize; 3],
        /// Seed; the same seed gives the same cases
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Print progress as `DONE TOTAL` lines on stdout (for the dashboard, which runs
        /// this command to generate the demo data)
        #[arg(long, hide = true)]
        progress_lines: bool,
    },
    /// Score predictions against ground truth with the official BraTS 2024 metrics.
    Eval(commands::eval::EvalArgs),
    /// List the workspace's runs: state, progress, best Dice, speed (table or JSON).
    Runs(commands::runs::RunsArgs),
    /// Stop a run: it finishes its step and writes a checkpoint (--kill: at once).
    Stop {
        /// The run: its id, a part only it has, or its directory
        run: String,
        /// SIGKILL the trainer's process group instead (loses work since the last checkpoint)
        #[arg(long)]
        kill: bool,
    },
    /// Queue experiments (a [sweep] queues all its runs), or list, hold, release, reorder the queue.
    Queue(commands::queue::QueueArgs),
    /// Continue a stopped, failed or lost run from its latest checkpoint, in the background (queued first).
    Resume {
        /// The run: its id, a part only it has, or its directory
        run: String,
    },
    /// Write runs' metric histories (loss, learning rate, speed, Dice, HD95 per epoch) as CSV or JSON.
    Export(commands::export::ExportArgs),
    /// Every segtop trainer on this machine, of every user: cores, memory, epoch, speed, best Dice.
    Top(commands::top::TopArgs),
    /// Package trained runs as a model that runs without segtop: ONNX networks, package.toml, predict.py, MODEL.md.
    Package(commands::package::PackageArgs),
    /// Learn a finished run's post-processing from its validation cases (again), for segtop predict.
    Postprocess(commands::postprocess::PostprocessArgs),
    /// Draw a run for slides and papers: PNG curves and a slice montage of prediction against ground truth.
    Report(commands::report::ReportArgs),
    /// Delete a run directory (asks first; never a live run).
    Rm {
        /// The run: its id, a part only it has, or its directory
        run: String,
        /// Do not ask
        #[arg(long, short)]
        yes: bool,
    },
    /// Start queued runs as cores and memory allow (started for you by queue, resume and the dashboard).
    #[command(hide = true)]
    Supervise,
    /// Look at a dataset folder: check its cases, show a slice.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train an experiment (runs segtop-train).
    #[command(disable_help_flag = true)]
    Train(TrainerArgs),
    /// Segment cases with a trained run (runs segtop-train).
    #[command(disable_help_flag = true)]
    Predict(TrainerArgs),
    /// Describe an experiment's network: parameters, work per patch, memory (runs segtop-train).
    #[command(disable_help_flag = true)]
    Summary(TrainerArgs),
    /// Show the libtorch the trainer runs on (runs segtop-train).
    #[command(disable_help_flag = true)]
    Info(TrainerArgs),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Check every case of a BraTS folder and list shape, spacing, datatype and label volumes.
    Scan {
        /// The dataset folder
        root: PathBuf,
        /// File naming: auto, brats2023 or legacy
        #[arg(long, default_value = "auto", value_parser = parse_choice::<Layout>)]
        layout: Layout,
        /// Modalities every case must have, comma-separated
        #[arg(long, default_value = "t1n,t1c,t2f,t2w", value_delimiter = ',', value_parser = parse_choice::<Modality>)]
        modalities: Vec<Modality>,
    },
    /// Preprocess an experiment's dataset into the cache now, and show its split.
    Prepare {
        /// The experiment file
        experiment: PathBuf,
    },
    /// Time loading and preprocessing one case, from NIfTI and from the cache (medians).
    Bench {
        /// The case's folder
        case: PathBuf,
        /// Timed repetitions of each measurement
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeats: u32,
        /// Print one JSON line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print one slice of a case with its labels overlaid: a picture where the terminal draws
    /// images (see --graphics), else half-block characters.
    Show {
        /// The case's folder (or one of its files)
        case: PathBuf,
        /// Modality under the labels: t1n, t1c, t2w or t2f
        #[arg(long, default_value = "t2f", value_parser = parse_choice::<Modality>)]
        modality: Modality,
        /// axial, coronal or sagittal
        #[arg(long, default_value = "axial", value_parser = parse_choice::<Axis>)]
        axis: Axis,
        /// Slice number, from 1 as the dashboard counts [default: the slice with the most tumour]
        #[arg(long)]
        slice: Option<usize>,
        /// Width in characters [default: the terminal's]
        #[arg(long, value_parser = clap::value_parser!(u16).range(8..))]
        width: Option<u16>,
        /// Colours: auto, truecolor, 256, 16 or ascii
        #[arg(long, default_value = "auto")]
        color: String,
    },
}

/// Parses a named choice for clap, listing the allowed names on error.
fn parse_choice<T: Choice + Send + Sync + 'static>(text: &str) -> Result<T, String> {
    T::from_name(text).ok_or_else(|| format!("'{text}' is not one of: {}", T::NAMES.join(", ")))
}

/// Arguments passed to segtop-train untouched.
#[derive(clap::Args)]
struct TrainerArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Command::Supervise)) {
        segtop::run::process::end_quietly_when_the_reader_goes();
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("segtop: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let workspace = enter_workspace(cli.workspace.as_deref())?;
    match cli.command {
        None => {
            open_dashboard(workspace, cli.theme.as_deref(), cli.graphics)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Check {
            files,
            themes,
            quiet,
            full,
        }) => {
            let print = match (quiet, full || files.len() == 1) {
                (true, _) => Printed::Nothing,
                (false, true) => Printed::Full,
                (false, false) => Printed::Line,
            };
            Ok(exit_code(check(&workspace, &files, themes, print)))
        }
        Some(Command::Synth {
            out,
            cases,
            size,
            seed,
            progress_lines,
        }) => {
            let spec = segtop::data::synth::SynthSpec {
                cases,
                shape: size,
                seed,
            };
            commands::data::synth(&out, &spec, progress_lines)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Data(command)) => run_data(&workspace, command, cli.graphics),
        Some(Command::Eval(args)) => Ok(exit_code(commands::eval::eval(&args)?)),
        Some(Command::Runs(args)) => commands::runs::runs(&workspace, &args).map(|()| ExitCode::SUCCESS),
        Some(Command::Stop { run, kill }) => {
            commands::runs::stop(&workspace, &run, kill)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Top(args)) => commands::top::top(&args).map(|()| ExitCode::SUCCESS),
        Some(Command::Package(args)) => commands::package::package(&workspace, &args).map(|()| ExitCode::SUCCESS),
        Some(Command::Postprocess(args)) => {
            commands::postprocess::postprocess(&workspace, &args).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Report(args)) => commands::report::report(&workspace, &args).map(|()| ExitCode::SUCCESS),
        Some(Command::Queue(args)) => commands::queue::queue(&workspace, &args).map(|()| ExitCode::SUCCESS),
        Some(Command::Supervise) => {
            let launcher = segtop::schedule::launcher::Local::new()?;
            segtop::supervisor::run(&workspace, &launcher, &Settings::queue)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Resume { run }) => commands::runs::resume(&workspace, &run).map(|()| ExitCode::SUCCESS),
        Some(Command::Export(args)) => commands::export::export(&workspace, &args).map(|()| ExitCode::SUCCESS),
        Some(Command::Rm { run, yes }) => Ok(exit_code(commands::runs::remove(&workspace, &run, yes)?)),
        Some(Command::Train(args)) => hand_over("train", args.args),
        Some(Command::Predict(args)) => hand_over("predict", args.args),
        Some(Command::Summary(args)) => hand_over("summary", args.args),
        Some(Command::Info(args)) => hand_over("info", args.args),
    }
}

/// `-C DIR` works as `git -C` does: segtop (and the trainer it hands over to) runs as if
/// started in DIR, so relative FILE arguments and `runs/` are DIR's.
fn enter_workspace(dir: Option<&Path>) -> anyhow::Result<Workspace> {
    if let Some(dir) = dir {
        std::env::set_current_dir(dir).with_context(|| format!("-C {}: cannot enter the workspace", dir.display()))?;
    }
    Ok(Workspace::new(
        std::env::current_dir().context("cannot read the current directory")?,
    ))
}

/// `segtop check`: theme files with `--themes`, else experiment files; true when all are usable.
fn check(workspace: &Workspace, files: &[PathBuf], themes: bool, print: Printed) -> bool {
    if themes {
        check_themes(files)
    } else {
        check_experiments(workspace, files, print)
    }
}

/// Commands that report a verdict exit 1 when it is negative, so scripts can test them.
fn exit_code(ok: bool) -> ExitCode {
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Opens the dashboard with the saved settings and the chosen theme; a saved theme that no
/// longer loads becomes a notice rather than an error, but one named on the command line fails.
fn open_dashboard(
    workspace: Workspace,
    theme_name: Option<&str>,
    graphics: Option<GraphicsChoice>,
) -> anyhow::Result<()> {
    let (settings, mut notice) = match Settings::path().map(|path| Settings::load(&path)) {
        Some(Err(problem)) => (Settings::default(), Some(problem.to_string())),
        Some(Ok(settings)) => (settings, None),
        None => (Settings::default(), None),
    };
    let theme = match (theme_name, settings.theme.as_deref()) {
        (None, Some(saved)) if !no_color() => choose_theme(&workspace, Some(saved)).unwrap_or_else(|error| {
            notice = Some(format!("saved theme: {error:#}"));
            Theme::default()
        }),
        (name, _) => choose_theme(&workspace, name)?,
    };
    let themes = available_themes(&workspace, &theme);
    segtop::dashboard::run(
        workspace,
        segtop::dashboard::Options {
            theme,
            themes,
            graphics: graphics.unwrap_or(settings.graphics),
            settings,
            notice,
        },
    )
}

/// `segtop data ...`: the dataset-folder commands, dispatched together as clap groups them.
fn run_data(workspace: &Workspace, command: DataCommand, graphics: Option<GraphicsChoice>) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Scan {
            root,
            layout,
            modalities,
        } => Ok(exit_code(commands::data::scan(&root, layout, &modalities)?)),
        DataCommand::Prepare { experiment } => {
            let experiment = Experiment::load(&experiment, workspace.root())?;
            commands::data::prepare(&experiment)?;
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Bench { case, repeats, json } => {
            commands::data::bench(&case, repeats as usize, json)?;
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Show {
            case,
            modality,
            axis,
            slice,
            width,
            color,
        } => {
            let color = parse_color(&color)?;
            let graphics = graphics.unwrap_or_else(|| Settings::load_or_default().graphics);
            commands::data::show(&case, modality, axis, slice, width.map(usize::from), (color, graphics))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--color` of `data show`: `None` for auto, which detects the terminal's colours.
fn parse_color(name: &str) -> anyhow::Result<Option<ColorMode>> {
    Ok(match name {
        "auto" => None,
        "truecolor" | "24bit" => Some(ColorMode::TrueColor),
        "256" => Some(ColorMode::Indexed256),
        "16" => Some(ColorMode::Ansi16),
        "ascii" | "none" => Some(ColorMode::Ascii),
        other => bail!("--color '{other}' is not one of: auto, truecolor, 256, 16, ascii"),
    })
}

/// Checks each experiment file; prints the resolved experiment to stdout and every problem
/// to stderr. True when all files are usable.
/// What `segtop check` prints of a file that checks (its problems always go to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printed {
    Nothing,
    /// `experiments/x.toml: ok` (with its sweep's size and its notes), one line a file.
    Line,
    /// The experiment with every default filled in, and its sweep's runs.
    Full,
}

fn check_experiments(workspace: &Workspace, files: &[PathBuf], print: Printed) -> bool {
    let mut failed = 0;
    for (i, path) in files.iter().enumerate() {
        let (experiment, sweep, notes) = match check_experiment(workspace, path) {
            Ok(checked) => checked,
            Err(problems) => {
                failed += 1;
                if print == Printed::Line {
                    println!("{}: {problems} problem(s)", path.display());
                }
                continue;
            }
        };
        match print {
            Printed::Nothing => {}
            Printed::Line => {
                let runs = sweep.map_or_else(String::new, |s| format!(", a sweep of {} runs", s.members.len()));
                let notes = match notes {
                    0 => String::new(),
                    n => format!(", {n} note(s)"),
                };
                println!("{}: ok{runs}{notes}", path.display());
            }
            Printed::Full => {
                if files.len() > 1 {
                    println!("{}# {}", if i > 0 { "\n" } else { "" }, path.display());
                }
                print!("{}", experiment.to_toml());
                if let Some(sweep) = sweep {
                    println!("\n# [sweep]: {} runs, each checked", sweep.members.len());
                    for member in &sweep.members {
                        let values: Vec<String> = member.values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        println!("#   {}: {}", member.experiment.run.name, values.join(", "));
                    }
                }
            }
        }
    }
    if print == Printed::Line {
        println!(
            "{} files: {} ok, {failed} with problems",
            files.len(),
            files.len() - failed
        );
    }
    failed == 0
}

/// Checks one experiment file, its sweep and what it points at, printing every problem to
/// stderr; the checked experiment, its sweep and how many notes it has when it is usable,
/// else how many problems it has.
fn check_experiment(workspace: &Workspace, path: &std::path::Path) -> Result<Checked, usize> {
    let problems = |error: ConfigError| {
        eprintln!("{error:#}");
        error.diagnostics().len().max(1)
    };
    let text = segtop::config::read_text(path).map_err(problems)?;
    let experiment = Experiment::parse(path, &text, workspace.root()).map_err(problems)?;
    let sweep = segtop::experiment::sweep::expand(path, &text, workspace.root()).map_err(problems)?;
    let spans = Source::spans(path, &text);
    let (mut fatal, mut notes) = (0, 0);
    for problem in segtop::run::path_problems(&experiment, workspace.root()) {
        let diagnostic = spans.at_key(problem.key, problem.message);
        if problem.fatal {
            fatal += 1;
            eprintln!("{diagnostic}");
        } else {
            notes += 1;
            eprintln!("{diagnostic} (note)");
        }
    }
    if fatal > 0 {
        return Err(fatal);
    }
    Ok((experiment, sweep, notes))
}

/// A usable experiment file: the experiment, its sweep, and how many notes it has.
type Checked = (Experiment, Option<segtop::experiment::sweep::Sweep>, usize);

fn check_themes(files: &[PathBuf]) -> bool {
    let mut all_ok = true;
    for path in files {
        if let Err(error) = Theme::load(path) {
            eprintln!("{error}");
            all_ok = false;
        }
    }
    all_ok
}

/// The theme named on the command line (a name in themes/ or a file), else `mono` when
/// NO_COLOR is set, else the built-in default.
fn choose_theme(workspace: &Workspace, name: Option<&str>) -> anyhow::Result<Theme> {
    let Some(name) = name else {
        return Ok(if no_color() {
            Theme::monochrome()
        } else {
            Theme::default()
        });
    };
    let as_path = Path::new(name);
    if as_path.extension().is_some_and(|e| e == "toml") || as_path.components().count() > 1 {
        return Ok(Theme::load(as_path)?);
    }
    let path = workspace.theme_file(name);
    if !path.exists() {
        let mut names: Vec<String> = std::fs::read_dir(workspace.themes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        bail!(
            "--theme '{name}': no {} (themes here: {})",
            path.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(Theme::load(&path)?)
}

/// Whether the user asked for no colour (https://no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The themes `t` cycles through: the current one, the built-in default and mono, and every
/// theme file in the workspace that loads.
fn available_themes(workspace: &Workspace, current: &Theme) -> Vec<Theme> {
    let mut themes = vec![current.clone(), Theme::default(), Theme::monochrome()];
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace.themes_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    themes.extend(files.iter().filter_map(|path| Theme::load(path).ok()));
    let mut seen = std::collections::HashSet::new();
    themes.retain(|t| seen.insert(t.name.clone()));
    // Cycle in a stable order, whatever the current one is.
    themes.sort_by(|a, b| a.name.cmp(&b.name));
    themes
}

/// Replaces this process with `segtop-train <subcommand> <args>`, found next to this binary.
fn hand_over(subcommand: &str, args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the running segtop executable")?;
    let trainer = exe.with_file_name("segtop-train");
    if !trainer.is_file() {
        bail!(
            "'segtop {subcommand}' needs the trainer, but {} does not exist; \
             this segtop was built without it (cargo feature 'trainer', on by default)",
            trainer.display()
        );
    }
    use std::os::unix::process::CommandExt;
    // Started as `segtop`, so that its messages name the command the user typed.
    let error = std::process::Command::new(&trainer)
        .arg0("segtop")
        .arg(subcommand)
        .args(args)
        .exec();
    Err(error).with_context(|| format!("cannot start {}", trainer.display()))
}

/// Parses `240x240x155` or `64` (a cube) into a volume size.
fn parse_size(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = text.split('x').collect();
    let sides: Result<Vec<usize>, _> = parts.iter().map(|p| p.trim().parse::<usize>()).collect();
    let sides = match sides.as_deref() {
        Ok(&[n]) => [n, n, n],
        Ok(&[x, y, z]) => [x, y, z],
        _ => {
            return Err(format!(
                "'{text}' is not a size: use XxYxZ (e.g. 240x240x155) or one number"
            ));
        }
    };
    if sides.iter().any(|&n| !(16..=512).contains(&n)) {
        return Err(format!("'{text}': each side must be between 16 and 512 voxels"));
    }
    Ok(sides)
}
