//! The log of one request: one span that carries the common fields,
//! recorded as they become known (`Span::record`), and one event for its
//! outcome, which adds what only the outcome knows.
//!
//! Every event inside the span (an alarm, a foreign station id, an
//! acknowledgement) carries the span's fields too. Under journald the
//! fields become upper-case journal fields: `station_id` → `STATION_ID`.
//!
//! | field | on | what |
//! | --- | --- | --- |
//! | `method`, `uri` | span | as requested |
//! | `remote_user`, `forwarded_for` | span | NGINX's `X-Remote-User` and `X-Forwarded-For` |
//! | `station_id`, `action` | span | from the query, once validated |
//! | `encoding` | span | the body's `Content-Encoding`, when not identity |
//! | `status`, `elapsed_ms` | outcome | the answer and how long it took |
//! | `wire_bytes` | outcome | bytes of the body as received |
//! | `stored_bytes` | outcome | bytes archived (decoded), or handed out |
//! | `path` | outcome | the archived file, command id or published file |
//! | `reason`, `kept`, `duplicate` | outcome | why it was refused, where a refused body was kept |

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use tracing::Span;
use tracing::field::Empty;

use crate::decode::Encoding;
use crate::request::Action;

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
    wire_bytes: Option<u64>,
    stored_bytes: Option<u64>,
}

impl RequestLog {
    pub(crate) fn new(req: &Request<Incoming>) -> RequestLog {
        let remote_user = header(req.headers(), "x-remote-user");
        let forwarded_for = header(req.headers(), "x-forwarded-for");
        let span = tracing::info_span!(
            "request",
            method = req.method().as_str(),
            uri = %crate::logging::printable(&req.uri().to_string(), 512),
            remote_user = remote_user.as_deref(),
            forwarded_for = forwarded_for.as_deref(),
            station_id = Empty,
            action = Empty,
            encoding = Empty,
        );
        RequestLog {
            span,
            started: Instant::now(),
            station: None,
            path: None,
            wire_bytes: None,
            stored_bytes: None,
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

    pub(crate) fn wire_bytes(&mut self, n: u64) {
        self.wire_bytes = Some(n);
    }

    pub(crate) fn stored_bytes(&mut self, n: u64) {
        self.stored_bytes = Some(n);
    }

    pub(crate) fn path(&mut self, path: &str) {
        self.path = Some(path.to_owned());
    }

    /// Emits the one outcome event, with the answer and what it did.
    pub(crate) fn finish(&self, status: StatusCode, outcome: &Outcome) {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let status = status.as_u16();
        let _entered = self.span.enter();
        let station = self.station.as_deref().unwrap_or("-");
        let path = self.path.as_deref();
        let shown = path.unwrap_or("-");
        let (wire_bytes, stored_bytes) = (self.wire_bytes, self.stored_bytes);
        let bytes = stored_bytes.unwrap_or(0);
        match outcome {
            Outcome::Stored => tracing::info!(
                status,
                elapsed_ms,
                wire_bytes,
                stored_bytes,
                path,
                "stored {bytes} bytes from {station} as {shown}"
            ),
            Outcome::Duplicate => tracing::info!(
                status,
                elapsed_ms,
                wire_bytes,
                stored_bytes,
                path,
                duplicate = true,
                "duplicate of {shown} from {station}: not stored again"
            ),
            Outcome::Command => tracing::info!(
                status,
                elapsed_ms,
                stored_bytes,
                path,
                "handed command {shown} to {station}"
            ),
            Outcome::Download => tracing::info!(
                status,
                elapsed_ms,
                stored_bytes,
                path,
                "{station} fetched {shown}"
            ),
            Outcome::Other => tracing::debug!(status, elapsed_ms, "answered {status}"),
            Outcome::Refused { reason, kept } => {
                let kept_note = kept
                    .as_deref()
                    .map(|k| format!("; kept as {k}"))
                    .unwrap_or_default();
                tracing::warn!(
                    status,
                    elapsed_ms,
                    wire_bytes,
                    reason = reason.as_str(),
                    kept = kept.as_deref(),
                    "refused {status}: {reason}{kept_note}"
                );
            }
            Outcome::Failed { reason } => tracing::error!(
                status,
                elapsed_ms,
                wire_bytes,
                reason = reason.as_str(),
                "{status}, not stored: {reason}"
            ),
        }
    }
}

/// A header's value for the log: at most 256 characters, printable.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| crate::logging::printable(&String::from_utf8_lossy(v.as_bytes()), 256))
}
