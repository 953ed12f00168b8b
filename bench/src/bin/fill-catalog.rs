//! fill-catalog: fills a catalog that `dlsrv reindex` created (so the schema
//! is dlsrv's own) with a synthetic history, for bench/status: STATIONS
//! stations, one data message every CYCLE seconds for DAYS days up to now,
//! each with its `transmissions` and `station_info` rows and the station's
//! `stations` row as dlsrv keeps it. A tenth of the stations stopped
//! sending 2 days ago (late). Written in time order, as the service writes
//! (no journal, one transaction per step), then switched to WAL as dlsrv
//! leaves it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use rusqlite::{Connection, params};

#[derive(Parser)]
struct Args {
    /// The catalog (`<state_dir>/catalog.sqlite3`, made by `dlsrv reindex`).
    catalog: std::path::PathBuf,
    #[arg(long, default_value_t = 10_000)]
    stations: u32,
    #[arg(long, default_value_t = 365)]
    days: u32,
    #[arg(long, default_value_t = 21_600)]
    cycle_secs: u64,
}

/// `2026-12-01T10:00:00.000000Z` for Unix time `t`, as dlsrv writes times.
fn rfc3339(t: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(t).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conn = Connection::open(&args.catalog).context("open the catalog")?;
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -2000000;",
    )?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let steps = u64::from(args.days) * 86_400 / args.cycle_secs;
    let started = Instant::now();
    let mut rows = 0u64;
    // In time order, all stations each step, as a running service writes:
    // the rows of one station are spread over the whole table.
    let mut last = vec![String::new(); args.stations as usize];
    for k in (0..steps).rev() {
        let tx = conn.unchecked_transaction()?;
        {
            let mut t_stmt = tx.prepare_cached(
                "INSERT INTO transmissions (station_id, action, received_utc, path, bytes, sha256, indexed_utc)
                 VALUES (?1, 'senddata', ?2, ?3, 44000, ?4, ?2)",
            )?;
            let mut i_stmt = tx.prepare_cached(
                "INSERT INTO station_info (id, station_id, received_utc, name, timezone, battery_voltage,
                   battery_source, gsm_signal, transmission_cycle_secs, firmware, n_values, n_errors)
                 VALUES (?1, ?2, ?3, ?4, '+01:00', ?5, 'StationInfo', ?6, ?7, 'V 2.10.4', 96, 0)",
            )?;
            for n in 0..args.stations {
                let station = format!("{n:010}");
                let t = now - k * args.cycle_secs - u64::from(n % 600);
                if n % 10 == 0 && t > now - 2 * 86_400 {
                    continue; // a late station
                }
                let received = rfc3339(t);
                let day = &received[..10];
                let path = format!(
                    "senddata/{}/{}/{}/{station}_{}",
                    &day[..4],
                    &day[5..7],
                    &day[8..10],
                    received[..26].replace(':', "+")
                );
                let sha = format!("{:064x}", u64::from(n) << 32 | k);
                t_stmt.execute(params![station, received, path, sha])?;
                let battery = 12.0 + (k % 20) as f64 / 20.0;
                i_stmt.execute(params![
                    tx.last_insert_rowid(),
                    station,
                    received,
                    format!("Station {n}"),
                    battery,
                    15 + (k % 5) as i64,
                    args.cycle_secs as i64
                ])?;
                rows += 1;
                last[n as usize] = received;
            }
        }
        tx.commit()?;
        if k % 100 == 0 {
            eprintln!(
                "fill-catalog: {rows} data messages, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let tx = conn.unchecked_transaction()?;
    for (n, last) in last.iter().enumerate() {
        tx.execute(
            "INSERT INTO stations (station_id, first_seen_utc, last_any_utc, last_seen_utc, channels, name, timezone,
               name_utc, firmware, gsm_signal, transmission_cycle_secs, info_utc, battery_voltage, battery_source, battery_utc)
             VALUES (?1, ?2, ?3, ?3, '[]', ?4, '+01:00', ?3, 'V 2.10.4', 17, ?5, ?3, 12.5, 'StationInfo', ?3)",
            params![format!("{n:010}"), rfc3339(now - steps * args.cycle_secs), last, format!("Station {n}"), args.cycle_secs as i64],
        )?;
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_checkpoint(TRUNCATE);")?;
    eprintln!(
        "fill-catalog: {} stations, {rows} data messages in {:.0} s",
        args.stations,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
