//! Binary uploads are streamed to their temp file: memory does not grow
//! with the body, compressed uploads are decoded on the way, and an
//! abandoned upload leaves nothing behind.

mod common;

use std::fs;
use std::io::Write;

use common::{Conn, Daemon, TestServer, archive_files, files_under, post_request};
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

const FIRMWARE: &str = "/ott/?stationid=0000452891&action=sendfirmware";

fn firmware(len: usize, seed: u8) -> Vec<u8> {
    let mut body: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ seed).collect();
    body[..8].copy_from_slice(&[seed; 8]); // distinct bodies: no duplicates
    body
}

/// Peak resident memory of a process, from /proc/<pid>/status (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_32_mib_uploads_in_flight_do_not_grow_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), "a", &[]);
    const SIZE: usize = 32 * 1024 * 1024;
    let mut tasks = Vec::new();
    for seed in 0..16u8 {
        let socket = daemon.socket.clone();
        tasks.push(tokio::spawn(async move {
            let body = firmware(SIZE, seed);
            let mut conn = Conn::open(&socket).await;
            conn.send(&post_request(
                FIRMWARE,
                "HTTP/1.1",
                "Content-Type: application/octet-stream\r\n",
                &body,
            ))
            .await;
            (conn.reply().await.status, body)
        }));
    }
    let mut bodies = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200);
        bodies.push(body);
    }
    let peak_mib = peak_rss_kib(daemon.pid()) / 1024;
    eprintln!("peak RSS with 16 x 32 MiB uploads in flight: {peak_mib} MiB");
    // Held in memory, 16 bodies alone would be 512 MiB.
    assert!(
        peak_mib < 40,
        "peak RSS {peak_mib} MiB: uploads are held in memory"
    );
    let stored = archive_files(&daemon.data);
    assert_eq!(stored.len(), 16);
    for file in stored {
        let content = fs::read(&file).expect("read");
        assert!(
            bodies.contains(&content),
            "{} is one of the uploads, byte-exact",
            file.display()
        );
    }
}

#[tokio::test]
async fn compressed_uploads_are_decoded_while_streaming_and_bounded() {
    let server = TestServer::start_with(|c| c.max_upload_bytes = 4 * 1024 * 1024).await;
    let body = firmware(3 * 1024 * 1024, 7);
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::fast());
    zlib.write_all(&body).expect("compress");
    let zlib = zlib.finish().expect("zlib");
    let reply = server
        .raw(&post_request(
            FIRMWARE,
            "HTTP/1.1",
            "Content-Encoding: deflate\r\nConnection: close\r\n",
            &zlib,
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stored = server.stored_files();
    assert_eq!(stored.len(), 1);
    assert_eq!(fs::read(&stored[0]).expect("read"), body, "stored decoded");

    // 5 MiB of zeros gzipped is tiny on the wire but over the 4 MiB limit decoded.
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    gzip.write_all(&vec![0u8; 5 * 1024 * 1024])
        .expect("compress");
    let bomb = gzip.finish().expect("gzip");
    let reply = server
        .raw(&post_request(
            FIRMWARE,
            "HTTP/1.1",
            "Content-Encoding: gzip\r\nConnection: close\r\n",
            &bomb,
        ))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    let reply = server
        .raw(&post_request(
            FIRMWARE,
            "HTTP/1.1",
            "Content-Encoding: deflate\r\nConnection: close\r\n",
            b"\x78\x9cnot deflate at all",
        ))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(server.stored_files().len(), 1, "nothing more stored");
    assert_eq!(
        files_under(&server.data)
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".tmp"))
            .count(),
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn an_abandoned_upload_leaves_no_temp_file() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    conn.send(
        format!("POST {FIRMWARE} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
            .as_bytes(),
    )
    .await;
    conn.send(&vec![1u8; 1024 * 1024]).await;
    drop(conn); // the logger's link drops mid-upload
    // The server notices, answers nobody, and removes the temp file; a ping
    // on a new connection is served meanwhile.
    assert_eq!(server.get("/ping").await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let temps: Vec<_> = files_under(&server.data)
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".tmp"))
            .collect();
        if temps.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "temp file left behind: {temps:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(server.stored_files().is_empty());
    assert_eq!(
        server.post(FIRMWARE, b"").await.status,
        400,
        "an empty upload is refused"
    );
    server.stop().await;
}
