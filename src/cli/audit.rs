//! `verify`, `whereis` and `delete`: what servers really hold, where a blob
//! is, and removing it everywhere.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use blossom_replicator::blob::LocalBlob;
use blossom_replicator::engine;
use blossom_replicator::store::{ReplicaState, Verification};
use blossom_replicator::{Sha256, Store};

use super::{Cli, database_path, load_config, signer};

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// Only these blobs [default: every blob in the database]
    #[arg(value_name = "SHA256")]
    hashes: Vec<Sha256>,

    /// Download every copy and hash it, instead of asking with HEAD
    #[arg(long)]
    deep: bool,

    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

/// Arguments of `whereis`.
#[derive(Debug, clap::Args)]
pub(crate) struct WhereisArgs {
    /// A blob's sha256, or a file whose content to look up
    #[arg(value_name = "HASH|PATH")]
    target: String,

    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

/// Arguments of `delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The blobs to delete from every configured server
    #[arg(required = true, value_name = "SHA256")]
    hashes: Vec<Sha256>,

    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

pub(crate) async fn verify(cli: &Cli, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    if !config.database.exists() {
        bail!(
            "no database at {} (nothing has been pushed yet, or pass --db)",
            config.database.display()
        );
    }
    let signer = Arc::new(signer(cli)?);
    let only = (!args.hashes.is_empty()).then_some(&args.hashes[..]);
    let mut reports = engine::verify(&config, signer, only, args.deep).await?;
    reports.sort_by(|a, b| (a.sha256, a.server.as_str()).cmp(&(b.sha256, b.server.as_str())));

    let ok = reports.iter().all(|r| r.result == Ok(Verification::Verified));
    if args.json {
        let entries: Vec<_> = reports
            .iter()
            .map(|r| {
                let (state, detail) = match &r.result {
                    Ok(Verification::Verified) => ("verified", None),
                    Ok(Verification::Missing) => ("missing", None),
                    Ok(Verification::Corrupt(detail)) => ("wrong", Some(detail.clone())),
                    Err(error) => ("unreachable", Some(error.clone())),
                };
                serde_json::json!({"sha256": r.sha256, "server": r.server, "state": state, "detail": detail})
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "replicas": entries }))?
        );
    } else {
        let count = |f: &dyn Fn(&Result<Verification, String>) -> bool| {
            reports.iter().filter(|r| f(&r.result)).count()
        };
        for r in &reports {
            match &r.result {
                Ok(Verification::Verified) => {}
                Ok(Verification::Missing) => out!("missing      {}  {}", r.sha256, r.server),
                Ok(Verification::Corrupt(detail)) => {
                    out!("wrong        {}  {}  {detail}", r.sha256, r.server)
                }
                Err(error) => out!("unreachable  {}  {}  {error}", r.sha256, r.server),
            }
        }
        out!(
            "{} replicas checked{}: {} verified, {} missing, {} wrong, {} could not be checked",
            reports.len(),
            if args.deep { " by download" } else { "" },
            count(&|r| *r == Ok(Verification::Verified)),
            count(&|r| *r == Ok(Verification::Missing)),
            count(&|r| matches!(r, Ok(Verification::Corrupt(_)))),
            count(&|r| r.is_err()),
        );
        if !ok {
            out!("`blossom-replicator repair` puts missing and wrong copies back");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) async fn whereis(cli: &Cli, args: &WhereisArgs) -> anyhow::Result<ExitCode> {
    let hash = match args.target.parse::<Sha256>() {
        Ok(hash) => hash,
        Err(_) => {
            let path = PathBuf::from(&args.target);
            tokio::task::spawn_blocking(move || LocalBlob::from_path(&path)).await??.sha256
        }
    };
    let path = database_path(cli)?;
    if !path.exists() {
        bail!("no database at {} (nothing has been pushed yet, or pass --db)", path.display());
    }
    let store = Store::open(&path).await?;
    let found = store.blob_statuses(Some(&[hash])).await?;
    store.close().await;
    let Some(blob) = found.into_iter().next() else {
        bail!("blob {hash} ({}) is not in the database {}", args.target, path.display());
    };

    let holders: Vec<_> =
        blob.replicas.iter().filter(|r| r.state == ReplicaState::Stored).collect();
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "sha256": blob.sha256, "size": blob.size, "replicas": blob.replicas })
            )?
        );
    } else {
        out!(
            "{}  {} bytes  on {} of {} servers",
            blob.sha256,
            blob.size,
            holders.len(),
            blob.replicas.len()
        );
        for r in &blob.replicas {
            let verified = r.verified_at.map(format_time).unwrap_or_else(|| "never".into());
            let url = r.url.as_deref().unwrap_or("-");
            out!("  {:<8} {:<32} verified {verified}  {url}", r.state.as_str(), r.server);
        }
    }
    Ok(if holders.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub(crate) async fn delete(cli: &Cli, args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    if config.servers.is_empty() {
        return Err(engine::Error::NoServers.into());
    }
    let signer = Arc::new(signer(cli)?);
    let reports = engine::delete(&config, signer, &args.hashes).await?;
    let ok = reports.iter().all(|r| r.result == Ok(true));
    if args.json {
        let entries: Vec<_> = reports
            .iter()
            .map(|r| {
                let (state, detail) = match &r.result {
                    Ok(true) => ("deleted", None),
                    Ok(false) => ("still_served", None),
                    Err(error) => ("failed", Some(error.clone())),
                };
                serde_json::json!({"sha256": r.sha256, "server": r.server, "state": state, "detail": detail})
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "servers": entries }))?
        );
    } else {
        for r in &reports {
            match &r.result {
                Ok(true) => out!("deleted       {}  {}", r.sha256, r.server),
                Ok(false) => out!(
                    "still served  {}  {}  (the server accepted the delete)",
                    r.sha256,
                    r.server
                ),
                Err(error) => out!("failed        {}  {}  {error}", r.sha256, r.server),
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Unix milliseconds as an RFC 3339 UTC time.
fn format_time(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| millis.to_string())
}
