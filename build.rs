//! Bakes libtorch's lib directory into the rpath of every binary, so `segtop-train` runs
//! without LD_LIBRARY_PATH, and records the libtorch version it was built against.
//! LIBTORCH comes from the environment or from `.cargo/config.toml` (set up by
//! `scripts/setup-libtorch.sh`).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAINER").is_none() {
        return;
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    // Resolve the `.libtorch` link so the rpath names the real directory.
    let dir = Path::new(&libtorch);
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.join("lib").display());
    let version_file = dir.join("build-version");
    println!("cargo:rerun-if-changed={}", version_file.display());
    let version = std::fs::read_to_string(&version_file).unwrap_or_default();
    println!("cargo:rustc-env=SEGTOP_LIBTORCH_VERSION={}", version.trim());
}
