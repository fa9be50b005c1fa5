//! Scheduling runs: what is waiting, what may start, and where it runs.
//!
//! - [`queue`]: the workspace's queue file and admission (cores and memory a run needs
//!   against what the machine has free);
//! - [`halving`]: successive-halving decisions, pure functions of the runs' records;
//! - [`launcher`]: starting, stopping and watching a trainer on this machine or on Slurm;
//! - [`machine`]: the machine's register of every segtop trainer on it, of every user and
//!   workspace, that admission counts;
//! - [`slurm`]: the Slurm commands themselves (`sbatch`, `squeue`, `sacct`, `scancel`).
//!
//! The process that carries all this out, [`crate::supervisor`], comes after the read model
//! ([`crate::runs`]), which it reads.

pub mod halving;
pub mod launcher;
pub mod machine;
pub mod queue;
pub mod slurm;
