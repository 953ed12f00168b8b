//! The text formats of `dlsrv export`: CSV, JSON Lines, ZRXP, InfluxDB line
//! protocol. Each writes a station's rows into a buffer; the caller puts the
//! buffers in order. Values go out as the document wrote them (no float
//! round trip), but for the line protocol, whose `value` field is a float.

use std::io::Write;

use super::{EVENT_FIELDS, Sourced, VALUE_FIELDS};
use crate::export::rows::{EventRow, ValueRow};
use crate::layout::TimeText;

/// A row's `time_utc`, written without allocating; empty without one.
pub(super) fn utc_text(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<TimeText> {
    t.map(TimeText::of)
}

/// The header: CSV's row of field names; nothing for the others.
pub(super) fn csv_header(events: bool) -> anyhow::Result<Vec<u8>> {
    let fields: &[&str] = if events { &EVENT_FIELDS } else { &VALUE_FIELDS };
    let mut w = csv_writer(Vec::new());
    w.write_record(fields)?;
    Ok(w.into_inner().map_err(|e| e.into_error())?)
}

fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    // RFC 4180: CRLF, quotes only where needed.
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out)
}

pub(super) fn value_fields<'a>(
    r: &'a Sourced<ValueRow>,
    time_utc: &'a Option<TimeText>,
) -> [&'a str; 13] {
    let v = &r.row;
    [
        &v.station.id,
        &v.station.name,
        &v.channel.id,
        &v.channel.name,
        &v.channel.unit,
        time_utc.as_ref().map_or("", TimeText::as_str),
        &v.time_local,
        &v.station.offset,
        &v.value,
        &v.errorcode,
        &v.errortext,
        &r.file.received_utc,
        &r.file.source,
    ]
}

pub(super) fn event_fields<'a>(
    r: &'a Sourced<EventRow>,
    time_utc: &'a Option<TimeText>,
) -> [&'a str; 10] {
    let e = &r.row;
    [
        &e.station.id,
        &e.channel_id,
        time_utc.as_ref().map_or("", TimeText::as_str),
        &e.kind,
        &e.code,
        &e.text,
        &e.value,
        &e.value2,
        &r.file.received_utc,
        &r.file.source,
    ]
}

pub(super) fn csv_values<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<ValueRow>>,
) -> anyhow::Result<()> {
    let mut w = csv_writer(out);
    for r in rows {
        let t = utc_text(r.row.utc);
        w.write_record(value_fields(r, &t))?;
    }
    w.flush()?;
    Ok(())
}

pub(super) fn csv_events<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<EventRow>>,
) -> anyhow::Result<()> {
    let mut w = csv_writer(out);
    for r in rows {
        let t = utc_text(r.row.utc);
        w.write_record(event_fields(r, &t))?;
    }
    w.flush()?;
    Ok(())
}

/// One JSON object per line; empty text is `null`.
fn json_line(out: &mut Vec<u8>, names: &[&str], fields: &[&str]) -> anyhow::Result<()> {
    out.push(b'{');
    for (i, (name, value)) in names.iter().zip(fields).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name)?;
        out.push(b':');
        if value.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            serde_json::to_writer(&mut *out, value)?;
        }
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

pub(super) fn jsonl_values<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<ValueRow>>,
) -> anyhow::Result<()> {
    for r in rows {
        let t = utc_text(r.row.utc);
        json_line(out, &VALUE_FIELDS, &value_fields(r, &t))?;
    }
    Ok(())
}

pub(super) fn jsonl_events<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<EventRow>>,
) -> anyhow::Result<()> {
    for r in rows {
        let t = utc_text(r.row.utc);
        json_line(out, &EVENT_FIELDS, &event_fields(r, &t))?;
    }
    Ok(())
}

/// ZRXP's missing value.
pub(super) const ZRXP_MISSING: &str = "-777";

/// A ZRXP header value: its separators (`|*|`) and line breaks cannot appear.
fn zrxp_text(s: &str) -> String {
    s.replace("|*|", "|").replace(['\r', '\n'], " ")
}

/// ZRXP, as WISKI and Delft-FEWS import it: a block per station and
/// channel, UTC timestamps `yyyyMMddHHmmss`, missing values as `-777`.
/// Rows must come by channel (they do: by channel, then time). A row
/// without a UTC time has no place in it: counted in `left_out`.
pub(super) fn zrxp_values<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<ValueRow>>,
    left_out: &mut u64,
) -> anyhow::Result<()> {
    let mut current: Option<(std::sync::Arc<str>, std::sync::Arc<str>)> = None;
    for r in rows {
        let v = &r.row;
        let Some(utc) = v.utc else {
            *left_out += 1;
            continue;
        };
        let key = (v.station.id.clone(), v.channel.id.clone());
        if current.as_ref() != Some(&key) {
            let (station, channel) = (zrxp_text(&v.station.id), zrxp_text(&v.channel.id));
            write!(
                out,
                "#REXCHANGE{station}.{channel}|*|RINVAL{ZRXP_MISSING}|*|\r\n\
                 #SANR{station}|*|SNAME{}|*|CNR{channel}|*|CNAME{}|*|CUNIT{}|*|\r\n\
                 #TZUTC|*|LAYOUT(timestamp,value)|*|\r\n",
                zrxp_text(&v.station.name),
                zrxp_text(&v.channel.name),
                zrxp_text(&v.channel.unit),
            )?;
            current = Some(key);
        }
        let value = if v.value.is_empty() || v.value.contains(char::is_whitespace) {
            ZRXP_MISSING
        } else {
            &v.value
        };
        write!(out, "{} {value}\r\n", utc.format("%Y%m%d%H%M%S"))?;
    }
    Ok(())
}

/// A tag value of the line protocol: commas, equals signs and spaces escaped.
fn influx_tag(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        if c == '\n' || c == '\r' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// InfluxDB line protocol: measurement `ott`, tags `station_id` and
/// `channel_id`, fields `value` (a float, left out when missing) and
/// `errorcode` (an integer, when there is one), nanoseconds. A row without
/// a UTC time, or with neither field, cannot be a point: counted in `left_out`.
pub(super) fn influx_values<'a>(
    out: &mut Vec<u8>,
    rows: impl Iterator<Item = &'a Sourced<ValueRow>>,
    left_out: &mut u64,
) -> anyhow::Result<()> {
    for r in rows {
        let v = &r.row;
        let value = v.value.trim().parse::<f64>().ok().filter(|f| f.is_finite());
        let code = v.errorcode.trim().parse::<i64>().ok();
        let ns = v.utc.and_then(|t| t.timestamp_nanos_opt());
        let (Some(ns), true) = (ns, value.is_some() || code.is_some()) else {
            *left_out += 1;
            continue;
        };
        write!(
            out,
            "ott,station_id={},channel_id={} ",
            influx_tag(&v.station.id),
            influx_tag(&v.channel.id)
        )?;
        match (value, code) {
            (Some(value), Some(code)) => write!(out, "value={value},errorcode={code}i")?,
            (Some(value), None) => write!(out, "value={value}")?,
            (None, Some(code)) => write!(out, "errorcode={code}i")?,
            (None, None) => {}
        }
        writeln!(out, " {ns}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(influx_tag("a b,c=d"), "a\\ b\\,c\\=d");
        assert_eq!(zrxp_text("x|*|y\nz"), "x|y z");
    }
}
