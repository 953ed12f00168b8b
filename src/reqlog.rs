//! The log of one request: one span that carries the common fields,
//! recorded as they become known, and one event for its outcome.
//!
//! Every event inside the span (an alarm, a foreign station id, an
//! acknowledgement) carries the span's fields too. Under journald the
//! fields become upper-case journal fields: `station_id` → `STATION_ID`.
//!
//! | field | what |
//! | --- | --- |
//! | `method`, `uri` | as requested |
//! | `remote_user`, `forwarded_for` | NGINX's `X-Remote-User` and `X-Forwarded-For` |
//! | `station_id`, `action` | from the query, once validated |
//! | `encoding` | the body's `Content-Encoding`, when not identity |
//! | `wire_bytes` | bytes of the body as received |
//! | `stored_bytes` | bytes archived (decoded), or handed out |
//! | `path` | the archived file, command id or published file |
//! | `status`, `elapsed_ms` | the answer and how long it took |

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use tracing::Span;
use tracing::field::Empty;

use crate::actions::Action;
use crate::decode::Encoding;

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered, nothing worth an info event (`/ping`, `/metrics`, no command queued).
    Other,
    Stored,
    Duplicate,
    Command,
    Download,
    /// A 4xx: the client's mistake.
    Refused {
        reason: String,
        kept: Option<String>,
    },
    /// A 5xx: nothing stored, the client retries.
    Failed {
        reason: String,
    },
}

/// The span of one request and what its outcome event says.
pub(crate) struct RequestLog {
    span: Span,
    started: Instant,
    station: Option<String>,
    path: Option<String>,
    stored_bytes: u64,
}

impl RequestLog {
    pub(crate) fn new(req: &Request<Incoming>) -> RequestLog {
        let remote_user = header(req.headers(), "x-remote-user");
        let forwarded_for = header(req.headers(), "x-forwarded-for");
        let span = tracing::info_span!(
            "request",
            method = req.method().as_str(),
            uri = %crate::actions::printable(&req.uri().to_string(), 512),
            remote_user = remote_user.as_deref(),
            forwarded_for = forwarded_for.as_deref(),
            station_id = Empty,
            action = Empty,
            encoding = Empty,
            wire_bytes = Empty,
            stored_bytes = Empty,
            path = Empty,
            status = Empty,
            elapsed_ms = Empty,
        );
        RequestLog {
            span,
            started: Instant::now(),
            station: None,
            path: None,
            stored_bytes: 0,
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    pub(crate) fn query(&mut self, station: &str, action: Action) {
        self.span.record("station_id", station);
        self.span.record("action", action.name());
        self.station = Some(station.to_owned());
    }

    pub(crate) fn encoding(&self, encoding: Encoding) {
        if encoding != Encoding::Identity {
            self.span.record("encoding", encoding.name());
        }
    }

    pub(crate) fn wire_bytes(&self, n: u64) {
        self.span.record("wire_bytes", n);
    }

    pub(crate) fn stored_bytes(&mut self, n: u64) {
        self.span.record("stored_bytes", n);
        self.stored_bytes = n;
    }

    pub(crate) fn path(&mut self, path: &str) {
        self.span.record("path", path);
        self.path = Some(path.to_owned());
    }

    /// Records the answer and emits the one outcome event.
    pub(crate) fn finish(&self, status: StatusCode, outcome: &Outcome) {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let status = status.as_u16();
        self.span.record("status", status);
        self.span.record("elapsed_ms", elapsed_ms);
        let _entered = self.span.enter();
        let station = self.station.as_deref().unwrap_or("-");
        let path = self.path.as_deref().unwrap_or("-");
        let bytes = self.stored_bytes;
        match outcome {
            Outcome::Stored => tracing::info!("stored {bytes} bytes from {station} as {path}"),
            Outcome::Duplicate => {
                tracing::info!(
                    duplicate = true,
                    "duplicate of {path} from {station}: not stored again"
                );
            }
            Outcome::Command => tracing::info!("handed command {path} to {station}"),
            Outcome::Download => tracing::info!("{station} fetched {path}"),
            Outcome::Other => tracing::debug!("answered {status}"),
            Outcome::Refused { reason, kept } => {
                let kept_note = kept
                    .as_deref()
                    .map(|k| format!("; kept as {k}"))
                    .unwrap_or_default();
                tracing::warn!(
                    reason = reason.as_str(),
                    kept = kept.as_deref(),
                    "refused {status}: {reason}{kept_note}"
                );
            }
            Outcome::Failed { reason } => {
                tracing::error!(reason = reason.as_str(), "{status}, not stored: {reason}");
            }
        }
    }
}

/// A header's value for the log: at most 256 characters, printable.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| crate::actions::printable(&String::from_utf8_lossy(v.as_bytes()), 256))
}
