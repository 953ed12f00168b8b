//! Parquet output of `dlsrv export`, with real types: times as UTC
//! timestamps in microseconds, values as `float64` (null when missing or
//! not a number), text as strings. One file, or a directory partitioned
//! Hive-style (`date=YYYY-MM-DD/` by the value's UTC day, or
//! `station=ID/`) for DuckDB, Spark or Trino.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::Sourced;
use crate::durable::{self, AtomicFile};
use crate::export::rows::{EventRow, ValueRow};

/// How a directory of Parquet files is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Partition {
    /// `date=YYYY-MM-DD/` by the value's UTC day (`date=unknown` without one).
    Date,
    /// `station=ID/`.
    Station,
}

/// Rows per row group: a writer holds at most this many in memory.
const ROW_GROUP: usize = 65_536;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn value_schema() -> SchemaRef {
    let s = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("station_id"),
        s("station_name"),
        s("channel_id"),
        s("channel_name"),
        s("unit"),
        Field::new("time_utc", timestamp(), true),
        s("time_local"),
        s("utc_offset"),
        Field::new("value", DataType::Float64, true),
        Field::new("errorcode", DataType::Utf8, true),
        Field::new("errortext", DataType::Utf8, true),
        Field::new("received_utc", timestamp(), false),
        s("source"),
    ]))
}

fn event_schema() -> SchemaRef {
    let s = |name: &str| Field::new(name, DataType::Utf8, false);
    let n = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        s("station_id"),
        n("channel_id"),
        Field::new("time_utc", timestamp(), true),
        s("time_local"),
        n("type"),
        n("code"),
        n("text"),
        n("value"),
        n("value2"),
        Field::new("received_utc", timestamp(), false),
        s("source"),
    ]))
}

/// A row's payload for Parquet: its two times (`i64::MIN`: none) and its
/// texts, each behind its length; decoded by [`Fields`] on the writing side.
fn encode(
    out: &mut Vec<u8>,
    time: Option<chrono::DateTime<chrono::Utc>>,
    received: i64,
    texts: &[&str],
) {
    out.extend_from_slice(
        &time
            .map_or(i64::MIN, |t| t.timestamp_micros())
            .to_le_bytes(),
    );
    out.extend_from_slice(&received.to_le_bytes());
    for t in texts {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t.as_bytes());
    }
}

/// A value's payload for Parquet.
pub(super) fn encode_value(out: &mut Vec<u8>, r: &Sourced<ValueRow>) {
    let v = &r.row;
    encode(
        out,
        v.utc,
        r.file.received.timestamp_micros(),
        &[
            &v.station.id,
            &v.station.name,
            &v.channel.id,
            &v.channel.name,
            &v.channel.unit,
            &v.time_local,
            &v.station.offset,
            &v.value,
            &v.errorcode,
            &v.errortext,
            &r.file.source,
        ],
    );
}

/// An event's payload for Parquet.
pub(super) fn encode_event(out: &mut Vec<u8>, r: &Sourced<EventRow>) {
    let e = &r.row;
    encode(
        out,
        e.utc,
        r.file.received.timestamp_micros(),
        &[
            &e.station.id,
            &e.channel_id,
            &e.time_local,
            &e.kind,
            &e.code,
            &e.text,
            &e.value,
            &e.value2,
            &r.file.source,
        ],
    );
}

/// A payload read back.
struct Fields<'a> {
    time: Option<i64>,
    received: i64,
    text: [&'a str; 11],
}

impl<'a> Fields<'a> {
    fn of(payload: &'a [u8]) -> anyhow::Result<Fields<'a>> {
        let bad = || anyhow::anyhow!("a damaged Parquet row");
        let int = |at: usize| -> anyhow::Result<i64> {
            let b = payload.get(at..at + 8).ok_or_else(bad)?;
            Ok(i64::from_le_bytes(b.try_into()?))
        };
        let time = Some(int(0)?).filter(|&t| t != i64::MIN);
        let received = int(8)?;
        let mut text = [""; 11];
        let mut at = 16;
        for slot in &mut text {
            if at >= payload.len() {
                break;
            }
            let len = payload.get(at..at + 4).ok_or_else(bad)?;
            let len = u32::from_le_bytes(len.try_into()?) as usize;
            let bytes = payload.get(at + 4..at + 4 + len).ok_or_else(bad)?;
            *slot = std::str::from_utf8(bytes)?;
            at += 4 + len;
        }
        Ok(Fields {
            time,
            received,
            text,
        })
    }
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn value_batch<'a>(rows: impl Iterator<Item = &'a [u8]>) -> anyhow::Result<RecordBatch> {
    let mut text: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::new()).collect();
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut value = Float64Builder::new();
    for payload in rows {
        let f = Fields::of(payload)?;
        let [
            station,
            name,
            channel,
            channel_name,
            unit,
            local,
            offset,
            v,
            code,
            errortext,
            source,
        ] = f.text;
        text[0].append_value(station);
        text[1].append_value(name);
        text[2].append_value(channel);
        text[3].append_value(channel_name);
        text[4].append_value(unit);
        time.append_option(f.time);
        text[5].append_value(local);
        text[6].append_value(offset);
        value.append_option(v.trim().parse::<f64>().ok());
        text[7].append_option(opt(code));
        text[8].append_option(opt(errortext));
        received.append_value(f.received);
        text[9].append_value(source);
    }
    let mut t = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || t.next().context("a column");
    let columns: Vec<ArrayRef> = vec![
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        Arc::new(time.finish()),
        next()?,
        next()?,
        Arc::new(value.finish()),
        next()?,
        next()?,
        Arc::new(received.finish()),
        next()?,
    ];
    Ok(RecordBatch::try_new(value_schema(), columns)?)
}

fn event_batch<'a>(rows: impl Iterator<Item = &'a [u8]>) -> anyhow::Result<RecordBatch> {
    let mut text: Vec<StringBuilder> = (0..9).map(|_| StringBuilder::new()).collect();
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for payload in rows {
        let f = Fields::of(payload)?;
        let [
            station,
            channel,
            local,
            kind,
            code,
            etext,
            v,
            v2,
            source,
            _,
            _,
        ] = f.text;
        text[0].append_value(station);
        text[1].append_option(opt(channel));
        time.append_option(f.time);
        text[2].append_value(local);
        text[3].append_option(opt(kind));
        text[4].append_option(opt(code));
        text[5].append_option(opt(etext));
        text[6].append_option(opt(v));
        text[7].append_option(opt(v2));
        received.append_value(f.received);
        text[8].append_value(source);
    }
    let mut t = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || t.next().context("a column");
    let columns: Vec<ArrayRef> = vec![
        next()?,
        next()?,
        Arc::new(time.finish()),
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        Arc::new(received.finish()),
        next()?,
    ];
    Ok(RecordBatch::try_new(event_schema(), columns)?)
}

/// Rows waiting for their partition's writer: payloads back to back.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Pending {
    fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(a, &b)| &self.bytes[a..b])
    }
}

/// Bytes of rows waiting, over every partition, before all are written out
/// as row groups (many date partitions open at once stay bounded).
const PENDING_BUDGET: usize = 16 << 20;

/// Where Parquet goes: one file, or one per partition under a directory.
/// The file is an [`AtomicFile`]; the directory is written under a
/// temporary name beside the target and renamed into place when complete,
/// so a reader never sees half an export.
pub(super) struct ParquetOut {
    events: bool,
    partition: Option<Partition>,
    target: PathBuf,
    /// The directory being written, with `partition`.
    temp_dir: Option<PathBuf>,
    writers: BTreeMap<String, ArrowWriter<AtomicFile>>,
    pending: BTreeMap<String, Pending>,
    pending_bytes: usize,
    /// With `--partition date`: the day being written.
    day: Option<String>,
    /// Files made per partition so far: a partition closed and met again
    /// (a station named in another's body) gets a file of its own.
    made: BTreeMap<String, usize>,
}

impl ParquetOut {
    pub(super) fn open(
        target: &Path,
        partition: Option<Partition>,
        events: bool,
    ) -> anyhow::Result<ParquetOut> {
        if partition.is_some() && target.exists() {
            anyhow::bail!(
                "{} exists: a partitioned export writes a new directory",
                target.display()
            );
        }
        let temp_dir = match partition {
            None => None,
            Some(_) => {
                let name = target.file_name().context("--output needs a name")?;
                let temp = durable::parent_dir(target).join(format!(
                    ".{}.{}.tmp",
                    name.to_string_lossy(),
                    std::process::id()
                ));
                std::fs::create_dir(&temp)
                    .with_context(|| format!("cannot create {}", temp.display()))?;
                Some(temp)
            }
        };
        Ok(ParquetOut {
            events,
            partition,
            target: target.to_path_buf(),
            temp_dir,
            writers: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            day: None,
            made: BTreeMap::new(),
        })
    }

    fn writer(&mut self, key: &str) -> anyhow::Result<&mut ArrowWriter<AtomicFile>> {
        if !self.writers.contains_key(key) {
            let path = match &self.temp_dir {
                None => self.target.clone(),
                Some(temp) => {
                    let dir = temp.join(key);
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    let n = self.made.entry(key.to_owned()).or_default();
                    *n += 1;
                    dir.join(format!("part-{}.parquet", *n - 1))
                }
            };
            let file = AtomicFile::create(&path)?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(ROW_GROUP))
                .build();
            let schema = if self.events {
                event_schema()
            } else {
                value_schema()
            };
            let writer = ArrowWriter::try_new(file, schema, Some(props))?;
            self.writers.insert(key.to_owned(), writer);
        }
        self.writers.get_mut(key).context("the writer just made")
    }

    /// The partition of a row.
    fn key(&self, station: &str, utc: Option<i64>) -> String {
        match self.partition {
            None => String::new(),
            Some(Partition::Station) => format!("station={}", hive(station)),
            Some(Partition::Date) => match utc.and_then(chrono::DateTime::from_timestamp_micros) {
                Some(t) => format!("date={}", t.format("%Y-%m-%d")),
                None => "date=unknown".to_owned(),
            },
        }
    }

    /// Adds a row (its payload from [`encode_value`] or [`encode_event`]).
    pub(super) fn push(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let f = Fields::of(payload)?;
        let key = self.key(f.text[0], f.time);
        // Days come one after the other, each whole (the export sorts by
        // day first): a new day's first row completes the one before.
        if self.partition == Some(Partition::Date) && self.day.as_deref() != Some(key.as_str()) {
            self.close_all()?;
            self.day = Some(key.clone());
        }
        let pending = self.pending.entry(key.clone()).or_default();
        pending.bytes.extend_from_slice(payload);
        pending.ends.push(pending.bytes.len());
        self.pending_bytes += payload.len();
        if pending.ends.len() >= ROW_GROUP {
            self.write_out(&key, false)?;
        }
        if self.pending_bytes > PENDING_BUDGET {
            let keys: Vec<String> = self.pending.keys().cloned().collect();
            for key in keys {
                self.write_out(&key, true)?;
            }
        }
        Ok(())
    }

    /// Writes a partition's waiting rows; `close_group` ends its row group
    /// there (its memory goes to the file).
    fn write_out(&mut self, key: &str, close_group: bool) -> anyhow::Result<()> {
        let Some(pending) = self.pending.remove(key) else {
            return Ok(());
        };
        self.pending_bytes -= pending.bytes.len();
        if pending.ends.is_empty() {
            return Ok(());
        }
        let batch = if self.events {
            event_batch(pending.rows())?
        } else {
            value_batch(pending.rows())?
        };
        let writer = self.writer(key)?;
        writer.write(&batch)?;
        if close_group {
            writer.flush()?;
        }
        Ok(())
    }

    /// A station is complete: with `--partition station`, its file too.
    pub(super) fn station_done(&mut self) -> anyhow::Result<()> {
        if self.partition == Some(Partition::Station) {
            self.close_all()?;
        }
        Ok(())
    }

    fn close_all(&mut self) -> anyhow::Result<()> {
        let keys: Vec<String> = self.pending.keys().cloned().collect();
        for key in keys {
            self.write_out(&key, false)?;
        }
        for (_, writer) in std::mem::take(&mut self.writers) {
            writer.into_inner()?.commit()?;
        }
        Ok(())
    }

    /// Closes every file durably, and renames a directory into place.
    pub(super) fn finish(mut self) -> anyhow::Result<()> {
        if self.writers.is_empty() && self.pending.is_empty() && self.partition.is_none() {
            // No rows at all: still a valid, empty file.
            self.writer("")?;
        }
        self.close_all()?;
        if let Some(temp) = &self.temp_dir {
            sync_tree(temp)?;
            std::fs::rename(temp, &self.target)
                .with_context(|| format!("cannot write {}", self.target.display()))?;
            durable::fsync_dir(durable::parent_dir(&self.target))?;
        }
        Ok(())
    }

    /// A failed export leaves nothing behind (a file not committed removes itself).
    pub(super) fn abandon(self) {
        drop(self.writers);
        if let Some(temp) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(temp);
        }
    }
}

/// A partition value: `/` and `=` cannot be part of a directory name.
fn hive(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '/' | '=' | '\\') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// fsyncs the directories of a written tree (the files were synced on close).
fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}
