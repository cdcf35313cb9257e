//! A one-line progress display on stderr for long work (convert, pull), fed by the library's
//! progress callback. Drawn only when stderr is a terminal: pipes, logs and tests stay quiet.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use composefs_storage::layer::Progress;

/// Redraw at most this often.
const REDRAW: Duration = Duration::from_millis(100);

pub struct ProgressLine {
    what: &'static str,
    /// Total bytes expected, when known (a drawn bar); else only counts and rate.
    total: Option<u64>,
    start: Instant,
    last: Option<Instant>,
    drawn: bool,
}

impl ProgressLine {
    /// `None` when stderr is not a terminal (or `quiet`): then nothing is ever drawn.
    pub fn new(what: &'static str, total: Option<u64>, quiet: bool) -> Option<ProgressLine> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        Some(ProgressLine { what, total, start: Instant::now(), last: None, drawn: false })
    }

    /// Records progress; redraws when the last redraw is old enough. Never cancels.
    pub fn update(&mut self, p: Progress) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < REDRAW) {
            return true;
        }
        self.last = Some(now);
        let secs = now.duration_since(self.start).as_secs_f64().max(1e-3);
        let rate = p.bytes as f64 / secs;
        let bar = match self.total {
            Some(total) if total > 0 => {
                let frac = (p.bytes as f64 / total as f64).clamp(0.0, 1.0);
                let filled = (frac * 24.0) as usize;
                format!("[{}{}] {:3.0}% ", "#".repeat(filled), "-".repeat(24 - filled), frac * 100.0)
            }
            _ => String::new(),
        };
        let mut err = std::io::stderr().lock();
        // \r + clear-to-end-of-line: one line, rewritten in place.
        let _ = write!(
            err,
            "\r\x1b[K{} {bar}{}, {} entries, {}/s",
            self.what,
            human_bytes(p.bytes),
            p.entries,
            human_bytes(rate as u64)
        );
        let _ = err.flush();
        self.drawn = true;
        true
    }

    /// Clears the line (done or failed), so the result prints on a clean line.
    pub fn finish(self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// `1.5 MiB`-style sizes (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
