//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`):
//! each runs one parser or decoder on arbitrary input and panics when a
//! property it must keep is broken. The modules they reach stay private.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::decode::{Decoder, Encoding};
use crate::request::Action;
use crate::request::{OttQuery, StationId};

/// `OttQuery::parse`: accepts only a valid station id and a known action;
/// every refusal is a 4xx.
pub fn query(query: &str) {
    match OttQuery::parse(Some(query)) {
        Ok(q) => {
            let id = q.station.as_str();
            assert!(!id.is_empty() && id.len() <= 64, "{id:?}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id:?}"
            );
            assert!(Action::ALL.contains(&q.action));
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
}

/// `StationId::parse`: accepts exactly 1-64 of `A-Z a-z 0-9 _ -`, as given.
pub fn station_id(raw: &[u8]) {
    let valid = (1..=StationId::MAX_LEN).contains(&raw.len())
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    match StationId::parse(raw) {
        Ok(id) => {
            assert!(valid, "accepted {raw:?}");
            assert_eq!(id.as_str().as_bytes(), raw);
        }
        Err(e) => {
            assert!(!valid, "refused {raw:?}: {e}");
            assert!(e.status().is_client_error());
        }
    }
}

/// `layout`'s names: one path component that parses back to the station and
/// the exact time, below a day directory of plain components.
pub fn file_name(micros: i64, raw: &[u8]) {
    let Ok(station) = StationId::parse(raw) else {
        return;
    };
    let Some(time) = DateTime::<Utc>::from_timestamp_micros(micros) else {
        return; // outside chrono's range of years
    };
    let name = crate::layout::file_name(station.as_str(), time);
    assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
    assert!(!name.contains(['/', '\0', ':']), "{name:?}");
    assert_eq!(
        crate::layout::parse_file_name(&name),
        Some((station.as_str(), time)),
        "{name:?}"
    );
    let day = crate::layout::day_dir("senddata", time);
    let parts: Vec<_> = day.components().collect();
    assert_eq!(parts.len(), 4, "{day:?}");
    assert!(
        parts
            .iter()
            .all(|c| matches!(c, std::path::Component::Normal(_))),
        "{day:?}"
    );
}

/// The XML check: a root when accepted, the same findings whatever root is
/// asked for, a reason when refused.
pub fn xml(body: &[u8]) {
    let limits = crate::xml::Limits::default();
    let inspected = crate::xml::inspect(body);
    if let Ok(doc) = &inspected {
        assert!(!doc.root.is_empty());
    }
    for root in ["StationDataList", "AlarmMessage", "Response"] {
        match crate::xml::check(body, root, &limits) {
            Ok(doc) => {
                assert_eq!(doc.root, root);
                assert_eq!(inspected.as_ref().ok(), Some(&doc));
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
}

/// The decoder, fed in pieces of `piece` bytes into a bounded memory sink:
/// never more than `limit` bytes out; identity returns the body unchanged;
/// `Encoding::parse` accepts only the codings it names.
pub fn decode(which: u8, limit: u16, piece: u8, data: &[u8]) {
    let limit = usize::from(limit % 4097);
    let coding = [Encoding::Identity, Encoding::Deflate, Encoding::Gzip][usize::from(which % 3)];
    let mut decoder = Decoder::new(coding, Bounded(Vec::new(), limit));
    let fed = data
        .chunks(usize::from(piece).max(1))
        .try_for_each(|chunk| decoder.write_all(chunk));
    if let Ok(Bounded(out, _)) = fed.and_then(|()| decoder.finish()) {
        assert!(out.len() <= limit, "{} > {limit}", out.len());
        if coding == Encoding::Identity && data.len() <= limit {
            assert_eq!(Bytes::from(out), Bytes::copy_from_slice(data));
        }
    }
    if let Ok(coding) = Encoding::parse(Some(data)) {
        let name = String::from_utf8_lossy(data).trim().to_ascii_lowercase();
        assert!(
            ["", "identity", "deflate", "gzip", "x-gzip"].contains(&name.as_str()),
            "{name:?} parsed as {coding:?}"
        );
    }
}

/// A sink that refuses what goes beyond its limit, as the intake's does.
struct Bounded(Vec<u8>, usize);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > self.1 {
            return Err(std::io::Error::other("over the limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
