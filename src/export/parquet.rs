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

fn micros(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn value_batch(rows: &[&Sourced<ValueRow>]) -> anyhow::Result<RecordBatch> {
    let mut text: Vec<StringBuilder> = (0..10).map(|_| StringBuilder::new()).collect();
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut value = Float64Builder::new();
    for r in rows {
        let v = &r.row;
        text[0].append_value(&v.station.id);
        text[1].append_value(&v.station.name);
        text[2].append_value(&v.channel.id);
        text[3].append_value(&v.channel.name);
        text[4].append_value(&v.channel.unit);
        time.append_option(micros(v.utc));
        text[5].append_value(&v.time_local);
        text[6].append_value(&v.station.offset);
        value.append_option(v.value.trim().parse::<f64>().ok());
        text[7].append_option(opt(&v.errorcode));
        text[8].append_option(opt(&v.errortext));
        received.append_value(r.file.received.timestamp_micros());
        text[9].append_value(&r.file.source);
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

fn event_batch(rows: &[&Sourced<EventRow>]) -> anyhow::Result<RecordBatch> {
    let mut text: Vec<StringBuilder> = (0..9).map(|_| StringBuilder::new()).collect();
    let mut time = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for r in rows {
        let e = &r.row;
        text[0].append_value(&e.station.id);
        text[1].append_option(opt(&e.channel_id));
        time.append_option(micros(e.utc));
        text[2].append_value(&e.time_local);
        text[3].append_option(opt(&e.kind));
        text[4].append_option(opt(&e.code));
        text[5].append_option(opt(&e.text));
        text[6].append_option(opt(&e.value));
        text[7].append_option(opt(&e.value2));
        received.append_value(r.file.received.timestamp_micros());
        text[8].append_value(&r.file.source);
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
    fn key(&self, station: &str, utc: Option<chrono::DateTime<chrono::Utc>>) -> String {
        match self.partition {
            None => String::new(),
            Some(Partition::Station) => format!("station={}", hive(station)),
            Some(Partition::Date) => match utc {
                Some(t) => format!("date={}", t.format("%Y-%m-%d")),
                None => "date=unknown".to_owned(),
            },
        }
    }

    pub(super) fn values<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a Sourced<ValueRow>>,
    ) -> anyhow::Result<()> {
        self.write(rows, |r| (&r.station.id, r.utc), value_batch)
    }

    pub(super) fn events<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a Sourced<EventRow>>,
    ) -> anyhow::Result<()> {
        self.write(rows, |r| (&r.station.id, r.utc), event_batch)
    }

    /// Writes one station's rows, each into its partition (`place`: its
    /// station and time), `ROW_GROUP` at a time.
    fn write<'a, R: 'a>(
        &mut self,
        rows: impl Iterator<Item = &'a Sourced<R>>,
        place: impl Fn(&R) -> (&str, Option<chrono::DateTime<chrono::Utc>>),
        batch: impl Fn(&[&Sourced<R>]) -> anyhow::Result<RecordBatch>,
    ) -> anyhow::Result<()> {
        let mut parts: BTreeMap<String, Vec<&Sourced<R>>> = BTreeMap::new();
        for r in rows {
            let (station, utc) = place(&r.row);
            parts.entry(self.key(station, utc)).or_default().push(r);
        }
        for (key, rows) in parts {
            for chunk in rows.chunks(ROW_GROUP) {
                let batch = batch(chunk)?;
                self.writer(&key)?.write(&batch)?;
            }
        }
        // A station's partition is complete once its rows are written.
        if self.partition == Some(Partition::Station) {
            self.close_all()?;
        }
        Ok(())
    }

    fn close_all(&mut self) -> anyhow::Result<()> {
        for (_, writer) in std::mem::take(&mut self.writers) {
            writer.into_inner()?.commit()?;
        }
        Ok(())
    }

    /// Closes every file durably, and renames a directory into place.
    pub(super) fn finish(mut self) -> anyhow::Result<()> {
        if self.writers.is_empty() && self.partition.is_none() {
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
