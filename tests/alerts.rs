//! The alert rules (deploy/prometheus/dlsrv-rules.yml) and the Alertmanager
//! example: checked and unit-tested with Debian's `promtool` and `amtool`,
//! then proven end to end: Debian's Prometheus scrapes a running dlsrv
//! (its `/metrics` on the Unix socket, through a loopback relay), and a
//! station that stops sending makes `DlsrvLoggerLate` fire, and its
//! resumed sending resolves it. `.ci/test` installs the three programs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

/// The path of `program`, or None (then the test says so and passes only
/// outside CI: a skip must not read as a pass there).
fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{name} is missing and CI=true: .ci/test installs it"
        );
        eprintln!("SKIPPED: {name} is not installed (.ci/test installs it)");
    }
    found
}

fn run(program: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?}: {text}",
        program.display()
    );
    text
}

/// The alert names of the rules file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = program("promtool") else {
        return;
    };
    let dir = deploy();
    let checked = run(&promtool, &["check", "rules", "dlsrv-rules.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(&promtool, &["test", "rules", "dlsrv-rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a case where it fires and one where it must not.
    let rules = std::fs::read_to_string(dir.join("dlsrv-rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("dlsrv-rules.test.yml")).expect("tests");
    let names = alert_names(&rules);
    assert!(names.len() >= 19, "{names:?}");
    for name in &names {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {name}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{name}: no case where it must not fire"
        );
        assert!(
            cases.iter().any(|c| c.contains("- exp_labels:")),
            "{name}: no case where it fires"
        );
        // Every alert has a severity, a summary and a runbook line.
        let rule = rules
            .split("- alert: ")
            .find(|r| r.starts_with(&format!("{name}\n")))
            .expect("rule");
        for key in ["severity: ", "summary: ", "runbook: "] {
            assert!(rule.contains(key), "{name} has no {key}");
        }
    }

    // A unit test that expects the wrong thing fails: the tests can fail.
    let broken = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        dir.join("dlsrv-rules.yml"),
        broken.path().join("dlsrv-rules.yml"),
    )
    .expect("copy");
    std::fs::write(
        broken.path().join("dlsrv-rules.test.yml"),
        tests.replacen(
            "exp_labels: {severity: warning, job: dlsrv, station: \"0001\", name: Pegel Nord}",
            "exp_labels: {severity: warning, job: dlsrv, station: \"0002\", name: Hourly}",
            1,
        ),
    )
    .expect("write");
    let out = Command::new(&promtool)
        .args(["test", "rules", "dlsrv-rules.test.yml"])
        .current_dir(broken.path())
        .output()
        .expect("promtool");
    assert!(!out.status.success(), "a wrong expectation must fail");
}

#[test]
fn amtool_checks_the_alertmanager_example() {
    let Some(amtool) = program("amtool") else {
        return;
    };
    let out = run(&amtool, &["check-config", "alertmanager.yml"], &deploy());
    assert!(out.contains("SUCCESS"), "{out}");
    for receiver in ["email_configs", "webhook_configs", "inhibit_rules"] {
        assert!(
            std::fs::read_to_string(deploy().join("alertmanager.yml"))
                .expect("config")
                .contains(receiver),
            "{receiver}"
        );
    }
}

/// A free loopback port (bound, then let go for Prometheus to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `path` from Prometheus's HTTP API: the JSON answer.
async fn api(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (_, body) = text.split_once("\r\n\r\n")?;
    // Chunked or not: the JSON object is from the first '{' to the last '}'.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    serde_json::from_str(json).ok()
}

/// The labels of the firing (or pending) alerts named `name`.
async fn alerts(port: u16, name: &str) -> Vec<(String, serde_json::Value)> {
    let Some(v) = api(port, "/api/v1/alerts").await else {
        return Vec::new();
    };
    v["data"]["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["labels"]["alertname"] == name)
                .map(|x| {
                    (
                        x["state"].as_str().unwrap_or("").to_owned(),
                        x["labels"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn data_message(station: &str, cycle_secs: u32, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let local = (at + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%S");
    format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><StationDataList><StationData stationId=\"{station}\" name=\"Pegel {station}\" timezone=\"+01:00\"><StationInfo time=\"{local}\" batteryVoltage=\"12.6\" gsmSignal=\"18\" transmissionCycle=\"{cycle_secs}\"/><ChannelData channelId=\"0010\" name=\"Pegel\" unit=\"cm\"><Values><VT t=\"{local}\">{}</VT></Values></ChannelData></StationData></StationDataList>",
        at.timestamp_subsec_nanos()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_logger_late_for_a_silent_station_and_resolves_it() {
    let Some(prometheus) = program("prometheus") else {
        return;
    };
    // Late after 1 x the cycle the logger sends, no grace: a logger on a
    // 4-second cycle is late 4 s after its last message; one on an hourly
    // cycle is not. Two loggers last heard 20 minutes ago (their bodies
    // already in the archive when dlsrv starts): the one on a 5-minute
    // cycle is late, the hourly one is not.
    let dir = tempfile::tempdir().expect("tempdir");
    let heard = chrono::Utc::now() - chrono::Duration::minutes(20);
    for (station, cycle) in [("0044", 3600), ("0045", 300)] {
        let path = dir
            .path()
            .join("data")
            .join(dlsrv::layout::archive_path("senddata", station, heard));
        std::fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
        std::fs::write(&path, data_message(station, cycle, heard)).expect("write");
    }
    let mut config = common::test_config(dir.path());
    config.late_factor = 1.0;
    config.late_grace_secs = 0;
    let server = TestServer::start_indexed(dir, config).await;
    let send = |station: &'static str, cycle: u32| {
        let body = data_message(station, cycle, chrono::Utc::now());
        let server = &server;
        async move {
            let reply = server
                .post(&format!("/ott/?stationid={station}&action=senddata"), &body)
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    };
    send("0043", 3600).await;
    send("0042", 4).await;
    let silent_since = Instant::now();
    let port = server.relay().await;

    // The shipped rules, with the `for:` of DlsrvLoggerLate shortened.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = std::fs::read_to_string(deploy().join("dlsrv-rules.yml")).expect("rules");
    let late = rules.find("- alert: DlsrvLoggerLate").expect("the rule");
    let for_at = late + rules[late..].find("for: 10m").expect("its for");
    let rules = format!(
        "{}for: 3s{}",
        &rules[..for_at],
        &rules[for_at + "for: 10m".len()..]
    );
    std::fs::write(dir.path().join("rules.yml"), rules).expect("rules");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [rules.yml]\n\
             scrape_configs:\n  - job_name: dlsrv\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("config");
    let api_port = free_port();
    let log = dir.path().join("prometheus.log");
    let child = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{api_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start prometheus");
    let prom = Prometheus {
        child,
        port: api_port,
        log,
    };

    // Until Prometheus has scraped dlsrv: the target is up.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let up = api(prom.port, "/api/v1/query?query=up%7Bjob%3D%22dlsrv%22%7D").await;
        if up
            .as_ref()
            .and_then(|v| v["data"]["result"][0]["value"][1].as_str())
            == Some("1")
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "Prometheus never scraped dlsrv: {}",
            std::fs::read_to_string(&prom.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 0042 has stopped sending: DlsrvLoggerLate fires for it, named; and
    // for 0045 (20 minutes on a 5-minute cycle); never for the hourly
    // loggers 0043 (just heard) and 0044 (20 minutes ago).
    let until = Instant::now() + Duration::from_secs(60);
    let fired = loop {
        let found = alerts(prom.port, "DlsrvLoggerLate").await;
        assert!(
            found
                .iter()
                .all(|(_, l)| l["station"] == "0042" || l["station"] == "0045"),
            "only the late stations: {found:?}"
        );
        let firing: Vec<_> = found
            .iter()
            .filter(|(state, _)| state == "firing")
            .collect();
        if let Some((_, labels)) = firing.iter().find(|(_, l)| l["station"] == "0042") {
            assert!(
                firing.iter().any(|(_, l)| l["station"] == "0045"),
                "0045 is late too: {found:?}"
            );
            break labels.clone();
        }
        assert!(
            Instant::now() < until,
            "DlsrvLoggerLate never fired: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = silent_since.elapsed();
    assert_eq!(fired["name"], "Pegel 0042");
    assert_eq!(fired["severity"], "warning");
    // Late after 4 s, then 3 s of `for:`: never sooner.
    assert!(took >= Duration::from_secs(7), "fired after {took:?}");
    common::figure(&format!(
        "alerts: DlsrvLoggerLate fired {:.1} s after the station fell silent (late after 4 s, for: 3s, 1 s scrapes)",
        took.as_secs_f64()
    ));

    // It sends again: its alert resolves (0045's stays).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        send("0042", 4).await;
        let found = alerts(prom.port, "DlsrvLoggerLate").await;
        assert!(
            found
                .iter()
                .all(|(_, l)| l["station"] != "0043" && l["station"] != "0044"),
            "{found:?}"
        );
        if found.iter().all(|(_, l)| l["station"] != "0042") {
            assert!(
                found.iter().any(|(_, l)| l["station"] == "0045"),
                "{found:?}"
            );
            break;
        }
        assert!(Instant::now() < until, "DlsrvLoggerLate never resolved");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every shipped rule evaluated without error against the real metrics.
    let rules = api(prom.port, "/api/v1/rules").await.expect("rules");
    let mut evaluated = 0;
    for group in rules["data"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert_eq!(rule["health"], "ok", "{rule}");
            evaluated += 1;
        }
    }
    assert!(evaluated >= 27, "{evaluated} rules");
    // And no alert but the late one this test left.
    let all = api(prom.port, "/api/v1/alerts").await.expect("alerts");
    let names: Vec<_> = all["data"]["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].clone(),
                a["labels"]["station"].clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![(
            serde_json::json!("DlsrvLoggerLate"),
            serde_json::json!("0045")
        )],
        "{all}"
    );
    drop(prom);
    server.stop().await;
}
