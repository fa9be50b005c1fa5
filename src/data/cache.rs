//! The preprocessed-case cache: one file per case, so that epochs never decode gzip again,
//! memory-mapped so that RAM stays bounded however many cases a dataset has.
//!
//! ```text
//! "SEGTOPC1"                 8 bytes
//! header length              u32, little-endian
//! header                     JSON (CacheHeader)
//! padding                    to a multiple of 64 bytes
//! channels                   float16, one volume per modality, x fastest
//! labels                     uint8, x fastest (when the case has labels)
//! ```
//!
//! The header records the preprocessing settings and the size and modification time of every
//! source file; a cache file whose record differs is rebuilt. Files are written under a
//! temporary name and renamed, so a reader never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use half::f16;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::preprocess::Prepared;

#[cfg(not(target_endian = "little"))]
compile_error!("the case cache stores little-endian float16 and is read in place");

const MAGIC: &[u8; 8] = b"SEGTOPC1";
const ALIGN: usize = 64;

/// A source file as it was when its case was cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub modified: u128,
}

impl SourceStamp {
    pub fn of(path: &Path) -> std::io::Result<SourceStamp> {
        let meta = std::fs::metadata(path)?;
        let modified = meta.modified()?.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(SourceStamp {
            path: path.to_path_buf(),
            size: meta.len(),
            modified,
        })
    }
}

/// What a cache file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheHeader {
    pub id: String,
    pub shape: [usize; 3],
    pub channels: usize,
    pub has_labels: bool,
    pub origin: [i64; 3],
    pub original_shape: [usize; 3],
    pub spacing: [f64; 3],
    pub affine: [[f64; 4]; 3],
    pub tumour_fraction: f64,
    /// The preprocessing settings, as text; see [`settings_text`].
    pub settings: String,
    pub sources: Vec<SourceStamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: not a segtop cache file ({why}); delete it to rebuild", path.display())]
    Corrupt { path: PathBuf, why: String },
}

/// A cached case, mapped into memory: reading a patch touches only the pages it needs.
pub struct CachedCase {
    pub header: CacheHeader,
    pub path: PathBuf,
    map: Mmap,
    data_start: usize,
}

impl CachedCase {
    pub fn open(path: &Path) -> Result<CachedCase, CacheError> {
        let io = |source| CacheError::Io {
            path: path.to_path_buf(),
            error: source,
        };
        let corrupt = |why: &str| CacheError::Corrupt {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: cache files are only ever replaced by rename, never written in place, so the
        // mapped bytes do not change under us (unless someone edits them by hand, which at
        // worst gives wrong numbers, never unsafety in this read-only use of u8 and f16).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        if map.len() < 12 || &map[..8] != MAGIC {
            return Err(corrupt("wrong magic"));
        }
        let header_len = u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize;
        let header_end = 12usize
            .checked_add(header_len)
            .filter(|&end| end <= map.len())
            .ok_or_else(|| corrupt("header runs past the end"))?;
        let header: CacheHeader =
            serde_json::from_slice(&map[12..header_end]).map_err(|e| corrupt(&format!("header: {e}")))?;
        let data_start = header_end.div_ceil(ALIGN) * ALIGN;
        let voxels: usize = header.shape.iter().product();
        let expected = data_start + voxels * header.channels * 2 + if header.has_labels { voxels } else { 0 };
        if map.len() != expected {
            return Err(corrupt(&format!("{} bytes, expected {expected}", map.len())));
        }
        Ok(CachedCase {
            header,
            path: path.to_path_buf(),
            map,
            data_start,
        })
    }

    pub fn voxels(&self) -> usize {
        self.header.shape.iter().product()
    }

    /// Channel `c` (in the configured modality order), x fastest.
    pub fn channel(&self, c: usize) -> &[f16] {
        let n = self.voxels();
        let start = self.data_start + c * n * 2;
        bytemuck::cast_slice(&self.map[start..start + n * 2])
    }

    pub fn labels(&self) -> Option<&[u8]> {
        if !self.header.has_labels {
            return None;
        }
        let start = self.data_start + self.header.channels * self.voxels() * 2;
        Some(&self.map[start..start + self.voxels()])
    }

    /// Whether this file was made from `sources` with `settings`.
    pub fn is_fresh(&self, settings: &str, sources: &[SourceStamp]) -> bool {
        self.header.settings == settings && self.header.sources == sources
    }
}

/// Writes `case` to `path` atomically (a temporary file renamed into place).
pub fn write(path: &Path, case: &Prepared, settings: &str, sources: Vec<SourceStamp>) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        error: source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let header = CacheHeader {
        id: case.id.clone(),
        shape: case.shape,
        channels: case.channels.len(),
        has_labels: case.labels.is_some(),
        origin: case.origin,
        original_shape: case.original_shape,
        spacing: case.spacing,
        affine: case.affine,
        tumour_fraction: case.tumour_fraction(),
        settings: settings.to_string(),
        sources,
    };
    let json = serde_json::to_vec(&header).map_err(|e| io(std::io::Error::other(e)))?;
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let file = std::fs::File::create(&temporary).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let header_end = 12 + json.len();
    let padding = header_end.div_ceil(ALIGN) * ALIGN - header_end;
    let result = (|| -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.write_all(&[0u8; ALIGN][..padding])?;
        let mut buffer: Vec<f16> = Vec::new();
        for channel in &case.channels {
            buffer.clear();
            buffer.extend(channel.iter().map(|&v| f16::from_f32(v)));
            out.write_all(bytemuck::cast_slice(&buffer))?;
        }
        if let Some(labels) = &case.labels {
            out.write_all(labels)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(error));
    }
    std::fs::rename(&temporary, path).map_err(io)
}

/// A short, stable hash (FNV-1a) for naming cache files.
pub fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared() -> Prepared {
        Prepared {
            id: "case-1".to_string(),
            shape: [3, 2, 2],
            channels: vec![(0..12).map(|v| v as f32 * 0.5).collect(), vec![-1.0; 12]],
            labels: Some(vec![0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 3]),
            origin: [5, 6, -1],
            original_shape: [10, 10, 10],
            spacing: [1.0, 1.0, 2.0],
            affine: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]],
        }
    }

    #[test]
    fn a_written_case_reads_back_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/case-1.segc");
        write(&path, &prepared(), "zscore", vec![]).expect("written");
        let cached = CachedCase::open(&path).expect("opens");
        assert_eq!(cached.header.shape, [3, 2, 2]);
        assert_eq!(cached.header.origin, [5, 6, -1]);
        assert_eq!(cached.channel(0)[5].to_f32(), 2.5);
        assert_eq!(cached.channel(1)[11].to_f32(), -1.0);
        assert_eq!(cached.labels(), Some(&[0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 3][..]));
        assert!((cached.header.tumour_fraction - 4.0 / 12.0).abs() < 1e-12);
        assert!(cached.is_fresh("zscore", &[]));
        assert!(!cached.is_fresh("slice-minmax", &[]));
        // Nothing temporary is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).expect("listed").count(), 1);
    }

    #[test]
    fn a_damaged_file_is_refused_not_trusted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("case-1.segc");
        write(&path, &prepared(), "s", vec![]).expect("written");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("truncate");
        assert!(matches!(CachedCase::open(&path), Err(CacheError::Corrupt { .. })));
        std::fs::write(&path, b"garbage").expect("write");
        assert!(matches!(CachedCase::open(&path), Err(CacheError::Corrupt { .. })));
    }
}
