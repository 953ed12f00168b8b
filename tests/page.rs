//! The status page in a real headless browser (Debian's `chromium`,
//! installed by `.ci/test`), loaded from the real service through a plain
//! TCP-to-socket relay (driven over the DevTools protocol on a pipe): it
//! loads without console messages, highlights the
//! late stations, draws one sparkline point per day with data, and its
//! screenshots (desktop and phone) are written under `target/` for people
//! to look at.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use common::{TestServer, synthetic_archive};
use tokio::net::{TcpListener, UnixStream};

/// Relays every TCP connection on a free loopback port to `socket`.
async fn relay(socket: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
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

struct Loaded {
    dom: String,
    console: Vec<String>,
}

/// Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands in on fd 3, answers and events out
/// on fd 4, each a JSON object ended by a NUL byte). Chromium no longer
/// prints a page's console messages on stderr, so they are taken from the
/// protocol's own events.
struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: std::sync::mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    session: Option<String>,
    /// Console messages, exceptions and log entries seen so far.
    console: Vec<String>,
    loaded: bool,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
        use std::os::unix::process::CommandExt;
        let (cmd_r, cmd_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let (cmd_r_fd, out_w_fd) = (cmd_r.as_raw_fd(), out_w.as_raw_fd());
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if nix::libc::dup2(cmd_r_fd, 3) < 0 || nix::libc::dup2(out_w_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("chromium: {e} (run .ci/test to install it)"));
        drop(cmd_r);
        drop(out_w);
        // SAFETY: the fds are ours, moved into the files.
        let to = unsafe { std::fs::File::from_raw_fd(cmd_w.into_raw_fd()) };
        let mut out = unsafe { std::fs::File::from_raw_fd(out_r.into_raw_fd()) };
        let (tx, from) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&message[..end])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Browser {
            child,
            to,
            from,
            next_id: 0,
            session: None,
            console: Vec::new(),
            loaded: false,
        }
    }

    /// Notes an event.
    fn event(&mut self, v: &serde_json::Value) {
        let params = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => self.console.push(format!(
                "console.{}: {}",
                params["type"].as_str().unwrap_or(""),
                params["args"]
            )),
            Some("Runtime.exceptionThrown") => {
                self.console
                    .push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Log.entryAdded") => self.console.push(format!(
                "log {}: {}",
                params["entry"]["level"].as_str().unwrap_or(""),
                params["entry"]["text"]
            )),
            Some("Page.loadEventFired") => self.loaded = true,
            _ => {}
        }
    }

    /// Sends a command (to the page's session once attached) and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = serde_json::Value::String(session.clone());
        }
        let mut bytes = serde_json::to_vec(&message).expect("json");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let v = self
                .from
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("chromium did not answer {method}: {e}"));
            if v["id"].as_u64() == Some(id) {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// Takes events for `d`.
    fn wait(&mut self, d: std::time::Duration) {
        let until = std::time::Instant::now() + d;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match self.from.recv_timeout(left) {
                Ok(v) => self.event(&v),
                Err(_) => break,
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64, as the protocol sends a screenshot.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Loads `url` in headless chromium: its DOM after load and its console
/// messages; with `screenshot`, also a PNG of `size` (`width,height`).
async fn chromium(url: &str, screenshot: Option<(&Path, &str)>) -> Loaded {
    let url = url.to_owned();
    let shot = screenshot.map(|(p, s)| (p.to_path_buf(), s.to_owned()));
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().expect("profile");
        let mut b = Browser::start(profile.path());
        let target = b.call(
            "Target.createTarget",
            serde_json::json!({ "url": "about:blank" }),
        );
        let session = b.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
        );
        b.session = session["sessionId"].as_str().map(str::to_owned);
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, serde_json::json!({}));
        }
        if let Some((_, size)) = &shot {
            let (w, h) = size.split_once(',').expect("width,height");
            b.call(
                "Emulation.setDeviceMetricsOverride",
                serde_json::json!({
                    "width": w.parse::<u32>().expect("width"),
                    "height": h.parse::<u32>().expect("height"),
                    "deviceScaleFactor": 1,
                    "mobile": false
                }),
            );
        }
        b.call("Page.navigate", serde_json::json!({ "url": url }));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !b.loaded && std::time::Instant::now() < until {
            b.wait(std::time::Duration::from_millis(100));
        }
        assert!(b.loaded, "{url} did not load");
        // Late messages (a script run after load) have a moment to come.
        b.wait(std::time::Duration::from_millis(500));
        let dom = b.call(
            "Runtime.evaluate",
            serde_json::json!({
                "expression": "document.documentElement.outerHTML",
                "returnByValue": true
            }),
        );
        let dom = dom["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some((path, _)) = &shot {
            let png = b.call(
                "Page.captureScreenshot",
                serde_json::json!({ "format": "png" }),
            );
            let data = base64_decode(png["data"].as_str().expect("screenshot data"));
            std::fs::write(path, data).expect("write the screenshot");
        }
        Loaded {
            dom,
            console: std::mem::take(&mut b.console),
        }
    })
    .await
    .expect("join")
}

/// The `points` of the polyline in the cell `class` of `station`'s row.
fn spark_points(dom: &str, station: &str, class: &str) -> usize {
    let row_start = dom
        .find(&format!("data-station=\"{station}\""))
        .unwrap_or_else(|| panic!("row {station}"));
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").expect("row end")];
    let cell = &row[row
        .find(&format!("class=\"{class}\""))
        .unwrap_or_else(|| panic!("{class} cell in {row}"))..];
    let points = cell
        .split("points=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("an SVG polyline in {cell}"));
    assert!(
        cell[..cell.find("points=").unwrap_or(0)].contains("<svg"),
        "inline SVG: {cell}"
    );
    points.split_whitespace().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_loads_clean_in_a_real_browser_with_late_stations_and_sparklines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Utc::now();
    synthetic_archive(&dir.path().join("data"), now);
    let config = common::test_config(dir.path());
    let server = TestServer::start_in(dir, config).await;
    let work = server.state.start_up_work().expect("start-up work");
    tokio::task::spawn_blocking(move || work.join().expect("join"))
        .await
        .expect("join");
    let port = relay(server.socket.clone()).await;
    let url = format!("http://127.0.0.1:{port}/status");

    // The detector sees console errors where there are some.
    let control = chromium(
        "data:text/html,<script>console.error('control')</script>",
        None,
    )
    .await;
    assert!(
        control.console.iter().any(|l| l.contains("control")),
        "the console check works: {:?}",
        control.console
    );

    let page = chromium(&url, None).await;
    assert!(page.console.is_empty(), "console: {:?}", page.console);
    let dom = &page.dom;
    assert!(
        dom.contains("120 station(s), <strong>15 late</strong>"),
        "{dom}"
    );
    for late in ["S000", "S009", "S025"] {
        assert!(
            dom.contains(&format!("<tr class=\"late\" data-station=\"{late}\">")),
            "{late} highlighted"
        );
    }
    assert!(
        dom.contains("<tr data-station=\"S040\">"),
        "a station on time is not"
    );
    // One point per UTC day with data in the last 30 days.
    let days: BTreeSet<_> = (0..72i64)
        .map(|k| (now - chrono::Duration::hours(k) - chrono::Duration::minutes(5)).date_naive())
        .collect();
    assert_eq!(spark_points(dom, "S040", "battery"), days.len());
    assert_eq!(spark_points(dom, "S040", "gsm"), days.len());
    let recent: BTreeSet<_> = (50..72i64)
        .map(|k| (now - chrono::Duration::hours(k) - chrono::Duration::minutes(5)).date_naive())
        .collect();
    assert_eq!(
        spark_points(dom, "S025", "battery"),
        recent.len(),
        "a station silent for 2 days"
    );

    let station = chromium(&format!("{url}/S010"), None).await;
    assert!(station.console.is_empty(), "console: {:?}", station.console);
    assert!(station.dom.contains("id=\"channels\"") && station.dom.contains("Pegel"));

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (name, size) in [
        ("status-page.png", "1400,1000"),
        ("status-page-phone.png", "390,844"),
    ] {
        let path = target.join(name);
        let _ = std::fs::remove_file(&path);
        let shot = chromium(&url, Some((&path, size))).await;
        assert!(shot.console.is_empty(), "console: {:?}", shot.console);
        let png = std::fs::read(&path).expect("screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}: {} bytes",
            png.len()
        );
        println!("screenshot: {}", path.display());
    }
    server.stop().await;
}
