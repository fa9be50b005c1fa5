//! Admission: which waiting runs may start now, and why the others wait.
//!
//! [`plan`]: at most `max_concurrent` runs at once; each gets an equal share of the
//! core budget as torch threads; a run starts only when its estimated peak memory
//! ([`crate::cost::peak_bytes`]) fits in the available memory less `reserve_ram`
//! and less what the runs already started have yet to allocate. Runs start in queue order: one
//! that does not fit yet holds the ones behind it (so a large run is not starved by small
//! ones), except a run that can never fit, which waits aside with its reason.
//!
//! On a shared server the machine holds more than this workspace's runs: other users' and
//! workspaces' trainers (from the machine's register, [`super::machine`]), cores other
//! programs keep busy, and the cores kept for users whose turn comes first
//! ([`super::shares`]).

use super::queue::{ByteSize, QueueSettings};

/// What the machine has and what is running on it, for admission.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Machine {
    pub cores: u32,
    pub total_ram: u64,
    pub available_ram: u64,
    pub live: Vec<LiveRun>,
    /// Records of the machine's register that were skipped, and why.
    pub warnings: Vec<String>,
    /// Other users whose turn to start a run comes first (fair share: cores go to each user
    /// with waiting runs in turn), with the cores kept for their next runs.
    pub ahead: Vec<Ahead>,
    /// Whole cores kept busy by programs other than segtop's trainers.
    pub other_load: u32,
}

/// A run whose trainer is alive.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRun {
    pub id: String,
    /// Its trainer's process.
    pub pid: u32,
    /// Torch threads it was granted (or is assumed to use).
    pub threads: u32,
    /// Its estimated peak memory, and what it holds now.
    pub peak_bytes: u64,
    pub rss_bytes: u64,
    /// Whose it is when it is not this workspace's: a user's name (from the machine's
    /// register of trainers, see [`super::machine`]). Its cores and memory count against
    /// admission; it does not count against this workspace's runs at once.
    pub owner: Option<String>,
}

/// A waiting run as admission sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub paused: bool,
    pub peak_bytes: u64,
    /// Threads the experiment asks for itself (`train.threads`), if it does.
    pub threads: Option<u32>,
}

/// What admission decides for one waiting run.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Start { threads: u32 },
    Wait(String),
    Paused,
}

/// What admission decides for a queue: each waiting run's decision, in queue order, and what
/// the queue asks of the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Cores wanted by the first run held back (by the machine's free cores or memory,
    /// another user's turn, or this workspace's runs at once): what this queue waits for, as
    /// fair share counts it. 0 when nothing waits.
    pub wants: u32,
}

/// Why a run that could start waits.
enum Hold {
    /// Behind the first waiting run of the queue.
    After(String),
    /// Behind the next runs of other users, whose turn comes first.
    Turn(u32),
    /// This workspace runs as many runs at once as it may.
    Runs(u32),
    Cores(u32),
    Memory(u64),
}

/// Another user whose turn to start a run comes before ours, and the cores their next run
/// needs (kept for it).
#[derive(Debug, Clone, PartialEq)]
pub struct Ahead {
    pub user: String,
    pub cores: u32,
}

/// Decides, in queue order, which waiting runs start now and why the others wait.
pub fn plan(candidates: &[Candidate], machine: &Machine, settings: &QueueSettings) -> Plan {
    let cores = settings.cores(machine.cores);
    let max_concurrent = settings.max_concurrent(machine.cores);
    let reserve = settings.reserve_ram.0;
    let mut running = machine.live.iter().filter(|r| r.owner.is_none()).count() as u32;
    let mut cores_used: u32 = machine.live.iter().map(|r| r.threads).sum::<u32>() + machine.other_load;
    // Cores kept for the next runs of the users whose turn comes first.
    let kept: u32 = machine.ahead.iter().map(|a| a.cores).sum();
    // Memory the live runs will still take on their way to their peak.
    let coming: u64 = machine
        .live
        .iter()
        .map(|r| r.peak_bytes.saturating_sub(r.rss_bytes))
        .sum();
    let mut free = machine.available_ram.saturating_sub(coming);
    let mut blocked: Option<&str> = None;
    let mut wants = 0;
    let mut decisions = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        if candidate.paused {
            decisions.push(Decision::Paused);
            continue;
        }
        let threads = granted(candidate, machine, settings);
        if candidate.peak_bytes + reserve > machine.total_ram {
            decisions.push(Decision::Wait(format!(
                "needs {}, more than this machine's {} less the {} reserve; make the patch or batch smaller",
                ByteSize(candidate.peak_bytes),
                ByteSize(machine.total_ram),
                ByteSize(reserve)
            )));
            continue;
        }
        let hold = if let Some(first) = blocked {
            Some(Hold::After(first.to_string()))
        } else if running >= max_concurrent {
            Some(Hold::Runs(running))
        } else if cores_used + threads > cores {
            Some(Hold::Cores(threads))
        } else if cores_used + kept + threads > cores {
            Some(Hold::Turn(threads))
        } else if candidate.peak_bytes + reserve > free {
            Some(Hold::Memory(candidate.peak_bytes))
        } else {
            None
        };
        match hold {
            Some(hold) => {
                if blocked.is_none() {
                    wants = threads;
                }
                blocked.get_or_insert(&candidate.id);
                decisions.push(Decision::Wait(describe(
                    &hold, machine, cores, cores_used, free, settings,
                )));
            }
            None => {
                running += 1;
                cores_used += threads;
                free = free.saturating_sub(candidate.peak_bytes);
                decisions.push(Decision::Start { threads });
            }
        }
    }
    Plan { decisions, wants }
}

/// The cores (torch threads) a run gets when it starts: what its experiment asks for, else
/// the queue's share, within the cores the queue may use.
pub(super) fn granted(candidate: &Candidate, machine: &Machine, settings: &QueueSettings) -> u32 {
    let cores = settings.cores(machine.cores);
    candidate
        .threads
        .unwrap_or_else(|| settings.share(machine.cores))
        .clamp(1, cores)
}

/// A waiting reason as the user reads it.
fn describe(hold: &Hold, machine: &Machine, cores: u32, used: u32, free: u64, settings: &QueueSettings) -> String {
    let reserve = settings.reserve_ram.0;
    match hold {
        Hold::After(first) => format!("after {first}"),
        Hold::Runs(running) => {
            format!(
                "{running} of {} runs at once are running",
                settings.max_concurrent(machine.cores)
            )
        }
        Hold::Cores(threads) => format!(
            "needs {threads} cores, {} of {cores} free{}",
            cores.saturating_sub(used),
            held_by_others(machine)
        ),
        Hold::Turn(threads) => {
            let mut users: Vec<&str> = machine.ahead.iter().map(|a| a.user.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            let kept: u32 = machine.ahead.iter().map(|a| a.cores).sum();
            format!(
                "needs {threads} cores, the turn of user {} first (cores go to each user with \
                 waiting runs in turn): {kept} kept for their next run(s), {} of {cores} free",
                users.join(", user "),
                cores.saturating_sub(used)
            )
        }
        Hold::Memory(peak) => format!(
            "needs {}, {} free (reserve {})",
            ByteSize(*peak),
            ByteSize(free.saturating_sub(reserve)),
            ByteSize(reserve)
        ),
    }
}

/// What other users' and workspaces' trainers hold, for a waiting reason:
/// ` (2 cores held by 1 run of user ta01, 1 of user ta02)`, or nothing when there are none.
fn held_by_others(machine: &Machine) -> String {
    let mut by_owner: Vec<(&str, u32, u32)> = Vec::new();
    for run in &machine.live {
        let Some(owner) = run.owner.as_deref() else {
            continue;
        };
        match by_owner.iter_mut().find(|(o, ..)| *o == owner) {
            Some((_, runs, threads)) => {
                *runs += 1;
                *threads += run.threads;
            }
            None => by_owner.push((owner, 1, run.threads)),
        }
    }
    let busy = match machine.other_load {
        0 => None,
        1 => Some("1 core busy with other programs".to_string()),
        n => Some(format!("{n} cores busy with other programs")),
    };
    if by_owner.is_empty() {
        return busy.map_or_else(String::new, |b| format!(" ({b})"));
    }
    let cores: u32 = by_owner.iter().map(|(_, _, t)| t).sum();
    let owners: Vec<String> = by_owner
        .iter()
        .enumerate()
        .map(|(i, (owner, runs, _))| {
            let what = if i == 0 {
                format!("{runs} run{}", if *runs == 1 { "" } else { "s" })
            } else {
                runs.to_string()
            };
            format!("{what} of user {owner}")
        })
        .collect();
    format!(
        " ({cores} core{} held by {}{})",
        if cores == 1 { "" } else { "s" },
        owners.join(", "),
        busy.map_or_else(String::new, |b| format!("; {b}"))
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    fn candidate(id: &str, gb: f64) -> Candidate {
        Candidate {
            id: id.into(),
            paused: false,
            peak_bytes: (gb * GB as f64) as u64,
            threads: None,
        }
    }

    /// A 1 GB candidate that asks for one thread.
    fn one_thread(id: &str) -> Candidate {
        Candidate {
            threads: Some(1),
            ..candidate(id, 1.0)
        }
    }

    pub(crate) fn machine(cores: u32, total_gb: u64, available_gb: f64) -> Machine {
        Machine {
            cores,
            total_ram: total_gb * GB,
            available_ram: (available_gb * GB as f64) as u64,
            live: Vec::new(),
            warnings: Vec::new(),
            ahead: Vec::new(),
            other_load: 0,
        }
    }

    pub(crate) fn settings(max_concurrent: u32) -> QueueSettings {
        QueueSettings {
            max_concurrent,
            ..QueueSettings::default()
        }
    }

    #[test]
    fn cores_are_shared_and_runs_beyond_the_limit_wait() {
        let queue = [candidate("a", 1.0), candidate("b", 1.0), candidate("c", 1.0)];
        let decisions = plan(&queue, &machine(4, 24, 20.0), &settings(2)).decisions;
        assert_eq!(decisions[0], Decision::Start { threads: 2 });
        assert_eq!(decisions[1], Decision::Start { threads: 2 });
        assert_eq!(decisions[2], Decision::Wait("2 of 2 runs at once are running".into()));
        // By default one run per two cores: on 2 cores, one run with both.
        let decisions = plan(&queue, &machine(2, 24, 20.0), &QueueSettings::default()).decisions;
        assert_eq!(decisions[0], Decision::Start { threads: 2 });
        assert!(
            matches!(&decisions[1], Decision::Wait(r) if r.contains("1 of 1")),
            "{decisions:?}"
        );
        assert_eq!(decisions[2], Decision::Wait("after b".into()));
    }

    #[test]
    fn memory_admission_counts_what_live_runs_have_yet_to_take() {
        let mut m = machine(8, 16, 4.0);
        m.live.push(LiveRun {
            id: "old".into(),
            pid: 1,
            threads: 2,
            peak_bytes: 3 * GB,
            rss_bytes: GB / 2,
            owner: None,
        });
        // 4 GB available, but the live run will take 2.5 GB more: 1.5 GB free, less the reserve.
        let decisions = plan(&[candidate("big", 2.1)], &m, &settings(4)).decisions;
        assert_eq!(
            decisions,
            [Decision::Wait("needs 2.1 GB, 500 MB free (reserve 1.0 GB)".into())]
        );
        let decisions = plan(&[candidate("small", 0.4)], &m, &settings(4)).decisions;
        assert_eq!(decisions, [Decision::Start { threads: 2 }]);
    }

    #[test]
    fn other_users_trainers_take_cores_but_not_this_workspaces_places() {
        let mut m = machine(2, 24, 20.0);
        let theirs = |id: &str, owner: &str| LiveRun {
            id: id.into(),
            pid: 2,
            threads: 1,
            peak_bytes: GB,
            rss_bytes: GB,
            owner: Some(owner.into()),
        };
        m.live.push(theirs("x", "ta01"));
        m.live.push(theirs("y", "ta01"));
        m.live.push(theirs("z", "ta02"));
        let decisions = plan(&[candidate("a", 1.0)], &m, &settings(1)).decisions;
        assert_eq!(
            decisions,
            [Decision::Wait(
                "needs 2 cores, 0 of 2 free (3 cores held by 2 runs of user ta01, 1 of user ta02)".into()
            )]
        );
        // With one of theirs left, a run that fits in the free core starts: their runs do
        // not count against this workspace's runs at once.
        m.live.truncate(1);
        let one = one_thread("a");
        assert_eq!(
            plan(&[one], &m, &settings(1)).decisions,
            [Decision::Start { threads: 1 }]
        );
    }

    #[test]
    fn cores_are_kept_for_users_whose_turn_comes_first_and_the_queue_says_what_it_wants() {
        let mut m = machine(4, 24, 20.0);
        m.ahead.push(Ahead {
            user: "ta02".into(),
            cores: 2,
        });
        // Two of the four cores are kept for ta02's next run: a starts, b waits for its turn.
        let plan = plan(&[candidate("a", 1.0), candidate("b", 1.0)], &m, &settings(2));
        assert_eq!(plan.decisions[0], Decision::Start { threads: 2 });
        assert_eq!(
            plan.decisions[1],
            Decision::Wait(
                "needs 2 cores, the turn of user ta02 first (cores go to each user with waiting runs \
                 in turn): 2 kept for their next run(s), 2 of 4 free"
                    .into()
            )
        );
        assert_eq!(plan.wants, 2);
        // Held by this workspace's own limit, it wants the cores all the same (for when a run
        // of its own ends; see shares::ahead_of).
        let plan = super::plan(&[one_thread("a"), one_thread("b")], &m, &settings(1));
        assert_eq!(plan.decisions[0], Decision::Start { threads: 1 });
        assert!(matches!(&plan.decisions[1], Decision::Wait(r) if r.contains("1 of 1 runs")));
        assert_eq!(plan.wants, 1);
        // Nobody ahead: both start, and nothing is wanted.
        let plan = super::plan(
            &[candidate("a", 1.0), candidate("b", 1.0)],
            &machine(4, 24, 20.0),
            &settings(2),
        );
        assert_eq!(
            plan.decisions,
            [Decision::Start { threads: 2 }, Decision::Start { threads: 2 }]
        );
        assert_eq!(plan.wants, 0);
    }

    #[test]
    fn cores_other_programs_keep_busy_count_as_taken() {
        let mut m = machine(2, 24, 20.0);
        m.other_load = 1;
        let decisions = plan(&[candidate("a", 1.0)], &m, &settings(1)).decisions;
        assert_eq!(
            decisions,
            [Decision::Wait(
                "needs 2 cores, 1 of 2 free (1 core busy with other programs)".into()
            )]
        );
        let one = one_thread("a");
        assert_eq!(
            plan(&[one], &m, &settings(1)).decisions,
            [Decision::Start { threads: 1 }]
        );
    }

    #[test]
    fn the_head_of_the_queue_holds_the_rest_unless_it_can_never_fit() {
        let decisions = plan(
            &[candidate("huge", 30.0), candidate("big", 5.0), candidate("small", 0.5)],
            &machine(4, 24, 3.0),
            &settings(2),
        )
        .decisions;
        assert!(
            matches!(&decisions[0], Decision::Wait(r) if r.contains("more than this machine's 24.0 GB")),
            "{decisions:?}"
        );
        assert!(matches!(&decisions[1], Decision::Wait(r) if r.starts_with("needs 5.0 GB")));
        assert_eq!(decisions[2], Decision::Wait("after big".into()));
    }

    #[test]
    fn paused_runs_are_passed_over_and_experiment_threads_count() {
        let mut paused = candidate("held", 0.5);
        paused.paused = true;
        let mut greedy = candidate("greedy", 0.5);
        greedy.threads = Some(3);
        let decisions = plan(
            &[paused, greedy, candidate("next", 0.5)],
            &machine(4, 24, 20.0),
            &settings(2),
        )
        .decisions;
        assert_eq!(decisions[0], Decision::Paused);
        assert_eq!(decisions[1], Decision::Start { threads: 3 });
        assert_eq!(decisions[2], Decision::Wait("needs 2 cores, 1 of 4 free".into()));
    }
}
