//! A stand-in Nostr relay that answers every query with events it was
//! given, forged ones included. A real relay refuses to store a forged
//! event, so this is how a client meets one in a test.

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Serves `events` (raw event JSON) to every `REQ`, then `EOSE`.
pub struct ForgedRelay {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl ForgedRelay {
    pub async fn start(events: Vec<serde_json::Value>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, events.clone()));
            }
        });
        Self { url, task }
    }
}

impl Drop for ForgedRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: tokio::net::TcpStream, events: Vec<serde_json::Value>) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(serde_json::Value::Array(parts)) = serde_json::from_str(text.as_str()) else {
            continue;
        };
        if parts.first().and_then(|p| p.as_str()) != Some("REQ") {
            continue;
        }
        let subscription = parts[1].clone();
        for event in &events {
            let reply = serde_json::json!(["EVENT", subscription, event]);
            if socket.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
        }
        let eose = serde_json::json!(["EOSE", subscription]);
        let _ = socket.send(Message::text(eose.to_string())).await;
    }
}
