//! Dashboard state and the one place it changes.

use std::path::PathBuf;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::experiment::Experiment;
use crate::theme::Theme;
use crate::workspace::Workspace;

/// Everything that can change the dashboard's state.
#[derive(Debug)]
pub enum Msg {
    Terminal(Event),
    /// A fresh reading of `experiments/`.
    Experiments(Vec<ExperimentEntry>),
    /// A line for the status bar about work in the background (`None` clears it).
    Notice(Option<String>),
}

/// One experiment file and what checking it found.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentEntry {
    pub path: PathBuf,
    pub name: String,
    pub status: ExperimentStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExperimentStatus {
    /// Valid, and everything it points at is there.
    Ready(Box<Experiment>),
    /// Valid, but something it needs is missing (e.g. the dataset folder).
    Missing(Box<Experiment>, Vec<String>),
    /// The file does not parse or check; one line per problem.
    Invalid(Vec<String>),
}

impl ExperimentEntry {
    /// The checked experiment, when the file is valid.
    pub fn experiment(&self) -> Option<&Experiment> {
        match &self.status {
            ExperimentStatus::Ready(e) | ExperimentStatus::Missing(e, _) => Some(e),
            ExperimentStatus::Invalid(_) => None,
        }
    }

    /// Reads and checks every experiment file of the workspace.
    pub fn scan(workspace: &Workspace) -> Vec<ExperimentEntry> {
        let files = match workspace.experiment_files() {
            Ok(files) => files,
            Err(error) => {
                return vec![ExperimentEntry {
                    path: workspace.experiments_dir(),
                    name: "experiments/".to_string(),
                    status: ExperimentStatus::Invalid(vec![format!(
                        "{}: cannot list: {error}",
                        workspace.experiments_dir().display()
                    )]),
                }];
            }
        };
        files
            .into_iter()
            .map(|path| ExperimentEntry::check(&path, workspace))
            .collect()
    }

    pub fn check(path: &std::path::Path, workspace: &Workspace) -> ExperimentEntry {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = path.strip_prefix(workspace.root()).unwrap_or(path);
        let status = match Experiment::load(shown, workspace.root()) {
            Ok(experiment) => {
                let problems = experiment.check_paths();
                if problems.is_empty() {
                    ExperimentStatus::Ready(Box::new(experiment))
                } else {
                    let messages = problems.into_iter().map(|p| p.message).collect();
                    ExperimentStatus::Missing(Box::new(experiment), messages)
                }
            }
            Err(error) => ExperimentStatus::Invalid(error.to_string().lines().map(str::to_string).collect()),
        };
        ExperimentEntry {
            path: path.to_path_buf(),
            name,
            status,
        }
    }
}

pub struct App {
    pub workspace: Workspace,
    pub theme: Theme,
    /// `None` until the first scan arrives.
    pub experiments: Option<Vec<ExperimentEntry>>,
    pub selected: usize,
    pub show_help: bool,
    pub notice: Option<String>,
    quit: bool,
    dirty: bool,
}

impl App {
    pub fn new(workspace: Workspace, theme: Theme) -> App {
        App {
            workspace,
            theme,
            experiments: None,
            selected: 0,
            show_help: false,
            notice: None,
            quit: false,
            dirty: true,
        }
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Whether the state changed since the last frame.
    pub fn needs_redraw(&self) -> bool {
        self.dirty
    }

    pub fn drawn(&mut self) {
        self.dirty = false;
    }

    pub fn selected_experiment(&self) -> Option<&ExperimentEntry> {
        self.experiments.as_ref()?.get(self.selected)
    }

    pub fn update(&mut self, msg: Msg) {
        match msg {
            Msg::Terminal(Event::Key(key)) if key.kind != KeyEventKind::Release => self.key(key),
            Msg::Terminal(Event::Resize(..)) => self.dirty = true,
            Msg::Terminal(_) => {}
            Msg::Notice(notice) => {
                self.notice = notice;
                self.dirty = true;
            }
            Msg::Experiments(entries) => {
                // Keep the same file selected when the list changes around it.
                let selected_path = self.selected_experiment().map(|e| e.path.clone());
                self.selected = selected_path
                    .and_then(|path| entries.iter().position(|e| e.path == path))
                    .unwrap_or(self.selected)
                    .min(entries.len().saturating_sub(1));
                self.experiments = Some(entries);
                self.dirty = true;
            }
        }
    }

    fn key(&mut self, key: KeyEvent) {
        let count = self.experiments.as_ref().map_or(0, Vec::len);
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.show_help {
            // Any key closes the help; q still quits.
            self.show_help = false;
            self.quit = key.code == KeyCode::Char('q');
            self.dirty = true;
            return;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.show_help = true,
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(count.saturating_sub(1)),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = count.saturating_sub(1),
            _ => return,
        }
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> Msg {
        Msg::Terminal(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn entry(name: &str) -> ExperimentEntry {
        ExperimentEntry {
            path: PathBuf::from(format!("experiments/{name}.toml")),
            name: name.to_string(),
            status: ExperimentStatus::Invalid(vec![]),
        }
    }

    fn app() -> App {
        App::new(Workspace::new("."), Theme::default())
    }

    #[test]
    fn selection_stays_within_the_list() {
        let mut app = app();
        app.update(Msg::Experiments(vec![entry("a"), entry("b")]));
        for _ in 0..5 {
            app.update(key(KeyCode::Down));
        }
        assert_eq!(app.selected, 1);
        app.update(key(KeyCode::Char('g')));
        assert_eq!(app.selected, 0);
        app.update(key(KeyCode::Up));
        assert_eq!(app.selected, 0);
    }

    #[test]
    fn selection_follows_its_file_when_the_list_changes() {
        let mut app = app();
        app.update(Msg::Experiments(vec![entry("b"), entry("c")]));
        app.update(key(KeyCode::Down));
        app.update(Msg::Experiments(vec![entry("a"), entry("b"), entry("c")]));
        assert_eq!(app.selected_experiment().map(|e| e.name.as_str()), Some("c"));
        app.update(Msg::Experiments(vec![]));
        assert_eq!(app.selected, 0);
        assert!(app.selected_experiment().is_none());
    }

    #[test]
    fn help_closes_on_any_key_and_q_quits() {
        let mut app = app();
        app.update(key(KeyCode::Char('?')));
        assert!(app.show_help);
        app.update(key(KeyCode::Char('x')));
        assert!(!app.show_help && !app.should_quit());
        app.update(key(KeyCode::Char('q')));
        assert!(app.should_quit());
    }

    #[test]
    fn nothing_to_draw_after_an_ignored_key() {
        let mut app = app();
        app.drawn();
        app.update(key(KeyCode::Char('z')));
        assert!(!app.needs_redraw());
        app.update(key(KeyCode::Char('j')));
        assert!(app.needs_redraw());
    }
}
