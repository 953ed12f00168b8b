//! A chart of every channel of a station, for `/status/<id>` (docs/operations.md,
//! "The station page"): inline SVG, no script, no request elsewhere.
//!
//! The values come from the archive, read as the export reads it
//! ([`crate::export::rows`]: the same parser, the same copy rule — of one
//! channel's values at one time the most recently received counts), body
//! by body in the catalog's order of receipt, in bounded memory: each
//! chart is [`COLUMNS`] time columns, and a column keeps its values
//! exactly while it holds at most [`EXACT`]; beyond, its first, lowest,
//! highest and last (M4), which draws the same line at the chart's
//! resolution. So the memory is the same for a week of 15-minute values
//! and for 90 days of 1-minute values: at most [`MAX_CHANNELS`] ×
//! [`COLUMNS`] × [`EXACT`] points.
//!
//! The line breaks where no value arrived for longer than three times the
//! channel's usual spacing, and at a failed value (an error code), which is
//! marked red below the line; after a channel's last value the rest of
//! the window is shaded once the station is late (as `dlsrv status` says):
//! a silent logger looks silent.
//!
//! A page view does not read a week of bodies each time: the charts of a
//! station and window are kept a minute ([`cache`]).

use std::fmt::Write as _;

use chrono::{DateTime, TimeZone, Utc};
use maud::{Markup, PreEscaped, html};

use crate::config::Config;

pub(crate) mod cache;

/// Time columns per chart (its plot is this many pixels wide).
pub(crate) const COLUMNS: usize = 720;
/// Values a column keeps exactly.
const EXACT: usize = 4;
/// Channels charted per station (the rest are named, not drawn).
pub(crate) const MAX_CHANNELS: usize = 32;
/// The window when the page does not ask (`?days=N`), and the most it may.
pub(crate) const DEFAULT_DAYS: u32 = 7;
pub(crate) const MAX_DAYS: u32 = 90;
/// Catalog rows read per page.
const PAGE: i64 = 256;

/// The chart's size in pixels: the plot and the margins for labels.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 64.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
const PLOT_W: f64 = WIDTH - LEFT - 16.0;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

/// One value: its time (Unix seconds) and the number, or None for a failed value.
type Point = (i64, Option<f64>);

/// The values of one time column.
#[derive(Debug, Clone)]
enum Column {
    /// At most [`EXACT`], by time, one per time.
    Few(Vec<Point>),
    /// More: the first, lowest, highest and last number, and failed values.
    Many {
        first: (i64, f64),
        low: (i64, f64),
        high: (i64, f64),
        last: (i64, f64),
        failed: Option<i64>,
        values: u64,
    },
}

/// One channel's chart being gathered.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) unit: String,
    columns: Vec<Option<Column>>,
}

impl Channel {
    fn new(id: &str) -> Channel {
        Channel {
            id: id.to_owned(),
            name: String::new(),
            unit: String::new(),
            columns: vec![None; COLUMNS],
        }
    }

    /// Takes one value at `t` (a later one at the same time replaces it).
    fn add(&mut self, column: usize, t: i64, v: Option<f64>) {
        let Some(slot) = self.columns.get_mut(column) else {
            return;
        };
        match slot {
            None => *slot = Some(Column::Few(vec![(t, v)])),
            Some(Column::Few(points)) => {
                match points.binary_search_by_key(&t, |p| p.0) {
                    Ok(i) => points[i].1 = v,
                    Err(i) => points.insert(i, (t, v)),
                }
                if points.len() > EXACT {
                    *slot = Some(many(points));
                }
            }
            Some(Column::Many {
                first,
                low,
                high,
                last,
                failed,
                values,
            }) => match v {
                Some(v) => {
                    *values += 1;
                    if t < first.0 {
                        *first = (t, v);
                    }
                    if t >= last.0 {
                        *last = (t, v);
                    }
                    if v < low.1 {
                        *low = (t, v);
                    }
                    if v > high.1 {
                        *high = (t, v);
                    }
                }
                None => {
                    failed.get_or_insert(t);
                }
            },
        }
    }

    /// The points to draw, by time, and how many values they stand for.
    fn points(&self) -> (Vec<Point>, u64) {
        let mut out = Vec::new();
        let mut values = 0;
        for column in self.columns.iter().flatten() {
            match column {
                Column::Few(points) => {
                    values += points.iter().filter(|p| p.1.is_some()).count() as u64;
                    out.extend_from_slice(points);
                }
                Column::Many {
                    first,
                    low,
                    high,
                    last,
                    failed,
                    values: n,
                } => {
                    values += n;
                    let mut four = vec![*first, *low, *high, *last];
                    four.sort_by_key(|p| p.0);
                    four.dedup_by_key(|p| p.0);
                    let start = out.len();
                    out.extend(four.into_iter().map(|(t, v)| (t, Some(v))));
                    if let Some(t) = failed {
                        out.push((*t, None));
                        out[start..].sort_by_key(|p| p.0);
                    }
                }
            }
        }
        (out, values)
    }
}

/// Turns a full column into its summary.
fn many(points: &[Point]) -> Column {
    let numbers: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|(t, v)| v.map(|v| (*t, v)))
        .collect();
    let failed = points.iter().find(|p| p.1.is_none()).map(|p| p.0);
    let pick = |better: fn(f64, f64) -> bool| {
        numbers
            .iter()
            .copied()
            .reduce(|a, b| if better(b.1, a.1) { b } else { a })
    };
    match (
        numbers.first(),
        numbers.last(),
        pick(|a, b| a < b),
        pick(|a, b| a > b),
    ) {
        (Some(first), Some(last), Some(low), Some(high)) => Column::Many {
            first: *first,
            low,
            high,
            last: *last,
            failed,
            values: numbers.len() as u64,
        },
        // Only failed values: keep them exactly (they are few to draw).
        _ => Column::Few(points[..EXACT].to_vec()),
    }
}

/// The charts of one station over one window.
#[derive(Debug, Clone)]
pub(crate) struct Charts {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    /// By channel id.
    pub(crate) channels: Vec<Channel>,
    /// Channels beyond [`MAX_CHANNELS`], by id.
    pub(crate) not_charted: Vec<String>,
    /// Bodies read, and those that could not be.
    pub(crate) bodies: u64,
    pub(crate) unreadable: u64,
}

impl Charts {
    pub(crate) fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Charts {
        Charts {
            from,
            to,
            channels: Vec::new(),
            not_charted: Vec::new(),
            bodies: 0,
            unreadable: 0,
        }
    }

    fn column(&self, t: i64) -> Option<usize> {
        let (from, to) = (self.from.timestamp(), self.to.timestamp());
        if t < from || t > to || to <= from {
            return None;
        }
        let span = (to - from) as f64;
        Some((((t - from) as f64 / span * COLUMNS as f64) as usize).min(COLUMNS - 1))
    }

    /// Takes the values of `station` in one body's rows.
    pub(crate) fn add(&mut self, station: &str, rows: &[crate::export::rows::ValueRow]) {
        for row in rows {
            if &*row.station.id != station {
                continue;
            }
            let Some(t) = row.utc.map(|u| u.timestamp()) else {
                continue;
            };
            let Some(column) = self.column(t) else {
                continue;
            };
            // Empty when the value failed (its error code), or not a number:
            // marked as failed.
            let value = row
                .value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite());
            let id = &*row.channel.id;
            let at = match self.channels.binary_search_by(|c| c.id.as_str().cmp(id)) {
                Ok(i) => i,
                Err(i) => {
                    if self.channels.len() >= MAX_CHANNELS {
                        if !self.not_charted.iter().any(|c| c == id) {
                            self.not_charted.push(id.to_owned());
                        }
                        continue;
                    }
                    self.channels.insert(i, Channel::new(id));
                    i
                }
            };
            let channel = &mut self.channels[at];
            if !row.channel.name.is_empty() {
                channel.name.clone_from(&row.channel.name);
            }
            if !row.channel.unit.is_empty() {
                channel.unit.clone_from(&row.channel.unit);
            }
            channel.add(column, t, value);
        }
    }

    /// The charts as HTML: one figure per channel. `quiet_secs`: how long
    /// the station may be silent at the end without being late (the end of
    /// a line is shaded only beyond it).
    pub(crate) fn render(&self, quiet_secs: i64) -> Markup {
        let days = ((self.to - self.from).num_hours() as f64 / 24.0).round();
        html! {
            @if self.channels.is_empty() {
                p.small { "no values in the last " (days) " days" }
            }
            @for c in &self.channels {
                (self.chart(c, quiet_secs))
            }
            @if !self.not_charted.is_empty() {
                p.small { "not charted (more than " (MAX_CHANNELS) " channels): " (self.not_charted.join(", ")) }
            }
            @if self.unreadable > 0 {
                p.small { (self.unreadable) " of " (self.bodies) " bodies could not be read (see the log)" }
            }
        }
    }

    fn x(&self, t: i64) -> f64 {
        let (from, to) = (self.from.timestamp(), self.to.timestamp());
        LEFT + (t - from) as f64 / (to - from).max(1) as f64 * PLOT_W
    }

    fn chart(&self, c: &Channel, quiet_secs: i64) -> Markup {
        let (points, values) = c.points();
        let numbers: Vec<f64> = points.iter().filter_map(|p| p.1).collect();
        let failed: Vec<i64> = points
            .iter()
            .filter(|p| p.1.is_none())
            .map(|p| p.0)
            .collect();
        let (lo, hi) = numbers
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let (lo, hi) = if numbers.is_empty() {
            (0.0, 1.0)
        } else {
            (lo, hi)
        };
        let (y_lo, y_hi) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 1.0, hi + 1.0)
        };
        let y = |v: f64| TOP + PLOT_H - (v - y_lo) / (y_hi - y_lo) * PLOT_H;
        let gap = gap_secs(&points, (self.to - self.from).num_seconds());
        // The line, in runs without a gap or a failed value between.
        let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut last_t: Option<i64> = None;
        let mut broken = true;
        for (t, v) in &points {
            match v {
                None => broken = true,
                Some(v) => {
                    if broken || last_t.is_some_and(|l| t - l > gap) {
                        runs.push(Vec::new());
                    }
                    broken = false;
                    if let Some(run) = runs.last_mut() {
                        run.push((self.x(*t), y(*v)));
                    }
                    last_t = Some(*t);
                }
            }
        }
        let unit = if c.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", c.unit)
        };
        let drawn: usize = runs.iter().map(Vec::len).sum();
        let range = if numbers.is_empty() {
            "no values, only failed ones".to_owned()
        } else {
            format!("{} to {}{unit}", fmt(lo), fmt(hi))
        };
        let title = if c.name.is_empty() {
            c.id.clone()
        } else {
            format!("{} {}", c.id, c.name)
        };
        // Silent since the last value: the rest of the window is shaded.
        let silent_from = points.iter().rev().find(|p| p.1.is_some()).map(|p| p.0);
        let silent = silent_from.filter(|t| self.to.timestamp() - t > gap.max(quiet_secs));
        html! {
            figure.chart data-channel=(c.id) data-values=(values) data-points=(drawn) data-failed=(failed.len()) {
                figcaption { strong { (title) } (unit) span.small { " · " (values) " values"
                    @if !failed.is_empty() { ", " span.failed { (failed.len()) " failed" } } } }
                svg width=(WIDTH) height=(HEIGHT) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                    aria-label={ (title) ": " (range) } {
                    title { (title) ": " (range) }
                    rect.plot x=(LEFT) y=(TOP) width=(PLOT_W) height=(PLOT_H) {}
                    (self.day_ticks())
                    @if let Some(t) = silent {
                        rect.silent x=(num(self.x(t))) y=(TOP) width=(num(self.x(self.to.timestamp()) - self.x(t))) height=(PLOT_H) {
                            title { "no values since " (utc(t)) " UTC" }
                        }
                    }
                    @if numbers.is_empty() {
                    } @else if hi > lo {
                        text.lab x=(LEFT - 4.0) y=(TOP + 9.0) text-anchor="end" { (fmt(hi)) }
                        text.lab x=(LEFT - 4.0) y=(TOP + PLOT_H) text-anchor="end" { (fmt(lo)) }
                        text.lab x=(LEFT - 4.0) y=(TOP + PLOT_H / 2.0 + 4.0) text-anchor="end" { (c.unit) }
                    } @else {
                        // One value throughout: labelled once, beside its line.
                        text.lab x=(LEFT - 4.0) y=(TOP + PLOT_H / 2.0 + 4.0) text-anchor="end" { (fmt(hi)) }
                        text.lab x=(LEFT - 4.0) y=(TOP + PLOT_H / 2.0 + 18.0) text-anchor="end" { (c.unit) }
                    }
                    @for run in &runs {
                        @if run.len() == 1 {
                            circle.pt cx=(num(run[0].0)) cy=(num(run[0].1)) r="1.8" {}
                        } @else {
                            polyline.line points=(coords(run)) {}
                        }
                    }
                    @for t in &failed {
                        line.failed x1=(num(self.x(*t))) x2=(num(self.x(*t))) y1=(TOP + PLOT_H - 6.0) y2=(TOP + PLOT_H) {
                            title { "failed value at " (utc(*t)) " UTC" }
                        }
                    }
                }
            }
        }
    }

    /// A line and a label at each UTC midnight (every few days on a long window).
    fn day_ticks(&self) -> Markup {
        let days = (self.to - self.from).num_days().max(1);
        let every = (days / 14 + 1).max(1);
        let first = self
            .from
            .date_naive()
            .succ_opt()
            .unwrap_or(self.from.date_naive());
        let mut out = String::new();
        let mut day = first;
        let mut n = 0;
        while let Some(midnight) = day.and_hms_opt(0, 0, 0).map(|d| Utc.from_utc_datetime(&d)) {
            if midnight > self.to {
                break;
            }
            let x = num(self.x(midnight.timestamp()));
            let _ = write!(
                out,
                "<line class=\"day\" x1=\"{x}\" x2=\"{x}\" y1=\"{TOP}\" y2=\"{}\"></line>",
                TOP + PLOT_H
            );
            if n % every == 0 {
                let _ = write!(
                    out,
                    "<text class=\"lab\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                    HEIGHT - 6.0,
                    midnight.format("%m-%d")
                );
            }
            n += 1;
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        PreEscaped(out)
    }
}

/// The spacing beyond which the line breaks: three times the channel's
/// usual (median) spacing, at least two columns.
fn gap_secs(points: &[Point], window_secs: i64) -> i64 {
    let times: Vec<i64> = points
        .iter()
        .filter(|p| p.1.is_some())
        .map(|p| p.0)
        .collect();
    let mut steps: Vec<i64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    let column = window_secs / COLUMNS as i64;
    if steps.is_empty() {
        return (2 * column).max(1);
    }
    let mid = steps.len() / 2;
    let (_, median, _) = steps.select_nth_unstable(mid);
    (*median * 3).max(2 * column)
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

fn coords(run: &[(f64, f64)]) -> String {
    let mut out = String::with_capacity(run.len() * 12);
    for (i, (x, y)) in run.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{x:.1},{y:.1}");
    }
    out
}

/// A value label: as few digits as its size needs.
fn fmt(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}")
}

fn utc(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Reads the values of `station` from `from` to `to` out of the archive:
/// the bodies it sent (data messages received since `from`, in the
/// catalog), each read where it lives (here, or in the replica), a page
/// of catalog rows at a time.
pub(crate) fn gather(
    config: &Config,
    catalog: &crate::catalog::Catalog,
    station: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> rusqlite::Result<Charts> {
    let mut charts = Charts::new(from, to);
    let mut after = (crate::layout::rfc3339(from), String::new());
    // Said once per gathering, not once per body.
    let mut first_error = None;
    loop {
        let page: Vec<(String, String)> = catalog.with_reader(|conn| {
            conn.prepare_cached(
                "SELECT received_utc, path FROM transmissions
                 WHERE station_id = ?1 AND action = 'senddata'
                   AND (received_utc, path) > (?2, ?3)
                 ORDER BY received_utc, path LIMIT ?4",
            )?
            .query_map(rusqlite::params![station, after.0, after.1, PAGE], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.clone();
        for (_, path) in &page {
            charts.bodies += 1;
            let parsed = crate::export::read_body(config, path)
                .and_then(|body| crate::export::rows::parse(&body));
            match parsed {
                Ok(parsed) => charts.add(station, &parsed.values),
                Err(e) => {
                    charts.unreadable += 1;
                    first_error.get_or_insert_with(|| format!("{path}: {e}"));
                }
            }
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    if let Some(first) = first_error {
        tracing::warn!(
            station,
            unreadable = charts.unreadable,
            bodies = charts.bodies,
            first = %first,
            "bodies could not be read for the station page's charts"
        );
    }
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::export::rows::{ChannelMeta, StationMeta, ValueRow};

    fn row(
        channel: &Arc<ChannelMeta>,
        station: &Arc<StationMeta>,
        t: DateTime<Utc>,
        v: &str,
        err: &str,
    ) -> ValueRow {
        ValueRow {
            station: Arc::clone(station),
            channel: Arc::clone(channel),
            utc: Some(t),
            value: v.into(),
            errorcode: err.into(),
            ..ValueRow::default()
        }
    }

    fn metas() -> (Arc<StationMeta>, Arc<ChannelMeta>) {
        (
            Arc::new(StationMeta {
                id: "S1".into(),
                ..StationMeta::default()
            }),
            Arc::new(ChannelMeta {
                id: "0010".into(),
                name: "Pegel".into(),
                unit: "cm".into(),
            }),
        )
    }

    #[test]
    fn every_value_is_a_point_a_gap_breaks_the_line_a_failure_is_marked() {
        let to = Utc
            .with_ymd_and_hms(2026, 3, 8, 0, 0, 0)
            .single()
            .expect("time");
        let from = to - chrono::Duration::days(7);
        let (station, channel) = metas();
        let mut charts = Charts::new(from, to);
        let mut rows = Vec::new();
        // 15-minute values for 7 days, none on day 3, one failed on day 5,
        // none in the last 6 hours.
        let mut t = from;
        let mut expected = 0;
        while t < to - chrono::Duration::hours(6) {
            let day = (t - from).num_days();
            if day != 3 {
                let failed = day == 5 && t.format("%H:%M").to_string() == "12:00";
                rows.push(row(
                    &channel,
                    &station,
                    t,
                    if failed { "" } else { "12.5" },
                    if failed { "3" } else { "" },
                ));
                expected += usize::from(!failed);
            }
            t += chrono::Duration::minutes(15);
        }
        // A copy received later replaces the value at the same time.
        rows.push(row(&channel, &station, from, "99", ""));
        // Another station's rows in the same body are not this chart's.
        let other = Arc::new(StationMeta {
            id: "S2".into(),
            ..StationMeta::default()
        });
        rows.push(row(&channel, &other, from, "1", ""));
        charts.add("S1", &rows);
        let html = charts.render(0).into_string();
        assert!(
            html.contains(&format!("data-values=\"{expected}\"")),
            "{html}"
        );
        assert!(html.contains(&format!("data-points=\"{expected}\"")));
        assert!(html.contains("data-failed=\"1\""));
        // Three runs: before the missing day, to the failed value, after it.
        assert_eq!(html.matches("<polyline").count(), 3, "{html}");
        assert_eq!(html.matches("<line class=\"failed\"").count(), 1);
        assert!(
            html.contains("class=\"silent\""),
            "the silent tail is shaded"
        );
        // Six silent hours of a station that may be silent seven: not late, not shaded.
        let on_time = charts.render(7 * 3600).into_string();
        assert!(!on_time.contains("class=\"silent\""), "{on_time}");
        assert!(
            html.contains(">99.00<") && html.contains(">12.50<"),
            "max and min labels"
        );
        assert_eq!(
            html.matches("class=\"day\"").count(),
            7,
            "a tick per UTC midnight"
        );
        assert!(html.contains(">03-02<"), "day labels");
    }

    #[test]
    fn a_channel_of_failed_values_only_is_marked_not_drawn() {
        let to = Utc
            .with_ymd_and_hms(2026, 3, 8, 0, 0, 0)
            .single()
            .expect("time");
        let from = to - chrono::Duration::days(1);
        let (station, channel) = metas();
        let mut charts = Charts::new(from, to);
        let rows: Vec<ValueRow> = (1..=3)
            .map(|h| {
                row(
                    &channel,
                    &station,
                    from + chrono::Duration::hours(h),
                    "",
                    "05",
                )
            })
            .collect();
        charts.add("S1", &rows);
        let html = charts.render(0).into_string();
        assert!(html.contains("data-points=\"0\"") && html.contains("data-failed=\"3\""));
        assert!(html.contains("no values, only failed ones"), "{html}");
        assert_eq!(html.matches("<line class=\"failed\"").count(), 3);
        assert!(!html.contains("<polyline"));
    }

    #[test]
    fn a_dense_column_keeps_its_extremes_in_bounded_memory() {
        let to = Utc
            .with_ymd_and_hms(2026, 3, 8, 0, 0, 0)
            .single()
            .expect("time");
        let from = to - chrono::Duration::days(90);
        let (station, channel) = metas();
        let mut charts = Charts::new(from, to);
        // One value a minute for 90 days: 129,600 values.
        let mut rows = Vec::with_capacity(1000);
        let mut t = from;
        let mut n = 0u64;
        while t < to {
            let v = if n == 50_000 {
                "500"
            } else if n == 70_000 {
                "-5"
            } else {
                "10"
            };
            rows.push(row(&channel, &station, t, v, ""));
            if rows.len() == 1000 {
                charts.add("S1", &rows);
                rows.clear();
            }
            t += chrono::Duration::minutes(1);
            n += 1;
        }
        charts.add("S1", &rows);
        let c = &charts.channels[0];
        let (points, values) = c.points();
        assert_eq!(values, n);
        assert!(points.len() <= COLUMNS * EXACT, "{} points", points.len());
        assert!(points.iter().any(|p| p.1 == Some(500.0)));
        assert!(points.iter().any(|p| p.1 == Some(-5.0)));
        let html = charts.render(0).into_string();
        assert_eq!(
            html.matches("<polyline").count(),
            1,
            "no gaps in dense data"
        );
        assert!(html.contains(">500.0<") && html.contains(">-5.00<"));
    }
}
