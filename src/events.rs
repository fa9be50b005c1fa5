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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        time: DateTime<Utc>,
        pid: u32,
        host: String,
        /// Run name from the experiment.
        name: String,
        epochs: u32,
        parameters: u64,
        threads: u32,
        /// Epoch the run continues from, when resumed from a checkpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<u32>,
    },
    EpochFinished {
        time: DateTime<Utc>,
        epoch: u32,
        /// Mean total training loss over the epoch.
        loss: f64,
        /// Mean of each weighted loss term (`dice`, `ce`, `focal`).
        loss_parts: BTreeMap<String, f64>,
        lr: f64,
        patches_per_s: f64,
        seconds: f64,
    },
    Validated {
        time: DateTime<Utc>,
        epoch: u32,
        dice: RegionScores,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hd95: Option<RegionScores>,
        /// The seed tutorial's Dice: mean over the 4 classes including background, on patches.
        seed_dice: f64,
        seconds: f64,
    },
    CheckpointSaved {
        time: DateTime<Utc>,
        epoch: u32,
        /// Relative to the run directory.
        path: String,
        best: bool,
    },
    PreviewSaved {
        time: DateTime<Utc>,
        epoch: u32,
        /// Relative to the run directory.
        path: String,
    },
    RunFinished {
        time: DateTime<Utc>,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Event {
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            Event::RunStarted { time, .. }
            | Event::EpochFinished { time, .. }
            | Event::Validated { time, .. }
            | Event::CheckpointSaved { time, .. }
            | Event::PreviewSaved { time, .. }
            | Event::RunFinished { time, .. } => *time,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_one_line() {
        let time = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .expect("valid date")
            .to_utc();
        let events = [
            Event::EpochFinished {
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
                reason: None,
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
        let line =
            r#"{"event":"run_finished","time":"2026-11-26T10:00:00Z","outcome":"failed","reason":"out of memory"}"#;
        let Event::RunFinished { outcome, reason, .. } = Event::from_line(line).expect("parses") else {
            panic!("wrong kind");
        };
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(reason.as_deref(), Some("out of memory"));
    }
}
