//! Logs: structured journald entries under systemd, readable lines otherwise.
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) events go to journald
//! with `SYSLOG_IDENTIFIER=dlsrv`; an event's fields become upper-case journal
//! fields (`station_id` → `STATION_ID`), so operators can run
//! `journalctl -u dlsrv STATION_ID=0000452891`. Errors map to priority
//! `err`, so `journalctl -p err` lists alarms and failures to store.

use std::os::fd::AsFd;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub const SYSLOG_IDENTIFIER: &str = "dlsrv";

/// Installs the global subscriber. `level` is a tracing filter (`info`,
/// `dlsrv=debug,hyper=warn`).
pub fn init(level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level).with_context(|| format!("log_level {level:?}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                // No field prefix: STATION_ID, not tracing-journald's default
                // F_STATION_ID, so `journalctl STATION_ID=…` works. Info is
                // journald's "info" (6), not "notice".
                let mut priorities = tracing_journald::PriorityMappings::new();
                priorities.info = tracing_journald::Priority::Informational;
                priorities.debug = tracing_journald::Priority::Debug;
                let journald = journald
                    .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned())
                    .with_field_prefix(None)
                    .with_priority_mappings(priorities);
                return registry
                    .with(journald)
                    .try_init()
                    .context("cannot install the journald logger");
            }
            Err(e) => eprintln!("dlsrv: journald unavailable ({e}); logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .try_init()
        .context("cannot install the stderr logger")
}

/// True when systemd connected our stderr to the journal: `JOURNAL_STREAM`
/// holds `<device>:<inode>` of that stream (see systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    value.to_string_lossy() == format!("{}:{}", stat.st_dev, stat.st_ino)
}

/// Control characters of what a client sent, escaped for a log line.
pub(crate) fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for c in text.chars().take(max_chars) {
        if c.is_control() && c != ' ' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            crate::logging::printable("a\nb\u{1b}[31m", 100),
            "a\\nb\\u{1b}[31m"
        );
        assert_eq!(crate::logging::printable("abcdef", 3), "abc");
    }
}
