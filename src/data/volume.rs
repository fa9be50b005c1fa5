//! Reading one NIfTI-1 volume (`.nii` or `.nii.gz`), checked before it is trusted.
//!
//! The header is parsed by the `nifti` crate; the checks of REFERENCE section 4 happen here,
//! before any voxel memory is allocated: magic and header size, 3D only (a 4th dimension of
//! 1 is accepted), positive dims and spacings, a known datatype whose bitpix agrees, a size
//! that fits in memory, enough bytes after `vox_offset`. Voxels are then converted to the
//! requested type with `scl_slope`/`scl_inter` applied. Every failure is a [`VolumeError`]
//! that says what was found.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use nifti::{Endianness, NiftiHeader};

/// Largest volume segtop reads: 512^3 voxels (a BraTS volume has 8.9 million).
pub const MAX_VOXELS: usize = 512 * 512 * 512;

/// A 3D volume in NIfTI order (x fastest), with its voxel-to-world geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    pub shape: [usize; 3],
    /// Voxel size in mm.
    pub spacing: [f64; 3],
    /// Voxel-to-world matrix (rows x, y, z; the last row is 0 0 0 1).
    pub affine: [[f64; 4]; 3],
    pub data: Vec<T>,
}

impl<T> Volume<T> {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Index of voxel (x, y, z) in `data`.
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        x + self.shape[0] * (y + self.shape[1] * z)
    }
}

/// What was wrong with a NIfTI file.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    #[error("cannot write: {0}")]
    Write(String),
    #[error("corrupt or truncated gzip data: {0}")]
    Gzip(std::io::Error),
    #[error("not a NIfTI-1 file ({0})")]
    NotNifti(String),
    #[error("is {dims}; segtop reads one 3D volume per file")]
    NotThreeD { dims: String },
    #[error("has dims {dims}: every dimension must be at least 1")]
    ZeroDim { dims: String },
    #[error("has dims {dims}: {voxels} voxels is more than segtop reads ({MAX_VOXELS})")]
    TooLarge { dims: String, voxels: u64 },
    #[error("has an unsupported datatype code {0}")]
    Datatype(i16),
    #[error("has datatype {datatype} but bitpix {bitpix} (expected {expected})")]
    Bitpix {
        datatype: &'static str,
        bitpix: i16,
        expected: i16,
    },
    #[error("has voxel spacing {0}: every spacing must be a positive number")]
    Spacing(String),
    #[error("has vox_offset {0}: must be at least 352 for a single-file NIfTI")]
    VoxOffset(f32),
    #[error("ends after {found} bytes of voxel data; its header promises {expected}")]
    Truncated { found: usize, expected: usize },
    #[error("has {count} NaN or infinite voxels (first at voxel {first:?})")]
    NonFinite { count: usize, first: [usize; 3] },
}

/// The datatypes of NIfTI-1 that segtop reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DataType {
    fn from_code(code: i16) -> Option<DataType> {
        Some(match code {
            2 => DataType::U8,
            4 => DataType::I16,
            8 => DataType::I32,
            16 => DataType::F32,
            64 => DataType::F64,
            256 => DataType::I8,
            512 => DataType::U16,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A checked header: what the voxel bytes mean and where they start.
#[derive(Debug, Clone)]
pub struct Header {
    pub shape: [usize; 3],
    pub spacing: [f64; 3],
    pub affine: [[f64; 4]; 3],
    datatype: DataType,
    endianness: Endianness,
    vox_offset: usize,
    slope: f64,
    inter: f64,
}

impl Header {
    /// The on-disk datatype, e.g. `int16`.
    pub fn datatype(&self) -> &'static str {
        self.datatype.name()
    }

    fn voxel_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.datatype.bytes()
    }

    fn check(raw: &NiftiHeader) -> Result<Header, VolumeError> {
        if raw.sizeof_hdr != 348 || (&raw.magic != b"n+1\0" && &raw.magic != b"ni1\0") {
            return Err(VolumeError::NotNifti(format!(
                "header size {}, magic '{}'",
                raw.sizeof_hdr,
                raw.magic.escape_ascii()
            )));
        }
        let rank = usize::from(raw.dim[0]);
        let dims = &raw.dim[1..=rank.clamp(1, 7)];
        let shown = dims.iter().map(u16::to_string).collect::<Vec<_>>().join("x");
        let extra_dims_are_one = dims.iter().skip(3).all(|&d| d == 1);
        if !(3..=7).contains(&rank) || !extra_dims_are_one {
            return Err(VolumeError::NotThreeD {
                dims: format!("{rank}D ({shown})"),
            });
        }
        if dims.contains(&0) {
            return Err(VolumeError::ZeroDim { dims: shown });
        }
        let voxels = dims
            .iter()
            .fold(1u64, |product, &d| product.saturating_mul(u64::from(d)));
        if voxels > MAX_VOXELS as u64 {
            return Err(VolumeError::TooLarge { dims: shown, voxels });
        }
        let datatype = DataType::from_code(raw.datatype).ok_or(VolumeError::Datatype(raw.datatype))?;
        let expected = (datatype.bytes() * 8) as i16;
        if raw.bitpix != expected {
            return Err(VolumeError::Bitpix {
                datatype: datatype.name(),
                bitpix: raw.bitpix,
                expected,
            });
        }
        let spacing = [raw.pixdim[1], raw.pixdim[2], raw.pixdim[3]].map(f64::from);
        if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(VolumeError::Spacing(format!(
                "{} x {} x {}",
                spacing[0], spacing[1], spacing[2]
            )));
        }
        if &raw.magic == b"n+1\0" && !(raw.vox_offset >= 352.0 && raw.vox_offset.is_finite()) {
            return Err(VolumeError::VoxOffset(raw.vox_offset));
        }
        let (slope, inter) = match (f64::from(raw.scl_slope), f64::from(raw.scl_inter)) {
            (slope, inter) if slope != 0.0 && slope.is_finite() && inter.is_finite() => (slope, inter),
            _ => (1.0, 0.0),
        };
        Ok(Header {
            shape: [usize::from(dims[0]), usize::from(dims[1]), usize::from(dims[2])],
            spacing,
            affine: affine(raw, spacing),
            datatype,
            endianness: raw.endianness,
            vox_offset: raw.vox_offset as usize,
            slope,
            inter,
        })
    }
}

/// The voxel-to-world matrix as NIfTI defines it: sform when set, else qform, else spacing.
fn affine(raw: &NiftiHeader, spacing: [f64; 3]) -> [[f64; 4]; 3] {
    if raw.sform_code > 0 {
        return [raw.srow_x, raw.srow_y, raw.srow_z].map(|row| row.map(f64::from));
    }
    if raw.qform_code <= 0 {
        return [
            [spacing[0], 0.0, 0.0, 0.0],
            [0.0, spacing[1], 0.0, 0.0],
            [0.0, 0.0, spacing[2], 0.0],
        ];
    }
    let [b, c, d] = [raw.quatern_b, raw.quatern_c, raw.quatern_d].map(f64::from);
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let qfac = if raw.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let rotation = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let offset = [raw.quatern_x, raw.quatern_y, raw.quatern_z].map(f64::from);
    let scale = [spacing[0], spacing[1], spacing[2] * qfac];
    std::array::from_fn(|row| {
        [
            rotation[row][0] * scale[0],
            rotation[row][1] * scale[1],
            rotation[row][2] * scale[2],
            offset[row],
        ]
    })
}

/// Writes a label map (x fastest, `shape`) as a uint8 NIfTI with the geometry of the
/// `reference` image (its qform, sform and spacing), so viewers overlay it on that image.
/// Written under a temporary name and renamed, so readers never see half a file.
pub fn write_labels_like(reference: &Path, out: &Path, shape: [usize; 3], labels: &[u8]) -> Result<(), VolumeError> {
    use ndarray::ShapeBuilder;
    let mut header = NiftiHeader::from_file(reference).map_err(|e| VolumeError::NotNifti(e.to_string()))?;
    header.scl_slope = 1.0;
    header.scl_inter = 0.0;
    header.descrip = b"segtop segmentation".to_vec();
    let array = ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]).f(), labels.to_vec())
        .map_err(|e| VolumeError::Io(std::io::Error::other(e)))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = out.with_file_name(format!(
        ".{}.tmp-{}{}",
        name.trim_end_matches(".nii.gz").trim_end_matches(".nii"),
        std::process::id(),
        if name.ends_with(".gz") { ".nii.gz" } else { ".nii" }
    ));
    let written = nifti::writer::WriterOptions::new(&temporary)
        .reference_header(&header)
        .write_nifti(&array);
    if let Err(error) = written {
        // Nothing half-written is left behind (a full disk stays as full as it was).
        let _ = std::fs::remove_file(&temporary);
        return Err(VolumeError::Write(match error {
            nifti::NiftiError::Io(io) => io.to_string(),
            other => other.to_string(),
        }));
    }
    std::fs::rename(&temporary, out).map_err(|e| VolumeError::Write(e.to_string()))
}

/// Whether two affines map voxels to the same places, to within `tolerance` mm.
pub fn same_affine(a: &[[f64; 4]; 3], b: &[[f64; 4]; 3], tolerance: f64) -> bool {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .all(|(x, y)| (x - y).abs() <= tolerance)
}

/// The voxel bytes of a file, decompressed on the fly when it is gzip.
enum Source<R: BufRead> {
    Plain(R),
    Gzip(Box<MultiGzDecoder<R>>),
}

impl<R: BufRead> Source<R> {
    /// Reads what it can into `buf`; errors say whether the file or its compression failed.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, VolumeError> {
        match self {
            Source::Plain(reader) => reader.read(buf).map_err(VolumeError::Io),
            Source::Gzip(reader) => reader.read(buf).map_err(VolumeError::Gzip),
        }
    }

    /// Fills `buf` as far as the data goes; returns how much it filled.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, VolumeError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_some(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(VolumeError::Io(e) | VolumeError::Gzip(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// Reads and checks the header of a NIfTI stream (gzip recognised by content, whatever the
/// name), leaving it at the first voxel byte. Nothing the size of the volume is allocated
/// before the header has passed its checks.
fn open<R: BufRead>(mut reader: R) -> Result<(Header, Source<R>), VolumeError> {
    let gzip = reader.fill_buf().map_err(VolumeError::Io)?.starts_with(&[0x1f, 0x8b]);
    let mut source = if gzip {
        Source::Gzip(Box::new(MultiGzDecoder::new(reader)))
    } else {
        Source::Plain(reader)
    };
    let mut head = [0u8; 352];
    let got = source.read_full(&mut head)?;
    let header = parse_header(&head[..got])?;
    let mut skip = header.vox_offset.saturating_sub(352);
    let mut scratch = [0u8; 4096];
    while skip > 0 {
        let n = source.read_full(&mut scratch[..skip.min(4096)])?;
        if n == 0 {
            break;
        }
        skip -= n;
    }
    Ok((header, source))
}

fn open_file(path: &Path) -> Result<BufReader<File>, VolumeError> {
    File::open(path)
        .map(|file| BufReader::with_capacity(1 << 16, file))
        .map_err(VolumeError::Io)
}

/// Reads and checks only the header.
pub fn read_header(path: &Path) -> Result<Header, VolumeError> {
    open(open_file(path)?).map(|(header, _)| header)
}

fn parse_header(bytes: &[u8]) -> Result<Header, VolumeError> {
    if bytes.len() < 348 {
        return Err(VolumeError::NotNifti(format!(
            "only {} bytes, a header needs 348",
            bytes.len()
        )));
    }
    let size_le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let size_be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if size_le == 540 || size_be == 540 {
        return Err(VolumeError::NotNifti(
            "NIfTI-2, which segtop does not read; convert it to NIfTI-1".to_string(),
        ));
    }
    let magic = &bytes[344..348];
    if magic == b"ni1\0" {
        return Err(VolumeError::NotNifti(
            "the header of a .hdr/.img pair, which segtop does not read; convert it to .nii.gz".to_string(),
        ));
    }
    if (size_le != 348 && size_be != 348) || magic != b"n+1\0" {
        let size = if size_be == 348 { size_be } else { size_le };
        return Err(VolumeError::NotNifti(format!(
            "header size {size}, magic '{}'",
            magic.escape_ascii()
        )));
    }
    let raw = NiftiHeader::from_reader(&bytes[..348]).map_err(|error| VolumeError::NotNifti(error.to_string()))?;
    Header::check(&raw)
}

/// Reads the volume at `path` as float32, scaling applied. NaN or infinite voxels are an error.
pub fn read_volume(path: &Path) -> Result<Volume<f32>, VolumeError> {
    read_volume_map(path, |v| v)
}

/// Reads the volume at `path`, passing every (scaled, finite) voxel value through `map`.
/// Decompression and conversion run together in small chunks, so the raw bytes are never
/// held whole.
pub fn read_volume_map<T>(path: &Path, map: impl FnMut(f32) -> T) -> Result<Volume<T>, VolumeError> {
    read_stream(open_file(path)?, map)
}

/// Reads a NIfTI volume (`.nii` or `.nii.gz` bytes) from memory, as [`read_volume`] does.
pub fn read_bytes(bytes: &[u8]) -> Result<Volume<f32>, VolumeError> {
    read_stream(bytes, |v| v)
}

fn read_stream<R: BufRead, T>(reader: R, mut map: impl FnMut(f32) -> T) -> Result<Volume<T>, VolumeError> {
    let (header, mut source) = open(reader)?;
    let voxel_bytes = header.datatype.bytes();
    let expected = header.voxel_bytes();
    let voxels = expected / voxel_bytes;
    let mut data = Vec::with_capacity(voxels);
    let mut buf = vec![0u8; 1 << 18];
    let mut floats = Vec::with_capacity(buf.len());
    let mut total = 0;
    let mut non_finite = 0;
    let mut first_bad = 0;
    // Integers times a finite slope stay finite: only floats need the check.
    let may_be_non_finite = matches!(header.datatype, DataType::F32 | DataType::F64)
        || (header.slope * 2f64.powi(64)).abs() >= f64::from(f32::MAX);
    while total < expected {
        let want = (expected - total).min(buf.len());
        let got = source.read_full(&mut buf[..want])?;
        if got == 0 {
            break;
        }
        // Chunks hold whole voxels: `want` is a multiple of the voxel size unless data ends.
        decode_chunk(&buf[..got - got % voxel_bytes], &header, &mut floats);
        if may_be_non_finite {
            for (i, v) in floats.iter().enumerate() {
                if !v.is_finite() {
                    if non_finite == 0 {
                        first_bad = data.len() + i;
                    }
                    non_finite += 1;
                }
            }
        }
        data.extend(floats.iter().map(|&v| map(v)));
        total += got;
        if got < want {
            break;
        }
    }
    if total < expected {
        return Err(VolumeError::Truncated { found: total, expected });
    }
    if non_finite > 0 {
        let [nx, ny, _] = header.shape;
        return Err(VolumeError::NonFinite {
            count: non_finite,
            first: [first_bad % nx, (first_bad / nx) % ny, first_bad / (nx * ny)],
        });
    }
    Ok(Volume {
        shape: header.shape,
        spacing: header.spacing,
        affine: header.affine,
        data,
    })
}

/// Converts whole voxels of `raw` to scaled float32 in `floats` (cleared first), in simple
/// loops the compiler vectorises.
fn decode_chunk(raw: &[u8], header: &Header, floats: &mut Vec<f32>) {
    floats.clear();
    let le = header.endianness == Endianness::Little;
    macro_rules! each {
        ($ty:ty) => {{
            const N: usize = std::mem::size_of::<$ty>();
            floats.extend(raw.chunks_exact(N).map(|chunk| {
                let mut b = [0u8; N];
                b.copy_from_slice(chunk);
                (if le {
                    <$ty>::from_le_bytes(b)
                } else {
                    <$ty>::from_be_bytes(b)
                }) as f32
            }));
        }};
    }
    match header.datatype {
        DataType::U8 => floats.extend(raw.iter().map(|&v| f32::from(v))),
        DataType::I8 => floats.extend(raw.iter().map(|&v| f32::from(v as i8))),
        DataType::I16 => each!(i16),
        DataType::U16 => each!(u16),
        DataType::I32 => each!(i32),
        DataType::U32 => each!(u32),
        DataType::I64 => each!(i64),
        DataType::U64 => each!(u64),
        DataType::F32 => each!(f32),
        DataType::F64 => {
            // Scale before narrowing, so large slopes keep float64's precision.
            let (slope, inter) = (header.slope, header.inter);
            floats.extend(raw.chunks_exact(8).map(|chunk| {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                let v = if le {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                (v * slope + inter) as f32
            }));
            return;
        }
    }
    if header.slope != 1.0 || header.inter != 0.0 {
        let (slope, inter) = (header.slope as f32, header.inter as f32);
        floats.iter_mut().for_each(|v| *v = *v * slope + inter);
    }
}
