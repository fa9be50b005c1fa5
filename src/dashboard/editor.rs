//! The experiment editor: `c` clones an experiment file or a run's frozen experiment into a
//! new file under `experiments/`, through a form over every key of the schema.
//!
//! The form edits a `toml_edit` document of the source, so the saved file keeps the
//! source's comments, order and formatting; only the keys the user changed are written.
//! Every change is checked at once by the same code and with the same messages as
//! `segtop check`. Nothing here touches the disk: saving is the loop's work
//! ([`super::app::Effect::SaveExperiment`]).

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use toml_edit::DocumentMut;

use crate::experiment::{self, Experiment};

/// How a key's value is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number, typed.
    Integer,
    /// A number, typed (`3e-4` and `0.0003` both work).
    Float,
    /// Toggled.
    Bool,
    /// One of these names, cycled.
    Choice(&'static [&'static str]),
    /// Free text (names, paths, notes), typed without quotes.
    Text,
    /// A TOML value typed as written in the file (lists: `[64, 64, 64]`).
    Value,
}

impl Kind {
    /// What the form says about editing a key of this kind.
    pub fn hint(self) -> String {
        match self {
            Kind::Integer => "a whole number · ⏎ types it".to_string(),
            Kind::Float => "a number (3e-4 or 0.0003) · ⏎ types it".to_string(),
            Kind::Bool => "true or false · ⏎ ←→ ␣ toggle".to_string(),
            Kind::Choice(names) => format!("{} · ←→ ␣ cycle", names.join(" | ")),
            Kind::Text => "text · ⏎ types it".to_string(),
            Kind::Value => "a TOML value, as in the file (lists: [a, b]) · ⏎ types it".to_string(),
        }
    }
}

/// One key of the schema in the form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Dotted key, `train.lr`.
    pub key: String,
    pub kind: Kind,
    /// The value as shown: the file's text for keys it sets, else the default.
    pub text: String,
    /// Whether the new file sets this key (else the default applies).
    pub set: bool,
    /// Whether the user changed it from the source.
    pub changed: bool,
}

/// A problem the check found, and the key it is about when one is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: Option<String>,
    pub message: String,
}

/// Where the form is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Editing,
    /// Saving found this file already there; `y` overwrites it.
    ConfirmOverwrite(PathBuf),
    /// Saved here; `⏎` queues it now, `Esc` leaves it for later.
    Saved(PathBuf),
}

/// What the dashboard should do after a key in the form.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    /// Close the form.
    Close,
    /// Write `text` to `path` (replacing a file there only when `overwrite`).
    Save {
        path: PathBuf,
        text: String,
        overwrite: bool,
    },
    /// Close the form and queue the saved file.
    Launch(PathBuf),
}

#[derive(Debug)]
pub struct Editor {
    /// What was cloned, as shown (`experiments/quick-demo.toml`, `run 1127-0036 quick-demo`).
    pub from: String,
    document: DocumentMut,
    /// The source's document, for putting a key back (`u`).
    original: DocumentMut,
    /// File name of the new experiment, without `.toml`.
    pub name: String,
    pub fields: Vec<Field>,
    /// Row 0 is the file name, row `i` is `fields[i - 1]`.
    pub selected: usize,
    /// Text being typed into the selected row.
    pub input: Option<String>,
    /// Text being searched for among the keys (`/`).
    pub search: Option<String>,
    pub problems: Vec<Problem>,
    pub stage: Stage,
    /// A line about the last action.
    pub message: Option<String>,
    /// Experiment files already in the workspace (names without `.toml`).
    taken: Vec<String>,
    workspace: PathBuf,
    /// `run.name` follows the file name until the user sets it.
    run_name_follows: bool,
    /// The next Esc discards the changes.
    discard_armed: bool,
}

impl Editor {
    /// A form over `text` (an experiment file or a run's frozen copy) for a new experiment
    /// named after `base`, avoiding the names in `taken`.
    pub fn new(from: String, text: &str, base: &str, taken: Vec<String>, workspace: &Path) -> Result<Editor, String> {
        let document: DocumentMut = text.parse().map_err(|e| format!("{from} is not TOML: {e}"))?;
        let name = free_name(base, &taken);
        let run_name_follows = experiment::get_value(&document, "run.name").is_some();
        let mut editor = Editor {
            from,
            original: document.clone(),
            document,
            name,
            fields: Vec::new(),
            selected: 0,
            input: None,
            search: None,
            problems: Vec::new(),
            stage: Stage::Editing,
            message: None,
            taken,
            workspace: workspace.to_path_buf(),
            run_name_follows,
            discard_armed: false,
        };
        if run_name_follows {
            let name = editor.name.clone();
            editor.put("run.name", toml_edit::Value::from(name));
        }
        editor.refresh();
        Ok(editor)
    }

    /// Where the new file goes.
    pub fn path(&self) -> PathBuf {
        self.workspace.join("experiments").join(format!("{}.toml", self.name))
    }

    /// The new file as it would be saved now.
    pub fn text(&self) -> String {
        self.document.to_string()
    }

    pub fn rows(&self) -> usize {
        self.fields.len() + 1
    }

    pub fn selected_field(&self) -> Option<&Field> {
        self.selected.checked_sub(1).and_then(|i| self.fields.get(i))
    }

    pub fn changed(&self) -> usize {
        self.fields.iter().filter(|f| f.changed).count()
    }

    /// The problems the check finds with `key`.
    pub fn problems_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Problem> + 'a {
        self.problems.iter().filter(move |p| p.key.as_deref() == Some(key))
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        let control = key.modifiers.contains(KeyModifiers::CONTROL);
        if self.input.is_some() {
            self.type_key(key.code, control);
            return Action::None;
        }
        if let Some(search) = &mut self.search {
            match key.code {
                KeyCode::Char(c) if !control => {
                    search.push(c);
                    self.find();
                }
                KeyCode::Backspace => {
                    search.pop();
                }
                _ => self.search = None,
            }
            return Action::None;
        }
        match self.stage.clone() {
            Stage::ConfirmOverwrite(path) => {
                self.stage = Stage::Editing;
                if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                    return Action::Save {
                        path,
                        text: self.text(),
                        overwrite: true,
                    };
                }
                self.message = Some("not saved: change the file name (row 1) or save again".to_string());
                return Action::None;
            }
            Stage::Saved(path) => {
                return match key.code {
                    KeyCode::Enter | KeyCode::Char('l') => Action::Launch(path),
                    _ => Action::Close,
                };
            }
            Stage::Editing => {}
        }
        let discard_armed = std::mem::take(&mut self.discard_armed);
        let row = self.selected;
        let action = self.editing_key(key.code, discard_armed);
        if self.selected != row {
            // A hint is about the row it was given on.
            self.message = None;
        }
        action
    }

    /// A key on the form itself (not typing, not searching, nothing to confirm).
    fn editing_key(&mut self, code: KeyCode, discard_armed: bool) -> Action {
        match code {
            KeyCode::Esc if self.changed() == 0 || discard_armed => return Action::Close,
            KeyCode::Esc => {
                self.discard_armed = true;
                self.message = Some(format!(
                    "{} changed key(s) not saved: Esc again discards them, s saves",
                    self.changed()
                ));
            }
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(self.rows() - 1),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected = (self.selected + 10).min(self.rows() - 1),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = self.rows() - 1,
            KeyCode::Char('/') => self.search = Some(String::new()),
            KeyCode::Char('s') => return self.save(),
            KeyCode::Char('u') | KeyCode::Delete => self.restore(),
            KeyCode::Enter => match self.selected_field().map(|f| f.kind) {
                Some(Kind::Bool | Kind::Choice(_)) => self.cycle(1),
                _ => self.input = Some(self.selected_text()),
            },
            KeyCode::Char(' ') | KeyCode::Right | KeyCode::Char('l') => self.cycle(1),
            KeyCode::Left | KeyCode::Char('h') => self.cycle(-1),
            _ => {}
        }
        Action::None
    }

    /// Keys while typing a value: it is checked with every key, and kept with Enter.
    fn type_key(&mut self, code: KeyCode, control: bool) {
        let Some(input) = &mut self.input else {
            return;
        };
        match code {
            KeyCode::Enter => {
                let text = std::mem::take(input);
                self.input = None;
                if !self.commit(&text) {
                    // Not kept: the text stays in the row to be put right (Esc gives up).
                    self.input = Some(text);
                }
                return;
            }
            KeyCode::Esc => {
                self.input = None;
                self.message = None;
                self.refresh();
                return;
            }
            KeyCode::Char('u') if control => input.clear(),
            KeyCode::Char(c) if !control => input.push(c),
            KeyCode::Backspace => {
                input.pop();
            }
            _ => return,
        }
        // Live: check the text typed so far, without keeping it.
        let text = input.clone();
        let kept = (self.document.clone(), self.name.clone());
        let applied = self.apply(&text);
        let _ = self.check();
        if let Err(message) = applied {
            // What is wrong with the text typed, not with the value it replaces.
            let key = self.selected_field().map(|f| f.key.clone());
            self.problems.retain(|p| key.is_none() || p.key != key);
            self.problems.insert(0, Problem { key, message });
        }
        (self.document, self.name) = kept;
    }

    fn selected_text(&self) -> String {
        match self.selected_field() {
            None => self.name.clone(),
            Some(field) => field.text.clone(),
        }
    }

    /// Keeps typed text in the selected row; whether it could be kept.
    fn commit(&mut self, text: &str) -> bool {
        match self.apply(text) {
            Ok(()) => {
                if let Some(field) = self.selected_field() {
                    let key = field.key.clone();
                    if key == "run.name" {
                        self.run_name_follows = false;
                    }
                }
                self.message = None;
                self.refresh();
                true
            }
            Err(message) => {
                self.message = Some(format!("{message} (Esc keeps the value it had)"));
                self.refresh();
                false
            }
        }
    }

    /// Puts typed text into the document (or the file name), or says why it cannot be.
    fn apply(&mut self, text: &str) -> Result<(), String> {
        let Some(field) = self.selected_field().cloned() else {
            let name = text.trim().trim_end_matches(".toml").to_string();
            self.name = name.clone();
            if self.run_name_follows {
                self.put("run.name", toml_edit::Value::from(name));
            }
            return Ok(());
        };
        if text.trim().is_empty() && experiment::OPTIONAL_KEYS.iter().any(|(key, _)| *key == field.key) {
            // An optional key typed empty is left out of the file.
            experiment::remove_value(&mut self.document, &field.key);
            self.refresh();
            return Ok(());
        }
        let value = parse_value(&field, text.trim())?;
        self.put(&field.key, value);
        Ok(())
    }

    /// Steps a choice or flips a boolean in the selected row.
    fn cycle(&mut self, by: isize) {
        let Some(field) = self.selected_field().cloned() else {
            return;
        };
        let value = match field.kind {
            Kind::Bool => toml_edit::Value::from(field.text != "true"),
            Kind::Choice(names) => {
                let at = names.iter().position(|n| *n == field.text).unwrap_or(0) as isize;
                let next = (at + by).rem_euclid(names.len() as isize) as usize;
                toml_edit::Value::from(names[next])
            }
            _ => {
                self.message = Some(format!("{}: ⏎ types a new value", field.key));
                return;
            }
        };
        self.put(&field.key, value);
        self.refresh();
    }

    /// Puts the selected key back as the source has it.
    fn restore(&mut self) {
        let Some(field) = self.selected_field().cloned() else {
            return;
        };
        match experiment::get_value(&self.original, &field.key) {
            Some(value) => experiment::set_value(&mut self.document, &field.key, value.clone()),
            None => experiment::remove_value(&mut self.document, &field.key),
        }
        self.message = Some(format!("{} is back to the source's value", field.key));
        self.refresh();
    }

    fn put(&mut self, key: &str, value: toml_edit::Value) {
        experiment::set_value(&mut self.document, key, value);
    }

    /// Selects the first key containing the search text.
    fn find(&mut self) {
        let Some(needle) = self.search.as_deref().map(str::to_lowercase) else {
            return;
        };
        if let Some(i) = self.fields.iter().position(|f| f.key.contains(&needle)) {
            self.selected = i + 1;
        }
    }

    fn save(&mut self) -> Action {
        if !self.problems.is_empty() {
            self.message = Some(format!(
                "not saved: {} problem(s) to fix first (shown below)",
                self.problems.len()
            ));
            return Action::None;
        }
        Action::Save {
            path: self.path(),
            text: self.text(),
            overwrite: false,
        }
    }

    /// The loop's answer to [`Action::Save`].
    pub fn saved(&mut self, path: PathBuf, outcome: SaveOutcome) {
        match outcome {
            SaveOutcome::Saved => {
                self.message = None;
                self.stage = Stage::Saved(path);
            }
            SaveOutcome::Exists => {
                self.message = None;
                self.stage = Stage::ConfirmOverwrite(path);
            }
            SaveOutcome::Failed(error) => self.message = Some(format!("not saved: {error}")),
        }
    }

    /// Re-reads every field from the document and checks it.
    fn refresh(&mut self) {
        // The defaults come from the checked document; while it does not check, from the
        // source's (so every key still shows a value).
        let checked = self.check().or_else(|| {
            let path = self.path();
            Experiment::parse(&path, &self.original.to_string(), &self.workspace)
                .ok()
                // A source that does not check itself (a key segtop does not know, say): the
                // defaults of any experiment, so the form still lists every key.
                .or_else(|| Experiment::parse(&path, "[data]\nroot = \"data\"\n", &self.workspace).ok())
        });
        let defaults: DocumentMut = checked
            .map(|e| e.to_toml())
            .unwrap_or_default()
            .parse()
            .unwrap_or_default();
        let mut fields = Vec::new();
        collect(defaults.as_table(), "", &mut fields);
        // Keys with no default are written out only when set: list them where they belong.
        for (key, after) in experiment::OPTIONAL_KEYS {
            if !fields.iter().any(|f| f.key == *key)
                && let Some(at) = fields.iter().position(|f| f.key == *after)
            {
                let field = Field {
                    key: key.to_string(),
                    kind: Kind::Text,
                    text: String::new(),
                    set: false,
                    changed: false,
                };
                fields.insert(at + 1, field);
            }
        }
        for field in &mut fields {
            let mine = experiment::get_value(&self.document, &field.key);
            if let Some(value) = mine {
                field.text = shown(value);
                field.set = true;
            } else if let Some(root) = field.text.strip_prefix(&format!("{}/", self.workspace.display())) {
                // Paths the check made absolute read as the user would write them.
                field.text = root.to_string();
            }
            let source = experiment::get_value(&self.original, &field.key).map(shown);
            field.changed = source.as_deref() != mine.map(shown).as_deref();
        }
        if !fields.is_empty() {
            self.fields = fields;
        }
        self.selected = self.selected.min(self.rows() - 1);
    }

    /// Checks the document as `segtop check` would check the saved file; the checked
    /// experiment when it checks.
    fn check(&mut self) -> Option<Experiment> {
        let path = self.path();
        let shown = path.strip_prefix(&self.workspace).unwrap_or(&path).to_path_buf();
        let text = self.document.to_string();
        let mut problems = Vec::new();
        if !experiment::is_valid_run_name(&self.name) {
            problems.push(Problem {
                key: None,
                message: format!(
                    "file name '{}': use letters, digits, '-', '_' and '.', not starting with '.'",
                    self.name
                ),
            });
        }
        let checked = match Experiment::parse(&shown, &text, &self.workspace) {
            Ok(checked) => {
                if let Err(error) = experiment::sweep::expand(&shown, &text, &self.workspace) {
                    problems.push(Problem {
                        key: None,
                        message: format!("{error:#}"),
                    });
                }
                Some(checked)
            }
            Err(error) => {
                let messages: Vec<String> = match error.diagnostics() {
                    [] => vec![error.to_string()],
                    diagnostics => diagnostics.iter().map(|d| d.message.clone()).collect(),
                };
                for message in messages {
                    // The form has no row for a key segtop does not know: only the file does.
                    let message = if message.starts_with("unknown key") {
                        format!(
                            "{message} (the form cannot remove it: Esc, then e opens {} in $EDITOR)",
                            self.from
                        )
                    } else {
                        message
                    };
                    problems.push(Problem {
                        key: self.key_named_in(&message),
                        message,
                    });
                }
                None
            }
        };
        if self.taken.contains(&self.name) && self.stage == Stage::Editing {
            self.message
                .get_or_insert_with(|| format!("experiments/{}.toml exists: saving asks first", self.name));
        }
        self.problems = problems;
        checked
    }

    /// The longest field key a check message is about (`train.lr = -1 is out of range`).
    fn key_named_in(&self, message: &str) -> Option<String> {
        self.fields
            .iter()
            .map(|f| f.key.as_str())
            .filter(|key| {
                message
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with([' ', ':', '[']))
                    || message.contains(&format!("'{key}'"))
            })
            .max_by_key(|key| key.len())
            .map(str::to_string)
    }
}

/// How saving went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved,
    /// A file of that name is there; nothing was written.
    Exists,
    Failed(String),
}

/// `base-2`, `base-3`, ...: the first name not taken.
fn free_name(base: &str, taken: &[String]) -> String {
    let stem = match base.rsplit_once('-') {
        Some((stem, n)) if !stem.is_empty() && n.parse::<u32>().is_ok() => stem,
        _ => base,
    };
    (2..)
        .map(|n| format!("{stem}-{n}"))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| format!("{stem}-copy"))
}

/// Every leaf key of a checked experiment, in the schema's order, with its kind.
fn collect(table: &toml_edit::Table, prefix: &str, out: &mut Vec<Field>) {
    for (name, item) in table.iter() {
        let key = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        match item {
            toml_edit::Item::Table(inner) => collect(inner, &key, out),
            toml_edit::Item::Value(value) => {
                let kind = match value {
                    toml_edit::Value::Integer(_) => Kind::Integer,
                    toml_edit::Value::Float(_) => Kind::Float,
                    toml_edit::Value::Boolean(_) => Kind::Bool,
                    toml_edit::Value::String(_) => match experiment::choices(&key) {
                        Some(names) => Kind::Choice(names),
                        None if key == "data.crop" => Kind::Value,
                        None => Kind::Text,
                    },
                    _ => Kind::Value,
                };
                out.push(Field {
                    text: shown(value),
                    key,
                    kind,
                    set: false,
                    changed: false,
                });
            }
            _ => {}
        }
    }
}

/// A value as the form shows it: strings without quotes, the rest as written.
fn shown(value: &toml_edit::Value) -> String {
    match value {
        toml_edit::Value::String(s) => s.value().clone(),
        other => {
            let mut bare = other.clone();
            bare.decor_mut().clear();
            bare.to_string().trim().to_string()
        }
    }
}

/// Typed text as the value of `field`, or why it is not one.
fn parse_value(field: &Field, text: &str) -> Result<toml_edit::Value, String> {
    let key = &field.key;
    let parsed = text.parse::<toml_edit::Value>();
    match field.kind {
        Kind::Text | Kind::Choice(_) => Ok(toml_edit::Value::from(text)),
        Kind::Bool => match text {
            "true" | "false" => Ok(toml_edit::Value::from(text == "true")),
            _ => Err(format!("{key}: '{text}' is not true or false")),
        },
        Kind::Integer => match parsed {
            Ok(value @ toml_edit::Value::Integer(_)) => Ok(value),
            _ => Err(format!("{key}: '{text}' is not a whole number")),
        },
        Kind::Float => match parsed {
            Ok(toml_edit::Value::Integer(i)) => Ok(toml_edit::Value::from(*i.value() as f64)),
            Ok(value @ toml_edit::Value::Float(_)) => Ok(value),
            _ => Err(format!("{key}: '{text}' is not a number")),
        },
        // A bare word (`foreground`) is a string; the check says whether it is allowed.
        Kind::Value => match parsed {
            Ok(value) => Ok(value),
            Err(_) if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                Ok(toml_edit::Value::from(text))
            }
            Err(_) => Err(format!(
                "{key}: '{text}' is not a TOML value (lists are written [a, b])"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "# A demo.\n[data]\nroot = \"data/demo\" # the demo folder\n\n[model]\nbase_filters = 8\n\n[train]\nlr = 3e-3 # fast\nepochs = 20\n";

    fn editor() -> Editor {
        Editor::new(
            "experiments/demo.toml".to_string(),
            SOURCE,
            "demo",
            vec!["demo".to_string(), "demo-2".to_string()],
            Path::new("/w"),
        )
        .expect("the source is TOML")
    }

    fn press(editor: &mut Editor, code: KeyCode) -> Action {
        editor.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn type_text(editor: &mut Editor, text: &str) {
        for c in text.chars() {
            press(editor, KeyCode::Char(c));
        }
    }

    fn select(editor: &mut Editor, key: &str) {
        let at = editor.fields.iter().position(|f| f.key == key).expect("a schema key");
        editor.selected = at + 1;
    }

    #[test]
    fn the_form_lists_every_key_with_its_kind_and_names_a_free_file() {
        let editor = editor();
        assert_eq!(editor.name, "demo-3");
        assert_eq!(editor.path(), Path::new("/w/experiments/demo-3.toml"));
        let kind = |key: &str| editor.fields.iter().find(|f| f.key == key).map(|f| f.kind);
        assert_eq!(kind("train.lr"), Some(Kind::Float));
        assert_eq!(kind("train.epochs"), Some(Kind::Integer));
        assert_eq!(kind("augment.enabled"), Some(Kind::Bool));
        assert_eq!(kind("train.patch_size"), Some(Kind::Value));
        assert_eq!(kind("data.crop"), Some(Kind::Value));
        assert_eq!(kind("run.notes"), Some(Kind::Text));
        assert!(matches!(kind("train.optimizer"), Some(Kind::Choice(names)) if names.contains(&"sgd")));
        let lr = editor.fields.iter().find(|f| f.key == "train.lr").expect("train.lr");
        assert_eq!((lr.text.as_str(), lr.set, lr.changed), ("3e-3", true, false));
        let batch = editor
            .fields
            .iter()
            .find(|f| f.key == "train.batch_size")
            .expect("batch");
        assert_eq!((batch.text.as_str(), batch.set), ("2", false));
        let cache = editor.fields.iter().find(|f| f.key == "data.cache_dir").expect("cache");
        assert_eq!(cache.text, "cache");
        assert!(editor.problems.is_empty(), "{:?}", editor.problems);
    }

    #[test]
    fn typed_values_are_checked_live_and_saved_with_the_sources_comments() {
        let mut editor = editor();
        select(&mut editor, "train.lr");
        press(&mut editor, KeyCode::Enter);
        editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut editor, "-1");
        // Not kept yet, but already checked, with segtop check's message.
        assert_eq!(
            editor
                .problems_of("train.lr")
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>(),
            ["train.lr = -1 is out of range: must be above 0"]
        );
        assert!(editor.text().contains("lr = 3e-3 # fast"));
        press(&mut editor, KeyCode::Enter);
        assert_eq!(press(&mut editor, KeyCode::Char('s')), Action::None);
        assert!(
            editor
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("not saved: 1 problem"))
        );

        press(&mut editor, KeyCode::Enter);
        editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut editor, "0.002");
        press(&mut editor, KeyCode::Enter);
        select(&mut editor, "model.base_filters");
        press(&mut editor, KeyCode::Enter);
        press(&mut editor, KeyCode::Backspace);
        type_text(&mut editor, "12");
        press(&mut editor, KeyCode::Enter);
        select(&mut editor, "train.optimizer");
        press(&mut editor, KeyCode::Right);
        assert!(editor.problems.is_empty(), "{:?}", editor.problems);
        assert_eq!(editor.changed(), 3);
        let Action::Save { path, text, overwrite } = press(&mut editor, KeyCode::Char('s')) else {
            panic!("s saves a valid form");
        };
        assert_eq!((path, overwrite), (PathBuf::from("/w/experiments/demo-3.toml"), false));
        assert_eq!(
            text,
            "# A demo.\n[data]\nroot = \"data/demo\" # the demo folder\n\n[model]\nbase_filters = 12\n\n\
             [train]\nlr = 0.002 # fast\nepochs = 20\noptimizer = \"sgd\"\n"
        );
    }

    #[test]
    fn a_time_budget_is_listed_after_epochs_set_checked_and_cleared() {
        let mut editor = editor();
        let at = |editor: &Editor, key: &str| editor.fields.iter().position(|f| f.key == key);
        assert_eq!(at(&editor, "train.budget"), at(&editor, "train.epochs").map(|i| i + 1));
        let type_into = |editor: &mut Editor, text: &str| {
            select(editor, "train.budget");
            press(editor, KeyCode::Enter);
            editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
            type_text(editor, text);
            press(editor, KeyCode::Enter);
        };
        type_into(&mut editor, "-5m");
        assert!(
            editor
                .problems
                .iter()
                .any(|p| p.message.contains("train.budget = '-5m' is not a duration")),
            "{:?}",
            editor.problems
        );
        type_into(&mut editor, "1h30m");
        assert!(editor.problems.is_empty(), "{:?}", editor.problems);
        assert!(editor.text().contains("budget = \"1h30m\""), "{}", editor.text());
        type_into(&mut editor, "");
        assert!(!editor.text().contains("budget"), "{}", editor.text());
        assert!(editor.problems.is_empty(), "{:?}", editor.problems);
    }

    #[test]
    fn a_word_typed_into_a_number_is_refused_with_the_key() {
        let mut editor = editor();
        select(&mut editor, "train.epochs");
        press(&mut editor, KeyCode::Enter);
        editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut editor, "ten");
        assert_eq!(editor.problems[0].message, "train.epochs: 'ten' is not a whole number");
        press(&mut editor, KeyCode::Enter);
        assert_eq!(
            editor.message.as_deref(),
            Some("train.epochs: 'ten' is not a whole number (Esc keeps the value it had)")
        );
        assert!(editor.text().contains("epochs = 20"));
        assert_eq!(
            editor.input.as_deref(),
            Some("ten"),
            "refused text stays to be put right"
        );
    }

    #[test]
    fn saving_over_a_file_asks_first_and_a_saved_file_can_be_queued() {
        let mut editor = editor();
        editor.selected = 0;
        press(&mut editor, KeyCode::Enter);
        editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut editor, "demo");
        press(&mut editor, KeyCode::Enter);
        assert_eq!(editor.name, "demo");
        let Action::Save { path, overwrite, .. } = press(&mut editor, KeyCode::Char('s')) else {
            panic!("s saves");
        };
        assert!(!overwrite);
        editor.saved(path.clone(), SaveOutcome::Exists);
        assert_eq!(editor.stage, Stage::ConfirmOverwrite(path.clone()));
        assert!(matches!(press(&mut editor, KeyCode::Char('n')), Action::None));
        assert_eq!(editor.stage, Stage::Editing);
        press(&mut editor, KeyCode::Char('s'));
        editor.saved(path.clone(), SaveOutcome::Exists);
        assert!(matches!(
            press(&mut editor, KeyCode::Char('y')),
            Action::Save { overwrite: true, .. }
        ));
        editor.saved(path.clone(), SaveOutcome::Saved);
        assert_eq!(press(&mut editor, KeyCode::Enter), Action::Launch(path));
    }

    #[test]
    fn esc_with_changes_asks_before_discarding_and_u_restores_a_key() {
        let mut editor = editor();
        select(&mut editor, "augment.enabled");
        press(&mut editor, KeyCode::Char(' '));
        assert!(editor.text().contains("[augment]\nenabled = false"));
        press(&mut editor, KeyCode::Char('u'));
        assert!(!editor.text().contains("enabled"));
        select(&mut editor, "model.residual");
        press(&mut editor, KeyCode::Enter);
        assert_eq!(press(&mut editor, KeyCode::Esc), Action::None);
        assert_eq!(press(&mut editor, KeyCode::Esc), Action::Close);
    }

    #[test]
    fn a_run_name_in_the_source_follows_the_file_name() {
        let source = format!("{SOURCE}\n[run]\nname = \"demo\"\n");
        let mut editor = Editor::new("run x".into(), &source, "demo", vec![], Path::new("/w")).expect("TOML");
        assert_eq!(editor.name, "demo-2");
        assert!(editor.text().ends_with("name = \"demo-2\"\n"));
        editor.selected = 0;
        press(&mut editor, KeyCode::Enter);
        type_text(&mut editor, "b");
        press(&mut editor, KeyCode::Enter);
        assert!(editor.text().ends_with("name = \"demo-2b\"\n"));
        type_text(&mut editor, "/notes");
        assert_eq!(editor.selected_field().map(|f| f.key.as_str()), Some("run.notes"));
    }

    #[test]
    fn free_names_count_up_from_the_base() {
        let taken = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(free_name("lite", &taken(&[])), "lite-2");
        assert_eq!(free_name("lite-2", &taken(&["lite-2", "lite-3"])), "lite-4");
        assert_eq!(free_name("seed-tutorial", &taken(&[])), "seed-tutorial-2");
    }

    /// A source with a key segtop does not know still lists every key, and the problem says
    /// where it can be fixed.
    #[test]
    fn a_source_with_an_unknown_key_lists_every_key_and_says_where_to_fix_it() {
        let text = "[data]\nroot = \"data/demo\"\n[train]\noptimiser = \"adam\"\n";
        let form = Editor::new("experiments/x.toml".to_string(), text, "x", vec![], Path::new("/w")).expect("a form");
        assert!(form.fields.iter().any(|f| f.key == "train.optimizer"), "no rows");
        assert!(form.fields.len() > 40, "{}", form.fields.len());
        let problem = &form.problems[0].message;
        assert!(problem.starts_with("unknown key 'train.optimiser'"), "{problem}");
        assert!(problem.ends_with("e opens experiments/x.toml in $EDITOR)"), "{problem}");
    }

    /// Text that is no value of its key: the problem is the text's alone, Enter keeps it in
    /// the row to be put right instead of quietly putting the old value back, and a hint goes
    /// once another row is selected.
    #[test]
    fn text_that_is_no_value_stays_to_be_put_right() {
        let mut editor = editor();
        select(&mut editor, "train.lr");
        press(&mut editor, KeyCode::Enter);
        editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut editor, "-0.001");
        press(&mut editor, KeyCode::Enter);
        press(&mut editor, KeyCode::Enter);
        editor.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        type_text(&mut editor, "fast");
        let problems: Vec<&str> = editor.problems_of("train.lr").map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].contains("-0.001"), "{problems:?}");
        press(&mut editor, KeyCode::Enter);
        assert_eq!(editor.input.as_deref(), Some("fast"), "the typed text stays");
        assert!(
            editor.message.as_deref().is_some_and(|m| m.contains("Esc keeps")),
            "{:?}",
            editor.message
        );
        press(&mut editor, KeyCode::Esc);
        assert!(editor.input.is_none() && editor.message.is_none());
        assert!(editor.text().contains("lr = -0.001"), "{}", editor.text());
        editor.message = Some("a hint about train.lr".to_string());
        press(&mut editor, KeyCode::Down);
        assert!(editor.message.is_none(), "the hint went with its row");
    }
}
