//! What a netDL logger puts on the wire: the query, headers and (compressed) bodies of its
//! requests, and the acknowledgement it sends for a served command or query document.

use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use flate2::Compression as Level;
use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use quick_xml::events::Event;

use crate::http::{basic_auth, join_query, percent_encode};

/// The actions a logger POSTs (with a body).
pub const POST_ACTIONS: [&str; 5] = [
    "senddata",
    "sendalarm",
    "acknowledge",
    "sendconfiguration",
    "sendfirmware",
];

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("ott-emulator/", env!("CARGO_PKG_VERSION"));

/// Whether `action` is sent as a POST with a body.
pub fn is_post_action(action: &str) -> bool {
    POST_ACTIONS.contains(&action)
}

/// The content type a logger declares for an action's body.
pub fn content_type(action: &str) -> &'static str {
    match action {
        "senddata" | "sendalarm" | "acknowledge" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// `stationid=<ID>&action=<ACTION>`, percent-encoded.
pub fn action_query(station: &str, action: &str) -> String {
    format!(
        "stationid={}&action={}",
        percent_encode(station),
        percent_encode(action)
    )
}

/// How POST bodies are compressed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// zlib-wrapped deflate (RFC 1950), `Content-Encoding: deflate`, as a netDL sends.
    Deflate,
    /// gzip (RFC 1952), `Content-Encoding: gzip`.
    Gzip,
}

impl Compression {
    /// The `Content-Encoding` value, if any.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Deflate => Some("deflate"),
            Compression::Gzip => Some("gzip"),
        }
    }

    pub fn compress(self, body: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => body.to_vec(),
            Compression::Deflate => {
                let mut e = ZlibEncoder::new(Vec::new(), Level::default());
                e.write_all(body)?;
                e.finish()?
            }
            Compression::Gzip => {
                let mut e = GzEncoder::new(Vec::new(), Level::default());
                e.write_all(body)?;
                e.finish()?
            }
        })
    }
}

/// Undoes a response's `Content-Encoding` (deflate: zlib-wrapped or raw; gzip).
pub fn decode_content(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>> {
    let enc = encoding.unwrap_or("").trim().to_ascii_lowercase();
    let mut out = Vec::new();
    match enc.as_str() {
        "" | "identity" => return Ok(body.to_vec()),
        "deflate" => {
            if ZlibDecoder::new(body).read_to_end(&mut out).is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .read_to_end(&mut out)
                    .context("inflating a deflate response body")?;
            }
        }
        "gzip" | "x-gzip" => {
            GzDecoder::new(body)
                .read_to_end(&mut out)
                .context("decompressing a gzip response body")?;
        }
        other => bail!("unsupported Content-Encoding {other:?} in the response"),
    }
    Ok(out)
}

/// A request ready for [`crate::http::Client::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    pub method: &'static str,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    /// The body as sent (compressed if so configured); `None` for a GET.
    pub body: Option<Vec<u8>>,
    /// The body's size before compression.
    pub raw_len: usize,
}

impl PreparedRequest {
    /// `POST /ott/?stationid=..&action=senddata (2836 bytes, deflate 1203 bytes)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.method, self.path_and_query);
        if let Some(body) = &self.body {
            let enc = self
                .headers
                .iter()
                .find(|(n, _)| n == "Content-Encoding")
                .map(|(_, v)| v.as_str());
            match enc {
                Some(e) => s.push_str(&format!(
                    " ({} bytes, {e} {} bytes)",
                    self.raw_len,
                    body.len()
                )),
                None => s.push_str(&format!(" ({} bytes)", body.len())),
            }
        }
        s
    }
}

/// Settings shared by every request of a run.
#[derive(Debug, Clone, Default)]
pub struct RequestSettings {
    /// The target's URL path, e.g. `/ott/`.
    pub base_path: String,
    /// `(user, password)` for HTTP Basic authentication.
    pub auth: Option<(String, String)>,
    pub compression: Compression,
}

impl RequestSettings {
    fn common_headers(&self) -> Vec<(String, String)> {
        let mut h = vec![("User-Agent".to_string(), USER_AGENT.to_string())];
        if let Some((user, password)) = &self.auth {
            h.push(("Authorization".to_string(), basic_auth(user, password)));
        }
        h
    }

    /// A POST of `body` for `action`, compressed as configured.
    pub fn post(&self, station: &str, action: &str, body: &[u8]) -> Result<PreparedRequest> {
        let mut headers = self.common_headers();
        headers.push(("Content-Type".to_string(), content_type(action).to_string()));
        if let Some(enc) = self.compression.header() {
            headers.push(("Content-Encoding".to_string(), enc.to_string()));
        }
        Ok(PreparedRequest {
            method: "POST",
            path_and_query: join_query(&self.base_path, &action_query(station, action)),
            headers,
            body: Some(self.compression.compress(body)?),
            raw_len: body.len(),
        })
    }

    /// A GET of `path` (the target's path when `None`) with the station and action query.
    pub fn get(&self, path: Option<&str>, station: &str, action: &str) -> PreparedRequest {
        PreparedRequest {
            method: "GET",
            path_and_query: join_query(
                path.unwrap_or(&self.base_path),
                &action_query(station, action),
            ),
            headers: self.common_headers(),
            body: None,
            raw_len: 0,
        }
    }
}

/// Every `ackId` attribute value in a document, of any element, in document order and
/// without repeats. Works on ISO-8859-1 and UTF-8 documents alike.
pub fn ack_ids(doc: &[u8]) -> Result<Vec<String>> {
    // quick-xml reads UTF-8; a document that is not (raw ISO-8859-1 bytes) is transcoded
    // byte by byte, which is exact for ISO-8859-1 and harmless for the ASCII ids.
    let transcoded;
    let doc = if std::str::from_utf8(doc).is_ok() {
        doc
    } else {
        transcoded = doc.iter().map(|&b| char::from(b)).collect::<String>();
        transcoded.as_bytes()
    };
    let mut reader = quick_xml::Reader::from_reader(doc);
    let mut buf = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .with_context(|| format!("XML error at byte {}", reader.error_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                for attr in e.attributes() {
                    let attr = attr.context("bad XML attribute")?;
                    if attr.key.as_ref() == "ackId" {
                        let id = attr.value.trim().to_string();
                        if !id.is_empty() && !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(ids)
}

/// Escapes text for an XML attribute value.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The logger's acknowledgement: a `Response` with one `<Ack ackId=".." status="OK"/>` per id.
pub fn ack_document(
    station: &str,
    command_time: &str,
    response_time: &str,
    ack_ids: &[String],
) -> Vec<u8> {
    let mut doc = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<Response stationId=\"{}\" \
         commandDateTime=\"{}\" responseDateTime=\"{}\">\n",
        xml_escape(station),
        xml_escape(command_time),
        xml_escape(response_time)
    );
    for id in ack_ids {
        doc.push_str(&format!(
            "  <Ack ackId=\"{}\" status=\"OK\"/>\n",
            xml_escape(id)
        ));
    }
    doc.push_str("</Response>\n");
    doc.into_bytes()
}

/// The local time as a netDL writes it: `YYYY-MM-DDThh:mm:ss`.
pub fn local_now() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Makes a body distinct by inserting `marker` (an XML comment): right before the root
/// element's end tag when the document ends with one, else right after the XML declaration,
/// else at the start of an XML document; a body that is not XML gets it appended.
pub fn insert_marker(body: &[u8], marker: &str) -> Vec<u8> {
    let trimmed_len = body.len()
        - body
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let doc = &body[..trimmed_len];
    let splice = |at: usize| {
        let mut out = Vec::with_capacity(body.len() + marker.len());
        out.extend_from_slice(&body[..at]);
        out.extend_from_slice(marker.as_bytes());
        out.extend_from_slice(&body[at..]);
        out
    };
    // `</Name>` at the very end.
    if doc.ends_with(b">")
        && let Some(start) = doc.windows(2).rposition(|w| w == b"</")
        && doc[start + 2..doc.len() - 1]
            .iter()
            .all(|&b| !matches!(b, b'<' | b'>' | b'"' | b'\''))
    {
        return splice(start);
    }
    let lead = body.iter().take_while(|b| b.is_ascii_whitespace()).count();
    if body[lead..].starts_with(b"<?xml")
        && let Some(end) = body.windows(2).position(|w| w == b"?>")
    {
        return splice(end + 2);
    }
    if body[lead..].starts_with(b"<") {
        return splice(lead);
    }
    splice(body.len())
}

/// `body` with the document's own station id (the value of its first
/// `stationId="…"`) replaced by `station` wherever it occurs as a
/// `stationId` attribute, as that station's logger would send it; `None`
/// when the body names no station or names `station` already.
pub fn with_station_id(body: &[u8], station: &str) -> Option<Vec<u8>> {
    const ATTR: &[u8] = b"stationId=\"";
    let find = |from: usize| {
        body[from..]
            .windows(ATTR.len())
            .position(|w| w == ATTR)
            .map(|p| from + p + ATTR.len())
    };
    let first = find(0)?;
    let own_len = body[first..].iter().position(|&b| b == b'"')?;
    let own = &body[first..first + own_len];
    if own == station.as_bytes() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + station.len());
    let mut copied = 0;
    let mut at = Some(first);
    while let Some(start) = at {
        let end = start + own.len();
        if body.get(start..end) == Some(own) && body.get(end) == Some(&b'"') {
            out.extend_from_slice(&body[copied..start]);
            out.extend_from_slice(station.as_bytes());
            copied = end;
        }
        at = find(start);
    }
    out.extend_from_slice(&body[copied..]);
    Some(out)
}

/// The marker for request `n` of a run: `<!-- n=7 run=66f1c2a0-1234 -->`.
pub fn unique_marker(n: usize, run: &str) -> String {
    format!("<!-- n={n} run={run} -->")
}

/// `count` station ids derived from `base`: a numeric id counts up keeping its width
/// (`0000452891`, `0000452892`, ...), any other id gets a numeric suffix.
pub fn station_ids(base: &str, count: usize) -> Vec<String> {
    let count = count.max(1);
    if count == 1 {
        return vec![base.to_string()];
    }
    let numeric = !base.is_empty() && base.bytes().all(|b| b.is_ascii_digit());
    if numeric && let Ok(start) = base.parse::<u128>() {
        let ids: Vec<String> = (0..count as u128)
            .map(|k| format!("{:0width$}", start + k, width = base.len()))
            .collect();
        if ids.iter().all(|id| id.len() == base.len()) {
            return ids;
        }
    }
    let width = (count - 1).to_string().len();
    (0..count).map(|k| format!("{base}{k:0width$}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMAND: &[u8] = include_bytes!("../samples/command.xml");
    const QUERY: &[u8] = include_bytes!("../samples/query.xml");
    const SENDDATA: &[u8] = include_bytes!("../samples/senddata.xml");
    const NODECL: &[u8] = include_bytes!("../samples/senddata-nodecl.xml");

    fn inflate(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ZlibDecoder::new(body)
            .read_to_end(&mut out)
            .expect("inflate");
        out
    }

    #[test]
    fn ack_ids_from_samples() {
        assert_eq!(ack_ids(COMMAND).expect("command"), ["101", "102"]);
        assert_eq!(ack_ids(QUERY).expect("query"), ["103"]);
        assert!(ack_ids(SENDDATA).expect("senddata").is_empty());
        assert!(ack_ids(b"").expect("empty").is_empty());
        assert_eq!(
            ack_ids(b"<A ackId=\"7\"><B ackId=\"7\"/><C ackId=' 8 '/></A>").expect("dups"),
            ["7", "8"]
        );
        assert!(ack_ids(b"<A ackId=\"7\"></B>").is_err());
        // Raw ISO-8859-1 bytes (0xFC, 0xB0) elsewhere in the document do not matter.
        let latin1 = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<CommandList>\
            <StationCommands stationId=\"1\" name=\"M\xfchlbach\">\
            <Text ackId=\"55\">20 \xb0C</Text></StationCommands></CommandList>";
        assert_eq!(ack_ids(latin1).expect("latin-1"), ["55"]);
    }

    #[test]
    fn ack_document_round_trips() {
        let ids = ack_ids(COMMAND).expect("command");
        let doc = ack_document(
            "0000452891",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:09",
            &ids,
        );
        let text = String::from_utf8(doc.clone()).expect("ascii");
        assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<Response "));
        assert!(text.contains("stationId=\"0000452891\""));
        assert!(text.contains("commandDateTime=\"2026-01-02T03:04:05\""));
        assert!(text.contains("<Ack ackId=\"101\" status=\"OK\"/>"));
        assert!(text.contains("<Ack ackId=\"102\" status=\"OK\"/>"));
        assert_eq!(ack_ids(&doc).expect("reparse"), ids);
        let evil = String::from_utf8(ack_document("\"><x>", "t", "t", &[])).expect("ascii");
        assert!(evil.contains("stationId=\"&quot;&gt;&lt;x&gt;\""));
    }

    #[test]
    fn local_time_format() {
        let t = local_now();
        assert_eq!(t.len(), 19, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert_eq!(&t[13..14], ":");
    }

    #[test]
    fn post_request_heads() {
        let settings = RequestSettings {
            base_path: "/ott/".to_string(),
            auth: Some(("logger1".to_string(), "secret".to_string())),
            compression: Compression::Deflate,
        };
        let req = settings
            .post("0000452891", "senddata", SENDDATA)
            .expect("post");
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.path_and_query,
            "/ott/?stationid=0000452891&action=senddata"
        );
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("Authorization").as_deref(),
            Some("Basic bG9nZ2VyMTpzZWNyZXQ=")
        );
        assert_eq!(header("Content-Type").as_deref(), Some("application/xml"));
        assert_eq!(header("Content-Encoding").as_deref(), Some("deflate"));
        let body = req.body.as_deref().expect("body");
        assert_eq!(inflate(body), SENDDATA);
        assert_eq!(req.raw_len, SENDDATA.len());
        assert!(req.describe().contains("deflate"));

        let plain = RequestSettings {
            base_path: "/x?k=v".to_string(),
            ..RequestSettings::default()
        };
        let req = plain
            .post("a b", "sendconfiguration", b"\x00\xff")
            .expect("post");
        assert_eq!(
            req.path_and_query,
            "/x?k=v&stationid=a%20b&action=sendconfiguration"
        );
        assert!(
            req.headers
                .iter()
                .all(|(n, _)| n != "Authorization" && n != "Content-Encoding")
        );
        assert!(req.headers.contains(&(
            "Content-Type".to_string(),
            "application/octet-stream".to_string()
        )));
        assert_eq!(req.body.as_deref(), Some(&b"\x00\xff"[..]));
        assert_eq!(
            req.describe(),
            "POST /x?k=v&stationid=a%20b&action=sendconfiguration (2 bytes)"
        );
    }

    #[test]
    fn get_request_heads() {
        let settings = RequestSettings {
            base_path: "/ott/".to_string(),
            ..RequestSettings::default()
        };
        let req = settings.get(None, "0000452891", "requestcommand");
        assert_eq!(req.method, "GET");
        assert_eq!(
            req.path_and_query,
            "/ott/?stationid=0000452891&action=requestcommand"
        );
        assert!(req.body.is_none());
        let req = settings.get(Some("/files/cfg.bin"), "1", "getconfiguration");
        assert_eq!(
            req.path_and_query,
            "/files/cfg.bin?stationid=1&action=getconfiguration"
        );
    }

    #[test]
    fn compression_round_trips() {
        for c in [Compression::None, Compression::Deflate, Compression::Gzip] {
            let packed = c.compress(SENDDATA).expect("compress");
            assert_eq!(
                decode_content(c.header(), &packed).expect("decode"),
                SENDDATA
            );
        }
        let raw = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Level::default());
            e.write_all(b"raw deflate").expect("write");
            e.finish().expect("finish")
        };
        assert_eq!(
            decode_content(Some("deflate"), &raw).expect("raw"),
            b"raw deflate"
        );
        assert!(decode_content(Some("br"), b"x").is_err());
    }

    #[test]
    fn content_types_by_action() {
        assert_eq!(content_type("senddata"), "application/xml");
        assert_eq!(content_type("sendalarm"), "application/xml");
        assert_eq!(content_type("acknowledge"), "application/xml");
        assert_eq!(
            content_type("sendconfiguration"),
            "application/octet-stream"
        );
        assert_eq!(content_type("sendfirmware"), "application/octet-stream");
        assert!(is_post_action("senddata"));
        assert!(!is_post_action("requestcommand"));
    }

    #[test]
    fn marker_placement() {
        let m = "<!-- n=3 -->";
        let out = insert_marker(SENDDATA, m);
        assert_eq!(out.len(), SENDDATA.len() + m.len());
        let tail = b"<!-- n=3 --></StationDataList>";
        let pos = out
            .windows(tail.len())
            .rposition(|w| w == tail)
            .expect("before end tag");
        assert!(pos > SENDDATA.len() - 40);
        assert!(out.starts_with(b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>"));

        let out = insert_marker(NODECL, m);
        assert!(String::from_utf8_lossy(&out).ends_with("<!-- n=3 --></StationDataList>\n"));

        let out = insert_marker(b"<?xml version=\"1.0\"?>\n<Response a=\"1\"/>\n", m);
        assert_eq!(
            out,
            b"<?xml version=\"1.0\"?><!-- n=3 -->\n<Response a=\"1\"/>\n"
        );
        let out = insert_marker(b"  <Response/>", m);
        assert_eq!(out, b"  <!-- n=3 --><Response/>");
        let out = insert_marker(b"\x00\x01", m);
        assert_eq!(out, b"\x00\x01<!-- n=3 -->");
        assert_eq!(insert_marker(b"", m), m.as_bytes());
        assert_eq!(unique_marker(7, "r1"), "<!-- n=7 run=r1 -->");
    }

    #[test]
    fn station_id_rewriting() {
        let doc = b"<L><StationData stationId=\"0000452891\"/><StationData stationId=\"0000452891\"/><StationData stationId=\"77\"/></L>";
        let out = with_station_id(doc, "0000452999").expect("rewritten");
        assert_eq!(
            out,
            b"<L><StationData stationId=\"0000452999\"/><StationData stationId=\"0000452999\"/><StationData stationId=\"77\"/></L>"
        );
        assert_eq!(with_station_id(doc, "0000452891"), None);
        assert_eq!(with_station_id(b"<Response/>", "1"), None);
        assert_eq!(with_station_id(b"<a stationId=\"12", "1"), None);
        let out = with_station_id(SENDDATA, "0000452999").expect("sample names a station");
        assert_eq!(out.len(), SENDDATA.len());
        assert!(!String::from_utf8_lossy(&out).contains("0000452891"));
    }

    #[test]
    fn station_id_spreading() {
        assert_eq!(station_ids("0000452891", 1), ["0000452891"]);
        assert_eq!(station_ids("0000452891", 0), ["0000452891"]);
        assert_eq!(
            station_ids("0000452891", 3),
            ["0000452891", "0000452892", "0000452893"]
        );
        assert_eq!(station_ids("99", 2), ["990", "991"]);
        assert_eq!(station_ids("PEGEL", 11)[10], "PEGEL10");
        assert_eq!(station_ids("PEGEL", 11)[0], "PEGEL00");
    }
}
