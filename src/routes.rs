//! Routing and the OTT endpoint. `/ott` and `/ott/` speak every action of
//! the logger protocol (`?stationid=…&action=…`); `GET /ping` answers
//! `pong`; `getconfiguration`/`getfirmware` are served at whatever path the
//! operator published the file under.
//!
//! Every request is logged once, by [`crate::reqlog::RequestLog`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use hyper::body::Incoming;
use hyper::header::CONTENT_ENCODING;
use hyper::{Method, Request, Response};

use crate::encoding::Encoding;
use crate::error::RequestError;
use crate::intake::{self, Accepted, Refusal};
use crate::queue::AckOutcome;
use crate::reqlog::{Outcome, RequestLog};
use crate::request::{Action, OttQuery};
use crate::response::{self, Body};
use crate::state::AppState;
use crate::xml;

/// The hyper service: never fails, every outcome is a response.
pub async fn handle(
    req: Request<Incoming>,
    state: Arc<AppState>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let _in_flight = state.metrics.start_request();
    let mut log = RequestLog::new(&req);
    let response = match route(req, &state, &mut log).await {
        Ok(response) => response,
        Err(e) => {
            log.reason = Some(match &e {
                RequestError::Store { source, .. } => format!("{e}: {source}"),
                _ => e.to_string(),
            });
            response::error(&e)
        }
    };
    log.emit(response.status(), started);
    let action = log.action.map_or("none", Action::name);
    state.metrics.request(action, response.status().as_u16());
    Ok(response)
}

async fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    log: &mut RequestLog,
) -> Result<Response<Body>, RequestError> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/ping" => match *req.method() {
            Method::GET | Method::HEAD => Ok(response::pong()),
            _ => Err(RequestError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        "/metrics" => match *req.method() {
            Method::GET | Method::HEAD => {
                let mut text = state.metrics.render();
                if let Some(flushes) = state.archive.group_flushes() {
                    text.push_str(&format!(
                        "# HELP dlsrv_group_commit_flushes_total File-system flushes of group commit.\n\
                         # TYPE dlsrv_group_commit_flushes_total counter\n\
                         dlsrv_group_commit_flushes_total {flushes}\n"
                    ));
                }
                Ok(response::metrics(text))
            }
            _ => Err(RequestError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        "/ott" | "/ott/" => {
            if !matches!(*req.method(), Method::GET | Method::POST) {
                return Err(RequestError::MethodNotAllowed { allow: "GET, POST" });
            }
            let query = OttQuery::parse(req.uri().query())?;
            log.station = Some(query.station.to_string());
            log.action = Some(query.action);
            if req.method() != query.action.method() {
                let allow = if query.action.method() == Method::GET {
                    "GET"
                } else {
                    "POST"
                };
                return Err(RequestError::MethodNotAllowed { allow });
            }
            match query.action {
                Action::RequestCommand => request_command(state, &query, log).await,
                action if action.is_download() => download(state, &path, log).await,
                _ => post(req, state, query, log).await,
            }
        }
        // A published file, at the path the operator configured in the logger.
        _ => match OttQuery::parse(req.uri().query()) {
            Ok(query) if query.action.is_download() => {
                log.station = Some(query.station.to_string());
                log.action = Some(query.action);
                if *req.method() != Method::GET {
                    return Err(RequestError::MethodNotAllowed { allow: "GET" });
                }
                download(state, &path, log).await
            }
            Err(e @ RequestError::BadStationId(_)) => Err(e),
            _ => Err(RequestError::NotFound),
        },
    }
}

/// `senddata`, `sendalarm`, `acknowledge`, `sendconfiguration`, `sendfirmware`.
async fn post(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    query: OttQuery,
    log: &mut RequestLog,
) -> Result<Response<Body>, RequestError> {
    let encoding = Encoding::parse(req.headers().get(CONTENT_ENCODING).map(|v| v.as_bytes()))?;
    log.encoding = encoding;
    let config = &state.config;
    let task_state = Arc::clone(state);
    let station = query.station.clone();
    let action = query.action;
    let (received, store_started, result) = if action.is_upload() {
        // Binary uploads go straight to their temp file: memory does not grow with them.
        // What the headers already refuse is refused before anything touches the disk.
        let hint = hyper::body::Body::size_hint(req.body());
        if hint.lower() > config.max_upload_bytes {
            return Err(RequestError::BodyTooLarge {
                limit: config.max_upload_bytes,
            });
        }
        if hint.exact() == Some(0) {
            return Err(RequestError::EmptyBody);
        }
        // Two frames in flight keep the disk busy; more would only hold memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let started = Utc::now();
        let writer = tokio::task::spawn_blocking(move || {
            intake::accept_stream(&task_state, action, &station, encoding, &mut rx, started)
        });
        let forwarded = crate::body::forward(
            req.into_body(),
            config.max_upload_bytes,
            config.body_read_timeout(),
            &tx,
        )
        .await;
        if let Ok(crate::body::Forwarded::Complete(n)) = &forwarded {
            log.bytes = usize::try_from(*n).unwrap_or(usize::MAX);
        }
        let received = Utc::now();
        match forwarded {
            Ok(crate::body::Forwarded::Complete(_)) => {
                // If the writer already failed, its own error is the answer.
                let _ = tx.send(intake::Piece::End(received)).await;
            }
            Ok(crate::body::Forwarded::ReceiverGone) => {}
            Err(e) => {
                drop(tx); // the writer sees the channel close and removes its temp file
                let _ = writer.await;
                return Err(e);
            }
        }
        drop(tx);
        (received, Instant::now(), writer.await)
    } else {
        let limit = config.max_body_bytes;
        let raw =
            crate::body::read_limited(req.into_body(), limit, config.body_read_timeout()).await?;
        log.bytes = raw.len();
        if raw.is_empty() {
            return Err(RequestError::EmptyBody);
        }
        let received = Utc::now();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            intake::accept(&task_state, action, &station, encoding, raw, received)
        })
        .await;
        (received, started, outcome)
    };
    let result = result.unwrap_or_else(|e| {
        Err(Refusal::from(RequestError::Store {
            source: std::io::Error::other(format!("intake task failed: {e}")),
            retry_after_secs: config.retry_after_secs,
        }))
    });
    match result {
        Ok(accepted) => {
            let metrics = &state.metrics;
            if accepted.duplicate {
                metrics.duplicate();
            } else {
                metrics.stored(accepted.bytes, store_started.elapsed());
            }
            metrics.seen(query.station.as_str(), received);
            log_details(&query, &accepted);
            log.bytes = accepted.bytes;
            log.path = Some(accepted.stored.path.display().to_string());
            log.outcome = if accepted.duplicate {
                Outcome::Duplicate
            } else {
                Outcome::Stored
            };
            Ok(response::ott_response(
                query.station.as_str(),
                accepted.stored.received,
            ))
        }
        Err(refusal) => {
            if refusal.kept.is_some() {
                state.metrics.rejected();
            }
            log.kept = refusal.kept.map(|p| p.display().to_string());
            Err(refusal.error)
        }
    }
}

/// What a stored document says that operators must see: a `stationId`
/// other than the query's, alarms, failed commands.
fn log_details(query: &OttQuery, accepted: &Accepted) {
    let station_id = query.station.as_str();
    let action = query.action.name();
    if let Some(summary) = &accepted.summary {
        for other in summary
            .station_ids
            .iter()
            .filter(|s| s.as_str() != station_id)
        {
            tracing::warn!(
                station_id,
                action,
                document_station_id = other.as_str(),
                "document names station {other}, the query {station_id}; stored under {station_id}"
            );
        }
    }
    if query.action == Action::SendAlarm && !accepted.duplicate {
        let body = accepted.body.as_deref().unwrap_or_default();
        let alarm: String = xml::text(body).chars().take(4096).collect();
        tracing::error!(
            station_id,
            alarm = alarm.as_str(),
            "alarm from station {station_id}: {alarm}"
        );
    }
    for (ack, outcome) in &accepted.acks {
        let ack_id = ack.ack_id.as_str();
        match outcome {
            AckOutcome::Recorded { id } if ack.is_ok() => {
                tracing::info!(
                    station_id,
                    ack_id,
                    command = id.as_str(),
                    "command {id} ackId {ack_id}: OK"
                );
            }
            AckOutcome::Recorded { id } => tracing::warn!(
                station_id,
                ack_id,
                command = id.as_str(),
                ack_status = ack.status.as_str(),
                reason = ack.reason.as_str(),
                "command {id} ackId {ack_id}: {} {}",
                ack.status,
                ack.reason
            ),
            AckOutcome::UnknownAckId => tracing::warn!(
                station_id,
                ack_id,
                ack_status = ack.status.as_str(),
                "acknowledgement of ackId {ack_id}, which no command sent to {station_id} carries"
            ),
        }
    }
}

/// `requestcommand`: the oldest pending document, once; else an empty 200.
async fn request_command(
    state: &Arc<AppState>,
    query: &OttQuery,
    log: &mut RequestLog,
) -> Result<Response<Body>, RequestError> {
    let task_state = Arc::clone(state);
    let station = query.station.to_string();
    let taken = tokio::task::spawn_blocking(move || {
        crate::queue::take_next(&task_state.archive, &station, Utc::now())
    })
    .await
    .map_err(|e| std::io::Error::other(format!("queue task failed: {e}")))
    .and_then(|r| r)
    .map_err(|source| RequestError::Store {
        source,
        retry_after_secs: state.config.retry_after_secs,
    })?;
    Ok(match taken {
        Some((id, doc)) => {
            log.outcome = Outcome::Command;
            log.bytes = doc.len();
            log.path = Some(id);
            response::document(doc)
        }
        None => response::empty(),
    })
}

/// `getconfiguration`/`getfirmware`: the file published at `path`.
async fn download(
    state: &Arc<AppState>,
    path: &str,
    log: &mut RequestLog,
) -> Result<Response<Body>, RequestError> {
    let root = state.config.downloads_dir.clone();
    let url_path = path.to_owned();
    let (file, content) = tokio::task::spawn_blocking(move || {
        let file = crate::downloads::resolve(&root, &url_path)?;
        let content = std::fs::read(&file).map_err(|_| RequestError::NotFound)?;
        Ok::<_, RequestError>((file, content))
    })
    .await
    .map_err(|_| RequestError::NotFound)??;
    log.outcome = Outcome::Download;
    log.bytes = content.len();
    log.path = Some(file.display().to_string());
    Ok(response::file(content))
}
