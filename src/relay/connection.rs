//! One websocket to one relay: connect, send a client message, read relay
//! messages. What the messages mean is left to the caller.

use std::sync::{Arc, OnceLock};

use futures_util::{SinkExt as _, StreamExt as _};
use nostr::prelude::{ClientMessage, RelayMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use super::Error;

/// The largest message read from a relay. A server list is a few hundred
/// bytes; this leaves room for relays that answer with something bigger
/// without letting one exhaust memory.
const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// An open websocket to a relay.
pub(super) struct Connection {
    relay: Url,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Connection {
    /// Connects, with TLS for `wss://`.
    pub(super) async fn open(relay: &Url) -> Result<Self, Error> {
        let connect_error = |reason: String| Error::Connect { relay: relay.clone(), reason };
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_SIZE))
            .max_frame_size(Some(MAX_MESSAGE_SIZE));
        let connector = match relay.scheme() {
            "wss" => tls_connector().map_err(connect_error)?,
            _ => Connector::Plain,
        };

        let (socket, _response) = tokio_tungstenite::connect_async_tls_with_config(
            relay.as_str(),
            Some(config),
            true,
            Some(connector),
        )
        .await
        .map_err(|e| connect_error(e.to_string()))?;
        tracing::trace!(relay = %relay, "connected");
        Ok(Self { relay: relay.clone(), socket })
    }

    /// Sends one message.
    pub(super) async fn send(&mut self, message: &ClientMessage<'_>) -> Result<(), Error> {
        let text = message.try_as_json().map_err(|e| self.protocol(e.to_string()))?;
        tracing::trace!(relay = %self.relay, message = %text, "sending");
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| Error::Connection { relay: self.relay.clone(), reason: e.to_string() })
    }

    /// The next message from the relay. Pings are answered by the socket
    /// itself; text that is not a relay message is skipped, since relays
    /// add message types of their own.
    pub(super) async fn recv(&mut self) -> Result<RelayMessage<'static>, Error> {
        loop {
            let frame = match self.socket.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    return Err(Error::Connection {
                        relay: self.relay.clone(),
                        reason: e.to_string(),
                    });
                }
                None => return Err(Error::Closed { relay: self.relay.clone() }),
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Close(_) => return Err(Error::Closed { relay: self.relay.clone() }),
                _ => continue,
            };
            match RelayMessage::from_json(text.as_str()) {
                Ok(message) => return Ok(message),
                Err(e) => {
                    tracing::debug!(relay = %self.relay, error = %e, "skipping a message that does not parse");
                }
            }
        }
    }

    /// Says goodbye. Errors are ignored: the answer is already in hand.
    pub(super) async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol { relay: self.relay.clone(), reason }
    }
}

/// TLS as reqwest does it here: the aws-lc-rs provider, named explicitly so
/// that another rustls provider elsewhere in a program cannot make the
/// choice ambiguous, and the platform's certificate verifier. Built once
/// per process, since the verifier loads the system's roots.
fn tls_connector() -> Result<Connector, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;

    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_platform_verifier())
            .map_err(|e| format!("cannot set up tls: {e}"))?
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    config.clone().map(Connector::Rustls)
}
