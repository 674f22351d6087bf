//! The aggregator's panic policy: a panic while serving one agent's stream ends that
//! stream; any other panic ends the process.
//!
//! Why not `panic = "abort"` for everything (the workspace's release profile once): one
//! agent's malformed sample then ended every tenant's aggregator (a year-10000 time did,
//! exit -6). Why not unwinding everywhere: a panic in the monitor (which owns the engine),
//! the store's writer or a delivery worker would leave a process that accepts connections
//! but no longer applies, commits or delivers anything, which is worse than a restart by
//! the service manager. So the release profile unwinds, and `install_hook` aborts after
//! reporting unless the panicking code runs `contained`: an agent's stream (`ingest`), from
//! decoding its messages to validating its samples, owns nothing shared that a panic could
//! leave half-changed (the monitor is behind a channel), so tokio drops that stream's task
//! and every other stream, the engine and the store go on. The other defence is that no
//! input should panic at all: `ingest`'s fuzz tests and the total `Timestamp::to_rfc3339`.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many `contained` scopes are running on this thread.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
}

/// Whether a panic here would end only the current stream.
pub fn is_contained() -> bool {
    CONTAINED.with(|depth| depth.get() > 0)
}

/// Runs `f` as code whose panics the hook lets unwind (to the task running it).
pub fn contained<T>(f: impl FnOnce() -> T) -> T {
    /// Leaves the scope on return and on unwinding alike.
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            CONTAINED.with(|depth| depth.set(depth.get().saturating_sub(1)));
        }
    }
    CONTAINED.with(|depth| depth.set(depth.get().saturating_add(1)));
    let _scope = Scope;
    f()
}

/// A future polled `contained`.
#[derive(Debug)]
pub struct Contained<F>(Pin<Box<F>>);

impl<F: Future> Contained<F> {
    pub fn new(future: F) -> Self {
        Self(Box::pin(future))
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        contained(|| self.0.as_mut().poll(cx))
    }
}

/// Reports every panic as the default hook does (message and place on stderr), then
/// aborts the process unless the panic is `contained`.
pub fn install_hook() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if is_contained() {
            eprintln!("hostwatch-aggregator: the panic ended one agent stream; serving on");
        } else {
            eprintln!("hostwatch-aggregator: a panic outside an agent stream; aborting");
            std::process::abort();
        }
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    /// Set in the environment of the test binary re-run as a child by the tests below.
    const CHILD: &str = "HOSTWATCH_PANICS_CHILD";

    #[tokio::test]
    async fn a_contained_panic_ends_only_its_task() {
        let task = tokio::spawn(Contained::new(async {
            assert!(is_contained());
            panic!("one stream's bug");
        }));
        assert!(task.await.unwrap_err().is_panic());
        assert!(!is_contained(), "the scope ends with the unwinding");
        let next = tokio::spawn(Contained::new(async { 7 }));
        assert_eq!(next.await.unwrap(), 7);
    }

    /// Runs one test of this module in a child process with the hook installed; returns
    /// how it ended.
    fn run_child(test: &str) -> std::process::ExitStatus {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap()
            .status
    }

    #[test]
    fn the_hook_aborts_on_a_panic_outside_a_stream_and_not_inside() {
        let outside = run_child("panics::tests::child_panics_outside");
        assert_eq!(outside.signal(), Some(6), "SIGABRT expected: {outside:?}");
        let inside = run_child("panics::tests::child_panics_inside");
        assert_eq!(inside.signal(), None, "not aborted: {inside:?}");
        assert!(!inside.success(), "the test itself fails by its panic");
    }

    #[test]
    fn child_panics_outside() {
        if std::env::var_os(CHILD).is_some() {
            install_hook();
            panic!("outside");
        }
    }

    #[test]
    fn child_panics_inside() {
        if std::env::var_os(CHILD).is_some() {
            install_hook();
            contained(|| panic!("inside"));
        }
    }
}
