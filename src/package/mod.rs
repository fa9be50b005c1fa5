//! Model packages: a trained network, or an ensemble of several, in a folder that segments
//! BraTS cases without segtop's runs, and without segtop at all.
//!
//! ```text
//! DIR/
//!   package.toml    what turns four NIfTI files into the label map, as `segtop predict` does,
//!                   and where the model came from; the SHA-256 of every other file
//!   model-1.onnx    each member's network (ONNX opset 17, float32, see [`onnx`])
//!   postprocess     (inside package.toml: the first run's learned plan)
//!   predict.py      the reference implementation with numpy, nibabel, scipy, onnxruntime
//!   MODEL.md        the model card
//! ```
//!
//! `package.toml` speaks the experiment's own keys where it can: `[data]` (modalities, crop,
//! normalisation, clipping), `[validate]` (window, overlap, Gaussian weighting), `[augment]`
//! (the mirroring axes of test-time augmentation) and each member's `[member.model]`. They are
//! checked on load by the experiment's own checks, at their line and column in `package.toml`
//! ([`Package::load`]). `segtop-train predict --package DIR` reads it, and the weights back
//! out of the ONNX files.

pub mod card;
pub mod onnx;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Checker, Choice, ConfigError, Source};
use crate::experiment::{Experiment, Output};
use crate::postprocess::{Plan, RawPlan};

/// The manifest's file name.
pub const MANIFEST: &str = "package.toml";
/// The model card's file name.
pub const CARD: &str = "MODEL.md";
/// The reference implementation's file name.
pub const SCRIPT: &str = "predict.py";
/// The reference implementation, copied into every package.
pub const PREDICT_PY: &str = include_str!("predict.py");
/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The Gaussian's standard deviation as a fraction of the window (nnU-Net's eighth).
pub const GAUSSIAN_SIGMA: f64 = 0.125;
/// Region probabilities above this are inside the region.
pub const REGION_THRESHOLD: f64 = 0.5;

/// One member of a package, as `segtop package` gathers it from a run.
#[derive(Debug, Clone)]
pub struct MemberSource {
    /// The run's id.
    pub run: String,
    pub experiment: Experiment,
    /// The run's frozen experiment text, hashed for provenance.
    pub experiment_text: String,
    /// The best checkpoint.
    pub weights: PathBuf,
    pub epoch: Option<u32>,
    pub training_cases: usize,
    pub validation_cases: usize,
    /// Mean validation scores of the end-of-run evaluation, raw and post-processed.
    pub scores: Option<Scores>,
}

/// Validation scores per region (WT, TC, ET), as the package records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    pub cases: usize,
    pub lesion_dice: [f64; 3],
    pub legacy_dice: [f64; 3],
    pub postprocessed_lesion_dice: Option<[f64; 3]>,
    pub postprocessed_legacy_dice: Option<[f64; 3]>,
}

/// `package.toml` as written; [`Package::load`] checks it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    provenance: Provenance,
    predict: PredictSection,
    data: toml::Table,
    validate: toml::Table,
    augment: toml::Table,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postprocess: Option<toml::Table>,
    member: Vec<RawMember>,
    files: BTreeMap<String, String>,
}

/// Where the package came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub segtop_version: String,
    pub created: String,
    pub runs: Vec<String>,
    /// Where the post-processing plan came from (a run's `postprocess.toml`), or "none".
    pub postprocess_from: String,
}

/// How the members' probabilities become labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictSection {
    /// Mirror test-time augmentation over `augment.flip_axes` by default.
    pub tta: bool,
    /// The form members' probabilities are averaged in: `labels` (softmaxes, when every
    /// member outputs labels) or `regions` (WT, TC, ET).
    pub average: String,
    /// Region probabilities above this are inside the region (regions only).
    pub threshold: f64,
    /// The Gaussian's sigma as a fraction of the window, per axis.
    pub gaussian_sigma: f64,
    /// Channels of `average = "labels"`: the label of each softmax channel.
    pub labels: Vec<u8>,
    /// Channels of `average = "regions"`, outermost first.
    pub regions: Vec<String>,
    /// Where each region's voxels go when turned into labels, outermost first:
    /// WT oedema (2), TC necrosis (1), ET enhancing (3).
    pub region_labels: Vec<u8>,
    /// The enhancing tumour's label in older BraTS naming (`_t1ce`); 3 in BraTS 2023 naming.
    pub legacy_enhancing_label: u8,
    /// File names of each modality in both BraTS namings, `{case}` the case id.
    pub file_names: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    file: String,
    run: String,
    output: String,
    experiment_sha256: String,
    epoch: Option<u32>,
    training_cases: usize,
    validation_cases: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    validation: Option<Scores>,
    model: toml::Table,
}

/// A checked member of a loaded package.
#[derive(Debug, Clone)]
pub struct Member {
    /// The ONNX file.
    pub file: PathBuf,
    pub run: String,
    /// The member's experiment as far as prediction needs it: `[data]`'s input keys, its
    /// `[model]`, `[validate]`'s window keys and `[augment]`'s flip axes (the rest defaults).
    pub experiment: Experiment,
    pub epoch: Option<u32>,
    pub training_cases: usize,
    pub validation_cases: usize,
    pub validation: Option<Scores>,
}

/// A loaded, checked package.
#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub provenance: Provenance,
    pub predict: PredictSection,
    pub plan: Plan,
    pub members: Vec<Member>,
}

/// The hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(sha256(&bytes))
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The keys of an experiment section that prediction needs.
const DATA_KEYS: [&str; 4] = ["modalities", "crop", "normalization", "clip_percentiles"];
const VALIDATE_KEYS: [&str; 4] = ["window", "overlap", "gaussian", "window_batch"];
const AUGMENT_KEYS: [&str; 1] = ["flip_axes"];
/// Model keys that say where training started, not what the network is.
const MODEL_KEYS_LEFT_OUT: [&str; 3] = ["init", "init_partial", "dropout"];

/// `keys` of the section `name` of an experiment written as a TOML table.
fn section(experiment: &toml::Table, name: &str, keys: &[&str]) -> toml::Table {
    let Some(toml::Value::Table(table)) = experiment.get(name) else {
        return toml::Table::new();
    };
    table
        .iter()
        .filter(|(key, _)| keys.is_empty() || keys.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the members of a package must share: they read the same input and run the same
/// windows.
fn shared(experiment: &Experiment) -> anyhow::Result<(toml::Table, toml::Table, toml::Table)> {
    let table: toml::Table = experiment
        .to_toml()
        .parse()
        .context("cannot write the experiment as TOML")?;
    Ok((
        section(&table, "data", &DATA_KEYS),
        section(&table, "validate", &VALIDATE_KEYS),
        section(&table, "augment", &AUGMENT_KEYS),
    ))
}

fn model_table(experiment: &Experiment) -> anyhow::Result<toml::Table> {
    let table: toml::Table = experiment
        .to_toml()
        .parse()
        .context("cannot write the experiment as TOML")?;
    let mut model = section(&table, "model", &[]);
    model.retain(|key, _| !MODEL_KEYS_LEFT_OUT.contains(&key));
    Ok(model)
}

/// Writes the package of `members` (an ensemble when several) with post-processing `plan`
/// into `out`. A folder that exists and is not empty is refused unless `force`.
pub fn write(members: &[MemberSource], plan: (Plan, String), out: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let Some(first) = members.first() else {
        bail!("no run to package");
    };
    check_members(members)?;
    check_out(out, force)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = BTreeMap::new();
    let mut written = Vec::new();
    let mut raw_members = Vec::new();
    let outputs: Vec<Output> = members.iter().map(|m| m.experiment.model.output).collect();
    for (i, member) in members.iter().enumerate() {
        let (raw, bytes) = write_member(member, i)?;
        let path = out.join(&raw.file);
        write_file(&path, &bytes)?;
        files.insert(raw.file.clone(), sha256(&bytes));
        written.push(path);
        raw_members.push(raw);
    }
    let (data, validate, augment) = shared(&first.experiment)?;
    let average = Output::averaged(outputs);
    let manifest = RawManifest {
        format: FORMAT,
        provenance: Provenance {
            segtop_version: env!("CARGO_PKG_VERSION").to_string(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            runs: members.iter().map(|m| m.run.clone()).collect(),
            postprocess_from: plan.1.clone(),
        },
        predict: PredictSection {
            tta: false,
            average: average.to_string(),
            threshold: REGION_THRESHOLD,
            gaussian_sigma: GAUSSIAN_SIGMA,
            labels: vec![0, 1, 2, 3],
            regions: vec!["WT".into(), "TC".into(), "ET".into()],
            region_labels: vec![2, 1, 3],
            legacy_enhancing_label: 4,
            file_names: file_names(),
        },
        data,
        validate,
        augment,
        postprocess: plan_table(&plan.0)?,
        member: raw_members,
        files: BTreeMap::new(),
    };
    let script = out.join(SCRIPT);
    write_file(&script, PREDICT_PY.as_bytes())?;
    files.insert(SCRIPT.to_string(), sha256(PREDICT_PY.as_bytes()));
    written.push(script);
    let card_text = card::render(&manifest.provenance, members, &plan, average);
    let card = out.join(CARD);
    write_file(&card, card_text.as_bytes())?;
    files.insert(CARD.to_string(), sha256(card_text.as_bytes()));
    written.push(card);
    let manifest = RawManifest { files, ..manifest };
    let text = format!(
        "{}{}",
        MANIFEST_HEADER,
        toml::to_string(&manifest).context("cannot write package.toml")?
    );
    let path = out.join(MANIFEST);
    write_file(&path, text.as_bytes())?;
    written.push(path);
    // What was written must load: the same checks `predict --package` makes.
    Package::load(out).with_context(|| format!("{}: the package just written does not load", out.display()))?;
    Ok(written)
}

/// Refuses to write into a file, or into a folder that is not empty unless `force`.
fn check_out(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.is_file() {
        bail!("{}: a file, not a folder", out.display());
    }
    let occupied = std::fs::read_dir(out)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied && !force {
        bail!(
            "{}: the folder is not empty; give another --out, or --force to write the package over it",
            out.display()
        );
    }
    Ok(())
}

/// Member `index`'s ONNX file (its bytes) and its `[[member]]` table.
fn write_member(member: &MemberSource, index: usize) -> anyhow::Result<(RawMember, Vec<u8>)> {
    let weights = onnx::Weights::read_safetensors(&member.weights)?;
    let metadata = [
        ("segtop.run", member.run.clone()),
        ("segtop.output", member.experiment.model.output.to_string()),
        ("segtop.modalities", modality_names(&member.experiment).join(",")),
    ];
    let model = onnx::export(
        &member.experiment.model,
        member.experiment.data.modalities.len(),
        &weights,
        &metadata,
    )
    .with_context(|| format!("run {}: cannot write its network as ONNX", member.run))?;
    let raw = RawMember {
        file: format!("model-{}.onnx", index + 1),
        run: member.run.clone(),
        output: member.experiment.model.output.to_string(),
        experiment_sha256: sha256(member.experiment_text.as_bytes()),
        epoch: member.epoch,
        training_cases: member.training_cases,
        validation_cases: member.validation_cases,
        validation: member.scores.clone(),
        model: model_table(&member.experiment)?,
    };
    Ok((raw, model.encode_to_vec()))
}

const MANIFEST_HEADER: &str = "\
# A segtop model package: everything that turns a case's four NIfTI files into its label map,
# as `segtop predict` does. Read by `segtop predict --package DIR` and by predict.py.
#
# [data]      the input: modalities in channel order, crop, normalisation (experiment keys)
# [validate]  the sliding window: size (x, y, z), overlap, Gaussian weighting
# [augment]   flip_axes: the axes (0 x, 1 y, 2 z) mirrored by test-time augmentation
# [predict]   how probabilities become labels, and each modality's file names
# [postprocess.*]  the learned post-processing, as in a run's postprocess.toml
# [[member]]  one per network (an ensemble averages them), its ONNX file and [member.model]
# [files]     the SHA-256 of every file of the package; a changed file is refused
#
# Network input `image`: [batch, channels, z, y, x] float32 (a NIfTI array [x, y, z]
# transposed); output `probabilities`: [batch, 4 labels or 3 regions, z, y, x].

";

fn modality_names(experiment: &Experiment) -> Vec<String> {
    experiment
        .data
        .modalities
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

/// Each modality's file names: BraTS 2023 naming first, then the older one.
fn file_names() -> BTreeMap<String, Vec<String>> {
    use crate::data::case::Naming;
    use crate::experiment::Modality;
    [Modality::T1n, Modality::T1c, Modality::T2w, Modality::T2f]
        .into_iter()
        .map(|m| {
            (
                m.name().to_string(),
                vec![
                    format!("{{case}}-{}.nii.gz", Naming::Brats2023.suffix(m)),
                    format!("{{case}}_{}.nii.gz", Naming::Legacy.suffix(m)),
                ],
            )
        })
        .collect()
}

/// The plan as the tables of a run's `postprocess.toml`; none for no post-processing.
fn plan_table(plan: &Plan) -> anyhow::Result<Option<toml::Table>> {
    if plan.is_none() {
        return Ok(None);
    }
    let table: toml::Table = plan.to_toml(None).parse().context("cannot write the plan")?;
    Ok(Some(table))
}

/// Writes `bytes` to `path` through a temporary file beside it, so that a full disk or a
/// kill leaves no half-written file under the final name.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temporary =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut temporary, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    // Readable by others, as files a user writes are (the temporary file was private).
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.extension().is_some_and(|e| e == "py") {
            0o755
        } else {
            0o644
        };
        temporary
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    temporary
        .persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Refuses members that would not see the same input through the same windows.
fn check_members(members: &[MemberSource]) -> anyhow::Result<()> {
    let Some((first, rest)) = members.split_first() else {
        bail!("no run to package");
    };
    let reference = shared(&first.experiment)?;
    let names = ["data", "validate", "augment"];
    for member in rest {
        let other = shared(&member.experiment)?;
        let pairs = [
            (&reference.0, &other.0),
            (&reference.1, &other.1),
            (&reference.2, &other.2),
        ];
        for (name, (a, b)) in names.iter().zip(pairs) {
            for (key, value) in a.iter() {
                if b.get(key) != Some(value) {
                    let theirs = b.get(key).map_or("nothing".to_string(), ToString::to_string);
                    bail!(
                        "cannot package runs {} and {} together: they differ in {name}.{key} ({value} against {theirs}); \
                         the members of a package must read the same modalities, preprocessed the same way, through the same windows",
                        first.run,
                        member.run
                    );
                }
            }
        }
    }
    Ok(())
}

impl Package {
    /// Reads and checks `DIR/package.toml`, and every file's hash.
    pub fn load(dir: &Path) -> anyhow::Result<Package> {
        let path = dir.join(MANIFEST);
        if !dir.is_dir() {
            bail!("{}: no such package folder", dir.display());
        }
        let text = crate::config::read_text(&path)?;
        let (raw, source) = Source::parse::<RawManifest>(&path, &text)?;
        let mut check = Checker::new(source);
        if raw.format != FORMAT {
            check.error(
                "format",
                format!(
                    "format = {}: this segtop reads package format {FORMAT}; package the runs again with this segtop",
                    raw.format
                ),
            );
        }
        check_predict(&mut check, &raw.predict);
        let plan = match &raw.postprocess {
            None => Plan::NONE,
            Some(table) => match toml::Value::Table(table.clone()).try_into::<RawPlan>() {
                Ok(raw_plan) => Plan::check(&mut check, &raw_plan, "postprocess."),
                Err(error) => {
                    check.error("postprocess", format!("postprocess: {}", error.message()));
                    Plan::NONE
                }
            },
        };
        if raw.member.is_empty() {
            check.error("member", "the package has no [[member]]".to_string());
        }
        let members = check_members_of(&mut check, &raw, &path, &text, dir);
        let outputs: Vec<Output> = members.iter().map(|m| m.experiment.model.output).collect();
        let average = Output::averaged(outputs.iter().copied()).to_string();
        if !outputs.is_empty() && raw.predict.average != average {
            check.error(
                "predict.average",
                format!(
                    "predict.average = '{}': members of these outputs average as '{average}'",
                    raw.predict.average
                ),
            );
        }
        let package = check.finish(Package {
            dir: dir.to_path_buf(),
            provenance: raw.provenance,
            predict: raw.predict,
            plan,
            members,
        })?;
        for (name, expected) in &raw.files {
            let file = dir.join(name);
            if !file.is_file() {
                bail!(
                    "{}: missing (package.toml lists it); the package is incomplete",
                    file.display()
                );
            }
            if &sha256_file(&file)? != expected {
                bail!(
                    "{}: changed since it was packaged (its SHA-256 is not the one package.toml records); \
                     package the runs again rather than edit a package's files",
                    file.display()
                );
            }
        }
        Ok(package)
    }
}

/// The package's members, each checked by the experiment's checks (see
/// [`member_experiment`]), its `output` against its network's and its file against `[files]`.
fn check_members_of(check: &mut Checker, raw: &RawManifest, path: &Path, text: &str, dir: &Path) -> Vec<Member> {
    let mut members = Vec::new();
    for (i, member) in raw.member.iter().enumerate() {
        match member_experiment(path, text, i) {
            Ok(experiment) => {
                if experiment.model.output.to_string() != member.output {
                    check.error(
                        "member",
                        format!(
                            "member {} says output = '{}' but its model.output is '{}'",
                            i + 1,
                            member.output,
                            experiment.model.output
                        ),
                    );
                }
                members.push(Member {
                    file: dir.join(&member.file),
                    run: member.run.clone(),
                    experiment,
                    epoch: member.epoch,
                    training_cases: member.training_cases,
                    validation_cases: member.validation_cases,
                    validation: member.validation.clone(),
                });
            }
            Err(error) => check.diagnostics.extend(error.diagnostics().iter().cloned()),
        }
        if !raw.files.contains_key(&member.file) {
            check.error(
                "files",
                format!("member {}'s file {} has no hash in [files]", i + 1, member.file),
            );
        }
    }
    members
}

/// The fixed facts of `[predict]`: this segtop predicts one way, and says so when the file
/// asks for another.
fn check_predict(check: &mut Checker, predict: &PredictSection) {
    if !["labels", "regions"].contains(&predict.average.as_str()) {
        check.error(
            "predict.average",
            format!("predict.average = '{}': use \"labels\" or \"regions\"", predict.average),
        );
    }
    let fixed: [(&str, bool, String); 5] = [
        (
            "predict.threshold",
            predict.threshold == REGION_THRESHOLD,
            REGION_THRESHOLD.to_string(),
        ),
        (
            "predict.gaussian_sigma",
            predict.gaussian_sigma == GAUSSIAN_SIGMA,
            GAUSSIAN_SIGMA.to_string(),
        ),
        ("predict.labels", predict.labels == [0, 1, 2, 3], "[0, 1, 2, 3]".into()),
        (
            "predict.region_labels",
            predict.region_labels == [2, 1, 3],
            "[2, 1, 3]".into(),
        ),
        (
            "predict.legacy_enhancing_label",
            predict.legacy_enhancing_label == 4,
            "4".into(),
        ),
    ];
    for (key, holds, value) in fixed {
        if !holds {
            check.error(key, format!("{key}: segtop predicts with {value} only"));
        }
    }
}

/// Member `index`'s experiment, checked by the experiment's own checks at the lines of
/// `package.toml`: the text with every line blanked but those of `[data]`, `[validate]`,
/// `[augment]` and this member's `[member.model]` (its header read as `[model]`), so that a
/// problem's line and column are those in the package file.
fn member_experiment(path: &Path, text: &str, index: usize) -> Result<Experiment, ConfigError> {
    let mut lines: Vec<String> = Vec::new();
    let mut keep = false;
    let mut members_seen = 0;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(header) = table_header(trimmed) {
            if header == "[[member]]" {
                members_seen += 1;
            }
            keep = matches!(header, "[data]" | "[validate]" | "[augment]")
                || (header == "[member.model]" && members_seen == index + 1);
            if header == "[data]" {
                // The dataset folder is required of an experiment and means nothing here. It
                // goes on the header's line and the header one line up, where the line before
                // is blank (as written), so that lines keep their numbers.
                match lines.last_mut() {
                    Some(last) if last.is_empty() => *last = header.to_string(),
                    _ => lines.push(header.to_string()),
                }
                lines.push("root = \".\"".to_string());
                continue;
            }
            lines.push(match header {
                "[member.model]" if keep => "[model]".to_string(),
                _ if keep => line.to_string(),
                _ => String::new(),
            });
            continue;
        }
        lines.push(if keep { line.to_string() } else { String::new() });
    }
    let synthesized = lines.join("\n");
    let workspace = path.parent().unwrap_or(Path::new("."));
    Experiment::parse(path, &synthesized, workspace)
}

/// `trimmed` as a table header (`[data]`, `[[member]]`, `[member.model]`), if it is one.
fn table_header(trimmed: &str) -> Option<&str> {
    let inner = trimmed.trim_start_matches('[').trim_end_matches(']');
    let is_header = trimmed.starts_with('[')
        && trimmed.ends_with(']')
        && !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        && inner.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    is_header.then_some(trimmed)
}

#[cfg(test)]
mod tests;
