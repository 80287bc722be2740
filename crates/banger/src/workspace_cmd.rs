//! `banger vm workspace ...`, `vm exec`, and the workspace half of `vm run`.
//! The checkout is read here, with the user's own rights, and streamed to
//! the daemon as one tar.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use banger_api::text::shell_quote;
use banger_api::{PrepareWorkspaceQuery, Vm};
use banger_client::Client;
use banger_workspace::{Contents, Repo, Snapshot};
use bytes::Bytes;

use crate::cli::{WorkspaceAt, WorkspaceCommand};
use crate::print;

/// A checkout checked and ready to carry: everything about it that can be
/// wrong is found before any VM is made.
#[derive(Debug)]
pub struct Checkout {
    repo: Repo,
    checkout: Option<String>,
    branch: Option<String>,
}

impl Checkout {
    /// Checks `path` and the `--from` / `--branch` asked for.
    pub fn open(path: &Path, at: &WorkspaceAt) -> anyhow::Result<Self> {
        let repo = Repo::open(path)?;
        let checkout = at.from.as_deref().map(|r| repo.resolve(r)).transpose()?;
        if let Some(name) = &at.branch {
            repo.check_new_branch(name)?;
        }
        Ok(Self {
            repo,
            checkout,
            branch: at.branch.clone(),
        })
    }
}

impl Checkout {
    /// Whether it can be laid into a new VM's workspace disk before the
    /// first boot: the work tree as it is (`--from` and `--branch` need
    /// git in the guest).
    pub fn lays_in(&self) -> bool {
        self.checkout.is_none() && self.branch.is_none()
    }

    /// The user's git identity, as this repository sees it.
    pub fn identity(&self) -> (Option<String>, Option<String>) {
        self.repo.identity()
    }
}

/// Where a prepare's stream is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// A running VM's guest, over SSH.
    Guest,
    /// The workspace disk of a VM created with one and not yet started,
    /// built on the host.
    Disk,
}

/// How many times a prepare the guest found stale (a file it held edited
/// in the guest between its listing and the stream) is made again; the
/// last try asks for no listing and sends everything, which cannot be
/// stale.
const STALE_TRIES: usize = 3;

/// Streams `checkout` into the VM `vm`'s workspace: over SSH into a
/// running VM, or, for a VM created with a workspace disk and not yet
/// started, into that disk on the host.
pub async fn prepare(
    client: &Client,
    vm: &str,
    checkout: &Checkout,
    to: Receiver,
) -> anyhow::Result<Vm> {
    retry_stale(|listing| prepare_once(client, vm, checkout, to, listing)).await
}

/// Runs `attempt` (given whether it may ask for the guest's listing)
/// until it is not refused as stale, at most [`STALE_TRIES`] times.
async fn retry_stale<T, F: Future<Output = anyhow::Result<T>>>(
    mut attempt: impl FnMut(bool) -> F,
) -> anyhow::Result<T> {
    let mut tries = 1;
    loop {
        let last = tries == STALE_TRIES;
        match attempt(!last).await {
            Err(e) if !last && is_stale(&e) => {
                eprintln!("banger: {e:#}; preparing again");
                tries += 1;
            }
            done => return done,
        }
    }
}

/// Whether `err` is the daemon's answer that the guest's workspace moved
/// under the prepare.
fn is_stale(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<banger_client::ClientError>(),
        Some(banger_client::ClientError::Api { body, .. }) if body.code == banger_api::ErrorCode::Stale
    )
}

/// One prepare; with `listing`, what the guest already holds (asked
/// first) is left out of the stream.
async fn prepare_once(
    client: &Client,
    vm: &str,
    checkout: &Checkout,
    to: Receiver,
    listing: bool,
) -> anyhow::Result<Vm> {
    let repo = checkout.repo.clone();
    let snapshot = Snapshot::take(&repo)?;
    let (git_name, git_email) = repo.identity();
    let query = PrepareWorkspaceQuery {
        host_path: path_text(repo.top())?,
        commit: snapshot.head.clone(),
        host_branch: snapshot.branch.clone(),
        checkout: checkout.checkout.clone(),
        branch: checkout.branch.clone(),
        fingerprint: snapshot.fingerprint.clone(),
        git_name,
        git_email,
    };
    let contents = if checkout.checkout.is_some() {
        Contents::GitOnly
    } else {
        Contents::WorkTree
    };
    // The base is hashed before the request opens: a big untracked file
    // must not stall the stream the daemon is waiting on.
    let base = async {
        match contents {
            Contents::WorkTree => {
                let repo = repo.clone();
                let base = tokio::task::spawn_blocking(move || banger_workspace::Base::of(&repo));
                Ok::<_, anyhow::Error>(Some(base.await??))
            }
            Contents::GitOnly => Ok(None),
        }
    };
    // Objects the VM's workspace already has (a re-prepare): left out,
    // the guest links its own. Any failure just sends them all. Asked
    // while the base is hashed.
    let held = async {
        if to == Receiver::Disk || !listing {
            return banger_api::workspace::HeldObjects::default();
        }
        client.held_objects(vm).await.unwrap_or_default()
    };
    let (base, listed) = tokio::join!(base, held);
    // Work-tree files the guest holds as the host would send them: left
    // out, the guest links its own. Any failure just sends them all.
    let (base, files) = {
        let (repo, files) = (repo.clone(), listed.files);
        tokio::task::spawn_blocking(move || {
            let base = base?;
            let held = match &base {
                Some(base) => base.held_files(&repo, &files).unwrap_or_default(),
                None => std::collections::HashMap::new(),
            };
            Ok::<_, anyhow::Error>((base, held))
        })
        .await??
    };
    let held = banger_workspace::Held {
        objects: banger_workspace::held_paths(&listed.names),
        files,
        prepared: listed.prepared,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let packer = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let packed = match to {
            Receiver::Guest => banger_workspace::pack_for_guest(
                &repo,
                &snapshot,
                contents,
                base.as_ref(),
                &held,
                &mut out,
            ),
            Receiver::Disk => {
                banger_workspace::pack(&repo, &snapshot, contents, base.as_ref(), &mut out)
            }
        };
        if let Err(e) = &packed {
            // The request fails rather than ending as if whole.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        packed
    });
    let sent = client.prepare_workspace(vm, &query, rx).await;
    let packed = packer.await?;
    match (sent, packed) {
        // The daemon's answer (a 409, say) explains more than the packer's
        // "stopped reading".
        (Err(e @ banger_client::ClientError::Api { .. }), _) => Err(e.into()),
        // The packer's own error names the file; the request's only says
        // the stream broke.
        (_, Err(e)) => Err(e.into()),
        (sent, Ok(_)) => Ok(sent?),
    }
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{path:?}: a repository path must be valid UTF-8"))
}

const CHUNK: usize = 256 * 1024;

/// Sends what is written as chunks of [`CHUNK`] bytes.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the daemon stopped reading the workspace"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// `banger vm workspace ...`.
pub async fn run(client: &Client, command: WorkspaceCommand) -> anyhow::Result<ExitCode> {
    match command {
        WorkspaceCommand::Prepare { vm, path, at } => {
            let checkout = Checkout::open(&path.unwrap_or_else(|| PathBuf::from(".")), &at)?;
            running(client, &vm).await?;
            let vm = prepare(client, &vm, &checkout, Receiver::Guest).await?;
            if let Some(ws) = &vm.workspace {
                print(&format!(
                    "{} -> {}:{}\n",
                    ws.host_path, vm.name, ws.guest_path
                ))?;
            }
        }
        WorkspaceCommand::Export { vm, output } => {
            let patch = client.export_workspace(&vm).await?;
            match output {
                Some(file) => std::fs::write(&file, &patch)
                    .with_context(|| format!("write {}", file.display()))?,
                None if std::io::stdout().is_terminal() => {
                    // The guest wrote these bytes: not for a terminal raw.
                    print(&banger_api::text::printable(&String::from_utf8_lossy(
                        &patch,
                    )))?;
                }
                None => std::io::stdout().lock().write_all(&patch)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The VM `vm`, refused unless it runs (before any stream is sent).
async fn running(client: &Client, vm: &str) -> anyhow::Result<Vm> {
    let found = client.get_vm(vm).await?;
    if found.state != banger_api::VmState::Running {
        anyhow::bail!(
            "vm {} is not running (it is {}); start it with `banger vm start {}`",
            found.name,
            found.state.as_str(),
            found.name
        );
    }
    Ok(found)
}

/// The remote command that runs `command` in `guest_path`, through
/// `mise exec` when the guest has mise; a login shell there when empty.
pub fn in_workspace(guest_path: &str, command: &[String]) -> String {
    let dir = shell_quote(guest_path);
    if command.is_empty() {
        return format!("cd {dir} && exec \"${{SHELL:-/bin/sh}}\" -l");
    }
    let words = command
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "cd {dir} && if command -v mise >/dev/null 2>&1; then mise trust --quiet --all >/dev/null 2>&1; exec mise exec -- {words}; else exec {words}; fi"
    )
}

/// `banger vm exec`.
pub async fn exec(
    client: &Client,
    vm: &str,
    auto_prepare: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    // The VM and its SSH target at once: one round trip's wait, not two.
    let (found, target) = tokio::join!(running(client, vm), client.vm_ssh_target(vm));
    let found = found?;
    let ws = found.workspace.clone().with_context(|| {
        format!(
            "vm {0} has no workspace: give it one with `banger vm workspace prepare {0} PATH`",
            found.name
        )
    })?;
    // A `--from` workspace holds a commit, not the host's work tree: the
    // host moving says nothing about it. The check reads every file's
    // metadata, so it runs beside the command unless its answer decides
    // what happens first (a prepare, or a terminal session a late
    // warning would garble).
    let check = ws.checkout.is_none().then(|| {
        let ws = ws.clone();
        tokio::task::spawn_blocking(move || moved(&ws))
    });
    let warning = format!(
        "warning: {} changed since vm {}'s workspace was prepared (HEAD or files); --auto-prepare syncs it first",
        ws.host_path, found.name
    );
    let remote = in_workspace(&ws.guest_path, command);
    let target = target?;
    let Some(check) = check else {
        return crate::vm_cmd::ssh_in(target, remote).await;
    };
    // A terminal session (ssh -t) puts the terminal in raw mode: a
    // warning written during it would land mid-screen.
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if auto_prepare || command.is_empty() || tty {
        if check.await.unwrap_or(true) {
            if auto_prepare {
                resync(client, &found.name, &ws).await?;
            } else {
                let _ = writeln!(std::io::stderr(), "{warning}");
            }
        }
        return crate::vm_cmd::ssh_in(target, remote).await;
    }
    let warn = async {
        if check.await.unwrap_or(true) {
            let _ = writeln!(std::io::stderr(), "{warning}");
        }
    };
    let run = crate::vm_cmd::ssh_in(target, remote);
    let ((), code) = tokio::join!(warn, run);
    code
}

/// Prepares vm `name` again from its workspace's host path, refusing
/// while the guest holds changes not yet exported.
async fn resync(client: &Client, name: &str, ws: &banger_api::Workspace) -> anyhow::Result<()> {
    // A prepare replaces the tree: never over work not yet exported.
    if !client.export_workspace(name).await?.is_empty() {
        anyhow::bail!(
            "vm {name}'s workspace has changes since its prepare; export them first (`banger vm workspace export {name}`) or prepare explicitly to drop them"
        );
    }
    let at = WorkspaceAt {
        branch: None,
        from: None,
    };
    let checkout = Checkout::open(Path::new(&ws.host_path), &at)?;
    prepare(client, name, &checkout, Receiver::Guest)
        .await
        .map(drop)
}

/// Whether the host checkout differs from what the workspace recorded
/// (a checkout that is gone or unreadable counts as moved).
fn moved(ws: &banger_api::Workspace) -> bool {
    Repo::recorded(Path::new(&ws.host_path))
        .and_then(|repo| Snapshot::fingerprint_now(&repo))
        .map_or(true, |now| now != ws.fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::{ErrorBody, ErrorCode};
    use banger_client::ClientError;

    #[test]
    fn a_command_runs_in_the_workspace_through_mise_when_there() {
        let cmd = in_workspace("/root/repo", &["sh".into(), "-c".into(), "exit 7".into()]);
        assert_eq!(
            cmd,
            "cd /root/repo && if command -v mise >/dev/null 2>&1; then mise trust --quiet --all >/dev/null 2>&1; exec mise exec -- sh -c 'exit 7'; else exec sh -c 'exit 7'; fi"
        );
        // What a shell without mise makes of it (in a directory that exists).
        let here = in_workspace("/", &["sh".into(), "-c".into(), "pwd; exit 7".into()]);
        let out = banger_sys::Cmd::new("sh")
            .arg("-c")
            .arg(&here)
            .to_command()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert_eq!(
            (out.status.code(), out.stdout.as_slice()),
            (Some(7), &b"/\n"[..])
        );
        assert!(in_workspace("/root/repo", &[]).ends_with("-l"));
    }

    fn api_error(code: ErrorCode) -> anyhow::Error {
        ClientError::Api {
            status: http::StatusCode::CONFLICT,
            body: ErrorBody {
                code,
                message: "work-tree files the guest held changed".into(),
                op_id: "op".into(),
            },
        }
        .into()
    }

    /// Runs `retry_stale` over attempts answering `answers` in turn; the
    /// result and each attempt's `listing`.
    fn run(answers: Vec<ErrorCode>) -> (anyhow::Result<usize>, Vec<bool>) {
        let listings = std::cell::RefCell::new(Vec::new());
        let result = run_async(retry_stale(|listing| {
            listings.borrow_mut().push(listing);
            let n = listings.borrow().len();
            let answer = answers.get(n - 1).copied();
            async move {
                match answer {
                    Some(code) => Err(api_error(code)),
                    None => Ok(n),
                }
            }
        }));
        (result, listings.into_inner())
    }

    fn run_async<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_stale_prepare_is_made_again_and_the_last_try_sends_everything() {
        let (done, listings) = run(vec![ErrorCode::Stale]);
        assert_eq!(done.unwrap(), 2);
        assert_eq!(listings, [true, true]);

        // Stale every time it lists: the last try lists nothing, so it
        // cannot be stale.
        let (done, listings) = run(vec![ErrorCode::Stale, ErrorCode::Stale]);
        assert_eq!(done.unwrap(), 3);
        assert_eq!(listings, [true, true, false]);

        let (err, listings) = run(vec![ErrorCode::Stale; 3]);
        assert!(is_stale(&err.unwrap_err()));
        assert_eq!(listings.len(), STALE_TRIES);
    }

    #[test]
    fn other_errors_are_not_retried() {
        for code in [
            ErrorCode::Conflict,
            ErrorCode::NotRunning,
            ErrorCode::OperationFailed,
        ] {
            let (err, listings) = run(vec![code]);
            assert!(!is_stale(&err.unwrap_err()), "{code}");
            assert_eq!(listings, [true], "{code}");
        }
    }
}
