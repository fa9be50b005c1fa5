//! Synthetic BraTS-Africa-layout cases, for the demo and the tests.
//!
//! Each case is a skull-stripped "brain": a randomly deformed ellipsoid of white matter
//! under a folded grey-matter cortex, a rim of CSF and two lateral ventricles, holding one to
//! three tumours built like gliomas: an enhancing rim (label 3) around a necrotic core
//! (label 1), inside oedema (label 2). The four modalities get distinct contrasts (bright
//! enhancing rim on T1c, bright oedema on T2 and FLAIR, dark CSF on FLAIR, dark lesion on
//! T1), a smooth bias field and noise. Files are NIfTI-1 `.nii.gz` as BraTS ships them: int16
//! images, uint8 labels, 1 mm voxels, qform and sform in the BraTS (SRI24) orientation.
//!
//! Generation is deterministic: the same seed gives the same bytes.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use ndarray::{Array3, ShapeBuilder};
use nifti::NiftiHeader;
use nifti::writer::WriterOptions;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::experiment::{Modality, SyntheticConfig};

/// The order modalities are generated and written in.
pub const MODALITIES: [Modality; 4] = [Modality::T1n, Modality::T1c, Modality::T2w, Modality::T2f];

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{}: cannot write: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: cannot write NIfTI: {error}", path.display())]
    Nifti { path: PathBuf, error: nifti::NiftiError },
}

/// One generated case, voxels in NIfTI order (x fastest).
pub struct SynthCase {
    pub id: String,
    pub shape: [usize; 3],
    /// Images in the order of [`MODALITIES`].
    pub images: [Array3<i16>; 4],
    pub labels: Array3<u8>,
}

/// The id of synthetic case `index` (0-based). The 9xxxx range keeps them apart from real ids.
pub fn case_id(index: u32) -> String {
    format!("BraTS-SSA-{:05}-000", 90001 + index)
}

/// A smooth random function on the unit sphere (a sum of a few low-frequency waves), used to
/// deform surfaces. Returns values in about [-amplitude, amplitude].
struct Wobble {
    waves: Vec<([f64; 3], f64, f64)>,
}

impl Wobble {
    fn new(rng: &mut ChaCha8Rng, count: usize, frequencies: std::ops::Range<f64>, amplitude: f64) -> Wobble {
        let waves = (0..count)
            .map(|_| {
                let direction = random_unit(rng);
                let frequency = rng.random_range(frequencies.clone());
                let phase = rng.random_range(0.0..2.0 * PI);
                let weight = amplitude / (count as f64).sqrt() * rng.random_range(0.5..1.5);
                (
                    [
                        direction[0] * frequency,
                        direction[1] * frequency,
                        direction[2] * frequency,
                    ],
                    phase,
                    weight,
                )
            })
            .collect();
        Wobble { waves }
    }

    fn at(&self, p: [f64; 3]) -> f64 {
        self.waves
            .iter()
            .map(|(k, phase, weight)| weight * (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + phase).sin())
            .sum()
    }
}

fn random_unit(rng: &mut ChaCha8Rng) -> [f64; 3] {
    loop {
        let v: [f64; 3] = [
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
        ];
        let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if norm > 0.1 && norm <= 1.0 {
            return [v[0] / norm, v[1] / norm, v[2] / norm];
        }
    }
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u: f64 = rng.random();
    let v: f64 = rng.random();
    (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * PI * v).cos()
}

/// A tumour, in the brain's normalised coordinates (the brain ellipsoid has radius 1).
struct Tumour {
    centre: [f64; 3],
    /// Outer radius of the enhancing rim; the necrotic core is inside `core_fraction` of it.
    radius: f64,
    core_fraction: f64,
    /// Oedema reaches this many times the radius.
    oedema_factor: f64,
    shape: Wobble,
}

impl Tumour {
    /// The label at normalised position `p` (0 when outside the tumour).
    fn label(&self, p: [f64; 3]) -> u8 {
        let d = [p[0] - self.centre[0], p[1] - self.centre[1], p[2] - self.centre[2]];
        let distance = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if distance > self.radius * self.oedema_factor * 1.3 {
            return 0;
        }
        let direction = if distance > 0.0 {
            [d[0] / distance, d[1] / distance, d[2] / distance]
        } else {
            [0.0; 3]
        };
        let r = distance / (self.radius * (1.0 + self.shape.at(direction)));
        if r < self.core_fraction {
            1
        } else if r < 1.0 {
            3
        } else if r < self.oedema_factor * (1.0 + 0.5 * self.shape.at([direction[1], direction[2], direction[0]])) {
            2
        } else {
            0
        }
    }
}

/// Tissue classes of the synthetic anatomy.
#[derive(Clone, Copy)]
enum Tissue {
    Csf,
    Grey,
    White,
}

/// Mean intensity of each tissue and tumour label in each modality (order of MODALITIES),
/// on the scale of BraTS int16 images.
fn mean_intensity(modality: usize, tissue: Tissue, label: u8) -> f64 {
    //              t1n     t1c     t2w     t2f
    const CSF: [f64; 4] = [250.0, 280.0, 2000.0, 150.0];
    const GREY: [f64; 4] = [650.0, 700.0, 800.0, 800.0];
    const WHITE: [f64; 4] = [900.0, 950.0, 500.0, 600.0];
    const NECROSIS: [f64; 4] = [300.0, 350.0, 1800.0, 700.0];
    const OEDEMA: [f64; 4] = [550.0, 620.0, 1500.0, 1400.0];
    const ENHANCING: [f64; 4] = [550.0, 1500.0, 1100.0, 1100.0];
    match (label, tissue) {
        (1, _) => NECROSIS[modality],
        (2, _) => OEDEMA[modality],
        (3, _) => ENHANCING[modality],
        (_, Tissue::Csf) => CSF[modality],
        (_, Tissue::Grey) => GREY[modality],
        (_, Tissue::White) => WHITE[modality],
    }
}

/// Generates case `index` of a dataset made with `seed`, on a grid of `shape` voxels.
pub fn generate_case(index: u32, shape: [usize; 3], seed: u64) -> SynthCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let [nx, ny, nz] = shape;
    let brain = Brain::random(&mut rng, shape);
    let tumours = random_tumours(&mut rng);
    let bias: Vec<Wobble> = (0..4).map(|_| Wobble::new(&mut rng, 3, 0.5..1.5, 0.12)).collect();
    let contrast: Vec<f64> = (0..4).map(|_| rng.random_range(0.85..1.15)).collect();

    let mut labels = Array3::<u8>::zeros((nx, ny, nz).f());
    let mut images: [Array3<i16>; 4] = std::array::from_fn(|_| Array3::<i16>::zeros((nx, ny, nz).f()));
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let p = brain.position([x, y, z]);
                let Some(tissue) = brain.tissue(p) else {
                    continue;
                };
                let label = tumours
                    .iter()
                    .map(|t| t.label(p))
                    .max_by_key(|&l| label_priority(l))
                    .unwrap_or(0);
                labels[[x, y, z]] = label;
                for (m, image) in images.iter_mut().enumerate() {
                    let mean = mean_intensity(m, tissue, label) * contrast[m] * (1.0 + bias[m].at(p));
                    let value = mean + gaussian(&mut rng) * 0.03 * mean_intensity(m, Tissue::White, 0);
                    image[[x, y, z]] = value.clamp(1.0, f64::from(i16::MAX)) as i16;
                }
            }
        }
    }
    SynthCase {
        id: case_id(index),
        shape,
        images,
        labels,
    }
}

/// One case's random brain: where it sits on the grid, and the shapes of its surface,
/// cortical folds and ventricles.
struct Brain {
    /// Semi-axes of the brain ellipsoid, in voxels.
    semi: [f64; 3],
    /// Centre of the ellipsoid, in voxels.
    centre: [f64; 3],
    surface: Wobble,
    folds: Wobble,
    ventricle_shape: Wobble,
    ventricle_size: f64,
}

impl Brain {
    /// Draws a brain for a grid of `shape` voxels (the first draws of a case's generator).
    fn random(rng: &mut ChaCha8Rng, shape: [usize; 3]) -> Brain {
        let [nx, ny, nz] = shape;
        // Brain semi-axes in voxels, scaled from a 240x240x155 BraTS grid (70, 85, 65 mm).
        let scale = rng.random_range(0.92..1.05);
        let semi = [
            nx as f64 * 0.29 * scale,
            ny as f64 * 0.354 * scale,
            nz as f64 * 0.42 * scale,
        ];
        let centre = [nx as f64 / 2.0, ny as f64 / 2.0 + ny as f64 * 0.02, nz as f64 * 0.48];
        Brain {
            semi,
            centre,
            surface: Wobble::new(rng, 6, 1.0..3.0, 0.05),
            folds: Wobble::new(rng, 24, 25.0..45.0, 0.05),
            ventricle_shape: Wobble::new(rng, 4, 1.0..2.5, 0.1),
            ventricle_size: rng.random_range(0.8..1.3),
        }
    }

    /// The normalised position (the ellipsoid has radius 1) of the centre of voxel `[x, y, z]`.
    fn position(&self, [x, y, z]: [usize; 3]) -> [f64; 3] {
        [
            (x as f64 + 0.5 - self.centre[0]) / self.semi[0],
            (y as f64 + 0.5 - self.centre[1]) / self.semi[1],
            (z as f64 + 0.5 - self.centre[2]) / self.semi[2],
        ]
    }

    /// The tissue at normalised position `p`, or `None` outside the brain.
    fn tissue(&self, p: [f64; 3]) -> Option<Tissue> {
        let rho = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        let direction = if rho > 0.0 {
            [p[0] / rho, p[1] / rho, p[2] / rho]
        } else {
            [0.0, 0.0, 1.0]
        };
        let edge = rho / (1.0 + self.surface.at(direction));
        if edge >= 1.0 {
            return None;
        }
        let in_ventricle = [-1.0, 1.0].iter().any(|side| {
            let v = [
                (p[0] - side * 0.13) / (0.07 * self.ventricle_size),
                (p[1] + 0.05) / (0.32 * self.ventricle_size),
                (p[2] - 0.12) / (0.13 * self.ventricle_size),
            ];
            (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt() < 1.0 + self.ventricle_shape.at(direction)
        });
        Some(if edge > 0.96 || in_ventricle {
            Tissue::Csf
        } else if edge > 0.82 + self.folds.at(p) {
            Tissue::Grey
        } else {
            Tissue::White
        })
    }
}

/// One to three tumours, the first the largest, drawn after the brain.
fn random_tumours(rng: &mut ChaCha8Rng) -> Vec<Tumour> {
    let tumour_count = rng.random_range(1..=3);
    (0..tumour_count)
        .map(|i| {
            let direction = random_unit(rng);
            let depth = rng.random_range(0.15..0.55);
            Tumour {
                centre: [direction[0] * depth, direction[1] * depth, direction[2] * depth],
                radius: rng.random_range(0.12..0.25) * if i == 0 { 1.0 } else { 0.6 },
                core_fraction: rng.random_range(0.45..0.75),
                oedema_factor: rng.random_range(1.5..2.3),
                shape: Wobble::new(rng, 5, 1.0..3.0, 0.15),
            }
        })
        .collect()
}

/// Where overlapping tumours meet, enhancing tumour wins over necrosis, and both over oedema.
fn label_priority(label: u8) -> u8 {
    match label {
        3 => 3,
        1 => 2,
        2 => 1,
        _ => 0,
    }
}

/// The header BraTS files carry: 1 mm voxels, LPS-flipped axes as in SRI24, qform and sform.
pub fn brats_header(shape: [usize; 3]) -> NiftiHeader {
    let y_offset = shape[1] as f32 - 1.0;
    NiftiHeader {
        pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        xyzt_units: 2, // millimetres
        qform_code: 1,
        sform_code: 1,
        // 180 degrees about z: x and y flipped.
        quatern_b: 0.0,
        quatern_c: 0.0,
        quatern_d: 1.0,
        quatern_x: 0.0,
        quatern_y: y_offset,
        quatern_z: 0.0,
        srow_x: [-1.0, 0.0, 0.0, 0.0],
        srow_y: [0.0, -1.0, 0.0, y_offset],
        srow_z: [0.0, 0.0, 1.0, 0.0],
        descrip: b"segtop synthetic BraTS-layout case".to_vec(),
        ..NiftiHeader::default()
    }
}

/// Writes `case` as `<out>/<id>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz`. The case folder appears
/// only once complete: files are written into a hidden folder that is then renamed.
pub fn write_case(out: &Path, case: &SynthCase) -> Result<PathBuf, SynthError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SynthError::Io { path, error }
    };
    let final_dir = out.join(&case.id);
    // The process id keeps two writers of the same dataset (two dashboards) apart.
    let partial = out.join(format!(".{}.partial-{}", case.id, std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let header = brats_header(case.shape);
    let write = |path: PathBuf, result: nifti::Result<()>| result.map_err(|error| SynthError::Nifti { path, error });
    for (modality, image) in MODALITIES.iter().zip(&case.images) {
        let path = partial.join(format!("{}-{}.nii.gz", case.id, crate::config::Choice::name(*modality)));
        write(
            path.clone(),
            WriterOptions::new(&path).reference_header(&header).write_nifti(image),
        )?;
    }
    let seg = partial.join(format!("{}-seg.nii.gz", case.id));
    write(
        seg.clone(),
        WriterOptions::new(&seg)
            .reference_header(&header)
            .write_nifti(&case.labels),
    )?;
    // Another writer (the dashboard's demo-data thread and a trainer can both be generating)
    // may finish this case first, before or while this one is renamed: its files are identical.
    let renamed = if final_dir.exists() {
        Ok(())
    } else {
        std::fs::rename(&partial, &final_dir)
    };
    match renamed {
        Ok(()) if !partial.exists() => {}
        Ok(()) => std::fs::remove_dir_all(&partial).map_err(io(&partial))?,
        Err(_) if final_dir.is_dir() => std::fs::remove_dir_all(&partial).map_err(io(&partial))?,
        Err(error) => return Err(io(&final_dir)(error)),
    }
    Ok(final_dir)
}

/// The file that records how a synthetic dataset folder was made.
pub const MARKER: &str = "segtop-synthetic.toml";

/// What a synthetic dataset was generated with; written to [`MARKER`] once all cases are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SynthSpec {
    pub cases: u32,
    pub shape: [usize; 3],
    pub seed: u64,
}

impl SynthSpec {
    /// What an experiment's `[data.synthetic]` asks to generate.
    pub fn of(config: &SyntheticConfig) -> SynthSpec {
        SynthSpec {
            cases: config.cases,
            shape: config.shape.map(|n| n as usize),
            seed: config.seed,
        }
    }
}

/// Whether `out` holds exactly the dataset `spec` describes, completely.
pub fn is_complete(out: &Path, spec: &SynthSpec) -> bool {
    let Ok(text) = std::fs::read_to_string(out.join(MARKER)) else {
        return false;
    };
    toml::from_str::<SynthSpec>(&text).is_ok_and(|found| found == *spec)
}

/// Generates and writes the dataset `spec` describes into `out`, on up to `threads` threads,
/// calling `progress(done, total)` after each case. Complete cases already in `out` are kept,
/// so an interrupted run resumes; the marker file is written last.
pub fn write_dataset(
    out: &Path,
    spec: &SynthSpec,
    threads: usize,
    progress: &(dyn Fn(u32, u32) + Sync),
) -> Result<Vec<PathBuf>, SynthError> {
    let io = |source| SynthError::Io {
        path: out.to_path_buf(),
        error: source,
    };
    std::fs::create_dir_all(out).map_err(io)?;
    let next = std::sync::atomic::AtomicU32::new(0);
    let done = std::sync::atomic::AtomicU32::new(0);
    let work = || -> Result<(), SynthError> {
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if index >= spec.cases {
                return Ok(());
            }
            let id = case_id(index);
            if !out.join(&id).join(format!("{id}-seg.nii.gz")).is_file() {
                write_case(out, &generate_case(index, spec.shape, spec.seed))?;
            }
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, spec.cases);
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1)).map(|_| scope.spawn(work)).collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })?;
    let marker = toml::to_string(spec).unwrap_or_default();
    std::fs::write(out.join(MARKER), marker).map_err(io)?;
    Ok((0..spec.cases).map(|index| out.join(case_id(index))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_case_other_seed_other_case() {
        let a = generate_case(0, [48, 48, 32], 7);
        let b = generate_case(0, [48, 48, 32], 7);
        let c = generate_case(0, [48, 48, 32], 8);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.images[3], b.images[3]);
        assert_ne!(a.images[3], c.images[3]);
    }

    #[test]
    fn every_case_has_all_three_tumour_labels_inside_a_brain() {
        for index in 0..6 {
            let case = generate_case(index, [64, 64, 48], 3);
            let mut counts = [0usize; 4];
            for &label in &case.labels {
                counts[label as usize] += 1;
            }
            assert!(
                counts[1] > 0 && counts[2] > 0 && counts[3] > 0,
                "case {index}: {counts:?}"
            );
            // Tumour voxels are brain voxels: every image is non-zero there.
            for ((&label, &flair), &t1) in case.labels.iter().zip(&case.images[3]).zip(&case.images[0]) {
                if label > 0 {
                    assert!(flair > 0 && t1 > 0);
                }
            }
            // Background outside the brain is exactly 0, as in skull-stripped BraTS images.
            assert_eq!(case.images[0][[0, 0, 0]], 0);
        }
    }

    #[test]
    fn contrasts_follow_the_sequences() {
        let case = generate_case(1, [64, 64, 48], 5);
        let mean = |m: usize, label: u8| {
            let values: Vec<f64> = case
                .labels
                .iter()
                .zip(&case.images[m])
                .filter(|(l, v)| **l == label && **v > 0)
                .map(|(_, v)| f64::from(*v))
                .collect();
            values.iter().sum::<f64>() / values.len().max(1) as f64
        };
        // T1c: enhancing rim brighter than the necrotic core; FLAIR: oedema brighter than brain.
        assert!(mean(1, 3) > 1.5 * mean(1, 1));
        assert!(mean(3, 2) > 1.4 * mean(3, 0));
        // T1: the lesion core darker than the brain.
        assert!(mean(0, 1) < mean(0, 0));
    }
}
