//! Vetted's NATS side: the fan-out publisher that copies every applicant event onto the
//! `VETTED_EVENTS` JetStream stream, the subscriber other services use to consume it, and
//! [`JetStreamStore`], an [`vetted_store::EventStore`] backend that keeps the log itself in
//! JetStream (one subject per applicant stream, R3 in a cluster).
//!
//! Wire format (subjects and headers) is described in `docs/nats.md`.
#![forbid(unsafe_code)]

mod error;
pub mod publisher;
mod store;
pub mod subjects;
pub mod subscriber;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use error::BusError;
pub use publisher::{NatsPublisher, PublisherConfig};
pub use store::{JetStreamStore, JetStreamStoreConfig};
pub use subscriber::{print_events, EventSubscriber, SubscriberConfig};

use std::time::Duration;

/// Connects to NATS given one URL or several comma-separated ones (a cluster's seed list).
///
/// The client reconnects forever in the background, so a node restart or an outage is
/// survived by every user of the returned client; requests fail fast while disconnected.
pub async fn connect(urls: &str) -> Result<async_nats::Client, BusError> {
    let servers: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    if servers.is_empty() {
        return Err(BusError::Config(format!(
            "no NATS URL in {urls:?}; pass e.g. nats://127.0.0.1:4222"
        )));
    }
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(servers.as_slice())
        .await
        .map_err(|e| {
            BusError::Unavailable(format!(
                "cannot connect to NATS at {}: {e}",
                redacted_urls(urls)
            ))
        })
}

/// NATS URLs (comma-separated) as they may be logged: `user:password@` or `token@` removed.
pub fn redacted_urls(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            if scheme.is_empty() {
                rest.to_string()
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redacted_urls;

    #[test]
    fn credentials_are_left_out_of_logged_urls() {
        assert_eq!(
            redacted_urls("nats://alice:s3cret@n1:4222, nats://tok3n@n2:4222,n3:4222"),
            "nats://n1:4222,nats://n2:4222,n3:4222"
        );
        assert_eq!(
            redacted_urls("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }
}
