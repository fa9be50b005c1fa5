//! What the machine is doing at one look, for `segtop top` and the dashboard's machine
//! screen: every segtop trainer on it, of every user, and every user's waiting runs in the
//! order they are expected to start.

use serde::Serialize;

use super::machine::{Register, TrainerRecord};
use super::shares::{Queued, Shares, order};

/// What the register says at one look: `segtop top` and the dashboard's machine screen.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MachineView {
    /// Every live trainer.
    pub trainers: Vec<Trainer>,
    /// Every user's waiting runs, in the order they are expected to start.
    pub queued: Vec<Queued>,
    /// Records skipped as malformed, an untrusted settings file, and why.
    pub warnings: Vec<String>,
}

/// A live trainer as the machine view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trainer {
    pub record: TrainerRecord,
    /// The memory its process holds now.
    pub rss_bytes: u64,
    /// From its run directory, where the viewer may read it.
    pub progress: Option<Progress>,
}

/// How far a run has come, from its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub epoch: u32,
    pub epochs: u32,
    pub patches_per_s: Option<f64>,
    /// The best validation's Dice: ET, TC, WT.
    pub best_dice: Option<[f64; 3]>,
}

impl MachineView {
    /// The same trainers, progress and waiting runs, memory aside (it changes at every look).
    pub fn same_listing(&self, other: &MachineView) -> bool {
        self.queued == other.queued
            && self.trainers.len() == other.trainers.len()
            && self
                .trainers
                .iter()
                .zip(&other.trainers)
                .all(|(a, b)| a.record == b.record && a.progress == b.progress)
    }
}

impl MachineView {
    /// The trainers and waiting runs alive now by `register`, progress aside; memory from
    /// `system`'s process table.
    pub fn look(register: &Register, system: &mut sysinfo::System) -> MachineView {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate};
        let (records, mut warnings) = register.live();
        let pids: Vec<Pid> = records.iter().map(|r| Pid::from_u32(r.pid)).collect();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_memory().without_tasks(),
        );
        let trainers = records
            .into_iter()
            .map(|record| Trainer {
                rss_bytes: system.process(Pid::from_u32(record.pid)).map_or(0, |p| p.memory()),
                record,
                progress: None,
            })
            .collect();
        let (waiting, problems) = register.waiting();
        warnings.extend(problems);
        let (shares, problem) = Shares::here();
        warnings.extend(problem);
        MachineView {
            trainers,
            queued: order(&waiting, &shares),
            warnings,
        }
    }
}
