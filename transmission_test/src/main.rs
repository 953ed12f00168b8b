//! `ott-emulator`: behaves like an OTT netDL data logger towards dlsrv.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use transmission_test::http::{Client, Connector, Response};
use transmission_test::ott::{
    self, Compression, PreparedRequest, RequestSettings, ack_document, ack_ids, decode_content,
    insert_marker, is_post_action, local_now, station_ids, unique_marker, with_station_id,
};
use transmission_test::stats::LatencySummary;
use transmission_test::target::Target;
use transmission_test::tls;

/// Non-200 answers listed individually by `load`.
const MAX_LISTED_FAILURES: usize = 20;

#[derive(Debug, Parser)]
#[command(
    name = "ott-emulator",
    version,
    about = "Emulates an OTT netDL data logger: sends its HTTP transmissions to dlsrv",
    after_help = "Targets: http://host:port[/path], https://host:port[/path], unix:/path/to/socket \
                  (a URL without a path, and a Unix socket, use /ott/).\n\
                  Exit status: 0 when every request was answered 200, 1 otherwise."
)]
struct Cli {
    /// Where to send: http://host:port[/path], https://host:port[/path] or unix:/path.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL",
        default_value = "unix:./dlsrv.sock"
    )]
    target: String,
    /// Station id sent as `stationid`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "ID",
        default_value = "0000452891"
    )]
    station: String,
    /// User for HTTP Basic authentication.
    #[arg(long, global = true, help_heading = "Global options", value_name = "U")]
    user: Option<String>,
    /// Password for HTTP Basic authentication.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "P",
        env = "OTT_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Accept any server certificate (self-signed test setups).
    #[arg(long, global = true, help_heading = "Global options")]
    insecure: bool,
    /// Trust the CA certificate(s) in this PEM file instead of the built-in roots.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    cacert: Option<PathBuf>,
    /// Compress POST bodies with zlib deflate (Content-Encoding: deflate), as a netDL does.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "gzip"
    )]
    deflate: bool,
    /// Compress POST bodies with gzip (Content-Encoding: gzip).
    #[arg(long, global = true, help_heading = "Global options")]
    gzip: bool,
    /// Connect, read and write timeout in seconds.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one request: POST FILE for senddata, sendalarm, acknowledge, sendconfiguration,
    /// sendfirmware (FILE `-` reads standard input); GET for requestcommand and other
    /// actions without FILE. Prints the status line, headers and body.
    Send {
        /// The `action` query parameter.
        action: String,
        /// Body to POST.
        file: Option<PathBuf>,
    },
    /// Download a published file: GET PATH?stationid=..&action=getconfiguration.
    Get {
        /// URL path the operator published the file at, e.g. /files/netdl.cfg.
        path: String,
        #[arg(long, default_value = "getconfiguration",
              value_parser = ["getconfiguration", "getfirmware"])]
        action: String,
        /// Write the file here instead of to standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// One transmission cycle: POST senddata, GET requestcommand, POST acknowledge with an
    /// OK Ack for every ackId of a served command or query document.
    Cycle {
        /// The data message to send.
        #[arg(long, value_name = "FILE")]
        data: PathBuf,
    },
    /// Send COUNT requests from CONCURRENCY threads (one kept-alive connection each) and
    /// report throughput, latency percentiles and statuses.
    Load {
        /// Number of requests.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Number of threads, each with its own connection.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Action to POST.
        #[arg(long, default_value = "senddata")]
        action: String,
        /// Make every body distinct with an XML comment `<!-- n=I run=R -->` (the default;
        /// dlsrv suppresses identical bodies).
        #[arg(long, overrides_with = "no_unique")]
        unique: bool,
        /// Send FILE unchanged every time.
        #[arg(long)]
        no_unique: bool,
        /// Spread the requests round-robin over K station ids counted up from --station.
        #[arg(long, value_name = "K", default_value_t = 1)]
        stations: usize,
        /// Body to POST.
        file: PathBuf,
    },
}

/// What every command needs: where to connect and how to build requests.
struct Setup {
    connector: Connector,
    settings: RequestSettings,
    station: String,
}

impl Setup {
    fn from_cli(cli: &Cli) -> Result<Setup> {
        let target = Target::parse(&cli.target)?;
        let tls = if target.is_tls() {
            Some(tls::client_config(cli.insecure, cli.cacert.as_deref())?)
        } else {
            None
        };
        if !cli.timeout.is_finite() || cli.timeout <= 0.0 {
            bail!("--timeout must be a positive number of seconds");
        }
        let timeout = Duration::try_from_secs_f64(cli.timeout).context("--timeout")?;
        let auth = match (&cli.user, &cli.password) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, Some(_)) => {
                eprintln!("note: a password was given without --user; sending no authentication");
                None
            }
            (None, None) => None,
        };
        let compression = if cli.deflate {
            Compression::Deflate
        } else if cli.gzip {
            Compression::Gzip
        } else {
            Compression::None
        };
        let settings = RequestSettings {
            base_path: target.path.clone(),
            auth,
            compression,
        };
        Ok(Setup {
            connector: Connector::new(target, tls, Some(timeout))?,
            settings,
            station: cli.station.clone(),
        })
    }
}

/// Writing to standard output failed (e.g. the reader of a pipe went away).
#[derive(Debug)]
struct OutputError(io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing standard output: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// `writeln!` to the output, failing the command with [`OutputError`].
macro_rules! say {
    ($out:expr) => {
        writeln!($out).map_err(OutputError)?
    };
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(OutputError)?
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // Output piped into e.g. `head`, which has quit: nothing more to say.
        Err(e)
            if e.downcast_ref::<OutputError>()
                .is_some_and(|o| o.0.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command; `Ok(true)` when every request was answered 200.
fn run(cli: &Cli) -> Result<bool> {
    let setup = Setup::from_cli(cli)?;
    let stdout = io::stdout();
    let out = &mut stdout.lock();
    let all_ok = match &cli.command {
        Command::Send { action, file } => send(out, &setup, action, file.as_deref()),
        Command::Get {
            path,
            action,
            output,
        } => get(out, &setup, path, action, output.as_deref()),
        Command::Cycle { data } => cycle(out, &setup, data),
        Command::Load {
            count,
            concurrency,
            action,
            unique: _,
            no_unique,
            stations,
            file,
        } => load(
            out,
            &setup,
            &LoadOptions {
                count: *count,
                concurrency: *concurrency,
                action: action.clone(),
                unique: !*no_unique,
                stations: *stations,
            },
            file,
        ),
    }?;
    out.flush().map_err(OutputError)?;
    Ok(all_ok)
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut body = Vec::new();
        io::stdin()
            .read_to_end(&mut body)
            .context("reading standard input")?;
        Ok(body)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn exchange(client: &mut Client, req: &PreparedRequest) -> Result<(Response, Duration)> {
    let start = Instant::now();
    let resp = client
        .send(
            req.method,
            &req.path_and_query,
            &req.headers,
            req.body.as_deref(),
        )
        .with_context(|| {
            format!(
                "{} {} to {}",
                req.method,
                req.path_and_query,
                client.target()
            )
        })?;
    Ok((resp, start.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A body for the terminal: UTF-8 text as is, an XML document in another encoding as
/// ISO-8859-1, anything else as a hex dump of its start.
fn render_body(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)\n".to_string();
    }
    let mut out = match std::str::from_utf8(body) {
        Ok(text) => text.to_string(),
        Err(_) if body.trim_ascii_start().starts_with(b"<") => {
            let text: String = body.iter().map(|&b| char::from(b)).collect();
            format!("(not UTF-8; shown as ISO-8859-1)\n{text}")
        }
        Err(_) => hex_dump(body, 256),
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn hex_dump(body: &[u8], limit: usize) -> String {
    let mut out = format!("({} bytes of binary data", body.len());
    if body.len() > limit {
        let _ = write!(out, "; first {limit} shown");
    }
    out.push_str(")\n");
    for (i, line) in body[..body.len().min(limit)].chunks(16).enumerate() {
        let _ = write!(out, "{:08x} ", i * 16);
        for b in line {
            let _ = write!(out, " {b:02x}");
        }
        out.push_str(&"   ".repeat(16 - line.len()));
        out.push_str("  |");
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

fn send(out: &mut impl Write, setup: &Setup, action: &str, file: Option<&Path>) -> Result<bool> {
    let req = match file {
        Some(path) => {
            let body = read_input(path)?;
            setup.settings.post(&setup.station, action, &body)?
        }
        None if is_post_action(action) => {
            bail!("action {action} is a POST: give the FILE to send (- for standard input)")
        }
        None => setup.settings.get(None, &setup.station, action),
    };
    let mut client = Client::new(setup.connector.clone());
    say!(out, "--> {}", req.describe());
    let (resp, took) = exchange(&mut client, &req)?;
    say!(out, "<-- {} ({:.1} ms)", resp.status_line(), ms(took));
    for (name, value) in &resp.headers {
        say!(out, "{name}: {value}");
    }
    say!(out);
    let body = decode_content(resp.header("Content-Encoding"), &resp.body)?;
    write!(out, "{}", render_body(&body)).map_err(OutputError)?;
    Ok(resp.status == 200)
}

fn get(
    out: &mut impl Write,
    setup: &Setup,
    path: &str,
    action: &str,
    output: Option<&Path>,
) -> Result<bool> {
    if !path.starts_with('/') {
        bail!("PATH must be a URL path starting with '/', got {path:?}");
    }
    let req = setup.settings.get(Some(path), &setup.station, action);
    let mut client = Client::new(setup.connector.clone());
    eprintln!("--> {}", req.describe());
    let (resp, took) = exchange(&mut client, &req)?;
    eprintln!(
        "<-- {} ({} bytes, {:.1} ms)",
        resp.status_line(),
        resp.body.len(),
        ms(took)
    );
    if resp.status != 200 {
        eprint!("{}", render_body(&resp.body));
        return Ok(false);
    }
    let body = decode_content(resp.header("Content-Encoding"), &resp.body)?;
    match output {
        Some(path) => {
            std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("saved {} bytes to {}", body.len(), path.display());
        }
        None => out.write_all(&body).map_err(OutputError)?,
    }
    Ok(true)
}

/// Prints one exchange of a cycle (with `sent_document`, the uncompressed body, when given)
/// and returns the response.
fn cycle_step(
    out: &mut impl Write,
    client: &mut Client,
    req: &PreparedRequest,
    sent_document: Option<&[u8]>,
) -> Result<Response> {
    say!(out, "--> {}", req.describe());
    if let Some(doc) = sent_document {
        for line in String::from_utf8_lossy(doc).lines() {
            say!(out, "    {line}");
        }
    }
    let (resp, took) = exchange(client, req)?;
    say!(
        out,
        "<-- {} {} ({} bytes, {:.1} ms)",
        resp.status,
        resp.reason,
        resp.body.len(),
        ms(took)
    );
    if !resp.body.is_empty() {
        let body = decode_content(resp.header("Content-Encoding"), &resp.body)
            .unwrap_or_else(|_| resp.body.clone());
        for line in render_body(&body).lines() {
            say!(out, "    {line}");
        }
    }
    if let Some(retry) = resp.header("Retry-After") {
        say!(out, "    (Retry-After: {retry})");
    }
    Ok(resp)
}

fn cycle(out: &mut impl Write, setup: &Setup, data: &Path) -> Result<bool> {
    let body = read_input(data)?;
    let station = &setup.station;
    let mut client = Client::new(setup.connector.clone());
    let mut all_ok = true;

    let req = setup.settings.post(station, "senddata", &body)?;
    let resp = cycle_step(out, &mut client, &req, None)?;
    if resp.status != 200 {
        all_ok = false;
        say!(
            out,
            "    senddata not accepted: a logger keeps its data and sends it again later"
        );
    }
    say!(out);

    let req = setup.settings.get(None, station, "requestcommand");
    let resp = cycle_step(out, &mut client, &req, None)?;
    let command_time = local_now();
    if resp.status != 200 {
        say!(out, "    requestcommand failed");
        return Ok(false);
    }
    let doc = decode_content(resp.header("Content-Encoding"), &resp.body)?;
    if doc.trim_ascii().is_empty() {
        say!(out, "    no command pending");
        return Ok(all_ok);
    }
    let ids = match ack_ids(&doc) {
        Ok(ids) => ids,
        Err(e) => {
            say!(out, "    cannot read the served document: {e:#}");
            return Ok(false);
        }
    };
    if ids.is_empty() {
        say!(
            out,
            "    the document carries no ackId: nothing to acknowledge"
        );
        return Ok(all_ok);
    }
    say!(out, "    ackIds: {}", ids.join(", "));
    say!(out);

    let ack = ack_document(station, &command_time, &local_now(), &ids);
    let req = setup.settings.post(station, "acknowledge", &ack)?;
    let resp = cycle_step(out, &mut client, &req, Some(&ack))?;
    Ok(all_ok && resp.status == 200)
}

struct LoadOptions {
    count: usize,
    concurrency: usize,
    action: String,
    unique: bool,
    stations: usize,
}

/// The fate of one request of a load run.
enum Outcome {
    Answered { status: u16, summary: String },
    Failed(String),
}

struct Sample {
    index: usize,
    latency_ms: f64,
    outcome: Outcome,
}

fn load(out: &mut impl Write, setup: &Setup, opts: &LoadOptions, file: &Path) -> Result<bool> {
    if opts.count == 0 {
        bail!("--count must be at least 1");
    }
    if opts.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if opts.stations == 0 {
        bail!("--stations must be at least 1");
    }
    if !is_post_action(&opts.action) {
        bail!("--action must be one of {}", ott::POST_ACTIONS.join(", "));
    }
    let body = read_input(file)?;
    let stations = station_ids(&setup.station, opts.stations);
    let threads = opts.concurrency.min(opts.count);
    let run_id = {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{:x}{:05x}-{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id()
        )
    };

    say!(
        out,
        "load: {} x {} of {} bytes{}{}, {} thread(s), {} station(s), target {}",
        opts.count,
        opts.action,
        body.len(),
        setup
            .settings
            .compression
            .header()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        if opts.unique { ", unique bodies" } else { "" },
        threads,
        stations.len(),
        setup.connector.target
    );

    let next = AtomicUsize::new(0);
    let connections = AtomicUsize::new(0);
    let collected = Mutex::new(Vec::with_capacity(opts.count));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut client = Client::new(setup.connector.clone());
                let mut mine = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= opts.count {
                        break;
                    }
                    let station = &stations[index % stations.len()];
                    mine.push(one_load_request(
                        setup,
                        &mut client,
                        opts,
                        station,
                        &body,
                        index,
                        &run_id,
                    ));
                }
                connections.fetch_add(client.connections as usize, Ordering::Relaxed);
                collected
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend(mine);
            });
        }
    });
    let elapsed = started.elapsed();

    let mut samples = collected
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    samples.sort_by_key(|s| s.index);
    let report = load_report(&samples, elapsed, connections.load(Ordering::Relaxed));
    write!(out, "{report}").map_err(OutputError)?;
    Ok(samples.len() == opts.count
        && samples
            .iter()
            .all(|s| matches!(s.outcome, Outcome::Answered { status: 200, .. })))
}

fn one_load_request(
    setup: &Setup,
    client: &mut Client,
    opts: &LoadOptions,
    station: &str,
    body: &[u8],
    index: usize,
    run_id: &str,
) -> Sample {
    // A logger's document names its own station.
    let own = if opts.stations > 1 {
        with_station_id(body, station)
    } else {
        None
    };
    let body = own.as_deref().unwrap_or(body);
    let unique;
    let body = if opts.unique {
        unique = insert_marker(body, &unique_marker(index, run_id));
        &unique[..]
    } else {
        body
    };
    let req = match setup.settings.post(station, &opts.action, body) {
        Ok(r) => r,
        Err(e) => {
            return Sample {
                index,
                latency_ms: 0.0,
                outcome: Outcome::Failed(format!("preparing the request: {e:#}")),
            };
        }
    };
    let start = Instant::now();
    let result = client.send(
        req.method,
        &req.path_and_query,
        &req.headers,
        req.body.as_deref(),
    );
    let latency_ms = ms(start.elapsed());
    let outcome = match result {
        Ok(resp) => Outcome::Answered {
            status: resp.status,
            summary: format!("{}: {}", resp.status_line(), resp.first_body_line()),
        },
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    Sample {
        index,
        latency_ms,
        outcome,
    }
}

fn load_report(samples: &[Sample], elapsed: Duration, connections: usize) -> String {
    let mut out = String::new();
    let total = samples.len();
    let secs = elapsed.as_secs_f64();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(total);
    let mut failures = Vec::new();
    for s in samples {
        match &s.outcome {
            Outcome::Answered { status, summary } => {
                latencies.push(s.latency_ms);
                *by_status.entry(status.to_string()).or_default() += 1;
                if *status != 200 {
                    failures.push(format!("#{} {summary}", s.index));
                }
            }
            Outcome::Failed(e) => {
                *by_status.entry("error".to_string()).or_default() += 1;
                failures.push(format!("#{} error: {e}", s.index));
            }
        }
    }
    let ok = by_status.get("200").copied().unwrap_or(0);
    let _ = writeln!(out, "total:       {total} requests, {ok} answered 200");
    let _ = writeln!(out, "elapsed:     {secs:.3} s");
    let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
    let _ = writeln!(out, "rate:        {rate:.1} requests/s");
    match LatencySummary::from_unsorted(latencies) {
        Some(l) => {
            let _ = writeln!(
                out,
                "latency ms:  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                l.p50, l.p90, l.p99, l.max
            );
        }
        None => {
            let _ = writeln!(out, "latency ms:  (no answers)");
        }
    }
    let statuses: Vec<String> = by_status
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    let _ = writeln!(out, "status:      {}", statuses.join(", "));
    let _ = writeln!(out, "connections: {connections} opened");
    if !failures.is_empty() {
        let _ = writeln!(out, "non-200 answers ({}):", failures.len());
        for f in failures.iter().take(MAX_LISTED_FAILURES) {
            let _ = writeln!(out, "  {f}");
        }
        if failures.len() > MAX_LISTED_FAILURES {
            let _ = writeln!(
                out,
                "  ... and {} more",
                failures.len() - MAX_LISTED_FAILURES
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_global_options_anywhere() {
        let cli = Cli::try_parse_from([
            "ott-emulator",
            "load",
            "--count",
            "10",
            "--deflate",
            "--target",
            "http://127.0.0.1:8080",
            "--no-unique",
            "f.xml",
        ])
        .expect("parse");
        assert!(cli.deflate);
        assert_eq!(cli.target, "http://127.0.0.1:8080");
        assert!(matches!(
            cli.command,
            Command::Load {
                count: 10,
                no_unique: true,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["ott-emulator", "--deflate", "--gzip", "send", "senddata"])
                .is_err()
        );
    }

    #[test]
    fn body_rendering() {
        assert_eq!(render_body(b""), "(empty body)\n");
        assert_eq!(render_body(b"pong"), "pong\n");
        assert!(render_body(b"<a>\xb0</a>").contains("\u{b0}"));
        let dump = render_body(&[0u8, 1, 2, 0xff]);
        assert!(dump.starts_with("(4 bytes of binary data)\n00000000  00 01 02 ff"));
    }

    #[test]
    fn report_lists_failures() {
        let samples: Vec<Sample> = (0..25)
            .map(|i| Sample {
                index: i,
                latency_ms: i as f64,
                outcome: if i < 3 {
                    Outcome::Answered {
                        status: 200,
                        summary: String::new(),
                    }
                } else if i < 24 {
                    Outcome::Answered {
                        status: 503,
                        summary: "HTTP/1.1 503 Service Unavailable: busy".to_string(),
                    }
                } else {
                    Outcome::Failed("connection refused".to_string())
                },
            })
            .collect();
        let r = load_report(&samples, Duration::from_secs(2), 4);
        assert!(
            r.contains("total:       25 requests, 3 answered 200"),
            "{r}"
        );
        assert!(r.contains("rate:        12.5 requests/s"), "{r}");
        assert!(r.contains("status:      200: 3, 503: 21, error: 1"), "{r}");
        assert!(r.contains("non-200 answers (22):"), "{r}");
        assert!(
            r.contains("  #3 HTTP/1.1 503 Service Unavailable: busy"),
            "{r}"
        );
        assert!(r.contains("  ... and 2 more"), "{r}");
        assert!(r.contains("p50 11.00"), "{r}");
    }
}
