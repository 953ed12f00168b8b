//! The replica: an S3-compatible bucket that holds a copy of the archive
//! under the archive's own relative paths (`<prefix>/<action>/YYYY/MM/DD/
//! <station>_<time>`), so the bucket *is* the archive.
//!
//! [`Store`] is the one way to it (aws-sdk-s3, see the README): every PUT
//! carries the body's SHA-256 as the S3 checksum (`x-amz-checksum-sha256`,
//! which the store checks and keeps) and `If-None-Match: *`; as some stores
//! overwrite anyway, callers look first ([`Store::head`] with checksum mode)
//! and never write over an object. Bodies above [`MULTIPART_ABOVE`] go in
//! parts of [`PART_BYTES`]; their object checksum is S3's composite one
//! (the SHA-256 of the parts' SHA-256s, `-N`), which [`checksum_of`]
//! computes from the body the same way.
//!
//! The replicator ([`replicate`], `dlsrv replicate`) runs in its own unit
//! beside the service: intake never waits for the store.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::{Config, ReplicaConfig};

pub(crate) mod replicate;
pub(crate) mod retention;

/// Bodies larger than this go up in parts.
pub(crate) const MULTIPART_ABOVE: usize = 16 << 20;
/// The size of each part but the last.
pub(crate) const PART_BYTES: usize = 8 << 20;

/// Why a request to the store failed, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// No connection (refused, reset, DNS).
    Unreachable,
    /// No answer in time.
    Timeout,
    /// 401/403: credentials or the bucket's policy.
    Denied,
    /// The store is out of room or over a quota.
    Full,
    /// 5xx.
    Server,
    /// Any other answer the store gave (a 4xx, an unreadable answer).
    Refused,
    /// An object holds other bytes than the body of its path.
    Conflict,
    /// The local body is missing or differs from the catalog.
    Local,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Unreachable => "unreachable",
            Kind::Timeout => "timeout",
            Kind::Denied => "denied",
            Kind::Full => "full",
            Kind::Server => "server",
            Kind::Refused => "refused",
            Kind::Conflict => "conflict",
            Kind::Local => "local",
        }
    }

    pub(crate) const ALL: [Kind; 8] = [
        Kind::Unreachable,
        Kind::Timeout,
        Kind::Denied,
        Kind::Full,
        Kind::Server,
        Kind::Refused,
        Kind::Conflict,
        Kind::Local,
    ];
}

/// A failed request to the store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct StoreError {
    pub(crate) kind: Kind,
    pub(crate) message: String,
}

impl StoreError {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// The store's own trouble, which passes: worth another try later.
    pub(crate) fn transient(&self) -> bool {
        !matches!(self.kind, Kind::Conflict | Kind::Local)
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default().to_owned();
    let kind = match (&e, status) {
        (SdkError::TimeoutError(_), _) => Kind::Timeout,
        (SdkError::DispatchFailure(d), _) if d.is_timeout() => Kind::Timeout,
        (SdkError::DispatchFailure(_), _) => Kind::Unreachable,
        (_, Some(401 | 403)) => Kind::Denied,
        (_, Some(507)) => Kind::Full,
        _ if matches!(
            code.as_str(),
            "QuotaExceeded" | "InsufficientStorage" | "NotEnoughSpace"
        ) =>
        {
            Kind::Full
        }
        (_, Some(500..=599)) => Kind::Server,
        _ => Kind::Refused,
    };
    let detail = aws_sdk_s3::error::DisplayErrorContext(&e);
    let message = match status {
        Some(s) => format!("{what}: HTTP {s} {code}: {detail}"),
        None => format!("{what}: {detail}"),
    };
    StoreError::new(kind, message)
}

/// An object as `HEAD` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) size: u64,
    /// `x-amz-checksum-sha256` (base64, `-N` for a composite one).
    pub(crate) checksum: Option<String>,
}

/// The S3 checksum an object of `body` has when dlsrv uploads it.
pub(crate) fn checksum_of(body: &[u8]) -> String {
    if body.len() <= MULTIPART_ABOVE {
        return b64(&Sha256::digest(body));
    }
    let mut parts = Sha256::new();
    let mut n = 0;
    for part in body.chunks(PART_BYTES) {
        parts.update(Sha256::digest(part));
        n += 1;
    }
    format!("{}-{n}", b64(&parts.finalize()))
}

/// The S3 checksum of a single-part object whose SHA-256 is `sha256_hex`;
/// `None` for a body that goes up in parts (its checksum needs the bytes).
pub(crate) fn checksum_of_sha(sha256_hex: &str, size: u64) -> Option<String> {
    if size > MULTIPART_ABOVE as u64 {
        return None;
    }
    hex::decode(sha256_hex).ok().map(|d| b64(&d))
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// Whether `body` is what an object with `head`'s checksum holds; `None`
/// when the object has no checksum to compare.
pub(crate) fn matches(head: &Head, body: &[u8]) -> Option<bool> {
    let checksum = head.checksum.as_deref()?;
    Some(head.size == body.len() as u64 && checksum == checksum_of(body))
}

/// The key and secret, from the environment or `credentials_file`.
#[derive(Clone)]
struct Secret {
    key_id: String,
    secret: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Secret {{ key_id: {:?}, secret: <hidden> }}",
            self.key_id
        )
    }
}

/// Reads the credentials: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
/// when both are set, else `credentials_file` (which must belong to this
/// user, or be read by root, and be readable by no one but its owner).
/// Returns where they came from.
fn credentials(replica: &ReplicaConfig) -> anyhow::Result<(Secret, String)> {
    if let (Ok(key_id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) && !key_id.is_empty()
        && !secret.is_empty()
    {
        return Ok((Secret { key_id, secret }, "the environment".into()));
    }
    let Some(path) = &replica.credentials_file else {
        bail!(
            "replica: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or replica.credentials_file"
        );
    };
    let secret = read_credentials_file(path)
        .with_context(|| format!("replica.credentials_file {}", path.display()))?;
    Ok((secret, path.display().to_string()))
}

fn read_credentials_file(path: &Path) -> anyhow::Result<Secret> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Checked and read through one handle, not through a link.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .context("cannot read it (a symbolic link is refused)")?;
    let meta = file.metadata().context("cannot read it")?;
    if !meta.file_type().is_file() {
        bail!("not a plain file");
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "mode {:04o} lets others read it: chmod 0600 (or 0400)",
            meta.mode() & 0o7777
        );
    }
    // root (an operator's `sudo dlsrv check-config`) may read dlsrv's file.
    let me = nix::unistd::geteuid();
    if !me.is_root() && meta.uid() != me.as_raw() {
        bail!(
            "it belongs to uid {}, not to this user (uid {}): chown it to the user dlsrv runs as",
            meta.uid(),
            me
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text).context("cannot read it")?;
    // The AWS shared-credentials format: `key = value` lines, `[profile]`
    // headers and `#` comments (only the keys below count).
    let (mut key_id, mut secret) = (None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "aws_access_key_id" => key_id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(key_id), Some(secret)) if !key_id.is_empty() && !secret.is_empty() => {
            Ok(Secret { key_id, secret })
        }
        _ => bail!("needs the lines aws_access_key_id = … and aws_secret_access_key = …"),
    }
}

/// The bucket, as dlsrv talks to it.
#[derive(Clone)]
pub(crate) struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl Store {
    /// The replica of `config`, when it has one.
    pub(crate) fn of(config: &Config) -> anyhow::Result<Option<Store>> {
        let Some(replica) = &config.replica else {
            return Ok(None);
        };
        let (bucket, prefix) = replica.bucket_and_prefix()?;
        Ok(Some(Store::open(replica, bucket, prefix)?))
    }

    /// Another bucket or prefix (`s3://…` of `--output`) of the same store.
    pub(crate) fn at(config: &Config, url: &str) -> anyhow::Result<Store> {
        let Some(replica) = &config.replica else {
            bail!("{url}: an s3:// output uses the store of [replica]; the configuration has none");
        };
        let (bucket, prefix) = crate::config::parse_s3_url(url).with_context(|| url.to_owned())?;
        Store::open(replica, bucket, prefix)
    }

    fn open(replica: &ReplicaConfig, bucket: String, prefix: String) -> anyhow::Result<Store> {
        let (secret, _) = credentials(replica)?;
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(replica.region.clone()))
            .force_path_style(replica.path_style)
            .credentials_provider(Credentials::new(
                secret.key_id,
                secret.secret,
                None,
                None,
                "dlsrv",
            ))
            // dlsrv sets the SHA-256 itself and checks what it reads.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(endpoint) = &replica.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket,
            prefix,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub(crate) fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The key of an archive path (relative to `data_dir`).
    pub(crate) fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// The archive path of a key (`None` outside the prefix).
    pub(crate) fn rel<'a>(&self, key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    /// The object at `rel`, if there is one.
    pub(crate) async fn head(&self, rel: &str) -> Result<Option<Head>, StoreError> {
        let result = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(rel))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(Head {
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                checksum: out.checksum_sha256().map(str::to_owned),
            })),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(classify(&format!("HEAD {}", self.key(rel)), e)),
        }
    }

    /// Uploads `body` to `rel` unless an object is there (`Ok(false)`: the
    /// store said so with 412; look again with [`Store::head`]).
    pub(crate) async fn put_new(&self, rel: &str, body: Bytes) -> Result<bool, StoreError> {
        let sha_hex = hex::encode(Sha256::digest(&body));
        if body.len() > MULTIPART_ABOVE {
            return self.put_parts(rel, body, &sha_hex).await;
        }
        let key = self.key(rel);
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_sha256(checksum_of(&body))
            .metadata("sha256", &sha_hex)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if precondition_failed(e.raw_response()) => Ok(false),
            Err(e) => Err(classify(&format!("PUT {key}"), e)),
        }
    }

    async fn put_parts(&self, rel: &str, body: Bytes, sha_hex: &str) -> Result<bool, StoreError> {
        let key = self.key(rel);
        let what = format!("PUT {key} (in parts)");
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata("sha256", sha_hex)
            .send()
            .await
            .map_err(|e| classify(&what, e))?;
        let id = upload.upload_id().unwrap_or_default().to_owned();
        let result = self.send_parts(&key, &id, &body).await;
        match result {
            Ok(parts) => {
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&id)
                    .if_none_match("*")
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match done {
                    Ok(_) => Ok(true),
                    Err(e) if precondition_failed(e.raw_response()) => {
                        self.abort(&key, &id).await;
                        Ok(false)
                    }
                    Err(e) => {
                        self.abort(&key, &id).await;
                        Err(classify(&what, e))
                    }
                }
            }
            Err(e) => {
                self.abort(&key, &id).await;
                Err(classify(&what, e))
            }
        }
    }

    async fn send_parts(
        &self,
        key: &str,
        id: &str,
        body: &Bytes,
    ) -> Result<
        Vec<CompletedPart>,
        SdkError<
            aws_sdk_s3::operation::upload_part::UploadPartError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    > {
        let mut parts = Vec::new();
        for (i, start) in (0..body.len()).step_by(PART_BYTES).enumerate() {
            let part = body.slice(start..(start + PART_BYTES).min(body.len()));
            let checksum = b64(&Sha256::digest(&part));
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .checksum_sha256(&checksum)
                .body(ByteStream::from(part))
                .send()
                .await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .checksum_sha256(checksum)
                    .build(),
            );
        }
        Ok(parts)
    }

    async fn abort(&self, key: &str, id: &str) {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await;
    }

    /// The bytes of the object at `rel`, checked against its S3 checksum
    /// (or, without one, its `sha256` metadata); `None` when there is none.
    pub(crate) async fn get(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        let key = self.key(rel);
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None);
            }
            Err(e) => return Err(classify(&format!("GET {key}"), e)),
        };
        let checksum = out.checksum_sha256().map(str::to_owned);
        let meta_sha = out.metadata().and_then(|m| m.get("sha256")).cloned();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::new(Kind::Unreachable, format!("GET {key}: {e}")))?
            .into_bytes();
        let ok = match (&checksum, &meta_sha) {
            (Some(c), _) => *c == checksum_of(&body),
            (None, Some(sha)) => *sha == hex::encode(Sha256::digest(&body)),
            (None, None) => {
                return Err(StoreError::new(
                    Kind::Conflict,
                    format!("GET {key}: the object has no checksum to check it against"),
                ));
            }
        };
        if !ok {
            return Err(StoreError::new(
                Kind::Conflict,
                format!("GET {key}: the bytes read do not match the object's checksum"),
            ));
        }
        Ok(Some(body))
    }

    /// Up to 1,000 objects under `sub` (a path relative to the prefix, or
    /// "" for all) after the key of `after`, as archive paths with their
    /// sizes, in key order; empty at the end.
    pub(crate) async fn list_page(
        &self,
        sub: &str,
        after: Option<&str>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = match (self.prefix.is_empty(), sub.is_empty()) {
            (true, _) => sub.to_owned(),
            (false, true) => format!("{}/", self.prefix),
            (false, false) => format!("{}/{sub}", self.prefix),
        };
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .set_start_after(after.map(|rel| self.key(rel)))
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| classify(&format!("LIST {prefix}"), e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|object| {
                let rel = object.key().and_then(|k| self.rel(k))?;
                let size = object
                    .size()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0);
                Some((rel.to_owned(), size))
            })
            .collect())
    }

    /// Uploads a file of an export (overwriting: outputs are not the archive).
    pub(crate) async fn put_file(&self, rel: &str, body: Bytes) -> Result<(), StoreError> {
        let key = self.key(rel);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_sha256(b64(&Sha256::digest(&body)))
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("PUT {key}"), e))
    }
}

fn precondition_failed(r: Option<&aws_sdk_s3::config::http::HttpResponse>) -> bool {
    r.is_some_and(|r| matches!(r.status().as_u16(), 409 | 412))
}

/// A [`Store`] for code that is not async (exports, verify, restore): its
/// own small runtime.
pub(crate) struct Blocking {
    pub(crate) store: Store,
    runtime: tokio::runtime::Runtime,
}

impl Blocking {
    pub(crate) fn new(store: Store) -> anyhow::Result<Blocking> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dlsrv-s3")
            .enable_all()
            .build()
            .context("cannot start the runtime for the replica")?;
        Ok(Blocking { store, runtime })
    }

    pub(crate) fn of(config: &Config) -> anyhow::Result<Option<Blocking>> {
        Store::of(config)?.map(Blocking::new).transpose()
    }

    /// Calls `f` with each page of the bucket's objects under the prefix
    /// (archive paths with sizes, in key order), until the last page.
    pub(crate) fn each_page(
        &self,
        mut f: impl FnMut(Vec<(String, u64)>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .run(self.store.list_page("", after.as_deref()))
                .with_context(|| format!("cannot list {}", self.store.url()))?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            f(page)?;
        }
    }

    /// Runs a request (or several) to the store to its end.
    pub(crate) fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }
}

/// How far behind the replica is, as the catalog tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Lag {
    /// Local bodies not yet in the replica.
    pub(crate) pending: u64,
    /// Seconds since the oldest of them was received (0: none waits).
    pub(crate) seconds: f64,
    /// Bodies the replicator will not copy (`replica_error`).
    pub(crate) refused: u64,
}

pub(crate) fn lag(
    conn: &rusqlite::Connection,
    now: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<Lag> {
    let backlog = crate::catalog::places::backlog(conn)?;
    Ok(Lag {
        pending: backlog.pending,
        seconds: backlog
            .oldest
            .as_deref()
            .and_then(crate::layout::parse_time)
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        refused: backlog.refused,
    })
}

/// `check-config`'s word on the replica: where its credentials come from
/// (never what they are).
pub(crate) fn describe(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(replica) = &config.replica else {
        return Ok(None);
    };
    let (bucket, prefix) = replica.bucket_and_prefix()?;
    let (_, from) = credentials(replica)?;
    Ok(Some(format!(
        "replica s3://{bucket}/{prefix} at {}, credentials from {from}",
        replica.endpoint.as_deref().unwrap_or("AWS")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_s3s_full_and_composite_ones() {
        // Garage 2.5.0 answered these for the same bodies.
        assert_eq!(
            checksum_of(b"hello world"),
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
        );
        let big = vec![7u8; 17 << 20];
        let c = checksum_of(&big);
        assert!(c.ends_with("-3"), "{c}");
        assert_eq!(
            checksum_of_sha(&hex::encode(Sha256::digest(b"hello world")), 11).as_deref(),
            Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
        );
        assert_eq!(checksum_of_sha("00", big.len() as u64), None);
    }

    #[test]
    fn credentials_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s3");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = GK1\naws_secret_access_key = s3cr3t\n",
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = format!("{:#}", read_credentials_file(&path).expect_err("0644"));
        assert!(e.contains("0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = read_credentials_file(&path).expect("0600");
        assert_eq!((s.key_id.as_str(), s.secret.as_str()), ("GK1", "s3cr3t"));
        assert!(!format!("{s:?}").contains("s3cr3t"), "never printed");
        std::fs::write(&path, "aws_access_key_id = GK1\n").expect("write");
        assert!(read_credentials_file(&path).is_err());
    }

    #[test]
    fn keys_are_archive_paths_under_the_prefix() {
        let store = Store {
            client: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new("garage"))
                    .build(),
            ),
            bucket: "archive".into(),
            prefix: "net-a".into(),
        };
        let rel = "senddata/2026/12/05/0001_20261205T081500Z";
        assert_eq!(store.key(rel), format!("net-a/{rel}"));
        assert_eq!(store.rel(&store.key(rel)), Some(rel));
        assert_eq!(store.rel("net-b/x"), None);
        assert_eq!(store.url(), "s3://archive/net-a");
    }
}
