//! dlsrv receives the HTTP transmissions of OTT netDL data loggers, proxied
//! by NGINX over a Unix socket, and archives each body durably.
//!
//! Map of the crate (the path of one transmission is in docs/architecture.md):
//! - [`cli`]: the command line (`serve`, `check-config`, `commands`, `reindex`, …).
//! - [`config`]: figment configuration (TOML, then `DLSRV_*`), validation.
//! - [`listener`]: the socket systemd passes, or binding our own safely.
//! - [`server`]: the accept loop and graceful drain ([`server::run`]).
//! - `routes`: routing; every POST into `intake`, the GETs to their action.
//! - `reqlog`: one span and one outcome event per request.
//! - `request`: the query string: `stationid` and `action`, validated.
//! - `actions`: what each action of the protocol does, one file each.
//! - `access`: who may speak for which station (`station_access`, the logins file).
//! - `body`: reading a body from hyper within size and time limits.
//! - `budget`: the memory budget of request bodies (`max_inflight_body_bytes`).
//! - `space`: room left on the file systems (`min_free_bytes`, `min_free_inodes`).
//! - `intake`: the one pipeline of every POST: decode → check → dedup → store → catalog.
//! - `decode`: the one `Content-Encoding` decoder (deflate, gzip), bounded.
//! - `xml`: well-formedness, root element, `stationId`s, `Ack`s, in one pass.
//! - `summary`: what the catalog learns of a document (station info, channels, alarm), in that pass.
//! - [`layout`]: every path and time format; the read-only archive reader.
//! - `durable`: the one durable write (temp → fsync → rename → fsync dir).
//! - `archive`: archive names, collisions, on top of `durable`.
//! - `group`: group commit, shared `syncfs` flushes.
//! - `catalog`: the SQLite catalog in `state_dir`: one row per archived body.
//! - `indexer`: filling the catalog from the archive (start-up catch-up, `reindex`).
//! - `rejected`: refused bodies kept in `state_dir` with their reasons.
//! - `queue`: the command queue in `state_dir`: pending → sent → acknowledged.
//! - `pgqueue`: the same queue in a shared catalog (PostgreSQL), for several hosts.
//! - `admin`: `dlsrv commands …`, the operators' side of the queue.
//! - `downloads`: files for `getconfiguration`/`getfirmware`, confined to one directory.
//! - `migrate`: moving an older installation's state out of `data_dir`.
//! - `cleanup`: temp files left by a crash, removed after start.
//! - `metrics`: `GET /metrics` (prometheus-client).
//! - `status`: where each station stands, from the catalog (`dlsrv status`, the pages, `/metrics`).
//! - `page`: the operators' status pages (`/status`), server-rendered with maud.
//! - `chart`: the station page's chart of every channel (inline SVG), read from the archive.
//! - `report`: `dlsrv report`, the report of a period.
//! - `export`: `dlsrv export`, the archive's values and events as rows (CSV, JSON Lines, …).
//! - `replica`: the copy of the archive in S3-compatible storage (`dlsrv replicate`), retention.
//! - `verify`: `dlsrv verify`, bodies against the catalog and the replica.
//! - `restore`: `dlsrv restore --from-replica`, `reindex --from-replica`.
//! - `daemon`: signals, pauses and outages of the subcommands that run until SIGTERM.
//! - `response`: the OTT Response document and plain-text answers.
//! - `error`: request failures and their status codes.
//! - [`state`]: what all requests share.
//! - `logging`: journald or stderr.
//! - `systemd`: readiness and watchdog notifications.

pub(crate) mod access;
pub(crate) mod actions;
pub(crate) mod admin;
pub(crate) mod archive;
pub(crate) mod body;
pub(crate) mod budget;
pub(crate) mod catalog;
pub(crate) mod chart;
pub(crate) mod cleanup;
pub mod cli;
pub mod config;
pub(crate) mod console;
pub(crate) mod daemon;
pub(crate) mod decode;
pub(crate) mod downloads;
pub(crate) mod durable;
pub(crate) mod error;
pub(crate) mod export;
pub(crate) mod feeds;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod group;
pub(crate) mod indexer;
pub(crate) mod intake;
pub mod layout;
pub mod listener;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod migrate;
pub(crate) mod page;
pub(crate) mod pgqueue;
pub(crate) mod queue;
pub(crate) mod rejected;
pub(crate) mod replica;
pub(crate) mod report;
pub(crate) mod reqlog;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod restore;
pub(crate) mod routes;
pub mod server;
pub(crate) mod space;
pub mod state;
pub(crate) mod status;
pub(crate) mod summary;
pub(crate) mod systemd;
pub(crate) mod verify;
pub(crate) mod xml;
