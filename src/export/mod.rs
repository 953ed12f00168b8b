//! `dlsrv export`: the archive's data messages as rows (docs/export.md).
//!
//! The bodies to read come as a list sorted on disk ([`files`]: from the
//! archive's listing, or from the catalog by position for a cursor or a
//! feed). Threads read and parse them in that order, several at once, and
//! turn each body's rows into records already formatted for the output
//! ([`encode`], [`record`]). The main thread takes the records in list
//! order, one sending station at a time, into an external sort
//! ([`sorter`]: a buffer of bounded size, spilled to sorted runs in
//! `state_dir` and merged) that collapses the copies of one value to the
//! most recently received, and writes them out by station, channel and
//! time. Memory is bounded whatever the archive's shape; the temporary
//! disk is at most one station's rows.
//!
//! `--follow NAME` ([`follow`]) runs the same pipeline over each new page
//! of the catalog and commits the rows with the feed's position.

mod cursor;
mod encode;
mod files;
mod follow;
mod parquet;
mod postgres;
mod record;
pub(crate) mod rows;
mod s3;
mod sorter;
mod text;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use crate::config::Config;
use crate::config::ConfigArg;
use crate::durable::AtomicFile;
use crate::layout::{self, ArchiveReader};
use encode::{Encoded, Spec};
use files::File;
use record::{LEFT_OUT, Rec};
use sorter::Sorter;

pub(crate) use files::read_body;
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
    #[arg(long, value_name = "T", value_parser = layout::parse_from)]
    pub(crate) from: Option<DateTime<Utc>>,
    /// Values measured before T; a date means up to the end of that day.
    #[arg(long, value_name = "T", value_parser = layout::parse_to)]
    pub(crate) to: Option<DateTime<Utc>>,
    /// Only bodies received at or after T.
    #[arg(long, value_name = "T", value_parser = layout::parse_from)]
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
    /// Run as the feed NAME: deliver each newly archived body's rows as
    /// the catalog commits them (PostgreSQL, or JSON Lines on standard
    /// output), until SIGTERM.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["since_cursor", "output", "partition"])]
    pub(crate) follow: Option<String>,
    /// The feed's settings (TOML: format, database, stations, channels,
    /// events, lag_warn_secs), e.g. /etc/dlsrv/export/NAME.toml.
    #[arg(long, value_name = "FILE", requires = "follow")]
    pub(crate) settings: Option<PathBuf>,
    /// With --follow: warn in the journal when the feed is this far behind.
    #[arg(long, value_name = "SECS", requires = "follow")]
    pub(crate) lag_warn_secs: Option<u64>,
    /// MiB of rows sorted in memory before a run is spilled (tests, tuning).
    #[arg(long, value_name = "MIB", hide = true)]
    pub(crate) sort_buffer_mib: Option<usize>,
}

/// What a run did, said on stderr at the end.
#[derive(Debug, Default, Clone)]
struct Totals {
    files: u64,
    rows: u64,
    skipped: u64,
    collapsed: u64,
    /// Rows the format has no place for (no UTC time in ZRXP, the line
    /// protocol or PostgreSQL; no field for the line protocol).
    left_out: u64,
    /// Values without a usable time: each kept.
    timeless: u64,
    /// Bytes of sort runs written, and the most one station needed.
    spilled: u64,
    max_station_spill: u64,
}

impl Totals {
    fn line(&self) -> String {
        let mut line = format!(
            "{} files read, {} rows, {} files skipped, {} duplicates collapsed",
            self.files, self.rows, self.skipped, self.collapsed
        );
        if self.timeless > 0 {
            line.push_str(&format!(
                ", {} values without a time (each kept, none collapsed)",
                self.timeless
            ));
        }
        if self.left_out > 0 {
            line.push_str(&format!(
                ", {} rows left out (no UTC time or no field for this format)",
                self.left_out
            ));
        }
        if self.spilled > 0 {
            line.push_str(&format!(
                ", sorted through {} MB of temporary files (at most {} MB at once)",
                self.spilled.div_ceil(1_000_000),
                self.max_station_spill.div_ceil(1_000_000)
            ));
        }
        line
    }
}

/// The body a row came from.
pub(super) struct FileInfo {
    /// The sending station (the body's name).
    pub(super) station: String,
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

/// MiB of records the sort holds in memory before it spills a run
/// (`--sort-buffer-mib`, hidden: for tests and tuning).
const SORT_BUFFER_MIB: usize = 24;
/// Bytes of rows gathered before a `COPY`.
const COPY_CHUNK: usize = 4 << 20;

/// The sort buffer in bytes.
fn sort_buffer(args: &ExportArgs) -> usize {
    args.sort_buffer_mib
        .unwrap_or(SORT_BUFFER_MIB)
        .clamp(1, 4095)
        << 20
}

/// Where the rows go.
enum Sink<'a> {
    Text {
        out: Output,
        zrxp: bool,
        /// The ZRXP block being written (its station and channel).
        block: Vec<u8>,
    },
    Parquet(parquet::ParquetOut),
    Postgres {
        target: &'a mut postgres::Target,
        buffer: Vec<u8>,
    },
}

impl Sink<'_> {
    /// Writes one record (or counts it as left out).
    fn emit(&mut self, rec: Rec<'_>, totals: &mut Totals) -> anyhow::Result<()> {
        if rec.flags & LEFT_OUT != 0 {
            totals.left_out += 1;
            return Ok(());
        }
        totals.rows += 1;
        match self {
            Sink::Text { out, zrxp, block } => {
                if *zrxp {
                    let (header, line) = encode::zrxp_parts(rec.payload);
                    if block.as_slice() != rec.group() {
                        out.write(header)?;
                        block.clear();
                        block.extend_from_slice(rec.group());
                    }
                    out.write(line)
                } else {
                    out.write(rec.payload)
                }
            }
            Sink::Parquet(out) => out.push(rec.payload),
            Sink::Postgres { target, buffer } => {
                buffer.extend_from_slice(rec.payload);
                if buffer.len() >= COPY_CHUNK {
                    target.copy(buffer)?;
                    buffer.clear();
                }
                Ok(())
            }
        }
    }

    fn station_done(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Parquet(out) => out.station_done(),
            Sink::Postgres { target, buffer } => {
                target.copy(buffer)?;
                buffer.clear();
                Ok(())
            }
            Sink::Text { .. } => Ok(()),
        }
    }
}

/// `dlsrv export …`: 0 when every file was read, 2 when some were skipped.
pub(crate) fn run(config: &Config, args: &ExportArgs) -> anyhow::Result<u8> {
    if let Some(name) = &args.follow {
        return follow::run(config, args, name);
    }
    check_combination(args.format, args.events)?;
    match (args.format, &args.output, &args.database, args.partition) {
        (Format::Parquet, None, _, _) => anyhow::bail!("--format parquet needs --output"),
        (Format::Postgres, _, None, _) => anyhow::bail!("--format postgres needs --database"),
        (Format::Postgres, Some(_), _, _) => {
            anyhow::bail!("--format postgres writes to the database, not --output")
        }
        (f, _, _, Some(_)) if f != Format::Parquet => {
            anyhow::bail!("--partition is for --format parquet")
        }
        (f, Some(_), _, _) if f != Format::Parquet && s3_output(args).is_some() => {
            anyhow::bail!("an s3:// --output is for --format parquet")
        }
        _ => {}
    }
    if let Some(name) = &args.since_cursor
        && !layout::valid_export_name(name)
    {
        anyhow::bail!(
            "--since-cursor {name:?}: a name of letters, digits, '-', '_' and '.' (at most 64)"
        );
    }
    let reader = ArchiveReader::open(&config.data_dir, &config.temp_suffix)
        .with_context(|| format!("cannot read the archive {}", config.data_dir.display()))?;
    let work = files::Workdir::create(&config.state_dir)?;
    let mut wanted = files::Wanted {
        stations: args.stations.clone(),
        since: args.received_since,
        // A value is received after it is measured; a day of margin for
        // the logger's clock and zone.
        from_day: args
            .from
            .map(|t| t.date_naive() - chrono::Duration::days(1)),
    };
    let (list, cursor) = match &args.since_cursor {
        Some(name) => {
            let catalog = open_catalog(config)?;
            let catalog_id = crate::catalog::catalog_id(&catalog)?;
            let upto = crate::catalog::max_id(&catalog)?;
            let cursor = cursor::Cursor::read(config, name, &catalog_id, upto)?;
            wanted.since = [wanted.since, cursor.since()].into_iter().flatten().max();
            let list =
                files::from_catalog(work.path(), &catalog, cursor.after(), cursor.upto, &wanted)?;
            (list, Some(cursor))
        }
        None => {
            let mut list = files::from_archive(work.path(), &reader, &wanted)?;
            let catalog_path = layout::catalog_path(&config.state_dir);
            if (config.replica.is_some() || config.shared_catalog().is_some())
                && catalog_path.exists()
            {
                let catalog = crate::catalog::open_reader(&catalog_path).with_context(|| {
                    format!("cannot open the catalog {}", catalog_path.display())
                })?;
                list.add_remote(&catalog, &wanted)?;
            }
            (list, None)
        }
    };
    let bar = crate::console::progress_bar(std::io::stderr().is_terminal(), list.count, "files");
    let mut database = match (args.format, &args.database) {
        (Format::Postgres, Some(url)) => {
            let mut target = postgres::Target::connect(url, args.events)?;
            target.begin()?;
            Some(target)
        }
        _ => None,
    };
    let s3 = match s3_output(args) {
        Some(url) => Some(s3::Upload::prepare(
            config,
            url,
            args.partition.is_some(),
            work.path(),
        )?),
        None => None,
    };
    let mut sink = match (args.format, &args.output, database.as_mut()) {
        (Format::Parquet, Some(path), _) => Sink::Parquet(parquet::ParquetOut::open(
            s3.as_ref().map_or(path.as_path(), s3::Upload::local),
            args.partition,
            args.events,
        )?),
        (Format::Postgres, _, Some(target)) => Sink::Postgres {
            target,
            buffer: Vec::new(),
        },
        (format, output, _) => Sink::Text {
            out: Output::open(output.as_deref())?,
            zrxp: format == Format::Zrxp,
            block: Vec::new(),
        },
    };
    if let (Sink::Text { out, .. }, Format::Csv) = (&mut sink, args.format) {
        out.write(&text::csv_header(args.events)?)?;
    }
    let spec = spec_of(args);
    let result = pipeline(
        config,
        work.path(),
        &spec,
        (args.all_copies, sort_buffer(args)),
        &mut sink,
        &bar,
        |f| list.each(f),
    );
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
        Sink::Text { out, .. } => out.finish()?,
        Sink::Parquet(out) => {
            out.finish()?;
            if let Some(upload) = s3 {
                loaded = upload.finish()?;
            }
        }
        Sink::Postgres { target, buffer } => {
            target.copy(&buffer)?;
            let changed = target.commit(None)?;
            loaded = format!(", {changed} rows inserted or replaced in the database");
        }
    }
    if let Some(cursor) = cursor {
        cursor.advance(config)?;
    }
    eprintln!("dlsrv export: {}{loaded}", totals.line());
    Ok(if totals.skipped > 0 { 2 } else { 0 })
}

/// `--output s3://…`, when it is one.
fn s3_output(args: &ExportArgs) -> Option<&str> {
    args.output
        .as_deref()
        .and_then(|p| p.to_str())
        .filter(|p| p.starts_with("s3://"))
}

/// Refuses what a format cannot hold.
fn check_combination(format: Format, events: bool) -> anyhow::Result<()> {
    if events && matches!(format, Format::Zrxp | Format::Influx) {
        anyhow::bail!("--events: ZRXP and the line protocol hold values only");
    }
    Ok(())
}

fn spec_of(args: &ExportArgs) -> Spec {
    Spec {
        format: args.format,
        events: args.events,
        stations: args.stations.clone(),
        channels: args.channels.clone(),
        from: args.from,
        to: args.to,
        by_date: args.format == Format::Parquet && args.partition == Some(Partition::Date),
    }
}

/// The catalog, to follow its positions; read-only once open. A catalog
/// of an older dlsrv is upgraded first (as the service does at start), and
/// an archive without one (copied alone, never served) gets one, filled
/// from the archive as `dlsrv reindex` would. Rows missing from an existing
/// catalog (a body stored just before a crash) are the service's catch-up
/// at its next start, which gives them new positions: a feed or a cursor
/// takes them then.
fn open_catalog(config: &Config) -> anyhow::Result<rusqlite::Connection> {
    let path = layout::catalog_path(&config.state_dir);
    if path.exists() {
        crate::catalog::open_writable(&path)
            .with_context(|| format!("cannot open the catalog {}", path.display()))?;
    } else {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
        crate::indexer::catch_up(&config.data_dir, &config.temp_suffix, &path, &["senddata"])
            .with_context(|| {
                format!(
                    "cannot fill the catalog {} from the archive",
                    path.display()
                )
            })?;
    }
    crate::catalog::open_reader(&path)
        .with_context(|| format!("cannot open the catalog {}", path.display()))
}

/// The replica, for bodies that retention took off the local disk: opened
/// once per process, when first needed. One that cannot be opened (no
/// credentials for this user) is said once; its bodies are then skipped.
pub(super) fn replica(config: &Config) -> Option<&'static crate::replica::Blocking> {
    static REPLICA: std::sync::OnceLock<Option<crate::replica::Blocking>> =
        std::sync::OnceLock::new();
    config.replica.as_ref()?;
    REPLICA
        .get_or_init(|| match crate::replica::Blocking::of(config) {
            Ok(replica) => replica,
            Err(e) => {
                eprintln!("dlsrv export: bodies kept only in the replica cannot be read: {e:#}");
                None
            }
        })
        .as_ref()
}

/// A body for a reading thread.
struct Job {
    seq: u64,
    file: File,
}

/// A body read.
struct Done {
    seq: u64,
    file: File,
    result: Result<Encoded, String>,
}

/// Bodies handed out ahead of the one being sorted, per reading thread.
const AHEAD_PER_THREAD: u64 = 8;

/// Reads the bodies `files` gives, in parallel, sorts each station's
/// records and writes them to `sink`. `files` calls its argument with each
/// body in order (station, receipt), until it returns false.
fn pipeline(
    config: &Config,
    work: &Path,
    spec: &Spec,
    (all_copies, sort_buffer): (bool, usize),
    sink: &mut Sink<'_>,
    bar: &indicatif::ProgressBar,
    files: impl FnOnce(&mut dyn FnMut(File) -> anyhow::Result<bool>) -> anyhow::Result<()>,
) -> anyhow::Result<Totals> {
    // Two per core: one waits for the disk while the other parses.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 16)
        * 2;
    let window = threads as u64 * AHEAD_PER_THREAD;
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(threads * 2);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            let reader = std::thread::Builder::new().name("dlsrv-read".into());
            reader
                .spawn_scoped(scope, move || {
                    loop {
                        let next = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(Job { seq, file }) = next else { break };
                        let result = files::read_body(config, &file.path).and_then(|body| {
                            let info = Arc::new(FileInfo {
                                station: file.station.clone(),
                                received: file.received,
                                received_utc: layout::rfc3339_seconds(file.received),
                                source: file.path.clone(),
                            });
                            encode::body(spec, &info, &body)
                        });
                        if done_tx.send(Done { seq, file, result }).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start a reading thread")?;
        }
        drop(done_tx);
        let mut run = Run {
            sorter: Sorter::new(sort_buffer, work.to_path_buf(), all_copies),
            sink,
            bar,
            totals: Totals::default(),
            station: None,
            by_date: spec.by_date,
            waiting: BTreeMap::new(),
            issued: 0,
            taken: 0,
        };
        let mut job_tx = Some(job_tx);
        let result = (|| {
            files(&mut |file| {
                while run.issued - run.taken >= window {
                    let done = done_rx.recv().context("the reading threads stopped")?;
                    run.take(done)?;
                }
                let tx = job_tx.as_ref().context("no reading threads")?;
                tx.send(Job {
                    seq: run.issued,
                    file,
                })
                .context("the reading threads stopped")?;
                run.issued += 1;
                Ok(true)
            })?;
            // No more bodies: the threads end once the queue is empty.
            job_tx = None;
            while run.taken < run.issued {
                let done = done_rx.recv().context("the reading threads stopped")?;
                run.take(done)?;
            }
            run.station_done()
        })();
        drop(job_tx);
        result?;
        let mut totals = run.totals;
        totals.collapsed = run.sorter.collapsed;
        totals.spilled = run.sorter.spilled;
        totals.max_station_spill = run.sorter.max_station_spill;
        Ok(totals)
    })
}

/// The main thread's side of the pipeline.
struct Run<'a, 'b> {
    sorter: Sorter,
    sink: &'a mut Sink<'b>,
    bar: &'a indicatif::ProgressBar,
    totals: Totals,
    /// The sending station being sorted.
    station: Option<String>,
    /// The whole export is one sort ([`Spec::by_date`]).
    by_date: bool,
    /// Bodies read ahead of their turn.
    waiting: BTreeMap<u64, Done>,
    issued: u64,
    taken: u64,
}

impl Run<'_, '_> {
    /// Takes a body that was read, and every body whose turn has come.
    fn take(&mut self, done: Done) -> anyhow::Result<()> {
        self.waiting.insert(done.seq, done);
        while let Some(done) = self.waiting.remove(&self.taken) {
            self.taken += 1;
            self.bar.inc(1);
            // One sort per sending station; with keys that start with the
            // day, one sort for the whole export.
            let unit = if self.by_date {
                ""
            } else {
                done.file.station.as_str()
            };
            if self.station.as_deref() != Some(unit) {
                self.station_done()?;
                self.station = Some(unit.to_owned());
            }
            match done.result {
                Ok(encoded) => {
                    self.totals.files += 1;
                    self.totals.timeless += encoded.timeless;
                    for warning in &encoded.warnings {
                        say(self.bar, &format!("{}: {warning}", done.file.path));
                    }
                    self.sorter.push(encoded.records)?;
                }
                Err(reason) => {
                    self.totals.skipped += 1;
                    say(self.bar, &format!("skipped {}: {reason}", done.file.path));
                }
            }
        }
        Ok(())
    }

    /// The station's records, sorted, to the sink.
    fn station_done(&mut self) -> anyhow::Result<()> {
        let (sink, totals) = (&mut *self.sink, &mut self.totals);
        self.sorter.finish(|rec| sink.emit(rec, totals))?;
        sink.station_done()
    }
}

fn say(bar: &indicatif::ProgressBar, note: &str) {
    bar.suspend(|| eprintln!("dlsrv export: {note}"));
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
