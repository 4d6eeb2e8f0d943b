//! The `umsd` command: `serve`, `migrate`, `check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use umsd::config::{Config, Overrides};
use umsd::{server, telemetry};

// The send path allocates many small, short-lived buffers across threads; mimalloc
// handles that pattern with far less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "umsd", version, about = "Unified messaging dispatch daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (HTTP API, actors; the embedded PostgreSQL unless database.url is set).
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides http.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory (overrides data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply pending schema migrations and exit.
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a configuration file (with UMSD_* overrides applied) and exit.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("umsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { file } => {
            let config = Config::load(Some(&file), &Overrides::default())?;
            println!(
                "{}: ok ({} apps, {} channels)",
                file.display(),
                config.apps.len(),
                config.channels.len()
            );
            Ok(())
        }
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let config = Config::load(config.as_deref(), &Overrides { listen, data_dir })?;
            telemetry::init_logging(&config.log.filter, config.log.format == "json");
            actix::System::new().block_on(async move {
                let running = server::start(config).await?;
                running.run_until_signal().await
            })
        }
        Command::Migrate { config, data_dir } => {
            let config = Config::load(
                config.as_deref(),
                &Overrides {
                    listen: None,
                    data_dir,
                },
            )?;
            telemetry::init_logging(&config.log.filter, config.log.format == "json");
            actix::System::new().block_on(async move {
                let db = server::open_database(&config).await?;
                let result = async {
                    let store = umsd_actors::store::Store::new(
                        db.pg.clone(),
                        &server::pool_settings(&config),
                    )?;
                    server::migrate(&store).await
                }
                .await;
                db.close(&config).await;
                let applied = result?;
                println!("migrations applied: {applied}");
                Ok(())
            })
        }
    }
}
