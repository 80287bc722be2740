//! `banger daemon ...`.

use std::io::{Read, Seek, SeekFrom};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use banger_client::ClientError;

use crate::cli::{DaemonCommand, Output};
use crate::{Ctx, print};

/// How long `daemon stop` waits for the process to exit: longer than the daemon's own bounds on draining requests and letting
/// cancelled operations clean up.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
use banger_api::exit::DAEMON_NOT_RUNNING as EXIT_NOT_RUNNING;

pub async fn run(ctx: &Ctx, command: DaemonCommand) -> anyhow::Result<ExitCode> {
    match command {
        DaemonCommand::Start => start(ctx).await?,
        DaemonCommand::Stop => stop(ctx).await?,
        DaemonCommand::Restart => {
            stop(ctx).await?;
            start(ctx).await?;
        }
        DaemonCommand::Status { output } => return status(ctx, output.output).await,
        DaemonCommand::Logs { lines, follow } => logs(ctx, lines, follow).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let started = ctx.start_daemon().await?;
    let verb = if started.launched {
        "started"
    } else {
        "already running"
    };
    print(&format!(
        "bangerd {verb} (pid {}, socket {})\n",
        started.ping.pid,
        ctx.layout.socket_path().display()
    ))
}

async fn stop(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client();
    let accepted = match client.shutdown().await {
        Ok(a) => a,
        Err(e) if e.is_not_running() => {
            return print("bangerd is not running\n");
        }
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while banger_sys::pid_alive(accepted.pid) {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "bangerd (pid {}) accepted the shutdown but is still running after {}s; see {}",
                accepted.pid,
                STOP_TIMEOUT.as_secs(),
                ctx.layout.log_path().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    print(&format!("bangerd stopped (pid {})\n", accepted.pid))
}

async fn status(ctx: &Ctx, output: Output) -> anyhow::Result<ExitCode> {
    let socket = ctx.layout.socket_path();
    let ping = match ctx.client().ping().await {
        Ok(p) => Some(p),
        Err(ClientError::NotRunning { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    match output {
        Output::Json => {
            let value = serde_json::json!({
                "running": ping.is_some(),
                "socket": socket,
                "log": ctx.layout.log_path(),
                "daemon": ping,
            });
            print(&(serde_json::to_string_pretty(&value)? + "\n"))?;
        }
        Output::Table => match &ping {
            Some(p) => print(&format!(
                "bangerd is running\n  pid:     {}\n  version: {} (commit {}, built {})\n  uptime:  {}s\n  schema:  {}\n  socket:  {}\n  log:     {}\n",
                p.pid,
                p.version,
                p.commit,
                p.built_at,
                p.uptime_secs,
                p.schema_version,
                socket.display(),
                ctx.layout.log_path().display()
            ))?,
            None => print(&format!(
                "bangerd is not running (socket {})\n",
                socket.display()
            ))?,
        },
    }
    Ok(if ping.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    })
}

async fn logs(ctx: &Ctx, lines: usize, follow: bool) -> anyhow::Result<()> {
    let path = ctx.layout.log_path();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => {
            anyhow::bail!("no daemon log yet at {}", path.display());
        }
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    let all: Vec<&str> = text.lines().collect();
    let skip = if lines == 0 {
        0
    } else {
        all.len().saturating_sub(lines)
    };
    let mut out = String::new();
    for line in &all[skip..] {
        out.push_str(line);
        out.push('\n');
    }
    print(&out)?;
    if !follow {
        return Ok(());
    }
    let mut offset = file.stream_position()?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            // Truncated or replaced: start over from its beginning.
            file = std::fs::File::open(&path)?;
            offset = 0;
        }
        if len > offset {
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = String::new();
            file.read_to_string(&mut chunk)?;
            offset += chunk.len() as u64;
            print(&chunk)?;
        }
    }
}
