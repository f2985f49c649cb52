//! `blossom:` URIs (BUD-10): `blossom:<sha256>.<ext>?xs=<server>&as=<pubkey>&sz=<size>`.
//! The hash and extension are required; `xs` (server hints) and `as`
//! (author hints) repeat; `sz` is the exact size.

use std::fmt;
use std::str::FromStr;

use crate::blob::Sha256;
use crate::blossom::ServerUrl;

/// A parsed `blossom:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlossomUri {
    /// The blob.
    pub sha256: Sha256,
    /// The extension, without the dot (`bin` when the type is unknown).
    pub extension: String,
    /// Servers said to hold the blob, as written (a domain, or a URL).
    pub servers: Vec<String>,
    /// Authors (hex pubkeys) whose server lists (BUD-03) may hold it.
    pub authors: Vec<String>,
    /// The exact size, if given.
    pub size: Option<u64>,
}

/// A `blossom:` URI that does not parse; the message names the part at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blossom URI {input:?}: {problem}")]
pub struct UriError {
    input: String,
    problem: String,
}

impl FromStr for BlossomUri {
    type Err = UriError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |problem: &str| UriError { input: input.to_owned(), problem: problem.into() };
        let rest = input.strip_prefix("blossom:").ok_or_else(|| error("not a blossom: URI"))?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hash, extension) =
            name.split_once('.').ok_or_else(|| error("the extension is missing"))?;
        if hash.len() != 64
            || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(error("the hash is not 64 lowercase hex digits"));
        }
        if extension.is_empty() || !extension.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(error("the extension is empty or not alphanumeric"));
        }
        let mut uri = Self {
            sha256: hash.parse().map_err(|_| error("bad hash"))?,
            extension: extension.to_owned(),
            servers: Vec::new(),
            authors: Vec::new(),
            size: None,
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "xs" => uri.servers.push(value.into_owned()),
                "as" => uri.authors.push(value.into_owned()),
                "sz" => {
                    let size = value.parse().map_err(|_| error("sz is not a size in bytes"))?;
                    uri.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(uri)
    }
}

impl fmt::Display for BlossomUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blossom:{}.{}", self.sha256, self.extension)?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for server in &self.servers {
            query.append_pair("xs", server);
        }
        for author in &self.authors {
            query.append_pair("as", author);
        }
        if let Some(size) = self.size {
            query.append_pair("sz", &size.to_string());
        }
        let query = query.finish();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

impl BlossomUri {
    /// A URI for a blob of a given MIME type (the extension follows it;
    /// `bin` when unknown), with servers that hold it and its size.
    pub fn new(sha256: Sha256, mime: &str, size: u64, servers: &[ServerUrl]) -> Self {
        let extension = mime_guess::get_mime_extensions_str(mime)
            .and_then(|exts| exts.first())
            .map_or("bin", |ext| ext)
            .to_owned();
        Self {
            sha256,
            extension,
            servers: servers.iter().map(|s| s.as_str().to_owned()).collect(),
            authors: Vec::new(),
            size: Some(size),
        }
    }

    /// The server hints as server URLs, https first for a bare domain
    /// (then http), in order; hints that do not parse are skipped.
    pub fn server_urls(&self) -> Vec<ServerUrl> {
        let mut urls: Vec<ServerUrl> = Vec::new();
        for hint in &self.servers {
            let candidates = if hint.contains("://") {
                vec![hint.clone()]
            } else {
                vec![format!("https://{hint}"), format!("http://{hint}")]
            };
            for url in candidates.iter().filter_map(|c| ServerUrl::parse(c).ok()) {
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        urls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "b1674191a88ec5cdd733e4240a81803105dc412d6c6708d53ab94fc248f4f553";

    #[test]
    fn parses_and_formats_round_trip() {
        let text = format!(
            "blossom:{H}.pdf?xs=cdn.example.com&xs=https%3A%2F%2Fb.example&as=ab&sz=184292"
        );
        let uri: BlossomUri = text.parse().unwrap();
        assert_eq!(uri.sha256.to_hex(), H);
        assert_eq!(uri.extension, "pdf");
        assert_eq!(uri.servers, ["cdn.example.com", "https://b.example"]);
        assert_eq!(uri.authors, ["ab"]);
        assert_eq!(uri.size, Some(184_292));
        assert_eq!(uri.to_string().parse::<BlossomUri>().unwrap(), uri);
        let urls: Vec<String> = uri.server_urls().iter().map(|u| u.as_str().to_owned()).collect();
        assert_eq!(
            urls,
            ["https://cdn.example.com", "http://cdn.example.com", "https://b.example"]
        );
    }

    #[test]
    fn refuses_what_bud_10_forbids_naming_the_part() {
        for (bad, part) in [
            (format!("blob:{H}.pdf"), "not a blossom"),
            (format!("blossom:{H}"), "extension"),
            (format!("blossom:{}.pdf", H.to_uppercase()), "lowercase"),
            (format!("blossom:{}.pdf", &H[1..]), "64"),
            (format!("blossom:{H}.pdf?sz=big"), "sz"),
        ] {
            let err = bad.parse::<BlossomUri>().unwrap_err().to_string();
            assert!(err.contains(part), "{bad}: {err}");
        }
    }

    #[test]
    fn new_picks_an_extension_from_the_type() {
        let hash: Sha256 = H.parse().unwrap();
        assert_eq!(BlossomUri::new(hash, "application/pdf", 1, &[]).extension, "pdf");
        assert_eq!(BlossomUri::new(hash, "application/x-unknown-thing", 1, &[]).extension, "bin");
    }
}
