//! BraTS cases: finding them in a dataset folder and loading one with every check.
//!
//! Two namings are recognised, in nested or flat folders, `.nii.gz` or `.nii`:
//! - BraTS 2023+ (BraTS-Africa, any challenge prefix): `BraTS-SSA-00002-000-t1n.nii.gz`,
//!   suffixes `t1n t1c t2w t2f seg`, labels 0-3;
//! - older BraTS: `BraTS2021_00000_t1ce.nii.gz`, suffixes `t1 t1ce t2 flair seg`, enhancing
//!   tumour labelled 4 (read as 3).
//!
//! A case without a `seg` file can be segmented but not trained or evaluated on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Choice;
use crate::experiment::{Layout, Modality};

use super::volume::{self, Volume, VolumeError};

/// The naming a case's files follow (never `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Naming {
    Brats2023,
    Legacy,
}

impl Naming {
    /// The file suffix of `modality` in this naming.
    pub fn suffix(self, modality: Modality) -> &'static str {
        match (self, modality) {
            (Naming::Brats2023, m) => m.name(),
            (Naming::Legacy, Modality::T1n) => "t1",
            (Naming::Legacy, Modality::T1c) => "t1ce",
            (Naming::Legacy, Modality::T2w) => "t2",
            (Naming::Legacy, Modality::T2f) => "flair",
        }
    }

    fn separator(self) -> char {
        match self {
            Naming::Brats2023 => '-',
            Naming::Legacy => '_',
        }
    }

    fn allows(self, layout: Layout) -> bool {
        matches!(
            (self, layout),
            (_, Layout::Auto) | (Naming::Brats2023, Layout::Brats2023) | (Naming::Legacy, Layout::Legacy)
        )
    }
}

/// What one file holds: a modality or the label map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Image(Modality),
    Seg,
}

/// Splits a file name into (case id, naming, part), if it follows a BraTS naming.
fn parse_name(name: &str) -> Option<(String, Naming, Part)> {
    let lower = name.to_ascii_lowercase();
    let stem_len = if lower.ends_with(".nii.gz") {
        name.len() - 7
    } else if lower.ends_with(".nii") {
        name.len() - 4
    } else {
        return None;
    };
    let stem = &name[..stem_len];
    for naming in [Naming::Brats2023, Naming::Legacy] {
        let Some((id, suffix)) = stem.rsplit_once(naming.separator()) else {
            continue;
        };
        if id.is_empty() {
            continue;
        }
        let suffix = suffix.to_ascii_lowercase();
        if suffix == "seg" {
            return Some((id.to_string(), naming, Part::Seg));
        }
        for modality in [Modality::T1n, Modality::T1c, Modality::T2w, Modality::T2f] {
            if suffix == naming.suffix(modality) {
                return Some((id.to_string(), naming, Part::Image(modality)));
            }
        }
    }
    None
}

/// The files of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFiles {
    pub id: String,
    pub naming: Naming,
    pub images: BTreeMap<Modality, PathBuf>,
    pub seg: Option<PathBuf>,
}

impl CaseFiles {
    pub fn image(&self, modality: Modality) -> Option<&Path> {
        self.images.get(&modality).map(PathBuf::as_path)
    }

    /// The modalities of `wanted` this case has no file for.
    pub fn missing(&self, wanted: &[Modality]) -> Vec<Modality> {
        wanted.iter().copied().filter(|m| self.image(*m).is_none()).collect()
    }
}

/// The cases of a dataset folder, and the files that could not be assigned to one.
#[derive(Debug, Default)]
pub struct Discovery {
    pub cases: Vec<CaseFiles>,
    /// Problems with the folder's files, one line each, naming the case or file.
    pub problems: Vec<String>,
}

/// Finds every case under `root` (up to 4 folders deep; hidden folders are skipped).
pub fn discover(root: &Path, layout: Layout) -> std::io::Result<Discovery> {
    let files = files_under(root)?;
    let mut cases: BTreeMap<String, CaseFiles> = BTreeMap::new();
    let mut problems = Vec::new();
    for path in files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((id, naming, part)) = parse_name(name) else {
            continue;
        };
        if !naming.allows(layout) {
            continue;
        }
        let case = cases.entry(id.clone()).or_insert_with(|| CaseFiles {
            id: id.clone(),
            naming,
            images: BTreeMap::new(),
            seg: None,
        });
        if case.naming != naming {
            problems.push(format!(
                "{id}: mixes BraTS 2023 and older file names ({})",
                path.display()
            ));
            continue;
        }
        let slot = match part {
            Part::Seg => &mut case.seg,
            Part::Image(key) => {
                if let Some(existing) = case.images.get(&key) {
                    problems.push(format!(
                        "{id}: two files for one modality: {} and {}",
                        existing.display(),
                        path.display()
                    ));
                    continue;
                }
                case.images.insert(key, path);
                continue;
            }
        };
        if let Some(existing) = slot {
            problems.push(format!(
                "{id}: two label files: {} and {}",
                existing.display(),
                path.display()
            ));
            continue;
        }
        *slot = Some(path);
    }
    Ok(Discovery {
        cases: cases.into_values().collect(),
        problems,
    })
}

/// Every file under `root`, up to 4 folders deep, hidden files and folders skipped, sorted.
pub fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_files(root, 0, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        // Follow links, as datasets are often linked into place.
        let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
        if is_dir {
            if depth < 4 {
                collect_files(&path, depth + 1, out)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// One loaded case: images in the requested modality order, and labels when it has them.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub modalities: Vec<Modality>,
    pub images: Vec<Volume<f32>>,
    /// Labels 0-3 (older BraTS's 4 already mapped to 3).
    pub labels: Option<Volume<u8>>,
}

impl Case {
    pub fn shape(&self) -> [usize; 3] {
        self.images.first().map_or([0; 3], |v| v.shape)
    }

    pub fn spacing(&self) -> [f64; 3] {
        self.images.first().map_or([1.0; 3], |v| v.spacing)
    }
}

/// Why a case cannot be used; names the case and the file.
#[derive(Debug, thiserror::Error)]
#[error("{case}: {}: {kind}", file_name(.file))]
pub struct CaseError {
    pub case: String,
    pub file: PathBuf,
    pub kind: CaseErrorKind,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum CaseErrorKind {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("missing: the case has no {0} file")]
    Missing(Modality),
    #[error("is {found} voxels but {reference} is {expected}")]
    Shape {
        found: Dims,
        expected: Dims,
        reference: String,
    },
    #[error("has a different voxel-to-world affine than {reference} (they must overlay exactly)")]
    Affine { reference: String },
    #[error("is empty: every voxel is {value}")]
    Constant { value: f32 },
    #[error("has labels outside {allowed}: {found}")]
    Labels { allowed: &'static str, found: String },
}

/// A volume size, shown as `240x240x155`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims(pub [u32; 3]);

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.0[0], self.0[1], self.0[2])
    }
}

fn dims(shape: [usize; 3]) -> Dims {
    Dims(shape.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
}

/// Affines of one case may differ by this much (mm) from float rounding in writers.
const AFFINE_TOLERANCE: f64 = 1e-3;

/// Loads `modalities` (in that order) and the labels of a case, checking that every file
/// reads, no modality is constant, all share shape and affine, and labels are valid.
pub fn load_case(files: &CaseFiles, modalities: &[Modality]) -> Result<Case, CaseError> {
    // Decode the files in parallel (inflate dominates), then check them in order.
    let (images, labels) = std::thread::scope(|scope| {
        let images: Vec<_> = modalities
            .iter()
            .map(|&m| scope.spawn(move || files.image(m).map(|path| (path, volume::read_volume(path)))))
            .collect();
        let labels = files
            .seg
            .as_deref()
            .map(|path| scope.spawn(move || (path, read_labels(path, files.naming))));
        (images.into_iter().map(join).collect::<Vec<_>>(), labels.map(join))
    });
    let mut reader = CaseReader::new(files);
    let mut checked = Vec::with_capacity(modalities.len());
    for (&modality, read) in modalities.iter().zip(images) {
        let Some((path, image)) = read else {
            return Err(reader.missing(modality));
        };
        let image = image.map_err(|e| reader.error(path, e.into()))?;
        checked.push(reader.check_image(path, image)?);
    }
    let labels = match labels {
        None => None,
        Some((path, read)) => Some(reader.check_labels(path, read)?),
    };
    Ok(Case {
        id: files.id.clone(),
        modalities: modalities.to_vec(),
        images: checked,
        labels,
    })
}

/// The result of a scoped thread, passing its panic on.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What `segtop data scan` reports of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSummary {
    pub id: String,
    pub shape: [usize; 3],
    pub spacing: [f64; 3],
    /// On-disk datatype of the first modality.
    pub datatype: &'static str,
    /// Voxels of each label 0-3, when the case has labels.
    pub label_voxels: Option<[usize; 4]>,
}

/// Checks a case like [`load_case`], holding one volume in memory at a time.
pub fn scan_case(files: &CaseFiles, modalities: &[Modality]) -> Result<CaseSummary, CaseError> {
    let mut reader = CaseReader::new(files);
    let mut datatype = "";
    let mut geometry = ([0; 3], [1.0; 3]);
    for (i, &modality) in modalities.iter().enumerate() {
        let image = reader.image(modality)?;
        if i == 0 {
            geometry = (image.shape, image.spacing);
            if let Some(path) = files.image(modality) {
                datatype = volume::read_header(path).map(|h| h.datatype()).unwrap_or("?");
            }
        }
    }
    let label_voxels = reader.labels()?.map(|labels| label_counts(&labels));
    Ok(CaseSummary {
        id: files.id.clone(),
        shape: geometry.0,
        spacing: geometry.1,
        datatype,
        label_voxels,
    })
}

/// Reads the files of one case one at a time, checking each against the first.
struct CaseReader<'a> {
    files: &'a CaseFiles,
    reference: Option<Reference>,
}

impl<'a> CaseReader<'a> {
    fn new(files: &'a CaseFiles) -> Self {
        CaseReader { files, reference: None }
    }

    fn error(&self, file: &Path, kind: CaseErrorKind) -> CaseError {
        CaseError {
            case: self.files.id.clone(),
            file: file.to_path_buf(),
            kind,
        }
    }

    fn missing(&self, modality: Modality) -> CaseError {
        let files = self.files;
        let name = format!(
            "{}{}{}.nii.gz",
            files.id,
            files.naming.separator(),
            files.naming.suffix(modality)
        );
        let expected = files
            .images
            .values()
            .next()
            .or(files.seg.as_ref())
            .map_or_else(|| PathBuf::from(&name), |p| p.with_file_name(&name));
        self.error(&expected, CaseErrorKind::Missing(modality))
    }

    /// Reads one modality and checks it.
    fn image(&mut self, modality: Modality) -> Result<Volume<f32>, CaseError> {
        let path = self.files.image(modality).ok_or_else(|| self.missing(modality))?;
        let image = volume::read_volume(path).map_err(|e| self.error(path, e.into()))?;
        self.check_image(path, image)
    }

    /// Checks a modality against the first one read, and that it is not constant.
    fn check_image(&mut self, path: &Path, image: Volume<f32>) -> Result<Volume<f32>, CaseError> {
        check_geometry(self.reference.as_ref(), image.shape, &image.affine).map_err(|kind| self.error(path, kind))?;
        if let Some(&first) = image.data.first()
            && image.data.iter().all(|&v| v == first)
        {
            return Err(self.error(path, CaseErrorKind::Constant { value: first }));
        }
        if self.reference.is_none() {
            self.reference = Some(Reference {
                file: file_name(path),
                shape: image.shape,
                affine: image.affine,
            });
        }
        Ok(image)
    }

    fn labels(&mut self) -> Result<Option<Volume<u8>>, CaseError> {
        let Some(path) = &self.files.seg else {
            return Ok(None);
        };
        let read = read_labels(path, self.files.naming);
        self.check_labels(path, read).map(Some)
    }

    fn check_labels(&self, path: &Path, read: Result<Volume<u8>, CaseErrorKind>) -> Result<Volume<u8>, CaseError> {
        let labels = read.map_err(|kind| self.error(path, kind))?;
        check_geometry(self.reference.as_ref(), labels.shape, &labels.affine).map_err(|kind| self.error(path, kind))?;
        Ok(labels)
    }
}

/// The first file of a case, which the others must match.
struct Reference {
    file: String,
    shape: [usize; 3],
    affine: [[f64; 4]; 3],
}

fn check_geometry(
    reference: Option<&Reference>,
    shape: [usize; 3],
    affine: &[[f64; 4]; 3],
) -> Result<(), CaseErrorKind> {
    let Some(reference) = reference else {
        return Ok(());
    };
    if reference.shape != shape {
        return Err(CaseErrorKind::Shape {
            found: dims(shape),
            expected: dims(reference.shape),
            reference: reference.file.clone(),
        });
    }
    if !volume::same_affine(&reference.affine, affine, AFFINE_TOLERANCE) {
        return Err(CaseErrorKind::Affine {
            reference: reference.file.clone(),
        });
    }
    Ok(())
}

/// Reads a label map as 0-3, refusing any other value (and 3 in older BraTS, where enhancing
/// tumour is 4, which is read as 3).
fn read_labels(path: &Path, naming: Naming) -> Result<Volume<u8>, CaseErrorKind> {
    const INVALID: u8 = u8::MAX;
    let (allowed, table): (&'static str, [u8; 5]) = match naming {
        Naming::Brats2023 => ("{0, 1, 2, 3}", [0, 1, 2, 3, INVALID]),
        Naming::Legacy => ("{0, 1, 2, 4}", [0, 1, 2, INVALID, 3]),
    };
    let mut bad: BTreeMap<String, usize> = BTreeMap::new();
    let labels = volume::read_volume_map(path, |value| {
        let label = if (0.0..=4.0).contains(&value) && value.fract() == 0.0 {
            table[value as usize]
        } else {
            INVALID
        };
        if label == INVALID {
            *bad.entry(value.to_string()).or_default() += 1;
        }
        label
    })?;
    if !bad.is_empty() {
        let found: Vec<String> = bad.iter().take(8).map(|(v, n)| format!("{v} ({n} voxels)")).collect();
        return Err(CaseErrorKind::Labels {
            allowed,
            found: found.join(", "),
        });
    }
    Ok(labels)
}

/// Label values present in a volume, for summaries.
pub fn label_counts(labels: &Volume<u8>) -> [usize; 4] {
    let mut counts = [0usize; 4];
    for &l in &labels.data {
        counts[usize::from(l.min(3))] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namings_are_recognised() {
        let (id, naming, part) = parse_name("BraTS-SSA-00002-000-t2f.nii.gz").expect("2023 naming");
        assert_eq!(
            (id.as_str(), naming, part),
            ("BraTS-SSA-00002-000", Naming::Brats2023, Part::Image(Modality::T2f))
        );
        let (id, naming, part) = parse_name("BraTS2021_00000_t1ce.nii").expect("legacy naming");
        assert_eq!(
            (id.as_str(), naming, part),
            ("BraTS2021_00000", Naming::Legacy, Part::Image(Modality::T1c))
        );
        let (id, naming, part) = parse_name("BraTS20_Training_001_seg.nii.gz").expect("legacy seg");
        assert_eq!(
            (id.as_str(), naming, part),
            ("BraTS20_Training_001", Naming::Legacy, Part::Seg)
        );
        assert!(parse_name("notes.txt").is_none());
        assert!(parse_name("BraTS-SSA-00002-000-dwi.nii.gz").is_none());
    }
}
