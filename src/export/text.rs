//! The text formats of `dlsrv export`: CSV, JSON Lines, ZRXP, InfluxDB line
//! protocol, a row at a time into a buffer (the record it becomes is sorted
//! and merged as bytes). Values go out as the document wrote them (no float
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

/// A CSV writer into a buffer: RFC 4180, CRLF, quotes only where needed.
pub(super) fn csv_buffer() -> csv::Writer<Vec<u8>> {
    csv_writer(Vec::new())
}

/// One JSON object per line; empty text is `null`.
pub(super) fn json_line(out: &mut Vec<u8>, names: &[&str], fields: &[&str]) -> anyhow::Result<()> {
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

/// ZRXP's missing value.
pub(super) const ZRXP_MISSING: &str = "-777";

/// A ZRXP header value: its separators (`|*|`) and line breaks cannot appear.
fn zrxp_text(s: &str) -> String {
    s.replace("|*|", "|").replace(['\r', '\n'], " ")
}

/// ZRXP, as WISKI and Delft-FEWS import it: a block per station and
/// channel, UTC timestamps `yyyyMMddHHmmss`, missing values as `-777`.
/// The header of a block, written before its first row.
pub(super) fn zrxp_header(out: &mut Vec<u8>, v: &ValueRow) -> anyhow::Result<()> {
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
    Ok(())
}

/// A row of a ZRXP block; false (nothing written) for a row without a UTC
/// time, which has no place in it.
pub(super) fn zrxp_line(out: &mut Vec<u8>, v: &ValueRow) -> anyhow::Result<bool> {
    let Some(utc) = v.utc else {
        return Ok(false);
    };
    let value = if v.value.is_empty() || v.value.contains(char::is_whitespace) {
        ZRXP_MISSING
    } else {
        &v.value
    };
    write!(out, "{} {value}\r\n", utc.format("%Y%m%d%H%M%S"))?;
    Ok(true)
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
/// `errorcode` (an integer, when there is one), nanoseconds. False (nothing
/// written) for a row without a UTC time, or with neither field: it cannot
/// be a point.
pub(super) fn influx_line(out: &mut Vec<u8>, v: &ValueRow) -> anyhow::Result<bool> {
    let value = v.value.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    let code = v.errorcode.trim().parse::<i64>().ok();
    let ns = v.utc.and_then(|t| t.timestamp_nanos_opt());
    let (Some(ns), true) = (ns, value.is_some() || code.is_some()) else {
        return Ok(false);
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
    Ok(true)
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
