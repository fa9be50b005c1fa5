//! Reading segtop's TOML files (experiments, themes) with errors a user can act on.
//!
//! Every file goes through the same two steps: serde parses it into a raw struct with
//! `deny_unknown_fields`, then a [`Checker`] converts the raw values into a checked type,
//! collecting every problem it finds. Each problem is a [`Diagnostic`] that names the file,
//! the line and column of the offending value, the key and what is allowed:
//!
//! ```text
//! experiments/x.toml:12:13: train.optimizer = 'adma' is not one of: nadam, adam, adamw, sgd
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

/// One problem in one file, located at a line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The located problems, empty when the file could not be read at all.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(diagnostics) => diagnostics,
        }
    }
}

/// The text of a configuration file, or an error naming it.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn join_lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A parsed TOML file: its text, for turning byte offsets into lines and columns, and the
/// spans of its keys and values, for pointing at a key named by its dotted path.
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    table: Option<DeTable<'a>>,
}

impl<'a> Source<'a> {
    /// Parses `text` (read from `path`) into the raw type `R`.
    pub fn parse<R: DeserializeOwned>(path: &'a Path, text: &'a str) -> Result<(R, Self), ConfigError> {
        let syntax_error = |error: toml::de::Error| {
            let source = Source {
                path,
                text,
                table: None,
            };
            let offset = error.span().map_or(0, |span| span.start);
            ConfigError::Invalid(vec![source.at_offset(offset, error.message().trim_end().to_string())])
        };
        let table = DeTable::parse(text).map_err(syntax_error)?.into_inner();
        let source = Source {
            path,
            text,
            table: Some(table),
        };

        let deserializer = toml::Deserializer::parse(text).map_err(syntax_error)?;
        match serde_path_to_error::deserialize::<_, R>(deserializer) {
            Ok(raw) => Ok((raw, source)),
            Err(error) => {
                let key = error.path().to_string();
                let inner = error.into_inner();
                let offset = inner.span().map_or(0, |span| span.start);
                let message = describe_serde_error(&key, inner.message());
                Err(ConfigError::Invalid(vec![source.at_offset(offset, message)]))
            }
        }
    }

    /// The spans of a file already known to parse, for locating keys in it.
    pub fn spans(path: &'a Path, text: &'a str) -> Self {
        let table = DeTable::parse(text).ok().map(|table| table.into_inner());
        Source { path, text, table }
    }

    pub fn path(&self) -> &Path {
        self.path
    }

    /// A diagnostic located at the value of the dotted `key` (`train.optimizer`), or at the
    /// table that should hold it when the key is absent, or at the top of the file.
    pub fn at_key(&self, key: &str, message: String) -> Diagnostic {
        let offset = self.span_of(key).map_or(0, |span| span.start);
        self.at_offset(offset, message)
    }

    /// [`Source::at_key`] for a key given as its parts, for keys that hold dots themselves
    /// (`[sweep]`'s `"train.lr"` is `["sweep", "train.lr"]`).
    pub fn at_parts(&self, parts: &[&str], message: String) -> Diagnostic {
        let offset = self.span_of_parts(parts.iter().copied()).map_or(0, |span| span.start);
        self.at_offset(offset, message)
    }

    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.span_of_parts(key.split('.'))
    }

    fn span_of_parts<'k>(&self, parts: impl Iterator<Item = &'k str>) -> Option<Range<usize>> {
        let mut table = self.table.as_ref()?;
        let mut best = None;
        let mut parts = parts.peekable();
        while let Some(part) = parts.next() {
            let (name, value) = table.iter().find(|(name, _)| name.get_ref().as_ref() == part)?;
            best = Some(value.span());
            if parts.peek().is_none() {
                return best;
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                // A key inside an array (`crop.1`): point at the array itself.
                _ => return best.or(Some(name.span())),
            }
        }
        best
    }

    fn at_offset(&self, offset: usize, message: String) -> Diagnostic {
        let (line, column) = line_column(self.text, offset);
        Diagnostic {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Rewrites serde's wording into segtop's: the dotted key first, "key" rather than "field".
fn describe_serde_error(key: &str, message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, allowed)) = rest.split_once('`')
    {
        // serde_path_to_error's path already ends with the unknown key.
        let full = if key.is_empty() || key == "." {
            name.to_string()
        } else if key == name || key.ends_with(&format!(".{name}")) {
            key.to_string()
        } else {
            format!("{key}.{name}")
        };
        let allowed = allowed
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "");
        let allowed = if allowed.starts_with(", there are no fields") {
            "none".to_string()
        } else {
            allowed
        };
        return format!("unknown key '{full}'; allowed here: {allowed}");
    }
    // Rust type names mean nothing to someone editing a TOML file.
    let message = message
        .replace("expected u32", "expected a whole number of at least 0")
        .replace("expected u64", "expected a whole number of at least 0")
        .replace("expected f64", "expected a number");
    if key.is_empty() || key == "." {
        message
    } else {
        format!("{key}: {message}")
    }
}

/// Converts raw values into checked ones, collecting every problem with its location.
pub struct Checker<'a> {
    pub source: Source<'a>,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    pub fn new(source: Source<'a>) -> Self {
        Checker {
            source,
            diagnostics: Vec::new(),
        }
    }

    /// Records a problem with the value of `key`.
    pub fn error(&mut self, key: &str, message: String) {
        let diagnostic = self.source.at_key(key, message);
        self.diagnostics.push(diagnostic);
    }

    /// The value of `key` or its default, recorded as a problem unless `allowed` holds.
    /// `rule` says what is allowed, e.g. "must be at least 1".
    pub fn value<T: Copy + fmt::Display>(
        &mut self,
        key: &str,
        raw: Option<T>,
        default: T,
        allowed: impl Fn(T) -> bool,
        rule: &str,
    ) -> T {
        match raw {
            Some(value) if !allowed(value) => {
                self.error(key, format!("{key} = {value} is out of range: {rule}"));
                default
            }
            Some(value) => value,
            None => default,
        }
    }

    /// Parses a named choice (`'adamw'`) into `T`, listing the allowed names when it is not one.
    pub fn choice<T: Choice>(&mut self, key: &str, raw: Option<&str>, default: T) -> T {
        let Some(name) = raw else {
            return default;
        };
        match T::from_name(name) {
            Some(value) => value,
            None => {
                let allowed = T::NAMES.join(", ");
                self.error(key, format!("{key} = '{name}' is not one of: {allowed}"));
                default
            }
        }
    }

    /// The checked value, or every problem found in the file.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.diagnostics.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid(self.diagnostics))
        }
    }
}

/// An enumeration written in TOML files by name.
pub trait Choice: Sized + Copy {
    const NAMES: &'static [&'static str];
    fn from_name(name: &str) -> Option<Self>;
    fn name(self) -> &'static str;
}

/// Declares a [`Choice`] enum whose variants are written in TOML as the given names, and
/// which serializes and deserializes as those names.
#[macro_export]
macro_rules! choice_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $crate::config::Choice for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::config::Choice::name(*self))
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($crate::config::Choice::name(*self))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(deserializer)?;
                <$name as $crate::config::Choice>::from_name(&text).ok_or_else(|| {
                    ::serde::de::Error::invalid_value(
                        ::serde::de::Unexpected::Str(&text),
                        &<$name as $crate::config::Choice>::NAMES.join(", ").as_str(),
                    )
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "a = 1\nbé = 'x'\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 12), (2, 6));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn unknown_field_is_reworded_with_its_full_key() {
        let message = describe_serde_error(
            "train.optimiser",
            "unknown field `optimiser`, expected one of `lr`, `optimizer`",
        );
        assert_eq!(message, "unknown key 'train.optimiser'; allowed here: lr, optimizer");
    }
}
