//! One sending station's records in key order, copies collapsed, in
//! bounded memory: an external merge sort.
//!
//! Records arrive body by body in receipt order. They gather in one buffer
//! of at most `budget` bytes, indexed by group (station and channel: a
//! body's records of one channel are already in time order, so each group
//! is nearly sorted and its stable sort is close to linear). When the
//! buffer is full its records are sorted and written to a *run*: an
//! unlinked temporary file under the export's directory in `state_dir`
//! (the kernel removes it when the process ends, however it ends). When the
//! station is complete, a station that never filled the buffer is emitted
//! from memory; otherwise the runs are merged, oldest run first among equal
//! keys, so that receipt order decides between copies everywhere.
//!
//! Copies (equal keys) collapse to the last one, the most recently
//! received, unless every copy is wanted; within a run they collapse
//! before it is written, so a run is never larger than the rows it keeps.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek};
use std::path::PathBuf;

use anyhow::Context;

use super::record::{self, Rec};

/// Bytes read ahead per run while merging.
const RUN_READ_BUFFER: usize = 128 * 1024;

/// One group's records: their offsets in the buffer.
#[derive(Debug)]
struct Group {
    key: Vec<u8>,
    offsets: Vec<u32>,
}

/// The sort of one station at a time.
#[derive(Debug)]
pub(super) struct Sorter {
    budget: usize,
    dir: PathBuf,
    all_copies: bool,
    buf: Vec<u8>,
    groups: Vec<Group>,
    index: HashMap<Vec<u8>, usize>,
    last: Option<usize>,
    runs: Vec<File>,
    /// Copies that went, over every station so far.
    pub(super) collapsed: u64,
    /// Bytes written to runs, over every station so far.
    pub(super) spilled: u64,
    /// The most bytes the runs of one station took.
    pub(super) max_station_spill: u64,
    station_spill: u64,
}

impl Sorter {
    /// A sorter that holds at most `budget` bytes of records, and spills to
    /// unlinked files in `dir`.
    pub(super) fn new(budget: usize, dir: PathBuf, all_copies: bool) -> Sorter {
        Sorter {
            budget,
            dir,
            all_copies,
            buf: Vec::new(),
            groups: Vec::new(),
            index: HashMap::new(),
            last: None,
            runs: Vec::new(),
            collapsed: 0,
            spilled: 0,
            max_station_spill: 0,
            station_spill: 0,
        }
    }

    /// Adds the records of one body (after the bodies received before it).
    pub(super) fn push(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        if !self.buf.is_empty() && self.buf.len() + chunk.len() > self.budget {
            self.spill()?;
        }
        if self.buf.capacity() == 0 {
            // Once, and never grown by doubling past the budget.
            self.buf.reserve_exact(self.budget.max(chunk.len()));
        }
        let base = self.buf.len();
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        while let Some(rec) = record::read(chunk, at) {
            let offset = u32::try_from(base + at).context("a sort buffer over 4 GiB")?;
            let group = rec.group();
            let hit = self
                .last
                .filter(|&i| self.groups[i].key.as_slice() == group);
            let i = match hit {
                Some(i) => i,
                None => match self.index.get(group) {
                    Some(&i) => i,
                    None => {
                        self.groups.push(Group {
                            key: group.to_vec(),
                            offsets: Vec::new(),
                        });
                        self.index.insert(group.to_vec(), self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                },
            };
            self.last = Some(i);
            self.groups[i].offsets.push(offset);
            at += rec.len();
        }
        Ok(())
    }

    /// Sorts the buffer in place: groups by key, each group's records by key
    /// (stable: equal keys stay in receipt order).
    fn sort(&mut self) {
        self.groups.sort_by(|a, b| a.key.cmp(&b.key));
        let buf = &self.buf;
        let key = |o: &u32| record::read(buf, *o as usize).map(|r| r.key);
        for g in &mut self.groups {
            g.offsets.sort_by(|a, b| key(a).cmp(&key(b)));
        }
    }

    /// Calls `f` with the buffer's records in order, copies collapsed.
    fn drain_sorted(
        &mut self,
        mut f: impl FnMut(Rec<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.sort();
        let buf = &self.buf;
        let all_copies = self.all_copies;
        let mut collapsed = 0;
        for g in &self.groups {
            let mut prev: Option<Rec<'_>> = None;
            for &o in &g.offsets {
                let Some(rec) = record::read(buf, o as usize) else {
                    continue;
                };
                if let Some(p) = prev {
                    if !all_copies && p.same_value(&rec) {
                        collapsed += 1;
                    } else {
                        f(p)?;
                    }
                }
                prev = Some(rec);
            }
            if let Some(p) = prev {
                f(p)?;
            }
        }
        self.collapsed += collapsed;
        self.buf.clear();
        self.groups.clear();
        self.index.clear();
        self.last = None;
        Ok(())
    }

    /// Writes the buffer as a sorted run.
    fn spill(&mut self) -> anyhow::Result<()> {
        let file = tempfile::tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a sort run in {}", self.dir.display()))?;
        let mut w = BufWriter::with_capacity(RUN_READ_BUFFER, file);
        let mut written = 0u64;
        self.drain_sorted(|rec| {
            rec.write_to_io(&mut w)?;
            written += rec.len() as u64;
            Ok(())
        })?;
        let mut file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .context("cannot write a sort run")?;
        file.rewind().context("cannot read a sort run")?;
        self.spilled += written;
        self.station_spill += written;
        self.runs.push(file);
        Ok(())
    }

    /// The station is complete: its records in order to `f`, then the
    /// sorter is empty for the next.
    pub(super) fn finish(
        &mut self,
        mut f: impl FnMut(Rec<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if self.runs.is_empty() {
            return self.drain_sorted(f);
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.max_station_spill = self.max_station_spill.max(self.station_spill);
        self.station_spill = 0;
        let runs = std::mem::take(&mut self.runs);
        // Give the buffer's memory to the runs' read buffers.
        self.buf = Vec::new();
        self.merge(runs, &mut f)
    }

    fn merge(
        &mut self,
        runs: Vec<File>,
        f: &mut impl FnMut(Rec<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut readers: Vec<BufReader<File>> = runs
            .into_iter()
            .map(|file| BufReader::with_capacity(RUN_READ_BUFFER, file))
            .collect();
        let mut heap = BinaryHeap::with_capacity(readers.len());
        for (run, reader) in readers.iter_mut().enumerate() {
            let mut bytes = Vec::new();
            if record::read_from(reader, &mut bytes).context("cannot read a sort run")? {
                heap.push(Head { bytes, run });
            }
        }
        let mut pending: Option<Vec<u8>> = None;
        while let Some(Head { bytes, run }) = heap.pop() {
            let mut spare = match pending.take() {
                Some(p) => {
                    let (Some(prev), Some(next)) = (record::read(&p, 0), record::read(&bytes, 0))
                    else {
                        anyhow::bail!("a damaged sort run");
                    };
                    if !self.all_copies && prev.same_value(&next) {
                        self.collapsed += 1;
                    } else {
                        f(prev)?;
                    }
                    p
                }
                None => Vec::new(),
            };
            pending = Some(bytes);
            if record::read_from(&mut readers[run], &mut spare).context("cannot read a sort run")? {
                heap.push(Head { bytes: spare, run });
            }
        }
        if let Some(p) = pending
            && let Some(rec) = record::read(&p, 0)
        {
            f(rec)?;
        }
        Ok(())
    }
}

/// A run's next record in the merge: the smallest key first, and among
/// equal keys the older run (records of earlier bodies).
struct Head {
    bytes: Vec<u8>,
    run: usize,
}

impl Head {
    fn key(&self) -> &[u8] {
        record::read(&self.bytes, 0).map_or(&[], |r| r.key)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap pops the greatest: reversed.
        other
            .key()
            .cmp(self.key())
            .then_with(|| other.run.cmp(&self.run))
    }
}

#[cfg(test)]
mod tests {
    use super::record::{Builder, NO_COLLAPSE, key_text};
    use super::*;

    /// A record of channel `ch` at time `t` carrying `payload`.
    fn rec(out: &mut Vec<u8>, ch: &str, t: u8, payload: &str, flags: u8) {
        let mut b = Builder::begin(out);
        key_text(out, ch);
        b.group_ends(out);
        out.push(t);
        b.key_ends(out);
        out.extend_from_slice(payload.as_bytes());
        b.finish(out, flags);
    }

    fn run(budget: usize, all_copies: bool, bodies: &[Vec<u8>]) -> (Vec<String>, u64, bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sorter::new(budget, dir.path().to_path_buf(), all_copies);
        for b in bodies {
            s.push(b).expect("push");
        }
        let spilled = s.spilled > 0;
        let mut out = Vec::new();
        s.finish(|r| {
            out.push(String::from_utf8_lossy(r.payload).into_owned());
            Ok(())
        })
        .expect("finish");
        (out, s.collapsed, spilled)
    }

    #[test]
    fn in_memory_and_spilled_give_the_same_rows() {
        // Three bodies, each resending the last value of the one before;
        // two values without a time that are copies of nothing.
        let mut bodies = Vec::new();
        for body in 0..3u8 {
            let mut b = Vec::new();
            for ch in ["b", "a"] {
                for t in body * 2..body * 2 + 3 {
                    rec(&mut b, ch, t, &format!("{ch}{t}@{body}"), 0);
                }
                rec(&mut b, ch, 255, &format!("{ch}-none@{body}"), NO_COLLAPSE);
            }
            bodies.push(b);
        }
        let want: Vec<String> = [
            "a0@0", "a1@0", "a2@1", "a3@1", "a4@2", "a5@2", "a6@2", "a-none@0", "a-none@1",
            "a-none@2", "b0@0", "b1@0", "b2@1", "b3@1", "b4@2", "b5@2", "b6@2", "b-none@0",
            "b-none@1", "b-none@2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let memory = run(1 << 20, false, &bodies);
        assert_eq!(memory, (want.clone(), 4, false));
        // A budget smaller than one body: a run per body.
        let spilled = run(16, false, &bodies);
        assert_eq!(spilled, (want, 4, true));
        // Every copy, oldest first.
        let (all, collapsed, _) = run(16, true, &bodies);
        assert_eq!(collapsed, 0);
        assert_eq!(all.len(), 24);
        assert_eq!(&all[..4], ["a0@0", "a1@0", "a2@0", "a2@1"]);
    }
}
