//! `status`: what the database records about each blob on each server, as
//! a table or as one JSON document.

use std::process::ExitCode;

use anyhow::bail;
use blossom_replicator::store::{BlobStatus, ReplicaState};
use blossom_replicator::{Sha256, Store};

use super::{Cli, database_path};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Only these blobs, each shown in full
    #[arg(value_name = "SHA256")]
    hashes: Vec<Sha256>,

    /// Print one JSON document: {"blobs": [{"sha256", "size", "replicas": [...]}]}
    #[arg(long)]
    json: bool,
}

pub(crate) async fn status(cli: &Cli, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let path = database_path(cli)?;
    if !path.exists() {
        bail!("no database at {} (nothing has been pushed yet, or pass --db)", path.display());
    }
    let store = Store::open(&path).await?;
    let only = (!args.hashes.is_empty()).then_some(&args.hashes[..]);
    let blobs = store.blob_statuses(only).await?;
    store.close().await;

    if let Some(missing) = args.hashes.iter().find(|h| !blobs.iter().any(|b| b.sha256 == **h)) {
        bail!("blob {missing} is not in the database {}", path.display());
    }
    if args.json {
        // A struct, not json!: it keeps the fields in their documented order.
        #[derive(serde::Serialize)]
        struct Document<'a> {
            blobs: &'a [BlobStatus],
        }
        out!("{}", serde_json::to_string_pretty(&Document { blobs: &blobs })?);
    } else if only.is_some() {
        blobs.iter().for_each(print_detail);
    } else {
        print_table(&blobs);
    }
    // Deleted replicas were removed on request: they count as settled.
    let all_stored = blobs
        .iter()
        .flat_map(|b| &b.replicas)
        .all(|r| matches!(r.state, ReplicaState::Stored | ReplicaState::Deleted));
    Ok(if all_stored { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_table(blobs: &[BlobStatus]) {
    out!(
        "{:<64}  {:>12}  {:>7}  {:>7}  {:>7}  source",
        "sha256",
        "size",
        "stored",
        "pending",
        "failed"
    );
    for blob in blobs {
        let count = |state| blob.replicas.iter().filter(|r| r.state == state).count();
        out!(
            "{}  {:>12}  {:>7}  {:>7}  {:>7}  {}",
            blob.sha256,
            blob.size,
            count(ReplicaState::Stored),
            count(ReplicaState::Pending),
            count(ReplicaState::Failed),
            blob.source.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
}

fn print_detail(blob: &BlobStatus) {
    out!("{}  {} bytes  {}", blob.sha256, blob.size, blob.mime);
    if let Some(source) = &blob.source {
        out!("  source: {}", source.display());
    }
    for r in &blob.replicas {
        let state = r.state.as_str();
        let detail = match (&r.url, &r.reason) {
            (_, Some(reason)) => reason.clone(),
            (Some(url), None) => url.clone(),
            (None, None) => String::new(),
        };
        out!("  {state:<7}  {:<32}  attempts {}  {}", r.server, r.attempts, detail);
    }
}
