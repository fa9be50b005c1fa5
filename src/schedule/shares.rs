//! Fair share between the users of one machine: the machine-wide settings file that weighs
//! them, and the order in which their waiting runs get cores.
//!
//! Every user's supervisor keeps a *pass*: the cores it has started runs on, divided by its
//! user's weight. When several users have runs waiting for the machine, the one with the
//! lowest pass goes next (stride scheduling), so cores go to the users in turn, in proportion
//! to their weights: a user of weight 2 gets twice the cores of a user of weight 1 while both
//! wait. A supervisor that starts waiting takes the lowest pass of those already waiting, so
//! nobody banks turns while away. A user alone gets the whole machine.
//!
//! The weights are in `/etc/segtop/machine.toml` (`SEGTOP_MACHINE_SETTINGS` elsewhere):
//!
//! ```toml
//! [shares]
//! default = 1    # every user not named
//! ta01 = 2       # an instructor's demonstration runs
//! ```
//!
//! The file counts only while nobody but its owner (root, or the instructor) can change it:
//! a regular file in a directory, neither writable by group or others. Otherwise, or when it
//! is missing or broken, every user weighs the same, and the supervisor and `segtop top` say
//! why.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::admission::Ahead;
use super::machine::WaitingRecord;
use crate::config::{self, Checker, Source};

/// The settings file's place when `SEGTOP_MACHINE_SETTINGS` does not say.
pub const DEFAULT_PATH: &str = "/etc/segtop/machine.toml";
/// Weights outside this range are refused.
const WEIGHTS: std::ops::RangeInclusive<f64> = 0.01..=1000.0;

/// Each user's weight in fair share.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    default: f64,
    users: BTreeMap<String, f64>,
}

impl Default for Shares {
    fn default() -> Shares {
        Shares {
            default: 1.0,
            users: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    shares: Option<BTreeMap<String, f64>>,
}

impl Shares {
    /// The weight of `user`: theirs in the file, else the file's default, else 1.
    pub fn weight(&self, user: &str) -> f64 {
        self.users.get(user).copied().unwrap_or(self.default)
    }

    /// Where the machine's settings file is.
    pub fn path() -> PathBuf {
        std::env::var_os("SEGTOP_MACHINE_SETTINGS").map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
    }

    /// The machine's shares, and why they are equal when a settings file exists but cannot
    /// be used. A missing file is equal shares without a word.
    pub fn here() -> (Shares, Option<String>) {
        let path = Shares::path();
        if std::fs::symlink_metadata(&path).is_err() {
            return (Shares::default(), None);
        }
        match trusted(&path).and_then(|()| Shares::load(&path).map_err(|e| e.to_string())) {
            Ok(shares) => (shares, None),
            Err(problem) => (
                Shares::default(),
                Some(format!("{problem}; every user weighs the same")),
            ),
        }
    }

    /// Reads a settings file, with every problem located in it.
    pub fn load(path: &Path) -> Result<Shares, config::ConfigError> {
        let text = config::read_text(path)?;
        let (raw, source) = Source::parse::<RawSettings>(path, &text)?;
        let mut checker = Checker::new(source);
        let mut shares = Shares::default();
        for (user, weight) in raw.shares.unwrap_or_default() {
            if !WEIGHTS.contains(&weight) {
                let message = format!(
                    "shares.{user} = {weight} is out of range: a weight is from {} to {}",
                    WEIGHTS.start(),
                    WEIGHTS.end()
                );
                checker
                    .diagnostics
                    .push(checker.source.at_parts(&["shares", &user], message));
            } else if user == "default" {
                shares.default = weight;
            } else {
                shares.users.insert(user, weight);
            }
        }
        checker.finish(shares)
    }
}

/// Whether only its owner can change the settings file at `path`: a regular file (after
/// links) in a directory, neither writable by group or others.
fn trusted(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let real = std::fs::canonicalize(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown}: writable by other users than its owner (mode {:o}), so not trusted; \
             its owner should run chmod go-w on it",
            meta.mode() & 0o7777
        ));
    }
    let parent = real.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::metadata(parent).map_err(|e| format!("{}: cannot read: {e}", parent.display()))?;
    if dir.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown}: its directory {} is writable by other users than its owner (mode {:o}), \
             so anyone could replace it; not trusted",
            parent.display(),
            dir.mode() & 0o7777
        ));
    }
    Ok(())
}

/// One waiting run in the machine's queue, across users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Queued {
    /// 1: the next run to start on this machine.
    pub position: usize,
    pub user: String,
    pub run: String,
    /// Cores it will take.
    pub cores: u32,
    /// When its user's oldest waiting run was queued.
    pub since: DateTime<Utc>,
}

/// Whose turn comes first between two waiting users: the lower pass, then who started a run
/// longest ago (or none yet), then who has waited longest.
pub fn turn_order(a: &WaitingRecord, b: &WaitingRecord) -> std::cmp::Ordering {
    let started = |r: &WaitingRecord| r.last_started.map_or(i64::MIN, |t| t.timestamp_millis());
    a.pass
        .total_cmp(&b.pass)
        .then_with(|| (started(a), a.since, a.uid, a.pid).cmp(&(started(b), b.since, b.uid, b.pid)))
}

/// The other users whose turn comes before `mine` and whose next runs wait for cores of the
/// machine, with the cores those want (kept for them). A user whose runs wait only for their
/// own workspace's runs at once to end (all of its `running` trainers still among the `alive`
/// ones) asks nothing of the machine and holds nobody back; the moment one of those ends, it
/// does. When `joining` (this supervisor starts waiting), `mine` first takes the lowest pass
/// of the others that wait, so nobody banks turns while away.
pub fn ahead_of(records: &[WaitingRecord], mine: &mut WaitingRecord, joining: bool, alive: &[u32]) -> Vec<Ahead> {
    let others: Vec<&WaitingRecord> = records.iter().filter(|r| r.uid != mine.uid && r.waiting > 0).collect();
    if joining && let Some(lowest) = others.iter().map(|r| r.pass).min_by(f64::total_cmp) {
        mine.pass = mine.pass.max(lowest);
    }
    others
        .into_iter()
        .filter(|r| {
            let running = r.running.iter().filter(|pid| alive.contains(pid)).count();
            r.wants > 0 && running < r.max_concurrent as usize && turn_order(r, mine).is_lt()
        })
        .map(|r| Ahead {
            user: r.user.clone(),
            cores: r.wants,
        })
        .collect()
}

/// The order in which the waiting runs of every user are expected to start: each user's runs
/// in their queue's order, the users taking turns as fair share gives them (the lowest pass
/// next, a run's cores over its user's weight added to the pass as it starts).
pub fn order(records: &[WaitingRecord], shares: &Shares) -> Vec<Queued> {
    let mut users: Vec<(WaitingRecord, usize)> = records.iter().map(|r| (r.clone(), 0)).collect();
    let mut queued = Vec::new();
    loop {
        let next = users
            .iter_mut()
            .filter(|(r, taken)| *taken < r.runs.len())
            .min_by(|(a, _), (b, _)| turn_order(a, b));
        let Some((record, taken)) = next else {
            break;
        };
        let run = &record.runs[*taken];
        queued.push(Queued {
            position: queued.len() + 1,
            user: record.user.clone(),
            run: run.run.clone(),
            cores: run.cores,
            since: record.since,
        });
        record.pass += f64::from(run.cores.max(1)) / shares.weight(&record.user);
        *taken += 1;
    }
    queued
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::schedule::machine::WaitingRun;

    fn waiting(user: &str, uid: u32, pass: f64, runs: usize) -> WaitingRecord {
        let mut record = crate::schedule::machine::tests::waiting_record(uid, 1);
        record.user = user.into();
        record.pass = pass;
        record.runs = (0..runs)
            .map(|i| WaitingRun {
                run: format!("{user}-{i}"),
                cores: 1,
            })
            .collect();
        record.waiting = runs as u32;
        record
    }

    #[test]
    fn users_take_turns_in_proportion_to_their_weights() {
        let records = [waiting("ta01", 1001, 0.0, 6), waiting("ta02", 1002, 0.0, 6)];
        let shares = Shares {
            default: 1.0,
            users: BTreeMap::from([("ta01".to_string(), 2.0)]),
        };
        let first: Vec<String> = order(&records, &shares).into_iter().take(6).map(|q| q.user).collect();
        // Weight 2 against 1: two starts for every one, ties to the lower uid.
        assert_eq!(first, ["ta01", "ta02", "ta01", "ta01", "ta02", "ta01"]);
        // Equal shares alternate; a user behind on the pass goes first.
        let records = [waiting("ta01", 1001, 3.0, 2), waiting("ta02", 1002, 1.0, 3)];
        let users: Vec<String> = order(&records, &Shares::default())
            .into_iter()
            .map(|q| format!("{}{}", q.position, q.run))
            .collect();
        assert_eq!(users, ["1ta02-0", "2ta02-1", "3ta01-0", "4ta02-2", "5ta01-1"]);
    }

    #[test]
    fn only_users_waiting_for_the_machine_and_before_us_hold_us_back() {
        let mut mine = waiting("me", 1000, 0.0, 1);
        // ta01's runs wait for its one run at once, trainer 71, to end: not ahead while it
        // lives, however low ta01's pass.
        let mut limited = waiting("ta01", 1001, 0.0, 3);
        limited.wants = 1;
        limited.running = vec![71];
        let mut ta02 = waiting("ta02", 1002, 3.0, 1);
        ta02.wants = 2;
        let mut ta03 = waiting("ta03", 1003, 9.0, 1);
        ta03.wants = 1;
        let records = [limited.clone(), ta02.clone(), ta03.clone(), mine.clone()];
        // Joining: our pass catches up with the lowest of those waiting (0, ta01's).
        assert_eq!(ahead_of(&records, &mut mine, true, &[71]), []);
        assert_eq!(mine.pass, 0.0);
        // Having started runs up to pass 5, ta02 (3) comes first, ta03 (9) after us.
        mine.pass = 5.0;
        let ahead = ahead_of(&records, &mut mine, false, &[71]);
        let ta02_ahead = Ahead {
            user: "ta02".into(),
            cores: 2,
        };
        assert_eq!(ahead, std::slice::from_ref(&ta02_ahead));
        // Once ta01's trainer ends, ta01 wants cores of the machine, and its turn is first.
        let ahead = ahead_of(&records, &mut mine, false, &[]);
        let ta01_ahead = Ahead {
            user: "ta01".into(),
            cores: 1,
        };
        assert_eq!(ahead, [ta01_ahead, ta02_ahead]);
        // A user back after a pause does not jump the queue: from pass 0 to the lowest, 3.
        let mut back = waiting("me", 1000, 0.0, 1);
        let records = [ta02, ta03];
        ahead_of(&records, &mut back, true, &[]);
        assert_eq!(back.pass, 3.0);
    }

    #[test]
    fn the_settings_file_counts_only_when_its_owner_alone_can_change_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join("machine.toml");
        std::fs::write(&path, "[shares]\ndefault = 1\nta01 = 2.5\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(trusted(&path), Ok(()));
        let shares = Shares::load(&path).expect("loads");
        assert_eq!((shares.weight("ta01"), shares.weight("ta02")), (2.5, 1.0));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let error = trusted(&path).expect_err("others may write it");
        assert!(
            error.contains("writable by other users") && error.contains("mode 666"),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = trusted(&path).expect_err("others may replace it");
        assert!(error.contains("its directory") && error.contains("mode 777"), "{error}");
    }

    #[test]
    fn bad_settings_are_located_in_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("machine.toml");
        std::fs::write(&path, "[shares]\nta01 = 2\nta02 = -1\n").expect("write");
        let error = Shares::load(&path).expect_err("a negative weight").to_string();
        assert!(
            error.contains("machine.toml:3:8: shares.ta02 = -1 is out of range"),
            "{error}"
        );
        std::fs::write(&path, "[share]\nta01 = 2\n").expect("write");
        let error = Shares::load(&path).expect_err("a misspelt table").to_string();
        assert!(error.contains("machine.toml:1:") && error.contains("share"), "{error}");
        std::fs::write(&path, "[shares]\nta01 = 'two'\n").expect("write");
        let error = Shares::load(&path).expect_err("not a number").to_string();
        assert!(error.contains("machine.toml:2:8"), "{error}");
    }
}
