//! The event records a trainer appends to `events.jsonl` in its run directory, one JSON
//! object per line, and the dashboard reads back.
//!
//! Every record carries `event` (its kind) and `time` (UTC). Records are only ever appended,
//! and a reader must expect the last line to be half-written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A score per evaluated BraTS region: enhancing tumour, tumour core, whole tumour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegionScores {
    pub et: f64,
    pub tc: f64,
    pub wt: f64,
}

impl RegionScores {
    pub fn mean(&self) -> f64 {
        (self.et + self.tc + self.wt) / 3.0
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// All epochs trained.
    Completed,
    /// Early stopping: the validation score stopped improving.
    EarlyStopped,
    /// Asked to stop (signal or the dashboard); a checkpoint was written first.
    Stopped,
    /// An error ended the run; `reason` says which.
    Failed,
}

/// Version of the record format, written in `run_started`; bumped when a record changes
/// incompatibly.
pub const SCHEMA: u32 = 1;

/// Scores of one validation case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseScores {
    pub case: String,
    pub dice: RegionScores,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        time: DateTime<Utc>,
        schema: u32,
        pid: u32,
        host: String,
        /// Run name from the experiment.
        name: String,
        /// Fingerprint of the frozen experiment file.
        experiment_hash: String,
        epochs: u32,
        steps_per_epoch: u32,
        parameters: u64,
        threads: u32,
        libtorch: String,
        /// Epoch the run continues from, when resumed from a checkpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<u32>,
    },
    Step {
        time: DateTime<Utc>,
        /// 1-based.
        epoch: u32,
        /// 1-based within the epoch.
        step: u32,
        loss: f64,
        /// Each weighted loss term (`dice`, `ce`, `focal`).
        loss_parts: BTreeMap<String, f64>,
        lr: f64,
        patches_per_s: f64,
        seconds: f64,
    },
    /// The trainer's own use of the machine, every few seconds, so runs on other machines
    /// (a cluster node) show it too.
    Resources {
        time: DateTime<Utc>,
        /// Percent of one core (200 = two cores busy).
        cpu_percent: f64,
        rss_mb: f64,
        peak_rss_mb: f64,
    },
    EpochEnd {
        time: DateTime<Utc>,
        epoch: u32,
        /// Mean total training loss over the epoch.
        loss: f64,
        loss_parts: BTreeMap<String, f64>,
        lr: f64,
        patches_per_s: f64,
        seconds: f64,
    },
    Validation {
        time: DateTime<Utc>,
        epoch: u32,
        /// Mean over validation cases.
        dice: RegionScores,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hd95: Option<RegionScores>,
        /// The seed tutorial's Dice: mean over the 4 classes including background, on the
        /// last training batch. Not a BraTS metric; for comparison with the paper.
        seed_dice: f64,
        cases: Vec<CaseScores>,
        seconds: f64,
    },
    PreviewWritten {
        time: DateTime<Utc>,
        epoch: u32,
        case: String,
        /// Relative to the run directory.
        path: String,
    },
    Checkpoint {
        time: DateTime<Utc>,
        epoch: u32,
        /// Relative to the run directory.
        path: String,
        best: bool,
    },
    EarlyStop {
        time: DateTime<Utc>,
        epoch: u32,
        /// Validations without improvement.
        patience: u32,
    },
    RunFinished {
        time: DateTime<Utc>,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        best_dice: Option<RegionScores>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        seconds: f64,
    },
    Error {
        time: DateTime<Utc>,
        message: String,
    },
}

impl Event {
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            Event::RunStarted { time, .. }
            | Event::Step { time, .. }
            | Event::Resources { time, .. }
            | Event::EpochEnd { time, .. }
            | Event::Validation { time, .. }
            | Event::PreviewWritten { time, .. }
            | Event::Checkpoint { time, .. }
            | Event::EarlyStop { time, .. }
            | Event::RunFinished { time, .. }
            | Event::Error { time, .. } => *time,
        }
    }

    /// The record as one line of `events.jsonl`, newline included.
    pub fn to_line(&self) -> String {
        // Plain structs of numbers and strings always serialize.
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"));
        line.push('\n');
        line
    }

    /// Parses one line of `events.jsonl`.
    pub fn from_line(line: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

/// Appends events to a run's `events.jsonl`, one flushed line each, so a reader never waits
/// for a buffer and a crash loses at most the line being written.
pub struct EventLog {
    file: std::fs::File,
}

impl EventLog {
    pub fn open(path: &std::path::Path) -> std::io::Result<EventLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog { file })
    }

    pub fn emit(&mut self, event: &Event) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(event.to_line().as_bytes())?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_one_line() {
        let time = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .expect("valid date")
            .to_utc();
        let events = [
            Event::EpochEnd {
                time,
                epoch: 3,
                loss: 0.42,
                loss_parts: BTreeMap::from([("dice".to_string(), 0.3), ("ce".to_string(), 0.12)]),
                lr: 1e-3,
                patches_per_s: 0.61,
                seconds: 120.5,
            },
            Event::RunFinished {
                time,
                outcome: Outcome::EarlyStopped,
                best_dice: Some(RegionScores {
                    et: 0.5,
                    tc: 0.6,
                    wt: 0.8,
                }),
                reason: None,
                seconds: 3600.0,
            },
        ];
        for event in events {
            let line = event.to_line();
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(Event::from_line(&line).expect("parses"), event);
        }
    }

    #[test]
    fn the_kind_is_named_in_the_record() {
        let line = r#"{"event":"run_finished","time":"2026-11-26T10:00:00Z","outcome":"failed","reason":"out of memory","seconds":5}"#;
        let Event::RunFinished { outcome, reason, .. } = Event::from_line(line).expect("parses") else {
            panic!("wrong kind");
        };
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(reason.as_deref(), Some("out of memory"));
    }
}
