//! The disk's ceiling for dlsrv's way of storing a body: how many durable
//! files per second the file system under DIR takes, each written exactly
//! as dlsrv's archive writes one (create the temp file exclusively, write,
//! fsync, `renameat2(RENAME_NOREPLACE)` to the final name, open and fsync
//! the directory), by 1, 8, ... threads into one shared directory, as
//! concurrent requests write into one day directory.
//!
//! `--fill N DIR` instead creates N small files in DIR as fast as it can,
//! without any fsync: the filler for the large-directory test.
//!
//! Output: one `key=value` line per measurement, for bench/run to parse.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

#[derive(Parser)]
#[command(about = "Durable-file rate of a file system (dlsrv's write path), or a directory filler")]
struct Args {
    /// Directory to write in (created if missing); must be on the file
    /// system under test.
    dir: PathBuf,
    /// Thread counts to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    threads: Vec<usize>,
    /// Seconds per thread count.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Bytes per file (a typical logger message is about 44 KB).
    #[arg(long, default_value_t = 44 * 1024)]
    size: usize,
    /// Keep the files written (by default they are removed after each
    /// measurement, outside the timed part).
    #[arg(long)]
    keep: bool,
    /// Instead of measuring: create this many small files in DIR, no fsync.
    #[arg(long, value_name = "N")]
    fill: Option<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    if let Some(n) = args.fill {
        return fill(&args.dir, n);
    }
    if args.threads.contains(&0) || args.secs <= 0.0 || args.size == 0 {
        bail!("--threads, --secs and --size must be positive");
    }
    for &threads in &args.threads {
        measure(
            &args.dir,
            threads,
            Duration::from_secs_f64(args.secs),
            args.size,
            args.keep,
        )?;
    }
    Ok(())
}

/// One thread count: every thread stores files until the deadline.
fn measure(dir: &Path, threads: usize, secs: Duration, size: usize, keep: bool) -> Result<()> {
    let start = Instant::now();
    let deadline = start + secs;
    let results: Vec<Result<Vec<u32>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || worker(dir, t, deadline, size)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| bail!("a writer thread panicked"))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut micros = Vec::new();
    for r in results {
        micros.extend(r?);
    }
    micros.sort_unstable();
    let files = micros.len();
    let pct = |p: f64| -> f64 {
        if micros.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (files as f64 - 1.0)).round() as usize;
        f64::from(micros[i.min(files - 1)]) / 1000.0
    };
    println!(
        "threads={threads} files={files} secs={elapsed:.2} files_per_s={:.1} p50_ms={:.2} p99_ms={:.2} size={size}",
        files as f64 / elapsed,
        pct(50.0),
        pct(99.0)
    );
    if !keep {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("ceiling_") {
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// Stores files the way dlsrv's archive does until `deadline`; returns the
/// duration of each store in microseconds.
fn worker(dir: &Path, thread: usize, deadline: Instant, size: usize) -> Result<Vec<u32>> {
    let pid = std::process::id();
    let mut body = vec![b'x'; size];
    let mut times = Vec::new();
    let mut k: u64 = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            return Ok(times);
        }
        // Each body differs a little, as real ones do.
        let stamp = format!("{thread}-{k}\n");
        let n = stamp.len().min(size);
        body[..n].copy_from_slice(&stamp.as_bytes()[..n]);

        let name = format!("ceiling_t{thread}_{k}");
        let temp = dir.join(format!("{name}.{pid}-{k}.tmp"));
        let dest = dir.join(&name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("create {}", temp.display()))?;
        file.write_all(&body)
            .with_context(|| format!("write {}", temp.display()))?;
        file.sync_all()
            .with_context(|| format!("fsync {}", temp.display()))?;
        drop(file);
        renameat2(
            AT_FDCWD,
            &temp,
            AT_FDCWD,
            &dest,
            RenameFlags::RENAME_NOREPLACE,
        )
        .with_context(|| format!("renameat2(RENAME_NOREPLACE) to {}", dest.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("fsync directory {}", dir.display()))?;
        times.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
        k += 1;
    }
}

/// Creates `n` small files in `dir`, no fsync: only the directory's size matters.
fn fill(dir: &Path, n: u64) -> Result<()> {
    let start = Instant::now();
    let content = [b'f'; 64];
    for i in 0..n {
        let path = dir.join(format!("filler_{i:07}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        file.write_all(&content)
            .with_context(|| format!("write {}", path.display()))?;
    }
    println!("filled={n} secs={:.2}", start.elapsed().as_secs_f64());
    Ok(())
}
