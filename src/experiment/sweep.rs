//! Sweeps: one experiment file that stands for several runs.
//!
//! ```toml
//! [sweep]
//! method = "grid"                      # every combination (default); or "random"
//! "train.lr" = [1e-3, 3e-3]  # a list of values
//! "model.base_filters" = [8, 16]
//! "train.weight_decay" = { min = 1e-5, max = 1e-3, steps = 3, log = true }  # a range
//! # random only: samples = 8, seed = 1
//! ```
//!
//! Keys are the experiment's dotted keys. A range gives `steps` evenly spaced values to a
//! grid (log-spaced with `log = true`) and is drawn from uniformly (log-uniformly) by a random
//! sweep; integer bounds give integers. Each run is the experiment with its values set and
//! `run.name` numbered, checked like any experiment file, so a value out of range is an
//! error naming the run and the values before anything is queued.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Experiment;
use crate::choice_enum;
use crate::config::{Choice, ConfigError, Diagnostic, Source};

/// Runs one sweep may expand into, so a typo (a range with a million steps) fails early.
pub const MAX_RUNS: usize = 512;

/// What `sweep.json` in a run directory says: which sweep and which values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepTag {
    /// The sweep's id: `<time>-<name>`, shared by its runs.
    pub sweep: String,
    /// 1-based number of this run in the sweep, and how many runs it has.
    pub index: usize,
    pub of: usize,
    /// The dotted keys the sweep varies and this run's values.
    pub values: BTreeMap<String, serde_json::Value>,
    /// For a successive-halving sweep: its rungs and rules, the same in every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halving: Option<super::halving::Halving>,
}

impl SweepTag {
    /// `lr=0.003 base_filters=16`: the values, by the last part of their keys.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(key, value)| format!("{}={}", key.rsplit('.').next().unwrap_or(key), value))
            .collect();
        parts.join(" ")
    }
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub index: usize,
    pub values: BTreeMap<String, serde_json::Value>,
    pub experiment: Experiment,
}

/// A sweep expanded into checked experiments.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub name: String,
    pub members: Vec<Member>,
    pub halving: Option<super::halving::Halving>,
}

impl Sweep {
    /// The tag of member `index` in the sweep `id`.
    pub fn tag(&self, id: &str, member: &Member) -> SweepTag {
        SweepTag {
            sweep: id.to_string(),
            index: member.index,
            of: self.members.len(),
            values: member.values.clone(),
            halving: self.halving.clone(),
        }
    }
}

/// The experiment text read from `path` with every cross-validation fold added to its sweep
/// (`"data.fold" = [0, 1, ..., folds - 1]`, beside any keys the sweep already varies), for
/// `segtop queue --folds`. The experiment must set `data.folds`.
pub fn with_folds(path: &Path, text: &str) -> anyhow::Result<String> {
    let fail = |message: String| anyhow::anyhow!("{}: {message}", path.display());
    let mut document: toml_edit::DocumentMut = text.parse().map_err(|e| fail(format!("{e}")))?;
    let folds = super::get_value(&document, "data.folds")
        .and_then(toml_edit::Value::as_integer)
        .filter(|&k| k >= 2)
        .ok_or_else(|| fail("--folds needs data.folds: set data.folds = 5 (say) in [data]".into()))?;
    if document
        .get("sweep")
        .and_then(toml_edit::Item::as_table_like)
        .is_some_and(|sweep| sweep.contains_key("data.fold"))
    {
        return Err(fail(
            "its [sweep] already varies data.fold: queue it without --folds".into(),
        ));
    }
    let sweep = document
        .entry("sweep")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| fail("[sweep] must be a table of keys and values".into()))?;
    let values: toml_edit::Array = (0..folds).collect();
    sweep.insert("data.fold", toml_edit::Item::Value(toml_edit::Value::Array(values)));
    Ok(document.to_string())
}

/// A swept key's values.
#[derive(Debug, Clone)]
enum Axis {
    List(Vec<toml_edit::Value>),
    Range {
        min: f64,
        max: f64,
        steps: Option<usize>,
        log: bool,
        integer: bool,
    },
}

/// The sweep in experiment text read from `path`, expanded; `Ok(None)` when it has none.
/// A problem with `[sweep]` is located at the key it is about (or at `[sweep]` itself), as
/// the experiment's own problems are.
pub fn expand(path: &Path, text: &str, workspace: &Path) -> Result<Option<Sweep>, ConfigError> {
    let mut document: toml_edit::DocumentMut = match text.parse() {
        Ok(document) => document,
        Err(error) => {
            // Not TOML: the experiment's own parse says where.
            Experiment::parse(path, text, workspace)?;
            return Err(ConfigError::Invalid(vec![
                Source::spans(path, text).at_key(".", error.to_string()),
            ]));
        }
    };
    let Some(item) = document.remove("sweep") else {
        return Ok(None);
    };
    let source = Source::spans(path, text);
    let located = |problem: Problem| ConfigError::Invalid(vec![problem.locate(&source)]);
    let table = item
        .as_table_like()
        .ok_or_else(|| located(Problem::sweep("[sweep] must be a table of keys and values")))?;
    let base = Experiment::parse(path, &document.to_string(), workspace)?;
    let settings = read_settings(table).map_err(located)?;
    let (combinations, halving) = choose_runs(settings).map_err(located)?;
    let width = combinations.len().to_string().len();
    let mut members = Vec::with_capacity(combinations.len());
    for (i, values) in combinations.into_iter().enumerate() {
        let index = i + 1;
        let name = format!("{}-{index:0width$}", base.run.name);
        let run = run_document(&document, &values, &name, halving.as_ref());
        let experiment = check_run(path, &run.to_string(), workspace, index, &values)
            .map_err(|message| located(Problem::sweep(message)))?;
        members.push(Member {
            index,
            values: values.iter().map(|(k, v)| (k.clone(), json(v))).collect(),
            experiment,
        });
    }
    Ok(Some(Sweep {
        name: base.run.name,
        members,
        halving,
    }))
}

/// A problem with `[sweep]`: what is wrong, and the key under `[sweep]` it is about (none: the
/// table as a whole).
#[derive(Debug)]
struct Problem {
    key: Option<String>,
    message: String,
}

impl Problem {
    fn sweep(message: impl Into<String>) -> Problem {
        Problem {
            key: None,
            message: message.into(),
        }
    }

    fn at(key: &str, message: impl Into<String>) -> Problem {
        Problem {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    fn locate(self, source: &Source<'_>) -> Diagnostic {
        match &self.key {
            Some(key) => source.at_parts(&["sweep", key], self.message),
            None => source.at_parts(&["sweep"], self.message),
        }
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Problem {
        Problem::sweep(message)
    }
}

choice_enum! {
    /// How a sweep chooses its runs from the values of the keys it varies.
    pub enum Method {
        /// Every combination.
        Grid => "grid",
        /// `samples` combinations drawn at random (ranges drawn uniformly or log-uniformly).
        Random => "random",
        /// Successive halving over a grid or random draw (see [`crate::schedule::halving`]).
        Halving => "halving",
    }
}

/// What `[sweep]` says: how runs are chosen from the swept keys, and those keys' values.
struct Settings {
    method: Method,
    samples: Option<usize>,
    seed: u64,
    axes: Vec<(String, Axis)>,
    halving: super::halving::Rules,
}

/// Reads `[sweep]` key by key, stopping at the first key that is not right.
fn read_settings(table: &dyn toml_edit::TableLike) -> Result<Settings, Problem> {
    let mut settings = Settings {
        method: Method::Grid,
        samples: None,
        seed: 0,
        axes: Vec::new(),
        halving: super::halving::Rules::default(),
    };
    for (key, item) in table.iter() {
        read_setting(&mut settings, key, item).map_err(|message| Problem::at(key, message))?;
    }
    Ok(settings)
}

/// Takes one key of `[sweep]`: a setting of the sweep, or a key it varies.
fn read_setting(settings: &mut Settings, key: &str, item: &toml_edit::Item) -> Result<(), String> {
    let value = item
        .as_value()
        .ok_or_else(|| format!("sweep.{key}: give a list of values or a range {{ min, max }}"))?;
    match key {
        "method" => {
            settings.method = value
                .as_str()
                .and_then(Method::from_name)
                .ok_or_else(|| "sweep.method: use \"grid\", \"random\" or \"halving\"".to_string())?;
        }
        "samples" => {
            let n = value.as_integer().filter(|&n| n >= 1 && n as usize <= MAX_RUNS);
            settings.samples =
                Some(n.ok_or_else(|| format!("sweep.samples: a number of runs from 1 to {MAX_RUNS}"))? as usize);
        }
        "eta" | "rung" | "budget" | "metric" => settings.halving.set(key, value)?,
        "seed" => {
            settings.seed = value
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| "sweep.seed: a whole number, 0 or more".to_string())?;
        }
        key => settings.axes.push((key.to_string(), swept_key(key, value)?)),
    }
    Ok(())
}

/// A key the sweep varies must name an experiment key with its table, like `train.lr`.
fn swept_key(key: &str, value: &toml_edit::Value) -> Result<Axis, String> {
    let (section, name) = key
        .split_once('.')
        .ok_or_else(|| format!("sweep.{key}: name a key with its table, like \"train.lr\""))?;
    if section.is_empty() || name.is_empty() || section == "sweep" {
        return Err(format!("sweep.{key}: not a key of an experiment"));
    }
    axis(key, value)
}

/// One run's values: each swept key with the value it takes in that run.
type RunValues = Vec<(String, toml_edit::Value)>;

/// The values of each run, by the sweep's method, and a halving sweep's plan for them.
fn choose_runs(settings: Settings) -> Result<(Vec<RunValues>, Option<super::halving::Halving>), Problem> {
    let Settings {
        method,
        samples,
        seed,
        axes,
        halving,
    } = settings;
    if axes.is_empty() {
        return Err(Problem::sweep(
            "[sweep] varies nothing: add a key, like \"train.lr\" = [1e-3, 3e-3]",
        ));
    }
    if method == Method::Grid && samples.is_some() {
        return Err(Problem::at(
            "samples",
            "sweep.samples: only for method = \"random\" or \"halving\" (a grid runs every combination)",
        ));
    }
    let combinations = match method {
        Method::Random | Method::Halving if samples.is_some() || method == Method::Random => {
            let samples =
                samples.ok_or_else(|| Problem::at("method", "sweep.samples: a random sweep needs a number of runs"))?;
            random(&axes, samples, seed)
        }
        _ => grid(&axes)?,
    };
    if method != Method::Halving && halving.is_set() {
        return Err(Problem::sweep(
            "sweep.eta, rung, budget and metric are for method = \"halving\"",
        ));
    }
    let halving = if method == Method::Halving {
        Some(halving.plan(combinations.len())?)
    } else {
        None
    };
    Ok((combinations, halving))
}

/// The experiment file of one run: the base with the run's values, its numbered `name`, and a
/// halving sweep's top-rung budget set.
fn run_document(
    document: &toml_edit::DocumentMut,
    values: &[(String, toml_edit::Value)],
    name: &str,
    halving: Option<&super::halving::Halving>,
) -> toml_edit::DocumentMut {
    let mut run = document.clone();
    for (key, value) in values {
        super::set_value(&mut run, key, value.clone());
    }
    super::set_value(&mut run, "run.name", toml_edit::Value::from(name));
    if let Some(halving) = halving {
        // Each run plans its schedule for the top rung; the rungs below stop it early.
        super::set_value(
            &mut run,
            "train.budget",
            toml_edit::Value::from(halving.top().to_string()),
        );
    }
    run
}

/// Checks one run like any experiment file; its problems name the run and its values instead
/// of lines, which would point into the generated run, not the file.
fn check_run(
    path: &Path,
    text: &str,
    workspace: &Path,
    index: usize,
    values: &[(String, toml_edit::Value)],
) -> Result<Experiment, String> {
    Experiment::parse(path, text, workspace).map_err(|error| {
        let shown: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("{k} = {}", v.to_string().trim()))
            .collect();
        let messages: Vec<String> = match error.diagnostics() {
            [] => vec![error.to_string()],
            diagnostics => diagnostics.iter().map(|d| d.message.clone()).collect(),
        };
        format!("sweep run {index} ({}): {}", shown.join(", "), messages.join("; "))
    })
}

fn axis(key: &str, value: &toml_edit::Value) -> Result<Axis, String> {
    if let Some(array) = value.as_array() {
        let values: Vec<toml_edit::Value> = array.iter().cloned().collect();
        if values.is_empty() {
            return Err(format!("sweep.{key}: the list is empty"));
        }
        return Ok(Axis::List(values));
    }
    let table = value
        .as_inline_table()
        .ok_or_else(|| format!("sweep.{key}: give a list of values or a range {{ min, max }}"))?;
    let number = |name: &str| -> Result<Option<(f64, bool)>, String> {
        match table.get(name) {
            None => Ok(None),
            Some(v) => match (v.as_integer(), v.as_float()) {
                (Some(i), _) => Ok(Some((i as f64, true))),
                (_, Some(f)) => Ok(Some((f, false))),
                _ => Err(format!("sweep.{key}.{name}: a number")),
            },
        }
    };
    for name in table.iter().map(|(k, _)| k) {
        if !["min", "max", "steps", "log"].contains(&name) {
            return Err(format!("sweep.{key}.{name}: a range has min, max, steps and log"));
        }
    }
    let (Some((min, min_int)), Some((max, max_int))) = (number("min")?, number("max")?) else {
        return Err(format!("sweep.{key}: a range needs min and max"));
    };
    if min.is_nan() || max.is_nan() || min > max {
        return Err(format!("sweep.{key}: min {min} is above max {max}"));
    }
    let log = match table.get("log") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| format!("sweep.{key}.log: true or false"))?,
    };
    if log && min <= 0.0 {
        return Err(format!("sweep.{key}: a log range needs min above 0"));
    }
    let steps = match number("steps")? {
        None => None,
        Some((n, true)) if n >= 1.0 && n as usize <= MAX_RUNS => Some(n as usize),
        Some(_) => return Err(format!("sweep.{key}.steps: a whole number from 1 to {MAX_RUNS}")),
    };
    Ok(Axis::Range {
        min,
        max,
        steps,
        log,
        integer: min_int && max_int,
    })
}

fn number_value(x: f64, integer: bool) -> toml_edit::Value {
    if integer {
        toml_edit::Value::from(x.round() as i64)
    } else {
        // Short decimals (0.001, not 0.0010000000000000002) for names and files.
        let short: f64 = format!("{x:.6e}").parse().unwrap_or(x);
        toml_edit::Value::from(short)
    }
}

fn grid(axes: &[(String, Axis)]) -> Result<Vec<Vec<(String, toml_edit::Value)>>, Problem> {
    let mut lists = Vec::with_capacity(axes.len());
    for (key, axis) in axes {
        let values = match axis {
            Axis::List(values) => values.clone(),
            Axis::Range {
                min,
                max,
                steps,
                log,
                integer,
            } => {
                let steps =
                    steps.ok_or_else(|| Problem::at(key, format!("sweep.{key}: a grid over a range needs steps")))?;
                let mut values: Vec<toml_edit::Value> = Vec::with_capacity(steps);
                for i in 0..steps {
                    let t = if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
                    let x = if *log {
                        (min.ln() + t * (max.ln() - min.ln())).exp()
                    } else {
                        min + t * (max - min)
                    };
                    let value = number_value(x, *integer);
                    if !values.iter().any(|v| v.to_string() == value.to_string()) {
                        values.push(value);
                    }
                }
                values
            }
        };
        lists.push((key.clone(), values));
    }
    let total = lists.iter().try_fold(1usize, |n, (_, v)| n.checked_mul(v.len()));
    match total {
        Some(n) if n <= MAX_RUNS => {}
        _ => {
            return Err(Problem::sweep(format!(
                "the grid has more than {MAX_RUNS} runs; sweep fewer values"
            )));
        }
    }
    let mut combinations: Vec<Vec<(String, toml_edit::Value)>> = vec![Vec::new()];
    for (key, values) in &lists {
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push((key.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    Ok(combinations)
}

fn random(axes: &[(String, Axis)], samples: usize, seed: u64) -> Vec<Vec<(String, toml_edit::Value)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..samples)
        .map(|_| {
            axes.iter()
                .map(|(key, axis)| {
                    let value = match axis {
                        Axis::List(values) => values[rng.random_range(0..values.len())].clone(),
                        Axis::Range {
                            min, max, log, integer, ..
                        } => {
                            let t: f64 = rng.random_range(0.0..=1.0);
                            let x = if *log {
                                (min.ln() + t * (max.ln() - min.ln())).exp()
                            } else {
                                min + t * (max - min)
                            };
                            number_value(x, *integer)
                        }
                    };
                    (key.clone(), value)
                })
                .collect()
        })
        .collect()
}

/// Sets the dotted `key` in `document`, creating tables on the way.
fn json(value: &toml_edit::Value) -> serde_json::Value {
    match value {
        toml_edit::Value::Integer(i) => serde_json::Value::from(*i.value()),
        toml_edit::Value::Float(f) => serde_json::Value::from(*f.value()),
        toml_edit::Value::Boolean(b) => serde_json::Value::from(*b.value()),
        toml_edit::Value::String(s) => serde_json::Value::from(s.value().as_str()),
        other => serde_json::Value::from(other.to_string().trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_text(sweep: &str) -> Result<Option<Sweep>, ConfigError> {
        let text = format!("# the base\n[data]\nroot = \"d\"\n\n[train]\nepochs = 3\n\n{sweep}");
        expand(Path::new("experiments/s.toml"), &text, Path::new("/ws"))
    }

    #[test]
    fn a_grid_runs_every_combination_with_numbered_names() {
        let sweep = expand_text(
            "[sweep]\n\"train.lr\" = [1e-3, 3e-3]\n\"model.base_filters\" = { min = 8, max = 16, steps = 2 }\n",
        )
        .expect("valid")
        .expect("a sweep");
        assert_eq!(sweep.members.len(), 4);
        let runs: Vec<(String, f64, u32)> = sweep
            .members
            .iter()
            .map(|m| {
                let e = &m.experiment;
                (e.run.name.clone(), e.train.lr, e.model.base_filters)
            })
            .collect();
        assert_eq!(
            runs,
            [
                ("s-1".to_string(), 1e-3, 8),
                ("s-2".to_string(), 1e-3, 16),
                ("s-3".to_string(), 3e-3, 8),
                ("s-4".to_string(), 3e-3, 16),
            ]
        );
        // Keys it does not sweep keep the base's values.
        assert!(sweep.members.iter().all(|m| m.experiment.train.epochs == 3));
        let tag = sweep.tag("20261126-120000-s", &sweep.members[1]);
        assert_eq!(tag.describe(), "base_filters=16 lr=0.001");
        assert_eq!((tag.index, tag.of), (2, 4));
    }

    #[test]
    fn a_random_sweep_is_reproducible_from_its_seed_and_stays_in_range() {
        let text = "[sweep]\nmethod = \"random\"\nsamples = 6\nseed = 3\n\"train.lr\" = { min = 1e-4, max = 1e-2, log = true }\n";
        let a = expand_text(text).expect("valid").expect("a sweep");
        let b = expand_text(text).expect("valid").expect("a sweep");
        assert_eq!(a, b);
        assert_eq!(a.members.len(), 6);
        let rates: Vec<f64> = a.members.iter().map(|m| m.experiment.train.lr).collect();
        assert!(rates.iter().all(|r| (1e-4..=1e-2).contains(r)), "{rates:?}");
        assert!(rates.windows(2).any(|w| w[0] != w[1]), "{rates:?}");
        let other = expand_text(&text.replace("seed = 3", "seed = 4"))
            .expect("valid")
            .expect("a sweep");
        assert_ne!(a, other);
    }

    #[test]
    fn files_without_a_sweep_expand_to_nothing() {
        assert_eq!(expand_text("").expect("valid"), None);
    }

    #[test]
    fn bad_sweeps_are_errors_that_name_the_file_and_key() {
        for (sweep, expected) in [
            ("[sweep]\n", "varies nothing"),
            ("[sweep]\nlr = [1]\n", "sweep.lr: name a key with its table"),
            ("[sweep]\n\"train.lr\" = []\n", "the list is empty"),
            (
                "[sweep]\nmethod = \"bayes\"\n\"train.lr\" = [1e-3]\n",
                "use \"grid\", \"random\" or \"halving\"",
            ),
            (
                "[sweep]\nmethod = \"halving\"\n\"train.lr\" = [1e-3, 2e-3, 3e-3]\n",
                "a halving sweep needs sweep.rung",
            ),
            (
                "[sweep]\nmethod = \"halving\"\nrung = \"-5m\"\n\"train.lr\" = [1e-3, 2e-3, 3e-3]\n",
                "sweep.rung = '-5m' is not a duration",
            ),
            (
                "[sweep]\neta = 2\n\"train.lr\" = [1e-3, 2e-3, 3e-3]\n",
                "are for method = \"halving\"",
            ),
            (
                "[sweep]\n\"train.lr\" = [1e-3]\nsamples = 3\n",
                "only for method = \"random\" or \"halving\"",
            ),
            (
                "[sweep]\n\"train.lr\" = { min = 1, max = 0.1, steps = 2 }\n",
                "above max",
            ),
            (
                "[sweep]\n\"train.lr\" = { min = 0.1, max = 1 }\n",
                "a grid over a range needs steps",
            ),
            (
                "[sweep]\nmethod = \"random\"\n\"train.lr\" = [1e-3]\n",
                "needs a number of runs",
            ),
            (
                "[sweep]\n\"model.base_filters\" = { min = 1, max = 100000, steps = 600 }\n",
                "steps: a whole number from 1 to 512",
            ),
            ("[sweep]\n\"train.epochs\" = [2, 0]\n", "sweep run 2 (train.epochs = 0)"),
            ("[sweep]\n\"train.no_such_key\" = [1]\n", "no_such_key"),
        ] {
            let error = format!("{:#}", expand_text(sweep).expect_err(sweep));
            assert!(error.contains("experiments/s.toml"), "{error}");
            assert!(error.contains(expected), "{sweep}: {error}");
        }
    }

    /// Problems with `[sweep]` point at the key they are about, as the experiment's own do.
    #[test]
    fn sweep_problems_are_located_at_their_key() {
        let at = |sweep: &str| {
            let error = expand_text(sweep).expect_err(sweep);
            let diagnostic = &error.diagnostics()[0];
            (diagnostic.line, diagnostic.column, diagnostic.message.clone())
        };
        // The base takes 7 lines; [sweep] is line 8.
        let (line, column, message) = at("[sweep]\nmethod = \"bayes\"\n\"train.lr\" = [1e-3]\n");
        assert_eq!((line, column), (9, 10), "{message}");
        assert!(message.starts_with("sweep.method: use"), "{message}");
        let (line, column, message) = at("[sweep]\nseed = 1\n\"train.lr\" = { min = 0.1, max = 1 }\n");
        assert_eq!((line, column), (10, 14), "{message}");
        assert!(message.contains("a grid over a range needs steps"), "{message}");
        let (line, column, message) = at("[sweep]\n\"train.epochs\" = [2, 0]\n");
        assert_eq!((line, column), (8, 1), "{message}");
        assert!(message.starts_with("sweep run 2 (train.epochs = 0)"), "{message}");
        let (line, column, message) =
            at("[sweep]\nmethod = \"halving\"\nmetric = \"best\"\n\"train.lr\" = [1, 2, 3]\n");
        assert_eq!((line, column), (10, 10), "{message}");
        assert_eq!(message, "sweep.metric = 'best' is not one of: legacy, lesion");
    }

    #[test]
    fn folds_become_a_sweep_over_data_fold_beside_other_keys() {
        let path = Path::new("cv.toml");
        let text = "[data]\nroot = \"d\"\nfolds = 3\n[sweep]\n\"train.lr\" = [1e-3, 3e-3]\n";
        let folded = with_folds(path, text).expect("folds");
        let sweep = expand(path, &folded, Path::new("/ws"))
            .expect("valid")
            .expect("a sweep");
        assert_eq!(sweep.members.len(), 6);
        let mut pairs: Vec<(u32, String)> = sweep
            .members
            .iter()
            .map(|m| (m.experiment.data.fold, m.values["train.lr"].to_string()))
            .collect();
        pairs.sort();
        assert_eq!(pairs[0], (0, "0.001".to_string()));
        assert_eq!(pairs[5], (2, "0.003".to_string()));
        // Without data.folds, or folds swept already: refused, naming the file.
        let error = with_folds(path, "[data]\nroot = \"d\"\n")
            .expect_err("no folds")
            .to_string();
        assert_eq!(
            error,
            "cv.toml: --folds needs data.folds: set data.folds = 5 (say) in [data]"
        );
        let twice = with_folds(path, &folded).expect_err("swept already").to_string();
        assert!(twice.contains("already varies data.fold"), "{twice}");
    }
}
