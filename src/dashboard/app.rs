//! Dashboard state and the one place it changes.
//!
//! `App::update` takes one [`Msg`] at a time. It never does I/O: what must happen outside
//! (launching a trainer, signalling one, saving settings) is queued as an [`Effect`] that
//! the loop carries out and answers with another message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind};

use super::hits::{Hits, Target};
pub use super::msg::{Effect, Msg, QueueChange};

mod actions;
use super::preview::Preview;
use super::screens::{Compare, ExperimentKey, ExperimentList, Handled, Notice, PreviewPane, RunList, RunView};
use crate::dashboard::catalog::ExperimentStatus;
use crate::graphics::Graphics;
use crate::run::process::Halt;
use crate::runs::model::RunModel;
use crate::runs::watch::{HostSample, Watch};
use crate::schedule::overview::MachineView;
use crate::settings::{ChartMarker, Settings};
use crate::theme::Theme;
use crate::workspace::Workspace;

/// The dashboard's screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Experiments,
    Runs,
    /// One run's panels (the run is `App::open`).
    Run,
    /// Live runs side by side.
    Grid,
    /// Marked runs compared: curves overlaid and the keys they differ in.
    Compare,
    /// Every segtop trainer on the machine, of every user, and who waits.
    Machine,
}

/// Messages of the status line kept for `N`.
const MESSAGES: usize = 50;

/// Finished runs whose charts are kept after they leave the screen (the most recent).
const KEEP_CHARTS: usize = 8;

/// The smallest terminal that shows every panel at once.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// The dashboard: the runs as the watcher reports them, and each part's state.
pub struct App {
    pub workspace: Workspace,
    pub theme: Theme,
    /// Themes to cycle through with `t`.
    pub themes: Vec<Theme>,
    pub settings: Settings,
    pub screen: Screen,
    pub runs: BTreeMap<String, RunModel>,
    pub host: Option<HostSample>,
    /// The machine's register at the latest look.
    pub machine: MachineView,
    pub now: DateTime<Utc>,
    pub experiments: ExperimentList,
    pub list: RunList,
    pub run: RunView,
    pub preview: PreviewPane,
    /// Pictures of slices, when the terminal shows them.
    pub graphics: Graphics,
    pub compare: Compare,
    pub notice: Notice,
    /// The experiment editor, while it is open (over any screen).
    pub editor: Option<super::editor::Editor>,
    /// Kill waits for a `y`.
    pub confirm: Option<(String, Halt)>,
    /// The status line's latest messages, with when they were said (`N` shows them whole).
    pub messages: VecDeque<(DateTime<Utc>, String)>,
    pub show_messages: bool,
    pub show_help: bool,
    /// Terminal size.
    pub size: (u16, u16),
    /// Where the last frame drew its clickable rows.
    hits: Hits,
    /// Runs whose charts were asked for and have not arrived.
    charts_asked: BTreeSet<String>,
    /// The runs charted most recently, newest last: their histories are kept.
    charted: VecDeque<String>,
    effects: Vec<Effect>,
    quit: bool,
    dirty: bool,
}

impl App {
    pub fn new(workspace: Workspace, theme: Theme) -> App {
        App {
            workspace,
            themes: vec![theme.clone()],
            theme,
            settings: Settings::default(),
            screen: Screen::Experiments,
            runs: BTreeMap::new(),
            host: None,
            machine: MachineView::default(),
            now: DateTime::<Utc>::UNIX_EPOCH,
            experiments: ExperimentList::default(),
            list: RunList::default(),
            run: RunView::default(),
            preview: PreviewPane::new(crate::render::ColorMode::detect()),
            graphics: Graphics::blocks(),
            compare: Compare::default(),
            notice: Notice::default(),
            editor: None,
            confirm: None,
            messages: VecDeque::new(),
            show_messages: false,
            show_help: false,
            size: (MIN_WIDTH, MIN_HEIGHT),
            hits: Hits::default(),
            charts_asked: BTreeSet::new(),
            charted: VecDeque::new(),
            effects: Vec::new(),
            quit: false,
            dirty: true,
        }
    }

    /// Themes to cycle through (the current one included) and the remembered settings.
    pub fn with_choices(mut self, themes: Vec<Theme>, settings: Settings) -> App {
        if !themes.is_empty() {
            self.themes = themes;
        }
        self.settings = settings;
        self
    }

    /// Slice previews as pictures, when the terminal can show them.
    pub fn with_graphics(mut self, graphics: Graphics) -> App {
        self.graphics = graphics;
        self
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Whether the state changed since the last frame.
    pub fn needs_redraw(&self) -> bool {
        self.dirty
    }

    /// A frame was drawn; `hits` says where its clickable rows went and which runs it drew
    /// charts for.
    pub fn drawn(&mut self, hits: Hits) {
        self.dirty = false;
        self.keep_charts(&hits.charted);
        self.hits = hits;
    }

    /// Asks for the charts of the runs on screen that have none, and lets go of finished
    /// runs' charts once they are off screen and not among the last few shown: a workspace
    /// of a thousand runs holds a handful of histories.
    fn keep_charts(&mut self, shown: &[String]) {
        for id in shown {
            self.charted.retain(|c| c != id);
            self.charted.push_back(id.clone());
        }
        while self.charted.len() > KEEP_CHARTS.max(shown.len()) {
            self.charted.pop_front();
        }
        let wanted: Vec<String> = shown
            .iter()
            .filter(|id| self.runs.get(*id).is_some_and(|r| !r.charts.complete) && !self.charts_asked.contains(*id))
            .cloned()
            .collect();
        if !wanted.is_empty() {
            self.charts_asked.extend(wanted.iter().cloned());
            self.effects.push(Effect::LoadCharts(wanted));
        }
        for run in self.runs.values_mut() {
            if run.charts.complete && run.finished.is_some() && !self.charted.contains(&run.id) {
                run.drop_charts();
            }
        }
    }

    /// The work `update` asked for since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn marker(&self) -> ChartMarker {
        self.settings.chart_marker
    }

    /// The runs the run list shows, filtered and sorted.
    pub fn visible_runs(&self) -> Vec<&RunModel> {
        self.list.visible(&self.runs)
    }

    /// The selected run's position in the run list.
    pub fn selected_index(&self) -> Option<usize> {
        self.list.selected_index(&self.runs)
    }

    /// Runs for the grid: live ones first, then the most recent.
    pub fn grid_runs(&self) -> Vec<&RunModel> {
        let mut runs: Vec<&RunModel> = self.runs.values().collect();
        runs.sort_by(|a, b| {
            let key = |r: &RunModel| (!r.state().is_live(), std::cmp::Reverse(r.created_at()));
            key(a).cmp(&key(b)).then(b.id.cmp(&a.id))
        });
        runs
    }

    pub fn live_runs(&self) -> usize {
        self.runs.values().filter(|r| r.state().is_live()).count()
    }

    pub fn open_run(&self) -> Option<&RunModel> {
        self.runs.get(self.run.open.as_ref()?)
    }

    /// The marked runs that still exist, by id.
    pub fn marked_runs(&self) -> Vec<&RunModel> {
        self.list.marked.iter().filter_map(|id| self.runs.get(id)).collect()
    }

    /// The two runs the compare view's previews show: the first two marked.
    pub fn compared_runs(&self) -> Vec<&RunModel> {
        self.marked_runs().into_iter().take(2).collect()
    }

    pub fn update(&mut self, msg: Msg) {
        self.handle(msg);
        self.ask_for_preview();
    }

    /// Asks for the open run's latest preview when the run view shows one it does not have:
    /// another run, a newer preview, or another modality.
    fn ask_for_preview(&mut self) {
        if self.screen == Screen::Compare && self.compare.previews {
            self.ask_for_compared();
        }
        if self.screen != Screen::Run {
            return;
        }
        let Some((id, dir, previews)) = self.open_run().map(|r| (r.id.clone(), r.dir.clone(), r.previews)) else {
            return;
        };
        if previews == 0 {
            return;
        }
        let pane = &mut self.preview;
        let wanted = (id.clone(), previews, pane.view.modality, pane.view.epoch);
        if pane.asked.as_ref() == Some(&wanted) {
            return;
        }
        if pane.shown.as_ref().is_some_and(|p| p.run != id) {
            pane.shown = None;
            pane.view.slice = None;
            pane.view.epoch = None;
        }
        if pane.shown.is_none() {
            pane.status = Some("loading the preview…".to_string());
        }
        self.effects.push(Effect::LoadPreview {
            run: id,
            dir,
            previews,
            modality: pane.view.modality,
            epoch: pane.view.epoch,
        });
        pane.asked = Some(wanted);
    }

    /// Asks for the latest previews of the compared runs that are not loaded or are stale.
    fn ask_for_compared(&mut self) {
        let modality = self.preview.view.modality;
        let wanted: Vec<(String, PathBuf, u32)> = self
            .compared_runs()
            .iter()
            .filter(|r| r.previews > 0)
            .map(|r| (r.id.clone(), r.dir.clone(), r.previews))
            .collect();
        let compare = &mut self.compare;
        compare
            .shown
            .retain(|id, p| p.modality == modality && wanted.iter().any(|w| &w.0 == id));
        for (run, dir, previews) in wanted {
            let asked = (run.clone(), previews, modality);
            if compare.asked.contains(&asked) {
                continue;
            }
            compare.asked.retain(|a| a.0 != run);
            compare.asked.push(asked);
            self.effects.push(Effect::LoadPreview {
                run,
                dir,
                previews,
                modality,
                epoch: None,
            });
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Terminal(Event::Key(key)) if key.kind != KeyEventKind::Release => self.key(key),
            Msg::Terminal(Event::Mouse(mouse)) => self.mouse(mouse.kind, mouse.column, mouse.row),
            Msg::Terminal(Event::Resize(width, height)) => {
                self.size = (width, height);
                self.dirty = true;
            }
            Msg::Terminal(_) => {}
            Msg::Notice(notice) => {
                self.notice.keep(notice);
                self.dirty = true;
            }
            Msg::Experiments(entries) => {
                self.experiments.replace(entries);
                self.dirty = true;
            }
            Msg::Watch(watch) => self.watch(*watch),
            Msg::Queued {
                runs,
                resume,
                sweep,
                job,
            } => {
                self.queued(runs, resume, sweep, job);
                self.dirty = true;
            }
            Msg::Preview {
                run,
                previews,
                modality,
                epoch,
                result,
            } => self.preview_loaded(run, previews, modality, epoch, result),
            Msg::Editor(Ok(editor)) => {
                self.editor = Some(*editor);
                self.dirty = true;
            }
            Msg::Editor(Err(error)) => {
                self.say(error);
                self.dirty = true;
            }
            Msg::Saved { path, outcome } => {
                if let Some(editor) = &mut self.editor {
                    editor.saved(path, outcome);
                }
                self.dirty = true;
            }
            Msg::Failed(message) => {
                self.say(message);
                self.dirty = true;
            }
            Msg::Quit => self.quit = true,
        }
    }

    /// Runs were queued (or submitted) from here: a single run opens, a sweep's runs show
    /// in the list.
    fn queued(&mut self, runs: Vec<(String, PathBuf)>, resume: bool, sweep: Option<String>, job: Option<String>) {
        for (id, dir) in &runs {
            self.runs
                .entry(id.clone())
                .or_insert_with(|| RunModel::new(id.clone(), dir.clone()));
        }
        match (runs.as_slice(), sweep) {
            ([(id, _)], None) => {
                // Short, and true whether the supervisor starts it at once or it waits: its
                // state in the run view says which.
                let what = if resume { "resume of " } else { "" };
                match &job {
                    Some(job) => self.say(format!("submitted {what}{id} to Slurm as job {job}")),
                    None => self.say(format!("queued {what}{id}")),
                }
                self.list.selected = Some(id.clone());
                self.run.open = Some(id.clone());
                self.screen = Screen::Run;
            }
            (runs, sweep) => {
                let sweep = sweep.unwrap_or_default();
                match &job {
                    Some(job) => self.say(format!(
                        "submitted {} runs of sweep {sweep} to Slurm (job {job})",
                        runs.len()
                    )),
                    None => self.say(format!("queued {} runs of sweep {sweep}", runs.len())),
                }
                self.list.selected = runs.first().map(|(id, _)| id.clone());
                self.screen = Screen::Runs;
            }
        }
    }

    /// A preview arrived: for the run view, the compare view, or neither any more.
    fn preview_loaded(
        &mut self,
        run: String,
        previews: u32,
        modality: crate::experiment::Modality,
        epoch: Option<u32>,
        result: Result<Option<Box<crate::runs::preview::PreviewData>>, String>,
    ) {
        let mut for_run = self.preview.asked.as_ref() == Some(&(run.clone(), previews, modality, epoch));
        let compared = epoch.is_none() && self.compare.asked.contains(&(run.clone(), previews, modality));
        // Asked for by both views: the one on screen has it, the other asks again.
        if for_run && compared && self.screen == Screen::Compare {
            for_run = false;
            self.preview.asked = None;
        }
        match result {
            Ok(Some(data)) if for_run => {
                self.preview.shown = Some(Preview::new(*data));
                self.preview.status = None;
            }
            Ok(Some(data)) if compared => {
                self.compare.shown.insert(run, Preview::new(*data));
            }
            Ok(None) if for_run => self.preview.status = Some("no preview written yet".to_string()),
            Err(error) if for_run => self.preview.status = Some(error),
            Err(error) if compared => self.say(format!("{run}: {error}")),
            _ => {}
        }
        self.dirty |= for_run || compared;
    }

    fn watch(&mut self, mut watch: Watch) {
        self.now = watch.time;
        // Draw only what changed on screen: news of runs, the queue, a notice expiring, the
        // host's figures as shown, or clocks of live runs.
        let mut changed = !watch.runs.is_empty() || !watch.removed.is_empty() || watch.queue.is_some();
        changed |= self.notice.tick(watch.time);
        if let Some(host) = watch.host {
            changed |= self.host.is_none_or(|old| host_figures(&old) != host_figures(&host));
            self.host = Some(host);
        }
        if let Some(machine) = watch.machine.take() {
            // Memory moves at every look: it redraws only the machine screen.
            changed |=
                !machine.same_listing(&self.machine) || (self.screen == Screen::Machine && machine != self.machine);
            self.machine = machine;
        }
        for applied in watch.apply_runs(&mut self.runs) {
            if let Some(warning) = applied.warning {
                self.notice.say(format!("⚠ {warning}"));
            }
            if applied.charts {
                self.charts_asked.remove(&applied.id);
            }
        }
        if self.list.selected.as_ref().is_none_or(|id| !self.runs.contains_key(id)) {
            self.list.selected = self.visible_runs().first().map(|r| r.id.clone());
        }
        // Clocks tick while runs are live; otherwise only news redraws.
        self.dirty |= changed || self.runs.values().any(|run| run.state().is_live());
    }

    /// Shows a notice in the key bar for a few seconds.
    fn say(&mut self, notice: String) {
        if self.messages.len() == MESSAGES {
            self.messages.pop_front();
        }
        self.messages.push_back((Utc::now(), notice.clone()));
        self.notice.say(notice);
    }

    /// Says what a part's key handler asked to; whether the key was one of its.
    fn handled(&mut self, handled: Handled) -> bool {
        match handled {
            Handled::No => false,
            Handled::Yes => true,
            Handled::Say(text) => {
                self.say(text);
                true
            }
        }
    }

    fn key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        self.dirty = true;
        if self.overlay_key(key) {
            return;
        }
        if self.list.filtering {
            self.list.filter_key(key.code, &self.runs);
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.show_help = true,
            KeyCode::Char('1') => self.screen = Screen::Experiments,
            KeyCode::Char('2') => self.screen = Screen::Runs,
            KeyCode::Char('3') => self.screen = Screen::Grid,
            KeyCode::Char('4') => self.screen = Screen::Compare,
            KeyCode::Char('5') => self.screen = Screen::Machine,
            KeyCode::Tab => {
                self.screen = match self.screen {
                    Screen::Experiments => Screen::Runs,
                    Screen::Runs | Screen::Run => Screen::Grid,
                    Screen::Grid => Screen::Compare,
                    Screen::Compare => Screen::Machine,
                    Screen::Machine => Screen::Experiments,
                }
            }
            KeyCode::Char('t') => self.next_theme(),
            KeyCode::Char('N') => self.show_messages = true,
            KeyCode::Char('m') => {
                self.settings.chart_marker = self.settings.chart_marker.next();
                self.say(format!("chart lines: {}", self.settings.chart_marker.name()));
                self.effects.push(Effect::SaveSettings(self.settings.clone()));
            }
            KeyCode::Char('L') => self.run.log_scale = !self.run.log_scale,
            KeyCode::Char('d') => self.run.lesion_wise_dice = !self.run.lesion_wise_dice,
            code => {
                let handled = match self.screen {
                    Screen::Experiments => self.experiments_key(code),
                    Screen::Runs => self.runs_key(code),
                    Screen::Run => self.run_key(code),
                    Screen::Grid => self.grid_key(code),
                    Screen::Compare => self.compare_key(code),
                    Screen::Machine => false,
                };
                if !handled {
                    self.dirty = false;
                }
            }
        }
    }

    /// A key while something lies over the screens (the help, the messages, a question, the
    /// form); whether it was theirs.
    fn overlay_key(&mut self, key: KeyEvent) -> bool {
        if self.show_help || self.show_messages {
            // Any key closes the help or the messages; one that means something (a screen,
            // q) also does what it means, so it is not swallowed.
            self.show_help = false;
            self.show_messages = false;
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Enter | KeyCode::F(1) | KeyCode::Char('?' | 'N')
            ) {
                return true;
            }
        }
        if let Some((id, halt)) = self.confirm.take() {
            if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                self.halt(&id, halt);
            } else {
                self.say(match halt {
                    Halt::Stop => format!("{id} not stopped"),
                    Halt::Kill => format!("{id} not killed"),
                });
            }
            return true;
        }
        if let Some(editor) = &mut self.editor {
            use super::editor::Action;
            match editor.key(key) {
                Action::None => {}
                Action::Close => self.editor = None,
                Action::Save { path, text, overwrite } => {
                    self.effects.push(Effect::SaveExperiment { path, text, overwrite })
                }
                Action::Launch(path) => {
                    self.editor = None;
                    self.say(format!("launching {}…", path.display()));
                    self.effects.push(Effect::Launch(path));
                }
            }
            return true;
        }
        false
    }

    fn experiments_key(&mut self, code: KeyCode) -> bool {
        match self.experiments.key(code) {
            ExperimentKey::Ignored => return false,
            ExperimentKey::Moved => {}
            ExperimentKey::Launch(launcher) => self.launch_selected(launcher),
            ExperimentKey::Clone => {
                if let Some(entry) = self.experiments.selected() {
                    let shown = entry.path.strip_prefix(self.workspace.root()).unwrap_or(&entry.path);
                    self.effects.push(Effect::Clone {
                        source: entry.path.clone(),
                        from: shown.display().to_string(),
                        base: entry.name.clone(),
                    });
                }
            }
            ExperimentKey::Edit => {
                if let Some(entry) = self.experiments.selected() {
                    self.effects.push(Effect::EditFile(entry.path.clone()));
                }
            }
        }
        true
    }

    fn launch_selected(&mut self, launcher: Option<crate::experiment::LauncherKind>) {
        let Some(entry) = self.experiments.selected() else {
            return;
        };
        let name = entry.name.clone();
        match &entry.status {
            ExperimentStatus::Ready(_) => {
                let path = entry.path.clone();
                match launcher {
                    Some(kind) => {
                        self.effects.push(Effect::LaunchOn(path, kind));
                        self.say(format!("submitting {name} to Slurm…"));
                    }
                    None => {
                        self.effects.push(Effect::Launch(path));
                        self.say(format!("launching {name}…"));
                    }
                }
            }
            ExperimentStatus::Missing(_, problems) => {
                let why = problems.first().cloned().unwrap_or_default();
                self.say(format!("cannot launch {name} yet: {why}"));
            }
            ExperimentStatus::Invalid(_) => {
                self.say(format!("cannot launch {name}: fix the errors shown first"));
            }
        }
    }

    fn runs_key(&mut self, code: KeyCode) -> bool {
        let handled = self.list.key(code, &self.runs);
        if self.handled(handled) {
            return true;
        }
        match code {
            KeyCode::Enter | KeyCode::Char('l') | KeyCode::Right => self.open_selected(),
            KeyCode::Esc => self.screen = Screen::Experiments,
            code => return self.run_action(code),
        }
        true
    }

    /// The keys that act on a run, the same in the run list and the run view: stop, kill,
    /// resume, move in the queue, hold, clone its experiment, edit (it is frozen).
    fn run_action(&mut self, code: KeyCode) -> bool {
        match code {
            KeyCode::Char('x') => self.stop_selected(),
            KeyCode::Char('K') => self.ask_kill(),
            KeyCode::Char('r') => self.resume_selected(),
            KeyCode::Char('+') => self.requeue(QueueChange::Earlier),
            KeyCode::Char('-') => self.requeue(QueueChange::Later),
            KeyCode::Char('p') => self.requeue(QueueChange::Hold),
            KeyCode::Char('c') => self.clone_run(),
            KeyCode::Char('e') => self.say_frozen(),
            _ => return false,
        }
        true
    }

    fn compare_key(&mut self, code: KeyCode) -> bool {
        if code == KeyCode::Char('v') {
            self.compare.previews = !self.compare.previews;
            if self.compare.previews && self.compared_runs().len() < 2 {
                self.say("mark two runs to see their previews side by side".to_string());
            }
            return true;
        }
        if self.compare.previews && self.preview_key(code) {
            return true;
        }
        if code == KeyCode::Esc {
            self.screen = Screen::Runs;
            return true;
        }
        let handled = self.compare.key(code, &mut self.list.marked);
        self.handled(handled)
    }

    fn run_key(&mut self, code: KeyCode) -> bool {
        // Esc leaves the full-screen preview first, then the run.
        if code == KeyCode::Esc && self.preview.full {
            self.preview.full = false;
            return true;
        }
        if code == KeyCode::Char('v') {
            self.preview.full = !self.preview.full;
            if self.open_run().is_some_and(|r| r.previews == 0) {
                self.say("no preview written yet: the trainer writes one at each validation".to_string());
            }
            return true;
        }
        if self.preview_key(code) {
            return true;
        }
        let handled = self.run.key(code);
        if self.handled(handled) {
            return true;
        }
        match code {
            KeyCode::Esc | KeyCode::Backspace => self.screen = Screen::Runs,
            KeyCode::Down | KeyCode::Char('j') => self.step_open_run(1),
            KeyCode::Up | KeyCode::Char('k') => self.step_open_run(-1),
            code => return self.run_action(code),
        }
        true
    }

    /// Opens the run `by` rows away in the run list.
    fn step_open_run(&mut self, by: isize) {
        self.list.move_by(&self.runs, by);
        self.run.open = self.list.selected.clone();
    }

    /// The preview's keys, on the preview the screen shows; whether `code` was one.
    fn preview_key(&mut self, code: KeyCode) -> bool {
        let on_screen = match self.screen {
            Screen::Compare => self.compared_runs().first().and_then(|r| self.compare.shown.get(&r.id)),
            _ => self.preview.shown.as_ref(),
        };
        let slices = self.preview.slices(on_screen);
        let epochs = self.open_run().map(|r| r.preview_epochs.clone()).unwrap_or_default();
        let handled = self.preview.key(code, slices, &epochs);
        self.handled(handled)
    }

    /// Opens the editor on a clone of the target run's frozen experiment.
    fn clone_run(&mut self) {
        let Some(run) = self.target_run() else {
            return;
        };
        let effect = Effect::Clone {
            source: run.dir.join(crate::run::RunDir::EXPERIMENT),
            from: format!("run {}", run.id),
            base: run.name.clone(),
        };
        self.effects.push(effect);
    }

    fn say_frozen(&mut self) {
        self.say("a run's experiment is frozen as it was launched: c clones it into a new experiment".to_string());
    }

    fn grid_key(&mut self, code: KeyCode) -> bool {
        let runs: Vec<String> = self.grid_runs().iter().map(|r| r.id.clone()).collect();
        let at = self
            .list
            .selected
            .as_ref()
            .and_then(|id| runs.iter().position(|r| r == id))
            .unwrap_or(0);
        let columns = self.hits.grid_columns.unwrap_or(1).max(1);
        let to = match code {
            KeyCode::Right | KeyCode::Char('l') => at + 1,
            KeyCode::Left | KeyCode::Char('h') => at.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => at + columns,
            KeyCode::Up | KeyCode::Char('k') => at.saturating_sub(columns),
            KeyCode::Enter => {
                self.open_selected();
                return true;
            }
            KeyCode::Esc => {
                self.screen = Screen::Runs;
                return true;
            }
            KeyCode::Char('x' | 'K') => return self.run_action(code),
            _ => return false,
        };
        if let Some(id) = runs.get(to.min(runs.len().saturating_sub(1))) {
            self.list.selected = Some(id.clone());
        }
        true
    }

    fn open_selected(&mut self) {
        if let Some(id) = &self.list.selected
            && self.runs.contains_key(id)
        {
            self.run.open = Some(id.clone());
            // A run opens in its panels, not in the last one's full-screen preview.
            self.preview.full = false;
            self.screen = Screen::Run;
        }
    }

    fn next_theme(&mut self) {
        let at = self.themes.iter().position(|t| t.name == self.theme.name).unwrap_or(0);
        if let Some(theme) = self.themes.get((at + 1) % self.themes.len().max(1)) {
            self.theme = theme.clone();
            self.settings.theme = Some(theme.name.clone());
            self.say(format!("theme: {}", theme.name));
            self.effects.push(Effect::SaveSettings(self.settings.clone()));
        }
    }

    /// Clicks select what was drawn under them (a second click on a run opens it); the
    /// wheel moves the selection.
    fn mouse(&mut self, kind: MouseEventKind, column: u16, row: u16) {
        let step = match kind {
            MouseEventKind::ScrollDown => 1,
            MouseEventKind::ScrollUp => -1,
            MouseEventKind::Down(MouseButton::Left) => 0,
            _ => return,
        };
        self.dirty = true;
        match (self.screen, step, self.hits.at(column, row).cloned()) {
            (Screen::Experiments, 0, Some(Target::Experiment(index))) => self.experiments.selected = index,
            (Screen::Experiments, 0, _) => self.dirty = false,
            (Screen::Experiments, step, _) => self.experiments.move_by(step),
            (Screen::Runs, 0, Some(Target::Run(id))) => {
                if self.list.selected.as_ref() == Some(&id) {
                    self.open_selected();
                } else {
                    self.list.selected = Some(id);
                }
            }
            (Screen::Runs, step, _) if step != 0 => self.list.move_by(&self.runs, step),
            (Screen::Run, step, _) if step != 0 => self.step_open_run(step),
            _ => self.dirty = false,
        }
    }
}

/// The host's figures as the header and the run view show them (rounded), so a change too
/// small to see draws nothing.
fn host_figures(host: &HostSample) -> [i64; 6] {
    let tenths = |v: f64| (v * 10.0).round() as i64;
    [
        host.cpu_percent.round() as i64,
        tenths(host.used_memory_mb / 1000.0),
        (host.total_memory_mb / 1000.0).round() as i64,
        tenths(host.load[0]),
        tenths(host.load[1]),
        tenths(host.load[2]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::catalog::ExperimentEntry;

    fn key(code: KeyCode) -> Msg {
        Msg::Terminal(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn entry(name: &str) -> ExperimentEntry {
        ExperimentEntry {
            path: PathBuf::from(format!("experiments/{name}.toml")),
            name: name.to_string(),
            status: ExperimentStatus::Invalid(vec![]),
            sweep: None,
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
        assert_eq!(app.experiments.selected, 1);
        app.update(key(KeyCode::Char('g')));
        assert_eq!(app.experiments.selected, 0);
        app.update(key(KeyCode::Up));
        assert_eq!(app.experiments.selected, 0);
    }

    #[test]
    fn selection_follows_its_file_when_the_list_changes() {
        let mut app = app();
        app.update(Msg::Experiments(vec![entry("b"), entry("c")]));
        app.update(key(KeyCode::Down));
        app.update(Msg::Experiments(vec![entry("a"), entry("b"), entry("c")]));
        assert_eq!(app.experiments.selected().map(|e| e.name.as_str()), Some("c"));
        app.update(Msg::Experiments(vec![]));
        assert_eq!(app.experiments.selected, 0);
        assert!(app.experiments.selected().is_none());
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
        app.drawn(Hits::default());
        app.update(key(KeyCode::Char('z')));
        assert!(!app.needs_redraw());
        app.update(key(KeyCode::Char('j')));
        assert!(app.needs_redraw());
    }
}
