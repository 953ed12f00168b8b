//! `dlsrv export --follow NAME`: a feed that delivers each newly archived
//! body's rows as the catalog commits it, into PostgreSQL (exactly once:
//! the position moves in the same transaction as the rows) or as JSON
//! Lines on standard output (at least once: the position moves after the
//! output is flushed).
//!
//! The feed follows the catalog's ids, which are handed out in commit order
//! and never twice: it reads the data messages after its position a page at
//! a time, runs them through the export's pipeline (rows collapsed within
//! the page, by station, channel and time), delivers, moves. An empty page
//! waits [`POLL`]; a full one is followed at once (catching up runs at the
//! export's full speed). A database that is down or fails is retried with
//! a growing pause, the same page again (nothing is ever skipped), with one
//! log line when the outage starts and one when it ends. SIGTERM or SIGINT
//! ends the feed between two deliveries: the one under way completes.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde::Deserialize;

use super::files::{self, File, Wanted};
use super::postgres::{self, Position};
use super::{ExportArgs, Format, Output, Sink, Totals};
use crate::config::Config;
use crate::daemon::{Outage, handle_signals, pause, stopping};
use crate::feeds::{self, FeedState};
use crate::layout;

/// How long an idle feed waits before it looks at the catalog again.
const POLL: Duration = Duration::from_millis(200);
/// Bodies per delivery, at most.
const PAGE: usize = 2_000;
/// How often an idle feed says it is still there (its state file).
const IDLE_STATE_EVERY: Duration = Duration::from_secs(10);
/// The default lag before a warning.
const LAG_WARN_SECS: u64 = 60;

/// A feed's settings file (`/etc/dlsrv/export/NAME.toml`); the command
/// line adds to it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// `postgres` or `jsonl`.
    format: Option<String>,
    database: Option<String>,
    #[serde(default)]
    stations: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    events: bool,
    lag_warn_secs: Option<u64>,
}

/// What the feed does, settled.
struct Feed {
    name: String,
    format: Format,
    database: Option<String>,
    events: bool,
    spec: super::encode::Spec,
    wanted: Wanted,
    lag_warn: f64,
    sort_buffer: usize,
}

fn settle(args: &ExportArgs, name: &str) -> anyhow::Result<Feed> {
    if !layout::valid_export_name(name) {
        anyhow::bail!(
            "--follow {name:?}: a name of letters, digits, '-', '_' and '.' (at most 64)"
        );
    }
    let settings: Settings = match &args.settings {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?
        }
        None => Settings::default(),
    };
    let database = args.database.clone().or(settings.database);
    let format = match settings.format.as_deref() {
        Some("postgres") => Format::Postgres,
        Some("jsonl") => Format::Jsonl,
        Some(other) => anyhow::bail!("format {other:?}: a feed is `postgres` or `jsonl`"),
        None => match args.format {
            Format::Postgres | Format::Jsonl => args.format,
            // The default (csv): into the database when there is one.
            Format::Csv if database.is_some() => Format::Postgres,
            Format::Csv => Format::Jsonl,
            other => {
                anyhow::bail!("--follow delivers to PostgreSQL or as JSON Lines, not {other:?}")
            }
        },
    };
    if format == Format::Postgres && database.is_none() {
        anyhow::bail!("--follow --format postgres needs --database (or database in the settings)");
    }
    let events = args.events || settings.events;
    let mut stations = settings.stations;
    stations.extend(args.stations.iter().cloned());
    let mut channels = settings.channels;
    channels.extend(args.channels.iter().cloned());
    let lag_warn = args
        .lag_warn_secs
        .or(settings.lag_warn_secs)
        .unwrap_or(LAG_WARN_SECS) as f64;
    Ok(Feed {
        name: name.to_owned(),
        format,
        database,
        events,
        spec: super::encode::Spec {
            format,
            events,
            stations: stations.clone(),
            channels,
            from: args.from,
            to: args.to,
            by_date: false,
        },
        wanted: Wanted {
            stations,
            since: args.received_since,
            from_day: None,
        },
        lag_warn,
        sort_buffer: super::sort_buffer(args),
    })
}

/// Where a feed delivers.
enum Target {
    Postgres {
        url: String,
        events: bool,
        conn: Option<Box<postgres::Target>>,
    },
    Stdout,
}

impl Target {
    /// The connection, made when there is none (or it broke).
    fn connection(&mut self) -> anyhow::Result<&mut postgres::Target> {
        let Target::Postgres { url, events, conn } = self else {
            anyhow::bail!("not a database feed");
        };
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            *conn = None;
        }
        if conn.is_none() {
            *conn = Some(Box::new(postgres::Target::connect(url, *events)?));
        }
        conn.as_deref_mut().context("the connection just made")
    }
}

/// One outage of the target: said when it starts and when it ends.
/// The start of an outage, logged once.
fn tell_outage(name: &str, e: &anyhow::Error) -> impl FnOnce() {
    move || {
        tracing::error!(feed = name, error = %format!("{e:#}"),
            "export feed cannot deliver; retrying (nothing is skipped)");
    }
}

/// The end of an outage, logged once.
fn tell_delivered(name: &str) -> impl FnOnce(Duration, u32) {
    move |outage, tries| {
        tracing::warn!(
            feed = name,
            outage_secs = outage.as_secs(),
            tries,
            "export feed delivers again; catching up"
        );
    }
}

/// `dlsrv export --follow NAME`: runs until SIGTERM; 0 then.
pub(super) fn run(config: &Config, args: &ExportArgs, name: &str) -> anyhow::Result<u8> {
    let feed = settle(args, name)?;
    super::check_combination(feed.format, feed.events)?;
    crate::logging::init(&config.log_level)?;
    handle_signals()?;
    let work = files::Workdir::create(&config.state_dir)?;
    let catalog = super::open_catalog(config)?;
    let catalog_id = crate::catalog::catalog_id(&catalog)?;
    let mut target = match (&feed.format, &feed.database) {
        (Format::Postgres, Some(url)) => Target::Postgres {
            url: url.clone(),
            events: feed.events,
            conn: None,
        },
        _ => Target::Stdout,
    };
    let mut outage = Outage::default();
    // Where the feed stands (the database's word for a database feed), and
    // what the database holds (to check nobody else moved it).
    let (mut position, mut held) = loop {
        if stopping() {
            return Ok(0);
        }
        match start_position(config, &feed, &mut target, &catalog_id) {
            Ok(p) => {
                outage.ended(tell_delivered(&feed.name));
                break p;
            }
            Err(e) => {
                let wait = outage.failed(tell_outage(&feed.name, &e));
                pause(wait);
            }
        }
    };
    tracing::info!(
        feed = feed.name.as_str(),
        position,
        target = target_name(&feed),
        "export feed started"
    );
    let mut lag_warned = false;
    let mut last_state = Instant::now() - IDLE_STATE_EVERY;
    while !stopping() {
        let rows = crate::catalog::data_rows_after(&catalog, position, i64::MAX, PAGE)
            .context("cannot read the catalog")?;
        let Some(last) = rows.last().map(|r| r.id) else {
            if last_state.elapsed() >= IDLE_STATE_EVERY {
                save_state(config, &feed, position, &catalog_id);
                last_state = Instant::now();
            }
            watch_lag(&catalog, &feed, position, &mut lag_warned);
            pause(POLL);
            continue;
        };
        let full = rows.len() == PAGE;
        let mut page: Vec<File> = rows
            .into_iter()
            .filter_map(|r| files::file_of(r, &feed.wanted))
            .collect();
        page.sort_by(|a, b| (&a.station, a.received).cmp(&(&b.station, b.received)));
        // Delivered, or tried again (the same page) until it is.
        let mut moved = false;
        loop {
            let to = Position {
                position: last,
                catalog: catalog_id.clone(),
            };
            match deliver(config, work.path(), &feed, &mut target, &page, held, &to) {
                Ok(totals) => {
                    outage.ended(tell_delivered(&feed.name));
                    tracing::debug!(
                        feed = feed.name.as_str(),
                        position = last,
                        "{}",
                        totals.line()
                    );
                    break;
                }
                Err(e) if matches!(target, Target::Stdout) => return Err(e),
                Err(e) => {
                    if let Target::Postgres { conn: Some(c), .. } = &mut target {
                        c.rollback();
                    }
                    let wait = outage.failed(tell_outage(&feed.name, &e));
                    pause(wait);
                    if stopping() {
                        return Ok(0);
                    }
                    // Where the database says it is: the commit may have
                    // gone through before the connection broke, or another
                    // process moved it.
                    if let Ok((p, h)) = start_position(config, &feed, &mut target, &catalog_id)
                        && (p, h) != (position, held)
                    {
                        if p != last {
                            tracing::warn!(
                                feed = feed.name.as_str(),
                                from = position,
                                to = p,
                                "the database holds another position: following it"
                            );
                        }
                        (position, held) = (p, h);
                        moved = true;
                        break;
                    }
                }
            }
        }
        if moved {
            continue;
        }
        position = last;
        if matches!(target, Target::Postgres { .. }) {
            held = Some(last);
        }
        save_state(config, &feed, position, &catalog_id);
        last_state = Instant::now();
        watch_lag(&catalog, &feed, position, &mut lag_warned);
        if !full {
            pause(POLL);
        }
    }
    save_state(config, &feed, position, &catalog_id);
    tracing::info!(feed = feed.name.as_str(), position, "export feed stopped");
    Ok(0)
}

fn target_name(feed: &Feed) -> &'static str {
    match feed.format {
        Format::Postgres => "postgres",
        _ => "jsonl",
    }
}

/// Where the feed starts (the database's position for a database feed,
/// else the feed's state file; the beginning in another catalog), and the
/// position the database holds now (none: no row yet).
fn start_position(
    config: &Config,
    feed: &Feed,
    target: &mut Target,
    catalog_id: &str,
) -> anyhow::Result<(i64, Option<i64>)> {
    let stored = match target {
        Target::Postgres { .. } => target
            .connection()?
            .position(&feed.name)?
            .map(|p| (p.position, p.catalog)),
        Target::Stdout => feeds::read_all(&config.state_dir)
            .into_iter()
            .find(|f| f.name == feed.name)
            .map(|f| (f.position, f.catalog)),
    };
    let held = match target {
        Target::Postgres { .. } => stored.as_ref().map(|(p, _)| *p),
        Target::Stdout => None,
    };
    let start = match stored {
        Some((p, c)) if c == catalog_id => p,
        Some((p, c)) => {
            tracing::warn!(
                feed = feed.name.as_str(),
                position = p,
                catalog = c.as_str(),
                this_catalog = catalog_id,
                "the feed's position counts in another catalog (rebuilt since?): delivering from the beginning"
            );
            0
        }
        None => 0,
    };
    Ok((start, held))
}

/// Delivers one page: its rows and the new position together (`held`: the
/// position the database must still hold).
fn deliver(
    config: &Config,
    work: &std::path::Path,
    feed: &Feed,
    target: &mut Target,
    page: &[File],
    held: Option<i64>,
    to: &Position,
) -> anyhow::Result<Totals> {
    let bar = indicatif::ProgressBar::hidden();
    let files = |f: &mut dyn FnMut(File) -> anyhow::Result<bool>| {
        for file in page {
            if !f(file.clone())? {
                break;
            }
        }
        Ok(())
    };
    let mut sink = match target {
        Target::Postgres { .. } => {
            let conn = target.connection()?;
            conn.begin()?;
            Sink::Postgres {
                target: conn,
                buffer: Vec::new(),
            }
        }
        Target::Stdout => Sink::Text {
            out: Output::open(None)?,
            zrxp: false,
            block: Vec::new(),
        },
    };
    let spec = (false, feed.sort_buffer);
    let totals = super::pipeline(config, work, &feed.spec, spec, &mut sink, &bar, files)?;
    match sink {
        Sink::Postgres { target, buffer } => {
            target.copy(&buffer)?;
            target.commit(Some((&feed.name, held, to)))?;
        }
        Sink::Text { out, .. } => out.finish()?,
        Sink::Parquet(_) => anyhow::bail!("a feed does not write Parquet"),
    }
    Ok(totals)
}

/// Mirrors the position into `state_dir` for `/metrics` and `dlsrv status`.
fn save_state(config: &Config, feed: &Feed, position: i64, catalog_id: &str) {
    let state = FeedState {
        name: feed.name.clone(),
        position,
        catalog: catalog_id.to_owned(),
        updated_utc: layout::rfc3339(Utc::now()),
        target: target_name(feed).to_owned(),
    };
    if let Err(e) = feeds::write(&config.state_dir, &state) {
        tracing::warn!(feed = feed.name.as_str(), error = %e, "cannot write the feed's state file");
    }
}

/// Warns once when the feed falls `lag_warn` behind, and says when it is back.
fn watch_lag(catalog: &rusqlite::Connection, feed: &Feed, position: i64, warned: &mut bool) {
    let Ok(lag) = feeds::lag_secs(catalog, position, Utc::now()) else {
        return;
    };
    if lag > feed.lag_warn && !*warned {
        tracing::warn!(
            feed = feed.name.as_str(),
            lag_secs = lag as u64,
            limit_secs = feed.lag_warn as u64,
            "export feed is behind"
        );
        *warned = true;
    } else if lag <= feed.lag_warn && *warned {
        tracing::info!(
            feed = feed.name.as_str(),
            lag_secs = lag as u64,
            "export feed caught up"
        );
        *warned = false;
    }
}
