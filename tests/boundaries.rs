//! The hostile-load suite: each trust boundary proved against the real
//! `dlsrv` binary (or the service in-process where a figure of the process
//! itself is not the point), with the figures printed (`--nocapture`
//! shows them; CI's log keeps them).
//!
//! - who may speak for which station: every action × allowed, foreign
//!   station, no login, and the logins file reloaded on SIGHUP;
//! - memory: sixteen concurrent 16 MiB nested bodies, peak RSS measured;
//! - log: flood documents, log lines counted;
//! - threads: trickling uploads, the latency of a concurrent `senddata`;
//! - connections, rejected bodies, free space: the caps;
//! - the command queue: handed out again after the timeout, put back after
//!   a failure, an ack retried after a 503, and the root CLI against a
//!   link planted in the queue.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Conn, Daemon, Reply, TestServer, archive_files, doc, files_under};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const MIB: usize = 1024 * 1024;

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Sends `head`, then `body_len` bytes made by repeating `unit`, while the
/// answer is read; the server may answer (and close) before all is sent.
async fn send_streamed(socket: &Path, head: String, unit: &[u8], body_len: usize) -> u16 {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut chunk = Vec::with_capacity(64 * 1024);
    while chunk.len() + unit.len() <= 64 * 1024 {
        chunk.extend_from_slice(unit);
    }
    let unit = unit.to_vec();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut sent = 0;
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            if wr.write_all(&chunk[..n]).await.is_err() {
                return; // answered and closed early
            }
            sent += n;
        }
        let _ = unit;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut answer)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {:?}", &text[..text.len().min(200)]))
}

/// The nested-element attack: `<StationDataList><a><a><a>…` of `len` bytes.
fn nested_head(len: usize, chunked: bool) -> String {
    if chunked {
        // One chunk of the whole length: the size is not announced up front
        // in Content-Length, so only the reading itself can bound it.
        format!(
            "POST /ott/?stationid=0000452891&action=senddata HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n"
        )
    } else {
        format!(
            "POST /ott/?stationid=0000452891&action=senddata HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_16_mib_nested_bodies_stay_below_150_mib_rss() {
    let mut figures = Vec::new();
    for (name, env) in [
        ("defaults (max_body_bytes 4 MiB)", vec![]),
        (
            "max_body_bytes = 16 MiB, as before",
            vec![("DLSRV_MAX_BODY_BYTES", "16777216")],
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Daemon::start(dir.path(), "s", &env);
        let before = peak_rss_kib(daemon.pid());
        let started = Instant::now();
        let mut attacks = Vec::new();
        for i in 0..16 {
            let socket = daemon.socket.clone();
            attacks.push(tokio::spawn(async move {
                let len = 16 * MIB;
                let head = format!("{}<StationDataList>", nested_head(len, i % 2 == 1));
                send_streamed(&socket, head, b"<a>", len - 17).await
            }));
        }
        let mut statuses = Vec::new();
        for a in attacks {
            statuses.push(a.await.expect("join"));
        }
        let elapsed = started.elapsed();
        let peak = peak_rss_kib(daemon.pid());
        statuses.sort_unstable();
        figures.push(format!(
            "{name}: answers {statuses:?} in {:.1} s; peak RSS {:.1} MiB (before {:.1} MiB)",
            elapsed.as_secs_f64(),
            peak as f64 / 1024.0,
            before as f64 / 1024.0
        ));
        assert!(
            statuses.iter().all(|s| (400..500).contains(s) || *s == 503),
            "{name}: every answer a 4xx or 503: {statuses:?}"
        );
        assert!(
            peak < 150 * 1024,
            "{name}: peak RSS {peak} KiB, over 150 MiB"
        );
        assert!(archive_files(&daemon.data).is_empty(), "nothing archived");
        // The service still serves.
        let mut conn = Conn::open(&daemon.socket).await;
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(conn.reply().await.status, 200);
    }
    println!("nested-body attack, 16 concurrent 16 MiB bodies through the socket:");
    for f in figures {
        println!("  {f}");
    }
}

// ---- helpers ------------------------------------------------------------------

/// A request with `X-Remote-User: login` as NGINX sets it (none: no header).
fn request(method: &str, target: &str, login: Option<&str>, body: &[u8]) -> Vec<u8> {
    let user = login.map_or_else(String::new, |l| format!("X-Remote-User: {l}\r\n"));
    let length = if method == "POST" {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let mut bytes =
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{user}{length}Connection: close\r\n\r\n")
            .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn exchange(socket: &Path, bytes: &[u8]) -> Reply {
    let mut conn = Conn::open(socket).await;
    conn.send(bytes).await;
    conn.reply().await
}

/// `dlsrv commands …` on the archive and state of `dir` (as Daemon lays them out).
fn commands(dir: &Path, args: &[&str]) -> std::process::Output {
    common::dlsrv_command()
        .arg("commands")
        .args(args)
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .output()
        .expect("run dlsrv commands")
}

fn queue_command(dir: &Path, station: &str, ack_id: &str) -> String {
    let file = dir.join(format!("cmd-{station}-{ack_id}.xml"));
    fs::write(
        &file,
        format!("<CommandList><StationCommands stationId=\"{station}\"><Logging ackId=\"{ack_id}\"/></StationCommands></CommandList>"),
    )
    .expect("write command");
    let out = commands(dir, &["add", station, &file.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.split_whitespace()
        .nth(1)
        .expect("queued ID")
        .to_owned()
}

fn queue_files(state: &Path, station: &str, sub: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(state.join("commands").join(station).join(sub))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits (bounded) until the daemon's log has `needle`; the log is the only
/// sign a signal was handled.
fn wait_for_log(daemon: &Daemon, needle: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains(needle) {
        assert!(
            Instant::now() < until,
            "no {needle:?} in the log within 10 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stored_for(data: &Path, station: &str) -> usize {
    archive_files(data)
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{station}_")))
        })
        .count()
}

// ---- who may speak for which station -------------------------------------------

const OWN: &str = "0000452891";
const FOREIGN: &str = "0000999999";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_is_refused_403_for_a_foreign_station_or_no_login_and_reload_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let logins = d.join("logins.toml");
    fs::write(
        &logins,
        format!("[logins]\ndl001 = [\"{OWN}\"]\ndl002 = [\"0077*\"]\ndl003 = [\"{FOREIGN}\"]\n"),
    )
    .expect("logins");
    let downloads = d.join("downloads");
    for (path, text) in [
        (format!("stations/{OWN}/cfg/netdl.xml"), "own"),
        (format!("stations/{FOREIGN}/cfg/netdl.xml"), "foreign"),
        ("cfg/netdl.xml".to_owned(), "common"),
    ] {
        let file = downloads.join(path);
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(file, text).expect("publish");
    }
    let env = [
        ("DLSRV_STATION_ACCESS", "map"),
        ("DLSRV_LOGINS_FILE", logins.to_str().expect("utf-8")),
        ("DLSRV_DOWNLOADS_DIR", downloads.to_str().expect("utf-8")),
    ];
    let daemon = Daemon::start(d, "s", &env);
    let socket = daemon.socket.clone();

    // A command for each station; FOREIGN's is handed out to its own login,
    // so an acknowledgement could be recorded against it.
    queue_command(d, OWN, "101");
    queue_command(d, FOREIGN, "201");
    queue_command(d, FOREIGN, "202");
    let handed = exchange(
        &socket,
        &request(
            "GET",
            &format!("/ott/?stationid={FOREIGN}&action=requestcommand"),
            Some("dl003"),
            b"",
        ),
    )
    .await;
    assert_eq!(handed.status, 200);
    assert!(handed.text().contains("201"));

    let ott = |station: &str, action: &str| format!("/ott/?stationid={station}&action={action}");
    let alarm =
        b"<AlarmMessage><StationAlarm stationId=\"x\">high water</StationAlarm></AlarmMessage>";
    let ack = b"<Response><Ack ackId=\"201\" status=\"OK\"/></Response>";
    // (action, method, body, path) — each case below sends it for its station.
    let actions: Vec<(&str, &str, Vec<u8>, Option<&str>)> = vec![
        ("senddata", "POST", Vec::new(), None),
        ("sendalarm", "POST", alarm.to_vec(), None),
        ("acknowledge", "POST", ack.to_vec(), None),
        (
            "sendconfiguration",
            "POST",
            b"binary configuration".to_vec(),
            None,
        ),
        ("requestcommand", "GET", Vec::new(), None),
        (
            "getconfiguration",
            "GET",
            Vec::new(),
            Some("/cfg/netdl.xml"),
        ),
    ];
    // (case, login, station, allowed)
    let cases = [
        ("allowed", Some("dl001"), OWN, true),
        ("allowed by prefix", Some("dl002"), "0077123", true),
        ("foreign station", Some("dl001"), FOREIGN, false),
        ("no login", None, OWN, false),
        ("unknown login", Some("dl999"), OWN, false),
    ];
    let mut table = vec![format!(
        "{:<18} {}",
        "action",
        cases.map(|c| format!("{:>18}", c.0)).join("")
    )];
    for (i, (action, method, body, path)) in actions.iter().enumerate() {
        let mut row = format!("{action:<18} ");
        for (case, login, station, allowed) in cases {
            let before_archive = stored_for(&daemon.data, station);
            let pending_before = queue_files(&daemon.state, station, "pending");
            let acks_before = files_under(&daemon.state.join("commands"))
                .iter()
                .filter(|f| f.to_string_lossy().contains(".ack-"))
                .count();
            let body = if *action == "senddata" {
                doc(&format!("{case}-{i}"))
            } else {
                body.clone()
            };
            let target = match path {
                Some(p) => format!("{p}?stationid={station}&action={action}"),
                None => ott(station, action),
            };
            let reply = exchange(&socket, &request(method, &target, login, &body)).await;
            row.push_str(&format!("{:>18}", reply.status));
            if allowed {
                assert_eq!(reply.status, 200, "{action} {case}: {}", reply.text());
            } else {
                assert_eq!(reply.status, 403, "{action} {case}: {}", reply.text());
                assert!(
                    !reply.text().trim().contains('\n'),
                    "one line: {}",
                    reply.text()
                );
                assert_eq!(
                    stored_for(&daemon.data, station),
                    before_archive,
                    "{action} {case}: nothing stored"
                );
                assert_eq!(
                    queue_files(&daemon.state, station, "pending"),
                    pending_before,
                    "{action} {case}: the command stays pending"
                );
                let acks_after = files_under(&daemon.state.join("commands"))
                    .iter()
                    .filter(|f| f.to_string_lossy().contains(".ack-"))
                    .count();
                assert_eq!(acks_after, acks_before, "{action} {case}: no ack recorded");
                assert!(
                    !reply.text().contains("foreign") && !reply.text().contains("own\n"),
                    "no file served"
                );
            }
        }
        table.push(row);
    }
    // Downloads: a station's own file, else the common one, never another's.
    let fetch = |station: &str, path: &str, login: &str| {
        request(
            "GET",
            &format!("{path}?stationid={station}&action=getconfiguration"),
            Some(login),
            b"",
        )
    };
    assert_eq!(
        exchange(&socket, &fetch(OWN, "/cfg/netdl.xml", "dl001"))
            .await
            .text(),
        "own"
    );
    assert_eq!(
        exchange(&socket, &fetch("0077123", "/cfg/netdl.xml", "dl002"))
            .await
            .text(),
        "common"
    );
    let other = exchange(
        &socket,
        &fetch(OWN, &format!("/stations/{FOREIGN}/cfg/netdl.xml"), "dl001"),
    )
    .await;
    assert_eq!(
        other.status, 404,
        "another station's file is not reachable by its path"
    );
    // The refusal's warning names the login and the station.
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused 403") && l.contains("dl001") && l.contains(FOREIGN)),
        "{log}"
    );

    // Reload: dl001 may now speak for FOREIGN too.
    fs::write(
        &logins,
        format!("[logins]\ndl001 = [\"{OWN}\", \"{FOREIGN}\"]\ndl002 = [\"0077*\"]\ndl003 = [\"{FOREIGN}\"]\n"),
    )
    .expect("logins");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_for_log(&daemon, "reloaded the logins file");
    let now_allowed = exchange(
        &socket,
        &request(
            "POST",
            &ott(FOREIGN, "senddata"),
            Some("dl001"),
            &doc("after reload"),
        ),
    )
    .await;
    assert_eq!(now_allowed.status, 200, "{}", now_allowed.text());
    // A file that does not parse is refused; the map in force stays.
    fs::write(&logins, "[logins]\ndl001 = []\n").expect("broken");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_for_log(&daemon, "the logins read before stay in force");
    assert!(daemon.log().contains("line 2"), "the error names the line");
    let still = exchange(
        &socket,
        &request(
            "POST",
            &ott(FOREIGN, "senddata"),
            Some("dl001"),
            &doc("after bad reload"),
        ),
    )
    .await;
    assert_eq!(still.status, 200, "the old map stays in force");
    let refused = exchange(
        &socket,
        &request(
            "POST",
            &ott("0000000001", "senddata"),
            Some("dl001"),
            &doc("x"),
        ),
    )
    .await;
    assert_eq!(refused.status, 403);

    println!("access matrix (station_access = \"map\"), status per action and case:");
    for row in table {
        println!("  {row}");
    }
    println!(
        "  reload on SIGHUP: applied; a file that does not parse was refused and the old map stayed"
    );
}

#[tokio::test]
async fn station_access_login_lets_a_login_speak_only_for_the_station_of_its_name() {
    let server =
        TestServer::start_with(|c| c.station_access = dlsrv::config::StationAccess::Login).await;
    let post = |login: Option<&str>, station: &str| {
        request(
            "POST",
            &format!("/ott/?stationid={station}&action=senddata"),
            login,
            &doc(station),
        )
    };
    assert_eq!(server.raw(&post(Some(OWN), OWN)).await.status, 200);
    assert_eq!(server.raw(&post(Some(OWN), FOREIGN)).await.status, 403);
    assert_eq!(server.raw(&post(None, OWN)).await.status, 403);
    assert_eq!(stored_for(&server.data, FOREIGN), 0);
    server.stop().await;
}

// ---- log -----------------------------------------------------------------------

/// Sends `body` and returns the status, the log lines it added and the time.
async fn flood(
    daemon: &Daemon,
    action: &str,
    body: &[u8],
    outcome: &str,
) -> (u16, usize, Duration, String) {
    let before = daemon.log().lines().count();
    let started = Instant::now();
    let reply = exchange(
        &daemon.socket,
        &request(
            "POST",
            &format!("/ott/?stationid={OWN}&action={action}"),
            None,
            body,
        ),
    )
    .await;
    let elapsed = started.elapsed();
    // The outcome event is a request's last line: once it is in, all are.
    let until = Instant::now() + Duration::from_secs(10);
    let added = loop {
        let log = daemon.log();
        let added: Vec<String> = log.lines().skip(before).map(str::to_owned).collect();
        if added.iter().any(|l| l.contains(outcome)) {
            break added;
        }
        assert!(Instant::now() < until, "no {outcome:?} in the log:\n{log}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    (reply.status, added.len(), elapsed, added.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_documents_add_a_few_log_lines_and_are_answered_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 16 MiB, so the 500,000 StationData reach the XML check instead of a 413.
    let daemon = Daemon::start(dir.path(), "s", &[("DLSRV_MAX_BODY_BYTES", "16777216")]);
    let mut figures = Vec::new();

    let mut many = b"<StationDataList>".to_vec();
    for i in 0..500_000 {
        many.extend_from_slice(format!("<StationData stationId=\"{i}\"/>").as_bytes());
    }
    many.extend_from_slice(b"</StationDataList>");
    let mut acks = b"<Response>".to_vec();
    for i in 0..20_000 {
        acks.extend_from_slice(format!("<Ack ackId=\"{i}\" status=\"OK\"/>").as_bytes());
    }
    acks.extend_from_slice(b"</Response>");
    // Accepted, at the limits: 1,000 acks of 300 distinct ackIds, reasons
    // with control characters; 1,000 StationData of other stations.
    let mut repeated = b"<Response>".to_vec();
    for i in 0..1_000 {
        repeated.extend_from_slice(
            format!(
                "<Ack ackId=\"{}\" status=\"FAIL\">bad\u{1b}[31m\nline {i}</Ack>",
                i % 300
            )
            .as_bytes(),
        );
    }
    repeated.extend_from_slice(b"</Response>");
    let mut foreign = b"<StationDataList>".to_vec();
    for i in 0..1_000 {
        foreign.extend_from_slice(format!("<StationData stationId=\"F{i}\"/>").as_bytes());
    }
    foreign.extend_from_slice(b"</StationDataList>");
    let alarm = b"<AlarmMessage>level \x1b[2J high\r\nforged: line</AlarmMessage>".to_vec();

    for (name, action, body, status, outcome, max_lines) in [
        (
            "500,000 StationData",
            "senddata",
            &many,
            400,
            "refused 400",
            2,
        ),
        ("20,000 Acks", "acknowledge", &acks, 400, "refused 400", 2),
        (
            "1,000 Acks, 300 distinct",
            "acknowledge",
            &repeated,
            200,
            "stored ",
            8,
        ),
        (
            "1,000 foreign StationData",
            "senddata",
            &foreign,
            200,
            "stored ",
            3,
        ),
        (
            "alarm with control characters",
            "sendalarm",
            &alarm,
            200,
            "stored ",
            3,
        ),
    ] {
        let (got, lines, elapsed, text) = flood(&daemon, action, body, outcome).await;
        figures.push(format!(
            "{name} ({} KiB): {got} in {:.0} ms, {lines} log line(s)",
            body.len() / 1024,
            elapsed.as_secs_f64() * 1000.0
        ));
        assert_eq!(got, status, "{name}: {text}");
        assert!(lines <= max_lines, "{name}: {lines} lines:\n{text}");
        assert!(elapsed < Duration::from_secs(5), "{name}: {elapsed:?}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "{name}: control characters escaped:\n{text}"
        );
    }
    let log = daemon.log();
    assert!(
        log.contains("1000 acks, 300 distinct ackIds, 100 recorded"),
        "{log}"
    );
    assert!(log.contains("more than 1000 StationData"), "{log}");
    println!("flood documents (one request each):");
    for f in figures {
        println!("  {f}");
    }
}

// ---- threads -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickling_uploads_hold_no_thread_and_are_cut_at_the_upload_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Four file-system threads (the least allowed): uploads that held them would stop everyone.
    let daemon = Daemon::start(
        dir.path(),
        "s",
        &[
            ("DLSRV_BLOCKING_THREADS", "4"),
            ("DLSRV_UPLOAD_DEADLINE_SECS", "3"),
        ],
    );
    let started = Instant::now();
    let mut tricklers = Vec::new();
    for i in 0..32 {
        let mut conn = Conn::open(&daemon.socket).await;
        conn.send(
            format!("POST /ott/?stationid=T{i}&action=sendconfiguration HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
                .as_bytes(),
        )
        .await;
        // 100 Continue: the upload is open (its temp file created), reading.
        assert_eq!(conn.reply().await.status, 100);
        conn.send(b"x").await;
        tricklers.push(conn);
    }
    let mut latencies = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let reply = exchange(
            &daemon.socket,
            &request(
                "POST",
                &format!("/ott/?stationid={OWN}&action=senddata"),
                None,
                &doc(&format!("during {i}")),
            ),
        )
        .await;
        latencies.push(t.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let during = started.elapsed();
    assert!(
        during < Duration::from_secs(3),
        "measured while all 32 trickle: {during:?}"
    );
    let mut cut = Vec::new();
    for mut conn in tricklers {
        let reply = conn.reply().await;
        cut.push((reply.status, started.elapsed()));
    }
    latencies.sort();
    let max = latencies[latencies.len() - 1];
    println!(
        "32 uploads trickling (1 byte sent, then silence; 4 file-system threads): 20 senddata meanwhile, median {:.1} ms, max {:.1} ms; the uploads answered {:?} after {:.1}-{:.1} s (upload_deadline_secs = 3)",
        latencies[latencies.len() / 2].as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        cut.iter()
            .map(|c| c.0)
            .collect::<std::collections::BTreeSet<_>>(),
        cut.iter()
            .map(|c| c.1)
            .min()
            .unwrap_or_default()
            .as_secs_f64(),
        cut.iter()
            .map(|c| c.1)
            .max()
            .unwrap_or_default()
            .as_secs_f64(),
    );
    assert!(max < Duration::from_secs(1), "a senddata waited {max:?}");
    assert!(
        cut.iter()
            .all(|(status, at)| *status == 408 && *at >= Duration::from_secs(3)),
        "{cut:?}"
    );
    let temps: Vec<PathBuf> = files_under(&daemon.data)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "the cut uploads leave nothing: {temps:?}");
    assert_eq!(stored_for(&daemon.data, OWN), 20);
}

// ---- connections ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_get_503_and_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "s", &[("DLSRV_MAX_CONNECTIONS", "8")]);
    let ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut conn = Conn::open(&daemon.socket).await;
        conn.send(ping).await;
        assert_eq!(conn.reply().await.status, 200);
        open.push(conn);
    }
    let mut refused = Vec::new();
    for _ in 0..5 {
        let mut extra = Conn::open(&daemon.socket).await;
        let reply = extra.reply().await;
        assert_eq!(reply.header("retry-after"), Some("60"));
        assert!(extra.is_closed_by_server().await);
        refused.push(reply.status);
    }
    assert_eq!(refused, vec![503; 5]);
    // One closes: a new connection is served again.
    drop(open.pop());
    let until = Instant::now() + Duration::from_secs(5);
    // (Until the server has reaped the closed one, a new one may still be refused.)
    let served = loop {
        let mut stream = UnixStream::connect(&daemon.socket).await.expect("connect");
        let _ = stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let status = String::from_utf8_lossy(&answer)
            .split(' ')
            .nth(1)
            .unwrap_or("0")
            .parse::<u16>()
            .unwrap_or(0);
        if status == 200 || Instant::now() > until {
            break status;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(served, 200);
    // The kept connections still work.
    for conn in &mut open {
        conn.send(ping).await;
        assert_eq!(conn.reply().await.status, 200);
    }
    assert!(daemon.log().contains("max_connections (8) are open"));
    println!(
        "max_connections = 8: 8 kept open, 5 more answered {refused:?} and closed; after one closed, a new one got {served}"
    );
}

// ---- disk ----------------------------------------------------------------------

#[tokio::test]
async fn rejected_bodies_are_kept_up_to_rejected_max_bytes_then_refused_without_keeping() {
    let server = TestServer::start_with(|c| c.rejected_max_bytes = 10_000).await;
    let mut kept = Vec::new();
    for i in 0..5 {
        let mut body = format!("<StationDataList><!-- {i} -->").into_bytes();
        body.resize(4_000, b'x'); // never closed: malformed
        let reply = server
            .post(&format!("/ott/?stationid={OWN}&action=senddata"), &body)
            .await;
        assert_eq!(reply.status, 400, "still a clear refusal");
        kept.push(common::rejected_bodies(&server.state_dir).len());
    }
    assert_eq!(kept, vec![1, 2, 2, 2, 2], "4,000 bytes each within 10,000");
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("dlsrv_rejected_not_kept_total 3"),
        "{metrics}"
    );
    assert!(archive_files(&server.data).is_empty());
    println!(
        "rejected_max_bytes = 10000: 5 malformed 4,000-byte bodies, all 400; kept after each: {kept:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn below_min_free_bytes_stores_and_hand_outs_get_503_and_nothing_changes() {
    let server = TestServer::start_with(|c| c.min_free_bytes = u64::MAX / 4).await;
    let id = queue_command(server.dir.path(), OWN, "101");
    let reply = server
        .post(
            &format!("/ott/?stationid={OWN}&action=senddata"),
            &doc("full"),
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("60"));
    let reply = server
        .get(&format!("/ott/?stationid={OWN}&action=requestcommand"))
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        queue_files(&server.state_dir, OWN, "pending"),
        vec![format!("{id}.xml")]
    );
    assert!(archive_files(&server.data).is_empty());
    assert_eq!(
        server.get("/ping").await.status,
        200,
        "what does not write still works"
    );
    // The reason the alert rules read (DlsrvRefusingBodies, DlsrvDiskFull).
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("dlsrv_refused_total{status=\"503\",reason=\"disk_full\"} 2"),
        "{metrics}"
    );
    println!(
        "min_free_bytes above the free space: senddata 503, requestcommand 503 (command still pending), /ping 200"
    );
    server.stop().await;
}

// ---- commands and acks never lost ------------------------------------------------

#[tokio::test]
async fn a_command_not_acknowledged_in_time_is_handed_out_again_and_counted() {
    let server = TestServer::start_with(|c| c.command_ack_timeout_secs = 1).await;
    let id = queue_command(server.dir.path(), OWN, "101");
    let target = format!("/ott/?stationid={OWN}&action=requestcommand");
    let take = || server.get(&target);
    let first = take().await;
    assert!(first.text().contains("ackId=\"101\""), "{}", first.text());
    assert!(take().await.body.is_empty(), "handed out once");
    // The answer was lost: no acknowledgement within the timeout.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = take().await;
    assert_eq!(again.body, first.body, "handed out again");
    let list = commands(server.dir.path(), &["list"]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    let row = listed.lines().find(|l| l.contains(&id)).expect("listed");
    assert!(
        row.split_whitespace().any(|w| w == "2"),
        "sent twice: {listed}"
    );
    assert!(listed.contains("TIMES"), "{listed}");
    let ack = server
        .post(
            &format!("/ott/?stationid={OWN}&action=acknowledge"),
            b"<Response><Ack ackId=\"101\" status=\"OK\"/></Response>",
        )
        .await;
    assert_eq!(ack.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(take().await.body.is_empty(), "acknowledged: never again");
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains("dlsrv_commands_resent_total 1"),
        "{metrics}"
    );
    println!(
        "command_ack_timeout_secs = 1: handed out, not acknowledged, handed out again after the timeout; `commands list`:\n{listed}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failure_after_the_take_answers_503_and_keeps_the_command_pending() {
    let server = TestServer::start().await;
    let id = queue_command(server.dir.path(), OWN, "101");
    // Where the hand-out's record goes, a directory: the record cannot be written.
    let stamp = server
        .state_dir
        .join(format!("commands/{OWN}/sent/{id}.sent"));
    fs::create_dir_all(stamp.join("blocker")).expect("plant");
    let reply = server
        .get(&format!("/ott/?stationid={OWN}&action=requestcommand"))
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        queue_files(&server.state_dir, OWN, "pending"),
        vec![format!("{id}.xml")]
    );
    fs::remove_dir_all(&stamp).expect("clear");
    let reply = server
        .get(&format!("/ott/?stationid={OWN}&action=requestcommand"))
        .await;
    assert!(reply.text().contains("ackId=\"101\""));
    // A missing queue directory is created again, not read as "taken".
    fs::remove_dir_all(server.state_dir.join(format!("commands/{OWN}/sent")))
        .expect("remove sent/");
    let id2 = queue_command(server.dir.path(), OWN, "102");
    let reply = server
        .get(&format!("/ott/?stationid={OWN}&action=requestcommand"))
        .await;
    assert!(reply.text().contains("ackId=\"102\""), "{}", reply.text());
    assert!(queue_files(&server.state_dir, OWN, "sent").contains(&format!("{id2}.xml")));
    server.stop().await;
}

#[tokio::test]
async fn an_ack_answered_503_is_recorded_when_sent_again() {
    let server = TestServer::start().await;
    let id = queue_command(server.dir.path(), OWN, "101");
    assert_eq!(
        server
            .get(&format!("/ott/?stationid={OWN}&action=requestcommand"))
            .await
            .status,
        200
    );
    let record = server
        .state_dir
        .join(format!("commands/{OWN}/sent/{id}.ack-101"));
    fs::create_dir_all(record.join("blocker")).expect("plant");
    let ack = b"<Response><Ack ackId=\"101\" status=\"OK\"/></Response>";
    let target = format!("/ott/?stationid={OWN}&action=acknowledge");
    let first = server.post(&target, ack).await;
    assert_eq!(first.status, 503, "{}", first.text());
    fs::remove_dir_all(&record).expect("clear");
    let again = server.post(&target, ack).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        archive_files(&server.data).len(),
        1,
        "the resent body is a duplicate, stored once"
    );
    assert!(
        fs::read_to_string(&record)
            .expect("recorded")
            .starts_with("OK ")
    );
    server.stop().await;
}

#[test]
fn the_root_cli_becomes_the_owner_of_state_dir_and_follows_no_link_in_the_queue() {
    if !common::root_or_skip("the_root_cli", "switching users needs root") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (uid, gid) = (65534, 65534); // nobody: the stand-in for the service user
    let pending = d.join(format!("state/commands/{OWN}/pending"));
    fs::create_dir_all(&pending).expect("mkdir");
    for p in [
        d.join("state"),
        d.join("state/commands"),
        d.join(format!("state/commands/{OWN}")),
        pending.clone(),
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
    }
    // Outside the queue, readable by anyone: only following the link reads it.
    let secret = d.join("outside.xml");
    fs::write(&secret, format!("<CommandList><StationCommands stationId=\"{OWN}\"><Logging ackId=\"666\"/></StationCommands></CommandList>")).expect("write");
    let planted = "20260101T000000.000000";
    std::os::unix::fs::symlink(&secret, pending.join(format!("{planted}.xml"))).expect("plant");

    let list = commands(d, &["list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        !listed.contains("666") && !listed.contains(planted),
        "the link is no document: {listed}"
    );
    let cancel = commands(d, &["cancel", OWN, planted]);
    assert!(!cancel.status.success(), "a link is not cancelled");
    let id = queue_command(d, OWN, "101");
    let queued = pending.join(format!("{id}.xml"));
    let meta = fs::metadata(&queued).expect("queued");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, gid),
        "created as the owner of state_dir, not chowned"
    );
    assert!(
        fs::symlink_metadata(pending.join(format!("{planted}.xml")))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::metadata(&secret).expect("secret").uid(),
        0,
        "the target untouched"
    );
    println!(
        "root CLI: ran as uid {uid}; the planted link was neither listed nor cancelled; {id} queued as {uid}:{gid}"
    );
}
