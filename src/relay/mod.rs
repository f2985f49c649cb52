//! BUD-03 server lists on Nostr relays: read a user's latest kind-10063
//! event and publish a new one, through a small websocket client that
//! speaks only what these two need (`REQ`/`EVENT`/`EOSE` and `EVENT`/`OK`).
//!
//! Every relay is asked at once and each one's failure stays its own: a
//! fetch fails only when no relay answers, and a publish reports per relay.
//! Relays are not trusted: every event is checked for its id, signature,
//! author and kind before it counts.
//!
//! The network half (fetching and publishing) needs the `relays` feature,
//! which the command-line tool turns on; relay addresses are checked
//! without it too, so a configuration file reads the same either way.
//!
//! ```no_run
//! # async fn example(
//! #     npub: &str,
//! #     signer: &blossom_replicator::KeySigner,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use blossom_replicator::ServerUrl;
//! use blossom_replicator::relay::{fetch_server_list, parse_relay_url, publish_server_list};
//!
//! let relays = [parse_relay_url("wss://relay.example")?];
//! let timeout = Duration::from_secs(10);
//!
//! // Someone's servers, most preferred first.
//! let author = nostr::prelude::PublicKey::parse(npub)?;
//! if let Some(list) = fetch_server_list(&relays, author, timeout).await? {
//!     println!("upload first to {:?}", list.servers.first());
//! }
//!
//! // Your own list, signed with your key, in this order.
//! let servers = [ServerUrl::parse("https://cdn.example")?, ServerUrl::parse("backup.example")?];
//! let publication = publish_server_list(&relays, signer, &servers, timeout).await?;
//! println!("{} of {} relays took it", publication.accepted(), publication.relays.len());
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "relays")]
mod client;
#[cfg(feature = "relays")]
mod connection;
mod relay_url;

#[cfg(feature = "relays")]
pub use client::{
    DEFAULT_TIMEOUT, Error, Publication, RelayAnswer, ServerList, fetch_server_list,
    publish_server_list,
};
pub use relay_url::{RelayUrlError, check_relay_url, parse_relay_url};
