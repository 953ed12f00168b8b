//! Reading the archive back from the replica.
//!
//! - `dlsrv restore --from-replica [--station ID…] [--from T] [--to T]`
//!   brings bodies back into the local archive, byte-exact: each object is
//!   read with its S3 checksum and checked against it before it is written
//!   (temp file, fsync, rename without overwrite, fsync of the directory).
//!   A body already on the disk is compared, never overwritten. Then `dlsrv
//!   reindex` rebuilds the catalog.
//! - `dlsrv reindex --from-replica` adds, after the archive's own rows, a
//!   row for every body only the replica holds (retention took it off the
//!   disk), read and checked the same way.
//!
//! Both walk the bucket a page of 1,000 keys at a time (bounded memory for
//! any archive) and fetch a page's objects 16 at a time.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use rusqlite::params;

use crate::config::{Config, ConfigArg};
use crate::durable::{DurableDir, Options};
use crate::layout;
use crate::replica::{Blocking, Store, StoreError};

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Read the bodies from the configured [replica] (the one source there is).
    #[arg(long, required = true)]
    from_replica: bool,
    /// Only these stations (repeat for several).
    #[arg(long = "station", value_name = "ID")]
    stations: Vec<String>,
    /// Only bodies received at or after T (RFC 3339, or a date).
    #[arg(long, value_name = "T", value_parser = crate::layout::parse_from)]
    from: Option<DateTime<Utc>>,
    /// Only bodies received before T (RFC 3339, or a date: up to its end).
    #[arg(long, value_name = "T", value_parser = crate::layout::parse_to)]
    to: Option<DateTime<Utc>>,
}

/// Objects fetched at once.
const AT_ONCE: usize = 16;

/// What became of one object.
enum Outcome {
    Restored(u64),
    Present,
    Failed(String),
}

/// `dlsrv restore --from-replica`: 0 when every wanted body is on the
/// local disk afterwards, 1 when some could not be restored.
pub(crate) fn run(config: &Config, args: &RestoreArgs) -> anyhow::Result<u8> {
    let replica =
        Blocking::of(config)?.context("--from-replica: the configuration has no [replica]")?;
    let archive = DurableDir::open(
        &config.data_dir,
        Options {
            temp_suffix: &config.temp_suffix,
            group: None,
            follow_links: false,
            what: "data_dir",
        },
    )?;
    let archived = crate::request::Action::archived();
    let (mut restored, mut bytes, mut present, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    replica.each_page(|page| {
        let mut wanted = Vec::new();
        for (rel, _) in page {
            match layout::parse_archive_path(&rel) {
                Some((action, station, t))
                    if archived.contains(&action)
                        && (args.stations.is_empty()
                            || args.stations.iter().any(|s| s == station))
                        && args.from.is_none_or(|f| t >= f)
                        && args.to.is_none_or(|to| t < to) =>
                {
                    wanted.push(rel);
                }
                Some(_) => {}
                None => other += 1,
            }
        }
        let outcomes = replica.run(restore_page(&replica.store, &archive, wanted));
        for (rel, outcome) in outcomes {
            match outcome {
                Outcome::Restored(n) => {
                    restored += 1;
                    bytes += n;
                }
                Outcome::Present => present += 1,
                Outcome::Failed(why) => failed.push((rel, why)),
            }
        }
        eprint!("\rdlsrv restore: {restored} restored, {present} already here …");
        Ok(())
    })?;
    eprintln!();
    for (rel, why) in &failed {
        println!("{rel}: {why}");
    }
    eprintln!(
        "dlsrv restore: {restored} bodies restored ({bytes} bytes), {present} already on the disk, \
         {} failed, {other} objects that are not archive paths left alone, from {}; now run `dlsrv reindex`",
        failed.len(),
        replica.store.url()
    );
    Ok(if failed.is_empty() { 0 } else { 1 })
}

async fn restore_page(
    store: &Store,
    archive: &DurableDir,
    rels: Vec<String>,
) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    for chunk in rels.chunks(AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for rel in chunk.iter().cloned() {
            let store = store.clone();
            let local = layout::read_body(archive.root(), &rel);
            tasks.spawn(async move {
                let fetched = match local {
                    // On the disk already: the same bytes, or a conflict.
                    Ok(body) => match store.head(&rel).await {
                        Ok(Some(head)) if crate::replica::matches(&head, &body) == Some(true) => {
                            Ok(None)
                        }
                        Ok(_) => Err(StoreError::new(
                            crate::replica::Kind::Conflict,
                            "the local file differs from the replica's object; left as it is",
                        )),
                        Err(e) => Err(e),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        store.get(&rel).await.map(Some)
                    }
                    // There, but unreadable: neither compared nor replaced.
                    Err(e) => Err(StoreError::new(
                        crate::replica::Kind::Local,
                        format!("the local file cannot be read: {e}"),
                    )),
                };
                (rel, fetched)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((rel, fetched)) = joined else { continue };
            let outcome = match fetched {
                Ok(None) => Outcome::Present,
                Ok(Some(None)) => Outcome::Failed("gone from the replica meanwhile".into()),
                Ok(Some(Some(body))) => match write(archive, &rel, &body) {
                    Ok(()) => Outcome::Restored(body.len() as u64),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Outcome::Present,
                    Err(e) => Outcome::Failed(format!("cannot write it: {e}")),
                },
                Err(e) => Outcome::Failed(e.to_string()),
            };
            out.push((rel, outcome));
        }
    }
    out
}

/// Writes a body at its archive path, durably, never over a file.
fn write(archive: &DurableDir, rel: &str, body: &[u8]) -> std::io::Result<()> {
    let path = Path::new(rel);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an archive path",
        ));
    };
    archive.create_new(dir, name, body).map(|_| ())
}

/// `dlsrv reindex --from-replica`, after the archive's own rows: a row for
/// each body only the replica holds. Returns how many were added.
pub(crate) fn index_remote(config: &Config, catalog_path: &Path) -> anyhow::Result<u64> {
    let replica =
        Blocking::of(config)?.context("--from-replica: the configuration has no [replica]")?;
    let mut conn = crate::catalog::open_writable(catalog_path)?;
    let archived = crate::request::Action::archived();
    let mut added = 0;
    replica.each_page(|page| {
        let mut missing = Vec::new();
        {
            let mut known = conn.prepare_cached("SELECT 1 FROM transmissions WHERE path = ?1")?;
            for (rel, _) in page {
                let Some((action, _, _)) = layout::parse_archive_path(&rel) else {
                    continue;
                };
                if archived.contains(&action) && !known.exists(params![rel])? {
                    missing.push(rel);
                }
            }
        }
        let fetched = replica.run(fetch_all(&replica.store, missing));
        let now = layout::rfc3339(Utc::now());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (rel, got) in fetched {
            let body = match got {
                Ok(Some(body)) => body,
                Ok(None) => continue,
                Err(e) => anyhow::bail!("cannot read {rel} from the replica: {e}"),
            };
            let Some((action, station, t)) = layout::parse_archive_path(&rel) else {
                continue;
            };
            let row = crate::indexer::row_of(
                action.to_owned(),
                station.to_owned(),
                t,
                rel.clone(),
                &body,
            );
            crate::catalog::write_rows(&tx, [&row], false, &now)?;
            tx.execute(
                "UPDATE transmissions SET replicated_utc = ?2, removed_utc = ?2 WHERE path = ?1",
                params![rel, now],
            )?;
            added += 1;
        }
        tx.commit().context("cannot commit catalog rows")?;
        Ok(())
    })?;
    Ok(added)
}

async fn fetch_all(
    store: &Store,
    rels: Vec<String>,
) -> Vec<(String, Result<Option<bytes::Bytes>, StoreError>)> {
    let mut out = Vec::new();
    for chunk in rels.chunks(AT_ONCE) {
        let mut tasks = tokio::task::JoinSet::new();
        for rel in chunk.iter().cloned() {
            let store = store.clone();
            tasks.spawn(async move {
                let got = store.get(&rel).await;
                (rel, got)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok(r) = joined {
                out.push(r);
            }
        }
    }
    out
}
