//! The command line. Every subcommand takes `--config` (or `DLSRV_CONFIG`)
//! and loads it through [`crate::config::Config::load`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dlsrv",
    version,
    about = "Receives and archives OTT netDL logger transmissions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service on the configured Unix socket.
    Serve(ConfigArg),
    /// Load and validate the configuration, print the effective values.
    CheckConfig(ConfigArg),
    /// Queue command or query documents for stations, and follow them up.
    Commands(CommandsArgs),
}

#[derive(Debug, Args)]
pub struct CommandsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: CommandsAction,
}

#[derive(Debug, Subcommand)]
pub enum CommandsAction {
    /// Queue FILE (a CommandList or QueryList) for STATION's next requestcommand.
    Add { station: String, file: PathBuf },
    /// Show pending, sent and cancelled documents with their acknowledgements.
    List { station: Option<String> },
    /// Cancel a pending document (it is kept under cancelled/).
    Cancel { station: String, id: String },
    /// Queue a sent or cancelled document again.
    Requeue { station: String, id: String },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// TOML configuration file; `DLSRV_*` environment variables override it.
    #[arg(long, short, env = "DLSRV_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
