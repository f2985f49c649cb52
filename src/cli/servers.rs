//! `servers list` and `servers publish`: a user's BUD-03 server list on
//! Nostr relays, and the relay flags `push --servers-from` shares.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use blossom_replicator::ServerUrl;
use blossom_replicator::Signer as _;
use blossom_replicator::config::Config;
use blossom_replicator::relay::{
    DEFAULT_TIMEOUT, Publication, ServerList, fetch_server_list, parse_relay_url,
    publish_server_list,
};
use nostr::prelude::PublicKey;
use url::Url;

use super::{Cli, load_config, signer};

/// Relay flags, shared by every command that reads or writes a server list.
#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    /// Nostr relay (ws:// or wss://); repeat for several. Replaces the
    /// config's relays
    #[arg(long = "relay", value_name = "URL")]
    relays: Vec<String>,

    /// Seconds each relay is given to connect and answer
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    relay_timeout: u64,
}

impl RelayArgs {
    /// The relays from the flags, else from the config.
    fn relays(&self, config: &Config) -> anyhow::Result<Vec<Url>> {
        if self.relays.is_empty() {
            if config.relays.is_empty() {
                bail!("no relays: pass --relay <ws-url> or set relays in the config");
            }
            return Ok(config.relays.clone());
        }
        let mut relays: Vec<Url> = Vec::new();
        for input in &self.relays {
            let relay = parse_relay_url(input)?;
            if !relays.contains(&relay) {
                relays.push(relay);
            }
        }
        Ok(relays)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.relay_timeout)
    }
}

/// The `servers` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ServersCommand {
    /// Print a user's server list (kind 10063) from relays, first choice first
    List {
        /// Whose list: npub1… or 64 hex [default: the configured key's]
        #[arg(value_name = "PUBKEY")]
        pubkey: Option<String>,

        #[command(flatten)]
        relays: RelayArgs,

        /// Print the list as JSON
        #[arg(long)]
        json: bool,
    },
    /// Publish the configured servers, in their order, as your server list
    /// (--server replaces them)
    Publish {
        #[command(flatten)]
        relays: RelayArgs,

        /// Print the outcome as JSON
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn servers(cli: &Cli, command: &ServersCommand) -> anyhow::Result<ExitCode> {
    match command {
        ServersCommand::List { pubkey, relays, json } => {
            list(cli, pubkey.as_deref(), relays, *json).await
        }
        ServersCommand::Publish { relays, json } => publish(cli, relays, *json).await,
    }
}

async fn list(
    cli: &Cli,
    pubkey: Option<&str>,
    args: &RelayArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let author = match pubkey {
        Some(text) => parse_pubkey(text)?,
        None => signer(cli)?.public_key(),
    };
    let relays = args.relays(&config)?;

    let found = fetch_server_list(&relays, author, args.timeout()).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&list_json(author, found.as_ref()))?);
    } else if let Some(list) = &found {
        for server in &list.servers {
            out!("{server}");
        }
    } else {
        eprintln!("no server list for {} on {} relay(s)", author.to_hex(), relays.len());
    }
    Ok(if found.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn publish(cli: &Cli, args: &RelayArgs, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let servers: Vec<ServerUrl> = config.servers.iter().map(|s| s.url.clone()).collect();
    if servers.is_empty() {
        bail!("no servers to publish: pass --server or list servers in the config");
    }
    let relays = args.relays(&config)?;
    let signer = signer(cli)?;

    let publication = publish_server_list(&relays, &signer, &servers, args.timeout()).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&publication_json(&publication, &servers))?);
    } else {
        for answer in &publication.relays {
            match &answer.result {
                Ok(()) => out!("accepted by {}", answer.relay),
                Err(e) => out!("failed: {e}"),
            }
        }
        out!(
            "published {} ({} servers) to {} of {} relays",
            publication.event_id,
            servers.len(),
            publication.accepted(),
            publication.relays.len()
        );
    }
    let all = publication.accepted() == publication.relays.len();
    Ok(if all { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The servers of `author`'s list, for `push --servers-from`.
pub(crate) async fn servers_from(
    author: &str,
    args: &RelayArgs,
    config: &Config,
) -> anyhow::Result<Vec<ServerUrl>> {
    let author = parse_pubkey(author)?;
    let relays = args.relays(config)?;

    let list = fetch_server_list(&relays, author, args.timeout())
        .await?
        .with_context(|| format!("no server list for {} on the relays", author.to_hex()))?;
    if list.servers.is_empty() {
        bail!("the server list {} of {} names no usable server", list.event_id, author.to_hex());
    }
    let names: Vec<&str> = list.servers.iter().map(ServerUrl::as_str).collect();
    tracing::info!(
        author = %author.to_hex(),
        servers = %names.join(" "),
        created_at = list.created_at.as_secs(),
        "servers from the author's list, first one first"
    );
    Ok(list.servers)
}

/// An npub or hex public key; the message names what was given.
fn parse_pubkey(text: &str) -> anyhow::Result<PublicKey> {
    PublicKey::parse(text.trim()).map_err(|_| {
        anyhow::anyhow!("invalid public key {text:?}: expected npub1… or 64 hexadecimal characters")
    })
}

fn list_json(author: PublicKey, list: Option<&ServerList>) -> serde_json::Value {
    let servers: Vec<&str> =
        list.map(|l| l.servers.iter().map(ServerUrl::as_str).collect()).unwrap_or_default();
    serde_json::json!({
        "pubkey": author.to_hex(),
        "found": list.is_some(),
        "event_id": list.map(|l| l.event_id.to_hex()),
        "created_at": list.map(|l| l.created_at.as_secs()),
        "servers": servers,
    })
}

fn publication_json(publication: &Publication, servers: &[ServerUrl]) -> serde_json::Value {
    let relays: Vec<_> = publication
        .relays
        .iter()
        .map(|answer| {
            serde_json::json!({
                "relay": answer.relay.as_str(),
                "accepted": answer.result.is_ok(),
                "error": answer.result.as_ref().err().map(ToString::to_string),
            })
        })
        .collect();
    serde_json::json!({
        "event_id": publication.event_id.to_hex(),
        "created_at": publication.created_at.as_secs(),
        "servers": servers.iter().map(ServerUrl::as_str).collect::<Vec<_>>(),
        "accepted": publication.accepted(),
        "relays": relays,
    })
}
