//! What the dashboard does to runs: stop (asking first), kill (asking first), resume, and
//! moving, holding or removing a queued one. Each becomes an [`Effect`] for the worker.

use super::{App, Effect, QueueChange, Screen};
use crate::run::process::Halt;
use crate::runs::model::{RunModel, RunState};

impl App {
    /// The run a stop or kill applies to: the open one in the run view, else the selected one.
    pub(super) fn target_run(&self) -> Option<&RunModel> {
        let id = if self.screen == Screen::Run {
            self.run.open.as_ref()
        } else {
            self.list.selected.as_ref()
        }?;
        self.runs.get(id)
    }

    pub(super) fn stop_selected(&mut self) {
        let Some(run) = self.target_run() else {
            return;
        };
        if run.observed.queue.is_some() {
            self.requeue(QueueChange::Remove);
        } else if run.state().is_active() && (run.pid.is_some() || run.observed.job.is_some()) {
            // On a shared server a long run is not to be interrupted by one stray key.
            self.confirm = Some((run.id.clone(), Halt::Stop));
        } else {
            let id = run.id.clone();
            self.halt(&id, Halt::Stop);
        }
    }

    /// Moves, holds, releases or removes the target run in the queue.
    pub(super) fn requeue(&mut self, change: QueueChange) {
        let Some(run) = self.target_run() else {
            return;
        };
        let id = run.id.clone();
        let Some(place) = &run.observed.queue else {
            match (run.observed.job.clone(), run.state(), change) {
                (Some(job), RunState::Pending, QueueChange::Hold) => {
                    let hold = !job.is_held();
                    self.say(if hold {
                        format!(
                            "holding {id}'s Slurm job {}: Slurm passes over it until p again",
                            job.id
                        )
                    } else {
                        format!("releasing {id}'s Slurm job {}", job.id)
                    });
                    self.effects.push(Effect::HoldJob { id, job: job.id, hold });
                }
                (Some(_), RunState::Pending, _) => self.say(format!("{id} waits in Slurm's queue, which Slurm orders")),
                (_, state, _) => self.say(format!("{id} is {}: not in the queue", state.name())),
            }
            return;
        };
        let change = match change {
            QueueChange::Hold if place.paused => QueueChange::Release,
            change => change,
        };
        self.say(match change {
            QueueChange::Earlier => format!("moving {id} up the queue"),
            QueueChange::Later => format!("moving {id} down the queue"),
            QueueChange::Hold => format!("holding {id}: the queue passes over it until p again"),
            QueueChange::Release => format!("released {id}"),
            QueueChange::Remove => format!("took {id} out of the queue"),
        });
        self.effects.push(Effect::Requeue { id, change });
    }

    pub(super) fn resume_selected(&mut self) {
        let Some(run) = self.target_run() else {
            return;
        };
        let (id, dir, state) = (run.id.clone(), run.dir.clone(), run.state());
        match state {
            RunState::Stopped | RunState::Failed | RunState::Lost => {
                self.effects.push(Effect::Resume { id: id.clone(), dir });
                self.say(format!("resuming {id} from its latest checkpoint…"));
            }
            state => self.say(format!("{id} is {}: nothing to resume", state.name())),
        }
    }

    pub(super) fn ask_kill(&mut self) {
        let Some(run) = self.target_run() else {
            return;
        };
        if run.state().is_active() && (run.pid.is_some() || run.observed.job.is_some()) {
            self.confirm = Some((run.id.clone(), Halt::Kill));
        } else {
            self.say(format!("{} is {}: nothing to kill", run.id, run.state().name()));
        }
    }

    pub(super) fn halt(&mut self, id: &str, halt: Halt) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        let state = run.state();
        match (state.is_active(), run.pid.is_some() || run.observed.job.is_some()) {
            (true, true) => {
                self.effects.push(Effect::Halt {
                    id: id.to_string(),
                    dir: run.dir.clone(),
                    pid: run.pid,
                    pid_start: run.pid_start,
                    halt,
                });
                self.say(match (halt, state) {
                    (_, RunState::Pending) => format!("cancelling {id}'s Slurm job"),
                    (Halt::Stop, _) => format!("asked {id} to stop; it writes a checkpoint first"),
                    (Halt::Kill, _) => format!("killed {id}"),
                });
            }
            (true, false) => self.say(format!("{id} has no known process yet")),
            (false, _) => self.say(format!("{id} is {}: nothing to stop", state.name())),
        }
    }
}
