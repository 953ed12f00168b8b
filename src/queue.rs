//! The command queue: documents operators queue for a station (`CommandList`
//! or `QueryList`), handed out on `requestcommand`, acknowledged by the
//! logger's `acknowledge`.
//!
//! Plain files under `state_dir` (paths from [`crate::layout`]), inspectable
//! with `ls` and `cat`:
//!
//! ```text
//! commands/<station>/pending/<id>.xml         queued, oldest id first
//! commands/<station>/sent/<id>.xml            handed out (moved atomically)
//! commands/<station>/sent/<id>.sent           when it was handed out, one line per time
//! commands/<station>/sent/<id>.ack-<ackId>    "OK <time>" or "FAIL <time>\n<reason>"
//! commands/<station>/cancelled/<id>.xml       cancelled before it was sent
//! ```
//!
//! Every change is an atomic, durable create or move ([`crate::durable`]),
//! so several instances sharing the directory hand each document out once:
//! the one whose move succeeds sends it. A directory that is missing is
//! created by the move; a failure after the move puts the document back.
//!
//! A document handed out but not acknowledged within
//! `command_ack_timeout_secs` (no `.ack-*` record for any of its ackIds)
//! goes back to `pending/` on the station's next `requestcommand` and is
//! handed out again: an answer lost on a flaky link never loses a command.
//! A document without any ackId cannot be acknowledged and is sent once.
//!
//! Nothing here follows a symbolic link: entries that are not regular files
//! are skipped, and files are opened with `O_NOFOLLOW`.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::durable::DurableDir;
use crate::layout::{self, response_time as iso_time};
use crate::request::StationId;
use crate::xml::{self, Ack};

const PENDING: &str = "pending";
const SENT: &str = "sent";
const CANCELLED: &str = "cancelled";

/// Where a queued document stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Sent { at: Option<String> },
    Cancelled,
}

/// A document handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) id: String,
    pub(crate) doc: Vec<u8>,
    /// How many times it has been handed out, this time included.
    pub(crate) sends: usize,
    /// Documents put back to pending first because they were not acknowledged in time.
    pub(crate) overdue: usize,
}

/// One queued document, as `dlsrv commands list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) station: String,
    pub(crate) id: String,
    pub(crate) state: State,
    pub(crate) root: String,
    pub(crate) ack_ids: Vec<String>,
    /// `(ackId, status, reason)` as acknowledged by the logger.
    pub(crate) acks: Vec<(String, String, String)>,
    /// How many times it was handed out.
    pub(crate) sends: usize,
}

/// What became of one `Ack` of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    Recorded {
        id: String,
    },
    /// Recorded before (a resent acknowledgement): left as it was.
    Known {
        id: String,
    },
    UnknownAckId,
}

fn station_dir(station: &str) -> PathBuf {
    Path::new(layout::COMMANDS).join(station)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'T' || b == b'.')
}

/// Ack ids become part of file names: only short ids of safe characters.
fn valid_ack_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a document can be queued for `station`: a well-formed
/// `CommandList` or `QueryList` naming no other station, with safe ackIds.
pub(crate) fn check_document(station: &StationId, doc: &[u8]) -> anyhow::Result<xml::Document> {
    let summary = xml::inspect(doc).map_err(|e| anyhow::anyhow!("not well-formed XML: {e}"))?;
    if summary.root != "CommandList" && summary.root != "QueryList" {
        bail!(
            "root element is <{}>, expected <CommandList> or <QueryList>",
            summary.root
        );
    }
    if let Some(other) = summary
        .station_ids
        .iter()
        .find(|s| s.as_str() != station.as_str())
    {
        bail!("the document is for station {other:?}, not {station}");
    }
    if let Some(bad) = summary.ack_ids.iter().find(|a| !valid_ack_id(a)) {
        bail!("ackId {bad:?} must be 1-32 characters of A-Z a-z 0-9 _ -");
    }
    Ok(summary)
}

/// Queues `doc` for `station`; returns its id.
pub(crate) fn enqueue(
    store: &DurableDir,
    station: &StationId,
    doc: &[u8],
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    check_document(station, doc)?;
    let dir = station_dir(station.as_str()).join(PENDING);
    let mut t = now;
    loop {
        let id = layout::command_id(t);
        match store.create_new(&dir, &format!("{id}.xml"), doc) {
            Ok(_) => return Ok(id),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                t += chrono::Duration::microseconds(1)
            }
            Err(e) => return Err(e).context("cannot queue the document"),
        }
    }
}

/// Hands out the oldest pending document of `station`, marking it sent at
/// `now`, after putting back to pending what was handed out more than
/// `ack_timeout` ago and never acknowledged. `None` when nothing is pending.
/// An error after the document was taken puts it back.
pub(crate) fn take_next(
    store: &DurableDir,
    station: &str,
    now: DateTime<Utc>,
    ack_timeout: Duration,
) -> io::Result<Option<Taken>> {
    let pending = store.root().join(station_dir(station)).join(PENDING);
    let sent = store.root().join(station_dir(station)).join(SENT);
    let overdue = requeue_overdue(store, &pending, &sent, now, ack_timeout)?;
    for id in ids_in(&pending)? {
        let name = format!("{id}.xml");
        match store.move_noreplace(&pending.join(&name), &sent.join(&name)) {
            Ok(()) => {}
            // Another instance took it (the destination directory exists:
            // the move creates it), or a copy is already sent: next one.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        let handed = (|| {
            let mut stamps = read_nofollow(&sent.join(format!("{id}.sent")))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            stamps.push_str(&iso_time(now));
            stamps.push('\n');
            store.replace(
                &station_dir(station).join(SENT),
                &format!("{id}.sent"),
                stamps.as_bytes(),
            )?;
            let doc = read_nofollow(&sent.join(&name))?;
            Ok::<_, io::Error>((doc, stamps.lines().count()))
        })();
        return match handed {
            Ok((doc, sends)) => Ok(Some(Taken {
                id,
                doc,
                sends,
                overdue,
            })),
            Err(e) => {
                // Not handed out after all: pending again, for the next request.
                if let Err(back) = store.move_noreplace(&sent.join(&name), &pending.join(&name)) {
                    tracing::error!(
                        command = id.as_str(),
                        error = %back,
                        "cannot put command {id} back to pending after a failure; requeue it with `dlsrv commands requeue`"
                    );
                }
                Err(e)
            }
        };
    }
    Ok(None)
}

/// Moves the sent documents of one station that nobody acknowledged within
/// `timeout` back to pending; returns how many.
fn requeue_overdue(
    store: &DurableDir,
    pending: &Path,
    sent: &Path,
    now: DateTime<Utc>,
    timeout: Duration,
) -> io::Result<usize> {
    let Ok(timeout) = chrono::Duration::from_std(timeout) else {
        return Ok(0);
    };
    let mut moved = 0;
    for id in ids_in(sent)? {
        let last_sent = read_nofollow(&sent.join(format!("{id}.sent")))
            .ok()
            .and_then(|b| {
                let text = String::from_utf8_lossy(&b).into_owned();
                text.lines().last().and_then(layout::parse_time)
            });
        let Some(last_sent) = last_sent else { continue };
        if now - last_sent < timeout || acknowledged(sent, &id) {
            continue;
        }
        let Ok(doc) = read_nofollow(&sent.join(format!("{id}.xml"))) else {
            continue;
        };
        match xml::inspect(&doc) {
            Ok(summary) if !summary.ack_ids.is_empty() => {}
            _ => continue, // nothing could ever acknowledge it
        }
        let name = format!("{id}.xml");
        match store.move_noreplace(&sent.join(&name), &pending.join(&name)) {
            Ok(()) => {
                moved += 1;
                tracing::warn!(
                    command = id.as_str(),
                    last_sent = %iso_time(last_sent),
                    "command {id} was not acknowledged within command_ack_timeout_secs: handing it out again"
                );
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Has any ackId of sent document `id` been acknowledged?
fn acknowledged(sent: &Path, id: &str) -> bool {
    let prefix = format!("{id}.ack-");
    fs::read_dir(sent).into_iter().flatten().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with(&prefix)
            && e.file_type().is_ok_and(|t| t.is_file())
    })
}

/// `path` is a regular file itself (not a link to one).
fn regular_file(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ))
    }
}

/// A regular file's content, never through a symbolic link.
fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// Records each `Ack` against the sent document carrying its `ackId`. For
/// a resent acknowledgement (`resent`), what is recorded already stays.
pub(crate) fn record_acks(
    store: &DurableDir,
    station: &str,
    acks: &[Ack],
    now: DateTime<Utc>,
    resent: bool,
) -> io::Result<Vec<AckOutcome>> {
    let sent = store.root().join(station_dir(station)).join(SENT);
    let documents: Vec<(String, Vec<String>)> = ids_in(&sent)?
        .into_iter()
        .filter_map(|id| {
            let doc = read_nofollow(&sent.join(format!("{id}.xml"))).ok()?;
            Some((id, xml::inspect(&doc).ok()?.ack_ids))
        })
        .collect();
    let mut outcomes = Vec::new();
    for ack in acks {
        let owner = answered(&documents, &ack.ack_id);
        let Some(id) = owner.filter(|_| valid_ack_id(&ack.ack_id)) else {
            outcomes.push(AckOutcome::UnknownAckId);
            continue;
        };
        let name = format!("{id}.ack-{}", ack.ack_id);
        if resent && sent.join(&name).is_file() {
            outcomes.push(AckOutcome::Known { id: id.clone() });
            continue;
        }
        // What the logger sent, control characters escaped: one line each.
        let status =
            crate::logging::printable(&ack.status.to_ascii_uppercase(), 16).replace(' ', "_");
        let mut record = format!("{status} {}\n", iso_time(now));
        if !ack.reason.is_empty() {
            record.push_str(&crate::logging::printable(&ack.reason, 4096));
            record.push('\n');
        }
        store.replace(&station_dir(station).join(SENT), &name, record.as_bytes())?;
        outcomes.push(AckOutcome::Recorded { id: id.clone() });
    }
    Ok(outcomes)
}

/// Which of the sent documents (id and ackIds, oldest first) an `ackId`
/// answers: the newest that carries it.
pub(crate) fn answered<'a>(
    documents: &'a [(String, Vec<String>)],
    ack_id: &str,
) -> Option<&'a String> {
    documents
        .iter()
        .rev()
        .find(|(_, ids)| ids.iter().any(|i| i == ack_id))
        .map(|(id, _)| id)
}

/// Every queued document, of one station or of all, oldest first.
/// Only reads: `state_dir` may not even exist yet.
pub(crate) fn list(state_dir: &Path, station: Option<&StationId>) -> io::Result<Vec<Entry>> {
    let base = state_dir.join(layout::COMMANDS);
    let stations = match station {
        Some(s) => vec![s.as_str().to_owned()],
        None => match fs::read_dir(&base) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        },
    };
    let mut entries = Vec::new();
    for station in stations {
        let dir = base.join(&station);
        for (sub, state_of) in [(PENDING, 0), (SENT, 1), (CANCELLED, 2)] {
            for id in ids_in(&dir.join(sub))? {
                let doc =
                    read_nofollow(&dir.join(sub).join(format!("{id}.xml"))).unwrap_or_default();
                let summary = xml::inspect(&doc).unwrap_or_default();
                let stamps = read_nofollow(&dir.join(SENT).join(format!("{id}.sent")))
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let sends = if state_of == 2 {
                    0
                } else {
                    stamps.lines().count()
                };
                let state = match state_of {
                    0 => State::Pending,
                    1 => State::Sent {
                        at: stamps.lines().last().map(|s| s.trim().to_owned()),
                    },
                    _ => State::Cancelled,
                };
                let acks = if state_of == 1 {
                    read_acks(&dir.join(SENT), &id, &summary.ack_ids)
                } else {
                    Vec::new()
                };
                entries.push(Entry {
                    station: station.clone(),
                    id,
                    state,
                    root: summary.root,
                    ack_ids: summary.ack_ids,
                    acks,
                    sends,
                });
            }
        }
    }
    entries.sort_by(|a, b| (&a.station, &a.id).cmp(&(&b.station, &b.id)));
    Ok(entries)
}

fn read_acks(sent: &Path, id: &str, ack_ids: &[String]) -> Vec<(String, String, String)> {
    ack_ids
        .iter()
        .filter_map(|ack_id| {
            let text = read_nofollow(&sent.join(format!("{id}.ack-{ack_id}"))).ok()?;
            let text = String::from_utf8_lossy(&text).into_owned();
            let (head, reason) = text.split_once('\n').unwrap_or((&text, ""));
            let status = head.split_whitespace().next().unwrap_or("").to_owned();
            Some((ack_id.clone(), status, reason.trim().to_owned()))
        })
        .collect()
}

/// Cancels a pending document (kept under `cancelled/`).
pub(crate) fn cancel(store: &DurableDir, station: &StationId, id: &str) -> anyhow::Result<()> {
    let dir = store.root().join(station_dir(station.as_str()));
    let name = checked_name(id)?;
    if dir.join(SENT).join(&name).exists() {
        bail!("{id} was already sent; it cannot be cancelled");
    }
    regular_file(&dir.join(PENDING).join(&name))
        .with_context(|| format!("no pending document {id} for station {station}"))?;
    store
        .move_noreplace(
            &dir.join(PENDING).join(&name),
            &dir.join(CANCELLED).join(&name),
        )
        .with_context(|| format!("no pending document {id} for station {station}"))
}

/// Queues a sent (or cancelled) document again, as pending under its own
/// id, and forgets when it was sent and its acknowledgements.
pub(crate) fn requeue(store: &DurableDir, station: &StationId, id: &str) -> anyhow::Result<()> {
    let dir = store.root().join(station_dir(station.as_str()));
    let name = checked_name(id)?;
    let from = [SENT, CANCELLED]
        .into_iter()
        .map(|sub| dir.join(sub).join(&name))
        .find(|p| regular_file(p).is_ok())
        .with_context(|| format!("no sent or cancelled document {id} for station {station}"))?;
    store
        .move_noreplace(&from, &dir.join(PENDING).join(&name))
        .with_context(|| format!("cannot requeue {id}"))?;
    for entry in fs::read_dir(dir.join(SENT)).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let is_record = file == format!("{id}.sent") || file.starts_with(&format!("{id}.ack-"));
        if is_record && entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::remove_file(entry.path()).with_context(|| format!("cannot remove {file}"))?;
        }
    }
    Ok(())
}

fn checked_name(id: &str) -> anyhow::Result<String> {
    if !valid_id(id) {
        bail!("{id:?} is not a command id (see `dlsrv commands list`)");
    }
    Ok(format!("{id}.xml"))
}

/// The ids of the `<id>.xml` documents in `dir`, sorted (oldest first).
fn ids_in(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        // Regular files only: a link planted in the queue is not a document.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".xml")
                .map(str::to_owned)
        })
        .filter(|id| valid_id(id))
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const CMD: &[u8] = b"<CommandList><StationCommands stationId=\"0000452891\"><Logging ackId=\"101\"/><SetMaintenanceWindow ackId=\"102\"/></StationCommands></CommandList>";

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, s)
            .single()
            .expect("valid")
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn station() -> StationId {
        StationId::parse(b"0000452891").expect("valid")
    }

    fn setup() -> (tempfile::TempDir, DurableDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::durable::Options {
            temp_suffix: ".tmp",
            group: None,
            follow_links: false,
            what: "state_dir",
        };
        let store = DurableDir::open(dir.path(), options).expect("open");
        (dir, store)
    }

    #[test]
    fn queue_hand_out_once_oldest_first_then_acknowledge() {
        let (_d, store) = setup();
        let first = enqueue(&store, &station(), CMD, t(1)).expect("queue");
        let query = b"<QueryList><Query ackId=\"103\" start=\"x\"/></QueryList>";
        let second = enqueue(&store, &station(), query, t(1)).expect("same time, next id");
        assert!(first < second);

        let taken = take_next(&store, "0000452891", t(5), DAY)
            .expect("io")
            .expect("one");
        assert_eq!(
            (taken.id.as_str(), taken.doc.as_slice()),
            (first.as_str(), CMD)
        );
        assert_eq!(taken.sends, 1);
        let taken = take_next(&store, "0000452891", t(6), DAY)
            .expect("io")
            .expect("two");
        assert_eq!(taken.id, second);
        assert!(
            take_next(&store, "0000452891", t(7), DAY)
                .expect("io")
                .is_none(),
            "each once"
        );

        let acks = [
            Ack {
                ack_id: "101".into(),
                status: "OK".into(),
                reason: String::new(),
            },
            Ack {
                ack_id: "102".into(),
                status: "FAIL".into(),
                reason: "window overlaps".into(),
            },
            Ack {
                ack_id: "999".into(),
                status: "OK".into(),
                reason: String::new(),
            },
        ];
        let outcomes = record_acks(&store, "0000452891", &acks, t(9), false).expect("record");
        assert_eq!(outcomes[0], AckOutcome::Recorded { id: first.clone() });
        assert_eq!(outcomes[2], AckOutcome::UnknownAckId);

        let entries = list(store.root(), Some(&station())).expect("list");
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].state,
            State::Sent {
                at: Some("2026-05-01T10:00:05.000000".into())
            }
        );
        assert_eq!(
            entries[0].acks,
            vec![
                ("101".into(), "OK".into(), String::new()),
                ("102".into(), "FAIL".into(), "window overlaps".into())
            ]
        );
        assert_eq!(entries[1].root, "QueryList");
    }

    #[test]
    fn cancel_and_requeue() {
        let (_d, store) = setup();
        let a = enqueue(&store, &station(), CMD, t(1)).expect("a");
        let b = enqueue(&store, &station(), CMD, t(2)).expect("b");
        cancel(&store, &station(), &a).expect("cancel pending");
        let sent = take_next(&store, "0000452891", t(3), DAY)
            .expect("io")
            .expect("b is next");
        assert_eq!(sent.id, b);
        assert!(
            cancel(&store, &station(), &b).is_err(),
            "sent cannot be cancelled"
        );
        record_acks(
            &store,
            "0000452891",
            &[Ack {
                ack_id: "101".into(),
                status: "OK".into(),
                reason: String::new(),
            }],
            t(4),
            false,
        )
        .expect("ack");
        requeue(&store, &station(), &b).expect("requeue sent");
        let entries = list(store.root(), None).expect("list");
        let states: Vec<_> = entries
            .iter()
            .map(|e| (e.id.clone(), e.state.clone(), e.acks.len()))
            .collect();
        assert_eq!(
            states,
            vec![
                (a.clone(), State::Cancelled, 0),
                (b.clone(), State::Pending, 0)
            ]
        );
        assert!(cancel(&store, &station(), "../x").is_err());
        assert!(requeue(&store, &station(), "20990101T000000.000000").is_err());
    }

    #[test]
    fn unacknowledged_commands_are_handed_out_again_after_the_timeout() {
        let (_d, store) = setup();
        let id = enqueue(&store, &station(), CMD, t(1)).expect("queue");
        let query = enqueue(
            &store,
            &station(),
            b"<QueryList><Query start=\"x\"/></QueryList>",
            t(2),
        )
        .expect("no ackId");
        let timeout = Duration::from_secs(30);
        assert_eq!(
            take_next(&store, "0000452891", t(3), timeout)
                .expect("io")
                .expect("first")
                .id,
            id
        );
        assert_eq!(
            take_next(&store, "0000452891", t(4), timeout)
                .expect("io")
                .expect("second")
                .id,
            query
        );
        assert!(
            take_next(&store, "0000452891", t(20), timeout)
                .expect("io")
                .is_none(),
            "not yet due"
        );
        let again = take_next(&store, "0000452891", t(40), timeout)
            .expect("io")
            .expect("again");
        assert_eq!(
            (again.id.as_str(), again.sends, again.overdue),
            (id.as_str(), 2, 1)
        );
        assert!(
            take_next(&store, "0000452891", t(59), timeout)
                .expect("io")
                .is_none(),
            "the query without an ackId is never sent again, the command not yet"
        );
        let entries = list(store.root(), Some(&station())).expect("list");
        assert_eq!(entries[0].sends, 2);
        assert_eq!(
            entries[0].state,
            State::Sent {
                at: Some("2026-05-01T10:00:40.000000".into())
            }
        );
        // Acknowledged: never again.
        let ack = Ack {
            ack_id: "101".into(),
            status: "OK".into(),
            reason: String::new(),
        };
        record_acks(&store, "0000452891", &[ack], t(45), false).expect("ack");
        let later = Utc
            .with_ymd_and_hms(2026, 5, 3, 0, 0, 0)
            .single()
            .expect("valid");
        assert!(
            take_next(&store, "0000452891", later, timeout)
                .expect("io")
                .is_none()
        );
    }

    #[test]
    fn a_missing_sent_directory_is_recreated_not_read_as_taken() {
        let (_d, store) = setup();
        let id = enqueue(&store, &station(), CMD, t(1)).expect("queue");
        let sent = store.root().join("commands/0000452891/sent");
        assert!(!sent.exists());
        let taken = take_next(&store, "0000452891", t(2), DAY)
            .expect("io")
            .expect("handed out");
        assert_eq!(taken.id, id);
        assert!(sent.join(format!("{id}.xml")).is_file());
    }

    #[test]
    fn a_failure_after_the_take_puts_the_command_back() {
        let (_d, store) = setup();
        let id = enqueue(&store, &station(), CMD, t(1)).expect("queue");
        // The stamp cannot be written: a directory sits where it goes.
        let sent = store.root().join("commands/0000452891/sent");
        fs::create_dir_all(sent.join(format!("{id}.sent")).join("x")).expect("plant");
        assert!(take_next(&store, "0000452891", t(2), DAY).is_err());
        let pending = store
            .root()
            .join("commands/0000452891/pending")
            .join(format!("{id}.xml"));
        assert!(pending.is_file(), "back to pending");
        fs::remove_dir_all(sent.join(format!("{id}.sent"))).expect("clear");
        assert_eq!(
            take_next(&store, "0000452891", t(3), DAY)
                .expect("io")
                .expect("now")
                .id,
            id
        );
    }

    #[test]
    fn links_planted_in_the_queue_are_not_followed() {
        let (_d, store) = setup();
        let outside = tempfile::NamedTempFile::new().expect("outside");
        fs::write(outside.path(), CMD).expect("write");
        let pending = store.root().join("commands/0000452891/pending");
        fs::create_dir_all(&pending).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), pending.join("20260101T000000.000000.xml"))
            .expect("link");
        assert!(
            list(store.root(), None).expect("list").is_empty(),
            "a link is no document"
        );
        assert!(
            take_next(&store, "0000452891", t(1), DAY)
                .expect("io")
                .is_none()
        );
        assert!(read_nofollow(&pending.join("20260101T000000.000000.xml")).is_err());
        assert_eq!(fs::read(outside.path()).expect("read"), CMD, "untouched");
    }

    #[test]
    fn documents_are_checked_before_queueing() {
        let (_d, store) = setup();
        for (doc, why) in [
            (&b"<CommandList>"[..], "well-formed"),
            (b"<StationDataList/>", "expected <CommandList>"),
            (b"<CommandList><StationCommands stationId=\"other\"/></CommandList>", "\"other\""),
            (b"<CommandList><StationCommands><Logging ackId=\"../x\"/></StationCommands></CommandList>", "ackId"),
        ] {
            let err = enqueue(&store, &station(), doc, t(1)).expect_err("refused");
            assert!(format!("{err:#}").contains(why), "{err:#}");
        }
        assert!(
            list(store.root(), None).expect("list").is_empty(),
            "nothing queued"
        );
    }
}
