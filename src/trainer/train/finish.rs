//! The end of a run, as its epochs ended: stopped at the end of a halving rung for the sweep
//! to decide, checkpointed where a stop came, or (completed, or stopped early) with the
//! evaluation of its best weights. `run_finished` is always the last record.

use chrono::Utc;

use segtop::run::events::{Event, Outcome};

use crate::evaluate;

use super::{End, Finish, Trainer};

impl Trainer<'_> {
    /// Ends the run as `end` says.
    pub(super) fn finish(mut self, end: End) -> anyhow::Result<Finish> {
        match end {
            End::Rung { rung, until } => {
                // Stopped, validated and checkpointed at the end of its rung: the sweep decides.
                let reason = format!(
                    "{} {rung} ({until}): waiting for the sweep to promote or prune it",
                    segtop::schedule::halving::RUNG_END
                );
                self.console.line(&reason);
                self.run_finished(Outcome::Stopped, Some(reason))?;
                Ok(Finish::Stopped {
                    time_limit: false,
                    steps: self.steps(),
                })
            }
            End::Stopped { at } => self.stopped(&at),
            End::Completed => {
                self.evaluate_best()?;
                self.run_finished(Outcome::Completed, None)?;
                Ok(Finish::Completed)
            }
            End::EarlyStopped => {
                self.evaluate_best()?;
                self.run_finished(Outcome::EarlyStopped, None)?;
                Ok(Finish::EarlyStopped)
            }
        }
    }

    /// Stopped by a signal `at` some point: a checkpoint of where training is, and whether it
    /// was the Slurm job's time limit (the run then goes on in a new job).
    fn stopped(&mut self, at: &str) -> anyhow::Result<Finish> {
        let path = self.save_checkpoint(false)?;
        self.events.emit(&Event::Checkpoint {
            time: Utc::now(),
            epoch: self.state.epoch + 1,
            path,
            best: false,
        })?;
        self.console.line(&format!("stopped at {at}: checkpoint written"));
        let time_limit = self.stop.at_time_limit();
        let reason = if time_limit {
            "the Slurm job's time limit is near"
        } else {
            "asked to stop"
        };
        self.run_finished(Outcome::Stopped, Some(reason.to_string()))?;
        Ok(Finish::Stopped {
            time_limit,
            steps: self.steps(),
        })
    }

    /// The end-of-run evaluation of the best weights (else the last), on the validation
    /// cases, within what the time budget leaves.
    fn evaluate_best(&mut self) -> anyhow::Result<()> {
        let best_epoch = if self.run.best_weights().exists() {
            self.state.best_epoch.unwrap_or(self.state.epoch)
        } else {
            self.state.epoch
        };
        let deadline = self.budget.as_ref().map(|b| b.deadline(self.used()));
        let console = &self.console;
        evaluate::FinalEvaluation {
            run: self.run,
            experiment: self.experiment,
            cases: &self.cases.validation,
            best_epoch,
            threads: self.threads as usize,
            deadline,
            say: &|text| console.line(text),
        }
        .run(&mut self.network.vs, &self.network.net, &mut self.events)
    }

    /// The run's last record. The resource reporter ends first, so that `run_finished` is the
    /// last line.
    fn run_finished(&mut self, outcome: Outcome, reason: Option<String>) -> anyhow::Result<()> {
        self.resources = None;
        self.events.emit(&Event::RunFinished {
            time: Utc::now(),
            outcome,
            best_dice: self.state.best_dice,
            reason,
            seconds: self.used(),
        })?;
        Ok(())
    }

    /// Steps trained in this session.
    fn steps(&self) -> u64 {
        self.state.global_step - self.first_step
    }
}
