//! The Blossom wire protocol, one server at a time: auth tokens, blob
//! descriptors, server addresses, one call per endpoint, and the single
//! classification of failures that every retry decision reads.
//!
//! This module knows nothing of queues or jobs; the engine drives it.

mod auth;
mod client;
mod descriptor;
mod error;
mod server_url;

pub use auth::{KeyError, KeySigner, SignError, SignFuture, Signer, TokenEncoding, Verb};
pub use client::{
    BatchToken, Chunks, Download, MAX_BATCH_HASHES, Presence, ServerClient, Timeouts, UploadReceipt,
};
pub use descriptor::{BlobDescriptor, Mismatch};
pub use error::{Endpoint, Error, ErrorClass};
pub use server_url::{ServerUrl, ServerUrlError, dedup_servers};

pub(crate) use auth::report_event;
