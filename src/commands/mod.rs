//! The `segtop` commands other than the dashboard.

pub mod data;
pub mod eval;
pub mod export;
pub mod package;
pub mod postprocess;
pub mod queue;
pub mod report;
pub mod runs;
pub mod top;
