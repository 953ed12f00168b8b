//! What dlsrv answers: the OTT `Response` document, plain-text errors, `pong`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use crate::error::RequestError;

pub(crate) type Body = Full<Bytes>;

const XML: &str = "application/xml; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The OTT Response document the old deployment sent, with `stationId`
/// escaped and `responseDateTime` set to the receipt time of the stored file.
pub(crate) fn ott_response_document(station_id: &str, received: DateTime<Utc>) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response stationId=\"{}\" responseDateTime=\"{}\" />",
        quick_xml::escape::escape(station_id),
        crate::layout::response_time(received)
    )
}

pub(crate) fn ott_response(station_id: &str, received: DateTime<Utc>) -> Response<Body> {
    with_type(
        StatusCode::OK,
        XML,
        ott_response_document(station_id, received),
    )
}

/// A queued command or query document, sent as it was queued.
pub(crate) fn document(doc: Vec<u8>) -> Response<Body> {
    bytes_with_type(StatusCode::OK, "application/xml", Bytes::from(doc))
}

/// `requestcommand` with nothing pending: 200 and an empty body.
pub(crate) fn empty() -> Response<Body> {
    Response::new(Full::new(Bytes::new()))
}

/// A published file for `getconfiguration`/`getfirmware`.
pub(crate) fn file(content: Vec<u8>) -> Response<Body> {
    bytes_with_type(
        StatusCode::OK,
        "application/octet-stream",
        Bytes::from(content),
    )
}

/// The Prometheus text exposition.
pub(crate) fn metrics(text: String) -> Response<Body> {
    with_type(
        StatusCode::OK,
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        text,
    )
}

/// An operators' page (HTML) or its JSON. The page loads nothing from
/// anywhere: the policy says so to the browser too.
pub(crate) fn page(body: String, json: bool) -> Response<Body> {
    let content_type = if json {
        "application/json"
    } else {
        "text/html; charset=utf-8"
    };
    let mut response = with_type(StatusCode::OK, content_type, body);
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /ping`: 200 while the service takes bodies; with a shared catalog
/// that cannot be reached, a second line says so (intake goes on).
pub(crate) fn pong(catalog_degraded: bool) -> Response<Body> {
    let text = if catalog_degraded {
        "pong\ncatalog degraded: the shared catalog is unreachable; bodies are stored, their rows wait locally\n"
    } else {
        "pong\n"
    };
    with_type(StatusCode::OK, TEXT, text.to_owned())
}

/// The answer to a refused request: its status, headers and one-line
/// reason; a 503 says when to retry.
pub(crate) fn error(e: &RequestError, retry_after_secs: u64) -> Response<Body> {
    let line = crate::logging::printable(&e.to_string(), 1024);
    let mut response = with_type(e.status(), TEXT, format!("{line}\n"));
    for (name, value) in e.headers(retry_after_secs) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    bytes_with_type(status, content_type, Bytes::from(body))
}

fn bytes_with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 10, 22, 0, 1, 6)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(209_619)
    }

    #[test]
    fn matches_the_old_deployment_byte_for_byte() {
        assert_eq!(
            ott_response_document("0000452891", t()),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response stationId=\"0000452891\" responseDateTime=\"2020-10-22T00:01:06.209619\" />"
        );
    }

    #[test]
    fn always_six_fraction_digits() {
        let whole = Utc
            .with_ymd_and_hms(2021, 1, 2, 3, 4, 5)
            .single()
            .expect("valid");
        assert!(
            ott_response_document("s", whole)
                .contains("responseDateTime=\"2021-01-02T03:04:05.000000\"")
        );
    }

    #[test]
    fn station_id_is_escaped() {
        let doc = ott_response_document("\"><x>&'", t());
        assert!(
            doc.contains("stationId=\"&quot;&gt;&lt;x&gt;&amp;&apos;\""),
            "{doc}"
        );
    }

    #[test]
    fn error_carries_status_headers_and_one_line() {
        let r = error(&RequestError::MethodNotAllowed { allow: "POST" }, 60);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()["allow"], "POST");
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT);
    }
}
