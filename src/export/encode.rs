//! One body's rows as records ([`super::record`]), formatted for the
//! output by the thread that parsed them.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::record::{self, Builder, LEFT_OUT, NO_COLLAPSE};
use super::rows::{self, EventRow, ValueRow};
use super::{EVENT_FIELDS, FileInfo, Format, Sourced, VALUE_FIELDS, parquet, postgres, text};

/// What every body is read for: the format and the filters.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    pub(super) format: Format,
    pub(super) events: bool,
    pub(super) stations: Vec<String>,
    pub(super) channels: Vec<String>,
    pub(super) from: Option<DateTime<Utc>>,
    pub(super) to: Option<DateTime<Utc>>,
    /// Parquet partitioned by date: the whole export is one sort whose
    /// keys start with the value's UTC day and the sending station, so
    /// each day's partition is written once, whole.
    pub(super) by_date: bool,
}

/// One body's records and what to say of it.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    pub(super) records: Vec<u8>,
    pub(super) warnings: Vec<String>,
    /// Values (or events) without a usable time: each kept, none a copy.
    pub(super) timeless: u64,
}

/// Reads `body` (received as `file`) into records; why not, when it
/// cannot be read.
pub(super) fn body(spec: &Spec, file: &Arc<FileInfo>, body: &[u8]) -> Result<Encoded, String> {
    let parsed = rows::parse(body)?;
    let mut out = Encoded {
        warnings: parsed.warnings,
        ..Encoded::default()
    };
    let mut lines = Lines::new(spec.format);
    if spec.events {
        for row in parsed.events {
            if !wanted(spec, &row.station.id, &row.channel_id, row.utc) {
                continue;
            }
            let r = Sourced {
                row,
                file: file.clone(),
            };
            let flags = time_flags(r.row.utc, &r.row.time_local, &mut out.timeless);
            let e = &r.row;
            let mut b = Builder::begin(&mut out.records);
            date_prefix(spec, &mut out.records, e.utc, file);
            record::key_text(&mut out.records, &e.station.id);
            record::key_text(&mut out.records, &e.channel_id);
            b.group_ends(&out.records);
            record::key_time(&mut out.records, e.utc, &e.time_local);
            for part in [&e.kind, &e.code, &e.text] {
                record::key_text(&mut out.records, part);
            }
            b.key_ends(&out.records);
            let kept = lines
                .event(&mut out.records, &r)
                .map_err(|e| format!("cannot format a row: {e}"))?;
            b.finish(&mut out.records, flags | if kept { 0 } else { LEFT_OUT });
        }
    } else {
        for row in parsed.values {
            if !wanted(spec, &row.station.id, &row.channel.id, row.utc) {
                continue;
            }
            let r = Sourced {
                row,
                file: file.clone(),
            };
            let flags = time_flags(r.row.utc, &r.row.time_local, &mut out.timeless);
            let v = &r.row;
            let mut b = Builder::begin(&mut out.records);
            date_prefix(spec, &mut out.records, v.utc, file);
            record::key_text(&mut out.records, &v.station.id);
            record::key_text(&mut out.records, &v.channel.id);
            b.group_ends(&out.records);
            record::key_time(&mut out.records, v.utc, &v.time_local);
            b.key_ends(&out.records);
            let kept = lines
                .value(&mut out.records, &r)
                .map_err(|e| format!("cannot format a row: {e}"))?;
            b.finish(&mut out.records, flags | if kept { 0 } else { LEFT_OUT });
        }
    }
    if out.timeless > 0 {
        out.warnings.push(format!(
            "{} values without a usable time (no or no readable VT t): each exported, \
             with an empty time_utc, none taken for a copy of another",
            out.timeless
        ));
    }
    Ok(out)
}

/// With [`Spec::by_date`], the key starts with the value's UTC day
/// (`unknown` without one, after every day) and the sending station.
fn date_prefix(spec: &Spec, out: &mut Vec<u8>, utc: Option<DateTime<Utc>>, file: &FileInfo) {
    if spec.by_date {
        match utc {
            Some(t) => record::key_text(out, &t.format("%Y-%m-%d").to_string()),
            None => record::key_text(out, "unknown"),
        }
        record::key_text(out, &file.station);
    }
}

/// [`NO_COLLAPSE`] for a row without a usable time: no UTC time, and no
/// time as written that reads as one (`<VT>35.2</VT>` has none at all).
fn time_flags(utc: Option<DateTime<Utc>>, local: &str, timeless: &mut u64) -> u8 {
    if utc.is_some() || crate::summary::local_to_utc(local, None).is_some() {
        0
    } else {
        *timeless += 1;
        NO_COLLAPSE
    }
}

/// Whether a row passes `--station`, `--channel`, `--from` and `--to` (a
/// row without a UTC time cannot be placed in a time range: it is left out
/// of one).
fn wanted(spec: &Spec, station: &str, channel: &str, utc: Option<DateTime<Utc>>) -> bool {
    if !spec.stations.is_empty() && !spec.stations.iter().any(|s| s == station) {
        return false;
    }
    if !spec.channels.is_empty() && !spec.channels.iter().any(|c| c == channel) {
        return false;
    }
    if spec.from.is_none() && spec.to.is_none() {
        return true;
    }
    let Some(t) = utc else {
        return false;
    };
    spec.from.is_none_or(|f| t >= f) && spec.to.is_none_or(|to| t < to)
}

/// The payload writer of a format.
enum Lines {
    /// CSV through the csv crate (RFC 4180 quoting), or rows for `COPY`.
    Csv(Csv),
    Copy(Csv),
    Jsonl,
    Zrxp,
    Influx,
    Parquet,
}

impl Lines {
    fn new(format: Format) -> Lines {
        match format {
            Format::Csv => Lines::Csv(Csv::new(text::csv_buffer())),
            Format::Postgres => Lines::Copy(Csv::new(postgres::copy_buffer())),
            Format::Jsonl => Lines::Jsonl,
            Format::Zrxp => Lines::Zrxp,
            Format::Influx => Lines::Influx,
            Format::Parquet => Lines::Parquet,
        }
    }

    /// A value's payload onto `out`; false when the format has no place for it.
    fn value(&mut self, out: &mut Vec<u8>, r: &Sourced<ValueRow>) -> anyhow::Result<bool> {
        match self {
            Lines::Csv(w) => {
                let t = text::utc_text(r.row.utc);
                w.w.write_record(text::value_fields(r, &t))?;
                w.take(out)?;
                Ok(true)
            }
            Lines::Copy(w) => {
                let kept = postgres::copy_value(&mut w.w, r)?;
                w.take(out)?;
                Ok(kept)
            }
            Lines::Jsonl => {
                let t = text::utc_text(r.row.utc);
                text::json_line(out, &VALUE_FIELDS, &text::value_fields(r, &t))?;
                Ok(true)
            }
            Lines::Zrxp => {
                // The block's header, then the line: the writer puts the
                // header out before a block's first line only.
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                text::zrxp_header(out, &r.row)?;
                let len = (out.len() - at - 4) as u32;
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                let kept = text::zrxp_line(out, &r.row)?;
                if !kept {
                    out.truncate(at);
                }
                Ok(kept)
            }
            Lines::Influx => text::influx_line(out, &r.row),
            Lines::Parquet => {
                parquet::encode_value(out, r);
                Ok(true)
            }
        }
    }

    fn event(&mut self, out: &mut Vec<u8>, r: &Sourced<EventRow>) -> anyhow::Result<bool> {
        match self {
            Lines::Csv(w) => {
                let t = text::utc_text(r.row.utc);
                w.w.write_record(text::event_fields(r, &t))?;
                w.take(out)?;
                Ok(true)
            }
            Lines::Copy(w) => {
                let kept = postgres::copy_event(&mut w.w, r)?;
                w.take(out)?;
                Ok(kept)
            }
            Lines::Jsonl => {
                let t = text::utc_text(r.row.utc);
                text::json_line(out, &EVENT_FIELDS, &text::event_fields(r, &t))?;
                Ok(true)
            }
            Lines::Parquet => {
                parquet::encode_event(out, r);
                Ok(true)
            }
            // Refused before any body is read.
            Lines::Zrxp | Lines::Influx => Ok(false),
        }
    }
}

/// A csv writer of one body's rows, and how much of its output was taken.
struct Csv {
    w: csv::Writer<Vec<u8>>,
    taken: usize,
}

impl Csv {
    fn new(w: csv::Writer<Vec<u8>>) -> Csv {
        Csv { w, taken: 0 }
    }

    /// Copies the row just written onto `out`.
    fn take(&mut self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.w.flush()?;
        let all = self.w.get_ref();
        out.extend_from_slice(&all[self.taken..]);
        self.taken = all.len();
        Ok(())
    }
}

/// A ZRXP payload: the block's header and the row's line.
pub(super) fn zrxp_parts(payload: &[u8]) -> (&[u8], &[u8]) {
    let len = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    let header_end = (4 + len).min(payload.len());
    (
        payload.get(4..header_end).unwrap_or_default(),
        &payload[header_end..],
    )
}
