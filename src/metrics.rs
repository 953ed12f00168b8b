//! `GET /metrics`: counters in the Prometheus text format (version 0.0.4).
//!
//! Requests by action and status, bytes stored, a histogram of the time from
//! a complete body to a durable file, duplicates, rejected bodies, 503s,
//! requests in flight, and the last transmission time of each station (at
//! most `metrics_max_stations` of them, so a flood of station ids cannot
//! grow the memory or the scrape without bound).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Upper bounds of the store-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    stored_bytes: AtomicU64,
    stored_files: AtomicU64,
    store_buckets: [AtomicU64; BUCKETS.len()],
    store_count: AtomicU64,
    store_sum_micros: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    unavailable: AtomicU64,
    in_flight: AtomicI64,
    stations: Mutex<HashMap<String, i64>>,
    stations_untracked: AtomicU64,
    max_stations: usize,
    started: DateTime<Utc>,
}

/// Decrements the in-flight gauge when the request is done, however it ends.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new(max_stations: usize) -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            stored_bytes: AtomicU64::new(0),
            stored_files: AtomicU64::new(0),
            store_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            store_count: AtomicU64::new(0),
            store_sum_micros: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            stations: Mutex::new(HashMap::new()),
            stations_untracked: AtomicU64::new(0),
            max_stations,
            started: Utc::now(),
        }
    }

    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// One answered request; `action` is `"none"` outside the OTT endpoint.
    pub fn request(&self, action: &'static str, status: u16) {
        *lock(&self.requests).entry((action, status)).or_insert(0) += 1;
        if status == 503 {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A body made durable, and how long that took after it was received.
    pub fn stored(&self, bytes: usize, took: Duration) {
        self.stored_files.fetch_add(1, Ordering::Relaxed);
        self.stored_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.store_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.store_count.fetch_add(1, Ordering::Relaxed);
        self.store_sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A transmission (stored or duplicate) from `station` at `at`.
    pub fn seen(&self, station: &str, at: DateTime<Utc>) {
        let mut stations = lock(&self.stations);
        if let Some(last) = stations.get_mut(station) {
            *last = (*last).max(at.timestamp());
        } else if stations.len() < self.max_stations {
            stations.insert(station.to_owned(), at.timestamp());
        } else {
            self.stations_untracked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP dlsrv_build_info dlsrv's version.\n# TYPE dlsrv_build_info gauge\n\
             dlsrv_build_info{{version=\"{}\"}} 1\n\
             # HELP dlsrv_start_time_seconds When this process started (Unix time).\n\
             # TYPE dlsrv_start_time_seconds gauge\ndlsrv_start_time_seconds {}",
            env!("CARGO_PKG_VERSION"),
            self.started.timestamp()
        );
        out.push_str("# HELP dlsrv_requests_total Requests answered, by action and status.\n# TYPE dlsrv_requests_total counter\n");
        for ((action, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "dlsrv_requests_total{{action=\"{action}\",status=\"{status}\"}} {n}"
            );
        }
        for (name, kind, help, value) in [
            (
                "dlsrv_stored_files_total",
                "counter",
                "Bodies made durable in the archive.",
                self.stored_files.load(Ordering::Relaxed),
            ),
            (
                "dlsrv_stored_bytes_total",
                "counter",
                "Bytes made durable in the archive.",
                self.stored_bytes.load(Ordering::Relaxed),
            ),
            (
                "dlsrv_duplicates_total",
                "counter",
                "Identical bodies answered 200 without storing them again.",
                self.duplicates.load(Ordering::Relaxed),
            ),
            (
                "dlsrv_rejected_total",
                "counter",
                "Malformed bodies answered 400 and kept under rejected/.",
                self.rejected.load(Ordering::Relaxed),
            ),
            (
                "dlsrv_unavailable_total",
                "counter",
                "Requests answered 503 (a failure to store; the logger retries).",
                self.unavailable.load(Ordering::Relaxed),
            ),
            (
                "dlsrv_stations_untracked_total",
                "counter",
                "Transmissions of stations beyond metrics_max_stations.",
                self.stations_untracked.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP dlsrv_requests_in_flight Requests being handled now.\n# TYPE dlsrv_requests_in_flight gauge\ndlsrv_requests_in_flight {in_flight}"
        );

        out.push_str("# HELP dlsrv_store_duration_seconds Time from a complete body to a durable file.\n# TYPE dlsrv_store_duration_seconds histogram\n");
        for (bound, bucket) in BUCKETS.iter().zip(&self.store_buckets) {
            let _ = writeln!(
                out,
                "dlsrv_store_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.store_count.load(Ordering::Relaxed);
        let sum = self.store_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "dlsrv_store_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "dlsrv_store_duration_seconds_sum {sum}\ndlsrv_store_duration_seconds_count {count}"
        );

        out.push_str("# HELP dlsrv_station_last_transmission_seconds Last transmission of each station (Unix time).\n# TYPE dlsrv_station_last_transmission_seconds gauge\n");
        let stations = lock(&self.stations);
        let mut sorted: Vec<_> = stations.iter().collect();
        sorted.sort();
        for (station, at) in sorted {
            // Station ids are validated: only A-Z a-z 0-9 _ -, nothing to escape.
            let _ = writeln!(
                out,
                "dlsrv_station_last_transmission_seconds{{station=\"{station}\"}} {at}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP dlsrv_stations_tracked Stations in the gauge above.\n# TYPE dlsrv_stations_tracked gauge\ndlsrv_stations_tracked {}",
            stations.len()
        );
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_and_caps_stations() {
        let m = Metrics::new(2);
        {
            let _a = m.start_request();
            assert!(m.render().contains("dlsrv_requests_in_flight 1"));
        }
        m.request("senddata", 200);
        m.request("senddata", 200);
        m.request("senddata", 503);
        m.stored(44_000, Duration::from_millis(3));
        m.duplicate();
        m.rejected();
        for s in ["a", "b", "c"] {
            m.seen(s, Utc::now());
        }
        let text = m.render();
        for line in [
            "dlsrv_requests_total{action=\"senddata\",status=\"200\"} 2",
            "dlsrv_requests_total{action=\"senddata\",status=\"503\"} 1",
            "dlsrv_unavailable_total 1",
            "dlsrv_stored_bytes_total 44000",
            "dlsrv_duplicates_total 1",
            "dlsrv_rejected_total 1",
            "dlsrv_requests_in_flight 0",
            "dlsrv_store_duration_seconds_bucket{le=\"0.002\"} 0",
            "dlsrv_store_duration_seconds_bucket{le=\"0.005\"} 1",
            "dlsrv_store_duration_seconds_count 1",
            "dlsrv_stations_tracked 2",
            "dlsrv_stations_untracked_total 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Every sample belongs to a declared family.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has no TYPE"
            );
        }
    }
}
