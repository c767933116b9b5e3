//! The `leadroute` command line: `serve`, client subcommands that talk to a running
//! server (`lead get`, `simulate`, `plugin ...`, `backup`), and `restore`, which
//! works on a data directory with no server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use leadroute_engine::store::backup::restore;

use crate::client::{Client, Output};
use crate::config::{Flags, Settings};
use crate::{logging, plugin_test, serve};

/// Real-time lead routing: the server and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "leadroute", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the server with the demo organisation loaded: `serve --demo`.
    Demo(ServeArgs),
    /// Read leads from a running server.
    Lead {
        /// Which lead command.
        #[command(subcommand)]
        command: LeadCommand,
        /// Where the server is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the decision a running server would make for a lead, without routing it.
    Simulate {
        /// A JSON file holding the lead, as for POST /v1/leads.
        file: PathBuf,
        /// Decide in this territory instead of the one the lead's region resolves to.
        #[arg(long)]
        territory: Option<String>,
        /// Decide with this plugin, NAME or NAME@VERSION.
        #[arg(long)]
        plugin: Option<String>,
        /// Where the server is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a backup of a running server's store to a file in its backup directory
    /// (`backup_dir`); intake goes on meanwhile. Waits for it however long it takes.
    Backup {
        /// Where the server is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Build a new data directory from a backup file, with no server running on it.
    /// The directory must not exist or be empty; a damaged file restores nothing.
    Restore {
        /// The backup file (`leadroute-….backup`).
        file: PathBuf,
        /// The data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Manage routing plugins on a running server.
    Plugin {
        /// Which plugin command.
        #[command(subcommand)]
        command: PluginCommand,
        /// Where the server is.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `leadroute serve` flags. Each also has an environment variable and a config-file
/// key; precedence is flags > env > file > defaults. Tokens have no flag: the
/// command line is visible to every user of the machine.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT [env: LEADROUTE_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the store [env: LEADROUTE_DATA_DIR] [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file [env: LEADROUTE_CONFIG]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// What a 2xx survives: process or power [env: LEADROUTE_DURABILITY] [default: power]
    #[arg(long)]
    pub durability: Option<String>,
    /// Log filter when RUST_LOG is unset [env: LEADROUTE_LOG_LEVEL] [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json [env: LEADROUTE_LOG_FORMAT] [default: text]
    #[arg(long)]
    pub log_format: Option<String>,
    /// Most leads in flight before intake answers 503 overloaded
    /// [env: LEADROUTE_MAX_IN_FLIGHT_LEADS] [default: 256]
    #[arg(long)]
    pub max_in_flight_leads: Option<String>,
    /// Load the demo organisation (7 territories, 63 reps) at start; idempotent.
    #[arg(long)]
    pub demo: bool,
}

impl ServeArgs {
    fn flags(&self) -> Flags {
        Flags {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            config: self.config.clone(),
            durability: self.durability.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            max_in_flight_leads: self.max_in_flight_leads.clone(),
        }
    }
}

/// How client subcommands reach the server. The token comes from
/// `LEADROUTE_ADMIN_TOKEN` (or `LEADROUTE_INTAKE_TOKEN` for `lead get`).
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server base URL (the token comes from LEADROUTE_ADMIN_TOKEN, else
    /// LEADROUTE_INTAKE_TOKEN; `plugin test` needs no server)
    #[arg(
        long,
        env = "LEADROUTE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Print JSON instead of a summary
    #[arg(long, global = true)]
    pub json: bool,
}

/// `leadroute lead ...`
#[derive(Debug, Subcommand)]
pub enum LeadCommand {
    /// Show a lead and its history.
    Get {
        /// The lead's id.
        id: String,
    },
}

/// `leadroute plugin ...`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload a .wasm module as a new version of NAME (it becomes the active one).
    Push {
        /// The plugin's name.
        name: String,
        /// The compiled module.
        file: PathBuf,
    },
    /// List plugins with their versions, active version and health.
    List,
    /// Make VERSION the active version of NAME (rollback).
    Activate {
        /// The plugin's name.
        name: String,
        /// The version to activate.
        version: u32,
    },
    /// Run stored routing decisions through VERSION of NAME and report what would
    /// have changed; nothing is stored.
    Replay {
        /// The plugin's name.
        name: String,
        /// The version to replay.
        version: u32,
        /// Only leads of this territory.
        #[arg(long)]
        territory: Option<String>,
        /// The newest this many leads (1-100000; the server's default is 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Run a built module on fixture leads in the engine's sandbox, without a server.
    Test {
        /// The compiled module.
        file: PathBuf,
        /// JSON with `plugin_config`, `candidates` and `leads`.
        fixtures: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => run_server(&args, args.demo),
        Command::Demo(args) => run_server(&args, true),
        Command::Lead { command, client } => {
            let (api, out) = connect(&client);
            match command {
                LeadCommand::Get { id } => api.lead_get(&id, out),
            }
        }
        Command::Simulate {
            file,
            territory,
            plugin,
            client,
        } => {
            let (api, out) = connect(&client);
            api.simulate(&file, territory.as_deref(), plugin.as_deref(), out)
        }
        Command::Backup { client } => {
            let (api, out) = connect(&client);
            api.backup(out)
        }
        Command::Restore { file, data_dir } => {
            let counts = restore(&file, &data_dir)?;
            println!(
                "restored {} records ({} bytes) from {} into {}\nstart the server on it: \
                 leadroute serve --data-dir {}",
                counts.entries,
                counts.bytes,
                file.display(),
                data_dir.display(),
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { command, client } => {
            let (api, out) = connect(&client);
            match command {
                PluginCommand::Push { name, file } => api.plugin_push(&name, &file, out),
                PluginCommand::List => api.plugin_list(out),
                PluginCommand::Activate { name, version } => {
                    api.plugin_activate(&name, version, out)
                }
                PluginCommand::Replay {
                    name,
                    version,
                    territory,
                    limit,
                } => api.plugin_replay(&name, version, territory.as_deref(), limit, out),
                // Offline: the module runs in this process's own sandbox.
                PluginCommand::Test { file, fixtures } => plugin_test::run(&file, &fixtures, out),
            }
        }
    }
}

fn connect(args: &ClientArgs) -> (Client, Output) {
    let token = std::env::var("LEADROUTE_ADMIN_TOKEN")
        .ok()
        .or_else(|| std::env::var("LEADROUTE_INTAKE_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let out = if args.json {
        Output::Json
    } else {
        Output::Text
    };
    (Client::new(&args.server, token), out)
}

/// `leadroute serve` (and `demo`): resolves the settings, starts logging and the
/// runtime, serves until shut down.
fn run_server(args: &ServeArgs, demo: bool) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(&args.flags(), &|name| std::env::var(name).ok())?;
    logging::init(&settings.log_level, settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("leadroute-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve::serve(settings, demo))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["leadroute", "serve", "--demo", "--listen", "127.0.0.1:0"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Serve(ServeArgs { demo: true, .. })
        ));
        let cli = Cli::try_parse_from(["leadroute", "demo", "--data-dir", "/tmp/x"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Demo(ServeArgs { demo: false, .. })
        ));
        let cli =
            Cli::try_parse_from(["leadroute", "plugin", "activate", "vip", "3", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Plugin {
                command: PluginCommand::Activate { version: 3, .. },
                client: ClientArgs { json: true, .. }
            }
        ));
    }
}
