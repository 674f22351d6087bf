//! What "consistently" means: for one rule on one subject, how long its open condition
//! and its clear condition have held without interruption.
//!
//! A condition holds for a span when every sample over that span satisfied it and the
//! samples came without a gap: the run of satisfying samples began at least `span` before
//! the latest one. A gap (two samples further apart than the node's allowed silence)
//! breaks both runs, so a gap neither opens nor closes anything. A sample exactly at the
//! threshold satisfies neither condition (80 % is not over 80 % and not under it) and
//! breaks both runs. The window keeps two runs, not the samples themselves: memory per
//! subject is constant whatever the span.
//!
//! No I/O, no clock: the sample times are the only time it knows.

use std::time::Duration;

use crate::model::Timestamp;

/// What one sample says about a rule's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The open condition holds (e.g. usage over the threshold).
    Breach,
    /// The clear condition holds (e.g. usage under the threshold).
    Clear,
    /// Neither (e.g. exactly at the threshold).
    Neither,
}

/// An uninterrupted run of samples with the same verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    since: Timestamp,
    n_samples: u32,
}

/// The runs of one rule on one subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConditionWindow {
    breach: Option<Run>,
    clear: Option<Run>,
    latest: Option<Timestamp>,
}

impl ConditionWindow {
    /// Records one sample. Samples older than or as old as the latest one are ignored:
    /// windows only move forward. Returns false when the sample was ignored.
    pub fn observe(&mut self, time: Timestamp, verdict: Verdict, max_gap: Duration) -> bool {
        if let Some(latest) = self.latest {
            if time <= latest {
                return false;
            }
            if time.since(latest) > max_gap {
                self.breach = None;
                self.clear = None;
            }
        }
        self.latest = Some(time);
        let (extend, reset) = match verdict {
            Verdict::Breach => (&mut self.breach, &mut self.clear),
            Verdict::Clear => (&mut self.clear, &mut self.breach),
            Verdict::Neither => {
                self.breach = None;
                self.clear = None;
                return true;
            }
        };
        *reset = None;
        match extend {
            Some(run) => run.n_samples += 1,
            None => {
                *extend = Some(Run {
                    since: time,
                    n_samples: 1,
                })
            }
        }
        true
    }

    /// Whether the open condition has held consistently for `span`.
    pub fn breach_held_for(&self, span: Duration) -> bool {
        self.held_for(self.breach, span)
    }

    /// Whether the clear condition has held consistently for `span`.
    pub fn clear_held_for(&self, span: Duration) -> bool {
        self.held_for(self.clear, span)
    }

    /// When the current breach run began, if one is under way.
    pub fn breach_since(&self) -> Option<Timestamp> {
        self.breach.map(|run| run.since)
    }

    /// When the current clear run began, if one is under way.
    pub fn clear_since(&self) -> Option<Timestamp> {
        self.clear.map(|run| run.since)
    }

    fn held_for(&self, run: Option<Run>, span: Duration) -> bool {
        let (Some(run), Some(latest)) = (run, self.latest) else {
            return false;
        };
        // A zero span is decided by one sample; any longer span needs at least two, the
        // first of them at least `span` before the latest.
        let min_samples = if span.is_zero() { 1 } else { 2 };
        run.n_samples >= min_samples && latest.since(run.since) >= span
    }
}

#[cfg(test)]
mod tests;
