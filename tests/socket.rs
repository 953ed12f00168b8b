//! Binding the socket: mode and group before the first accept, stale
//! sockets replaced, anything else refused and left untouched, removal on
//! shutdown, and a backlog that absorbs a burst of connects.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::{TestServer, test_config};
use dlsrv::config::FileMode;
use dlsrv::listener;

#[tokio::test]
async fn socket_has_its_mode_and_is_removed_on_shutdown() {
    let server = TestServer::start_with(|c| c.socket_mode = FileMode(0o600)).await;
    let meta = fs::symlink_metadata(&server.socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let socket = server.socket.clone();
    server.stop().await;
    assert!(!socket.exists(), "removed on shutdown");
}

#[tokio::test]
async fn socket_group_is_set() {
    if !common::root_or_skip("socket_group_is_set", "chown to another group needs root") {
        return;
    }
    let server = TestServer::start_with(|c| c.socket_group = Some("65534".into())).await;
    let meta = fs::symlink_metadata(&server.socket).expect("socket");
    assert_eq!(meta.gid(), 65534);
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "default mode");
    server.stop().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path());
    // A socket file nobody listens on, as a crash leaves it.
    drop(std::os::unix::net::UnixListener::bind(&config.socket).expect("stale"));
    assert!(config.socket.exists());
    let server = TestServer::start_in(dir, config).await;
    assert_eq!(server.get("/ping").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_regular_file_at_the_socket_path_is_refused_and_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path());
    fs::write(&config.socket, b"important").expect("write");
    let err = listener::bind(&config).expect_err("must refuse");
    assert!(format!("{err:#}").contains("not a socket"), "{err:#}");
    assert_eq!(fs::read(&config.socket).expect("still there"), b"important");

    fs::remove_file(&config.socket).expect("rm");
    fs::create_dir(&config.socket).expect("a directory");
    assert!(listener::bind(&config).is_err());
    assert!(config.socket.is_dir());
}

#[tokio::test]
async fn a_live_socket_is_not_stolen() {
    let server = TestServer::start().await;
    let err = listener::bind(server.state.config()).expect_err("in use");
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
    assert_eq!(
        server.get("/ping").await.status,
        200,
        "the running server is unaffected"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_too_long_socket_path_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.socket = dir.path().join("s".repeat(120));
    assert!(config.validate().is_err());
    let err = listener::bind(&config).expect_err("too long");
    assert!(format!("{err:#}").contains("longer than"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_simultaneous_connects_is_not_refused() {
    let server = TestServer::start().await;
    // Connect all first (filling the backlog), then use them.
    let mut conns = Vec::new();
    for _ in 0..500 {
        conns.push(
            tokio::net::UnixStream::connect(&server.socket)
                .await
                .expect("connect not refused"),
        );
    }
    let mut tasks = Vec::new();
    for stream in conns {
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = stream;
            stream
                .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await.expect("read");
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    server.stop().await;
}
