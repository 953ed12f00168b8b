//! Where each station stands, from the catalog alone: `dlsrv status`, the
//! status page and `/status.json`, the per-station gauges of `/metrics`.
//!
//! - `last_seen` is the newest *data message* (`senddata`) of the station;
//!   alarms and acknowledgements show a logger is alive, but not that its
//!   data arrives.
//! - `expected_cycle_secs`: the logger's own `transmissionCycle` (or, when
//!   it sends only that, `configuredTransmissionCycle`); else the median
//!   interval between its last 11 data messages; else `default_cycle_secs`.
//!   `cycle_source` says which.
//! - `late`: no data message for longer than `late_factor` × the expected
//!   cycle plus `late_grace_secs` (a station that never sent one is late).
//! - `battery_voltage`: from `StationInfo`, else from a channel that
//!   carries the supply voltage (`battery_source` says which).
//! - `pending_commands`: documents waiting in the queue for the station.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::Config;
use crate::layout;

/// One station's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StationStatus {
    pub(crate) station_id: String,
    pub(crate) name: Option<String>,
    pub(crate) last_seen: Option<String>,
    pub(crate) age_secs: Option<i64>,
    pub(crate) expected_cycle_secs: i64,
    pub(crate) late: bool,
    pub(crate) battery_voltage: Option<f64>,
    pub(crate) gsm_signal: Option<f64>,
    pub(crate) firmware: Option<String>,
    pub(crate) transmissions_24h: u64,
    pub(crate) last_alarm: Option<LastAlarm>,
    pub(crate) pending_commands: usize,
    // Beyond the fields every form has:
    pub(crate) cycle_source: &'static str,
    pub(crate) battery_source: Option<String>,
    pub(crate) temperature: Option<f64>,
    pub(crate) device_type: Option<String>,
    pub(crate) ip_address: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) first_seen: String,
    pub(crate) last_any: String,
}

/// The newest alarm of a station.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LastAlarm {
    pub(crate) time: String,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) text: Option<String>,
    pub(crate) channel_id: Option<String>,
}

/// How lateness is judged (`default_cycle_secs`, `late_factor`, `late_grace_secs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lateness {
    pub(crate) default_cycle_secs: i64,
    pub(crate) factor: f64,
    pub(crate) grace_secs: i64,
}

impl Lateness {
    pub(crate) fn of(config: &Config) -> Lateness {
        Lateness {
            default_cycle_secs: i64::try_from(config.default_cycle_secs).unwrap_or(3600),
            factor: config.late_factor,
            grace_secs: i64::try_from(config.late_grace_secs).unwrap_or(0),
        }
    }

    /// Seconds without a data message after which a station is late.
    pub(crate) fn limit(&self, cycle_secs: i64) -> i64 {
        (cycle_secs as f64 * self.factor).round() as i64 + self.grace_secs
    }
}

/// Every known station (or those of `only`), late ones first, then by id.
pub(crate) fn stations(
    conn: &Connection,
    state_dir: &Path,
    lateness: Lateness,
    now: DateTime<Utc>,
    only: &[String],
) -> rusqlite::Result<Vec<StationStatus>> {
    let since_24h = layout::rfc3339(now - chrono::Duration::hours(24));
    // All stations' counts from one range of the time index: a cold page
    // cache reads it in one sweep, not a page per station.
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            // Without statistics SQLite would rather walk the whole table in
            // station order to save the sort: the index is named.
            "SELECT station_id, count(*) FROM station_info INDEXED BY station_info_by_time
             WHERE received_utc >= ?1 GROUP BY station_id",
        )?;
        let mut rows = stmt.query(params![since_24h])?;
        while let Some(r) = rows.next()? {
            counts.insert(r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT station_id, name, last_seen_utc, battery_voltage, battery_source, gsm_signal,
                firmware, transmission_cycle_secs, configured_transmission_cycle_secs,
                last_alarm_utc, last_alarm_type, last_alarm_text, last_alarm_channel,
                temperature, device_type, ip_address, timezone, first_seen_utc, last_any_utc
         FROM stations ORDER BY station_id",
    )?;
    let mut out = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let station_id: String = r.get(0)?;
        if !only.is_empty() && !only.contains(&station_id) {
            continue;
        }
        let last_seen: Option<String> = r.get(2)?;
        let sent_cycle: Option<i64> = r.get::<_, Option<i64>>(7)?.filter(|c| *c > 0);
        let configured: Option<i64> = r.get::<_, Option<i64>>(8)?.filter(|c| *c > 0);
        let (expected_cycle_secs, cycle_source) = match sent_cycle.or(configured) {
            Some(c) => (c, "transmissionCycle"),
            None => match median_interval(conn, &station_id)? {
                Some(m) => (m, "median"),
                None => (lateness.default_cycle_secs, "default"),
            },
        };
        let age_secs = last_seen
            .as_deref()
            .and_then(layout::parse_time)
            .map(|t| (now - t).num_seconds().max(0));
        let late = age_secs.is_none_or(|age| age > lateness.limit(expected_cycle_secs));
        let last_alarm = r.get::<_, Option<String>>(9)?.map(|time| LastAlarm {
            time,
            kind: r.get(10).ok().flatten(),
            text: r.get(11).ok().flatten(),
            channel_id: r.get(12).ok().flatten(),
        });
        let transmissions_24h = match counts.get(&station_id) {
            Some(n) => *n,
            // Seen within the day but without summaries: a catalog from
            // before them (until `dlsrv reindex`) knows the transmissions only.
            None if last_seen
                .as_deref()
                .is_some_and(|t| t >= since_24h.as_str()) =>
            {
                count_since(conn, &station_id, &since_24h)?
            }
            None => 0,
        };
        out.push(StationStatus {
            transmissions_24h,
            pending_commands: pending_commands(state_dir, &station_id)
                + shared_pending_commands(conn, &station_id),
            name: r.get(1)?,
            last_seen,
            age_secs,
            expected_cycle_secs,
            late,
            battery_voltage: r.get(3)?,
            battery_source: r.get(4)?,
            gsm_signal: r.get(5)?,
            firmware: r.get(6)?,
            last_alarm,
            cycle_source,
            temperature: r.get(13)?,
            device_type: r.get(14)?,
            ip_address: r.get(15)?,
            timezone: r.get(16)?,
            first_seen: r.get(17)?,
            last_any: r.get(18)?,
            station_id,
        });
    }
    out.sort_by(|a, b| {
        b.late
            .cmp(&a.late)
            .then_with(|| a.station_id.cmp(&b.station_id))
    });
    Ok(out)
}

/// Data messages of `station` received at or after `since`, from the
/// transmissions (a catalog from before the summaries).
fn count_since(conn: &Connection, station: &str, since: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM transmissions
             WHERE station_id = ?1 AND received_utc >= ?2 AND action = 'senddata'",
        )?
        .query_row(params![station, since], |r| r.get(0))?;
    Ok(n as u64)
}

/// The median interval, in seconds, between the last 11 data messages.
fn median_interval(conn: &Connection, station: &str) -> rusqlite::Result<Option<i64>> {
    let times: Vec<DateTime<Utc>> = conn
        .prepare_cached(
            "SELECT received_utc FROM transmissions WHERE station_id = ?1 AND action = 'senddata'
             ORDER BY received_utc DESC LIMIT 11",
        )?
        .query_map(params![station], |r| r.get::<_, String>(0))?
        .filter_map(|t| t.ok().and_then(|t| layout::parse_time(&t)))
        .collect();
    let mut gaps: Vec<i64> = times
        .windows(2)
        .map(|w| (w[0] - w[1]).num_seconds())
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return Ok(None);
    }
    gaps.sort_unstable();
    Ok(Some(gaps[gaps.len() / 2]))
}

/// Documents waiting for `station` in a shared catalog's queue, as its
/// sync last copied the counts (`shared_pending_commands`; none without).
fn shared_pending_commands(conn: &Connection, station: &str) -> usize {
    conn.query_row(
        "SELECT n FROM shared_pending_commands WHERE station_id = ?1",
        rusqlite::params![station],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

/// Documents waiting for `station` in the queue (only reads the directory).
pub(crate) fn pending_commands(state_dir: &Path, station: &str) -> usize {
    std::fs::read_dir(layout::queue_path(state_dir, station, "pending"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_type().is_ok_and(|t| t.is_file())
                        && e.file_name().to_string_lossy().ends_with(".xml")
                })
                .count()
        })
        .unwrap_or(0)
}

/// The catalog, opened so that nothing is written: not the database, and
/// no `-wal`/`-shm` file created when none is there (the service is not
/// running: the database is whole, read as immutable). `None` when there
/// is no catalog yet.
pub(crate) fn open_catalog(state_dir: &Path) -> anyhow::Result<Option<Connection>> {
    use rusqlite::OpenFlags;
    let path = layout::catalog_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let encoded = percent_encoding::utf8_percent_encode(
        &path.to_string_lossy(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string()
    .replace("%2F", "/");
    let uri = if Path::new(&wal).exists() {
        format!("file:{encoded}?mode=ro")
    } else {
        format!("file:{encoded}?mode=ro&immutable=1")
    };
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("cannot open the catalog {}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_stations: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'stations'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if has_stations.is_none() {
        anyhow::bail!(
            "the catalog {} is from an older dlsrv: start the service once (it upgrades it), or run `dlsrv reindex`",
            path.display()
        );
    }
    Ok(Some(conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_factor_times_cycle_plus_grace() {
        let l = Lateness {
            default_cycle_secs: 3600,
            factor: 2.0,
            grace_secs: 300,
        };
        assert_eq!(l.limit(900), 2100);
        assert_eq!(l.limit(60), 420);
    }
}

/// The output forms of `dlsrv status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    Csv,
}

/// The fields of the CSV form, in order: those every form has first.
const CSV_FIELDS: [&str; 20] = [
    "station_id",
    "name",
    "last_seen",
    "age_secs",
    "expected_cycle_secs",
    "late",
    "battery_voltage",
    "gsm_signal",
    "firmware",
    "transmissions_24h",
    "last_alarm",
    "pending_commands",
    "cycle_source",
    "battery_source",
    "temperature",
    "device_type",
    "ip_address",
    "timezone",
    "first_seen",
    "last_any",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// `time type` of an alarm, for the table and CSV.
fn alarm_text(a: &Option<LastAlarm>) -> String {
    a.as_ref()
        .map(|a| {
            format!("{} {}", a.time, a.kind.as_deref().unwrap_or(""))
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// `rows` as CSV (a header line, then one line per station).
pub(crate) fn csv(rows: &[StationStatus]) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_FIELDS)?;
    for r in rows {
        w.write_record([
            r.station_id.clone(),
            opt(&r.name),
            opt(&r.last_seen),
            opt(&r.age_secs),
            r.expected_cycle_secs.to_string(),
            r.late.to_string(),
            opt(&r.battery_voltage),
            opt(&r.gsm_signal),
            opt(&r.firmware),
            r.transmissions_24h.to_string(),
            alarm_text(&r.last_alarm),
            r.pending_commands.to_string(),
            r.cycle_source.to_owned(),
            opt(&r.battery_source),
            opt(&r.temperature),
            opt(&r.device_type),
            opt(&r.ip_address),
            opt(&r.timezone),
            r.first_seen.clone(),
            r.last_any.clone(),
        ])?;
    }
    Ok(String::from_utf8(
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
    )?)
}

/// `rows` as a JSON array of objects.
pub(crate) fn json(rows: &[StationStatus]) -> anyhow::Result<String> {
    let mut out = serde_json::to_string_pretty(rows)?;
    out.push('\n');
    Ok(out)
}

/// A duration for people: `45s`, `12m`, `3h05m`, `2d04h`.
pub(crate) fn human_secs(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 * 2 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Text from a logger, fit for a terminal cell: control characters
/// escaped, at most `max` characters.
fn cell(text: &str, max: usize) -> String {
    let shown = crate::logging::printable(text, max + 1);
    if shown.chars().count() > max {
        let mut cut: String = shown.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        shown
    }
}

/// What follows the archive, and how far behind each is, in words: every
/// export feed, and the replica when there is one.
pub(crate) fn behind(
    conn: &Connection,
    state_dir: &Path,
    replica: bool,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<String>> {
    let mut out: Vec<String> = crate::feeds::lags(conn, state_dir, now)?
        .into_iter()
        .map(|(name, lag)| format!("export feed {name} {} behind", human_secs(lag as i64)))
        .collect();
    if replica {
        let lag = crate::replica::lag(conn, now)?;
        let mut text = format!(
            "replica {} behind ({} bodies waiting",
            human_secs(lag.seconds as i64),
            lag.pending
        );
        if lag.refused > 0 {
            text.push_str(&format!(
                ", {} refused: see dlsrv verify --replica",
                lag.refused
            ));
        }
        text.push(')');
        out.push(text);
    }
    Ok(out)
}

/// `rows` as a table for a terminal (about 120 columns), late stations
/// first, and a summary line with how far behind the archive's followers
/// are ([`behind`]).
pub(crate) fn table(rows: &[StationStatus], behind: &[String]) -> String {
    use std::fmt::Write as _;
    let feeds: String = behind.iter().map(|b| format!(", {b}")).collect();
    if rows.is_empty() {
        return format!("no stations known yet{feeds}\n");
    }
    let mut out = format!(
        "{:<12} {:<18} {:<17} {:>7} {:>6} {:<4} {:>5} {:>4} {:<12} {:>4} {:<24} {:>4}\n",
        "STATION",
        "NAME",
        "LAST SEEN (UTC)",
        "AGE",
        "CYCLE",
        "LATE",
        "BATT",
        "GSM",
        "FIRMWARE",
        "24H",
        "LAST ALARM",
        "CMDS"
    );
    for r in rows {
        let last_seen = r
            .last_seen
            .as_deref()
            .map(|t| t.get(..16).unwrap_or(t).replace('T', " "))
            .unwrap_or_else(|| "never".to_owned());
        let alarm = r
            .last_alarm
            .as_ref()
            .map(|a| {
                format!(
                    "{} {}",
                    a.time.get(..16).unwrap_or(&a.time).replace('T', " "),
                    a.kind.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "-".to_owned());
        let _ = writeln!(
            out,
            "{:<12} {:<18} {:<17} {:>7} {:>6} {:<4} {:>5} {:>4} {:<12} {:>4} {:<24} {:>4}",
            cell(&r.station_id, 12),
            cell(r.name.as_deref().unwrap_or("-"), 18),
            last_seen,
            r.age_secs.map_or_else(|| "-".to_owned(), human_secs),
            human_secs(r.expected_cycle_secs),
            if r.late { "LATE" } else { "" },
            r.battery_voltage
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            r.gsm_signal
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            cell(r.firmware.as_deref().unwrap_or("-"), 12),
            r.transmissions_24h,
            cell(&alarm, 24),
            r.pending_commands,
        );
    }
    let late = rows.iter().filter(|r| r.late).count();
    let _ = writeln!(out, "{} station(s), {late} late{feeds}", rows.len());
    out
}
