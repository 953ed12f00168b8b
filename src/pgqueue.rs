//! The command queue in the shared catalog (`catalog_url =
//! "postgresql://…"`): the same operations as [`crate::queue`]'s files, on
//! the tables `commands` and `command_acks`, so that every host hands out
//! and records the same queue.
//!
//! - A document is handed out **once across all hosts**: the oldest
//!   pending one is taken with `SELECT … FOR UPDATE SKIP LOCKED` and marked
//!   sent in the same transaction.
//! - An acknowledgement is recorded whichever host it reaches.
//! - A document sent and not acknowledged within `command_ack_timeout_secs`
//!   goes back to pending on the station's next `requestcommand`, at
//!   whichever host the logger reaches then.
//!
//! [`SharedQueue`] holds one connection per process, made again after an
//! error; while PostgreSQL cannot be reached, `requestcommand` answers the
//! empty 200 (nothing to hand out) and says so once in the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::layout;
use crate::queue::{AckOutcome, Entry, State, Taken, check_document};
use crate::request::StationId;
use crate::xml::Ack;

/// The queue's connection, shared by the requests of one process.
pub(crate) struct SharedQueue {
    url: String,
    client: Mutex<Option<postgres::Client>>,
    /// The last try failed (told once, and once when it works again).
    unreachable: AtomicBool,
}

impl std::fmt::Debug for SharedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedQueue({})",
            crate::config::without_password(&self.url)
        )
    }
}

impl SharedQueue {
    pub(crate) fn new(url: &str) -> SharedQueue {
        SharedQueue {
            url: url.to_owned(),
            client: Mutex::new(None),
            unreachable: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the connection (made, and the schema brought up to date,
    /// when there is none); an error drops it, to be made again next time.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| {
            if guard.is_none() {
                let mut client = crate::catalog::shared::connect(&self.url)?;
                crate::catalog::shared::migrate(&mut client)?;
                *guard = Some(client);
            }
            let client = guard.as_mut().context("the shared queue's connection")?;
            f(client)
        })();
        match &result {
            Ok(_) => {
                if self.unreachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!("shared command queue reachable again");
                }
            }
            Err(e) => {
                *guard = None;
                if !self.unreachable.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %format!("{e:#}"),
                        "shared command queue unreachable: requestcommand answers that nothing is queued, \
                         acknowledgements are answered 503 (the logger sends them again)");
                }
            }
        }
        result
    }
}

/// Queues `doc` for `station`; returns its id.
pub(crate) fn enqueue(
    client: &mut postgres::Client,
    station: &StationId,
    doc: &[u8],
    now: DateTime<Utc>,
    host: &str,
) -> anyhow::Result<String> {
    let summary = check_document(station, doc)?;
    let mut t = now;
    loop {
        let id = layout::command_id(t);
        let added = client.execute(
            "INSERT INTO commands (station_id, id, document, root, ack_ids, state, queued_by)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6) ON CONFLICT DO NOTHING",
            &[
                &station.as_str(),
                &id,
                &doc,
                &summary.root,
                &summary.ack_ids,
                &host,
            ],
        )?;
        if added == 1 {
            return Ok(id);
        }
        t += chrono::Duration::microseconds(1);
    }
}

/// Hands out the oldest pending document of `station` (see the module
/// docs); `None` when nothing is pending.
pub(crate) fn take_next(
    client: &mut postgres::Client,
    station: &str,
    now: DateTime<Utc>,
    ack_timeout: Duration,
) -> anyhow::Result<Option<Taken>> {
    let due = now
        - chrono::Duration::from_std(ack_timeout).unwrap_or_else(|_| chrono::Duration::days(36500));
    let mut tx = client.transaction()?;
    let overdue = tx.query(
        "UPDATE commands c SET state = 'pending'
         WHERE station_id = $1 AND state = 'sent' AND cardinality(ack_ids) > 0
           AND sent_utc[cardinality(sent_utc)] < $2
           AND NOT EXISTS (SELECT 1 FROM command_acks a WHERE a.station_id = c.station_id AND a.id = c.id)
         RETURNING id, sent_utc[cardinality(sent_utc)]",
        &[&station, &layout::rfc3339(due)],
    )?;
    for row in &overdue {
        let (id, last_sent): (String, String) = (row.get(0), row.get(1));
        tracing::warn!(
            command = id.as_str(),
            last_sent = last_sent.as_str(),
            "command {id} was not acknowledged within command_ack_timeout_secs: handing it out again"
        );
    }
    let next = tx.query_opt(
        "SELECT id, document FROM commands WHERE station_id = $1 AND state = 'pending'
         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        &[&station],
    )?;
    let Some(next) = next else {
        tx.commit()?;
        return Ok(None);
    };
    let (id, doc): (String, Vec<u8>) = (next.get(0), next.get(1));
    let sends: i32 = tx
        .query_one(
            "UPDATE commands SET state = 'sent', sends = sends + 1,
                 sent_utc = array_append(sent_utc, $3)
             WHERE station_id = $1 AND id = $2 RETURNING sends",
            &[&station, &id, &layout::rfc3339(now)],
        )?
        .get(0);
    tx.commit()?;
    Ok(Some(Taken {
        id,
        doc,
        sends: usize::try_from(sends).unwrap_or(0),
        overdue: overdue.len(),
    }))
}

/// Records each `Ack` against the sent document carrying its `ackId` (the
/// newest); for a resent acknowledgement what is recorded already stays.
pub(crate) fn record_acks(
    client: &mut postgres::Client,
    station: &str,
    acks: &[Ack],
    now: DateTime<Utc>,
    (resent, host): (bool, &str),
) -> anyhow::Result<Vec<AckOutcome>> {
    let mut tx = client.transaction()?;
    let documents: Vec<(String, Vec<String>)> = tx
        .query(
            "SELECT id, ack_ids FROM commands WHERE station_id = $1 AND state = 'sent' ORDER BY id",
            &[&station],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut outcomes = Vec::new();
    for ack in acks {
        let Some(id) = crate::queue::answered(&documents, &ack.ack_id) else {
            outcomes.push(AckOutcome::UnknownAckId);
            continue;
        };
        let status =
            crate::logging::printable(&ack.status.to_ascii_uppercase(), 16).replace(' ', "_");
        let reason = crate::logging::printable(&ack.reason, 4096);
        let sql = if resent {
            "INSERT INTO command_acks (station_id, id, ack_id, status, reason, at_utc, host)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
        } else {
            "INSERT INTO command_acks (station_id, id, ack_id, status, reason, at_utc, host)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (station_id, id, ack_id) DO UPDATE SET status = excluded.status,
               reason = excluded.reason, at_utc = excluded.at_utc, host = excluded.host"
        };
        let changed = tx.execute(
            sql,
            &[
                &station,
                id,
                &ack.ack_id,
                &status,
                &reason,
                &layout::response_time(now),
                &host,
            ],
        )?;
        outcomes.push(if changed == 0 {
            AckOutcome::Known { id: id.clone() }
        } else {
            AckOutcome::Recorded { id: id.clone() }
        });
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Every queued document, of one station or of all, oldest first.
pub(crate) fn list(
    client: &mut postgres::Client,
    station: Option<&StationId>,
) -> anyhow::Result<Vec<Entry>> {
    let station = station.map(|s| s.as_str().to_owned());
    let rows = client.query(
        "SELECT station_id, id, state, root, ack_ids, sends, sent_utc FROM commands
         WHERE $1::text IS NULL OR station_id = $1 ORDER BY station_id, id",
        &[&station],
    )?;
    let acks = client.query(
        "SELECT station_id, id, ack_id, status, reason FROM command_acks
         WHERE $1::text IS NULL OR station_id = $1",
        &[&station],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let (station, id, state): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let sent: Vec<String> = r.get(6);
            let ack_ids: Vec<String> = r.get(4);
            let recorded = acks
                .iter()
                .filter(|a| a.get::<_, String>(0) == station && a.get::<_, String>(1) == id)
                .map(|a| (a.get(2), a.get(3), a.get(4)))
                .collect();
            Entry {
                state: match state.as_str() {
                    "pending" => State::Pending,
                    "sent" => State::Sent {
                        at: sent.last().cloned(),
                    },
                    _ => State::Cancelled,
                },
                station,
                id,
                root: r.get(3),
                ack_ids,
                acks: recorded,
                sends: usize::try_from(r.get::<_, i32>(5)).unwrap_or(0),
            }
        })
        .collect())
}

/// Cancels a pending document.
pub(crate) fn cancel(
    client: &mut postgres::Client,
    station: &StationId,
    id: &str,
) -> anyhow::Result<()> {
    let changed = client.execute(
        "UPDATE commands SET state = 'cancelled'
         WHERE station_id = $1 AND id = $2 AND state = 'pending'",
        &[&station.as_str(), &id],
    )?;
    if changed == 0 {
        let sent = client
            .query_opt(
                "SELECT 1 FROM commands WHERE station_id = $1 AND id = $2 AND state = 'sent'",
                &[&station.as_str(), &id],
            )?
            .is_some();
        if sent {
            bail!("{id} was already sent; it cannot be cancelled");
        }
        bail!("no pending document {id} for station {station}");
    }
    Ok(())
}

/// Queues a sent (or cancelled) document again, and forgets when it was
/// sent and its acknowledgements.
pub(crate) fn requeue(
    client: &mut postgres::Client,
    station: &StationId,
    id: &str,
) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    let changed = tx.execute(
        "UPDATE commands SET state = 'pending', sends = 0, sent_utc = '{}'
         WHERE station_id = $1 AND id = $2 AND state IN ('sent', 'cancelled')",
        &[&station.as_str(), &id],
    )?;
    if changed == 0 {
        bail!("no sent or cancelled document {id} for station {station}");
    }
    tx.execute(
        "DELETE FROM command_acks WHERE station_id = $1 AND id = $2",
        &[&station.as_str(), &id],
    )?;
    tx.commit()?;
    Ok(())
}
