//! Why a request was not answered 200, and the one place that maps each
//! reason to a status code and a one-line plain-text body.
//!
//! Client mistakes are 4xx and never touch the disk; a failure to store is
//! 503 with `Retry-After`, which a logger treats as "keep the data, retry".

use std::io;

use hyper::StatusCode;

/// Everything that can stop a request short of a 200.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed, use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("bad stationid: {0}")]
    BadStationId(&'static str),
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
    #[error("body could not be read: {0}")]
    BodyRead(String),
    #[error("could not store the transmission, retry later")]
    Store {
        #[source]
        source: io::Error,
        retry_after_secs: u64,
    },
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::NotFound => StatusCode::NOT_FOUND,
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
            RequestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            RequestError::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Extra headers the status needs (`Allow`, `Retry-After`, `Connection`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            RequestError::MethodNotAllowed { allow } => vec![("allow", (*allow).to_owned())],
            RequestError::Store {
                retry_after_secs, ..
            } => vec![("retry-after", retry_after_secs.to_string())],
            // The rest of the body was never read: the connection cannot be reused.
            RequestError::BodyTooLarge { .. }
            | RequestError::BodyTimeout { .. }
            | RequestError::BodyRead(_) => vec![("connection", "close".to_owned())],
            _ => Vec::new(),
        }
    }

    /// True when the fault is ours (logged at error), false for a client's.
    pub fn is_server_fault(&self) -> bool {
        self.status().is_server_error()
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
            RequestError::BodyRead("x".into()),
        ];
        for e in &client {
            assert!(e.status().is_client_error(), "{e:?}");
            assert!(!e.is_server_fault());
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        let store = RequestError::Store {
            source: io::Error::other("disk full"),
            retry_after_secs: 60,
        };
        assert_eq!(store.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(store.headers(), vec![("retry-after", "60".to_owned())]);
        assert!(store.is_server_fault());
    }
}
