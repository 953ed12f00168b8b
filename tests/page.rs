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

struct Loaded {
    dom: String,
    console: Vec<String>,
    /// Every URL the page asked for, itself first.
    requests: Vec<String>,
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
    /// URLs requested (Network.requestWillBeSent).
    requests: Vec<String>,
    loaded: bool,
    /// Chromium's standard error, shown when it dies.
    log: PathBuf,
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
        .stderr(std::fs::File::create(profile.join("stderr.log")).expect("log"));
        // SAFETY: only fcntl, dup2 and close (async-signal-safe) between
        // fork and exec. The pipe ends are first copied above fd 9: one
        // that is already 3 or 4 would otherwise be overwritten by the
        // other's dup2, or keep its close-on-exec (dup2 onto itself does
        // not clear it) — chromium then finds no pipe and exits.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc::{F_DUPFD, close, dup2, fcntl};
                let (r, w) = (fcntl(cmd_r_fd, F_DUPFD, 10), fcntl(out_w_fd, F_DUPFD, 10));
                if r < 0 || w < 0 || dup2(r, 3) < 0 || dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                close(r);
                close(w);
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
            requests: Vec::new(),
            loaded: false,
            log: profile.join("stderr.log"),
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
            Some("Network.requestWillBeSent") => self
                .requests
                .push(params["request"]["url"].as_str().unwrap_or("").to_owned()),
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
        if let Err(e) = self.to.write_all(&bytes) {
            panic!(
                "write to chromium ({method}): {e}; its standard error:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
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
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Page.enable",
            "Network.enable",
        ] {
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
            requests: std::mem::take(&mut b.requests),
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
    // A station with three channels over a week, sending on time, for
    // the station page in the pictures.
    let recent =
        now - chrono::Duration::seconds(now.timestamp() % 3600) - chrono::Duration::minutes(58);
    station_bodies(
        &dir.path().join("data"),
        "0099000001",
        recent,
        7 * 24,
        recent,
    );
    let config = common::test_config(dir.path());
    let server = TestServer::start_indexed(dir, config).await;
    let port = server.relay().await;
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
        dom.contains("121 station(s), <strong>15 late</strong>"),
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
    // The overview beside a station page (docs/status-page.png is one):
    // the two screenshots side by side, put together by the browser (the
    // pages themselves refuse to be framed).
    let station_shot = target.join("status-page-station.png");
    let shot = chromium(
        &format!("{url}/0099000001"),
        Some((&station_shot, "1000,1100")),
    )
    .await;
    assert!(shot.console.is_empty(), "console: {:?}", shot.console);
    let overview_shot = target.join("status-page-overview.png");
    let shot = chromium(&url, Some((&overview_shot, "1000,1100"))).await;
    assert!(shot.console.is_empty(), "console: {:?}", shot.console);
    let path = target.join("status-pages.png");
    let _ = std::fs::remove_file(&path);
    let html = target.join("status-pages.html");
    std::fs::write(
        &html,
        "<body style='margin:0;display:flex'><img src='status-page-overview.png' style='border-right:1px solid #888'><img src='status-page-station.png'></body>",
    )
    .expect("write");
    let both = format!("file://{}", html.display());
    let shot = chromium(&both, Some((&path, "2001,1100"))).await;
    assert!(shot.console.is_empty(), "console: {:?}", shot.console);
    let png = std::fs::read(&path).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    println!("screenshot: {}", path.display());
    server.stop().await;
}

/// One station's hourly data messages, each with the last hour of three
/// channels at 15-minute steps (so each repeats one value of the one
/// before, as loggers resend): for `hours` hours ending at `end`. Channel
/// 0020's value at `failed` carries an error code.
fn station_bodies(
    data: &Path,
    station: &str,
    end: chrono::DateTime<Utc>,
    hours: i64,
    failed: chrono::DateTime<Utc>,
) {
    for h in 0..hours {
        let sent = end - chrono::Duration::hours(h);
        let local = |t: chrono::DateTime<Utc>| {
            (t + chrono::Duration::hours(1))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        };
        let mut channels = String::new();
        for (id, name, unit, base) in [
            ("0010", "Pegel", "cm", 100.0),
            ("0020", "Wassertemperatur", "&#176;C", 10.0),
            ("0050", "Batterie", "V", 12.0),
        ] {
            channels.push_str(&format!(
                "<ChannelData channelId=\"{id}\" name=\"{name}\" unit=\"{unit}\"><Values>"
            ));
            for k in (0..5).rev() {
                let t = sent - chrono::Duration::minutes(2 + 15 * k);
                let step = (t.timestamp() / 900) % 96;
                if id == "0020" && t == failed {
                    channels.push_str(&format!(
                        "<VT t=\"{}\" errorcode=\"05\" errortext=\"sensor\">0</VT>",
                        local(t)
                    ));
                } else {
                    let v = base + (step as f64 / 96.0 * std::f64::consts::TAU).sin() * base / 10.0;
                    channels.push_str(&format!("<VT t=\"{}\">{v:.2}</VT>", local(t)));
                }
            }
            channels.push_str("</Values></ChannelData>");
        }
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><StationDataList><StationData stationId=\"{station}\" name=\"Musterbach\" timezone=\"+01:00\"><StationInfo time=\"{}\" batteryVoltage=\"12.6\" gsmSignal=\"18\" transmissionCycle=\"3600\"/>{channels}</StationData></StationDataList>",
            local(sent)
        );
        let path = data.join(dlsrv::layout::archive_path("senddata", station, sent));
        std::fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
        std::fs::write(&path, body).expect("write");
    }
}

/// The points drawn in the chart of `channel` (polyline vertices and
/// single-point circles), the number of polylines, and the figure.
fn chart_of<'a>(dom: &'a str, channel: &str) -> (usize, usize, &'a str) {
    let start = dom
        .find(&format!("data-channel=\"{channel}\""))
        .unwrap_or_else(|| panic!("a chart of {channel}"));
    let figure = &dom[start..start + dom[start..].find("</figure>").expect("figure end")];
    let vertices: usize = figure
        .split("<polyline")
        .skip(1)
        .map(|p| {
            p.split_once("points=\"")
                .and_then(|(_, rest)| rest.split('"').next())
                .expect("a polyline's points")
                .split_whitespace()
                .count()
        })
        .sum();
    let circles = figure.matches("<circle").count();
    (
        vertices + circles,
        figure.matches("<polyline").count(),
        figure,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_station_page_charts_every_channel_as_the_export_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Utc::now();
    let station = "0099000001";
    let data = dir.path().join("data");
    let hour = |t: chrono::DateTime<Utc>| {
        t - chrono::Duration::seconds(t.timestamp() % 3600) + chrono::Duration::minutes(2)
    };
    // The last 5 hours silent; 12 silent hours 3 days ago; before the
    // window, a day 8 to 9 days ago that the charts leave out.
    let end = hour(now - chrono::Duration::hours(5));
    let gap_end = hour(now - chrono::Duration::days(3));
    let failed = gap_end - chrono::Duration::hours(30) - chrono::Duration::minutes(2);
    station_bodies(&data, station, end, (end - gap_end).num_hours(), failed);
    let before_gap = gap_end - chrono::Duration::hours(13);
    let start = hour(now - chrono::Duration::days(7)) + chrono::Duration::hours(3);
    station_bodies(
        &data,
        station,
        before_gap,
        (before_gap - start).num_hours(),
        failed,
    );
    station_bodies(
        &data,
        station,
        hour(now - chrono::Duration::days(8)),
        24,
        failed,
    );

    let config = common::test_config(dir.path());
    let server = TestServer::start_indexed(dir, config).await;
    let port = server.relay().await;
    let url = format!("http://127.0.0.1:{port}/status/{station}");

    let asked = Utc::now();
    let page = chromium(&url, None).await;
    assert!(page.console.is_empty(), "console: {:?}", page.console);
    assert_eq!(
        page.requests,
        vec![url.clone()],
        "no request beyond the page"
    );
    let dom = &page.dom;

    // The export's rows of the same station and window.
    let from = (asked - chrono::Duration::days(7)).to_rfc3339();
    let out = common::dlsrv_command()
        .args([
            "export",
            "--station",
            station,
            "--from",
            &from,
            "--format",
            "csv",
        ])
        .env("DLSRV_DATA_DIR", &server.data)
        .env("DLSRV_STATE_DIR", &server.state_dir)
        .output()
        .expect("dlsrv export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).expect("UTF-8");
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().expect("header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (channel_col, value_col) = (col("channel_id"), col("value"));
    let mut exported = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for row in rows.records() {
        let row = row.expect("row");
        let counts = exported.entry(row[channel_col].to_owned()).or_default();
        if row[value_col].is_empty() {
            counts.1 += 1;
        } else {
            counts.0 += 1;
        }
    }
    assert_eq!(exported.len(), 3, "{exported:?}");
    for (channel, (values, failures)) in &exported {
        let (points, lines, figure) = chart_of(dom, channel);
        assert_eq!(
            points, *values,
            "{channel}: points drawn against the export's rows"
        );
        assert!(
            figure.contains(&format!("data-values=\"{values}\"")),
            "{figure}"
        );
        assert_eq!(
            figure.matches("<line class=\"failed\"").count(),
            *failures,
            "{channel}: failed values marked"
        );
        // The 12 silent hours break the line (and the failed value too).
        assert_eq!(lines, 2 + failures, "{channel}: runs of the line");
        assert!(
            figure.contains("class=\"silent\""),
            "{channel}: the silent end is shaded"
        );
        assert!(figure.contains("<svg") && figure.contains("class=\"day\""));
    }
    assert_eq!(exported["0020"].1, 1, "the failed value is in the window");
    assert!(dom.contains("°C"), "units as sent (ISO-8859-1 entity)");

    // A window of 1 day: fewer points; a window beyond 90 days: 400.
    let day = chromium(&format!("{url}?days=1"), None).await;
    assert!(day.console.is_empty(), "console: {:?}", day.console);
    let (points_1d, _, _) = chart_of(&day.dom, "0010");
    assert!(
        points_1d > 0 && points_1d < exported["0010"].0,
        "{points_1d}"
    );
    assert_eq!(
        server
            .get(&format!("/status/{station}?days=91"))
            .await
            .status,
        400
    );
    assert_eq!(
        server
            .get(&format!("/status/{station}?days=x"))
            .await
            .status,
        400
    );

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = target.join("status-station.png");
    let _ = std::fs::remove_file(&path);
    let shot = chromium(&url, Some((&path, "1400,1000"))).await;
    assert!(shot.console.is_empty(), "console: {:?}", shot.console);
    let png = std::fs::read(&path).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {}", path.display());
    server.stop().await;
}
