//! The network half: fetch and publish over one short-lived websocket per
//! relay, all relays at once.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::future::join_all;
use nostr::prelude::{
    ClientMessage, Event, EventBuilder, EventId, Filter, Kind, PublicKey, RelayMessage,
    SubscriptionId, Tag, Timestamp,
};
use url::Url;

use super::connection::Connection;
use super::relay_url::{RelayUrlError, check_relay_url};
use crate::blossom::{ServerUrl, SignError, Signer};

/// The event kind of a user's Blossom server list.
const SERVER_LIST_KIND: Kind = Kind::BlossomServerList;

/// A sensible wait for one relay, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A user's Blossom servers as found on relays, in their order of
/// preference: BUD-03 says the first one gets the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList {
    /// The servers, most preferred first, without duplicates.
    pub servers: Vec<ServerUrl>,
    /// When the list was signed.
    pub created_at: Timestamp,
    /// The event the list came from.
    pub event_id: EventId,
}

/// What publishing a server list came to.
#[derive(Debug)]
pub struct Publication {
    /// The published event.
    pub event_id: EventId,
    /// The time it carries; later than any list the relays held before.
    pub created_at: Timestamp,
    /// Each relay's answer, in the order the relays were given.
    pub relays: Vec<RelayAnswer>,
}

impl Publication {
    /// How many relays accepted the event.
    pub fn accepted(&self) -> usize {
        self.relays.iter().filter(|r| r.result.is_ok()).count()
    }
}

/// One relay's answer to a publication.
#[derive(Debug)]
pub struct RelayAnswer {
    /// The relay.
    pub relay: Url,
    /// `Ok` when the relay stored the event (or already had it).
    pub result: Result<(), Error>,
}

/// A relay operation that failed. Each message names the relay; none
/// contains a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A relay address that cannot be used.
    #[error(transparent)]
    InvalidUrl(#[from] RelayUrlError),
    /// The operation was given no relays.
    #[error("no relays given")]
    NoRelays,
    /// A server list must name at least one server (BUD-03).
    #[error("a server list needs at least one server")]
    EmptyList,
    /// The websocket could not be opened.
    #[error("cannot connect to relay {relay}: {reason}")]
    Connect {
        /// The relay.
        relay: Url,
        /// Why.
        reason: String,
    },
    /// The websocket broke after it was opened.
    #[error("relay {relay}: connection lost: {reason}")]
    Connection {
        /// The relay.
        relay: Url,
        /// Why.
        reason: String,
    },
    /// The relay closed the websocket before answering.
    #[error("relay {relay} closed the connection before answering")]
    Closed {
        /// The relay.
        relay: Url,
    },
    /// The relay did not finish answering in time.
    #[error("relay {relay} did not answer within {} s", .timeout.as_secs_f64())]
    Timeout {
        /// The relay.
        relay: Url,
        /// How long it was given.
        timeout: Duration,
    },
    /// The relay ended the query (`CLOSED`), for instance because it wants
    /// authentication.
    #[error("relay {relay} refused the query: {message}")]
    Refused {
        /// The relay.
        relay: Url,
        /// The relay's reason.
        message: String,
    },
    /// The relay did not store the event (`OK` false).
    #[error("relay {relay} rejected the event: {message}")]
    Rejected {
        /// The relay.
        relay: Url,
        /// The relay's reason.
        message: String,
    },
    /// A message could not be written.
    #[error("relay {relay}: {reason}")]
    Protocol {
        /// The relay.
        relay: Url,
        /// What went wrong.
        reason: String,
    },
    /// Every relay failed; each failure is listed.
    #[error("no relay answered: {}", join_errors(.0))]
    AllFailed(Vec<Error>),
    /// The signer did not sign the list.
    #[error(transparent)]
    Sign(#[from] SignError),
}

fn join_errors(errors: &[Error]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Fetches `author`'s latest server list from every relay at once, each
/// given `timeout` to connect and send what it has.
///
/// Events whose id or signature does not check out, or that are not the
/// author's kind-10063 events, are ignored with a warning; of the rest the
/// newest wins (ties go to the lowest id, as NIP-01 has relays do). Server
/// addresses that do not parse are skipped with a warning. A relay that
/// times out after sending events still counts with what it sent.
///
/// Returns `None` when the relays that answered hold no list.
///
/// # Errors
///
/// [`Error::NoRelays`], or [`Error::AllFailed`] when no relay answered.
/// One failing relay beside an answering one is only a warning.
pub async fn fetch_server_list(
    relays: &[Url],
    author: PublicKey,
    timeout: Duration,
) -> Result<Option<ServerList>, Error> {
    if relays.is_empty() {
        return Err(Error::NoRelays);
    }
    let filter = Filter::new().kind(SERVER_LIST_KIND).author(author).limit(1);
    let answers = join_all(relays.iter().map(|relay| query(relay, &filter, timeout))).await;

    let mut events = Vec::new();
    let mut failures = Vec::new();
    for (relay, answer) in relays.iter().zip(answers) {
        match answer {
            Ok(found) => events.extend(found.into_iter().map(|event| (relay, event))),
            Err(e) => failures.push(e),
        }
    }
    if failures.len() == relays.len() {
        return Err(Error::AllFailed(failures));
    }
    for failure in &failures {
        tracing::warn!(error = %failure, "relay skipped");
    }

    let newest = events
        .into_iter()
        .filter(|(relay, event)| is_genuine(relay, event, author))
        .map(|(_, event)| event)
        .min_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(newest.map(|event| ServerList::from_event(&event)))
}

/// Publishes `servers`, in this order, as the signer's server list on
/// every relay at once, each given `timeout` to connect and answer.
///
/// The relays are asked for the current list first, so that the new event
/// is dated after it even when clocks disagree or the last publication was
/// less than a second ago: relays keep only the newest list of a user.
///
/// # Errors
///
/// [`Error::NoRelays`], [`Error::EmptyList`], and the signer's failure.
/// What each relay answered is in [`Publication::relays`].
pub async fn publish_server_list(
    relays: &[Url],
    signer: &dyn Signer,
    servers: &[ServerUrl],
    timeout: Duration,
) -> Result<Publication, Error> {
    if relays.is_empty() {
        return Err(Error::NoRelays);
    }
    if servers.is_empty() {
        return Err(Error::EmptyList);
    }

    // A failed look-up leaves the relays to judge the new event alone; the
    // publication reports what each of them says.
    let now = Timestamp::now();
    let created_at = match fetch_server_list(relays, signer.public_key(), timeout).await {
        Ok(Some(current)) if current.created_at >= now => current.created_at + 1,
        Ok(_) => now,
        Err(e) => {
            tracing::debug!(error = %e, "no current server list to date the new one after");
            now
        }
    };

    let tags = servers.iter().map(|server| Tag::custom("server", [server.as_str()]));
    let template = EventBuilder::new(SERVER_LIST_KIND, "").tags(tags).custom_created_at(created_at);
    let event = signer.sign(template).await?;

    let answers = join_all(relays.iter().map(|relay| send_event(relay, &event, timeout))).await;
    let relays = relays
        .iter()
        .zip(answers)
        .map(|(relay, result)| RelayAnswer { relay: relay.clone(), result })
        .collect();
    Ok(Publication { event_id: event.id, created_at: event.created_at, relays })
}

impl ServerList {
    /// The servers named by an event's `server` tags, in order. The event
    /// is not checked here.
    fn from_event(event: &Event) -> Self {
        let mut servers: Vec<ServerUrl> = Vec::new();
        for tag in event.tags.iter() {
            let [name, value, ..] = tag.as_slice() else { continue };
            if name != "server" {
                continue;
            }
            match ServerUrl::parse(value) {
                Ok(server) if !servers.contains(&server) => servers.push(server),
                Ok(_) => {}
                Err(e) => tracing::warn!(event = %event.id, error = %e, "skipping a listed server"),
            }
        }
        Self { servers, created_at: event.created_at, event_id: event.id }
    }
}

/// The event is the author's server list and its id and signature check
/// out. Relays are expected to send only such events; one that does not is
/// worth a warning.
fn is_genuine(relay: &Url, event: &Event, author: PublicKey) -> bool {
    let problem = if event.pubkey != author {
        Some("another author's event")
    } else if event.kind != SERVER_LIST_KIND {
        Some("an event of another kind")
    } else if !event.verify_id() {
        Some("an event whose id does not match its content")
    } else if !event.verify_signature() {
        Some("an event with an invalid signature")
    } else {
        None
    };
    if let Some(problem) = problem {
        tracing::warn!(relay = %relay, event = %event.id, problem, "ignoring an event from a relay");
    }
    problem.is_none()
}

/// Asks one relay for the events matching `filter`, up to its end of
/// stored events.
async fn query(relay: &Url, filter: &Filter, timeout: Duration) -> Result<Vec<Event>, Error> {
    check_relay_url(relay)?;
    let mut found = Vec::new();
    match tokio::time::timeout(timeout, query_into(relay, filter, &mut found)).await {
        Ok(result) => result.map(|()| found),
        Err(_) if !found.is_empty() => {
            tracing::debug!(relay = %relay, "no end of stored events in time; using what arrived");
            Ok(found)
        }
        Err(_) => Err(Error::Timeout { relay: relay.clone(), timeout }),
    }
}

async fn query_into(relay: &Url, filter: &Filter, found: &mut Vec<Event>) -> Result<(), Error> {
    let mut connection = Connection::open(relay).await?;
    let id = SubscriptionId::new("server-list");
    let request = ClientMessage::Req {
        subscription_id: Cow::Borrowed(&id),
        filters: vec![Cow::Borrowed(filter)],
    };
    connection.send(&request).await?;

    loop {
        match connection.recv().await? {
            RelayMessage::Event { subscription_id, event } if *subscription_id == id => {
                found.push(event.into_owned());
            }
            RelayMessage::EndOfStoredEvents(subscription_id) if *subscription_id == id => break,
            RelayMessage::Closed { subscription_id, message } if *subscription_id == id => {
                return Err(Error::Refused { relay: relay.clone(), message: message.into_owned() });
            }
            RelayMessage::Notice(message) => {
                tracing::debug!(relay = %relay, %message, "notice");
            }
            _ => {}
        }
    }

    // Politeness only: the answer is complete.
    let _ = connection.send(&ClientMessage::Close(Cow::Borrowed(&id))).await;
    connection.close().await;
    Ok(())
}

/// Sends one event to one relay and waits for its `OK`.
async fn send_event(relay: &Url, event: &Event, timeout: Duration) -> Result<(), Error> {
    check_relay_url(relay)?;
    tokio::time::timeout(timeout, send_event_inner(relay, event))
        .await
        .unwrap_or_else(|_| Err(Error::Timeout { relay: relay.clone(), timeout }))
}

async fn send_event_inner(relay: &Url, event: &Event) -> Result<(), Error> {
    let mut connection = Connection::open(relay).await?;
    connection.send(&ClientMessage::Event(Cow::Borrowed(event))).await?;

    let (status, message) = loop {
        match connection.recv().await? {
            RelayMessage::Ok { event_id, status, message } if event_id == event.id => {
                break (status, message.into_owned());
            }
            RelayMessage::Notice(message) => {
                tracing::debug!(relay = %relay, %message, "notice");
            }
            _ => {}
        }
    };
    connection.close().await;
    if status { Ok(()) } else { Err(Error::Rejected { relay: relay.clone(), message }) }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::{FinalizeEvent as _, Keys};

    use super::*;

    fn list_event(keys: &Keys, servers: &[&str]) -> Event {
        let tags = servers.iter().map(|s| Tag::custom("server", [*s]));
        EventBuilder::new(SERVER_LIST_KIND, "").tags(tags).finalize(keys).unwrap()
    }

    #[test]
    fn servers_keep_their_order_and_skip_bad_and_repeated_entries() {
        let keys = Keys::generate();
        let event = list_event(
            &keys,
            &["https://b.example/", "ftp://nope", "http://a.example:8080", "https://B.example"],
        );
        let list = ServerList::from_event(&event);
        let servers: Vec<&str> = list.servers.iter().map(ServerUrl::as_str).collect();
        assert_eq!(servers, ["https://b.example", "http://a.example:8080"]);
        assert_eq!(list.event_id, event.id);
    }

    #[test]
    fn tampered_and_foreign_events_are_not_genuine() {
        let keys = Keys::generate();
        let relay = Url::parse("ws://127.0.0.1:1").unwrap();
        let event = list_event(&keys, &["https://a.example"]);
        assert!(is_genuine(&relay, &event, keys.public_key()));
        assert!(!is_genuine(&relay, &event, Keys::generate().public_key()));

        let mut tampered = event.clone();
        tampered.tags = list_event(&keys, &["https://evil.example"]).tags;
        assert!(!is_genuine(&relay, &tampered, keys.public_key()));
    }
}
