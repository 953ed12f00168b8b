//! The status page for operators, rendered on the server (maud): no
//! script, no request anywhere else (inline CSS and SVG, a `data:` icon),
//! readable on a phone.
//!
//! - `GET /status[?page=N]`: every station with the fields of `dlsrv
//!   status`, late ones first and highlighted, 50 per page; per station a
//!   sparkline (inline SVG, one point per day with data) of battery voltage
//!   and of GSM signal over the last 30 days; the latest alarms.
//! - `GET /status/<station_id>[?days=N]`: one station — a chart of every
//!   channel over the last N days (7; at most 90; [`crate::chart`]), its
//!   channels (last value, unit, time), its last transmissions with sizes,
//!   its alarms, its command queue.
//! - `GET /status.json`: what `dlsrv status --format json` prints.

use std::path::Path;

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rusqlite::{Connection, params};

use crate::catalog::summaries::ChannelRow;
use crate::layout;
use crate::status::{self, Lateness, StationStatus};

/// Stations per page.
pub(crate) const PER_PAGE: usize = 50;
/// Days the sparklines cover.
pub(crate) const SPARK_DAYS: i64 = 30;

pub(crate) const CSS: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:.5em 1em;max-width:1400px;color:#222}
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}
.wrap{overflow-x:auto}table{border-collapse:collapse;width:100%}
th,td{padding:.25em .5em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}td.num{text-align:right}
tr.late td{background:#fde2e2}tr.late td.flag{color:#a00;font-weight:bold}
svg.spark{vertical-align:middle}svg.spark polyline{fill:none;stroke:#36c;stroke-width:1.5}
.small{color:#666;font-size:.85em}nav a{margin-right:1em}a{color:#036}
figure.chart{margin:.6em 0}figure.chart svg{max-width:100%;height:auto}
figcaption{font-size:.95em}.failed{color:#c00}
svg rect.plot{fill:#fafafa;stroke:#ccc}svg rect.silent{fill:#eee}
svg line.day{stroke:#ddd}svg .lab{font-size:10px;fill:#555}
svg polyline.line{fill:none;stroke:#36c;stroke-width:1.3}svg circle.pt{fill:#36c}
svg line.failed{stroke:#c00;stroke-width:1.5}
";

fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                link rel="icon" href="data:,";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// A day's mean of a value, oldest day first.
pub(crate) type Series = Vec<(chrono::NaiveDate, f64)>;

/// Battery voltage and GSM signal of `station` per day since `since`.
fn series(conn: &Connection, station: &str, since: &str) -> rusqlite::Result<(Series, Series)> {
    let mut stmt = conn.prepare_cached(
        "SELECT substr(t.received_utc, 1, 10), avg(i.battery_voltage), avg(i.gsm_signal)
         FROM transmissions t CROSS JOIN station_info i ON i.id = t.id
         WHERE t.station_id = ?1 AND t.received_utc >= ?2
         GROUP BY 1 ORDER BY 1",
    )?;
    let mut battery = Vec::new();
    let mut gsm = Vec::new();
    let mut rows = stmt.query(params![station, since])?;
    while let Some(r) = rows.next()? {
        let Ok(day) = chrono::NaiveDate::parse_from_str(&r.get::<_, String>(0)?, "%Y-%m-%d") else {
            continue;
        };
        if let Some(v) = r.get::<_, Option<f64>>(1)? {
            battery.push((day, v));
        }
        if let Some(v) = r.get::<_, Option<f64>>(2)? {
            gsm.push((day, v));
        }
    }
    Ok((battery, gsm))
}

/// An inline SVG line of `points` over the `SPARK_DAYS` days up to `today`.
fn sparkline(points: &Series, today: chrono::NaiveDate, what: &str) -> Markup {
    let (w, h) = (120.0, 24.0);
    if points.is_empty() {
        return html! { span.small { "-" } };
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let coords: Vec<String> = points
        .iter()
        .map(|(day, v)| {
            let age = (today - *day).num_days().clamp(0, SPARK_DAYS - 1) as f64;
            let x = w - 2.0 - age * (w - 4.0) / (SPARK_DAYS - 1) as f64;
            let y = h - 2.0 - (v - lo) / span * (h - 4.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let last = points.last().map_or(0.0, |p| p.1);
    html! {
        svg.spark width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } role="img"
            aria-label={ (what) ", last 30 days: " (format!("{lo:.1}")) " to " (format!("{hi:.1}")) } {
            title { (what) ": " (format!("{lo:.1}")) "–" (format!("{hi:.1}")) ", last " (format!("{last:.1}")) }
            polyline points=(coords.join(" ")) {}
        }
    }
}

/// One alarm as the pages show it.
struct AlarmLine {
    station: String,
    received: String,
    at: Option<String>,
    kind: Option<String>,
    channel: Option<String>,
    text: String,
}

/// Alarms by `sql` (selecting station, received, alarm time, type, channel,
/// text), of `station` when the query takes one.
fn alarm_lines(
    conn: &Connection,
    sql: &str,
    station: Option<&str>,
) -> rusqlite::Result<Vec<AlarmLine>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let map = |r: &rusqlite::Row<'_>| {
        Ok(AlarmLine {
            station: r.get(0)?,
            received: r.get(1)?,
            at: r.get(2)?,
            kind: r.get(3)?,
            channel: r.get(4)?,
            text: r.get(5)?,
        })
    };
    match station {
        Some(id) => stmt.query_map(params![id], map)?.collect(),
        None => stmt.query_map([], map)?.collect(),
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn short(t: &str) -> String {
    t.get(..16).unwrap_or(t).replace('T', " ")
}

/// `GET /status?page=N`.
pub(crate) fn overview(
    conn: &Connection,
    state_dir: &Path,
    lateness: Lateness,
    now: DateTime<Utc>,
    (page_no, replica): (usize, bool),
) -> rusqlite::Result<String> {
    let all = status::stations(conn, state_dir, lateness, now, &[])?;
    let behind = status::behind(conn, state_dir, replica, now)?;
    let late = all.iter().filter(|s| s.late).count();
    let pages = all.len().div_ceil(PER_PAGE).max(1);
    let page_no = page_no.clamp(1, pages);
    let shown: &[StationStatus] =
        &all[(page_no - 1) * PER_PAGE..(page_no * PER_PAGE).min(all.len())];
    let since = layout::rfc3339(now - chrono::Duration::days(SPARK_DAYS));
    let today = now.date_naive();
    let mut rows = Vec::with_capacity(shown.len());
    for s in shown {
        let (battery, gsm) = series(conn, &s.station_id, &since)?;
        rows.push((s, battery, gsm));
    }
    let alarms = alarm_lines(
        conn,
        "SELECT station_id, received_utc, alarm_utc, type, channel_id, text FROM alarms
         ORDER BY received_utc DESC LIMIT 20",
        None,
    )?;
    let nav = html! {
        @if pages > 1 {
            nav {
                @if page_no > 1 { a href={ "?page=" (page_no - 1) } { "← previous" } }
                span { "page " (page_no) " of " (pages) }
                @if page_no < pages { " " a href={ "?page=" (page_no + 1) } { "next →" } }
            }
        }
    };
    let body = html! {
        h1 { "Stations" }
        p { (all.len()) " station(s), " strong { (late) " late" } ". "
            span.small { "As of " (short(&layout::rfc3339(now))) " UTC. "
                a href="status.json" { "JSON" } } }
        @if !behind.is_empty() {
            p.small #behind { (behind.join("; ")) "." }
        }
        (nav)
        div.wrap { table #stations {
            // What matters most first: a phone shows the first columns.
            tr { th { "Station" } th { "Late" } th { "Age" } th { "Last seen (UTC)" } th { "Name" } th { "Cycle" }
                 th { "Battery V" } th { "Battery, 30 days" } th { "GSM" } th { "GSM, 30 days" }
                 th { "Firmware" } th { "24 h" } th { "Last alarm" } th { "Commands" } }
            @for (s, battery, gsm) in &rows {
                tr class=[s.late.then_some("late")] data-station=(s.station_id) {
                    td { a href={ "status/" (s.station_id) } { (s.station_id) } }
                    td.flag { @if s.late { "LATE" } }
                    td.num { (s.age_secs.map_or_else(|| "-".to_owned(), status::human_secs)) }
                    td { (s.last_seen.as_deref().map_or_else(|| "never".to_owned(), short)) }
                    td { (s.name.as_deref().unwrap_or("")) }
                    td.num { (status::human_secs(s.expected_cycle_secs)) }
                    td.num { (num(s.battery_voltage, 1)) }
                    td.battery { (sparkline(battery, today, "battery voltage")) }
                    td.num { (num(s.gsm_signal, 0)) }
                    td.gsm { (sparkline(gsm, today, "GSM signal")) }
                    td { (s.firmware.as_deref().unwrap_or("")) }
                    td.num { (s.transmissions_24h) }
                    td { @if let Some(a) = &s.last_alarm { (short(&a.time)) " " (a.kind.as_deref().unwrap_or("")) } }
                    td.num { (s.pending_commands) }
                }
            }
        } }
        (nav)
        h2 { "Latest alarms" }
        @if alarms.is_empty() { p.small { "none" } } @else {
            div.wrap { table #alarms {
                tr { th { "Received (UTC)" } th { "Station" } th { "Type" } th { "Text" } }
                @for a in &alarms {
                    tr { td { (short(&a.received)) } td { a href={ "status/" (a.station) } { (a.station) } }
                         td { (a.kind.as_deref().unwrap_or("")) } td { (a.text) } }
                }
            } }
        }
        p.small { "dlsrv " (env!("CARGO_PKG_VERSION")) }
    };
    Ok(page("dlsrv: stations", body))
}

/// `GET /status/<station>`; `None` for a station the catalog does not know.
pub(crate) fn station(
    conn: &Connection,
    state_dir: &Path,
    lateness: Lateness,
    now: DateTime<Utc>,
    station_id: &str,
    days: u32,
    charts: impl FnOnce(i64) -> rusqlite::Result<std::sync::Arc<String>>,
) -> rusqlite::Result<Option<String>> {
    let found = status::stations(conn, state_dir, lateness, now, &[station_id.to_owned()])?;
    let Some(s) = found.into_iter().next() else {
        return Ok(None);
    };
    // The charts of the last `days`, given how long this station may be
    // silent without being late (see `crate::chart`).
    let charts = charts(lateness.limit(s.expected_cycle_secs))?;
    let channels: Vec<ChannelRow> = conn
        .prepare_cached("SELECT channels FROM stations WHERE station_id = ?1")?
        .query_row(params![station_id], |r| r.get::<_, Option<String>>(0))?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let transmissions: Vec<(String, String, i64, String)> = conn
        .prepare_cached(
            "SELECT received_utc, action, bytes, path FROM transmissions
             WHERE station_id = ?1 ORDER BY received_utc DESC LIMIT 25",
        )?
        .query_map(params![station_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let alarms = alarm_lines(
        conn,
        "SELECT station_id, received_utc, alarm_utc, type, channel_id, text FROM alarms
         WHERE station_id = ?1 ORDER BY received_utc DESC LIMIT 25",
        Some(station_id),
    )?;
    let queue = crate::request::StationId::parse(station_id.as_bytes())
        .ok()
        .and_then(|id| crate::queue::list(state_dir, Some(&id)).ok())
        .unwrap_or_default();
    let title = format!("dlsrv: {station_id}");
    let body = html! {
        p { a href="../status" { "← all stations" } }
        h1 { (station_id) " " (s.name.as_deref().unwrap_or("")) }
        div.wrap { table {
            tr class=[s.late.then_some("late")] { th { "Last seen (UTC)" } td { (s.last_seen.as_deref().map_or_else(|| "never".to_owned(), short)) }
                td.flag { @if s.late { "LATE" } } }
            tr { th { "Expected cycle" } td { (status::human_secs(s.expected_cycle_secs)) } td.small { (s.cycle_source) } }
            tr { th { "Battery" } td { (num(s.battery_voltage, 2)) " V" } td.small { (s.battery_source.as_deref().unwrap_or("")) } }
            tr { th { "GSM signal" } td { (num(s.gsm_signal, 0)) } td {} }
            tr { th { "Firmware, device" } td { (s.firmware.as_deref().unwrap_or("-")) } td { (s.device_type.as_deref().unwrap_or("")) } }
            tr { th { "Data messages, 24 h" } td { (s.transmissions_24h) } td {} }
            tr { th { "Time zone" } td { (s.timezone.as_deref().unwrap_or("-")) } td {} }
        } }
        h2 #charts { "Every channel, last " (days) " days (UTC)" }
        nav.small { "window: " @for d in [1, 7, 30, 90] {
            @if d == days { strong { (d) " d" } " " } @else { a href={ "?days=" (d) } { (d) " d" } " " }
        } }
        (PreEscaped(charts.as_str()))
        h2 { "Channels (latest data message)" }
        div.wrap { table #channels {
            tr { th { "Channel" } th { "Name" } th { "Last value" } th { "Unit" } th { "Time (UTC)" } th { "Values" } th { "Failed" } }
            @for c in &channels {
                tr { td { (c.channel_id) } td { (c.name.as_deref().unwrap_or("")) }
                     td.num { (c.last_value.as_deref().unwrap_or("-")) } td { (c.unit.as_deref().unwrap_or("")) }
                     td { (c.last_value_utc.as_deref().map(short).unwrap_or_default()) }
                     td.num { (c.n_values) } td.num { (c.n_errors) } }
            }
        } }
        h2 { "Last transmissions" }
        div.wrap { table #transmissions {
            tr { th { "Received (UTC)" } th { "Action" } th { "Bytes" } th { "File" } }
            @for (received, action, bytes, path) in &transmissions {
                tr { td { (short(received)) } td { (action) } td.num { (bytes) } td.small { (path) } }
            }
        } }
        h2 { "Alarms" }
        @if alarms.is_empty() { p.small { "none" } } @else {
            div.wrap { table #alarms {
                tr { th { "Received (UTC)" } th { "Alarm time (UTC)" } th { "Type" } th { "Channel" } th { "Text" } }
                @for a in &alarms {
                    tr { td { (short(&a.received)) } td { (a.at.as_deref().map(short).unwrap_or_default()) }
                         td { (a.kind.as_deref().unwrap_or("")) } td { (a.channel.as_deref().unwrap_or("")) } td { (a.text) } }
                }
            } }
        }
        h2 { "Command queue" }
        @if queue.is_empty() { p.small { "nothing queued" } } @else {
            div.wrap { table #queue {
                tr { th { "Id" } th { "State" } th { "Document" } th { "Sent" } th { "Acks" } }
                @for e in &queue {
                    tr { td { (e.id) } td { (match e.state {
                            crate::queue::State::Pending => "pending",
                            crate::queue::State::Sent { .. } => "sent",
                            crate::queue::State::Cancelled => "cancelled",
                        }) }
                         td { (e.root) } td.num { (e.sends) }
                         td { @for (id, st, reason) in &e.acks { (id) " " (st) " " (reason) br; } } }
                }
            } }
        }
    };
    Ok(Some(page(&title, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_has_one_point_per_day_with_data() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
        let points: Series = (0..7)
            .map(|d| {
                (
                    today - chrono::Duration::days(d * 2),
                    12.0 + d as f64 / 10.0,
                )
            })
            .collect();
        let svg = sparkline(&points, today, "battery").into_string();
        let coords = svg
            .split("points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("points");
        assert_eq!(coords.split(' ').count(), 7, "{svg}");
        assert!(svg.starts_with("<svg"));
        assert_eq!(
            sparkline(&Vec::new(), today, "x").into_string(),
            "<span class=\"small\">-</span>"
        );
    }
}
