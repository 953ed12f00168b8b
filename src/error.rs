//! Why a request was not answered 200, and the one place that maps each
//! reason to a status code and a one-line plain-text body.
//!
//! Client mistakes are 4xx and never touch the disk; a failure to store is
//! 503 with `Retry-After`, which a logger treats as "keep the data, retry".

use std::io;

use hyper::StatusCode;

/// Everything that can stop a request short of a 200.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed, use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("bad stationid: {0}")]
    BadStationId(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("the service is busy, retry later ({0})")]
    Busy(&'static str),
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("empty body")]
    EmptyBody,
    #[error("unsupported Content-Encoding {0:?} (use deflate or gzip)")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    BadEncoding(String),
    #[error("malformed document: {0}")]
    Malformed(String),
    #[error("body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("body not received within {secs} s of the last data")]
    BodyTimeout { secs: u64 },
    #[error("upload not received within {secs} s (upload_deadline_secs)")]
    UploadDeadline { secs: u64 },
    #[error("body could not be read: {0}")]
    BodyRead(String),
    #[error("could not store the transmission, retry later")]
    Store(#[source] io::Error),
}

/// Why a store is refused when a file system is below `min_free_bytes` or `min_free_inodes`.
pub(crate) const DISK_LOW: &str =
    "the file system is nearly full (min_free_bytes, min_free_inodes)";
/// Why a body is refused when `max_inflight_body_bytes` are in memory.
pub(crate) const MEMORY_FULL: &str = "request bodies in memory are at max_inflight_body_bytes";

impl RequestError {
    /// A failure to store (or to touch the queue): 503, the client retries.
    pub(crate) fn store(source: io::Error) -> RequestError {
        RequestError::Store(source)
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestError::NotFound => StatusCode::NOT_FOUND,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::BadQuery(_)
            | RequestError::BadStationId(_)
            | RequestError::UnknownAction(_)
            | RequestError::EmptyBody
            | RequestError::BadEncoding(_)
            | RequestError::Malformed(_)
            | RequestError::BodyRead(_) => StatusCode::BAD_REQUEST,
            RequestError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTimeout { .. } | RequestError::UploadDeadline { .. } => {
                StatusCode::REQUEST_TIMEOUT
            }
            RequestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Extra headers the status needs (`Allow`, `Retry-After`, `Connection`);
    /// `retry_after_secs` is the configured `Retry-After` of a 503.
    pub(crate) fn headers(&self, retry_after_secs: u64) -> Vec<(&'static str, String)> {
        match self {
            RequestError::MethodNotAllowed { allow } => vec![("allow", (*allow).to_owned())],
            RequestError::Store(_) => vec![("retry-after", retry_after_secs.to_string())],
            // Busy may leave part of a body unread: the connection ends too.
            RequestError::Busy(_) => vec![
                ("retry-after", retry_after_secs.to_string()),
                ("connection", "close".to_owned()),
            ],
            // The rest of the body was never read: the connection cannot be reused.
            RequestError::BodyTooLarge { .. }
            | RequestError::BodyTimeout { .. }
            | RequestError::UploadDeadline { .. }
            | RequestError::BodyRead(_) => vec![("connection", "close".to_owned())],
            _ => Vec::new(),
        }
    }

    /// The reason's short name, a label of `dlsrv_refused_total` (one
    /// per variant; `Busy` by what is exhausted).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            RequestError::NotFound => "not_found",
            RequestError::MethodNotAllowed { .. } => "method",
            RequestError::BadQuery(_) => "bad_query",
            RequestError::BadStationId(_) => "bad_station_id",
            RequestError::Forbidden(_) => "forbidden",
            RequestError::Busy(why) if *why == DISK_LOW => "disk_full",
            RequestError::Busy(why) if *why == MEMORY_FULL => "memory_full",
            RequestError::Busy(_) => "busy",
            RequestError::UnknownAction(_) => "unknown_action",
            RequestError::EmptyBody => "empty_body",
            RequestError::UnsupportedEncoding(_) => "unsupported_encoding",
            RequestError::BadEncoding(_) => "bad_encoding",
            RequestError::Malformed(_) => "malformed",
            RequestError::BodyTooLarge { .. } => "too_large",
            RequestError::BodyTimeout { .. } => "body_timeout",
            RequestError::UploadDeadline { .. } => "upload_deadline",
            RequestError::BodyRead(_) => "body_read",
            RequestError::Store(_) => "store_failed",
        }
    }

    /// The one-line reason for the log: for a failure to store, with its cause.
    pub(crate) fn reason(&self) -> String {
        match self {
            RequestError::Store(source) => format!("{self}: {source}"),
            _ => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_4xx_and_store_errors_503() {
        let client = [
            RequestError::NotFound,
            RequestError::MethodNotAllowed { allow: "POST" },
            RequestError::BadQuery("x".into()),
            RequestError::BadStationId("x"),
            RequestError::UnknownAction("x".into()),
            RequestError::EmptyBody,
            RequestError::BodyTooLarge { limit: 1 },
            RequestError::BodyTimeout { secs: 1 },
            RequestError::UploadDeadline { secs: 1 },
            RequestError::BodyRead("x".into()),
            RequestError::Forbidden("x".into()),
        ];
        for e in &client {
            assert!(e.status().is_client_error(), "{e:?}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        let store = RequestError::store(io::Error::other("disk full"));
        assert_eq!(store.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(store.headers(60), vec![("retry-after", "60".to_owned())]);
        let busy = RequestError::Busy("x");
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        // The reasons the alert rules tell apart (dlsrv_refused_total).
        assert_eq!(busy.kind(), "busy");
        assert_eq!(RequestError::Busy(DISK_LOW).kind(), "disk_full");
        assert_eq!(RequestError::Busy(MEMORY_FULL).kind(), "memory_full");
        assert_eq!(store.kind(), "store_failed");
        assert!(busy.headers(60).contains(&("retry-after", "60".to_owned())));
        assert_eq!(
            store.reason(),
            "could not store the transmission, retry later: disk full"
        );
    }
}
