//! Whole-screen tests of the dashboard in an 80x24 terminal.

use std::path::{Path, PathBuf};

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use segtop::dashboard::app::{App, ExperimentEntry, ExperimentStatus, Msg};
use segtop::dashboard::view;
use segtop::experiment::Experiment;
use segtop::theme::Theme;
use segtop::workspace::Workspace;

fn entry(name: &str, text: &str) -> ExperimentEntry {
    let path = PathBuf::from(format!("/ws/experiments/{name}.toml"));
    let status = match Experiment::parse(Path::new(&format!("experiments/{name}.toml")), text, Path::new("/ws")) {
        Ok(e) => ExperimentStatus::Ready(Box::new(e)),
        Err(error) => ExperimentStatus::Invalid(error.to_string().lines().map(str::to_string).collect()),
    };
    ExperimentEntry {
        path,
        name: name.to_string(),
        status,
    }
}

fn render(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    terminal.draw(|frame| view::draw(app, frame)).expect("draws");
    terminal.backend().to_string()
}

#[test]
fn experiment_list_with_a_valid_and_a_broken_file() {
    let mut app = App::new(Workspace::new("/ws"), Theme::default());
    app.update(Msg::Experiments(vec![
        entry("broken", "[data]\nroot = \"d\"\n[train]\noptimizer = 'adma'\n"),
        entry("lite", "[data]\nroot = \"data/brats\"\n[model]\nbase_filters = 8\n"),
    ]));
    insta::assert_snapshot!("broken_selected", render(&app));
    app.update(Msg::Terminal(crossterm::event::Event::Key(
        crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Down),
    )));
    insta::assert_snapshot!("lite_selected", render(&app));
}

#[test]
fn empty_workspace_says_where_it_looked() {
    let mut app = App::new(Workspace::new("/ws"), Theme::monochrome());
    app.update(Msg::Experiments(vec![]));
    let screen = render(&app);
    assert!(screen.contains("no *.toml files in"), "{screen}");
    assert!(screen.contains("/ws/experiments"), "{screen}");
}
