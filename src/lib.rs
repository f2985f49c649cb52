//! blossom-replicator replicates blobs across Blossom servers (Nostr blob
//! storage) until every server holds a copy verified by hash and size, and
//! keeps a record of who has what.
//!
//! The work is persistent: blobs and jobs live in SQLite (WAL mode), each
//! server has its own worker actor with a rate limiter, an in-flight limit
//! and retries with backoff, and a coordinator actor records every outcome.
//! A process killed at any moment loses nothing and, thanks to an existence
//! check before every upload, sends nothing again that already arrived.
//!
//! Start with [`Replicator`]; [`blossom::ServerClient`] speaks the protocol
//! to one server; [`Store`] reads the record. [`relay`] reads and publishes a
//! user's BUD-03 server list (its network half needs the `relays` feature,
//! on by default).

pub mod blob;
#[cfg(feature = "blocking")]
pub mod blocking;
pub mod blossom;
pub mod client;
pub mod config;
pub mod engine;
pub mod relay;
pub mod store;
pub mod uri;

pub use blob::{LocalBlob, Sha256};
pub use blossom::{KeySigner, ServerUrl, Signer, TokenEncoding};
pub use client::{BlossomClient, UploadSource};
pub use config::Config;
pub use engine::{Event, Replicator};
pub use store::Store;

/// The README's library example, compiled as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
