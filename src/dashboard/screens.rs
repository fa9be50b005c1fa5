//! The state of each part of the dashboard, with the keys that part handles on its own:
//! the experiment list, the run list, the run view, the preview pane, the compare view and
//! the notice in the key bar. [`super::app::App`] composes them and handles what crosses
//! parts (opening a run, acting on one, effects). Pure state: no I/O, no drawing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use crossterm::event::KeyCode;

use super::preview::{Preview, PreviewView};
use crate::dashboard::catalog::ExperimentEntry;
use crate::experiment::{Axis, LauncherKind, Modality};
use crate::render::{ColorMode, Overlay};
use crate::runs::lists::{RunSort, sort_runs};
use crate::runs::model::RunModel;

/// Panels of the run view; on terminals smaller than 80x24 they become tabs.
pub const RUN_PANELS: [&str; 6] = ["loss", "dice", "speed", "resources", "log", "preview"];

/// Seconds a notice stays in the key bar.
const NOTICE_SECONDS: i64 = 8;

/// What a part did with a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Not one of its keys.
    No,
    Yes,
    /// Handled; tell the user this.
    Say(String),
}

/// The line in the key bar: what the last action said, for a few seconds, else how work in
/// the background is going. The two are kept apart, so progress never hides what an action
/// just said, and work ending never erases it.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    /// The last action's message, and when it was first shown (so it can fade).
    said: Option<String>,
    since: Option<DateTime<Utc>>,
    /// Progress from background work, until it is replaced or ends.
    background: Option<String>,
}

impl Notice {
    pub fn text(&self) -> Option<&str> {
        self.said.as_deref().or(self.background.as_deref())
    }

    /// Shows `text` for a few seconds.
    pub fn say(&mut self, text: String) {
        self.said = Some(text);
        self.since = None;
    }

    /// Shows background work's `text` (or ends it: `None`) whenever no message is shown.
    pub fn keep(&mut self, text: Option<String>) {
        self.background = text;
    }

    /// The clock moved to `now`; whether the message faded.
    pub fn tick(&mut self, now: DateTime<Utc>) -> bool {
        match self.since {
            _ if self.said.is_none() => self.since = None,
            None => self.since = Some(now),
            Some(since) if (now - since).num_seconds() >= NOTICE_SECONDS => {
                self.said = None;
                self.since = None;
                return true;
            }
            Some(_) => {}
        }
        false
    }
}

/// The experiment list (screen 1).
#[derive(Debug, Clone, Default)]
pub struct ExperimentList {
    /// `None` until the first scan arrives.
    pub entries: Option<Vec<ExperimentEntry>>,
    pub selected: usize,
}

/// What the experiment list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentKey {
    Ignored,
    Moved,
    /// Launch the selected experiment (with this launcher, when given).
    Launch(Option<LauncherKind>),
    /// Clone the selected experiment in the editor form.
    Clone,
    /// Open the selected experiment's file in the user's editor.
    Edit,
}

impl ExperimentList {
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn selected(&self) -> Option<&ExperimentEntry> {
        self.entries.as_ref()?.get(self.selected)
    }

    /// A fresh reading of the files; the same file stays selected when the list changes.
    pub fn replace(&mut self, entries: Vec<ExperimentEntry>) {
        let selected_path = self.selected().map(|e| e.path.clone());
        self.selected = selected_path
            .and_then(|path| entries.iter().position(|e| e.path == path))
            .unwrap_or(self.selected)
            .min(entries.len().saturating_sub(1));
        self.entries = Some(entries);
    }

    /// Moves the selection `by` rows, clamped to the list.
    pub fn move_by(&mut self, by: isize) {
        let last = self.len().saturating_sub(1) as isize;
        self.selected = (self.selected as isize).saturating_add(by).clamp(0, last.max(0)) as usize;
    }

    pub fn key(&mut self, code: KeyCode) -> ExperimentKey {
        match code {
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX),
            KeyCode::Enter => return ExperimentKey::Launch(None),
            KeyCode::Char('b') => return ExperimentKey::Launch(Some(LauncherKind::Slurm)),
            KeyCode::Char('c') => return ExperimentKey::Clone,
            KeyCode::Char('e') => return ExperimentKey::Edit,
            _ => return ExperimentKey::Ignored,
        }
        ExperimentKey::Moved
    }
}

/// The run list (screen 2): selection, sorting, filter and the runs marked for comparing.
#[derive(Debug, Clone)]
pub struct RunList {
    /// The selected run in the run list and grid, by id (it follows sorting).
    pub selected: Option<String>,
    pub sort: RunSort,
    pub reverse: bool,
    pub filter: String,
    /// Typing into the filter.
    pub filtering: bool,
    /// Runs marked for the compare view (space).
    pub marked: BTreeSet<String>,
}

impl Default for RunList {
    fn default() -> RunList {
        RunList {
            selected: None,
            sort: RunSort::Started,
            reverse: false,
            filter: String::new(),
            filtering: false,
            marked: BTreeSet::new(),
        }
    }
}

impl RunList {
    /// The runs the list shows, filtered and sorted.
    pub fn visible<'a>(&self, runs: &'a BTreeMap<String, RunModel>) -> Vec<&'a RunModel> {
        let needle = self.filter.to_lowercase();
        let mut shown: Vec<&RunModel> = runs
            .values()
            .filter(|run| {
                needle.is_empty()
                    || run.id.to_lowercase().contains(&needle)
                    || run.name.to_lowercase().contains(&needle)
                    || run.state().name().contains(&needle)
            })
            .collect();
        sort_runs(&mut shown, self.sort);
        if self.reverse {
            shown.reverse();
        }
        shown
    }

    /// The selected run's position in the list.
    pub fn selected_index(&self, runs: &BTreeMap<String, RunModel>) -> Option<usize> {
        let id = self.selected.as_ref()?;
        self.visible(runs).iter().position(|r| &r.id == id)
    }

    /// Moves the selection `by` rows of the list, clamped.
    pub fn move_by(&mut self, runs: &BTreeMap<String, RunModel>, by: isize) {
        let ids: Vec<String> = self.visible(runs).iter().map(|r| r.id.clone()).collect();
        if ids.is_empty() {
            return;
        }
        let at = self.selected_index(runs).unwrap_or(0) as isize;
        let to = at.saturating_add(by).clamp(0, ids.len() as isize - 1) as usize;
        self.selected = Some(ids[to].clone());
    }

    /// After the runs or the filter changed, select a run the list still shows.
    pub fn keep_selection_visible(&mut self, runs: &BTreeMap<String, RunModel>) {
        if self.selected_index(runs).is_none() {
            self.selected = self.visible(runs).first().map(|r| r.id.clone());
        }
    }

    /// Keys while typing into the filter.
    pub fn filter_key(&mut self, code: KeyCode, runs: &BTreeMap<String, RunModel>) {
        match code {
            KeyCode::Enter => self.filtering = false,
            KeyCode::Esc => {
                self.filtering = false;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
            _ => {}
        }
        self.keep_selection_visible(runs);
    }

    /// The list's own keys: moving, filtering, sorting, marking.
    pub fn key(&mut self, code: KeyCode, runs: &BTreeMap<String, RunModel>) -> Handled {
        match code {
            KeyCode::Down | KeyCode::Char('j') => self.move_by(runs, 1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(runs, -1),
            KeyCode::PageDown => self.move_by(runs, 10),
            KeyCode::PageUp => self.move_by(runs, -10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(runs, isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.move_by(runs, isize::MAX),
            KeyCode::Char('/') => self.filtering = true,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                return Handled::Say(format!("sorted by {}", self.sort.name()));
            }
            KeyCode::Char('S') => self.reverse = !self.reverse,
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Char(' ') => {
                if let Some(id) = self.selected.clone()
                    && !self.marked.remove(&id)
                {
                    self.marked.insert(id);
                }
                self.move_by(runs, 1);
                return Handled::Say(format!("{} marked: 4 compares them", self.marked.len()));
            }
            KeyCode::Char('w') => return self.mark_sweep(runs),
            _ => return Handled::No,
        }
        Handled::Yes
    }

    /// Marks every run of the selected run's sweep.
    fn mark_sweep(&mut self, runs: &BTreeMap<String, RunModel>) -> Handled {
        let Some(sweep) = self
            .selected
            .as_ref()
            .and_then(|id| runs.get(id))
            .and_then(|r| r.observed.sweep.as_ref())
            .map(|t| t.sweep.clone())
        else {
            return Handled::Say("the selected run is not part of a sweep".to_string());
        };
        let ids: Vec<String> = runs
            .values()
            .filter(|r| r.observed.sweep.as_ref().is_some_and(|t| t.sweep == sweep))
            .map(|r| r.id.clone())
            .collect();
        let said = format!("marked the {} runs of sweep {sweep}: 4 compares them", ids.len());
        self.marked.extend(ids);
        Handled::Say(said)
    }
}

/// The run view: which run, which tab on small terminals, how the charts read.
#[derive(Debug, Clone, Default)]
pub struct RunView {
    /// The run shown.
    pub open: Option<String>,
    /// The panel shown when the terminal is too small for all of them.
    pub tab: usize,
    pub log_scale: bool,
    /// The Dice chart shows the official lesion-wise Dice rather than legacy Dice (`d`).
    pub lesion_wise_dice: bool,
}

impl RunView {
    /// The view's own keys: switching tabs.
    pub fn key(&mut self, code: KeyCode) -> Handled {
        match code {
            KeyCode::Left | KeyCode::Char('h') => self.tab = (self.tab + RUN_PANELS.len() - 1) % RUN_PANELS.len(),
            KeyCode::Right | KeyCode::Char('l') => self.tab = (self.tab + 1) % RUN_PANELS.len(),
            _ => return Handled::No,
        }
        Handled::Yes
    }
}

/// The preview of the run view (and of the compare view's first runs): what is loaded, how
/// it is shown, and what was asked for.
#[derive(Debug)]
pub struct PreviewPane {
    /// The open run's latest preview, once loaded.
    pub shown: Option<Preview>,
    pub view: PreviewView,
    /// Why there is no preview to draw (loading, an error), when there is none.
    pub status: Option<String>,
    /// The run view shows the preview over its whole body (`v`).
    pub full: bool,
    /// The preview asked for last: run, previews written then, modality, epoch.
    pub(super) asked: Option<(String, u32, Modality, Option<u32>)>,
}

impl PreviewPane {
    pub fn new(mode: ColorMode) -> PreviewPane {
        PreviewPane {
            shown: None,
            view: PreviewView::new(mode),
            status: None,
            full: false,
            asked: None,
        }
    }

    /// The slice shown of the preview on screen, and how many there are along its axis.
    pub fn slices(&self, on_screen: Option<&Preview>) -> Option<(usize, usize)> {
        on_screen.map(|p| (p.slice_index(&self.view), p.slices(self.view.axis)))
    }

    /// The preview keys: `slices` are [`PreviewPane::slices`] of the preview on screen,
    /// `epochs` the open run's preview epochs, for stepping back and forth through them.
    pub fn key(&mut self, code: KeyCode, slices: Option<(usize, usize)>, epochs: &[u32]) -> Handled {
        let full = self.full;
        let shown_epoch = self.shown.as_ref().map(|p| p.epoch);
        let view = &mut self.view;
        let mut step = |by: isize| {
            if let Some((at, count)) = slices {
                view.slice = Some((at as isize + by).clamp(0, count.saturating_sub(1) as isize) as usize);
            }
        };
        match code {
            KeyCode::Char(']') => step(1),
            KeyCode::Char('[') => step(-1),
            KeyCode::Right | KeyCode::Char('l') if full => step(1),
            KeyCode::Left | KeyCode::Char('h') if full => step(-1),
            KeyCode::PageDown | KeyCode::Char('}') => step(10),
            KeyCode::PageUp | KeyCode::Char('{') => step(-10),
            KeyCode::Char('T') => view.slice = None,
            // Earlier and later previews of the run: one validation back or forward.
            KeyCode::Char('<' | ',' | '>' | '.') => {
                let back = matches!(code, KeyCode::Char('<' | ','));
                let at = shown_epoch.and_then(|e| epochs.iter().position(|&x| x == e));
                let to = match (at, back) {
                    (Some(i), true) => epochs.get(i.saturating_sub(1)).copied(),
                    (Some(i), false) => epochs.get(i + 1).copied(),
                    (None, _) => None,
                };
                // The latest preview is asked for as "latest", so new ones keep coming.
                view.epoch = to.filter(|e| Some(e) != epochs.last());
            }
            KeyCode::Char('a') => {
                view.axis = match view.axis {
                    Axis::Axial => Axis::Coronal,
                    Axis::Coronal => Axis::Sagittal,
                    Axis::Sagittal => Axis::Axial,
                };
                view.slice = None;
            }
            KeyCode::Char('o') => view.side_by_side = !view.side_by_side,
            KeyCode::Char('O') => {
                view.overlay = match view.overlay {
                    Overlay::Outline => Overlay::Fill,
                    _ => Overlay::Outline,
                };
                let said = match view.overlay {
                    Overlay::Outline => "labels as outlines (pictures only; half blocks fill them)",
                    _ => "labels filled",
                };
                return Handled::Say(said.to_string());
            }
            KeyCode::Char('M') => {
                view.modality = match view.modality {
                    Modality::T1n => Modality::T1c,
                    Modality::T1c => Modality::T2w,
                    Modality::T2w => Modality::T2f,
                    Modality::T2f => Modality::T1n,
                };
            }
            KeyCode::Char('C') => {
                view.mode = match view.mode {
                    ColorMode::TrueColor => ColorMode::Indexed256,
                    ColorMode::Indexed256 => ColorMode::Ansi16,
                    ColorMode::Ansi16 => ColorMode::Ascii,
                    ColorMode::Ascii => ColorMode::TrueColor,
                };
                let name = match view.mode {
                    ColorMode::TrueColor => "24-bit colour",
                    ColorMode::Indexed256 => "256 colours",
                    ColorMode::Ansi16 => "16 colours",
                    ColorMode::Ascii => "ASCII",
                };
                return Handled::Say(format!("preview in {name}"));
            }
            _ => return Handled::No,
        }
        Handled::Yes
    }
}

/// The compare view (screen 4): the table's order, and the first two marked runs' previews.
#[derive(Debug, Default)]
pub struct Compare {
    /// The table's sort column and direction.
    pub sort: usize,
    pub reverse: bool,
    /// Show the first two marked runs' previews on one slice (`v`) instead of the table.
    pub previews: bool,
    /// Their latest previews, by run.
    pub shown: BTreeMap<String, Preview>,
    /// The previews asked for: run, previews written then, modality.
    pub(super) asked: Vec<(String, u32, Modality)>,
}

impl Compare {
    /// The table's keys.
    pub fn key(&mut self, code: KeyCode, marked: &mut BTreeSet<String>) -> Handled {
        match code {
            KeyCode::Char('s') => self.sort += 1,
            KeyCode::Char('S') => self.reverse = !self.reverse,
            KeyCode::Char('u') => marked.clear(),
            _ => return Handled::No,
        }
        Handled::Yes
    }
}
