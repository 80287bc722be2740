//! `banger vm ...` and `banger doctor`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use banger_api::names::VmName;
use banger_api::text::shell_quote;
use banger_api::{CreateVmRequest, SetVmRequest, SshTarget, VmState, routes};
use banger_client::{Client, render};
use banger_config::install::INSTALL_FILE;

use crate::cli::{Output, OutputArg, VmCommand, VmShape, WorkspaceCommand};
use crate::follow::{finish, follow};
use crate::workspace_cmd::Checkout;
use crate::{Ctx, json, print};

/// Checks a name or reference before any request is made.
fn check_vm(what: &str, name: &str) -> anyhow::Result<()> {
    Ok(banger_api::names::validate_name(what, name)?)
}

fn request(shape: VmShape, no_start: bool) -> anyhow::Result<CreateVmRequest> {
    let artifact = |what, value: Option<String>| {
        value
            .map(|v| crate::artifact_cmd::artifact_name(what, v))
            .transpose()
    };
    // The guest's /root/.gitconfig gets the user's identity from the start.
    let (git_name, git_email) = banger_workspace::identity(std::path::Path::new("."));
    Ok(CreateVmRequest {
        name: shape.name.map(VmName::new).transpose()?,
        image: artifact("image", shape.image)?,
        kernel: artifact("kernel", shape.kernel)?,
        vcpus: shape.vcpu,
        memory_mib: shape.memory,
        disk_bytes: shape.disk_size,
        nat: shape.nat,
        no_start,
        workspace_disk: false,
        git_name,
        git_email,
    })
}

pub async fn run(ctx: &Ctx, command: VmCommand) -> anyhow::Result<ExitCode> {
    // Names are refused before the daemon is even started.
    match &command {
        VmCommand::Start { vm }
        | VmCommand::Stop { vm }
        | VmCommand::Kill { vm }
        | VmCommand::Restart { vm }
        | VmCommand::Delete { vm, .. }
        | VmCommand::Set { vm, .. }
        | VmCommand::Show { vm }
        | VmCommand::Logs { vm, .. }
        | VmCommand::Ssh { vm, .. }
        | VmCommand::Exec { vm, .. }
        | VmCommand::Workspace {
            command: WorkspaceCommand::Prepare { vm, .. } | WorkspaceCommand::Export { vm, .. },
        } => check_vm("vm reference", vm)?,
        VmCommand::Create { shape, .. } | VmCommand::Run { shape, .. } => {
            request(shape.clone(), false)?;
        }
        VmCommand::Prune { .. } | VmCommand::List { .. } => {}
    }
    let client = ctx.daemon().await?;
    match command {
        VmCommand::List { output } => {
            let vms = client.list_vms().await?;
            print(&match output.output {
                Output::Table => render::vm_table(&vms),
                Output::Json => json(&vms)?,
            })?;
        }
        VmCommand::Show { vm } => print(&json(&client.get_vm(&vm).await?)?)?,
        VmCommand::Create { shape, no_start } => {
            let name = create(&client, request(shape, no_start)?).await?;
            let vm = client.get_vm(&name).await?;
            print(&format!(
                "{} {} ({}) at {}\n",
                vm.name,
                vm.state.as_str(),
                vm.id,
                vm.ip
            ))?;
        }
        VmCommand::Start { vm } => action(&client, routes::VM_START, &vm).await?,
        VmCommand::Stop { vm } => action(&client, routes::VM_STOP, &vm).await?,
        VmCommand::Kill { vm } => action(&client, routes::VM_KILL, &vm).await?,
        VmCommand::Restart { vm } => action(&client, routes::VM_RESTART, &vm).await?,
        VmCommand::Delete { vm, force } => {
            client.delete_vm(&vm, force).await?;
            print(&format!("vm {vm} deleted\n"))?;
        }
        VmCommand::Prune { force } => return prune(&client, force).await,
        VmCommand::Set {
            vm,
            vcpu,
            memory,
            disk_size,
        } => {
            let req = SetVmRequest {
                vcpus: vcpu,
                memory_mib: memory,
                disk_bytes: disk_size,
            };
            let vm = client.set_vm(&vm, &req).await?;
            print(&format!(
                "{}: {} vCPU, {} MiB, work disk {}\n",
                vm.name,
                vm.vcpus,
                vm.memory_mib,
                render::human_bytes(vm.disk_bytes)
            ))?;
        }
        VmCommand::Logs { vm, follow, raw } => logs(&client, &vm, follow, raw).await?,
        VmCommand::Ssh { vm, command } => {
            let target = client.vm_ssh_target(&vm).await?;
            let err = banger_sys::process::exec("ssh", ssh_argv(&target, &command));
            anyhow::bail!("run ssh: {err}");
        }
        VmCommand::Run {
            shape,
            path,
            at,
            rm,
            command,
        } => {
            // A checkout that cannot be carried is refused before any VM
            // exists.
            let checkout = path.map(|p| Checkout::open(&p, &at)).transpose()?;
            if checkout.is_none() && (at.branch.is_some() || at.from.is_some()) {
                anyhow::bail!("--branch and --from need a PATH to carry");
            }
            return vm_run(&client, shape, checkout, rm, command).await;
        }
        VmCommand::Exec {
            vm,
            auto_prepare,
            command,
        } => return crate::workspace_cmd::exec(&client, &vm, auto_prepare, &command).await,
        VmCommand::Workspace { command } => {
            return crate::workspace_cmd::run(&client, command).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a create operation; returns the VM's name.
async fn create(client: &Client, req: CreateVmRequest) -> anyhow::Result<String> {
    let mine = banger_client::mint_op_id();
    let op = follow(client, client.create_vm(&mine, &req).await?, &mine).await?;
    finish(&op)?;
    Ok(op.target)
}

async fn action(client: &Client, route: &str, vm: &str) -> anyhow::Result<()> {
    let vm = client.vm_action(route, vm).await?;
    print(&format!("{} {}\n", vm.name, vm.state.as_str()))
}

/// The ssh argv for `command` (none: an interactive shell). ssh sends the
/// command as one string for the remote shell, so each argument is quoted
/// for it, keeping `sh -c 'exit 7'` three arguments.
fn ssh_argv(target: &SshTarget, command: &[String]) -> Vec<String> {
    let mut args = target.ssh_args();
    if command.is_empty() {
        args.insert(0, "-t".to_owned());
    } else {
        args.push("--".to_owned());
        args.push(
            command
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    args
}

/// `vm run`: create and start, run over SSH, pass the exit code back, and
/// with `rm` delete the VM whatever happened.
async fn vm_run(
    client: &Client,
    shape: VmShape,
    checkout: Option<Checkout>,
    rm: bool,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    // The work tree as it is goes into a disk of the VM's own before its
    // first boot: no SSH round trip, no work for the guest.
    let lay_in = checkout.as_ref().is_some_and(Checkout::lays_in);
    let mut req = request(shape, lay_in)?;
    req.workspace_disk = lay_in;
    if let Some(checkout) = &checkout {
        (req.git_name, req.git_email) = checkout.identity();
    }
    let mine = banger_client::mint_op_id();
    let op = follow(client, client.create_vm(&mine, &req).await?, &mine).await?;
    let name = op.target.clone();
    let result = match (finish(&op), checkout) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(checkout)) if lay_in => laid_in(client, &name, &checkout, &command).await,
        (Ok(_), checkout) => run_in(client, &name, checkout.as_ref(), &command).await,
    };
    // A start that failed still recorded the VM (state error): --rm
    // removes it too.
    if rm
        && let Err(e) = client.delete_vm(&name, true).await
        && !e.is_not_found()
    {
        let _ = writeln!(
            std::io::stderr(),
            "warning: could not delete vm {name}: {e}"
        );
    }
    result
}

/// Lays `checkout` into the new, stopped VM `name`, starts it and runs
/// `command` in the workspace.
async fn laid_in(
    client: &Client,
    name: &str,
    checkout: &Checkout,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    note(&format!("carrying the workspace into vm {name}"));
    let to = crate::workspace_cmd::Receiver::Disk;
    let vm = interruptible(crate::workspace_cmd::prepare(client, name, checkout, to)).await?;
    note(&format!("starting vm {name}"));
    interruptible(async { Ok(client.vm_action(routes::VM_START, name).await?) }).await?;
    let guest = vm.workspace.map(|w| w.guest_path).unwrap_or_default();
    let target = client.vm_ssh_target(name).await?;
    ssh_in(target, crate::workspace_cmd::in_workspace(&guest, command)).await
}

/// A line of progress on a terminal.
fn note(line: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// `work`, ended by Ctrl-C (whose default a follow() above replaced), so
/// a --rm still removes the VM.
async fn interruptible<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        done = work => done,
        _ = sigint.recv() => anyhow::bail!("interrupted"),
    }
}

async fn run_in(
    client: &Client,
    name: &str,
    checkout: Option<&Checkout>,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let target = client.vm_ssh_target(name).await?;
    let Some(checkout) = checkout else {
        return ssh_foreground(ssh_argv(&target, command)).await;
    };
    let to = crate::workspace_cmd::Receiver::Guest;
    let vm = interruptible(crate::workspace_cmd::prepare(client, name, checkout, to)).await?;
    let guest = vm.workspace.map(|w| w.guest_path).unwrap_or_default();
    ssh_in(target, crate::workspace_cmd::in_workspace(&guest, command)).await
}

/// Runs `remote` (one string for the guest's shell) over ssh, with a TTY
/// when this terminal is one; ssh's exit code.
pub async fn ssh_in(target: SshTarget, remote: String) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let mut argv = target.ssh_args();
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        argv.insert(0, "-t".to_owned());
    }
    argv.push("--".to_owned());
    argv.push(remote);
    ssh_foreground(argv).await
}

async fn ssh_foreground(argv: Vec<String>) -> anyhow::Result<ExitCode> {
    // Ctrl-C goes to ssh (same terminal); this process waits for it so the
    // VM can still be removed.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let child =
        tokio::task::spawn_blocking(move || banger_sys::process::run_foreground("ssh", argv));
    tokio::pin!(child);
    let status = loop {
        tokio::select! {
            s = &mut child => break s??,
            _ = sigint.recv() => {}
        }
    };
    let code = status
        .code()
        .map_or(255, |c| u8::try_from(c).unwrap_or(255));
    Ok(ExitCode::from(code))
}

async fn prune(client: &Client, force: bool) -> anyhow::Result<ExitCode> {
    let doomed: Vec<_> = client
        .list_vms()
        .await?
        .into_iter()
        .filter(|v| v.state != VmState::Running)
        .collect();
    if doomed.is_empty() {
        print("no stopped vms\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    if !force {
        let names: Vec<&str> = doomed.iter().map(|v| v.name.as_str()).collect();
        let mut err = std::io::stderr();
        write!(err, "delete {} ({})? [y/N] ", names.len(), names.join(", "))?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            print("nothing deleted\n")?;
            return Ok(ExitCode::FAILURE);
        }
    }
    for vm in doomed {
        client.delete_vm(&vm.id, false).await?;
        print(&format!("vm {} deleted\n", vm.name))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(client: &Client, vm: &str, follow: bool, raw: bool) -> anyhow::Result<()> {
    let mut offset = 0;
    loop {
        let chunk = client.vm_console(vm, offset).await?;
        if !chunk.data.is_empty() {
            if raw {
                print(&chunk.data)?;
            } else {
                print(&banger_api::text::printable(&chunk.data))?;
            }
        }
        let more = chunk.next_offset > offset;
        offset = chunk.next_offset;
        if !follow {
            if more {
                continue;
            }
            return Ok(());
        }
        if !more {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `banger doctor`: exits 0 when guests can run (no essential check
/// failed), 1 otherwise.
/// In system mode the install's own rows follow the daemon's.
pub async fn doctor(ctx: &Ctx, output: OutputArg) -> anyhow::Result<ExitCode> {
    let mut report = ctx.daemon().await?.doctor().await?;
    match crate::system_install() {
        Ok(Some(install)) => {
            let services = crate::install_checks::gather(&install, std::path::Path::new("/"));
            report
                .checks
                .extend(crate::install_checks::judge(&install, &services));
        }
        Ok(None) => {}
        Err(e) => report.checks.push(banger_api::Check {
            name: "system-install".to_owned(),
            status: banger_api::CheckStatus::Fail,
            essential: false,
            detail: format!(
                "{INSTALL_FILE} cannot be read: {e}; `sudo banger system install` writes it again"
            ),
        }),
    }
    match output.output {
        Output::Json => print(&json(&report)?)?,
        Output::Table => {
            let text = format!(
                "guests run under: {}\n{}",
                report.accel,
                check_rows(&report.checks)
            );
            print(&text)?;
        }
    }
    let essential_ok = report
        .checks
        .iter()
        .all(|c| !c.essential || c.status != banger_api::CheckStatus::Fail);
    Ok(if essential_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Doctor's rows as a table: status, name, detail.
pub fn check_rows(checks: &[banger_api::Check]) -> String {
    checks
        .iter()
        .map(|c| format!("{} {:<20} {}\n", c.status.label(), c.name, c.detail))
        .collect()
}
