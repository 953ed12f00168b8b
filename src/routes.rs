//! Routing and the OTT endpoint: `POST /ott[/]?stationid=…&action=…` stores
//! the body and answers the OTT Response; `GET /ping` answers `pong`.
//!
//! Every request is logged once, here: an info event per stored
//! transmission, a warning per refused request, an error per failure to store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response};

use crate::archive::Stored;
use crate::error::RequestError;
use crate::request::{Action, OttQuery};
use crate::response::{self, Body};
use crate::state::AppState;

/// The hyper service: never fails, every outcome is a response.
pub async fn handle(
    req: Request<Incoming>,
    state: Arc<AppState>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let mut log = RequestLog::new(&req);
    let result = route(req, &state, &mut log).await;
    let response = match result {
        Ok(response) => response,
        Err(e) => response::error(&e),
    };
    log.emit(response.status(), started);
    Ok(response)
}

async fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    log: &mut RequestLog,
) -> Result<Response<Body>, RequestError> {
    let result = match req.uri().path() {
        "/ott" | "/ott/" => match *req.method() {
            Method::POST => ott_post(req, state, log).await,
            _ => Err(RequestError::MethodNotAllowed { allow: "POST" }),
        },
        "/ping" => match *req.method() {
            Method::GET | Method::HEAD => Ok(response::pong()),
            _ => Err(RequestError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        _ => Err(RequestError::NotFound),
    };
    if let Err(e) = &result {
        log.reason = Some(e.to_string());
        if let RequestError::Store { source, .. } = e {
            log.reason = Some(format!("{e}: {source}"));
        }
    }
    result
}

async fn ott_post(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    log: &mut RequestLog,
) -> Result<Response<Body>, RequestError> {
    let query = OttQuery::parse(req.uri().query())?;
    log.station = Some(query.station.to_string());
    log.action = Some(query.action);
    let config = &state.config;
    let body = crate::body::read_limited(
        req.into_body(),
        config.max_body_bytes,
        config.body_read_timeout(),
    )
    .await?;
    log.bytes = body.len();
    if body.is_empty() {
        return Err(RequestError::EmptyBody);
    }
    let stored = store(state, query.action, query.station.as_str(), body.clone()).await?;
    log.path = Some(stored.path.display().to_string());
    if query.action == Action::SendAlarm {
        tracing::error!(
            station_id = query.station.as_str(),
            alarm = %latin1_text(&body, 4096),
            "alarm from station {}", query.station
        );
    }
    Ok(response::ott_response(
        query.station.as_str(),
        stored.received,
    ))
}

/// Stores on the blocking pool; any failure is a 503 the logger retries.
async fn store(
    state: &Arc<AppState>,
    action: Action,
    station: &str,
    body: Bytes,
) -> Result<Stored, RequestError> {
    let received = Utc::now();
    let task_state = Arc::clone(state);
    let station = station.to_owned();
    tokio::task::spawn_blocking(move || {
        task_state
            .archive
            .store(action.name(), &station, received, &body)
    })
    .await
    .map_err(|e| std::io::Error::other(format!("store task failed: {e}")))
    .and_then(|stored| stored)
    .map_err(|source| RequestError::Store {
        source,
        retry_after_secs: state.config.retry_after_secs,
    })
}

/// The body as text for the log: UTF-8 if it is, ISO-8859-1 otherwise, cut
/// at `max` characters. The archived file is never touched by this.
fn latin1_text(body: &[u8], max: usize) -> String {
    match std::str::from_utf8(body) {
        Ok(s) => s.chars().take(max).collect(),
        Err(_) => body.iter().take(max).map(|&b| char::from(b)).collect(),
    }
}

/// What the log line of one request says.
struct RequestLog {
    method: Method,
    uri: String,
    remote_user: Option<String>,
    forwarded_for: Option<String>,
    station: Option<String>,
    action: Option<Action>,
    bytes: usize,
    path: Option<String>,
    reason: Option<String>,
}

impl RequestLog {
    fn new(req: &Request<Incoming>) -> RequestLog {
        RequestLog {
            method: req.method().clone(),
            uri: req.uri().to_string(),
            remote_user: header(req.headers(), "x-remote-user"),
            forwarded_for: header(req.headers(), "x-forwarded-for"),
            station: None,
            action: None,
            bytes: 0,
            path: None,
            reason: None,
        }
    }

    fn emit(&self, status: hyper::StatusCode, started: Instant) {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = status.as_u16();
        let station_id = self.station.as_deref();
        let action = self.action.map(Action::name);
        let remote_user = self.remote_user.as_deref();
        let forwarded_for = self.forwarded_for.as_deref();
        let method = self.method.as_str();
        match (&self.path, &self.reason) {
            (Some(path), _) => tracing::info!(
                station_id,
                action,
                bytes = self.bytes,
                path = path.as_str(),
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                "stored {} bytes from {} as {path}",
                self.bytes,
                station_id.unwrap_or("-")
            ),
            (None, Some(reason)) if status >= 500 => tracing::error!(
                station_id,
                action,
                bytes = self.bytes,
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                method,
                uri = self.uri.as_str(),
                reason = reason.as_str(),
                "{status} {method} {}: {reason}",
                self.uri
            ),
            (None, Some(reason)) => tracing::warn!(
                station_id,
                action,
                bytes = self.bytes,
                elapsed_ms,
                status,
                remote_user,
                forwarded_for,
                method,
                uri = self.uri.as_str(),
                reason = reason.as_str(),
                "refused {status} {method} {}: {reason}",
                self.uri
            ),
            (None, None) => tracing::debug!(
                status,
                method,
                uri = self.uri.as_str(),
                elapsed_ms,
                "answered"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_text_keeps_latin1_readable() {
        assert_eq!(latin1_text(b"12.5 \xb0C", 100), "12.5 \u{b0}C");
        assert_eq!(latin1_text("12.5 \u{b0}C".as_bytes(), 100), "12.5 \u{b0}C");
        assert_eq!(latin1_text(b"abcdef", 3), "abc");
    }
}
