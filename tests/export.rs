//! `dlsrv export` on documents written for this project, stored by the real
//! service on its socket (and, for damaged files and older receipt times,
//! placed in the archive as the old deployment left them): rows checked
//! value by value in every text format; the line protocol parsed by the
//! `influxdb-line-protocol` crate; Parquet read back by pyarrow; PostgreSQL
//! loaded in a throwaway cluster, by `COPY` of the CSV and by `--format
//! postgres`, twice.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use common::pg::Cluster;
use common::{TestServer, dlsrv_command};

fn sample(name: &str) -> Vec<u8> {
    fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("transmission_test/samples/export")
            .join(name),
    )
    .expect("sample")
}

/// `dlsrv export ARGS` on the archive and state of `dir`.
fn export(dir: &Path, args: &[&str]) -> Output {
    dlsrv_command()
        .arg("export")
        .args(args)
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .output()
        .expect("run dlsrv export")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// Writes `body` into the archive as received at `received`, as a file of
/// the old deployment (or one the service stored then) would be.
fn place(data: &Path, station: &str, received: chrono::DateTime<Utc>, body: &[u8]) -> String {
    let rel = dlsrv::layout::archive_path("senddata", station, received);
    let path = data.join(&rel);
    fs::create_dir_all(path.parent().expect("day dir")).expect("mkdir");
    fs::write(&path, body).expect("write");
    rel.to_string_lossy().into_owned()
}

/// The stored archive of the samples: A (ISO-8859-1) then its resend
/// (UTF-8), two stations in one list, one without a zone; and three bad
/// files. Returns the server's directory and the bad files' paths.
async fn archive() -> (tempfile::TempDir, Vec<String>) {
    let server = TestServer::start().await;
    for (station, file) in [
        ("0000452891", "a-latin1.xml"),
        ("0000452891", "a-resend.xml"),
        ("0000000002", "two-stations.xml"),
        ("0000000004", "no-timezone.xml"),
    ] {
        let reply = server
            .post(
                &format!("/ott/?stationid={station}&action=senddata"),
                &sample(file),
            )
            .await;
        assert_eq!(reply.status, 200, "{file}: {}", reply.text());
    }
    let data = server.data.clone();
    let old = Utc::now() - Duration::days(400);
    let mut damaged = sample("a-latin1.xml");
    // What the old service made of it: every non-UTF-8 byte became EF BF BD.
    let mut fixed = Vec::new();
    for &b in &damaged {
        if b < 0x80 {
            fixed.push(b);
        } else {
            fixed.extend_from_slice(b"\xef\xbf\xbd");
        }
    }
    damaged = fixed;
    let bad = vec![
        place(
            &data,
            "0000000009",
            old,
            b"<StationDataList><StationData stationId=\"0000000009\"><Chan",
        ),
        place(
            &data,
            "0000000009",
            old + Duration::seconds(1),
            b"<Response stationId=\"0000000009\"/>",
        ),
        place(&data, "0000452891", old, &damaged),
    ];
    // The archive, without the server (whose directory goes when it stops).
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&data, &dir.path().join("data"));
    server.stop().await;
    (dir, bad)
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

type Row = BTreeMap<String, String>;

fn csv_rows(out: &[u8]) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(out);
    let headers = reader.headers().expect("header").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn find<'a>(rows: &'a [Row], station: &str, channel: &str, time_utc: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| {
            r["station_id"] == station && r["channel_id"] == channel && r["time_utc"] == time_utc
        })
        .collect()
}

fn one<'a>(rows: &'a [Row], station: &str, channel: &str, time_utc: &str) -> &'a Row {
    let found = find(rows, station, channel, time_utc);
    assert_eq!(found.len(), 1, "{station} {channel} {time_utc}: {found:?}");
    found[0]
}

#[tokio::test]
async fn rows_value_by_value_in_csv_and_json_lines_with_copies_events_and_bad_files() {
    let (dir, bad) = archive().await;
    let out = export(dir.path(), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "files were skipped: {stderr}");
    for path in &bad {
        assert!(
            stderr.contains(&format!("skipped {path}: ")),
            "{path} named: {stderr}"
        );
    }
    assert!(stderr.contains("EF BF BD"), "{stderr}");
    assert!(stderr.contains("root element is <Response>"), "{stderr}");
    assert!(
        stderr.contains("4 files read, 10 rows, 3 files skipped, 1 duplicates collapsed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0000000004: no usable timezone"),
        "{stderr}"
    );
    let csv_text = text(&out.stdout);
    assert!(csv_text.starts_with(
        "station_id,station_name,channel_id,channel_name,unit,time_utc,time_local,utc_offset,value,errorcode,errortext,received_utc,source\r\n"
    ));
    let rows = csv_rows(&out.stdout);
    assert_eq!(rows.len(), 10, "{csv_text}");

    // A: ISO-8859-1, +01:00; error codes as text, their values missing.
    let first = one(&rows, "0000452891", "0010", "2026-11-20T06:00:00Z");
    assert_eq!(first["station_name"], "Pegel Mühlbach");
    assert_eq!(first["time_local"], "2026-11-20T07:00:00");
    assert_eq!(first["utc_offset"], "+01:00");
    assert_eq!(first["value"], "142.30", "as written");
    assert_eq!(first["errorcode"], "");
    assert!(first["source"].starts_with("senddata/"));
    assert!(first["received_utc"].ends_with('Z'));
    let failed = one(&rows, "0000452891", "0010", "2026-11-20T06:15:00Z");
    assert_eq!(
        (
            failed["value"].as_str(),
            failed["errorcode"].as_str(),
            failed["errortext"].as_str()
        ),
        ("", "5", "line break")
    );
    let failed = one(&rows, "0000452891", "0010", "2026-11-20T06:30:00Z");
    assert_eq!(
        (failed["value"].as_str(), failed["errorcode"].as_str()),
        ("", "01")
    );
    // Overlap: the resend's value, the most recently received.
    let resent = one(&rows, "0000452891", "0010", "2026-11-20T06:45:00Z");
    assert_eq!(
        (resent["value"].as_str(), resent["errorcode"].as_str()),
        ("143.1", "")
    );
    assert_eq!(
        one(&rows, "0000452891", "0010", "2026-11-20T07:00:00Z")["value"],
        "143.4"
    );
    // The byte 0xB0 and &#176; are the same °C.
    let latin = one(&rows, "0000452891", "0020", "2026-11-20T06:00:00Z");
    let utf8 = one(&rows, "0000452891", "0020", "2026-11-20T06:15:00Z");
    assert_eq!(
        (latin["unit"].as_str(), utf8["unit"].as_str()),
        ("°C", "°C")
    );
    assert_eq!(
        (latin["value"].as_str(), utf8["value"].as_str()),
        ("7.5", "7.6")
    );
    // An empty Values gives nothing; VInst is left out.
    assert!(rows.iter().all(|r| r["channel_id"] != "0030"));
    assert!(rows.iter().all(|r| r["value"] != "143.0"));
    // Two stations in one list; 00:00 and -03:30.
    let b = one(&rows, "0000000002", "WSAV", "2026-11-20T12:00:00Z");
    assert_eq!(
        (b["utc_offset"].as_str(), b["value"].as_str()),
        ("00:00", "5")
    );
    let c = one(&rows, "0000000003", "0010", "2026-11-20T15:30:00Z");
    assert_eq!(
        (c["utc_offset"].as_str(), c["value"].as_str()),
        ("-03:30", "-1.25")
    );
    assert_eq!(b["source"], c["source"], "one body");
    // No zone: no guess.
    let d: Vec<_> = rows
        .iter()
        .filter(|r| r["station_id"] == "0000000004")
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0]["time_utc"].as_str(), d[0]["time_local"].as_str()),
        ("", "2026-11-20T12:00:00")
    );

    // Every copy.
    let all = export(dir.path(), &["--all-copies", "--station", "0000452891"]);
    let all_rows = csv_rows(&all.stdout);
    let copies = find(&all_rows, "0000452891", "0010", "2026-11-20T06:45:00Z");
    let values: Vec<&str> = copies.iter().map(|r| r["value"].as_str()).collect();
    assert_eq!(values, ["142.9", "143.1"], "oldest first");
    assert_eq!(
        all.status.code(),
        Some(2),
        "the damaged copy of A is still skipped"
    );

    // Filters.
    let some = export(
        dir.path(),
        &[
            "--station",
            "0000452891",
            "--channel",
            "0010",
            "--from",
            "2026-11-20T06:30:00Z",
            "--to",
            "2026-11-20T07:00:00Z",
        ],
    );
    let times: Vec<String> = csv_rows(&some.stdout)
        .into_iter()
        .map(|r| r["time_utc"].clone())
        .collect();
    assert_eq!(times, ["2026-11-20T06:30:00Z", "2026-11-20T06:45:00Z"]);
    let day = export(
        dir.path(),
        &[
            "--station",
            "0000000002",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-20",
        ],
    );
    let day = csv_rows(&day.stdout);
    assert_eq!(
        day.len(),
        1,
        "a date --to holds the whole day; only B's own rows: {day:?}"
    );
    assert_eq!(day[0]["station_id"], "0000000002");
    let since = export(dir.path(), &["--received-since", "2000-01-01"]);
    assert_eq!(csv_rows(&since.stdout).len(), 10);
    let none = export(
        dir.path(),
        &[
            "--received-since",
            &(Utc::now() + Duration::hours(1)).to_rfc3339(),
        ],
    );
    assert_eq!(
        (none.status.code(), csv_rows(&none.stdout).len()),
        (Some(0), 0)
    );

    // JSON Lines: the same rows, missing as null, values as written.
    let jsonl = export(
        dir.path(),
        &[
            "--format",
            "jsonl",
            "--station",
            "0000452891",
            "--channel",
            "0010",
        ],
    );
    let lines: Vec<serde_json::Value> = text(&jsonl.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["value"], "142.30");
    assert_eq!(lines[0]["errorcode"], serde_json::Value::Null);
    assert_eq!(lines[1]["value"], serde_json::Value::Null);
    assert_eq!(lines[1]["errorcode"], "5");
    assert_eq!(lines[0]["station_name"], "Pegel Mühlbach");

    // Events: the station's and the channel's.
    let events = export(dir.path(), &["--events", "--station", "0000452891"]);
    let ev = csv_rows(&events.stdout);
    assert_eq!(ev.len(), 2, "{}", text(&events.stdout));
    let station_event = ev
        .iter()
        .find(|r| r["channel_id"].is_empty())
        .expect("station event");
    assert_eq!(station_event["time_utc"], "2026-11-20T06:41:55Z");
    assert_eq!(station_event["type"], "error.communication");
    assert_eq!(station_event["code"], "12");
    assert_eq!(station_event["text"], "GPRS attach failed & retried");
    let channel_event = ev
        .iter()
        .find(|r| r["channel_id"] == "0010")
        .expect("channel event");
    assert_eq!(
        (
            channel_event["type"].as_str(),
            channel_event["value"].as_str(),
            channel_event["value2"].as_str()
        ),
        ("info.limit", "150", "1")
    );

    // To a file: whole, nothing left beside it.
    let target = dir.path().join("out").join("values.csv");
    fs::create_dir_all(target.parent().expect("dir")).expect("mkdir");
    let to_file = export(dir.path(), &["--output", target.to_str().expect("path")]);
    assert_eq!(to_file.status.code(), Some(2));
    assert!(to_file.stdout.is_empty());
    assert_eq!(fs::read(&target).expect("written"), out.stdout);
    assert_eq!(
        fs::read_dir(target.parent().expect("dir"))
            .expect("ls")
            .count(),
        1
    );

    // Usage errors are 1.
    for args in [
        &["--format", "bogus"][..],
        &["--from", "yesterday"],
        &["--format", "parquet"],
        &["--format", "postgres"],
    ] {
        let usage = export(dir.path(), args);
        assert_eq!(
            usage.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&usage.stderr)
        );
    }
    // A clean archive exits 0.
    for path in &bad {
        fs::remove_file(dir.path().join("data").join(path)).expect("rm");
    }
    let clean = export(dir.path(), &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
}

#[tokio::test]
async fn zrxp_blocks_and_the_line_protocol_as_their_readers_take_them() {
    let (dir, bad) = archive().await;
    for path in &bad {
        fs::remove_file(dir.path().join("data").join(path)).expect("rm");
    }
    let zrxp = export(dir.path(), &["--format", "zrxp"]);
    assert_eq!(zrxp.status.code(), Some(0), "{}", text(&zrxp.stderr));
    let z = text(&zrxp.stdout);
    assert!(
        text(&zrxp.stderr).contains("1 rows left out"),
        "D has no UTC time"
    );
    let block = "#REXCHANGE0000452891.0010|*|RINVAL-777|*|\r\n\
                 #SANR0000452891|*|SNAMEPegel Mühlbach|*|CNR0010|*|CNAMEWasserstand|*|CUNITcm|*|\r\n\
                 #TZUTC|*|LAYOUT(timestamp,value)|*|\r\n\
                 20261120060000 142.30\r\n\
                 20261120061500 -777\r\n\
                 20261120063000 -777\r\n\
                 20261120064500 143.1\r\n\
                 20261120070000 143.4\r\n";
    assert!(z.contains(block), "{z}");
    assert!(z.contains("CUNIT°C|*|"), "{z}");
    assert_eq!(
        z.matches("#REXCHANGE").count(),
        4,
        "A 0010, A 0020, B, C: {z}"
    );

    let influx = export(dir.path(), &["--format", "influx"]);
    assert_eq!(influx.status.code(), Some(0), "{}", text(&influx.stderr));
    let lines = text(&influx.stdout);
    let points: Vec<_> = influxdb_line_protocol::parse_lines(&lines)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}: {lines}"));
    assert_eq!(points.len(), 9, "{lines}");
    for p in &points {
        assert_eq!(p.series.measurement.as_str(), "ott");
    }
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .timestamp_nanos_opt()
            .expect("ns")
    };
    let failed = points
        .iter()
        .find(|p| p.timestamp == Some(at("2026-11-20T06:15:00Z")))
        .expect("the failed value");
    let fields: Vec<String> = failed
        .field_set
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    assert_eq!(fields, ["errorcode=I64(5)"], "no value field: {lines}");
    let c = points
        .iter()
        .find(|p| {
            p.series.tag_set.as_ref().is_some_and(|tags| {
                tags.iter()
                    .any(|(k, v)| k.as_str() == "station_id" && v.as_str() == "0000000003")
            })
        })
        .expect("C");
    assert_eq!(c.timestamp, Some(at("2026-11-20T15:30:00Z")));
    let value: Vec<String> = c
        .field_set
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    assert_eq!(value, ["value=F64(-1.25)"]);
}

#[tokio::test]
async fn a_cursor_exports_each_body_exactly_once_and_moves_only_after_a_complete_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let now = Utc::now();
    let body = |t: &str, v: &str| {
        format!(
            "<StationDataList><StationData stationId=\"S1\" timezone=\"+00:00\"><ChannelData channelId=\"0010\"><Values><VT t=\"{t}\">{v}</VT></Values></ChannelData></StationData></StationDataList>"
        )
        .into_bytes()
    };
    place(
        &data,
        "S1",
        now - Duration::hours(3),
        &body("2026-01-01T00:00:00", "1"),
    );
    place(
        &data,
        "S1",
        now - Duration::hours(2),
        &body("2026-01-01T01:00:00", "2"),
    );
    let run = |args: &[&str]| {
        let mut all = vec!["--since-cursor", "nightly", "--format", "jsonl"];
        all.extend_from_slice(args);
        let out = export(dir.path(), &all);
        let mut values: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["value"].to_string()
            })
            .collect();
        values.sort();
        (out.status.code(), values)
    };
    // No catalog yet: the run fills it from the archive (the catch-up the
    // service does at start) and exports what it holds.
    assert_eq!(
        run(&[]),
        (Some(0), vec!["\"1\"".to_owned(), "\"2\"".to_owned()])
    );
    let cursor = dir
        .path()
        .join("state")
        .join(dlsrv::layout::EXPORT_CURSORS)
        .join("nightly");
    assert_eq!(run(&[]), (Some(0), vec![]), "nothing new");
    let held = fs::read_to_string(&cursor).expect("cursor");
    assert!(held.starts_with("position=2\ncatalog="), "{held}");
    // A body stored one second before the run is in it, and so is one
    // received hours ago whose row came only now (as the catch-up after a
    // crash adds it: here `dlsrv reindex`): the cursor follows the
    // catalog's order, not receipt times.
    place(
        &data,
        "S1",
        now - Duration::minutes(150),
        &body("2026-01-01T02:00:00", "3"),
    );
    let reindex = dlsrv_command()
        .arg("reindex")
        .env("DLSRV_DATA_DIR", &data)
        .env("DLSRV_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("reindex");
    assert!(reindex.status.success(), "{}", text(&reindex.stderr));
    let server = {
        let mut config = common::test_config(dir.path());
        config.data_dir = data.clone();
        config.state_dir = dir.path().join("state");
        TestServer::start_in(tempfile::tempdir().expect("tempdir"), config).await
    };
    let reply = server
        .post(
            "/ott/?stationid=S1&action=senddata",
            &body("2026-01-01T03:00:00", "4"),
        )
        .await;
    assert_eq!(reply.status, 200);
    server.stop().await;
    std::thread::sleep(std::time::Duration::from_secs(1));
    // A run that cannot complete its output does not move the cursor.
    let failed = run(&["--output", "/nonexistent-dir/x.jsonl"]);
    assert_eq!(failed.0, Some(1));
    assert_eq!(fs::read_to_string(&cursor).expect("cursor"), held);
    assert_eq!(
        run(&[]),
        (Some(0), vec!["\"3\"".to_owned(), "\"4\"".to_owned()])
    );
    assert_eq!(run(&[]), (Some(0), vec![]), "two runs export nothing twice");
    // A cursor of an older dlsrv holds a receipt time: the bodies received
    // from then on, then a position.
    fs::write(
        &cursor,
        format!("{}\n", dlsrv::layout::rfc3339(now - Duration::minutes(130))),
    )
    .expect("old cursor");
    assert_eq!(
        run(&[]),
        (Some(0), vec!["\"2\"".to_owned(), "\"4\"".to_owned()])
    );
    let held = fs::read_to_string(&cursor).expect("cursor");
    let catalog =
        rusqlite::Connection::open(dir.path().join("state/catalog.sqlite3")).expect("catalog");
    let max: i64 = catalog
        .query_row("SELECT max(id) FROM transmissions", [], |r| r.get(0))
        .expect("max id");
    assert!(
        held.starts_with(&format!("position={max}\n")),
        "a position again, the catalog's last ({max}): {held}"
    );
    assert_eq!(run(&[]), (Some(0), vec![]));
    let bad_name = export(dir.path(), &["--since-cursor", "../x"]);
    assert_eq!(bad_name.status.code(), Some(1));
}

/// The Python with pyarrow that .ci/test installs; `None` (skipped) outside CI.
fn python_with_pyarrow() -> Option<PathBuf> {
    let python = PathBuf::from("python3");
    let ok = Command::new(&python)
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "pyarrow is missing and CI=true: .ci/test installs it; a skip must not pass in CI"
    );
    eprintln!("SKIPPED parquet read-back: python3 with pyarrow not found");
    None
}

#[tokio::test]
async fn parquet_files_read_back_by_pyarrow_with_their_types() {
    let (dir, bad) = archive().await;
    for path in &bad {
        fs::remove_file(dir.path().join("data").join(path)).expect("rm");
    }
    let file = dir.path().join("values.parquet");
    let out = export(
        dir.path(),
        &[
            "--format",
            "parquet",
            "--output",
            file.to_str().expect("path"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let parted = dir.path().join("by-date");
    let out = export(
        dir.path(),
        &[
            "--format",
            "parquet",
            "--partition",
            "date",
            "--output",
            parted.to_str().expect("path"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        parted
            .join("date=2026-11-20")
            .join("part-0.parquet")
            .is_file()
    );
    assert!(
        parted.join("date=unknown").join("part-0.parquet").is_file(),
        "D: no UTC day"
    );
    let by_station = dir.path().join("by-station");
    let out = export(
        dir.path(),
        &[
            "--format",
            "parquet",
            "--partition",
            "station",
            "--output",
            by_station.to_str().expect("path"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut parts: Vec<String> = fs::read_dir(&by_station)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    assert_eq!(
        parts,
        [
            "station=0000000002",
            "station=0000000003",
            "station=0000000004",
            "station=0000452891"
        ]
    );
    let again = export(
        dir.path(),
        &[
            "--format",
            "parquet",
            "--partition",
            "station",
            "--output",
            by_station.to_str().expect("path"),
        ],
    );
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing directory is not overwritten"
    );
    assert_eq!(
        fs::read_dir(dir.path())
            .expect("ls")
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
            .count(),
        0
    );
    let Some(python) = python_with_pyarrow() else {
        return;
    };
    let script = format!(
        r#"
import pyarrow.parquet as pq, pyarrow.dataset as ds, pyarrow as pa
t = pq.read_table({file:?})
types = {{f.name: str(f.type) for f in t.schema}}
assert types["time_utc"] == "timestamp[us, tz=UTC]", types
assert types["received_utc"] == "timestamp[us, tz=UTC]", types
assert types["value"] == "double", types
assert types["station_id"] == "string", types
assert t.num_rows == 10, t.num_rows
rows = t.to_pylist()
a = [r for r in rows if r["station_id"] == "0000452891" and r["channel_id"] == "0010"]
assert [r["value"] for r in a] == [142.3, None, None, 143.1, 143.4], a
assert a[1]["errorcode"] == "5"
assert a[0]["time_utc"].isoformat() == "2026-11-20T06:00:00+00:00", a[0]["time_utc"]
assert [r["unit"] for r in rows if r["channel_id"] == "0020"] == ["°C", "°C"]
d = [r for r in rows if r["station_id"] == "0000000004"]
assert d[0]["time_utc"] is None
parted = ds.dataset({parted:?}, format="parquet", partitioning="hive")
assert parted.count_rows() == 10
print("ok")
"#,
        file = file.to_str().expect("path"),
        parted = parted.to_str().expect("path"),
    );
    let check = Command::new(python)
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        check.status.success() && text(&check.stdout).trim() == "ok",
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
}

#[tokio::test]
async fn postgresql_takes_the_csv_by_copy_and_the_rows_directly_and_a_second_run_adds_nothing() {
    let (dir, bad) = archive().await;
    for path in &bad {
        fs::remove_file(dir.path().join("data").join(path)).expect("rm");
    }
    let Some(pg) = Cluster::start() else {
        return;
    };
    // The CSV, by COPY, as a data team would load it.
    let csv_file = dir.path().join("values.csv");
    let out = export(dir.path(), &["--output", csv_file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    pg.psql(
        "CREATE TABLE from_csv (station_id text, station_name text, channel_id text, channel_name text,
           unit text, time_utc timestamptz, time_local text, utc_offset text, value numeric,
           errorcode text, errortext text, received_utc timestamptz, source text)",
    );
    let copy = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &pg.url(),
            "-c",
            "\\copy from_csv FROM STDIN (FORMAT csv, HEADER true)",
        ])
        .stdin(fs::File::open(&csv_file).expect("csv"))
        .output()
        .expect("psql");
    assert!(copy.status.success(), "{}", text(&copy.stderr));
    assert_eq!(
        pg.psql("SELECT count(*), count(value), sum(value) FROM from_csv"),
        "10|8|456.65"
    );
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM from_csv WHERE time_utc IS NULL AND station_id = '0000000004'"
        ),
        "1"
    );

    // --format postgres, twice.
    for run in 0..2 {
        let out = export(
            dir.path(),
            &["--format", "postgres", "--database", &pg.url()],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let changed = if run == 0 { 9 } else { 0 };
        assert!(
            stderr.contains(&format!("{changed} rows inserted or replaced")),
            "run {run}: {stderr}"
        );
        assert!(stderr.contains("1 rows left out"), "D has no key: {stderr}");
        assert_eq!(
            pg.psql("SELECT count(*), count(value), sum(value)::numeric(10,2) FROM ott_values"),
            "9|7|447.65"
        );
    }
    assert_eq!(
        pg.psql("SELECT value FROM ott_values WHERE station_id = '0000452891' AND channel_id = '0010' AND time_utc = '2026-11-20T06:45:00Z'"),
        "143.1"
    );
    assert_eq!(
        pg.psql("SELECT errorcode || '/' || errortext FROM ott_values WHERE time_utc = '2026-11-20T06:15:00Z' AND channel_id = '0010'"),
        "5/line break"
    );
    let events = export(
        dir.path(),
        &["--format", "postgres", "--events", "--database", &pg.url()],
    );
    assert_eq!(events.status.code(), Some(0), "{}", text(&events.stderr));
    assert_eq!(
        pg.psql("SELECT count(*), count(*) FILTER (WHERE channel_id = '') FROM ott_events"),
        "2|1"
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_export_quietly_and_leaves_the_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Far more CSV than a pipe holds (64 KiB): the export is still writing
    // when the reader goes.
    let values: String = (0..3000)
        .map(|i| {
            format!(
                "<VT t=\"2026-01-01T{:02}:{:02}:{:02}\">{i}</VT>",
                i / 3600,
                i / 60 % 60,
                i % 60
            )
        })
        .collect();
    let body = format!(
        "<StationDataList><StationData stationId=\"S1\" timezone=\"+00:00\"><ChannelData channelId=\"0010\"><Values>{values}</Values></ChannelData></StationData></StationDataList>"
    );
    place(
        &data,
        "S1",
        Utc::now() - Duration::hours(1),
        body.as_bytes(),
    );
    let mut child = dlsrv_command()
        .args(["export", "--since-cursor", "piped", "--format", "csv"])
        .env("DLSRV_DATA_DIR", &data)
        .env("DLSRV_STATE_DIR", dir.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dlsrv export");
    let mut first = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .expect("first line");
        // `head -n 1`: the pipe closes here.
    }
    let out = child.wait_with_output().expect("wait");
    assert!(first.starts_with("station_id,"), "header: {first}");
    assert_eq!(out.status.code(), Some(1), "an incomplete export");
    assert!(
        out.stderr.is_empty(),
        "nothing to say: {}",
        text(&out.stderr)
    );
    let cursor = dir
        .path()
        .join("state")
        .join(dlsrv::layout::EXPORT_CURSORS)
        .join("piped");
    assert!(!cursor.exists(), "the cursor did not move");
    // So the next run exports all of it.
    let all = export(dir.path(), &["--since-cursor", "piped", "--format", "csv"]);
    assert_eq!(all.status.code(), Some(0), "{}", text(&all.stderr));
    assert_eq!(text(&all.stdout).lines().count(), 3001);
    assert!(cursor.exists());
}

#[test]
fn values_without_a_time_are_each_exported_never_taken_for_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // As in a public netDL demo document: a channel with a timed and an
    // untimed value, and one whose two values have no `t` at all.
    let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>
<StationDataList><StationData stationId=\"D1\" name=\"Demo\" timezone=\"+01:00\">
<ChannelData channelId=\"0010\" name=\"Level\" unit=\"cm\"><Values><VT t=\"2025-04-22T13:00:00\">25.2</VT><VT>35.2</VT></Values></ChannelData>
<ChannelData channelId=\"0020\" name=\"Temp\" unit=\"C\"><Values><VT>7.1</VT><VT>7.3</VT></Values></ChannelData>
</StationData></StationDataList>";
    place(&data, "D1", Utc::now() - Duration::hours(2), body);
    let out = export(dir.path(), &["--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows = csv_rows(&out.stdout);
    let values: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["channel_id"].as_str(),
                r["time_utc"].as_str(),
                r["value"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [
            ("0010", "2025-04-22T12:00:00Z", "25.2"),
            ("0010", "", "35.2"),
            ("0020", "", "7.1"),
            ("0020", "", "7.3"),
        ],
        "each value without a time kept, in the order received"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("3 values without a usable time"),
        "a warning naming the body: {stderr}"
    );
    assert!(
        stderr.contains(
            "0 duplicates collapsed, 3 values without a time (each kept, none collapsed)"
        ),
        "{stderr}"
    );
    // The same body again (a resend): its timed value collapses, the
    // untimed ones are each kept.
    place(&data, "D1", Utc::now() - Duration::hours(1), body);
    let out = export(dir.path(), &["--format", "csv"]);
    assert_eq!(csv_rows(&out.stdout).len(), 1 + 6);
    assert!(text(&out.stderr).contains("1 duplicates collapsed, 6 values without a time"));
}

#[test]
fn an_export_leaves_no_temporary_files_and_removes_a_killed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let body = b"<StationDataList><StationData stationId=\"S1\" timezone=\"+00:00\"><ChannelData channelId=\"0010\"><Values><VT t=\"2026-01-01T00:00:00\">1</VT></Values></ChannelData></StationData></StationDataList>";
    place(&data, "S1", Utc::now() - Duration::hours(1), body);
    // What an export killed with SIGKILL leaves: its directory, named by a
    // process id that no longer runs (above any pid_max).
    let tmp = dir.path().join("state").join(dlsrv::layout::EXPORT_TMP);
    let killed = tmp.join("99999999");
    fs::create_dir_all(&killed).expect("mkdir");
    fs::write(killed.join("files.sqlite3"), b"left over").expect("write");
    let out = export(dir.path(), &["--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(csv_rows(&out.stdout).len(), 1);
    let left: Vec<_> = fs::read_dir(&tmp)
        .expect("export-tmp")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}
