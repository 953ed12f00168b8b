//! `dlsrv verify [--since T] [--sample PERCENT] [--replica]`: reads archived
//! bodies and checks each against its catalog row (size and SHA-256: bit
//! rot, truncation, a file changed or removed behind dlsrv's back), and
//! with `--replica` that the replica holds every replicated body with the
//! same checksum (`HEAD` with checksum mode; a body uploaded in parts is
//! compared by its bytes). Bodies the replicator refused (`replica_error`)
//! are named too.
//!
//! Read-only: it never repairs. Exit 0 when everything checked matches,
//! 1 with a line per mismatch on standard output. `--record` (the weekly
//! timer's run) keeps the run's figures in `<state_dir>/verify-last.json`
//! for `/metrics`; nothing else is written.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::places::{self, Placed};
use crate::config::{Config, ConfigArg};
use crate::durable::AtomicFile;
use crate::layout;
use crate::replica::{Blocking, Store};

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Only bodies received at or after T (RFC 3339, or a date).
    #[arg(long, value_name = "T", value_parser = crate::layout::parse_from)]
    since: Option<DateTime<Utc>>,
    /// Check about PERCENT of the bodies (chosen at random each run).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    sample: Option<f64>,
    /// Also check the replica: every replicated body's object, same checksum.
    #[arg(long)]
    replica: bool,
    /// `--replica` when the configuration has a [replica] (the timer's unit).
    #[arg(long, conflicts_with = "replica")]
    replica_if_configured: bool,
    /// Keep this run's figures in state_dir for /metrics (the timer's run).
    #[arg(long)]
    record: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentage in (0, 100]")),
    }
}

/// The figures of the last recorded run (`<state_dir>/verify-last.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LastRun {
    pub(crate) finished_utc: String,
    pub(crate) checked: u64,
    pub(crate) mismatches: u64,
    pub(crate) sample_percent: f64,
    pub(crate) replica: bool,
    pub(crate) seconds: f64,
}

pub(crate) fn read_last(state_dir: &Path) -> Option<LastRun> {
    let bytes = std::fs::read(state_dir.join(layout::VERIFY_LAST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// One finding.
struct Mismatch {
    path: String,
    what: String,
}

/// Bodies read from the catalog at a time.
const PAGE: usize = 2_000;
/// Requests to the replica at once.
const AT_ONCE: usize = 16;

/// `dlsrv verify`: 0 when all match, 1 when something does not.
pub(crate) fn run(config: &Config, args: &VerifyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let Some(conn) = crate::status::open_catalog(&config.state_dir)? else {
        anyhow::bail!(
            "no catalog in {}: nothing to verify against (run the service, or `dlsrv reindex`)",
            config.state_dir.display()
        );
    };
    let replica = match (args.replica, args.replica_if_configured, Store::of(config)?) {
        (true, _, None) => anyhow::bail!("--replica: the configuration has no [replica]"),
        (true, _, Some(store)) | (_, true, Some(store)) => Some(Blocking::new(store)?),
        _ => None,
    };
    let seed = seed();
    let percent = args.sample.unwrap_or(100.0);
    let since = args.since.map(layout::rfc3339);
    let mut found: Vec<Mismatch> = Vec::new();
    let (mut checked, mut local, mut remote) = (0u64, 0u64, 0u64);
    let mut after = 0;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    loop {
        let page = places::all_after(&conn, since.as_deref(), after, PAGE)
            .context("cannot read the catalog")?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let page: Vec<Placed> = page
            .into_iter()
            .filter(|r| sampled(&r.path, seed, percent))
            .collect();
        checked += page.len() as u64;
        // The local bodies, read and hashed by several threads.
        let on_disk: Vec<&Placed> = page.iter().filter(|r| !r.removed).collect();
        local += on_disk.len() as u64;
        let next = Mutex::new(on_disk.iter());
        let local_found = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let Some(row) = next.lock().unwrap_or_else(|e| e.into_inner()).next()
                        else {
                            break;
                        };
                        if let Some(m) = check_local(&config.data_dir, row) {
                            local_found
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(m);
                        }
                    }
                });
            }
        });
        found.extend(local_found.into_inner().unwrap_or_else(|e| e.into_inner()));
        if let Some(replica) = &replica {
            let in_replica: Vec<Placed> = page.iter().filter(|r| r.replicated).cloned().collect();
            remote += in_replica.len() as u64;
            found.extend(replica.run(check_replica(&replica.store, &config.data_dir, in_replica)));
        }
    }
    if replica.is_some() {
        for (path, error) in places::refused(&conn).context("cannot read the catalog")? {
            found.push(Mismatch {
                path,
                what: format!("not replicated: {error}"),
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = std::io::stdout().lock();
    for m in &found {
        writeln!(out, "{}: {}", m.path, m.what)?;
    }
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "dlsrv verify: {checked} bodies checked ({local} on the local disk{}), {} mismatches, in {seconds:.1} s",
        if replica.is_some() {
            format!(", {remote} in the replica")
        } else {
            String::new()
        },
        found.len()
    );
    if args.record {
        let last = LastRun {
            finished_utc: layout::rfc3339(Utc::now()),
            checked,
            mismatches: found.len() as u64,
            sample_percent: percent,
            replica: replica.is_some(),
            seconds,
        };
        let path = config.state_dir.join(layout::VERIFY_LAST);
        let mut file = AtomicFile::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(&serde_json::to_vec_pretty(&last)?)?;
        file.commit()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if found.is_empty() { 0 } else { 1 })
}

/// A seed for this run's sample.
fn seed() -> u64 {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    u64::from_le_bytes(
        Sha256::digest(format!("{nanos} {}", std::process::id()))[..8]
            .try_into()
            .unwrap_or_default(),
    )
}

/// Whether `path` is in this run's sample of `percent`.
fn sampled(path: &str, seed: u64, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(path.as_bytes());
    let digest = hasher.finalize();
    let x = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default());
    (x as f64 / u64::MAX as f64) * 100.0 < percent
}

fn check_local(data_dir: &Path, row: &Placed) -> Option<Mismatch> {
    let what = match layout::read_body(data_dir, &row.path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "missing from the local disk".to_owned()
        }
        Err(e) => format!("cannot be read: {e}"),
        Ok(body) if body.len() as u64 != row.bytes => format!(
            "size {} bytes, the catalog says {} (truncated or changed)",
            body.len(),
            row.bytes
        ),
        Ok(body) => {
            let sha = hex::encode(Sha256::digest(&body));
            if sha == row.sha256 {
                return None;
            }
            format!(
                "sha256 {sha}, the catalog says {} (changed on disk)",
                row.sha256
            )
        }
    };
    Some(Mismatch {
        path: row.path.clone(),
        what,
    })
}

async fn check_replica(store: &Store, data_dir: &Path, rows: Vec<Placed>) -> Vec<Mismatch> {
    let mut found = Vec::new();
    for chunk in rows.chunks(AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for row in chunk {
            let (store, data_dir, row) = (store.clone(), data_dir.to_path_buf(), row.clone());
            tasks.spawn(async move { replica_mismatch(&store, &data_dir, &row).await });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Some(m)) => found.push(m),
                Ok(None) => {}
                Err(e) => found.push(Mismatch {
                    path: String::new(),
                    what: format!("a check failed: {e}"),
                }),
            }
        }
    }
    found
}

async fn replica_mismatch(store: &Store, data_dir: &Path, row: &Placed) -> Option<Mismatch> {
    let key = store.key(&row.path);
    let what = match store.head(&row.path).await {
        Err(e) => format!("cannot look at {key} in the replica: {e}"),
        Ok(None) => format!("{key} is missing from the replica"),
        Ok(Some(head)) if head.size != row.bytes => format!(
            "{key} in the replica has {} bytes, the catalog says {}",
            head.size, row.bytes
        ),
        Ok(Some(head)) => {
            let expected = match crate::replica::checksum_of_sha(&row.sha256, row.bytes) {
                Some(c) => Some(c),
                // A body in parts: from the local bytes, else by reading it.
                None => layout::read_body(data_dir, &row.path)
                    .ok()
                    .filter(|b| hex::encode(Sha256::digest(b)) == row.sha256)
                    .map(|b| crate::replica::checksum_of(&b)),
            };
            match (expected, head.checksum) {
                (Some(e), Some(got)) if e == got => return None,
                (Some(e), Some(got)) => format!(
                    "{key} in the replica has checksum {got}, the body's is {e} (other bytes)"
                ),
                (_, _) => match store.get(&row.path).await {
                    Ok(Some(b)) if hex::encode(Sha256::digest(&b)) == row.sha256 => return None,
                    Ok(Some(_)) => format!("{key} in the replica holds other bytes"),
                    Ok(None) => format!("{key} is missing from the replica"),
                    Err(e) => format!("{key} cannot be read from the replica: {e}"),
                },
            }
        }
    };
    Some(Mismatch {
        path: row.path.clone(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_takes_about_its_share() {
        let seed = 42;
        let n = (0..10_000)
            .filter(|i| sampled(&format!("senddata/2026/12/05/s_{i}"), seed, 10.0))
            .count();
        assert!((800..1200).contains(&n), "{n} of 10000 at 10 %");
        assert!(sampled("x", seed, 100.0));
        assert!(parse_percent("0").is_err() && parse_percent("101").is_err());
        assert_eq!(parse_percent("5%"), Ok(5.0));
    }
}
