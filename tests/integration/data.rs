//! Loading BraTS cases: synthetic cases round-trip, and every kind of broken file gets its
//! own error naming the case and the file.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use segtop::data::case::{self, CaseErrorKind, Naming};
use segtop::data::synth;
use segtop::data::volume::VolumeError;
use segtop::experiment::{Layout, Modality};

const SHAPE: [usize; 3] = [48, 48, 32];
const ALL: [Modality; 4] = [Modality::T1n, Modality::T1c, Modality::T2f, Modality::T2w];

/// A dataset folder with `cases` synthetic cases.
fn dataset(cases: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = synth::SynthSpec {
        cases,
        shape: SHAPE,
        seed: 11,
    };
    synth::write_dataset(dir.path(), &spec, 2, &|_, _| {}).expect("synthesised");
    assert!(synth::is_complete(dir.path(), &spec));
    dir
}

fn only_case(root: &Path) -> case::CaseFiles {
    let found = case::discover(root, Layout::Auto).expect("readable");
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(found.cases.len(), 1);
    found.cases.into_iter().next().expect("one case")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).expect("open"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    bytes
}

fn gzip(path: &Path, bytes: &[u8]) {
    let mut encoder =
        flate2::write::GzEncoder::new(fs::File::create(path).expect("create"), flate2::Compression::fast());
    encoder.write_all(bytes).expect("write");
    encoder.finish().expect("finish");
}

/// Rewrites the decompressed bytes of a `.nii.gz` file.
fn mutate(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = gunzip(path);
    change(&mut bytes);
    gzip(path, &bytes);
}

fn put_i16(bytes: &mut [u8], offset: usize, value: i16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_f32(bytes: &mut [u8], offset: usize, value: f32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn load_error(root: &Path) -> case::CaseError {
    case::load_case(&only_case(root), &ALL).expect_err("the broken case loads")
}

fn file_of(files: &case::CaseFiles, modality: Modality) -> PathBuf {
    files.image(modality).expect("file").to_path_buf()
}

#[test]
fn synthetic_cases_load_back_exactly() {
    let dir = dataset(2);
    let found = case::discover(dir.path(), Layout::Auto).expect("readable");
    assert_eq!(found.cases.len(), 2);
    for (index, files) in found.cases.iter().enumerate() {
        assert_eq!(files.naming, Naming::Brats2023);
        let loaded = case::load_case(files, &synth::MODALITIES).expect("loads");
        let generated = synth::generate_case(index as u32, SHAPE, 11);
        assert_eq!(loaded.id, generated.id);
        assert_eq!(loaded.shape(), SHAPE);
        assert_eq!(loaded.spacing(), [1.0; 3]);
        let labels = loaded.labels.as_ref().expect("labels");
        // The generator's arrays are indexed [x, y, z]; transposed, they iterate x fastest, as NIfTI stores.
        let expected_labels: Vec<u8> = generated.labels.t().iter().copied().collect();
        assert_eq!(labels.data, expected_labels);
        for (image, original) in loaded.images.iter().zip(&generated.images) {
            let expected: Vec<f32> = original.t().iter().map(|&v| f32::from(v)).collect();
            assert_eq!(image.data, expected);
            assert_eq!(
                image.affine,
                [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 47.0], [0.0, 0.0, 1.0, 0.0]]
            );
        }
    }
}

#[test]
fn older_brats_naming_maps_enhancing_tumour_4_to_3() {
    let dir = dataset(1);
    let files = only_case(dir.path());
    let legacy = dir.path().join("BraTS2021_00001");
    fs::create_dir(&legacy).expect("dir");
    for (modality, suffix) in [
        (Modality::T1n, "t1"),
        (Modality::T1c, "t1ce"),
        (Modality::T2w, "t2"),
        (Modality::T2f, "flair"),
    ] {
        fs::copy(
            file_of(&files, modality),
            legacy.join(format!("BraTS2021_00001_{suffix}.nii.gz")),
        )
        .expect("copy");
    }
    let seg = legacy.join("BraTS2021_00001_seg.nii.gz");
    fs::copy(files.seg.as_ref().expect("seg"), &seg).expect("copy");
    mutate(&seg, |bytes| {
        for v in &mut bytes[352..] {
            if *v == 3 {
                *v = 4;
            }
        }
    });
    fs::remove_dir_all(dir.path().join(&files.id)).expect("remove the 2023 copy");
    let legacy_files = only_case(dir.path());
    assert_eq!(
        (legacy_files.id.as_str(), legacy_files.naming),
        ("BraTS2021_00001", Naming::Legacy)
    );
    let loaded = case::load_case(&legacy_files, &ALL).expect("loads");
    let labels = loaded.labels.expect("labels");
    assert!(labels.data.contains(&3) && !labels.data.iter().any(|&l| l > 3));
}

#[test]
fn broken_files_each_get_their_own_error() {
    // (what, break the case, check the error)
    type Breaker = fn(&case::CaseFiles);
    type Expect = fn(&case::CaseError) -> bool;
    let cases: Vec<(&str, Breaker, Expect)> = vec![
        (
            "truncated gzip",
            |f| {
                let path = file_of(f, Modality::T1c);
                let bytes = fs::read(&path).expect("read");
                fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
            },
            |e| {
                matches!(&e.kind, CaseErrorKind::Volume(VolumeError::Gzip(_)))
                    && e.file.ends_with("BraTS-SSA-90001-000-t1c.nii.gz")
            },
        ),
        (
            "corrupt gzip",
            |f| {
                let path = file_of(f, Modality::T2w);
                let mut bytes = fs::read(&path).expect("read");
                for b in &mut bytes[40..200] {
                    *b ^= 0x5a;
                }
                fs::write(&path, &bytes).expect("write");
            },
            |e| {
                matches!(
                    &e.kind,
                    CaseErrorKind::Volume(VolumeError::Gzip(_) | VolumeError::NotNifti(_))
                )
            },
        ),
        (
            "wrong magic",
            |f| mutate(&file_of(f, Modality::T1n), |b| b[344..348].copy_from_slice(b"abc\0")),
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::NotNifti(m)) if m.contains("magic 'abc\\x00'")),
        ),
        (
            "zero-byte file",
            |f| fs::write(file_of(f, Modality::T2w), b"").expect("write"),
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::NotNifti(m)) if m.contains("only 0 bytes")),
        ),
        (
            "4D volume",
            |f| {
                mutate(&file_of(f, Modality::T2f), |b| {
                    put_i16(b, 40, 4);
                    put_i16(b, 48, 2);
                })
            },
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::NotThreeD { dims }) if dims == "4D (48x48x32x2)"),
        ),
        (
            "absurd dims",
            |f| {
                mutate(&file_of(f, Modality::T1c), |b| {
                    put_i16(b, 42, 30000);
                    put_i16(b, 44, 30000);
                    put_i16(b, 46, 30000);
                })
            },
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::TooLarge { .. })),
        ),
        (
            "bitpix disagrees with datatype",
            |f| mutate(&file_of(f, Modality::T1c), |b| put_i16(b, 72, 8)),
            |e| e.to_string().ends_with("has datatype int16 but bitpix 8 (expected 16)"),
        ),
        (
            "unknown datatype",
            |f| mutate(&file_of(f, Modality::T1c), |b| put_i16(b, 70, 32)),
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::Datatype(32))),
        ),
        (
            "negative spacing",
            |f| mutate(&file_of(f, Modality::T1c), |b| put_f32(b, 84, -1.0)),
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::Spacing(_))),
        ),
        (
            "voxel data cut short",
            |f| mutate(&file_of(f, Modality::T1c), |b| b.truncate(b.len() - 100)),
            |e| matches!(&e.kind, CaseErrorKind::Volume(VolumeError::Truncated { found, expected }) if *expected == 48 * 48 * 32 * 2 && *found == expected - 100),
        ),
        (
            "mismatched shape",
            |f| {
                let other = synth::generate_case(0, [48, 48, 48], 11);
                let dir = tempfile::tempdir().expect("temp dir");
                let written = synth::write_case(dir.path(), &other).expect("written");
                fs::copy(
                    written.join("BraTS-SSA-90001-000-t2w.nii.gz"),
                    file_of(f, Modality::T2w),
                )
                .expect("copy");
            },
            |e| {
                e.to_string().ends_with(
                    "BraTS-SSA-90001-000-t2w.nii.gz: is 48x48x48 voxels but BraTS-SSA-90001-000-t1n.nii.gz is 48x48x32",
                )
            },
        ),
        (
            "mismatched affine",
            |f| mutate(&file_of(f, Modality::T2f), |b| put_f32(b, 292, 5.0)),
            |e| matches!(&e.kind, CaseErrorKind::Affine { reference } if reference == "BraTS-SSA-90001-000-t1n.nii.gz"),
        ),
        (
            "labels outside 0-3",
            |f| {
                mutate(f.seg.as_ref().expect("seg"), |b| {
                    let n = b.len();
                    b[n - 1] = 5;
                    b[n - 2] = 5;
                })
            },
            |e| e.to_string().ends_with("has labels outside {0, 1, 2, 3}: 5 (2 voxels)"),
        ),
        (
            "empty modality",
            |f| mutate(&file_of(f, Modality::T2w), |b| b[352..].fill(0)),
            |e| e.to_string() == "BraTS-SSA-90001-000: BraTS-SSA-90001-000-t2w.nii.gz: is empty: every voxel is 0",
        ),
        (
            "NaN voxels",
            |f| {
                mutate(&file_of(f, Modality::T1n), |b| {
                    // Make it float32 with one NaN voxel.
                    let values: Vec<i16> = b[352..]
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    b.truncate(352);
                    for (i, v) in values.iter().enumerate() {
                        let value = if i == 5 { f32::NAN } else { f32::from(*v) };
                        b.extend_from_slice(&value.to_le_bytes());
                    }
                    put_i16(b, 70, 16);
                    put_i16(b, 72, 32);
                })
            },
            |e| {
                matches!(
                    &e.kind,
                    CaseErrorKind::Volume(VolumeError::NonFinite {
                        count: 1,
                        first: [5, 0, 0]
                    })
                )
            },
        ),
        (
            "missing modality",
            |f| fs::remove_file(file_of(f, Modality::T2f)).expect("remove"),
            |e| {
                matches!(&e.kind, CaseErrorKind::Missing(Modality::T2f))
                    && e.file.ends_with("BraTS-SSA-90001-000-t2f.nii.gz")
            },
        ),
    ];
    for (what, break_case, expected) in cases {
        let dir = dataset(1);
        let files = only_case(dir.path());
        break_case(&files);
        let error = load_error(dir.path());
        assert!(expected(&error), "{what}: {error} ({:?})", error.kind);
        assert!(
            error.to_string().starts_with("BraTS-SSA-90001-000: "),
            "{what}: {error}"
        );
    }
}

#[test]
fn discovery_reports_files_it_cannot_place() {
    let dir = dataset(1);
    let files = only_case(dir.path());
    // The same modality twice, once uncompressed.
    let t1n = file_of(&files, Modality::T1n);
    fs::write(t1n.with_file_name("BraTS-SSA-90001-000-t1n.nii"), gunzip(&t1n)).expect("write");
    let found = case::discover(dir.path(), Layout::Auto).expect("readable");
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    assert!(
        found.problems[0].starts_with("BraTS-SSA-90001-000: two files for one modality"),
        "{:?}",
        found.problems
    );
}

#[test]
fn uncompressed_nifti_loads_like_compressed() {
    let dir = dataset(1);
    let files = only_case(dir.path());
    let compressed = case::load_case(&files, &ALL).expect("loads");
    for path in files.images.values().chain(files.seg.iter()) {
        let plain = PathBuf::from(path.to_string_lossy().trim_end_matches(".gz"));
        fs::write(&plain, gunzip(path)).expect("write");
        fs::remove_file(path).expect("remove");
    }
    let plain = case::load_case(&only_case(dir.path()), &ALL).expect("loads");
    assert_eq!(plain.images, compressed.images);
    assert_eq!(plain.labels, compressed.labels);
}

#[test]
fn data_scan_lists_every_case_and_every_problem() {
    let dir = dataset(3);
    let broken = dir.path().join("BraTS-SSA-90002-000/BraTS-SSA-90002-000-t2w.nii.gz");
    mutate(&broken, |b| b[352..].fill(0));
    let output = crate::segtop(dir.path(), &["data", "scan", "."]);
    let text = crate::stdout(&output);
    assert!(!output.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("case "), "{text}");
    assert!(
        lines[1].starts_with("BraTS-SSA-90001-000      48x48x32     1x1x1       int16 "),
        "{text}"
    );
    assert!(lines[2].starts_with("BraTS-SSA-90002-000      problem"), "{text}");
    assert!(text.contains("3 cases: 2 usable, 1 with problems"), "{text}");
    assert!(
        text.contains("  BraTS-SSA-90002-000: BraTS-SSA-90002-000-t2w.nii.gz: is empty: every voxel is 0"),
        "{text}"
    );
}

#[test]
fn data_show_draws_the_slice_with_the_most_tumour() {
    let dir = dataset(1);
    let case_dir = dir.path().join("BraTS-SSA-90001-000");
    let output = crate::segtop(
        dir.path(),
        &[
            "data",
            "show",
            case_dir.to_str().expect("utf-8"),
            "--color",
            "ascii",
            "--width",
            "48",
        ],
    );
    assert!(output.status.success(), "{}", crate::stderr(&output));
    let text = crate::stdout(&output);
    let files = only_case(dir.path());
    let labels = case::load_case(&files, &[Modality::T2f])
        .expect("loads")
        .labels
        .expect("labels");
    let best = segtop::render::slice_with_most_tumour(&labels, segtop::experiment::Axis::Axial);
    assert!(
        text.starts_with(&format!("BraTS-SSA-90001-000 t2f axial slice {} of 32\n", best + 1)),
        "{text}"
    );
    // 48 columns, half as many rows (square voxels), and labels drawn as letters.
    let picture: Vec<&str> = text.lines().skip(1).take_while(|l| !l.starts_with("labels")).collect();
    assert_eq!(picture.len(), 24, "{text}");
    assert!(picture.iter().all(|l| l.chars().count() == 48), "{text}");
    assert!(
        picture.iter().any(|l| l.contains('E')) && picture.iter().any(|l| l.contains('o')),
        "{text}"
    );

    let out_of_range = crate::segtop(
        dir.path(),
        &["data", "show", case_dir.to_str().expect("utf-8"), "--slice", "33"],
    );
    assert!(!out_of_range.status.success());
    assert_eq!(
        crate::stderr(&out_of_range).trim_end(),
        "segtop: error: --slice 33 is out of range: the axial view has slices 1 to 32"
    );
    // Numbered from 1, as the dashboard numbers them: the last is 32, and 0 is no slice.
    let last = crate::segtop(
        dir.path(),
        &["data", "show", case_dir.to_str().expect("utf-8"), "--slice", "32"],
    );
    assert!(
        crate::stdout(&last).contains(" axial slice 32 of 32\n"),
        "{}",
        crate::stderr(&last)
    );
    let zero = crate::segtop(
        dir.path(),
        &["data", "show", case_dir.to_str().expect("utf-8"), "--slice", "0"],
    );
    assert!(!zero.status.success());
}

fn data_config(root: &Path, cache: &Path) -> segtop::experiment::DataConfig {
    segtop::experiment::DataConfig {
        root: root.to_path_buf(),
        cache_dir: cache.to_path_buf(),
        ..Default::default()
    }
}

fn cache_files(cache: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut files = Vec::new();
    for dir in fs::read_dir(cache).expect("cache dir") {
        for file in fs::read_dir(dir.expect("entry").path()).expect("dataset dir") {
            let path = file.expect("entry").path();
            let modified = fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
            files.push((path, modified));
        }
    }
    files.sort();
    files
}

#[test]
fn the_cache_is_built_once_and_rebuilt_when_a_source_changes() {
    use segtop::data::dataset;
    let dir = dataset(3);
    let cache = tempfile::tempdir().expect("cache dir");
    let config = data_config(dir.path(), cache.path());
    let first = dataset::open(&config, 2, &|_, _| {}).expect("opens");
    assert_eq!(first.cases.len(), 3);
    let case = &first.cases[0];
    assert_eq!(case.header.channels, 4);
    // Foreground crop: the brain's bounding box, smaller than the volume.
    assert!(case.header.shape.iter().zip(SHAPE).all(|(c, s)| *c <= s) && case.header.shape != SHAPE);
    // Z-scored brain: mean about 0 over non-zero voxels.
    let brain: Vec<f32> = case
        .channel(0)
        .iter()
        .map(|v| v.to_f32())
        .filter(|v| *v != 0.0)
        .collect();
    let mean = brain.iter().sum::<f32>() / brain.len() as f32;
    assert!(mean.abs() < 0.05, "mean {mean}");
    let built = cache_files(cache.path());
    assert_eq!(built.len(), 3);
    drop(first);

    // Not a wait: time for a rewritten cache file to get a newer mtime than `built` records.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = dataset::open(&config, 2, &|_, _| {}).expect("opens");
    assert_eq!(again.cases.len(), 3);
    assert_eq!(cache_files(cache.path()), built, "a fresh cache was rewritten");

    // A changed source file rebuilds exactly its case.
    let t1n = dir.path().join("BraTS-SSA-90002-000/BraTS-SSA-90002-000-t1n.nii.gz");
    let bytes = fs::read(&t1n).expect("read");
    fs::write(&t1n, bytes).expect("rewrite");
    dataset::open(&config, 2, &|_, _| {}).expect("opens");
    let rebuilt = cache_files(cache.path());
    let changed: Vec<_> = rebuilt
        .iter()
        .zip(&built)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.clone())
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(
        changed[0]
            .file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with("BraTS-SSA-90002-000-")
    );
}

#[test]
fn bad_cases_stop_the_dataset_unless_skipped() {
    use segtop::data::dataset::{self, DatasetError};
    let dir = dataset(3);
    let cache = tempfile::tempdir().expect("cache dir");
    mutate(
        &dir.path().join("BraTS-SSA-90003-000/BraTS-SSA-90003-000-t2w.nii.gz"),
        |b| b[352..].fill(0),
    );
    fs::write(
        dir.path().join("BraTS-SSA-90001-000/BraTS-SSA-90001-000-t1c.nii.gz"),
        b"",
    )
    .expect("empty file");
    let mut config = data_config(dir.path(), cache.path());
    let Err(DatasetError::BadCases { total, problems }) = dataset::open(&config, 2, &|_, _| {}) else {
        panic!("bad cases accepted");
    };
    assert_eq!((total, problems.len()), (3, 2));
    assert!(
        problems[0].starts_with("BraTS-SSA-90001-000: BraTS-SSA-90001-000-t1c.nii.gz: not a NIfTI-1 file"),
        "{problems:?}"
    );
    assert!(problems[1].ends_with("is empty: every voxel is 0"), "{problems:?}");

    config.skip_bad_cases = true;
    let opened = dataset::open(&config, 2, &|_, _| {}).expect("opens without them");
    assert_eq!(opened.cases.len(), 1);
    assert_eq!(opened.skipped.len(), 2);

    config.min_tumour_fraction = 0.99;
    assert!(matches!(
        dataset::open(&config, 2, &|_, _| {}),
        Err(DatasetError::NothingLeft(_))
    ));
}

/// A Python that has nibabel, if there is one: `python3`, with SEGTOP_TEST_PYTHONPATH (set by
/// `quickstart.sh test`) on its path.
pub fn python_with_nibabel() -> Option<std::process::Command> {
    let make = || {
        let mut command = std::process::Command::new("python3");
        if let Some(path) = std::env::var_os("SEGTOP_TEST_PYTHONPATH") {
            command.env("PYTHONPATH", path);
        }
        command
    };
    let probe = make().args(["-c", "import nibabel, numpy"]).output().ok()?;
    probe.status.success().then(make)
}

#[test]
fn synthetic_cases_read_the_same_in_nibabel() {
    let Some(mut python) = python_with_nibabel() else {
        println!("skipped: no python3 with nibabel and numpy (quickstart.sh test installs them)");
        return;
    };
    let dir = dataset(1);
    let files = only_case(dir.path());
    let out = dir.path().join("nibabel");
    fs::create_dir(&out).expect("dir");
    let script = r#"
import json, sys, nibabel as nib, numpy as np
out = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    image = nib.load(path)
    data = np.asarray(image.get_fdata(dtype=np.float32))
    data.ravel(order="F").tofile(f"{out}/{i}.f32")
    json.dump({"shape": list(image.shape), "affine": image.affine[:3].tolist()}, open(f"{out}/{i}.json", "w"))
"#;
    let paths: Vec<PathBuf> = ALL
        .iter()
        .map(|m| file_of(&files, *m))
        .chain(files.seg.clone())
        .collect();
    let status = python
        .arg("-c")
        .arg(script)
        .arg(&out)
        .args(&paths)
        .status()
        .expect("python runs");
    assert!(status.success());
    let loaded = case::load_case(&files, &ALL).expect("loads");
    let labels = loaded.labels.as_ref().expect("labels");
    for (i, path) in paths.iter().enumerate() {
        let meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join(format!("{i}.json"))).expect("json")).expect("parses");
        assert_eq!(meta["shape"], serde_json::json!(SHAPE), "{}", path.display());
        let affine: Vec<Vec<f64>> = serde_json::from_value(meta["affine"].clone()).expect("affine");
        let ours = if i < 4 { loaded.images[i].affine } else { labels.affine };
        assert_eq!(
            affine,
            ours.iter().map(|row| row.to_vec()).collect::<Vec<_>>(),
            "{}",
            path.display()
        );
        let bytes = fs::read(out.join(format!("{i}.f32"))).expect("voxels");
        let theirs: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let ours: Vec<f32> = if i < 4 {
            loaded.images[i].data.clone()
        } else {
            labels.data.iter().map(|&l| f32::from(l)).collect()
        };
        assert_eq!(theirs, ours, "{}", path.display());
    }
}
