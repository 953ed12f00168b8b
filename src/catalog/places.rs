//! Where each body lives (schema 4): on the local disk, in the replica, or
//! both. A row's `replicated_utc` says when the replica was seen to hold
//! the same bytes, `removed_utc` when retention took the local file away,
//! `replica_error` why the replicator will not copy it (an object with
//! other bytes, a local file that differs from its row).
//!
//! | replicated_utc | removed_utc | the body is                         |
//! |----------------|-------------|-------------------------------------|
//! | NULL           | NULL        | local only (waiting, or no replica) |
//! | set            | NULL        | local and in the replica            |
//! | set            | set         | in the replica only                 |
//! | NULL           | set         | gone (`retention_days`, no replica) |
//!
//! A row with a `host` is another host's (pulled from a shared catalog,
//! [`super::shared`]): that host copies, keeps and checks its own bodies;
//! here they are read from the replica.

use rusqlite::{Connection, params};

/// A body to copy, or to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) id: i64,
    pub(crate) station_id: String,
    pub(crate) received_utc: String,
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    pub(crate) replicated: bool,
    pub(crate) removed: bool,
}

const COLUMNS: &str = "id, station_id, received_utc, path, bytes, sha256,
    replicated_utc IS NOT NULL, removed_utc IS NOT NULL";

fn placed(r: &rusqlite::Row<'_>) -> rusqlite::Result<Placed> {
    Ok(Placed {
        id: r.get(0)?,
        station_id: r.get(1)?,
        received_utc: r.get(2)?,
        path: r.get(3)?,
        bytes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        sha256: r.get(5)?,
        replicated: r.get(6)?,
        removed: r.get(7)?,
    })
}

/// Up to `limit` local bodies not yet in the replica, after id `after`,
/// oldest first.
pub(crate) fn unreplicated(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Placed>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM transmissions
         WHERE replicated_utc IS NULL AND removed_utc IS NULL AND replica_error IS NULL AND id > ?1
           AND host IS NULL
         ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        placed,
    )?;
    rows.collect()
}

/// Records that the replica holds these bodies.
pub(crate) fn mark_replicated(
    conn: &mut Connection,
    ids: &[i64],
    now: &str,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE transmissions SET replicated_utc = ?2, replica_error = NULL WHERE id = ?1",
        )?;
        for id in ids {
            stmt.execute(params![id, now])?;
        }
    }
    tx.commit()
}

/// Records why a body is not copied (it stays local and is reported).
pub(crate) fn mark_error(conn: &Connection, id: i64, error: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE transmissions SET replica_error = ?2 WHERE id = ?1",
        params![id, error],
    )?;
    Ok(())
}

/// Records that a body's local file is (about to be) removed.
pub(crate) fn mark_removed(conn: &Connection, id: i64, now: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE transmissions SET removed_utc = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// What waits for the replica.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Backlog {
    /// Local bodies not yet copied.
    pub(crate) pending: u64,
    /// When the oldest of them was received (RFC 3339).
    pub(crate) oldest: Option<String>,
    /// Bodies the replicator will not copy (`replica_error`).
    pub(crate) refused: u64,
}

pub(crate) fn backlog(conn: &Connection) -> rusqlite::Result<Backlog> {
    let (pending, oldest) = conn.query_row(
        "SELECT count(*), min(received_utc) FROM transmissions
         WHERE replicated_utc IS NULL AND removed_utc IS NULL AND replica_error IS NULL
           AND host IS NULL",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)),
    )?;
    let refused: i64 = conn.query_row(
        "SELECT count(*) FROM transmissions WHERE replica_error IS NOT NULL AND host IS NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(Backlog {
        pending: u64::try_from(pending).unwrap_or(0),
        oldest,
        refused: u64::try_from(refused).unwrap_or(0),
    })
}

/// The bodies the replicator refused, with why (for reports).
pub(crate) fn refused(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT path, replica_error FROM transmissions
         WHERE replica_error IS NOT NULL AND host IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Up to `limit` local bodies received before `before`, after id `after`
/// (retention's candidates; each is checked against its station's days).
pub(crate) fn local_before(
    conn: &Connection,
    before: &str,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Placed>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM transmissions
         WHERE removed_utc IS NULL AND received_utc < ?1 AND id > ?2 AND host IS NULL
         ORDER BY id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![before, after, i64::try_from(limit).unwrap_or(i64::MAX)],
        placed,
    )?;
    rows.collect()
}

/// Rows received at or after `since` (all with `None`), after id `after`.
pub(crate) fn all_after(
    conn: &Connection,
    since: Option<&str>,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Placed>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM transmissions
         WHERE id > ?1 AND received_utc >= ?2 AND host IS NULL ORDER BY id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![
            after,
            since.unwrap_or(""),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        placed,
    )?;
    rows.collect()
}

/// The data messages that are not on this disk (in the replica only, or
/// another host's), as (station, received, path), to `f` one at a time: an
/// export reads them from the replica.
pub(crate) fn each_remote_data(
    conn: &Connection,
    mut f: impl FnMut(String, String, String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT station_id, received_utc, path FROM transmissions
         WHERE ((removed_utc IS NOT NULL AND replicated_utc IS NOT NULL) OR host IS NOT NULL)
           AND action = 'senddata'",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        f(r.get(0)?, r.get(1)?, r.get(2)?)?;
    }
    Ok(())
}
