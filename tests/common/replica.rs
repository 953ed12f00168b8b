//! What the replica's tests share: a site (configuration, archive, state)
//! with a `[replica]` in a Garage, `dlsrv replicate` as a process, loads of
//! distinct bodies, and checks of the bucket against the archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::garage::Garage;
use super::{Conn, Daemon, dlsrv_command, message, post_request};

/// A test's directory: the configuration file, the archive, the state.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Site {
    pub fn new(garage: &Garage, extra_replica: &str, extra_top: &str) -> Site {
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

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn serve(&self) -> Daemon {
        self.serve_as("a")
    }

    /// The service as instance `name` (another name for a second start).
    pub fn serve_as(&self, name: &str) -> Daemon {
        let config = self.config.to_string_lossy().into_owned();
        Daemon::start(self.dir.path(), name, &[("DLSRV_CONFIG", &config)])
    }

    /// `dlsrv <args>` with this site's configuration: (exit code, stdout, stderr).
    pub fn dlsrv(&self, args: &[&str]) -> (i32, String, String) {
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

    /// `n` distinct bodies stored by the service, which is stopped then.
    pub fn stored(&self, n: usize) {
        let daemon = self.serve();
        post(&daemon.socket, 0, n);
        daemon.sigterm();
        let (ok, log) = daemon.wait();
        assert!(ok, "{log}");
    }

    pub fn replicator(&self) -> Replicator {
        Replicator::start(&self.config)
    }

    pub fn catalog(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.state().join("catalog.sqlite3")).expect("catalog")
    }

    /// (bodies, replicated, refused) by the catalog.
    pub fn counts(&self) -> (i64, i64, i64) {
        self.catalog()
            .query_row(
                "SELECT count(*), count(replicated_utc), count(replica_error) FROM transmissions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or((0, 0, 0))
    }

    /// Waits until every catalog row is replicated or refused.
    pub fn wait_replicated(&self, expected: i64, within: Duration) {
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

    /// Waits until `expected` rows of this host's own (not pulled from a
    /// shared catalog) are replicated.
    pub fn wait_replicated_own(&self, expected: i64, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let done: i64 = self
                .catalog()
                .query_row(
                    "SELECT count(replicated_utc) FROM transmissions WHERE host IS NULL",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if done == expected {
                return;
            }
            assert!(Instant::now() < until, "{done} of {expected} replicated");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every archived body by its path relative to data_dir.
    pub fn bodies(&self) -> BTreeMap<String, Vec<u8>> {
        super::files_under(&self.data())
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
pub struct Replicator {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Replicator {
    pub fn start(config: &Path) -> Replicator {
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
        let (log, _) = super::collect_log(child.stderr.take().expect("stderr"));
        Replicator { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }

    /// SIGTERM, then its exit; returns the log.
    pub fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log();
        assert!(status.success(), "replicator exit {status:?}\n{log}");
        log
    }

    /// Waits for a line of its log.
    pub fn wait_for(&self, needle: &str, within: Duration) {
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

pub fn b64_sha(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// Every local body is in the bucket exactly once, byte-exact, with its
/// checksum; nothing else is there.
pub fn assert_bucket_is_the_archive(garage: &Garage, site: &Site) {
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
pub async fn post_bodies(socket: &Path, from: usize, n: usize) -> Vec<Duration> {
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

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn post(socket: &Path, from: usize, n: usize) -> Vec<Duration> {
    runtime().block_on(post_bodies(socket, from, n))
}

pub fn scrape(socket: &Path) -> String {
    runtime().block_on(get(socket, "/metrics"))
}

pub fn p99(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[(d.len() * 99 / 100).min(d.len() - 1)]
}

pub async fn get(socket: &Path, target: &str) -> String {
    let mut conn = Conn::open(socket).await;
    conn.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    conn.reply().await.text()
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{text}"))
}
