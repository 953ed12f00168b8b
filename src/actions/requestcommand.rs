//! `requestcommand` (GET): the oldest document an operator queued for the
//! station, handed out once ([`crate::queue::take_next`]); an empty 200
//! when none is pending.

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
    name: "requestcommand",
    kind: Kind::Command,
};

pub(crate) async fn handle(
    state: &Arc<AppState>,
    query: &OttQuery,
    log: &mut RequestLog,
) -> Result<(Response<Body>, Outcome), RequestError> {
    let station = query.station.to_string();
    let taken = crate::routes::blocking(state, move |state| {
        crate::queue::take_next(&state.store, &station, Utc::now()).map_err(RequestError::store)
    })
    .await??;
    Ok(match taken {
        Some((id, doc)) => {
            log.stored_bytes(doc.len() as u64);
            log.path(&id);
            (response::document(doc), Outcome::Command)
        }
        None => (response::empty(), Outcome::Other),
    })
}
