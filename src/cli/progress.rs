//! A progress line on stderr for `put` and `get` of more than 16 MiB, drawn
//! only when stderr is a terminal (never into a log file or a pipe).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Transfers up to this size draw nothing.
const THRESHOLD: u64 = 16 << 20;
/// Least time between two redraws.
const REDRAW: Duration = Duration::from_millis(100);

/// The progress of one transfer.
pub(super) struct Progress {
    label: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    /// A transfer of `total` bytes (`None`: unknown, as from stdin).
    pub(super) fn new(label: &'static str, total: Option<u64>) -> Self {
        Self {
            label,
            total,
            done: 0,
            started: Instant::now(),
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Counts `n` more bytes, redrawing at most every 100 ms.
    pub(super) fn add(&mut self, n: u64) {
        self.done += n;
        if !shows(self.terminal, self.total, self.done) {
            return;
        }
        if self.drawn.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.drawn = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", self.line());
        let _ = err.flush();
    }

    /// Ends the line, if one was drawn.
    pub(super) fn finish(&mut self) {
        if self.drawn.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "\r\x1b[2K{}", self.line());
        }
    }

    fn line(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = mib(self.done) / secs;
        match self.total {
            Some(total) if total > 0 => format!(
                "{} {:.1}/{:.1} MiB {:>3}% {rate:.1} MiB/s",
                self.label,
                mib(self.done),
                mib(total),
                self.done.saturating_mul(100) / total
            ),
            _ => format!("{} {:.1} MiB {rate:.1} MiB/s", self.label, mib(self.done)),
        }
    }
}

/// Whether a transfer draws a progress line: on a terminal, once it is
/// known to be over [`THRESHOLD`] (its declared total, or the bytes so far).
fn shows(terminal: bool, total: Option<u64>, done: u64) -> bool {
    terminal && total.unwrap_or(done).max(done) > THRESHOLD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_large_transfers_on_a_terminal() {
        assert!(!shows(false, Some(1 << 30), 1 << 30));
        assert!(!shows(true, Some(THRESHOLD), 0));
        assert!(shows(true, Some(THRESHOLD + 1), 0));
        assert!(!shows(true, None, THRESHOLD));
        assert!(shows(true, None, THRESHOLD + 1));
    }
}
