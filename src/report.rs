//! `dlsrv report`: the report of a period (the last `--days` days up to
//! now), from the catalog alone — the stations that reported and how often
//! (against how often their cycle expects), the stations known from
//! earlier that did not, and per station the gaps (expected transmissions
//! that never came, as time ranges), alarms, values with error codes, and
//! refused and duplicate bodies. As text, CSV, JSON or HTML.
//!
//! A gap is an interval between two data messages (or between the start of
//! the period and the first, or the last and now) longer than the station's
//! lateness limit (`late_factor` × cycle + `late_grace_secs`, as in `dlsrv
//! status`); the transmissions it misses are its length in cycles, less one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::config::Config;
use crate::layout;
use crate::status::{self, Lateness};

/// The output forms of `dlsrv report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Csv,
    Json,
    Html,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) generated: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) days: u32,
    /// Stations with at least one data message in the period.
    pub(crate) reported: Vec<StationReport>,
    /// Stations known from before the period without one in it.
    pub(crate) silent: Vec<Silent>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StationReport {
    pub(crate) station_id: String,
    pub(crate) name: Option<String>,
    pub(crate) data_messages: u64,
    /// Data messages the cycle expects in the part of the period the station existed.
    pub(crate) expected: u64,
    pub(crate) cycle_secs: i64,
    pub(crate) cycle_source: &'static str,
    pub(crate) first: String,
    pub(crate) last: String,
    pub(crate) gaps: Vec<Gap>,
    pub(crate) missing: u64,
    pub(crate) alarms: Vec<Alarm>,
    pub(crate) failed_values: u64,
    pub(crate) error_channels: Vec<String>,
    pub(crate) rejected: u64,
    pub(crate) rejected_reasons: Vec<String>,
    pub(crate) duplicates: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Gap {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) missing: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Alarm {
    pub(crate) received: String,
    pub(crate) time: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) channel_id: Option<String>,
    pub(crate) text: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Silent {
    pub(crate) station_id: String,
    pub(crate) name: Option<String>,
    pub(crate) last_seen: Option<String>,
}

/// `dlsrv report …`.
pub(crate) fn run(config: &Config, args: &ReportArgs) -> anyhow::Result<()> {
    // The file to write is the operator's; the catalog is read as its owner.
    let now = Utc::now();
    let target = match (&args.output, &args.output_dir) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(dir)) => Some(dir.join(format!(
            "dlsrv-report-{}.{}",
            now.format("%Y-%m-%d"),
            args.format.extension()
        ))),
        (None, None) => None,
    };
    let conn = status::open_catalog(&config.state_dir)?;
    let report = match conn {
        Some(conn) => build(
            &conn,
            &config.state_dir,
            Lateness::of(config),
            now,
            args.days,
        )
        .context("cannot read the catalog")?,
        None => Report {
            generated: layout::rfc3339(now),
            from: layout::rfc3339(now - chrono::Duration::days(i64::from(args.days))),
            to: layout::rfc3339(now),
            days: args.days,
            reported: Vec::new(),
            silent: Vec::new(),
        },
    };
    let text = match args.format {
        Format::Text => text(&report),
        Format::Csv => csv(&report)?,
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        Format::Html => html(&report),
    };
    match target {
        None => crate::console::to_stdout(&text)?,
        Some(path) => {
            write_atomically(&path, text.as_bytes())?;
            eprintln!("dlsrv: report written to {}", path.display());
        }
    }
    Ok(())
}

/// Writes `path` whole or not at all ([`crate::durable::AtomicFile`]).
fn write_atomically(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let mut file = crate::durable::AtomicFile::create(path)?;
    file.write_all(body)?;
    file.commit()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The report of the `days` days up to `now`.
pub(crate) fn build(
    conn: &Connection,
    state_dir: &Path,
    lateness: Lateness,
    now: DateTime<Utc>,
    days: u32,
) -> rusqlite::Result<Report> {
    let start = now - chrono::Duration::days(i64::from(days));
    let (from, to) = (layout::rfc3339(start), layout::rfc3339(now));
    let mut reported = Vec::new();
    let mut silent = Vec::new();
    for st in status::stations(conn, state_dir, lateness, now, &[])? {
        let times: Vec<DateTime<Utc>> = conn
            .prepare_cached(
                // Every stored data message, with a summary or not (a
                // catalog from before them has none until `dlsrv reindex`).
                "SELECT received_utc FROM transmissions
                 WHERE station_id = ?1 AND received_utc >= ?2 AND received_utc <= ?3
                   AND action = 'senddata'
                 ORDER BY received_utc",
            )?
            .query_map(params![st.station_id, from, to], |r| r.get::<_, String>(0))?
            .filter_map(|t| t.ok().and_then(|t| layout::parse_time(&t)))
            .collect();
        if times.is_empty() {
            if st.first_seen < from {
                silent.push(Silent {
                    station_id: st.station_id,
                    name: st.name,
                    last_seen: st.last_seen,
                });
            }
            continue;
        }
        let cycle = st.expected_cycle_secs.max(1);
        let limit = lateness.limit(cycle);
        // The station's part of the period: from its first sight if that is later.
        let existed_from = layout::parse_time(&st.first_seen).map_or(start, |t| t.max(start));
        let mut gaps = Vec::new();
        let mut edges: Vec<DateTime<Utc>> = Vec::with_capacity(times.len() + 2);
        edges.push(existed_from);
        edges.extend(times.iter().copied());
        edges.push(now);
        for w in edges.windows(2) {
            let secs = (w[1] - w[0]).num_seconds();
            if secs > limit {
                let missing = (secs / cycle - 1).max(1) as u64;
                gaps.push(Gap {
                    from: layout::rfc3339(w[0]),
                    to: layout::rfc3339(w[1]),
                    missing,
                });
            }
        }
        let expected = ((now - existed_from).num_seconds() / cycle).max(1) as u64;
        let (failed_values, error_channels) = failed_values(conn, &st.station_id, &from, &to)?;
        let (rejected, rejected_reasons) = rejected(conn, &st.station_id, &from, &to)?;
        let duplicates: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM duplicates WHERE station_id = ?1 AND received_utc >= ?2 AND received_utc <= ?3",
            )?
            .query_row(params![st.station_id, from, to], |r| r.get(0))?;
        let alarms = conn
            .prepare_cached(
                "SELECT received_utc, alarm_utc, type, channel_id, text FROM alarms
                 WHERE station_id = ?1 AND received_utc >= ?2 AND received_utc <= ?3
                 ORDER BY received_utc",
            )?
            .query_map(params![st.station_id, from, to], |r| {
                Ok(Alarm {
                    received: r.get(0)?,
                    time: r.get(1)?,
                    kind: r.get(2)?,
                    channel_id: r.get(3)?,
                    text: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        reported.push(StationReport {
            missing: gaps.iter().map(|g| g.missing).sum(),
            first: layout::rfc3339(times[0]),
            last: layout::rfc3339(times[times.len() - 1]),
            data_messages: times.len() as u64,
            expected,
            cycle_secs: cycle,
            cycle_source: st.cycle_source,
            gaps,
            alarms,
            failed_values,
            error_channels,
            rejected,
            rejected_reasons,
            duplicates: duplicates as u64,
            station_id: st.station_id,
            name: st.name,
        });
    }
    reported.sort_by(|a, b| {
        b.missing
            .cmp(&a.missing)
            .then_with(|| a.station_id.cmp(&b.station_id))
    });
    Ok(Report {
        generated: layout::rfc3339(Utc::now()),
        from,
        to,
        days,
        reported,
        silent,
    })
}

/// Failed values (error code > 0) in the period, and the channels they were in.
fn failed_values(
    conn: &Connection,
    station: &str,
    from: &str,
    to: &str,
) -> rusqlite::Result<(u64, Vec<String>)> {
    let mut total = 0u64;
    let mut channels = std::collections::BTreeSet::new();
    let mut stmt = conn.prepare_cached(
        "SELECT i.n_errors, i.error_channels
         FROM transmissions t CROSS JOIN station_info i ON i.id = t.id
         WHERE t.station_id = ?1 AND t.received_utc >= ?2 AND t.received_utc <= ?3
           AND i.n_errors > 0",
    )?;
    let mut rows = stmt.query(params![station, from, to])?;
    while let Some(r) = rows.next()? {
        total += r.get::<_, i64>(0)?.max(0) as u64;
        if let Some(list) = r.get::<_, Option<String>>(1)? {
            channels.extend(list.split(',').map(str::to_owned));
        }
    }
    Ok((total, channels.into_iter().collect()))
}

/// Refused bodies in the period and their distinct reasons (the first few).
fn rejected(
    conn: &Connection,
    station: &str,
    from: &str,
    to: &str,
) -> rusqlite::Result<(u64, Vec<String>)> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM rejected WHERE station_id = ?1 AND received_utc >= ?2 AND received_utc <= ?3",
        )?
        .query_row(params![station, from, to], |r| r.get(0))?;
    let reasons = conn
        .prepare_cached(
            "SELECT DISTINCT reason FROM rejected
             WHERE station_id = ?1 AND received_utc >= ?2 AND received_utc <= ?3 LIMIT 3",
        )?
        .query_map(params![station, from, to], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((n as u64, reasons))
}

fn shown(text: &str) -> String {
    crate::logging::printable(text, 200)
}

/// The report for people reading a mail or a terminal.
pub(crate) fn text(r: &Report) -> String {
    let mut out = format!(
        "dlsrv report, {} days: {} to {}\n{} station(s) reported, {} known from before did not.\n",
        r.days,
        r.from,
        r.to,
        r.reported.len(),
        r.silent.len()
    );
    if !r.silent.is_empty() {
        out.push_str("\nDid not report:\n");
        for s in &r.silent {
            let _ = writeln!(
                out,
                "  {:<12} {:<24} last seen {}",
                shown(&s.station_id),
                shown(s.name.as_deref().unwrap_or("-")),
                s.last_seen.as_deref().unwrap_or("never")
            );
        }
    }
    out.push_str("\nReported (most missing first):\n");
    let _ = writeln!(
        out,
        "  {:<12} {:<24} {:>8} {:>8} {:>7} {:>5} {:>6} {:>6} {:>6} {:>5}",
        "STATION",
        "NAME",
        "MESSAGES",
        "EXPECTED",
        "MISSING",
        "GAPS",
        "ALARMS",
        "FAILED",
        "REFUSED",
        "DUPL"
    );
    for s in &r.reported {
        let _ = writeln!(
            out,
            "  {:<12} {:<24} {:>8} {:>8} {:>7} {:>5} {:>6} {:>6} {:>6} {:>5}",
            shown(&s.station_id),
            shown(s.name.as_deref().unwrap_or("-"))
                .chars()
                .take(24)
                .collect::<String>(),
            s.data_messages,
            s.expected,
            s.missing,
            s.gaps.len(),
            s.alarms.len(),
            s.failed_values,
            s.rejected,
            s.duplicates
        );
    }
    for s in r.reported.iter().filter(|s| {
        !s.gaps.is_empty() || !s.alarms.is_empty() || s.failed_values > 0 || s.rejected > 0
    }) {
        let _ = writeln!(
            out,
            "\n{} {} (cycle {}, {})",
            shown(&s.station_id),
            shown(s.name.as_deref().unwrap_or("")),
            status::human_secs(s.cycle_secs),
            s.cycle_source
        );
        for g in &s.gaps {
            let _ = writeln!(
                out,
                "  gap      {} to {}: {} missing",
                g.from, g.to, g.missing
            );
        }
        for a in &s.alarms {
            let _ = writeln!(
                out,
                "  alarm    {} {} {}",
                a.time.as_deref().unwrap_or(&a.received),
                shown(a.kind.as_deref().unwrap_or("")),
                shown(&a.text)
            );
        }
        if s.failed_values > 0 {
            let _ = writeln!(
                out,
                "  failed   {} value(s) with an error code, channel(s) {}",
                s.failed_values,
                shown(&s.error_channels.join(", "))
            );
        }
        if s.rejected > 0 {
            let _ = writeln!(
                out,
                "  refused  {} body(ies): {}",
                s.rejected,
                shown(&s.rejected_reasons.join("; "))
            );
        }
    }
    out
}

/// One row per station, the silent ones included (`reported` false).
pub(crate) fn csv(r: &Report) -> anyhow::Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record([
        "station_id",
        "name",
        "reported",
        "data_messages",
        "expected",
        "missing",
        "gaps",
        "alarms",
        "failed_values",
        "error_channels",
        "rejected",
        "duplicates",
        "first",
        "last",
        "cycle_secs",
    ])?;
    for s in &r.reported {
        w.write_record([
            s.station_id.clone(),
            s.name.clone().unwrap_or_default(),
            "true".into(),
            s.data_messages.to_string(),
            s.expected.to_string(),
            s.missing.to_string(),
            s.gaps
                .iter()
                .map(|g| format!("{}/{}", g.from, g.to))
                .collect::<Vec<_>>()
                .join(" "),
            s.alarms.len().to_string(),
            s.failed_values.to_string(),
            s.error_channels.join(" "),
            s.rejected.to_string(),
            s.duplicates.to_string(),
            s.first.clone(),
            s.last.clone(),
            s.cycle_secs.to_string(),
        ])?;
    }
    for s in &r.silent {
        w.write_record([
            s.station_id.clone(),
            s.name.clone().unwrap_or_default(),
            "false".into(),
            "0".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            s.last_seen.clone().unwrap_or_default(),
            String::new(),
        ])?;
    }
    Ok(String::from_utf8(
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
    )?)
}

/// A self-contained HTML page (no script, no external resource): mailable.
pub(crate) fn html(r: &Report) -> String {
    use maud::{DOCTYPE, html};
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "dlsrv report " (r.from.get(..10).unwrap_or(&r.from)) " to " (r.to.get(..10).unwrap_or(&r.to)) }
                style { (maud::PreEscaped(crate::page::CSS)) }
            }
            body {
                h1 { "dlsrv report, " (r.days) " days" }
                p { (r.from) " to " (r.to) ": " (r.reported.len()) " station(s) reported, "
                    strong { (r.silent.len()) } " known from before did not." }
                @if !r.silent.is_empty() {
                    h2 { "Did not report" }
                    table {
                        tr { th { "Station" } th { "Name" } th { "Last seen" } }
                        @for s in &r.silent {
                            tr class="late" { td { (s.station_id) } td { (s.name.as_deref().unwrap_or("")) }
                                td { (s.last_seen.as_deref().unwrap_or("never")) } }
                        }
                    }
                }
                h2 { "Reported" }
                table {
                    tr { th { "Station" } th { "Name" } th { "Messages" } th { "Expected" } th { "Missing" }
                         th { "Gaps" } th { "Alarms" } th { "Failed values" } th { "Refused" } th { "Duplicates" } }
                    @for s in &r.reported {
                        tr class=[(s.missing > 0).then_some("late")] {
                            td { (s.station_id) } td { (s.name.as_deref().unwrap_or("")) }
                            td.num { (s.data_messages) } td.num { (s.expected) } td.num { (s.missing) }
                            td { @for g in &s.gaps { (g.from.get(..16).unwrap_or(&g.from)) " – " (g.to.get(..16).unwrap_or(&g.to)) " (" (g.missing) ")" br; } }
                            td { @for a in &s.alarms { (a.time.as_deref().unwrap_or(&a.received)) " " (a.kind.as_deref().unwrap_or("")) ": " (a.text) br; } }
                            td.num { (s.failed_values) @if !s.error_channels.is_empty() { " (" (s.error_channels.join(", ")) ")" } }
                            td.num { (s.rejected) } td.num { (s.duplicates) }
                        }
                    }
                }
                p.small { "Generated " (r.generated) " by dlsrv " (env!("CARGO_PKG_VERSION")) "." }
            }
        }
    };
    page.into_string()
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    pub(crate) config: crate::config::ConfigArg,
    /// The period: the last DAYS days up to now.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub(crate) days: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: crate::report::Format,
    /// Write to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE", conflicts_with = "output_dir")]
    pub(crate) output: Option<std::path::PathBuf>,
    /// Write to DIR/dlsrv-report-<last day>.<format> (what the timer does).
    #[arg(long, value_name = "DIR")]
    pub(crate) output_dir: Option<std::path::PathBuf>,
}
