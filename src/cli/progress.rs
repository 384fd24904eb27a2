//! `apply`'s progress over many resources: how many are Ready, progressing and failed, and
//! the slowest waits. On a terminal one line is redrawn in place (on stderr); otherwise, and
//! with `-o json`, plain lines go to stderr when the counts change (at most every
//! [`PLAIN_EVERY`]) and at least every [`PLAIN_AT_LEAST`] while something waits.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// Plain lines: never more often than this…
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// …and at least this often while something waits, so a log shows it is alive.
pub const PLAIN_AT_LEAST: Duration = Duration::from_secs(30);
/// How many of the slowest waits a line names.
const SLOWEST: usize = 3;

/// Where one resource stands, as progress counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ready,
    Progressing,
    Failed,
}

/// One resource as progress sees it.
pub struct Entry<'a> {
    pub name: &'a str,
    pub state: State,
    pub reason: &'a str,
    /// Since when it has had this reason.
    pub since: Instant,
}

/// The counts and the slowest waits at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    pub ready: usize,
    pub progressing: usize,
    pub failed: usize,
    /// (name, reason, waited) of the progressing resources that have waited longest.
    pub slowest: Vec<(String, String, Duration)>,
}

impl Tally {
    pub fn of<'a>(entries: impl IntoIterator<Item = Entry<'a>>, now: Instant) -> Tally {
        let mut tally = Tally {
            total: 0,
            ready: 0,
            progressing: 0,
            failed: 0,
            slowest: Vec::new(),
        };
        let mut waiting = Vec::new();
        for e in entries {
            tally.total += 1;
            match e.state {
                State::Ready => tally.ready += 1,
                State::Failed => tally.failed += 1,
                State::Progressing => {
                    tally.progressing += 1;
                    waiting.push((
                        e.name.to_string(),
                        e.reason.to_string(),
                        now.saturating_duration_since(e.since),
                    ));
                }
            }
        }
        waiting.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        waiting.truncate(SLOWEST);
        tally.slowest = waiting;
        tally
    }

    /// The counts alone, to tell whether anything moved.
    fn counts(&self) -> (usize, usize, usize) {
        (self.ready, self.progressing, self.failed)
    }

    /// One line: `progress: 12/100 Ready, 80 progressing, 8 failed; slowest: ns/a
    /// WaitingForEncryptionUp 3m12s, …`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "progress: {}/{} Ready, {} progressing, {} failed",
            self.ready, self.total, self.progressing, self.failed
        );
        for (i, (name, reason, waited)) in self.slowest.iter().enumerate() {
            let sep = if i == 0 { "; slowest: " } else { ", " };
            let _ = write!(line, "{sep}{name} {reason} {}", human(*waited));
        }
        line
    }
}

/// `42s`, `3m12s`, `1h05m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Decides when and how to show a [`Tally`].
pub struct Progress {
    terminal: bool,
    shown: Option<(Instant, (usize, usize, usize))>,
    /// A terminal line is on screen (to be cleared before other output).
    drawn: bool,
}

impl Progress {
    /// `terminal`: stderr is a terminal and the output is text.
    pub fn new(terminal: bool) -> Self {
        Progress {
            terminal,
            shown: None,
            drawn: false,
        }
    }

    /// What to write to stderr now for `tally`, if anything.
    pub fn update(&mut self, tally: &Tally, now: Instant) -> Option<String> {
        if self.terminal {
            self.drawn = true;
            // Carriage return and erase line: the line is redrawn in place.
            return Some(format!("\r\x1b[2K{}", tally.line()));
        }
        let due = match self.shown {
            None => true,
            Some((at, counts)) => {
                let since = now.saturating_duration_since(at);
                (counts != tally.counts() && since >= PLAIN_EVERY)
                    || (tally.progressing > 0 && since >= PLAIN_AT_LEAST)
            }
        };
        if !due {
            return None;
        }
        self.shown = Some((now, tally.counts()));
        Some(format!("{}\n", tally.line()))
    }

    /// The last line, always shown, ending the terminal line.
    pub fn finish(&mut self, tally: &Tally) -> String {
        self.drawn = false;
        if self.terminal {
            format!("\r\x1b[2K{}\n", tally.line())
        } else {
            format!("{}\n", tally.line())
        }
    }

    /// Before other output on a terminal: erases the progress line (it is redrawn next
    /// update).
    pub fn clear(&mut self) -> Option<&'static str> {
        std::mem::take(&mut self.drawn).then_some("\r\x1b[2K")
    }

    /// Prints one line of what happens (to stderr or stdout), erasing the progress line
    /// first.
    pub fn say(&mut self, line: &str, to_stderr: bool) {
        if let Some(clear) = self.clear() {
            show(clear);
        }
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// Writes to stderr, ignoring a closed stream (progress is never worth failing for).
pub fn show(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(now: Instant) -> Vec<Entry<'static>> {
        vec![
            Entry {
                name: "net/a",
                state: State::Ready,
                reason: "Converged",
                since: now,
            },
            Entry {
                name: "net/b",
                state: State::Progressing,
                reason: "WaitingForEncryptionUp",
                since: now - Duration::from_secs(192),
            },
            Entry {
                name: "net/c",
                state: State::Progressing,
                reason: "RotationOverlap",
                since: now - Duration::from_secs(5),
            },
            Entry {
                name: "net/d",
                state: State::Failed,
                reason: "EncryptionDown",
                since: now - Duration::from_secs(500),
            },
        ]
    }

    #[test]
    fn the_line_counts_and_names_the_slowest_waits_first() {
        let now = Instant::now();
        let t = Tally::of(entries(now), now);
        assert_eq!((t.total, t.ready, t.progressing, t.failed), (4, 1, 2, 1));
        assert_eq!(
            t.line(),
            "progress: 1/4 Ready, 2 progressing, 1 failed; slowest: \
             net/b WaitingForEncryptionUp 3m12s, net/c RotationOverlap 5s"
        );
        assert_eq!(human(Duration::from_secs(3900)), "1h05m");
    }

    /// Plain lines: the first at once, then on a change no more often than PLAIN_EVERY, and
    /// at least every PLAIN_AT_LEAST while something waits.
    #[test]
    fn plain_lines_are_paced() {
        let t0 = Instant::now();
        let mut p = Progress::new(false);
        let busy = Tally::of(entries(t0), t0);
        let mut moved = busy.clone();
        moved.ready += 1;
        moved.progressing -= 1;
        assert!(p.update(&busy, t0).unwrap().ends_with('\n'));
        assert_eq!(p.update(&moved, t0 + Duration::from_secs(1)), None);
        assert!(p.update(&moved, t0 + PLAIN_EVERY).is_some());
        assert_eq!(p.update(&moved, t0 + PLAIN_EVERY * 2), None);
        assert!(
            p.update(&moved, t0 + PLAIN_EVERY + PLAIN_AT_LEAST)
                .is_some()
        );
        assert_eq!(p.clear(), None, "plain lines need no clearing");
        assert!(!p.finish(&moved).starts_with('\r'));
    }

    /// On a terminal every update redraws one line in place, cleared before other output.
    #[test]
    fn a_terminal_gets_one_line_redrawn() {
        let t0 = Instant::now();
        let mut p = Progress::new(true);
        let t = Tally::of(entries(t0), t0);
        let first = p.update(&t, t0).unwrap();
        assert!(first.starts_with("\r\x1b[2Kprogress: 1/4 Ready") && !first.ends_with('\n'));
        assert!(p.update(&t, t0).is_some());
        assert_eq!(p.clear(), Some("\r\x1b[2K"));
        assert_eq!(p.clear(), None);
        assert!(p.finish(&t).ends_with('\n'));
    }
}
