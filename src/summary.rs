//! What the catalog learns from a stored document, collected in the same
//! pass that checks its XML ([`crate::xml`] feeds a [`Collector`] the
//! elements, the attributes it asks for and the text it asks for): the
//! station's `StationInfo`, its name and time zone, a line per channel, and
//! an alarm's time, type, channel and text.
//!
//! Only the first `StationData` of a message is read (a netDL sends exactly
//! one). Values are counted, not kept: per channel the number of `VT`s, of
//! those with an `errorcode` > 0, the first and last `t`, and the last value
//! without an error code (a failed value's text is often `0`, which is no
//! measurement). Times stay the logger's local times here; [`local_to_utc`]
//! converts them with the station's offset.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};

/// A data message's or an alarm's summary. Its JSON (the catalog's
/// `summary` column, travelling between the hosts of a shared catalog) has
/// short keys and leaves out what is missing: it goes with every row.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Summary {
    /// `StationData name`.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub(crate) station_name: Option<String>,
    /// `StationData timezone`, as sent (`+01:00`, `00:00`, `-03:30`).
    #[serde(rename = "z", default, skip_serializing_if = "Option::is_none")]
    pub(crate) timezone: Option<String>,
    /// The `StationInfo` element's attributes, when there is one.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub(crate) info: Option<StationInfo>,
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) channels: Vec<Channel>,
    /// The `AlarmMessage`, when that is the root.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub(crate) alarm: Option<Alarm>,
}

/// `StationInfo`'s attributes, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StationInfo {
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub(crate) time: Option<String>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub(crate) firmware: Option<String>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub(crate) battery_voltage: Option<String>,
    #[serde(rename = "T", default, skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<String>,
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub(crate) gsm_signal: Option<String>,
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    pub(crate) ip_address: Option<String>,
    #[serde(rename = "cy", default, skip_serializing_if = "Option::is_none")]
    pub(crate) transmission_cycle: Option<String>,
    #[serde(rename = "cc", default, skip_serializing_if = "Option::is_none")]
    pub(crate) configured_transmission_cycle: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub(crate) device_type: Option<String>,
}

/// One `ChannelData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Channel {
    #[serde(rename = "id")]
    pub(crate) channel_id: String,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub(crate) unit: Option<String>,
    #[serde(rename = "v")]
    pub(crate) values: u64,
    #[serde(rename = "e")]
    pub(crate) errors: u64,
    /// Local times (`t`) of the first and last value.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_t: Option<String>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_t: Option<String>,
    /// The last value without an error code, and its local time.
    #[serde(rename = "lv", default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_value: Option<String>,
    #[serde(rename = "lt", default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_value_t: Option<String>,
}

/// An `AlarmMessage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Alarm {
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub(crate) t: Option<String>,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub(crate) channel_id: Option<String>,
    #[serde(rename = "x")]
    pub(crate) text: String,
}

/// Where the collector is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The first `StationData`, at this depth.
    Station(usize),
    /// A `ChannelData` of it.
    Channel(usize),
    /// Its `Values`.
    Values(usize),
    /// One `VT`.
    Value(usize),
}

/// A value as the parser hands it over: a range of the document's bytes,
/// decoded (references resolved, per the encoding) only if it is kept —
/// a message has hundreds of values and keeps a few — or text already
/// decoded, held by the collector ([`Collector::own`]). `Copy`, so that
/// following hundreds of values moves no strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    Raw(usize, usize),
    /// The collector's text number this.
    Owned(usize),
    /// The `t` of the `VT` whose start tag is at this byte: a value's
    /// attributes and text are read again only for the few values kept.
    TimeOf(usize),
    /// The text of that `VT`.
    TextOf(usize),
}

impl Default for Val {
    fn default() -> Self {
        Val::Raw(0, 0)
    }
}

/// Turns a [`Val`] into text: the parser's decoding.
pub(crate) type Decode<'a> = &'a dyn Fn(&Val) -> Result<String, String>;

/// A channel while it is read.
#[derive(Debug, Default)]
struct ChannelAcc {
    id: Option<Val>,
    name: Option<Val>,
    unit: Option<Val>,
    values: u64,
    errors: u64,
    first_t: Option<Val>,
    last_t: Option<Val>,
    last_value: Option<Val>,
    last_value_t: Option<Val>,
}

/// Wanted attributes of an element, by name.
type Attrs = Vec<(&'static [u8], Val)>;

/// Builds a [`Summary`] from the elements the parser reports.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    station_name: Option<Val>,
    timezone: Option<Val>,
    info: Option<Attrs>,
    channels: Vec<ChannelAcc>,
    /// The alarm's attributes and its text so far.
    alarm: Option<(Attrs, String)>,
    places: Vec<Place>,
    /// A `StationData` was read: later ones are not.
    station_done: bool,
    /// The current value's time, error and text.
    value_t: Option<Val>,
    value_error: bool,
    value_text: Option<Val>,
    /// Where the current value's start tag is, when the parser reads it
    /// again for its text (see [`Val::TextOf`]).
    value_at: Option<usize>,
    /// The texts of [`Val::Owned`].
    owned: Vec<String>,
}

/// Attributes a collector asks for, by element.
const STATION_DATA: &[&[u8]] = &[b"name", b"timezone"];
const STATION_INFO: &[&[u8]] = &[
    b"time",
    b"firmware",
    b"batteryVoltage",
    b"temperature",
    b"gsmSignal",
    b"ipAddress",
    b"transmissionCycle",
    b"configuredTransmissionCycle",
    b"deviceType",
];
const CHANNEL_DATA: &[&[u8]] = &[b"channelId", b"name", b"unit"];
const VT: &[&[u8]] = &[b"t", b"errorcode"];
const ALARM: &[&[u8]] = &[b"t", b"type", b"channelId"];

/// The value of `key` among `attrs`.
fn take(attrs: &mut [(&[u8], Val)], key: &[u8]) -> Option<Val> {
    attrs
        .iter_mut()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| std::mem::take(v))
}

/// `s` without white space around it (moved, not copied, when it has none).
fn trimmed(s: String) -> String {
    if s.trim().len() == s.len() {
        s
    } else {
        s.trim().to_owned()
    }
}

/// A value's text: the collector's own, or decoded by the parser.
fn resolve(owned: &[String], v: Val, decode: Decode<'_>) -> Result<String, String> {
    match v {
        Val::Owned(i) => Ok(owned.get(i).cloned().unwrap_or_default()),
        v => decode(&v),
    }
}

impl Collector {
    /// Keeps `text` (decoded already) for the summary.
    pub(crate) fn own(&mut self, text: String) -> Val {
        self.owned.push(text);
        Val::Owned(self.owned.len() - 1)
    }

    fn resolve(&self, v: Val, decode: Decode<'_>) -> Result<String, String> {
        resolve(&self.owned, v, decode)
    }

    #[inline]
    fn place(&self) -> Option<Place> {
        self.places.last().copied()
    }

    /// The attributes of `tag`, opened at `depth`, that [`Collector::start`] wants.
    #[inline]
    pub(crate) fn wanted(&self, depth: usize, tag: &[u8]) -> &'static [&'static [u8]] {
        match (tag, self.place()) {
            (b"VT", Some(Place::Values(d))) if depth == d + 1 => VT,
            (b"AlarmMessage", _) if depth == 1 => ALARM,
            (b"StationData", None) if depth == 2 && !self.station_done => STATION_DATA,
            (b"StationInfo", Some(Place::Station(d))) if depth == d + 1 => STATION_INFO,
            (b"ChannelData", Some(Place::Station(d))) if depth == d + 1 => CHANNEL_DATA,
            _ => &[],
        }
    }

    /// Whether `tag` at `depth` is a value of the channel being read
    /// (then [`Collector::value`] is told of it).
    #[inline]
    pub(crate) fn takes_value(&self, depth: usize, tag: &[u8]) -> bool {
        matches!(self.place(), Some(Place::Values(d)) if depth == d + 1) && tag == b"VT"
    }

    /// Whether [`Collector::start`] is to be told of `tag` at `depth` at all.
    #[inline]
    pub(crate) fn follows(&self, depth: usize, tag: &[u8]) -> bool {
        !self.wanted(depth, tag).is_empty()
            || (tag == b"Values"
                && matches!(self.place(), Some(Place::Channel(d)) if depth == d + 1))
    }

    /// An element opened at `depth` (the root is 1), with the wanted
    /// attributes that it has (keys from [`Collector::wanted`]); `empty`
    /// when it closes at once.
    pub(crate) fn start(
        &mut self,
        depth: usize,
        tag: &[u8],
        attrs: &mut [(&'static [u8], Val)],
        empty: bool,
        decode: Decode<'_>,
    ) -> Result<(), String> {
        match (tag, self.place()) {
            (b"VT", _) => {
                let t = take(attrs, b"t");
                let code = take(attrs, b"errorcode");
                self.value(depth, None, t, code, empty, decode)?;
            }
            (b"AlarmMessage", _) if depth == 1 => {
                self.alarm = Some((attrs.to_vec(), String::new()));
            }
            (b"StationData", None) if depth == 2 && !self.station_done => {
                self.station_done = true;
                self.station_name = take(attrs, b"name");
                self.timezone = take(attrs, b"timezone");
                if !empty {
                    self.places.push(Place::Station(depth));
                }
            }
            (b"StationInfo", Some(Place::Station(d))) if depth == d + 1 => {
                self.info = Some(attrs.to_vec());
            }
            (b"ChannelData", Some(Place::Station(d))) if depth == d + 1 => {
                self.channels.push(ChannelAcc {
                    id: take(attrs, b"channelId"),
                    name: take(attrs, b"name"),
                    unit: take(attrs, b"unit"),
                    ..ChannelAcc::default()
                });
                if !empty {
                    self.places.push(Place::Channel(depth));
                }
            }
            (b"Values", Some(Place::Channel(d))) if depth == d + 1 && !empty => {
                self.places.push(Place::Values(depth));
            }
            _ => {}
        }
        Ok(())
    }

    /// A `VT` opened at `depth`, with its `t` and `errorcode`; `at`: where
    /// its start tag is, when the parser reads a kept value again from there.
    #[inline(always)]
    pub(crate) fn value(
        &mut self,
        depth: usize,
        at: Option<usize>,
        t: Option<Val>,
        errorcode: Option<Val>,
        empty: bool,
        decode: Decode<'_>,
    ) -> Result<(), String> {
        if !matches!(self.place(), Some(Place::Values(d)) if depth == d + 1) {
            return Ok(());
        }
        self.value_t = t;
        self.value_at = at;
        self.value_error = match errorcode {
            Some(code) => failed(&self.resolve(code, decode)?),
            None => false,
        };
        self.value_text = None;
        if empty {
            self.end_value();
        } else {
            self.places.push(Place::Value(depth));
        }
        Ok(())
    }

    /// [`Collector::value`] for the scanner, which reads a value's time
    /// and text again from its start tag at `at` when it is kept: plain
    /// numbers in, no [`Val`]s built by the caller (a `VT` takes a few
    /// nanoseconds, and a message has hundreds).
    #[inline]
    pub(crate) fn scanned_value(
        &mut self,
        depth: usize,
        at: usize,
        has_t: bool,
        errorcode: Option<(usize, usize)>,
        empty: bool,
        decode: Decode<'_>,
    ) -> Result<(), String> {
        let t = has_t.then_some(Val::TimeOf(at));
        let code = errorcode.map(|(from, to)| Val::Raw(from, to));
        self.value(depth, Some(at), t, code, empty, decode)
    }

    /// Text is wanted now (inside a value, or in an alarm).
    #[inline]
    pub(crate) fn wants_text(&self) -> bool {
        self.alarm.is_some() || matches!(self.place(), Some(Place::Value(_)))
    }

    /// Text inside the current element; `blank` when it is white space only.
    #[inline]
    pub(crate) fn text(
        &mut self,
        text: Val,
        blank: bool,
        decode: Decode<'_>,
    ) -> Result<(), String> {
        if let Some((_, alarm)) = &self.alarm {
            if alarm.len() < 4096 {
                let text = resolve(&self.owned, text, decode)?;
                if let Some((_, alarm)) = &mut self.alarm {
                    alarm.push_str(&text);
                }
            }
        } else if matches!(self.place(), Some(Place::Value(_))) && !blank {
            // A value whose text the parser reads again when it is kept.
            if let Some(at) = self.value_at {
                self.value_text = Some(Val::TextOf(at));
                return Ok(());
            }
            self.value_text = Some(match self.value_text.take() {
                None => text,
                // Text in pieces (around a comment, a CDATA section): joined.
                Some(before) => {
                    let mut joined = self.resolve(before, decode)?;
                    if joined.len() < 256 {
                        joined.push_str(&self.resolve(text, decode)?);
                    }
                    self.own(joined)
                }
            });
        }
        Ok(())
    }

    /// The element opened at `depth` closed.
    #[inline]
    pub(crate) fn end(&mut self, depth: usize) {
        let Some(place) = self.place() else { return };
        let at = match place {
            Place::Station(d) | Place::Channel(d) | Place::Values(d) | Place::Value(d) => d,
        };
        if at != depth {
            return;
        }
        self.places.pop();
        if let Place::Value(_) = place {
            self.end_value();
        }
    }

    #[inline]
    fn end_value(&mut self) {
        let Some(channel) = self.channels.last_mut() else {
            return;
        };
        channel.values += 1;
        let t = self.value_t.take();
        if channel.first_t.is_none() {
            channel.first_t.clone_from(&t);
        }
        if self.value_error {
            channel.errors += 1;
        } else if let Some(text) = self.value_text.take() {
            channel.last_value = Some(text);
            channel.last_value_t.clone_from(&t);
        }
        channel.last_t = t;
    }

    /// The summary, what was kept decoded.
    pub(crate) fn finish(self, decode: Decode<'_>) -> Result<Summary, String> {
        let text = |v: Option<Val>| -> Result<Option<String>, String> {
            v.map(|v| resolve(&self.owned, v, decode).map(trimmed))
                .transpose()
        };
        // A value without `t` (or with an empty one) has no time.
        let time = |v: Option<Val>| -> Result<Option<String>, String> {
            Ok(text(v)?.filter(|t| !t.is_empty()))
        };
        let mut channels = Vec::with_capacity(self.channels.len());
        for c in self.channels {
            channels.push(Channel {
                channel_id: text(c.id)?.unwrap_or_default(),
                name: text(c.name)?,
                unit: text(c.unit)?,
                values: c.values,
                errors: c.errors,
                first_t: time(c.first_t)?,
                last_t: time(c.last_t)?,
                last_value: text(c.last_value)?.filter(|v| !v.is_empty()),
                last_value_t: time(c.last_value_t)?,
            });
        }
        let info = match self.info {
            Some(mut attrs) => Some(StationInfo {
                time: text(take(&mut attrs, b"time"))?,
                firmware: text(take(&mut attrs, b"firmware"))?,
                battery_voltage: text(take(&mut attrs, b"batteryVoltage"))?,
                temperature: text(take(&mut attrs, b"temperature"))?,
                gsm_signal: text(take(&mut attrs, b"gsmSignal"))?,
                ip_address: text(take(&mut attrs, b"ipAddress"))?,
                transmission_cycle: text(take(&mut attrs, b"transmissionCycle"))?,
                configured_transmission_cycle: text(take(
                    &mut attrs,
                    b"configuredTransmissionCycle",
                ))?,
                device_type: text(take(&mut attrs, b"deviceType"))?,
            }),
            None => None,
        };
        let alarm = match self.alarm {
            Some((mut attrs, body)) => Some(Alarm {
                t: text(take(&mut attrs, b"t"))?,
                kind: text(take(&mut attrs, b"type"))?,
                channel_id: text(take(&mut attrs, b"channelId"))?,
                text: body.trim().to_owned(),
            }),
            None => None,
        };
        Ok(Summary {
            station_name: text(self.station_name)?,
            timezone: text(self.timezone)?,
            info,
            channels,
            alarm,
        })
    }
}

/// `errorcode` as text (`5`, `05`, `01`): a number above 0 means the value failed.
fn failed(code: &str) -> bool {
    code.trim()
        .parse::<u64>()
        .map_or(!code.trim().is_empty(), |n| n > 0)
}

/// A fixed offset as loggers write it: `+01:00`, `-03:30`, `00:00`, `+0000`, `Z`.
pub(crate) fn parse_offset(tz: &str) -> Option<FixedOffset> {
    let tz = tz.trim();
    if tz.eq_ignore_ascii_case("z") || tz.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        b'0'..=b'9' => (1, tz),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..=18).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// A logger's local `t` (`YYYY-MM-DDThh:mm:ss`, no offset) at the station's
/// `timezone`, as UTC. Without a (valid) time zone the time is taken as UTC.
pub(crate) fn local_to_utc(t: &str, timezone: Option<&str>) -> Option<DateTime<Utc>> {
    let t = t.trim();
    let naive = match plain_local(t) {
        Some(naive) => naive,
        None => {
            // Some writers add an offset or a fraction; take what is there.
            if let Ok(with_offset) = DateTime::parse_from_rfc3339(t) {
                return Some(with_offset.with_timezone(&Utc));
            }
            NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
                .ok()?
        }
    };
    let offset = timezone
        .and_then(parse_offset)
        .or_else(|| FixedOffset::east_opt(0))?;
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// `YYYY-MM-DDThh:mm:ss` exactly, the form loggers send, read by hand:
/// a message has several per channel and chrono's format parser is the
/// slow general case (kept for everything else).
fn plain_local(t: &str) -> Option<NaiveDateTime> {
    let b = t.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |from: usize, len: usize| -> Option<u32> {
        b[from..from + len].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(n(0, 4)?).ok()?, n(5, 2)?, n(8, 2)?)?;
    date.and_hms_opt(n(11, 2)?, n(14, 2)?, n(17, 2)?)
}

/// A number as loggers write it (`12.5`, `12,5`, ` 13 `), if it is one.
pub(crate) fn number(text: &str) -> Option<f64> {
    let t = text.trim().replace(',', ".");
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A channel that carries the supply voltage: named like it
/// (`Batteriespannung`, `Battery`, `Supply voltage`, `Versorgungsspannung`)
/// or, failing a name, in volts.
pub(crate) fn is_battery(channel: &Channel) -> bool {
    let name = channel.name.as_deref().unwrap_or("").to_lowercase();
    let named = [
        "batter", "akku", "spannung", "supply", "voltage", "vbat", "ubat",
    ]
    .iter()
    .any(|w| name.contains(w));
    let in_volts = channel.unit.as_deref().is_some_and(|u| u.trim() == "V");
    named || (name.is_empty() && in_volts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_of_a_summary_is_short_and_reads_back_the_same() {
        let summary = Summary {
            station_name: Some("Pegel Mühlbach".into()),
            timezone: Some("+01:00".into()),
            info: Some(StationInfo {
                battery_voltage: Some("12.7".into()),
                ..StationInfo::default()
            }),
            channels: vec![Channel {
                channel_id: "0010".into(),
                values: 3,
                last_value: Some("139.6".into()),
                ..Channel::default()
            }],
            alarm: None,
        };
        let json = serde_json::to_string(&summary).expect("json");
        assert_eq!(
            json,
            r#"{"n":"Pegel Mühlbach","z":"+01:00","i":{"b":"12.7"},"c":[{"id":"0010","v":3,"e":0,"lv":"139.6"}]}"#
        );
        let back: Summary = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, summary);
    }

    #[test]
    fn offsets_and_local_times() {
        let utc = |t, tz| local_to_utc(t, tz).map(crate::layout::rfc3339);
        assert_eq!(
            utc("2026-03-01T12:00:00", Some("+01:00")).as_deref(),
            Some("2026-03-01T11:00:00.000000Z")
        );
        assert_eq!(
            utc("2026-03-01T12:00:00", Some("00:00")).as_deref(),
            Some("2026-03-01T12:00:00.000000Z")
        );
        assert_eq!(
            utc("2026-03-01T12:00:00", Some("-03:30")).as_deref(),
            Some("2026-03-01T15:30:00.000000Z")
        );
        assert_eq!(
            utc("2026-03-01T12:00:00", None).as_deref(),
            Some("2026-03-01T12:00:00.000000Z")
        );
        assert_eq!(utc("yesterday", Some("+01:00")), None);
        assert!(parse_offset("+25:00").is_none());
        assert_eq!(parse_offset("+0530"), FixedOffset::east_opt(19_800));
        assert!(failed("05") && failed("1") && !failed("0") && !failed("00") && !failed(""));
        assert_eq!(number(" 12,5 "), Some(12.5));
        assert_eq!(number("NaN"), None);
    }

    #[test]
    fn battery_channels_are_found_by_name_or_volts() {
        let ch = |name: Option<&str>, unit: Option<&str>| Channel {
            name: name.map(str::to_owned),
            unit: unit.map(str::to_owned),
            ..Channel::default()
        };
        assert!(is_battery(&ch(Some("Batteriespannung"), Some("V"))));
        assert!(is_battery(&ch(Some("Battery"), None)));
        assert!(is_battery(&ch(None, Some("V"))));
        assert!(!is_battery(&ch(Some("Wasserstand"), Some("cm"))));
        assert!(
            !is_battery(&ch(Some("Pegel"), Some("V"))),
            "a sensor signal in volts, named otherwise"
        );
    }
}
