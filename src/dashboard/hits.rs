//! Where things were drawn: the views record each clickable row while drawing, and mouse
//! clicks are matched against the last frame's record, so a click hits what the user saw
//! whatever the layout (no geometry shared between the state and the views). The frame
//! also says which runs it drew charts for, so only those runs' histories are kept.

use ratatui::layout::{Position, Rect};

/// Something a click can land on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A row of the experiment list, by index.
    Experiment(usize),
    /// A run's row in the run list.
    Run(String),
}

/// The last frame's clickable areas, and the grid's shape for moving between cards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits {
    areas: Vec<(Rect, Target)>,
    /// Cards across the grid, when the grid was drawn.
    pub grid_columns: Option<usize>,
    /// Runs whose charts the frame drew (the run view's, the grid's cards, the compared):
    /// their histories are read, the others' let go.
    pub charted: Vec<String>,
}

impl Hits {
    pub fn add(&mut self, area: Rect, target: Target) {
        self.areas.push((area, target));
    }

    /// What was drawn at `column`, `row`.
    pub fn at(&self, column: u16, row: u16) -> Option<&Target> {
        let position = Position::new(column, row);
        self.areas
            .iter()
            .find(|(area, _)| area.contains(position))
            .map(|(_, target)| target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_click_finds_the_row_drawn_under_it() {
        let mut hits = Hits::default();
        hits.add(Rect::new(1, 3, 30, 1), Target::Run("a".into()));
        hits.add(Rect::new(1, 4, 30, 1), Target::Run("b".into()));
        assert_eq!(hits.at(10, 4), Some(&Target::Run("b".into())));
        assert_eq!(hits.at(0, 4), None, "the border is not the row");
        assert_eq!(hits.at(10, 5), None);
    }
}
