//! Runs as Slurm batch jobs: submission with `sbatch`, job states, `scancel`.
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
//! Job states come from `squeue` (pending, running, and finished jobs until Slurm purges them),
//! then `sacct` where the cluster keeps accounting, else `scontrol show job` and the
//! job-completion log. Jobs are found by their name, which is the run's id (an array's is
//! the sweep's id), so job ids reused after a cluster restart do not mislead.
//!
//! Nothing here needs libtorch: the dashboard on a login node uses it as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::experiment::Experiment;
use crate::launcher::{Halt, Request};
use crate::rundir::{Launch, RunDir};

/// The launcher name in `launch.json`.
pub const NAME: &str = "slurm";
/// The job script of a single run, in its run directory.
pub const SCRIPT: &str = "slurm.sh";
/// The state of a job no Slurm command knows (purged, or never seen).
pub const UNKNOWN: &str = "UNKNOWN";
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
            trainer: crate::launcher::trainer_path().ok(),
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
        // The array's script and one link per task to its run, so that `--output` can name
        // each run's log by the task index.
        let dir = runs_dir.join(ARRAYS).join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (index, (run, ..)) in runs.iter().enumerate() {
            let link = dir.join(index.to_string());
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(run.path(), &link)
                .with_context(|| format!("cannot link {} to {}", link.display(), run.path().display()))?;
        }
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
            .unwrap_or_else(|| crate::experiment::cost::peak_bytes(experiment));
        let trainer = self.trainer(experiment)?;
        let name = job_name(&run.id());
        let header = options(&request.workspace, experiment, peak, &name, &run.log())?;
        let body = format!(
            "export SEGTOP_THREADS=\"${{SLURM_CPUS_PER_TASK:-{}}}\"\nexec {} train --resume {}\n",
            experiment.slurm.cpus_per_task,
            quote(&trainer.to_string_lossy()),
            quote(&run.path().to_string_lossy()),
        );
        let script = run.path().join(SCRIPT);
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
        launcher: NAME.to_string(),
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
    match crate::rundir::split_id(id) {
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

fn write_script(path: &Path, what: &str, options: &[String], body: &str) -> anyhow::Result<()> {
    let mut text =
        format!("#!/bin/bash\n# segtop: {what}.\n# Written by segtop at submission; `segtop resume` writes it anew.\n");
    for option in options {
        text.push_str(&format!("#SBATCH {option}\n"));
    }
    text.push_str(body);
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs a Slurm command (`program`, already given its arguments): its output, whatever its
/// exit status, or an error saying the command is missing.
fn output(program: &str, command: &mut Command) -> anyhow::Result<std::process::Output> {
    command.output().map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("{program} not found: this machine has no Slurm client commands on its PATH")
        } else {
            anyhow::anyhow!("cannot run {program}: {error}")
        }
    })
}

/// Runs a Slurm command; its stdout, or an error with what it said.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = output(program, Command::new(program).args(args))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        bail!("{program} {} failed: {}", args.join(" "), said.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
pub fn cancel(job: &str, halt: Halt) -> anyhow::Result<()> {
    let running = job_status(job).is_some_and(|s| s.phase() == Phase::Running);
    match halt {
        Halt::Stop if running => run("scancel", &["--batch", "--signal=TERM", job]).map(drop),
        Halt::Stop | Halt::Kill => run("scancel", &[job]).map(drop),
    }
}

/// The job this process runs in, as segtop records job ids (`123`, `123_4` for an array
/// task), from the environment Slurm gives it.
pub fn current_job() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(array), Some(task)) => Some(format!("{array}_{task}")),
        _ => var("SLURM_JOB_ID"),
    }
}

/// Holds a pending job (`scontrol hold`: Slurm passes over it) or releases it.
pub fn hold(job: &str, hold: bool) -> anyhow::Result<()> {
    run("scontrol", &[if hold { "hold" } else { "release" }, job]).map(drop)
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for resources (or held, or being requeued).
    Pending,
    /// Started, or finishing.
    Running,
    /// Over: completed, failed, cancelled, out of time, ...
    Ended,
}

/// One job as Slurm sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobStatus {
    /// `123` or, for an array task, `123_4`.
    pub id: String,
    /// Slurm's state: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
    pub state: String,
    /// Why a pending job waits (Priority, Resources, ...).
    pub reason: Option<String>,
    /// `code:signal` of an ended job, when known.
    pub exit_code: Option<String>,
    /// Nodes it runs or ran on.
    pub nodes: Option<String>,
}

impl JobStatus {
    pub fn phase(&self) -> Phase {
        match self.state.as_str() {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => Phase::Pending,
            "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => {
                Phase::Running
            }
            _ => Phase::Ended,
        }
    }

    /// Whether the job is held (`scontrol hold`, by its user or an administrator).
    pub fn is_held(&self) -> bool {
        self.phase() == Phase::Pending && self.reason.as_deref().is_some_and(|r| r.starts_with("JobHeld"))
    }

    /// In words: `pending (Resources)`, `TIMEOUT, exit code 0:15`.
    pub fn describe(&self) -> String {
        match (self.phase(), &self.reason, &self.exit_code) {
            (Phase::Pending, Some(reason), _) => format!("pending ({reason})"),
            (Phase::Ended, _, Some(code)) => format!("{}, exit code {code}", self.state),
            _ => self.state.clone(),
        }
    }
}

/// A job segtop submitted: its name (the run's or array's) and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JobRef {
    pub name: String,
    pub id: String,
}

/// The states of `jobs`, from every source the cluster offers; a job none of them knows
/// is missing from the map.
pub fn poll(jobs: &[JobRef]) -> anyhow::Result<BTreeMap<String, JobStatus>> {
    let mut found = BTreeMap::new();
    if jobs.is_empty() {
        return Ok(found);
    }
    let mut names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let text = run(
        "squeue",
        &[
            "-h",
            "-r",
            "-t",
            "all",
            "--name",
            &names.join(","),
            "-o",
            "%i|%T|%r|%j|%N",
        ],
    )?;
    for status in parse_squeue(&text, jobs) {
        found.insert(status.id.clone(), status);
    }
    // squeue has no exit codes; scontrol has, while the job record lives.
    for status in found.values_mut().filter(|s| s.phase() == Phase::Ended) {
        if let Some(full) = job_status(&status.id) {
            status.exit_code = full.exit_code;
        }
    }
    let missing: Vec<&JobRef> = jobs.iter().filter(|j| !found.contains_key(&j.id)).collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let ids: Vec<&str> = missing.iter().map(|j| j.id.as_str()).collect();
    match run(
        "sacct",
        &[
            "-n",
            "-P",
            "-X",
            "-j",
            &ids.join(","),
            "-o",
            "JobID,JobName,State,ExitCode,Reason,NodeList",
        ],
    ) {
        Ok(text) => {
            for status in parse_sacct(&text, &missing) {
                found.insert(status.id.clone(), status);
            }
        }
        // No accounting: the completion log, where the cluster keeps one this machine reads.
        Err(_) => {
            if let Some(log) = jobcomp_log() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                for status in parse_jobcomp(&text, &missing) {
                    found.insert(status.id.clone(), status);
                }
            }
        }
    }
    Ok(found)
}

/// `scontrol -o show job ID`, while Slurm keeps the job's record.
pub fn job_status(job: &str) -> Option<JobStatus> {
    let text = run("scontrol", &["-o", "show", "job", job]).ok()?;
    parse_scontrol(&text, job)
}

/// The job-completion log's path, when the cluster writes one to a file.
fn jobcomp_log() -> Option<PathBuf> {
    let text = run("scontrol", &["show", "config"]).ok()?;
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    if value("JobCompType")? != "jobcomp/filetxt" {
        return None;
    }
    Some(PathBuf::from(value("JobCompLoc")?))
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != "None" && text != "(null)" && text != "(None)").then(|| text.to_string())
}

/// `squeue -o '%i|%T|%r|%j|%N'` lines of `jobs`.
pub fn parse_squeue(text: &str, jobs: &[JobRef]) -> Vec<JobStatus> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            let [id, state, reason, name, nodes] = fields.as_slice() else {
                return None;
            };
            jobs.iter().any(|j| j.id == *id && j.name == *name).then(|| JobStatus {
                id: id.to_string(),
                state: state.to_string(),
                reason: non_empty(reason),
                exit_code: None,
                nodes: non_empty(nodes),
            })
        })
        .collect()
}

/// `sacct -n -P -X -o JobID,JobName,State,ExitCode,Reason,NodeList` lines of `jobs`.
pub fn parse_sacct(text: &str, jobs: &[&JobRef]) -> Vec<JobStatus> {
    let mut found: Vec<JobStatus> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let [id, name, state, exit, reason, nodes] = fields.as_slice() else {
            continue;
        };
        if !jobs.iter().any(|j| j.id == *id && j.name == *name) {
            continue;
        }
        // "CANCELLED by 1000": the state is the first word. The last record of an id is the newest.
        found.retain(|s| s.id != *id);
        found.push(JobStatus {
            id: id.to_string(),
            state: state.split_whitespace().next().unwrap_or_default().to_string(),
            reason: non_empty(reason),
            exit_code: non_empty(exit),
            nodes: non_empty(nodes),
        });
    }
    found
}

/// `KEY=VALUE` fields of one line of `scontrol -o` or the completion log.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect()
}

/// `scontrol -o show job JOB` output.
pub fn parse_scontrol(text: &str, job: &str) -> Option<JobStatus> {
    // An array shown by its id lists every task: pick the one asked for.
    text.lines().map(fields).find_map(|f| {
        let id = match (f.get("ArrayJobId"), f.get("ArrayTaskId")) {
            (Some(array), Some(task)) => format!("{array}_{task}"),
            _ => f.get("JobId")?.to_string(),
        };
        (id == job).then(|| JobStatus {
            id,
            state: f.get("JobState").copied().unwrap_or_default().to_string(),
            reason: f.get("Reason").and_then(|r| non_empty(r)),
            exit_code: f.get("ExitCode").and_then(|c| non_empty(c)),
            nodes: f.get("NodeList").and_then(|n| non_empty(n)),
        })
    })
}

/// The job-completion log's lines (`jobcomp/filetxt`) of `jobs`; the newest line of each wins.
pub fn parse_jobcomp(text: &str, jobs: &[&JobRef]) -> Vec<JobStatus> {
    let mut found: BTreeMap<String, JobStatus> = BTreeMap::new();
    for line in text.lines() {
        let f = fields(line);
        let id = match (f.get("ArrayJobId"), f.get("ArrayTaskId")) {
            (Some(array), Some(task)) => format!("{array}_{task}"),
            _ => match f.get("JobId") {
                Some(id) => id.to_string(),
                None => continue,
            },
        };
        if !jobs
            .iter()
            .any(|j| j.id == id && Some(&j.name.as_str()) == f.get("Name"))
        {
            continue;
        }
        found.insert(
            id.clone(),
            JobStatus {
                id,
                state: f.get("JobState").copied().unwrap_or_default().to_string(),
                reason: None,
                exit_code: f.get("ExitCode").and_then(|c| non_empty(c)),
                nodes: f.get("NodeList").and_then(|n| non_empty(n)),
            },
        );
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, id: &str) -> JobRef {
        JobRef {
            name: name.into(),
            id: id.into(),
        }
    }

    #[test]
    fn squeue_lines_of_our_jobs_are_read_and_others_ignored() {
        let text =
            "12|PENDING|Resources|20261127-tiny|\n13_1|RUNNING|None|sweep-a|node3\n14|RUNNING|None|someone-else|n1\n";
        let jobs = [
            job("20261127-tiny", "12"),
            job("sweep-a", "13_1"),
            job("other-name", "14"),
        ];
        let found = parse_squeue(text, &jobs);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].describe(), "pending (Resources)");
        assert_eq!(found[0].phase(), Phase::Pending);
        assert_eq!(found[1].phase(), Phase::Running);
        assert_eq!(found[1].nodes.as_deref(), Some("node3"));
    }

    #[test]
    fn sacct_scontrol_and_the_completion_log_give_ended_states() {
        let jobs = [job("run-a", "7"), job("sweep-b", "9_2")];
        let refs: Vec<&JobRef> = jobs.iter().collect();
        let sacct = "7|run-a|CANCELLED by 1000|0:15||n1\n9_2|sweep-b|TIMEOUT|0:0|TimeLimit|n2\n";
        let found = parse_sacct(sacct, &refs);
        assert_eq!(found[0].state, "CANCELLED");
        assert_eq!(found[0].describe(), "CANCELLED, exit code 0:15");
        assert_eq!(found[1].phase(), Phase::Ended);

        let scontrol = "JobId=10 ArrayJobId=9 ArrayTaskId=2 JobName=sweep-b JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 NodeList=n2\n";
        let status = parse_scontrol(scontrol, "9_2").expect("the task");
        assert_eq!(
            (status.state.as_str(), status.exit_code.as_deref()),
            ("FAILED", Some("3:0"))
        );
        assert!(parse_scontrol(scontrol, "10").is_none());

        // A log kept across cluster restarts: ids repeat, names tell the runs apart.
        let log = "JobId=7 UserId=u(1) Name=old-run JobState=COMPLETED ExitCode=0:0\n\
                   JobId=7 UserId=u(1) Name=run-a JobState=OUT_OF_MEMORY NodeList=n1 ExitCode=0:125\n\
                   JobId=11 Name=sweep-b JobState=COMPLETED ArrayJobId=9 ArrayTaskId=2 ExitCode=0:0\n";
        let found = parse_jobcomp(log, &refs);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].describe(), "OUT_OF_MEMORY, exit code 0:125");
        assert_eq!((found[1].id.as_str(), found[1].state.as_str()), ("9_2", "COMPLETED"));
    }

    #[test]
    fn job_names_lead_with_the_run_and_memory_has_a_margin_and_a_floor() {
        assert_eq!(job_name("20261127-081453-sw-2"), "sw-2-20261127-081453");
        assert_eq!(job_name("my-run"), "my-run");
        assert_eq!(memory(0), "1000M");
        assert_eq!(memory(2_000_000_000), "2400M");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
