//! The one log event of each request: what was asked, by which login and
//! client, what became of it, how long it took. An info event per stored
//! transmission (and per duplicate, command or download), a warning per
//! refused request, an error per failure to store. Field names become
//! journald fields: `station_id` → `STATION_ID`.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};

use crate::encoding::Encoding;
use crate::request::Action;

/// What became of a request that was answered 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Other,
    Stored,
    Duplicate,
    Command,
    Download,
}

/// What the log line of one request says.
pub struct RequestLog {
    pub method: Method,
    pub uri: String,
    pub remote_user: Option<String>,
    pub forwarded_for: Option<String>,
    pub station: Option<String>,
    pub action: Option<Action>,
    pub encoding: Encoding,
    pub bytes: usize,
    pub outcome: Outcome,
    pub path: Option<String>,
    pub kept: Option<String>,
    pub reason: Option<String>,
}

impl RequestLog {
    pub fn new(req: &Request<Incoming>) -> RequestLog {
        RequestLog {
            method: req.method().clone(),
            uri: req.uri().to_string(),
            remote_user: header(req.headers(), "x-remote-user"),
            forwarded_for: header(req.headers(), "x-forwarded-for"),
            station: None,
            action: None,
            encoding: Encoding::Identity,
            bytes: 0,
            outcome: Outcome::Other,
            path: None,
            kept: None,
            reason: None,
        }
    }

    pub fn emit(&self, status: StatusCode, started: Instant) {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = status.as_u16();
        let station_id = self.station.as_deref();
        let station = station_id.unwrap_or("-");
        let action = self.action.map(Action::name);
        let (remote_user, forwarded_for) =
            (self.remote_user.as_deref(), self.forwarded_for.as_deref());
        let (method, uri, bytes) = (self.method.as_str(), self.uri.as_str(), self.bytes);
        let path = self.path.as_deref().unwrap_or("-");
        let encoding = (self.encoding != Encoding::Identity).then_some(self.encoding.name());
        if let Some(reason) = &self.reason {
            let kept = self.kept.as_deref();
            let kept_note = kept.map(|k| format!("; kept as {k}")).unwrap_or_default();
            if status >= 500 {
                tracing::error!(
                    station_id,
                    action,
                    bytes,
                    elapsed_ms,
                    status,
                    remote_user,
                    forwarded_for,
                    method,
                    uri,
                    reason = reason.as_str(),
                    "{status} {method} {uri}: {reason}"
                );
            } else {
                tracing::warn!(
                    station_id,
                    action,
                    bytes,
                    elapsed_ms,
                    status,
                    remote_user,
                    forwarded_for,
                    method,
                    uri,
                    encoding,
                    kept,
                    reason = reason.as_str(),
                    "refused {status} {method} {uri}: {reason}{kept_note}"
                );
            }
            return;
        }
        match self.outcome {
            Outcome::Stored => tracing::info!(
                station_id,
                action,
                bytes,
                path,
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                encoding,
                "stored {bytes} bytes from {station} as {path}"
            ),
            Outcome::Duplicate => tracing::info!(
                station_id,
                action,
                bytes,
                path,
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                duplicate = true,
                "duplicate of {path} from {station}: not stored again"
            ),
            Outcome::Command => tracing::info!(
                station_id,
                action,
                bytes,
                command = path,
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                "handed command {path} to {station}"
            ),
            Outcome::Download => tracing::info!(
                station_id,
                action,
                bytes,
                path,
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                "{station} fetched {path}"
            ),
            Outcome::Other => tracing::debug!(
                station_id, action, status, method, uri, elapsed_ms, "answered"
            ),
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}
