//! The progress bar of a run (indicatif, on stderr, drawn only when stderr
//! is a terminal).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::Live;

/// A bar over the run's duration, with answers and errors so far.
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub(crate) fn start(duration: Duration, live: Arc<Live>) -> Self {
        let total_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {elapsed:>4}/{duration:4} {msg}")
        {
            bar.set_style(style);
        }
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                shown.set_position(ms.min(total_ms));
                shown.set_message(format!(
                    "ok {}  errors {}",
                    live.ok.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed)
                ));
            }
        });
        Self { bar, ticker }
    }

    pub(crate) fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
