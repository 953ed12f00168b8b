//! Runs the `ott-emulator` binary against a small canned HTTP server on a Unix socket and
//! checks what it sends.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use flate2::read::{GzDecoder, ZlibDecoder};

const COMMAND_XML: &[u8] = include_bytes!("../samples/command.xml");

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

fn read_sample(name: &str) -> Vec<u8> {
    std::fs::read(sample(name)).expect("read sample")
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn action(&self) -> String {
        self.param("action").unwrap_or_default()
    }

    /// The body with its Content-Encoding undone.
    fn decoded_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.header("Content-Encoding") {
            None => return self.body.clone(),
            Some("deflate") => ZlibDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .expect("inflate"),
            Some("gzip") => GzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .expect("gunzip"),
            Some(other) => panic!("unexpected Content-Encoding {other}"),
        };
        out
    }
}

/// A canned logger endpoint: 200 Response for POSTs, the CommandList for requestcommand
/// (sent chunked; an empty body for station `idle`), 503 for station `busy`, a file for
/// `/files/...`. With `close_every` > 0 it silently closes a connection after that many
/// requests, as a server ending idle keep-alive connections would.
struct MockServer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl MockServer {
    fn start(close_every: usize) -> MockServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("mock.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, connections2) = (Arc::clone(&seen), Arc::clone(&connections));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                connections2.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen2);
                thread::spawn(move || serve(stream, &seen, close_every));
            }
        });
        MockServer {
            _dir: dir,
            socket,
            seen,
            connections,
        }
    }

    fn target(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn serve(stream: UnixStream, seen: &Mutex<Vec<Seen>>, close_every: usize) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut served = 0;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Seen {
            method,
            target,
            headers,
            body,
        };
        seen.lock().expect("lock").push(req.clone());

        let station = req.param("stationid").unwrap_or_default();
        let response: Vec<u8> = if station == "busy" {
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Type: text/plain\r\n\
              Content-Length: 16\r\n\r\nstorage is full\n"
                .to_vec()
        } else if req.target.starts_with("/files/") {
            let file = read_sample("configuration.bin");
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                file.len()
            )
            .into_bytes();
            r.extend_from_slice(&file);
            r
        } else if req.method == "GET" && req.action() == "requestcommand" {
            if station == "idle" {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
            } else {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n\
                              Transfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
                for chunk in COMMAND_XML.chunks(100) {
                    r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    r.extend_from_slice(chunk);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            }
        } else if req.method == "POST" {
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response stationId=\"{station}\" \
                 responseDateTime=\"2026-01-01T00:00:00.000000\"/>\n"
            );
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{doc}",
                doc.len()
            )
            .into_bytes()
        } else {
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 15\r\n\r\nunknown action\n".to_vec()
        };
        if writer.write_all(&response).is_err() {
            return;
        }
        served += 1;
        if close_every > 0 && served % close_every == 0 {
            return;
        }
    }
}

fn emulator(server: &MockServer, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ott-emulator"))
        .arg("--target")
        .arg(server.target())
        .args(args)
        .env_remove("OTT_PASSWORD")
        .output()
        .expect("run ott-emulator");
    eprintln!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks the three requests of a cycle; `encoding` is the expected Content-Encoding.
fn check_cycle(seen: &[Seen], data: &[u8], encoding: Option<&str>) {
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let (data_req, command_req, ack_req) = (&seen[0], &seen[1], &seen[2]);

    assert_eq!(data_req.method, "POST");
    assert_eq!(
        data_req.target,
        "/ott/?stationid=0000452891&action=senddata"
    );
    assert_eq!(data_req.header("Content-Type"), Some("application/xml"));
    assert_eq!(data_req.header("Content-Encoding"), encoding);
    assert_eq!(
        data_req.decoded_body(),
        data,
        "senddata body must be the file"
    );
    if encoding.is_some() {
        assert_ne!(data_req.body, data, "body must be sent compressed");
    }

    assert_eq!(command_req.method, "GET");
    assert_eq!(
        command_req.target,
        "/ott/?stationid=0000452891&action=requestcommand"
    );
    assert!(command_req.body.is_empty());

    assert_eq!(ack_req.method, "POST");
    assert_eq!(ack_req.action(), "acknowledge");
    assert_eq!(ack_req.header("Content-Encoding"), encoding);
    let ack = String::from_utf8(ack_req.decoded_body()).expect("ack is ASCII");
    assert!(
        ack.starts_with("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<Response "),
        "{ack}"
    );
    assert!(ack.contains("stationId=\"0000452891\""), "{ack}");
    assert!(ack.contains("commandDateTime=\""), "{ack}");
    assert!(ack.contains("responseDateTime=\""), "{ack}");
    for id in ["101", "102"] {
        assert!(
            ack.contains(&format!("<Ack ackId=\"{id}\" status=\"OK\"/>")),
            "Ack for {id} missing: {ack}"
        );
    }
    assert_eq!(ack.matches("<Ack ").count(), 2, "{ack}");
}

#[test]
fn cycle_sends_data_requests_command_and_acknowledges_every_ack_id() {
    let server = MockServer::start(0);
    let data = read_sample("senddata.xml");
    let out = emulator(
        &server,
        &[
            "cycle",
            "--data",
            sample("senddata.xml").to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "exit status {:?}", out.status);
    check_cycle(&server.seen(), &data, None);

    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "--> POST /ott/?stationid=0000452891&action=senddata ({} bytes)",
            data.len()
        )),
        "{text}"
    );
    assert!(text.contains("--> GET /ott/?stationid=0000452891&action=requestcommand"));
    assert!(text.contains("<-- 200 OK"));
    assert!(text.contains("ackIds: 101, 102"), "{text}");
    // One kept-alive connection for the whole cycle.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn cycle_with_deflate_sends_zlib_bodies_that_inflate_to_the_file() {
    let server = MockServer::start(0);
    let data = read_sample("senddata.xml");
    let out = emulator(
        &server,
        &[
            "--deflate",
            "cycle",
            "--data",
            sample("senddata.xml").to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "exit status {:?}", out.status);
    check_cycle(&server.seen(), &data, Some("deflate"));
}

#[test]
fn cycle_without_pending_command_sends_no_acknowledge() {
    let server = MockServer::start(0);
    let out = emulator(
        &server,
        &[
            "--station",
            "idle",
            "cycle",
            "--data",
            sample("senddata-nodecl.xml").to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success());
    let seen = server.seen();
    let actions: Vec<String> = seen.iter().map(Seen::action).collect();
    assert_eq!(actions, ["senddata", "requestcommand"]);
    assert!(stdout(&out).contains("no command pending"));
}

#[test]
fn send_with_gzip_and_basic_auth() {
    let server = MockServer::start(0);
    let out = Command::new(env!("CARGO_BIN_EXE_ott-emulator"))
        .args(["--target", &server.target(), "--gzip", "--user", "logger1"])
        .args(["send", "sendconfiguration"])
        .arg(sample("configuration.bin"))
        .env("OTT_PASSWORD", "s3cret")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(
        req.target,
        "/ott/?stationid=0000452891&action=sendconfiguration"
    );
    assert_eq!(req.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(req.header("Content-Encoding"), Some("gzip"));
    // base64("logger1:s3cret")
    assert_eq!(
        req.header("Authorization"),
        Some("Basic bG9nZ2VyMTpzM2NyZXQ=")
    );
    assert_eq!(req.decoded_body(), read_sample("configuration.bin"));
    let text = stdout(&out);
    assert!(text.contains("<-- HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("Content-Type: application/xml"), "{text}");
    assert!(
        text.contains("<Response stationId=\"0000452891\""),
        "{text}"
    );
}

#[test]
fn send_exits_1_on_503_and_shows_the_reason() {
    let server = MockServer::start(0);
    let out = emulator(
        &server,
        &[
            "--station",
            "busy",
            "send",
            "sendalarm",
            sample("sendalarm.xml").to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("<-- HTTP/1.1 503 Service Unavailable"),
        "{text}"
    );
    assert!(text.contains("Retry-After: 7"), "{text}");
    assert!(text.contains("storage is full"), "{text}");
    assert_eq!(server.seen()[0].body, read_sample("sendalarm.xml"));
}

#[test]
fn send_get_action_and_missing_file() {
    let server = MockServer::start(0);
    let out = emulator(&server, &["send", "requestcommand"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("<CommandList>"));
    assert_eq!(server.seen()[0].method, "GET");

    let out = emulator(&server, &["send", "senddata"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the FILE"));
}

#[test]
fn get_saves_the_published_file() {
    let server = MockServer::start(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("cfg.bin");
    let out = emulator(
        &server,
        &[
            "get",
            "/files/netdl.cfg",
            "--output",
            output.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&output).expect("output"),
        read_sample("configuration.bin")
    );
    assert_eq!(
        server.seen()[0].target,
        "/files/netdl.cfg?stationid=0000452891&action=getconfiguration"
    );
}

#[test]
fn load_sends_distinct_bodies_over_kept_alive_connections() {
    // The server drops every connection after 3 requests: the emulator must reconnect.
    let server = MockServer::start(3);
    let data = read_sample("senddata.xml");
    let out = emulator(
        &server,
        &[
            "--deflate",
            "load",
            "--count",
            "20",
            "--concurrency",
            "3",
            "--stations",
            "2",
            sample("senddata.xml").to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "exit status {:?}", out.status);
    let text = stdout(&out);
    assert!(
        text.contains("total:       20 requests, 20 answered 200"),
        "{text}"
    );
    assert!(text.contains("status:      200: 20"), "{text}");
    assert!(text.contains("latency ms:  p50 "), "{text}");
    assert!(text.contains("requests/s"), "{text}");

    let seen = server.seen();
    assert_eq!(seen.len(), 20);
    let mut bodies: Vec<Vec<u8>> = seen.iter().map(Seen::decoded_body).collect();
    for (body, request) in bodies.iter().zip(&seen) {
        // The body is the file with one `<!-- n=.. -->` comment inserted,
        // naming the request's station as that station's logger would.
        let station = request.param("stationid").expect("stationid");
        let own = b"stationId=\"0000452891\"";
        let at = data
            .windows(own.len())
            .position(|w| w == own)
            .expect("the sample names its station");
        let mut expected = data[..at].to_vec();
        expected.extend_from_slice(format!("stationId=\"{station}\"").as_bytes());
        expected.extend_from_slice(&data[at + own.len()..]);
        let start = body
            .windows(7)
            .position(|w| w == b"<!-- n=")
            .expect("marker missing");
        let len = body[start..]
            .windows(3)
            .position(|w| w == b"-->")
            .expect("marker end")
            + 3;
        let mut stripped = body[..start].to_vec();
        stripped.extend_from_slice(&body[start + len..]);
        assert_eq!(stripped, expected);
        let text = String::from_utf8_lossy(body);
        assert!(text.trim_end().ends_with("--></StationDataList>"));
        assert!(body.starts_with(b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>"));
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 20, "bodies must be distinct");
    let stations: std::collections::BTreeSet<String> =
        seen.iter().filter_map(|s| s.param("stationid")).collect();
    assert_eq!(
        stations.into_iter().collect::<Vec<_>>(),
        ["0000452891", "0000452892"]
    );
    // 20 requests, at most 3 per connection: at least 7 connections, far fewer than 20.
    let connections = server.connections.load(Ordering::SeqCst);
    assert!((7..20).contains(&connections), "{connections} connections");
}

#[test]
fn load_reports_non_200_answers() {
    let server = MockServer::start(0);
    let out = emulator(
        &server,
        &[
            "--station",
            "busy",
            "load",
            "--count",
            "25",
            "--concurrency",
            "2",
            "--no-unique",
            sample("senddata-utf8.xml").to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("status:      503: 25"), "{text}");
    assert!(text.contains("non-200 answers (25):"), "{text}");
    assert!(
        text.contains("HTTP/1.1 503 Service Unavailable: storage is full"),
        "{text}"
    );
    assert!(text.contains("... and 5 more"), "{text}");
    let data = read_sample("senddata-utf8.xml");
    assert!(server.seen().iter().all(|s| s.body == data));
}
