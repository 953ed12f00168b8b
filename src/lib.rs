//! dlsrv receives the HTTP transmissions of OTT netDL data loggers, proxied
//! by NGINX over a Unix socket, and archives each body durably.
//!
//! Map of the crate:
//! - [`cli`]: the command line (`serve`, `check-config`, `commands`).
//! - [`admin`]: `dlsrv commands …`, the operators' side of the command queue.
//! - [`config`]: figment configuration (TOML, then `DLSRV_*`), validation.
//! - [`listener`]: binding the Unix socket safely; removing it on shutdown.
//! - [`server`]: the accept loop and graceful drain ([`server::run`]).
//! - [`routes`]: routing and the OTT endpoint.
//! - [`reqlog`]: the one log event of each request.
//! - [`request`]: the query string: `stationid` and `action`, validated.
//! - [`body`]: reading a body within size and time limits.
//! - [`encoding`]: decoding `Content-Encoding: deflate`/`gzip`, bounded.
//! - [`xml`]: well-formedness, root element, `stationId`, `Ack`s.
//! - [`intake`]: decode → validate → duplicate check → store, or keep as rejected.
//! - [`dedup`]: duplicate markers per station, action and SHA-256.
//! - [`queue`]: the command queue: pending → sent → acknowledged.
//! - [`downloads`]: files for `getconfiguration`/`getfirmware`, confined to one directory.
//! - [`archive`]: naming and the atomic, durable write.
//! - [`cleanup`]: temp files left by a crash, removed at start.
//! - [`group`]: group commit, shared `syncfs` flushes.
//! - [`metrics`]: `GET /metrics`, the Prometheus text format.
//! - [`response`]: the OTT Response document and plain-text answers.
//! - [`error`]: request failures and their status codes.
//! - [`state`]: what all requests share.
//! - [`logging`]: journald or stderr.
//! - [`systemd`]: readiness and watchdog notifications.

pub mod admin;
pub mod archive;
pub mod body;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod downloads;
pub mod encoding;
pub mod error;
pub mod group;
pub mod intake;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod reqlog;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod state;
pub mod systemd;
pub mod xml;
