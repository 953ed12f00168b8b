//! Crash consistency under `kill -9`: the real binary is killed five times
//! in the middle of a load of concurrent uploads into one data directory.
//! Every body that was answered 200 must be in the file its Response names,
//! byte for byte; no file in the archive may be partial (each equals a body
//! that was sent, acknowledged or not); and the next start with a short
//! `stale_temp_age_secs` removes the temp files the kills left behind.
//! Both durability modes (`fsync`, `group`) are run. A process kill keeps
//! the page cache, so this proves the order of the steps (temp, rename,
//! answer), not that fsync reached the disk: that needs a power cut.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{archive_files, dlsrv_command, doc_of_len, files_under};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const STATION: &str = "0000452891";
const SENDDATA: &str = "/ott/?stationid=0000452891&action=senddata";
const ROUNDS: usize = 5;
const CLIENTS: usize = 8;
const BODY_LEN: usize = 44 * 1024;

/// One `dlsrv serve` process on `dir/<name>.sock`, archive `dir/data`,
/// started as systemd starts it (waits for `READY=1`), its log in
/// `dir/<name>.log`. Killed if still running when dropped.
struct Instance {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    notify: UnixDatagram,
}

impl Instance {
    fn start(dir: &Path, name: &str, env: &[(&str, &str)]) -> Instance {
        let notify_path = dir.join(format!("{name}.notify"));
        let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let socket = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut cmd = dlsrv_command();
        cmd.arg("serve")
            .env("DLSRV_SOCKET", &socket)
            .env("DLSRV_DATA_DIR", dir.join("data"))
            .env("DLSRV_STATE_DIR", dir.join("state"))
            .env("DLSRV_SHUTDOWN_GRACE_SECS", "5")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let instance = Instance {
            child: cmd.spawn().expect("spawn dlsrv"),
            socket,
            log,
            notify,
        };
        // READY=1 comes first: the start-up work's STATUS= texts follow it.
        let ready = instance.next_notification();
        assert_eq!(ready, "READY=1", "log:\n{}", instance.log_text());
        instance
    }

    /// The next notification, `STATUS=` texts included.
    fn next_notification(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self.notify.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification within 30 s ({e}); log:\n{}",
                self.log_text()
            )
        });
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits for the `STATUS=` that ends the start-up work (after READY).
    fn wait_start_up_work(&self) -> String {
        loop {
            let status = self.next_notification();
            if status.contains("start-up work done") {
                return status;
            }
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// `kill -9`, then reaps the process.
    fn sigkill(mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        let status = self.child.wait().expect("wait");
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "log:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid 44 KB data message whose first bytes say who sent it.
fn body(round: usize, client: usize, n: usize) -> Vec<u8> {
    let mut body = doc_of_len(BODY_LEN, b'.');
    let tag = format!(" round {round} client {client} request {n} ");
    let start = "<StationDataList><!--".len();
    body[start..start + tag.len()].copy_from_slice(tag.as_bytes());
    body
}

/// How one request ended, from the client's side.
enum Outcome {
    /// A complete HTTP answer: status and body.
    Answer(u16, Vec<u8>),
    /// No connection at all: the service was already gone.
    Refused,
    /// Connected, then reset or closed before a whole answer: in flight
    /// when the process died.
    Cut,
}

async fn post(socket: &Path, body: &[u8]) -> Outcome {
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return Outcome::Refused;
    };
    let mut request = format!(
        "POST {SENDDATA} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let exchange = async {
        stream.write_all(&request).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        parse(&answer)
    };
    match tokio::time::timeout(Duration::from_secs(30), exchange).await {
        Ok(Some((status, body))) => Outcome::Answer(status, body),
        Ok(None) => Outcome::Cut,
        Err(_) => panic!("no answer and no close within 30 s"),
    }
}

/// Status and body of a complete response with a Content-Length.
fn parse(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = common::find(answer, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())?;
    let body = answer.get(end + 4..end + 4 + length)?;
    Some((status, body.to_vec()))
}

/// The file a Response names (its `responseDateTime` is the file's time).
fn named_file(data: &Path, response: &[u8]) -> PathBuf {
    let text = String::from_utf8_lossy(response);
    let start = text
        .find("responseDateTime=\"")
        .unwrap_or_else(|| panic!("no responseDateTime in {text:?}"))
        + "responseDateTime=\"".len();
    data.join(common::archived_path(
        "senddata",
        STATION,
        &text[start..start + 26],
    ))
}

fn is_temp(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".tmp")
}

/// What one round of load produced.
#[derive(Default)]
struct Load {
    /// Every body sent, acknowledged or not.
    sent: Vec<Vec<u8>>,
    /// Bodies answered 200, with the file their Response names.
    acked: Vec<(Vec<u8>, PathBuf)>,
    /// Requests cut by the kill (connected, no whole answer).
    cut: usize,
    /// Answers other than 200: none are expected.
    other: Vec<(u16, String)>,
}

/// Runs `CLIENTS` concurrent uploaders against `instance` and kills it with
/// SIGKILL `delay` after the first 200 of the round, requests in flight.
fn load_and_kill(instance: Instance, data: &Path, round: usize, delay: Duration) -> Load {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = Arc::new(Mutex::new(Load::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (socket, data) = (instance.socket.clone(), data.to_path_buf());
            let (load, acked, killed) = (load.clone(), acked.clone(), killed.clone());
            clients.push(tokio::spawn(async move {
                for n in 0.. {
                    let body = body(round, client, n);
                    let outcome = post(&socket, &body).await;
                    let mut load = load.lock().expect("lock");
                    load.sent.push(body.clone());
                    match outcome {
                        Outcome::Answer(200, response) => {
                            load.acked.push((body, named_file(&data, &response)));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Outcome::Answer(status, response) => load
                            .other
                            .push((status, String::from_utf8_lossy(&response).into_owned())),
                        Outcome::Cut => load.cut += 1,
                        Outcome::Refused => break,
                    }
                    if killed.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }));
        }
        let started = Instant::now();
        while acked.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no 200 within 20 s; log:\n{}",
                instance.log_text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        instance.sigkill();
        for client in clients {
            client.await.expect("client task");
        }
    });
    Arc::try_unwrap(load)
        .ok()
        .expect("clients done")
        .into_inner()
        .expect("lock")
}

#[test]
fn kill_9_under_load_never_loses_an_acknowledged_body_nor_leaves_a_partial_file() {
    kill_9_rounds("fsync", &[]);
}

#[test]
fn the_same_with_group_commit() {
    kill_9_rounds("group", &[("DLSRV_DURABILITY", "group")]);
}

/// `ROUNDS` starts, loads and kills in one data directory, then the checks.
fn kill_9_rounds(mode: &str, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut total = Load::default();
    for round in 0..ROUNDS {
        let instance = Instance::start(dir.path(), &format!("round{round}"), env);
        // 100 to 300 ms of load after the first 200, different each round.
        let delay = Duration::from_millis(100 + 50 * round as u64);
        let load = load_and_kill(instance, &data, round, delay);
        println!(
            "{mode} round {round}: sent {}, acknowledged {}, cut by the kill {}",
            load.sent.len(),
            load.acked.len(),
            load.cut
        );
        total.sent.extend(load.sent);
        total.acked.extend(load.acked);
        total.cut += load.cut;
        total.other.extend(load.other);
    }
    assert!(
        total.other.is_empty(),
        "answers other than 200: {:?}",
        total.other
    );

    // The temp files the kills left: made older than the 1 s the last start
    // is told to remove, by moving their mtime back.
    let temps_left: Vec<PathBuf> = files_under(&data)
        .into_iter()
        .filter(|f| is_temp(f))
        .collect();
    let past = SystemTime::now() - Duration::from_secs(60);
    for temp in &temps_left {
        File::options()
            .write(true)
            .open(temp)
            .and_then(|f| f.set_modified(past))
            .expect("age a temp file");
    }
    let last = Instance::start(dir.path(), "last", &[("DLSRV_STALE_TEMP_AGE_SECS", "1")]);
    let status = last.wait_start_up_work();
    let removed = last
        .log_text()
        .lines()
        .filter(|l| l.contains("removed a stale temp file"))
        .count();
    last.stop();

    // Every acknowledged body is in the file its Response names, whole.
    let mut found = 0;
    for (body, path) in &total.acked {
        let stored = std::fs::read(path)
            .unwrap_or_else(|e| panic!("acknowledged {} is missing: {e}", path.display()));
        assert!(
            stored == *body,
            "{} differs from what was sent",
            path.display()
        );
        found += 1;
    }
    // Every file of the archive is a whole body that was sent.
    let acked: HashMap<&[u8], &Path> = total
        .acked
        .iter()
        .map(|(b, p)| (b.as_slice(), p.as_path()))
        .collect();
    let sent: std::collections::HashSet<&[u8]> = total.sent.iter().map(Vec::as_slice).collect();
    let (mut extra, mut partial, mut temps) = (0, Vec::new(), Vec::new());
    for file in archive_files(&data) {
        assert!(
            file.starts_with(data.join("senddata")),
            "only senddata/ is written: {}",
            file.display()
        );
        if is_temp(&file) {
            temps.push(file);
            continue;
        }
        let content = std::fs::read(&file).expect("read");
        match acked.get(content.as_slice()) {
            Some(path) => assert_eq!(*path, file, "an acknowledged body stored twice"),
            None if sent.contains(content.as_slice()) => extra += 1,
            None => partial.push(file),
        }
    }
    let state_temps = files_under(&data.with_file_name("state"))
        .into_iter()
        .filter(|f| is_temp(f))
        .count();
    println!(
        "crash ({mode}): {ROUNDS} kills, requests cut in flight {}, acknowledged {}, found {found}, \
         extra complete (stored but unacknowledged) {extra}, partial {}, \
         temp files left by the kills {}, removed at restart {removed}, remaining {} \
         (+{state_temps} in state_dir)",
        total.cut,
        total.acked.len(),
        partial.len(),
        temps_left.len(),
        temps.len()
    );
    assert!(partial.is_empty(), "partial files: {partial:?}");
    assert_eq!(found, total.acked.len());
    assert!(
        temps.is_empty(),
        "temp files after the last start: {temps:?}"
    );
    assert_eq!(
        state_temps, 0,
        "temp files in state_dir after the last start"
    );
    assert_eq!(
        removed,
        temps_left.len(),
        "the last start removed every temp file the kills left"
    );
    assert!(
        status.contains(&format!("{removed} stale temp file(s) removed")),
        "systemd is told: {status}"
    );
    assert!(!total.acked.is_empty(), "some requests were acknowledged");
    assert!(total.cut > 0, "at least one kill hit requests in flight");
}
