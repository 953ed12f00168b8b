//! `GET /metrics`: the Prometheus text format, counting what happened.

mod common;

use common::{TestServer, doc};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_stores_duplicates_rejections_and_stations() {
    let server = TestServer::start_with(|c| c.metrics_max_stations = 2).await;
    let target = |station: &str| format!("/ott/?stationid={station}&action=senddata");
    assert_eq!(server.post(&target("s1"), &doc("a")).await.status, 200);
    assert_eq!(
        server.post(&target("s1"), &doc("a")).await.status,
        200,
        "duplicate"
    );
    assert_eq!(server.post(&target("s2"), &doc("b")).await.status, 200);
    assert_eq!(
        server.post(&target("s3"), &doc("c")).await.status,
        200,
        "beyond the cap"
    );
    assert_eq!(
        server.post(&target("s1"), b"<broken").await.status,
        400,
        "rejected"
    );
    assert_eq!(server.post(&target(".."), &doc("d")).await.status, 400);

    let reply = server.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    for (series, expected) in [
        (
            "dlsrv_requests_total{action=\"senddata\",status=\"200\"}",
            4.0,
        ),
        (
            "dlsrv_requests_total{action=\"senddata\",status=\"400\"}",
            1.0,
        ),
        ("dlsrv_requests_total{action=\"none\",status=\"400\"}", 1.0),
        ("dlsrv_stored_files_total", 3.0),
        ("dlsrv_duplicates_total", 1.0),
        ("dlsrv_rejected_total", 1.0),
        ("dlsrv_unavailable_total", 0.0),
        ("dlsrv_store_duration_seconds_count", 3.0),
        ("dlsrv_stations_tracked", 2.0),
        ("dlsrv_stations_untracked_total", 1.0),
        ("dlsrv_requests_in_flight", 1.0), // this scrape itself
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
    }
    let stored_bytes = value(&text, "dlsrv_stored_bytes_total").expect("bytes");
    assert_eq!(stored_bytes as usize, doc("a").len() * 3);
    let now = chrono::Utc::now().timestamp() as f64;
    let s1 = value(
        &text,
        "dlsrv_station_last_transmission_seconds{station=\"s1\"}",
    )
    .expect("s1");
    assert!((now - s1).abs() < 60.0, "{s1} vs {now}");
    assert!(!text.contains("station=\"s3\""), "capped");
    assert_eq!(server.post("/metrics", b"x").await.status, 405);
    server.stop().await;
}

/// What the alert rules (deploy/prometheus/dlsrv-rules.yml) read: refusals
/// by status and reason, each station's alarms and name, room on disk.
#[tokio::test]
async fn metrics_give_the_alert_rules_refusals_by_reason_alarms_names_and_room() {
    let server = TestServer::start().await;
    let target = |station: &str, action: &str| format!("/ott/?stationid={station}&action={action}");
    assert_eq!(
        server
            .post(&target("s1", "senddata"), b"<broken")
            .await
            .status,
        400
    );
    assert_eq!(
        server
            .post(&target("..", "senddata"), &doc("d"))
            .await
            .status,
        400
    );
    let data = b"<StationDataList><StationData stationId=\"s1\" name=\"Pegel Nord\" timezone=\"+01:00\"><ChannelData channelId=\"0010\"><Values><VT t=\"2026-01-01T00:00:00\">1</VT></Values></ChannelData></StationData></StationDataList>";
    assert_eq!(
        server.post(&target("s1", "senddata"), data).await.status,
        200
    );
    let alarm = b"<AlarmMessage stationId=\"s1\" t=\"2026-01-01T00:00:00\" type=\"limit\">level above limit</AlarmMessage>";
    for n in 0..2 {
        let mut body = alarm.to_vec();
        body.extend_from_slice(format!("<!-- {n} -->").as_bytes());
        assert_eq!(
            server.post(&target("s1", "sendalarm"), &body).await.status,
            200
        );
    }
    // The catalog writes its rows in batches: the scrape sees them shortly.
    let mut text = String::new();
    for _ in 0..100 {
        text = server.get("/metrics").await.text();
        if value(&text, "dlsrv_station_alarms_total{station=\"s1\"}") == Some(2.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (series, expected) in [
        ("dlsrv_station_alarms_total{station=\"s1\"}", 2.0),
        (
            "dlsrv_station_info{station=\"s1\",name=\"Pegel Nord\"}",
            1.0,
        ),
        (
            "dlsrv_refused_total{status=\"400\",reason=\"malformed\"}",
            1.0,
        ),
        (
            "dlsrv_refused_total{status=\"400\",reason=\"bad_station_id\"}",
            1.0,
        ),
        ("dlsrv_min_free_bytes", (64 * 1024 * 1024) as f64),
        ("dlsrv_min_free_inodes", 1000.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
    }
    let free = value(&text, "dlsrv_free_bytes{dir=\"data_dir\"}").expect("free bytes");
    let statvfs = nix::sys::statvfs::statvfs(&server.data).expect("statvfs");
    let actual = (statvfs.blocks_available() * statvfs.fragment_size()) as f64;
    assert!(
        (free - actual).abs() < 1e9,
        "free bytes {free} against statvfs {actual}"
    );
    assert!(value(&text, "dlsrv_free_bytes{dir=\"state_dir\"}").is_some());
    server.stop().await;
}
