//! `banger`: parses the command line, talks to the daemon through
//! `banger-client`, prints. No logic worth testing lives here; the
//! end-to-end tests in `tests/` drive this binary against a real daemon.

mod artifact_cmd;
mod cli;
mod daemon_cmd;
mod follow;
mod install_checks;
mod system_cmd;
mod units;
mod vm_cmd;
mod workspace_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use banger_client::{Client, ClientError, Started};
use banger_config::{Config, Layout};
use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

/// What every command may need: where things are and what was configured.
#[derive(Debug)]
struct Ctx {
    layout: Layout,
    config: Config,
}

impl Ctx {
    fn load() -> anyhow::Result<Self> {
        let layout = Layout::from_env()?;
        let loaded = Config::load(&layout.config_path())?;
        for warning in &loaded.warnings {
            let _ = writeln!(std::io::stderr(), "warning: {warning}");
        }
        Ok(Self {
            layout,
            config: loaded.config,
        })
    }

    /// A client of a running daemon, starting one if none answers.
    async fn daemon(&self) -> anyhow::Result<Client> {
        Ok(self.start_daemon().await?.client)
    }

    async fn start_daemon(&self) -> anyhow::Result<Started> {
        if let Some(unit) = system_daemon() {
            // The service owns the daemon: one started here would run
            // outside its sandbox and hold the lock the service needs.
            return match self.client().ping().await {
                Ok(ping) => Ok(Started {
                    client: self.client(),
                    ping,
                    launched: false,
                }),
                Err(e) if e.is_not_running() => Err(anyhow::anyhow!(
                    "bangerd is not running, and this is a system install: start it with `sudo systemctl start {unit}`, or by hand as docs/privileges.md shows (see `banger system status`)"
                )),
                Err(e) => Err(e.into()),
            };
        }
        let timeout = Duration::from_secs(self.config.daemon_start_timeout_secs);
        Ok(banger_client::ensure_daemon(&self.layout, &bangerd_path(), timeout).await?)
    }

    /// A client that does not start anything.
    fn client(&self) -> Client {
        Client::new(self.layout.socket_path())
    }
}

/// The daemon's unit, when this user's banger is a system install (and
/// no `BANGER_RUNTIME_DIR` points elsewhere).
fn system_daemon() -> Option<&'static str> {
    system_install().ok()?.map(|_| units::DAEMON_UNIT)
}

/// The install record, when this user's banger is a system install: they
/// are its owner and no `BANGER_RUNTIME_DIR` points elsewhere. An error
/// when the record is there but cannot be read.
fn system_install() -> Result<Option<banger_config::install::Install>, String> {
    if std::env::var_os("BANGER_RUNTIME_DIR").is_some_and(|v| !v.is_empty()) {
        return Ok(None);
    }
    let install = banger_config::install::Install::load(std::path::Path::new(
        banger_config::install::INSTALL_FILE,
    ))
    .map_err(|e| format!("{e:#}"))?;
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    Ok(install.filter(|i| i.owner_uid == uid))
}

/// `BANGER_DAEMON_BIN`, else `bangerd` beside this binary, else `bangerd`
/// from PATH.
fn bangerd_path() -> PathBuf {
    if let Some(path) = std::env::var_os("BANGER_DAEMON_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bangerd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(&anyhow::Error::new(err).context("start the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => version().await,
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "banger", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon { command } => daemon_cmd::run(&Ctx::load()?, command).await,
        Command::System { command } => system_cmd::run(command),
        Command::Vm { command } => vm_cmd::run(&Ctx::load()?, command).await,
        Command::Doctor { output } => vm_cmd::doctor(&Ctx::load()?, output).await,
        Command::Kernel { command } => artifact_cmd::kernel(&Ctx::load()?, command).await,
        Command::Image { command } => artifact_cmd::image(&Ctx::load()?, command).await,
    }
}

async fn version() -> anyhow::Result<ExitCode> {
    use banger_buildinfo::{BUILT_AT, COMMIT, VERSION};
    let mut out = format!("banger {VERSION}\ncommit: {COMMIT}\nbuilt:  {BUILT_AT}\n");
    // Report the daemon only when one runs: `version` never starts it.
    let daemon = match Ctx::load() {
        Ok(ctx) => match ctx.client().ping().await {
            Ok(p) => format!(
                "daemon: bangerd {} (commit {}, built {}), pid {}, up {}s",
                p.version, p.commit, p.built_at, p.pid, p.uptime_secs
            ),
            Err(e) if e.is_not_running() => "daemon: not running".to_owned(),
            Err(e) => format!("daemon: unreachable ({:#})", anyhow::Error::new(e)),
        },
        Err(e) => format!("daemon: unknown ({e:#})"),
    };
    out.push_str(&daemon);
    out.push('\n');
    print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Pretty JSON with a final newline.
fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Writes to stdout; a closed pipe (`banger ... | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints the error as one line, with the op id when the daemon gave one.
fn fail(err: &anyhow::Error) -> ExitCode {
    let op_id = err
        .chain()
        .find_map(|e| e.downcast_ref::<ClientError>())
        .and_then(|e| e.op_id().map(str::to_owned));
    // A daemon message can quote the guest (a console tail, a command's
    // output): only printable text reaches the terminal.
    let mut line = format!(
        "error: {}",
        banger_api::text::printable(&format!("{err:#}"))
    );
    if let Some(op_id) = op_id {
        line.push_str(&format!(" (op {op_id})"));
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    ExitCode::FAILURE
}
