//! `[slurm]`: what a run asks of a Slurm cluster when `run.launcher = "slurm"`.
//!
//! Values are checked here against Slurm's own formats (`--time`, `--mem`), so a typo is an
//! error in `segtop check` with the line it is on, not a rejected `sbatch` later. Empty
//! strings leave the choice to the cluster (partition, account, qos, time) or to segtop
//! (`mem`: the run's estimated peak memory with a margin).

use serde::Serialize;

use super::TrainConfig;
use crate::config::Checker;

/// Options segtop writes into every job script itself; `extra_args` may not set them.
pub const MANAGED_OPTIONS: &[&str] = &[
    "--job-name",
    "-J",
    "--output",
    "-o",
    "--error",
    "-e",
    "--open-mode",
    "--chdir",
    "-D",
    "--array",
    "-a",
    "--cpus-per-task",
    "-c",
    "--signal",
    "--parsable",
    "--wrap",
    "--partition",
    "-p",
    "--mem",
    "--mem-per-cpu",
    "--time",
    "-t",
    "--account",
    "-A",
    "--qos",
    "-q",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlurmConfig {
    /// Partition(s) to submit to, comma-separated ("": the cluster's default).
    pub partition: String,
    /// Cores for the job; the trainer uses them all unless `train.threads` says fewer.
    pub cpus_per_task: u32,
    /// Memory for the job in Slurm's form (`8G`, `6000M`); "": the run's estimated peak
    /// memory plus a quarter.
    pub mem: String,
    /// Time limit in Slurm's form (`90`, `4:00:00`, `1-12:00:00`); "": the partition's.
    pub time: String,
    pub account: String,
    pub qos: String,
    /// Further `sbatch` options, one per element (`"--constraint=avx2"`).
    pub extra_args: Vec<String>,
    /// Seconds before the time limit at which the trainer is told (SIGUSR1) to checkpoint.
    pub signal_seconds: u32,
    /// Whether a run that reaches its job's time limit goes on in a new job, submitted by the
    /// trainer after its checkpoint; false: it stops there and waits for `segtop resume`.
    pub requeue: bool,
    /// The trainer binary as the cluster's nodes see it ("": the `segtop-train` installed next
    /// to `segtop`, which must then be on a filesystem the nodes share).
    pub trainer: String,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: String::new(),
            cpus_per_task: 4,
            mem: String::new(),
            time: String::new(),
            account: String::new(),
            qos: String::new(),
            extra_args: Vec::new(),
            signal_seconds: 180,
            requeue: true,
            trainer: String::new(),
        }
    }
}

impl SlurmConfig {
    pub fn is_default(&self) -> bool {
        *self == SlurmConfig::default()
    }

    /// The time limit in seconds, when one is set and is not `UNLIMITED`.
    pub fn time_seconds(&self) -> Option<u64> {
        parse_time(&self.time).flatten()
    }
}

/// A Slurm time limit in seconds: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S`;
/// `Some(None)` for `UNLIMITED`/`infinite`, `None` when it is not one of these forms.
pub fn parse_time(text: &str) -> Option<Option<u64>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("infinite") {
        return Some(None);
    }
    let number = |part: &str| -> Option<u64> {
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (days, clock) = match text.split_once('-') {
        Some((days, clock)) => (Some(number(days)?), clock),
        None => (None, text),
    };
    let parts: Vec<u64> = clock.split(':').map(number).collect::<Option<_>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(Some(seconds))
}

/// Whether `text` is a Slurm memory size: an integer with an optional unit K, M, G or T
/// (megabytes without one).
pub fn is_memory(text: &str) -> bool {
    let digits = text.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    text.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

/// Whether `text` can be a Slurm partition, account or qos name (lists: with `commas`).
fn is_name(text: &str, commas: bool) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (commas && c == ','))
}

pub(super) fn check(check: &mut Checker, raw: super::raw::RawSlurm, train: &TrainConfig) -> SlurmConfig {
    let d = SlurmConfig::default();
    let cpus_per_task = check_cpus(check, raw.cpus_per_task, d.cpus_per_task, train);
    let partition = check_name(check, "slurm.partition", raw.partition, true);
    let account = check_name(check, "slurm.account", raw.account, false);
    let qos = check_name(check, "slurm.qos", raw.qos, false);
    let mem = check_mem(check, raw.mem);
    let (time, signal_seconds) = check_time_limit(check, raw.time, raw.signal_seconds, d.signal_seconds);
    let extra_args = check_extra_args(check, raw.extra_args);
    let trainer = check_trainer(check, raw.trainer);
    SlurmConfig {
        partition,
        cpus_per_task,
        mem,
        time,
        account,
        qos,
        extra_args,
        signal_seconds,
        requeue: raw.requeue.unwrap_or(d.requeue),
        trainer,
    }
}

/// The job's cores, which must cover the trainer's threads.
fn check_cpus(check: &mut Checker, raw: Option<u32>, default: u32, train: &TrainConfig) -> u32 {
    let cpus_per_task = check.value(
        "slurm.cpus_per_task",
        raw,
        default,
        |n| (1..=1024).contains(&n),
        "must be between 1 and 1024",
    );
    if train.threads > cpus_per_task {
        check.error(
            "train.threads",
            format!(
                "train.threads = {} is more than slurm.cpus_per_task = {cpus_per_task}: the job would have fewer cores than threads",
                train.threads
            ),
        );
    }
    cpus_per_task
}

/// A partition, account or qos name goes into the job script, so it must be a plain name.
fn check_name(check: &mut Checker, key: &str, value: Option<String>, commas: bool) -> String {
    let value = value.unwrap_or_default();
    if !is_name(&value, commas) {
        check.error(
            key,
            format!("{key} = '{value}' is not a Slurm name: use letters, digits, '-', '_' or '.'"),
        );
    }
    value
}

/// The job's memory in Slurm's form, or "" for the run's estimate.
fn check_mem(check: &mut Checker, raw: Option<String>) -> String {
    let mem = raw.unwrap_or_default();
    if !mem.is_empty() && !is_memory(&mem) {
        check.error(
            "slurm.mem",
            format!("slurm.mem = '{mem}' is not a Slurm memory size like \"8G\" or \"6000M\" (or \"\" for the run's estimate)"),
        );
    }
    mem
}

/// The time limit and the warning before it, which must leave the run some time to train.
fn check_time_limit(
    check: &mut Checker,
    raw_time: Option<String>,
    raw_signal_seconds: Option<u32>,
    default_signal_seconds: u32,
) -> (String, u32) {
    let time = raw_time.unwrap_or_default();
    let limit = if time.is_empty() { None } else { parse_time(&time) };
    if !time.is_empty() && limit.is_none() {
        check.error(
            "slurm.time",
            format!(
                "slurm.time = '{time}' is not a Slurm time limit like \"90\" (minutes), \"4:00:00\" or \"1-12:00:00\""
            ),
        );
    }
    let signal_seconds = check.value(
        "slurm.signal_seconds",
        raw_signal_seconds,
        default_signal_seconds,
        |n| (30..=86_400).contains(&n),
        "must be between 30 and 86400",
    );
    if let Some(Some(limit)) = limit
        && limit <= u64::from(signal_seconds)
    {
        check.error(
            "slurm.time",
            format!(
                "slurm.time = '{time}' is not longer than slurm.signal_seconds = {signal_seconds}: the run would be told to stop before it starts"
            ),
        );
    }
    (time, signal_seconds)
}

/// Extra sbatch options must be options, one per element, and not ones segtop sets itself.
fn check_extra_args(check: &mut Checker, raw: Option<Vec<String>>) -> Vec<String> {
    let extra_args = raw.unwrap_or_default();
    for arg in &extra_args {
        let option = arg.split('=').next().unwrap_or_default();
        if !arg.starts_with('-') || arg.contains(['\n', '\r']) {
            check.error(
                "slurm.extra_args",
                format!("slurm.extra_args: '{arg}' is not an sbatch option (one option per element, like \"--constraint=avx2\")"),
            );
        } else if MANAGED_OPTIONS.contains(&option)
            || MANAGED_OPTIONS
                .iter()
                .any(|m| m.len() == 2 && option.starts_with(m) && !option.starts_with("--"))
        {
            check.error(
                "slurm.extra_args",
                format!("slurm.extra_args: segtop sets {option} itself; use the [slurm] key for it if there is one"),
            );
        }
    }
    extra_args
}

/// The trainer runs on the cluster's nodes, so a relative path would mean nothing there.
fn check_trainer(check: &mut Checker, raw: Option<String>) -> String {
    let trainer = raw.unwrap_or_default();
    if !trainer.is_empty() && !std::path::Path::new(&trainer).is_absolute() {
        check.error(
            "slurm.trainer",
            format!("slurm.trainer = '{trainer}' must be an absolute path, as the cluster's nodes see it"),
        );
    }
    trainer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Experiment, LauncherKind};
    use std::path::Path;

    fn parse(text: &str) -> Result<Experiment, crate::config::ConfigError> {
        Experiment::parse(
            Path::new("x.toml"),
            &format!("[data]\nroot = \"d\"\n{text}"),
            Path::new("/ws"),
        )
    }

    #[test]
    fn slurm_times_and_sizes_read_as_sbatch_reads_them() {
        assert_eq!(parse_time("90"), Some(Some(5400)));
        assert_eq!(parse_time("4:00:00"), Some(Some(14_400)));
        assert_eq!(parse_time("1-12"), Some(Some(129_600)));
        assert_eq!(parse_time("2-0:30"), Some(Some(174_600)));
        assert_eq!(parse_time("UNLIMITED"), Some(None));
        for bad in ["", "1h", "1:2:3:4", "-5", "1-2-3", "1:-2"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert!(is_memory("8G") && is_memory("6000") && is_memory("512m"));
        assert!(!is_memory("8GB") && !is_memory("G") && !is_memory("0") && !is_memory("1.5G"));
    }

    #[test]
    fn a_slurm_experiment_is_checked_and_written_out_only_when_it_sets_something() {
        let local = parse("").expect("valid");
        assert_eq!(local.run.launcher, LauncherKind::Local);
        assert!(!local.to_toml().contains("[slurm]"));
        let text = "[run]\nlauncher = \"slurm\"\n[slurm]\npartition = \"cpu,long\"\ncpus_per_task = 8\n\
                    mem = \"12G\"\ntime = \"8:00:00\"\nextra_args = [\"--constraint=avx2\"]\nrequeue = false\n";
        let slurm = parse(text).expect("valid");
        assert_eq!(slurm.run.launcher, LauncherKind::Slurm);
        assert!(!slurm.slurm.requeue);
        assert!(
            parse("[slurm]\ncpus_per_task = 2\n").expect("valid").slurm.requeue,
            "requeue by default"
        );
        assert_eq!(slurm.slurm.time_seconds(), Some(28_800));
        let again = Experiment::parse(Path::new("x.toml"), &slurm.to_toml(), Path::new("/ws")).expect("round trip");
        assert_eq!(again, slurm);
    }

    #[test]
    fn every_bad_slurm_value_is_named_with_its_line() {
        let text = "[run]\nlauncher = \"pbs\"\n[train]\nthreads = 8\n[slurm]\npartition = \"cpu; rm\"\n\
                    mem = \"8GB\"\ntime = \"2h\"\nextra_args = [\"--output=x\", \"constraint\", \"-c4\"]\n\
                    trainer = \"bin/segtop-train\"\n";
        let error = parse(text).expect_err("invalid");
        let lines: Vec<String> = error.diagnostics().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "x.toml:4:12: run.launcher = 'pbs' is not one of: local, slurm",
                "x.toml:6:11: train.threads = 8 is more than slurm.cpus_per_task = 4: the job would have fewer cores than threads",
                "x.toml:8:13: slurm.partition = 'cpu; rm' is not a Slurm name: use letters, digits, '-', '_' or '.'",
                "x.toml:9:7: slurm.mem = '8GB' is not a Slurm memory size like \"8G\" or \"6000M\" (or \"\" for the run's estimate)",
                "x.toml:10:8: slurm.time = '2h' is not a Slurm time limit like \"90\" (minutes), \"4:00:00\" or \"1-12:00:00\"",
                "x.toml:11:14: slurm.extra_args: segtop sets --output itself; use the [slurm] key for it if there is one",
                "x.toml:11:14: slurm.extra_args: 'constraint' is not an sbatch option (one option per element, like \"--constraint=avx2\")",
                "x.toml:11:14: slurm.extra_args: segtop sets -c4 itself; use the [slurm] key for it if there is one",
                "x.toml:12:11: slurm.trainer = 'bin/segtop-train' must be an absolute path, as the cluster's nodes see it",
            ]
        );
        let short = parse("[slurm]\ntime = \"2\"\n").expect_err("too short");
        assert!(
            short.to_string().contains("not longer than slurm.signal_seconds = 180"),
            "{short}"
        );
    }
}
