//! The deployment kit, proven with the real NGINX: the shipped site file,
//! rendered for temporary paths, with a certificate made here, an htpasswd
//! file, and the real `dlsrv` binary behind it. Also the `DESTDIR` install,
//! the units (`systemd-analyze`) and `shellcheck`.
//!
//! Needs nginx, openssl, htpasswd (apache2-utils), curl, shellcheck and
//! systemd-analyze: `.ci/test` installs them.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{Daemon, archive_files, dlsrv_command, doc, doc_of_len, files_under, is_root};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

const LOGIN: &str = "logger7";
const OPERATOR: &str = "ops1";
const PASSWORD: &str = "s3cret-7";
/// Logins named like their stations, for loads of several loggers.
const STATION_LOGINS: [&str; 7] = [
    "st000", "st001", "st002", "st003", "st004", "st005", "st006",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run .ci/test to install it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A self-signed certificate for `localhost` and an htpasswd file.
fn credentials(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key, htpasswd) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("htpasswd"),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null()));
    run(Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&htpasswd)
        .args([LOGIN, PASSWORD]));
    // The operators' file of the status pages: one operator, and a logger's
    // login that is in the loggers' map too.
    for (name, password) in [(OPERATOR, PASSWORD), (LOGIN, PASSWORD)] {
        let mut cmd = Command::new("htpasswd");
        cmd.args(["-b", "-C", "4", "-B"]);
        if !dir.join("htpasswd-operators").exists() {
            cmd.arg("-c");
        }
        run(cmd
            .arg(dir.join("htpasswd-operators"))
            .args([name, password]));
    }
    // One login per station of the load tests, as in the field.
    for station in STATION_LOGINS {
        run(Command::new("htpasswd")
            .args(["-b", "-C", "4", "-B"])
            .arg(&htpasswd)
            .args([station, PASSWORD]));
    }
    (cert, key, htpasswd)
}

/// The shipped site with its five absolute paths and its port replaced, and
/// one upstream `server` line per dlsrv socket.
fn render_site(
    site: &str,
    port: u16,
    creds: &(PathBuf, PathBuf, PathBuf),
    sockets: &[&Path],
) -> String {
    let upstream_line = site
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("server unix:/run/dlsrv/dlsrv.sock")
        })
        .expect("the site's upstream names /run/dlsrv/dlsrv.sock");
    let servers: Vec<String> = sockets
        .iter()
        .map(|s| upstream_line.replace("/run/dlsrv/dlsrv.sock", &s.display().to_string()))
        .collect();
    let rendered = site
        .replace(upstream_line, &servers.join("\n"))
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace("/etc/nginx/ssl/dlsrv.crt", &creds.0.display().to_string())
        .replace("/etc/nginx/ssl/dlsrv.key", &creds.1.display().to_string())
        .replace(
            "/etc/nginx/.htpasswd-operators",
            &creds
                .2
                .with_file_name("htpasswd-operators")
                .display()
                .to_string(),
        )
        .replace("/etc/nginx/.htpasswd", &creds.2.display().to_string())
        .replace("server_name dlsrv.example.org;", "server_name localhost;");
    assert!(
        !rendered.contains("listen 443"),
        "every listen line rendered"
    );
    rendered
}

/// The main `nginx.conf` around a site, everything under `prefix`.
fn nginx_conf(prefix: &Path, site: &Path) -> String {
    let p = prefix.display();
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  \
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n  include {};\n}}\n",
        site.display()
    )
}

/// NGINX running the shipped site on a free loopback port.
struct Nginx {
    prefix: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(sockets: &[&Path]) -> Nginx {
        let prefix = tempfile::tempdir().expect("tempdir");
        let creds = credentials(prefix.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let site = fs::read_to_string(repo("deploy/nginx/dlsrv.conf")).expect("site");
        let site_path = prefix.path().join("site.conf");
        fs::write(&site_path, render_site(&site, port, &creds, sockets)).expect("site");
        let conf = prefix.path().join("nginx.conf");
        fs::write(&conf, nginx_conf(prefix.path(), &site_path)).expect("conf");
        // Daemon mode: nginx returns once its listening socket is bound.
        run(Command::new("nginx")
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf));
        Nginx { prefix, port }
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// curl with the test CA, resolving localhost to the loopback address.
    fn curl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "-i", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.prefix.path().join("cert.pem"))
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", self.port));
        cmd
    }

    async fn post(&self, target: &str, login: Option<(&str, &str)>, body: &[u8]) -> CurlReply {
        let mut cmd = self.curl();
        if let Some((user, password)) = login {
            cmd.arg("-u").arg(format!("{user}:{password}"));
        }
        cmd.args(["-H", "Content-Type: application/xml", "--data-binary", "@-"])
            .arg(self.url(target));
        CurlReply::of(cmd, Some(body)).await
    }

    async fn get(&self, path: &str) -> CurlReply {
        let mut cmd = self.curl();
        cmd.arg(self.url(path));
        CurlReply::of(cmd, None).await
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = fs::read_to_string(self.prefix.path().join("nginx.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

struct CurlReply {
    status: u16,
    head: String,
    body: String,
}

impl CurlReply {
    async fn of(mut cmd: tokio::process::Command, body: Option<&[u8]>) -> CurlReply {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl (run .ci/test to install it)");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(body) = body {
            stdin.write_all(body).await.expect("body to curl");
        }
        drop(stdin);
        let out = child.wait_with_output().await.expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (rest, code) = text.rsplit_once('\n').expect("status line from -w");
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        CurlReply {
            status: code.trim().parse().unwrap_or(0),
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    /// The archive path an OTT Response names, relative to the data dir.
    fn stored_path(&self, action: &str, station: &str) -> PathBuf {
        let start = self
            .body
            .find("responseDateTime=\"")
            .expect("a Response document")
            + 18;
        common::archived_path(action, station, &self.body[start..start + 26])
    }
}

fn sample() -> Vec<u8> {
    fs::read(repo("transmission_test/samples/senddata.xml")).expect("sample")
}

#[tokio::test]
async fn https_with_a_valid_login_stores_byte_exact_and_logs_the_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlsrv = Daemon::start(dir.path(), "a", &[]);
    let nginx = Nginx::start(&[&dlsrv.socket]);
    let target = "/ott/?stationid=0000452891&action=senddata";

    let reply = nginx.post(target, Some((LOGIN, PASSWORD)), &sample()).await;
    assert_eq!(reply.status, 200, "{}{}", reply.head, nginx.error_log());
    assert!(
        reply.head.contains("strict-transport-security: max-age="),
        "HSTS: {}",
        reply.head
    );
    let stored = dlsrv.data.join(reply.stored_path("senddata", "0000452891"));
    assert_eq!(
        fs::read(&stored).expect("stored"),
        sample(),
        "byte-exact through NGINX"
    );

    assert_eq!(
        nginx
            .post(target, Some((LOGIN, "wrong")), &sample())
            .await
            .status,
        401
    );
    assert_eq!(
        nginx
            .post(target, Some(("nobody", PASSWORD)), &sample())
            .await
            .status,
        401
    );
    assert_eq!(nginx.post(target, None, &sample()).await.status, 401);
    assert_eq!(
        archive_files(&dlsrv.data).len(),
        1,
        "a refused login stores nothing"
    );

    let status = nginx.get("/server-status").await;
    assert_eq!(status.status, 204, "no login needed for monitoring");
    // Metrics: for local scrapers only (127.0.0.2 is loopback, but not allowed).
    let metrics = nginx.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("dlsrv_stored_files_total 1"),
        "{}",
        metrics.body
    );
    let mut other = nginx.curl();
    other
        .args(["--interface", "127.0.0.2"])
        .arg(nginx.url("/metrics"));
    assert_eq!(CurlReply::of(other, None).await.status, 403);
    // A client cannot claim another login: NGINX overwrites the header.
    let mut forged = nginx.curl();
    forged.args([
        "-u",
        &format!("{LOGIN}:{PASSWORD}"),
        "-H",
        "X-Remote-User: admin",
        "--data-binary",
        "@-",
    ]);
    forged.arg(nginx.url(target));
    assert_eq!(
        CurlReply::of(forged, Some(&doc("forged"))).await.status,
        200
    );

    dlsrv.sigterm();
    let (ok, log) = tokio::task::spawn_blocking(move || dlsrv.wait())
        .await
        .expect("join");
    assert!(ok);
    let stored_lines: Vec<_> = log.lines().filter(|l| l.contains("stored ")).collect();
    assert_eq!(stored_lines.len(), 2, "{log}");
    for line in stored_lines {
        assert!(
            line.contains(&format!("remote_user=\"{LOGIN}\"")),
            "the login: {line}"
        );
        assert!(
            line.contains("forwarded_for=\"127.0.0.1\""),
            "the client: {line}"
        );
    }
    assert!(
        !log.contains("admin"),
        "a forged X-Remote-User never reaches dlsrv"
    );
}

#[tokio::test]
async fn tls_1_1_and_older_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlsrv = Daemon::start(dir.path(), "a", &[]);
    let nginx = Nginx::start(&[&dlsrv.socket]);
    let handshake = |version: &str| {
        // SECLEVEL=0 lets this client offer old protocols: the refusal we
        // check is the server's.
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", nginx.port),
                version,
            ])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "localhost"])
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
    };
    assert!(handshake("-tls1_2"), "TLS 1.2 is served");
    assert!(handshake("-tls1_3"), "TLS 1.3 is served");
    assert!(!handshake("-tls1_1"), "TLS 1.1 is refused");
    assert!(!handshake("-tls1"), "TLS 1.0 is refused");
}

#[tokio::test]
async fn the_cipher_list_keeps_forward_secrecy_and_the_old_cbc_suites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlsrv = Daemon::start(dir.path(), "a", &[]);
    let nginx = Nginx::start(&[&dlsrv.socket]);
    // The cipher NGINX picks when the client offers only `ciphers`, if any.
    let negotiated = |version: &str, ciphers: &str| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", nginx.port),
                version,
            ])
            .args([
                "-cipher",
                &format!("{ciphers}:@SECLEVEL=0"),
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "New, TLSv1.2, Cipher is ECDHE-RSA-AES128-SHA" ("(NONE)" when refused).
        text.lines()
            .find_map(|l| {
                l.split_once(", Cipher is ")
                    .map(|(_, c)| c.trim().to_owned())
            })
            .filter(|c| c != "(NONE)" && out.status.success())
    };
    let mut figures = Vec::new();
    for (suite, accepted) in [
        ("ECDHE-RSA-AES128-GCM-SHA256", true),
        ("ECDHE-RSA-CHACHA20-POLY1305", true),
        ("ECDHE-RSA-AES128-SHA256", true),
        // What old embedded stacks offer: CBC with SHA-1, but ECDHE.
        ("ECDHE-RSA-AES128-SHA", true),
        ("ECDHE-RSA-AES256-SHA", true),
        // No forward secrecy: refused.
        ("AES128-SHA", false),
        ("AES256-GCM-SHA384", false),
        ("DHE-RSA-AES128-GCM-SHA256", false),
        ("DES-CBC3-SHA", false),
    ] {
        let got = negotiated("-tls1_2", suite);
        figures.push(format!("{suite}: {}", got.as_deref().unwrap_or("refused")));
        if accepted {
            assert_eq!(got.as_deref(), Some(suite), "TLS 1.2 {suite} is served");
        } else {
            assert_eq!(
                got, None,
                "TLS 1.2 {suite} has no forward secrecy and is refused"
            );
        }
    }
    let modern = negotiated("-tls1_3", "DEFAULT");
    assert!(
        modern.as_deref().is_some_and(|c| c.starts_with("TLS_")),
        "{modern:?}"
    );
    println!(
        "TLS 1.2 suites offered alone: {}; TLS 1.3: {}",
        figures.join(", "),
        modern.unwrap_or_default()
    );
}

#[tokio::test]
async fn through_nginx_a_login_speaks_only_for_its_stations_and_is_limited_per_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logins = dir.path().join("logins.toml");
    fs::write(
        &logins,
        format!("[logins]\n{LOGIN} = [\"0000452891\"]\nst000 = [\"st000\"]\n"),
    )
    .expect("logins");
    let env = [
        ("DLSRV_STATION_ACCESS", "map"),
        ("DLSRV_LOGINS_FILE", logins.to_str().expect("utf-8")),
    ];
    let dlsrv = Daemon::start(dir.path(), "a", &env);
    let nginx = Nginx::start(&[&dlsrv.socket]);
    let own = "/ott/?stationid=0000452891&action=senddata";
    let other = "/ott/?stationid=st000&action=senddata";
    assert_eq!(
        nginx
            .post(own, Some((LOGIN, PASSWORD)), &doc("own"))
            .await
            .status,
        200
    );
    let refused = nginx
        .post(other, Some((LOGIN, PASSWORD)), &doc("other"))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("may not speak for station st000"),
        "{}",
        refused.body
    );
    // A forged X-Remote-User changes nothing: NGINX sets it from the login.
    let mut forged = nginx.curl();
    forged
        .args([
            "-u",
            &format!("{LOGIN}:{PASSWORD}"),
            "-H",
            "X-Remote-User: st000",
        ])
        .args(["--data-binary", "@-"])
        .arg(nginx.url(other));
    assert_eq!(
        CurlReply::of(forged, Some(&doc("forged"))).await.status,
        403
    );
    assert_eq!(archive_files(&dlsrv.data).len(), 1);

    // limit_req: 40 requests at once from one login (not used before), over one connection.
    let mut burst = tokio::process::Command::new("curl");
    burst
        .args(["-sS", "--cacert"])
        .arg(nginx.prefix.path().join("cert.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", nginx.port))
        .args(["-u", &format!("st001:{PASSWORD}"), "-w", "%{http_code}\n"]);
    for _ in 0..40 {
        burst.args(["-o", "/dev/null"]).arg(nginx.url("/ping"));
    }
    let out = burst.output().await.expect("curl");
    let codes: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    assert_eq!(codes.len(), 40, "{codes:?}");
    let passed = codes.iter().take_while(|c| **c == 200).count();
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!(
        passed >= 31,
        "the burst of 30 (and the first) pass: {codes:?}"
    );
    assert!(limited >= 5, "beyond the burst, 429: {codes:?}");
    // Another login is not affected.
    assert_eq!(
        nginx
            .post(other, Some(("st000", PASSWORD)), &doc("st000"))
            .await
            .status,
        200
    );
    assert!(
        nginx.error_log().contains("limiting requests"),
        "{}",
        nginx.error_log()
    );
    println!(
        "through NGINX: own station 200, another 403 (forged X-Remote-User too); 40 requests at once from one login: {passed} passed, {limited} got 429; another login meanwhile: 200"
    );
}

#[tokio::test]
async fn the_status_pages_take_operators_logins_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logins = dir.path().join("logins.toml");
    fs::write(&logins, format!("[logins]\n{LOGIN} = [\"0000452891\"]\n")).expect("logins");
    let env = [
        ("DLSRV_STATION_ACCESS", "map"),
        ("DLSRV_LOGINS_FILE", logins.to_str().expect("utf-8")),
    ];
    let dlsrv = Daemon::start(dir.path(), "a", &env);
    let nginx = Nginx::start(&[&dlsrv.socket]);
    let data = "/ott/?stationid=0000452891&action=senddata";
    assert_eq!(
        nginx
            .post(data, Some((LOGIN, PASSWORD)), &sample())
            .await
            .status,
        200
    );
    let page = |login: Option<(&str, &str)>, path: &str| {
        let mut cmd = nginx.curl();
        if let Some((user, password)) = login {
            cmd.arg("-u").arg(format!("{user}:{password}"));
        }
        cmd.arg(nginx.url(path));
        CurlReply::of(cmd, None)
    };
    let ok = page(Some((OPERATOR, PASSWORD)), "/status").await;
    assert_eq!(ok.status, 200, "{}", nginx.error_log());
    assert!(ok.body.contains("0000452891"), "{}", ok.body);
    assert_eq!(
        page(Some((OPERATOR, PASSWORD)), "/status.json")
            .await
            .status,
        200
    );
    assert_eq!(
        page(Some((OPERATOR, PASSWORD)), "/status/0000452891")
            .await
            .status,
        200
    );
    assert_eq!(page(None, "/status").await.status, 401);
    assert_eq!(page(Some((OPERATOR, "wrong")), "/status").await.status, 401);
    // A logger's login, in the operators' file by mistake: dlsrv refuses it.
    assert_eq!(page(Some((LOGIN, PASSWORD)), "/status").await.status, 403);
    // The loggers' logins do not open the pages (another file), nor the
    // operators' the logger protocol.
    assert_eq!(page(Some(("st000", PASSWORD)), "/status").await.status, 401);
    assert_eq!(
        nginx
            .post(data, Some((OPERATOR, PASSWORD)), &doc("op"))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_44_kb_message_is_not_spooled_to_a_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlsrv = Daemon::start(dir.path(), "a", &[]);
    let nginx = Nginx::start(&[&dlsrv.socket]);
    let target = "/ott/?stationid=0000452891&action=senddata";
    let spooled = "buffered to a temporary file";

    let typical = doc_of_len(44 * 1024, b'4');
    assert_eq!(
        nginx
            .post(target, Some((LOGIN, PASSWORD)), &typical)
            .await
            .status,
        200
    );
    assert!(
        !nginx.error_log().contains(spooled),
        "{}",
        nginx.error_log()
    );

    // The check can fail: a body past client_body_buffer_size is spooled.
    let large = doc_of_len(300 * 1024, b'L');
    assert_eq!(
        nginx
            .post(target, Some((LOGIN, PASSWORD)), &large)
            .await
            .status,
        200
    );
    assert!(
        nginx.error_log().contains(spooled),
        "control: {}",
        nginx.error_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_load_and_stopping_one_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Daemon::start(dir.path(), "a", &[]);
    let b = Daemon::start(dir.path(), "b", &[]);
    let nginx = Arc::new(Nginx::start(&[&a.socket, &b.socket]));
    let total = 160;
    let limit = Arc::new(Semaphore::new(8));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..total {
        let (nginx, limit, done_tx) = (nginx.clone(), limit.clone(), done_tx.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.expect("semaphore");
            // Seven loggers, each its own login (NGINX limits per login).
            let station = STATION_LOGINS[i % 7];
            let body = format!("<StationDataList n=\"{i}\"/>").into_bytes();
            let target = format!("/ott/?stationid={station}&action=senddata");
            let reply = nginx.post(&target, Some((station, PASSWORD)), &body).await;
            let _ = done_tx.send(());
            (reply.status, reply.stored_path_if_ok(station), body)
        }));
    }
    // Stop instance a gracefully half-way through the load.
    for _ in 0..total / 2 {
        done_rx.recv().await.expect("progress");
    }
    let a_log_before_stop = a.log();
    a.sigterm();
    let mut paths = BTreeSet::new();
    for task in tasks {
        let (status, path, body) = task.await.expect("task");
        assert_eq!(status, 200, "no request lost while an instance stops");
        let path = path.expect("a Response naming the file");
        assert_eq!(
            fs::read(b.data.join(&path)).expect("every 200 has its file"),
            body
        );
        assert!(paths.insert(path), "no two answers name the same file");
    }
    assert_eq!(
        archive_files(&b.data).len(),
        total,
        "one file per request, no collision"
    );
    let (a_ok, a_log) = tokio::task::spawn_blocking(move || a.wait())
        .await
        .expect("join");
    assert!(a_ok, "a drained and exited 0");
    let count = |log: &str| log.lines().filter(|l| l.contains("stored ")).count();
    assert!(count(&a_log_before_stop) > 0, "instance a received traffic");
    assert!(count(&b.log()) > 0, "instance b received traffic");
    assert_eq!(
        count(&a_log) + count(&b.log()),
        total,
        "each request stored by exactly one instance"
    );
}

impl CurlReply {
    fn stored_path_if_ok(&self, station: &str) -> Option<PathBuf> {
        (self.status == 200).then(|| self.stored_path("senddata", station))
    }
}

/// The database `install.sh --export-to flood` is given: nothing listens there.
const FEED_URL: &str = "postgresql://loader@127.0.0.1:9/hydro?connect_timeout=2";

/// `DESTDIR=… install.sh` lays out the whole kit without touching the system.
fn staged_install() -> tempfile::TempDir {
    let dest = tempfile::tempdir().expect("tempdir");
    run(Command::new("sh")
        .arg(repo("deploy/install.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_dlsrv"),
            "--server-name",
            "dl.example.net",
        ])
        .args([
            "--self-signed",
            "--add-logger",
            LOGIN,
            "--station",
            "0000452891",
        ])
        .args(["--add-operator", OPERATOR])
        .args(["--export-to", "flood", FEED_URL])
        .env("DESTDIR", dest.path())
        .env("LOGGER_PASSWORD", PASSWORD)
        .env("OPERATOR_PASSWORD", "0perator!"));
    dest
}

#[test]
fn an_upgrade_adds_state_dir_to_a_kept_configuration_once() {
    let dest = staged_install();
    let conf = dest.path().join("etc/dlsrv/dlsrv.toml");
    // The configuration of an installation from before state_dir.
    let old: String = fs::read_to_string(&conf)
        .expect("conf")
        .lines()
        .filter(|l| {
            !["state_dir", "station_access", "logins_file"]
                .iter()
                .any(|key| l.starts_with(key))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&conf, &old).expect("write");
    let again = || {
        run(Command::new("sh")
            .arg(repo("deploy/install.sh"))
            .args([
                "--binary",
                env!("CARGO_BIN_EXE_dlsrv"),
                "--server-name",
                "dl.example.net",
            ])
            .env("DESTDIR", dest.path()))
    };
    let out = again();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("adding state_dir"), "{said}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("adding station_access = \"any\""),
        "the operator is told every login still speaks for every station"
    );
    let upgraded = fs::read_to_string(&conf).expect("conf");
    assert!(upgraded.starts_with(&old), "the rest is kept as it was");
    assert!(
        upgraded.contains("\nstate_dir = \"/var/lib/dlsrv-state\"\n"),
        "{upgraded}"
    );
    assert!(
        upgraded.ends_with("station_access = \"any\"\nlogins_file = \"/etc/dlsrv/logins.toml\"\n"),
        "as before: every login for every station, until the map is filled: {upgraded}"
    );
    run(Command::new(dest.path().join("usr/local/bin/dlsrv"))
        .args(["check-config", "--config"])
        .arg(&conf)
        .env(
            "DLSRV_LOGINS_FILE",
            dest.path().join("etc/dlsrv/logins.toml"),
        ));
    again();
    assert_eq!(
        fs::read_to_string(&conf).expect("conf"),
        upgraded,
        "added once"
    );
}

#[test]
fn destdir_install_lays_out_the_whole_kit_and_is_idempotent() {
    let dest = staged_install();
    let d = dest.path();
    for file in [
        "usr/local/bin/dlsrv",
        "usr/share/dlsrv/prometheus/dlsrv-rules.yml",
        "usr/share/dlsrv/prometheus/alertmanager.yml",
        "etc/dlsrv/dlsrv.toml",
        "etc/systemd/system/dlsrv.service",
        "etc/systemd/system/dlsrv.socket",
        "etc/tmpfiles.d/dlsrv.conf",
        "etc/nginx/sites-available/dlsrv.conf",
        "etc/nginx/ssl/dlsrv.crt",
        "etc/nginx/ssl/dlsrv.key",
        "etc/nginx/.htpasswd",
    ] {
        assert!(d.join(file).is_file(), "{file} staged");
    }
    assert!(d.join("var/lib/dlsrv").is_dir());
    assert!(
        d.join("var/lib/dlsrv-state").is_dir(),
        "state_dir, outside the archive"
    );
    let site = fs::read_to_string(d.join("etc/nginx/sites-available/dlsrv.conf")).expect("site");
    assert!(site.contains("server_name dl.example.net;"));
    let operators = fs::read_to_string(d.join("etc/nginx/.htpasswd-operators")).expect("operators");
    assert!(
        operators.starts_with(&format!("{OPERATOR}:$2y$")),
        "bcrypt: {operators}"
    );
    assert!(d.join("etc/systemd/system/dlsrv-report.timer").is_file());
    for unit in [
        "dlsrv-replica.service",
        "dlsrv-verify.service",
        "dlsrv-verify.timer",
    ] {
        assert!(d.join("etc/systemd/system").join(unit).is_file(), "{unit}");
    }
    // The login's stations, in the logins file the configuration names.
    let logins = d.join("etc/dlsrv/logins.toml");
    let text = fs::read_to_string(&logins).expect("logins file");
    assert!(
        text.contains(&format!("\"{LOGIN}\" = [\"0000452891\"]")),
        "{text}"
    );
    // Changing a login's stations replaces its line; other logins stay.
    run(Command::new("sh")
        .arg(repo("deploy/install.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_dlsrv"),
            "--server-name",
            "dl.example.net",
        ])
        .args(["--add-logger", "dl002", "--station", "0077*"])
        .args([
            "--add-logger",
            LOGIN,
            "--station",
            "0000452891",
            "--station",
            "0000452892",
        ])
        .env("DESTDIR", d)
        .env("LOGGER_PASSWORD", PASSWORD));
    let text = fs::read_to_string(&logins).expect("logins file");
    assert!(
        text.contains(&format!("\"{LOGIN}\" = [\"0000452891\", \"0000452892\"]")),
        "{text}"
    );
    assert!(text.contains("\"dl002\" = [\"0077*\"]"), "{text}");
    assert_eq!(text.matches(&format!("\"{LOGIN}\" =")).count(), 1, "{text}");
    let bad = Command::new("sh")
        .arg(repo("deploy/install.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_dlsrv"),
            "--add-logger",
            "x",
            "--station",
            "../etc",
        ])
        .env("DESTDIR", d)
        .env("LOGGER_PASSWORD", PASSWORD)
        .output()
        .expect("install.sh");
    assert!(!bad.status.success(), "a bad station id is refused");
    assert_eq!(
        fs::read_to_string(&logins).expect("logins"),
        text,
        "and changes nothing"
    );
    // The installed configuration is valid for the installed binary.
    // (The logins file is named by its absolute path on the target.)
    let checked = run(Command::new(d.join("usr/local/bin/dlsrv"))
        .args(["check-config", "--config"])
        .arg(d.join("etc/dlsrv/dlsrv.toml"))
        .env("DLSRV_LOGINS_FILE", d.join("etc/dlsrv/logins.toml")));
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("station_access = \"map\""),
        "the shipped configuration maps logins to stations"
    );

    // Again: an operator's edit of the config is kept, nothing else changes.
    let conf = d.join("etc/dlsrv/dlsrv.toml");
    let edited = format!(
        "{}\n# edited by the operator\n",
        fs::read_to_string(&conf).expect("conf")
    );
    fs::write(&conf, &edited).expect("edit");
    let snapshot = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        files_under(root)
            .into_iter()
            .map(|f| (f.clone(), fs::read(&f).unwrap_or_default()))
            .collect()
    };
    let before = snapshot(d);
    let out = run(Command::new("sh")
        .arg(repo("deploy/install.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_dlsrv"),
            "--server-name",
            "dl.example.net",
        ])
        .env("DESTDIR", d));
    assert_eq!(snapshot(d), before, "a second run changes nothing");
    assert_eq!(
        fs::read_to_string(&conf).expect("conf"),
        edited,
        "config never overwritten"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("==>"),
        "prints its steps"
    );
}

#[test]
fn staged_units_verify_and_are_sandboxed() {
    let dest = staged_install();
    let units = tempfile::tempdir().expect("tempdir");
    let binary = dest.path().join("usr/local/bin/dlsrv");
    for unit in ["dlsrv.service", "dlsrv.socket"] {
        let text =
            fs::read_to_string(dest.path().join("etc/systemd/system").join(unit)).expect("unit");
        // The staged binary stands in for /usr/local/bin/dlsrv.
        let text = text.replace("/usr/local/bin/dlsrv", &binary.display().to_string());
        fs::write(units.path().join(unit), text).expect("write");
    }
    for (unit, as_name) in [
        ("dlsrv-report.service", "dlsrv-report.service"),
        ("dlsrv-report.timer", "dlsrv-report.timer"),
        // A template is verified as an instance of it.
        ("dlsrv-export@.service", "dlsrv-export@flood.service"),
        ("dlsrv-replica.service", "dlsrv-replica.service"),
        ("dlsrv-verify.service", "dlsrv-verify.service"),
        ("dlsrv-verify.timer", "dlsrv-verify.timer"),
    ] {
        let text =
            fs::read_to_string(dest.path().join("etc/systemd/system").join(unit)).expect("unit");
        fs::write(
            units.path().join(as_name),
            text.replace("/usr/local/bin/dlsrv", &binary.display().to_string()),
        )
        .expect("write");
    }
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.path().join("dlsrv.socket"))
        .arg(units.path().join("dlsrv.service"))
        .arg(units.path().join("dlsrv-report.service"))
        .arg(units.path().join("dlsrv-report.timer"))
        .arg(units.path().join("dlsrv-export@flood.service"))
        .arg(units.path().join("dlsrv-replica.service"))
        .arg(units.path().join("dlsrv-verify.service"))
        .arg(units.path().join("dlsrv-verify.timer")));
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        !complaints.contains("dlsrv"),
        "systemd-analyze verify: {complaints}"
    );

    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dest.path().join("etc/systemd/system/dlsrv.service")));
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for dlsrv.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{report}"));
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{report}");

    // The feed's unit: sandboxed as the service, but it may reach its database.
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(units.path().join("dlsrv-export@flood.service")));
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for dlsrv-export@flood.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{report}"));
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0:\n{report}");

    // The replicator and the verification: sandboxed alike; they reach the store.
    for unit in ["dlsrv-replica.service", "dlsrv-verify.service"] {
        let out = run(Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(units.path().join(unit)));
        let report = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = report
            .lines()
            .find_map(|l| {
                l.split(&format!("Overall exposure level for {unit}:"))
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure in:\n{report}"));
        assert!(
            exposure <= 3.0,
            "{unit}: exposure {exposure} > 3.0:\n{report}"
        );
    }
}

#[test]
fn export_to_writes_the_feeds_settings_which_the_feed_reads() {
    use std::os::unix::fs::PermissionsExt;
    let dest = staged_install();
    let settings = dest.path().join("etc/dlsrv/export/flood.toml");
    let text = fs::read_to_string(&settings).expect("the feed's settings");
    assert!(text.contains("format = \"postgres\""), "{text}");
    assert!(
        text.contains(&format!("database = \"{FEED_URL}\"")),
        "{text}"
    );
    let mode = fs::metadata(&settings).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the URL may hold a password");
    let unit = fs::read_to_string(dest.path().join("etc/systemd/system/dlsrv-export@.service"))
        .expect("unit");
    assert!(unit.contains("--follow %i --settings /etc/dlsrv/export/%i.toml"));
    assert!(unit.contains("Restart=on-failure"));
    // The feed as the unit runs it: it reads the settings, finds its
    // database down, says so once, keeps trying, and stops on SIGTERM.
    let dirs = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dirs.path().join("data")).expect("data");
    let child = dlsrv_command()
        .args(["export", "--follow", "flood", "--settings"])
        .arg(&settings)
        .env("DLSRV_DATA_DIR", dirs.path().join("data"))
        .env("DLSRV_STATE_DIR", dirs.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the feed");
    std::thread::sleep(std::time::Duration::from_secs(6));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(
        log.matches("export feed cannot deliver").count(),
        1,
        "{log}"
    );
}

#[test]
fn install_sh_is_shellcheck_clean() {
    run(Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(repo("deploy/install.sh")));
    // The benchmark script too (bash), and the CI scripts.
    run(Command::new("shellcheck")
        .arg(repo("bench/run"))
        .arg(repo("bench/compare"))
        .arg(repo(".ci/run"))
        .arg(repo(".ci/test")));
}

#[test]
fn nginx_t_passes_on_the_staged_site_with_test_certificates() {
    let dest = staged_install();
    let d = dest.path();
    // Point the staged site's absolute paths into the stage.
    let site = fs::read_to_string(d.join("etc/nginx/sites-available/dlsrv.conf")).expect("site");
    let staged = |p: &str| d.join(p.trim_start_matches('/')).display().to_string();
    let site = site
        .replace(
            "/etc/nginx/ssl/dlsrv.crt",
            &staged("/etc/nginx/ssl/dlsrv.crt"),
        )
        .replace(
            "/etc/nginx/ssl/dlsrv.key",
            &staged("/etc/nginx/ssl/dlsrv.key"),
        )
        .replace("/etc/nginx/.htpasswd", &staged("/etc/nginx/.htpasswd"))
        .replace("listen 443 ssl;", "listen 127.0.0.1:1 ssl;");
    let prefix = tempfile::tempdir().expect("tempdir");
    let site_path = prefix.path().join("site.conf");
    fs::write(&site_path, site).expect("site");
    let conf = prefix.path().join("nginx.conf");
    fs::write(&conf, nginx_conf(prefix.path(), &site_path)).expect("conf");
    let out = run(Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(prefix.path())
        .arg("-c")
        .arg(&conf));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test is successful"));
}

#[test]
fn the_benchmarks_rendering_of_the_site_passes_nginx_t_for_dlsrv_and_the_reference() {
    let prefix = tempfile::tempdir().expect("tempdir");
    let p = prefix.path();
    fs::write(p.join("htpasswd"), "x:y\n").expect("htpasswd");
    let render = |extra: &[&str]| -> String {
        let out = run(Command::new("awk")
            .args(["-v", "port=18080", "-v", "sock=/nonexistent/d.sock"])
            .arg("-v")
            .arg(format!("htpasswd={}", p.join("htpasswd").display()))
            .args(extra)
            .arg("-f")
            .arg(repo("bench/render-site.awk"))
            .arg(repo("deploy/nginx/dlsrv.conf")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dlsrv = render(&["-v", "ceiling=1"]);
    let reference = render(&["-v", "uwsgi=/nonexistent/ref.sock"]).replace("18080", "18081");
    assert!(dlsrv.contains("location = /ceiling"));
    assert!(
        !dlsrv
            .lines()
            .any(|l| l.trim_start().starts_with("ssl_") || l.contains("listen 443"))
    );
    assert!(reference.contains("uwsgi_pass unix:/nonexistent/ref.sock;"));
    assert!(
        !reference.contains("upstream dlsrv"),
        "defined once, by the dlsrv server"
    );
    let site = p.join("site.conf");
    fs::write(&site, format!("{dlsrv}\n{reference}")).expect("site");
    let conf = p.join("nginx.conf");
    fs::write(&conf, nginx_conf(p, &site)).expect("conf");
    let out = run(Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(p)
        .arg("-c")
        .arg(&conf));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test is successful"));
}

// ---- Two hosts, one shared catalog (PostgreSQL) -------------------------

/// A dlsrv host of a shared catalog: its own data_dir, state_dir and socket.
fn start_host(dir: &Path, name: &str, url: &str, env: &[(&str, &str)]) -> Daemon {
    let mut all = vec![("DLSRV_CATALOG_URL", url), ("DLSRV_HOST_NAME", name)];
    all.extend_from_slice(env);
    Daemon::start(dir, name, &all)
}

/// Two hosts `a` and `b` of one throwaway PostgreSQL cluster.
struct TwoHosts {
    pg: common::pg::Cluster,
    url: String,
    dir_a: tempfile::TempDir,
    dir_b: tempfile::TempDir,
    a: Daemon,
    b: Daemon,
}

impl TwoHosts {
    /// `None` without PostgreSQL (a failure in CI: see `Cluster::start`).
    fn start(env: &[(&str, &str)]) -> Option<TwoHosts> {
        let pg = common::pg::Cluster::start()?;
        let url = pg.postgresql_url();
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let a = start_host(dir_a.path(), "a", &url, env);
        let b = start_host(dir_b.path(), "b", &url, env);
        Some(TwoHosts {
            pg,
            url,
            dir_a,
            dir_b,
            a,
            b,
        })
    }
}

/// Rows in a host's local catalog (its own and the others').
fn local_rows(state: &Path) -> i64 {
    rusqlite::Connection::open(state.join("catalog.sqlite3"))
        .and_then(|c| c.query_row("SELECT count(*) FROM transmissions", [], |r| r.get(0)))
        .unwrap_or(0)
}

fn wait_for(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < until, "{what}: not in time");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `dlsrv <args>` as host `name` of the shared catalog.
fn as_host(dir: &Path, name: &str, url: &str, args: &[&str]) -> std::process::Output {
    dlsrv_command()
        .args(args)
        .env("DLSRV_CATALOG_URL", url)
        .env("DLSRV_HOST_NAME", name)
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .output()
        .expect("dlsrv")
}

async fn post_to(socket: &Path, target: &str, body: &[u8]) -> common::Reply {
    let mut conn = common::Conn::open(socket).await;
    conn.send(&common::post_request(target, "HTTP/1.1", "", body))
        .await;
    conn.reply().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_behind_one_nginx_store_each_body_once_and_show_every_station() {
    let Some(pg) = common::pg::Cluster::start() else {
        return;
    };
    let url = pg.postgresql_url();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    // Both start at once on an empty database: one schema, no error.
    let (a, b) = {
        let (pa, pb) = (dir_a.path().to_path_buf(), dir_b.path().to_path_buf());
        let (ua, ub) = (url.clone(), url.clone());
        let ta = std::thread::spawn(move || start_host(&pa, "a", &ua, &[]));
        let tb = std::thread::spawn(move || start_host(&pb, "b", &ub, &[]));
        (ta.join().expect("a starts"), tb.join().expect("b starts"))
    };
    wait_for("the schema", std::time::Duration::from_secs(20), || {
        pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'commands'")
            .trim()
            == "1"
    });
    assert_eq!(
        pg.psql("SELECT count(*), max(version) FROM dlsrv_schema")
            .trim(),
        "1|2"
    );
    for log in [a.log(), b.log()] {
        assert!(!log.contains("ERROR"), "{log}");
    }
    let nginx = Arc::new(Nginx::start(&[&a.socket, &b.socket]));
    let total = 200;
    let limit = Arc::new(Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..total {
        let (nginx, limit) = (nginx.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.expect("semaphore");
            let station = format!("H{i:04}");
            let body = format!(
                "<StationDataList><StationData stationId=\"{station}\" name=\"Host test {i}\"/></StationDataList>"
            )
            .into_bytes();
            let target = format!("/ott/?stationid={station}&action=senddata");
            let login = STATION_LOGINS[i % 7];
            let reply = nginx.post(&target, Some((login, PASSWORD)), &body).await;
            (station, reply, body)
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        let (station, reply, body) = task.await.expect("task");
        assert_eq!(reply.status, 200, "{}", reply.body);
        let path = reply.stored_path("senddata", &station);
        let on_a = a.data.join(&path).is_file();
        assert!(on_a || b.data.join(&path).is_file(), "{path:?} on a host");
        sent.push((station, body, on_a));
    }
    let on_a = sent.iter().filter(|s| s.2).count();
    assert!(
        on_a > 0 && on_a < total,
        "NGINX used both hosts: {on_a} on a"
    );
    // Each host's catalog learns the other's rows.
    wait_for(
        "both catalogs complete",
        std::time::Duration::from_secs(30),
        || local_rows(&a.state) == total as i64 && local_rows(&b.state) == total as i64,
    );
    // Each body resent to the host that did not store it: 200, not stored.
    for (station, body, on_a) in &sent {
        let other = if *on_a { &b.socket } else { &a.socket };
        let target = format!("/ott/?stationid={station}&action=senddata");
        let reply = post_to(other, &target, body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        archive_files(&a.data).len() + archive_files(&b.data).len(),
        total,
        "every body stored exactly once across both archives"
    );
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT path) FROM transmissions")
            .trim(),
        "200|200"
    );
    // One view of the network from either host.
    for (dir, name) in [(dir_a.path(), "a"), (dir_b.path(), "b")] {
        let out = as_host(dir, name, &url, &["status", "--format", "csv"]);
        let csv = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            csv.lines().count(),
            total + 1,
            "{name}: every station\n{csv}"
        );
        assert!(
            csv.contains("Host test 7"),
            "names from the other host's bodies"
        );
    }
    let ping = a.socket.clone();
    let reply = tokio::spawn(async move {
        let mut c = common::Conn::open(&ping).await;
        c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        c.reply().await
    })
    .await
    .expect("ping");
    assert_eq!(reply.text(), "pong\n", "not degraded");
    // How soon the other host knows a row (the sync looks every 200 ms).
    let mut delays = Vec::new();
    for i in 0..20 {
        let before = local_rows(&b.state);
        let (station, body) = host_body(5000 + i);
        let reply = post_to(
            &a.socket,
            &format!("/ott/?stationid={station}&action=senddata"),
            &body,
        )
        .await;
        assert_eq!(reply.status, 200);
        let stored = std::time::Instant::now();
        wait_for("the row at b", std::time::Duration::from_secs(10), || {
            local_rows(&b.state) > before
        });
        delays.push(stored.elapsed());
    }
    delays.sort();
    common::figure(&format!(
        "two hosts: a row stored at one host is in the other's catalog after {} ms (median), {} ms (max), 20 bodies",
        delays[10].as_millis(),
        delays[19].as_millis()
    ));
    assert!(delays[19] < std::time::Duration::from_secs(3), "{delays:?}");
}

/// A `CommandList` for `station` with one ackId.
fn command_list(station: &str, ack: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><CommandList><Station stationId=\"{station}\">\
         <Command ackId=\"{ack}\" name=\"SetTime\"/></Station></CommandList>"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_queued_on_one_host_is_handed_out_once_acknowledged_anywhere_and_resent_after_the_timeout()
 {
    let Some(TwoHosts {
        pg: _pg,
        url,
        dir_a,
        dir_b,
        a,
        b,
    }) = TwoHosts::start(&[("DLSRV_COMMAND_ACK_TIMEOUT_SECS", "2")])
    else {
        return;
    };
    let station = "0000452891";
    // The station is known (a data message at a), so the status lists it.
    let data = format!(
        "<StationDataList><StationData stationId=\"{station}\" name=\"Mühlbach\"/></StationDataList>"
    );
    let reply = post_to(
        &a.socket,
        &format!("/ott/?stationid={station}&action=senddata"),
        data.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let file = dir_a.path().join("cmd.xml");
    for (n, ack) in ["ack1", "ack2"].iter().enumerate() {
        fs::write(&file, command_list(station, ack)).expect("cmd");
        let out = as_host(
            dir_a.path(),
            "a",
            &url,
            &["commands", "add", station, &file.display().to_string()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("queued "),
            "{n}"
        );
    }
    // Both waiting, as b's status says (the queue is PostgreSQL's).
    wait_for(
        "b's status: 2 commands pending",
        std::time::Duration::from_secs(10),
        || {
            let out = as_host(dir_b.path(), "b", &url, &["status", "--format", "json"]);
            String::from_utf8_lossy(&out.stdout).contains("\"pending_commands\": 2")
        },
    );
    // The logger polls a and b in turn: each document once, oldest first.
    let target = format!("/ott/?stationid={station}&action=requestcommand");
    let mut handed = Vec::new();
    for i in 0..6 {
        let socket = if i % 2 == 0 { &a.socket } else { &b.socket };
        let mut c = common::Conn::open(socket).await;
        c.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        let reply = c.reply().await;
        assert_eq!(reply.status, 200);
        let text = reply.text();
        if !text.is_empty() {
            handed.push((i, text));
        }
    }
    assert_eq!(
        handed.len(),
        2,
        "each document once across both hosts: {handed:?}"
    );
    assert!(
        handed[0].1.contains("ack1") && handed[1].1.contains("ack2"),
        "{handed:?}"
    );
    assert_eq!((handed[0].0, handed[1].0), (0, 1), "a, then b");
    // The acknowledgement of the first reaches b; a's CLI shows it.
    let response = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><Response><Station stationId=\"{station}\">\
         <Ack ackId=\"ack1\" status=\"OK\"/></Station></Response>"
    );
    let reply = post_to(
        &b.socket,
        &format!("/ott/?stationid={station}&action=acknowledge"),
        response.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = as_host(dir_a.path(), "a", &url, &["commands", "list", station]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("ack1") && list.contains("OK"), "{list}");
    // The second, never acknowledged, is handed out again after the
    // timeout, by b.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut c = common::Conn::open(&b.socket).await;
    c.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    let again = c.reply().await.text();
    assert!(again.contains("ack2"), "handed out again: {again:?}");
    let list = as_host(dir_b.path(), "b", &url, &["commands", "list", station]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(
        list,
        String::from_utf8_lossy(&as_host(dir_a.path(), "a", &url, &["commands", "list"]).stdout),
        "the same list from either host"
    );
    assert!(
        b.log().contains("was not acknowledged within"),
        "{}",
        b.log()
    );
}

/// A distinct data message for station `H<i>`.
fn host_body(i: usize) -> (String, Vec<u8>) {
    let station = format!("H{i:04}");
    let body = format!(
        "<StationDataList><StationData stationId=\"{station}\" name=\"n{i}\"/></StationDataList>"
    )
    .into_bytes();
    (station, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_host_sends_the_load_to_the_other_and_every_200_body_is_there() {
    let Some(hosts) = TwoHosts::start(&[]) else {
        return;
    };
    let TwoHosts { pg, a, b, .. } = &hosts;
    let nginx = Arc::new(Nginx::start(&[&a.socket, &b.socket]));
    // Within the site's per-login burst (7 logins × 30).
    let total = 180;
    let limit = Arc::new(Semaphore::new(8));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..total {
        let (nginx, limit, done_tx) = (nginx.clone(), limit.clone(), done_tx.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.expect("semaphore");
            let (station, body) = host_body(i);
            let target = format!("/ott/?stationid={station}&action=senddata");
            let reply = nginx
                .post(&target, Some((STATION_LOGINS[i % 7], PASSWORD)), &body)
                .await;
            let _ = done_tx.send(());
            (station, reply, body)
        }));
    }
    for _ in 0..total / 3 {
        done_rx.recv().await.expect("progress");
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(a.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    let (mut ok, mut failed, mut why) = (0, 0, std::collections::BTreeMap::new());
    for task in tasks {
        let (station, reply, body) = task.await.expect("task");
        if reply.status != 200 {
            failed += 1;
            *why.entry((reply.status, reply.body.clone())).or_insert(0) += 1;
            continue;
        }
        ok += 1;
        let path = reply.stored_path("senddata", &station);
        let stored = fs::read(a.data.join(&path)).or_else(|_| fs::read(b.data.join(&path)));
        assert_eq!(stored.expect("every 200 has its file"), body, "byte-exact");
    }
    assert!(
        failed <= 8,
        "{failed} non-2xx: at most the requests in flight at the kill: {why:?}\n{}",
        nginx.error_log()
    );
    assert_eq!(ok + failed, total);
    assert!(ok >= total - 8);
    // b has every row it stored in the shared catalog.
    let b_files = archive_files(&b.data).len();
    wait_for(
        "b's rows in PostgreSQL",
        std::time::Duration::from_secs(20),
        || {
            pg.psql("SELECT count(*) FROM transmissions WHERE host = 'b'")
                .trim()
                == b_files.to_string()
        },
    );
    common::figure(&format!(
        "two hosts: kill -9 of one after {} of {total} bodies: {ok} answered 200 (all stored, byte-exact), {failed} not",
        total / 3
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_stopped_for_30_s_never_stops_intake_and_every_row_arrives_once() {
    let Some(hosts) = TwoHosts::start(&[]) else {
        return;
    };
    let TwoHosts { pg, a, b, .. } = &hosts;
    let sockets = [a.socket.clone(), b.socket.clone()];
    let post = |i: usize| {
        let socket = sockets[i % 2].clone();
        async move {
            let (station, body) = host_body(i);
            post_to(
                &socket,
                &format!("/ott/?stationid={station}&action=senddata"),
                &body,
            )
            .await
            .status
        }
    };
    let started = std::time::Instant::now();
    let mut i = 0;
    let mut statuses = Vec::new();
    // Stopped once, at 3 s, for 30 s.
    let (mut stopped, mut restarted) = (false, false);
    let mut degraded_seen = false;
    while started.elapsed() < std::time::Duration::from_secs(40) {
        let t = started.elapsed().as_secs();
        if t >= 3 && !stopped && !restarted {
            pg.stop();
            stopped = true;
        }
        if stopped && !degraded_seen && t >= 8 {
            let mut c = common::Conn::open(&a.socket).await;
            c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let pong = c.reply().await.text();
            assert!(pong.contains("catalog degraded"), "{pong}");
            let mut c = common::Conn::open(&a.socket).await;
            c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let metrics = c.reply().await.text();
            assert!(metrics.contains("dlsrv_catalog_degraded 1"), "{metrics}");
            let waiting: i64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix("dlsrv_catalog_unpushed_rows "))
                .and_then(|v| v.trim().parse().ok())
                .expect("dlsrv_catalog_unpushed_rows");
            assert!(waiting > 0, "rows wait locally: {waiting}");
            // The command queue is PostgreSQL's: nothing to hand out now
            // (an empty 200), and an acknowledgement is to be sent again.
            for _ in 0..2 {
                let mut c = common::Conn::open(&a.socket).await;
                c.send(
                    b"GET /ott/?stationid=H0001&action=requestcommand HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .await;
                let reply = c.reply().await;
                assert_eq!((reply.status, reply.text()), (200, String::new()));
            }
            let ack = post_to(
                &a.socket,
                "/ott/?stationid=H0001&action=acknowledge",
                b"<Response><Station stationId=\"H0001\"><Ack ackId=\"x1\" status=\"OK\"/></Station></Response>",
            )
            .await;
            assert_eq!(ack.status, 503, "{}", ack.text());
            degraded_seen = true;
        }
        if t >= 33 && stopped {
            pg.restart();
            stopped = false;
            restarted = true;
        }
        statuses.push(post(i).await);
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    if stopped {
        pg.restart();
    }
    assert!(degraded_seen);
    assert!(statuses.iter().all(|&s| s == 200), "every request 200");
    // The data messages, and the acknowledgement stored during the outage.
    let total = statuses.len() + 1;
    wait_for(
        "every row in PostgreSQL",
        std::time::Duration::from_secs(60),
        || {
            pg.psql("SELECT count(*), count(DISTINCT (host, path)) FROM transmissions")
                .trim()
                == format!("{total}|{total}")
        },
    );
    wait_for(
        "every row on each host",
        std::time::Duration::from_secs(30),
        || local_rows(&a.state) == total as i64 && local_rows(&b.state) == total as i64,
    );
    for (name, log) in [("a", a.log()), ("b", b.log())] {
        assert_eq!(
            log.matches("shared catalog unreachable").count(),
            1,
            "{name}: once\n{log}"
        );
        assert_eq!(
            log.matches("shared catalog reachable again").count(),
            1,
            "{name}\n{log}"
        );
    }
    let log = a.log();
    assert_eq!(
        log.matches("shared command queue unreachable").count(),
        1,
        "said once:\n{log}"
    );
    common::figure(&format!(
        "two hosts: PostgreSQL stopped 30 s under load: {total} bodies, all 200; every row in it once afterwards"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_commits_late_is_not_skipped_by_the_other_hosts() {
    let Some(hosts) = TwoHosts::start(&[]) else {
        return;
    };
    let TwoHosts { pg, a, b, .. } = &hosts;
    wait_for("the schema", std::time::Duration::from_secs(20), || {
        pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'catalog_hosts'")
            .trim()
            == "1"
    });
    // A third host's push that takes its id and commits late.
    let conninfo = pg.url();
    let slow = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).expect("connect");
        let mut tx = client.transaction().expect("begin");
        let id: i64 = tx
            .query_one(
                "SELECT next_id FROM catalog_counter WHERE one FOR UPDATE",
                &[],
            )
            .expect("counter")
            .get(0);
        tx.execute(
            "INSERT INTO transmissions (id, host, local_id, station_id, action, received_utc, path,
                 bytes, sha256, indexed_utc)
             VALUES ($1, 'c', 1, 'LATE', 'senddata', '2026-12-05T00:00:00.000000Z',
                 'senddata/2026/12/05/LATE_2026-12-05T00+00+00.000000', 1, 'ab', '2026-12-05T00:00:00Z')",
            &[&id],
        )
        .expect("insert");
        tx.execute(
            "UPDATE catalog_counter SET next_id = $1 WHERE one",
            &[&(id + 1)],
        )
        .expect("counter");
        std::thread::sleep(std::time::Duration::from_secs(2));
        tx.commit().expect("commit");
        id
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Meanwhile a stores bodies; their rows wait for the counter.
    for i in 0..20 {
        let (station, body) = host_body(i);
        let reply = post_to(
            &a.socket,
            &format!("/ott/?stationid={station}&action=senddata"),
            &body,
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    let late_id = slow.join().expect("slow");
    wait_for(
        "b has a's rows and the late one",
        std::time::Duration::from_secs(20),
        || local_rows(&b.state) == 21,
    );
    let min_a: i64 = pg
        .psql("SELECT min(id) FROM transmissions WHERE host = 'a'")
        .trim()
        .parse()
        .expect("ids");
    assert!(
        late_id < min_a,
        "ids in commit order: {late_id} before {min_a}"
    );
    let late_on_b: i64 = rusqlite::Connection::open(b.state.join("catalog.sqlite3"))
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM transmissions WHERE station_id = 'LATE' AND host = 'c'",
                [],
                |r| r.get(0),
            )
        })
        .expect("b's catalog");
    assert_eq!(late_on_b, 1, "the row that committed late is not skipped");
}

#[test]
fn install_sh_catalog_adds_the_shared_catalog_once_and_keeps_it() {
    let dest = staged_install();
    let install = |url: &str| {
        Command::new("sh")
            .arg(repo("deploy/install.sh"))
            .args([
                "--binary",
                env!("CARGO_BIN_EXE_dlsrv"),
                "--server-name",
                "dl.example.net",
                "--catalog",
                url,
            ])
            .env("DESTDIR", dest.path())
            .output()
            .expect("install.sh")
    };
    let url = "postgresql://dlsrv:pw@db.example.net/network";
    for _ in 0..2 {
        let out = install(url);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conf = fs::read_to_string(dest.path().join("etc/dlsrv/dlsrv.toml")).expect("conf");
    assert_eq!(
        conf.matches("catalog_url").count(),
        1,
        "added once:\n{conf}"
    );
    let parsed: toml::Table = conf.parse().expect("still TOML");
    assert_eq!(
        parsed.get("catalog_url").and_then(|v| v.as_str()),
        Some(url)
    );
    // dlsrv reads it as a top-level key; check-config hides the password.
    let out = dlsrv_command()
        .arg("check-config")
        .env("DLSRV_CATALOG_URL", url)
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("postgresql://dlsrv:***@db.example.net/network"),
        "{text}"
    );
    assert!(!text.contains(":pw@"), "{text}");
    // Another URL is refused, the file kept.
    let out = install("postgresql://other@db/x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another catalog_url"));
    assert_eq!(
        fs::read_to_string(dest.path().join("etc/dlsrv/dlsrv.toml")).expect("conf"),
        conf
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_had_sqlite_moves_its_rows_into_the_shared_catalog() {
    let Some(pg) = common::pg::Cluster::start() else {
        return;
    };
    let url = pg.postgresql_url();
    let dir_a = tempfile::tempdir().expect("a");
    // A history in a host's own SQLite catalog.
    let a = Daemon::start(dir_a.path(), "a", &[]);
    for i in 0..40 {
        let (station, body) = host_body(i);
        let reply = post_to(
            &a.socket,
            &format!("/ott/?stationid={station}&action=senddata"),
            &body,
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    a.sigterm();
    assert!(a.wait().0);
    for _ in 0..2 {
        let out = as_host(
            dir_a.path(),
            "a",
            "sqlite",
            &["catalog", "migrate", "--to", &url],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT path) FROM transmissions WHERE host = 'a'")
            .trim(),
        "40|40",
        "every row, once (migrate run twice)"
    );
    // Another host sees a's history, names included.
    let dir_b = tempfile::tempdir().expect("b");
    let b = start_host(dir_b.path(), "b", &url, &[]);
    wait_for(
        "b learns a's rows",
        std::time::Duration::from_secs(20),
        || local_rows(&b.state) == 40,
    );
    let out = as_host(dir_b.path(), "b", &url, &["status", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().count(), 41, "{csv}");
    assert!(csv.contains("n7"), "what a's documents said: {csv}");
    // a, now on the shared catalog, does not push its rows again.
    let a = start_host(dir_a.path(), "a2", &url, &[("DLSRV_HOST_NAME", "a")]);
    let (station, body) = host_body(99);
    let reply = post_to(
        &a.socket,
        &format!("/ott/?stationid={station}&action=senddata"),
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    wait_for("a's new row", std::time::Duration::from_secs(20), || {
        pg.psql("SELECT count(*) FROM transmissions WHERE host = 'a'")
            .trim()
            == "41"
    });
    assert_eq!(pg.psql("SELECT count(*) FROM transmissions").trim(), "41");
}
