//! Following an operation to its end: a progress bar on a terminal, one
//! line per stage otherwise; Ctrl-C cancels the operation.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use banger_api::{Operation, OperationState};
use banger_client::Client;
use indicatif::{ProgressBar, ProgressStyle};

/// How long one long poll may wait for a change. The daemon answers as
/// soon as the stage changes or the operation ends, so a short operation
/// (a `vm create --no-start`, ~80 ms) is seen the moment it ends.
const LONG_POLL: Duration = Duration::from_secs(5);

/// Polls `op` until it ends and returns its final state. Stage changes are
/// shown as they happen. Ctrl-C cancels the operation when this command
/// started it (its id is `mine`); when it joined a peer's operation, Ctrl-C
/// only stops waiting and the peer's work goes on.
pub async fn follow(client: &Client, mut op: Operation, mine: &str) -> anyhow::Result<Operation> {
    // One SIGINT listener for the whole wait, registered now (before
    // anything is shown), so no Ctrl-C is lost between two polls.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("install the Ctrl-C handler")?;
    if op.id != mine && !op.state.is_terminal() {
        let _ = writeln!(
            std::io::stderr(),
            "joining {} already running for {} (op {})",
            kind_name(op.kind),
            op.target,
            op.id
        );
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut shown = None;
    let mut warned = 0;
    let mut cancelling = false;
    loop {
        for line in op.warnings.iter().skip(warned) {
            match &bar {
                Some(bar) => bar.println(format!("warning: {line}")),
                None => {
                    let _ = writeln!(std::io::stderr(), "warning: {line}");
                }
            }
        }
        warned = warned.max(op.warnings.len());
        if let Some(stage) = &op.stage
            && shown.as_ref() != Some(stage)
        {
            match &bar {
                Some(bar) => {
                    bar.set_length(u64::from(stage.total));
                    bar.set_position(u64::from(stage.index));
                    bar.set_message(stage.name.clone());
                }
                None => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "[{}/{}] {}",
                        stage.index,
                        stage.total,
                        stage.name
                    );
                }
            }
            shown = Some(stage.clone());
        }
        if op.state.is_terminal() {
            break;
        }
        let (id, kind, target) = (op.id.clone(), op.kind, op.target.clone());
        tokio::select! {
            next = client.wait_operation(&id, LONG_POLL) => {
                op = next.with_context(|| {
                    format!("lost operation {id} ({} {target})", kind_name(kind))
                })?;
            }
            _ = sigint.recv(), if !cancelling => {
                if op.id != mine {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    anyhow::bail!("stopped waiting; the {} of {} goes on (op {})", kind_name(op.kind), op.target, op.id);
                }
                cancelling = true;
                if let Some(bar) = &bar {
                    bar.set_message("cancelling");
                } else {
                    let _ = writeln!(std::io::stderr(), "cancelling {}", op.id);
                }
                op = client.cancel_operation(&op.id).await?;
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(op)
}

fn kind_name(kind: banger_api::OperationKind) -> &'static str {
    match kind {
        banger_api::OperationKind::KernelPull => "kernel pull",
        banger_api::OperationKind::ImagePull => "image pull",
        banger_api::OperationKind::ImageImport => "image import",
        banger_api::OperationKind::VmCreate => "vm create",
    }
}

/// Turns a finished operation into the command's result: its message on
/// success, an error naming the operation otherwise.
pub fn finish(op: &Operation) -> anyhow::Result<String> {
    match op.state {
        OperationState::Succeeded => Ok(op.message.clone().unwrap_or_else(|| "done".into())),
        OperationState::Cancelled => {
            anyhow::bail!("cancelled; nothing was published (op {})", op.id)
        }
        OperationState::Failed | OperationState::Running => {
            let message = op.error.as_ref().map_or("failed", |e| e.message.as_str());
            anyhow::bail!("{message} (op {})", op.id)
        }
    }
}
