//! The trainer as a process: the exit codes it ends with, how a process is named for good
//! (pid and start time), and how it is signalled and detached. Both binaries use these, so
//! what one writes the other reads the same way.

use std::process::Command;

use anyhow::Context;

/// The trainer's exit codes, so whoever reaps it can tell how a run ended.
pub mod exit {
    /// Trained all epochs, or stopped early on a plateau.
    pub const FINISHED: i32 = 0;
    /// Failed: an error, reported in train.log and as an event.
    pub const FAILED: i32 = 1;
    /// Asked to stop (SIGINT, SIGTERM) or told of a Slurm time limit (SIGUSR1); a checkpoint
    /// was written.
    pub const STOPPED: i32 = 3;

    /// Whether a trainer exiting with `code` ended as planned: finished, or stopped with a
    /// checkpoint when asked.
    pub fn clean(code: i32) -> bool {
        code == FINISHED || code == STOPPED
    }
}

/// How to end a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// SIGTERM: the trainer finishes its step, checkpoints and exits.
    Stop,
    /// SIGKILL to the trainer's whole process group: immediate, loses work since the last checkpoint.
    Kill,
}

/// When process `pid` started, in seconds since the UNIX epoch; `None` when it does not exist.
/// Together with the pid this names one process for good: pids are reused, start times not.
pub fn start_time(pid: u32) -> Option<u64> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut system = System::new().ok()?;
    let pid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().without_tasks(),
    );
    Some(system.process(pid)?.start_time())
}

/// How many processes the kernel has killed for want of memory since boot (`oom_kill` in
/// `/proc/vmstat`: memory cgroups' limits and the whole machine's alike); `None` where the
/// kernel does not say.
pub fn oom_kills() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// Whether two readings of a process start time are the same process (they are computed
/// from clock ticks since boot, so they may differ by rounding).
pub fn same_start(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 1
}

/// Sends the signal for `halt` to the trainer with `pid`, after checking that `pid` is still
/// a segtop trainer, and the same process when its start time is known (pids are reused).
pub fn signal(pid: u32, pid_start: Option<u64>, halt: Halt) -> anyhow::Result<()> {
    let same = pid_start.is_none_or(|start| start_time(pid).is_some_and(|now| same_start(now, start)));
    anyhow::ensure!(
        same && is_trainer(pid),
        "process {pid} is not this run's trainer any more; nothing was signalled"
    );
    let pid = libc::pid_t::try_from(pid).context("process id out of range")?;
    // SAFETY: plain system calls on a checked process id.
    let result = unsafe {
        match halt {
            Halt::Stop => libc::kill(pid, libc::SIGTERM),
            Halt::Kill if libc::getpgid(pid) == pid => libc::kill(-pid, libc::SIGKILL),
            Halt::Kill => libc::kill(pid, libc::SIGKILL),
        }
    };
    if result == -1 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot signal process {pid}"));
    }
    Ok(())
}

/// Whether the process `pid` runs the segtop trainer.
pub fn is_trainer(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| is_trainer_name(name.trim_end()))
}

/// The kernel keeps 15 characters of a process name.
pub fn is_trainer_name(name: &str) -> bool {
    "segtop-train".starts_with(name) && name.len() >= "segtop-tr".len()
}

/// Puts the child in a session of its own, away from the terminal's hangup and Ctrl-C.
pub fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Lets a command whose output goes to a reader that stops early (`segtop runs | head`, `less`
/// then `q`, `grep -q`) end quietly, as every Unix tool does: by the default action of
/// SIGPIPE, which Rust programs otherwise ignore (their next write then fails, and `println!`
/// panics). Not for the dashboard, the supervisor or a training run, which handle their own
/// ends.
pub fn end_quietly_when_the_reader_goes() {
    #[cfg(unix)]
    // SAFETY: restores a signal's default disposition; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The usual name of a signal number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "SIGKILL (out of memory, or killed)".to_string(),
        libc::SIGABRT => "SIGABRT (aborted; out of memory?)".to_string(),
        libc::SIGSEGV => "SIGSEGV (crashed)".to_string(),
        libc::SIGTERM => "SIGTERM".to_string(),
        libc::SIGINT => "SIGINT".to_string(),
        libc::SIGHUP => "SIGHUP".to_string(),
        libc::SIGXFSZ => "SIGXFSZ (file size limit)".to_string(),
        libc::SIGBUS => "SIGBUS".to_string(),
        other => format!("signal {other}"),
    }
}
