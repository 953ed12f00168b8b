//! The `dlsrv` binary: parses the command line, owns the socket and the
//! signals, and hands everything else to the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use dlsrv::cli::{Cli, Command};
use dlsrv::config::Config;
use dlsrv::state::AppState;
use dlsrv::{listener, logging, server, systemd};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(arg) => Config::load(arg.config.as_deref()).and_then(serve),
        Command::CheckConfig(arg) => Config::load(arg.config.as_deref()).and_then(check_config),
        Command::Commands(args) => Config::load(args.config.config.as_deref())
            .and_then(|config| dlsrv::admin::run(&config, &args.action))
            .map(|output| print!("{output}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dlsrv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(config: Config) -> anyhow::Result<()> {
    print!("{}", config.to_toml()?);
    eprintln!("dlsrv: configuration is valid");
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    logging::init(&config.log_level)?;
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
        let (socket, socket_file) = listener::listen(&state.config)?;
        let path = socket_file.as_ref().map(|f| f.path().display().to_string());
        tracing::info!(
            socket = path.as_deref().unwrap_or("inherited from systemd"),
            data_dir = %state.archive.root().display(),
            version = env!("CARGO_PKG_VERSION"),
            "dlsrv ready"
        );
        systemd::notify_or_log("READY=1");
        if let Some(interval) = systemd::watchdog_interval() {
            tokio::spawn(systemd::watchdog(interval));
        }
        let shutdown = async move {
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM received"),
                _ = sigint.recv() => tracing::info!("SIGINT received"),
            }
            systemd::notify_or_log("STOPPING=1");
        };
        server::run(socket, shutdown, state).await;
        drop(socket_file);
        tracing::info!("dlsrv stopped");
        Ok(())
    })
}
