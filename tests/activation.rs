//! Socket activation with systemd's own `systemd-socket-activate`: dlsrv
//! serves the socket it is passed, checks what it is, and leaves its removal
//! to systemd.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Conn, archive_files};

/// Kills the process (SIGKILL) when a test fails before it exited.
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// `systemd-socket-activate -l SOCKET [extra] dlsrv serve`, returned once it
/// listens. It execs dlsrv on the first connection, in the same process.
fn activate(
    dir: &std::path::Path,
    extra: &[&str],
) -> (Child, BufReader<std::process::ChildStderr>) {
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(dir.join("s.sock")).args(extra);
    cmd.arg("-E")
        .arg(format!("DLSRV_DATA_DIR={}", dir.join("data").display()));
    cmd.arg("-E")
        .arg(format!("DLSRV_STATE_DIR={}", dir.join("state").display()));
    cmd.arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", dir.join("notify").display()));
    // The configured socket path must not be bound when one is inherited.
    cmd.arg("-E").arg(format!(
        "DLSRV_SOCKET={}",
        dir.join("unused.sock").display()
    ));
    cmd.arg(env!("CARGO_BIN_EXE_dlsrv")).arg("serve");
    let mut child = cmd
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (package systemd) must be installed");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("Listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0,
            "exited before listening"
        );
    }
    (child, stderr)
}

#[tokio::test]
async fn serves_the_socket_systemd_passes_and_leaves_it_to_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = UnixDatagram::bind(dir.path().join("notify")).expect("notify");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let (child, mut stderr) = activate(dir.path(), &[]);
    let _guard = KillOnPanic(child.id());
    let socket = dir.path().join("s.sock");

    // The first connection starts dlsrv, which serves it.
    let mut conn = Conn::open(&socket).await;
    conn.send(b"POST /ott/?stationid=0000452891&action=senddata HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\n<StationDataList/>")
        .await;
    let reply = conn.reply().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let (status, log) = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let mut log = String::new();
        stderr.read_to_string(&mut log).expect("log");
        (child.wait().expect("wait"), log)
    })
    .await
    .expect("join");
    assert!(status.success(), "{log}");
    assert!(log.contains("passed by systemd"), "{log}");
    assert_eq!(archive_files(&dir.path().join("data")).len(), 1);
    assert!(socket.exists(), "systemd's socket is systemd's to remove");
    assert!(
        !dir.path().join("unused.sock").exists(),
        "no socket of its own was bound"
    );
}

#[test]
fn a_datagram_socket_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, mut stderr) = activate(dir.path(), &["--datagram"]);
    let _guard = KillOnPanic(child.id());
    // A datagram wakes systemd-socket-activate, which then execs dlsrv.
    UnixDatagram::unbound()
        .expect("socket")
        .send_to(b"x", dir.path().join("s.sock"))
        .expect("send");
    let mut log = String::new();
    stderr.read_to_string(&mut log).expect("log");
    assert!(!child.wait().expect("wait").success());
    assert!(log.contains("not a stream socket"), "{log}");
}

/// Runs `dlsrv serve` through `sh`, so `LISTEN_PID=$$` can name the
/// process that execs dlsrv, with descriptor 3 redirected as given.
fn sh_serve(dir: &std::path::Path, listen_pid: &str, fd3: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID={listen_pid} LISTEN_FDS=1 exec \"$SELF\" serve 3{fd3}"
        ))
        .env("SELF", env!("CARGO_BIN_EXE_dlsrv"))
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .env("DLSRV_SOCKET", dir.join("s.sock"))
        .env_remove("NOTIFY_SOCKET");
    cmd
}

#[test]
fn descriptor_3_that_is_not_a_socket_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sh_serve(dir.path(), "$$", "</dev/null")
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert!(
        !dir.path().join("s.sock").exists(),
        "no silent fallback to binding"
    );
}

#[test]
fn listen_variables_meant_for_another_process_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = UnixDatagram::bind(dir.path().join("notify")).expect("notify");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // LISTEN_PID=1 names another process: dlsrv binds its own socket.
    let mut child = sh_serve(dir.path(), "1", "</dev/null")
        .env("NOTIFY_SOCKET", dir.path().join("notify"))
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let _guard = KillOnPanic(child.id());
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(dir.path().join("s.sock").exists(), "bound its own socket");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    assert!(child.wait().expect("wait").success());
    assert!(!dir.path().join("s.sock").exists(), "and removed it");
}
