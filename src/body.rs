//! Reading a request body from hyper: whole (Content-Length or chunked,
//! within a limit, checked up front and while reading) or a frame at a
//! time, with an idle timeout between two reads, like NGINX's
//! `client_body_timeout`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::error::RequestError;

/// The next piece of data of `body`, `None` at its end.
pub(crate) async fn next_data(
    body: &mut Incoming,
    idle_timeout: Duration,
) -> Result<Option<Bytes>, RequestError> {
    loop {
        let frame = match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => {
                return Err(RequestError::BodyTimeout {
                    secs: idle_timeout.as_secs(),
                });
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(RequestError::BodyRead(with_cause(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry no data: read on.
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// The whole body, at most `limit` bytes.
pub(crate) async fn read_limited(
    mut body: Incoming,
    limit: u64,
    idle_timeout: Duration,
) -> Result<Bytes, RequestError> {
    let too_large = || RequestError::BodyTooLarge { limit };
    let hint = body.size_hint();
    if hint.lower() > limit {
        return Err(too_large()); // Content-Length says so: do not read it at all.
    }
    let capacity = hint.exact().unwrap_or(0).min(limit);
    let capacity = usize::try_from(capacity).unwrap_or(0);
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(data) = next_data(&mut body, idle_timeout).await? {
        if (buf.len() + data.len()) as u64 + first.as_ref().map_or(0, |f| f.len() as u64) > limit {
            return Err(too_large());
        }
        // A body in one frame (the usual case over the local socket) is kept
        // as hyper handed it over, without a copy.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve(capacity.max(f.len() + data.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// hyper's message plus its cause: "error reading a body from connection:
/// Invalid chunk body CR" tells an operator far more than the first half.
fn with_cause(e: &hyper::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
