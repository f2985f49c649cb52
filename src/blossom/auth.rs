//! Authorization tokens (BUD-11): kind-24242 events, who signs them, and how
//! they are encoded into the `Authorization` header.
//!
//! The secret key lives only inside a [`Signer`]; nothing in this module
//! prints, logs or returns it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nostr::prelude::{
    Event, EventBuilder, FinalizeEvent as _, Keys, Kind, PublicKey, Tag, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::blob::Sha256;

/// How far `created_at` is set in the past: servers refuse tokens from the
/// future, and clocks disagree by a few seconds.
const CLOCK_SKEW: Duration = Duration::from_secs(10);

/// The event kind of Blossom authorization tokens.
const AUTH_KIND: u16 = 24242;

/// A boxed, sendable future, as [`Signer`] returns.
pub type SignFuture<'a> = Pin<Box<dyn Future<Output = Result<Event, SignError>> + Send + 'a>>;

/// Signs authorization events. Implemented for in-memory keys
/// ([`KeySigner`]); a remote signer can implement it too.
pub trait Signer: Send + Sync + 'static {
    /// The public key tokens are signed for.
    fn public_key(&self) -> PublicKey;

    /// Signs a finished event template.
    fn sign(&self, builder: EventBuilder) -> SignFuture<'_>;
}

/// A signer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// A secret key held in memory.
///
/// `Debug` shows only the public key.
#[derive(Clone)]
pub struct KeySigner {
    keys: Keys,
}

/// A secret key that does not parse. The message never repeats the input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid secret key: expected an nsec1… bech32 key or 64 hexadecimal characters")]
pub struct KeyError;

impl KeySigner {
    /// Parses an `nsec1…` or 64-hex secret key.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the text is neither; the error does not contain it.
    pub fn parse(secret: &str) -> Result<Self, KeyError> {
        let keys = Keys::parse(secret.trim()).map_err(|_| KeyError)?;
        Ok(Self { keys })
    }

    /// A fresh random key, for tests and first-time setup.
    pub fn generate() -> Self {
        Self { keys: Keys::generate() }
    }

    /// The secret key as `nsec1…`, for the one place that must write it
    /// out (key generation).
    pub fn to_nsec(&self) -> String {
        use nostr::nips::nip19::ToBech32 as _;
        self.keys.secret_key().to_bech32().unwrap_or_default()
    }
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigner").field("public_key", &self.keys.public_key().to_hex()).finish()
    }
}

impl Signer for KeySigner {
    fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    fn sign(&self, builder: EventBuilder) -> SignFuture<'_> {
        let result = builder.finalize(&self.keys).map_err(|e| SignError(e.to_string()));
        Box::pin(std::future::ready(result))
    }
}

/// How the token is written into the `Authorization` header.
///
/// Deployed servers disagree (field case B03): strict ones accept only
/// standard base64 with padding, BUD-11 asks for URL-safe base64 without.
/// Standard is the default because every surveyed server accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenEncoding {
    /// Standard alphabet with `=` padding.
    #[default]
    Base64,
    /// URL-safe alphabet without padding.
    Base64Url,
}

impl TokenEncoding {
    /// The other encoding, tried once when a server refuses a token.
    pub fn other(self) -> Self {
        match self {
            Self::Base64 => Self::Base64Url,
            Self::Base64Url => Self::Base64,
        }
    }

    /// The name used in configuration and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base64 => "base64",
            Self::Base64Url => "base64url",
        }
    }

    /// Parses the name used in configuration and the database.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "base64" => Some(Self::Base64),
            "base64url" => Some(Self::Base64Url),
            _ => None,
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            Self::Base64Url => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        }
    }
}

/// The action a token authorizes (the `t` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`/`HEAD /<sha256>`.
    Get,
    /// `PUT`/`HEAD /upload` and `PUT /mirror`.
    Upload,
    /// `GET /list/<pubkey>`.
    List,
    /// `DELETE /<sha256>`.
    Delete,
    /// `PUT`/`HEAD /media`.
    Media,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Upload => "upload",
            Self::List => "list",
            Self::Delete => "delete",
            Self::Media => "media",
        }
    }

    fn requires_hash(self) -> bool {
        matches!(self, Self::Upload | Self::Delete | Self::Media)
    }
}

/// What a token is for. Built by the protocol layer per request.
#[derive(Debug, Clone)]
pub(crate) struct TokenRequest {
    pub(crate) verb: Verb,
    pub(crate) hashes: Vec<Sha256>,
    /// Bare domain the token is scoped to (always set for delete).
    pub(crate) server: Option<String>,
    /// How long the token stays valid; must cover the whole transfer.
    pub(crate) lifetime: Duration,
}

/// A token request that would produce a token servers must refuse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a {verb} token needs at least one x tag")]
pub(crate) struct MissingHash {
    verb: &'static str,
}

impl TokenRequest {
    /// The unsigned event for this request, created `now`.
    pub(crate) fn template(&self, now: SystemTime) -> Result<EventBuilder, MissingHash> {
        let tags = self.tags(now)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let created_at = now.saturating_sub(CLOCK_SKEW).as_secs();
        let content = format!("{} blob", capitalised(self.verb.as_str()));
        Ok(EventBuilder::new(Kind::Custom(AUTH_KIND), content)
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(created_at)))
    }

    fn tags(&self, now: SystemTime) -> Result<Vec<Tag>, MissingHash> {
        if self.verb.requires_hash() && self.hashes.is_empty() {
            return Err(MissingHash { verb: self.verb.as_str() });
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let expiration = (now + self.lifetime).as_secs();
        let mut tags =
            vec![tag(["t", self.verb.as_str()]), Tag::expiration(Timestamp::from_secs(expiration))];
        tags.extend(self.hashes.iter().map(|hash| tag(["x", &hash.to_hex()])));
        tags.extend(self.server.iter().map(|server| tag(["server", server])));
        Ok(tags)
    }
}

fn tag<const N: usize>(parts: [&str; N]) -> Tag {
    Tag::parse(parts).expect("tags with a non-empty name always parse")
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// The `Authorization` header value for a signed token.
pub(crate) fn header_value(event: &Event, encoding: TokenEncoding) -> String {
    format!("Nostr {}", encoding.encode(event.as_json().as_bytes()))
}

/// A signed NIP-56 report (kind 1984) of a blob, for `PUT /report`
/// (BUD-09), as JSON.
pub(crate) async fn report_event(
    signer: &dyn Signer,
    hash: &Sha256,
    report_type: &str,
    text: &str,
) -> Result<String, SignError> {
    let builder =
        EventBuilder::new(Kind::Custom(1984), text).tags([tag(["x", &hash.to_hex(), report_type])]);
    Ok(signer.sign(builder).await?.as_json())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn request(verb: Verb, hashes: Vec<Sha256>) -> TokenRequest {
        TokenRequest { verb, hashes, server: None, lifetime: Duration::from_secs(600) }
    }

    async fn signed(req: &TokenRequest) -> Event {
        let signer = KeySigner::generate();
        signer.sign(req.template(SystemTime::now()).unwrap()).await.unwrap()
    }

    fn tag_values(event: &Event, name: &str) -> Vec<String> {
        event
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] == name)
            .map(|t| t.as_slice()[1].clone())
            .collect()
    }

    /// Field case B22: every token carries kind 24242, a human-readable
    /// content, the verb, a future expiration and the hash.
    #[tokio::test]
    async fn b22_upload_token_has_every_mandatory_tag() {
        let hash = Sha256::digest(b"photo");
        let event = signed(&request(Verb::Upload, vec![hash])).await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();

        assert_eq!(event.kind, Kind::Custom(24242));
        assert!(!event.content.is_empty());
        assert_eq!(tag_values(&event, "t"), ["upload"]);
        assert_eq!(tag_values(&event, "x"), [hash.to_hex()]);
        let expiration: u64 = tag_values(&event, "expiration")[0].parse().unwrap();
        assert!(expiration >= now + 590, "expiration {expiration} too close to {now}");
        assert!(event.created_at.as_secs() < now, "created_at must be in the past");
        event.verify().unwrap();
    }

    /// Field case B22: the builder refuses a token a current server must
    /// refuse (an upload or delete without `x`).
    #[test]
    fn b22_refuses_tokens_without_hash() {
        for verb in [Verb::Upload, Verb::Delete, Verb::Media] {
            assert!(request(verb, vec![]).template(SystemTime::now()).is_err());
        }
        assert!(request(Verb::Get, vec![]).template(SystemTime::now()).is_ok());
    }

    #[tokio::test]
    async fn server_scope_is_a_bare_domain() {
        let mut req = request(Verb::Delete, vec![Sha256::digest(b"x")]);
        req.server = Some("cdn.example".into());
        let event = signed(&req).await;
        assert_eq!(tag_values(&event, "server"), ["cdn.example"]);
    }

    /// Field case B03: both encodings decode back to the same event, and the
    /// choice never depends on the JSON length (padding appears only in the
    /// standard form).
    #[tokio::test]
    async fn b03_both_encodings_round_trip_for_every_length() {
        let signer = KeySigner::generate();
        let mut remainders = std::collections::HashSet::new();
        for i in 0..12 {
            let tags =
                request(Verb::Upload, vec![Sha256::digest(&[i])]).tags(SystemTime::now()).unwrap();
            let template =
                EventBuilder::new(Kind::Custom(AUTH_KIND), "x".repeat(i as usize + 1)).tags(tags);
            let event = signer.sign(template).await.unwrap();
            remainders.insert(event.as_json().len() % 3);

            let std = header_value(&event, TokenEncoding::Base64);
            let url = header_value(&event, TokenEncoding::Base64Url);
            let std = std.strip_prefix("Nostr ").unwrap();
            let url = url.strip_prefix("Nostr ").unwrap();
            assert!(!url.contains('=') && !url.contains('+') && !url.contains('/'));
            assert_eq!(std.len() % 4, 0, "standard base64 is padded");
            let a = base64::engine::general_purpose::STANDARD.decode(std).unwrap();
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(url).unwrap();
            assert_eq!(a, b);
            assert_eq!(Event::from_json(&a).unwrap(), event);
        }
        assert_eq!(remainders.len(), 3, "lengths cover every remainder mod 3");
    }

    #[test]
    fn secrets_do_not_leak_through_debug_or_errors() {
        let signer = KeySigner::generate();
        let nsec = signer.to_nsec();
        let hex = KeySigner::parse(&nsec).unwrap().keys.secret_key().to_secret_hex();
        let debug = format!("{signer:?}");
        assert!(!debug.contains(&nsec) && !debug.contains(&hex), "{debug}");

        let bad = format!("{}x", &hex[..63]);
        let err = KeySigner::parse(&bad).unwrap_err().to_string();
        assert!(!err.contains(&bad[..20]), "{err}");
    }
}
