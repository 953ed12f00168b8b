//! The archive: one file per accepted body at
//! `<data_dir>/<action>/YYYY/MM/DD/<stationid>_<YYYY-MM-DDTHH+MM+SS.ffffff>`
//! (names from [`crate::layout`]), written by [`crate::durable`] before the
//! request is answered.
//!
//! When two bodies would get the same name, the later one's time is moved
//! forward by a microsecond until the name is free, so names stay unique and
//! parseable and nothing is ever overwritten.
//!
//! Everything here blocks: call it from the blocking pool, never from the reactor.

use std::io;
use std::path::{Path, PathBuf};

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;

use crate::config::Durability;
use crate::durable::{DurableDir, Options, TempFile};
use crate::layout;

/// How many times a name is moved forward by a microsecond before giving up.
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// A body stored in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) path: PathBuf,
    /// The path relative to `data_dir`, as the catalog records it.
    pub(crate) relative: String,
    /// The receipt time the name carries (moved forward on a collision).
    pub(crate) received: DateTime<Utc>,
}

/// The archive rooted at `data_dir`.
#[derive(Debug)]
pub(crate) struct Archive {
    dir: DurableDir,
}

impl Archive {
    /// Opens (creating if needed) the archive at `root` and checks that a
    /// file can be created, synced and removed there.
    /// `flushes` counts group commit's flushes (when `durability` is group).
    pub(crate) fn open(
        root: &Path,
        temp_suffix: &str,
        durability: Durability,
        flushes: Counter<u64, AtomicU64>,
    ) -> anyhow::Result<Archive> {
        let options = Options {
            temp_suffix,
            group: (durability == Durability::Group).then_some(flushes),
            // Operators link action directories to other volumes.
            follow_links: true,
            what: "data_dir",
        };
        Ok(Archive {
            dir: DurableDir::open(root, options)?,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.root()
    }

    pub(crate) fn temp_suffix(&self) -> &str {
        self.dir.temp_suffix()
    }

    /// File-system flushes so far, in group-commit mode.
    pub(crate) fn group_flushes(&self) -> Option<u64> {
        self.dir.group_flushes()
    }

    /// Stores `body` for `station` under `action`, durably, without ever
    /// overwriting. On error nothing of this body is left in the archive.
    pub(crate) fn store(
        &self,
        action: &str,
        station: &str,
        received: DateTime<Utc>,
        body: &[u8],
    ) -> io::Result<Stored> {
        let mut temp = self.begin(action, station, received)?;
        temp.write_all(body)?;
        self.commit(temp, action, station, received)
    }

    /// Starts a body written piece by piece: a temp file in the day
    /// directory of `started`, to be [`Archive::commit`]ted. Dropped
    /// uncommitted, it removes itself.
    pub(crate) fn begin(
        &self,
        action: &str,
        station: &str,
        started: DateTime<Utc>,
    ) -> io::Result<TempFile> {
        self.dir.begin(
            &layout::day_dir(action, started),
            &layout::file_name(station, started),
        )
    }

    /// Makes a written temp file durable under the name of `received`,
    /// moved forward on a collision. On error it is removed.
    pub(crate) fn commit(
        &self,
        temp: TempFile,
        action: &str,
        station: &str,
        received: DateTime<Utc>,
    ) -> io::Result<Stored> {
        let at = |attempt: u32| received + chrono::Duration::microseconds(i64::from(attempt));
        let (path, attempt) = self.dir.commit(temp, |attempt| {
            (attempt < MAX_NAME_ATTEMPTS).then(|| {
                let t = at(attempt);
                (layout::day_dir(action, t), layout::file_name(station, t))
            })
        })?;
        Ok(Stored {
            relative: layout::relative(self.root(), &path),
            path,
            received: at(attempt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::fs;

    fn t(us: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 10, 22, 0, 1, 6)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(us)
    }

    fn open(dir: &Path) -> Archive {
        Archive::open(dir, ".tmp", Durability::Fsync, Counter::default()).expect("open")
    }

    #[test]
    fn stores_bytes_exactly_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = open(dir.path());
        let body = b"<?xml?><x unit=\"\xb0C\"/>\x00\xff";
        let stored = archive
            .store("senddata", "0000452891", t(209_619), body)
            .expect("store");
        assert_eq!(
            stored.relative,
            "senddata/2020/10/22/0000452891_2020-10-22T00+01+06.209619"
        );
        assert_eq!(stored.path, archive.root().join(&stored.relative));
        assert_eq!(fs::read(&stored.path).expect("read"), body);
        let names: Vec<_> = fs::read_dir(stored.path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn same_name_moves_forward_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = open(dir.path());
        let a = archive.store("senddata", "s", t(5), b"first").expect("a");
        let b = archive.store("senddata", "s", t(5), b"second").expect("b");
        let c = archive.store("senddata", "s", t(5), b"third").expect("c");
        assert_eq!((a.received, b.received, c.received), (t(5), t(6), t(7)));
        assert_eq!(fs::read(&a.path).expect("a"), b"first");
        assert_eq!(fs::read(&b.path).expect("b"), b"second");
        assert_eq!(fs::read(&c.path).expect("c"), b"third");
    }

    #[test]
    fn collision_at_midnight_moves_into_the_next_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = open(dir.path());
        let last = Utc
            .with_ymd_and_hms(2020, 12, 31, 23, 59, 59)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(999_999);
        archive.store("senddata", "s", last, b"1").expect("first");
        let second = archive.store("senddata", "s", last, b"2").expect("second");
        assert_eq!(
            second.relative,
            "senddata/2021/01/01/s_2021-01-01T00+00+00.000000"
        );
    }

    #[test]
    fn a_vanished_day_directory_is_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = open(dir.path());
        archive.store("senddata", "s", t(1), b"1").expect("first");
        fs::remove_dir_all(archive.root().join("senddata")).expect("operator deletes");
        let again = archive.store("senddata", "s", t(2), b"2").expect("second");
        assert_eq!(fs::read(again.path).expect("read"), b"2");
    }

    #[test]
    fn failure_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = open(dir.path());
        // A regular file where the action directory should be.
        fs::write(archive.root().join("senddata"), b"not a dir").expect("write");
        let err = archive
            .store("senddata", "s", t(1), b"body")
            .expect_err("must fail");
        assert!(err.to_string().contains("senddata"), "{err}");
        assert_eq!(
            fs::read(archive.root().join("senddata")).expect("kept"),
            b"not a dir"
        );
        assert_eq!(fs::read_dir(archive.root()).expect("list").count(), 1);
    }
}
