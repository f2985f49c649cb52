//! Server addresses: one normal form per server, so that endpoint URLs are
//! always built at the origin root (`/upload`, never `//upload`) and the same
//! server written two ways counts once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::blob::Sha256;

/// The origin of a Blossom server: `http` or `https`, lowercase host, no
/// default port, no path, no trailing slash.
///
/// BUD-01 puts every endpoint at the root of the origin, so a path in a
/// configured URL is dropped (with a warning) rather than prefixed to them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerUrl {
    origin: Url,
}

/// A server address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server url {input:?}: {problem}")]
pub struct ServerUrlError {
    input: String,
    problem: &'static str,
}

impl ServerUrl {
    /// Parses and normalises a server address. A bare host (`cdn.example`)
    /// is taken as `https://cdn.example`.
    ///
    /// # Errors
    ///
    /// Fails on anything but an http(s) URL with a host, and on URLs that
    /// carry credentials (they would end up in logs and the database).
    pub fn parse(input: &str) -> Result<Self, ServerUrlError> {
        let trimmed = input.trim();
        let error = |problem| ServerUrlError { input: redact_userinfo(input), problem };
        if trimmed.is_empty() {
            return Err(error("empty"));
        }
        let with_scheme =
            if trimmed.contains("://") { trimmed.to_owned() } else { format!("https://{trimmed}") };
        let mut url = Url::parse(&with_scheme).map_err(|_| error("not a url"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(error("only http and https servers are supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(error("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(error("credentials in server urls are not supported"));
        }
        let local = matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)))
            || url.host_str() == Some("localhost")
            || url.port().is_some();
        if !trimmed.contains("://") && local {
            // Local servers and explicit ports are often plain http; https
            // to them fails on every attempt with a TLS error.
            tracing::warn!(
                server = %input,
                "no scheme given: assuming https (write http:// for a plain-http server)"
            );
        }
        if !url.path().trim_end_matches('/').is_empty() {
            tracing::warn!(
                server = %input,
                path = url.path(),
                "blossom endpoints live at the server root; ignoring the path"
            );
        }
        url.set_path("/");
        url.set_query(None);
        url.set_fragment(None);
        Ok(Self { origin: url })
    }

    /// The origin as text, without a trailing slash: `https://cdn.example`.
    pub fn as_str(&self) -> &str {
        self.origin.as_str().trim_end_matches('/')
    }

    /// The bare lowercase host, as the auth token's `server` tag wants it.
    pub fn domain(&self) -> &str {
        self.origin.host_str().unwrap_or_default()
    }

    /// An endpoint at the root of the origin, such as `upload`.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.origin.clone();
        url.set_path(path);
        url
    }

    /// `GET`/`HEAD`/`DELETE` address of a blob.
    pub fn blob(&self, hash: &Sha256) -> Url {
        self.endpoint(&hash.to_hex())
    }
}

/// The input with any `user:password@` replaced, so that an error about a
/// URL with credentials does not print them.
fn redact_userinfo(input: &str) -> String {
    let Some((scheme, rest)) = input.split_once("://") else { return input.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => input.to_owned(),
    }
}

impl FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({})", self.as_str())
    }
}

impl Serialize for ServerUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a list of servers, dropping later entries that normalise to an
/// earlier one. Order is kept: it is priority (BUD-03).
///
/// # Errors
///
/// The first entry that does not parse.
pub fn dedup_servers<'a>(
    inputs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ServerUrl>, ServerUrlError> {
    let mut servers: Vec<ServerUrl> = Vec::new();
    for input in inputs {
        let server = ServerUrl::parse(input)?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_slashes_ports_and_paths() {
        let cases = [
            ("https://srv-a.example/", "https://srv-a.example"),
            ("https://SRV-A.example", "https://srv-a.example"),
            ("HTTPS://srv-a.example:443//", "https://srv-a.example"),
            ("http://127.0.0.1:3002/", "http://127.0.0.1:3002"),
            ("http://host:80", "http://host"),
            ("https://srv-b.example/blossom/", "https://srv-b.example"),
            ("srv-c.example", "https://srv-c.example"),
            ("localhost:3000", "https://localhost:3000"),
            ("https://srv-a.example/?q=1#x", "https://srv-a.example"),
        ];
        for (input, want) in cases {
            assert_eq!(ServerUrl::parse(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn endpoints_are_built_at_the_root() {
        let server = ServerUrl::parse("https://srv-a.example/blossom/").unwrap();
        assert_eq!(server.endpoint("upload").as_str(), "https://srv-a.example/upload");
        let hash = Sha256::digest(b"x");
        assert_eq!(server.blob(&hash).as_str(), format!("https://srv-a.example/{hash}"));
        assert_eq!(server.domain(), "srv-a.example");
    }

    #[test]
    fn refuses_what_is_not_a_blossom_server() {
        for bad in ["", "   ", "wss://relay.example", "ftp://x", "https://"] {
            let err = ServerUrl::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let err = ServerUrl::parse("https://user:hunter2@h.example/x").unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("***@h.example"), "{err}");
    }

    /// Field case B20: the same server written several ways appears once, in
    /// first-seen order.
    #[test]
    fn b20_duplicates_collapse_in_order() {
        let servers = dedup_servers([
            "https://srv-a.example/",
            "https://SRV-A.example",
            "https://srv-b.example/blossom/",
            "srv-c.example",
        ])
        .unwrap();
        let names: Vec<_> = servers.iter().map(ServerUrl::as_str).collect();
        assert_eq!(
            names,
            ["https://srv-a.example", "https://srv-b.example", "https://srv-c.example"]
        );
        assert!(dedup_servers(["wss://relay.example"]).is_err());
    }
}
