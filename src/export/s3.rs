//! `--format parquet --output s3://bucket/prefix [--partition …]`: the
//! Parquet is written as it is for a local output, into the export's own
//! directory in `state_dir`, then uploaded with the [replica]'s endpoint and
//! credentials (each object with its SHA-256 as the S3 checksum).
//!
//! A partitioned dataset goes under a prefix that must hold nothing yet
//! (as a local one must be a new directory); its `_SUCCESS` object is
//! written last, so a reader can tell a complete dataset from one whose
//! upload was cut short. A single file goes to the URL's key.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::replica::{Blocking, Store};

pub(super) struct Upload {
    replica: Blocking,
    /// The key of a single file (no partition).
    key: Option<String>,
    local: PathBuf,
    url: String,
}

impl Upload {
    /// Checks the target; the Parquet goes to [`Upload::local`] first.
    pub(super) fn prepare(
        config: &Config,
        url: &str,
        partitioned: bool,
        work: &Path,
    ) -> anyhow::Result<Upload> {
        let local = work.join("dataset");
        if partitioned {
            let replica = Blocking::new(Store::at(config, url)?)?;
            let existing = replica
                .run(replica.store.list_page("", None))
                .with_context(|| format!("cannot list {url}"))?;
            if !existing.is_empty() {
                anyhow::bail!("{url} holds objects: a partitioned export writes a new prefix");
            }
            return Ok(Upload {
                replica,
                key: None,
                local,
                url: url.to_owned(),
            });
        }
        let (bucket, key) = crate::config::parse_s3_url(url).with_context(|| url.to_owned())?;
        if key.is_empty() {
            anyhow::bail!("{url}: name the object (s3://bucket/path/file.parquet)");
        }
        let replica = Blocking::new(Store::at(config, &format!("s3://{bucket}"))?)?;
        Ok(Upload {
            replica,
            key: Some(key),
            local,
            url: url.to_owned(),
        })
    }

    pub(super) fn local(&self) -> &Path {
        &self.local
    }

    /// Uploads what was written; returns the words for the summary line.
    pub(super) fn finish(self) -> anyhow::Result<String> {
        let mut files = Vec::new();
        match &self.key {
            Some(key) => files.push((key.clone(), self.local.clone())),
            None => walk(&self.local, &self.local, &mut files)?,
        }
        files.sort();
        let mut bytes = 0;
        for (rel, path) in &files {
            let body =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            bytes += body.len();
            self.replica
                .run(self.replica.store.put_file(rel, body.into()))
                .with_context(|| format!("cannot upload to {}", self.url))?;
        }
        if self.key.is_none() {
            self.replica
                .run(self.replica.store.put_file("_SUCCESS", Vec::new().into()))
                .with_context(|| format!("cannot upload to {}", self.url))?;
        }
        Ok(format!(
            ", {} files ({bytes} bytes) uploaded to {}",
            files.len(),
            self.url
        ))
    }
}

/// The files under `dir`, as keys relative to `root` with their paths.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = crate::layout::relative(root, &path);
            out.push((rel, path));
        }
    }
    Ok(())
}
