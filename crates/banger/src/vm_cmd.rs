//! `banger vm ...`.

use std::process::ExitCode;

use banger_client::render;

use crate::cli::{Output, VmCommand};
use crate::{Ctx, print};

pub async fn run(ctx: &Ctx, command: VmCommand) -> anyhow::Result<ExitCode> {
    match command {
        VmCommand::List { output } => {
            let vms = ctx.daemon().await?.list_vms().await?;
            let text = match output.output {
                Output::Table => render::vm_table(&vms),
                Output::Json => serde_json::to_string_pretty(&vms)? + "\n",
            };
            print(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
