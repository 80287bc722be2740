//! `bangerd`: wires the layout, config and logging to the daemon library
//! and runs it until SIGTERM, SIGINT or `POST /v1/shutdown`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use banger_config::{Config, Layout};
use banger_daemon::{Daemon, DaemonError, DaemonOptions, logging, openapi, server};
use clap::{Parser, Subcommand};

/// The banger daemon. Usually started on demand by `banger`; run it by hand
/// to watch its log on stderr.
#[derive(Debug, Parser)]
#[command(name = "bangerd", version = banger_buildinfo::clap_version())]
struct Args {
    /// Log to the log file only, not to stderr (set when `banger` starts it).
    #[arg(long)]
    detached: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the API's OpenAPI 3 document and exit.
    Openapi,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Openapi) = args.command {
        let mut out = std::io::stdout().lock();
        return match out.write_all(openapi::document_json().as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let already = err
                .downcast_ref::<DaemonError>()
                .is_some_and(|e| matches!(e, DaemonError::AlreadyRunning { .. }));
            tracing::error!(error = format!("{err:#}"), "bangerd failed");
            // Without a subscriber (early failure) the line above goes
            // nowhere; stderr always reaches the user or the log file.
            let _ = writeln!(std::io::stderr(), "bangerd: error: {err:#}");
            if already {
                ExitCode::from(banger_api::exit::DAEMON_ALREADY_RUNNING)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let layout = Layout::from_env()?;
    layout.ensure()?;
    layout.check_config_trusted(banger_sys::euid())?;
    let loaded = Config::load(&layout.config_path())?;
    logging::init(&layout.log_path(), loaded.config.log_level, !args.detached)
        .context("set up logging")?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let stopped = runtime.block_on(async {
        let daemon = Daemon::bind(&layout, DaemonOptions::from_config(&loaded.config)).await?;
        anyhow::Ok(daemon.serve(server::termination_signal()).await?)
    })?;
    // A request still running on a blocking thread gets a moment more;
    // only then is the instance lock released, as the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(stopped);
    Ok(())
}
