//! What a stored document adds to the catalog besides its `transmissions`
//! row: `station_info` (one row per data message: its `StationInfo`, the
//! battery, how many values and failed values, which channels failed),
//! `alarms` (one per alarm), and the `stations` table, one row per station,
//! kept current by every row written; it holds the latest data message's
//! channels as a JSON array. (A row per channel and message would cost a
//! B-tree insert per channel on every store — dozens for some loggers —
//! for detail the archive itself keeps.)
//!
//! `stations` is updated so that the order of writing does not matter
//! (the service, the start-up catch-up and `dlsrv reindex` write in
//! different orders, several instances at once): every group of columns
//! comes from the newest transmission that had it — the name and time zone
//! from the newest message naming them, the `StationInfo` fields from the
//! newest message with a `StationInfo`, the battery from the newest one
//! with a battery value (from `StationInfo` or, without it, from a channel
//! that carries the supply voltage), the alarm from the newest alarm.

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};

use super::Row;
use crate::layout;
use crate::summary::{self, Summary};

pub(super) const SCHEMA: &str = "
-- One row per data message under its transmissions row's id, so rows are
-- appended as messages come (keyed by station, each commit would touch a
-- page per station). By station, through transmissions_by_station:
--   FROM transmissions t CROSS JOIN station_info i ON i.id = t.id
CREATE TABLE IF NOT EXISTS station_info (
    id                                 INTEGER PRIMARY KEY, -- transmissions.id
    station_id                         TEXT NOT NULL,
    received_utc                       TEXT NOT NULL,
    name                               TEXT,
    timezone                           TEXT,
    info_time_utc                      TEXT,
    firmware                           TEXT,
    battery_voltage                    REAL,
    battery_source                     TEXT,
    temperature                        REAL,
    gsm_signal                         REAL,
    ip_address                         TEXT,
    transmission_cycle_secs            INTEGER,
    configured_transmission_cycle_secs INTEGER,
    device_type                        TEXT,
    n_values                           INTEGER NOT NULL,
    n_errors                           INTEGER NOT NULL,
    error_channels                     TEXT
);
-- The last day's data messages of all stations in one range (dlsrv status),
-- appended to at its end: cheap to keep.
CREATE INDEX IF NOT EXISTS station_info_by_time ON station_info (received_utc, station_id);
CREATE TABLE IF NOT EXISTS alarms (
    station_id   TEXT NOT NULL,
    received_utc TEXT NOT NULL,
    path         TEXT NOT NULL,
    alarm_local  TEXT,
    alarm_utc    TEXT,
    type         TEXT,
    channel_id   TEXT,
    text         TEXT NOT NULL,
    PRIMARY KEY (station_id, received_utc, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alarms_by_time ON alarms (received_utc);
CREATE TABLE IF NOT EXISTS duplicates (
    id            INTEGER PRIMARY KEY,
    station_id    TEXT NOT NULL,
    action        TEXT NOT NULL,
    received_utc  TEXT NOT NULL,
    original_path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS duplicates_by_time ON duplicates (received_utc);
CREATE TABLE IF NOT EXISTS stations (
    station_id                         TEXT PRIMARY KEY,
    first_seen_utc                     TEXT NOT NULL,
    last_any_utc                       TEXT NOT NULL,
    last_seen_utc                      TEXT,
    -- the latest data message's channels, a JSON array of objects:
    -- channel_id, name, unit, n_values, n_errors, first_utc, last_utc,
    -- last_value, last_value_utc
    channels                           TEXT,
    name                               TEXT,
    timezone                           TEXT,
    name_utc                           TEXT,
    firmware                           TEXT,
    temperature                        REAL,
    gsm_signal                         REAL,
    ip_address                         TEXT,
    transmission_cycle_secs            INTEGER,
    configured_transmission_cycle_secs INTEGER,
    device_type                        TEXT,
    info_utc                           TEXT,
    battery_voltage                    REAL,
    battery_source                     TEXT,
    battery_utc                        TEXT,
    last_alarm_received_utc            TEXT,
    last_alarm_utc                     TEXT,
    last_alarm_type                    TEXT,
    last_alarm_text                    TEXT,
    last_alarm_channel                 TEXT
) WITHOUT ROWID;
";

/// Fills `stations` from `transmissions` alone (a catalog of schema 1,
/// which had no summaries).
pub(super) const STATIONS_FROM_TRANSMISSIONS: &str = "
INSERT INTO stations (station_id, first_seen_utc, last_any_utc, last_seen_utc)
SELECT station_id, min(received_utc), max(received_utc),
       max(CASE WHEN action = 'senddata' THEN received_utc END)
FROM transmissions GROUP BY station_id
ON CONFLICT (station_id) DO NOTHING";

/// `stations` columns updated together, each group by its own time column.
const GROUPS: &[(&str, &[&str])] = &[
    ("last_seen_utc", &["channels"]),
    ("name_utc", &["name", "timezone"]),
    (
        "info_utc",
        &[
            "firmware",
            "temperature",
            "gsm_signal",
            "ip_address",
            "transmission_cycle_secs",
            "configured_transmission_cycle_secs",
            "device_type",
        ],
    ),
    ("battery_utc", &["battery_voltage", "battery_source"]),
    (
        "last_alarm_received_utc",
        &[
            "last_alarm_utc",
            "last_alarm_type",
            "last_alarm_text",
            "last_alarm_channel",
        ],
    ),
];

/// The upsert of one station's row (see the module docs).
fn station_upsert() -> String {
    let mut columns = vec!["station_id", "first_seen_utc", "last_any_utc"];
    for (key, group) in GROUPS {
        columns.push(key);
        columns.extend_from_slice(group);
    }
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let mut sets = vec![
        "first_seen_utc = min(first_seen_utc, excluded.first_seen_utc)".to_owned(),
        "last_any_utc = max(last_any_utc, excluded.last_any_utc)".to_owned(),
    ];
    for (key, group) in GROUPS {
        let newer = format!("excluded.{key} > coalesce({key}, '')");
        for column in group.iter().chain(std::iter::once(key)) {
            sets.push(format!(
                "{column} = CASE WHEN {newer} THEN excluded.{column} ELSE {column} END"
            ));
        }
    }
    format!(
        "INSERT INTO stations ({}) VALUES ({}) ON CONFLICT (station_id) DO UPDATE SET {}",
        columns.join(", "),
        placeholders.join(", "),
        sets.join(", ")
    )
}

/// The columns of [`station_upsert`] in order, for one row.
struct StationValues {
    station_id: String,
    received: String,
    last_seen: Option<String>,
    channels: Option<String>,
    name_utc: Option<String>,
    name: Option<String>,
    timezone: Option<String>,
    info_utc: Option<String>,
    info: [Option<rusqlite::types::Value>; 7],
    battery_utc: Option<String>,
    battery: Option<f64>,
    battery_source: Option<String>,
    alarm_received: Option<String>,
    alarm: [Option<String>; 4],
}

/// A number attribute.
fn num(v: Option<&String>) -> Option<f64> {
    v.and_then(|v| summary::number(v))
}

fn utc(t: Option<&String>, timezone: Option<&str>) -> Option<String> {
    t.and_then(|t| summary::local_to_utc(t, timezone))
        .map(layout::rfc3339)
}

/// The battery of a message: `StationInfo batteryVoltage`, else the last
/// valid value of a channel that carries the supply voltage.
fn battery(s: &Summary) -> Option<(f64, String)> {
    if let Some(v) = num(s.info.as_ref().and_then(|i| i.battery_voltage.as_ref())) {
        return Some((v, "StationInfo".to_owned()));
    }
    s.channels
        .iter()
        .filter(|c| summary::is_battery(c))
        .find_map(|c| num(c.last_value.as_ref()).map(|v| (v, format!("channel {}", c.channel_id))))
}

/// One channel of a message, as the `channels` column holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChannelRow {
    pub(crate) channel_id: String,
    pub(crate) name: Option<String>,
    pub(crate) unit: Option<String>,
    pub(crate) n_values: u64,
    pub(crate) n_errors: u64,
    pub(crate) first_utc: Option<String>,
    pub(crate) last_utc: Option<String>,
    pub(crate) last_value: Option<String>,
    pub(crate) last_value_utc: Option<String>,
}

/// The ids of the channels with failed values, comma-separated; `None` when none failed.
fn error_channels(s: &Summary) -> Option<String> {
    let ids: Vec<&str> = s
        .channels
        .iter()
        .filter(|c| c.errors > 0)
        .map(|c| c.channel_id.as_str())
        .collect();
    (!ids.is_empty()).then(|| ids.join(","))
}

/// The channels of a message as a JSON array, times in UTC.
fn channels_json(s: &Summary) -> String {
    let tz = s.timezone.as_deref();
    let rows: Vec<ChannelRow> = s
        .channels
        .iter()
        .map(|c| ChannelRow {
            channel_id: c.channel_id.clone(),
            name: c.name.clone(),
            unit: c.unit.clone(),
            n_values: c.values,
            n_errors: c.errors,
            first_utc: utc(c.first_t.as_ref(), tz),
            last_utc: utc(c.last_t.as_ref(), tz),
            last_value: c.last_value.clone(),
            last_value_utc: utc(c.last_value_t.as_ref(), tz),
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
}

/// Writes what `row` adds besides its `transmissions` row, whose id is
/// `id`. `replace`: a rebuild, whose rows replace the path's earlier ones.
pub(super) fn write(
    tx: &Transaction<'_>,
    id: i64,
    row: &Row,
    replace: bool,
) -> rusqlite::Result<()> {
    let received = layout::rfc3339(row.received);
    let summary = row.summary.as_deref();
    let is_data = row.action == "senddata";
    let mut station = StationValues {
        station_id: row.station_id.clone(),
        received: received.clone(),
        last_seen: is_data.then(|| received.clone()),
        channels: None,
        name_utc: None,
        name: None,
        timezone: None,
        info_utc: None,
        info: Default::default(),
        battery_utc: None,
        battery: None,
        battery_source: None,
        alarm_received: None,
        alarm: Default::default(),
    };
    if replace {
        tx.prepare_cached("DELETE FROM station_info WHERE id = ?1")?
            .execute(params![id])?;
        tx.prepare_cached(
            "DELETE FROM alarms WHERE station_id = ?1 AND received_utc = ?2 AND path = ?3",
        )?
        .execute(params![row.station_id, received, row.path])?;
    }
    if let (true, Some(s)) = (is_data, summary) {
        let tz = s.timezone.as_deref();
        let info = s.info.as_ref();
        let battery = battery(s);
        let cycle = |v: Option<&String>| num(v).map(|n| n.round() as i64);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO station_info (id, station_id, received_utc, name, timezone,
               info_time_utc, firmware, battery_voltage, battery_source, temperature, gsm_signal,
               ip_address, transmission_cycle_secs, configured_transmission_cycle_secs, device_type,
               n_values, n_errors, error_channels)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?
        .execute(params![
            id,
            row.station_id,
            received,
            s.station_name,
            s.timezone,
            utc(info.and_then(|i| i.time.as_ref()), tz),
            info.and_then(|i| i.firmware.clone()),
            battery.as_ref().map(|b| b.0),
            battery.as_ref().map(|b| b.1.clone()),
            num(info.and_then(|i| i.temperature.as_ref())),
            num(info.and_then(|i| i.gsm_signal.as_ref())),
            info.and_then(|i| i.ip_address.clone()),
            cycle(info.and_then(|i| i.transmission_cycle.as_ref())),
            cycle(info.and_then(|i| i.configured_transmission_cycle.as_ref())),
            info.and_then(|i| i.device_type.clone()),
            i64::try_from(s.channels.iter().map(|c| c.values).sum::<u64>()).unwrap_or(i64::MAX),
            i64::try_from(s.channels.iter().map(|c| c.errors).sum::<u64>()).unwrap_or(i64::MAX),
            error_channels(s),
        ])?;
        station.channels = Some(channels_json(s));
        if s.station_name.is_some() || s.timezone.is_some() {
            station.name_utc = Some(received.clone());
            station.name.clone_from(&s.station_name);
            station.timezone.clone_from(&s.timezone);
        }
        if let Some(info) = info {
            use rusqlite::types::Value;
            let text = |v: &Option<String>| v.clone().map(Value::Text);
            let real = |v: Option<f64>| v.map(Value::Real);
            station.info_utc = Some(received.clone());
            station.info = [
                text(&info.firmware),
                real(num(info.temperature.as_ref())),
                real(num(info.gsm_signal.as_ref())),
                text(&info.ip_address),
                cycle(info.transmission_cycle.as_ref()).map(Value::Integer),
                cycle(info.configured_transmission_cycle.as_ref()).map(Value::Integer),
                text(&info.device_type),
            ];
        }
        if let Some((v, source)) = battery {
            station.battery_utc = Some(received.clone());
            station.battery = Some(v);
            station.battery_source = Some(source);
        }
    }
    if let Some(alarm) = summary.and_then(|s| s.alarm.as_ref()) {
        // An alarm's t is local time; the station's last known zone says which.
        let tz: Option<String> = tx
            .prepare_cached("SELECT timezone FROM stations WHERE station_id = ?1")?
            .query_row(params![row.station_id], |r| r.get(0))
            .unwrap_or(None);
        let alarm_utc = utc(alarm.t.as_ref(), tz.as_deref());
        tx.prepare_cached(
            "INSERT OR REPLACE INTO alarms (path, station_id, received_utc, alarm_local, alarm_utc, type, channel_id, text)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            row.path,
            row.station_id,
            received,
            alarm.t,
            alarm_utc,
            alarm.kind,
            alarm.channel_id,
            alarm.text
        ])?;
        station.alarm_received = Some(received.clone());
        station.alarm = [
            alarm_utc.or_else(|| Some(received.clone())),
            alarm.kind.clone(),
            Some(alarm.text.chars().take(512).collect()),
            alarm.channel_id.clone(),
        ];
    }
    upsert_station(tx, &station)
}

fn upsert_station(tx: &Transaction<'_>, s: &StationValues) -> rusqlite::Result<()> {
    use rusqlite::types::Value;
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    let mut values: Vec<Value> = vec![
        Value::Text(s.station_id.clone()),
        Value::Text(s.received.clone()),
        Value::Text(s.received.clone()),
        text(&s.last_seen),
        text(&s.channels),
        text(&s.name_utc),
        text(&s.name),
        text(&s.timezone),
        text(&s.info_utc),
    ];
    values.extend(s.info.iter().map(|v| v.clone().unwrap_or(Value::Null)));
    values.push(text(&s.battery_utc));
    values.push(s.battery.map_or(Value::Null, Value::Real));
    values.push(text(&s.battery_source));
    values.push(text(&s.alarm_received));
    values.extend(s.alarm.iter().map(text));
    static UPSERT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    tx.prepare_cached(UPSERT.get_or_init(station_upsert))?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// An alarm's `t` is local time, converted with the zone its station's
/// data messages give; an alarm written before its station's first data
/// message (a rebuild reads in any order) is converted again here, with
/// the zone known now.
pub(crate) fn fix_alarm_times(conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare(
        "SELECT a.station_id, a.received_utc, a.path, a.alarm_local, a.alarm_utc, s.timezone
         FROM alarms a JOIN stations s ON s.station_id = a.station_id
         WHERE a.alarm_local IS NOT NULL AND s.timezone IS NOT NULL",
    )?;
    let fixes: Vec<(String, String, String, Option<String>)> = stmt
        .query_map([], |r| {
            let local: String = r.get(3)?;
            let old: Option<String> = r.get(4)?;
            let tz: String = r.get(5)?;
            let new = utc(Some(&local), Some(&tz));
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                new.filter(|n| Some(n) != old.as_ref()),
            ))
        })?
        .filter_map(|f| f.ok())
        .filter(|f| f.3.is_some())
        .collect();
    for (station, received, path, new) in &fixes {
        conn.execute(
            "UPDATE alarms SET alarm_utc = ?4 WHERE station_id = ?1 AND received_utc = ?2 AND path = ?3",
            params![station, received, path, new],
        )?;
        conn.execute(
            "UPDATE stations SET last_alarm_utc = ?3 WHERE station_id = ?1 AND last_alarm_received_utc = ?2",
            params![station, received, new],
        )?;
    }
    Ok(fixes.len())
}

/// After a rebuild: what no transmission row backs any more goes.
pub(crate) fn remove_orphans(conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
    let mut removed = 0;
    removed += conn.execute(
        "DELETE FROM station_info WHERE id NOT IN (SELECT id FROM transmissions)",
        [],
    )?;
    removed += conn.execute(
        "DELETE FROM alarms WHERE path NOT IN (SELECT path FROM transmissions)",
        [],
    )?;
    removed += conn.execute(
        "DELETE FROM stations WHERE station_id NOT IN (SELECT station_id FROM transmissions)",
        [],
    )?;
    Ok(removed)
}

/// A duplicate answered from an earlier copy.
pub(super) fn write_duplicate(
    tx: &Transaction<'_>,
    station_id: &str,
    action: &str,
    received: DateTime<Utc>,
    original: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO duplicates (station_id, action, received_utc, original_path) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![station_id, action, layout::rfc3339(received), original])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_names_every_column_once() {
        let sql = station_upsert();
        let (head, _) = sql.split_once("VALUES").expect("values");
        assert_eq!(
            head.matches(',').count() + 1,
            3 + GROUPS.iter().map(|g| g.1.len() + 1).sum::<usize>()
        );
        assert!(sql.contains("name = CASE WHEN excluded.name_utc > coalesce(name_utc, '')"));
    }
}
