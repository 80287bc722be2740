//! `banger kernel ...` and `banger image ...`.

use std::process::ExitCode;

use banger_api::ImportRequest;
use banger_api::names::ArtifactName;
use banger_client::render;

use crate::cli::{ImageCacheCommand, ImageCommand, KernelCommand, Output};
use crate::follow::{finish, follow};
use crate::{Ctx, json, print};

fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    Ok(banger_api::names::validate_artifact_name(what, name)?)
}

/// `name` checked as a `what` (`kernel`, `image`) name, so the error says
/// which.
pub fn artifact_name(what: &str, name: String) -> anyhow::Result<ArtifactName> {
    check_name(what, &name)?;
    Ok(ArtifactName::new(name)?)
}

pub async fn kernel(ctx: &Ctx, command: KernelCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.daemon().await?;
    match command {
        KernelCommand::Catalog { output } => {
            let entries = client.kernel_catalog().await?;
            print(&match output.output {
                Output::Table => render::catalog_table(&entries),
                Output::Json => json(&entries)?,
            })?;
        }
        KernelCommand::List { output } => {
            let kernels = client.list_kernels().await?;
            print(&match output.output {
                Output::Table => render::kernel_table(&kernels),
                Output::Json => json(&kernels)?,
            })?;
        }
        KernelCommand::Show { name } => {
            check_name("kernel", &name)?;
            print(&json(&client.get_kernel(&name).await?)?)?;
        }
        KernelCommand::Pull { name } => {
            let name = artifact_name("kernel", name)?;
            let mine = banger_client::mint_op_id();
            let op = follow(&client, client.pull_kernel(&mine, &name).await?, &mine).await?;
            print(&(finish(&op)? + "\n"))?;
        }
        KernelCommand::Delete { name } => {
            check_name("kernel", &name)?;
            client.delete_kernel(&name).await?;
            print(&format!("kernel {name} deleted\n"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn image(ctx: &Ctx, command: ImageCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.daemon().await?;
    match command {
        ImageCommand::Catalog { output } => {
            let entries = client.image_catalog().await?;
            print(&match output.output {
                Output::Table => render::catalog_table(&entries),
                Output::Json => json(&entries)?,
            })?;
        }
        ImageCommand::List { output } => {
            let images = client.list_images().await?;
            print(&match output.output {
                Output::Table => render::image_table(&images),
                Output::Json => json(&images)?,
            })?;
        }
        ImageCommand::Show { name } => {
            check_name("image", &name)?;
            print(&json(&client.get_image(&name).await?)?)?;
        }
        ImageCommand::Pull {
            name,
            image_name,
            kernel,
            insecure,
        } => {
            let reference = banger_api::names::is_image_reference(&name);
            if reference {
                if let Some(n) = &image_name {
                    check_name("image", n)?;
                }
                if let Some(k) = &kernel {
                    check_name("kernel", k)?;
                }
            } else {
                check_name("image", &name)?;
                if image_name.is_some() || kernel.is_some() || insecure {
                    anyhow::bail!(
                        "--name, --kernel and --insecure apply only to a registry reference; {name} is a catalog image"
                    );
                }
            }
            let req = banger_api::ImagePullRequest {
                name,
                image_name,
                kernel,
                insecure,
            };
            let mine = banger_client::mint_op_id();
            let op = follow(&client, client.pull_image_with(&mine, &req).await?, &mine).await?;
            print(&(finish(&op)? + "\n"))?;
        }
        ImageCommand::Cache(ImageCacheCommand::Prune { dry_run }) => {
            let report = client.prune_image_cache(dry_run).await?;
            #[allow(clippy::cast_precision_loss, reason = "a figure for people")]
            let mib = report.bytes as f64 / f64::from(1u32 << 20);
            let verb = if report.dry_run {
                "would free"
            } else {
                "freed"
            };
            print(&format!("{verb} {} blob(s), {mib:.1} MiB\n", report.blobs))?;
        }
        ImageCommand::Import { file, name, kernel } => {
            let path = std::path::absolute(&file)?;
            let req = ImportRequest {
                name: artifact_name("image", name)?,
                path: path.display().to_string(),
                kernel: kernel.map(|k| artifact_name("kernel", k)).transpose()?,
            };
            let mine = banger_client::mint_op_id();
            let op = follow(&client, client.import_image(&mine, &req).await?, &mine).await?;
            print(&(finish(&op)? + "\n"))?;
        }
        ImageCommand::Delete { name } => {
            check_name("image", &name)?;
            client.delete_image(&name).await?;
            print(&format!("image {name} deleted\n"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
