//! `postprocess.toml`: a [`Plan`] as a readable TOML file, with what it did on the validation
//! cases, and read back with every value checked.

use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::{Expected, Operation, Plan, Region, Validation};
use crate::config::{Checker, ConfigError, Source};
use crate::run::events::BratsScores;

impl Plan {
    /// Reads and checks a stored plan.
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        Plan::parse(path, &crate::config::read_text(path)?)
    }

    /// Parses and checks plan text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Plan, ConfigError> {
        let (raw, source) = Source::parse::<RawPlan>(path, text)?;
        let mut check = Checker::new(source);
        let plan = Plan::check(&mut check, &raw, "");
        check.finish(plan)
    }

    /// The plan of `raw`, its problems recorded in `check` at keys under `prefix`
    /// (`postprocess.` where a plan is part of another file).
    pub fn check(check: &mut Checker, raw: &RawPlan, prefix: &str) -> Plan {
        let mut plan = Plan::NONE;
        for region in Region::ALL {
            let Some(table) = raw.region(region) else {
                continue;
            };
            let key = format!("{prefix}{}", region.key());
            let key = key.as_str();
            let operation = check_operation(check, key, table);
            check_sizes_are_used(check, key, table);
            plan.set(region, operation);
            match (region, table.relabel_below) {
                (Region::Et, Some(size)) => plan.et_to_ncr_below = size,
                (_, Some(_)) => check.error(
                    &format!("{key}.relabel_below"),
                    format!("{key}.relabel_below: only [et] relabels (enhancing tumour as necrosis)"),
                ),
                (_, None) => {}
            }
        }
        plan
    }

    /// The plan as a readable TOML file, with what it did on the validation cases.
    pub fn to_toml(&self, validation: Option<&Validation>) -> String {
        let mut out = String::from(
            "# Post-processing of this run's label maps, learned on its validation cases by segtop.\n\
             # Applied in this order by `segtop predict` and the end-of-run evaluation\n\
             # (--no-postprocess turns it off). Labels: 1 necrosis, 2 oedema, 3 enhancing tumour;\n\
             # sizes in voxels, components 26-connected. A voxel taken out of a region moves to the\n\
             # next region out (ET to necrosis, TC to oedema, WT to background).\n\
             # operation: none, remove-small (components under min_voxels), remove-relative\n\
             # (components under min_fraction of the case's largest), keep-largest.\n",
        );
        for region in Region::ALL {
            let operation = self.operation(region);
            let _ = write!(out, "\n[{}]\noperation = \"{}\"\n", region.key(), operation.name());
            match operation {
                Operation::RemoveSmall(size) => {
                    let _ = writeln!(out, "min_voxels = {size}");
                }
                Operation::RemoveRelative(percent) => {
                    let _ = writeln!(out, "min_fraction = {:.2}", f64::from(percent) / 100.0);
                }
                Operation::None | Operation::KeepLargest => {}
            }
        }
        let _ = writeln!(
            out,
            "# a case's enhancing tumour becomes necrosis when it has fewer voxels than this (0: never)\n\
             relabel_below = {}",
            self.et_to_ncr_below
        );
        if let Some(v) = validation {
            write_validation(&mut out, v);
        }
        out
    }
}

/// One region's operation from its table; a missing or bad size leaves the region as predicted.
fn check_operation(check: &mut Checker, key: &str, table: &RawRegion) -> Operation {
    match table.operation.as_deref() {
        None | Some("none") => Operation::None,
        Some("keep-largest") => Operation::KeepLargest,
        Some("remove-small") => check_remove_small(check, key, table.min_voxels),
        Some("remove-relative") => check_remove_relative(check, key, table.min_fraction),
        Some(other) => {
            check.error(
                &format!("{key}.operation"),
                format!(
                    "{key}.operation = '{other}' is not one of: {}",
                    Operation::NAMES.join(", ")
                ),
            );
            Operation::None
        }
    }
}

/// `remove-small` needs a size, and one of 0 would remove nothing.
fn check_remove_small(check: &mut Checker, key: &str, min_voxels: Option<u32>) -> Operation {
    match min_voxels {
        Some(size) if size > 0 => Operation::RemoveSmall(size),
        Some(_) => {
            check.error(
                &format!("{key}.min_voxels"),
                format!("{key}.min_voxels = 0 removes nothing: give at least 1"),
            );
            Operation::None
        }
        None => {
            check.error(
                &format!("{key}.operation"),
                format!("{key}.operation = 'remove-small' needs {key}.min_voxels"),
            );
            Operation::None
        }
    }
}

/// `remove-relative` needs a fraction strictly between 0 and 1, kept as a whole percentage.
fn check_remove_relative(check: &mut Checker, key: &str, min_fraction: Option<f64>) -> Operation {
    match min_fraction {
        Some(fraction) if fraction > 0.0 && fraction < 1.0 => {
            Operation::RemoveRelative(((fraction * 100.0).round() as u32).clamp(1, 99))
        }
        Some(fraction) => {
            check.error(
                &format!("{key}.min_fraction"),
                format!("{key}.min_fraction = {fraction} is out of range: give a fraction above 0 and below 1"),
            );
            Operation::None
        }
        None => {
            check.error(
                &format!("{key}.operation"),
                format!("{key}.operation = 'remove-relative' needs {key}.min_fraction"),
            );
            Operation::None
        }
    }
}

/// A size given for an operation that does not read it would be silently ignored otherwise.
fn check_sizes_are_used(check: &mut Checker, key: &str, table: &RawRegion) {
    if table.min_voxels.is_some() && !matches!(table.operation.as_deref(), Some("remove-small")) {
        check.error(
            &format!("{key}.min_voxels"),
            format!("{key}.min_voxels only applies to {key}.operation = 'remove-small'"),
        );
    }
    if table.min_fraction.is_some() && !matches!(table.operation.as_deref(), Some("remove-relative")) {
        check.error(
            &format!("{key}.min_fraction"),
            format!("{key}.min_fraction only applies to {key}.operation = 'remove-relative'"),
        );
    }
}

/// The `[validation]` tables of `postprocess.toml`: what the plan did on the validation cases.
fn write_validation(out: &mut String, v: &Validation) {
    let quoted = |names: &[String]| names.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    let _ = write!(
        out,
        "\n# What the plan did on the validation cases (means over cases; false positives per case).\n\
         [validation]\nchallenge = {:?}\n",
        v.challenge
    );
    if v.runs.is_empty() {
        let _ = writeln!(out, "epoch = {}", v.epoch);
    } else {
        let _ = writeln!(
            out,
            "# Learned on the out-of-fold predictions of these cross-validation runs (`segtop postprocess --folds`):\n\
             # each case below is one of them's validation case, segmented by that run's best weights.\n\
             runs = [{}]",
            quoted(&v.runs)
        );
    }
    let _ = writeln!(out, "cases = [{}]", quoted(&v.cases));
    if let Some(step) = v.cut_short_at {
        let _ = writeln!(
            out,
            "# The search stopped at {step} to stay inside the run's time budget: \
             `segtop postprocess RUN` searches in full."
        );
    }
    if !v.expected.is_empty() {
        let _ = writeln!(
            out,
            "\n# Leave-one-out: each step chosen again without each case, then scored on it; what the plan\n\
             # can be expected to give on cases it has not seen (mean and standard deviation over cases).\n\
             [validation.expected]"
        );
        let cells = |f: &dyn Fn(&Expected) -> f64| {
            let cells: Vec<String> = v
                .expected
                .iter()
                .map(|e| format!("{} = {:.4}", e.region.to_ascii_lowercase(), f(e)))
                .collect();
            format!("{{ {} }}", cells.join(", "))
        };
        let _ = writeln!(out, "lesion_dice = {}", cells(&|e| e.lesion_dice));
        let _ = writeln!(out, "spread = {}", cells(&|e| e.spread));
    }
    for (name, scores) in [("before", &v.before), ("after", &v.after)] {
        let _ = writeln!(out, "\n[validation.{name}]");
        let row = |f: &dyn Fn(&BratsScores) -> f64| {
            let cells: Vec<String> = scores
                .iter()
                .map(|s| format!("{} = {:.4}", s.region.to_ascii_lowercase(), f(s)))
                .collect();
            format!("{{ {} }}", cells.join(", "))
        };
        let n = v.cases.len().max(1) as f64;
        let _ = writeln!(out, "lesion_dice = {}", row(&|s| s.lesion_dice));
        let _ = writeln!(out, "legacy_dice = {}", row(&|s| s.legacy_dice));
        let _ = writeln!(out, "false_positives = {}", row(&|s| s.num_fp as f64 / n));
    }
}

/// `postprocess.toml` as written; [`Plan::parse`] checks it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    wt: Option<RawRegion>,
    tc: Option<RawRegion>,
    et: Option<RawRegion>,
    /// Written for people; not read back.
    #[allow(dead_code)]
    validation: Option<toml::Value>,
}

impl RawPlan {
    fn region(&self, region: Region) -> Option<&RawRegion> {
        match region {
            Region::Wt => self.wt.as_ref(),
            Region::Tc => self.tc.as_ref(),
            Region::Et => self.et.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    operation: Option<String>,
    min_voxels: Option<u32>,
    min_fraction: Option<f64>,
    relabel_below: Option<u32>,
}
