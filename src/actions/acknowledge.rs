//! `acknowledge`: the logger's `Response` to a command document, archived;
//! each `Ack` is recorded against the queued command that carried its
//! `ackId` ([`crate::queue::record_acks`]). A failed command is logged at
//! warning level.
//!
//! A resent acknowledgement (a duplicate body) records what is not yet
//! recorded: its first attempt may have been answered 503 after the body
//! was stored.
//!
//! Bounded per document: acks are de-duplicated by `ackId` (the first
//! wins), at most [`RECORDED`] are recorded, the first [`LOGGED`] get a log
//! line each and the rest one summary line.

use std::collections::HashSet;
use std::io;

use super::{Delivered, Kind, Spec};
use crate::queue::AckOutcome;

pub(crate) const SPEC: Spec = Spec {
    kind: Kind::Document {
        root: "Response",
        after_store,
    },
};

/// Acks of one document that get a log line of their own.
const LOGGED: usize = 5;

/// Distinct acks of one document that are recorded in the queue.
const RECORDED: usize = 100;

fn after_store(d: &Delivered<'_>) -> io::Result<()> {
    let station = d.station.as_str();
    let all = &d.document.acks;
    let mut seen = HashSet::new();
    let distinct: Vec<_> = all
        .iter()
        .filter(|ack| seen.insert(ack.ack_id.as_str()))
        .cloned()
        .collect();
    let acks = &distinct[..distinct.len().min(RECORDED)];
    let outcomes = match &d.state.shared_queue {
        // The shared queue away: 503 (the body is stored; the logger's
        // next try is a duplicate, which records what is not recorded yet).
        Some(queue) => queue
            .with(|c| {
                crate::pgqueue::record_acks(
                    c,
                    station,
                    acks,
                    d.received,
                    (d.duplicate, &d.state.config.host_name),
                )
            })
            .map_err(|e| io::Error::other(format!("the shared command queue: {e:#}")))?,
        None => crate::queue::record_acks(&d.state.store, station, acks, d.received, d.duplicate)?,
    };
    let (mut ok, mut failed, mut unknown) = (0usize, 0usize, 0usize);
    for (i, (ack, outcome)) in acks.iter().zip(&outcomes).enumerate() {
        let ack_id = crate::logging::printable(&ack.ack_id, 64);
        let ack_id = ack_id.as_str();
        let logged = i < LOGGED;
        match outcome {
            AckOutcome::Recorded { id } | AckOutcome::Known { id } if ack.is_ok() => {
                ok += 1;
                if logged {
                    tracing::info!(
                        ack_id,
                        command = id.as_str(),
                        "command {id} ackId {ack_id}: OK"
                    );
                }
            }
            AckOutcome::Recorded { id } | AckOutcome::Known { id } => {
                failed += 1;
                if logged {
                    let status = crate::logging::printable(&ack.status, 16);
                    let reason = crate::logging::printable(&ack.reason, 512);
                    tracing::warn!(
                        ack_id,
                        command = id.as_str(),
                        ack_status = status.as_str(),
                        reason = reason.as_str(),
                        "command {id} ackId {ack_id}: {status} {reason}"
                    );
                }
            }
            AckOutcome::UnknownAckId => {
                unknown += 1;
                if logged {
                    tracing::warn!(
                        ack_id,
                        "acknowledgement of ackId {ack_id}, which no command sent to {station} carries"
                    );
                }
            }
        }
    }
    if all.len() > LOGGED || distinct.len() != all.len() || distinct.len() > acks.len() {
        let ignored = distinct.len() - acks.len();
        tracing::warn!(
            acks = all.len(),
            distinct = distinct.len(),
            recorded = acks.len(),
            "acknowledgement of {} acks, {} distinct ackIds, {} recorded ({ok} OK, {failed} failed, {unknown} unknown ackIds{}); the first {} are logged above",
            all.len(),
            distinct.len(),
            acks.len(),
            if ignored > 0 {
                format!("; {ignored} beyond the first {RECORDED} ignored")
            } else {
                String::new()
            },
            acks.len().min(LOGGED)
        );
    }
    Ok(())
}
