//! The trainer's own CPU and memory, sampled on a thread of its own into the run's events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;

use segtop::run::events::{Event, EventLog};

/// How often the trainer reports its own CPU and memory.
const RESOURCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A thread that appends a `resources` event every few seconds until dropped.
pub(super) struct ResourceReporter {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResourceReporter {
    pub(super) fn spawn(events: &std::path::Path) -> anyhow::Result<ResourceReporter> {
        let mut log = EventLog::open(events)?;
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = std::thread::Builder::new().name("resources".into()).spawn(move || {
            use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
            let pid = Pid::from_u32(std::process::id());
            let Ok(mut system) = System::new() else {
                return;
            };
            let refresh = |system: &mut System| {
                system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    true,
                    ProcessRefreshKind::nothing().with_cpu().with_memory(),
                );
            };
            refresh(&mut system);
            let mut peak = 0.0f64;
            loop {
                // Sleep in short slices so dropping the reporter ends the thread promptly.
                let wake = Instant::now() + RESOURCE_INTERVAL;
                while Instant::now() < wake {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                refresh(&mut system);
                let Some(process) = system.process(pid) else {
                    return;
                };
                let rss_mb = process.memory() as f64 / 1e6;
                peak = peak.max(rss_mb).max(peak_rss_mb().unwrap_or(0.0));
                let event = Event::Resources {
                    time: Utc::now(),
                    cpu_percent: f64::from(process.cpu_usage()),
                    rss_mb,
                    peak_rss_mb: peak,
                };
                if log.emit(&event).is_err() {
                    return;
                }
            }
        })?;
        Ok(ResourceReporter {
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for ResourceReporter {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The kernel's record of this process's peak resident size (Linux), in MB.
fn peak_rss_mb() -> Option<f64> {
    Some(peak_rss_kib()? * 1024.0 / 1e6)
}

/// The kernel's record of this process's peak resident size (VmHWM, Linux), in KiB.
pub(crate) fn peak_rss_kib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
