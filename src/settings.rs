//! Settings segtop remembers between sessions (theme, chart markers, pictures, the queue's limits), in
//! `$XDG_CONFIG_HOME/segtop/settings.toml` (else `~/.config/segtop/settings.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the settings file could not be read or saved; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("cannot save settings to {}: {message}", path.display())]
    Save { path: PathBuf, message: String },
}

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
    /// How slices are drawn: auto (ask the terminal), kitty, sixel, iterm2 or blocks.
    pub graphics: crate::graphics::GraphicsChoice,
    /// How the queue starts runs (`[queue]`: cores, max_concurrent, reserve_ram).
    pub queue: crate::schedule::queue::QueueSettings,
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
    pub fn queue() -> crate::schedule::queue::QueueSettings {
        let mut queue = Settings::load_or_default().queue;
        if std::env::var("SEGTOP_OTHER_LOAD").is_ok_and(|v| v == "0" || v == "off") {
            queue.other_load = false;
        }
        queue
    }

    /// The settings from the settings file, defaults when there is none or it does not read.
    pub fn load_or_default() -> Settings {
        Settings::path()
            .and_then(|path| Settings::load(&path).ok())
            .unwrap_or_default()
    }

    /// Reads the settings; a missing file is the defaults, a broken one an error naming it.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| SettingsError::Invalid {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(error) => Err(SettingsError::Read {
                path: path.to_path_buf(),
                error,
            }),
        }
    }

    /// Writes what differs from the file's settings into it, atomically, creating the
    /// folder. Only changed keys are touched: the user's comments, order and spelling
    /// (`reserve_ram = "1536 MiB"`) stay as they were. A broken file is not overwritten.
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let fail = |e: &dyn std::fmt::Display| SettingsError::Save {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(fail(&error)),
        };
        let saved: Settings = toml::from_str(&text).map_err(|e| fail(&e.message()))?;
        let mut document: toml_edit::DocumentMut = text.parse().map_err(|e| fail(&e))?;
        self.write_changes(&saved, &mut document);
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
        std::io::Write::write_all(&mut file, document.to_string().as_bytes()).map_err(|e| fail(&e))?;
        file.persist(path).map_err(|e| fail(&e.error))?;
        Ok(())
    }

    /// Sets in `document` each key whose value differs between `self` and `saved`.
    fn write_changes(&self, saved: &Settings, document: &mut toml_edit::DocumentMut) {
        use toml_edit::value;
        if self.theme != saved.theme {
            match &self.theme {
                Some(theme) => document["theme"] = value(theme.as_str()),
                None => drop(document.remove("theme")),
            }
        }
        if self.chart_marker != saved.chart_marker {
            document["chart_marker"] = value(self.chart_marker.name());
        }
        if self.graphics != saved.graphics {
            document["graphics"] = value(crate::config::Choice::name(self.graphics));
        }
        let (queue, old) = (&self.queue, &saved.queue);
        if queue.cores != old.cores {
            document["queue"]["cores"] = value(i64::from(queue.cores));
        }
        if queue.max_concurrent != old.max_concurrent {
            document["queue"]["max_concurrent"] = value(i64::from(queue.max_concurrent));
        }
        if queue.reserve_ram != old.reserve_ram {
            document["queue"]["reserve_ram"] = value(queue.reserve_ram.exact());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segtop/settings.toml");
        assert_eq!(Settings::load(&path).expect("loads"), Settings::default());
        let settings = Settings {
            theme: Some("light".into()),
            chart_marker: ChartMarker::Dots,
            graphics: crate::graphics::GraphicsChoice::Sixel,
            queue: crate::schedule::queue::QueueSettings {
                max_concurrent: 2,
                ..Default::default()
            },
        };
        settings.save(&path).expect("saves");
        assert_eq!(Settings::load(&path).expect("loads"), settings.clone());
        std::fs::write(&path, "chart_marker = 'sparkles'\n").expect("write");
        let error = Settings::load(&path).expect_err("bad value").to_string();
        assert!(error.contains("settings.toml") && error.contains("sparkles"), "{error}");
        assert!(settings.save(&path).is_err(), "a broken file is not overwritten");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "chart_marker = 'sparkles'\n"
        );
    }

    #[test]
    fn saving_keeps_the_users_comments_and_spelling() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("settings.toml");
        let text =
            "# my lab's server\ntheme = \"mono\"\n\n[queue]\n# leave room for the others\nreserve_ram = \"1536 MiB\"\n";
        std::fs::write(&path, text).expect("write");
        let mut settings = Settings::load(&path).expect("loads");
        assert_eq!(settings.queue.reserve_ram, crate::schedule::queue::ByteSize(1536 << 20));
        settings.chart_marker = ChartMarker::Dots;
        settings.save(&path).expect("saves");
        let saved = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            saved,
            "# my lab's server\ntheme = \"mono\"\nchart_marker = \"dots\"\n\n[queue]\n# leave room for the others\nreserve_ram = \"1536 MiB\"\n"
        );
        assert_eq!(Settings::load(&path).expect("loads"), settings.clone());
        // A changed size is written exactly.
        settings.queue.reserve_ram = crate::schedule::queue::ByteSize(1_610_612_736 + 4096);
        settings.save(&path).expect("saves");
        assert_eq!(Settings::load(&path).expect("loads"), settings);
    }
}
