//! Reading a request body: whole, Content-Length or chunked, within
//! `max_body_bytes` (checked up front and while reading) and with an idle
//! timeout between two reads, like NGINX's `client_body_timeout`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::error::RequestError;
use crate::intake::Piece;

/// What [`forward`] did with a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// All of it was sent on: this many bytes.
    Complete(u64),
    /// The receiver stopped listening (its error says why).
    ReceiverGone,
}

/// Sends a body on to a writer piece by piece, with the same limits as
/// [`read_limited`]; at most a few frames are ever in memory.
pub async fn forward(
    mut body: Incoming,
    limit: u64,
    idle_timeout: Duration,
    to: &tokio::sync::mpsc::Sender<Piece>,
) -> Result<Forwarded, RequestError> {
    if body.size_hint().lower() > limit {
        return Err(RequestError::BodyTooLarge { limit });
    }
    let mut total = 0u64;
    loop {
        let frame = match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => {
                return Err(RequestError::BodyTimeout {
                    secs: idle_timeout.as_secs(),
                });
            }
            Ok(None) => return Ok(Forwarded::Complete(total)),
            Ok(Some(Err(e))) => return Err(RequestError::BodyRead(with_cause(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit {
                return Err(RequestError::BodyTooLarge { limit });
            }
            if to.send(Piece::Data(data)).await.is_err() {
                return Ok(Forwarded::ReceiverGone);
            }
        }
    }
}

pub async fn read_limited(
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
    let mut buf = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) => {
                return Err(RequestError::BodyTimeout {
                    secs: idle_timeout.as_secs(),
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(RequestError::BodyRead(with_cause(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// hyper's message plus its cause: "error reading a body from connection:
/// Invalid chunk body CR" tells an operator far more than the first half.
fn with_cause(e: &hyper::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
