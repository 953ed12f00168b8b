//! `dlsrv commands …`: the operators' side of the command queue (see
//! [`crate::queue`]) in `state_dir`. Run it as the service user, or as
//! root: files it creates as root are handed to the owner of `state_dir`,
//! so the service can move them. `list` only reads.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

use crate::cli::CommandsAction;
use crate::config::Config;
use crate::durable::{DurableDir, Options};
use crate::queue::{self, Entry, State};
use crate::request::StationId;

/// Runs one operator command; returns what to print.
pub(crate) fn run(config: &Config, action: &CommandsAction) -> anyhow::Result<String> {
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
            let doc =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let store = open()?;
            let id = queue::enqueue(&store, &station, &doc, now)
                .with_context(|| format!("{} not queued", file.display()))?;
            adopt(&store, &station)?;
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
            adopt(&store, &station)?;
            format!("cancelled {id} for {station}\n")
        }
        CommandsAction::Requeue { station, id } => {
            let station = station_id(station)?;
            let store = open()?;
            queue::requeue(&store, &station, id)?;
            adopt(&store, &station)?;
            format!("queued {id} again for {station}\n")
        }
    };
    Ok(output)
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
        "{:<12} {:<23} {:<9} {:<26} {:<11} ACKS\n",
        "STATION", "ID", "STATE", "SENT", "DOCUMENT"
    );
    for e in entries {
        let (state, sent) = match &e.state {
            State::Pending => ("pending", "-".to_owned()),
            State::Sent { at } => ("sent", at.clone().unwrap_or_else(|| "?".to_owned())),
            State::Cancelled => ("cancelled", "-".to_owned()),
        };
        let acks: Vec<String> = e
            .ack_ids
            .iter()
            .map(|id| match e.acks.iter().find(|(ack, _, _)| ack == id) {
                Some((_, status, reason)) if reason.is_empty() => format!("{id} {status}"),
                Some((_, status, reason)) => format!("{id} {status}: {reason}"),
                None => format!("{id} -"),
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<12} {:<23} {state:<9} {sent:<26} {:<11} {}",
            e.station,
            e.id,
            e.root,
            if acks.is_empty() {
                "-".to_owned()
            } else {
                acks.join("; ")
            }
        );
    }
    out
}

/// Gives what root created in the station's queue to the owner of the
/// state directory (the service user), so the service can move it.
fn adopt(store: &DurableDir, station: &StationId) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let owner = std::fs::metadata(store.root()).context("cannot stat state_dir")?;
    if owner.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (
        Some(nix::unistd::Uid::from_raw(owner.uid())),
        Some(nix::unistd::Gid::from_raw(owner.gid())),
    );
    let chown = |p: &Path| {
        nix::unistd::chown(p, uid, gid).with_context(|| format!("cannot chown {}", p.display()))
    };
    let base = store.root().join(crate::layout::COMMANDS);
    chown(&base)?;
    let dir = base.join(station.as_str());
    chown(&dir)?;
    for state in std::fs::read_dir(&dir)?.flatten() {
        chown(&state.path())?;
        for file in std::fs::read_dir(state.path())?.flatten() {
            if file.file_type()?.is_file() {
                chown(&file.path())?;
            }
        }
    }
    Ok(())
}
