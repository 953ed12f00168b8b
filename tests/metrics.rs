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
