//! What readers make of run directories: the read side of runs, shared by the dashboard,
//! the commands that answer questions about runs (`runs`, `queue`, `report`, `export`) and
//! the supervisor. Nothing here draws or reads keys.
//!
//! A run directory holds what the trainer wrote ([`crate::run`], [`crate::run::events`]);
//! [`watch`] notices run directories and reads what their files gained, [`model`] folds
//! those records into a [`RunModel`] per run, [`history`] keeps chart series bounded, and
//! [`preview`] loads a run's latest prediction with its case.

pub mod config;
pub mod history;
pub mod lists;
pub mod machine;
pub mod model;
pub mod preview;
pub mod summary;
pub mod watch;

pub use model::{RunModel, RunState};
pub use watch::snapshot;

/// Seconds as `42s`, `3m07s`, `2h05m`, `3d04h`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `text` in at most `width` characters, cut from the left (`…` first): the end of a run id or
/// a file name is what tells it from its neighbours.
pub fn cut_left(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width || width == 0 {
        return text.to_string();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_ends() {
        assert_eq!(cut_left("quick-demo-2.toml", 10), "…mo-2.toml");
        assert_eq!(cut_left("short", 10), "short");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(format_duration(42.4), "42s");
        assert_eq!(format_duration(187.0), "3m07s");
        assert_eq!(format_duration(7500.0), "2h05m");
        assert_eq!(format_duration(273600.0), "3d04h");
    }
}
