//! A terminal progress bar for training (loss, tokens/s, time left), drawn on stderr so that
//! stdout stays free for results; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::train::TrainProgress;

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(total_steps: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
            )
            .expect("valid template"),
        );
        Self { bar }
    }

    pub fn update(&self, p: &TrainProgress) {
        self.bar.set_length(p.total_steps as u64);
        self.bar.set_position(p.step as u64);
        self.bar.set_message(format!(
            "epoch {}  loss {:.4}  lr {:.2e}  {:.0} tok/s  {} left",
            p.epoch,
            p.loss,
            p.lr,
            p.tokens_per_s,
            fmt_duration(p.eta_s)
        ));
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}
