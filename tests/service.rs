//! The service over a real Unix socket: storing, refusing, limits, HTTP.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestServer, doc, doc_of_len, files_under, latin1_body, post_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SENDDATA: &str = "/ott/?stationid=0000452891&action=senddata";

#[tokio::test]
async fn stores_iso_8859_1_bytes_exactly_and_answers_the_ott_response() {
    let server = TestServer::start().await;
    let body = latin1_body();
    let reply = server.post(SENDDATA, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let time = reply.response_date_time();
    assert!(reply.text().starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response stationId=\"0000452891\" responseDateTime=\""));

    let files = server.stored_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).expect("read"), body, "byte-exact");
    // senddata/YYYY/MM/DD/<station>_<time with '+'> (layout's unit tests pin
    // the format of the old deployment), time == responseDateTime
    let relative = files[0].strip_prefix(&server.data).expect("below data_dir");
    assert_eq!(relative, reply.stored_path("senddata", "0000452891"));
    assert!(
        relative
            .to_string_lossy()
            .ends_with(&time.replace(':', "+"))
    );
    server.stop().await;
}

#[tokio::test]
async fn trailing_slash_is_optional_and_alarms_go_under_sendalarm() {
    let server = TestServer::start().await;
    let reply = server
        .post("/ott?stationid=AB-12_x&action=sendalarm", b"<AlarmMessage stationId=\"AB-12_x\" t=\"2020-01-01T00:00:00\" type=\"limit\">high</AlarmMessage>")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let files = server.stored_files();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .strip_prefix(&server.data)
            .expect("inside")
            .starts_with("sendalarm")
    );
    server.stop().await;
}

#[tokio::test]
async fn chunked_bodies_are_stored_whole() {
    let server = TestServer::start().await;
    let body = latin1_body();
    let (a, b) = body.split_at(40);
    let mut request = format!(
        "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for part in [a, b] {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut conn = server.connect().await;
    // Send it in two writes so the body really arrives in pieces.
    let (first, second) = request.split_at(request.len() / 2);
    conn.send(first).await;
    tokio::task::yield_now().await;
    conn.send(second).await;
    let reply = conn.reply().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let files = server.stored_files();
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0]).expect("read"), body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_posts_from_one_station_give_fifty_files() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("<StationDataList n=\"{i}\"/>");
            let reply = server.post(SENDDATA, body.as_bytes()).await;
            (reply.status, reply.response_date_time(), body)
        }));
    }
    let mut times = BTreeSet::new();
    let mut bodies = BTreeSet::new();
    for task in tasks {
        let (status, time, body) = task.await.expect("task");
        assert_eq!(status, 200);
        times.insert(time);
        bodies.insert(body.into_bytes());
    }
    assert_eq!(times.len(), 50, "every answer names its own file");
    let files = server.stored_files();
    assert_eq!(files.len(), 50);
    let stored: BTreeSet<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    assert_eq!(stored, bodies, "every body stored once, none overwritten");
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .expect("name")
                .to_string_lossy()
                .replace('+', ":")
        })
        .collect();
    let expected: BTreeSet<String> = times.iter().map(|t| format!("0000452891_{t}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn hostile_station_ids_are_refused_and_nothing_is_written_anywhere() {
    let server = TestServer::start().await;
    let before = files_under(server.dir.path());
    let long = "1".repeat(65);
    let hostile = [
        "",
        "..",
        "../x",
        "..%2F..%2Fetc",
        "%2Fetc%2Fpasswd",
        "/tmp/x",
        "a/b",
        "a%00b",
        "%22%3E%3Cx%3E",
        "a%20b",
        ".",
        "x%2F..%2F..%2Fsendalarm",
        &long,
        "%C3%A9",
        "a%",
        "%zz",
    ];
    for id in hostile {
        let reply = server
            .post(&format!("/ott/?stationid={id}&action=senddata"), b"<x/>")
            .await;
        assert_eq!(reply.status, 400, "{id:?}: {}", reply.text());
        assert!(!reply.text().trim().contains('\n'), "one-line reason");
    }
    // Path tricks in the action are refused the same way.
    for action in ["../senddata", "%2E%2E", "senddata%2F..", "SENDDATA/../x"] {
        let reply = server
            .post(&format!("/ott/?stationid=1&action={action}"), b"<x/>")
            .await;
        assert_eq!(reply.status, 400, "{action:?}");
    }
    assert_eq!(files_under(server.dir.path()), before, "nothing written");
    server.stop().await;
}

#[tokio::test]
async fn client_errors_get_a_clear_4xx_and_change_nothing() {
    let server = TestServer::start().await;
    let cases: &[(&str, &str, &[u8], u16)] = &[
        ("POST", "/ott/?action=senddata", b"x", 400),
        ("POST", "/ott/?stationid=1", b"x", 400),
        ("POST", "/ott/", b"x", 400),
        (
            "POST",
            "/ott/?stationid=1&stationid=2&action=senddata",
            b"x",
            400,
        ),
        (
            "POST",
            "/ott/?stationid=1&action=senddata&action=senddata",
            b"x",
            400,
        ),
        ("POST", "/ott/?stationid=1&action=frobnicate", b"x", 400),
        ("POST", "/ott/?stationid=1&action=senddata", b"", 400),
        ("POST", "/nowhere?stationid=1&action=senddata", b"x", 404),
        ("POST", "/ott/x?stationid=1&action=senddata", b"x", 404),
        ("GET", SENDDATA, b"", 405),
        ("PUT", SENDDATA, b"x", 405),
        ("DELETE", "/ping", b"", 405),
    ];
    for (method, target, body, status) in cases {
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let reply = server.raw(&request).await;
        assert_eq!(reply.status, *status, "{method} {target}: {}", reply.text());
        assert!(reply.text().ends_with('\n') && reply.text().lines().count() == 1);
        if *status == 405 {
            assert!(reply.header("allow").is_some(), "405 names what is allowed");
        }
    }
    assert_eq!(
        server
            .get("/ott/?stationid=1&action=senddata")
            .await
            .header("allow"),
        Some("POST")
    );
    assert!(server.stored_files().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn ping_answers_pong() {
    let server = TestServer::start().await;
    let reply = server.get("/ping").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"pong\n");
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_content_length_and_chunked() {
    let server = TestServer::start_with(|c| c.max_body_bytes = 1000).await;
    let exactly = doc_of_len(1000, b'a');
    assert_eq!(server.post(SENDDATA, &exactly).await.status, 200);

    let reply = server.post(SENDDATA, &doc_of_len(1001, b'a')).await;
    assert_eq!(reply.status, 413, "{}", reply.text());

    // Chunked: no length up front, the limit is enforced while reading.
    let mut request =
        format!("POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..3 {
        request.extend_from_slice(b"190\r\n");
        request.extend_from_slice(&[b'b'; 400]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let reply = server.raw(&request).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));

    let files = server.stored_files();
    assert_eq!(files.len(), 1, "only the body within the limit: {files:?}");
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_and_http_1_0() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    for i in 0..3 {
        let body = String::from_utf8(doc(&i.to_string())).expect("ascii");
        conn.send(
            format!(
                "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(
            conn.reply().await.status,
            200,
            "request {i} on one connection"
        );
    }
    // HTTP/1.0, as older loggers send it, with and without keep-alive.
    let mut conn10 = server.connect().await;
    let keep = "Connection: keep-alive\r\n";
    conn10
        .send(&post_request(SENDDATA, "HTTP/1.0", keep, &doc("1.0 a")))
        .await;
    let reply = conn10.reply().await;
    assert_eq!(reply.status, 200);
    conn10
        .send(&post_request(SENDDATA, "HTTP/1.0", "", &doc("1.0 b")))
        .await;
    assert_eq!(conn10.reply().await.status, 200);
    assert!(
        conn10.is_closed_by_server().await,
        "1.0 without keep-alive closes"
    );
    assert_eq!(server.stored_files().len(), 5);
    server.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_without_delaying_others() {
    let server = TestServer::start_with(|c| c.header_read_timeout_secs = 1).await;
    let mut slow = server.connect().await;
    slow.send(b"POST /ott/?stationid=1&action=senddata HTTP/1.1\r\nHost: x\r\n")
        .await;
    // Meanwhile another client is served at once.
    let quick = tokio::time::timeout(
        Duration::from_millis(900),
        server.post(SENDDATA, &doc("quick")),
    )
    .await
    .expect("not delayed by the slow client");
    assert_eq!(quick.status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.is_closed_by_server())
        .await
        .expect("cut within the header timeout");
    assert!(closed);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_stores_nothing() {
    let server = TestServer::start_with(|c| c.body_read_timeout_secs = 1).await;
    let mut conn = server.connect().await;
    conn.send(
        format!("POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
            .as_bytes(),
    )
    .await;
    let reply = conn.reply().await;
    assert_eq!(reply.status, 408);
    assert!(server.stored_files().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_truncated_body_stores_nothing() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    conn.send(
        format!("POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npart")
            .as_bytes(),
    )
    .await;
    conn.stream.shutdown().await.ok();
    // The server sees EOF mid-body; whatever it answers, nothing is stored.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.is_closed_by_server()).await;
    // A later request on another connection is served, and finds no partial file.
    assert_eq!(server.get("/ping").await.status, 200);
    assert!(server.stored_files().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_request_is_refused_without_affecting_other_connections() {
    let server = TestServer::start().await;
    let mut open = server.connect().await; // a well-behaved keep-alive client
    open.send(&post_request(SENDDATA, "HTTP/1.1", "", &doc("one")))
        .await;
    assert_eq!(open.reply().await.status, 200);

    for garbage in [
        &b"\x00\x01\x02 not http at all\r\n\r\n"[..],
        b"POST /ott/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde",
        b"POST /ott/?stationid=1&action=senddata HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let reply = server.raw(garbage).await;
        assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(garbage));
    }
    let huge_header = format!(
        "GET /ping HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let mut conn = server.connect().await;
    let _ = conn.stream.write_all(huge_header.as_bytes()).await; // the server may cut us off
    let mut answer = Vec::new();
    let _ = conn.stream.read_to_end(&mut answer).await; // a reset counts as closed
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    open.send(&post_request(SENDDATA, "HTTP/1.1", "", &doc("two")))
        .await;
    assert_eq!(
        open.reply().await.status,
        200,
        "the other connection is unaffected"
    );
    assert_eq!(server.stored_files().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    conn.send(&post_request(SENDDATA, "HTTP/1.1", "", &doc("half-closed")))
        .await;
    conn.stream.shutdown().await.expect("half-close");
    let reply = conn.reply().await;
    assert_eq!(reply.status, 200, "the stored body is acknowledged");
    assert_eq!(server.stored_files().len(), 1);
    server.stop().await;
}
