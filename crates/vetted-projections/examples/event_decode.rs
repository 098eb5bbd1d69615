//! What reading an event costs before any projection sees it: generates `EVENTS` events of
//! realistic lifecycles, then times, on one thread, parsing their stored JSON envelopes and
//! decoding their payloads into domain events. Figures in docs/benchmarks.md.
//!
//! `cargo run --release -p vetted-projections --example event_decode [EVENTS]` (default 1,000,000).
use std::time::Instant;

use chrono::Utc;
use uuid::Uuid;
use vetted_domain::AppKey;
use vetted_projections::sample::{self, Rng};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wanted: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let store = MemoryStore::new();
    let mut rng = Rng::new(2026);
    let flow = sample::kyc_basic();
    let app = AppKey(Uuid::from_u128(1));
    let mut generated = 0;
    while generated < wanted {
        for append in sample::lifecycle(&mut rng, app, &flow, Utc::now(), 0) {
            generated += append.events.len();
            store
                .append(&append.stream, ExpectedVersion::Any, append.events)
                .await?;
        }
    }
    let events = store.read_all(1, usize::MAX).await?;
    let stored: Vec<Vec<u8>> = events
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let bytes: usize = stored.iter().map(Vec::len).sum();
    let per_event = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / events.len() as f64;

    let started = Instant::now();
    for json in &stored {
        std::hint::black_box(serde_json::from_slice::<RecordedEvent>(json)?);
    }
    println!(
        "{} envelopes ({} bytes each on average): parse {:.2} µs per event",
        events.len(),
        bytes / events.len().max(1),
        per_event(started)
    );
    // The same envelopes with the payload kept as its raw JSON text (what a store could hand
    // out instead of a parsed tree): how much of the parse is the payload's tree.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct RawEnvelope<'a> {
        global_position: u64,
        stream_id: &'a str,
        stream_version: u64,
        event_id: Uuid,
        event_type: &'a str,
        schema_version: u32,
        recorded_at: chrono::DateTime<Utc>,
        tenant: &'a str,
        actor: vetted_store::Actor,
        correlation_id: Uuid,
        #[serde(default)]
        causation_id: Option<Uuid>,
        #[serde(borrow)]
        payload: &'a serde_json::value::RawValue,
        prev_hash: &'a str,
        hash: &'a str,
    }
    let started = Instant::now();
    for json in &stored {
        std::hint::black_box(serde_json::from_slice::<RawEnvelope<'_>>(json)?);
    }
    println!(
        "the same envelopes, payload left as raw JSON text: parse {:.2} µs per event",
        per_event(started)
    );
    let started = Instant::now();
    let mut decoded = 0;
    for event in &events {
        if vetted_projections::applicant_view::decode(event).is_ok() {
            decoded += 1;
        }
    }
    println!(
        "{decoded} payloads decoded into domain events: {:.2} µs per event",
        per_event(started)
    );
    Ok(())
}
