//! What the long-running subcommands beside the service share (`dlsrv
//! export --follow`, `dlsrv replicate`): SIGTERM/SIGINT as a flag checked
//! between two pieces of work, pauses that end early on it, and outages
//! retried with a growing pause and told once when they start and once
//! when they end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT make [`stopping`] true.
pub(crate) fn handle_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.context("cannot handle SIGTERM")?;
    }
    Ok(())
}

pub(crate) fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps `d`, or less when asked to stop.
pub(crate) fn pause(d: Duration) {
    let until = Instant::now() + d;
    while !stopping() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// A run of failures to reach something, told once each way.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    since: Option<Instant>,
    tries: u32,
}

impl Outage {
    /// A failure; returns how long to wait before the next try. `tell`
    /// logs the start of an outage (called for its first failure only).
    pub(crate) fn failed(&mut self, tell: impl FnOnce()) -> Duration {
        if self.since.is_none() {
            tell();
            self.since = Some(Instant::now());
        }
        self.tries += 1;
        let exp = self.tries.min(10);
        Duration::from_millis(250 * (1u64 << exp)).min(MAX_BACKOFF)
    }

    /// A success: `tell` gets how long the outage lasted and how many tries
    /// failed, when there was one.
    pub(crate) fn ended(&mut self, tell: impl FnOnce(Duration, u32)) {
        if let Some(since) = self.since.take() {
            tell(since.elapsed(), self.tries);
        }
        self.tries = 0;
    }
}
