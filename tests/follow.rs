//! `dlsrv export --follow NAME`: the real service on its socket takes a
//! steady load of distinct bodies while the feed, a real `dlsrv` process,
//! delivers their rows into a throwaway PostgreSQL cluster; the feed is
//! killed with SIGKILL, and the database is stopped, during the load.
//! Every body's rows must arrive once, none missing, and (without an
//! outage) within 5 s of the body's 200 at the 99th percentile.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::Cluster;
use common::{TestServer, dlsrv_command};

/// Values per body: one channel, four times that no other body has.
const VALUES: usize = 4;

/// Body `n` of `station`: distinct from every other.
fn body(station: &str, n: usize) -> Vec<u8> {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let values: String = (0..VALUES)
        .map(|k| {
            let t = base + chrono::Duration::minutes((n * VALUES + k) as i64);
            format!("<VT t=\"{}\">{n}.{k}</VT>", t.format("%Y-%m-%dT%H:%M:%S"))
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><StationDataList><StationData stationId=\"{station}\" name=\"S\" timezone=\"+00:00\"><ChannelData channelId=\"0010\" name=\"Level\" unit=\"cm\"><Values>{values}</Values></ChannelData></StationData></StationDataList>"
    )
    .into_bytes()
}

/// The feed `name` as a process of its own, logging to `log`.
fn follower(server: &TestServer, args: &[String], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    dlsrv_command()
        .arg("export")
        .args(args)
        .env("DLSRV_DATA_DIR", &server.data)
        .env("DLSRV_STATE_DIR", &server.state_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn dlsrv export --follow")
}

/// Watches the table: when each body's rows (by source) first appeared.
struct Watcher {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(url: String) -> Watcher {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<postgres::Client> = None;
            while !st.load(Ordering::SeqCst) {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = postgres::Client::connect(&url, postgres::NoTls).ok();
                }
                if let Some(c) = client.as_mut() {
                    match c.query(
                        "SELECT DISTINCT source FROM ott_values WHERE received_utc > now() - interval '1 hour'",
                        &[],
                    ) {
                        Ok(rows) => {
                            let now = Instant::now();
                            let mut seen = s.lock().expect("lock");
                            for r in rows {
                                seen.entry(r.get::<_, String>(0)).or_insert(now);
                            }
                        }
                        Err(_) => client = None,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self, sources: &[String]) -> usize {
        let seen = self.seen.lock().expect("lock");
        sources.iter().filter(|s| seen.contains_key(*s)).count()
    }

    fn finish(mut self) -> HashMap<String, Instant> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("watcher");
        }
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// Sends `rate` distinct bodies a second for `secs` seconds (50 stations in
/// turn), calling `at(second)` once at the start of each second; returns
/// each body's archive path with the moment of its 200.
async fn load(
    server: &TestServer,
    secs: u64,
    rate: u64,
    mut at: impl FnMut(u64),
) -> Vec<(String, Instant)> {
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate));
    let mut n = 0usize;
    for second in 0..secs {
        at(second);
        for _ in 0..rate {
            tick.tick().await;
            let station = format!("F{:03}", n % 50);
            let reply = server
                .post(
                    &format!("/ott/?stationid={station}&action=senddata"),
                    &body(&station, n),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let path = reply.stored_path("senddata", &station);
            sent.push((path.to_string_lossy().into_owned(), Instant::now()));
            n += 1;
        }
    }
    sent
}

/// Waits until every body's rows are in the table (at most `limit`).
fn wait_for_all(watcher: &Watcher, sources: &[String], limit: Duration) {
    let until = Instant::now() + limit;
    while watcher.count(sources) < sources.len() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The catalog's highest data message id.
fn catalog_max_id(state_dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(state_dir.join("catalog.sqlite3")).expect("catalog");
    conn.query_row(
        "SELECT max(id) FROM transmissions WHERE action = 'senddata'",
        [],
        |r| r.get(0),
    )
    .expect("max id")
}

/// Every body's rows once, none missing, the position at the catalog's end.
fn assert_exactly_once(pg: &Cluster, server: &TestServer, sources: &[String]) {
    let expected = sources.len() * VALUES;
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT source) FROM ott_values"),
        format!("{expected}|{}", sources.len()),
        "every value once, from every body"
    );
    let max = catalog_max_id(&server.state_dir);
    assert_eq!(
        pg.psql("SELECT position FROM ott_export_position WHERE name = 'feed'"),
        max.to_string(),
        "the position is the last body's"
    );
}

/// A throwaway cluster, the service, the feed's log and its arguments.
async fn feed_setup() -> Option<(Cluster, TestServer, std::path::PathBuf, Vec<String>)> {
    let pg = Cluster::start()?;
    let server = TestServer::start().await;
    let log = server.dir.path().join("follower.log");
    let args = ["--follow", "feed", "--format", "postgres", "--database"]
        .into_iter()
        .map(str::to_owned)
        .chain([pg.url()])
        .collect();
    Some((pg, server, log, args))
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    let i = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    latencies.get(i).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_every_body_once_within_seconds_through_three_kills() {
    let Some((pg, server, log, args)) = feed_setup().await else {
        return;
    };
    let url = pg.url();
    let mut child = follower(&server, &args, &log);
    let watcher = Watcher::start(url.clone());
    let mut kills = 0;
    let sent = load(&server, 60, 100, |second| {
        if [15, 30, 45].contains(&second) {
            // kill -9, then started again as systemd would.
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
            kills += 1;
            child = follower(&server, &args, &log);
        }
    })
    .await;
    assert_eq!(kills, 3);
    let sources: Vec<String> = sent.iter().map(|(s, _)| s.clone()).collect();
    wait_for_all(&watcher, &sources, Duration::from_secs(60));
    let seen = watcher.finish();
    let latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(s, at)| seen.get(s).map(|t| t.saturating_duration_since(*at)))
        .collect();
    assert_eq!(latencies.len(), sent.len(), "every body delivered");
    let p99 = p99(latencies.clone());
    let max = latencies.iter().max().copied().unwrap_or_default();
    common::figure(&format!(
        "follow: {} bodies at 100/s for 60 s, 3 kills of the feed: delivery after the 200 p99 {} ms, max {} ms",
        sent.len(),
        p99.as_millis(),
        max.as_millis()
    ));
    assert!(p99 <= Duration::from_secs(5), "p99 {p99:?}");
    assert_exactly_once(&pg, &server, &sources);
    // SIGTERM: the feed finishes what it does and stops, 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The same page again after a restart changes nothing.
    let before = pg.psql("SELECT md5(string_agg(source || time_utc || value, ',' ORDER BY source, time_utc)) FROM ott_values");
    pg.psql("UPDATE ott_export_position SET position = 0 WHERE name = 'feed'");
    let mut replay = follower(&server, &args, &log);
    let until = Instant::now() + Duration::from_secs(60);
    while pg.psql("SELECT position FROM ott_export_position WHERE name = 'feed'")
        != catalog_max_id(&server.state_dir).to_string()
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    replay.kill().expect("kill");
    replay.wait().expect("wait");
    assert_exactly_once(&pg, &server, &sources);
    assert_eq!(
        pg.psql("SELECT md5(string_agg(source || time_utc || value, ',' ORDER BY source, time_utc)) FROM ott_values"),
        before,
        "a replay changes nothing"
    );
    server.stop().await;
}

/// The lag the service's `/metrics` shows for the feed.
async fn lag(server: &TestServer) -> Option<f64> {
    let text = server.get("/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with("dlsrv_export_lag_seconds{name=\"feed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_waits_out_a_database_outage_loses_nothing_and_its_lag_shows_it() {
    let Some((pg, server, log, mut args)) = feed_setup().await else {
        return;
    };
    // A warning when the feed is 10 s behind (the outage takes 30).
    args.extend(["--lag-warn-secs".to_owned(), "10".to_owned()]);
    let url = pg.url();
    let mut child = follower(&server, &args, &log);
    let pg = Arc::new(pg);
    let down = pg.clone();
    let sent = {
        let server = &server;
        let lags = Arc::new(Mutex::new(Vec::new()));
        let sent = load(server, 45, 100, |second| match second {
            5 => down.stop(),
            35 => down.restart(),
            _ => {}
        });
        // Read the lag once a second meanwhile.
        let watch = async {
            for _ in 0..45 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some(l) = lag(server).await {
                    lags.lock().expect("lock").push(l);
                }
            }
        };
        let (sent, ()) = tokio::join!(sent, watch);
        let lags = lags.lock().expect("lock").clone();
        let max = lags.iter().copied().fold(0.0, f64::max);
        common::figure(&format!(
            "follow: lag during a 30 s database outage peaked at {max:.1} s"
        ));
        assert!(max >= 20.0, "the lag rose during the outage: {lags:?}");
        sent
    };
    let sources: Vec<String> = sent.iter().map(|(s, _)| s.clone()).collect();
    let watcher = Watcher::start(url.clone());
    wait_for_all(&watcher, &sources, Duration::from_secs(90));
    watcher.finish();
    // And falls back once the feed has caught up.
    let until = Instant::now() + Duration::from_secs(30);
    let mut last = lag(&server).await;
    while last.is_none_or(|l| l > 5.0) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = lag(&server).await;
    }
    assert!(
        last.is_some_and(|l| l <= 5.0),
        "lag after catching up: {last:?}"
    );
    assert_exactly_once(&pg, &server, &sources);
    child.kill().expect("kill");
    child.wait().expect("wait");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let outages = log.matches("export feed cannot deliver").count();
    assert_eq!(outages, 1, "one line per outage, not per try:\n{log}");
    assert_eq!(
        log.matches("export feed delivers again").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("export feed is behind").count(), 1, "{log}");
    assert_eq!(log.matches("export feed caught up").count(), 1, "{log}");
    server.stop().await;
}

#[tokio::test]
async fn json_lines_on_standard_output_resume_after_the_last_body_delivered() {
    let server = TestServer::start().await;
    let mut sent = 0usize;
    let post = |n: usize| {
        let server = &server;
        async move {
            let station = "J001";
            let reply = server
                .post(
                    &format!("/ott/?stationid={station}&action=senddata"),
                    &body(station, n),
                )
                .await;
            assert_eq!(reply.status, 200);
        }
    };
    for n in 0..10 {
        post(n).await;
        sent += 1;
    }
    let read_rows = |wanted: usize| {
        let mut child = dlsrv_command()
            .args(["export", "--follow", "pipe", "--format", "jsonl"])
            .env("DLSRV_DATA_DIR", &server.data)
            .env("DLSRV_STATE_DIR", &server.state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = Vec::new();
        {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(stdout);
            while lines.len() < wanted {
                let mut line = String::new();
                if reader.read_line(&mut line).expect("read") == 0 {
                    break;
                }
                lines.push(line);
            }
            // SIGTERM once the rows are in: the feed stops with 0.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM");
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
            lines.extend(rest.lines().map(|l| format!("{l}\n")));
        }
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(0));
        lines
    };
    let first = read_rows(sent * VALUES);
    assert_eq!(first.len(), sent * VALUES);
    for line in &first {
        let row: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(row["station_id"], "J001");
    }
    for n in 10..15 {
        post(n).await;
    }
    // Five bodies not delivered yet: `dlsrv status` says how far behind.
    server.state.flush_catalog();
    let status = dlsrv_command()
        .arg("status")
        .env("DLSRV_DATA_DIR", &server.data)
        .env("DLSRV_STATE_DIR", &server.state_dir)
        .output()
        .expect("dlsrv status");
    let summary = String::from_utf8_lossy(&status.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        summary.starts_with("1 station(s), ") && summary.contains(", export feed pipe "),
        "{summary}"
    );
    assert!(summary.ends_with("s behind"), "{summary}");
    // From where it stopped: the five new bodies only.
    let second = read_rows(5 * VALUES);
    assert_eq!(second.len(), 5 * VALUES, "{second:?}");
    for line in &second {
        let row: serde_json::Value = serde_json::from_str(line).expect("json");
        let v: f64 = row["value"]
            .as_str()
            .expect("value")
            .parse()
            .expect("number");
        assert!(v >= 10.0, "{line}");
    }
    server.stop().await;
}
