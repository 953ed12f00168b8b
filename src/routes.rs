//! Routing. `/ott` and `/ott/` speak every action of the logger protocol
//! (`?stationid=…&action=…`, dispatched by [`crate::actions`]); `GET /ping`
//! answers `pong`; `GET /metrics` the Prometheus text;
//! `getconfiguration`/`getfirmware` are served at whatever path the
//! operator published the file under.
//!
//! Every request gets one span and one outcome event ([`crate::reqlog`]),
//! and the hyper service never fails: every outcome is a response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use hyper::body::Incoming;
use hyper::header::CONTENT_ENCODING;
use hyper::{Method, Request, Response};
use tracing::Instrument;

use crate::actions::{self, Kind};
use crate::decode::Encoding;
use crate::error::RequestError;
use crate::intake::{Intake, Refusal};
use crate::reqlog::{Outcome, RequestLog};
use crate::request::Action;
use crate::request::OttQuery;
use crate::response::{self, Body};
use crate::state::{AppState, blocking, room_to_write};

/// The hyper service.
pub(crate) async fn handle(
    req: Request<Incoming>,
    state: Arc<AppState>,
) -> Result<Response<Body>, Infallible> {
    let _in_flight = state.metrics.start_request();
    let mut log = RequestLog::new(&req);
    let span = log.span().clone();
    let mut action = None;
    let (response, outcome) = match route(req, &state, &mut log, &mut action)
        .instrument(span)
        .await
    {
        Ok(answered) => answered,
        Err(refusal) => {
            let Refusal { error, kept } = refusal;
            // A reason may quote what the client sent: escaped for the log.
            let reason = crate::logging::printable(&error.reason(), 1024);
            state.metrics.refused(error.status().as_u16(), error.kind());
            let outcome = if error.status().is_server_error() {
                Outcome::Failed { reason }
            } else {
                Outcome::Refused { reason, kept }
            };
            (
                response::error(&error, state.config.retry_after_secs),
                outcome,
            )
        }
    };
    log.finish(response.status(), &outcome);
    state.metrics.request(
        action.map_or("none", Action::name),
        response.status().as_u16(),
    );
    Ok(response)
}

type Answer = Result<(Response<Body>, Outcome), Refusal>;

async fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    log: &mut RequestLog,
    action: &mut Option<Action>,
) -> Answer {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/ping" => match *req.method() {
            Method::GET | Method::HEAD => {
                Ok((response::pong(state.catalog_degraded()), Outcome::Other))
            }
            _ => Err(RequestError::MethodNotAllowed { allow: "GET, HEAD" }.into()),
        },
        "/metrics" => match *req.method() {
            Method::GET | Method::HEAD => Ok((
                response::metrics(
                    blocking(state, |s| {
                        s.refresh_station_metrics();
                        s.metrics.render(s.catalog.pending(), s.budget.in_use())
                    })
                    .await?,
                ),
                Outcome::Other,
            )),
            _ => Err(RequestError::MethodNotAllowed { allow: "GET, HEAD" }.into()),
        },
        "/status" | "/status/" | "/status.json" => status_page(req, state, &path, None).await,
        p if p.starts_with("/status/") => {
            let station = p["/status/".len()..].to_owned();
            status_page(req, state, &path, Some(station)).await
        }
        "/ott" | "/ott/" => {
            if !matches!(*req.method(), Method::GET | Method::POST) {
                return Err(RequestError::MethodNotAllowed { allow: "GET, POST" }.into());
            }
            let query = OttQuery::parse(req.uri().query())?;
            log.query(query.station.as_str(), query.action);
            *action = Some(query.action);
            may_speak_for(state, &req, &query)?;
            if req.method() != query.action.method() {
                let allow = if query.action.method() == Method::GET {
                    "GET"
                } else {
                    "POST"
                };
                return Err(RequestError::MethodNotAllowed { allow }.into());
            }
            match query.action.spec().kind {
                Kind::Command => Ok(actions::requestcommand::handle(state, &query, log).await?),
                Kind::Download => {
                    Ok(
                        actions::download::handle(state, query.station.as_str(), &path, log)
                            .await?,
                    )
                }
                Kind::Document { .. } | Kind::Upload => post(req, state, query, log).await,
            }
        }
        // A published file, at the path the operator configured in the logger.
        _ => match OttQuery::parse(req.uri().query()) {
            Ok(query) if matches!(query.action.spec().kind, Kind::Download) => {
                log.query(query.station.as_str(), query.action);
                *action = Some(query.action);
                may_speak_for(state, &req, &query)?;
                if *req.method() != Method::GET {
                    return Err(RequestError::MethodNotAllowed { allow: "GET" }.into());
                }
                Ok(actions::download::handle(state, query.station.as_str(), &path, log).await?)
            }
            Err(e @ RequestError::BadStationId(_)) => Err(e.into()),
            _ => Err(RequestError::NotFound.into()),
        },
    }
}

/// The operators' pages (`crate::page`): GET or HEAD, refused (403) to a
/// login that is a logger's, rendered from the catalog on the blocking pool.
async fn status_page(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    path: &str,
    station: Option<String>,
) -> Answer {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(RequestError::MethodNotAllowed { allow: "GET, HEAD" }.into());
    }
    let login = req
        .headers()
        .get("x-remote-user")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let page_no = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse::<usize>().ok())
        })
        .unwrap_or(1);
    let days = chart_days(req.uri().query())?;
    let json = path == "/status.json";
    let rendered = blocking(state, move |s| {
        if let Some(login) = login.as_deref().filter(|l| !l.is_empty())
            && s.is_logger_login(login)
        {
            return Err(RequestError::Forbidden(format!(
                "login {} is a logger's: the status pages are for operators",
                crate::logging::printable(login, 64)
            )));
        }
        let lateness = crate::status::Lateness::of(&s.config);
        let now = Utc::now();
        let state_dir = s.state_dir().to_path_buf();
        let replica = s.config.replica.is_some();
        let result = s.catalog.with_reader(|conn| match (&station, json) {
            (_, true) => Ok(Some(Rendered::Stations(crate::status::stations(
                conn,
                &state_dir,
                lateness,
                now,
                &[],
            )?))),
            (Some(id), _) => {
                // The charts are gathered apart from this reader (they may
                // take a while), and only for a station the catalog knows.
                let charts = |quiet| {
                    s.charts.get_or_render((id.clone(), days), || {
                        let from = now - chrono::Duration::days(i64::from(days));
                        crate::chart::gather(&s.config, &s.catalog, id, from, now)
                            .map(|c| c.render(quiet).into_string())
                    })
                };
                Ok(
                    crate::page::station(conn, &state_dir, lateness, now, id, days, charts)?
                        .map(Rendered::Html),
                )
            }
            (None, _) => Ok(Some(Rendered::Html(crate::page::overview(
                conn,
                &state_dir,
                lateness,
                now,
                (page_no, replica),
            )?))),
        });
        match result {
            Ok(Some(Rendered::Html(html))) => Ok((html, false)),
            Ok(Some(Rendered::Stations(rows))) => crate::status::json(&rows)
                .map(|text| (text, true))
                .map_err(|e| {
                    RequestError::store(std::io::Error::other(format!(
                        "cannot write the status as JSON: {e}"
                    )))
                }),
            Ok(None) => Err(RequestError::NotFound),
            Err(e) => Err(RequestError::store(std::io::Error::other(format!(
                "cannot read the catalog: {e}"
            )))),
        }
    })
    .await??;
    let (body, is_json) = rendered;
    Ok((response::page(body, is_json), Outcome::Other))
}

/// `?days=N` of a station page: the charts' window (1 to 90 days, 7 when not asked).
fn chart_days(query: Option<&str>) -> Result<u32, RequestError> {
    let Some(days) = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "days")
            .map(|(_, v)| v.into_owned())
    }) else {
        return Ok(crate::chart::DEFAULT_DAYS);
    };
    days.parse::<u32>()
        .ok()
        .filter(|d| (1..=crate::chart::MAX_DAYS).contains(d))
        .ok_or_else(|| {
            RequestError::BadQuery(format!(
                "days={}: a whole number of days from 1 to {}",
                crate::logging::printable(&days, 32),
                crate::chart::MAX_DAYS
            ))
        })
}

/// What a status page was rendered into, still inside the catalog's reader.
enum Rendered {
    Html(String),
    /// `/status.json`: serialised outside the reader, where its error is ours.
    Stations(Vec<crate::status::StationStatus>),
}

/// The login NGINX checked (`X-Remote-User`) may speak for the query's station.
fn may_speak_for(
    state: &AppState,
    req: &Request<Incoming>,
    query: &OttQuery,
) -> Result<(), RequestError> {
    let login = req
        .headers()
        .get("x-remote-user")
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    state
        .access()
        .check(login.as_deref(), &query.station)
        .map_err(|refused| RequestError::Forbidden(refused.0))
}

/// Every POST action: the body through the one intake pipeline.
async fn post(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    query: OttQuery,
    log: &mut RequestLog,
) -> Answer {
    let encoding = Encoding::parse(req.headers().get(CONTENT_ENCODING).map(|v| v.as_bytes()))?;
    log.encoding(encoding);
    let config = &state.config;
    let OttQuery { station, action } = query;
    let station_name = station.as_str().to_owned();
    let limit = action.body_limit(config);
    // What the headers already refuse is refused before anything touches the disk.
    let hint = hyper::body::Body::size_hint(req.body());
    if hint.lower() > limit {
        return Err(RequestError::BodyTooLarge { limit }.into());
    }
    if hint.exact() == Some(0) {
        return Err(RequestError::EmptyBody.into());
    }
    room_to_write(state).await?;
    let idle = config.body_read_timeout();
    let (received, store_started, result) = match action.spec().kind {
        Kind::Upload => {
            // Streamed: each piece is written by a short blocking task, so
            // no thread waits for the network, and memory holds a piece or two.
            let deadline = crate::body::Deadline {
                at: tokio::time::Instant::now()
                    + std::time::Duration::from_secs(config.upload_deadline_secs),
                secs: config.upload_deadline_secs,
            };
            let started = Utc::now();
            let station_id = station.clone();
            let mut intake = blocking(state, move |s| {
                Intake::streamed(s, action, station_id, encoding, started)
            })
            .await??;
            let mut body = req.into_body();
            let mut wire = 0u64;
            loop {
                let data = match crate::body::next_data(&mut body, idle, Some(deadline)).await {
                    Ok(Some(data)) => data,
                    Ok(None) => break,
                    Err(e) => {
                        blocking(state, move |_| drop(intake)).await?;
                        return Err(e.into());
                    }
                };
                wire += data.len() as u64;
                if wire > limit {
                    blocking(state, move |_| drop(intake)).await?;
                    return Err(RequestError::BodyTooLarge { limit }.into());
                }
                intake = blocking(state, move |_| intake.feed(&data).map(|()| intake)).await??;
            }
            log.wire_bytes(wire);
            let received = Utc::now();
            let store_started = Instant::now();
            let result = blocking(state, move |s| intake.finish(s, received)).await?;
            (received, store_started, result)
        }
        _ => {
            let mut held = state.budget.reservation();
            let raw = crate::body::read_limited(req.into_body(), limit, idle, &mut held).await?;
            log.wire_bytes(raw.len() as u64);
            if raw.is_empty() {
                return Err(RequestError::EmptyBody.into());
            }
            let received = Utc::now();
            let store_started = Instant::now();
            let result = blocking(state, move |s| {
                Intake::whole(s, action, station, encoding, raw, held).finish(s, received)
            })
            .await?;
            (received, store_started, result)
        }
    };
    let result = match result {
        Ok(accepted) => accepted,
        Err(refusal) => {
            if refusal.kept.is_some() {
                state.metrics.rejected();
            }
            return Err(refusal);
        }
    };
    let metrics = &state.metrics;
    if result.duplicate {
        metrics.duplicate();
    } else {
        metrics.stored(result.bytes, store_started.elapsed());
    }
    metrics.seen(&station_name, received);
    log.stored_bytes(result.bytes);
    log.path(&result.stored.relative);
    let outcome = if result.duplicate {
        Outcome::Duplicate
    } else {
        Outcome::Stored
    };
    Ok((
        response::ott_response(&station_name, result.stored.received),
        outcome,
    ))
}
