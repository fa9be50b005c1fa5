//! Real resources running out: a small tmpfs mounted as the run or cache directory, and a
//! memory cgroup with a limit below a run's needs. These tests need root, so they are
//! ignored by default; `./quickstart.sh test` runs them as root where it can mount a tmpfs.

#![cfg(feature = "trainer")]

use std::path::{Path, PathBuf};
use std::process::Command;

use segtop::run::events::{Event, Outcome};

use super::queue::{events, finished};

/// A tmpfs mounted at a path for as long as this lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (these tests need root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }

    /// Bytes free on it.
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.0.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: statvfs fills the struct it is given for a valid C string.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut stat), 0, "statvfs");
            stat.f_bavail * stat.f_frsize
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `segtop-train ARGS` in `dir`, to its end.
fn train(dir: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_segtop-train"))
        .arg("train")
        .args(args)
        .current_dir(dir)
        .env("SEGTOP_THREADS", "1")
        .env("SEGTOP_MACHINE_DIR", dir.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .output()
        .expect("the trainer runs")
}

fn resume(dir: &Path, run: &Path) -> std::process::Output {
    train(dir, &["--resume".as_ref(), run.as_os_str()])
}

#[test]
#[ignore = "needs root to mount a tmpfs: ./quickstart.sh test, as root, runs it"]
fn a_run_on_a_full_disk_fails_with_the_reason_keeps_its_checkpoint_and_resumes_with_room() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runs = Tmpfs::mount(&dir.path().join("runs"), "32m");
    let experiment = super::train::experiment(dir.path(), 4);
    // Trains until its first checkpoint, then stops (SIGTERM: it checkpoints and exits 3).
    let mut first = super::train::start_and_wait(dir.path(), &experiment, |events| {
        events.iter().any(|e| matches!(e, Event::Checkpoint { .. }))
    });
    let stopped = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    assert_eq!(first.wait().expect("stops").code(), Some(3));
    let run = std::fs::read_dir(&runs.0)
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a run");
    let listing = |dir: &Path| -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = walk(dir)
            .into_iter()
            .map(|(p, len)| (p.strip_prefix(dir).expect("inside").display().to_string(), len))
            .collect();
        files.sort();
        files
    };
    let checkpoints = run.join("checkpoints");
    let before = listing(&checkpoints);
    let state = |files: &[(String, u64)]| files.iter().find(|(p, _)| p.ends_with("state.json")).cloned();
    let state_before = state(&before).expect("a checkpoint's state.json");
    let state_text = std::fs::read(checkpoints.join(&state_before.0)).expect("state");

    // The disk fills up, three ways: nothing left (the first event record cannot be written),
    // 16 kB (events of a few steps, then the next write), 64 kB (less than the model, about
    // 90 kB: the checkpoint). Each time the run fails with the reason and loses nothing
    // beyond the steps since its checkpoint.
    let filler = runs.0.join("filler");
    for left in [0u64, 16 << 10, 64 << 10] {
        let room = runs.free().saturating_sub(left);
        std::fs::write(&filler, vec![0u8; room as usize]).expect("fill the disk");
        let ends = |run: &Path| {
            events(run)
                .iter()
                .filter(|e| matches!(e, Event::RunFinished { .. }))
                .count()
        };
        let ends_before = ends(&run);
        let full = resume(dir.path(), &run);
        let said = String::from_utf8_lossy(&full.stderr);
        assert_eq!(full.status.code(), Some(1), "{left} bytes left: {said}");
        assert!(said.contains("No space left on device"), "{left} bytes left: {said}");
        eprintln!(
            "{left} bytes left: {}",
            said.lines().rfind(|l| !l.is_empty()).unwrap_or_default()
        );
        // As far as the disk allowed, the events say so too.
        if ends(&run) > ends_before {
            let (outcome, reason) = finished(&run).expect("finished");
            assert_eq!(outcome, Outcome::Failed);
            assert!(reason.unwrap_or_default().contains("No space left on device"));
        }
        assert_eq!(
            listing(&checkpoints),
            before,
            "{left} bytes left: a half-written checkpoint"
        );
        assert_eq!(
            std::fs::read(checkpoints.join(&state_before.0)).expect("state"),
            state_text
        );
        std::fs::remove_file(&filler).expect("free the disk");
    }

    // Space freed: it resumes from that checkpoint and trains to the end.
    let done = resume(dir.path(), &run);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(matches!(finished(&run), Some((Outcome::Completed, _))));
    drop(runs);
}

/// Every file under `dir`, with its length.
fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            let len = entry.metadata().map_or(0, |m| m.len());
            files.push((path, len));
        }
    }
    files
}

#[test]
#[ignore = "needs root to mount a tmpfs: ./quickstart.sh test, as root, runs it"]
fn a_cache_on_a_full_disk_leaves_no_half_written_entry_and_is_built_once_there_is_room() {
    let dir = tempfile::tempdir().expect("temp dir");
    let experiment = super::train::experiment(dir.path(), 1);
    // Four 48x48x32 cases, cropped to the head and stored in float16: about 0.25 MB a case;
    // room for one.
    let cache = Tmpfs::mount(&dir.path().join("cache"), "400k");
    let full = train(dir.path(), &[experiment.as_os_str()]);
    let entries = walk(&cache.0);
    assert_eq!(
        full.status.code(),
        Some(1),
        "{}\n{entries:?}",
        String::from_utf8_lossy(&full.stderr)
    );
    let said = String::from_utf8_lossy(&full.stderr);
    assert!(said.contains("No space left on device"), "{said}");
    // Only whole entries are left: the one that did not fit was written under a temporary
    // name and is gone; what is there opens as a complete cache file.
    assert!(!entries.is_empty(), "one case fitted");
    for (path, _) in &entries {
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("segc"), "{entries:?}");
        segtop::data::cache::CachedCase::open(path).expect("a whole cache entry");
    }
    // With room, the same command builds the rest of the cache and trains.
    let status = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&cache.0)
        .status()
        .expect("mount runs");
    assert!(status.success());
    let done = train(dir.path(), &[experiment.as_os_str()]);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let run = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| finished(p).is_some_and(|(o, _)| o == Outcome::Completed))
        .count();
    assert_eq!(run, 1);
}

/// A memory cgroup (v1 or v2) limited to `limit` bytes, removed when this is dropped.
struct MemoryCgroup(PathBuf);

impl MemoryCgroup {
    fn create(limit: u64) -> MemoryCgroup {
        let name = format!("segtop-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, files): (PathBuf, &[&str]) = if v1.join("memory.limit_in_bytes").exists() {
            (
                v1.join(&name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            )
        } else {
            (
                Path::new("/sys/fs/cgroup").join(&name),
                &["memory.max", "memory.swap.max"],
            )
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
        for (i, file) in files.iter().enumerate() {
            let path = dir.join(file);
            let value = if i == 1 && file.ends_with("swap.max") { 0 } else { limit };
            if path.exists() {
                std::fs::write(&path, value.to_string()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
        MemoryCgroup(dir)
    }

    /// Makes `command`'s process (and so its children) a member when it starts.
    fn adopt(&self, command: &mut Command) {
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(self.0.join("cgroup.procs").to_string_lossy().as_bytes()).expect("path");
        // SAFETY: only open, write and close between fork and exec, on a path made before.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
#[ignore = "needs root for a memory cgroup: ./quickstart.sh test, as root, runs it"]
fn a_run_over_its_memory_cgroup_is_killed_reads_out_of_memory_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = dir.path();
    std::fs::create_dir_all(ws.join("config/segtop")).expect("mkdir");
    std::fs::write(
        ws.join("config/segtop/settings.toml"),
        "[queue]\nmax_concurrent = 1\nreserve_ram = 0\n",
    )
    .expect("write");
    let text = |name: &str, filters: u32, patch: &str, batch: u32| {
        format!(
            "[data]\nroot = \"data\"\ncache_dir = \"cache\"\nsplit = [0.5, 0.5, 0.0]\n\
             [data.synthetic]\ncases = 4\nseed = 3\nshape = [48, 48, 32]\n\
             [model]\nbase_filters = {filters}\ndepth = 3\n\
             [train]\npatch_size = {patch}\nbatch_size = {batch}\nepochs = 1\npatches_per_epoch = 16\nwarmup_epochs = 0\nthreads = 1\n\
             [validate]\nevery = 1\n[run]\nname = \"{name}\"\n"
        )
    };
    std::fs::write(ws.join("big.toml"), text("big", 32, "[48, 48, 32]", 16)).expect("write");
    std::fs::write(ws.join("tiny.toml"), text("tiny", 4, "[16, 16, 16]", 2)).expect("write");
    let workspace = segtop::workspace::Workspace::new(ws);
    let queue = segtop::schedule::queue::Queue::new(&workspace);
    let big = queue
        .add(&workspace, &ws.join("big.toml"), None)
        .expect("queued")
        .remove(0)
        .run;
    let tiny = queue
        .add(&workspace, &ws.join("tiny.toml"), None)
        .expect("queued")
        .remove(0)
        .run;
    let cgroup = MemoryCgroup::create(600 << 20);
    let mut supervisor = Command::new(env!("CARGO_BIN_EXE_segtop"));
    supervisor
        .arg("supervise")
        .current_dir(ws)
        .env("XDG_CONFIG_HOME", ws.join("config"))
        .env("SEGTOP_MACHINE_DIR", ws.join(".machine"))
        .env("SEGTOP_OTHER_LOAD", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cgroup.adopt(&mut supervisor);
    let status = supervisor.status().expect("the supervisor runs");
    assert!(status.success(), "{status:?}");
    let exit = big.read_exit().expect("the big run's exit record");
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(exit.out_of_memory, "{exit:?}");
    let runs = Command::new(env!("CARGO_BIN_EXE_segtop"))
        .args(["runs", "--json"])
        .current_dir(ws)
        .output()
        .expect("segtop runs");
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&runs.stdout).expect("JSON");
    let row = runs.iter().find(|r| r["id"] == big.id().as_str()).expect("listed");
    assert_eq!(row["state"], "failed", "{row}");
    assert!(
        row["error"].as_str().is_some_and(|e| e.contains("out of memory")),
        "{row}"
    );
    assert!(
        matches!(finished(tiny.path()), Some((Outcome::Completed, _))),
        "the queue went on"
    );
    drop(cgroup);
}
