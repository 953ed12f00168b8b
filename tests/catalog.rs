//! The catalog in `state_dir` and the archive it indexes: rows written for
//! what is stored, `data_dir` holding bodies only, `dlsrv reindex` from an
//! archive alone, the catch-up at start, and an older installation's state
//! moved out of `data_dir`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use common::{Daemon, TestServer, dlsrv_command, doc, files_under};
use sha2::{Digest, Sha256};

/// `path → (station, action, received_utc, bytes, sha256)` of every row.
type Rows = BTreeMap<String, (String, String, String, i64, String)>;

fn rows(state_dir: &Path) -> Rows {
    let conn =
        rusqlite::Connection::open(dlsrv::layout::catalog_path(state_dir)).expect("open catalog");
    let mut stmt = conn
        .prepare("SELECT path, station_id, action, received_utc, bytes, sha256 FROM transmissions")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// What the archive holds, described the way the catalog should: every
/// file with an archive name that is not being written.
fn archive_as_rows(data_dir: &Path) -> Rows {
    files_under(data_dir)
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with(".tmp"))
        .filter_map(|file| {
            let relative = file
                .strip_prefix(data_dir)
                .expect("below")
                .to_string_lossy()
                .into_owned();
            let action = relative.split('/').next().expect("action").to_owned();
            let name = file
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let (station, received) = dlsrv::layout::parse_file_name(&name)?;
            let body = fs::read(&file).expect("read");
            let row = (
                station.to_owned(),
                action,
                dlsrv::layout::rfc3339(received),
                body.len() as i64,
                hex::encode(Sha256::digest(&body)),
            );
            Some((relative, row))
        })
        .collect()
}

/// One POST on a fresh connection, the whole answer as text.
fn post(socket: &Path, target: &str, body: &[u8]) -> String {
    let mut conn = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body))
        .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read");
    answer
}

fn dlsrv(args: &[&str], data: &Path, state: &Path) -> (bool, String) {
    let out = dlsrv_command()
        .args(args)
        .env("DLSRV_DATA_DIR", data)
        .env("DLSRV_STATE_DIR", state)
        .output()
        .expect("run dlsrv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn posts_become_rows_and_add_nothing_to_state_dir_but_the_database() {
    let server = TestServer::start().await;
    let before = files_under(&server.state_dir);
    let names = |files: &[std::path::PathBuf]| -> Vec<String> {
        files
            .iter()
            .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
            .collect()
    };
    let mut before = names(&before);
    before.sort();
    assert_eq!(
        before,
        [
            "catalog.sqlite3",
            "catalog.sqlite3-shm",
            "catalog.sqlite3-wal"
        ]
    );
    for i in 0..200 {
        let station = format!("0000{:06}", i % 7);
        let reply = server
            .post(
                &format!("/ott/?stationid={station}&action=senddata"),
                &doc(&format!("body {i}")),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let upload = server
        .post(
            "/ott/?stationid=0000000001&action=sendconfiguration",
            b"\x00\x01binary config",
        )
        .await;
    assert_eq!(upload.status, 200);
    server.state.flush_catalog();

    // state_dir: the database and SQLite's own WAL and shared-memory files, nothing per body.
    let mut after = names(&files_under(&server.state_dir));
    after.sort();
    assert_eq!(after, before);
    // data_dir: nothing but archived bodies, each named as layout names them.
    let archived = archive_as_rows(&server.data);
    assert_eq!(archived.len(), 201);
    assert_eq!(
        files_under(&server.data).len(),
        201,
        "nothing else in data_dir"
    );
    // One row per body, matching path, station, action, time, size and SHA-256.
    assert_eq!(rows(&server.state_dir), archived);
    server.stop().await;
}

#[test]
fn reindex_rebuilds_the_catalog_from_the_archive_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, state) = (dir.path().join("data"), dir.path().join("state"));
    // An archive written by hand, as an older installation or a restore leaves it.
    let t = |s: i64| chrono::DateTime::from_timestamp(1_700_000_000 + s, 123_000).expect("time");
    let mut written = 0;
    for (i, (action, station)) in [
        ("senddata", "0000452891"),
        ("sendalarm", "A_1"),
        ("senddata", "B-2"),
    ]
    .into_iter()
    .cycle()
    .take(30)
    .enumerate()
    {
        let path = data.join(dlsrv::layout::archive_path(
            action,
            station,
            t(i as i64 * 3600),
        ));
        fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
        fs::write(&path, format!("<x>{i}</x>")).expect("write");
        written += 1;
    }
    // A Flask-era name without a fraction, a temp file and a stray file.
    let day = data.join("senddata/2023/11/14");
    fs::write(day.join("0000452891_2023-11-14T22+13+20"), b"<old/>").expect("write");
    fs::write(
        day.join("0000452891_2023-11-14T22+13+21.000000.1-1.tmp"),
        b"partial",
    )
    .expect("write");
    fs::write(day.join("README"), b"not a body").expect("write");
    written += 1;

    let (ok, out) = dlsrv(&["reindex"], &data, &state);
    assert!(ok, "{out}");
    let mut expected = archive_as_rows(&data);
    let found = rows(&state);
    assert_eq!(found.len(), written, "{out}");
    assert_eq!(found, expected);
    assert!(out.contains(&format!("{written} bodies indexed")), "{out}");

    // Again after a body vanished and one appeared: the catalog follows the archive.
    let (gone, _) = expected.pop_first().expect("a row");
    fs::remove_file(data.join(&gone)).expect("remove");
    let new = data.join(dlsrv::layout::archive_path("senddata", "C", t(99_999)));
    fs::create_dir_all(new.parent().expect("day")).expect("mkdir");
    fs::write(&new, b"<new/>").expect("write");
    let (ok, out) = dlsrv(&["reindex"], &data, &state);
    assert!(ok, "{out}");
    assert!(out.contains("1 rows of vanished files removed"), "{out}");
    let found = rows(&state);
    assert!(!found.contains_key(&gone));
    assert_eq!(found.len(), written);
    assert_eq!(found, archive_as_rows(&data));
}

#[test]
fn reindex_reads_the_archive_without_writing_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, state) = (dir.path().join("data"), dir.path().join("state"));
    let (ok, out) = dlsrv(&["reindex"], &data, &state);
    assert!(!ok, "an archive that does not exist is an error: {out}");
    assert!(out.contains("cannot read the archive"), "{out}");
    assert!(!data.exists(), "and is not created");
}

#[test]
fn the_service_catches_up_at_start_and_retires_an_old_installations_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // What an installation before state_dir left in data_dir.
    let now = chrono::Utc::now();
    let body = b"<StationDataList><!-- sent before the upgrade --></StationDataList>".to_vec();
    let archived = data.join(dlsrv::layout::archive_path(
        "senddata",
        "0000452891",
        now - chrono::Duration::hours(1),
    ));
    let old_day = data.join(dlsrv::layout::archive_path(
        "senddata",
        "0000452891",
        now - chrono::Duration::days(400),
    ));
    for (path, content) in [
        (archived.clone(), body.clone()),
        (old_day.clone(), b"<StationDataList/>".to_vec()),
        (
            data.join("commands/0000452891/pending/20260101T000000.000000.xml"),
            b"<CommandList/>".to_vec(),
        ),
        (
            data.join("rejected/2026/01/01/0000452891_2026-01-01T00+00+00.000000"),
            b"<broken".to_vec(),
        ),
        (
            data.join("rejected/2026/01/01/0000452891_2026-01-01T00+00+00.000000.reason"),
            b"reason: malformed".to_vec(),
        ),
        (
            data.join(".duplicates/2026-01-01/senddata/0000452891/abc"),
            b"marker".to_vec(),
        ),
    ] {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    let daemon = Daemon::start(dir.path(), "a", &[]);
    let state = daemon.state.clone();
    // Moved before READY: the queue and the rejected bodies are in state_dir.
    assert!(
        state
            .join("commands/0000452891/pending/20260101T000000.000000.xml")
            .is_file()
    );
    assert!(
        state
            .join("rejected/2026/01/01/0000452891_2026-01-01T00+00+00.000000.reason")
            .is_file()
    );
    assert!(!data.join("commands").exists() && !data.join("rejected").exists());
    // The catch-up runs after READY; its log line says when it is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !daemon.log().contains("catalog caught up with the archive") {
        assert!(
            std::time::Instant::now() < deadline,
            "no catch-up:\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !data.join(".duplicates").exists(),
        "markers retired:\n{}",
        daemon.log()
    );
    // Both archived bodies have rows, the one from 400 days ago too (an upgrade indexes all).
    let found = rows(&state);
    assert_eq!(found.len(), 2, "{found:?}");
    // The body archived before the upgrade is known as a duplicate.
    let answer = post(
        &daemon.socket,
        "/ott/?stationid=0000452891&action=senddata",
        &body,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    daemon.sigterm();
    let (ok, log) = daemon.wait();
    assert!(ok, "{log}");
    assert!(log.contains("duplicate of senddata/"), "{log}");
    assert_eq!(files_under(&data.join("senddata")).len(), 2, "stored once");
    // data_dir holds archived bodies only.
    assert!(
        files_under(&data)
            .iter()
            .all(|f| f.starts_with(data.join("senddata")))
    );
}

#[test]
fn check_config_keeps_state_dir_and_data_dir_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for (state, why) in [
        (data.clone(), "is data_dir"),
        (data.join("state"), "inside data_dir"),
        (dir.path().to_path_buf(), "inside state_dir"),
    ] {
        let (ok, out) = dlsrv(&["check-config"], &data, &state);
        assert!(!ok, "{state:?} refused");
        assert!(out.contains(why), "{why}: {out}");
    }
    let (ok, out) = dlsrv(&["check-config"], &data, &dir.path().join("state"));
    assert!(ok, "{out}");
    assert!(out.contains("state_dir = "), "{out}");
    assert!(!data.exists(), "check-config writes nothing");
}
