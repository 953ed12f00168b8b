//! Rows as records: the bytes the export sorts, spills and merges.
//!
//! A record is one row of the output, already formatted by the thread
//! that parsed its body, behind the key it sorts and collapses by:
//!
//! ```text
//! u32 length of the rest · u16 key length · u16 group length · u8 flags · key · payload
//! ```
//!
//! The key is the station, the channel (the *group*: a ZRXP block), then
//! the time (and for an event its type, code and text), encoded so that
//! comparing the bytes compares the fields in that order: each text ends in
//! `00 00` (a `00` inside it is written `00 FF`), a UTC time is `01` and its
//! microseconds (big-endian, sign bit flipped), a time only as written is
//! `02` and that text, so every UTC time sorts before it. Two records with
//! the same key are copies of one value; a record flagged [`NO_COLLAPSE`]
//! (a value without a usable time) is a copy of nothing.

use chrono::{DateTime, Utc};

/// Never a copy of another record: a value without a usable time.
pub(super) const NO_COLLAPSE: u8 = 1;
/// Counted, not written: the format has no place for the row.
pub(super) const LEFT_OUT: u8 = 2;

const HEAD: usize = 4 + 2 + 2 + 1;

/// One record, borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rec<'a> {
    pub(super) flags: u8,
    pub(super) key: &'a [u8],
    pub(super) group_len: usize,
    pub(super) payload: &'a [u8],
}

impl<'a> Rec<'a> {
    pub(super) fn group(&self) -> &'a [u8] {
        &self.key[..self.group_len.min(self.key.len())]
    }

    /// The whole record's length in its buffer.
    pub(super) fn len(&self) -> usize {
        HEAD + self.key.len() + self.payload.len()
    }

    /// Whether `other` is a copy of the same value (and so replaces it).
    pub(super) fn same_value(&self, other: &Rec<'_>) -> bool {
        self.flags & NO_COLLAPSE == 0 && other.flags & NO_COLLAPSE == 0 && self.key == other.key
    }

    /// Writes this record to `w`, as it was.
    pub(super) fn write_to_io(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.encoded_head())?;
        w.write_all(self.key)?;
        w.write_all(self.payload)
    }

    fn encoded_head(&self) -> [u8; HEAD] {
        let rest = (self.len() - 4) as u32;
        let mut head = [0u8; HEAD];
        head[..4].copy_from_slice(&rest.to_le_bytes());
        head[4..6].copy_from_slice(&(self.key.len() as u16).to_le_bytes());
        head[6..8].copy_from_slice(&(self.group_len as u16).to_le_bytes());
        head[8] = self.flags;
        head
    }
}

/// The record at `at` in `buf`; `None` at the end or on a damaged buffer
/// (never: only this module writes them).
pub(super) fn read(buf: &[u8], at: usize) -> Option<Rec<'_>> {
    let head = buf.get(at..at + HEAD)?;
    let rest = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let key_len = u16::from_le_bytes(head[4..6].try_into().ok()?) as usize;
    let group_len = u16::from_le_bytes(head[6..8].try_into().ok()?) as usize;
    let body = buf.get(at + HEAD..at + 4 + rest)?;
    let (key, payload) = body.split_at_checked(key_len)?;
    Some(Rec {
        flags: head[8],
        key,
        group_len,
        payload,
    })
}

/// Where the key is in a record that starts at 0.
pub(super) fn key_range(buf: &[u8]) -> std::ops::Range<usize> {
    match read(buf, 0) {
        Some(rec) => HEAD..HEAD + rec.key.len(),
        None => 0..0,
    }
}

/// Builds records into a buffer: a key, then its payload.
#[derive(Debug, Default)]
pub(super) struct Builder {
    start: usize,
    key_end: usize,
    group_len: usize,
}

impl Builder {
    /// Starts a record at the end of `out`.
    pub(super) fn begin(out: &mut Vec<u8>) -> Builder {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEAD]);
        Builder {
            start,
            key_end: 0,
            group_len: 0,
        }
    }

    /// The key so far is the group (station and channel).
    pub(super) fn group_ends(&mut self, out: &[u8]) {
        self.group_len = out.len() - self.start - HEAD;
    }

    /// The key is complete; the payload follows.
    pub(super) fn key_ends(&mut self, out: &[u8]) {
        self.key_end = out.len();
    }

    /// Closes the record: its lengths and flags into its head.
    pub(super) fn finish(self, out: &mut [u8], flags: u8) {
        let rest = (out.len() - self.start - 4) as u32;
        let key_len = (self.key_end - self.start - HEAD) as u16;
        let head = &mut out[self.start..self.start + HEAD];
        head[..4].copy_from_slice(&rest.to_le_bytes());
        head[4..6].copy_from_slice(&key_len.to_le_bytes());
        head[6..8].copy_from_slice(&(self.group_len as u16).to_le_bytes());
        head[8] = flags;
    }
}

/// Bytes of a text that count in a key: an event's text beyond them does
/// not tell two events apart (keys stay short, their length fits a `u16`).
const KEY_TEXT_MAX: usize = 4096;

/// A text in a key: its order is the text's byte order.
pub(super) fn key_text(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(KEY_TEXT_MAX)];
    for &b in s {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// A time in a key: the UTC instant, else the time as written.
pub(super) fn key_time(out: &mut Vec<u8>, utc: Option<DateTime<Utc>>, local: &str) {
    match utc {
        Some(t) => {
            out.push(1);
            let flipped = (t.timestamp_micros() as u64) ^ (1 << 63);
            out.extend_from_slice(&flipped.to_be_bytes());
        }
        None => {
            out.push(2);
            key_text(out, local);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&str], utc: Option<i64>, local: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            key_text(&mut out, p);
        }
        key_time(
            &mut out,
            utc.and_then(DateTime::<Utc>::from_timestamp_micros),
            local,
        );
        out
    }

    #[test]
    fn keys_sort_as_their_fields() {
        // Text order, a shorter text first, NUL inside a text.
        assert!(key(&["a"], Some(0), "") < key(&["ab"], Some(0), ""));
        assert!(key(&["a", "z"], Some(0), "") < key(&["ab", "a"], Some(0), ""));
        assert!(key(&["a"], Some(0), "") < key(&["a\0"], Some(0), ""));
        assert!(key(&["a\0"], Some(0), "") < key(&["a\0b"], Some(0), ""));
        // Times, before 1970 too; a UTC time before any time as written.
        assert!(key(&["a"], Some(-5), "") < key(&["a"], Some(3), ""));
        assert!(key(&["a"], Some(i64::MAX / 2), "") < key(&["a"], None, ""));
        assert!(key(&["a"], None, "2026-01-01") < key(&["a"], None, "2026-01-02"));
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for (i, payload) in ["one\n", "", "three"].iter().enumerate() {
            let mut b = Builder::begin(&mut buf);
            key_text(&mut buf, "station");
            b.group_ends(&buf);
            key_time(&mut buf, DateTime::from_timestamp_micros(i as i64), "");
            b.key_ends(&buf);
            buf.extend_from_slice(payload.as_bytes());
            b.finish(&mut buf, if i == 1 { LEFT_OUT } else { 0 });
        }
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(rec) = read(&buf, at) {
            assert_eq!(rec.group(), b"station\0\0");
            seen.push((rec.flags, String::from_utf8_lossy(rec.payload).into_owned()));
            let mut copy = Vec::new();
            rec.write_to_io(&mut copy).expect("write");
            assert_eq!(copy, buf[at..at + rec.len()]);
            at += rec.len();
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            seen,
            [
                (0, "one\n".to_owned()),
                (LEFT_OUT, String::new()),
                (0, "three".to_owned())
            ]
        );
    }
}
