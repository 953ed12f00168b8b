//! `durability = "group"`: the same promises (a 200 means complete and
//! durable, nothing partial visible, nothing overwritten) with shared flushes.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{TestServer, doc_of_len, files_under};
use dlsrv::config::Durability;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_are_stored_whole_with_shared_flushes() {
    let server = Arc::new(TestServer::start_with(|c| c.durability = Durability::Group).await);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = doc_of_len(44 * 1024, b'g');
            body[21..29].copy_from_slice(format!("{i:08}").as_bytes()); // inside the comment
            let reply = server
                .post("/ott/?stationid=0000452891&action=senddata", &body)
                .await;
            (reply.status, body)
        }));
    }
    let mut bodies = BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200);
        bodies.insert(body);
    }
    let stored: BTreeSet<Vec<u8>> = server
        .stored_files()
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    assert_eq!(stored, bodies, "every body stored whole, once");
    assert!(
        files_under(&server.data)
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".tmp"))
    );
    let flushes = server.state.group_flushes().expect("group mode");
    assert!(
        flushes < 128,
        "{flushes} flushes for 64 files: per-file would be 128 fsyncs"
    );
    let metrics = server.get("/metrics").await.text();
    assert!(
        metrics.contains(&format!("dlsrv_group_commit_flushes_total {flushes}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failure_to_store_is_still_503_in_group_mode() {
    let server = TestServer::start_with(|c| c.durability = Durability::Group).await;
    std::fs::write(server.data.join("senddata"), b"not a directory").expect("write");
    let reply = server
        .post("/ott/?stationid=1&action=senddata", &doc_of_len(100, b'x'))
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(server.stored_files().len(), 1, "only the blocker");
}
