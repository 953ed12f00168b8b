//! `dlsrv export` in bounded memory, whatever the archive's shape: one
//! station's long history, and bodies that resend the same values, each
//! exported under a memory limit of 128 MiB (a memory cgroup) that an
//! export holding a station's rows in memory exceeds. The rows with the
//! sort spilled to disk are the same bytes as with every row in memory.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{Duration, Utc};
use common::dlsrv_command;

const LIMIT: u64 = 128 << 20;

/// A body of `station` with three channels of 304 values from `start`
/// (minutes), as a logger's 44 KB message.
fn body(station: &str, start: i64) -> Vec<u8> {
    let base = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let mut channels = String::new();
    for (ch, name) in [
        ("0010", "Wasserstand"),
        ("0020", "Temperatur"),
        ("0030", "Niederschlag"),
    ] {
        let values: String = (0..304)
            .map(|k| {
                let t = base + Duration::minutes(start + k);
                format!(
                    "<VT t=\"{}\">{}.{:02}</VT>",
                    t.format("%Y-%m-%dT%H:%M:%S"),
                    start % 500,
                    k % 100
                )
            })
            .collect();
        channels.push_str(&format!(
            "<ChannelData channelId=\"{ch}\" name=\"{name}\" unit=\"cm\"><Values>{values}</Values></ChannelData>"
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><StationDataList><StationData stationId=\"{station}\" name=\"Pegel\" timezone=\"+01:00\">{channels}</StationData></StationDataList>"
    )
    .into_bytes()
}

/// Writes `n` bodies of one station, received a minute apart; `step`
/// minutes between their first values (304: a history; 0: resends).
fn archive(data: &Path, n: i64, step: i64) {
    let received = Utc::now() - Duration::days(30);
    for i in 0..n {
        let t = received + Duration::minutes(i);
        let rel = dlsrv::layout::archive_path("senddata", "0000000001", t);
        let path = data.join(rel);
        fs::create_dir_all(path.parent().expect("day")).expect("mkdir");
        fs::write(&path, body("0000000001", i * step)).expect("write");
    }
}

/// A memory cgroup limited to `limit` bytes; removed on drop.
struct Cgroup {
    dir: std::path::PathBuf,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Option<Cgroup> {
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_memory = fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
        let (dir, files): (std::path::PathBuf, &[&str]) = if v2_memory {
            (v2.join(name), &["memory.max", "memory.swap.max"])
        } else {
            (
                Path::new("/sys/fs/cgroup/memory").join(name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            )
        };
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).ok()?;
        let cgroup = Cgroup { dir };
        // The limit on memory; and on memory and swap together where the
        // kernel counts swap (none may be had instead).
        fs::write(cgroup.dir.join(files[0]), limit.to_string()).ok()?;
        let swap = if v2_memory { 0 } else { limit };
        let _ = fs::write(cgroup.dir.join(files[1]), swap.to_string());
        Some(cgroup)
    }

    /// `dlsrv ARGS` in the cgroup (the shell moves itself in, then execs).
    fn run(&self, dir: &Path, args: &[&str], out: &Path) -> (std::process::ExitStatus, u64) {
        let dlsrv = env!("CARGO_BIN_EXE_dlsrv");
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {dlsrv} \"$@\"",
            self.dir.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, "sh"]).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("DLSRV_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .env("DLSRV_DATA_DIR", dir.join("data"))
            .env("DLSRV_STATE_DIR", dir.join("state"))
            .stdout(fs::File::create(out).expect("output"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        wait_with_maxrss(child)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Waits for `child`; its status and peak resident memory (bytes).
fn wait_with_maxrss(child: std::process::Child) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as nix::libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our child.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    (
        std::process::ExitStatus::from_raw(status),
        u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    )
}

fn limited(name: &str) -> Option<Cgroup> {
    let cgroup = Cgroup::new(name, LIMIT);
    if cgroup.is_none() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no memory cgroup could be made and CI=true: the tests run as root there"
        );
        eprintln!("SKIPPED {name}: cannot make a memory cgroup (not root?)");
    }
    cgroup
}

/// Exports `dir` as CSV in 128 MiB, spilled, and again with every row in
/// memory (no limit); the same bytes. Returns the peak RSS and rows.
fn bounded_export(dir: &Path, name: &str, extra: &[&str]) -> Option<(u64, usize)> {
    let cgroup = limited(name)?;
    let spilled = dir.join("spilled.csv");
    let mut args = vec!["export", "--format", "csv"];
    args.extend_from_slice(extra);
    let (status, maxrss) = cgroup.run(dir, &args, &spilled);
    assert!(
        status.success(),
        "{name}: the export in 128 MiB: {status:?}"
    );
    assert!(maxrss <= LIMIT, "{name}: peak RSS {maxrss}");
    // Every row in memory, as the export held them before: past the limit.
    let held = dir.join("held.csv");
    let mut all_in_memory = args.clone();
    all_in_memory.push("--sort-buffer-mib=4000");
    let (status, _) = cgroup.run(dir, &all_in_memory, &held);
    assert!(
        !status.success(),
        "{name}: holding the station's rows needs more than 128 MiB"
    );
    // And without the limit: the same rows, byte for byte.
    let out = dlsrv_command()
        .args(&all_in_memory)
        .env("DLSRV_DATA_DIR", dir.join("data"))
        .env("DLSRV_STATE_DIR", dir.join("state"))
        .stdout(fs::File::create(&held).expect("held"))
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = same_lines(&spilled, &held);
    assert!(rows.is_some(), "{name}: spilled and in-memory rows differ");
    Some((maxrss, rows.unwrap_or(0) - 1))
}

/// The number of lines of two files when they are the same bytes, read a
/// piece at a time: this process stays small, as a child's peak RSS
/// counts its parent's while it is being started (vfork shares the
/// parent's memory until the exec).
fn same_lines(a: &Path, b: &Path) -> Option<usize> {
    use std::io::Read;
    let (mut a, mut b) = (fs::File::open(a).expect("a"), fs::File::open(b).expect("b"));
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut lines = 0;
    loop {
        let n = a.read(&mut x).expect("read");
        if n == 0 {
            return (b.read(&mut y).expect("read") == 0).then_some(lines);
        }
        b.read_exact(&mut y[..n]).ok()?;
        if x[..n] != y[..n] {
            return None;
        }
        lines += x[..n].iter().filter(|&&c| c == b'\n').count();
    }
}

#[test]
fn one_stations_long_history_is_exported_in_128_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1,000 messages of one station, 912 values each: 912,000 rows.
    archive(&dir.path().join("data"), 1_000, 304);
    let Some((maxrss, rows)) = bounded_export(dir.path(), "dlsrv-test-history", &[]) else {
        return;
    };
    assert_eq!(rows, 912_000);
    common::figure(&format!(
        "export memory: one station, {rows} rows: peak RSS {} MiB (limit 128)",
        maxrss >> 20
    ));
}

#[test]
fn resends_of_the_same_values_every_copy_are_exported_in_128_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1,000 messages that all carry the same 912 values.
    archive(&dir.path().join("data"), 1_000, 0);
    let Some((maxrss, rows)) = bounded_export(dir.path(), "dlsrv-test-resends", &["--all-copies"])
    else {
        return;
    };
    assert_eq!(rows, 912_000, "every copy");
    common::figure(&format!(
        "export memory: 1,000 resends, --all-copies, {rows} rows: peak RSS {} MiB (limit 128)",
        maxrss >> 20
    ));
    // Collapsed: one row per value, the most recently received.
    let out = dlsrv_command()
        .args(["export", "--format", "csv", "--sort-buffer-mib=1"])
        .env("DLSRV_DATA_DIR", dir.path().join("data"))
        .env("DLSRV_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("export");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 912 + 1);
    let data = dir.path().join("data");
    let mut files = common::files_under(&data);
    files.sort();
    let newest = files.last().expect("files");
    let newest = newest
        .strip_prefix(&data)
        .expect("relative")
        .to_string_lossy()
        .into_owned();
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.ends_with(&format!(",{newest}"))),
        "every row from the newest body, {newest}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("911088 duplicates collapsed"));
}

#[test]
fn parquet_by_date_writes_each_day_once_in_128_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1,000 messages of 304 one-minute values: 212 UTC days.
    archive(&dir.path().join("data"), 1_000, 304);
    let Some(cgroup) = limited("dlsrv-test-parquet-days") else {
        return;
    };
    let out = dir.path().join("days");
    let log = dir.path().join("log");
    let out_arg = out.display().to_string();
    let (status, maxrss) = cgroup.run(
        dir.path(),
        &[
            "export",
            "--format",
            "parquet",
            "--partition",
            "date",
            "--output",
            &out_arg,
        ],
        &log,
    );
    assert!(status.success(), "{status:?}");
    assert!(maxrss <= LIMIT, "peak RSS {maxrss}");
    let days: Vec<_> = fs::read_dir(&out)
        .expect("the dataset")
        .map(|e| e.expect("entry").path())
        .collect();
    // The values: a minute apart from 2020-01-01T00:00 at +01:00.
    let first = chrono::DateTime::parse_from_rfc3339("2019-12-31T23:00:00Z").expect("time");
    let want: std::collections::BTreeSet<_> = (0..304_000)
        .step_by(60)
        .chain([303_999])
        .map(|m| (first + Duration::minutes(m)).date_naive())
        .collect();
    assert_eq!(days.len(), want.len(), "one directory per UTC day");
    for day in &days {
        let parts = fs::read_dir(day).expect("day").count();
        assert_eq!(
            parts,
            1,
            "{}: one file per day, written once",
            day.display()
        );
    }
    common::figure(&format!(
        "export memory: Parquet by date, 912000 rows in {} days: peak RSS {} MiB (limit 128)",
        days.len(),
        maxrss >> 20
    ));
}
