//! dlsrv receives the HTTP transmissions of OTT netDL data loggers, proxied
//! by NGINX over a Unix socket, and archives each body durably.
//!
//! Map of the crate:
//! - [`cli`]: the command line (`serve`, `check-config`).
//! - [`config`]: figment configuration (TOML, then `DLSRV_*`), validation.
//! - [`listener`]: binding the Unix socket safely; removing it on shutdown.
//! - [`server`]: the accept loop and graceful drain ([`server::run`]).
//! - [`routes`]: routing, the OTT endpoint, one log event per request.
//! - [`request`]: the query string: `stationid` and `action`, validated.
//! - [`body`]: reading a body within size and time limits.
//! - [`archive`]: naming and the atomic, durable write.
//! - [`response`]: the OTT Response document and plain-text answers.
//! - [`error`]: request failures and their status codes.
//! - [`state`]: what all requests share.
//! - [`logging`]: journald or stderr.
//! - [`systemd`]: readiness and watchdog notifications.

pub mod archive;
pub mod body;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod downloads;
pub mod encoding;
pub mod error;
pub mod intake;
pub mod listener;
pub mod logging;
pub mod queue;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
pub mod state;
pub mod systemd;
pub mod xml;
