//! One sending station's records in key order, copies collapsed, in
//! bounded memory: an external merge sort.
//!
//! Records arrive body by body in receipt order, each body's as one chunk.
//! The chunks gather up to `budget` bytes, indexed by group (station and
//! channel: a body's records of one channel are already in time order, so
//! each group is nearly sorted and its stable sort of 32-byte entries is
//! close to linear). When the budget is reached the chunks go to a thread
//! that sorts them and writes a *run*: an unlinked temporary file under
//! the export's directory in `state_dir` (the kernel removes it when the
//! process ends, however it ends), while the next chunks gather; so memory
//! holds at most twice the budget. When the station is complete, a station
//! that never reached the budget is emitted from memory; otherwise the
//! runs are merged (one heap over all of them), the older run first among
//! equal keys, so that receipt order decides between copies everywhere.
//! At most [`FAN_IN`] runs are merged at once: beyond, the oldest are
//! merged into one run first. The same holds when the whole export is one
//! sort (Parquet by date): memory never grows with the number of runs or
//! of groups.
//!
//! Copies (equal keys) collapse to the last one, the most recently
//! received, unless every copy is wanted; within a run they collapse
//! before it is written, so a run is never larger than the rows it keeps.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::Context;

use super::record::{self, Rec};

/// A record in the buffer: the first 16 bytes of its key after the group
/// (a UTC time is 9: whole), then where it is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    prefix: u128,
    chunk: u32,
    offset: u32,
}

/// One group's records.
#[derive(Debug)]
struct Group {
    key: Vec<u8>,
    entries: Vec<Entry>,
}

/// Records gathered: the bodies' chunks as they came, indexed by group.
#[derive(Debug, Default)]
struct Batch {
    chunks: Vec<Vec<u8>>,
    groups: Vec<Group>,
    index: HashMap<Vec<u8>, usize>,
    last: Option<usize>,
    bytes: usize,
}

impl Batch {
    fn rec(&self, e: &Entry) -> Option<Rec<'_>> {
        record::read(self.chunks.get(e.chunk as usize)?, e.offset as usize)
    }

    fn push(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        let c = u32::try_from(self.chunks.len()).context("too many bodies in one sort buffer")?;
        let mut at = 0;
        while let Some(rec) = record::read(&chunk, at) {
            let offset = u32::try_from(at).context("a body's rows over 4 GiB")?;
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
                            entries: Vec::new(),
                        });
                        self.index.insert(group.to_vec(), self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                },
            };
            self.last = Some(i);
            self.groups[i].entries.push(Entry {
                prefix: prefix(&rec.key[rec.group_len.min(rec.key.len())..]),
                chunk: c,
                offset,
            });
            at += rec.len();
        }
        // What the chunk holds in memory, not only what it uses.
        self.bytes += chunk.capacity();
        self.chunks.push(chunk);
        Ok(())
    }

    /// Calls `f` with the records in order, copies collapsed (unless
    /// `all_copies`); returns how many went.
    fn drain(
        mut self,
        all_copies: bool,
        mut f: impl FnMut(Rec<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        self.groups.sort_by(|a, b| a.key.cmp(&b.key));
        let mut collapsed = 0;
        for g in &mut self.groups {
            let chunks = &self.chunks;
            let suffix = |e: &Entry| {
                chunks
                    .get(e.chunk as usize)
                    .and_then(|c| record::read(c, e.offset as usize))
                    .map(|r| &r.key[r.group_len.min(r.key.len())..])
            };
            // Stable: equal keys stay in receipt order.
            g.entries.sort_by(|a, b| {
                a.prefix
                    .cmp(&b.prefix)
                    .then_with(|| suffix(a).cmp(&suffix(b)))
            });
        }
        for g in &self.groups {
            let mut prev: Option<Rec<'_>> = None;
            for e in &g.entries {
                let Some(rec) = self.rec(e) else {
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
        Ok(collapsed)
    }
}

/// The first 16 bytes of `s`, big-endian, zero-padded: comparing two of
/// them compares those bytes.
fn prefix(s: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s[..n]);
    u128::from_be_bytes(b)
}

/// A sorted run: an unlinked file and the bytes in it.
#[derive(Debug)]
struct Run {
    file: File,
    len: u64,
}

/// A run being written by a thread of its own: the run, the copies that
/// went and the bytes written.
type Spilling = JoinHandle<anyhow::Result<(Run, u64)>>;

/// Runs merged at once, at most (each has a read buffer): more are merged
/// into one first, the oldest together, so memory stays bounded for any
/// number of runs.
const FAN_IN: usize = 64;
/// Bytes read ahead per run while merging.
const RUN_READ_BUFFER: usize = 64 * 1024;

/// The sort of one station at a time.
#[derive(Debug)]
pub(super) struct Sorter {
    budget: usize,
    dir: PathBuf,
    all_copies: bool,
    fan_in: usize,
    batch: Batch,
    /// At most one run is written while the next buffer fills: memory is at
    /// most twice the budget.
    spilling: Option<Spilling>,
    /// Oldest first.
    runs: Vec<Run>,
    /// Copies that went, over every station so far.
    pub(super) collapsed: u64,
    /// Bytes written to runs, over every station so far.
    pub(super) spilled: u64,
    /// The most bytes the runs of one station took at once.
    pub(super) max_station_spill: u64,
}

impl Sorter {
    /// A sorter that holds `budget` bytes of records (and one more buffer
    /// while it is being written), and spills to unlinked files in `dir`.
    pub(super) fn new(budget: usize, dir: PathBuf, all_copies: bool) -> Sorter {
        Sorter {
            budget,
            dir,
            all_copies,
            fan_in: FAN_IN,
            batch: Batch::default(),
            spilling: None,
            runs: Vec::new(),
            collapsed: 0,
            spilled: 0,
            max_station_spill: 0,
        }
    }

    /// Adds the records of one body (after the bodies received before it).
    pub(super) fn push(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        if self.batch.bytes > 0 && self.batch.bytes + chunk.capacity() > self.budget {
            self.spill()?;
        }
        self.batch.push(chunk)
    }

    /// Waits for the run being written; merges the oldest runs into one
    /// when there are as many as can be merged at once.
    fn spilled_run(&mut self) -> anyhow::Result<()> {
        if let Some(handle) = self.spilling.take() {
            let (run, collapsed) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the thread writing a sort run failed"))??;
            self.collapsed += collapsed;
            self.spilled += run.len;
            self.runs.push(run);
        }
        if self.runs.len() >= self.fan_in {
            let oldest: Vec<Run> = self.runs.drain(..self.fan_in).collect();
            let all_copies = self.all_copies;
            let (run, collapsed) = new_run(&self.dir, |emit| merge(oldest, all_copies, emit))?;
            self.collapsed += collapsed;
            self.spilled += run.len;
            // The merged run is older than every run left.
            self.runs.insert(0, run);
        }
        let held: u64 = self.runs.iter().map(|r| r.len).sum();
        self.max_station_spill = self.max_station_spill.max(held);
        Ok(())
    }

    /// Writes the buffer as a sorted run, on a thread of its own.
    fn spill(&mut self) -> anyhow::Result<()> {
        self.spilled_run()?;
        let batch = std::mem::take(&mut self.batch);
        let (dir, all_copies) = (self.dir.clone(), self.all_copies);
        let handle = std::thread::Builder::new()
            .name("dlsrv-sort-run".into())
            .spawn(move || write_run(batch, &dir, all_copies))
            .context("cannot start a thread to write a sort run")?;
        self.spilling = Some(handle);
        Ok(())
    }

    /// The station is complete: its records in order to `f`, then the
    /// sorter is empty for the next.
    pub(super) fn finish(
        &mut self,
        mut f: impl FnMut(Rec<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if self.runs.is_empty() && self.spilling.is_none() {
            let batch = std::mem::take(&mut self.batch);
            self.collapsed += batch.drain(self.all_copies, f)?;
            return Ok(());
        }
        if self.batch.bytes > 0 {
            self.spill()?;
        }
        self.spilled_run()?;
        let runs = std::mem::take(&mut self.runs);
        self.collapsed += merge(runs, self.all_copies, &mut f)?;
        Ok(())
    }
}

/// Merges `runs` (oldest first) into `f` in key order, the older run
/// first among equal keys, copies collapsed to the newest unless
/// `all_copies`; returns how many copies went.
fn merge(
    runs: Vec<Run>,
    all_copies: bool,
    mut f: impl FnMut(Rec<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut readers: Vec<Part<'_>> = Vec::with_capacity(runs.len());
    for run in &runs {
        readers.push(Part {
            file: &run.file,
            at: 0,
            end: run.len,
            buf: Vec::new(),
            pos: 0,
            body: Vec::new(),
            shared: record::RunReader::default(),
        });
    }
    let mut heap = BinaryHeap::with_capacity(readers.len());
    for (i, reader) in readers.iter_mut().enumerate() {
        let mut bytes = Vec::new();
        if reader.next(&mut bytes)? {
            heap.push(Head::new(bytes, i));
        }
    }
    let mut collapsed = 0;
    let mut pending: Option<Vec<u8>> = None;
    while let Some(Head { bytes, run, .. }) = heap.pop() {
        let mut spare = match pending.take() {
            Some(p) => {
                let (Some(prev), Some(next)) = (record::read(&p, 0), record::read(&bytes, 0))
                else {
                    anyhow::bail!("a damaged sort run");
                };
                if !all_copies && prev.same_value(&next) {
                    collapsed += 1;
                } else {
                    f(prev)?;
                }
                p
            }
            None => Vec::new(),
        };
        pending = Some(bytes);
        if readers[run].next(&mut spare)? {
            heap.push(Head::new(spare, run));
        }
    }
    if let Some(p) = pending
        && let Some(rec) = record::read(&p, 0)
    {
        f(rec)?;
    }
    Ok(collapsed)
}

/// Reads a run from its start.
struct Part<'a> {
    file: &'a File,
    at: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
    /// The record as written (sharing with the one before).
    body: Vec<u8>,
    shared: record::RunReader,
}

impl Part<'_> {
    /// The next record into `out`; false at the end of the run.
    fn next(&mut self, out: &mut Vec<u8>) -> anyhow::Result<bool> {
        let mut len = [0u8; 4];
        if !self.take(&mut len)? {
            return Ok(false);
        }
        let rest = u32::from_le_bytes(len) as usize;
        let mut body = std::mem::take(&mut self.body);
        body.resize(rest, 0);
        if !self.take(&mut body)? {
            anyhow::bail!("a sort run ends inside a record");
        }
        let decoded = self.shared.decode(&body, out);
        self.body = body;
        decoded.context("a damaged sort run")?;
        Ok(true)
    }

    /// Fills `dst` from the run; false when the run is at its end.
    fn take(&mut self, dst: &mut [u8]) -> anyhow::Result<bool> {
        use std::os::unix::fs::FileExt;
        let mut filled = 0;
        while filled < dst.len() {
            if self.pos == self.buf.len() {
                let left = self.end.saturating_sub(self.at);
                if left == 0 {
                    if filled == 0 {
                        return Ok(false);
                    }
                    anyhow::bail!("a sort run ends inside a record");
                }
                let n = (RUN_READ_BUFFER as u64).min(left) as usize;
                self.buf.resize(n, 0);
                self.file
                    .read_exact_at(&mut self.buf, self.at)
                    .context("cannot read a sort run")?;
                self.at += n as u64;
                self.pos = 0;
            }
            let n = (dst.len() - filled).min(self.buf.len() - self.pos);
            dst[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            filled += n;
            self.pos += n;
        }
        Ok(true)
    }
}

/// Sorts `batch` and writes it to an unlinked file in `dir`: the run and
/// the copies that went.
fn write_run(batch: Batch, dir: &std::path::Path, all_copies: bool) -> anyhow::Result<(Run, u64)> {
    new_run(dir, |emit| batch.drain(all_copies, emit))
}

/// A run of the records `fill` gives (in key order) in an unlinked file in
/// `dir`; with what `fill` returns (the copies that went).
fn new_run(
    dir: &std::path::Path,
    fill: impl FnOnce(&mut dyn FnMut(Rec<'_>) -> anyhow::Result<()>) -> anyhow::Result<u64>,
) -> anyhow::Result<(Run, u64)> {
    let file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a sort run in {}", dir.display()))?;
    let mut w = BufWriter::with_capacity(RUN_READ_BUFFER, file);
    let mut len = 0u64;
    let mut shared = record::RunWriter::default();
    let collapsed = fill(&mut |rec| {
        len += shared.write(&mut w, &rec)? as u64;
        Ok(())
    })?;
    let file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write a sort run")?;
    Ok((Run { file, len }, collapsed))
}

/// A run's next record in the merge: the smallest key first (its group,
/// then the rest by its first 16 bytes as one integer, then the remaining
/// bytes), and among equal keys the older run (earlier bodies).
struct Head {
    bytes: Vec<u8>,
    run: usize,
    group: std::ops::Range<usize>,
    prefix: u128,
    suffix: std::ops::Range<usize>,
}

impl Head {
    fn new(bytes: Vec<u8>, run: usize) -> Head {
        let key = record::key_range(&bytes);
        let group_len = record::read(&bytes, 0).map_or(0, |r| r.group_len);
        let split = (key.start + group_len).min(key.end);
        let prefix = prefix(bytes.get(split..key.end).unwrap_or_default());
        Head {
            bytes,
            run,
            group: key.start..split,
            prefix,
            suffix: split..key.end,
        }
    }

    fn group(&self) -> &[u8] {
        self.bytes.get(self.group.clone()).unwrap_or_default()
    }

    fn suffix(&self) -> &[u8] {
        self.bytes.get(self.suffix.clone()).unwrap_or_default()
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
            .group()
            .cmp(self.group())
            .then_with(|| other.prefix.cmp(&self.prefix))
            .then_with(|| other.suffix().cmp(self.suffix()))
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
        run_with(budget, FAN_IN, all_copies, bodies)
    }

    fn run_with(
        budget: usize,
        fan_in: usize,
        all_copies: bool,
        bodies: &[Vec<u8>],
    ) -> (Vec<String>, u64, bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sorter::new(budget, dir.path().to_path_buf(), all_copies);
        s.fan_in = fan_in;
        for b in bodies {
            s.push(b.clone()).expect("push");
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
        assert_eq!(spilled, (want.clone(), 4, true));
        // More runs than can be merged at once: the oldest merged first.
        let merged = run_with(16, 2, false, &bodies);
        assert_eq!(merged, (want.clone(), 4, true));
        let every = run_with(16, 2, true, &bodies);
        assert_eq!(every.0, run(1 << 20, true, &bodies).0);
        // Every copy, oldest first.
        let (all, collapsed, _) = run(16, true, &bodies);
        assert_eq!(collapsed, 0);
        assert_eq!(all.len(), 24);
        assert_eq!(&all[..4], ["a0@0", "a1@0", "a2@0", "a2@1"]);
    }
}
