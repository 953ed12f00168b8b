//! `dlsrv export`: the archive's data messages as rows (docs/export.md).
//!
//! Reads the archive through [`layout::ArchiveReader`] (never writing to
//! it), one station at a time, two stations at once per core: a
//! station's bodies in the order they were received, each parsed
//! by [`rows::parse`], the copies of one value (the same channel and time
//! from several bodies: a resend, an answered query) collapsed to the most
//! recently received one unless `--all-copies`. Rows come out by station,
//! channel and time.
//!
//! Memory holds the list of the selected files and, per thread, the rows of
//! the station being read: beyond the file list, it grows with one
//! station's selection, not with the archive.

mod cursor;
mod parquet;
mod postgres;
pub(crate) mod rows;
mod text;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, ValueEnum};

use crate::cli::ConfigArg;
use crate::config::Config;
use crate::durable::AtomicFile;
use crate::layout::{self, ArchiveReader, Entry, Selection};
use rows::{EventRow, ValueRow};

pub(crate) use parquet::Partition;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// RFC 4180, UTF-8, a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// ZRXP for WISKI and Delft-FEWS: a block per station and channel, UTC.
    Zrxp,
    /// InfluxDB line protocol: measurement `ott`, nanoseconds.
    Influx,
    /// Parquet (needs --output: a file, or a directory with --partition).
    Parquet,
    /// Into PostgreSQL with COPY (needs --database).
    Postgres,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    #[arg(long, value_enum, default_value = "csv")]
    pub(crate) format: Format,
    /// Only these stations (repeat for several): the bodies they sent, and
    /// in them the rows of their own StationData.
    #[arg(long = "station", value_name = "ID")]
    pub(crate) stations: Vec<String>,
    /// Only these channels (repeat for several).
    #[arg(long = "channel", value_name = "ID")]
    pub(crate) channels: Vec<String>,
    /// Values measured at or after T (UTC; RFC 3339 or a date).
    #[arg(long, value_name = "T", value_parser = parse_from)]
    pub(crate) from: Option<DateTime<Utc>>,
    /// Values measured before T; a date means up to the end of that day.
    #[arg(long, value_name = "T", value_parser = parse_to)]
    pub(crate) to: Option<DateTime<Utc>>,
    /// Only bodies received at or after T.
    #[arg(long, value_name = "T", value_parser = parse_from)]
    pub(crate) received_since: Option<DateTime<Utc>>,
    /// Only bodies received since the last complete run with this cursor
    /// (kept in state_dir; moved once the output is complete and durable).
    #[arg(long, value_name = "NAME")]
    pub(crate) since_cursor: Option<String>,
    /// The events (StationEvents, channel Events) instead of the values.
    #[arg(long)]
    pub(crate) events: bool,
    /// Every copy of a value, not only the most recently received.
    #[arg(long)]
    pub(crate) all_copies: bool,
    /// Write to PATH (whole or not at all) instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,
    /// Parquet into a directory, one file per partition (Hive-style).
    #[arg(long, value_enum, requires = "output")]
    pub(crate) partition: Option<Partition>,
    /// PostgreSQL connection (URL or key=value) for --format postgres.
    #[arg(long, value_name = "URL", env = "DLSRV_EXPORT_DATABASE")]
    pub(crate) database: Option<String>,
}

/// `T` as RFC 3339, or a date (its start).
fn parse_from(s: &str) -> Result<DateTime<Utc>, String> {
    parse_when(s, false)
}

/// `T` as RFC 3339, or a date (the start of the next day: `--to` is exclusive).
fn parse_to(s: &str) -> Result<DateTime<Utc>, String> {
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

/// What a run did, said on stderr at the end.
#[derive(Debug, Default)]
struct Totals {
    files: u64,
    rows: u64,
    skipped: u64,
    collapsed: u64,
    /// Rows the format has no place for (no UTC time in ZRXP, the line
    /// protocol or PostgreSQL; no field for the line protocol).
    left_out: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.files += other.files;
        self.rows += other.rows;
        self.skipped += other.skipped;
        self.collapsed += other.collapsed;
        self.left_out += other.left_out;
    }
}

/// The body a row came from.
pub(super) struct FileInfo {
    pub(super) received: DateTime<Utc>,
    pub(super) received_utc: String,
    pub(super) source: String,
}

/// A row with the body it came from.
pub(super) struct Sourced<R> {
    pub(super) row: R,
    pub(super) file: Arc<FileInfo>,
}

const VALUE_FIELDS: [&str; 13] = [
    "station_id",
    "station_name",
    "channel_id",
    "channel_name",
    "unit",
    "time_utc",
    "time_local",
    "utc_offset",
    "value",
    "errorcode",
    "errortext",
    "received_utc",
    "source",
];

const EVENT_FIELDS: [&str; 10] = [
    "station_id",
    "channel_id",
    "time_utc",
    "type",
    "code",
    "text",
    "value",
    "value2",
    "received_utc",
    "source",
];

/// One station's rows, read and sorted.
#[derive(Default)]
struct StationRows {
    values: Vec<Sourced<ValueRow>>,
    events: Vec<Sourced<EventRow>>,
    totals: Totals,
    /// Skipped files and warnings, for stderr.
    notes: Vec<String>,
}

/// One station's part of the output, formatted by its thread.
struct Part {
    bytes: Vec<u8>,
    totals: Totals,
    notes: Vec<String>,
}

/// Where the output goes.
enum Sink {
    Text(Output),
    Parquet(parquet::ParquetOut),
    Postgres(Box<postgres::Load>),
}

/// `dlsrv export …`: 0 when every file was read, 2 when some were skipped.
pub(crate) fn run(config: &Config, args: &ExportArgs) -> anyhow::Result<u8> {
    match (args.format, &args.output, &args.database, args.partition) {
        (Format::Parquet, None, _, _) => anyhow::bail!("--format parquet needs --output"),
        (Format::Postgres, _, None, _) => anyhow::bail!("--format postgres needs --database"),
        (Format::Postgres, Some(_), _, _) => {
            anyhow::bail!("--format postgres writes to the database, not --output")
        }
        (f, _, _, Some(_)) if f != Format::Parquet => {
            anyhow::bail!("--partition is for --format parquet")
        }
        (f, _, _, _) if args.events && matches!(f, Format::Zrxp | Format::Influx) => {
            anyhow::bail!("--events: ZRXP and the line protocol hold values only")
        }
        _ => {}
    }
    let reader = ArchiveReader::open(&config.data_dir, &config.temp_suffix)
        .with_context(|| format!("cannot read the archive {}", config.data_dir.display()))?;
    let cursor = match &args.since_cursor {
        Some(name) => Some(cursor::Cursor::read(config, name)?),
        None => None,
    };
    let since = [args.received_since, cursor.as_ref().and_then(|c| c.since)]
        .into_iter()
        .flatten()
        .max();
    let before = cursor.as_ref().map(|c| c.until);
    let stations = select(&reader, args, since, before)?;
    let total_files: usize = stations.values().map(Vec::len).sum();
    let bar =
        crate::cli::progress_bar(std::io::stderr().is_terminal(), total_files as u64, "files");
    let mut sink = match (args.format, &args.output, &args.database) {
        (Format::Parquet, Some(path), _) => Sink::Parquet(parquet::ParquetOut::open(
            path,
            args.partition,
            args.events,
        )?),
        (Format::Postgres, _, Some(url)) => {
            Sink::Postgres(Box::new(postgres::Load::open(url, args.events)?))
        }
        (_, output, _) => Sink::Text(Output::open(output.as_deref())?),
    };
    let result = write_stations(&mut sink, stations, args, &bar);
    bar.finish_and_clear();
    let totals = match result {
        Ok(totals) => totals,
        Err(e) => {
            // Dropping a file leaves nothing of it; dropping the connection
            // rolls the load back.
            if let Sink::Parquet(out) = sink {
                out.abandon();
            }
            return Err(e);
        }
    };
    let mut loaded = String::new();
    match sink {
        Sink::Text(out) => out.finish()?,
        Sink::Parquet(out) => out.finish()?,
        Sink::Postgres(load) => {
            let changed = load.finish()?;
            loaded = format!(", {changed} rows inserted or replaced in the database");
        }
    }
    if let Some(cursor) = cursor {
        cursor.advance(config)?;
    }
    eprintln!(
        "dlsrv export: {} files read, {} rows, {} files skipped, {} duplicates collapsed{}{loaded}",
        totals.files,
        totals.rows,
        totals.skipped,
        totals.collapsed,
        if totals.left_out > 0 {
            format!(
                ", {} rows left out (no UTC time or no field for this format)",
                totals.left_out
            )
        } else {
            String::new()
        }
    );
    Ok(if totals.skipped > 0 { 2 } else { 0 })
}

/// Reads the stations, as many at once as there are cores, and writes
/// their rows in station order.
fn write_stations(
    sink: &mut Sink,
    stations: BTreeMap<String, Vec<Entry>>,
    args: &ExportArgs,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Totals> {
    if let (Sink::Text(out), Format::Csv) = (&mut *sink, args.format) {
        out.write(&text::csv_header(args.events)?)?;
    }
    // Two stations per core: one thread waits for the disk while the other
    // parses.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 16)
        * 2;
    let mut totals = Totals::default();
    let mut buffers: Vec<Vec<u8>> = Vec::new();
    let stations: Vec<Vec<Entry>> = stations.into_values().collect();
    for batch in stations.chunks(threads) {
        // Parquet's writers are not shared between threads: its rows are
        // gathered by the threads and written here.
        if let Sink::Parquet(out) = sink {
            let read = in_parallel(
                batch
                    .iter()
                    .map(|entries| move || station_rows(entries, args, bar)),
            )?;
            for mut rows in read {
                say(bar, &rows.notes);
                rows.totals.rows = if args.events {
                    out.events(rows.events.iter())?;
                    rows.events.len() as u64
                } else {
                    out.values(rows.values.iter())?;
                    rows.values.len() as u64
                };
                totals.add(&rows.totals);
            }
            continue;
        }
        let parts = in_parallel(batch.iter().map(|entries| {
            let buffer = buffers.pop().unwrap_or_default();
            move || station_part(entries, args, bar, buffer)
        }))?;
        for part in parts {
            say(bar, &part.notes);
            match sink {
                Sink::Text(out) => out.write(&part.bytes)?,
                Sink::Postgres(load) => load.copy(&part.bytes)?,
                Sink::Parquet(_) => {}
            }
            totals.add(&part.totals);
            // Used again: a fresh buffer per station would be fresh pages.
            buffers.push(part.bytes);
        }
    }
    Ok(totals)
}

/// Runs each job on a thread of its own; their results in order.
fn in_parallel<T: Send>(
    jobs: impl Iterator<Item = impl FnOnce() -> T + Send>,
) -> anyhow::Result<Vec<T>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.map(|job| scope.spawn(job)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a reading thread failed"))
            })
            .collect()
    })
}

fn say(bar: &indicatif::ProgressBar, notes: &[String]) {
    for note in notes {
        bar.suspend(|| eprintln!("dlsrv export: {note}"));
    }
}

/// The selected data messages by station, each station's in receipt order.
fn select(
    reader: &ArchiveReader,
    args: &ExportArgs,
    since: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
) -> anyhow::Result<BTreeMap<String, Vec<Entry>>> {
    // A value is received after it is measured; a day of margin for the
    // logger's clock and zone.
    let from_day = [
        since.map(|t| t.date_naive()),
        args.from
            .map(|t| t.date_naive() - chrono::Duration::days(1)),
    ]
    .into_iter()
    .flatten()
    .max();
    let selection = Selection {
        actions: vec!["senddata".into()],
        from: from_day,
        to: before.map(|t| t.date_naive()),
        stations: args.stations.clone(),
    };
    let mut stations: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let days = reader
        .day_dirs(&["senddata"], &selection)
        .context("cannot list the archive's days")?;
    for (action, day) in days {
        let listing = reader
            .day(&action, day, &selection)
            .with_context(|| format!("cannot list {action}/{day}"))?;
        for entry in listing.entries {
            if since.is_none_or(|t| entry.received >= t)
                && before.is_none_or(|t| entry.received < t)
            {
                stations
                    .entry(entry.station.clone())
                    .or_default()
                    .push(entry);
            }
        }
    }
    for entries in stations.values_mut() {
        entries.sort_by_key(|e| e.received);
    }
    Ok(stations)
}

/// Reads one station's bodies: its rows, the copies collapsed, in order
/// (channel, then time; as received with `--all-copies`).
fn station_rows(entries: &[Entry], args: &ExportArgs, bar: &indicatif::ProgressBar) -> StationRows {
    let mut out = StationRows::default();
    // Newest copy wins: bodies come oldest first, a later insert replaces.
    // Keys: station (a body may hold several), channel, time, and for an
    // event its type, code and text.
    type EventKey = (Arc<str>, String, TimeKey, String, String, String);
    let mut events: BTreeMap<EventKey, Sourced<EventRow>> = BTreeMap::new();
    // Values by station and channel, in the order read; sorted and
    // collapsed at the end (cheaper than a sorted map of every value).
    let mut groups = Groups::default();
    for entry in entries {
        bar.inc(1);
        let parsed = match std::fs::read(&entry.path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|body| rows::parse(&body))
        {
            Ok(parsed) => parsed,
            Err(reason) => {
                out.totals.skipped += 1;
                out.notes
                    .push(format!("skipped {}: {reason}", entry.relative));
                continue;
            }
        };
        out.totals.files += 1;
        for warning in parsed.warnings {
            out.notes.push(format!("{}: {warning}", entry.relative));
        }
        let file = Arc::new(FileInfo {
            received: entry.received,
            received_utc: layout::rfc3339_seconds(entry.received),
            source: entry.relative.clone(),
        });
        if args.events {
            for row in parsed.events {
                if !wanted(args, &row.station.id, &row.channel_id, row.utc) {
                    continue;
                }
                let sourced = Sourced {
                    row,
                    file: file.clone(),
                };
                if args.all_copies {
                    out.events.push(sourced);
                    continue;
                }
                let r = &sourced.row;
                let key = (
                    r.station.id.clone(),
                    r.channel_id.clone(),
                    TimeKey::of(r.utc, &r.time_local),
                    r.kind.clone(),
                    r.code.clone(),
                    r.text.clone(),
                );
                if events.insert(key, sourced).is_some() {
                    out.totals.collapsed += 1;
                }
            }
        } else {
            for row in parsed.values {
                if !wanted(args, &row.station.id, &row.channel.id, row.utc) {
                    continue;
                }
                groups.push(Sourced {
                    row,
                    file: file.clone(),
                });
            }
        }
    }
    if !args.all_copies {
        out.events = events.into_values().collect();
    }
    let (values, collapsed) = groups.finish(args.all_copies);
    out.values = values;
    out.totals.collapsed += collapsed;
    out
}

/// One station's and channel's values.
type Group = (Arc<str>, Arc<str>, Vec<Sourced<ValueRow>>);

/// A station's values grouped by station and channel as they are read.
#[derive(Default)]
struct Groups {
    index: std::collections::HashMap<(Arc<str>, Arc<str>), usize>,
    groups: Vec<Group>,
    /// The group of the last row: the next is nearly always in it.
    last: Option<usize>,
}

impl Groups {
    fn push(&mut self, v: Sourced<ValueRow>) {
        let (station, channel) = (&v.row.station.id, &v.row.channel.id);
        let hit = self.last.filter(|&i| {
            let (s, c, _) = &self.groups[i];
            (Arc::ptr_eq(s, station) || s == station) && (Arc::ptr_eq(c, channel) || c == channel)
        });
        let i = match hit {
            Some(i) => i,
            None => {
                let key = (station.clone(), channel.clone());
                match self.index.get(&key) {
                    Some(&i) => i,
                    None => {
                        self.groups.push((key.0.clone(), key.1.clone(), Vec::new()));
                        self.index.insert(key, self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                }
            }
        };
        self.last = Some(i);
        self.groups[i].2.push(v);
    }

    /// The values by station, channel and time; the copies of one time
    /// collapsed to the most recently received (they were read in receipt
    /// order, and the sort is stable) unless `all_copies`. Also returns how
    /// many copies went.
    fn finish(mut self, all_copies: bool) -> (Vec<Sourced<ValueRow>>, u64) {
        self.groups.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut out = Vec::with_capacity(self.groups.iter().map(|g| g.2.len()).sum());
        let mut collapsed = 0u64;
        for (_, _, mut rows) in self.groups {
            rows.sort_by_cached_key(|v| TimeKey::of(v.row.utc, &v.row.time_local));
            if all_copies {
                out.extend(rows);
                continue;
            }
            let mut rows = rows.into_iter().peekable();
            while let Some(v) = rows.next() {
                let same = rows.peek().is_some_and(|next| {
                    TimeKey::of(next.row.utc, &next.row.time_local)
                        == TimeKey::of(v.row.utc, &v.row.time_local)
                });
                if same {
                    collapsed += 1;
                } else {
                    out.push(v);
                }
            }
        }
        (out, collapsed)
    }
}

/// What rows sort and collapse by in time: the UTC time, or (after every
/// UTC time) the time as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimeKey {
    Utc(i64),
    Local(String),
}

impl TimeKey {
    fn of(utc: Option<DateTime<Utc>>, local: &str) -> TimeKey {
        match utc {
            Some(t) => TimeKey::Utc(t.timestamp_micros()),
            None => TimeKey::Local(local.to_owned()),
        }
    }
}

/// Reads one station and formats its rows for the text formats and COPY.
fn station_part(
    entries: &[Entry],
    args: &ExportArgs,
    bar: &indicatif::ProgressBar,
    mut bytes: Vec<u8>,
) -> Part {
    let StationRows {
        values,
        events,
        mut totals,
        mut notes,
    } = station_rows(entries, args, bar);
    bytes.clear();
    let left_out = &mut totals.left_out;
    let result = match (args.format, args.events) {
        (Format::Csv, false) => text::csv_values(&mut bytes, values.iter()),
        (Format::Csv, true) => text::csv_events(&mut bytes, events.iter()),
        (Format::Jsonl, false) => text::jsonl_values(&mut bytes, values.iter()),
        (Format::Jsonl, true) => text::jsonl_events(&mut bytes, events.iter()),
        (Format::Zrxp, _) => text::zrxp_values(&mut bytes, values.iter(), left_out),
        (Format::Influx, _) => text::influx_values(&mut bytes, values.iter(), left_out),
        (Format::Postgres, false) => postgres::values(&mut bytes, values.iter(), left_out),
        (Format::Postgres, true) => postgres::events(&mut bytes, events.iter(), left_out),
        (Format::Parquet, _) => Ok(()),
    };
    let rows = if args.events {
        events.len()
    } else {
        values.len()
    } as u64;
    totals.rows = rows.saturating_sub(totals.left_out);
    if let Err(e) = result {
        notes.push(format!("cannot format rows: {e}"));
        totals.skipped += 1;
    }
    Part {
        bytes,
        totals,
        notes,
    }
}

/// Whether a row passes `--station`, `--channel`, `--from` and `--to` (a
/// row without a UTC time cannot be placed in a time range: it is left out
/// of one).
fn wanted(args: &ExportArgs, station: &str, channel: &str, utc: Option<DateTime<Utc>>) -> bool {
    if !args.stations.is_empty() && !args.stations.iter().any(|s| s == station) {
        return false;
    }
    if !args.channels.is_empty() && !args.channels.iter().any(|c| c == channel) {
        return false;
    }
    if args.from.is_none() && args.to.is_none() {
        return true;
    }
    let Some(t) = utc else {
        return false;
    };
    args.from.is_none_or(|f| t >= f) && args.to.is_none_or(|to| t < to)
}

/// Standard output, or a file written whole or not at all
/// ([`AtomicFile`]: nothing is left of a run that fails).
enum Output {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(AtomicFile),
}

impl Output {
    fn open(path: Option<&Path>) -> anyhow::Result<Output> {
        Ok(match path {
            None => Output::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Some(path) => Output::File(AtomicFile::create(path)?),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Output::Stdout(w) => w
                .write_all(bytes)
                .context("cannot write to standard output"),
            Output::File(file) => Ok(file.write_all(bytes)?),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Stdout(mut w) => {
                w.flush().context("cannot write to standard output")?;
                // `dlsrv export --since-cursor … > FILE`: the file is on
                // disk before the cursor moves (a pipe or a terminal has
                // nothing to sync).
                let stdout = std::io::stdout();
                let is_file = nix::sys::stat::fstat(stdout.as_fd()).is_ok_and(|st| {
                    use nix::sys::stat::SFlag;
                    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
                });
                if is_file {
                    nix::unistd::fsync(stdout.as_fd()).context("cannot sync standard output")?;
                }
                Ok(())
            }
            Output::File(file) => Ok(file.commit()?),
        }
    }
}
