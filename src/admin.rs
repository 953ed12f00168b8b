//! `dlsrv commands …`: the operators' side of the command queue (see
//! [`crate::queue`]) in `state_dir`. Run it as the service user, or as
//! root: it then becomes the owner of `state_dir` (its group, then its
//! user) before it touches anything there, so what it creates belongs to
//! the service and a link planted in the queue reaches no more than the
//! service could. Nothing is chowned, no link inside the queue is
//! followed. `list` only reads, and prints what loggers sent (ack reasons)
//! with control characters escaped.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::durable::{DurableDir, Options};
use crate::queue::{self, Entry, State};
use crate::request::StationId;

/// Runs one operator command; returns what to print.
pub(crate) fn run(config: &Config, action: &CommandsAction) -> anyhow::Result<String> {
    // The operator's own input is read with the operator's rights.
    let input = match action {
        CommandsAction::Add { file, .. } => {
            Some(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?)
        }
        _ => None,
    };
    if let Some(url) = config.shared_catalog() {
        return shared(config, url, action, input);
    }
    become_owner_of(&config.state_dir)?;
    let open = || {
        let options = Options {
            temp_suffix: &config.temp_suffix,
            group: None,
            follow_links: false,
            what: "state_dir",
        };
        DurableDir::open(&config.state_dir, options)
    };
    let now = chrono::Utc::now();
    let output = match action {
        CommandsAction::Add { station, file } => {
            let station = station_id(station)?;
            let doc = input.unwrap_or_default();
            let store = open()?;
            let id = queue::enqueue(&store, &station, &doc, now)
                .with_context(|| format!("{} not queued", file.display()))?;
            format!("queued {id} for {station}\n")
        }
        CommandsAction::List { station } => {
            let station = station.as_deref().map(station_id).transpose()?;
            render(
                &queue::list(&config.state_dir, station.as_ref())
                    .context("cannot read the queue")?,
            )
        }
        CommandsAction::Cancel { station, id } => {
            let station = station_id(station)?;
            let store = open()?;
            queue::cancel(&store, &station, id)?;
            format!("cancelled {id} for {station}\n")
        }
        CommandsAction::Requeue { station, id } => {
            let station = station_id(station)?;
            let store = open()?;
            queue::requeue(&store, &station, id)?;
            format!("queued {id} again for {station}\n")
        }
    };
    Ok(output)
}

/// The same operations on the shared catalog's queue (any host's CLI).
fn shared(
    config: &Config,
    url: &str,
    action: &CommandsAction,
    input: Option<Vec<u8>>,
) -> anyhow::Result<String> {
    use crate::pgqueue;
    let mut client = crate::catalog::shared::connect(url)?;
    crate::catalog::shared::migrate(&mut client)?;
    Ok(match action {
        CommandsAction::Add { station, file } => {
            let station = station_id(station)?;
            let doc = input.unwrap_or_default();
            let id = pgqueue::enqueue(
                &mut client,
                &station,
                &doc,
                chrono::Utc::now(),
                &config.host_name,
            )
            .with_context(|| format!("{} not queued", file.display()))?;
            format!("queued {id} for {station}\n")
        }
        CommandsAction::List { station } => {
            let station = station.as_deref().map(station_id).transpose()?;
            render(&pgqueue::list(&mut client, station.as_ref())?)
        }
        CommandsAction::Cancel { station, id } => {
            let station = station_id(station)?;
            pgqueue::cancel(&mut client, &station, id)?;
            format!("cancelled {id} for {station}\n")
        }
        CommandsAction::Requeue { station, id } => {
            let station = station_id(station)?;
            pgqueue::requeue(&mut client, &station, id)?;
            format!("queued {id} again for {station}\n")
        }
    })
}

fn station_id(raw: &str) -> anyhow::Result<StationId> {
    StationId::parse(raw.as_bytes()).map_err(|e| anyhow::anyhow!("station {raw:?}: {e}"))
}

/// The queue as a table, oldest first per station.
pub(crate) fn render(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "no queued documents\n".to_owned();
    }
    let mut out = format!(
        "{:<12} {:<23} {:<9} {:<26} {:>5} {:<11} ACKS\n",
        "STATION", "ID", "STATE", "SENT", "TIMES", "DOCUMENT"
    );
    // Anything read from the queue may hold what a logger sent: escaped.
    let shown = |text: &str| crate::logging::printable(text, 512);
    for e in entries {
        let (state, sent) = match &e.state {
            State::Pending => ("pending", "-".to_owned()),
            State::Sent { at } => ("sent", at.as_deref().map_or_else(|| "?".to_owned(), shown)),
            State::Cancelled => ("cancelled", "-".to_owned()),
        };
        let acks: Vec<String> = e
            .ack_ids
            .iter()
            .map(|id| {
                let id = shown(id);
                match e.acks.iter().find(|(ack, _, _)| shown(ack) == id) {
                    Some((_, status, reason)) if reason.is_empty() => {
                        format!("{id} {}", shown(status))
                    }
                    Some((_, status, reason)) => {
                        format!("{id} {}: {}", shown(status), shown(reason))
                    }
                    None => format!("{id} -"),
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<12} {:<23} {state:<9} {sent:<26} {:>5} {:<11} {}",
            e.station,
            e.id,
            e.sends,
            shown(&e.root),
            if acks.is_empty() {
                "-".to_owned()
            } else {
                acks.join("; ")
            }
        );
    }
    out
}

/// Run as root, becomes the owner of `state_dir` (supplementary groups,
/// group, then user), so nothing in it is touched with root's rights. A
/// `state_dir` that is a symbolic link is refused; one owned by root (or
/// not there yet) leaves root as it is.
pub(crate) fn become_owner_of(state_dir: &Path) -> anyhow::Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = match std::fs::symlink_metadata(state_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", state_dir.display())),
    };
    if meta.file_type().is_symlink() {
        bail!(
            "state_dir {} is a symbolic link; as root, give its real path",
            state_dir.display()
        );
    }
    if meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    setgroups(&[gid]).context("cannot drop root's groups")?;
    setgid(gid).with_context(|| format!("cannot become group {gid}"))?;
    setuid(uid).with_context(|| format!("cannot become user {uid}, the owner of state_dir"))?;
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CommandsAction {
    /// Queue FILE (a CommandList or QueryList) for STATION's next requestcommand.
    Add {
        station: String,
        file: std::path::PathBuf,
    },
    /// Show pending, sent and cancelled documents with their acknowledgements.
    List { station: Option<String> },
    /// Cancel a pending document (it is kept under cancelled/).
    Cancel { station: String, id: String },
    /// Queue a sent or cancelled document again.
    Requeue { station: String, id: String },
}
