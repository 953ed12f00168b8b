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

/// The longest common prefix of `a` and `b` (at most `u16::MAX`), eight
/// bytes at a time.
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len()).min(u16::MAX as usize);
    let mut i = 0;
    while i + 8 <= n && a[i..i + 8] == b[i..i + 8] {
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The longest common suffix of `a` and `b`, at most `max` bytes.
fn shared_suffix(a: &[u8], b: &[u8], max: usize) -> usize {
    let n = a.len().min(b.len()).min(max).min(u16::MAX as usize);
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    while i + 8 <= n && a[n - i - 8..n - i] == b[n - i - 8..n - i] {
        i += 8;
    }
    while i < n && a[n - i - 1] == b[n - i - 1] {
        i += 1;
    }
    i
}

/// How a record is written in a sort run: as much of its key and payload
/// as the previous record of its group has in common with it is left out
/// (a station's rows repeat its names at the start of each line, and the
/// receipt time and source of their body at its end, so a run is about
/// half the records' size).
///
/// ```text
/// u32 length of the rest · u8 flags · u16 group length
/// u16 key bytes shared · u16 length of the key's rest · the key's rest
/// u16 payload bytes shared at the start · u16 … at the end · the payload's middle
/// ```
#[derive(Debug, Default)]
pub(super) struct RunWriter {
    key: Vec<u8>,
    payload: Vec<u8>,
    has_prev: bool,
}

impl RunWriter {
    /// Writes `rec`; returns the bytes written.
    pub(super) fn write(
        &mut self,
        w: &mut impl std::io::Write,
        rec: &Rec<'_>,
    ) -> std::io::Result<usize> {
        let (key_shared, pre, suf) = if self.has_prev {
            let pre = shared_prefix(&self.payload, rec.payload);
            let left = (self.payload.len() - pre).min(rec.payload.len() - pre);
            let suf = shared_suffix(&self.payload, rec.payload, left);
            (shared_prefix(&self.key, rec.key), pre, suf)
        } else {
            (0, 0, 0)
        };
        let key_rest = &rec.key[key_shared..];
        let middle = &rec.payload[pre..rec.payload.len() - suf];
        let rest = 1 + 2 + 2 + 2 + key_rest.len() + 2 + 2 + middle.len();
        let mut head = [0u8; 13];
        head[..4].copy_from_slice(&(rest as u32).to_le_bytes());
        head[4] = rec.flags;
        head[5..7].copy_from_slice(&(rec.group_len as u16).to_le_bytes());
        head[7..9].copy_from_slice(&(key_shared as u16).to_le_bytes());
        head[9..11].copy_from_slice(&(key_rest.len() as u16).to_le_bytes());
        w.write_all(&head[..11])?;
        w.write_all(key_rest)?;
        head[..2].copy_from_slice(&(pre as u16).to_le_bytes());
        head[2..4].copy_from_slice(&(suf as u16).to_le_bytes());
        w.write_all(&head[..4])?;
        w.write_all(middle)?;
        self.key.clear();
        self.key.extend_from_slice(rec.key);
        self.payload.clear();
        self.payload.extend_from_slice(rec.payload);
        self.has_prev = true;
        Ok(4 + rest)
    }
}

/// Reads back what [`RunWriter`] wrote, a record at a time, as records.
#[derive(Debug, Default)]
pub(super) struct RunReader {
    /// The previous record, as a record.
    prev: Vec<u8>,
}

impl RunReader {
    /// `body` (a run's record, without its length) as a record into `out`.
    pub(super) fn decode(&mut self, body: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let u16_at = |at: usize| -> Option<usize> {
            Some(u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize)
        };
        let flags = *body.first()?;
        let group_len = u16_at(1)?;
        let key_shared = u16_at(3)?;
        let key_rest_len = u16_at(5)?;
        let key_rest = body.get(7..7 + key_rest_len)?;
        let at = 7 + key_rest_len;
        let (pre, suf) = (u16_at(at)?, u16_at(at + 2)?);
        let middle = body.get(at + 4..)?;
        let prev = read(&self.prev, 0);
        let (prev_key, prev_payload): (&[u8], &[u8]) = match prev {
            Some(p) => (p.key, p.payload),
            None => (&[], &[]),
        };
        let key_start = prev_key.get(..key_shared)?;
        let pay_start = prev_payload.get(..pre)?;
        let pay_end = prev_payload.get(prev_payload.len().checked_sub(suf)?..)?;
        out.clear();
        let mut b = Builder::begin(out);
        out.extend_from_slice(key_start);
        out.extend_from_slice(key_rest);
        b.group_len = group_len;
        b.key_ends(out);
        out.extend_from_slice(pay_start);
        out.extend_from_slice(middle);
        out.extend_from_slice(pay_end);
        b.finish(out, flags);
        self.prev.clear();
        self.prev.extend_from_slice(out);
        Some(())
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
    fn runs_share_what_records_have_in_common_and_read_back_whole() {
        let mut buf = Vec::new();
        for (t, payload, flags) in [
            (
                1,
                "S1,Pegel,0010,2026-01-01T00:00:00Z,1.5,2026-01-02T00:00:00Z,a/b\r\n",
                0,
            ),
            (
                2,
                "S1,Pegel,0010,2026-01-01T00:15:00Z,1.7,2026-01-02T00:00:00Z,a/b\r\n",
                0,
            ),
            (
                3,
                "S1,Pegel,0010,2026-01-01T00:15:00Z,1.7,2026-01-02T00:00:00Z,a/b\r\n",
                0,
            ),
            (4, "", LEFT_OUT),
            (5, "x", NO_COLLAPSE),
        ] {
            let mut b = Builder::begin(&mut buf);
            key_text(&mut buf, "S1");
            key_text(&mut buf, "0010");
            b.group_ends(&buf);
            key_time(&mut buf, DateTime::from_timestamp_micros(t), "");
            b.key_ends(&buf);
            buf.extend_from_slice(payload.as_bytes());
            b.finish(&mut buf, flags);
        }
        let mut run = Vec::new();
        let mut w = RunWriter::default();
        let mut at = 0;
        let mut written = 0;
        while let Some(rec) = read(&buf, at) {
            written += w.write(&mut run, &rec).expect("write");
            at += rec.len();
        }
        assert_eq!(written, run.len());
        assert!(
            run.len() < buf.len() * 2 / 3,
            "{} of {}",
            run.len(),
            buf.len()
        );
        let mut r = RunReader::default();
        let (mut at, mut back) = (0, Vec::new());
        let mut out = Vec::new();
        while at < run.len() {
            let len = u32::from_le_bytes(run[at..at + 4].try_into().expect("len")) as usize;
            r.decode(&run[at + 4..at + 4 + len], &mut out)
                .expect("decodes");
            back.extend_from_slice(&out);
            at += 4 + len;
        }
        assert_eq!(back, buf);
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
