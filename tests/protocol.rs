//! The whole logger protocol over the real socket: the command cycle (driven
//! by `ott-emulator`), compression, validation, duplicates, uploads and
//! downloads.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, TestServer, archive_files, dlsrv_command, doc, post_request};
use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};

const STATION: &str = "0000452891";
const SENDDATA: &str = "/ott/?stationid=0000452891&action=senddata";

fn sample(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("transmission_test/samples")
            .join(name),
    )
    .expect("sample")
}

/// The emulator, built by `cargo test --workspace` next to `dlsrv`.
fn emulator() -> Command {
    let path = Path::new(env!("CARGO_BIN_EXE_dlsrv")).with_file_name("ott-emulator");
    assert!(
        path.exists(),
        "{} missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    Command::new(path)
}

/// Runs the emulator as station `STATION` against `daemon`'s socket.
fn emulate(daemon: &Daemon, args: &[&str], file: Option<&Path>) -> std::process::Output {
    let mut cmd = emulator();
    cmd.args([
        "--target",
        &format!("unix:{}", daemon.socket.display()),
        "--station",
        STATION,
    ])
    .args(args);
    if let Some(file) = file {
        cmd.arg(file);
    }
    cmd.output().expect("emulator")
}

fn compressed<W: Write>(
    mut encoder: W,
    finish: impl FnOnce(W) -> std::io::Result<Vec<u8>>,
    data: &[u8],
) -> Vec<u8> {
    encoder.write_all(data).expect("compress");
    finish(encoder).expect("finish")
}

/// `dlsrv commands …` against a state directory.
fn commands(state: &Path, args: &[&str]) -> (bool, String) {
    let out = dlsrv_command()
        .arg("commands")
        .args(args)
        .env("DLSRV_DATA_DIR", state.with_file_name("data"))
        .env("DLSRV_STATE_DIR", state)
        .output()
        .expect("dlsrv commands");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_full_command_cycle_driven_by_the_emulator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "a", &[]);
    let command = dir.path().join("command.xml");
    fs::write(&command, sample("command.xml")).expect("write");

    let (ok, out) = commands(
        &daemon.state,
        &["add", STATION, command.to_str().expect("utf-8")],
    );
    assert!(ok, "{out}");
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("queued <id>")
        .to_owned();
    let (_, listed) = commands(&daemon.state, &["list"]);
    assert!(
        listed.contains(&id) && listed.contains("pending"),
        "{listed}"
    );

    let data_file = dir.path().join("senddata.xml");
    fs::write(&data_file, sample("senddata.xml")).expect("write");
    let out = emulate(&daemon, &["cycle", "--data"], Some(&data_file));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // senddata archived; the command handed out once; the acknowledgement archived and recorded.
    let files = archive_files(&daemon.data);
    let under = |top: &str| {
        files
            .iter()
            .filter(|f| {
                f.strip_prefix(&daemon.data)
                    .is_ok_and(|r| r.starts_with(top))
            })
            .count()
    };
    assert_eq!(under("senddata"), 1, "{files:?}");
    assert_eq!(under("acknowledge"), 1, "{files:?}");
    let (_, listed) = commands(&daemon.state, &["list", STATION]);
    assert!(
        listed.contains("sent") && listed.contains("101 OK") && listed.contains("102 OK"),
        "{listed}"
    );

    // Handed out once: the next requestcommand has nothing.
    let out = emulate(&daemon, &["send", "requestcommand"], None);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("CommandList"));

    // Requeue, then a logger that reports a failure.
    let (ok, out) = commands(&daemon.state, &["requeue", STATION, &id]);
    assert!(ok, "{out}");
    let server_sent = emulate(&daemon, &["send", "requestcommand"], None);
    assert!(String::from_utf8_lossy(&server_sent.stdout).contains("CommandList"));
    let fail = dir.path().join("ack.xml");
    fs::write(&fail, b"<Response stationId=\"0000452891\"><Ack ackId=\"101\" status=\"OK\"/><Ack ackId=\"102\" status=\"FAIL\">window overlaps</Ack></Response>")
        .expect("write");
    let out = emulate(&daemon, &["send", "acknowledge"], Some(&fail));
    assert!(out.status.success());
    let (_, listed) = commands(&daemon.state, &["list", STATION]);
    assert!(listed.contains("102 FAIL: window overlaps"), "{listed}");

    daemon.sigterm();
    let (ok, log) = daemon.wait();
    assert!(ok);
    assert!(
        log.contains(&format!("handed command {id} to {STATION}")),
        "{log}"
    );
    let fail_line = log
        .lines()
        .find(|l| l.contains("ackId 102: FAIL"))
        .expect("FAIL logged");
    assert!(
        fail_line.contains(" WARN ") && fail_line.contains("window overlaps"),
        "{fail_line}"
    );
}

#[test]
fn queueing_refuses_malformed_documents_and_other_stations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("state");
    let file = dir.path().join("doc.xml");
    for (content, why) in [
        (&b"<CommandList><StationCommands>"[..], "not well-formed"),
        (
            b"<StationDataList/>",
            "expected <CommandList> or <QueryList>",
        ),
        (
            b"<CommandList><StationCommands stationId=\"0000000001\"/></CommandList>",
            "0000000001",
        ),
    ] {
        fs::write(&file, content).expect("write");
        let (ok, out) = commands(&data, &["add", STATION, file.to_str().expect("utf-8")]);
        assert!(!ok, "refused: {out}");
        assert!(out.contains(why), "{why}: {out}");
    }
    let (ok, out) = commands(&data, &["add", "../etc", file.to_str().expect("utf-8")]);
    assert!(!ok && out.contains("station"), "{out}");
    let (_, listed) = commands(&data, &["list"]);
    assert!(listed.contains("no queued documents"), "{listed}");
}

#[tokio::test]
async fn requestcommand_with_nothing_pending_is_an_empty_200_and_methods_must_fit() {
    let server = TestServer::start().await;
    let reply = server
        .get("/ott/?stationid=0000452891&action=requestcommand")
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    let reply = server
        .post("/ott/?stationid=0000452891&action=requestcommand", b"x")
        .await;
    assert_eq!((reply.status, reply.header("allow")), (405, Some("GET")));
    let reply = server
        .get("/ott/?stationid=0000452891&action=acknowledge")
        .await;
    assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));
    server.stop().await;
}

#[tokio::test]
async fn deflate_raw_deflate_and_gzip_are_stored_decoded_and_byte_exact() {
    let server = TestServer::start().await;
    let original = sample("senddata.xml");
    let forms = [
        (
            "deflate",
            compressed(
                ZlibEncoder::new(Vec::new(), Compression::default()),
                ZlibEncoder::finish,
                &original,
            ),
        ),
        (
            "deflate",
            compressed(
                DeflateEncoder::new(Vec::new(), Compression::default()),
                DeflateEncoder::finish,
                &original,
            ),
        ),
        (
            "gzip",
            compressed(
                GzEncoder::new(Vec::new(), Compression::default()),
                GzEncoder::finish,
                &original,
            ),
        ),
    ];
    for (i, (coding, body)) in forms.iter().enumerate() {
        // Distinct stations: identical documents would be duplicates of each other.
        let target = format!("/ott/?stationid=st{i}&action=senddata");
        let reply = server
            .raw(&post_request(
                &target,
                "HTTP/1.1",
                &format!("Content-Encoding: {coding}\r\nConnection: close\r\n"),
                body,
            ))
            .await;
        assert_eq!(reply.status, 200, "{coding} #{i}: {}", reply.text());
        let stored: Vec<PathBuf> = server
            .stored_files()
            .into_iter()
            .filter(|f| f.to_string_lossy().contains(&format!("/st{i}_")))
            .collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            fs::read(&stored[0]).expect("read"),
            original,
            "{coding} #{i} stored decoded"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(|c| c.max_body_bytes = 1024 * 1024).await;
    let mut zeros = b"<StationDataList><!--".to_vec();
    zeros.resize(64 * 1024 * 1024, b' ');
    let bomb = compressed(
        ZlibEncoder::new(Vec::new(), Compression::best()),
        ZlibEncoder::finish,
        &zeros,
    );
    assert!(
        bomb.len() < 256 * 1024,
        "a small bomb: {} bytes",
        bomb.len()
    );
    let reply = server
        .raw(&post_request(
            SENDDATA,
            "HTTP/1.1",
            "Content-Encoding: deflate\r\nConnection: close\r\n",
            &bomb,
        ))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        common::files_under(&server.data).is_empty(),
        "nothing stored, nothing kept"
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_encodings_are_415_and_undecodable_bodies_are_kept_as_rejected() {
    let server = TestServer::start().await;
    let reply = server
        .raw(&post_request(
            SENDDATA,
            "HTTP/1.1",
            "Content-Encoding: br\r\nConnection: close\r\n",
            &doc("x"),
        ))
        .await;
    assert_eq!(reply.status, 415);
    let reply = server
        .raw(&post_request(
            SENDDATA,
            "HTTP/1.1",
            "Content-Encoding: gzip\r\nConnection: close\r\n",
            b"not gzip at all",
        ))
        .await;
    assert_eq!(reply.status, 400);
    assert!(server.stored_files().is_empty(), "nothing archived");
    let kept = common::files_under(&server.state_dir.join(dlsrv::layout::REJECTED));
    assert_eq!(kept.len(), 2, "the raw body and its reason: {kept:?}");
    assert_eq!(common::rejected_bodies(&server.state_dir).len(), 1);
    assert_eq!(
        fs::read(&common::rejected_bodies(&server.state_dir)[0]).expect("read"),
        b"not gzip at all"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_body_is_400_and_kept_under_rejected_with_its_reason() {
    let server = TestServer::start().await;
    let body = b"<StationDataList><StationData stationId=\"0000452891\"></StationDataList>";
    let reply = server.post(SENDDATA, body).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().starts_with("malformed document:"),
        "{}",
        reply.text()
    );
    assert!(server.stored_files().is_empty(), "nothing archived");
    let files = common::rejected_bodies(&server.state_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = &files[0];
    assert_eq!(fs::read(kept).expect("read"), body, "kept as it arrived");
    let reason =
        fs::read_to_string(format!("{}.reason", kept.display())).expect("reason beside it");
    assert!(
        reason.contains("action: senddata") && reason.contains("reason: malformed document"),
        "{reason}"
    );

    // Resent, as loggers do: still 400, kept once.
    assert_eq!(server.post(SENDDATA, body).await.status, 400);
    assert_eq!(common::rejected_bodies(&server.state_dir).len(), 1);
    // The wrong root for the action is malformed too; nothing reaches senddata/.
    assert_eq!(
        server.post(SENDDATA, &sample("sendalarm.xml")).await.status,
        400
    );
    assert!(!server.data.join("senddata").exists());
    server.stop().await;
}

#[tokio::test]
async fn duplicates_are_answered_200_and_stored_once_across_a_restart() {
    let shared = tempfile::tempdir().expect("tempdir");
    let data = shared.path().join("data");
    let body = sample("senddata.xml");
    let state = shared.path().join("state");
    let share = |c: &mut dlsrv::config::Config| {
        c.data_dir = data.clone();
        c.state_dir = state.clone();
    };
    let first = TestServer::start_with(share).await;
    let original = first.post(SENDDATA, &body).await;
    assert_eq!(original.status, 200);
    first.stop().await;

    // A new process on the same data directory.
    let second = TestServer::start_with(share).await;
    let again = second.post(SENDDATA, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.response_date_time(),
        original.response_date_time(),
        "names the stored copy"
    );
    assert_eq!(archive_files(&data).len(), 1, "stored once");
    // The same bytes from another station are not a duplicate.
    assert_eq!(
        second
            .post("/ott/?stationid=0000000002&action=senddata", &body)
            .await
            .status,
        200
    );
    assert_eq!(archive_files(&data).len(), 2);
    second.stop().await;
}

#[tokio::test]
async fn duplicate_check_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.duplicate_window_days = 0).await;
    for _ in 0..2 {
        assert_eq!(server.post(SENDDATA, &doc("same")).await.status, 200);
    }
    assert_eq!(server.stored_files().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn uploads_are_stored_byte_exact_with_their_own_limit() {
    let server = TestServer::start_with(|c| {
        c.max_body_bytes = 1000;
        c.max_upload_bytes = 100_000;
    })
    .await;
    let config = sample("configuration.bin");
    let reply = server
        .post(
            "/ott/?stationid=0000452891&action=sendconfiguration",
            &config,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("<Response stationId=\"0000452891\""));
    let firmware: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        server
            .post("/ott/?stationid=0000452891&action=sendfirmware", &firmware)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .post(
                "/ott/?stationid=0000452891&action=sendfirmware",
                &vec![1u8; 100_001]
            )
            .await
            .status,
        413
    );
    assert_eq!(
        server
            .post(SENDDATA, &common::doc_of_len(5000, b'x'))
            .await
            .status,
        413,
        "XML keeps its own limit"
    );
    let stored = server.stored_files();
    assert_eq!(stored.len(), 2);
    for (top, body) in [("sendconfiguration", &config), ("sendfirmware", &firmware)] {
        let file = stored
            .iter()
            .find(|f| {
                f.strip_prefix(&server.data)
                    .is_ok_and(|r| r.starts_with(top))
            })
            .expect(top);
        assert_eq!(&fs::read(file).expect("read"), body);
    }
    server.stop().await;
}

#[tokio::test]
async fn downloads_serve_published_files_and_nothing_else() {
    let server = TestServer::start().await;
    let downloads = server.state.config().downloads_dir.clone();
    fs::create_dir_all(downloads.join("fw")).expect("mkdir");
    fs::write(downloads.join("fw/netdl-2.1.bin"), b"\x00\xffimage").expect("write");
    fs::write(server.dir.path().join("secret"), b"outside").expect("write");

    let reply = server
        .get("/fw/netdl-2.1.bin?stationid=0000452891&action=getfirmware")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"\x00\xffimage");
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    for (target, status) in [
        ("/fw/none.bin?stationid=0000452891&action=getfirmware", 404),
        ("/fw/netdl-2.1.bin", 404),
        ("/fw/netdl-2.1.bin?stationid=..&action=getfirmware", 400),
        (
            "/fw/%2e%2e/%2e%2e/secret?stationid=1&action=getconfiguration",
            400,
        ),
        ("/../secret?stationid=1&action=getconfiguration", 400),
        ("/ott/?stationid=1&action=getconfiguration", 404),
        ("/fw/netdl-2.1.bin/?stationid=1&action=getfirmware", 404),
    ] {
        let reply = server.get(target).await;
        assert_eq!(reply.status, status, "{target}: {}", reply.text());
        assert_ne!(reply.body, b"outside");
    }
    let reply = server
        .post("/fw/netdl-2.1.bin?stationid=1&action=getfirmware", b"x")
        .await;
    assert_eq!((reply.status, reply.header("allow")), (405, Some("GET")));
    server.stop().await;
}

#[tokio::test]
async fn a_document_naming_another_station_is_stored_under_the_query_station() {
    let server = TestServer::start().await;
    let body = b"<StationDataList><StationData stationId=\"0000000009\"/></StationDataList>";
    assert_eq!(server.post(SENDDATA, body).await.status, 200);
    let files = server.stored_files();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with("0000452891_")
    );
    server.stop().await;
}

#[tokio::test]
async fn duplicates_are_suppressed_across_two_instances_sharing_the_data_directory() {
    let shared = tempfile::tempdir().expect("tempdir");
    let data = shared.path().join("data");
    let state = shared.path().join("state");
    let share = |c: &mut dlsrv::config::Config| {
        c.data_dir = data.clone();
        c.state_dir = state.clone();
    };
    let a = TestServer::start_with(share).await;
    let b = TestServer::start_with(share).await;
    let body = sample("senddata.xml");
    let first = a.post(SENDDATA, &body).await;
    // Another instance sees a row once it is committed, within milliseconds
    // (a logger's resend comes minutes later); the test does not race it.
    a.state.flush_catalog();
    let second = b.post(SENDDATA, &body).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(
        second.response_date_time(),
        first.response_date_time(),
        "b names a's copy"
    );
    assert_eq!(archive_files(&data).len(), 1);
    a.stop().await;
    b.stop().await;
}

#[test]
fn a_document_naming_another_station_is_logged_at_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "a", &[]);
    let body = dir.path().join("other.xml");
    fs::write(
        &body,
        b"<StationDataList><StationData stationId=\"0000000009\"/></StationDataList>",
    )
    .expect("write");
    let out = emulate(&daemon, &["send", "senddata"], Some(&body));
    assert!(out.status.success());
    daemon.sigterm();
    let (ok, log) = daemon.wait();
    assert!(ok);
    let warning = log
        .lines()
        .find(|l| l.contains("document names 1 other station(s)") && l.contains("(0000000009)"))
        .expect("warned");
    assert!(warning.contains(" WARN "), "{warning}");
}
