//! The dashboard's worker thread: the effects that run other programs or may block (queueing
//! and submitting runs, `sbatch`, `scontrol`, signalling a trainer, editing the queue, starting
//! the supervisor). The UI thread hands them over and draws on; each answers with [`Msg`]s on
//! the dashboard's one channel, then asks the watcher to look. Effects run one at a time, in
//! the order they were asked for, so queue edits keep their order.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread;

use anyhow::Context;

use super::app::{Effect, Msg, QueueChange};
use crate::experiment::LauncherKind;
use crate::run::RunDir;
use crate::runs::watch;
use crate::schedule::queue::{EditError, Queue, Resumed};
use crate::workspace::Workspace;

/// Starts the worker; effects sent to the returned channel are carried out in order.
pub fn spawn(workspace: Workspace, tx: Sender<Msg>, look: Sender<watch::Request>) -> anyhow::Result<Sender<Effect>> {
    let (effects, jobs) = mpsc::channel::<Effect>();
    thread::Builder::new()
        .name("effects".into())
        .spawn(move || {
            for effect in jobs {
                for msg in carry_out(&workspace, effect) {
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                let _ = look.send(watch::Request::Look);
            }
        })
        .context("cannot start the effects thread")?;
    Ok(effects)
}

/// Carries one effect out; what the dashboard should hear of it.
fn carry_out(workspace: &Workspace, effect: Effect) -> Vec<Msg> {
    match effect {
        Effect::Launch(file) => launch(workspace, &file, None),
        Effect::LaunchOn(file, kind) => launch(workspace, &file, Some(kind)),
        Effect::Resume { id, dir } => resume(workspace, id, dir),
        Effect::Halt {
            id,
            dir,
            pid,
            pid_start,
            halt,
        } => failed(&id, crate::schedule::launcher::halt_run(&dir, pid, pid_start, halt)),
        Effect::HoldJob { id, job, hold } => failed(&id, crate::schedule::launcher::slurm::hold(&job, hold)),
        Effect::Requeue { id, change } => failed(&id, requeue(workspace, &id, change)),
        // The others never come here: the UI thread carries them out itself (`perform`).
        _ => Vec::new(),
    }
}

/// What a run's failed action says, naming the run; nothing when it went through.
fn failed<T, E: std::fmt::Display>(id: &str, done: Result<T, E>) -> Vec<Msg> {
    done.err()
        .map(|error| Msg::Failed(format!("{id}: {error:#}")))
        .into_iter()
        .collect()
}

/// Queues the runs of an experiment file, or submits them to Slurm.
fn launch(workspace: &Workspace, file: &Path, launcher: Option<LauncherKind>) -> Vec<Msg> {
    let queued = match Queue::new(workspace).add(workspace, file, launcher) {
        Ok(queued) => queued,
        Err(error) => return vec![Msg::Failed(format!("cannot launch {}: {error:#}", file.display()))],
    };
    let job = queued
        .iter()
        .filter_map(|q| q.submitted.as_ref()?.job.clone())
        .next()
        .map(|job| match queued.len() {
            1 => job,
            _ => job.split('_').next().unwrap_or_default().to_string(),
        });
    let local = queued.iter().any(|q| q.submitted.is_none());
    let mut said = vec![Msg::Queued {
        runs: queued
            .iter()
            .map(|q| (q.run.id(), q.run.path().to_path_buf()))
            .collect(),
        resume: false,
        sweep: queued.first().and_then(|q| q.sweep.as_ref()).map(|t| t.sweep.clone()),
        job,
    }];
    if local {
        said.extend(supervise(workspace));
    }
    said
}

/// Queues a stopped, failed or lost run to continue (or submits it again to Slurm).
fn resume(workspace: &Workspace, id: String, dir: PathBuf) -> Vec<Msg> {
    let run = RunDir::open(&dir);
    match Queue::new(workspace).resume(workspace, &run) {
        Ok(resumed) => {
            let job = match resumed {
                Resumed::Submitted { job } => Some(job),
                Resumed::Queued => None,
            };
            let queued = job.is_none();
            let mut said = vec![Msg::Queued {
                runs: vec![(id, dir)],
                resume: true,
                sweep: None,
                job,
            }];
            if queued {
                said.extend(supervise(workspace));
            }
            said
        }
        Err(error) => vec![Msg::Failed(format!("cannot resume {id}: {error:#}"))],
    }
}

/// Makes sure the workspace's supervisor is running to start what was queued.
fn supervise(workspace: &Workspace) -> Option<Msg> {
    crate::supervisor::ensure(workspace)
        .err()
        .map(|error| Msg::Failed(format!("cannot start the supervisor: {error:#}")))
}

fn requeue(workspace: &Workspace, id: &str, change: QueueChange) -> anyhow::Result<()> {
    let queue = Queue::new(workspace);
    let edited = match change {
        QueueChange::Earlier => queue.move_by(id, -1).map(drop),
        QueueChange::Later => queue.move_by(id, 1).map(drop),
        QueueChange::Hold => queue.set_paused(id, true),
        QueueChange::Release => queue.set_paused(id, false),
        QueueChange::Remove => queue.remove(id).map(drop),
    };
    match edited {
        // It started (or left) between the screen and the key: nothing to change.
        Err(EditError::NotQueued(_)) => anyhow::bail!("not in the queue any more"),
        Err(EditError::Failed(error)) => Err(error),
        Ok(()) if change == QueueChange::Release => crate::supervisor::ensure(workspace).map(drop),
        Ok(()) => Ok(()),
    }
}
