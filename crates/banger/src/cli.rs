//! The command line, as clap types.

#[cfg(test)]
use clap::CommandFactory;
use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// banger: local microVM sandboxes.
///
/// A daemon (bangerd) owns all state; banger starts it on demand and talks
/// to it over a unix socket. Directories follow XDG and can be moved with
/// BANGER_CONFIG_DIR, BANGER_STATE_DIR, BANGER_CACHE_DIR and
/// BANGER_RUNTIME_DIR.
#[derive(Debug, Parser)]
#[command(name = "banger", version = banger_buildinfo::clap_version(), propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage virtual machines.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Guest kernels: the catalog, pulls (builds from Debian's linux-source), the local store.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Root file system images: the catalog, pulls, imports, the local store.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Start, stop and inspect the daemon.
    Daemon {
        #[command(subcommand)]
        command: DaemonCommand,
    },
    /// Install banger as two system services: bangerd as you, and a root
    /// helper for the bridge, taps and NAT rules (see docs/privileges.md).
    ///
    /// Run `sudo banger system install` once, as the user who will run VMs;
    /// `banger system status` then shows both services and their sockets.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Check this host: KVM (probed by a real boot), tools, privileges.
    Doctor {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print version, commit and build time of banger and, when it runs, the daemon.
    Version,
    /// Print a shell completion script.
    ///
    /// bash: banger completion bash > ~/.local/share/bash-completion/completions/banger
    /// zsh:  banger completion zsh > "${fpath[1]}/_banger"
    /// fish: banger completion fish > ~/.config/fish/completions/banger.fish
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// How a VM is shaped, for `vm create` and `vm run`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmShape {
    /// Name: 1-63 of a-z, 0-9 and -, not starting or ending with -
    /// [default: generated].
    #[arg(long)]
    pub name: Option<String>,
    /// Image to boot; pulled (with progress) when missing [default: debian-bookworm].
    #[arg(long)]
    pub image: Option<String>,
    /// Kernel to boot [default: the image's].
    #[arg(long)]
    pub kernel: Option<String>,
    /// Virtual CPUs, 1-64 [default: 2].
    #[arg(long)]
    pub vcpu: Option<u32>,
    /// Memory, e.g. 1024 (MiB), 512M or 2G [default: 1G].
    #[arg(long, value_parser = parse_mib)]
    pub memory: Option<u32>,
    /// Size of the work disk mounted at /root, e.g. 8G; sparse [default: 8G].
    #[arg(long, value_parser = parse_bytes)]
    pub disk_size: Option<u64>,
    /// Let the guest reach beyond the host (masquerading, for this VM only).
    #[arg(long)]
    pub nat: bool,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM and start it, waiting until its SSH server answers.
    ///
    /// The VM gets its own overlay disk over the image's shared root file
    /// system (nothing is copied), a work disk at /root, a tap on the
    /// bridge with the lowest free address, and a host key banger pins
    /// before the first boot. The stages are shown as they go.
    Create {
        #[command(flatten)]
        shape: VmShape,
        /// Create only; start later with `vm start`.
        #[arg(long)]
        no_start: bool,
    },
    /// Create a VM, run a command in it over SSH, and pass its exit code back.
    ///
    /// Given PATH (a directory in a git work tree), the repository goes
    /// into the guest first, at /root/repo, as you see it: tracked files
    /// with their work-tree content, untracked files git does not ignore,
    /// and .git, so git status, diff and log there match the host's; it is
    /// written into a disk of the VM's own before the VM boots. The
    /// command runs in it. Without a command, an interactive shell. With
    /// --rm the VM is deleted afterwards, whatever happened: no disk, tap
    /// or process is left.
    ///
    ///   banger vm run --rm . -- make test
    ///   banger vm run --rm . --from v1.2 --branch fix -- ./test.sh
    Run {
        #[command(flatten)]
        shape: VmShape,
        /// A directory in a git work tree to carry in (its top is used).
        path: Option<std::path::PathBuf>,
        #[command(flatten)]
        at: WorkspaceAt,
        /// Delete the VM when the command ends.
        #[arg(long)]
        rm: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Start a stopped VM and wait until its SSH server answers.
    Start {
        /// VM name or full id (exact: a change never acts on a prefix).
        vm: String,
    },
    /// Stop a VM: power it off over SSH (which syncs its disks), then with
    /// the ACPI power button, and kill it only if it does not stop in time.
    /// Disks are kept.
    Stop {
        /// VM name or full id (exact: a change never acts on a prefix).
        vm: String,
    },
    /// Kill a VM's VMM at once (unsynced writes in the guest are lost).
    Kill {
        /// VM name or full id (exact: a change never acts on a prefix).
        vm: String,
    },
    /// Stop a VM (if running), then start it.
    Restart {
        /// VM name or full id (exact: a change never acts on a prefix).
        vm: String,
    },
    /// Delete a VM with its disks; a running one only with --force.
    #[command(visible_alias = "rm")]
    Delete {
        /// VM name or full id (exact: a change never acts on a prefix).
        vm: String,
        /// Kill it first if it runs.
        #[arg(short, long)]
        force: bool,
    },
    /// Delete every VM that is not running (asks first unless --force).
    Prune {
        /// Do not ask.
        #[arg(short, long)]
        force: bool,
    },
    /// Change a stopped VM's vCPUs, memory or work disk size (grow only).
    Set {
        /// VM name or full id (exact: a change never acts on a prefix).
        vm: String,
        /// Virtual CPUs, 1-64.
        #[arg(long)]
        vcpu: Option<u32>,
        /// Memory, e.g. 2048 (MiB) or 2G.
        #[arg(long, value_parser = parse_mib)]
        memory: Option<u32>,
        /// Work disk size, e.g. 16G (it can only grow).
        #[arg(long, value_parser = parse_bytes)]
        disk_size: Option<u64>,
    },
    /// List VMs.
    #[command(visible_aliases = ["ls", "ps"])]
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one VM (JSON).
    Show {
        /// VM name, full id, or an unambiguous prefix of an id.
        vm: String,
    },
    /// Print a VM's serial console log.
    Logs {
        /// VM name, full id, or an unambiguous prefix of an id.
        vm: String,
        /// Keep printing as the guest writes, until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Print the guest's bytes as they are, escape sequences included
        /// (by default control characters and escape sequences are removed:
        /// the guest must not drive your terminal).
        #[arg(long)]
        raw: bool,
    },
    /// Run a command in a running VM's workspace, exit code passed back.
    ///
    /// Runs through `mise exec --` when the guest has mise, with a TTY when
    /// this terminal is one. When the host checkout moved since the last
    /// prepare (another HEAD, or unsynced edits) it says so on stderr;
    /// --auto-prepare syncs it first.
    ///
    ///   banger vm exec dev -- cargo test
    Exec {
        /// VM name, full id, or an unambiguous prefix of an id.
        vm: String,
        /// Sync the workspace first when the host checkout has moved.
        #[arg(long)]
        auto_prepare: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A running VM's workspace: the repository it carries.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Open a shell in a running VM over SSH, or run a command there.
    ///
    /// Uses banger's key and known_hosts with StrictHostKeyChecking=yes:
    /// the VM's host key was pinned at create time.
    Ssh {
        /// VM name, full id, or an unambiguous prefix of an id.
        vm: String,
        /// A command to run instead of a shell, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

/// Which state of a checkout goes into the guest.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkspaceAt {
    /// Create and check out this new branch in the guest's copy (starting
    /// at --from, else at HEAD with your work-tree changes).
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// Check the guest's copy out at this commit, tag or branch instead of
    /// your work tree (work-tree changes are not carried).
    #[arg(long, value_name = "REF")]
    pub from: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Sync a running VM's workspace from a checkout, replacing what it
    /// held; recorded (vm show) so exec can tell when the host moves on.
    Prepare {
        /// VM name or full id (exact).
        vm: String,
        /// A directory in a git work tree [default: the current directory].
        path: Option<std::path::PathBuf>,
        #[command(flatten)]
        at: WorkspaceAt,
    },
    /// Write the guest's changes since the last prepare as a git patch.
    ///
    /// Edits, additions, deletions, renames, mode changes and binary files,
    /// against the tree as prepared (your uncommitted edits included):
    /// apply it to that checkout with `git apply` (`git apply --index` on a
    /// clean checkout at the prepared commit). The guest is left as it was;
    /// no changes is an empty patch.
    ///
    ///   banger vm workspace export dev -o fix.patch && git apply fix.patch
    Export {
        /// VM name, full id, or an unambiguous prefix of an id.
        vm: String,
        /// Write the patch here instead of to stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

/// Bytes from `4096`, `512K`, `64M`, `8G` or `1T` (binary units).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 4096, 512M or 8G"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G or T)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// MiB from a plain number (MiB) or a size with a unit.
pub fn parse_mib(text: &str) -> Result<u32, String> {
    let bytes = if text.trim().bytes().all(|b| b.is_ascii_digit()) {
        parse_bytes(text)?.checked_mul(1 << 20).ok_or("too large")?
    } else {
        parse_bytes(text)?
    };
    if bytes % (1 << 20) != 0 {
        return Err(format!("{text:?} is not a whole number of MiB"));
    }
    u32::try_from(bytes >> 20).map_err(|_| format!("{text:?} is too large"))
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// List the kernels banger knows how to produce.
    Catalog {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Build (or fetch) a catalog kernel into the local store.
    ///
    /// generic-6.1 is built from Debian's linux-source-6.1 package, which
    /// must be installed; it takes a few minutes on two cores, with the
    /// stages shown as it goes. Pulling a kernel already present returns at
    /// once; two pulls of one kernel share one build. Ctrl-C cancels.
    Pull {
        /// Catalog name, e.g. generic-6.1.
        name: String,
    },
    /// List the kernels in the local store.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one kernel (JSON).
    Show {
        /// Kernel name.
        name: String,
    },
    /// Delete a kernel no image uses.
    #[command(visible_alias = "rm")]
    Delete {
        /// Kernel name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images banger knows how to produce.
    Catalog {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Build a catalog image, or pull one from an OCI or Docker registry.
    ///
    /// A catalog name (debian-bookworm) is built with mmdebstrap from the
    /// configured Debian mirror (config key debian_mirror). A reference
    /// (docker.io/library/debian:bookworm, ghcr.io/team/app:v2,
    /// 127.0.0.1:5000/test:latest, repo@sha256:...) is pulled without root
    /// or a container engine: an index resolves to linux/amd64, layers
    /// (gzip, zstd or plain) land in a shared blob cache with their digests
    /// checked, and are flattened (whiteouts applied, owners and modes
    /// kept, hostile entries refused) into an ext4 file. Credentials come
    /// from ~/.docker/config.json when present. Either way the image is
    /// written without root; two pulls of one name share one build; Ctrl-C
    /// cancels.
    ///
    /// banger boots the image's /sbin/init and reaches the guest over SSH.
    /// An image without systemd or sshd (most container images) gets them
    /// at each VM's first boot, installed by banger's init with the
    /// image's package manager (apt, apk, dnf, pacman or zypper, by
    /// /etc/os-release), which needs the VM created with --nat; progress
    /// is in `banger vm logs`. An image with neither a known package
    /// manager nor systemd and sshd is refused at `vm create`.
    Pull {
        /// Catalog name or registry reference.
        name: String,
        /// For a reference: the local image name [default: the reference's
        /// last path component and tag, e.g. app-v2].
        #[arg(long = "name", value_name = "IMAGE")]
        image_name: Option<String>,
        /// For a reference: catalog kernel its VMs boot [default: generic-6.1].
        #[arg(long)]
        kernel: Option<String>,
        /// For a reference: plain HTTP to a registry off loopback (loopback
        /// registries always may).
        #[arg(long)]
        insecure: bool,
    },
    /// The layer blob cache registry pulls share.
    #[command(subcommand)]
    Cache(ImageCacheCommand),
    /// Import a root file system tarball (e.g. `docker export` output) or an ext4 file.
    Import {
        /// A plain (uncompressed) tar archive or an ext4 file system image.
        file: std::path::PathBuf,
        /// Name of the new image (1-63 of a-z, 0-9, -).
        #[arg(long)]
        name: String,
        /// Catalog kernel its VMs boot [default: generic-6.1].
        #[arg(long)]
        kernel: Option<String>,
    },
    /// List the images in the local store.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one image (JSON).
    Show {
        /// Image name.
        name: String,
    },
    /// Delete an image no VM uses.
    #[command(visible_alias = "rm")]
    Delete {
        /// Image name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCacheCommand {
    /// Remove cached layer blobs that no running pull uses; images already
    /// pulled are unaffected (a later pull downloads again).
    Prune {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Record the owner in /etc/banger/install.toml, write the
    /// bangerd-root and bangerd units and start them (as root, via sudo).
    ///
    /// The helper serves the bridge and subnet of the owner's config.toml
    /// as it is now: after changing them, install again. A bangerd the
    /// owner started by hand is stopped first; its VMs keep running.
    /// Where systemd is not PID 1 the files are written and the two
    /// commands that run the same processes by hand are printed.
    Install {
        /// Whose banger this is: a user name or uid [default: the user
        /// who ran sudo]. Never root.
        #[arg(long, value_name = "USER")]
        owner: Option<String>,
        /// Write the files under DIR instead of / and start nothing (for
        /// packaging, and for checking the units).
        #[arg(long, value_name = "DIR")]
        root: Option<std::path::PathBuf>,
    },
    /// Show the install and check it: both services active, both sockets
    /// the owner's alone, both unit files as banger wrote them (hardening
    /// intact, no drop-in overriding it). `banger doctor` checks the same.
    ///
    /// Exits 0 when nothing failed, 1 when something did, 3 when there is
    /// no system install.
    Status {
        /// Check the files under DIR instead of / (see `install --root`).
        #[arg(long, value_name = "DIR")]
        root: Option<std::path::PathBuf>,
    },
    /// Restart both services (as root). VMs keep running.
    Restart,
    /// Stop and remove both services and /etc/banger/install.toml (as
    /// root). VMs, images and the store are kept.
    Uninstall {
        /// Remove the files under DIR instead of / (see `install --root`).
        #[arg(long, value_name = "DIR")]
        root: Option<std::path::PathBuf>,
    },
}

/// `banger daemon ...`.
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon if it is not running, and wait until it answers.
    Start,
    /// Stop the daemon and wait until it has exited. VMs keep running.
    Stop,
    /// Stop the daemon, then start it again.
    Restart,
    /// Show whether the daemon runs, its pid, version and socket.
    ///
    /// Exits 0 when it runs, 3 when it does not.
    Status {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print the daemon's log (JSON lines).
    Logs {
        /// How many of the last lines to print (0: all).
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// Keep printing lines as they are written, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArg {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("8G"), Ok(8 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1t"), Ok(1 << 40));
        assert!(parse_bytes("8X").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999T").is_err());
        assert_eq!(parse_mib("1024"), Ok(1024));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert!(parse_mib("1500K").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
