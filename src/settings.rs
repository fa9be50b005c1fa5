//! Settings segtop remembers between sessions (theme, chart markers, the queue's limits), in
//! `$XDG_CONFIG_HOME/segtop/settings.toml` (else `~/.config/segtop/settings.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How chart lines are drawn: braille dots (finest), or for fonts without braille, half
/// blocks or plain dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartMarker {
    #[default]
    Braille,
    Blocks,
    Dots,
}

impl ChartMarker {
    pub fn next(self) -> ChartMarker {
        match self {
            ChartMarker::Braille => ChartMarker::Blocks,
            ChartMarker::Blocks => ChartMarker::Dots,
            ChartMarker::Dots => ChartMarker::Braille,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChartMarker::Braille => "braille",
            ChartMarker::Blocks => "blocks",
            ChartMarker::Dots => "dots",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Theme name (a file in the workspace's `themes/`, or a built-in: default, mono).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    pub chart_marker: ChartMarker,
    /// How the queue starts runs (`[queue]`: cores, max_concurrent, reserve_ram).
    pub queue: crate::queue::QueueSettings,
}

impl Settings {
    /// Where settings live, when a home or config directory is known.
    pub fn path() -> Option<PathBuf> {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| Path::new(&h).join(".config"))
            })?;
        Some(config.join("segtop").join("settings.toml"))
    }

    /// The queue's settings from the settings file, defaults when it is missing or broken.
    pub fn queue() -> crate::queue::QueueSettings {
        Settings::path()
            .and_then(|path| Settings::load(&path).ok())
            .unwrap_or_default()
            .queue
    }

    /// Reads the settings; a missing file is the defaults, a broken one an error naming it.
    pub fn load(path: &Path) -> Result<Settings, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(error) => Err(format!("{}: cannot read: {error}", path.display())),
        }
    }

    /// Writes the settings atomically, creating the folder.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot save settings to {}: {e}", path.display());
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let text = toml::to_string(self).map_err(|e| fail(&e))?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| fail(&e))?;
        file.persist(path).map_err(|e| fail(&e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segtop/settings.toml");
        assert_eq!(Settings::load(&path), Ok(Settings::default()));
        let settings = Settings {
            theme: Some("light".into()),
            chart_marker: ChartMarker::Dots,
            queue: crate::queue::QueueSettings {
                max_concurrent: 2,
                ..Default::default()
            },
        };
        settings.save(&path).expect("saves");
        assert_eq!(Settings::load(&path), Ok(settings));
        std::fs::write(&path, "chart_marker = 'sparkles'\n").expect("write");
        let error = Settings::load(&path).expect_err("bad value");
        assert!(error.contains("settings.toml") && error.contains("sparkles"), "{error}");
    }
}
