//! The machine's register of segtop trainers: how every supervisor on a shared server, of any
//! user and any workspace, sees every trainer running on it.
//!
//! The register is a directory every user can write and nobody can spoil for another:
//! `/var/tmp/segtop-machine` (`SEGTOP_MACHINE_DIR` elsewhere), made world-writable with the
//! sticky bit (mode 1777, as `/tmp`), so each user can create records and remove or replace
//! only their own. A trainer's record, `<uid>-<pid>.json`, is written when the supervisor
//! launches it and again by the trainer itself when it starts (a trainer started by hand with
//! `segtop train` registers too), and removed when it ends. It says no more than `segtop top`
//! lists: the user, the run's id and directory, the process, its threads and its estimated peak
//! memory.
//!
//! Nothing in the register is trusted. A record counts only while its file is a regular file
//! owned by the uid its name and contents give, of a plausible size and numbers, and its
//! process is alive, owned by that uid, started when the record says, and runs the segtop
//! trainer. Anything else is skipped (with a warning when it is malformed), so a trainer or a
//! supervisor killed with -9 leaves nothing that blocks anyone: its record just stops counting.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The register's place when `SEGTOP_MACHINE_DIR` does not say.
pub const DEFAULT_DIR: &str = "/var/tmp/segtop-machine";

/// The record formats this build writes and reads.
const TRAINER_VERSION: u32 = 1;
const WAITING_VERSION: u32 = 2;
/// Records larger than this are not segtop's.
const MAX_RECORD_BYTES: u64 = 16 * 1024;
/// Threads and memory beyond these are not a real trainer's.
const MAX_THREADS: u32 = 4096;
const MAX_PEAK_BYTES: u64 = 1 << 50;
/// A waiting record lists at most this many runs, with names at most this long.
pub const MAX_LISTED_RUNS: usize = 64;
const MAX_NAME_BYTES: usize = 256;
/// A pass beyond this is not a real supervisor's.
const MAX_PASS: f64 = 1e12;

/// One running trainer, as the register holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerRecord {
    pub version: u32,
    /// The trainer's owner, by name and uid.
    pub user: String,
    pub uid: u32,
    pub pid: u32,
    /// The process's start time (see [`crate::run::process::start_time`]).
    pub pid_start: u64,
    /// The run's id and directory.
    pub run: String,
    pub run_dir: PathBuf,
    /// Torch threads it runs with.
    pub threads: u32,
    /// Its estimated peak memory.
    pub peak_bytes: u64,
    pub started: DateTime<Utc>,
}

/// A supervisor's waiting runs, as the register holds them for fair share (see
/// [`super::shares`]): which, since when, and where its user stands in taking turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingRecord {
    pub version: u32,
    pub user: String,
    pub uid: u32,
    /// The supervisor's process.
    pub pid: u32,
    pub pid_start: u64,
    /// Runs waiting in its queue (held ones aside).
    pub waiting: u32,
    /// When the oldest of them was queued.
    pub since: DateTime<Utc>,
    /// When this user's supervisor last started a run (none yet: first in turn).
    pub last_started: Option<DateTime<Utc>>,
    /// Cores it has started runs on, over its user's weight: the lowest pass goes next.
    pub pass: f64,
    /// Cores its next run waits for (0: none waits).
    pub wants: u32,
    /// The processes of its workspace's live runs (the first [`MAX_LISTED_RUNS`]), and how
    /// many of them may run at once: while all of those are alive, its runs wait for its own
    /// to end, and ask nothing of the others.
    pub running: Vec<u32>,
    pub max_concurrent: u32,
    /// The waiting runs in its queue's order (the first [`MAX_LISTED_RUNS`]).
    pub runs: Vec<WaitingRun>,
}

/// One waiting run of a [`WaitingRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingRun {
    pub run: String,
    /// Cores it will take.
    pub cores: u32,
}

/// Waiting records end so, trainer records in plain `.json`.
const WAITING_SUFFIX: &str = ".wait.json";

/// The register's directory.
#[derive(Debug, Clone)]
pub struct Register {
    dir: PathBuf,
}

impl Register {
    /// The machine's register (`SEGTOP_MACHINE_DIR`, else [`DEFAULT_DIR`]).
    pub fn here() -> Register {
        let dir = std::env::var_os("SEGTOP_MACHINE_DIR").map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
        Register { dir }
    }

    pub fn at(dir: impl Into<PathBuf>) -> Register {
        Register { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the directory (mode 1777) when it is missing; refuses one that another user could
    /// empty or fill for us: not a real directory, or writable by others without the sticky bit.
    fn ensure(&self) -> Result<(), String> {
        match std::fs::symlink_metadata(&self.dir) {
            Err(_) => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| format!("{}: cannot create: {e}", self.dir.display()))?;
                // The umask took bits away; the sticky bit keeps users to their own records.
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o1777))
                    .map_err(|e| format!("{}: cannot open it to every user: {e}", self.dir.display()))?;
                Ok(())
            }
            Ok(meta) if !meta.is_dir() => Err(format!("{}: not a directory", self.dir.display())),
            Ok(meta) => {
                let mode = meta.mode();
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    return Err(format!(
                        "{}: writable by everyone without the sticky bit (mode {:o}), so anyone could \
                         remove records; its owner should run chmod 1777 on it",
                        self.dir.display(),
                        mode & 0o7777
                    ));
                }
                Ok(())
            }
        }
    }

    fn path_of(&self, uid: u32, pid: u32) -> PathBuf {
        self.dir.join(format!("{uid}-{pid}.json"))
    }

    /// Registers a trainer (replacing our own earlier record of the same process).
    pub fn register(&self, record: &TrainerRecord) -> Result<(), String> {
        self.ensure()?;
        let path = self.path_of(record.uid, record.pid);
        write_public(
            &self.dir,
            &path,
            &serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?,
        )
    }

    /// Removes our record of process `pid`, if there is one.
    pub fn unregister(&self, uid: u32, pid: u32) {
        let _ = std::fs::remove_file(self.path_of(uid, pid));
    }

    /// Says that this supervisor has runs waiting (replacing what it said before).
    pub fn publish_waiting(&self, record: &WaitingRecord) -> Result<(), String> {
        self.ensure()?;
        let path = self.dir.join(format!("{}-{}{WAITING_SUFFIX}", record.uid, record.pid));
        write_public(
            &self.dir,
            &path,
            &serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?,
        )
    }

    /// Takes back what this supervisor said about its waiting runs.
    pub fn withdraw_waiting(&self, uid: u32, pid: u32) {
        let _ = std::fs::remove_file(self.dir.join(format!("{uid}-{pid}{WAITING_SUFFIX}")));
    }

    /// The waiting runs of every live supervisor on the machine, and warnings for records
    /// skipped as malformed.
    pub fn waiting(&self) -> (Vec<WaitingRecord>, Vec<String>) {
        self.scan()
    }

    /// Holds the machine's admission lock until dropped, so that two supervisors (of any users)
    /// do not both give out the same free cores: each looks at the machine, starts what fits
    /// and registers it under the lock. Waits up to `patience` for it; `None` when the lock
    /// cannot be had (no register, or someone holds it that long), and admission goes on
    /// without it.
    pub fn lock(&self, patience: std::time::Duration) -> Option<std::fs::File> {
        use std::os::fd::AsRawFd;
        self.ensure().ok()?;
        let path = self.dir.join(".admission.lock");
        let file = match std::fs::OpenOptions::new().create_new(true).write(true).open(&path) {
            Ok(file) => {
                // Every user locks the same file; only reading it needs opening.
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
                file
            }
            Err(_) => std::fs::File::open(&path).ok()?,
        };
        let deadline = std::time::Instant::now() + patience;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Some(file);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Every trainer alive on this machine by the register, and a warning for each record
    /// that was skipped as malformed. Records of processes that have ended are skipped
    /// silently (and removed when they are ours).
    pub fn live(&self) -> (Vec<TrainerRecord>, Vec<String>) {
        let (mut live, warnings) = self.scan::<TrainerRecord>();
        live.sort_by_key(|r| (r.started, r.pid));
        (live, warnings)
    }

    /// Every record of kind `R` whose process is alive, and a warning for each one skipped as
    /// malformed; records of ended processes are skipped quietly, and removed when ours.
    fn scan<R: Record>(&self) -> (Vec<R>, Vec<String>) {
        let mut found = Vec::new();
        let mut warnings = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (found, warnings);
        };
        let me = current_uid();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = R::stem(&name) else {
                continue;
            };
            match read_record::<R>(&path, stem) {
                Ok(record) if record.alive() => found.push(record),
                Ok(record) => {
                    if record.ids().0 == me {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Err(problem) => warnings.push(format!("{}: skipped: {problem}", path.display())),
            }
        }
        (found, warnings)
    }
}

/// What the register holds: trainers' records and supervisors' waiting records.
trait Record: serde::de::DeserializeOwned {
    /// The format of this kind this build writes and reads.
    const VERSION: u32;
    /// The `<uid>-<pid>` part of a file name of this kind, if it is one.
    fn stem(name: &str) -> Option<&str>;
    /// Owner and process.
    fn ids(&self) -> (u32, u32);
    /// Numbers in range, or what is not.
    fn plausible(&self) -> Result<(), String>;
    /// Whether its process is alive and what it says it is.
    fn alive(&self) -> bool;
}

impl Record for TrainerRecord {
    const VERSION: u32 = TRAINER_VERSION;

    fn stem(name: &str) -> Option<&str> {
        if name.starts_with('.') || name.ends_with(WAITING_SUFFIX) {
            return None;
        }
        name.strip_suffix(".json")
    }

    fn ids(&self) -> (u32, u32) {
        (self.uid, self.pid)
    }

    fn plausible(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > MAX_THREADS || self.peak_bytes > MAX_PEAK_BYTES {
            return Err(format!(
                "implausible: {} threads, {} bytes",
                self.threads, self.peak_bytes
            ));
        }
        Ok(())
    }

    fn alive(&self) -> bool {
        is_alive(self.pid, self.uid, self.pid_start, crate::run::process::is_trainer)
    }
}

impl Record for WaitingRecord {
    const VERSION: u32 = WAITING_VERSION;

    fn stem(name: &str) -> Option<&str> {
        name.strip_suffix(WAITING_SUFFIX)
    }

    fn ids(&self) -> (u32, u32) {
        (self.uid, self.pid)
    }

    fn plausible(&self) -> Result<(), String> {
        if self.waiting > MAX_THREADS || self.wants > MAX_THREADS {
            return Err(format!(
                "implausible: {} waiting for {} cores",
                self.waiting, self.wants
            ));
        }
        if !(0.0..=MAX_PASS).contains(&self.pass) {
            return Err(format!("implausible: pass {:e}", self.pass));
        }
        if self.max_concurrent > MAX_THREADS || self.running.len() > MAX_LISTED_RUNS {
            return Err(format!(
                "implausible: {} of {} runs at once",
                self.running.len(),
                self.max_concurrent
            ));
        }
        if self.runs.len() > MAX_LISTED_RUNS || self.user.len() > MAX_NAME_BYTES {
            return Err(format!("implausible: {} runs listed", self.runs.len()));
        }
        match self
            .runs
            .iter()
            .find(|r| r.run.len() > MAX_NAME_BYTES || !(1..=MAX_THREADS).contains(&r.cores))
        {
            Some(run) => Err(format!(
                "implausible: a run of {} bytes on {} cores",
                run.run.len(),
                run.cores
            )),
            None => Ok(()),
        }
    }

    fn alive(&self) -> bool {
        is_alive(self.pid, self.uid, self.pid_start, is_segtop)
    }
}

/// Writes `bytes` to `path` in the register `dir` through a temporary file, readable by every
/// user: what it says is what `segtop top` shows them.
fn write_public(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut temporary = tempfile::Builder::new()
        .prefix(".record-")
        .tempfile_in(dir)
        .map_err(|e| format!("{}: cannot write: {e}", dir.display()))?;
    std::io::Write::write_all(&mut temporary, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    temporary
        .persist(path)
        .map_err(|e| format!("{}: cannot write: {}", path.display(), e.error))?;
    Ok(())
}

/// Reads a record file whose name without its suffix is `stem` (`<uid>-<pid>`): a regular
/// file of a record's size, owned by the uid its name gives, holding an `R` of this version
/// that names the same uid and pid, with plausible numbers.
fn read_record<R: Record>(path: &Path, stem: &str) -> Result<R, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_RECORD_BYTES {
        return Err(format!("{} bytes, more than a record holds", meta.len()));
    }
    let (uid, pid) = stem
        .split_once('-')
        .and_then(|(uid, pid)| Some((uid.parse::<u32>().ok()?, pid.parse::<u32>().ok()?)))
        .ok_or("its name is not <uid>-<pid>.json")?;
    if meta.uid() != uid {
        return Err(format!("named for uid {uid} but owned by uid {}", meta.uid()));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    /// The version alone, read first: another segtop's records may hold other fields.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let Versioned { version } = serde_json::from_slice(&bytes).map_err(|e| format!("not a segtop record: {e}"))?;
    if version != R::VERSION {
        return Err(format!("record version {version}, this segtop reads {}", R::VERSION));
    }
    let record: R = serde_json::from_slice(&bytes).map_err(|e| format!("not a segtop record: {e}"))?;
    let (said_uid, said_pid) = record.ids();
    if (said_uid, said_pid) != (uid, pid) {
        return Err(format!("says uid {said_uid} pid {said_pid}, its name {uid}-{pid}"));
    }
    record.plausible()?;
    Ok(record)
}

/// Whether process `pid` is alive, owned by `uid`, started at `start` and is what `kind` says.
fn is_alive(pid: u32, uid: u32, start: u64, kind: fn(u32) -> bool) -> bool {
    let owned = std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid);
    owned
        && kind(pid)
        && crate::run::process::start_time(pid).is_some_and(|now| crate::run::process::same_start(now, start))
}

/// Whether process `pid` runs segtop itself (a supervisor).
fn is_segtop(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name.trim_end() == "segtop")
}

/// Where a supervisor stands in taking turns: its pass and when it last started a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Turn {
    pub pass: f64,
    pub last_started: Option<DateTime<Utc>>,
}

/// This supervisor's record of its `runs` waiting (the first of them queued at `since`);
/// what they want of the machine is for the caller to fill in.
pub fn waiting_of(runs: &[WaitingRun], since: DateTime<Utc>, turn: Turn) -> Option<WaitingRecord> {
    let uid = current_uid();
    let pid = std::process::id();
    Some(WaitingRecord {
        version: WAITING_VERSION,
        user: user_name(uid),
        uid,
        pid,
        pid_start: crate::run::process::start_time(pid)?,
        waiting: runs.len() as u32,
        since,
        last_started: turn.last_started,
        pass: turn.pass,
        wants: 0,
        running: Vec::new(),
        max_concurrent: 0,
        runs: runs.iter().take(MAX_LISTED_RUNS).cloned().collect(),
    })
}

/// The user running this process.
pub fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

/// The name of user `uid` (its number when the password database does not know it).
pub fn user_name(uid: u32) -> String {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return uid.to_string();
    };
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse::<u32>().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// The record of a trainer of ours.
pub fn record_of(pid: u32, run: &str, run_dir: &Path, threads: u32, peak_bytes: u64) -> Option<TrainerRecord> {
    let uid = current_uid();
    Some(TrainerRecord {
        version: TRAINER_VERSION,
        user: user_name(uid),
        uid,
        pid,
        pid_start: crate::run::process::start_time(pid)?,
        run: run.to_string(),
        run_dir: std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf()),
        threads: threads.max(1),
        peak_bytes,
        started: Utc::now(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A waiting record of user `uid`'s supervisor `pid`, nothing waiting.
    pub(crate) fn waiting_record(uid: u32, pid: u32) -> WaitingRecord {
        WaitingRecord {
            version: WAITING_VERSION,
            user: "me".into(),
            uid,
            pid,
            pid_start: 1,
            waiting: 0,
            since: DateTime::from_timestamp(1_800_000_000, 0).expect("a time"),
            last_started: None,
            pass: 0.0,
            wants: 0,
            running: Vec::new(),
            max_concurrent: 1,
            runs: Vec::new(),
        }
    }

    fn record(pid: u32) -> TrainerRecord {
        TrainerRecord {
            version: TRAINER_VERSION,
            user: "me".into(),
            uid: current_uid(),
            pid,
            pid_start: 1,
            run: "20260101-000000-a".into(),
            run_dir: "/ws/runs/20260101-000000-a".into(),
            threads: 2,
            peak_bytes: 1 << 30,
            started: Utc::now(),
        }
    }

    #[test]
    fn the_register_is_made_sticky_and_world_writable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let register = Register::at(dir.path().join("machine"));
        register.register(&record(999_999)).expect("registers");
        let mode = std::fs::metadata(register.dir()).expect("made").mode();
        assert_eq!(mode & 0o7777, 0o1777);
        let file = register.dir().join(format!("{}-999999.json", current_uid()));
        assert_eq!(std::fs::metadata(&file).expect("written").mode() & 0o777, 0o644);
        // A world-writable directory without the sticky bit is refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = Register::at(&open).register(&record(1)).expect_err("not sticky");
        assert!(error.contains("without the sticky bit"), "{error}");
    }

    #[test]
    fn records_of_dead_or_foreign_processes_do_not_count_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let register = Register::at(dir.path());
        // A record of ours whose process does not exist: skipped quietly, and removed.
        register.register(&record(u32::MAX - 1)).expect("registers");
        // This test process is alive and ours, but it is not a trainer.
        register.register(&record(std::process::id())).expect("registers");
        let uid = current_uid();
        let write = |name: &str, text: &[u8]| std::fs::write(dir.path().join(name), text).expect("write");
        write(&format!("{uid}-12.json"), b"{\"version\": 1, \"user\": \xff}");
        write(&format!("{uid}-13.json"), &vec![b' '; 20_000]);
        let mut huge = record(14);
        huge.threads = 1_000_000;
        write(&format!("{uid}-14.json"), &serde_json::to_vec(&huge).expect("json"));
        write(
            &format!("{uid}-15.json"),
            &serde_json::to_vec(&record(16)).expect("json"),
        );
        write("not-a-record.json", b"{}");
        let (live, warnings) = register.live();
        assert!(live.is_empty(), "{live:?}");
        let said = warnings.join("\n");
        assert!(said.contains("-12.json: skipped: not a segtop record"), "{said}");
        assert!(said.contains("-13.json: skipped: 20000 bytes"), "{said}");
        assert!(
            said.contains("-14.json: skipped: implausible: 1000000 threads"),
            "{said}"
        );
        assert!(
            said.contains(&format!("-15.json: skipped: says uid {uid} pid 16")),
            "{said}"
        );
        assert!(said.contains("not-a-record.json: skipped: its name is not"), "{said}");
        assert_eq!(warnings.len(), 5, "{said}");
        assert!(!dir.path().join(format!("{uid}-{}.json", u32::MAX - 1)).exists());
    }

    #[test]
    fn hostile_waiting_records_are_skipped_with_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let register = Register::at(dir.path());
        let uid = current_uid();
        let write = |pid: u32, record: &serde_json::Value| {
            let path = dir.path().join(format!("{uid}-{pid}{WAITING_SUFFIX}"));
            std::fs::write(path, serde_json::to_vec(record).expect("json")).expect("write");
        };
        let good = |pid: u32| serde_json::to_value(waiting_record(uid, pid)).expect("json");
        let mut huge_pass = good(21);
        huge_pass["pass"] = serde_json::json!(1e300);
        write(21, &huge_pass);
        let mut many = good(22);
        many["runs"] = serde_json::json!(vec![serde_json::json!({"run": "r", "cores": 1}); 65]);
        write(22, &many);
        let mut no_cores = good(23);
        no_cores["runs"] = serde_json::json!([{"run": "r", "cores": 0}]);
        write(23, &no_cores);
        // An older segtop's record: its version is named, not a missing field.
        write(24, &serde_json::json!({"version": 1, "user": "me", "waiting": 2}));
        let mut extra = good(25);
        extra["command"] = serde_json::json!("rm -rf ~");
        write(25, &extra);
        // A well-formed record of a process that is not a supervisor: skipped quietly.
        write(26, &good(26));
        let (records, warnings) = register.waiting();
        assert!(records.is_empty(), "{records:?}");
        let said = warnings.join("\n");
        for expected in [
            "-21.wait.json: skipped: implausible: pass 1e300",
            "-22.wait.json: skipped: implausible: 65 runs listed",
            "-23.wait.json: skipped: implausible: a run of 1 bytes on 0 cores",
            "-24.wait.json: skipped: record version 1, this segtop reads 2",
            "-25.wait.json: skipped: not a segtop record: unknown field `command`",
        ] {
            assert!(said.contains(expected), "{expected} not in\n{said}");
        }
        assert_eq!(warnings.len(), 5, "{said}");
    }
}
