//! What the trainer shows in the foreground while it trains: the run's log lines and, on a
//! terminal, a progress bar for the current epoch.

use segtop::budget::clock;

use super::timestamped;

/// What the trainer shows in the foreground: timestamped lines, and on a terminal a progress
/// bar for the current epoch (step, loss, patches/s, time left in the run).
pub(super) struct Console {
    bar: indicatif::ProgressBar,
}

impl Console {
    pub(super) fn new() -> Console {
        use std::io::IsTerminal;
        let bar = if std::io::stdout().is_terminal() {
            let style = indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:24}] {pos}/{len}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stdout()).with_style(style)
        } else {
            indicatif::ProgressBar::hidden()
        };
        Console { bar }
    }

    pub(super) fn line(&self, text: &str) {
        let line = timestamped(text);
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub(super) fn epoch(&self, epoch: u32, epochs: u32, steps: u32) {
        self.bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar.set_length(u64::from(steps));
        self.bar.set_position(0);
    }

    pub(super) fn step(&self, step: u32, loss: f64, patches_per_s: f64, seconds_left: f64) {
        self.bar.set_position(u64::from(step));
        let left = clock(seconds_left);
        self.bar
            .set_message(format!("loss {loss:.4}  {patches_per_s:.2} patches/s  {left} left"));
    }
}
