//! The replica against a real S3-compatible store (Garage on loopback):
//! every stored body reaches the bucket once, byte-exact, with its
//! checksum, through `kill -9`s of the replicator; `dlsrv verify` names
//! damage on either side; retention removes only verified bodies; a lost
//! disk is restored from the bucket; the Parquet export lands in the
//! bucket and reads back. (The load through an outage, timed, runs alone
//! in tests/replica_load.rs.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::garage::Garage;
use common::replica::*;
use common::{Conn, dlsrv_command, figure, message, post_request};

#[test]
fn kill_9_of_the_replicator_three_times_loses_nothing_and_uploads_nothing_twice() {
    let Some(garage) = Garage::start() else {
        return;
    };
    // Slow enough (a bandwidth cap) for the kills to land mid-run.
    let site = Site::new(&garage, "", "replica_max_bytes_per_sec = 40000");
    site.stored(600);
    let mut killed_at = Vec::new();
    for _ in 0..3 {
        // Killed in the middle of a batch: some objects up, not yet recorded.
        let before = site.counts().1;
        let replicator = site.replicator();
        let until = Instant::now() + Duration::from_secs(60);
        while site.counts().1 == before {
            assert!(Instant::now() < until, "no progress: {:?}", site.counts());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        replicator.kill9();
        killed_at.push((site.counts().1, garage.keys("archive").len() as i64));
    }
    let replicator = site.replicator();
    site.wait_replicated(600, Duration::from_secs(120));
    replicator.stop();
    assert!(
        killed_at.windows(2).all(|w| w[0].0 < w[1].0) && killed_at[2].0 < 600,
        "killed mid-run: {killed_at:?}"
    );
    // (rows recorded, objects up) at each kill: objects ahead of their
    // rows are the case that matters, found by HEAD at the next start.
    assert!(
        killed_at.iter().any(|(rows, objects)| objects > rows),
        "a kill between an upload and its row: {killed_at:?}"
    );
    assert_bucket_is_the_archive(&garage, &site);
    figure(&format!(
        "replica: 600 bodies, replicator killed with -9 three times at (rows recorded, objects up) {killed_at:?}: all in the bucket once, byte-exact"
    ));
}

/// A 20 MiB firmware (multipart), a body whose key already holds other
/// bytes (a conflict), then damage on both sides after replication.
#[test]
fn verify_names_an_overwritten_object_and_a_flipped_bit_and_a_conflict_stays_local() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    let daemon = site.serve();
    post(&daemon.socket, 0, 20);
    let firmware: Vec<u8> = (0..20 << 20).map(|i: usize| (i % 253) as u8).collect();
    let status = runtime().block_on(async {
        let mut conn = Conn::open(&daemon.socket).await;
        conn.send(&post_request(
            "/ott/?stationid=R001&action=sendfirmware",
            "HTTP/1.1",
            "",
            &firmware,
        ))
        .await;
        conn.reply().await.status
    });
    assert_eq!(status, 200);
    daemon.sigterm();
    assert!(daemon.wait().0);
    let bodies = site.bodies();
    let mut data: Vec<&String> = bodies
        .keys()
        .filter(|k| k.starts_with("senddata/"))
        .collect();
    data.sort();
    // Someone else's bytes at a body's key before the replicator runs.
    let taken = data[0].clone();
    garage.overwrite("archive", &format!("net-a/{taken}"), b"not the body");
    let replicator = site.replicator();
    site.wait_replicated(21, Duration::from_secs(60));
    let log = replicator.stop();
    assert!(
        log.contains("body NOT replicated") && log.contains(&taken),
        "{log}"
    );
    assert_eq!(
        site.counts(),
        (21, 20, 1),
        "the conflict is refused, the rest replicated"
    );
    let (object, _) = garage.get("archive", &format!("net-a/{taken}"));
    assert_eq!(object, b"not the body", "the object is never \"fixed\"");
    assert!(site.data().join(&taken).exists(), "the body stays local");
    let fw = bodies
        .keys()
        .find(|k| k.starts_with("sendfirmware/"))
        .expect("firmware");
    let (object, checksum) = garage.get("archive", &format!("net-a/{fw}"));
    assert!(object == firmware, "the firmware, byte-exact");
    assert!(
        checksum.is_some_and(|c| c.ends_with("-3")),
        "uploaded in parts"
    );
    let (code, out, err) = site.dlsrv(&["verify", "--replica"]);
    assert_eq!(code, 1, "the conflict is reported: {out}{err}");
    assert!(out.contains(&taken) && out.lines().count() == 1, "{out}");

    // Damage after replication: an object overwritten, a bit flipped.
    let (overwritten, flipped) = (data[1].clone(), data[2].clone());
    garage.overwrite("archive", &format!("net-a/{overwritten}"), b"other bytes");
    let path = site.data().join(&flipped);
    let mut body = std::fs::read(&path).expect("read");
    body[40] ^= 0x01;
    std::fs::write(&path, &body).expect("flip");
    let (code, out, err) = site.dlsrv(&["verify", "--replica"]);
    assert_eq!(code, 1, "{out}{err}");
    for rel in [&taken, &overwritten, &flipped] {
        assert!(out.contains(rel.as_str()), "{rel} named in\n{out}");
    }
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        err.contains("22 bodies checked") || err.contains("21 bodies checked"),
        "{err}"
    );
    // Local only: the flipped bit.
    let (code, out, _) = site.dlsrv(&["verify"]);
    assert_eq!((code, out.lines().count()), (1, 1), "{out}");
    assert!(out.contains(flipped.as_str()) && out.contains("changed on disk"));
    // Nothing is repaired: the same again.
    assert_eq!(site.dlsrv(&["verify", "--replica"]).0, 1);
    // The timer's run: sampled, recorded, shown in /metrics.
    std::fs::write(&path, &bodies[&flipped]).expect("unflip");
    let (code, _, err) = site.dlsrv(&["verify", "--sample", "100", "--replica", "--record"]);
    assert_eq!(code, 1, "{err}");
    let daemon = site.serve_as("b");
    let text = scrape(&daemon.socket);
    assert_eq!(
        metric(&text, "dlsrv_verify_mismatched_bodies"),
        2.0,
        "{text}"
    );
    assert_eq!(metric(&text, "dlsrv_verify_checked_bodies"), 21.0);
    assert_eq!(metric(&text, "dlsrv_replica_refused_bodies"), 1.0);
    let (_, _, err) = site.dlsrv(&["verify", "--sample", "10"]);
    assert!(err.contains("bodies checked"), "{err}");
}

/// Writes `n` bodies of station `station` received `days_ago` days ago.
fn old_bodies(data: &Path, station: &str, days_ago: i64, n: i64) {
    let base = Utc::now() - chrono::Duration::days(days_ago);
    for k in 0..n {
        let t = base + chrono::Duration::minutes(k * 15);
        let path = data.join(dlsrv::layout::archive_path("senddata", station, t));
        std::fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
        std::fs::write(&path, message(station, t, k == 0)).expect("write");
    }
}

fn export_csv(site: &Site) -> String {
    let (code, out, err) = site.dlsrv(&["export", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn retention_removes_only_verified_bodies_and_the_export_stays_the_same() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(
        &garage,
        "keep_local_days = 1",
        "[retention_by_station]\nKEEP = 0",
    );
    for (station, days) in [("OLD1", 5), ("OLD2", 3), ("KEEP", 4), ("NEW", 0)] {
        old_bodies(&site.data(), station, days, 8);
    }
    assert_eq!(site.dlsrv(&["reindex"]).0, 0);
    let before = export_csv(&site);
    let (_, status_before, _) = site.dlsrv(&["status", "--format", "csv"]);
    // Replicate everything (retention at this start finds nothing verified).
    let replicator = site.replicator();
    site.wait_replicated(32, Duration::from_secs(60));
    let log = replicator.stop();
    assert!(log.contains("16 due but not verified"), "{log}");
    assert_eq!(site.bodies().len(), 32, "nothing left the disk unverified");
    // One old body's object damaged: it must stay.
    let damaged = site
        .bodies()
        .into_keys()
        .find(|k| k.contains("OLD2_"))
        .expect("OLD2");
    garage.overwrite("archive", &format!("net-a/{damaged}"), b"damaged");
    let (_, plan, _) = site.dlsrv(&["check-config"]);
    let (_, _, plan_err) = site.dlsrv(&["check-config"]);
    assert!(plan.is_empty() || plan.contains("[replica]"), "{plan}");
    assert!(plan_err.contains("would remove 16 bodies"), "{plan_err}");
    let replicator = site.replicator();
    replicator.wait_for("retention: removed", Duration::from_secs(30));
    let log = replicator.stop();
    assert!(log.contains("removed 15 bodies"), "{log}");
    let left: Vec<String> = site.bodies().into_keys().collect();
    assert_eq!(left.len(), 17, "{left:?}");
    assert!(left.contains(&damaged), "the unverified body stays");
    assert!(
        left.iter().filter(|k| k.contains("KEEP_")).count() == 8,
        "kept forever"
    );
    assert!(
        left.iter().filter(|k| k.contains("NEW_")).count() == 8,
        "recent"
    );
    let removed: i64 = site
        .catalog()
        .query_row(
            "SELECT count(*) FROM transmissions WHERE removed_utc IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(removed, 15, "the catalog remembers where each body lives");
    assert_eq!(
        export_csv(&site),
        before,
        "the export reads the rest from the replica"
    );
    let (_, status_after, _) = site.dlsrv(&["status", "--format", "csv"]);
    assert_eq!(
        strip_age(&status_after),
        strip_age(&status_before),
        "the status views are the same"
    );
    // A plain reindex keeps the rows of bodies in the replica only; with
    // --from-replica a catalog rebuilt from nothing gets them back.
    assert_eq!(site.dlsrv(&["reindex"]).0, 0);
    assert_eq!(export_csv(&site), before);
    std::fs::remove_file(site.state().join("catalog.sqlite3")).expect("rm catalog");
    let _ = std::fs::remove_file(site.state().join("catalog.sqlite3-wal"));
    let _ = std::fs::remove_file(site.state().join("catalog.sqlite3-shm"));
    let (code, _, err) = site.dlsrv(&["reindex", "--from-replica"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("15 bodies that only the replica holds"),
        "{err}"
    );
    assert_eq!(export_csv(&site), before);
}

/// The `status --format csv` rows without the columns that move with the clock.
fn strip_age(csv: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.contains("age") && !h.contains("late"))
        .map(|(i, _)| i)
        .collect();
    csv.lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            keep.iter()
                .map(|&i| cells.get(i).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn retention_days_without_a_replica_deletes_old_bodies_but_never_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dlsrv.toml");
    std::fs::write(
        &config,
        format!(
            "station_access = \"any\"\ndata_dir = \"{}\"\nstate_dir = \"{}\"\nretention_days = 2\n\
             [retention_by_station]\nKEEP = 0\n",
            dir.path().join("data").display(),
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    for (station, days) in [("OLD", 5), ("KEEP", 5), ("NEW", 1)] {
        old_bodies(&data, station, days, 4);
    }
    let run = |args: &[&str]| {
        let out = dlsrv_command()
            .args(args)
            .env("DLSRV_CONFIG", &config)
            .output()
            .expect("dlsrv");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run(&["reindex"]).0, Some(0));
    let (code, err) = run(&["check-config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("would remove 4 bodies"), "{err}");
    assert_eq!(
        common::files_under(&data).len(),
        12,
        "check-config removes nothing"
    );
    let state_before = common::files_under(&dir.path().join("state"));
    let replicator = Replicator::start(&config);
    replicator.wait_for("retention: removed 4 bodies", Duration::from_secs(30));
    replicator.stop();
    let left = common::files_under(&data);
    assert_eq!(left.len(), 8);
    assert!(left.iter().all(|p| !p.to_string_lossy().contains("OLD_")));
    let (_, status) = run(&["status"]);
    let out = dlsrv_command()
        .args(["status", "--format", "csv"])
        .env("DLSRV_CONFIG", &config)
        .output()
        .expect("status");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.contains("OLD"),
        "the station stays known: {csv}{status}"
    );
    let state_after = common::files_under(&dir.path().join("state"));
    for f in &state_before {
        assert!(
            state_after.contains(f),
            "{} still in state_dir",
            f.display()
        );
    }
}

#[test]
fn disaster_recovery_restores_every_body_byte_exact_and_the_same_status() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    site.stored(300);
    let replicator = site.replicator();
    site.wait_replicated(300, Duration::from_secs(60));
    replicator.stop();
    let before = site.bodies();
    let (_, status_before, _) = site.dlsrv(&["status", "--format", "csv"]);
    let export_before = export_csv(&site);
    // The disk is lost.
    std::fs::remove_dir_all(site.data()).expect("rm data");
    std::fs::remove_dir_all(site.state()).expect("rm state");
    // One station first, then the rest.
    let (code, _, err) = site.dlsrv(&["restore", "--from-replica", "--station", "R007"]);
    assert_eq!(code, 0, "{err}");
    let one = site.bodies();
    assert!(
        !one.is_empty() && one.keys().all(|k| k.contains("/R007_")),
        "{:?}",
        one.keys()
    );
    let (code, _, err) = site.dlsrv(&["restore", "--from-replica"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("{} already on the disk", one.len())),
        "{err}"
    );
    let after = site.bodies();
    assert_eq!(after.len(), before.len());
    assert!(after == before, "every body byte-exact");
    let (code, _, err) = site.dlsrv(&["reindex"]);
    assert_eq!(code, 0, "{err}");
    let (_, status_after, _) = site.dlsrv(&["status", "--format", "csv"]);
    assert_eq!(strip_age(&status_after), strip_age(&status_before));
    assert_eq!(export_csv(&site), export_before);
    // A body replaced by a link (not a plain file): named, not counted as there.
    let linked = after.keys().next().expect("a body").clone();
    let path = site.data().join(&linked);
    std::fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink("/etc/hostname", &path).expect("symlink");
    let (code, out, _) = site.dlsrv(&["restore", "--from-replica"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(linked.as_str()) && out.contains("cannot be read"),
        "{out}"
    );
    std::fs::remove_file(&path).expect("rm link");
    assert_eq!(site.dlsrv(&["restore", "--from-replica"]).0, 0);
    assert!(std::fs::read(&path).expect("restored") == after[&linked]);
    // The new catalog's rows are found in the replica: nothing goes up twice.
    let replicator = site.replicator();
    site.wait_replicated(300, Duration::from_secs(60));
    replicator.stop();
    assert_eq!(garage.keys("archive").len(), 300);
}

#[test]
fn the_parquet_dataset_in_the_bucket_reads_back_with_the_same_sums() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let site = Site::new(&garage, "", "");
    for (station, days) in [("P1", 3), ("P2", 2), ("P3", 1)] {
        old_bodies(&site.data(), station, days, 12);
    }
    let (code, _, err) = site.dlsrv(&[
        "export",
        "--format",
        "parquet",
        "--output",
        "s3://lake/values",
        "--partition",
        "date",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("uploaded to s3://lake/values"), "{err}");
    let keys = garage.keys("lake");
    assert!(keys.iter().any(|(k, _)| k == "values/_SUCCESS"), "{keys:?}");
    assert!(
        keys.iter().filter(|(k, _)| k.contains("/date=")).count() >= 3,
        "{keys:?}"
    );
    // Again into the same prefix: refused, nothing changed.
    let (code, _, err) = site.dlsrv(&[
        "export",
        "--format",
        "parquet",
        "--output",
        "s3://lake/values",
        "--partition",
        "date",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("holds objects"), "{err}");
    let csv = export_csv(&site);
    let (mut csv_sum, mut csv_rows) = (0.0, 0);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "value")
        .expect("value column");
    for line in lines {
        if let Some(v) = line.split(',').nth(col).and_then(|v| v.parse::<f64>().ok()) {
            csv_sum += v;
        }
        csv_rows += 1;
    }
    let script = format!(
        "import pyarrow.fs as fs, pyarrow.dataset as ds, pyarrow.compute as pc\n\
         s3 = fs.S3FileSystem(access_key='{}', secret_key='{}', endpoint_override='127.0.0.1:{}', scheme='http', region='garage')\n\
         t = ds.dataset('lake/values', filesystem=s3, format='parquet', partitioning='hive', exclude_invalid_files=True).to_table()\n\
         print(t.num_rows, pc.sum(t['value']).as_py(), len(set(t['date'].to_pylist())))\n",
        garage.key_id, garage.secret, garage.s3_port
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let rows: usize = parts.next().and_then(|v| v.parse().ok()).expect("rows");
    let sum: f64 = parts.next().and_then(|v| v.parse().ok()).expect("sum");
    let days: usize = parts.next().and_then(|v| v.parse().ok()).expect("days");
    assert_eq!(rows, csv_rows, "{text}");
    assert!((sum - csv_sum).abs() < 1e-6, "{sum} against {csv_sum}");
    assert!(days >= 3, "{text}");
}

#[test]
fn check_config_checks_the_credentials_and_never_prints_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = dir.path().join("s3");
    std::fs::write(
        &credentials,
        "aws_access_key_id = GKtest\naws_secret_access_key = very-secret-value\n",
    )
    .expect("credentials");
    let config = dir.path().join("dlsrv.toml");
    let check = |replica: &str| {
        std::fs::write(
            &config,
            format!(
                "station_access = \"any\"\ndata_dir = \"{}\"\nstate_dir = \"{}\"\n{replica}",
                dir.path().join("data").display(),
                dir.path().join("state").display()
            ),
        )
        .expect("config");
        let out = dlsrv_command()
            .arg("check-config")
            .env("DLSRV_CONFIG", &config)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .expect("dlsrv");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("very-secret-value"), "{text}");
        (out.status.code(), text)
    };
    let table = |extra: &str| {
        format!(
            "[replica]\nurl = \"s3://archive/net-a\"\nendpoint = \"http://127.0.0.1:9\"\n\
             region = \"garage\"\npath_style = true\n{extra}"
        )
    };
    let (code, text) = check(&table(""));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no credentials"), "{text}");
    let with_file = table(&format!(
        "credentials_file = \"{}\"\n",
        credentials.display()
    ));
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, text) = check(&with_file);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("0644") && text.contains("credentials_file"),
        "{text}"
    );
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, text) = check(&with_file);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("credentials from") && text.contains("s3://archive/net-a"),
        "{text}"
    );
    let (code, text) = check(&table("colour = 1\n"));
    assert_eq!(code, Some(1));
    assert!(text.contains("colour"), "an unknown [replica] key: {text}");
    let (code, text) = check("[replica]\nurl = \"https://archive\"\n");
    assert_eq!(code, Some(1));
    assert!(text.contains("s3://"), "{text}");
}

#[test]
fn with_a_shared_catalog_each_host_exports_every_hosts_bodies_once() {
    let Some(pg) = common::pg::Cluster::start() else {
        return;
    };
    let Some(garage) = Garage::start() else {
        return;
    };
    let url = pg.postgresql_url();
    let shared = |host: &str| format!("catalog_url = \"{url}\"\nhost_name = \"{host}\"");
    let a = Site::new(&garage, "", &shared("a"));
    let b = Site::new(&garage, "", &shared("b"));
    // Bodies at both hosts, each copied to the one replica by its own host.
    for (site, from) in [(&a, 0), (&b, 1000)] {
        let daemon = site.serve();
        post(&daemon.socket, from, 30);
        daemon.sigterm();
        assert!(daemon.wait().0);
    }
    for site in [&a, &b] {
        let replicator = site.replicator();
        site.wait_replicated_own(30, Duration::from_secs(60));
        replicator.stop();
    }
    // Each host's catalog learns the other's rows while it serves.
    let (da, db) = (a.serve_as("again"), b.serve_as("again"));
    let until = Instant::now() + Duration::from_secs(30);
    while a.counts().0 < 60 || b.counts().0 < 60 {
        assert!(Instant::now() < until, "{:?} {:?}", a.counts(), b.counts());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same rows from either host: its own bodies from its disk, the
    // other's from the replica.
    let (from_a, from_b) = (export_csv(&a), export_csv(&b));
    assert_eq!(from_a, from_b);
    assert_eq!(
        from_a.lines().count(),
        61,
        "60 bodies of one value each, and the header"
    );
    // A cursor on b: each body once, whichever host stored it.
    let (code, first, _) = b.dlsrv(&["export", "--format", "csv", "--since-cursor", "night"]);
    assert_eq!((code, first.lines().count()), (0, 61));
    post(&da.socket, 2000, 5);
    let until = Instant::now() + Duration::from_secs(30);
    while b.counts().0 < 65 {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(100));
    }
    // a's new bodies are read from a's replica once copied.
    let replicator = a.replicator();
    a.wait_replicated_own(35, Duration::from_secs(60));
    replicator.stop();
    let (code, second, err) = b.dlsrv(&["export", "--format", "csv", "--since-cursor", "night"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        second.lines().count(),
        6,
        "the 5 new bodies, once: {second}"
    );
    drop((da, db));
}
