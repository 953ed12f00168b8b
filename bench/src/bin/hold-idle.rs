//! Holds many idle connections open on dlsrv's Unix socket: each one sends
//! one `GET /ping` (so dlsrv has served it and holds a live keep-alive
//! connection, as for NGINX's upstream pool) and then sends nothing.
//!
//! Prints `holding=N` once all are open, waits `--secs`, then prints how
//! many dlsrv still kept open (`still_open=M`). bench/run raises the file
//! descriptor limit (`ulimit -n`) before starting it.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Open N keep-alive connections to a Unix socket and keep them idle")]
struct Args {
    /// dlsrv's socket.
    socket: PathBuf,
    /// Number of connections.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seconds to hold them after all are open.
    #[arg(long, default_value_t = 30.0)]
    secs: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let mut conns = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let mut s = UnixStream::connect(&args.socket)
            .with_context(|| format!("connection {} of {}", i + 1, args.count))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !reply.windows(5).any(|w| w == b"pong\n") {
            let n = s
                .read(&mut buf)
                .with_context(|| format!("reply on connection {}", i + 1))?;
            anyhow::ensure!(n > 0, "connection {} closed before /ping answered", i + 1);
            reply.extend_from_slice(&buf[..n]);
        }
        conns.push(s);
    }
    println!(
        "holding={} open_secs={:.2}",
        conns.len(),
        start.elapsed().as_secs_f64()
    );
    std::io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs_f64(args.secs));

    let mut still_open = 0;
    let mut buf = [0u8; 64];
    for s in &mut conns {
        s.set_nonblocking(true)?;
        match s.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => still_open += 1,
            _ => {} // EOF, an error or unexpected bytes: dlsrv closed it
        }
    }
    println!("still_open={still_open} of={}", conns.len());
    Ok(())
}
