//! Test harness: the real service on a real Unix socket in a temporary
//! directory, and a raw HTTP/1.x client so tests control every byte sent.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod garage;
pub mod pg;
pub mod replica;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dlsrv::config::Config;
use dlsrv::listener::{self, SocketFile};
use dlsrv::state::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running service, bound before it is spawned; stopped via a channel.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data: PathBuf,
    pub state_dir: PathBuf,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    socket_file: Option<SocketFile>,
}

pub fn test_config(dir: &Path) -> Config {
    Config {
        socket: dir.join("s.sock"),
        data_dir: dir.join("data"),
        state_dir: dir.join("state"),
        // Exercised, but low enough for a small CI disk.
        min_free_bytes: 64 * 1024 * 1024,
        min_free_inodes: 1_000,
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestServer {
        config.validate().expect("valid test config");
        let state = Arc::new(AppState::new(config).expect("state"));
        let (listener, socket_file) = listener::bind(state.config()).expect("bind");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(dlsrv::server::run(
            listener,
            async move {
                let _ = rx.await;
            },
            state.clone(),
        ));
        TestServer {
            socket: state.config().socket.clone(),
            data: state.data_dir().to_path_buf(),
            state_dir: state.state_dir().to_path_buf(),
            dir,
            state,
            shutdown: Some(tx),
            task: Some(task),
            socket_file: Some(socket_file),
        }
    }

    /// Starts on an archive already in `dir` and waits for the start-up
    /// work (the catalog filled from the archive) to finish.
    pub async fn start_indexed(dir: tempfile::TempDir, config: Config) -> TestServer {
        let server = Self::start_in(dir, config).await;
        let work = server.state.start_up_work().expect("start-up work");
        tokio::task::spawn_blocking(move || work.join().expect("join"))
            .await
            .expect("join");
        server
    }

    /// Relays every TCP connection on a free loopback port to the socket
    /// (for a browser, or a Prometheus scraping `/metrics`): the port.
    pub async fn relay(&self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let socket = self.socket.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Ok(mut unix) = UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
            }
        });
        port
    }

    /// Signals shutdown and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        self.socket_file.take();
    }

    pub async fn connect(&self) -> Conn {
        Conn::open(&self.socket).await
    }

    /// POSTs `body` with a Content-Length on a fresh connection.
    pub async fn post(&self, target: &str, body: &[u8]) -> Reply {
        let mut head = format!(
            "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        head.extend_from_slice(body);
        self.raw(&head).await
    }

    pub async fn get(&self, target: &str) -> Reply {
        self.raw(
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
    }

    /// Sends raw bytes on a fresh connection and reads one response.
    pub async fn raw(&self, request: &[u8]) -> Reply {
        let mut conn = self.connect().await;
        conn.send(request).await;
        conn.reply().await
    }

    /// Every file below the data directory: the archived bodies, nothing else.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.data)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One client connection with a read buffer, for keep-alive and raw tests.
pub struct Conn {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(socket: &Path) -> Conn {
        Conn {
            stream: UnixStream::connect(socket).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one response (Content-Length, chunked-free, or until EOF).
    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(30), self.read_reply())
            .await
            .expect("reply within 30 s")
    }

    async fn read_reply(&mut self) -> Reply {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill().await == 0 {
                panic!(
                    "connection closed before a response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        // Interim (1xx) answers have no body.
        let length = if (100..200).contains(&status) {
            Some(0)
        } else {
            length
        };
        match length {
            Some(n) => {
                while self.buf.len() < n {
                    assert!(self.fill().await > 0, "body cut short");
                }
            }
            None => while self.fill().await > 0 {},
        }
        let n = length.unwrap_or(self.buf.len());
        let body = self.buf.drain(..n).collect();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// True once the server has closed the connection (reads EOF).
    pub async fn is_closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(self.stream.read(&mut chunk).await, Ok(0) | Err(_))
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `responseDateTime` of an OTT Response document.
    pub fn response_date_time(&self) -> String {
        let text = self.text();
        let start = text.find("responseDateTime=\"").expect("responseDateTime") + 18;
        text[start..start + 26].to_owned()
    }

    /// The archive path (relative to `data_dir`) this Response names: its
    /// `responseDateTime` is the time in the file's name.
    pub fn stored_path(&self, action: &str, station: &str) -> PathBuf {
        archived_path(action, station, &self.response_date_time())
    }
}

/// The archive path (relative to `data_dir`) of a body of `station` for
/// `action` answered with `response_date_time`, as [`dlsrv::layout`] builds it.
pub fn archived_path(action: &str, station: &str, response_date_time: &str) -> PathBuf {
    let t = dlsrv::layout::parse_time(response_date_time)
        .unwrap_or_else(|| panic!("responseDateTime {response_date_time:?}"));
    dlsrv::layout::archive_path(action, station, t)
}

/// The refused bodies kept under `state_dir` (without their `.reason` files).
pub fn rejected_bodies(state_dir: &Path) -> Vec<PathBuf> {
    files_under(&state_dir.join(dlsrv::layout::REJECTED))
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with(dlsrv::layout::REASON_SUFFIX))
        .collect()
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The files of the archive: everything below `data` (nothing else lives there).
pub fn archive_files(data: &Path) -> Vec<PathBuf> {
    files_under(data)
}

/// A valid (minimal) data message, made distinct by `tag`.
pub fn doc(tag: &str) -> Vec<u8> {
    format!("<StationDataList><!-- {tag} --></StationDataList>").into_bytes()
}

/// A valid data message of exactly `len` bytes (at least 40), filled with `fill`.
pub fn doc_of_len(len: usize, fill: u8) -> Vec<u8> {
    let (head, tail) = (&b"<StationDataList><!--"[..], &b"--></StationDataList>"[..]);
    let mut body = head.to_vec();
    body.resize(len - tail.len(), fill);
    body.extend_from_slice(tail);
    body
}

/// A raw POST request: the request line's version, extra header lines, body.
pub fn post_request(target: &str, version: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {target} {version}\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(files_under(&path)),
            Ok(_) => files.push(path),
            Err(_) => {}
        }
    }
    files.sort();
    files
}

/// A body with ISO-8859-1 bytes (0xB0 is a degree sign), NUL and 0xFF.
pub fn latin1_body() -> Vec<u8> {
    b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<StationDataList><StationData stationId=\"0000452891\"><ChannelData channelId=\"0020\" unit=\"\xb0C\"><Values><VT t=\"2020-10-22T01:00:00\">12.5</VT></Values></ChannelData></StationData></StationDataList>\n".to_vec()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// For a test that needs root: true when it may run. Without root it says
/// `SKIPPED` and is skipped, except in CI (`CI=true`, which runs as root):
/// there a skip would read as a pass, so it fails instead.
pub fn root_or_skip(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test} needs root ({why}) and CI=true: a skip must not pass in CI"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// The `dlsrv` binary with none of the test's own `DLSRV_*`, systemd or
/// journald variables leaking into it.
pub fn dlsrv_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dlsrv"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DLSRV_")
            || key.starts_with("LISTEN_")
            || key.starts_with("WATCHDOG_")
            || key == "NOTIFY_SOCKET"
            || key == "JOURNAL_STREAM"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The `dlsrv` binary started as systemd starts it: `NOTIFY_SOCKET` set, so
/// start-up waits for `READY=1` instead of sleeping. Its stderr is collected
/// live, so tests can read the log while it runs.
pub struct Daemon {
    child: std::process::Child,
    notify: std::os::unix::net::UnixDatagram,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub socket: PathBuf,
    pub data: PathBuf,
    pub state: PathBuf,
}

impl Daemon {
    /// Starts an instance named `name` in `dir`: socket `dir/<name>.sock`,
    /// archive `dir/data` and state `dir/state` (shared by all instances in `dir`).
    pub fn start(dir: &Path, name: &str, env: &[(&str, &str)]) -> Daemon {
        let notify_path = dir.join(format!("{name}.notify"));
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let socket = dir.join(format!("{name}.sock"));
        let data = dir.join("data");
        let mut cmd = dlsrv_command();
        cmd.arg("serve")
            .env("DLSRV_SOCKET", &socket)
            .env("DLSRV_DATA_DIR", &data)
            .env("DLSRV_STATE_DIR", dir.join("state"))
            .env("DLSRV_SHUTDOWN_GRACE_SECS", "10")
            .env("NOTIFY_SOCKET", &notify_path)
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dlsrv");
        let (log, reader) = collect_log(child.stderr.take().expect("stderr"));
        let daemon = Daemon {
            child,
            notify,
            log,
            reader: Some(reader),
            socket,
            data,
            state: dir.join("state"),
        };
        let ready = daemon.next_notification();
        assert_eq!(ready, "READY=1", "log:\n{}", daemon.log());
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next state notification (`READY=1`, `STOPPING=1`, …), past
    /// any `STATUS=` text.
    pub fn next_notification(&self) -> String {
        loop {
            let message = self.recv_notification();
            if !message.starts_with("STATUS=") {
                return message;
            }
        }
    }

    fn recv_notification(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .notify
            .recv(&mut buf)
            .expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the `STATUS=` that ends the start-up work (after READY).
    pub fn wait_start_up_work(&self) -> String {
        loop {
            let status = self.recv_notification();
            if status.contains("start-up work done") {
                return status;
            }
        }
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    }

    /// Waits for exit (blocking); returns success and the whole log.
    pub fn wait(mut self) -> (bool, String) {
        let status = self.child.wait().expect("wait");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        (status.success(), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's stderr, collected line by line as it comes (readable while it
/// runs); the thread ends with the stream.
pub fn collect_log(
    stderr: std::process::ChildStderr,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    (log, reader)
}

/// A data message of `station` sent at `t` (its local time at +01:00).
pub fn message(station: &str, t: chrono::DateTime<chrono::Utc>, with_info: bool) -> Vec<u8> {
    let local = (t + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S");
    let info = if with_info {
        format!(
            "<StationInfo time=\"{local}\" batteryVoltage=\"12.{}\" gsmSignal=\"1{}\" transmissionCycle=\"3600\" firmware=\"V 2.10.4\"/>",
            t.timestamp() % 10,
            t.timestamp() % 7
        )
    } else {
        String::new()
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><StationDataList><StationData stationId=\"{station}\" name=\"Station {station}\" timezone=\"+01:00\">{info}<ChannelData channelId=\"0010\" name=\"Pegel\" unit=\"cm\"><Values><VT t=\"{local}\">1{}</VT></Values></ChannelData></StationData></StationDataList>",
        t.timestamp() % 100
    )
    .into_bytes()
}

/// 120 stations sending hourly for 3 days up to `now`, with known exceptions:
/// S000–S009 silent for the last 6 hours, S010–S024 missing 6 hours a day
/// and a half ago, S025–S029 silent for the last 2 days, S030 without
/// StationInfo (its cycle is the median).
pub fn synthetic_archive(data: &Path, now: chrono::DateTime<chrono::Utc>) -> usize {
    let mut files = 0;
    for n in 0..120 {
        let station = format!("S{n:03}");
        for k in 0..72i64 {
            let skip = match n {
                0..=9 => k < 6,
                10..=24 => (30..=35).contains(&k),
                25..=29 => k < 50,
                _ => false,
            };
            if skip {
                continue;
            }
            let t = now - chrono::Duration::hours(k) - chrono::Duration::minutes(5);
            let path = data.join(dlsrv::layout::archive_path("senddata", &station, t));
            std::fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
            std::fs::write(&path, message(&station, t, n != 30)).expect("write");
            files += 1;
        }
    }
    files
}

/// A measured figure: printed, and appended to `target/tmp/figures.txt`,
/// which `.ci/test` shows at the end (a passing test's output is not).
pub fn figure(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
