//! The status page in a real headless browser (Debian's `chromium`,
//! installed by `.ci/test`), loaded from the real service through a plain
//! TCP-to-socket relay: it loads without console errors, highlights the
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

/// Loads `url` in headless chromium: its DOM after load and its console
/// messages; with `screenshot`, also a PNG of `size`.
async fn chromium(url: &str, screenshot: Option<(&Path, &str)>) -> Loaded {
    let url = url.to_owned();
    let shot = screenshot.map(|(p, s)| (p.to_path_buf(), s.to_owned()));
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().expect("profile");
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
        match &shot {
            Some((path, size)) => {
                cmd.arg(format!("--screenshot={}", path.display()))
                    .arg(format!("--window-size={size}"));
            }
            None => {
                cmd.arg("--dump-dom");
            }
        }
        let out = cmd
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("chromium: {e} (run .ci/test to install it)"));
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        Loaded {
            dom: String::from_utf8_lossy(&out.stdout).into_owned(),
            console: stderr
                .lines()
                .filter(|l| l.contains(":CONSOLE"))
                .map(str::to_owned)
                .collect(),
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
