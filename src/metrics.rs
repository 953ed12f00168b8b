//! `GET /metrics`: counters in the Prometheus text format (version 0.0.4),
//! kept and encoded by the `prometheus-client` crate.
//!
//! Requests by action and status, bytes stored, a histogram of the time from
//! a complete body to a durable file, duplicates, rejected bodies, 503s,
//! requests in flight, catalog rows not yet written, group-commit flushes,
//! and the last transmission time of each station (at most
//! `metrics_max_stations` of them, so a flood of station ids cannot grow the
//! memory or the scrape without bound).
//!
//! From the catalog, read at each scrape (as `dlsrv status` reads it, the
//! same `metrics_max_stations` bound): per station its battery voltage, GSM
//! signal, seconds since its last data message and whether it is late, and
//! the number of late stations — so Grafana and Alertmanager can alert
//! without polling `dlsrv status`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the store-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StationLabels {
    station: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StationInfoLabels {
    station: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    dir: &'static str,
}

/// Room on one of the file systems, for a scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoomSeen {
    /// `data_dir` or `state_dir`.
    pub(crate) dir: &'static str,
    pub(crate) free_bytes: u64,
    /// None where the file system has no inode limit.
    pub(crate) free_inodes: Option<u64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// What the replicator and the catalog say of the replica, for a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReplicaSeen {
    pub(crate) pending: u64,
    pub(crate) lag_secs: f64,
    pub(crate) refused: u64,
    /// The replicator's failures by kind, counted since it started.
    pub(crate) errors: Vec<(String, u64)>,
    pub(crate) outage: bool,
    /// Local files removed by retention since the replicator started.
    pub(crate) removed: u64,
}

/// The last recorded `dlsrv verify` run, for a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VerifySeen {
    pub(crate) finished: i64,
    pub(crate) checked: u64,
    pub(crate) mismatches: u64,
}

/// The replica's families (registered when there is a replica).
#[derive(Debug, Default)]
struct ReplicaFamilies {
    pending: Gauge,
    lag: Gauge<f64, AtomicU64>,
    refused: Gauge,
    outage: Gauge,
    errors: Family<KindLabels, Counter>,
    removed: Counter,
    /// The replicator's own counts last seen: its counters restart with
    /// it, ours only grow.
    seen: Mutex<(Vec<(String, u64)>, u64)>,
}

#[derive(Debug, Default)]
struct VerifyFamilies {
    finished: Gauge,
    checked: Gauge,
    mismatches: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    stored_bytes: Counter,
    stored_files: Counter,
    store_duration: Histogram,
    duplicates: Counter,
    rejected: Counter,
    unavailable: Counter,
    in_flight: Gauge,
    stations: Family<StationLabels, Gauge>,
    stations_tracked: Gauge,
    stations_untracked: Counter,
    /// Serialises the cap check of `stations` with the insert.
    station_cap: Mutex<()>,
    catalog_pending: Gauge,
    body_memory: Gauge,
    connections_open: Gauge,
    connections_refused: Counter,
    rejected_not_kept: Counter,
    commands_resent: Counter,
    catalog_errors: Counter<u64, AtomicU64>,
    group_flushes: Counter<u64, AtomicU64>,
    station_battery: Family<StationLabels, Gauge<f64, AtomicU64>>,
    station_gsm: Family<StationLabels, Gauge<f64, AtomicU64>>,
    station_age: Family<StationLabels, Gauge>,
    station_late: Family<StationLabels, Gauge>,
    export_lag: Family<FeedLabels, Gauge<f64, AtomicU64>>,
    stations_late: Gauge,
    station_info: Family<StationInfoLabels, Gauge>,
    station_alarms: Family<StationLabels, Counter>,
    /// The catalog's alarm count per station last seen: the counter grows by the difference.
    alarms_seen: Mutex<std::collections::HashMap<String, u64>>,
    refused: Family<RefusedLabels, Counter>,
    free_bytes: Family<DirLabels, Gauge>,
    free_inodes: Family<DirLabels, Gauge>,
    min_free: (Gauge, Gauge),
    max_stations: usize,
    replica: Option<ReplicaFamilies>,
    verify: VerifyFamilies,
    /// With a shared catalog: degraded (0/1), this host's rows not yet in it.
    shared: Option<(Gauge, Gauge)>,
}

/// Decrements the in-flight gauge when the request is done, however it ends.
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl Metrics {
    /// `group` says whether group commit runs (its flush counter is shown
    /// then), `replica` whether there is one (its families are shown then).
    /// `shared` whether the catalog is shared (PostgreSQL).
    pub(crate) fn new(max_stations: usize, group: bool, replica: bool, shared: bool) -> Metrics {
        let mut registry = Registry::default();
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("dlsrv_build_info", "dlsrv's version", build);
        let started = Gauge::<i64>::default();
        started.set(Utc::now().timestamp());
        registry.register(
            "dlsrv_start_time_seconds",
            "When this process started (Unix time)",
            started,
        );
        let m = Metrics {
            requests: Family::default(),
            stored_bytes: Counter::default(),
            stored_files: Counter::default(),
            store_duration: Histogram::new(BUCKETS),
            duplicates: Counter::default(),
            rejected: Counter::default(),
            unavailable: Counter::default(),
            in_flight: Gauge::default(),
            stations: Family::default(),
            stations_tracked: Gauge::default(),
            stations_untracked: Counter::default(),
            station_cap: Mutex::new(()),
            catalog_pending: Gauge::default(),
            body_memory: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            rejected_not_kept: Counter::default(),
            commands_resent: Counter::default(),
            catalog_errors: Counter::default(),
            group_flushes: Counter::default(),
            station_battery: Family::default(),
            station_gsm: Family::default(),
            station_age: Family::default(),
            station_late: Family::default(),
            export_lag: Family::default(),
            stations_late: Gauge::default(),
            station_info: Family::default(),
            station_alarms: Family::default(),
            alarms_seen: Mutex::default(),
            refused: Family::default(),
            free_bytes: Family::default(),
            free_inodes: Family::default(),
            min_free: Default::default(),
            max_stations,
            registry,
            replica: replica.then(ReplicaFamilies::default),
            verify: VerifyFamilies::default(),
            shared: shared.then(<(Gauge, Gauge)>::default),
        };
        let mut registry = m.registry;
        // Counters get their `_total` suffix from the crate.
        registry.register(
            "dlsrv_requests",
            "Requests answered, by action and status",
            m.requests.clone(),
        );
        registry.register(
            "dlsrv_stored_files",
            "Bodies made durable in the archive",
            m.stored_files.clone(),
        );
        registry.register(
            "dlsrv_stored_bytes",
            "Bytes made durable in the archive",
            m.stored_bytes.clone(),
        );
        registry.register(
            "dlsrv_store_duration_seconds",
            "Time from a complete body to a durable file",
            m.store_duration.clone(),
        );
        registry.register(
            "dlsrv_duplicates",
            "Identical bodies answered 200 without storing them again",
            m.duplicates.clone(),
        );
        registry.register(
            "dlsrv_rejected",
            "Malformed bodies answered 400 and kept under state_dir/rejected",
            m.rejected.clone(),
        );
        registry.register(
            "dlsrv_unavailable",
            "Requests answered 503 (nothing stored; the logger retries)",
            m.unavailable.clone(),
        );
        registry.register(
            "dlsrv_requests_in_flight",
            "Requests being handled now",
            m.in_flight.clone(),
        );
        registry.register(
            "dlsrv_station_last_transmission_seconds",
            "Last transmission of each station (Unix time)",
            m.stations.clone(),
        );
        registry.register(
            "dlsrv_stations_tracked",
            "Stations in the gauge above",
            m.stations_tracked.clone(),
        );
        registry.register(
            "dlsrv_stations_untracked",
            "Transmissions of stations beyond metrics_max_stations",
            m.stations_untracked.clone(),
        );
        registry.register(
            "dlsrv_catalog_pending_rows",
            "Catalog rows queued but not yet written",
            m.catalog_pending.clone(),
        );
        registry.register(
            "dlsrv_catalog_write_errors",
            "Catalog rows that failed to be written (each try; the archive is unaffected)",
            m.catalog_errors.clone(),
        );
        registry.register(
            "dlsrv_body_memory_bytes",
            "Bytes of request bodies held in memory (of max_inflight_body_bytes)",
            m.body_memory.clone(),
        );
        registry.register(
            "dlsrv_connections_open",
            "Connections being served",
            m.connections_open.clone(),
        );
        registry.register(
            "dlsrv_connections_refused",
            "Connections answered 503 and closed at max_connections",
            m.connections_refused.clone(),
        );
        registry.register(
            "dlsrv_rejected_not_kept",
            "Refused bodies not kept: rejected_max_bytes reached",
            m.rejected_not_kept.clone(),
        );
        registry.register(
            "dlsrv_commands_resent",
            "Commands handed out again after command_ack_timeout_secs without an acknowledgement",
            m.commands_resent.clone(),
        );
        registry.register(
            "dlsrv_station_battery_volts",
            "Battery voltage of each station's newest data message that had one (catalog)",
            m.station_battery.clone(),
        );
        registry.register(
            "dlsrv_station_gsm_signal",
            "GSM signal quality of each station's newest StationInfo (catalog)",
            m.station_gsm.clone(),
        );
        registry.register(
            "dlsrv_station_data_age_seconds",
            "Seconds since each station's last data message (catalog)",
            m.station_age.clone(),
        );
        registry.register(
            "dlsrv_station_late",
            "1 when a station is late (as dlsrv status says), else 0",
            m.station_late.clone(),
        );
        registry.register(
            "dlsrv_stations_late",
            "Stations late now, of all the catalog knows",
            m.stations_late.clone(),
        );
        registry.register(
            "dlsrv_station_info",
            "1 per station with the name its newest data message gave (join on station for alert texts)",
            m.station_info.clone(),
        );
        registry.register(
            "dlsrv_station_alarms",
            "Alarm messages each station sent (catalog; grows when one arrives at any host)",
            m.station_alarms.clone(),
        );
        registry.register(
            "dlsrv_refused",
            "Requests refused, by status and reason (4xx: the client's mistake; 503: retry later)",
            m.refused.clone(),
        );
        registry.register(
            "dlsrv_free_bytes",
            "Bytes free for dlsrv on the file system of data_dir or state_dir",
            m.free_bytes.clone(),
        );
        registry.register(
            "dlsrv_free_inodes",
            "Inodes free on the file system of data_dir or state_dir (absent where there is no limit)",
            m.free_inodes.clone(),
        );
        registry.register(
            "dlsrv_min_free_bytes",
            "min_free_bytes: below it on either file system every store answers 503",
            m.min_free.0.clone(),
        );
        registry.register(
            "dlsrv_min_free_inodes",
            "min_free_inodes: below it on either file system every store answers 503",
            m.min_free.1.clone(),
        );
        registry.register(
            "dlsrv_export_lag_seconds",
            "Per export feed (dlsrv export --follow NAME): seconds since the oldest body it has not delivered was stored (0: none)",
            m.export_lag.clone(),
        );
        if let Some(r) = &m.replica {
            registry.register(
                "dlsrv_replica_pending_bodies",
                "Archived bodies not yet copied to the replica",
                r.pending.clone(),
            );
            registry.register(
                "dlsrv_replica_lag_seconds",
                "Seconds since the oldest body not yet in the replica was received (0: none waits)",
                r.lag.clone(),
            );
            registry.register(
                "dlsrv_replica_refused_bodies",
                "Bodies the replicator will not copy (an object with other bytes, a damaged local copy): see dlsrv verify --replica",
                r.refused.clone(),
            );
            registry.register(
                "dlsrv_replica_outage",
                "1 while the replicator cannot reach or write the replica",
                r.outage.clone(),
            );
            registry.register(
                "dlsrv_replica_errors",
                "The replicator's failures by kind (unreachable, timeout, denied, full, server, refused, conflict, local)",
                r.errors.clone(),
            );
            registry.register(
                "dlsrv_retention_removed_bodies",
                "Local files removed by retention",
                r.removed.clone(),
            );
        }
        if let Some((degraded, unpushed)) = &m.shared {
            registry.register(
                "dlsrv_catalog_degraded",
                "1 while the shared catalog (PostgreSQL) cannot be reached: bodies are stored and answered, their rows wait locally",
                degraded.clone(),
            );
            registry.register(
                "dlsrv_catalog_unpushed_rows",
                "This host's catalog rows not yet in the shared catalog (until the first connection after a start: all of its rows since the file was made)",
                unpushed.clone(),
            );
        }
        registry.register(
            "dlsrv_verify_last_run_timestamp_seconds",
            "When the last recorded dlsrv verify run ended (Unix time; 0: none yet)",
            m.verify.finished.clone(),
        );
        registry.register(
            "dlsrv_verify_checked_bodies",
            "Bodies the last recorded dlsrv verify run checked",
            m.verify.checked.clone(),
        );
        registry.register(
            "dlsrv_verify_mismatched_bodies",
            "Mismatches the last recorded dlsrv verify run found",
            m.verify.mismatches.clone(),
        );
        if group {
            registry.register(
                "dlsrv_group_commit_flushes",
                "File-system flushes of group commit",
                m.group_flushes.clone(),
            );
        }
        Metrics { registry, ..m }
    }

    /// The counter the catalog increments per row it failed to write.
    pub(crate) fn catalog_errors(&self) -> Counter<u64, AtomicU64> {
        self.catalog_errors.clone()
    }

    /// The counter group commit increments per flush.
    pub(crate) fn group_flushes(&self) -> Counter<u64, AtomicU64> {
        self.group_flushes.clone()
    }

    pub(crate) fn start_request(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(self)
    }

    /// One answered request; `action` is `"none"` outside the OTT endpoint.
    pub(crate) fn request(&self, action: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { action, status })
            .inc();
        if status == 503 {
            self.unavailable.inc();
        }
    }

    /// A body made durable, and how long that took after it was received.
    pub(crate) fn stored(&self, bytes: u64, took: Duration) {
        self.stored_files.inc();
        self.stored_bytes.inc_by(bytes);
        self.store_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.inc();
    }

    pub(crate) fn rejected(&self) {
        self.rejected.inc();
    }

    pub(crate) fn rejected_not_kept(&self) {
        self.rejected_not_kept.inc();
    }

    pub(crate) fn command_resent(&self) {
        self.commands_resent.inc();
    }

    /// Connections open now.
    pub(crate) fn connections(&self, open: usize) {
        self.connections_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// A transmission (stored or duplicate) from `station` at `at`.
    pub(crate) fn seen(&self, station: &str, at: DateTime<Utc>) {
        let labels = StationLabels {
            station: station.to_owned(),
        };
        let _cap = self.station_cap.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = self.stations.get(&labels) {
            last.set(last.get().max(at.timestamp()));
        } else if usize::try_from(self.stations_tracked.get()).unwrap_or(usize::MAX)
            < self.max_stations
        {
            self.stations.get_or_create(&labels).set(at.timestamp());
            self.stations_tracked.inc();
        } else {
            self.stations_untracked.inc();
        }
    }

    /// The catalog's view of the stations, for the scrape (at most
    /// `metrics_max_stations` get gauges of their own; late ones first).
    pub(crate) fn stations_seen(&self, stations: &[crate::status::StationStatus]) {
        for family in [&self.station_age, &self.station_late] {
            family.clear();
        }
        self.station_battery.clear();
        self.station_gsm.clear();
        self.stations_late
            .set(i64::try_from(stations.iter().filter(|s| s.late).count()).unwrap_or(i64::MAX));
        for s in stations.iter().take(self.max_stations) {
            let labels = StationLabels {
                station: s.station_id.clone(),
            };
            if let Some(v) = s.battery_voltage {
                self.station_battery.get_or_create(&labels).set(v);
            }
            if let Some(v) = s.gsm_signal {
                self.station_gsm.get_or_create(&labels).set(v);
            }
            if let Some(age) = s.age_secs {
                self.station_age.get_or_create(&labels).set(age);
            }
            self.station_late
                .get_or_create(&labels)
                .set(i64::from(s.late));
        }
    }

    /// A refused request: its status and the reason's short name.
    pub(crate) fn refused(&self, status: u16, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { status, reason })
            .inc();
    }

    /// Each station's name and its count of alarms in the catalog.
    pub(crate) fn station_details_seen(
        &self,
        names: &[(String, String)],
        alarms: &[(String, u64)],
    ) {
        self.station_info.clear();
        for (station, name) in names.iter().take(self.max_stations) {
            self.station_info
                .get_or_create(&StationInfoLabels {
                    station: station.clone(),
                    name: name.clone(),
                })
                .set(1);
        }
        let mut seen = self.alarms_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (station, n) in alarms {
            let labels = StationLabels {
                station: station.clone(),
            };
            let before = seen.get(station).copied();
            if before.is_none()
                && self.station_alarms.get(&labels).is_none()
                && seen.len() >= self.max_stations
            {
                continue;
            }
            // Fewer than before (a catalog rebuilt): count anew from there.
            let grew = match before {
                Some(b) if *n >= b => n - b,
                Some(_) => 0,
                None => *n,
            };
            self.station_alarms.get_or_create(&labels).inc_by(grew);
            seen.insert(station.clone(), *n);
        }
    }

    /// Room on the file systems, for the scrape.
    pub(crate) fn room_seen(&self, room: &[RoomSeen], min_bytes: u64, min_inodes: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.min_free.0.set(gauge(min_bytes));
        self.min_free.1.set(gauge(min_inodes));
        for r in room {
            let labels = DirLabels { dir: r.dir };
            self.free_bytes
                .get_or_create(&labels)
                .set(gauge(r.free_bytes));
            if let Some(inodes) = r.free_inodes {
                self.free_inodes.get_or_create(&labels).set(gauge(inodes));
            }
        }
    }

    /// The export feeds' lag, for the scrape.
    pub(crate) fn feeds_seen(&self, lags: &[(String, f64)]) {
        self.export_lag.clear();
        for (name, lag) in lags {
            self.export_lag
                .get_or_create(&FeedLabels { name: name.clone() })
                .set(*lag);
        }
    }

    /// The replica as the catalog and the replicator tell it, for the scrape.
    pub(crate) fn replica_seen(&self, seen: &ReplicaSeen) {
        let Some(r) = &self.replica else {
            return;
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        r.pending.set(gauge(seen.pending));
        r.lag.set(seen.lag_secs);
        r.refused.set(gauge(seen.refused));
        r.outage.set(i64::from(seen.outage));
        let mut last = r.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, n) in &seen.errors {
            let before = last
                .0
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            // Fewer than before: the replicator restarted and counts anew.
            let grew = if *n >= before { n - before } else { *n };
            r.errors
                .get_or_create(&KindLabels { kind: kind.clone() })
                .inc_by(grew);
        }
        let grew = if seen.removed >= last.1 {
            seen.removed - last.1
        } else {
            seen.removed
        };
        r.removed.inc_by(grew);
        *last = (seen.errors.clone(), seen.removed);
    }

    /// The shared catalog's health, for the scrape.
    pub(crate) fn shared_seen(&self, degraded: bool, unpushed: i64) {
        if let Some((d, u)) = &self.shared {
            d.set(i64::from(degraded));
            u.set(unpushed);
        }
    }

    /// The last recorded verify run, for the scrape.
    pub(crate) fn verify_seen(&self, seen: &VerifySeen) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.verify.finished.set(seen.finished);
        self.verify.checked.set(gauge(seen.checked));
        self.verify.mismatches.set(gauge(seen.mismatches));
    }

    /// The exposition text; `catalog_pending` and `body_memory` are read at scrape time.
    pub(crate) fn render(&self, catalog_pending: usize, body_memory: u64) -> String {
        self.catalog_pending
            .set(i64::try_from(catalog_pending).unwrap_or(i64::MAX));
        self.body_memory
            .set(i64::try_from(body_memory).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_and_caps_stations() {
        let m = Metrics::new(2, true, false, false);
        {
            let _a = m.start_request();
            assert!(m.render(0, 0).contains("dlsrv_requests_in_flight 1"));
        }
        m.request("senddata", 200);
        m.request("senddata", 200);
        m.request("senddata", 503);
        m.stored(44_000, Duration::from_millis(3));
        m.duplicate();
        m.rejected();
        m.group_flushes().inc();
        for s in ["a", "b", "c"] {
            m.seen(s, Utc::now());
        }
        let text = m.render(3, 4096);
        for line in [
            "dlsrv_requests_total{action=\"senddata\",status=\"200\"} 2",
            "dlsrv_requests_total{action=\"senddata\",status=\"503\"} 1",
            "dlsrv_unavailable_total 1",
            "dlsrv_stored_bytes_total 44000",
            "dlsrv_duplicates_total 1",
            "dlsrv_rejected_total 1",
            "dlsrv_body_memory_bytes 4096",
            "dlsrv_connections_refused_total 0",
            "dlsrv_rejected_not_kept_total 0",
            "dlsrv_commands_resent_total 0",
            "dlsrv_requests_in_flight 0",
            "dlsrv_store_duration_seconds_bucket{le=\"0.002\"} 0",
            "dlsrv_store_duration_seconds_bucket{le=\"0.005\"} 1",
            "dlsrv_store_duration_seconds_count 1",
            "dlsrv_stations_tracked 2",
            "dlsrv_stations_untracked_total 1",
            "dlsrv_catalog_pending_rows 3",
            "dlsrv_group_commit_flushes_total 1",
            "dlsrv_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Every sample belongs to a declared family.
        for sample in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} has no TYPE in\n{text}"
            );
        }
        assert!(
            !Metrics::new(1, false, false, false)
                .render(0, 0)
                .contains("group_commit")
        );
    }

    #[test]
    fn alert_inputs_refusals_alarms_names_and_room() {
        let m = Metrics::new(2, false, false, false);
        m.refused(503, "disk_full");
        m.refused(400, "malformed");
        m.refused(400, "malformed");
        let names = [
            ("0001".to_owned(), "Pegel Nord".to_owned()),
            ("0002".to_owned(), String::new()),
            ("0003".to_owned(), "beyond the cap".to_owned()),
        ];
        m.station_details_seen(&names, &[("0001".to_owned(), 3)]);
        // Two more alarms; a third station beyond metrics_max_stations
        // gets no series of its own.
        m.station_details_seen(
            &names,
            &[
                ("0001".to_owned(), 5),
                ("0002".to_owned(), 1),
                ("0003".to_owned(), 9),
            ],
        );
        // A catalog rebuilt with fewer: the counter never goes back.
        m.station_details_seen(&names, &[("0001".to_owned(), 4)]);
        m.room_seen(
            &[
                RoomSeen {
                    dir: "data_dir",
                    free_bytes: 5_000,
                    free_inodes: Some(70),
                },
                RoomSeen {
                    dir: "state_dir",
                    free_bytes: 6_000,
                    free_inodes: None,
                },
            ],
            1_000,
            10,
        );
        let text = m.render(0, 0);
        for line in [
            "dlsrv_refused_total{status=\"503\",reason=\"disk_full\"} 1",
            "dlsrv_refused_total{status=\"400\",reason=\"malformed\"} 2",
            "dlsrv_station_info{station=\"0001\",name=\"Pegel Nord\"} 1",
            "dlsrv_station_info{station=\"0002\",name=\"\"} 1",
            "dlsrv_station_alarms_total{station=\"0001\"} 5",
            "dlsrv_station_alarms_total{station=\"0002\"} 1",
            "dlsrv_free_bytes{dir=\"data_dir\"} 5000",
            "dlsrv_free_bytes{dir=\"state_dir\"} 6000",
            "dlsrv_free_inodes{dir=\"data_dir\"} 70",
            "dlsrv_min_free_bytes 1000",
            "dlsrv_min_free_inodes 10",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("0003"), "beyond the cap: {text}");
        assert!(!text.contains("dlsrv_free_inodes{dir=\"state_dir\"}"));
    }
}
