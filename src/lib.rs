//! segtop: a terminal experiment manager for training lightweight 3D U-Nets that segment
//! brain tumours in MRI on ordinary CPUs.
//!
//! This library holds everything both binaries agree on and nothing that needs libtorch:
//! the experiment schema, themes, the run-directory layout and the event records a trainer
//! writes and the dashboard reads. The `segtop` binary (dashboard and light commands) uses
//! only this; the `segtop-train` binary adds the network on top.

#![deny(clippy::unwrap_used)]

pub mod budget;
pub mod config;
pub mod cost;
pub mod cpu;
pub mod dashboard;
pub mod data;
pub mod experiment;
pub mod graphics;
pub mod metrics;
pub mod package;
pub mod postprocess;
pub mod render;
pub mod run;
pub mod runs;
pub mod schedule;
pub mod settings;
pub mod supervisor;
pub mod theme;
pub mod workspace;
