//! The rows of one archived data message: one per value (`VT`), or one per
//! event (`StationEvents`, channel `Events`), with the station's and the
//! channel's names, times in UTC and as the logger wrote them.
//!
//! The body is checked first as the service checks it ([`crate::xml::check`]),
//! then read with quick-xml from its text decoded per its declaration
//! ([`crate::xml::text`]: ISO-8859-1 or UTF-8), so a unit sent as the byte
//! 0xB0 and one sent as `&#176;` are both `°`. `VInst` (an instantaneous,
//! unstored reading) is left out: it is no measurement of the series.

use std::borrow::Cow;
use std::sync::Arc;

use compact_str::CompactString;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::summary;

/// A station as its `StationData` names it, shared by its rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StationMeta {
    pub(crate) id: Arc<str>,
    pub(crate) name: String,
    /// `timezone` as written.
    pub(crate) offset: String,
}

/// A channel as its `ChannelData` names it, shared by its rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ChannelMeta {
    pub(crate) id: Arc<str>,
    pub(crate) name: String,
    pub(crate) unit: String,
}

/// One value, as exported (the file's receipt time and path are added by the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ValueRow {
    pub(crate) station: Arc<StationMeta>,
    pub(crate) channel: Arc<ChannelMeta>,
    /// The instant, when the station's offset is usable (`time_utc`).
    pub(crate) utc: Option<chrono::DateTime<chrono::Utc>>,
    // Short texts, kept inline (no allocation per value).
    pub(crate) time_local: CompactString,
    /// The number as written; empty when the value failed (`errorcode` > 0).
    pub(crate) value: CompactString,
    pub(crate) errorcode: CompactString,
    pub(crate) errortext: CompactString,
}

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub(crate) station: Arc<StationMeta>,
    /// Empty for a station event.
    pub(crate) channel_id: String,
    pub(crate) utc: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) time_local: String,
    pub(crate) kind: String,
    pub(crate) code: String,
    pub(crate) text: String,
    pub(crate) value: String,
    pub(crate) value2: String,
}

/// What one body gives.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) values: Vec<ValueRow>,
    pub(crate) events: Vec<EventRow>,
    /// Said once per body: stations without a usable offset.
    pub(crate) warnings: Vec<String>,
}

/// Where the reader is.
#[derive(Default)]
struct Station {
    meta: Arc<StationMeta>,
    offset: Option<chrono::FixedOffset>,
}

type Channel = Arc<ChannelMeta>;

/// The element whose text is being read.
enum Open {
    Value(ValueRow),
    Event(EventRow),
}

/// The rows of `body`, or why it cannot be read.
pub(crate) fn parse(body: &[u8]) -> Result<Parsed, String> {
    if memchr::memmem::find(body, "\u{FFFD}".as_bytes()).is_some() {
        return Err(
            "damaged: it holds U+FFFD replacement characters (EF BF BD), \
                    what the old service's re-encoding left of bytes that were not UTF-8"
                .into(),
        );
    }
    crate::xml::check(body, "StationDataList", &crate::xml::Limits::default())?;
    let text = crate::xml::text(body);
    let mut reader = Reader::from_str(&text);
    reader.config_mut().trim_text(false);
    let mut parsed = Parsed::default();
    let mut station = Station::default();
    let mut channel: Option<Channel> = None;
    let mut in_values = false;
    let mut in_events = false;
    let mut open: Option<Open> = None;
    let mut text_buf = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} (near byte {})", reader.error_position()))?;
        match event {
            // An empty StationData or ChannelData has no values.
            Event::Start(e) if matches!(e.name().as_ref(), "StationData" | "ChannelData") => {
                if e.name().as_ref() == "StationData" {
                    let meta = StationMeta {
                        id: attr(&e, "stationId")?.into(),
                        name: attr(&e, "name")?,
                        offset: attr(&e, "timezone")?,
                    };
                    let offset = summary::parse_offset(&meta.offset);
                    if offset.is_none() {
                        parsed.warnings.push(format!(
                            "station {}: no usable timezone ({:?}): time_utc left empty",
                            meta.id, meta.offset
                        ));
                    }
                    station = Station {
                        meta: Arc::new(meta),
                        offset,
                    };
                } else {
                    channel = Some(Arc::new(ChannelMeta {
                        id: attr(&e, "channelId")?.into(),
                        name: attr(&e, "name")?,
                        unit: attr(&e, "unit")?,
                    }));
                }
            }
            Event::Start(e) => match e.name().as_ref() {
                "Values" => in_values = channel.is_some(),
                "Events" => in_events = channel.is_some(),
                "StationEvents" => in_events = true,
                "VT" if in_values => {
                    open = Some(Open::Value(value_row(&e, &station, channel.as_ref())?));
                    text_buf.clear();
                }
                "Event" if in_events => {
                    open = Some(Open::Event(event_row(&e, &station, channel.as_ref())?));
                    text_buf.clear();
                }
                _ => {}
            },
            Event::Empty(e) => match e.name().as_ref() {
                "VT" if in_values => {
                    let mut row = value_row(&e, &station, channel.as_ref())?;
                    finish_value(&mut row, "");
                    parsed.values.push(row);
                }
                "Event" if in_events => {
                    let row = event_row(&e, &station, channel.as_ref())?;
                    parsed.events.push(row);
                }
                _ => {}
            },
            Event::Text(t) if open.is_some() => text_buf.push_str(&t),
            Event::CData(c) if open.is_some() => text_buf.push_str(&c),
            Event::GeneralRef(r) if open.is_some() => match r.resolve_char_ref() {
                Ok(Some(c)) => text_buf.push(c),
                _ => {
                    if let Some(s) = quick_xml::escape::resolve_xml_entity(&r) {
                        text_buf.push_str(s);
                    }
                }
            },
            Event::End(e) => match e.name().as_ref() {
                "VT" => {
                    if let Some(Open::Value(mut row)) = open.take() {
                        finish_value(&mut row, &text_buf);
                        parsed.values.push(row);
                    }
                }
                "Event" => {
                    if let Some(Open::Event(mut row)) = open.take() {
                        row.text = text_buf.trim().to_owned();
                        parsed.events.push(row);
                    }
                }
                "Values" => in_values = false,
                "Events" | "StationEvents" => in_events = false,
                "ChannelData" => channel = None,
                "StationData" => station = Station::default(),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(parsed)
}

/// An attribute's value, references resolved; empty when absent.
fn attr(e: &BytesStart<'_>, key: &str) -> Result<String, String> {
    let mut found = [CompactString::default()];
    attrs(e, &[key], &mut found)?;
    let [value] = found;
    Ok(value.into_string())
}

/// The values of `keys` (references resolved, trimmed; empty when absent)
/// in one pass over the attributes: a `VT` has three to look for.
fn attrs(e: &BytesStart<'_>, keys: &[&str], out: &mut [CompactString]) -> Result<(), String> {
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    for a in attributes {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        if let Some(i) = keys.iter().position(|k| *k == a.key.0) {
            let v: Cow<'_, str> = quick_xml::escape::unescape(&a.value)
                .map_err(|err| format!("bad reference in {}: {err}", keys[i]))?;
            out[i] = CompactString::new(v.trim());
        }
    }
    Ok(())
}

/// `t` (local) as UTC with the station's offset; none without a usable offset.
fn utc_of(t: &str, station: &Station) -> Option<chrono::DateTime<chrono::Utc>> {
    match station.offset {
        Some(_) if !t.is_empty() => summary::local_to_utc(t, Some(&station.meta.offset)),
        _ => None,
    }
}

fn value_row(
    e: &BytesStart<'_>,
    station: &Station,
    channel: Option<&Channel>,
) -> Result<ValueRow, String> {
    let mut found: [CompactString; 3] = Default::default();
    attrs(e, &["t", "errorcode", "errortext"], &mut found)?;
    let [t, errorcode, errortext] = found;
    Ok(ValueRow {
        station: station.meta.clone(),
        channel: channel.cloned().unwrap_or_default(),
        utc: utc_of(&t, station),
        time_local: t,
        value: CompactString::default(),
        errorcode,
        errortext,
    })
}

/// The value's text, missing when its error code says it failed.
fn finish_value(row: &mut ValueRow, text: &str) {
    if !failed(&row.errorcode) {
        row.value = CompactString::new(text.trim());
    }
}

/// An error code > 0 (as text: `5`, `05`); one that is not a number counts as failed.
fn failed(code: &str) -> bool {
    let code = code.trim();
    !code.is_empty() && code.parse::<u64>().map_or(true, |n| n > 0)
}

fn event_row(
    e: &BytesStart<'_>,
    station: &Station,
    channel: Option<&Channel>,
) -> Result<EventRow, String> {
    let t = attr(e, "t")?;
    let channel_id = match attr(e, "channelId")? {
        id if !id.is_empty() => id,
        _ => channel.map(|c| c.id.to_string()).unwrap_or_default(),
    };
    Ok(EventRow {
        station: station.meta.clone(),
        channel_id,
        utc: utc_of(&t, station),
        time_local: t,
        kind: attr(e, "type")?,
        code: attr(e, "code")?,
        text: String::new(),
        value: attr(e, "value")?,
        value2: attr(e, "value2")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>
<StationDataList>
  <StationData stationId=\"0000452891\" name=\"M\xfchlbach\" timezone=\"-03:30\">
    <StationEvents><Event t=\"2026-01-01T00:10:00\" type=\"info.observer.text\" code=\"1\">door &amp; lid</Event></StationEvents>
    <ChannelData channelId=\"0010\" name=\"Temp\" unit=\"\xb0C\">
      <Values>
        <VT t=\"2026-01-01T00:00:00\">1.50</VT>
        <VT t=\"2026-01-01T00:15:00\" errorcode=\"05\" errortext=\"line break\">0</VT>
        <VT t=\"2026-01-01T00:30:00\" errorcode=\"0\">-0.0</VT>
      </Values>
      <Events><Event t=\"2026-01-01T00:20:00\" type=\"info.limit\" value=\"3\"/></Events>
    </ChannelData>
    <ChannelData channelId=\"0020\" name=\"Empty\" unit=\"&#176;C\"><Values/></ChannelData>
  </StationData>
  <StationData stationId=\"B\" timezone=\"\"><ChannelData channelId=\"WSAV\"><Values><VT t=\"2026-01-01T00:00:00\">7</VT></Values></ChannelData></StationData>
</StationDataList>";

    #[test]
    fn values_events_offsets_and_encodings() {
        let p = parse(DOC).expect("parses");
        assert_eq!(p.values.len(), 4);
        let v = &p.values[0];
        assert_eq!(v.station.name, "Mühlbach");
        assert_eq!(v.channel.unit, "°C");
        assert_eq!(
            v.utc.map(crate::layout::rfc3339_seconds).as_deref(),
            Some("2026-01-01T03:30:00Z")
        );
        assert_eq!(v.time_local, "2026-01-01T00:00:00");
        assert_eq!(v.station.offset, "-03:30");
        assert_eq!(v.value, "1.50");
        assert_eq!(
            (p.values[1].value.as_str(), p.values[1].errorcode.as_str()),
            ("", "05")
        );
        assert_eq!(p.values[1].errortext, "line break");
        assert_eq!(p.values[2].value, "-0.0", "errorcode 0 is no failure");
        let b = &p.values[3];
        assert_eq!((&*b.station.id, &*b.channel.id), ("B", "WSAV"));
        assert_eq!(b.utc, None, "no offset, no guess");
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[0].text, "door & lid");
        assert_eq!(p.events[0].channel_id, "");
        assert_eq!(p.events[1].channel_id, "0010");
        assert_eq!(p.events[1].value, "3");
    }

    #[test]
    fn bad_bodies_say_why() {
        assert!(parse(b"<StationDataList><StationData").is_err());
        assert!(parse(b"<Response/>").is_err());
        let damaged = parse("<StationDataList unit=\"\u{FFFD}C\"/>".as_bytes());
        assert!(damaged.is_err_and(|e| e.contains("EF BF BD")));
    }
}
