//! Reading a request body from hyper: whole (Content-Length or chunked,
//! within a limit, checked up front and while reading, every byte covered
//! by the memory budget, [`crate::budget`]) or a frame at a time, with an
//! idle timeout between two reads, like NGINX's `client_body_timeout`, and
//! optionally a deadline for the whole body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::budget::Reservation;
use crate::error::RequestError;

/// When the whole of a body must have arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: tokio::time::Instant,
    pub(crate) secs: u64,
}

/// The next piece of data of `body`, `None` at its end.
pub(crate) async fn next_data(
    body: &mut Incoming,
    idle_timeout: Duration,
    deadline: Option<Deadline>,
) -> Result<Option<Bytes>, RequestError> {
    loop {
        let mut wait_until = tokio::time::Instant::now() + idle_timeout;
        let mut cut = RequestError::BodyTimeout {
            secs: idle_timeout.as_secs(),
        };
        if let Some(deadline) = deadline.filter(|d| d.at < wait_until) {
            wait_until = deadline.at;
            cut = RequestError::UploadDeadline {
                secs: deadline.secs,
            };
        }
        let frame = match tokio::time::timeout_at(wait_until, body.frame()).await {
            Err(_) => return Err(cut),
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

/// The whole body, at most `limit` bytes. What it holds in memory is
/// covered by `held` as it grows: a request waits for room (reading
/// nothing) or is refused 503, and a body that only trickles in holds
/// only what has arrived.
pub(crate) async fn read_limited(
    mut body: Incoming,
    limit: u64,
    idle_timeout: Duration,
    held: &mut Reservation,
) -> Result<Bytes, RequestError> {
    let too_large = || RequestError::BodyTooLarge { limit };
    let hint = body.size_hint();
    if hint.lower() > limit {
        return Err(too_large()); // Content-Length says so: do not read it at all.
    }
    let exact = hint.exact().filter(|n| *n <= limit);
    let mut buf = BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(data) = next_data(&mut body, idle_timeout, None).await? {
        let len = (buf.len() + data.len()) as u64 + first.as_ref().map_or(0, |f| f.len() as u64);
        if len > limit {
            return Err(too_large());
        }
        // A body in one frame (the usual case over the local socket) is kept
        // as hyper handed it over, without a copy.
        if first.is_none() && buf.is_empty() {
            held.cover(len).await?;
            first = Some(data);
            continue;
        }
        if buf.capacity() < len as usize {
            // The announced length at once, else doubling: few copies.
            let capacity = exact.unwrap_or_else(|| (buf.capacity() as u64 * 2).clamp(len, limit));
            held.cover(capacity.max(len)).await?;
            buf.reserve(capacity.max(len) as usize - buf.len());
        }
        if let Some(f) = first.take() {
            buf.extend_from_slice(&f);
        }
        buf.extend_from_slice(&data);
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
