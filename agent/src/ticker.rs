//! The probes' clock: a tick every interval, from a `timerfd` that the runtime's epoll
//! waits on with the sockets.
//!
//! Not `tokio::time::interval`, because of what a tick costs a process that sleeps between
//! ticks: tokio's timer wheel files a deadline a second away in a 64 ms slot and wakes the
//! thread at the slot's start only to refile it in 1 ms slots, then wakes it again at the
//! deadline; two or three wake-ups per tick, where one is needed. Waking a sleeping agent
//! costs ~55 µs of CPU on the project's machine kind (a thread that only sleeps and wakes,
//! measured from its `schedstat`), about as much as a whole host sample. A `timerfd` wakes
//! it once, at the deadline.
//!
//! Ticks stay on the grid of the first one (which is immediate, like tokio's interval): a
//! late tick does not move the next, and ticks missed while the thread was busy or stopped
//! are skipped, not made up in a burst. Where a `timerfd` cannot be made or read, it falls
//! back to tokio's interval, with the same behaviour and the extra wake-ups.
//!
//! It does not know what a tick is for; the probes' loop (`probe::drive`) does.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

/// Ticks every `interval`; the first tick is immediate.
#[derive(Debug)]
pub(crate) struct Ticker {
    interval: Duration,
    clock: Clock,
}

#[derive(Debug)]
enum Clock {
    Timerfd(AsyncFd<OwnedFd>),
    Tokio(Interval),
}

impl Ticker {
    /// Must be called on a tokio runtime with I/O enabled (the uplink needs one anyway).
    pub(crate) fn new(interval: Duration) -> Ticker {
        let clock = match periodic_timerfd(interval) {
            Ok(timer) => Clock::Timerfd(timer),
            Err(err) => {
                tracing::debug!("no timerfd ({err}); ticking with tokio's timer");
                Clock::Tokio(tokio_interval(interval))
            }
        };
        Ticker { interval, clock }
    }

    /// Waits for the next tick.
    pub(crate) async fn tick(&mut self) {
        let timer = match &mut self.clock {
            Clock::Tokio(interval) => {
                interval.tick().await;
                return;
            }
            Clock::Timerfd(timer) => timer,
        };
        let failed = loop {
            let mut guard = match timer.readable().await {
                Ok(guard) => guard,
                Err(err) => break err,
            };
            // The number of expirations since the last read; one tick however many.
            let mut expirations = [0u8; 8];
            match rustix::io::read(guard.get_inner(), &mut expirations) {
                // Read, the timer is not readable until the next expiry, which is a new edge
                // for epoll: clearing the readiness now spares the next tick a read that
                // would only say "not yet".
                Ok(_) => {
                    guard.clear_ready();
                    return;
                }
                // Stale readiness: wait for the expiry.
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => break std::io::Error::from(err),
            }
        };
        tracing::warn!("cannot read the sampling timer ({failed}); ticking with tokio's timer");
        let mut interval = tokio_interval(self.interval);
        // Its first tick is immediate: this one.
        interval.tick().await;
        self.clock = Clock::Tokio(interval);
    }
}

fn tokio_interval(interval: Duration) -> Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// A monotonic timerfd that expires at once and then every `interval`, registered with the
/// runtime.
fn periodic_timerfd(interval: Duration) -> std::io::Result<AsyncFd<OwnedFd>> {
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let period = timespec(interval.max(Duration::from_millis(1)));
    timerfd_settime(
        &timer,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: period,
            // Zero would disarm the timer; a nanosecond is "now".
            it_value: Timespec {
                tv_sec: 0,
                tv_nsec: 1,
            },
        },
    )?;
    // Deprecated in favour of the `unsafe` `AsyncFd::register`, whose contract is that the
    // raw fd stays open and the same while registered: an `OwnedFd` moved into the
    // `AsyncFd` holds it by construction, and this crate forbids `unsafe`.
    #[allow(deprecated)]
    AsyncFd::new(timer)
}

fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "current_thread")]
    async fn ticks_at_once_then_every_interval_on_a_timerfd() {
        // Wide enough that a busy CI machine's scheduling delays stay well inside it.
        let interval = Duration::from_millis(400);
        let started = Instant::now();
        let mut ticker = Ticker::new(interval);
        assert!(matches!(ticker.clock, Clock::Timerfd(_)), "{ticker:?}");
        ticker.tick().await;
        assert!(started.elapsed() < interval, "{:?}", started.elapsed());
        for n_ticks in 1..=3u32 {
            ticker.tick().await;
            let elapsed = started.elapsed();
            assert!(
                elapsed >= interval * n_ticks,
                "tick {n_ticks} at {elapsed:?}"
            );
        }
        assert!(matches!(ticker.clock, Clock::Timerfd(_)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missed_ticks_are_skipped_not_made_up() {
        let interval = Duration::from_millis(400);
        let mut ticker = Ticker::new(interval);
        ticker.tick().await;
        // Busy for three and a half intervals: three ticks were missed, and the next one
        // is due half an interval from now.
        std::thread::sleep(interval * 7 / 2);
        let late = Instant::now();
        ticker.tick().await;
        assert!(late.elapsed() < interval / 2, "{:?}", late.elapsed());
        let made_up = tokio::time::timeout(Duration::from_millis(20), ticker.tick()).await;
        assert!(made_up.is_err(), "a missed tick was made up");
        ticker.tick().await;
        assert!(late.elapsed() >= interval / 4, "{:?}", late.elapsed());
    }
}
