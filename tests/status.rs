//! What operators see: the catalog's summaries of the documents the service
//! stores (and `dlsrv reindex` reads again), `dlsrv status` and `dlsrv
//! report` on an archive of many stations with known late ones and gaps,
//! the status pages' access rule and `/metrics`' station gauges.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use chrono::{Duration, Utc};
use common::{TestServer, dlsrv_command, synthetic_archive};
use rusqlite::Connection;
use serde_json::Value;

fn sample(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("transmission_test/samples/status")
            .join(name),
    )
    .expect("sample")
}

/// `dlsrv SUBCOMMAND …` on the archive and state of `dir`.
fn dlsrv(dir: &Path, args: &[&str]) -> Output {
    dlsrv_command()
        .args(args)
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .output()
        .expect("run dlsrv")
}

/// `dlsrv ARGS` writing into a pipe whose reader is already gone.
fn into_a_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    dlsrv_command()
        .args(args)
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run dlsrv")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn station<'a>(rows: &'a Value, id: &str) -> &'a Value {
    rows.as_array()
        .and_then(|a| a.iter().find(|r| r["station_id"] == id))
        .unwrap_or_else(|| panic!("{id} in {rows}"))
}

fn catalog(state_dir: &Path) -> Connection {
    Connection::open(state_dir.join("catalog.sqlite3")).expect("catalog")
}

/// `(name, value)` of the station_info columns of `station`'s newest row.
fn info_row(conn: &Connection, station: &str) -> Vec<(String, Value)> {
    let mut stmt = conn
        .prepare(
            "SELECT * FROM station_info WHERE station_id = ?1 ORDER BY received_utc DESC LIMIT 1",
        )
        .expect("prepare");
    let names: Vec<String> = stmt
        .column_names()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    stmt.query_row([station], |r| {
        Ok(names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v = match r.get_ref(i).expect("column") {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => Value::from(n),
                    rusqlite::types::ValueRef::Real(f) => Value::from(f),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::from(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Blob(_) => Value::Null,
                };
                (n.clone(), v)
            })
            .collect())
    })
    .expect("row")
}

fn get<'a>(row: &'a [(String, Value)], name: &str) -> &'a Value {
    &row.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name}"))
        .1
}

#[tokio::test]
async fn stored_documents_become_catalog_summaries_and_reindex_reads_the_same() {
    let server = TestServer::start().await;
    for (station, action, file) in [
        ("0000452891", "senddata", "info-latin1.xml"),
        ("0000452892", "senddata", "noinfo-utc.xml"),
        ("000NEGHELE", "senddata", "minus0330.xml"),
        ("0000452891", "sendalarm", "alarm.xml"),
    ] {
        let reply = server
            .post(
                &format!("/ott/?stationid={station}&action={action}"),
                &sample(file),
            )
            .await;
        assert_eq!(reply.status, 200, "{file}: {}", reply.text());
    }
    server.state.flush_catalog();
    let conn = catalog(&server.state_dir);

    // StationInfo present, ISO-8859-1, +01:00.
    let a = info_row(&conn, "0000452891");
    assert_eq!(get(&a, "name"), "Pegel Mühlbach");
    assert_eq!(get(&a, "battery_voltage"), 12.6);
    assert_eq!(get(&a, "battery_source"), "StationInfo");
    assert_eq!(get(&a, "gsm_signal"), 17.0);
    assert_eq!(get(&a, "transmission_cycle_secs"), 900);
    assert_eq!(
        get(&a, "info_time_utc"),
        "2026-11-30T12:00:05.000000Z",
        "local - 1 h"
    );
    assert_eq!(
        (get(&a, "n_values"), get(&a, "n_errors")),
        (&Value::from(5), &Value::from(1))
    );
    assert_eq!(get(&a, "error_channels"), "0010");
    // No StationInfo, battery as a channel, 00:00, &#176;.
    let b = info_row(&conn, "0000452892");
    assert_eq!(get(&b, "firmware"), &Value::Null);
    assert_eq!(get(&b, "battery_voltage"), 12.0, "the channel's last value");
    assert_eq!(get(&b, "battery_source"), "channel 0050");
    // -03:30, no declaration, a failed last value.
    let c = info_row(&conn, "000NEGHELE");
    assert_eq!(
        get(&c, "info_time_utc"),
        "2026-11-30T13:00:00.000000Z",
        "local + 3:30"
    );
    assert_eq!(get(&c, "battery_voltage"), &Value::Null);

    let channels = |station: &str| -> Value {
        let text: String = conn
            .query_row(
                "SELECT channels FROM stations WHERE station_id = ?1",
                [station],
                |r| r.get(0),
            )
            .expect("channels");
        serde_json::from_str(&text).expect("json")
    };
    let a = channels("0000452891");
    assert_eq!(a[0]["channel_id"], "0010");
    assert_eq!(a[0]["first_utc"], "2026-11-30T11:15:00.000000Z");
    assert_eq!(a[0]["last_value"], "143.8");
    assert_eq!(
        (a[0]["n_values"].as_u64(), a[0]["n_errors"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(a[1]["unit"], "°C", "raw 0xB0 under ISO-8859-1");
    assert_eq!(channels("0000452892")[1]["unit"], "°C", "&#176;");
    let c = channels("000NEGHELE");
    assert_eq!(
        c[0]["last_value"], "3.4",
        "the failed value is no last value"
    );
    assert_eq!(c[0]["last_value_utc"], "2026-11-30T12:30:00.000000Z");
    assert_eq!(c[0]["last_utc"], "2026-11-30T13:00:00.000000Z");
    assert_eq!(
        (c[1]["channel_id"].as_str(), c[1]["n_values"].as_u64()),
        (Some("0060"), Some(0))
    );

    // The alarm, its time in the station's zone.
    let (t, kind, text): (String, String, String) = conn
        .query_row(
            "SELECT alarm_utc, type, text FROM alarms WHERE station_id = '0000452891'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("alarm");
    assert_eq!(
        (t.as_str(), kind.as_str()),
        ("2026-11-30T12:02:00.000000Z", "limit")
    );
    assert!(text.contains("über Grenzwert"), "{text}");

    // dlsrv status says the same.
    let rows = json(&dlsrv(server.dir.path(), &["status", "--format", "json"]));
    let a = station(&rows, "0000452891");
    assert_eq!(a["battery_voltage"], 12.6);
    assert_eq!(a["expected_cycle_secs"], 900);
    assert_eq!(a["last_alarm"]["type"], "limit");
    assert_eq!(a["transmissions_24h"], 1);
    assert_eq!(station(&rows, "0000452892")["battery_voltage"], 12.0);

    // Rebuilt from the archive alone: the same summaries.
    let before: Vec<String> = conn
        .prepare("SELECT station_id || '|' || ifnull(battery_voltage, '') || '|' || ifnull(info_time_utc, '') || '|' || n_errors FROM station_info ORDER BY 1")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let stations_before: String = conn
        .query_row("SELECT group_concat(station_id || channels || ifnull(last_alarm_utc, ''), ';') FROM stations", [], |r| r.get(0))
        .expect("stations");
    let alarms_before: String = conn
        .query_row(
            "SELECT group_concat(alarm_utc || type, ';') FROM alarms",
            [],
            |r| r.get(0),
        )
        .expect("alarms");
    drop(conn);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = dlsrv_command()
        .arg("reindex")
        .env("DLSRV_DATA_DIR", &server.data)
        .env("DLSRV_STATE_DIR", &state)
        .output()
        .expect("reindex");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = catalog(&state);
    let after: Vec<String> = conn
        .prepare("SELECT station_id || '|' || ifnull(battery_voltage, '') || '|' || ifnull(info_time_utc, '') || '|' || n_errors FROM station_info ORDER BY 1")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(after, before);
    let stations_after: String = conn
        .query_row("SELECT group_concat(station_id || channels || ifnull(last_alarm_utc, ''), ';') FROM stations", [], |r| r.get(0))
        .expect("stations");
    assert_eq!(stations_after, stations_before);
    let alarms_after: String = conn
        .query_row(
            "SELECT group_concat(alarm_utc || type, ';') FROM alarms",
            [],
            |r| r.get(0),
        )
        .expect("alarms");
    assert_eq!(
        alarms_after, alarms_before,
        "the alarm's time in its station's zone, whatever the order"
    );
    server.stop().await;
}

fn late_ids(rows: &Value) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["late"] == true)
        .map(|r| r["station_id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn status_and_report_on_many_stations_find_the_late_ones_and_the_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Utc::now();
    let files = synthetic_archive(&dir.path().join("data"), now);
    let out = dlsrv(dir.path(), &["reindex"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let expected_late: Vec<String> = (0..10).chain(25..30).map(|n| format!("S{n:03}")).collect();
    let all = json(&dlsrv(dir.path(), &["status", "--format", "json"]));
    assert_eq!(all.as_array().map(Vec::len), Some(120));
    assert_eq!(late_ids(&all), expected_late);
    assert_eq!(all[0]["late"], true, "late stations first");
    let s030 = station(&all, "S030");
    assert_eq!(
        (
            s030["expected_cycle_secs"].as_i64(),
            s030["cycle_source"].as_str()
        ),
        (Some(3600), Some("median"))
    );
    assert_eq!(station(&all, "S040")["cycle_source"], "transmissionCycle");
    assert_eq!(station(&all, "S040")["transmissions_24h"], 24);
    assert_eq!(station(&all, "S000")["transmissions_24h"], 18);
    assert!(
        station(&all, "S000")["age_secs"]
            .as_i64()
            .is_some_and(|a| a >= 6 * 3600)
    );

    // --late: only those, and exit 1 for a monitoring agent.
    let late = dlsrv(dir.path(), &["status", "--late", "--format", "json"]);
    assert_eq!(late.status.code(), Some(1));
    assert_eq!(late_ids(&json(&late)), expected_late);
    let fine = dlsrv(dir.path(), &["status", "--late", "--station", "S040"]);
    assert_eq!(fine.status.code(), Some(0), "nothing late among these");
    let one = json(&dlsrv(
        dir.path(),
        &[
            "status",
            "--station",
            "S040",
            "--station",
            "S001",
            "--format",
            "json",
        ],
    ));
    assert_eq!(one.as_array().map(Vec::len), Some(2));
    let csv = stdout(&dlsrv(dir.path(), &["status", "--format", "csv"]));
    assert!(csv.starts_with("station_id,name,last_seen,age_secs,expected_cycle_secs,late,battery_voltage,gsm_signal,firmware,transmissions_24h,last_alarm,pending_commands"), "{csv}");
    assert_eq!(csv.lines().count(), 121);
    let table = stdout(&dlsrv(dir.path(), &["status"]));
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("S000") && l.contains("LATE")),
        "{table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 130),
        "fits a terminal:\n{table}"
    );
    assert!(table.contains("120 station(s), 15 late"));
    // `dlsrv status | head` and the like, the reader gone before the first
    // write: no panic, no message, the command's failure code.
    for (args, code) in [
        (&["status"][..], 2),
        (&["status", "--format", "json"][..], 2),
        (&["report", "--format", "html"][..], 1),
        (&["check-config"][..], 1),
    ] {
        let out = into_a_closed_pipe(dir.path(), args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The report of the last 2 days.
    let report = json(&dlsrv(
        dir.path(),
        &["report", "--days", "2", "--format", "json"],
    ));
    let silent: Vec<&str> = report["silent"]
        .as_array()
        .expect("silent")
        .iter()
        .filter_map(|s| s["station_id"].as_str())
        .collect();
    assert_eq!(silent, ["S025", "S026", "S027", "S028", "S029"]);
    let reported = report["reported"].as_array().expect("reported");
    assert_eq!(reported.len(), 115);
    let of = |id: &str| {
        reported
            .iter()
            .find(|r| r["station_id"] == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    let gapped = of("S010");
    let gaps = gapped["gaps"].as_array().expect("gaps");
    assert_eq!(gaps.len(), 1, "{gapped}");
    assert_eq!(gaps[0]["missing"], 6);
    let gap_from =
        dlsrv::layout::parse_time(gaps[0]["from"].as_str().expect("from")).expect("time");
    let expected_from = now - Duration::hours(36) - Duration::minutes(5);
    assert!(
        (gap_from - expected_from).num_seconds().abs() < 2,
        "{gap_from} vs {expected_from}"
    );
    assert_eq!(
        of("S000")["gaps"][0]["missing"],
        5,
        "silent for 6 hours up to now"
    );
    assert_eq!(of("S050")["gaps"].as_array().map(Vec::len), Some(0));
    assert_eq!(of("S050")["data_messages"], 48);
    assert_eq!(reported[0]["missing"], 6, "most missing first");

    let text = stdout(&dlsrv(dir.path(), &["report", "--days", "2"]));
    assert!(
        text.contains("115 station(s) reported, 5 known from before did not."),
        "{text}"
    );
    assert!(text.contains("Did not report:") && text.contains("S025"));
    let html = stdout(&dlsrv(
        dir.path(),
        &["report", "--days", "2", "--format", "html"],
    ));
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<tr class=\"late\"><td>S025</td>"),
        "{html}"
    );
    assert!(!html.contains("<script"), "no script in a mailed report");
    let out_dir = dir.path().join("reports");
    fs::create_dir(&out_dir).expect("mkdir");
    let written = dlsrv(
        dir.path(),
        &[
            "report",
            "--format",
            "csv",
            "--output-dir",
            out_dir.to_str().expect("utf-8"),
        ],
    );
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let file = out_dir.join(format!("dlsrv-report-{}.csv", now.format("%Y-%m-%d")));
    let csv = fs::read_to_string(&file).expect("report file");
    assert!(csv.starts_with("station_id,name,reported,"));
    assert_eq!(csv.lines().count(), 121, "every station, silent ones too");
    assert_eq!(
        fs::read_dir(&out_dir).expect("dir").count(),
        1,
        "no temp file left"
    );
    println!(
        "{files} bodies of 120 stations: status found the 15 late ones, the report the 15 gaps of 6 hours and the 5 silent stations"
    );
}

#[tokio::test]
async fn the_pages_refuse_a_loggers_login_and_metrics_carry_the_stations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Utc::now();
    synthetic_archive(&dir.path().join("data"), now);
    let logins = dir.path().join("logins.toml");
    fs::write(&logins, "[logins]\ndl001 = [\"S000\"]\n").expect("logins");
    let mut config = common::test_config(dir.path());
    config.station_access = dlsrv::config::StationAccess::Map;
    config.logins_file = Some(logins);
    let server = TestServer::start_indexed(dir, config).await;

    let get = |path: &str, login: Option<&str>| {
        let user = login
            .map(|l| format!("X-Remote-User: {l}\r\n"))
            .unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{user}Connection: close\r\n\r\n").into_bytes()
    };
    let refused = server.raw(&get("/status", Some("dl001"))).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        server.raw(&get("/status/S000", Some("dl001"))).await.status,
        403
    );
    assert_eq!(
        server.raw(&get("/status.json", Some("dl001"))).await.status,
        403
    );
    let page = server.raw(&get("/status", Some("operator"))).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'"))
    );
    let html = page.text();
    assert!(
        html.contains("120 station(s), <strong>15 late</strong>"),
        "{html}"
    );
    assert!(html.contains("page 1 of 3"), "50 per page");
    let page3 = server.raw(&get("/status?page=3", None)).await.text();
    assert!(page3.contains("S119") && !page3.contains(">S000<"));
    let one = server.raw(&get("/status/S010", None)).await;
    assert_eq!(one.status, 200);
    assert!(one.text().contains("Pegel") && one.text().contains("Last transmissions"));
    assert_eq!(server.raw(&get("/status/NOPE", None)).await.status, 404);
    assert_eq!(
        server
            .raw(b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .status,
        405
    );
    let json_page = server.raw(&get("/status.json", None)).await;
    assert_eq!(json_page.header("content-type"), Some("application/json"));
    let from_page: Value = serde_json::from_slice(&json_page.body).expect("json");
    let from_cli = json(&dlsrv(server.dir.path(), &["status", "--format", "json"]));
    assert_eq!(late_ids(&from_page), late_ids(&from_cli));
    assert_eq!(
        from_page.as_array().map(Vec::len),
        from_cli.as_array().map(Vec::len)
    );

    let metrics = server.get("/metrics").await.text();
    for line in [
        "dlsrv_stations_late 15",
        "dlsrv_station_late{station=\"S000\"} 1",
        "dlsrv_station_late{station=\"S040\"} 0",
        "dlsrv_station_gsm_signal{station=\"S040\"}",
        "dlsrv_station_battery_volts{station=\"S040\"} 12.",
        "dlsrv_station_data_age_seconds{station=\"S000\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_report_counts_every_data_message_even_those_without_a_summary() {
    // A data message with no StationData has nothing to summarise; it was
    // still received, and the report and the catalog count it as
    // `dlsrv reindex` does.
    let server = TestServer::start().await;
    for n in [1, 2] {
        let reply = server
            .post(
                "/ott/?stationid=S900&action=senddata",
                format!("<StationDataList><!-- {n} --></StationDataList>").as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    server.state.flush_catalog();
    let report = json(&dlsrv(
        server.dir.path(),
        &["report", "--days", "1", "--format", "json"],
    ));
    let reported = report["reported"].as_array().expect("reported");
    assert_eq!(reported.len(), 1, "{report}");
    assert_eq!(reported[0]["station_id"], "S900");
    assert_eq!(reported[0]["data_messages"], 2);
    let conn = catalog(&server.state_dir);
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM station_info WHERE station_id = 'S900'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        rows, 2,
        "a station_info row per data message, as reindex writes"
    );
    server.stop().await;
}
