//! Progress bars on stderr, only when stderr is a terminal and the user did not ask for quiet.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Hands out bars for long phases; every bar is hidden when progress is off. Bars of phases that
/// run at once (nodes and edges load on two threads) are drawn together, one line each.
#[derive(Debug, Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Progress on stderr unless `quiet` or stderr is not a terminal.
    pub fn stderr(quiet: bool) -> Progress {
        Progress { bars: (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new) }
    }

    pub fn hidden() -> Progress {
        Progress { bars: None }
    }

    /// A bar for a phase of `total` steps.
    pub fn bar(&self, phase: &str, total: u64) -> ProgressBar {
        let Some(bars) = &self.bars else { return ProgressBar::hidden() };
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {percent:>3}% {elapsed}")
            .expect("valid template")
            .progress_chars("=> ");
        bars.add(ProgressBar::new(total).with_style(style).with_prefix(phase.to_string()))
    }

    /// A spinner for a phase whose length is unknown.
    pub fn spinner(&self, phase: &str) -> ProgressBar {
        let Some(bars) = &self.bars else { return ProgressBar::hidden() };
        let bar = bars.add(ProgressBar::new_spinner().with_prefix(phase.to_string()));
        bar.set_style(ProgressStyle::with_template("{prefix:>12} {spinner} {elapsed}").expect("valid template"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }
}
