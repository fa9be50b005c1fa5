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

    /// Each region's mean over several cases' scores (zeros when there are none).
    pub fn average(scores: impl IntoIterator<Item = RegionScores>) -> RegionScores {
        let (mut sum, mut n) = (
            RegionScores {
                et: 0.0,
                tc: 0.0,
                wt: 0.0,
            },
            0.0,
        );
        for s in scores {
            sum.et += s.et;
            sum.tc += s.tc;
            sum.wt += s.wt;
            n += 1.0;
        }
        if n > 0.0 {
            sum.et /= n;
            sum.tc /= n;
            sum.wt /= n;
        }
        sum
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
    /// HD95 in mm on the plain region masks (374 when one side is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hd95: Option<RegionScores>,
    /// The official lesion-wise Dice (BraTS-SSA 2024), on the raw prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesion_dice: Option<RegionScores>,
}

/// The official BraTS scores of one region of one case (see `segtop eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BratsScores {
    pub region: String,
    pub lesion_dice: f64,
    pub lesion_hd95: f64,
    pub lesion_nsd_10: f64,
    pub legacy_dice: f64,
    pub legacy_hd95: f64,
    pub num_tp: usize,
    pub num_fp: usize,
    pub num_fn: usize,
}

/// A case's official BraTS scores, region by region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEvaluation {
    pub case: String,
    pub regions: Vec<BratsScores>,
}

impl BratsScores {
    /// The lesion-wise Dice of ET, TC and WT from a case's or a mean's regions (0 where a
    /// region is missing).
    pub fn lesion_dice(regions: &[BratsScores]) -> RegionScores {
        Self::by_region(regions, |s| s.lesion_dice)
    }

    /// The legacy (whole-image) Dice of ET, TC and WT.
    pub fn legacy_dice(regions: &[BratsScores]) -> RegionScores {
        Self::by_region(regions, |s| s.legacy_dice)
    }

    fn by_region(regions: &[BratsScores], f: fn(&BratsScores) -> f64) -> RegionScores {
        let of = |name: &str| regions.iter().find(|r| r.region == name).map_or(0.0, f);
        RegionScores {
            et: of("ET"),
            tc: of("TC"),
            wt: of("WT"),
        }
    }
}

impl CaseEvaluation {
    /// Per region (in `regions`' order), the mean of each score over `cases`, and the total
    /// of each count.
    pub fn mean(cases: &[CaseEvaluation], regions: &[&str]) -> Vec<BratsScores> {
        regions
            .iter()
            .map(|&region| {
                let scores: Vec<&BratsScores> = cases
                    .iter()
                    .filter_map(|c| c.regions.iter().find(|r| r.region == region))
                    .collect();
                let n = scores.len().max(1) as f64;
                let mean_of = |f: fn(&BratsScores) -> f64| scores.iter().map(|s| f(s)).sum::<f64>() / n;
                let count_of = |f: fn(&BratsScores) -> usize| scores.iter().map(|s| f(s)).sum::<usize>();
                BratsScores {
                    region: region.to_string(),
                    lesion_dice: mean_of(|s| s.lesion_dice),
                    lesion_hd95: mean_of(|s| s.lesion_hd95),
                    lesion_nsd_10: mean_of(|s| s.lesion_nsd_10),
                    legacy_dice: mean_of(|s| s.legacy_dice),
                    legacy_hd95: mean_of(|s| s.legacy_hd95),
                    num_tp: count_of(|s| s.num_tp),
                    num_fp: count_of(|s| s.num_fp),
                    num_fn: count_of(|s| s.num_fn),
                }
            })
            .collect()
    }
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
        /// What the network computes in (`float32` or `bfloat16`), `train.precision` resolved
        /// on the machine the trainer runs on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        precision: Option<String>,
        /// Epoch the run continues from, when resumed from a checkpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<u32>,
        /// When the trainer process started (seconds since the UNIX epoch), so a reused pid
        /// is never taken for this run's process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid_start: Option<u64>,
        /// The Slurm job the trainer runs in (`123`, or `123_4` for an array task).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slurm_job: Option<String>,
        /// The run's time budget in seconds (`train.budget`), when it has one; `epochs` is
        /// then the most it may plan, and `plan` events say how many it will train.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_seconds: Option<f64>,
        /// The weights file the run started from (`model.init`), when it did not start from
        /// random weights.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        init: Option<String>,
    },
    /// A time-budgeted run's plan, when it is first made and whenever it changes.
    Plan {
        time: DateTime<Utc>,
        /// The total number of epochs the run will train (the learning-rate schedule's length).
        epochs: u32,
        budget_seconds: f64,
        /// Seconds of the budget used so far, over every session of the run.
        used_seconds: f64,
        /// The pace the plan rests on: one step, one validation.
        step_seconds: f64,
        validation_seconds: f64,
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
        /// The official lesion-wise Dice (BraTS-SSA 2024) on the raw predictions, mean over cases.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lesion_dice: Option<RegionScores>,
        cases: Vec<CaseScores>,
        seconds: f64,
    },
    /// The official lesion-wise and legacy BraTS metrics on the validation cases, computed
    /// once at the end of a run with the best checkpoint's weights.
    Evaluation {
        time: DateTime<Utc>,
        /// The epoch whose weights were evaluated.
        epoch: u32,
        /// The challenge whose parameters were used, e.g. `BraTS-SSA`.
        challenge: String,
        /// Per region, the mean over cases of the raw predictions' scores.
        mean: Vec<BratsScores>,
        cases: Vec<CaseEvaluation>,
        /// Whether the predictions used mirror test-time augmentation.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tta: bool,
        /// The post-processing applied (`postprocess.toml`), in words, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        postprocess: Option<String>,
        /// Per region, the mean over cases after post-processing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        postprocessed: Option<Vec<BratsScores>>,
        /// Per case, the scores after post-processing.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        postprocessed_cases: Vec<CaseEvaluation>,
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
            | Event::Plan { time, .. }
            | Event::Step { time, .. }
            | Event::Resources { time, .. }
            | Event::EpochEnd { time, .. }
            | Event::Validation { time, .. }
            | Event::Evaluation { time, .. }
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
    path: std::path::PathBuf,
}

impl EventLog {
    pub fn open(path: &std::path::Path) -> std::io::Result<EventLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one record; an error names the file (`.../events.jsonl: No space left on
    /// device`), as the user reads it in the trainer's output.
    pub fn emit(&mut self, event: &Event) -> std::io::Result<()> {
        use std::io::Write;
        self.file
            .write_all(event.to_line().as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", self.path.display())))
    }

    /// Ends a run as failed: an `error` and a `run_finished` record with the same `reason`,
    /// `seconds` into the run.
    pub fn emit_failure(&mut self, reason: &str, seconds: f64) -> std::io::Result<()> {
        let time = chrono::Utc::now();
        self.emit(&Event::Error {
            time,
            message: reason.to_string(),
        })?;
        self.emit(&Event::RunFinished {
            time,
            outcome: Outcome::Failed,
            best_dice: None,
            reason: Some(reason.to_string()),
            seconds,
        })
    }
}

/// Reads a growing `events.jsonl` incrementally: each [`EventTail::poll`] returns the records
/// appended since the last one, reading only the new bytes. A last line without its newline
/// is kept until the rest arrives; a line that is not a record becomes a warning naming the
/// file and line, and reading goes on.
#[derive(Debug)]
pub struct EventTail {
    path: std::path::PathBuf,
    offset: u64,
    /// 1-based number of the next complete line.
    line: u64,
    partial: Vec<u8>,
}

impl EventTail {
    pub fn new(path: impl Into<std::path::PathBuf>) -> EventTail {
        EventTail {
            path: path.into(),
            offset: 0,
            line: 1,
            partial: Vec::new(),
        }
    }

    /// A tail that reads on from `position` (as [`EventTail::position`] gave it), e.g.
    /// after a summary that folded the file up to there.
    pub fn resume(path: impl Into<std::path::PathBuf>, (offset, line): (u64, u64)) -> EventTail {
        EventTail {
            path: path.into(),
            offset,
            line: line.max(1),
            partial: Vec::new(),
        }
    }

    /// Where the complete lines read so far end: their length in bytes and the number of
    /// the next line.
    pub fn position(&self) -> (u64, u64) {
        (self.offset - self.partial.len() as u64, self.line)
    }

    /// New records, and warnings for lines that could not be read. A missing file is no
    /// records yet; a file that shrank (replaced or truncated) is read again from the start.
    pub fn poll(&mut self) -> std::io::Result<(Vec<Event>, Vec<String>)> {
        let mut events = Vec::new();
        let warnings = self.read_each(|event| events.push(event))?;
        Ok((events, warnings))
    }

    /// As [`EventTail::poll`], but hands each record to `apply` as it is read, a chunk at a
    /// time, so a history of tens of thousands of epochs never sits in memory whole.
    pub fn read_each(&mut self, mut apply: impl FnMut(Event)) -> std::io::Result<Vec<String>> {
        use std::io::{Read, Seek, SeekFrom};
        const CHUNK: u64 = 1 << 20;
        let mut warnings = Vec::new();
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(warnings),
            Err(error) => return Err(error),
        };
        let length = file.metadata()?.len();
        if length < self.offset {
            warnings.push(format!(
                "{}: the file shrank; reading it again from the start",
                self.path.display()
            ));
            *self = EventTail::new(self.path.clone());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        while self.offset < length {
            let mut fresh = Vec::new();
            (&mut file)
                .take((length - self.offset).min(CHUNK))
                .read_to_end(&mut fresh)?;
            if fresh.is_empty() {
                break;
            }
            self.offset += fresh.len() as u64;
            self.partial.extend_from_slice(&fresh);
            self.take_lines(&mut apply, &mut warnings);
        }
        // A tail per run lives as long as the watcher: give back a chunk's worth of buffer.
        if self.partial.capacity() > 4 * self.partial.len().max(1024) {
            self.partial.shrink_to_fit();
        }
        Ok(warnings)
    }

    /// Parses the complete lines in `partial`, keeping the unfinished last one.
    fn take_lines(&mut self, apply: &mut impl FnMut(Event), warnings: &mut Vec<String>) {
        let mut consumed = 0;
        while let Some(end) = self.partial[consumed..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[consumed..consumed + end];
            consumed += end + 1;
            let number = self.line;
            self.line += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|text| Event::from_line(text).map_err(|e| e.to_string()))
            {
                Ok(event) => apply(event),
                Err(why) => warnings.push(format!(
                    "{}:{number}: not an event record ({why}); skipped",
                    self.path.display()
                )),
            }
        }
        self.partial.drain(..consumed);
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

    fn step(epoch: u32) -> Event {
        Event::Step {
            time: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
                .expect("valid date")
                .to_utc(),
            epoch,
            step: 1,
            loss: 0.5,
            loss_parts: BTreeMap::new(),
            lr: 1e-3,
            patches_per_s: 1.0,
            seconds: 2.0,
        }
    }

    #[test]
    fn the_tail_reads_only_what_was_appended_and_waits_for_half_lines() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.jsonl");
        let mut tail = EventTail::new(&path);
        assert_eq!(tail.poll().expect("no file yet").0, []);
        let mut file = std::fs::File::create(&path).expect("create");
        let second = step(2).to_line();
        let (head, rest) = second.split_at(10);
        write!(file, "{}{head}", step(1).to_line()).expect("write");
        let (events, warnings) = tail.poll().expect("reads");
        assert_eq!((events, warnings.len()), (vec![step(1)], 0));
        write!(file, "{rest}not json\n{}", step(3).to_line()).expect("write");
        let (events, warnings) = tail.poll().expect("reads");
        assert_eq!(events, [step(2), step(3)]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].ends_with("events.jsonl:3: not an event record (expected ident at line 1 column 2); skipped"),
            "{warnings:?}"
        );
        assert_eq!(tail.poll().expect("reads").0, []);
    }

    #[test]
    fn a_replaced_file_is_read_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, format!("{}{}", step(1).to_line(), step(2).to_line())).expect("write");
        let mut tail = EventTail::new(&path);
        assert_eq!(tail.poll().expect("reads").0.len(), 2);
        std::fs::write(&path, step(7).to_line()).expect("replace");
        let (events, warnings) = tail.poll().expect("reads");
        assert_eq!(events, [step(7)]);
        assert_eq!(warnings.len(), 1);
    }
}
