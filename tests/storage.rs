//! Failures to store: 503 with Retry-After, nothing partial left, recovery
//! without a restart; temp files left by a crash cleaned at start.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{TestServer, archive_files, doc, doc_of_len, test_config};

const SENDDATA: &str = "/ott/?stationid=0000452891&action=senddata";
const ALARM: &[u8] =
    b"<AlarmMessage stationId=\"1\" t=\"2026-01-01T00:00:00\" type=\"limit\">high</AlarmMessage>";

/// A tmpfs mounted at a path, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).expect("mount point");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
                path(at),
            ],
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, option: &str) {
        run(
            "mount",
            &["-o", &format!("remount,{option}"), path(&self.0)],
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().expect("spawn");
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// Needs root to mount; CI runs as root (where a skip fails, see common).
fn root_or_skip(test: &str) -> bool {
    common::root_or_skip(test, "mounting a tmpfs needs root")
}

#[tokio::test]
async fn disk_full_gives_503_leaves_nothing_partial_and_recovers() {
    if !root_or_skip("disk_full") {
        return;
    }
    // Declared before the mount, so it is removed after the unmount.
    let outer = tempfile::tempdir().expect("tempdir");
    let data = outer.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, "256k");
    // The write itself meets the full disk: no min_free_* in front of it.
    let server = TestServer::start_with(|c| {
        c.data_dir = data.clone();
        c.min_free_bytes = 0;
        c.min_free_inodes = 0;
    })
    .await;

    let small = doc_of_len(1000, b's');
    assert_eq!(server.post(SENDDATA, &small).await.status, 200);
    // Fill the file system so the next body cannot fit.
    let filler = data.join("filler");
    let _ = fs::write(&filler, vec![0u8; 400 * 1024]);
    let reply = server.post(SENDDATA, &doc_of_len(64 * 1024, b'b')).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("60"));
    let files: Vec<_> = archive_files(&data)
        .into_iter()
        .filter(|f| *f != filler)
        .collect();
    assert_eq!(
        files.len(),
        1,
        "only the first body, no partial or temp file: {files:?}"
    );
    assert_eq!(fs::read(&files[0]).expect("read"), small);

    // Space returns: the service stores again without a restart.
    fs::remove_file(&filler).expect("free space");
    let reply = server.post(SENDDATA, &doc_of_len(64 * 1024, b'c')).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(archive_files(&data).len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn read_only_data_dir_gives_503_and_recovers() {
    if !root_or_skip("read_only") {
        return;
    }
    // Declared before the mount, so it is removed after the unmount.
    let outer = tempfile::tempdir().expect("tempdir");
    let data = outer.path().join("data");
    let tmpfs = Tmpfs::mount(&data, "1m");
    // The write itself meets the full disk: no min_free_* in front of it.
    let server = TestServer::start_with(|c| {
        c.data_dir = data.clone();
        c.min_free_bytes = 0;
        c.min_free_inodes = 0;
    })
    .await;
    assert_eq!(server.post(SENDDATA, &doc("a")).await.status, 200);

    tmpfs.remount("ro");
    let reply = server.post(SENDDATA, &doc("b")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.header("retry-after").is_some());
    // A new day directory cannot be created either: still 503, not 500.
    let reply = server
        .post("/ott/?stationid=1&action=sendalarm", ALARM)
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(archive_files(&data).len(), 1);

    tmpfs.remount("rw");
    assert_eq!(server.post(SENDDATA, &doc("d")).await.status, 200);
    assert_eq!(archive_files(&data).len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn an_unwritable_target_gives_503_and_leaves_what_is_there() {
    // Works without root: a regular file stands where a directory must go.
    let server = TestServer::start().await;
    let blocker = server.data.join("sendalarm");
    fs::write(&blocker, b"operator's file").expect("write");
    let reply = server
        .post("/ott/?stationid=1&action=sendalarm", ALARM)
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(fs::read(&blocker).expect("kept"), b"operator's file");
    assert_eq!(server.stored_files(), vec![blocker]);
    // Other actions are unaffected.
    assert_eq!(server.post(SENDDATA, &doc("b")).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn stale_temp_files_are_removed_at_start_young_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path());
    let day = config.data_dir.join("senddata/2026/01/02");
    fs::create_dir_all(&day).expect("day dir");
    let stale = day.join("0000452891_2026-01-02T00+00+00.000000.999-1.tmp");
    let young = day.join("0000452891_2026-01-02T00+00+01.000000.999-2.tmp");
    let stored = day.join("0000452891_2026-01-02T00+00+02.000000");
    for p in [&stale, &young, &stored] {
        fs::write(p, b"x").expect("write");
    }
    for p in [&stale, &stored] {
        fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(2 * 3600)))
            .expect("age");
    }
    let server = TestServer::start_in(dir, config).await;
    // As `serve` does after READY, while requests are served.
    let work = server.state.start_up_work().expect("started");
    tokio::task::spawn_blocking(move || work.join().expect("start-up work"))
        .await
        .expect("join");
    assert!(!stale.exists(), "stale temp removed at start");
    assert!(young.exists(), "another instance may still be writing it");
    assert!(stored.exists(), "archive files are never touched");
    server.stop().await;
}
