//! Logging to journald, checked on the wire: dlsrv runs in a private mount
//! namespace where journald's socket path is a socket of this test, with
//! `JOURNAL_STREAM` naming its stderr as systemd would set it. Needs root
//! (mount namespaces), as CI has.

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Conn, post_request};

/// Parses one datagram of journald's native protocol: `KEY=value\n`, or
/// `KEY\n` + 64-bit little-endian length + value + `\n` for binary values.
fn parse_entry(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = data.get(line_end + 1..).unwrap_or_default();
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[line_end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().expect("length")) as usize;
            fields.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            data = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

#[tokio::test]
async fn entries_carry_the_identifier_plain_fields_and_priorities() {
    if !common::root_or_skip("journald", "a mount namespace needs root") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = UnixDatagram::bind(dir.path().join("journal.sock")).expect("journal socket");
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let notify = UnixDatagram::bind(dir.path().join("notify")).expect("notify");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let script = r#"set -e
        mkdir -p /run/systemd
        mount -t tmpfs tmpfs /run/systemd
        mkdir /run/systemd/journal
        touch /run/systemd/journal/socket
        mount --bind "$JOURNAL" /run/systemd/journal/socket
        JOURNAL_STREAM=$(stat -L -c '%d:%i' /proc/self/fd/2)
        export JOURNAL_STREAM
        exec "$SELF" serve"#;
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("SELF", env!("CARGO_BIN_EXE_dlsrv"))
        .env("JOURNAL", dir.path().join("journal.sock"))
        .env("DLSRV_SOCKET", dir.path().join("s.sock"))
        .env("DLSRV_DATA_DIR", dir.path().join("data"))
        .env("DLSRV_STATE_DIR", dir.path().join("state"))
        .env("NOTIFY_SOCKET", dir.path().join("notify"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");

    let socket = dir.path().join("s.sock");
    for (target, body, status) in [
        ("/ott/?stationid=0000452891&action=senddata", &b"<StationDataList/>"[..], 200),
        (
            "/ott/?stationid=0000452891&action=sendalarm",
            b"<AlarmMessage stationId=\"0000452891\" t=\"2026-01-01T00:00:00\" type=\"limit\">level high</AlarmMessage>",
            200,
        ),
        ("/ott/?stationid=..&action=senddata", b"<x/>", 400),
    ] {
        let mut conn = Conn::open(&socket).await;
        conn.send(&post_request(target, "HTTP/1.1", "X-Remote-User: logger7\r\nConnection: close\r\n", body)).await;
        assert_eq!(conn.reply().await.status, status);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
    }
    assert!(child.wait().expect("wait").success(), "{stderr}");
    assert!(
        stderr.is_empty(),
        "everything went to the journal, not stderr: {stderr}"
    );

    let mut entries = Vec::new();
    let mut datagram = vec![0u8; 256 * 1024];
    journal
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    while let Ok(n) = journal.recv(&mut datagram) {
        if n > 0 {
            entries.push(parse_entry(&datagram[..n]));
        }
    }
    assert!(
        entries
            .iter()
            .all(|e| e.get("SYSLOG_IDENTIFIER").map(String::as_str) == Some("dlsrv"))
    );
    let find =
        |pred: &dyn Fn(&HashMap<String, String>) -> bool| entries.iter().find(|e| pred(e)).cloned();

    let stored = find(&|e| e.get("MESSAGE").is_some_and(|m| m.starts_with("stored ")))
        .expect("a stored entry");
    for (key, value) in [
        ("STATION_ID", "0000452891"),
        ("ACTION", "senddata"),
        ("STATUS", "200"),
        ("WIRE_BYTES", "18"),
        ("STORED_BYTES", "18"),
        ("SPAN_NAME", "request"),
        ("REMOTE_USER", "logger7"),
        ("PRIORITY", "6"),
    ] {
        assert_eq!(
            stored.get(key).map(String::as_str),
            Some(value),
            "{key} in {stored:?}"
        );
    }
    assert!(
        stored.contains_key("PATH") && stored.contains_key("ELAPSED_MS"),
        "{stored:?}"
    );
    assert!(
        !stored.keys().any(|k| k.starts_with("F_")),
        "no field prefix: {stored:?}"
    );

    let alarm = find(&|e| e.contains_key("ALARM")).expect("an alarm entry");
    assert_eq!(
        alarm.get("PRIORITY").map(String::as_str),
        Some("3"),
        "journalctl -p err lists alarms"
    );
    assert_eq!(
        alarm.get("ALARM").map(String::as_str),
        Some(
            "<AlarmMessage stationId=\"0000452891\" t=\"2026-01-01T00:00:00\" type=\"limit\">level high</AlarmMessage>"
        )
    );

    let refused = find(&|e| e.get("STATUS").map(String::as_str) == Some("400")).expect("a refusal");
    assert_eq!(refused.get("PRIORITY").map(String::as_str), Some("4"));
    assert!(
        refused
            .get("REASON")
            .is_some_and(|r| r.contains("bad stationid")),
        "{refused:?}"
    );
}
