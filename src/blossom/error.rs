//! One error type for every exchange with a server, and one classification
//! of it that every retry decision reads. Decisions come from the status
//! code and the endpoint, never from message text: `X-Reason` is shown to
//! people and never parsed.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::descriptor::Mismatch;

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later with backoff: the network, timeouts, 408, 429, 5xx.
    Transient,
    /// The server refused the token (401, 403): sign a fresh one, then try
    /// the other encoding, then give up.
    Reauth,
    /// This server will not take this blob; repeating the request is
    /// pointless (400, 402, 409, 411, 413, 415, 422, wrong descriptor, the
    /// local file is gone or changed).
    Permanent,
    /// The server does not implement an optional endpoint (404, 405, 501 on
    /// `/mirror`, `/media`, `HEAD /upload`, `/list`).
    Unsupported,
}

/// The endpoint a request went to; it decides what 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `HEAD /<sha256>`.
    HasBlob,
    /// `GET /<sha256>`.
    GetBlob,
    /// `PUT /upload`.
    Upload,
    /// `HEAD /upload` (BUD-06).
    UploadPreflight,
    /// `PUT /mirror` (BUD-04).
    Mirror,
    /// `DELETE /<sha256>`.
    Delete,
    /// `GET /list/<pubkey>` (BUD-12).
    List,
    /// `PUT /media` (BUD-05).
    Media,
    /// `HEAD /media` (BUD-05).
    MediaPreflight,
    /// `PUT /report` (BUD-09).
    Report,
}

impl Endpoint {
    fn is_optional(self) -> bool {
        matches!(
            self,
            Self::UploadPreflight
                | Self::Mirror
                | Self::List
                | Self::Media
                | Self::MediaPreflight
                | Self::Report
        )
    }

    fn method(self) -> &'static str {
        match self {
            Self::HasBlob | Self::UploadPreflight | Self::MediaPreflight => "HEAD",
            Self::GetBlob | Self::List => "GET",
            Self::Upload | Self::Mirror | Self::Media | Self::Report => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// A failed exchange with a Blossom server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No HTTP answer: refused, reset, timed out, TLS failure.
    #[error("{} {url}: {detail}", endpoint.method())]
    Transport {
        /// Which endpoint.
        endpoint: Endpoint,
        /// The request URL.
        url: String,
        /// The innermost cause, in a few words.
        detail: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status that is not success.
    #[error("{} {url}: {status}{}{}", endpoint.method(), reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(), payment_offer(payment))]
    Status {
        /// Which endpoint.
        endpoint: Endpoint,
        /// The request URL.
        url: String,
        /// The status code.
        status: StatusCode,
        /// Human-readable reason for display: `X-Reason`, or a JSON
        /// `message`, or the start of a text body.
        reason: Option<String>,
        /// When the server asked us to come back, from `Retry-After`.
        retry_after: Option<Duration>,
        /// Payment methods offered with a 402 (`X-Cashu`, `X-Lightning`, …).
        payment: Vec<(String, String)>,
    },
    /// An upload stopped moving: the server took no data, or gave no answer
    /// after the last byte, for too long.
    #[error("PUT {url}: stalled: {detail}")]
    Stalled {
        /// The request URL.
        url: String,
        /// Which wait ran out.
        detail: String,
    },
    /// The server answered success with a body that is not a descriptor.
    #[error("{} {url}: unreadable descriptor ({detail})", endpoint.method())]
    BadDescriptor {
        /// Which endpoint.
        endpoint: Endpoint,
        /// The request URL.
        url: String,
        /// What was wrong, with a snippet of the body.
        detail: String,
    },
    /// The server claims to hold other bytes than the ones we sent.
    #[error("{url}: stored copy does not match: {mismatch}")]
    Integrity {
        /// The request URL.
        url: String,
        /// How it differs.
        mismatch: Mismatch,
    },
    /// A server we downloaded from served bytes that are not the blob.
    #[error("{url} served bytes that are not blob {expected}")]
    WrongBytes {
        /// Where the bytes came from.
        url: String,
        /// The hash they should have had.
        expected: crate::blob::Sha256,
    },
    /// The local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The local file is no longer the bytes that were hashed.
    #[error("{} changed since it was hashed ({detail})", path.display())]
    SourceChanged {
        /// The file.
        path: PathBuf,
        /// Length or hash difference.
        detail: String,
    },
    /// The token could not be built or signed.
    #[error("{0}")]
    Sign(String),
    /// Not sent: the server refused a body at least this large before
    /// (field case B07).
    #[error(
        "PUT {url}: not sent: the server refused {refused} bytes as too large, and this blob has {size}"
    )]
    TooLarge {
        /// The upload URL.
        url: String,
        /// The blob's size.
        size: u64,
        /// The smallest size the server refused.
        refused: u64,
    },
}

impl Error {
    /// How the retry loop should treat this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Transport { .. } | Self::Stalled { .. } => ErrorClass::Transient,
            Self::Status { endpoint, status, .. } => classify_status(*endpoint, *status),
            // A list page that does not parse comes from the server's code,
            // not from a connection cut short: asking again gives the same.
            Self::BadDescriptor { endpoint: Endpoint::List, .. } => ErrorClass::Permanent,
            Self::BadDescriptor { .. } | Self::WrongBytes { .. } => ErrorClass::Transient,
            Self::Integrity { .. }
            | Self::Source { .. }
            | Self::SourceChanged { .. }
            | Self::Sign(_)
            | Self::TooLarge { .. } => ErrorClass::Permanent,
        }
    }

    /// Shorthand for `class() == Transient`.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// How long the server asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// The endpoint of the failed request, when there was one.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Self::Transport { endpoint, .. }
            | Self::Status { endpoint, .. }
            | Self::BadDescriptor { endpoint, .. } => Some(*endpoint),
            _ => None,
        }
    }

    /// A failure of the local source rather than of the server: it fails
    /// the blob on every server alike.
    pub fn is_source_error(&self) -> bool {
        matches!(self, Self::Source { .. } | Self::SourceChanged { .. })
    }

    pub(crate) fn transport(endpoint: Endpoint, url: &str, source: reqwest::Error) -> Self {
        Self::Transport { endpoint, url: url.to_owned(), detail: innermost(&source), source }
    }

    /// Builds a status error from a response's parts and (capped) body.
    pub(crate) fn from_response(
        endpoint: Endpoint,
        url: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        let payment = if status == StatusCode::PAYMENT_REQUIRED {
            payment_methods(headers)
        } else {
            Vec::new()
        };
        Self::Status {
            endpoint,
            url: url.to_owned(),
            status,
            reason: reason(headers, body),
            retry_after: retry_after(headers, SystemTime::now()),
            payment,
        }
    }
}

/// The one status table (DESIGN.md, "Errors").
pub(crate) fn classify_status(endpoint: Endpoint, status: StatusCode) -> ErrorClass {
    match status.as_u16() {
        408 | 429 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
        401 | 403 => ErrorClass::Reauth,
        404 | 405 | 501 if endpoint.is_optional() => ErrorClass::Unsupported,
        501 => ErrorClass::Permanent,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// The text to show for a failed response: `X-Reason`, else a JSON
/// `message`/`error`/`reason`, else the start of a text body (field case B14).
fn reason(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if let Some(reason) = headers.get("x-reason").and_then(|v| v.to_str().ok()) {
        let reason = reason.trim();
        if !reason.is_empty() {
            return Some(snippet(reason));
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
        for key in ["message", "error", "reason"] {
            if let Some(serde_json::Value::String(text)) = map.get(key) {
                return Some(snippet(text));
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = strip_markup(&text);
    (!text.is_empty()).then(|| snippet(&text))
}

/// Collapses an HTML error page to its words, so the line shown to a person
/// says "413 Request Entity Too Large" rather than `<html><head>…`.
fn strip_markup(text: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn snippet(text: &str) -> String {
    snippet_of(text, 200)
}

fn snippet_of(text: &str, max: usize) -> String {
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    if text.chars().count() <= max {
        return text;
    }
    text.chars().take(max).collect::<String>() + "…"
}

/// `Retry-After` in either form: delay seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How a 402 said it wants to be paid, for the message: "; payment offered:
/// x-cashu creqA…".
fn payment_offer(payment: &[(String, String)]) -> String {
    if payment.is_empty() {
        return String::new();
    }
    let offers: Vec<String> =
        payment.iter().map(|(name, value)| format!("{name} {}", snippet_of(value, 40))).collect();
    format!("; payment offered: {}", offers.join(", "))
}

/// BUD-07: every `X-<method>` header that came with a 402, except the
/// reason, so a caller can offer to pay.
fn payment_methods(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-") && name.as_str() != "x-reason")
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect()
}

/// The deepest cause in an error chain, which is the useful part of a
/// transport error ("connection refused", "operation timed out").
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    if error.to_string().contains("timed out") || text.contains("timed out") {
        return "timed out".to_owned();
    }
    text
}

/// A descriptor that failed to parse, with a readable snippet of the body.
pub(crate) fn bad_descriptor(
    endpoint: Endpoint,
    url: &str,
    err: &serde_json::Error,
    body: &[u8],
) -> Error {
    let body = snippet(&strip_markup(&String::from_utf8_lossy(body)));
    Error::BadDescriptor { endpoint, url: url.to_owned(), detail: format!("{err}; body: {body:?}") }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())
            })
            .collect()
    }

    /// One test per row of the retry table: the class of a status on
    /// `PUT /upload`, a required endpoint.
    macro_rules! status_table {
        ($($name:ident: $code:literal => $class:ident,)*) => {$(
            #[test]
            fn $name() {
                let status = StatusCode::from_u16($code).unwrap();
                assert_eq!(classify_status(Endpoint::Upload, status), ErrorClass::$class);
            }
        )*};
    }

    status_table! {
        status_408_is_transient: 408 => Transient,
        status_429_is_transient: 429 => Transient,
        status_500_is_transient: 500 => Transient,
        status_502_is_transient: 502 => Transient,
        status_503_is_transient: 503 => Transient,
        status_504_is_transient: 504 => Transient,
        status_507_is_transient: 507 => Transient,
        status_401_re_signs: 401 => Reauth,
        status_403_re_signs: 403 => Reauth,
        status_400_is_permanent: 400 => Permanent,
        status_402_is_permanent: 402 => Permanent,
        status_409_is_permanent: 409 => Permanent,
        status_411_is_permanent: 411 => Permanent,
        status_413_is_permanent: 413 => Permanent,
        status_415_is_permanent: 415 => Permanent,
        status_422_is_permanent: 422 => Permanent,
        status_404_on_upload_is_permanent: 404 => Permanent,
        status_405_on_upload_is_permanent: 405 => Permanent,
        status_501_on_upload_is_permanent: 501 => Permanent,
    }

    #[test]
    fn status_404_405_501_on_optional_endpoints_are_unsupported() {
        for code in [404, 405, 501] {
            let status = StatusCode::from_u16(code).unwrap();
            for endpoint in [Endpoint::Mirror, Endpoint::UploadPreflight] {
                assert_eq!(
                    classify_status(endpoint, status),
                    ErrorClass::Unsupported,
                    "{endpoint:?} {code}"
                );
            }
        }
    }

    #[tokio::test]
    async fn network_errors_and_timeouts_are_transient() {
        // A port nothing listens on: connection refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = format!("http://{closed}/upload");
        let refused = reqwest::Client::new().put(&url).send().await.unwrap_err();
        assert_eq!(
            Error::transport(Endpoint::Upload, &url, refused).class(),
            ErrorClass::Transient
        );
        // A server that accepts and never answers: the client's timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/upload", silent.local_addr().unwrap());
        let client =
            reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
        let timed_out = client.put(&url).send().await.unwrap_err();
        assert!(timed_out.is_timeout());
        let error = Error::transport(Endpoint::Upload, &url, timed_out);
        assert_eq!(error.class(), ErrorClass::Transient);
        assert!(error.to_string().contains("timed out"), "{error}");
        let stalled = Error::Stalled { url, detail: "no data taken for 30 s".into() };
        assert_eq!(stalled.class(), ErrorClass::Transient);
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now()),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &later)]), now()),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn retry_after_as_a_date_in_the_past_means_now() {
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(90));
        assert_eq!(retry_after(&headers(&[("retry-after", &past)]), now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_that_does_not_parse_or_is_missing_is_ignored() {
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now()), None);
        assert_eq!(retry_after(&headers(&[]), now()), None);
    }

    /// Field case B14: the reason comes from X-Reason, else a JSON message,
    /// else a text snippet; the class from the status alone.
    #[test]
    fn b14_reason_sources_in_order() {
        let json = br#"{"message":"unauthorized"}"#;
        assert_eq!(reason(&headers(&[("x-reason", "nope")]), json).as_deref(), Some("nope"));
        assert_eq!(reason(&headers(&[]), json).as_deref(), Some("unauthorized"));
        assert_eq!(reason(&headers(&[]), b"forbidden\n").as_deref(), Some("forbidden"));
        let html = b"<html><head><title>413 Request Entity Too Large</title></head><body><center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center></body></html>";
        let shown = reason(&headers(&[]), html).unwrap();
        assert!(shown.starts_with("413 Request Entity Too Large"), "{shown}");
        assert!(!shown.contains('<'));
        assert_eq!(reason(&headers(&[]), b""), None);

        let err = Error::from_response(
            Endpoint::Delete,
            "http://h/x",
            StatusCode::BAD_REQUEST,
            &headers(&[]),
            json,
        );
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(err.to_string(), "DELETE http://h/x: 400 Bad Request (unauthorized)");
    }

    #[test]
    fn payment_required_carries_the_offered_methods() {
        let h = headers(&[("x-cashu", "creqA123"), ("x-reason", "pay"), ("x-lightning", "lnbc1")]);
        let err =
            Error::from_response(Endpoint::Upload, "u", StatusCode::PAYMENT_REQUIRED, &h, b"");
        let Error::Status { payment, .. } = &err else { panic!() };
        assert_eq!(payment.len(), 2);
        assert!(payment.contains(&("x-cashu".into(), "creqA123".into())));
        assert!(err.to_string().contains("payment offered: x-cashu creqA123"), "{err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
    }
}
