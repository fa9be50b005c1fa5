//! `segtop data scan`, `segtop data show` and `segtop synth`: looking at a dataset folder
//! from the shell, with no libtorch.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};

use segtop::config::Choice;
use segtop::data::case::{self, CaseError, CaseSummary};
use segtop::data::synth;
use segtop::experiment::{Axis, Layout, Modality};
use segtop::graphics::{Graphics, GraphicsChoice};
use segtop::render::{self, ColorMode, Overlay, Palette};

pub fn progress_bar(total: usize, what: &str) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {elapsed} (eta {eta})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    indicatif::ProgressBar::new(total as u64)
        .with_style(style)
        .with_message(what.to_string())
}

/// `segtop synth`: writes synthetic cases, on all cores.
pub fn synth(out: &Path, spec: &synth::SynthSpec, progress_lines: bool) -> anyhow::Result<()> {
    let bar = progress_bar(spec.cases as usize, "synthesising cases");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let progress = |done: u32, total: u32| {
        if progress_lines {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{done} {total}").and_then(|()| stdout.flush());
        } else {
            bar.set_position(u64::from(done));
        }
    };
    let dirs = synth::write_dataset(out, spec, threads, &progress)?;
    bar.finish_and_clear();
    let [x, y, z] = spec.shape;
    eprintln!(
        "wrote {} synthetic cases of {x}x{y}x{z} voxels to {}",
        dirs.len(),
        out.display()
    );
    Ok(())
}

/// `segtop data scan`: checks every case of a dataset folder and prints one line per case.
/// Returns false when any case has a problem.
pub fn scan(root: &Path, layout: Layout, modalities: &[Modality]) -> anyhow::Result<bool> {
    if !root.is_dir() {
        bail!("{}: not a folder", root.display());
    }
    let found = case::discover(root, layout).with_context(|| format!("{}: cannot list", root.display()))?;
    if found.cases.is_empty() {
        bail!(
            "{}: no BraTS cases found (files named like BraTS-SSA-00002-000-t1n.nii.gz or BraTS2021_00000_t1.nii.gz)",
            root.display()
        );
    }
    let results = check_cases(&found.cases, modalities);

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<12} {:<11} {:<8} {:>8} {:>8} {:>8}",
        "case", "shape", "spacing mm", "dtype", "NCR cm3", "ED cm3", "ET cm3"
    )?;
    let mut bad = Vec::new();
    for (files, result) in found.cases.iter().zip(results) {
        match result {
            Some(Ok(summary)) => write_case_line(&mut out, &summary)?,
            Some(Err(error)) => {
                writeln!(out, "{:<24} problem: see below", files.id)?;
                bad.push(error.to_string());
            }
            None => bad.push(format!("{}: not checked (a checking thread failed)", files.id)),
        }
    }
    let total = found.cases.len();
    writeln!(
        out,
        "\n{total} cases: {} usable, {} with problems",
        total - bad.len(),
        bad.len()
    )?;
    for problem in found.problems.iter().chain(&bad) {
        writeln!(out, "  {problem}")?;
    }
    if !bad.is_empty() {
        writeln!(
            out,
            "Fix or remove these cases, or set skip_bad_cases = true in the experiment's [data] to train without them."
        )?;
    }
    Ok(bad.is_empty() && found.problems.is_empty())
}

/// Checks the cases on all cores behind a progress bar; a case whose checking thread failed
/// comes back as `None`.
fn check_cases(cases: &[case::CaseFiles], modalities: &[Modality]) -> Vec<Option<Result<CaseSummary, CaseError>>> {
    let bar = progress_bar(cases.len(), "checking cases");
    let results: Vec<Mutex<Option<Result<CaseSummary, CaseError>>>> = cases.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(cases.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(files) = cases.get(i) else {
                        break;
                    };
                    let result = case::scan_case(files, modalities);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    results
        .into_iter()
        .map(|slot| slot.into_inner().ok().flatten())
        .collect()
}

/// One usable case's row of the scan table: shape, spacing, data type and label volumes in cm³.
fn write_case_line(out: &mut impl Write, summary: &CaseSummary) -> std::io::Result<()> {
    let [x, y, z] = summary.shape;
    let [sx, sy, sz] = summary.spacing;
    let voxel_cm3 = sx * sy * sz / 1000.0;
    let volumes = match summary.label_voxels {
        Some(v) => [1, 2, 3].map(|l| format!("{:.1}", v[l] as f64 * voxel_cm3)),
        None => ["-".to_string(), "-".to_string(), "no seg".to_string()],
    };
    writeln!(
        out,
        "{:<24} {:<12} {:<11} {:<8} {:>8} {:>8} {:>8}",
        summary.id,
        format!("{x}x{y}x{z}"),
        format!("{sx}x{sy}x{sz}"),
        summary.datatype,
        volumes[0],
        volumes[1],
        volumes[2]
    )
}

/// `segtop data show`: one slice of a case, labels over the image, in the terminal.
pub fn show(
    case_path: &Path,
    modality: Modality,
    axis: Axis,
    slice: Option<usize>,
    width: Option<usize>,
    (color, graphics): (Option<ColorMode>, GraphicsChoice),
) -> anyhow::Result<()> {
    let image_files = one_case_files(case_path, modality)?;
    let loaded = case::load_case(&image_files, &[modality])?;
    let image = &loaded.images[0];
    let count = render::slice_count(image, axis);
    // Slices are numbered from 1 wherever segtop shows them, as the dashboard does.
    let index = match (slice, &loaded.labels) {
        (Some(n), _) if n == 0 || n > count => {
            bail!("--slice {n} is out of range: the {axis} view has slices 1 to {count}")
        }
        (Some(n), _) => n - 1,
        (None, Some(labels)) => render::slice_with_most_tumour(labels, axis),
        (None, None) => count / 2,
    };
    let window = render::auto_window(image, 0.5, 99.5);
    let view = render::slice(image, loaded.labels.as_ref(), axis, index, window);
    let stdout = std::io::stdout();
    let mode = color.unwrap_or_else(|| {
        if stdout.is_terminal() {
            ColorMode::detect()
        } else {
            ColorMode::Ascii
        }
    });
    let (terminal_columns, terminal_rows) =
        crossterm::terminal::size().map_or((80, 24), |(w, h)| (usize::from(w), usize::from(h)));
    let columns = width.unwrap_or(terminal_columns);
    let graphics = Graphics::detect(graphics, mode);
    let picture = graphics.protocol().is_some().then(|| {
        // The slice within the width, and within the screen's height less the text around it.
        let (cell_width, cell_height) = graphics.cell_pixels();
        let room = (
            columns * usize::from(cell_width),
            terminal_rows.saturating_sub(4).max(8) * usize::from(cell_height),
        );
        let size = render::fit(&view, room.0, room.1);
        graphics.image(&render::picture(&view, &Palette::default(), Overlay::Fill, size))
    });
    let mut out = stdout.lock();
    writeln!(
        out,
        "{} {} {axis} slice {} of {count}",
        loaded.id,
        modality.name(),
        index + 1
    )?;
    match picture.flatten() {
        Some(image) => out.write_all(image.inline().as_bytes())?,
        None => {
            if let Some(hint) = &graphics.hint {
                eprintln!("segtop: {hint}");
            }
            let rows = if mode == ColorMode::Ascii { columns / 2 } else { columns };
            let cells = render::cells(&view, columns, rows, mode, &Palette::default());
            out.write_all(render::to_ansi(&cells, mode).as_bytes())?;
        }
    }
    if let Some(labels) = &loaded.labels {
        write_label_counts(&mut out, &view.labels, labels, mode)?;
    }
    Ok(())
}

/// The files of the one case at `case_path` (a case folder or one of its files), with only
/// `modality`'s image kept so nothing else is read.
fn one_case_files(case_path: &Path, modality: Modality) -> anyhow::Result<case::CaseFiles> {
    let folder = if case_path.is_file() {
        case_path.parent().unwrap_or(Path::new("."))
    } else {
        case_path
    };
    let found = case::discover(folder, Layout::Auto).with_context(|| format!("{}: cannot list", folder.display()))?;
    let files = match found.cases.as_slice() {
        [one] => one,
        [] => bail!("{}: no BraTS case files here", folder.display()),
        many => bail!(
            "{}: holds {} cases; give the folder of one case",
            folder.display(),
            many.len()
        ),
    };
    Ok(case::CaseFiles {
        images: files
            .images
            .iter()
            .filter(|(m, _)| **m == modality)
            .map(|(m, p)| (*m, p.clone()))
            .collect(),
        ..files.clone()
    })
}

/// The line under the slice: voxels of each label in it, named by how `mode` draws them, and
/// the case's tumour total.
fn write_label_counts(
    out: &mut impl Write,
    slice_labels: &[u8],
    labels: &segtop::data::volume::Volume<u8>,
    mode: ColorMode,
) -> std::io::Result<()> {
    let mut counts = [0usize; 4];
    for &l in slice_labels {
        counts[usize::from(l.min(3))] += 1;
    }
    let legend = if mode == ColorMode::Ascii {
        ["N", "o", "E"]
    } else {
        ["red", "green", "yellow"]
    };
    writeln!(
        out,
        "labels in this slice: NCR {} ({}), ED {} ({}), ET {} ({}); case total {} tumour voxels",
        counts[1],
        legend[0],
        counts[2],
        legend[1],
        counts[3],
        legend[2],
        labels.data.iter().filter(|&&l| l > 0).count()
    )
}

/// `segtop data bench`: median wall time of loading one case (4 modalities and labels) from
/// its NIfTI files, of that plus preprocessing (z-score, foreground crop), and of reading the
/// preprocessed case back from the cache as float32, as the sampler would.
pub fn bench(case_path: &Path, repeats: usize, json: bool) -> anyhow::Result<()> {
    use segtop::data::{cache, dataset, preprocess};
    use std::time::Instant;

    let found =
        case::discover(case_path, Layout::Auto).with_context(|| format!("{}: cannot list", case_path.display()))?;
    let [files] = found.cases.as_slice() else {
        bail!("{}: give the folder of exactly one case", case_path.display());
    };
    let config = segtop::experiment::DataConfig {
        root: case_path.to_path_buf(),
        ..Default::default()
    };
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let mut load_times = Vec::new();
    let mut prepare_times = Vec::new();
    let mut prepared = None;
    for _ in 0..repeats {
        let mut loaded = None;
        load_times.push(time(&mut || loaded = Some(case::load_case(files, &config.modalities))));
        let loaded = loaded.context("not loaded")??;
        prepare_times.push(time(&mut || prepared = Some(preprocess::prepare(&loaded, &config))));
    }
    let prepared = prepared.context("not prepared")?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("case.segc");
    cache::write(&path, &prepared, &dataset::settings_text(&config), vec![])?;
    let mut cache_times = Vec::new();
    let mut checksum = 0.0f64;
    for _ in 0..repeats {
        cache_times.push(time(&mut || {
            if let Ok(cached) = cache::CachedCase::open(&path) {
                for c in 0..cached.header.channels {
                    let floats: Vec<f32> = cached.channel(c).iter().map(|v| v.to_f32()).collect();
                    checksum += f64::from(floats[floats.len() / 2]);
                }
                checksum += cached.labels().map_or(0.0, |l| f64::from(l[l.len() / 2]));
            }
        }));
    }
    let (load, prepare, cached) = (median(load_times), median(prepare_times), median(cache_times));
    let [x, y, z] = prepared.original_shape;
    if json {
        println!(
            "{{\"impl\":\"segtop\",\"shape\":[{x},{y},{z}],\"load_s\":{load:.4},\"load_preprocess_s\":{:.4},\"cache_s\":{cached:.4},\"checksum\":{checksum}}}",
            load + prepare
        );
    } else {
        println!(
            "case {} ({x}x{y}x{z}, 4 modalities + labels), median of {repeats}:",
            files.id
        );
        println!("  load from NIfTI              {load:8.3} s");
        println!("  load + preprocess            {:8.3} s", load + prepare);
        println!("  read preprocessed from cache {cached:8.3} s");
    }
    Ok(())
}

/// `segtop data prepare`: builds (or checks) the cache of an experiment's dataset, generating
/// synthetic data first where the experiment asks for it, and prints the split.
pub fn prepare(experiment: &segtop::experiment::Experiment) -> anyhow::Result<()> {
    use segtop::data::dataset;
    let config = &experiment.data;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if let Some(synthetic) = &config.synthetic {
        let spec = segtop::data::synth::SynthSpec::of(synthetic);
        if !synth::is_complete(&config.root, &spec) {
            synth(&config.root, &spec, false)?;
        }
    }
    let bar = progress_bar(0, "preprocessing cases");
    let opened = dataset::open(config, threads, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let ids: Vec<String> = opened.cases.iter().map(|c| c.header.id.clone()).collect();
    let split = dataset::split_for(&ids, config).map_err(|message| anyhow::anyhow!("{message}"))?;
    let bytes: u64 = opened
        .cases
        .iter()
        .filter_map(|c| std::fs::metadata(&c.path).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{} cases cached in {} ({:.0} MB): {} train, {} validation, {} test (seed {})",
        opened.cases.len(),
        config.cache_dir.display(),
        bytes as f64 / 1e6,
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        split.seed
    );
    for line in &opened.excluded {
        println!("  left out: {line}");
    }
    for line in &opened.skipped {
        println!("  skipped: {line}");
    }
    Ok(())
}
