//! One-off protocol commands, straight through [`BlossomClient`]: `get`,
//! `has`, `list`, `mirror`, `media`, `report`. They read and write no
//! database.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use blossom_replicator::blossom::{ErrorClass, ServerUrl};
use blossom_replicator::client::{BlossomClient, ClientError, ListOptions, UploadSource};
use blossom_replicator::config::Config;
use blossom_replicator::uri::BlossomUri;
use blossom_replicator::{KeySigner, Sha256, Signer as _};
use clap::Args;
use serde_json::json;

use super::{Cli, load_config, signer};

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// A hash, a blob URL, or a blossom: URI
    #[arg(value_name = "BLOB")]
    blob: String,
    /// Where to write the blob [default: ./<sha256>]
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct HasArgs {
    /// The blob's hash
    #[arg(value_name = "SHA256")]
    hash: Sha256,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Whose blobs: a hex public key or an npub [default: the configured key's]
    #[arg(value_name = "PUBKEY")]
    pubkey: Option<String>,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MirrorArgs {
    /// The blob's URL on a server that holds it
    #[arg(value_name = "URL")]
    url: String,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MediaArgs {
    /// The file to have optimised (by the first configured server)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The blob to report
    #[arg(value_name = "SHA256")]
    hash: Sha256,
    /// NIP-56 report type: nudity, malware, profanity, illegal, spam, impersonation, other
    #[arg(long = "type", value_name = "TYPE")]
    report_type: String,
    /// What is wrong, for the server's operators
    #[arg(long, default_value = "")]
    text: String,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
}

/// The client for the configured servers, with the user's key, or a
/// throwaway one for commands that only read (servers that want a token to
/// read get one, just not tied to the user).
fn client(cli: &Cli, key_needed: bool) -> anyhow::Result<(Config, BlossomClient)> {
    let config = load_config(cli)?;
    let signer = match signer(cli) {
        Ok(signer) => signer,
        Err(_) if !key_needed => KeySigner::generate(),
        Err(e) => return Err(e),
    };
    let client = BlossomClient::from_config(&config, Arc::new(signer));
    Ok((config, client))
}

fn need_servers(config: &Config) -> anyhow::Result<()> {
    if config.servers.is_empty() {
        bail!("no servers: pass --server <url> or list them in the config file");
    }
    Ok(())
}

pub(crate) async fn get(cli: &Cli, args: &GetArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = client(cli, false)?;
    let (hash, mut servers) = if let Ok(uri) = args.blob.parse::<BlossomUri>() {
        let mut servers = uri.server_urls();
        // BUD-10: then each author's servers, in their BUD-03 order.
        for author in &uri.authors {
            let Ok(author) = nostr::prelude::PublicKey::parse(author) else { continue };
            if config.relays.is_empty() {
                break;
            }
            let timeout = blossom_replicator::relay::DEFAULT_TIMEOUT;
            match blossom_replicator::relay::fetch_server_list(&config.relays, author, timeout)
                .await
            {
                Ok(Some(list)) => servers.extend(list.servers),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the author's server list"),
            }
        }
        (uri.sha256, servers)
    } else if let Ok(hash) = args.blob.parse::<Sha256>() {
        (hash, Vec::new())
    } else if let Some(hash) = Sha256::from_url(&args.blob) {
        let origin = ServerUrl::parse(&args.blob).ok();
        (hash, origin.into_iter().collect())
    } else {
        bail!("{:?} is not a hash, a blob URL or a blossom: URI", args.blob);
    };
    for server in config.servers.iter().map(|s| &s.url) {
        if !servers.contains(server) {
            servers.push(server.clone());
        }
    }
    if servers.is_empty() {
        bail!("no server to ask for {hash}: pass --server <url>, or a URL or URI naming one");
    }
    let path = args.output.clone().unwrap_or_else(|| PathBuf::from(hash.to_hex()));
    let partial = path.with_extension("part");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let result = client.get_with_fallback(&hash, &servers, &mut file).await;
    drop(file);
    let (server, size) = match result {
        Ok(found) => found,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            if let ClientError::NotFound { .. } = e {
                // A result, as `has` of an absent blob: exit 1, not 2.
                super::print_error(&e.into());
                return Ok(ExitCode::from(1));
            }
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot move the blob to {}", path.display()))?;
    if args.json {
        out!("{}", json!({"sha256": hash, "size": size, "server": server.as_str(), "path": path}));
    } else {
        out!("{} {} bytes from {} -> {}", hash, size, server, path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn has(cli: &Cli, args: &HasArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = client(cli, false)?;
    need_servers(&config)?;
    let checks = client.servers().iter().map(|server| {
        let client = client.clone();
        async move { (server.clone(), client.has(server, &args.hash).await) }
    });
    let results = futures_util::future::join_all(checks).await;
    let everywhere = results.iter().all(|(_, r)| matches!(r, Ok(true)));
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(server, result)| match result {
                Ok(present) => json!({"server": server.as_str(), "present": present}),
                Err(e) => json!({"server": server.as_str(), "error": e.to_string()}),
            })
            .collect();
        out!("{}", json!({"sha256": args.hash, "servers": rows}));
    } else {
        for (server, result) in &results {
            match result {
                Ok(true) => out!("{server}: present"),
                Ok(false) => out!("{server}: absent"),
                Err(e) => out!("{server}: error: {e}"),
            }
        }
    }
    Ok(if everywhere { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) async fn list(cli: &Cli, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = client(cli, false)?;
    need_servers(&config)?;
    let pubkey = match &args.pubkey {
        Some(text) => nostr::prelude::PublicKey::parse(text)
            .map_err(|_| anyhow::anyhow!("{text:?} is not a hex public key or an npub"))?,
        None => signer(cli)?.public_key(),
    };
    let hex = pubkey.to_hex();
    let mut rows = Vec::new();
    let mut failed = false;
    for server in client.servers() {
        match client.list(server, &hex, ListOptions::default()).await {
            Ok(blobs) => {
                if !args.json {
                    for blob in &blobs {
                        out!(
                            "{server} {} {} {}",
                            blob.sha256.as_deref().unwrap_or("-"),
                            blob.size.map_or("-".to_owned(), |s| s.to_string()),
                            blob.mime.as_deref().unwrap_or("-")
                        );
                    }
                }
                rows.push(json!({"server": server.as_str(), "blobs": blobs}));
            }
            Err(e) => {
                let unsupported = e.blossom().is_some_and(|b| b.class() == ErrorClass::Unsupported);
                let message = if unsupported {
                    format!("listing is not available: {e}")
                } else {
                    e.to_string()
                };
                failed = true;
                if !args.json {
                    eprintln!("{server}: {message}");
                }
                rows.push(json!({"server": server.as_str(), "error": message}));
            }
        }
    }
    if args.json {
        out!("{}", json!({"pubkey": hex, "servers": rows}));
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub(crate) async fn mirror(cli: &Cli, args: &MirrorArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = client(cli, true)?;
    need_servers(&config)?;
    let Some(hash) = Sha256::from_url(&args.url) else {
        bail!("{:?} names no blob (no 64-hex hash in its path)", args.url);
    };
    // The servers check what they fetched against this size.
    let size = client
        .source_size(&args.url)
        .await
        .with_context(|| format!("cannot read the size of {}", args.url))?;
    let results = client.mirror_to_all(&args.url, hash, size).await;
    report_per_server(&results, args.json, |d| json!(d))
}

pub(crate) async fn media(cli: &Cli, args: &MediaArgs) -> anyhow::Result<ExitCode> {
    let (config, client) = client(cli, true)?;
    need_servers(&config)?;
    let server = &client.servers()[0];
    let descriptor = client.upload_media(server, &UploadSource::Path(args.file.clone())).await?;
    if args.json {
        out!("{}", json!({"server": server.as_str(), "descriptor": descriptor}));
    } else {
        out!(
            "{server}: {} {} bytes {}",
            descriptor.sha256.as_deref().unwrap_or("-"),
            descriptor.size.map_or("-".to_owned(), |s| s.to_string()),
            descriptor.url.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn report(cli: &Cli, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    const TYPES: [&str; 7] =
        ["nudity", "malware", "profanity", "illegal", "spam", "impersonation", "other"];
    if !TYPES.contains(&args.report_type.as_str()) {
        bail!("report type {:?} is not one of {}", args.report_type, TYPES.join(", "));
    }
    let (config, client) = client(cli, true)?;
    need_servers(&config)?;
    let reports = client.servers().iter().map(|server| {
        let client = client.clone();
        async move {
            let result = client.report(server, &args.hash, &args.report_type, &args.text).await;
            (server.clone(), result)
        }
    });
    let results = futures_util::future::join_all(reports).await;
    report_per_server(&results, args.json, |()| json!(true))
}

/// Prints one line (or JSON entry) per server; exit 1 when any failed.
fn report_per_server<T>(
    results: &[(ServerUrl, Result<T, ClientError>)],
    json_out: bool,
    show: impl Fn(&T) -> serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut rows = Vec::new();
    for (server, result) in results {
        match result {
            Ok(value) => {
                if !json_out {
                    out!("{server}: ok");
                }
                rows.push(json!({"server": server.as_str(), "result": show(value)}));
            }
            Err(e) => {
                failed = true;
                if !json_out {
                    out!("{server}: {e}");
                }
                rows.push(json!({"server": server.as_str(), "error": e.to_string()}));
            }
        }
    }
    if json_out {
        out!("{}", json!({"servers": rows}));
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
