//! The command line, as clap types.

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

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List VMs.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        output: OutputArg,
    },
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
    /// Build (or fetch) a catalog image into the local store.
    ///
    /// debian-bookworm is built with mmdebstrap from the configured Debian
    /// mirror (config key debian_mirror), then written to an ext4 file
    /// without root. Pulling an image already present returns at once; two
    /// pulls of one image share one build. Ctrl-C cancels.
    Pull {
        /// Catalog name, e.g. debian-bookworm.
        name: String,
    },
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
