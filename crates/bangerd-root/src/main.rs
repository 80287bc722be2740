//! `bangerd-root`: the root helper. Serves one owner's unprivileged
//! `bangerd` the closed set of host-network operations in
//! `banger_helper::protocol`, each checked against the bridge and subnet
//! given here, never against what the daemon asks for.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use banger_api::net::Subnet;
use banger_helper::{Policy, Server, SysfsTaps};
use clap::Parser;

/// banger's root helper. Run it as root for one owner; the owner's
/// `bangerd` then creates the bridge, its taps and NAT rules through it.
/// `banger system install` runs it as a systemd service; by hand:
/// `sudo bangerd-root --owner "$(id -u)"`.
#[derive(Debug, Parser)]
#[command(name = "bangerd-root", version = banger_buildinfo::clap_version())]
struct Args {
    /// The uid of the only user (besides root) it serves: the user bangerd
    /// runs as. Never 0.
    #[arg(long)]
    owner: u32,
    /// The only bridge it creates or attaches taps to (bangerd's `bridge`).
    #[arg(long, default_value = "banger0")]
    bridge: String,
    /// The only subnet it assigns (bangerd's `bridge_subnet`).
    #[arg(long, default_value = "10.77.0.1/24")]
    subnet: String,
    /// Where it listens: a socket 0600 owned by the owner.
    #[arg(long, default_value = banger_helper::DEFAULT_SOCKET)]
    socket: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bangerd-root: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if banger_sys::euid() != 0 {
        bail!("bangerd-root must run as root (it creates taps and NAT rules)");
    }
    let subnet: Subnet = args.subnet.parse().context("--subnet")?;
    let policy = Policy::new(args.owner, &args.bridge, subnet).context("--owner/--bridge")?;
    let dir = args
        .socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .context("--socket needs a directory")?;
    ensure_dir(dir)?;
    let net = banger_net::HostNetwork::new(Arc::new(banger_sys::HostRunner), dir.join("net.log"));
    let server = Arc::new(Server::new(
        policy,
        Arc::new(net),
        Box::new(SysfsTaps::new("/sys")),
        Box::new(std::io::stderr()),
    ));
    let listener = server
        .bind(&args.socket)
        .with_context(|| format!("listen on {}", args.socket.display()))?;
    eprintln!(
        "bangerd-root: serving uid {} on {} (bridge {}, subnet {})",
        args.owner,
        args.socket.display(),
        args.bridge,
        args.subnet
    );
    server.serve(&listener).context("accept")?;
    Ok(())
}

/// The socket's directory: created 0755 (the owner must reach the socket
/// in it, not write there). It and every directory above it must be
/// root's and writable by no one else (sticky ones like /tmp aside: there
/// no one else can rename root's entries), or someone could swap a path
/// component under the helper and make root remove or chmod another file.
fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_absolute() {
        bail!("--socket must be an absolute path");
    }
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    for at in dir.ancestors() {
        let meta =
            std::fs::symlink_metadata(at).with_context(|| format!("stat {}", at.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory (a symlink?)", at.display());
        }
        if meta.uid() != 0 {
            bail!(
                "{} is not owned by root: its owner could replace the socket",
                at.display()
            );
        }
        let sticky = meta.permissions().mode() & 0o1000 != 0;
        if meta.permissions().mode() & 0o022 != 0 && !(sticky && at != dir) {
            bail!(
                "{} is writable by group or others: another user could replace the socket",
                at.display()
            );
        }
    }
    Ok(())
}
