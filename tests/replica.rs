//! The replica against a real S3-compatible store (Garage on loopback):
//! every stored body reaches the bucket once, byte-exact, with its
//! checksum, through outages and `kill -9`s of the replicator, without
//! slowing intake; `dlsrv verify` names damage on either side; retention
//! removes only verified bodies; a lost disk is restored from the bucket;
//! the Parquet export lands in the bucket and reads back.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{TimeZone, Utc};
use common::garage::Garage;
use common::{Conn, Daemon, dlsrv_command, figure, message, post_request};
use sha2::{Digest, Sha256};

/// A test's directory: the configuration file, the archive, the state.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Site {
    fn new(garage: &Garage, extra_replica: &str, extra_top: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("dlsrv.toml");
        let replica = garage.replica_toml("net-a", dir.path(), extra_replica);
        std::fs::write(
            &config,
            format!(
                "station_access = \"any\"\ndata_dir = \"{}\"\nstate_dir = \"{}\"\n\
                 min_free_bytes = 67108864\nmin_free_inodes = 1000\n{extra_top}\n{replica}",
                dir.path().join("data").display(),
                dir.path().join("state").display(),
            ),
        )
        .expect("config");
        Site { dir, config }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn serve(&self) -> Daemon {
        self.serve_as("a")
    }

    /// The service as instance `name` (another name for a second start).
    fn serve_as(&self, name: &str) -> Daemon {
        let config = self.config.to_string_lossy().into_owned();
        Daemon::start(self.dir.path(), name, &[("DLSRV_CONFIG", &config)])
    }

    /// `dlsrv <args>` with this site's configuration: (exit code, stdout, stderr).
    fn dlsrv(&self, args: &[&str]) -> (i32, String, String) {
        let out = dlsrv_command()
            .args(args)
            .env("DLSRV_CONFIG", &self.config)
            .output()
            .expect("run dlsrv");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn replicator(&self) -> Replicator {
        Replicator::start(&self.config)
    }

    fn catalog(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.state().join("catalog.sqlite3")).expect("catalog")
    }

    /// (bodies, replicated, refused) by the catalog.
    fn counts(&self) -> (i64, i64, i64) {
        self.catalog()
            .query_row(
                "SELECT count(*), count(replicated_utc), count(replica_error) FROM transmissions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or((0, 0, 0))
    }

    /// Waits until every catalog row is replicated or refused.
    fn wait_replicated(&self, expected: i64, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let (n, done, refused) = self.counts();
            if n == expected && done + refused == n {
                return;
            }
            assert!(
                Instant::now() < until,
                "not replicated in time: {n} rows of {expected}, {done} replicated, {refused} refused"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every archived body by its path relative to data_dir.
    fn bodies(&self) -> BTreeMap<String, Vec<u8>> {
        common::files_under(&self.data())
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .map(|p| {
                let rel = p
                    .strip_prefix(self.data())
                    .expect("under data")
                    .to_string_lossy()
                    .into_owned();
                (rel, std::fs::read(&p).expect("read"))
            })
            .collect()
    }
}

/// `dlsrv replicate` as its unit runs it, its log collected live.
struct Replicator {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Replicator {
    fn start(config: &Path) -> Replicator {
        use std::io::BufRead;
        // As its unit runs it: Nice=10 (see deploy/systemd/dlsrv-replica.service).
        let dlsrv = dlsrv_command().get_program().to_owned();
        let mut child = Command::new("nice");
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DLSRV_")) {
            child.env_remove(k);
        }
        let mut child = child
            .args(["-n", "10"])
            .arg(dlsrv)
            .arg("replicate")
            .env("DLSRV_CONFIG", config)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dlsrv replicate");
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Replicator { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }

    /// SIGTERM, then its exit; returns the log.
    fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log();
        assert!(status.success(), "replicator exit {status:?}\n{log}");
        log
    }

    /// Waits for a line of its log.
    fn wait_for(&self, needle: &str, within: Duration) {
        let until = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < until,
                "{needle:?} not in the replicator's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b64_sha(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// Every local body is in the bucket exactly once, byte-exact, with its
/// checksum; nothing else is there.
fn assert_bucket_is_the_archive(garage: &Garage, site: &Site) {
    let local = site.bodies();
    let keys = garage.keys("archive");
    let mut seen = BTreeMap::new();
    for (key, _) in &keys {
        let rel = key.strip_prefix("net-a/").expect("under the prefix");
        *seen.entry(rel.to_owned()).or_insert(0) += 1;
    }
    assert_eq!(keys.len(), local.len(), "one object per body");
    for (rel, body) in &local {
        assert_eq!(seen.get(rel), Some(&1), "{rel} once in the bucket");
        let (object, checksum) = garage.get("archive", &format!("net-a/{rel}"));
        assert!(object == *body, "{rel}: the object's bytes are the body's");
        assert_eq!(checksum.as_deref(), Some(b64_sha(body).as_str()), "{rel}");
    }
}

/// Posts `n` distinct data messages over one connection; returns each
/// request's latency.
async fn post_bodies(socket: &Path, from: usize, n: usize) -> Vec<Duration> {
    let mut conn = Conn::open(socket).await;
    let base = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .expect("time");
    let mut took = Vec::with_capacity(n);
    for i in from..from + n {
        let station = format!("R{:03}", i % 40);
        let body = message(
            &station,
            base + chrono::Duration::minutes(i as i64),
            i % 5 == 0,
        );
        let target = format!("/ott/?stationid={station}&action=senddata");
        let started = Instant::now();
        conn.send(&post_request(&target, "HTTP/1.1", "", &body))
            .await;
        let reply = conn.reply().await;
        took.push(started.elapsed());
        assert_eq!(reply.status, 200, "body {i}: {}", reply.text());
    }
    took
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn post(socket: &Path, from: usize, n: usize) -> Vec<Duration> {
    runtime().block_on(post_bodies(socket, from, n))
}

fn scrape(socket: &Path) -> String {
    runtime().block_on(get(socket, "/metrics"))
}

fn p99(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[(d.len() * 99 / 100).min(d.len() - 1)]
}

async fn get(socket: &Path, target: &str) -> String {
    let mut conn = Conn::open(socket).await;
    conn.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    conn.reply().await.text()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}

#[test]
fn two_thousand_bodies_reach_the_bucket_once_through_an_outage_without_slowing_intake() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    let daemon = site.serve();
    // Four phases of 500 bodies: without a replicator (the baseline); with
    // it, copying as bodies come; with the store gone; with the store back
    // (and the backlog going up).
    let alone = post(&daemon.socket, 0, 500);
    let replicator = site.replicator();
    let copying = post(&daemon.socket, 500, 500);
    garage.stop();
    let mut down = post(&daemon.socket, 1000, 250);
    replicator.wait_for("replica unreachable", Duration::from_secs(20));
    down.extend(post(&daemon.socket, 1250, 250));
    let during = scrape(&daemon.socket);
    assert_eq!(metric(&during, "dlsrv_replica_outage"), 1.0, "{during}");
    assert!(metric(&during, "dlsrv_replica_pending_bodies") >= 250.0);
    assert!(metric(&during, "dlsrv_replica_lag_seconds") > 0.0);
    let (code, status, _) = site.dlsrv(&["status"]);
    assert_eq!(code, 0);
    assert!(
        status.contains("replica ") && status.contains("bodies waiting"),
        "{status}"
    );
    garage.restart();
    let back = post(&daemon.socket, 1500, 500);
    site.wait_replicated(2000, Duration::from_secs(120));
    let after = scrape(&daemon.socket);
    assert_eq!(metric(&after, "dlsrv_replica_pending_bodies"), 0.0);
    assert_eq!(metric(&after, "dlsrv_replica_lag_seconds"), 0.0);
    assert_eq!(metric(&after, "dlsrv_replica_outage"), 0.0);
    assert!(
        metric(&after, "dlsrv_replica_errors_total{kind=\"unreachable\"}") >= 1.0,
        "{after}"
    );
    let log = replicator.stop();
    assert_eq!(
        log.matches("replica unreachable").count(),
        1,
        "one line per outage:\n{log}"
    );
    assert_eq!(log.matches("replica reachable again").count(), 1, "{log}");
    assert_bucket_is_the_archive(&garage, &site);
    assert_eq!(site.bodies().len(), 2000);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a, c, d, b) = (p99(alone), p99(copying), p99(down), p99(back));
    figure(&format!(
        "replica: 2000 bodies, p99 of the 200: {:.1} ms without the replicator, {:.1} ms while it copies, \
         {:.1} ms with the store down, {:.1} ms with the store back; every body in the bucket once, byte-exact",
        ms(a),
        ms(c),
        ms(d),
        ms(b)
    ));
    // Intake never waits for the replica (another process, never on the
    // request's path): with the store down the replicator idles and p99 is
    // the baseline's; while it copies it shares the two cores with the
    // store, which the bound allows for.
    let noise = Duration::from_millis(10);
    assert!(
        d <= a * 2 + noise,
        "store down: p99 {d:?} against {a:?} without"
    );
    assert!(
        c <= a * 3 + noise * 3,
        "copying: p99 {c:?} against {a:?} without"
    );
    assert!(
        b <= a * 3 + noise * 3,
        "store back: p99 {b:?} against {a:?} without"
    );
}

#[test]
fn kill_9_of_the_replicator_three_times_loses_nothing_and_uploads_nothing_twice() {
    let Some(garage) = Garage::start() else {
        return;
    };
    // Slow enough (a bandwidth cap) for the kills to land mid-run.
    let site = Site::new(&garage, "", "replica_max_bytes_per_sec = 40000");
    let daemon = site.serve();
    post(&daemon.socket, 0, 600);
    daemon.sigterm();
    let (ok, _) = daemon.wait();
    assert!(ok);
    let mut killed_at = Vec::new();
    for _ in 0..3 {
        // Killed in the middle of a batch: some objects up, not yet recorded.
        let before = site.counts().1;
        let replicator = site.replicator();
        let until = Instant::now() + Duration::from_secs(60);
        while site.counts().1 == before {
            assert!(Instant::now() < until, "no progress: {:?}", site.counts());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        replicator.kill9();
        killed_at.push((site.counts().1, garage.keys("archive").len() as i64));
    }
    let replicator = site.replicator();
    site.wait_replicated(600, Duration::from_secs(120));
    replicator.stop();
    assert!(
        killed_at.windows(2).all(|w| w[0].0 < w[1].0) && killed_at[2].0 < 600,
        "killed mid-run: {killed_at:?}"
    );
    // (rows recorded, objects up) at each kill: objects ahead of their
    // rows are the case that matters, found by HEAD at the next start.
    assert!(
        killed_at.iter().any(|(rows, objects)| objects > rows),
        "a kill between an upload and its row: {killed_at:?}"
    );
    assert_bucket_is_the_archive(&garage, &site);
    figure(&format!(
        "replica: 600 bodies, replicator killed with -9 three times at (rows recorded, objects up) {killed_at:?}: all in the bucket once, byte-exact"
    ));
}

/// A 20 MiB firmware (multipart), a body whose key already holds other
/// bytes (a conflict), then damage on both sides after replication.
#[test]
fn verify_names_an_overwritten_object_and_a_flipped_bit_and_a_conflict_stays_local() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    let daemon = site.serve();
    post(&daemon.socket, 0, 20);
    let firmware: Vec<u8> = (0..20 << 20).map(|i: usize| (i % 253) as u8).collect();
    let status = runtime().block_on(async {
        let mut conn = Conn::open(&daemon.socket).await;
        conn.send(&post_request(
            "/ott/?stationid=R001&action=sendfirmware",
            "HTTP/1.1",
            "",
            &firmware,
        ))
        .await;
        conn.reply().await.status
    });
    assert_eq!(status, 200);
    daemon.sigterm();
    assert!(daemon.wait().0);
    let bodies = site.bodies();
    let mut data: Vec<&String> = bodies
        .keys()
        .filter(|k| k.starts_with("senddata/"))
        .collect();
    data.sort();
    // Someone else's bytes at a body's key before the replicator runs.
    let taken = data[0].clone();
    garage.overwrite("archive", &format!("net-a/{taken}"), b"not the body");
    let replicator = site.replicator();
    site.wait_replicated(21, Duration::from_secs(60));
    let log = replicator.stop();
    assert!(
        log.contains("body NOT replicated") && log.contains(&taken),
        "{log}"
    );
    assert_eq!(
        site.counts(),
        (21, 20, 1),
        "the conflict is refused, the rest replicated"
    );
    let (object, _) = garage.get("archive", &format!("net-a/{taken}"));
    assert_eq!(object, b"not the body", "the object is never \"fixed\"");
    assert!(site.data().join(&taken).exists(), "the body stays local");
    let fw = bodies
        .keys()
        .find(|k| k.starts_with("sendfirmware/"))
        .expect("firmware");
    let (object, checksum) = garage.get("archive", &format!("net-a/{fw}"));
    assert!(object == firmware, "the firmware, byte-exact");
    assert!(
        checksum.is_some_and(|c| c.ends_with("-3")),
        "uploaded in parts"
    );
    let (code, out, err) = site.dlsrv(&["verify", "--replica"]);
    assert_eq!(code, 1, "the conflict is reported: {out}{err}");
    assert!(out.contains(&taken) && out.lines().count() == 1, "{out}");

    // Damage after replication: an object overwritten, a bit flipped.
    let (overwritten, flipped) = (data[1].clone(), data[2].clone());
    garage.overwrite("archive", &format!("net-a/{overwritten}"), b"other bytes");
    let path = site.data().join(&flipped);
    let mut body = std::fs::read(&path).expect("read");
    body[40] ^= 0x01;
    std::fs::write(&path, &body).expect("flip");
    let (code, out, err) = site.dlsrv(&["verify", "--replica"]);
    assert_eq!(code, 1, "{out}{err}");
    for rel in [&taken, &overwritten, &flipped] {
        assert!(out.contains(rel.as_str()), "{rel} named in\n{out}");
    }
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        err.contains("22 bodies checked") || err.contains("21 bodies checked"),
        "{err}"
    );
    // Local only: the flipped bit.
    let (code, out, _) = site.dlsrv(&["verify"]);
    assert_eq!((code, out.lines().count()), (1, 1), "{out}");
    assert!(out.contains(flipped.as_str()) && out.contains("changed on disk"));
    // Nothing is repaired: the same again.
    assert_eq!(site.dlsrv(&["verify", "--replica"]).0, 1);
    // The timer's run: sampled, recorded, shown in /metrics.
    std::fs::write(&path, &bodies[&flipped]).expect("unflip");
    let (code, _, err) = site.dlsrv(&["verify", "--sample", "100", "--replica", "--record"]);
    assert_eq!(code, 1, "{err}");
    let daemon = site.serve_as("b");
    let text = scrape(&daemon.socket);
    assert_eq!(
        metric(&text, "dlsrv_verify_mismatched_bodies"),
        2.0,
        "{text}"
    );
    assert_eq!(metric(&text, "dlsrv_verify_checked_bodies"), 21.0);
    assert_eq!(metric(&text, "dlsrv_replica_refused_bodies"), 1.0);
    let (_, _, err) = site.dlsrv(&["verify", "--sample", "10"]);
    assert!(err.contains("bodies checked"), "{err}");
}

/// Writes `n` bodies of station `station` received `days_ago` days ago.
fn old_bodies(data: &Path, station: &str, days_ago: i64, n: i64) {
    let base = Utc::now() - chrono::Duration::days(days_ago);
    for k in 0..n {
        let t = base + chrono::Duration::minutes(k * 15);
        let path = data.join(dlsrv::layout::archive_path("senddata", station, t));
        std::fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
        std::fs::write(&path, message(station, t, k == 0)).expect("write");
    }
}

fn export_csv(site: &Site) -> String {
    let (code, out, err) = site.dlsrv(&["export", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn retention_removes_only_verified_bodies_and_the_export_stays_the_same() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(
        &garage,
        "keep_local_days = 1",
        "[retention_by_station]\nKEEP = 0",
    );
    for (station, days) in [("OLD1", 5), ("OLD2", 3), ("KEEP", 4), ("NEW", 0)] {
        old_bodies(&site.data(), station, days, 8);
    }
    assert_eq!(site.dlsrv(&["reindex"]).0, 0);
    let before = export_csv(&site);
    let (_, status_before, _) = site.dlsrv(&["status", "--format", "csv"]);
    // Replicate everything (retention at this start finds nothing verified).
    let replicator = site.replicator();
    site.wait_replicated(32, Duration::from_secs(60));
    let log = replicator.stop();
    assert!(log.contains("16 due but not verified"), "{log}");
    assert_eq!(site.bodies().len(), 32, "nothing left the disk unverified");
    // One old body's object damaged: it must stay.
    let damaged = site
        .bodies()
        .into_keys()
        .find(|k| k.contains("OLD2_"))
        .expect("OLD2");
    garage.overwrite("archive", &format!("net-a/{damaged}"), b"damaged");
    let (_, plan, _) = site.dlsrv(&["check-config"]);
    let (_, _, plan_err) = site.dlsrv(&["check-config"]);
    assert!(plan.is_empty() || plan.contains("[replica]"), "{plan}");
    assert!(plan_err.contains("would remove 16 bodies"), "{plan_err}");
    let replicator = site.replicator();
    replicator.wait_for("retention: removed", Duration::from_secs(30));
    let log = replicator.stop();
    assert!(log.contains("removed 15 bodies"), "{log}");
    let left: Vec<String> = site.bodies().into_keys().collect();
    assert_eq!(left.len(), 17, "{left:?}");
    assert!(left.contains(&damaged), "the unverified body stays");
    assert!(
        left.iter().filter(|k| k.contains("KEEP_")).count() == 8,
        "kept forever"
    );
    assert!(
        left.iter().filter(|k| k.contains("NEW_")).count() == 8,
        "recent"
    );
    let removed: i64 = site
        .catalog()
        .query_row(
            "SELECT count(*) FROM transmissions WHERE removed_utc IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(removed, 15, "the catalog remembers where each body lives");
    assert_eq!(
        export_csv(&site),
        before,
        "the export reads the rest from the replica"
    );
    let (_, status_after, _) = site.dlsrv(&["status", "--format", "csv"]);
    assert_eq!(
        strip_age(&status_after),
        strip_age(&status_before),
        "the status views are the same"
    );
    // A plain reindex keeps the rows of bodies in the replica only; with
    // --from-replica a catalog rebuilt from nothing gets them back.
    assert_eq!(site.dlsrv(&["reindex"]).0, 0);
    assert_eq!(export_csv(&site), before);
    std::fs::remove_file(site.state().join("catalog.sqlite3")).expect("rm catalog");
    let _ = std::fs::remove_file(site.state().join("catalog.sqlite3-wal"));
    let _ = std::fs::remove_file(site.state().join("catalog.sqlite3-shm"));
    let (code, _, err) = site.dlsrv(&["reindex", "--from-replica"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("15 bodies that only the replica holds"),
        "{err}"
    );
    assert_eq!(export_csv(&site), before);
}

/// The `status --format csv` rows without the columns that move with the clock.
fn strip_age(csv: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.contains("age") && !h.contains("late"))
        .map(|(i, _)| i)
        .collect();
    csv.lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            keep.iter()
                .map(|&i| cells.get(i).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn retention_days_without_a_replica_deletes_old_bodies_but_never_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dlsrv.toml");
    std::fs::write(
        &config,
        format!(
            "station_access = \"any\"\ndata_dir = \"{}\"\nstate_dir = \"{}\"\nretention_days = 2\n\
             [retention_by_station]\nKEEP = 0\n",
            dir.path().join("data").display(),
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    for (station, days) in [("OLD", 5), ("KEEP", 5), ("NEW", 1)] {
        old_bodies(&data, station, days, 4);
    }
    let run = |args: &[&str]| {
        let out = dlsrv_command()
            .args(args)
            .env("DLSRV_CONFIG", &config)
            .output()
            .expect("dlsrv");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run(&["reindex"]).0, Some(0));
    let (code, err) = run(&["check-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("would remove 4 bodies"), "{err}");
    assert_eq!(
        common::files_under(&data).len(),
        12,
        "check-config removes nothing"
    );
    let state_before = common::files_under(&dir.path().join("state"));
    let replicator = Replicator::start(&config);
    replicator.wait_for("retention: removed 4 bodies", Duration::from_secs(30));
    replicator.stop();
    let left = common::files_under(&data);
    assert_eq!(left.len(), 8);
    assert!(left.iter().all(|p| !p.to_string_lossy().contains("OLD_")));
    let (_, status) = run(&["status"]);
    let out = dlsrv_command()
        .args(["status", "--format", "csv"])
        .env("DLSRV_CONFIG", &config)
        .output()
        .expect("status");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.contains("OLD"),
        "the station stays known: {csv}{status}"
    );
    let state_after = common::files_under(&dir.path().join("state"));
    for f in &state_before {
        assert!(
            state_after.contains(f),
            "{} still in state_dir",
            f.display()
        );
    }
}

#[test]
fn disaster_recovery_restores_every_body_byte_exact_and_the_same_status() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    let daemon = site.serve();
    post(&daemon.socket, 0, 300);
    daemon.sigterm();
    assert!(daemon.wait().0);
    let replicator = site.replicator();
    site.wait_replicated(300, Duration::from_secs(60));
    replicator.stop();
    let before = site.bodies();
    let (_, status_before, _) = site.dlsrv(&["status", "--format", "csv"]);
    let export_before = export_csv(&site);
    // The disk is lost.
    std::fs::remove_dir_all(site.data()).expect("rm data");
    std::fs::remove_dir_all(site.state()).expect("rm state");
    // One station first, then the rest.
    let (code, _, err) = site.dlsrv(&["restore", "--from-replica", "--station", "R007"]);
    assert_eq!(code, 0, "{err}");
    let one = site.bodies();
    assert!(
        !one.is_empty() && one.keys().all(|k| k.contains("/R007_")),
        "{:?}",
        one.keys()
    );
    let (code, _, err) = site.dlsrv(&["restore", "--from-replica"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("{} already on the disk", one.len())),
        "{err}"
    );
    let after = site.bodies();
    assert_eq!(after.len(), before.len());
    assert!(after == before, "every body byte-exact");
    let (code, _, err) = site.dlsrv(&["reindex"]);
    assert_eq!(code, 0, "{err}");
    let (_, status_after, _) = site.dlsrv(&["status", "--format", "csv"]);
    assert_eq!(strip_age(&status_after), strip_age(&status_before));
    assert_eq!(export_csv(&site), export_before);
    // The new catalog's rows are found in the replica: nothing goes up twice.
    let replicator = site.replicator();
    site.wait_replicated(300, Duration::from_secs(60));
    replicator.stop();
    assert_eq!(garage.keys("archive").len(), 300);
}

#[test]
fn the_parquet_dataset_in_the_bucket_reads_back_with_the_same_sums() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    for (station, days) in [("P1", 3), ("P2", 2), ("P3", 1)] {
        old_bodies(&site.data(), station, days, 12);
    }
    let (code, _, err) = site.dlsrv(&[
        "export",
        "--format",
        "parquet",
        "--output",
        "s3://lake/values",
        "--partition",
        "date",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("uploaded to s3://lake/values"), "{err}");
    let keys = garage.keys("lake");
    assert!(keys.iter().any(|(k, _)| k == "values/_SUCCESS"), "{keys:?}");
    assert!(
        keys.iter().filter(|(k, _)| k.contains("/date=")).count() >= 3,
        "{keys:?}"
    );
    // Again into the same prefix: refused, nothing changed.
    let (code, _, err) = site.dlsrv(&[
        "export",
        "--format",
        "parquet",
        "--output",
        "s3://lake/values",
        "--partition",
        "date",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("holds objects"), "{err}");
    let csv = export_csv(&site);
    let (mut csv_sum, mut csv_rows) = (0.0, 0);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "value")
        .expect("value column");
    for line in lines {
        if let Some(v) = line.split(',').nth(col).and_then(|v| v.parse::<f64>().ok()) {
            csv_sum += v;
        }
        csv_rows += 1;
    }
    let script = format!(
        "import pyarrow.fs as fs, pyarrow.dataset as ds, pyarrow.compute as pc\n\
         s3 = fs.S3FileSystem(access_key='{}', secret_key='{}', endpoint_override='127.0.0.1:{}', scheme='http', region='garage')\n\
         t = ds.dataset('lake/values', filesystem=s3, format='parquet', partitioning='hive', exclude_invalid_files=True).to_table()\n\
         print(t.num_rows, pc.sum(t['value']).as_py(), len(set(t['date'].to_pylist())))\n",
        garage.key_id, garage.secret, garage.s3_port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let rows: usize = parts.next().and_then(|v| v.parse().ok()).expect("rows");
    let sum: f64 = parts.next().and_then(|v| v.parse().ok()).expect("sum");
    let days: usize = parts.next().and_then(|v| v.parse().ok()).expect("days");
    assert_eq!(rows, csv_rows, "{text}");
    assert!((sum - csv_sum).abs() < 1e-6, "{sum} against {csv_sum}");
    assert!(days >= 3, "{text}");
}
