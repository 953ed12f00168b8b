//! Configuration: defaults, then a TOML file, then `DLSRV_*` environment
//! variables, merged by figment into [`Config`] and checked by
//! [`Config::validate`].
//!
//! Every subcommand loads its configuration through [`Config::load`], so
//! `dlsrv check-config` sees exactly what `dlsrv serve` would run with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The environment variable prefix: `DLSRV_DATA_DIR` overrides `data_dir`.
pub const ENV_PREFIX: &str = "DLSRV_";

/// Longest path a Unix socket address can hold (`sun_path` is 108 bytes,
/// including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The effective configuration of one dlsrv instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the Unix socket NGINX connects to.
    pub socket: PathBuf,
    /// Permission bits of the socket file, octal (`"0660"`).
    pub socket_mode: FileMode,
    /// Group of the socket file (a name or a numeric id); NGINX's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Length of the kernel's queue of not yet accepted connections.
    pub listen_backlog: u32,
    /// Root of the archive: nothing but archived bodies.
    pub data_dir: PathBuf,
    /// The service's own state: the catalog, the command queue, rejected
    /// bodies. Never equal to or inside `data_dir` (nor the reverse).
    pub state_dir: PathBuf,
    /// Largest accepted body of an XML action, in bytes (before and after decoding).
    pub max_body_bytes: u64,
    /// Largest accepted body of `sendconfiguration`/`sendfirmware`, in bytes.
    pub max_upload_bytes: u64,
    /// Identical bodies of one station and action within this many days are
    /// answered 200 but stored once; 0 turns the check off.
    pub duplicate_window_days: u32,
    /// Files served on `getconfiguration`/`getfirmware`, by URL path.
    pub downloads_dir: PathBuf,
    /// How many stations `/metrics` reports a last-transmission time for.
    pub metrics_max_stations: usize,
    /// Threads doing file-system work (writes, fsyncs) at once; more
    /// requests wait their turn instead of growing the process.
    pub blocking_threads: usize,
    /// Suffix of files being written; sync jobs skip `*<temp_suffix>`.
    pub temp_suffix: String,
    /// How files are made durable: `fsync` (each file and directory on its
    /// own) or `group` (one file-system flush for many files).
    pub durability: Durability,
    /// Seconds a client may take to send a request's headers; also how long
    /// an idle keep-alive connection is kept open.
    pub header_read_timeout_secs: u64,
    /// Seconds a client may pause while sending the body (between two reads).
    pub body_read_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Temp files older than this many seconds are removed at start.
    pub stale_temp_age_secs: u64,
    /// Value of the `Retry-After` header sent with a 503.
    pub retry_after_secs: u64,
    /// tracing filter: a level (`info`) or directives (`dlsrv=debug,hyper=info`).
    pub log_level: String,
    /// Who may speak for which station: `any`, `login` or `map`.
    pub station_access: StationAccess,
    /// The logins file of `station_access = "map"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logins_file: Option<PathBuf>,
    /// Bytes of request bodies held in memory at once, all requests together.
    pub max_inflight_body_bytes: u64,
    /// Seconds a request waits for room in that budget before a 503.
    pub inflight_wait_secs: u64,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Seconds an upload may take as a whole (besides the pause between reads).
    pub upload_deadline_secs: u64,
    /// Bytes of rejected bodies kept in `state_dir`; beyond, refused bodies are not kept.
    pub rejected_max_bytes: u64,
    /// Free bytes the archive's file system keeps: below, stores answer 503.
    pub min_free_bytes: u64,
    /// Free inodes the archive's file system keeps: below, stores answer 503.
    pub min_free_inodes: u64,
    /// Seconds after which a command handed out and not acknowledged is handed out again.
    pub command_ack_timeout_secs: u64,
    /// The transmission cycle assumed for a station that tells none and has
    /// too few transmissions for a median.
    pub default_cycle_secs: u64,
    /// A station is late after `late_factor` × its cycle plus `late_grace_secs`.
    pub late_factor: f64,
    pub late_grace_secs: u64,
    /// Where the catalog lives: `sqlite` (the file in `state_dir`) or a
    /// `postgresql://…` URL shared by several hosts.
    pub catalog_url: String,
    /// This host's name in a shared catalog (the `host` of its rows).
    pub host_name: String,
    /// Bodies the replicator uploads at once.
    pub replica_concurrency: usize,
    /// Upload bandwidth of the replicator, bytes per second; 0: no cap.
    pub replica_max_bytes_per_sec: u64,
    /// Without a replica: archived bodies older than this many days are
    /// deleted (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Where bodies go besides the local disk (see docs/operations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaConfig>,
    /// Days a station's bodies stay on the local disk (in place of
    /// `keep_local_days` or `retention_days`); 0 keeps them forever.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retention_by_station: BTreeMap<String, u32>,
}

/// `[replica]`: the S3-compatible bucket that holds a copy of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `s3://bucket/prefix`: objects are `<prefix>/<archive relative path>`.
    pub url: String,
    /// The store's address (`http://127.0.0.1:3900`); AWS when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    #[serde(default)]
    pub path_style: bool,
    /// A file with `aws_access_key_id` and `aws_secret_access_key`, readable
    /// only by dlsrv; `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// Bodies older than this many days and verified in the replica leave
    /// the local disk; not set: kept forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_local_days: Option<u32>,
}

/// The machine's host name (its first label), or `localhost`.
fn machine_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .and_then(|n| n.split('.').next().map(str::to_owned))
        .filter(|n| valid_host_name(n))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A host name for a shared catalog: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_host_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Config {
    /// The shared catalog's URL, when the catalog is PostgreSQL.
    pub fn shared_catalog(&self) -> Option<&str> {
        (self.catalog_url != "sqlite").then_some(self.catalog_url.as_str())
    }
}

/// `url` with its password (if any) replaced by `***`, for printing.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl ReplicaConfig {
    /// The bucket and the key prefix (without slashes at either end) of `url`.
    pub fn bucket_and_prefix(&self) -> anyhow::Result<(String, String)> {
        parse_s3_url(&self.url).with_context(|| format!("replica.url {:?}", self.url))
    }
}

/// `s3://bucket/prefix` as bucket and prefix (without slashes at either end).
pub fn parse_s3_url(url: &str) -> anyhow::Result<(String, String)> {
    let Some(rest) = url.strip_prefix("s3://") else {
        bail!("not an s3://bucket/prefix URL");
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        bail!("{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-', '.')");
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        bail!("the prefix {prefix:?} has an empty, '.' or '..' part");
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// Who may speak for which station (see `access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StationAccess {
    /// Every login for every station.
    Any,
    /// The login must equal the `stationid`.
    Login,
    /// `logins_file` maps logins to stations.
    Map,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("./dlsrv.sock"),
            socket_mode: FileMode(0o660),
            socket_group: None,
            listen_backlog: 1024,
            data_dir: PathBuf::from("./data"),
            state_dir: PathBuf::from("./state"),
            max_body_bytes: 4 * 1024 * 1024,
            max_upload_bytes: 64 * 1024 * 1024,
            duplicate_window_days: 7,
            downloads_dir: PathBuf::from("./downloads"),
            metrics_max_stations: 10_000,
            blocking_threads: 32,
            temp_suffix: ".tmp".to_owned(),
            durability: Durability::Fsync,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            shutdown_grace_secs: 20,
            stale_temp_age_secs: 3600,
            retry_after_secs: 60,
            log_level: "info".to_owned(),
            station_access: StationAccess::Any,
            logins_file: None,
            max_inflight_body_bytes: 64 * 1024 * 1024,
            inflight_wait_secs: 5,
            max_connections: 2048,
            upload_deadline_secs: 600,
            rejected_max_bytes: 256 * 1024 * 1024,
            min_free_bytes: 1024 * 1024 * 1024,
            min_free_inodes: 50_000,
            command_ack_timeout_secs: 86_400,
            default_cycle_secs: 3600,
            late_factor: 2.0,
            late_grace_secs: 300,
            catalog_url: "sqlite".to_owned(),
            host_name: machine_name(),
            replica_concurrency: 8,
            replica_max_bytes_per_sec: 0,
            retention_days: None,
            replica: None,
            retention_by_station: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (which must exist when given), then the
    /// `DLSRV_*` environment, and validates the result.
    ///
    /// `station_access` defaults to `"any"` only without a file: a
    /// configuration file that does not say is taken as `"map"`.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let figment = Self::figment(file)?;
        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let said = Self::without_defaults(file)?.contains("station_access");
        if file.is_some() && !said {
            config.station_access = StationAccess::Map;
        }
        config.validate()?;
        Ok(config)
    }

    /// The file and the environment alone, to see what they say themselves.
    fn without_defaults(file: Option<&Path>) -> anyhow::Result<Figment> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        Ok(figment.merge(Env::prefixed(ENV_PREFIX).ignore(&["config", "socket_mode"])))
    }

    /// The providers, in order of precedence (last wins).
    pub fn figment(file: Option<&Path>) -> anyhow::Result<Figment> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            // figment silently skips a missing file; a named one must exist.
            std::fs::metadata(file)
                .with_context(|| format!("cannot read configuration file {}", file.display()))?;
            figment = figment.merge(Toml::file_exact(file));
        }
        // DLSRV_CONFIG names the file (see the CLI); it is not a key.
        // DLSRV_SOCKET_MODE is passed as raw text: figment would read `0640`
        // as the decimal number 640.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&["config", "socket_mode"]));
        if let Ok(mode) = std::env::var(format!("{ENV_PREFIX}SOCKET_MODE")) {
            figment = figment.merge(Serialized::default("socket_mode", mode));
        }
        Ok(figment)
    }

    /// Checks what types alone cannot: ranges, lengths, names that must resolve.
    pub fn validate(&self) -> anyhow::Result<()> {
        let socket_len = self.socket.as_os_str().len();
        if socket_len == 0 {
            bail!("socket: must not be empty");
        }
        if socket_len > MAX_SOCKET_PATH {
            bail!(
                "socket: path {} is {socket_len} bytes, a Unix socket path holds at most {MAX_SOCKET_PATH}",
                self.socket.display()
            );
        }
        if self.socket_mode.0 > 0o777 {
            bail!("socket_mode: {} has bits beyond 0777", self.socket_mode);
        }
        if self.socket_mode.0 & 0o600 != 0o600 {
            bail!(
                "socket_mode: {} must give the owner read and write",
                self.socket_mode
            );
        }
        if let Some(group) = &self.socket_group {
            resolve_group(group).with_context(|| format!("socket_group: {group:?}"))?;
        }
        if !(1..=65535).contains(&self.listen_backlog) {
            bail!(
                "listen_backlog: {} is not in 1..=65535",
                self.listen_backlog
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir: must not be empty");
        }
        if self.state_dir.as_os_str().is_empty() {
            bail!("state_dir: must not be empty");
        }
        let (data, state) = (resolved(&self.data_dir)?, resolved(&self.state_dir)?);
        if data == state {
            bail!(
                "state_dir: {} is data_dir; the service's state must live outside the archive",
                self.state_dir.display()
            );
        }
        if state.starts_with(&data) {
            bail!(
                "state_dir: {} is inside data_dir {}; the service's state must live outside the archive",
                self.state_dir.display(),
                self.data_dir.display()
            );
        }
        if data.starts_with(&state) {
            bail!(
                "state_dir: data_dir {} is inside state_dir {}; keep the two apart",
                self.data_dir.display(),
                self.state_dir.display()
            );
        }
        if self.max_body_bytes == 0 {
            bail!("max_body_bytes: must be at least 1");
        }
        if self.max_upload_bytes == 0 {
            bail!("max_upload_bytes: must be at least 1");
        }
        if self.duplicate_window_days > 366 {
            bail!(
                "duplicate_window_days: {} is more than 366",
                self.duplicate_window_days
            );
        }
        if !(4..=512).contains(&self.blocking_threads) {
            bail!(
                "blocking_threads: {} is not in 4..=512",
                self.blocking_threads
            );
        }
        if self.metrics_max_stations > 1_000_000 {
            bail!(
                "metrics_max_stations: {} is more than 1000000",
                self.metrics_max_stations
            );
        }
        if self.downloads_dir.as_os_str().is_empty() {
            bail!("downloads_dir: must not be empty");
        }
        let suffix = &self.temp_suffix;
        if suffix.len() < 2 || !suffix.starts_with('.') || suffix.contains('/') {
            bail!("temp_suffix: {suffix:?} must start with '.', have a name, and contain no '/'");
        }
        for (key, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            ("stale_temp_age_secs", self.stale_temp_age_secs),
            ("retry_after_secs", self.retry_after_secs),
        ] {
            if secs == 0 || secs > 86_400 * 7 {
                bail!("{key}: {secs} is not in 1..=604800 seconds");
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| anyhow::anyhow!("log_level: {:?}: {e}", self.log_level))?;
        // The logins file itself is read by `crate::access` (at start, on
        // SIGHUP and by `dlsrv check-config`).
        if self.station_access == StationAccess::Map && self.logins_file.is_none() {
            bail!("station_access: \"map\" needs logins_file");
        }
        let body_room = self.max_body_bytes.saturating_add(256 * 1024);
        if self.max_inflight_body_bytes < body_room {
            bail!(
                "max_inflight_body_bytes: {} leaves no room for one body of max_body_bytes ({}); give at least {body_room}",
                self.max_inflight_body_bytes,
                self.max_body_bytes
            );
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!(
                "max_connections: {} is not in 1..=1000000",
                self.max_connections
            );
        }
        for (key, secs) in [
            ("inflight_wait_secs", self.inflight_wait_secs),
            ("upload_deadline_secs", self.upload_deadline_secs),
            ("command_ack_timeout_secs", self.command_ack_timeout_secs),
            ("default_cycle_secs", self.default_cycle_secs),
        ] {
            if secs == 0 || secs > 86_400 * 30 {
                bail!("{key}: {secs} is not in 1..=2592000 seconds");
            }
        }
        if self.default_cycle_secs < 60 {
            bail!(
                "default_cycle_secs: {} is less than a minute",
                self.default_cycle_secs
            );
        }
        if !(1.0..=100.0).contains(&self.late_factor) {
            bail!("late_factor: {} is not in 1.0..=100.0", self.late_factor);
        }
        if self.late_grace_secs > 86_400 {
            bail!(
                "late_grace_secs: {} is more than a day",
                self.late_grace_secs
            );
        }
        let url = &self.catalog_url;
        if url != "sqlite" && !url.starts_with("postgresql://") && !url.starts_with("postgres://") {
            bail!(
                "catalog_url: {:?} is neither \"sqlite\" nor a postgresql:// URL",
                without_password(url)
            );
        }
        if !valid_host_name(&self.host_name) {
            bail!(
                "host_name: {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
                self.host_name
            );
        }
        if !(1..=256).contains(&self.replica_concurrency) {
            bail!(
                "replica_concurrency: {} is not in 1..=256",
                self.replica_concurrency
            );
        }
        if self.retention_days == Some(0) {
            bail!("retention_days: 0 would delete everything; leave it out to keep bodies forever");
        }
        if let Some(replica) = &self.replica {
            replica.bucket_and_prefix()?;
            if replica.keep_local_days == Some(0) {
                bail!(
                    "replica.keep_local_days: must be at least 1 (leave it out to keep bodies forever)"
                );
            }
            if replica.region.is_empty() {
                bail!("replica.region: must not be empty");
            }
            if let Some(endpoint) = &replica.endpoint
                && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            {
                bail!("replica.endpoint: {endpoint:?} is not an http:// or https:// address");
            }
            if self.retention_days.is_some() {
                bail!(
                    "retention_days: with a replica, bodies leave the local disk by replica.keep_local_days \
                     (and stay in the replica); set that instead"
                );
            }
        }
        for station in self.retention_by_station.keys() {
            if station.is_empty() {
                bail!("retention_by_station: an empty station id");
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let shown = Config {
            catalog_url: without_password(&self.catalog_url),
            ..self.clone()
        };
        toml::to_string(&shown).context("cannot render the configuration as TOML")
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn stale_temp_age(&self) -> Duration {
        Duration::from_secs(self.stale_temp_age_secs)
    }
}

/// How the archive makes a file durable before the 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fsync` of each file, then of its directory after the rename.
    Fsync,
    /// Group commit: `syncfs` of the archive's file system, shared by all
    /// files written meanwhile, before and after the renames.
    Group,
}

/// `path` made absolute and free of `.`/`..`, with the part that exists
/// resolved through its symbolic links: two spellings of one directory
/// compare equal.
fn resolved(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(std::ffi::OsStr::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        if name == ".." {
            out.pop();
        } else if name != "." {
            out.push(name);
        }
    }
    Ok(out)
}

/// Resolves a group name or numeric id to a gid.
pub fn resolve_group(group: &str) -> anyhow::Result<nix::unistd::Gid> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => bail!("no such group"),
        Err(e) => bail!("cannot look up the group: {e}"),
    }
}

/// Permission bits written and read as an octal string such as `"0660"`.
///
/// Integers are refused: `660` and `0o660` are different numbers, and only
/// a string says unambiguously what was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_octal(&text)
            .map(FileMode)
            .map_err(serde::de::Error::custom)
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    if digits.is_empty() || digits.len() > 4 {
        return Err(format!("{s:?} is not an octal mode such as \"0660\""));
    }
    u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as \"0660\""))
}

/// `--config FILE` of every subcommand.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArg {
    /// TOML configuration file; `DLSRV_*` environment variables override it.
    #[arg(long, short, env = "DLSRV_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_run_from_a_checkout() {
        Jail::expect_with(|_| {
            let c = Config::load(None).expect("defaults load");
            assert_eq!(c.socket, PathBuf::from("./dlsrv.sock"));
            assert_eq!(c.data_dir, PathBuf::from("./data"));
            assert_eq!(c.state_dir, PathBuf::from("./state"));
            assert_eq!(c.socket_mode, FileMode(0o660));
            assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
            assert_eq!(c.station_access, StationAccess::Any, "no file: any");
            assert_eq!(c.temp_suffix, ".tmp");
            assert_eq!(c.durability, Durability::Fsync);
            Ok(())
        });
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "dlsrv.toml",
                r#"
                socket = "/run/dlsrv/dlsrv.sock"
                data_dir = "/srv/ott"
                socket_mode = "0600"
                max_body_bytes = 1000
                station_access = "login"
                "#,
            )?;
            jail.set_env("DLSRV_DATA_DIR", "/var/lib/dlsrv");
            jail.set_env("DLSRV_SOCKET_MODE", "0640");
            jail.set_env("DLSRV_CONFIG", "ignored-here");
            let c = Config::load(Some(Path::new("dlsrv.toml"))).expect("loads");
            assert_eq!(c.socket, PathBuf::from("/run/dlsrv/dlsrv.sock"));
            assert_eq!(c.data_dir, PathBuf::from("/var/lib/dlsrv"));
            assert_eq!(c.socket_mode, FileMode(0o640), "env wins and is octal");
            assert_eq!(c.max_body_bytes, 1000);
            assert_eq!(c.station_access, StationAccess::Login);
            Ok(())
        });
    }

    #[test]
    fn socket_mode_is_octal_text_only() {
        for (text, mode) in [
            ("0660", 0o660),
            ("660", 0o660),
            ("0o600", 0o600),
            ("0777", 0o777),
        ] {
            assert_eq!(parse_octal(text), Ok(mode), "{text}");
        }
        assert!(load_err("socket_mode = 0o640\n", &[]).contains("socket_mode"));
        assert!(load_err("socket_mode = 660\n", &[]).contains("socket_mode"));
        assert!(load_err("", &[("DLSRV_SOCKET_MODE", "0668")]).contains("socket_mode"));
    }

    /// The error of loading `toml` (access given unless the test is about it).
    fn load_err(toml: &str, env: &[(&str, &str)]) -> String {
        let mut msg = String::new();
        let toml = if toml.contains("station_access") || toml.contains("logins") {
            toml.to_owned()
        } else {
            format!("station_access = \"any\"\n{toml}")
        };
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", &toml)?;
            jail.create_file("bad-logins.toml", "[logins]\nx = []\n")?;
            for (k, v) in env {
                jail.set_env(k, v);
            }
            msg = format!(
                "{:#}",
                Config::load(Some(Path::new("c.toml"))).expect_err("must fail")
            );
            Ok(())
        });
        msg
    }

    #[test]
    fn errors_name_the_key() {
        assert!(load_err("colour = 1\n", &[]).contains("colour"));
        assert!(load_err("", &[("DLSRV_NO_SUCH_KEY", "1")]).contains("no_such_key"));
        assert!(load_err("max_body_bytes = \"big\"\n", &[]).contains("max_body_bytes"));
        assert!(load_err("max_body_bytes = 0\n", &[]).contains("max_body_bytes"));
        assert!(load_err("max_upload_bytes = 0\n", &[]).contains("max_upload_bytes"));
        assert!(load_err("durability = \"sometimes\"\n", &[]).contains("durability"));
        assert!(load_err("duplicate_window_days = 400\n", &[]).contains("duplicate_window_days"));
        assert!(load_err("duplicate_window_days = -1\n", &[]).contains("duplicate_window_days"));
        assert!(load_err("socket_mode = \"0999\"\n", &[]).contains("socket_mode"));
        assert!(load_err("socket_mode = \"0060\"\n", &[]).contains("socket_mode"));
        assert!(load_err("temp_suffix = \"tmp\"\n", &[]).contains("temp_suffix"));
        assert!(load_err("log_level = \"dlsrv=loud\"\n", &[]).contains("log_level"));
        assert!(
            load_err("header_read_timeout_secs = 0\n", &[]).contains("header_read_timeout_secs")
        );
        assert!(load_err("socket_group = \"no-such-group-xyz\"\n", &[]).contains("socket_group"));
        assert!(load_err("state_dir = \"./data\"\n", &[]).contains("state_dir"));
        assert!(load_err("max_connections = 0\n", &[]).contains("max_connections"));
        assert!(
            load_err("max_inflight_body_bytes = 1000\n", &[]).contains("max_inflight_body_bytes")
        );
        assert!(load_err("station_access = \"everyone\"\n", &[]).contains("station_access"));
        assert!(load_err("station_access = \"map\"\n", &[]).contains("logins_file"));
        assert!(load_err("", &[("DLSRV_STATION_ACCESS", "map")]).contains("logins_file"));
        assert!(load_err("state_dir = \"./data/state\"\n", &[]).contains("inside data_dir"));
        assert!(load_err("state_dir = \"data/../data/x\"\n", &[]).contains("inside data_dir"));
        assert!(
            load_err(
                "data_dir = \"/srv/x/archive\"\nstate_dir = \"/srv/x\"\n",
                &[]
            )
            .contains("inside state_dir")
        );
        assert!(load_err("", &[("DLSRV_STATE_DIR", "./data/")]).contains("state_dir"));
        let long = format!("socket = \"/{}\"\n", "s".repeat(120));
        assert!(load_err(&long, &[]).contains("socket"));
    }

    #[test]
    fn missing_named_file_is_an_error() {
        Jail::expect_with(|_| {
            let e = Config::load(Some(Path::new("absent.toml"))).expect_err("must fail");
            assert!(format!("{e:#}").contains("absent.toml"));
            Ok(())
        });
    }

    #[test]
    fn effective_values_round_trip_through_toml() {
        let c = Config {
            socket_group: Some("www-data".into()),
            ..Config::default()
        };
        let text = c.to_toml().expect("renders");
        assert!(text.contains("socket_mode = \"0660\""), "{text}");
        let back: Config = toml::from_str(&text).expect("parses back");
        assert_eq!(back, c);
    }
}
