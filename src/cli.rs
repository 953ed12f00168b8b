//! The command line. Every subcommand takes `--config` (or `DLSRV_CONFIG`)
//! and loads it through [`crate::config::Config::load`].

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::CommandsAction;
use crate::config::{Config, ConfigArg};
use crate::console::to_stdout;
use crate::report::ReportArgs;
use crate::state::AppState;
use crate::{listener, logging, server, systemd};

#[derive(Debug, Parser)]
#[command(
    name = "dlsrv",
    version,
    about = "Receives and archives OTT netDL logger transmissions"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the service on the configured Unix socket.
    Serve(ConfigArg),
    /// Load and validate the configuration, print the effective values.
    CheckConfig(ConfigArg),
    /// Queue command or query documents for stations, and follow them up.
    Commands(CommandsArgs),
    /// Rebuild the catalog (state_dir/catalog.sqlite3) from the archive (and the replica).
    Reindex(ReindexArgs),
    /// Where each station stands: last seen, late, battery, GSM, alarms (reads the catalog only).
    Status(StatusArgs),
    /// The report of a period: who reported, gaps, alarms, failed values, refused bodies.
    Report(ReportArgs),
    /// The archive's values (or events) as rows: CSV or JSON Lines (reads only).
    Export(crate::export::ExportArgs),
    /// Copy every archived body to the [replica] and apply local retention (until SIGTERM).
    Replicate(ConfigArg),
    /// Check archived bodies against the catalog (and the replica); never repairs.
    Verify(crate::verify::VerifyArgs),
    /// Bring bodies back from the replica into the local archive, byte-exact.
    Restore(crate::restore::RestoreArgs),
    /// The catalog itself: `migrate --to postgresql://…` (this host's rows into a shared catalog).
    Catalog(CatalogArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    #[command(subcommand)]
    pub(crate) action: CatalogAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CatalogAction {
    /// Copy every row of this host's SQLite catalog into a shared PostgreSQL
    /// catalog (rows already there are skipped; run it again at will).
    Migrate {
        /// The shared catalog: postgresql://…
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ReindexArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Also add rows for the bodies only the replica holds (after local retention).
    #[arg(long)]
    pub(crate) from_replica: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Only late stations; exit 1 when there is any (for monitoring agents).
    #[arg(long)]
    pub(crate) late: bool,
    /// Only these stations (repeat for several).
    #[arg(long = "station", value_name = "ID")]
    pub(crate) stations: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: crate::status::Format,
}

#[derive(Debug, Args)]
pub(crate) struct CommandsArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    #[command(subcommand)]
    pub(crate) action: CommandsAction,
}

/// The `dlsrv` binary: parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `dlsrv export` exits 2 when it skipped files: a usage error is 1 there.
            let export = std::env::args().nth(1).as_deref() == Some("export");
            return match (e.use_stderr(), export) {
                (false, _) => ExitCode::SUCCESS,
                (true, true) => ExitCode::from(1),
                (true, false) => ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)),
            };
        }
    };
    let result = match cli.command {
        Command::Serve(arg) => Config::load(arg.config.as_deref()).and_then(serve),
        Command::CheckConfig(arg) => Config::load(arg.config.as_deref()).and_then(check_config),
        Command::Commands(args) => Config::load(args.config.config.as_deref())
            .and_then(|config| crate::admin::run(&config, &args.action))
            .and_then(|output| to_stdout(&output)),
        Command::Reindex(args) => {
            Config::load(args.config.config.as_deref()).and_then(|c| reindex(c, &args))
        }
        Command::Catalog(args) => {
            Config::load(args.config.config.as_deref()).and_then(|c| catalog(&c, &args.action))
        }
        Command::Replicate(arg) => {
            Config::load(arg.config.as_deref()).and_then(|c| crate::replica::replicate::run(&c))
        }
        Command::Verify(args) => {
            return match Config::load(args.config.config.as_deref())
                .and_then(|c| crate::verify::run(&c, &args))
            {
                Ok(code) => ExitCode::from(code),
                // Not 1: that means "a mismatch".
                Err(e) => fail(&e, 2),
            };
        }
        Command::Restore(args) => {
            return match Config::load(args.config.config.as_deref())
                .and_then(|c| crate::restore::run(&c, &args))
            {
                Ok(code) => ExitCode::from(code),
                Err(e) => fail(&e, 2),
            };
        }
        Command::Status(args) => {
            return match Config::load(args.config.config.as_deref()).and_then(|c| status(&c, &args))
            {
                Ok(code) => code,
                // Not 1: that means "a station is late" to a monitoring agent.
                Err(e) if broken_pipe(&e) => ExitCode::from(2),
                Err(e) => fail(&e, 2),
            };
        }
        Command::Export(args) => {
            return match Config::load(args.config.config.as_deref())
                .and_then(|c| crate::export::run(&c, &args))
            {
                Ok(code) => ExitCode::from(code),
                // `dlsrv export | head`: the reader had enough; nothing to say.
                Err(e) if broken_pipe(&e) => ExitCode::from(1),
                Err(e) => fail(&e, 1),
            };
        }
        Command::Report(args) => {
            Config::load(args.config.config.as_deref()).and_then(|c| crate::report::run(&c, &args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `dlsrv … | head`: the reader had enough; nothing to say.
        Err(e) if broken_pipe(&e) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dlsrv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `e` comes from writing to a pipe whose reader is gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn fail(e: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("dlsrv: {e:#}");
    ExitCode::from(code)
}

/// `dlsrv status`: exit 0, or with `--late` 1 when a station is late (2 on an error).
/// Only reads (the catalog as [`crate::status::open_catalog`] opens it), as any user.
fn status(config: &Config, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    let (rows, feeds) = match crate::status::open_catalog(&config.state_dir)? {
        Some(conn) => (
            crate::status::stations(
                &conn,
                &config.state_dir,
                crate::status::Lateness::of(config),
                now,
                &args.stations,
            )
            .context("cannot read the catalog")?,
            crate::status::behind(&conn, &config.state_dir, config.replica.is_some(), now)
                .context("cannot read the catalog")?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let rows: Vec<_> = rows.into_iter().filter(|r| !args.late || r.late).collect();
    let text = match args.format {
        crate::status::Format::Table => crate::status::table(&rows, &feeds),
        crate::status::Format::Json => crate::status::json(&rows)?,
        crate::status::Format::Csv => crate::status::csv(&rows)?,
    };
    to_stdout(&text)?;
    Ok(if args.late && !rows.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn check_config(config: Config) -> anyhow::Result<()> {
    // The logins file, as the service will read it.
    crate::access::Policy::load(config.station_access, config.logins_file.as_deref())?;
    // The replica's credentials, as the replicator will read them.
    let replica = crate::replica::describe(&config)?;
    to_stdout(&config.to_toml()?)?;
    if let Some(replica) = replica {
        eprintln!("dlsrv: {replica}");
    }
    if let Some(policy) = crate::replica::retention::Policy::of(&config) {
        let plan = match crate::status::open_catalog(&config.state_dir)? {
            Some(conn) => crate::replica::retention::plan(&config, &conn)
                .context("cannot read the catalog")?,
            None => None,
        };
        match plan {
            Some(plan) => eprintln!(
                "dlsrv: retention ({}): a run now would remove {} bodies ({} bytes) from the local disk{}",
                policy.describe(),
                plan.removed,
                plan.bytes,
                if plan.unverified > 0 {
                    format!(
                        "; {} more are due but not yet in the replica",
                        plan.unverified
                    )
                } else {
                    String::new()
                }
            ),
            None => eprintln!("dlsrv: retention ({}): no catalog yet", policy.describe()),
        }
    }
    eprintln!("dlsrv: configuration is valid");
    Ok(())
}

fn catalog(config: &Config, action: &CatalogAction) -> anyhow::Result<()> {
    match action {
        CatalogAction::Migrate { to } => {
            let path = crate::layout::catalog_path(&config.state_dir);
            if !path.exists() {
                anyhow::bail!("no catalog at {}: nothing to migrate", path.display());
            }
            let n = crate::catalog::shared::migrate_to(&path, to, &config.host_name)?;
            eprintln!(
                "dlsrv: {n} rows of {} in {} as host {:?}; now set catalog_url to it and restart",
                path.display(),
                crate::config::without_password(to),
                config.host_name
            );
            Ok(())
        }
    }
}

fn reindex(config: Config, args: &ReindexArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let catalog = crate::layout::catalog_path(&config.state_dir);
    let summary = crate::indexer::reindex(
        &config.data_dir,
        &config.temp_suffix,
        &catalog,
        &crate::request::Action::archived(),
    )?;
    eprintln!(
        "dlsrv: reindexed {} from {}: {summary}",
        catalog.display(),
        config.data_dir.display()
    );
    if args.from_replica {
        let added = crate::restore::index_remote(&config, &catalog)?;
        eprintln!("dlsrv: {added} bodies that only the replica holds indexed from it");
    }
    // A shared catalog gets this host's rows now (those there are skipped),
    // not only at the service's next start.
    if let Some(url) = config.shared_catalog() {
        let n = crate::catalog::shared::migrate_to(&catalog, url, &config.host_name)?;
        eprintln!(
            "dlsrv: {n} rows offered to the shared catalog {}",
            crate::config::without_password(url)
        );
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    logging::init(&config.log_level)?;
    return_large_buffers_to_the_system();
    // Opening the archive touches the disk: done before the runtime exists.
    let state = Arc::new(AppState::new(config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(state.config.blocking_threads)
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let reloading = state.clone();
        tokio::spawn(async move {
            while sighup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the logins file");
                let state = reloading.clone();
                let _ = tokio::task::spawn_blocking(move || state.reload_access()).await;
            }
        });
        let (socket, socket_file) = listener::listen(&state.config)?;
        let path = socket_file.as_ref().map(|f| f.path().display().to_string());
        tracing::info!(
            socket = path.as_deref().unwrap_or("inherited from systemd"),
            data_dir = %state.data_dir().display(),
            state_dir = %state.state_dir().display(),
            version = env!("CARGO_PKG_VERSION"),
            "dlsrv ready"
        );
        systemd::notify_or_log("READY=1");
        // Scanning for stale temp files and filling the catalog read the
        // whole archive, long on a big one: after READY, while serving.
        let _start_up = state.start_up_work();
        if let Some(interval) = systemd::watchdog_interval() {
            tokio::spawn(crate::state::watchdog(interval, state.clone()));
        }
        let shutdown = async move {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM received"),
                _ = sigint.recv() => tracing::info!("SIGINT received"),
            }
            systemd::notify_or_log("STOPPING=1");
        };
        server::run(socket, shutdown, state.clone()).await;
        drop(socket_file);
        // The catalog rows of the last requests, before the process ends.
        state.flush_catalog();
        tracing::info!("dlsrv stopped");
        Ok(())
    })
}

/// Request bodies are the service's large allocations. glibc's malloc
/// raises its mmap threshold after such a buffer is freed and then keeps
/// the next ones in its heaps, so resident memory stays at the high-water
/// mark of past bursts. A fixed threshold makes every buffer of 1 MiB or
/// more its own mapping, returned to the system when freed: resident
/// memory follows the bodies held (`max_inflight_body_bytes`).
fn return_large_buffers_to_the_system() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator; called
        // before any other thread exists.
        let set = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20) };
        if set != 1 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
