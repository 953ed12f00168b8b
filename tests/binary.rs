//! The `dlsrv` binary as operators run it: the command line, readiness via
//! `NOTIFY_SOCKET`, logs, and a SIGTERM drain with a request in flight.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Conn, Daemon, archive_files};

fn dlsrv() -> Command {
    common::dlsrv_command()
}

fn output(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("run dlsrv");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn version_and_help_on_every_subcommand() {
    let (out, stdout, _) = output(dlsrv().arg("--version"));
    assert!(out.status.success());
    assert!(stdout.starts_with(&format!("dlsrv {}", env!("CARGO_PKG_VERSION"))));
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
    ] {
        let (out, stdout, _) = output(dlsrv().args(sub));
        assert!(out.status.success(), "{sub:?}");
        assert!(
            stdout.contains("--config") || sub.len() == 1,
            "{sub:?}: {stdout}"
        );
    }
}

#[test]
fn check_config_prints_effective_values_and_names_bad_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dlsrv.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/ott\"\nmax_body_bytes = 2048\nstation_access = \"any\"\n",
    )
    .expect("write");
    let (out, stdout, _) = output(
        dlsrv()
            .args(["check-config", "--config"])
            .arg(&file)
            .env("DLSRV_MAX_BODY_BYTES", "4096"),
    );
    assert!(out.status.success());
    assert!(stdout.contains("data_dir = \"/srv/ott\""), "{stdout}");
    assert!(
        stdout.contains("max_body_bytes = 4096"),
        "env overrides the file: {stdout}"
    );
    assert!(
        stdout.contains("socket = \"./dlsrv.sock\""),
        "defaults shown: {stdout}"
    );

    // The same file via DLSRV_CONFIG.
    let (out, stdout, _) = output(dlsrv().arg("check-config").env("DLSRV_CONFIG", &file));
    assert!(out.status.success());
    assert!(stdout.contains("max_body_bytes = 2048"));

    std::fs::write(&file, "data_dir = \"/srv/ott\"\nsocket_mode = \"0999\"\n").expect("write");
    let (out, _, stderr) = output(dlsrv().args(["check-config", "--config"]).arg(&file));
    assert!(!out.status.success());
    assert!(stderr.contains("socket_mode"), "{stderr}");

    let (out, _, stderr) = output(dlsrv().arg("check-config").env("DLSRV_TEMP_SUFFIX", "tmp"));
    assert!(!out.status.success());
    assert!(stderr.contains("temp_suffix"), "{stderr}");

    // A logins file that does not parse: check-config reads it as the
    // service will, and names the line (a file means station_access "map").
    let logins = dir.path().join("logins.toml");
    std::fs::write(&logins, "[logins]\nx = []\n").expect("write");
    std::fs::write(
        &file,
        format!("data_dir = \"/srv/ott\"\nlogins_file = {:?}\n", logins),
    )
    .expect("write");
    let (out, _, stderr) = output(dlsrv().args(["check-config", "--config"]).arg(&file));
    assert!(!out.status.success());
    assert!(stderr.contains("line 2"), "{stderr}");

    let (out, _, stderr) =
        output(dlsrv().args(["check-config", "--config", "/nonexistent/dlsrv.toml"]));
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/dlsrv.toml"), "{stderr}");
}

/// A daemon in its own temporary directory.
fn start() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "s", &[]);
    (dir, daemon)
}

#[tokio::test]
async fn sigterm_drains_a_request_in_flight_then_removes_the_socket() {
    let (_dir, running) = start();
    let socket = running.socket.clone();
    assert!(socket.exists());

    // A chunked upload, half sent when SIGTERM arrives. `100 Continue` comes
    // only once the handler reads the body: proof the request is in flight.
    let mut conn = Conn::open(&socket).await;
    conn.send(b"POST /ott/?stationid=0000452891&action=senddata HTTP/1.1\r\nHost: x\r\nX-Remote-User: logger7\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    assert_eq!(conn.reply().await.status, 100);
    conn.send(b"11\r\n<StationDataList>\r\n").await;
    running.sigterm();
    assert_eq!(running.next_notification(), "STOPPING=1");
    conn.send(b"12\r\n</StationDataList>\r\n0\r\n\r\n").await;
    let reply = conn.reply().await;
    assert_eq!(
        reply.status,
        200,
        "the in-flight request completes: {}",
        reply.text()
    );

    let data = running.data.clone();
    let (ok, log) = tokio::task::spawn_blocking(move || running.wait())
        .await
        .expect("join");
    assert!(ok, "exit 0 after the drain; log:\n{log}");
    assert!(!socket.exists(), "socket removed on shutdown");
    let files = archive_files(&data);
    assert_eq!(files.len(), 1);
    assert_eq!(
        std::fs::read(&files[0]).expect("read"),
        b"<StationDataList></StationDataList>"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        log.contains("remote_user=\"logger7\""),
        "the login is logged: {log}"
    );
}

#[tokio::test]
async fn logs_one_event_per_transmission_alarms_at_error_and_refusals_at_warn() {
    let (_dir, running) = start();
    let socket = running.socket.clone();
    let post = |target: &'static str, body: &'static [u8]| {
        let socket = socket.clone();
        async move {
            let mut conn = Conn::open(&socket).await;
            conn.send(
                format!(
                    "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
            conn.send(body).await;
            conn.reply().await.status
        }
    };
    assert_eq!(
        post(
            "/ott/?stationid=0000452891&action=senddata",
            b"<StationDataList/>"
        )
        .await,
        200
    );
    assert_eq!(
        post(
            "/ott/?stationid=0000452891&action=sendalarm",
            b"<AlarmMessage stationId=\"0000452891\" t=\"2026-01-01T00:00:00\" type=\"limit\">level 12.5 \xb0C above limit</AlarmMessage>"
        )
        .await,
        200
    );
    assert_eq!(
        post("/ott/?stationid=..&action=senddata", b"<x/>").await,
        400
    );
    running.sigterm();
    let (ok, log) = tokio::task::spawn_blocking(move || running.wait())
        .await
        .expect("join");
    assert!(ok);
    let stored: Vec<_> = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("stored "))
        .collect();
    assert_eq!(
        stored.len(),
        2,
        "one info event per stored transmission:\n{log}"
    );
    for field in [
        "station_id=\"0000452891\"",
        "action=\"senddata\"",
        "wire_bytes=18",
        "stored_bytes=18",
        "path=",
        "elapsed_ms=",
        "status=200",
    ] {
        assert!(stored[0].contains(field), "{field} in {}", stored[0]);
    }
    let alarm: Vec<_> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && l.contains("alarm"))
        .collect();
    assert_eq!(alarm.len(), 1, "{log}");
    assert!(
        alarm[0].contains("level 12.5 \u{b0}C above limit"),
        "ISO-8859-1 shown readably: {}",
        alarm[0]
    );
    let refused: Vec<_> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("400"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("bad stationid"));
}

#[test]
fn serve_refuses_a_regular_file_at_the_socket_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("s.sock");
    std::fs::write(&socket, b"keep me").expect("write");
    let (out, _, stderr) = output(
        dlsrv()
            .arg("serve")
            .env("DLSRV_SOCKET", &socket)
            .env("DLSRV_DATA_DIR", dir.path().join("data"))
            .env("DLSRV_STATE_DIR", dir.path().join("state")),
    );
    assert!(!out.status.success());
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read(Path::new(&socket)).expect("kept"), b"keep me");
}
