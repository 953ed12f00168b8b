//! `requestcommand` (GET): the oldest document an operator queued for the
//! station, handed out once ([`crate::queue::take_next`]) and again only
//! when not acknowledged within `command_ack_timeout_secs`; an empty 200
//! when none is pending. A failure after the take puts it back (503).
//! With a shared catalog the queue is PostgreSQL's ([`crate::pgqueue`]),
//! handed out once across all hosts; while it cannot be reached, the
//! empty 200.

use std::sync::Arc;

use chrono::Utc;
use hyper::Response;

use super::{Kind, Spec};
use crate::error::RequestError;
use crate::reqlog::{Outcome, RequestLog};
use crate::request::OttQuery;
use crate::response::{self, Body};
use crate::state::AppState;

pub(crate) const SPEC: Spec = Spec {
    kind: Kind::Command,
};

pub(crate) async fn handle(
    state: &Arc<AppState>,
    query: &OttQuery,
    log: &mut RequestLog,
) -> Result<(Response<Body>, Outcome), RequestError> {
    // Handing out writes to the queue: not when the disk is nearly full.
    crate::state::room_to_write(state).await?;
    let station = query.station.to_string();
    let taken = crate::state::blocking(state, move |state| {
        let timeout = std::time::Duration::from_secs(state.config.command_ack_timeout_secs);
        match &state.shared_queue {
            // The shared queue away: nothing to hand out now (said once in
            // the log); the logger asks again at its next transmission.
            Some(queue) => Ok(queue
                .with(|c| crate::pgqueue::take_next(c, &station, Utc::now(), timeout))
                .unwrap_or(None)),
            None => crate::queue::take_next(&state.store, &station, Utc::now(), timeout)
                .map_err(RequestError::store),
        }
    })
    .await??;
    Ok(match taken {
        Some(taken) => {
            for _ in 0..taken.overdue {
                state.metrics.command_resent();
            }
            log.stored_bytes(taken.doc.len() as u64);
            log.path(&taken.id);
            (response::document(taken.doc), Outcome::Command)
        }
        None => (response::empty(), Outcome::Other),
    })
}
