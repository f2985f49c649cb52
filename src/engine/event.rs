//! What the engine tells listeners: one event per replica that changed and
//! one per blob that settled. Embedders subscribe; the CLI draws its
//! progress bars from the same stream.

use std::time::SystemTime;

use crate::blob::Sha256;
use crate::blossom::ServerUrl;

/// How a replica came to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMethod {
    /// We sent the bytes.
    Uploaded,
    /// The server already had them; nothing was sent.
    AlreadyPresent,
    /// The server fetched them from another server (`PUT /mirror`).
    Mirrored,
}

impl StoreMethod {
    /// The name recorded in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::AlreadyPresent => "present",
            Self::Mirrored => "mirrored",
        }
    }

    /// Parses the name recorded in the database.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Uploaded, Self::AlreadyPresent, Self::Mirrored]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// A change in replication state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A server now holds a verified copy.
    ReplicaStored {
        /// The blob.
        sha256: Sha256,
        /// The server.
        server: ServerUrl,
        /// Uploaded, or found already there.
        method: StoreMethod,
        /// Body bytes sent for this replica in the final attempt.
        bytes_sent: u64,
    },
    /// An attempt failed and will be retried.
    ReplicaRetrying {
        /// The blob.
        sha256: Sha256,
        /// The server.
        server: ServerUrl,
        /// The attempt that failed, from 1.
        attempt: u32,
        /// When the next attempt is due.
        retry_at: SystemTime,
        /// What went wrong.
        reason: String,
    },
    /// The server will not get this blob (refused, or retries ran out).
    ReplicaFailed {
        /// The blob.
        sha256: Sha256,
        /// The server.
        server: ServerUrl,
        /// HTTP status of the last answer, if any.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// The blob settled with fewer copies than the configured minimum.
    BlobBelowMinCopies {
        /// The blob.
        sha256: Sha256,
        /// Servers holding it.
        stored: u32,
        /// The minimum asked for.
        min_copies: u32,
    },
    /// A server failed again and again and is paused while the others go
    /// on; one request is let through when the pause ends.
    ServerPaused {
        /// The server.
        server: ServerUrl,
        /// When it will be tried again.
        until: SystemTime,
        /// Transient failures in a row.
        failures: u32,
        /// The last failure.
        reason: String,
    },
    /// A paused server answered again; its work goes on.
    ServerResumed {
        /// The server.
        server: ServerUrl,
    },
    /// No replica of the blob is pending any more.
    BlobSettled {
        /// The blob.
        sha256: Sha256,
        /// Servers holding it.
        stored: u32,
        /// Servers that failed for good.
        failed: u32,
    },
}
