//! A small blocking HTTP/1.1 client: one request at a time on a kept-alive connection over
//! TCP, TLS (rustls) or a Unix socket. Responses may be delimited by `Content-Length`,
//! `Transfer-Encoding: chunked` or the end of the connection.

use std::fmt::{self, Write as _};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::target::{Endpoint, Target};

/// Longest status or header line accepted from a server.
const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 200;
/// Largest response body accepted (firmware downloads included).
const MAX_BODY: u64 = 1 << 30;

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names as the server sent them, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `HTTP/1.1 200 OK`.
    pub fn status_line(&self) -> String {
        format!("{} {} {}", self.version, self.status, self.reason)
            .trim_end()
            .to_string()
    }

    /// The first line of the body as text (lossy), for one-line error summaries.
    pub fn first_body_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .chars()
            .take(200)
            .collect()
    }
}

/// Standard base64 (RFC 4648, with padding), by the `base64` crate.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The value of an `Authorization` header for HTTP Basic authentication.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// Everything but the RFC 3986 unreserved characters is escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query parameter value (by the `percent-encoding` crate).
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Appends a query string to a path that may already carry one.
pub fn join_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else if path.contains('?') {
        if path.ends_with('?') || path.ends_with('&') {
            format!("{path}{query}")
        } else {
            format!("{path}&{query}")
        }
    } else {
        format!("{path}?{query}")
    }
}

/// Serialises a request head. `body_len` adds `Content-Length` (use `Some(0)` for an empty
/// POST body, `None` for a GET).
pub fn build_head(
    method: &str,
    path_and_query: &str,
    host: &str,
    headers: &[(String, String)],
    body_len: Option<usize>,
) -> Vec<u8> {
    let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if let Some(n) = body_len {
        let _ = write!(head, "Content-Length: {n}\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Reads one line (up to and without CRLF or LF). `Ok(None)` at a clean end of stream.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of a line",
            ));
        }
        let (consumed, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                (i + 1, true)
            }
            None => {
                line.extend_from_slice(buf);
                (buf.len(), false)
            }
        };
        r.consume(consumed);
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "line too long in response head",
            ));
        }
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

fn require_line<R: BufRead>(r: &mut R, what: &str) -> Result<Vec<u8>> {
    read_line(r)
        .map_err(|e| io_error(e, &format!("reading {what}")))?
        .ok_or_else(|| anyhow!("connection closed while reading {what}"))
}

/// Decodes a `Transfer-Encoding: chunked` body (after the head), trailers included.
pub fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = require_line(r, "a chunk size")?;
        let line = String::from_utf8_lossy(&line);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let trailer = require_line(r, "the chunked trailer")?;
                if trailer.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() as u64 + size > MAX_BODY {
            bail!("chunked body larger than {MAX_BODY} bytes");
        }
        let start = body.len();
        let got = r
            .take(size)
            .read_to_end(&mut body)
            .map_err(|e| io_error(e, "reading a chunk"))?;
        if (got as u64) < size {
            bail!(
                "connection closed inside a chunk ({} of {size} bytes)",
                body.len() - start
            );
        }
        let end = require_line(r, "the end of a chunk")?;
        if !end.is_empty() {
            bail!("chunk of {size} bytes not followed by CRLF");
        }
    }
}

/// Reads until the server closes the connection; a TLS peer that closes without
/// `close_notify` counts as a normal end.
fn read_to_close<R: Read>(r: &mut R) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(body),
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                if body.len() as u64 > MAX_BODY {
                    bail!("response body larger than {MAX_BODY} bytes");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(body),
            Err(e) => return Err(io_error(e, "reading the response body")),
        }
    }
}

/// Why reading a response failed: `stale` means the server closed (or reset) the connection
/// before sending a single byte, the usual fate of an idle kept-alive connection.
#[derive(Debug)]
struct ReadError {
    stale: bool,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        ReadError {
            stale: false,
            error: e.into(),
        }
    }
}

/// Reads a response to a request sent with `method`. Returns the response and whether the
/// connection may carry another request.
pub fn read_response<R: BufRead>(r: &mut R, method: &str) -> Result<(Response, bool)> {
    read_response_inner(r, method).map_err(|e| e.error)
}

fn read_response_inner<R: BufRead>(
    r: &mut R,
    method: &str,
) -> std::result::Result<(Response, bool), ReadError> {
    loop {
        let status_line = match read_line(r) {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(ReadError {
                    stale: true,
                    error: anyhow!("server closed the connection without a response"),
                });
            }
            Err(e) if is_reset(&e) => {
                return Err(ReadError {
                    stale: true,
                    error: anyhow::Error::new(e).context("reading the status line"),
                });
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("reading the status line")
                    .into());
            }
        };
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("").trim().to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(anyhow!("not an HTTP/1.x response: {status_line:?}").into());
        }
        let status: u16 = code
            .parse()
            .ok()
            .filter(|s| (100..1000).contains(s))
            .ok_or_else(|| anyhow!("bad status code in {status_line:?}"))?;

        let mut headers = Vec::new();
        loop {
            let line = require_line(r, "the response headers")?;
            if line.is_empty() {
                break;
            }
            if headers.len() >= MAX_HEADERS {
                return Err(anyhow!("more than {MAX_HEADERS} response headers").into());
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut resp = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            // 100 Continue and friends: the real answer follows.
            continue;
        }

        let connection = resp.header("Connection").unwrap_or("").to_ascii_lowercase();
        let mut reusable = if resp.version == "HTTP/1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };
        let chunked = resp
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Transfer-Encoding"))
            .any(|(_, v)| v.to_ascii_lowercase().contains("chunked"));
        if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
            // No body.
        } else if chunked {
            resp.body = read_chunked(r)?;
        } else if let Some(len) = content_length(&resp)? {
            if len > MAX_BODY {
                return Err(anyhow!("Content-Length {len} too large").into());
            }
            let mut body = Vec::with_capacity(len.min(1 << 20) as usize);
            let got = r
                .take(len)
                .read_to_end(&mut body)
                .map_err(|e| io_error(e, "reading the response body"))?;
            if (got as u64) < len {
                return Err(anyhow!(
                    "connection closed after {got} of {len} body bytes (Content-Length)"
                )
                .into());
            }
            resp.body = body;
        } else {
            resp.body = read_to_close(r)?;
            reusable = false;
        }
        return Ok((resp, reusable));
    }
}

fn content_length(resp: &Response) -> Result<Option<u64>> {
    let mut found: Option<u64> = None;
    for (_, v) in resp
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
    {
        for part in v.split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .with_context(|| format!("bad Content-Length {v:?}"))?;
            if found.is_some_and(|f| f != n) {
                bail!("conflicting Content-Length headers");
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Wraps an I/O error with what was being done, naming timeouts as such (a socket timeout
/// surfaces as `WouldBlock`, "Resource temporarily unavailable").
fn io_error(e: io::Error, doing: &str) -> anyhow::Error {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        anyhow!("{doing}: timed out (see --timeout)")
    } else {
        anyhow::Error::new(e).context(doing.to_string())
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// One transport connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Opens connections to a target.
#[derive(Clone)]
pub struct Connector {
    pub target: Target,
    tls: Option<Arc<ClientConfig>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Connector {
    /// `tls` is required for an https target and ignored otherwise.
    pub fn new(
        target: Target,
        tls: Option<Arc<ClientConfig>>,
        timeout: Option<Duration>,
    ) -> Result<Connector> {
        if target.is_tls() && tls.is_none() {
            bail!("https target without a TLS configuration");
        }
        Ok(Connector {
            target,
            tls,
            timeout,
        })
    }

    pub fn connect(&self) -> Result<Stream> {
        match &self.target.endpoint {
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)
                    .with_context(|| format!("connecting to unix:{}", path.display()))?;
                s.set_read_timeout(self.timeout)?;
                s.set_write_timeout(self.timeout)?;
                Ok(Stream::Unix(s))
            }
            Endpoint::Tcp { host, port, tls } => {
                let mut tcp = self
                    .connect_tcp(host, *port)
                    .with_context(|| format!("connecting to {host} port {port}"))?;
                if !*tls {
                    return Ok(Stream::Tcp(tcp));
                }
                let config = self
                    .tls
                    .clone()
                    .context("https target without a TLS configuration")?;
                let name = ServerName::try_from(host.clone())
                    .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
                let mut conn = ClientConnection::new(config, name).context("starting TLS")?;
                // Handshake now, so certificate problems read as such.
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).map_err(|e| {
                        io_error(e, &format!("TLS handshake with {host} port {port}"))
                    })?;
                }
                Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
            }
        }
    }

    fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpStream> {
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .context("resolving the host name")?
            .collect();
        let mut last_err = None;
        for addr in &addrs {
            let attempt = match self.timeout {
                Some(t) => TcpStream::connect_timeout(addr, t),
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    s.set_read_timeout(self.timeout)?;
                    s.set_write_timeout(self.timeout)?;
                    return Ok(s);
                }
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e.into()),
            None => bail!("the host name resolved to no address"),
        }
    }
}

/// A client that keeps its connection alive between requests and reconnects (once per
/// request) when the server has closed an idle connection.
pub struct Client {
    connector: Connector,
    conn: Option<BufReader<Stream>>,
    /// Connections opened so far.
    pub connections: u64,
}

impl Client {
    pub fn new(connector: Connector) -> Client {
        Client {
            connector,
            conn: None,
            connections: 0,
        }
    }

    pub fn target(&self) -> &Target {
        &self.connector.target
    }

    /// Sends one request and reads its response. `body` of `Some` adds `Content-Length`.
    pub fn send(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        let mut message = build_head(
            method,
            path_and_query,
            &self.connector.target.host_header(),
            headers,
            body.map(<[u8]>::len),
        );
        if let Some(b) = body {
            message.extend_from_slice(b);
        }
        let reused = self.conn.is_some();
        match self.attempt(method, &message) {
            Ok(resp) => Ok(resp),
            Err(e) if reused && e.stale => self.attempt(method, &message).map_err(|e| e.error),
            Err(e) => Err(e.error),
        }
    }

    fn attempt(
        &mut self,
        method: &str,
        message: &[u8],
    ) -> std::result::Result<Response, ReadError> {
        let reused = self.conn.is_some();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                self.connections += 1;
                BufReader::with_capacity(64 * 1024, self.connector.connect()?)
            }
        };
        let sent = conn
            .get_mut()
            .write_all(message)
            .and_then(|()| conn.get_mut().flush());
        if let Err(e) = sent {
            return Err(ReadError {
                stale: reused && is_reset(&e),
                error: io_error(e, "sending the request"),
            });
        }
        let (resp, reusable) = read_response_inner(&mut conn, method)?;
        if reusable {
            self.conn = Some(conn);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            basic_auth("0000452891", "pä:ss"),
            format!("Basic {}", base64_encode("0000452891:pä:ss".as_bytes()))
        );
    }

    #[test]
    fn query_encoding_and_joining() {
        assert_eq!(percent_encode("0000452891"), "0000452891");
        assert_eq!(percent_encode("a b&c/../"), "a%20b%26c%2F..%2F");
        assert_eq!(join_query("/ott/", "a=1"), "/ott/?a=1");
        assert_eq!(join_query("/ott/?x=1", "a=1"), "/ott/?x=1&a=1");
        assert_eq!(join_query("/ott/?", "a=1"), "/ott/?a=1");
        assert_eq!(join_query("/ott/", ""), "/ott/");
    }

    #[test]
    fn request_head_layout() {
        let head = build_head(
            "POST",
            "/ott/?stationid=1&action=senddata",
            "localhost",
            &[("Content-Type".to_string(), "application/xml".to_string())],
            Some(12),
        );
        assert_eq!(
            String::from_utf8(head).expect("ascii"),
            "POST /ott/?stationid=1&action=senddata HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/xml\r\nContent-Length: 12\r\n\r\n"
        );
        let head = build_head("GET", "/ping", "h:1", &[], None);
        assert_eq!(
            String::from_utf8(head).expect("ascii"),
            "GET /ping HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
    }

    #[test]
    fn chunked_body_decoding() {
        let raw = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        let mut r = Cursor::new(&raw[..]);
        let body = read_chunked(&mut r).expect("decode");
        assert_eq!(body, b"Wikipedia in \r\n\r\nchunks.");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("rest");
        assert_eq!(rest, b"NEXT", "decoder must stop right after the trailer");
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"5\r\nabc",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\n",
        ] {
            assert!(
                read_chunked(&mut Cursor::new(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_with_content_length_then_next() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\npong\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n";
        let mut r = Cursor::new(&raw[..]);
        let (resp, reusable) = read_response(&mut r, "GET").expect("first");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"pong\n");
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert!(reusable);
        let (resp, reusable) = read_response(&mut r, "POST").expect("second");
        assert_eq!(resp.status_line(), "HTTP/1.1 503 Service Unavailable");
        assert_eq!(resp.header("Retry-After"), Some("5"));
        assert_eq!(resp.first_body_line(), "busy");
        assert!(!reusable);
    }

    #[test]
    fn response_chunked_and_eof_delimited() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (resp, reusable) = read_response(&mut Cursor::new(&raw[..]), "GET").expect("chunked");
        assert_eq!(resp.body, b"abc");
        assert!(reusable);

        let raw = b"HTTP/1.0 200 OK\nContent-Type: application/xml\n\n<CommandList/>";
        let (resp, reusable) = read_response(&mut Cursor::new(&raw[..]), "GET").expect("eof");
        assert_eq!(resp.body, b"<CommandList/>");
        assert!(!reusable);
    }

    #[test]
    fn response_skips_100_continue_and_reads_empty_body() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (resp, reusable) = read_response(&mut Cursor::new(&raw[..]), "GET").expect("read");
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
        assert!(reusable);
    }

    #[test]
    fn response_errors() {
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        ] {
            assert!(
                read_response(&mut Cursor::new(bad), "GET").is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
