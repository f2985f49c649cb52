//! Relay addresses: checked once where they enter (flags, config), so that
//! every later message can name a relay without leaking a password.
//!
//! This part needs no network code and is built without the `relays`
//! feature too, so a configuration file reads the same either way.

use url::Url;

/// A relay address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relay url {input:?}: {problem}")]
pub struct RelayUrlError {
    input: String,
    problem: &'static str,
}

/// Parses a relay address: `ws://` or `wss://` with a host and no
/// credentials. A bare host (`relay.example`) is taken as `wss://`.
///
/// # Errors
///
/// [`RelayUrlError`], naming the input with any credentials removed.
pub fn parse_relay_url(input: &str) -> Result<Url, RelayUrlError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(RelayUrlError { input: String::new(), problem: "empty" });
    }
    let with_scheme =
        if trimmed.contains("://") { trimmed.to_owned() } else { format!("wss://{trimmed}") };
    let url = Url::parse(&with_scheme)
        .map_err(|_| RelayUrlError { input: redact(trimmed), problem: "not a url" })?;
    check_relay_url(&url)?;
    Ok(url)
}

/// The checks [`parse_relay_url`] makes, for addresses built elsewhere.
///
/// # Errors
///
/// [`RelayUrlError`] for another scheme, no host, or credentials.
pub fn check_relay_url(url: &Url) -> Result<(), RelayUrlError> {
    let invalid = |problem| RelayUrlError { input: redact(url.as_str()), problem };
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(invalid("relays are reached over ws:// or wss://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in relay urls are not supported"));
    }
    Ok(())
}

/// The input with its user and password removed, so a password typed into
/// an address never reaches a message.
fn redact(input: &str) -> String {
    match Url::parse(input) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => input.to_owned(),
        Err(_) if input.contains('@') => "<address with credentials>".to_owned(),
        Err(_) => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_are_checked_and_credentials_never_shown() {
        assert_eq!(parse_relay_url("relay.example").unwrap().as_str(), "wss://relay.example/");
        assert!(parse_relay_url("ws://127.0.0.1:7447").is_ok());
        for (input, problem) in [
            ("https://relay.example", "ws://"),
            ("", "empty"),
            ("ws://", "not a url"),
            ("wss://me:hunter2@relay.example", "credentials"),
        ] {
            let err = parse_relay_url(input).unwrap_err().to_string();
            assert!(err.contains(problem), "{input:?} gave {err:?}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
