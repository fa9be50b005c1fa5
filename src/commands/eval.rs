//! `segtop eval`: BraTS metrics for a folder (or file) of predictions against ground truth,
//! case by case and summarised the way the leaderboards summarise them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde::Serialize;

use segtop::data::case;
use segtop::data::volume::{self, Volume};
use segtop::experiment::Layout;
use segtop::metrics::brats::{self, Challenge, RegionReport};
use segtop::metrics::grid::Grid;
use segtop::postprocess::Plan;

use super::data::progress_bar;

/// What to evaluate and where the results go.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Predicted label maps: a NIfTI file, or a folder of them named <case id>.nii.gz
    #[arg(long, value_name = "DIR|FILE")]
    pred: PathBuf,
    /// Ground truth: a label map, a BraTS dataset folder, or a folder of label maps
    #[arg(long, value_name = "DIR|FILE")]
    gt: PathBuf,
    /// Which challenge's parameters and labels to use
    #[arg(long, value_enum, default_value = "ssa")]
    challenge: Challenge,
    /// Also write every case's scores and the summary rows to this CSV file
    #[arg(long, value_name = "OUT")]
    csv: Option<PathBuf>,
    /// Print JSON (cases, lesions, summary) instead of a table
    #[arg(long)]
    json: bool,
    /// Cases evaluated at once [default: the number of cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Label convention of both prediction and ground truth: auto (per file: a map with
    /// label 4 and no 3 is legacy), brats2023 (enhancing tumour 3) or legacy (BraTS 2021 and
    /// earlier: enhancing tumour 4, read as 3)
    #[arg(long, value_enum, default_value = "auto")]
    labels: LabelConvention,
    /// Apply this post-processing plan (a run's postprocess.toml) to every prediction before
    /// scoring it: how a plan does on predictions it was not learned on
    #[arg(long, value_name = "PLAN")]
    postprocess: Option<PathBuf>,
}

/// How label maps number the enhancing tumour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelConvention {
    /// Decided per file from the labels it holds.
    Auto,
    /// BraTS 2023 and later: 1 NCR, 2 ED, 3 ET.
    Brats2023,
    /// BraTS 2021 and earlier: 1 NCR, 2 ED, 4 ET.
    Legacy,
}

/// One evaluated case.
#[derive(Debug, Serialize)]
struct CaseResult {
    case: String,
    prediction: PathBuf,
    ground_truth: PathBuf,
    seconds: f64,
    regions: Vec<RegionReport>,
}

/// Mean, standard deviation (n - 1), median and quartiles of one metric of one region.
#[derive(Debug, Serialize)]
struct Summary {
    region: &'static str,
    metric: &'static str,
    mean: f64,
    std: f64,
    median: f64,
    q25: f64,
    q75: f64,
}

/// The metrics in the table, CSV and summary, in order, with how to read them off a report.
type Column<T> = (&'static str, fn(&T) -> f64);

const METRICS: [Column<RegionReport>; 14] = [
    ("LesionWise_Dice", |r| r.lesion_dice),
    ("LesionWise_HD95", |r| r.lesion_hd95),
    ("LesionWise_NSD_0.5", |r| r.lesion_nsd_05),
    ("LesionWise_NSD_1.0", |r| r.lesion_nsd_10),
    ("Legacy_Dice", |r| r.legacy_dice),
    ("Legacy_HD95", |r| r.legacy_hd95),
    ("Legacy_NSD_0.5", |r| r.legacy_nsd_05),
    ("Legacy_NSD_1.0", |r| r.legacy_nsd_10),
    ("Sensitivity", |r| r.sensitivity),
    ("Specificity", |r| r.specificity),
    ("Num_TP", |r| r.num_tp as f64),
    ("Num_FP", |r| r.num_fp as f64),
    ("Num_FN", |r| r.num_fn as f64),
    ("GT_Volume_mm3", |r| r.gt_volume),
];

pub fn eval(args: &EvalArgs) -> anyhow::Result<bool> {
    if args.labels == LabelConvention::Legacy && args.challenge.labels().contains(&4) {
        bail!(
            "--labels legacy: {} uses label 4 for a region of its own, so its maps cannot be legacy BraTS maps",
            args.challenge.name()
        );
    }
    let plan = match &args.postprocess {
        Some(path) if args.challenge.labels() != [0, 1, 2, 3] => bail!(
            "--postprocess {}: plans act on labels 1 NCR, 2 ED, 3 ET; {} labels differ",
            path.display(),
            args.challenge.name()
        ),
        Some(path) => Some(Plan::load(path)?),
        None => None,
    };
    let pairs = pair_files(&args.pred, &args.gt)?;
    let bar = progress_bar(pairs.len(), "evaluating");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<CaseResult, String>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        for _ in 0..threads.clamp(1, pairs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, pred, gt)) = pairs.get(i) else { break };
                    let result = evaluate_pair(args.challenge, args.labels, plan.as_ref(), id, pred, gt)
                        .map_err(|e| format!("{id}: {e:#}"));
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(result);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut cases = Vec::new();
    let mut failures = Vec::new();
    for result in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match result {
            Ok(case) => cases.push(case),
            Err(message) => failures.push(message),
        }
    }
    cases.sort_by(|a, b| a.case.cmp(&b.case));
    failures.sort();
    let summaries = summarise(args.challenge, &cases);
    if let Some(path) = &args.csv {
        write_csv(path, &cases, &summaries).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let document = serde_json::json!({
            "challenge": args.challenge.name(),
            "cases": cases,
            "summary": summaries,
            "failed": failures,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    } else {
        print_table(&mut out, args.challenge, &cases, &summaries)?;
    }
    for failure in &failures {
        eprintln!("segtop: error: {failure}");
    }
    if let Some(path) = &args.csv {
        eprintln!("wrote {}", path.display());
    }
    Ok(failures.is_empty())
}

/// Finds the prediction of every ground-truth case. A prediction file belongs to a case when
/// its name without `.nii`/`.nii.gz` (and a trailing `-seg`/`_seg`) is the case id, or failing
/// that, contains it.
fn pair_files(pred: &Path, gt: &Path) -> anyhow::Result<Vec<(String, PathBuf, PathBuf)>> {
    if !pred.exists() {
        bail!("{}: no such file or folder", pred.display());
    }
    if !gt.exists() {
        bail!("{}: no such file or folder", gt.display());
    }
    if gt.is_file() {
        if !pred.is_file() {
            bail!("--gt {} is a file, so --pred must be one too", gt.display());
        }
        return Ok(vec![(stem(gt), pred.to_path_buf(), gt.to_path_buf())]);
    }
    let truths = ground_truths(gt)?;
    if truths.is_empty() {
        bail!(
            "{}: no label maps found (BraTS case folders with a seg file, or NIfTI files)",
            gt.display()
        );
    }
    let predictions: Vec<PathBuf> = if pred.is_file() {
        vec![pred.to_path_buf()]
    } else {
        nifti_files(pred)?
    };
    let mut by_stem: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in &predictions {
        by_stem.insert(stem(p), p.clone());
    }
    let mut pairs = Vec::new();
    let mut missing = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (id, gt_path) in truths {
        match prediction_for(&by_stem, &id) {
            Some(p) => {
                used.insert(p.clone());
                pairs.push((id, p, gt_path));
            }
            None => missing.push(id),
        }
    }
    let unused: Vec<String> = predictions
        .iter()
        .filter(|p| !used.contains(*p))
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() || !unused.is_empty() {
        bail!(
            "{} (a prediction is matched by its file name: <case id>.nii.gz)",
            unpaired_message(pred, gt, &missing, &unused)
        );
    }
    Ok(pairs)
}

/// The prediction named exactly like case `id`, else the only one whose name contains it
/// (several containing it would be a guess).
fn prediction_for(by_stem: &BTreeMap<String, PathBuf>, id: &str) -> Option<PathBuf> {
    by_stem.get(id).cloned().or_else(|| {
        let containing: Vec<&PathBuf> = by_stem.iter().filter(|(s, _)| s.contains(id)).map(|(_, p)| p).collect();
        (containing.len() == 1).then(|| containing[0].clone())
    })
}

/// Says which cases lack a prediction and which predictions match no case, so the user can
/// fix the names in one go.
fn unpaired_message(pred: &Path, gt: &Path, missing: &[String], unused: &[String]) -> String {
    let mut message = String::new();
    if !missing.is_empty() {
        message += &format!(
            "{} case(s) in {} have no prediction in {}: {}",
            missing.len(),
            gt.display(),
            pred.display(),
            listed(missing)
        );
    }
    if !unused.is_empty() {
        if !message.is_empty() {
            message += "; ";
        }
        message += &format!("{} prediction(s) match no case: {}", unused.len(), listed(unused));
    }
    message
}

/// The first eight items and how many more, so a long list does not flood the error.
fn listed(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
    let more = if items.len() > 8 {
        format!(" and {} more", items.len() - 8)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Ground-truth label maps under a folder: the seg files of BraTS case folders, or failing
/// that every NIfTI file, named by its file name.
fn ground_truths(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let found = case::discover(root, Layout::Auto).with_context(|| format!("{}: cannot list", root.display()))?;
    let segs: Vec<(String, PathBuf)> = found
        .cases
        .into_iter()
        .filter_map(|c| c.seg.map(|s| (c.id, s)))
        .collect();
    if !segs.is_empty() {
        return Ok(segs);
    }
    Ok(nifti_files(root)?.into_iter().map(|p| (stem(&p), p)).collect())
}

fn nifti_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let files = case::files_under(root).with_context(|| format!("{}: cannot list", root.display()))?;
    Ok(files
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".nii") || n.ends_with(".nii.gz"))
        })
        .collect())
}

/// A file's name without `.nii`/`.nii.gz` and without a trailing `-seg`/`_seg`.
fn stem(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let name = name.strip_suffix(".nii").unwrap_or(name);
    let name = name
        .strip_suffix("-seg")
        .or_else(|| name.strip_suffix("_seg"))
        .unwrap_or(name);
    name.to_string()
}

/// Reads a label map as the challenge's labels. Legacy maps (enhancing tumour 4) are read
/// with 4 as 3, for challenges whose labels stop at 3; `Auto` takes a map as legacy when it
/// holds label 4 and no label 3.
fn read_label_map(path: &Path, allowed: &[u8], convention: LabelConvention) -> anyhow::Result<Volume<u8>> {
    let volume = volume::read_volume_map(path, |v| v).with_context(|| format!("{}", path.display()))?;
    let legacy = match convention {
        LabelConvention::Brats2023 => false,
        LabelConvention::Legacy => true,
        LabelConvention::Auto => {
            !allowed.contains(&4) && {
                let (has_3, has_4) = volume
                    .data
                    .iter()
                    .fold((false, false), |(t, f), &v| (t || v == 3.0, f || v == 4.0));
                if has_3 && has_4 {
                    bail!(
                        "{}: holds both label 3 and label 4, so it follows neither the BraTS 2023 convention \
                         (enhancing tumour 3) nor the legacy one (enhancing tumour 4); --labels picks one",
                        path.display()
                    );
                }
                has_4
            }
        }
    };
    let (allowed, convention_name): (Vec<u8>, &str) = if legacy {
        (vec![0, 1, 2, 4], "the legacy labels (enhancing tumour 4)")
    } else {
        (allowed.to_vec(), "the challenge's labels")
    };
    let mut bad = None;
    let data = volume
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let label = v as u8;
            if (v != f32::from(label) || !allowed.contains(&label)) && bad.is_none() {
                bad = Some((i, v));
            }
            if legacy && label == 4 { 3 } else { label }
        })
        .collect();
    if let Some((i, v)) = bad {
        let [x, y, z] = Grid::new(volume.shape).coords(i);
        bail!(
            "{}: label {v} at voxel ({x}, {y}, {z}) is not one of {convention_name} {allowed:?}",
            path.display()
        );
    }
    Ok(Volume {
        shape: volume.shape,
        spacing: volume.spacing,
        affine: volume.affine,
        data,
    })
}

fn evaluate_pair(
    challenge: Challenge,
    convention: LabelConvention,
    plan: Option<&Plan>,
    id: &str,
    pred: &Path,
    gt: &Path,
) -> anyhow::Result<CaseResult> {
    let start = std::time::Instant::now();
    let (p, t) = std::thread::scope(|s| {
        let p = s.spawn(|| read_label_map(pred, challenge.labels(), convention));
        let t = read_label_map(gt, challenge.labels(), convention);
        (
            p.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reading {} failed", pred.display()))),
            t,
        )
    });
    let (mut p, t) = (p?, t?);
    if p.shape != t.shape {
        bail!(
            "prediction {} is {:?} voxels but ground truth {} is {:?}",
            pred.display(),
            p.shape,
            gt.display(),
            t.shape
        );
    }
    if !volume::same_affine(&p.affine, &t.affine, 1e-3) {
        bail!(
            "prediction {} and ground truth {} have different affines (voxel-to-world); \
             the prediction must be on the ground truth's grid",
            pred.display(),
            gt.display()
        );
    }
    if let Some(plan) = plan {
        plan.apply(Grid::new(p.shape), &mut p.data);
    }
    let regions = brats::evaluate(challenge, Grid::new(p.shape), p.spacing, &p.data, &t.data);
    Ok(CaseResult {
        case: id.to_string(),
        prediction: pred.to_path_buf(),
        ground_truth: gt.to_path_buf(),
        seconds: start.elapsed().as_secs_f64(),
        regions,
    })
}

fn summarise(challenge: Challenge, cases: &[CaseResult]) -> Vec<Summary> {
    let mut out = Vec::new();
    for (r, region) in challenge.regions().iter().enumerate() {
        for (metric, read) in METRICS {
            let mut values: Vec<f64> = cases.iter().filter_map(|c| c.regions.get(r)).map(read).collect();
            if values.is_empty() {
                continue;
            }
            values.sort_by(f64::total_cmp);
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = if values.len() > 1 {
                (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                f64::NAN
            };
            out.push(Summary {
                region,
                metric,
                mean,
                std,
                median: quantile(&values, 0.5),
                q25: quantile(&values, 0.25),
                q75: quantile(&values, 0.75),
            });
        }
    }
    out
}

/// Linear-interpolation quantile of sorted values (NumPy's and pandas' default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

fn write_csv(path: &Path, cases: &[CaseResult], summaries: &[Summary]) -> anyhow::Result<()> {
    let mut text = String::from("case,region");
    for (metric, _) in METRICS {
        text += &format!(",{metric}");
    }
    text.push('\n');
    for case in cases {
        for report in &case.regions {
            text += &format!("{},{}", csv_field(&case.case), report.region);
            for (_, read) in METRICS {
                text += &format!(",{}", read(report));
            }
            text.push('\n');
        }
    }
    // Summary rows: one per statistic and region, like the leaderboards' tables.
    let stats: [Column<Summary>; 5] = [
        ("Mean", |s| s.mean),
        ("StdDev", |s| s.std),
        ("Median", |s| s.median),
        ("25quantile", |s| s.q25),
        ("75quantile", |s| s.q75),
    ];
    let regions: Vec<&str> = summaries.iter().map(|s| s.region).fold(Vec::new(), |mut v, r| {
        if !v.contains(&r) {
            v.push(r);
        }
        v
    });
    for (name, read) in stats {
        for region in &regions {
            text += &format!("{name},{region}");
            for (metric, _) in METRICS {
                let value = summaries
                    .iter()
                    .find(|s| s.region == *region && s.metric == metric)
                    .map_or(f64::NAN, read);
                text += &format!(",{value}");
            }
            text.push('\n');
        }
    }
    // A temporary file in the same folder renamed into place: never half a CSV.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(text.as_bytes())?;
    file.persist(path)?;
    Ok(())
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn print_table(
    out: &mut impl Write,
    challenge: Challenge,
    cases: &[CaseResult],
    summaries: &[Summary],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} metrics, {} case(s); lesion-wise (LW) and legacy scores",
        challenge.name(),
        cases.len()
    )?;
    writeln!(
        out,
        "{:<22} {:<4} {:>7} {:>7} {:>7} {:>7} {:>6} {:>3} {:>3} {:>3}",
        "case", "", "LW Dice", "LW HD95", "Dice", "HD95", "NSD1", "TP", "FP", "FN"
    )?;
    for case in cases {
        for report in &case.regions {
            writeln!(
                out,
                "{:<22} {:<4} {:>7.4} {:>7.2} {:>7.4} {:>7.2} {:>6.3} {:>3} {:>3} {:>3}",
                truncate(&case.case, 22),
                report.region,
                report.lesion_dice,
                report.lesion_hd95,
                report.legacy_dice,
                report.legacy_hd95,
                report.legacy_nsd_10,
                report.num_tp,
                report.num_fp,
                report.num_fn
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<22} {:<4} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "summary", "", "mean", "std", "median", "25%", "75%"
    )?;
    for s in summaries
        .iter()
        .filter(|s| matches!(s.metric, "LesionWise_Dice" | "LesionWise_HD95"))
    {
        writeln!(
            out,
            "{:<22} {:<4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            s.metric, s.region, s.mean, s.std, s.median, s.q25, s.q75
        )?;
    }
    Ok(())
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let kept: String = text.chars().take(width - 1).collect();
        format!("{kept}~")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.25), 1.75);
        assert_eq!(quantile(&v, 0.75), 3.25);
    }

    #[test]
    fn file_stems_drop_extensions_and_seg_suffixes() {
        assert_eq!(
            stem(Path::new("a/BraTS-SSA-00002-000-seg.nii.gz")),
            "BraTS-SSA-00002-000"
        );
        assert_eq!(stem(Path::new("BraTS-SSA-00002-000.nii")), "BraTS-SSA-00002-000");
    }
}
