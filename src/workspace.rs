//! The workspace: the directory segtop works in, holding `experiments/`, `runs/` and
//! `themes/`. Relative paths in experiment files resolve against it.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    pub fn new(root: impl Into<PathBuf>) -> Workspace {
        Workspace { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn experiments_dir(&self) -> PathBuf {
        self.root.join("experiments")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn themes_dir(&self) -> PathBuf {
        self.root.join("themes")
    }

    /// Every `experiments/*.toml`, sorted by name; none when the folder is missing.
    pub fn experiment_files(&self) -> io::Result<Vec<PathBuf>> {
        toml_files(&self.experiments_dir())
    }

    /// The file of the theme called `name` (`themes/<name>.toml`).
    pub fn theme_file(&self, name: &str) -> PathBuf {
        self.themes_dir().join(format!("{name}.toml"))
    }
}

fn toml_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    // By name, so `quick-demo` comes before `quick-demo-2` (`-` sorts before `.toml`'s dot).
    files.sort_by(|a, b| a.file_stem().cmp(&b.file_stem()).then_with(|| a.cmp(b)));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_files_are_listed_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let workspace = Workspace::new(dir.path());
        std::fs::create_dir_all(workspace.experiments_dir()).expect("experiments");
        for name in ["quick-demo-2.toml", "quick-demo.toml", "lite.toml", "notes.txt"] {
            std::fs::write(workspace.experiments_dir().join(name), "").expect("write");
        }
        let names: Vec<String> = workspace
            .experiment_files()
            .expect("listed")
            .iter()
            .map(|p| p.file_name().expect("a name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["lite.toml", "quick-demo.toml", "quick-demo-2.toml"]);
    }
}
