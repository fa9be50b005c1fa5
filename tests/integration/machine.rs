//! A server shared by several Unix users: each with a workspace and a supervisor of their own,
//! all counted through the machine's register of trainers. Needs root (to create the users), so
//! ignored by default; `./quickstart.sh test`, as root, runs it.

#![cfg(feature = "trainer")]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use segtop::run::RunDir;
use segtop::schedule::machine::Register;

use super::queue::{finished, tiny_text};
use super::wait::poll_until;

/// A Unix user made for the test, removed (with whatever it still runs) when dropped.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn create(name: &str) -> User {
        let _ = Command::new("userdel").arg(name).output();
        let made = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name])
            .output()
            .expect("useradd runs");
        assert!(
            made.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, name]).output().expect("id runs");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("a number")
        };
        User {
            name: name.to_string(),
            uid: id("-u"),
            gid: id("-g"),
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.name]).output();
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The test's shared machine: the binaries and libtorch where every user can reach them, and
/// the register (mode 1777, as `/var/tmp/segtop-machine` would be).
struct Shared {
    base: tempfile::TempDir,
    mounted: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        let base = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = base.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        for exe in [env!("CARGO_BIN_EXE_segtop"), env!("CARGO_BIN_EXE_segtop-train")] {
            let name = Path::new(exe).file_name().expect("a name");
            std::fs::copy(exe, bin.join(name)).expect("copy the binary");
        }
        // libtorch may sit in root's home, which other users cannot enter: mount its folder here.
        let ldd = Command::new("ldd")
            .arg(env!("CARGO_BIN_EXE_segtop-train"))
            .output()
            .expect("ldd runs");
        let libs = String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .find_map(|line| {
                let path = line.split("=>").nth(1)?.split_whitespace().next()?;
                path.contains("libtorch_cpu").then(|| PathBuf::from(path))
            })
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .expect("the trainer links libtorch");
        let mounted = base.path().join("libtorch");
        std::fs::create_dir(&mounted).expect("mkdir");
        let mount = Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(&libs)
            .arg(&mounted)
            .output()
            .expect("mount runs");
        assert!(mount.status.success(), "{}", String::from_utf8_lossy(&mount.stderr));
        let register = base.path().join("machine");
        std::fs::create_dir(&register).expect("mkdir");
        std::fs::set_permissions(&register, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        Shared { base, mounted }
    }

    fn register(&self) -> PathBuf {
        self.base.path().join("machine")
    }

    /// A workspace of `user`'s own, with the tiny experiment of `epochs`.
    fn workspace(&self, user: &User, epochs: u32) -> PathBuf {
        let ws = self.base.path().join(&user.name);
        std::fs::create_dir(&ws).expect("mkdir");
        // Runs named for their user: ids of the same second differ between workspaces.
        let text = tiny_text(epochs).replace("name = \"tiny\"", &format!("name = \"{}\"", user.name));
        std::fs::write(ws.join("tiny.toml"), text).expect("write");
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(&ws)
            .output()
            .expect("chown runs");
        assert!(chown.status.success());
        ws
    }

    /// `segtop ARGS` as `user` in `ws`.
    fn segtop(&self, user: &User, ws: &Path, args: &[&str]) -> Output {
        Command::new(self.base.path().join("bin/segtop"))
            .args(args)
            .current_dir(ws)
            .uid(user.uid)
            .gid(user.gid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", ws)
            .env("XDG_CONFIG_HOME", ws.join("config"))
            .env("SEGTOP_MACHINE_DIR", self.register())
            .env("SEGTOP_MACHINE_SETTINGS", self.base.path().join("machine.toml"))
            .env("LD_LIBRARY_PATH", &self.mounted)
            .output()
            .expect("segtop runs")
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mounted).output();
    }
}

/// The run directories of a workspace.
fn runs(ws: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(ws.join("runs"))
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// Queues the tiny experiment `times` times as `user`.
fn queue(shared: &Shared, user: &User, ws: &Path, times: usize) {
    for _ in 0..times {
        let queued = shared.segtop(user, ws, &["queue", "tiny.toml"]);
        assert!(queued.status.success(), "{}", String::from_utf8_lossy(&queued.stderr));
    }
}

/// Busy loops outside segtop, ended when dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(count: usize) -> Hogs {
        Hogs(
            (0..count)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            let _ = hog.kill();
            let _ = hog.wait();
        }
    }
}

/// Waits until `user` has no supervisor left (its queue is done).
fn no_supervisor_of(user: &User) {
    poll_until(
        &format!("{}'s supervisor to leave", user.name),
        Duration::from_secs(30),
        || {
            let found = Command::new("pgrep")
                .args(["-u", &user.name, "-f", "segtop.*supervise"])
                .output()
                .expect("pgrep runs");
            (!found.status.success()).then_some(())
        },
    )
    .unwrap_or_else(|t| t.fail(""));
}

/// Who started runs after `after`, in the order they started, from the workspaces' launch
/// records.
fn start_order(workspaces: &[(&str, &Path)], after: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let mut starts: Vec<(chrono::DateTime<chrono::Utc>, String)> = workspaces
        .iter()
        .flat_map(|(name, ws)| {
            runs(ws)
                .into_iter()
                .filter_map(|run| Some((RunDir::open(&run).read_launch()?.time, name.to_string())))
                .filter(|(time, _)| *time > after)
        })
        .collect();
    starts.sort();
    starts.into_iter().map(|(_, name)| name).collect()
}

#[test]
#[ignore = "needs root to create users: ./quickstart.sh test, as root, runs it"]
fn two_users_take_turns_a_killed_supervisor_or_trainer_blocks_nobody_and_other_programs_count() {
    // SAFETY: getuid cannot fail.
    assert_eq!(unsafe { libc::getuid() }, 0, "run as root");
    let shared = Shared::new();
    let a = User::create("segtop-test-a");
    let b = User::create("segtop-test-b");
    let (ws_a, ws_b) = (shared.workspace(&a, 8), shared.workspace(&b, 8));
    // A hostile record: skipped with a warning, never counted.
    std::fs::write(
        shared.register().join("0-1.json"),
        b"{\"version\": 1, \"threads\": 99999999999}",
    )
    .expect("write");
    let register = Register::at(shared.register());

    // a queues two runs; once the first runs, b queues two. By default each run takes both
    // cores, so one trainer runs at a time, and the users take turns: a, b, a, b.
    queue(&shared, &a, &ws_a, 2);
    poll_until("a's first trainer", Duration::from_secs(120), || {
        register.live().0.into_iter().find(|r| r.user == a.name)
    })
    .unwrap_or_else(|t| t.fail(""));
    queue(&shared, &b, &ws_b, 2);
    let mut most_threads = 0;
    let mut reasons = String::new();
    poll_until("all four runs to finish", Duration::from_secs(400), || {
        let (live, _) = register.live();
        let threads: u32 = live.iter().map(|r| r.threads).sum();
        most_threads = most_threads.max(threads);
        assert!(
            threads <= 2,
            "{threads} trainer threads registered at once on 2 cores: {live:?}"
        );
        for ws in [&ws_a, &ws_b] {
            reasons.push_str(&std::fs::read_to_string(ws.join("runs/queue.json")).unwrap_or_default());
        }
        let all: Vec<PathBuf> = runs(&ws_a).into_iter().chain(runs(&ws_b)).collect();
        (all.len() == 4 && all.iter().all(|r| finished(r).is_some())).then_some(())
    })
    .unwrap_or_else(|t| t.fail(std::fs::read_to_string(ws_b.join("runs/supervisor.log")).unwrap_or_default()));
    assert_eq!(most_threads, 2);
    assert_eq!(
        start_order(&[("a", &ws_a), ("b", &ws_b)], chrono::DateTime::<chrono::Utc>::MIN_UTC),
        ["a", "b", "a", "b"]
    );
    assert!(reasons.contains("held by 1 run of user segtop-test-a"), "{reasons}");
    // (Whether a's second run is seen waiting for b's turn depends on which supervisor looks
    // first when a's run ends; the order does not.)
    let log = std::fs::read_to_string(ws_b.join("runs/supervisor.log")).expect("b's supervisor log");
    assert!(log.contains("0-1.json: skipped: not a segtop record"), "{log}");

    // A long run of a's, killed with -9 with its supervisor: b's next run starts and finishes
    // all the same.
    let long_text = tiny_text(200).replace("name = \"tiny\"", &format!("name = \"{}\"", a.name));
    std::fs::write(ws_a.join("tiny.toml"), long_text).expect("write");
    queue(&shared, &a, &ws_a, 1);
    let long = poll_until("a's long trainer", Duration::from_secs(120), || {
        register.live().0.into_iter().find(|r| r.user == a.name)
    })
    .unwrap_or_else(|t| t.fail(""));
    queue(&shared, &b, &ws_b, 1);
    poll_until("b's run to wait for a's", Duration::from_secs(60), || {
        let queue = std::fs::read_to_string(ws_b.join("runs/queue.json")).ok()?;
        queue.contains("held by 1 run of user segtop-test-a").then_some(())
    })
    .unwrap_or_else(|t| t.fail(""));
    // b cannot act on a's run: refused by name, and a's trainer goes on.
    let listing: serde_json::Value =
        serde_json::from_slice(&shared.segtop(&b, &ws_b, &["top", "--json"]).stdout).expect("JSON");
    let trainers = listing["trainers"].as_array().expect("trainers");
    assert!(
        trainers
            .iter()
            .any(|t| t["user"] == "segtop-test-a" && t["run"] == long.run.as_str()),
        "{listing}"
    );
    let long_dir = long.run_dir.to_str().expect("UTF-8").to_string();
    for args in [vec!["stop", long.run.as_str()], vec!["rm", "--yes", &long_dir]] {
        let refused = shared.segtop(&b, &ws_b, &args);
        let said = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert!(!refused.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("is a run of user segtop-test-a: only they can"),
            "{args:?}: {said}"
        );
    }
    assert!(
        register.live().0.iter().any(|r| r.pid == long.pid),
        "a's trainer was touched"
    );
    let killed = Command::new("pkill")
        .args(["-KILL", "-u", &a.name, "-f", "supervise"])
        .output()
        .expect("pkill runs");
    assert!(killed.status.success(), "no supervisor of a to kill");
    // SAFETY: a plain kill of a process of the test's user a.
    unsafe { libc::kill(long.pid as i32, libc::SIGKILL) };
    poll_until("b's third run to finish", Duration::from_secs(200), || {
        let runs = runs(&ws_b);
        (runs.len() == 3 && runs.iter().all(|r| finished(r).is_some())).then_some(())
    })
    .unwrap_or_else(|t| t.fail(std::fs::read_to_string(ws_b.join("runs/supervisor.log")).unwrap_or_default()));
    // Two busy loops outside segtop hold b's next run back, saying why; once they end, it runs.
    // (A supervisor still about from b's last run would have measured a quiet machine; a load
    // is counted once it lasts about two seconds.)
    no_supervisor_of(&b);
    let hogs = Hogs::start(2);
    std::thread::sleep(Duration::from_secs(3));
    queue(&shared, &b, &ws_b, 1);
    poll_until(
        "b's run to wait for cores other programs hold",
        Duration::from_secs(60),
        || {
            let queue = std::fs::read_to_string(ws_b.join("runs/queue.json")).ok()?;
            queue.contains("busy with other programs").then_some(())
        },
    )
    .unwrap_or_else(|t| t.fail(std::fs::read_to_string(ws_b.join("runs/queue.json")).unwrap_or_default()));
    assert_eq!(
        runs(&ws_b)
            .iter()
            .filter(|r| RunDir::open(r).read_launch().is_some())
            .count(),
        3
    );
    drop(hogs);
    poll_until("b's fourth run to finish", Duration::from_secs(200), || {
        let runs = runs(&ws_b);
        (runs.len() == 4 && runs.iter().all(|r| finished(r).is_some())).then_some(())
    })
    .unwrap_or_else(|t| t.fail(std::fs::read_to_string(ws_b.join("runs/supervisor.log")).unwrap_or_default()));

    // Weighted turns: c weighs 2 in the machine's settings file (a and b 1). With both cores
    // busy with other programs, b queues three runs, then c three; once the programs end, c
    // gets two starts for each of b's.
    let settings = shared.base.path().join("machine.toml");
    std::fs::write(&settings, "[shares]\ndefault = 1\nsegtop-test-c = 2\n").expect("write");
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let c = User::create("segtop-test-c");
    let ws_c = shared.workspace(&c, 8);
    no_supervisor_of(&b);
    let hogs = Hogs::start(2);
    std::thread::sleep(Duration::from_secs(3));
    let before = chrono::Utc::now();
    queue(&shared, &b, &ws_b, 3);
    let busy = |ws: &Path| {
        let queue = std::fs::read_to_string(ws.join("runs/queue.json")).ok()?;
        queue.contains("busy with other programs").then_some(())
    };
    poll_until("b's runs to wait for other programs", Duration::from_secs(60), || {
        busy(&ws_b)
    })
    .unwrap_or_else(|t| t.fail(""));
    queue(&shared, &c, &ws_c, 3);
    poll_until("c's runs to wait for other programs", Duration::from_secs(60), || {
        busy(&ws_c)
    })
    .unwrap_or_else(|t| t.fail(""));
    // Both are in the machine's queue, b first (it waited longest), then c twice.
    let listing: serde_json::Value =
        serde_json::from_slice(&shared.segtop(&a, &ws_a, &["top", "--json"]).stdout).expect("JSON");
    let users: Vec<&str> = listing["waiting"]
        .as_array()
        .expect("waiting runs")
        .iter()
        .map(|w| w["user"].as_str().expect("a user"))
        .collect();
    assert_eq!(
        users,
        [
            "segtop-test-b",
            "segtop-test-c",
            "segtop-test-c",
            "segtop-test-b",
            "segtop-test-c",
            "segtop-test-b"
        ],
        "{listing}"
    );
    drop(hogs);
    poll_until("b's and c's runs to finish", Duration::from_secs(400), || {
        let threads: u32 = register.live().0.iter().map(|r| r.threads).sum();
        assert!(threads <= 2, "{threads} trainer threads registered at once on 2 cores");
        let all: Vec<PathBuf> = runs(&ws_b).into_iter().chain(runs(&ws_c)).collect();
        (all.len() == 10 && all.iter().all(|r| finished(r).is_some())).then_some(())
    })
    .unwrap_or_else(|t| t.fail(std::fs::read_to_string(ws_c.join("runs/supervisor.log")).unwrap_or_default()));
    assert_eq!(
        start_order(&[("b", &ws_b), ("c", &ws_c)], before),
        ["b", "c", "c", "b", "c", "b"]
    );

    // b sees no trainer left: the dead one's record no longer counts.
    let top = shared.segtop(&b, &ws_b, &["top", "--json"]);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    let listing: serde_json::Value = serde_json::from_slice(&top.stdout).expect("JSON");
    assert_eq!(listing["trainers"], serde_json::json!([]), "{listing}");
}
