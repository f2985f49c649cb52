//! Configuration in two stages: the raw TOML file as written, then one
//! validated [`Config`] with typed values (`ServerUrl`, `Duration`,
//! non-zero limits). Every error names the key it is about.
//!
//! This module reads no environment variables; the entry points do, and
//! pass what they found in.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::blossom::{KeySigner, ServerUrl, Timeouts, TokenEncoding};
use crate::relay::parse_relay_url;
use crate::store::Strategy;

/// A configuration that cannot be used. The message names the file and the
/// key (or line) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {detail}")]
pub struct ConfigError {
    origin: String,
    detail: String,
}

impl ConfigError {
    fn new(origin: &str, detail: impl Into<String>) -> Self {
        Self { origin: origin.to_owned(), detail: detail.into() }
    }
}

/// Everything the engine needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The SQLite database file.
    pub database: PathBuf,
    /// Target servers in priority order, without duplicates.
    pub servers: Vec<ServerConfig>,
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Request timeouts, the same for every server.
    pub timeouts: Timeouts,
    /// Queue leases and shutdown.
    pub queue: QueueConfig,
    /// How blobs are spread over the servers.
    pub replication: ReplicationConfig,
    /// Nostr relays that hold the user's BUD-03 server list, without
    /// duplicates.
    pub relays: Vec<Url>,
}

/// How blobs are spread over the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicationConfig {
    /// Mirror-first (the default) or upload to every server.
    pub strategy: Strategy,
    /// Servers that must hold a blob for it to count as safe; `None` means
    /// every configured server.
    pub min_copies: Option<u32>,
}

/// One target server and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Normalised address.
    pub url: ServerUrl,
    /// Requests per second allowed on average.
    pub rate: f64,
    /// Requests allowed back to back before the rate applies.
    pub burst: NonZeroU32,
    /// Requests in flight at once.
    pub max_in_flight: NonZeroUsize,
    /// How auth tokens are encoded until the server teaches us otherwise.
    pub token_encoding: TokenEncoding,
    /// Blobs of at least this many bytes are announced with `HEAD /upload`
    /// (BUD-06) before their body is sent, so a server that will refuse
    /// them says so first. Servers without it are remembered and skipped.
    pub preflight_min_size: u64,
    /// Sign one upload token for the blobs claimed together (several `x`
    /// tags) instead of one per request. Off by default; a server that
    /// refuses such a token gets one token per request from then on.
    pub batch_tokens: bool,
}

/// Retries of transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per (blob, server) before giving up.
    pub max_attempts: u32,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Longest backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured; a server asking for more gets this.
    pub max_retry_after: Duration,
    /// Consecutive transient failures after which a server is paused (its
    /// circuit opens) while the other servers go on; 0 never pauses.
    pub circuit_failures: u32,
    /// The first pause; it doubles, up to `max_delay`, while the server
    /// keeps failing the single request let through after each pause.
    pub circuit_cooldown: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            max_retry_after: Duration::from_secs(3600),
            circuit_failures: 5,
            circuit_cooldown: Duration::from_secs(10),
        }
    }
}

/// How the queue is worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a claimed job stays ours without renewal. A process killed
    /// on another machine gives its jobs back after this long; on the same
    /// machine at once.
    pub lease: Duration,
    /// How long in-flight requests may finish after a stop is asked for.
    pub shutdown_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { lease: Duration::from_secs(60), shutdown_grace: Duration::from_secs(20) }
    }
}

impl Config {
    /// A configuration with defaults for everything but the servers.
    pub fn new(database: PathBuf, servers: Vec<ServerUrl>) -> Self {
        let defaults = RawServerDefaults::default();
        let servers = servers.into_iter().map(|url| defaults.server(url)).collect();
        Self {
            database,
            servers,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            queue: QueueConfig::default(),
            replication: ReplicationConfig::default(),
            relays: Vec::new(),
        }
    }

    /// Copies a blob needs to count as safe.
    pub fn min_copies(&self) -> u32 {
        self.replication.min_copies.unwrap_or(self.servers.len() as u32)
    }

    /// Reads a TOML file. `default_database` is used when the file names
    /// none.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or does not validate.
    pub fn load(path: &Path, default_database: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&origin, format!("cannot read: {e}")))?;
        Self::parse(&text, &origin, default_database)
    }

    /// Parses TOML text; `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// Unknown keys, wrong types, and invalid values, each naming the key.
    pub fn parse(text: &str, origin: &str, default_database: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        raw.validate(origin, default_database)
    }

    /// Replaces the server list (the `--server` flag), keeping the
    /// configured per-server settings where a server is in both.
    pub fn replace_servers(&mut self, servers: Vec<ServerUrl>) {
        let defaults = RawServerDefaults::default();
        self.servers = servers
            .into_iter()
            .map(|url| {
                self.servers
                    .iter()
                    .find(|s| s.url == url)
                    .cloned()
                    .unwrap_or_else(|| defaults.server(url))
            })
            .collect();
    }
}

/// Loads the secret key: from a key file when one is named, else from the
/// value of the environment variable. The key itself never appears in an
/// error.
///
/// # Errors
///
/// When no key is given, the file cannot be read, or the key does not parse.
pub fn load_signer(
    key_file: Option<&Path>,
    env_key: Option<&str>,
) -> Result<KeySigner, ConfigError> {
    match (key_file, env_key) {
        (Some(path), _) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(&origin, format!("cannot read key file: {e}")))?;
            KeySigner::parse(&text).map_err(|e| ConfigError::new(&origin, e.to_string()))
        }
        (None, Some(key)) => {
            KeySigner::parse(key).map_err(|e| ConfigError::new("BLOSSOM_SECRET_KEY", e.to_string()))
        }
        (None, None) => Err(ConfigError::new(
            "secret key",
            "none given: set BLOSSOM_SECRET_KEY to an nsec or hex key, or BLOSSOM_SECRET_KEY_FILE to a file holding one, or pass --key-file",
        )),
    }
}

/// One line for a TOML error: the line number, the offending line (which
/// names the key) and what was wrong.
fn toml_error(origin: &str, text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().replace('\n', " ");
    let Some(span) = err.span() else {
        return ConfigError::new(origin, message);
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    ConfigError::new(origin, format!("line {line_no}: `{line}`: {message}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<PathBuf>,
    #[serde(default)]
    relays: Vec<String>,
    #[serde(default)]
    defaults: RawServerDefaults,
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    replication: RawReplication,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    strategy: Option<Strategy>,
    min_copies: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServerDefaults {
    rate: f64,
    burst: NonZeroU32,
    max_in_flight: NonZeroUsize,
    token_encoding: TokenEncoding,
    preflight_min_size: u64,
    batch_tokens: bool,
}

impl Default for RawServerDefaults {
    fn default() -> Self {
        Self {
            rate: 20.0,
            burst: NonZeroU32::new(20).expect("non-zero"),
            max_in_flight: NonZeroUsize::new(8).expect("non-zero"),
            token_encoding: TokenEncoding::Base64,
            preflight_min_size: 1024 * 1024,
            batch_tokens: false,
        }
    }
}

impl RawServerDefaults {
    fn server(&self, url: ServerUrl) -> ServerConfig {
        ServerConfig {
            url,
            rate: self.rate,
            burst: self.burst,
            max_in_flight: self.max_in_flight,
            token_encoding: self.token_encoding,
            preflight_min_size: self.preflight_min_size,
            batch_tokens: self.batch_tokens,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    rate: Option<f64>,
    burst: Option<NonZeroU32>,
    max_in_flight: Option<NonZeroUsize>,
    token_encoding: Option<TokenEncoding>,
    preflight_min_size: Option<u64>,
    batch_tokens: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    min_delay: Option<String>,
    max_delay: Option<String>,
    max_retry_after: Option<String>,
    circuit_failures: Option<u32>,
    circuit_cooldown: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<String>,
    request: Option<String>,
    stall: Option<String>,
    response: Option<String>,
    min_throughput: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    lease: Option<String>,
    shutdown_grace: Option<String>,
}

impl RawConfig {
    fn validate(self, origin: &str, default_database: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, detail: String| ConfigError::new(origin, format!("{key}: {detail}"));
        check_rate("defaults.rate", self.defaults.rate).map_err(|d| err("defaults.rate", d))?;

        let mut servers: Vec<ServerConfig> = Vec::new();
        for (i, raw) in self.servers.into_iter().enumerate() {
            let url = ServerUrl::parse(&raw.url)
                .map_err(|e| err(&format!("servers[{i}].url"), e.to_string()))?;
            if servers.iter().any(|s| s.url == url) {
                tracing::warn!(server = %url, "server listed twice; keeping the first entry");
                continue;
            }
            let mut server = self.defaults.server(url);
            if let Some(rate) = raw.rate {
                check_rate("rate", rate).map_err(|d| err(&format!("servers[{i}].rate"), d))?;
                server.rate = rate;
            }
            server.burst = raw.burst.unwrap_or(server.burst);
            server.max_in_flight = raw.max_in_flight.unwrap_or(server.max_in_flight);
            server.token_encoding = raw.token_encoding.unwrap_or(server.token_encoding);
            server.preflight_min_size = raw.preflight_min_size.unwrap_or(server.preflight_min_size);
            server.batch_tokens = raw.batch_tokens.unwrap_or(server.batch_tokens);
            servers.push(server);
        }

        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(&text).map_err(|d| err(key, d)),
        };
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_attempts: match self.retry.max_attempts {
                Some(0) => return Err(err("retry.max_attempts", "must be at least 1".into())),
                Some(n) => n,
                None => defaults.max_attempts,
            },
            min_delay: duration("retry.min_delay", self.retry.min_delay, defaults.min_delay)?,
            max_delay: duration("retry.max_delay", self.retry.max_delay, defaults.max_delay)?,
            max_retry_after: duration(
                "retry.max_retry_after",
                self.retry.max_retry_after,
                defaults.max_retry_after,
            )?,
            circuit_failures: self.retry.circuit_failures.unwrap_or(defaults.circuit_failures),
            circuit_cooldown: duration(
                "retry.circuit_cooldown",
                self.retry.circuit_cooldown,
                defaults.circuit_cooldown,
            )?,
        };
        if retry.min_delay > retry.max_delay {
            return Err(err("retry.min_delay", "is longer than retry.max_delay".into()));
        }

        let t = Timeouts::default();
        let timeouts = Timeouts {
            connect: duration("timeouts.connect", self.timeouts.connect, t.connect)?,
            request: duration("timeouts.request", self.timeouts.request, t.request)?,
            stall: duration("timeouts.stall", self.timeouts.stall, t.stall)?,
            response: duration("timeouts.response", self.timeouts.response, t.response)?,
            min_throughput: match self.timeouts.min_throughput {
                Some(0) => return Err(err("timeouts.min_throughput", "must be at least 1".into())),
                Some(n) => n,
                None => t.min_throughput,
            },
        };

        for (key, value) in [
            ("timeouts.connect", timeouts.connect),
            ("timeouts.request", timeouts.request),
            ("timeouts.stall", timeouts.stall),
            ("timeouts.response", timeouts.response),
        ] {
            if value.is_zero() {
                return Err(err(key, "must be longer than zero".into()));
            }
        }

        let q = QueueConfig::default();
        let queue = QueueConfig {
            lease: duration("queue.lease", self.queue.lease, q.lease)?,
            shutdown_grace: duration(
                "queue.shutdown_grace",
                self.queue.shutdown_grace,
                q.shutdown_grace,
            )?,
        };
        if queue.lease < Duration::from_secs(3) {
            return Err(err("queue.lease", "must be at least 3s".into()));
        }

        if self.replication.min_copies == Some(0) {
            return Err(err("replication.min_copies", "must be at least 1".into()));
        }
        let replication = ReplicationConfig {
            strategy: self.replication.strategy.unwrap_or_default(),
            min_copies: self.replication.min_copies,
        };

        let mut relays: Vec<Url> = Vec::new();
        for (i, raw) in self.relays.iter().enumerate() {
            let url =
                parse_relay_url(raw).map_err(|e| err(&format!("relays[{i}]"), e.to_string()))?;
            if !relays.contains(&url) {
                relays.push(url);
            }
        }

        Ok(Config {
            database: self.database.unwrap_or_else(|| default_database.to_owned()),
            servers,
            retry,
            timeouts,
            queue,
            replication,
            relays,
        })
    }
}

fn check_rate(_key: &str, rate: f64) -> Result<(), String> {
    if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 {
        Ok(())
    } else {
        Err(format!("{rate} is not a rate in requests per second (0 < rate <= 1000000)"))
    }
}

/// Parses `"10s"`, `"1m 30s"`, `"500ms"` or ISO 8601 (`"PT10S"`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration =
        text.parse().map_err(|_| format!("{text:?} is not a duration (try \"30s\" or \"5m\")"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/default.db"))
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../config.example.toml");
        let config = parse(text).unwrap();
        assert!(!config.servers.is_empty());
        assert!(!config.relays.is_empty());
    }

    #[test]
    fn defaults_may_be_partial() {
        let config = parse("[defaults]\nrate = 3\n[[servers]]\nurl = \"http://a\"").unwrap();
        assert_eq!(config.servers[0].rate, 3.0);
        assert_eq!(config.servers[0].max_in_flight.get(), 8);
    }

    #[test]
    fn defaults_apply_and_servers_override_them() {
        let config = parse(
            r#"
            [defaults]
            rate = 5
            burst = 3
            max_in_flight = 2
            token_encoding = "base64"
            [[servers]]
            url = "http://127.0.0.1:3000/"
            [[servers]]
            url = "https://b.example"
            rate = 0.5
            token_encoding = "base64url"
            [[servers]]
            url = "HTTP://127.0.0.1:3000"
            [retry]
            max_delay = "2m"
            "#,
        )
        .unwrap();
        assert_eq!(config.database, Path::new("/default.db"));
        assert_eq!(config.servers.len(), 2, "duplicate server dropped");
        assert_eq!(config.servers[0].url.as_str(), "http://127.0.0.1:3000");
        assert_eq!((config.servers[0].rate, config.servers[0].burst.get()), (5.0, 3));
        assert_eq!(config.servers[1].rate, 0.5);
        assert_eq!(config.servers[1].token_encoding, TokenEncoding::Base64Url);
        assert_eq!(config.retry.max_delay, Duration::from_secs(120));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("colour = 1", "colour"),
            ("[[servers]]\nurl = \"wss://relay.example\"", "servers[0].url"),
            ("[[servers]]\nurl = \"http://a\"\nrate = \"fast\"", "rate = \"fast\""),
            ("[[servers]]\nurl = \"http://a\"\nmax_in_flight = 0", "max_in_flight = 0"),
            ("[retry]\nmin_delay = \"soon\"", "retry.min_delay"),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[queue]\nlease = \"-5s\"", "queue.lease"),
            ("[timeouts]\nconnect = \"0s\"", "timeouts.connect"),
            ("[defaults]\ntoken_encoding = \"hex\"", "token_encoding = \"hex\""),
            ("[[servers]]\nurl = \"http://a\"\nspeed = 3", "speed"),
            ("[replication]\nstrategy = \"teleport\"", "strategy = \"teleport\""),
            ("[replication]\nmin_copies = 0", "replication.min_copies"),
            ("relays = [\"wss://a.example\", \"https://b.example\"]", "relays[1]"),
            ("relays = \"wss://a.example\"", "relays = \"wss://a.example\""),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("test.toml: "), "{err}");
            assert!(err.contains(key), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn relays_are_parsed_in_order_without_duplicates() {
        let config =
            parse("relays = [\"wss://b.example\", \"a.example\", \"wss://b.example/\"]").unwrap();
        let relays: Vec<&str> = config.relays.iter().map(Url::as_str).collect();
        assert_eq!(relays, ["wss://b.example/", "wss://a.example/"]);
        assert!(parse("").unwrap().relays.is_empty());
    }

    #[test]
    fn replacing_servers_keeps_their_settings() {
        let mut config =
            parse("[[servers]]\nurl = \"http://a\"\nrate = 2\n[[servers]]\nurl = \"http://b\"")
                .unwrap();
        config.replace_servers(vec![
            ServerUrl::parse("http://a/").unwrap(),
            ServerUrl::parse("http://c").unwrap(),
        ]);
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.servers[0].rate, 2.0);
        assert_eq!(config.servers[1].url.as_str(), "http://c");
    }

    #[test]
    fn key_errors_never_repeat_the_key() {
        let secret = "nsec1notreallyakeybutclosetooneqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";
        let err = load_signer(None, Some(secret)).unwrap_err().to_string();
        assert!(!err.contains(secret) && err.contains("BLOSSOM_SECRET_KEY"), "{err}");
        let err = load_signer(None, None).unwrap_err().to_string();
        assert!(err.contains("BLOSSOM_SECRET_KEY"), "{err}");
        let err = load_signer(Some(Path::new("/nonexistent/key")), None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/key"), "{err}");
    }
}
