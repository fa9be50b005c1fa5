//! Runs as Slurm batch jobs: submission with `sbatch`, holds, `scancel`.
//!
//! segtop writes a job script per submission and records the job id in the run's
//! `launch.json`. The script runs `segtop-train train --resume RUN` with the run directory on
//! the filesystem the login node and the compute nodes share, sends the trainer's output to the
//! run's `train.log`, sets the torch threads from `--cpus-per-task`, and asks Slurm with
//! `--signal=B:USR1@N` to send the trainer SIGUSR1 N seconds before the time limit, so it
//! checkpoints rather than being killed, and (with `slurm.requeue`) submits the run again to
//! go on from there. SIGUSR1, not SIGTERM, so the trainer can tell the time limit from a stop.
//!
//! A sweep whose runs ask for the same resources is one job array; runs that differ in what
//! they ask of Slurm (a `[sweep]` over a `slurm.` key) go as one job each.
//!
//! Jobs are named by the run's id (an array's by the sweep's id); [`crate::schedule::slurm`] reads
//! their states.
//!
//! Nothing here needs libtorch: the dashboard on a login node uses it as it is.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::Request;
use crate::experiment::{Experiment, LauncherKind};
use crate::run::process::Halt;
use crate::run::{Launch, RunDir};
use crate::schedule::slurm::{Phase, SlurmError, job_status, output, run};

/// Job arrays' scripts and links, under `runs/`.
pub const ARRAYS: &str = ".slurm";

/// Submits runs with `sbatch`.
#[derive(Debug, Clone, Default)]
pub struct Slurm {
    /// The trainer for experiments that do not name one (`slurm.trainer`).
    trainer: Option<PathBuf>,
}

impl Slurm {
    /// Submits with the trainer installed next to the running `segtop`, unless an
    /// experiment names another.
    pub fn new() -> Slurm {
        Slurm {
            trainer: super::trainer_path().ok(),
        }
    }

    fn trainer(&self, experiment: &Experiment) -> anyhow::Result<PathBuf> {
        if !experiment.slurm.trainer.is_empty() {
            return Ok(PathBuf::from(&experiment.slurm.trainer));
        }
        self.trainer.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no trainer to submit: segtop was built without segtop-train; set slurm.trainer to the segtop-train the cluster's nodes run"
            )
        })
    }

    /// Submits `runs` (of one experiment file, frozen in their directories), as one job
    /// array when they ask Slurm for the same resources, else as one job each. `name` names
    /// the array (the sweep's id). Writes each run's launch record; returns them in order.
    pub fn submit_all(
        &self,
        workspace: &crate::workspace::Workspace,
        runs: &[(RunDir, Experiment, u64)],
        name: &str,
        experiment_file: &Path,
    ) -> anyhow::Result<Vec<Launch>> {
        let (runs_dir, workspace) = (workspace.runs_dir(), workspace.root());
        let headers: Vec<Vec<String>> = runs
            .iter()
            .map(|(run, experiment, peak)| options(workspace, experiment, *peak, &job_name(&run.id()), &run.log()))
            .collect::<anyhow::Result<_>>()?;
        let trainers: Vec<PathBuf> = runs
            .iter()
            .map(|(_, e, _)| self.trainer(e))
            .collect::<anyhow::Result<_>>()?;
        let same = runs.len() > 1
            && headers.windows(2).all(|w| resources(&w[0]) == resources(&w[1]))
            && trainers.windows(2).all(|w| w[0] == w[1]);
        if !same {
            return runs
                .iter()
                .map(|(run, experiment, peak)| {
                    let request = Request {
                        workspace: workspace.to_path_buf(),
                        experiment: experiment_file.to_path_buf(),
                        threads: None,
                        peak_bytes: Some(*peak),
                        append_log: false,
                    };
                    self.submit_one(run, experiment, &request)
                })
                .collect();
        }
        let dir = link_tasks(&runs_dir.join(ARRAYS).join(name), runs)?;
        let (_, experiment, peak) = &runs[0];
        let name = job_name(name);
        let mut header = options(workspace, experiment, *peak, &name, &dir.join("%a").join(RunDir::LOG))?;
        header.push(format!("--array=0-{}", runs.len() - 1));
        let dirs: Vec<String> = runs
            .iter()
            .map(|(run, ..)| quote(&run.path().to_string_lossy()))
            .collect();
        let body = format!(
            "runs=({})\nexport SEGTOP_THREADS=\"${{SLURM_CPUS_PER_TASK:-{}}}\"\nexec {} train --resume \"${{runs[$SLURM_ARRAY_TASK_ID]}}\"\n",
            dirs.join(" "),
            experiment.slurm.cpus_per_task,
            quote(&trainers[0].to_string_lossy()),
        );
        let script = dir.join("job.sh");
        write_script(
            &script,
            &format!("array of {} runs of {}", runs.len(), experiment_file.display()),
            &header,
            &body,
        )?;
        let job = sbatch(&script, workspace)?;
        let now = chrono::Utc::now();
        let mut launches = Vec::with_capacity(runs.len());
        for (index, (run, experiment, peak)) in runs.iter().enumerate() {
            let launch = launch_record(
                format!("{job}_{index}"),
                &name,
                &script,
                now,
                experiment_file,
                experiment,
                *peak,
            );
            run.write_launch(&launch)
                .with_context(|| format!("cannot write {}", run.launch().display()))?;
            launches.push(launch);
        }
        Ok(launches)
    }

    /// Submits one run, whose frozen experiment is `experiment`, as a job of its own (a first
    /// start or a resume).
    pub fn submit_one(&self, run: &RunDir, experiment: &Experiment, request: &Request) -> anyhow::Result<Launch> {
        let peak = request
            .peak_bytes
            .unwrap_or_else(|| crate::cost::peak_bytes(experiment));
        let trainer = self.trainer(experiment)?;
        let name = job_name(&run.id());
        let header = options(&request.workspace, experiment, peak, &name, &run.log())?;
        let body = format!(
            "export SEGTOP_THREADS=\"${{SLURM_CPUS_PER_TASK:-{}}}\"\nexec {} train --resume {}\n",
            experiment.slurm.cpus_per_task,
            quote(&trainer.to_string_lossy()),
            quote(&run.path().to_string_lossy()),
        );
        let script = run.slurm_script();
        write_script(
            &script,
            &format!("run {} of {}", run.id(), request.experiment.display()),
            &header,
            &body,
        )?;
        // An exit record of an earlier local process would describe this job once it ends.
        let _ = std::fs::remove_file(run.exit());
        let job = sbatch(&script, &request.workspace)?;
        let launch = launch_record(
            job,
            &name,
            &script,
            chrono::Utc::now(),
            &request.experiment,
            experiment,
            peak,
        );
        run.write_launch(&launch)
            .with_context(|| format!("cannot write {}", run.launch().display()))?;
        Ok(launch)
    }
}

fn launch_record(
    job: String,
    name: &str,
    script: &Path,
    time: chrono::DateTime<chrono::Utc>,
    experiment_file: &Path,
    experiment: &Experiment,
    peak: u64,
) -> Launch {
    Launch {
        pid: None,
        pid_start: None,
        host: sysinfo::System::host_name().unwrap_or_default(),
        time,
        experiment: experiment_file.to_path_buf(),
        launcher: LauncherKind::Slurm,
        oom_kills: None,
        threads: Some(if experiment.train.threads > 0 {
            experiment.train.threads
        } else {
            experiment.slurm.cpus_per_task
        }),
        peak_bytes: Some(peak),
        job: Some(job),
        job_name: Some(name.to_string()),
        script: Some(script.to_path_buf()),
    }
}

/// The job name for a run or sweep id: its name first, as `squeue` shows only the first
/// characters (`20261127-081453-sw-2` -> `sw-2-20261127-081453`). Unique as the id is.
pub fn job_name(id: &str) -> String {
    match crate::run::split_id(id) {
        Some((time, name)) => format!("{name}-{time}"),
        None => id.to_string(),
    }
}

/// The `sbatch` options of a run: its resources, its name and where its output goes.
fn options(
    workspace: &Path,
    experiment: &Experiment,
    peak: u64,
    name: &str,
    output: &Path,
) -> anyhow::Result<Vec<String>> {
    // Everything else in the options is under the workspace, named by checked run names.
    let text = workspace.to_string_lossy();
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '%' | '$' | '`'))
    {
        bail!(
            "cannot submit from {}: sbatch options cannot hold the character {bad:?} in a path; move the workspace",
            workspace.display()
        );
    }
    let slurm = &experiment.slurm;
    let mut options = vec![
        format!("--job-name={name}"),
        format!("--output={}", output.display()),
        "--open-mode=append".to_string(),
        format!("--chdir={}", workspace.display()),
        format!("--cpus-per-task={}", slurm.cpus_per_task),
        format!(
            "--mem={}",
            if slurm.mem.is_empty() {
                memory(peak)
            } else {
                slurm.mem.clone()
            }
        ),
        format!("--signal=B:USR1@{}", slurm.signal_seconds),
    ];
    for (option, value) in [
        ("--time", &slurm.time),
        ("--partition", &slurm.partition),
        ("--account", &slurm.account),
        ("--qos", &slurm.qos),
    ] {
        if !value.is_empty() {
            options.push(format!("{option}={value}"));
        }
    }
    options.extend(slurm.extra_args.iter().cloned());
    Ok(options)
}

/// The options that decide what a job gets (all but its name and output).
fn resources(options: &[String]) -> Vec<&String> {
    options
        .iter()
        .filter(|o| !o.starts_with("--job-name=") && !o.starts_with("--output="))
        .collect()
}

/// `--mem` from an estimated peak: a quarter more, in whole hundreds of MiB, at least 1000M.
pub fn memory(peak_bytes: u64) -> String {
    let mib = (peak_bytes as f64 * 1.25 / 1_048_576.0 / 100.0).ceil() as u64 * 100;
    format!("{}M", mib.max(1000))
}

/// `text` as one shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The folder of a job array: its script goes there, beside one link per task to the task's
/// run, so that `--output` can name each run's log by the task index.
fn link_tasks(dir: &Path, runs: &[(RunDir, Experiment, u64)]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (index, (run, ..)) in runs.iter().enumerate() {
        let link = dir.join(index.to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(run.path(), &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), run.path().display()))?;
    }
    Ok(dir.to_path_buf())
}

fn write_script(path: &Path, what: &str, options: &[String], body: &str) -> anyhow::Result<()> {
    let mut text =
        format!("#!/bin/bash\n# segtop: {what}.\n# Written by segtop at submission; `segtop resume` writes it anew.\n");
    for option in options {
        text.push_str(&format!("#SBATCH {option}\n"));
    }
    text.push_str(body);
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `sbatch --parsable SCRIPT` from `workspace`; the job id.
fn sbatch(script: &Path, workspace: &Path) -> anyhow::Result<String> {
    let output = output(
        "sbatch",
        Command::new("sbatch")
            .arg("--parsable")
            .arg(script)
            .current_dir(workspace),
    )?;
    let said = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "sbatch refused {}: {}",
        script.display(),
        said.trim()
    );
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout.trim().split(';').next().unwrap_or_default();
    anyhow::ensure!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "sbatch printed no job id for {}: {}",
        script.display(),
        stdout.trim()
    );
    Ok(id.to_string())
}

/// Ends job `job`: a running job's trainer gets SIGTERM and stops with a checkpoint in its
/// own time (`Stop`); a pending job leaves the queue; `Kill` cancels at once.
pub fn cancel(job: &str, halt: Halt) -> Result<(), SlurmError> {
    let running = job_status(job).is_some_and(|s| s.phase() == Phase::Running);
    match halt {
        Halt::Stop if running => run("scancel", &["--batch", "--signal=TERM", job]).map(drop),
        Halt::Stop | Halt::Kill => run("scancel", &[job]).map(drop),
    }
}

/// Holds a pending job (`scontrol hold`: Slurm passes over it) or releases it.
pub fn hold(job: &str, hold: bool) -> Result<(), SlurmError> {
    run("scontrol", &[if hold { "hold" } else { "release" }, job]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_lead_with_the_run_and_memory_has_a_margin_and_a_floor() {
        assert_eq!(job_name("20261127-081453-sw-2"), "sw-2-20261127-081453");
        assert_eq!(job_name("my-run"), "my-run");
        assert_eq!(memory(0), "1000M");
        assert_eq!(memory(2_000_000_000), "2400M");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
