//! `getconfiguration` and `getfirmware` (GET): the file the operator
//! published under `downloads_dir` at the request's path, the station's
//! own if there is one ([`crate::downloads::resolve_for`]).

use std::sync::Arc;

use hyper::Response;

use super::{Kind, Spec};
use crate::error::RequestError;
use crate::reqlog::{Outcome, RequestLog};
use crate::response::{self, Body};
use crate::state::AppState;

pub(crate) const CONFIGURATION: Spec = Spec {
    kind: Kind::Download,
};

pub(crate) const FIRMWARE: Spec = Spec {
    kind: Kind::Download,
};

pub(crate) async fn handle(
    state: &Arc<AppState>,
    station: &str,
    path: &str,
    log: &mut RequestLog,
) -> Result<(Response<Body>, Outcome), RequestError> {
    let (station, url_path) = (station.to_owned(), path.to_owned());
    let (file, content) = crate::state::blocking(state, move |state| {
        let file = crate::downloads::resolve_for(&state.config.downloads_dir, &station, &url_path)?;
        let content = std::fs::read(&file).map_err(|_| RequestError::NotFound)?;
        Ok::<_, RequestError>((file, content))
    })
    .await??;
    log.stored_bytes(content.len() as u64);
    log.path(&file.display().to_string());
    Ok((response::file(content), Outcome::Download))
}
