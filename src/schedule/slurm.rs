//! What Slurm says about segtop's jobs: their states from `squeue`, then `sacct` where the
//! cluster keeps accounting, else `scontrol show job` and the job-completion log. Jobs are
//! found by their name, which is the run's id (an array's is the sweep's id), so job ids
//! reused after a cluster restart do not mislead. Submitting and cancelling jobs is
//! [`crate::schedule::launcher::slurm`]'s.
//!
//! Nothing here needs libtorch: the dashboard on a login node uses it as it is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::run::Launch;

/// The state of a job no Slurm command knows (purged, or never seen).
pub const UNKNOWN: &str = "UNKNOWN";

/// Why a Slurm command gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("{0} not found: this machine has no Slurm client commands on its PATH")]
    NotFound(String),
    #[error("cannot run {program}: {error}")]
    Start { program: String, error: std::io::Error },
    #[error(
        "{program} did not answer within {seconds} s (the Slurm controller may be busy or unreachable); \
         SEGTOP_SLURM_TIMEOUT sets how long to wait, in seconds"
    )]
    TimedOut { program: String, seconds: f64 },
    #[error("cannot wait for {program}: {error}")]
    Wait { program: String, error: std::io::Error },
    /// It ran and said no: the command line and what it printed on stderr.
    #[error("{command} failed: {said}")]
    Failed { command: String, said: String },
}

/// How long a Slurm command may take before segtop gives up on it (`SEGTOP_SLURM_TIMEOUT`,
/// in seconds, overrides it): a busy or unreachable controller must not hold a screen or the
/// supervisor for ever.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The time-out in force: `SEGTOP_SLURM_TIMEOUT` seconds when set to a positive number.
pub fn timeout() -> Duration {
    std::env::var("SEGTOP_SLURM_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(TIMEOUT, Duration::from_secs_f64)
}

/// Runs a Slurm command (`program`, already given its arguments): its output, whatever its
/// exit status, or an error saying the command is missing or did not answer in [`timeout`].
pub(crate) fn output(program: &str, command: &mut Command) -> Result<std::process::Output, SlurmError> {
    output_within(program, command, timeout())
}

/// [`output`] with its own time-out; a command still running then is killed.
pub(crate) fn output_within(
    program: &str,
    command: &mut Command,
    limit: Duration,
) -> Result<std::process::Output, SlurmError> {
    use std::io::Read;
    use wait_timeout::ChildExt;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                SlurmError::NotFound(program.to_string())
            } else {
                SlurmError::Start {
                    program: program.to_string(),
                    error,
                }
            }
        })?;
    // Both pipes are drained while it runs, so a command that writes much never blocks on them.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = match child.wait_timeout(limit) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SlurmError::TimedOut {
                program: program.to_string(),
                seconds: limit.as_secs_f64(),
            });
        }
        Err(error) => {
            return Err(SlurmError::Wait {
                program: program.to_string(),
                error,
            });
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs a Slurm command; its stdout, or an error with what it said.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, SlurmError> {
    let output = output(program, Command::new(program).args(args))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(SlurmError::Failed {
            command: format!("{program} {}", args.join(" ")),
            said: said.trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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

impl JobRef {
    /// The job a launch record names, for runs submitted to Slurm.
    pub fn of(launch: &Launch) -> Option<JobRef> {
        Some(JobRef {
            name: launch.job_name.clone()?,
            id: launch.job.clone()?,
        })
    }
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
    fn a_command_that_does_not_answer_in_time_is_killed_with_a_clear_error() {
        let error = output_within("sleep", Command::new("sleep").arg("30"), Duration::from_millis(300))
            .expect_err("sleep 30 outlives 0.3 s");
        let message = format!("{error:#}");
        assert!(message.contains("sleep did not answer within 0.3 s"), "{message}");
        assert!(message.contains("SEGTOP_SLURM_TIMEOUT"), "{message}");
        let answered = output_within(
            "sh",
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(20),
        )
        .expect("sh answers");
        assert_eq!(
            (answered.stdout.as_slice(), answered.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        let missing = output_within(
            "no-such-slurm-command",
            &mut Command::new("no-such-slurm-command"),
            Duration::from_secs(5),
        )
        .expect_err("not on PATH");
        assert!(format!("{missing}").contains("not found"), "{missing}");
    }
}
