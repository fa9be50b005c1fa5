//! Scheduling runs: what is waiting, what may start, and where it runs.
//!
//! - [`queue`]: the workspace's queue file, and starting what may start;
//! - [`admission`]: what may start (cores and memory a run needs against what the machine
//!   has free, other users' turns counted) and why the rest waits;
//! - [`halving`]: successive-halving decisions, pure functions of the runs' records;
//! - [`launcher`]: starting, stopping and watching a trainer on this machine or on Slurm;
//! - [`machine`]: the machine's register of every segtop trainer on it, of every user and
//!   workspace, that admission counts;
//! - [`shares`]: fair share between users: the machine-wide weights and the order their
//!   waiting runs start in;
//! - [`overview`]: what the machine is doing at one look (`segtop top`, the machine screen);
//! - [`slurm`]: the Slurm commands themselves (`sbatch`, `squeue`, `sacct`, `scancel`).
//!
//! The process that carries all this out, [`crate::supervisor`], comes after the read model
//! ([`crate::runs`]), which it reads.

pub mod admission;
pub mod halving;
pub mod launcher;
pub mod machine;
pub mod overview;
pub mod queue;
pub mod shares;
pub mod slurm;
