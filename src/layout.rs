//! Every path and every time format dlsrv uses, in one place.
//!
//! The archive (`data_dir`) holds nothing but bodies:
//!
//! ```text
//! <data_dir>/<action>/YYYY/MM/DD/<stationid>_<YYYY-MM-DDTHH+MM+SS.ffffff>
//! <data_dir>/<action>/YYYY/MM/DD/<name>.<pid>-<n><temp_suffix>     while it is written
//! ```
//!
//! The service's own state (`state_dir`) holds the rest:
//!
//! ```text
//! <state_dir>/catalog.sqlite3                          the catalog (SQLite, WAL)
//! <state_dir>/commands/<station>/{pending,sent,cancelled}/<id>.xml …   the command queue
//! <state_dir>/rejected/YYYY/MM/DD/<stationid>_<time>   a refused body, as it arrived
//! <state_dir>/rejected/YYYY/MM/DD/<stationid>_<time>.reason
//! ```
//!
//! Dates and times are UTC. [`ArchiveReader`] walks the archive read-only.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

/// The time in archive names: ISO 8601 with `:` written as `+`, six fraction digits.
const NAME_TIME: &str = "%Y-%m-%dT%H+%M+%S%.6f";
/// The same without a fraction, as the Flask service wrote names whose
/// microseconds were zero (Python's `isoformat()` drops them).
const NAME_TIME_WHOLE: &str = "%Y-%m-%dT%H+%M+%S";
/// Length of the time part of a name: `2020-10-22T00+01+06.209619`.
const NAME_TIME_LEN: usize = 26;
const NAME_TIME_WHOLE_LEN: usize = 19;

/// The catalog database in `state_dir`.
pub const CATALOG: &str = "catalog.sqlite3";
/// The command queue in `state_dir`.
pub const COMMANDS: &str = "commands";
/// Refused bodies in `state_dir`.
pub const REJECTED: &str = "rejected";
/// Where `dlsrv export --since-cursor` keeps its cursors, in `state_dir`.
pub const EXPORT_CURSORS: &str = "export-cursors";
/// Where export feeds (`dlsrv export --follow NAME`) say how far they are, in `state_dir`.
pub const EXPORT_FEEDS: &str = "export-feeds";
/// The exports' temporary files (the file list, sort runs), in `state_dir`.
pub const EXPORT_TMP: &str = "export-tmp";
/// The replicator's state and lock, and verify's last run, in `state_dir`.
pub const REPLICA_STATE: &str = "replica.json";
pub const REPLICA_LOCK: &str = "replica.lock";
pub const VERIFY_LAST: &str = "verify-last.json";
/// Where an installation before `state_dir` kept its duplicate markers, in `data_dir`.
pub const LEGACY_DUPLICATES: &str = ".duplicates";
/// The suffix of the file beside a rejected body that says why it was refused.
pub const REASON_SUFFIX: &str = ".reason";

/// `YYYY-MM-DDTHH<sep>MM<sep>SS.ffffff` of `t`, written with plain number
/// formatting: chrono's `format` parses its pattern on every call, and
/// these run several times per stored body.
fn time_text(out: &mut String, t: DateTime<Utc>, sep: char) {
    use std::fmt::Write as _;
    let (d, tm) = (t.date_naive(), t.time());
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}{sep}{:02}{sep}{:02}.{:06}",
        d.year(),
        d.month(),
        d.day(),
        tm.hour(),
        tm.minute(),
        tm.second(),
        // A leap second is written as 59.999999+, as chrono writes it.
        tm.nanosecond() / 1000
    );
}

/// `<stationid>_<YYYY-MM-DDTHH+MM+SS.ffffff>`, the name of an archived body.
pub fn file_name(station: &str, t: DateTime<Utc>) -> String {
    let mut name = String::with_capacity(station.len() + 27);
    name.push_str(station);
    name.push('_');
    time_text(&mut name, t, '+');
    name
}

/// `YYYY/MM/DD` of `t`, relative.
pub fn date_path(t: DateTime<Utc>) -> PathBuf {
    let d = t.date_naive();
    PathBuf::from(format!("{:04}/{:02}/{:02}", d.year(), d.month(), d.day()))
}

/// `<action>/YYYY/MM/DD`, relative to the archive root.
pub fn day_dir(action: &str, t: DateTime<Utc>) -> PathBuf {
    Path::new(action).join(date_path(t))
}

/// `<action>/YYYY/MM/DD/<stationid>_<time>`, relative to the archive root.
pub fn archive_path(action: &str, station: &str, t: DateTime<Utc>) -> PathBuf {
    day_dir(action, t).join(file_name(station, t))
}

/// The station id and receipt time an archive name carries. Accepts the
/// names of the Flask service too (no fraction when it was zero).
pub fn parse_file_name(name: &str) -> Option<(&str, DateTime<Utc>)> {
    let (len, format) =
        if name.len() > NAME_TIME_LEN && name.as_bytes()[name.len() - NAME_TIME_LEN - 1] == b'_' {
            (NAME_TIME_LEN, NAME_TIME)
        } else if name.len() > NAME_TIME_WHOLE_LEN
            && name.as_bytes()[name.len() - NAME_TIME_WHOLE_LEN - 1] == b'_'
        {
            (NAME_TIME_WHOLE_LEN, NAME_TIME_WHOLE)
        } else {
            return None;
        };
    let split = name.len() - len;
    let (station, time) = (name.get(..split - 1)?, name.get(split..)?);
    if station.is_empty() {
        return None;
    }
    let t = NaiveDateTime::parse_from_str(time, format).ok()?.and_utc();
    Some((station, t))
}

/// The action, station id and receipt time of an archive path
/// (`<action>/YYYY/MM/DD/<name>`, relative, as the catalog and the
/// replica's keys have it); `None` for anything else.
pub fn parse_archive_path(rel: &str) -> Option<(&str, &str, DateTime<Utc>)> {
    let mut parts = rel.splitn(5, '/');
    let (action, y, m, d, name) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if action.is_empty() || name.contains('/') {
        return None;
    }
    let (station, t) = parse_file_name(name)?;
    let day = date_path(t);
    (day == Path::new(y).join(m).join(d)).then_some((action, station, t))
}

/// `<base>.<pid>-<seq><suffix>`: the name a file has while it is written.
pub fn temp_name(base: &str, pid: u32, seq: u64, suffix: &str) -> String {
    format!("{base}.{pid}-{seq}{suffix}")
}

/// `2020-10-22T00:01:06.209619`: the `responseDateTime` of the OTT
/// Response, and the times in the queue's records. UTC, no offset.
pub fn response_time(t: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(26);
    time_text(&mut out, t, ':');
    out
}

/// `2020-10-22T00:01:06.209619Z`: RFC 3339 in UTC with six fraction digits,
/// the form of every time in the catalog. Fixed width, so text order is
/// time order.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(27);
    time_text(&mut out, t, ':');
    out.push('Z');
    out
}

/// `2020-10-22T00:15:00Z`: a value's time in exports. Whole seconds (what
/// loggers send), fractions only when there are some.
pub fn rfc3339_seconds(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// [`rfc3339_seconds`] in a buffer of its own, without allocating: an
/// export writes one per row, hundreds of thousands a second. Whole seconds
/// of the years 0–9999 are written here digit by digit; anything else by chrono.
pub struct TimeText {
    buf: [u8; 40],
    len: usize,
}

impl TimeText {
    pub fn of(t: DateTime<Utc>) -> TimeText {
        let mut text = TimeText {
            buf: [0; 40],
            len: 0,
        };
        let (d, tm) = (t.date_naive(), t.time());
        if tm.nanosecond() == 0 && (0..=9999).contains(&d.year()) {
            let year = u32::try_from(d.year()).unwrap_or(0);
            let parts = [
                (year, 4, b'-'),
                (d.month(), 2, b'-'),
                (d.day(), 2, b'T'),
                (tm.hour(), 2, b':'),
                (tm.minute(), 2, b':'),
                (tm.second(), 2, b'Z'),
            ];
            for (mut n, width, sep) in parts {
                for i in (0..width).rev() {
                    text.buf[text.len + i] = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                text.buf[text.len + width] = sep;
                text.len += width + 1;
            }
        } else {
            let s = rfc3339_seconds(t);
            let n = s.len().min(text.buf.len());
            text.buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            text.len = n;
        }
        text
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// Reads an RFC 3339 time (any offset) or the queue's `response_time` form.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// A command line's time `T`: RFC 3339, or a date (its start).
pub fn parse_from(s: &str) -> Result<DateTime<Utc>, String> {
    parse_when(s, false)
}

/// `T` as RFC 3339, or a date (the start of the next day: `--to` is exclusive).
pub fn parse_to(s: &str) -> Result<DateTime<Utc>, String> {
    parse_when(s, true)
}

fn parse_when(s: &str, day_end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is neither RFC 3339 (2026-01-31T06:00:00Z) nor a date"))?;
    let day = if day_end {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// Queue ids are the queueing time, `YYYYMMDDTHHMMSS.ffffff`: sorting is age order.
pub fn command_id(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.6f").to_string()
}

/// `<state_dir>/catalog.sqlite3`.
pub fn catalog_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CATALOG)
}

/// `<state_dir>/export-cursors/<name>`: where `dlsrv export --since-cursor` stopped.
pub fn export_cursor_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(EXPORT_CURSORS).join(name)
}

/// `<state_dir>/export-feeds/<name>.json`: how far the feed `name` is.
pub fn export_feed_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(EXPORT_FEEDS).join(format!("{name}.json"))
}

/// `<state_dir>/export-tmp`: one directory per running export below it.
pub fn export_tmp_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(EXPORT_TMP)
}

/// A name for a cursor or a feed: letters, digits, `-`, `_`, `.`, at most
/// 64, not starting with `.` (it names a file in `state_dir`).
pub fn valid_export_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// `commands/<station>/<sub>`, relative to `state_dir`.
pub fn queue_dir(station: &str, sub: &str) -> PathBuf {
    Path::new(COMMANDS).join(station).join(sub)
}

/// `<state_dir>/commands/<station>/<sub>`.
pub fn queue_path(state_dir: &Path, station: &str, sub: &str) -> PathBuf {
    state_dir.join(queue_dir(station, sub))
}

/// `rejected/YYYY/MM/DD`, relative to `state_dir`.
pub fn rejected_day_dir(t: DateTime<Utc>) -> PathBuf {
    Path::new(REJECTED).join(date_path(t))
}

/// Reads a body of the archive: a plain file under `data_dir` at a relative
/// path of plain names (no `..`), not through a symbolic link at its end.
pub fn read_body(data_dir: &Path, rel: &str) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let rel_path = Path::new(rel);
    let plain = rel_path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || rel.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a path inside the archive",
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(data_dir.join(rel_path))?;
    let mut body = Vec::new();
    file.read_to_end(&mut body)?;
    Ok(body)
}

/// A path relative to a root, written with `/`, as the catalog stores it.
pub fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// One body found in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: String,
    pub station: String,
    /// The receipt time its name carries.
    pub received: DateTime<Utc>,
    /// The path relative to `data_dir`: `senddata/2020/10/22/0000452891_…`.
    pub relative: String,
    pub path: PathBuf,
}

/// What to read: actions, an inclusive range of UTC days, stations.
/// Empty or `None` means everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub actions: Vec<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub stations: Vec<String>,
}

impl Selection {
    fn wants_day(&self, day: NaiveDate) -> bool {
        self.from.is_none_or(|f| day >= f) && self.to.is_none_or(|t| day <= t)
    }

    fn wants_station(&self, station: &str) -> bool {
        self.stations.is_empty() || self.stations.iter().any(|s| s == station)
    }
}

/// The bodies of one day directory, and what in it is not a body.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Temp files of writes in progress (or left by a crash).
    pub temps: usize,
    /// Names that are neither bodies nor temp files, relative to `data_dir`.
    pub foreign: Vec<String>,
}

/// Reads the archive without ever writing to it: no directory is created,
/// nothing is opened for writing, symbolic links are not followed.
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    root: PathBuf,
    temp_suffix: String,
}

impl ArchiveReader {
    /// The archive at `root`; it must exist.
    pub fn open(root: &Path, temp_suffix: &str) -> io::Result<ArchiveReader> {
        let meta = fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(ArchiveReader {
            root: root.to_path_buf(),
            temp_suffix: temp_suffix.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The action directories present, of those named in `known`, sorted.
    pub fn actions(&self, known: &[&str]) -> io::Result<Vec<String>> {
        let mut found: Vec<String> = subdirs(&self.root)?
            .into_iter()
            .filter(|name| known.contains(&name.as_str()))
            .collect();
        found.sort();
        Ok(found)
    }

    /// The UTC days that have a directory under `action`, oldest first.
    pub fn days(&self, action: &str) -> io::Result<Vec<NaiveDate>> {
        let mut days = Vec::new();
        let action_dir = self.root.join(action);
        for year in numbered_subdirs(&action_dir, 4)? {
            let year_dir = action_dir.join(format!("{year:04}"));
            for month in numbered_subdirs(&year_dir, 2)? {
                let month_dir = year_dir.join(format!("{month:02}"));
                for day in numbered_subdirs(&month_dir, 2)? {
                    let date = i32::try_from(year)
                        .ok()
                        .and_then(|y| NaiveDate::from_ymd_opt(y, month, day));
                    if let Some(date) = date {
                        days.push(date);
                    }
                }
            }
        }
        days.sort();
        Ok(days)
    }

    /// The bodies in one day directory, oldest name first.
    pub fn day(&self, action: &str, day: NaiveDate, selection: &Selection) -> io::Result<Listing> {
        let rel_dir = format!(
            "{action}/{:04}/{:02}/{:02}",
            day.year(),
            day.month(),
            day.day()
        );
        let dir = self.root.join(&rel_dir);
        let mut listing = Listing::default();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                listing
                    .foreign
                    .push(format!("{rel_dir}/{}", entry.file_name().to_string_lossy()));
                continue;
            };
            if name.ends_with(&self.temp_suffix) {
                listing.temps += 1;
                continue;
            }
            // file_type() does not follow symbolic links: only real files are bodies.
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            match parse_file_name(name) {
                Some((station, received)) if is_file => {
                    if selection.wants_station(station) {
                        listing.entries.push(Entry {
                            action: action.to_owned(),
                            station: station.to_owned(),
                            received,
                            relative: format!("{rel_dir}/{name}"),
                            path: entry.path(),
                        });
                    }
                }
                _ => listing.foreign.push(format!("{rel_dir}/{name}")),
            }
        }
        listing.entries.sort_by(|a, b| a.relative.cmp(&b.relative));
        Ok(listing)
    }

    /// Every (action, day) the selection covers, oldest day first per action.
    pub fn day_dirs(
        &self,
        known: &[&str],
        selection: &Selection,
    ) -> io::Result<Vec<(String, NaiveDate)>> {
        let mut out = Vec::new();
        for action in self.actions(known)? {
            if !selection.actions.is_empty() && !selection.actions.contains(&action) {
                continue;
            }
            for day in self.days(&action)? {
                if selection.wants_day(day) {
                    out.push((action.clone(), day));
                }
            }
        }
        Ok(out)
    }
}

/// Names of the real subdirectories of `dir` (not following links).
fn subdirs(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The subdirectories of `dir` named by exactly `width` digits, as numbers, sorted.
fn numbered_subdirs(dir: &Path, width: usize) -> io::Result<Vec<u32>> {
    let mut numbers: Vec<u32> = subdirs(dir)?
        .into_iter()
        .filter(|n| n.len() == width && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(us: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 10, 22, 0, 1, 6)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(us)
    }

    #[test]
    fn time_text_is_rfc3339_seconds() {
        for t in [
            "2026-11-20T06:45:00Z",
            "0999-01-02T03:04:05Z",
            "2026-11-20T06:45:00.250Z",
            "2026-11-20T06:45:00.000001Z",
        ] {
            let parsed = parse_time(t).expect("time");
            assert_eq!(
                TimeText::of(parsed).as_str(),
                rfc3339_seconds(parsed),
                "{t}"
            );
        }
        let t = parse_time("2026-11-20T06:45:00Z").expect("time");
        assert_eq!(TimeText::of(t).as_str(), "2026-11-20T06:45:00Z");
    }

    #[test]
    fn names_match_the_old_deployment() {
        assert_eq!(
            file_name("0000452891", t(209_619)),
            "0000452891_2020-10-22T00+01+06.209619"
        );
        assert_eq!(file_name("x", t(0)), "x_2020-10-22T00+01+06.000000");
        assert_eq!(
            day_dir("senddata", t(0)),
            PathBuf::from("senddata/2020/10/22")
        );
        assert_eq!(
            archive_path("senddata", "a_b", t(1)),
            PathBuf::from("senddata/2020/10/22/a_b_2020-10-22T00+01+06.000001")
        );
        assert_eq!(response_time(t(209_619)), "2020-10-22T00:01:06.209619");
        assert_eq!(rfc3339(t(0)), "2020-10-22T00:01:06.000000Z");
        assert_eq!(command_id(t(5)), "20201022T000106.000005");
        assert_eq!(rejected_day_dir(t(0)), PathBuf::from("rejected/2020/10/22"));
        assert_eq!(queue_dir("s", "sent"), PathBuf::from("commands/s/sent"));
    }

    #[test]
    fn names_parse_back_including_the_flask_form() {
        assert_eq!(
            parse_file_name("a_b_2020-10-22T00+01+06.209619"),
            Some(("a_b", t(209_619)))
        );
        assert_eq!(
            parse_file_name("0000452891_2020-10-22T00+01+06"),
            Some(("0000452891", t(0)))
        );
        for bad in [
            "",
            "_2020-10-22T00+01+06",
            "x_2020-10-22T00:01:06",
            "x.tmp",
            "x_2020-13-22T00+01+06.000000",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(parse_time("2020-10-22T00:01:06.000005Z"), Some(t(5)));
        assert_eq!(parse_time("2020-10-22T01:01:06+01:00"), Some(t(0)));
        assert_eq!(parse_time("2020-10-22T00:01:06.000005"), Some(t(5)));
    }

    #[test]
    fn the_reader_lists_bodies_and_never_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let day = root.join("senddata/2020/10/22");
        fs::create_dir_all(&day).expect("mkdir");
        fs::create_dir_all(root.join("senddata/2020/10/xx")).expect("mkdir");
        fs::create_dir_all(root.join("other/2020/10/22")).expect("mkdir");
        for name in [
            "s1_2020-10-22T00+01+06.000001",
            "s2_2020-10-22T00+01+06.000002",
            "s1_2020-10-22T00+01+06.000003.1-1.tmp",
            "notes.txt",
        ] {
            fs::write(day.join(name), b"x").expect("write");
        }
        std::os::unix::fs::symlink(
            day.join("notes.txt"),
            day.join("s3_2020-10-22T00+01+06.000004"),
        )
        .expect("symlink");
        let reader = ArchiveReader::open(root, ".tmp").expect("open");
        assert_eq!(
            reader.actions(&["senddata", "sendalarm"]).expect("actions"),
            vec!["senddata"]
        );
        let date = NaiveDate::from_ymd_opt(2020, 10, 22).expect("date");
        assert_eq!(reader.days("senddata").expect("days"), vec![date]);
        let all = reader
            .day("senddata", date, &Selection::default())
            .expect("day");
        let names: Vec<_> = all.entries.iter().map(|e| e.relative.as_str()).collect();
        assert_eq!(
            names,
            [
                "senddata/2020/10/22/s1_2020-10-22T00+01+06.000001",
                "senddata/2020/10/22/s2_2020-10-22T00+01+06.000002"
            ]
        );
        assert_eq!(all.temps, 1);
        assert_eq!(all.foreign.len(), 2, "{:?}", all.foreign);
        let one = Selection {
            stations: vec!["s2".into()],
            ..Selection::default()
        };
        assert_eq!(
            reader
                .day("senddata", date, &one)
                .expect("day")
                .entries
                .len(),
            1
        );
        let later = Selection {
            from: NaiveDate::from_ymd_opt(2020, 10, 23),
            ..Selection::default()
        };
        assert!(
            reader
                .day_dirs(&["senddata"], &later)
                .expect("dirs")
                .is_empty()
        );
        assert!(ArchiveReader::open(&root.join("absent"), ".tmp").is_err());
        assert!(!root.join("absent").exists(), "nothing created");
    }

    proptest! {
        #[test]
        fn hand_formatting_matches_chrono(us in 0i64..4_000_000_000_000_000) {
            let t = DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| TestCaseError::reject("range"))?;
            prop_assert_eq!(file_name("s", t), format!("s_{}", t.format(NAME_TIME)));
            prop_assert_eq!(response_time(t), t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string());
            prop_assert_eq!(rfc3339(t), t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        }

        #[test]
        fn any_time_round_trips_through_a_name(us in 0i64..4_000_000_000_000_000, station in "[A-Za-z0-9_-]{1,64}") {
            let time = DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| TestCaseError::reject("range"))?;
            let name = file_name(&station, time);
            prop_assert!(!name.contains('/') && !name.contains(':'));
            prop_assert_eq!(parse_file_name(&name), Some((station.as_str(), time)));
        }
    }
}
