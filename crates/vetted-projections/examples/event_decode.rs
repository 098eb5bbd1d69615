//! What reading an event costs before any projection sees it: generates `EVENTS` events of
//! realistic lifecycles, then times, on one thread, parsing their stored JSON envelopes and
//! decoding their payloads into domain events. Figures in docs/benchmarks.md.
//!
//! `cargo run --release -p vetted-projections --example event_decode [EVENTS]` (default 1,000,000).
//!
//! Each figure is the thread's CPU time (`/proc/thread-self/schedstat`) per event over `ROUNDS`
//! passes over all events: CPU time, unlike wall time, does not count the moments the thread
//! waits while the machine runs other work. (The kernel updates it every scheduler tick, 4 ms
//! here, so a figure needs passes of a second or more in all: keep `EVENTS` at 300,000 or more.)
use chrono::Utc;
use uuid::Uuid;
use vetted_domain::{AppKey, ApplicantEvent};
use vetted_projections::sample::{self, Rng};
use vetted_store::{EventStore, ExpectedVersion, MemoryStore, RecordedEvent};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Passes over all events per figure.
const ROUNDS: usize = 5;

/// An envelope with its payload kept as its raw JSON text, borrowed from the stored bytes:
/// what a rebuild reading the stored frames itself parses.
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

/// CPU time of the calling thread so far, in seconds.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// CPU microseconds per event of [`ROUNDS`] runs of `pass` over `events` events.
fn cpu_per_event(
    events: usize,
    mut pass: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = thread_cpu_seconds();
    for _ in 0..ROUNDS {
        pass()?;
    }
    Ok((thread_cpu_seconds() - started) * 1e6 / (ROUNDS * events.max(1)) as f64)
}

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
    let n = events.len();
    let stored: Vec<Vec<u8>> = events
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let bytes: usize = stored.iter().map(Vec::len).sum();
    let payload_bytes: usize = events.iter().map(|e| e.payload.to_string().len()).sum();

    let parse = cpu_per_event(n, || {
        for json in &stored {
            std::hint::black_box(serde_json::from_slice::<RecordedEvent>(json)?);
        }
        Ok(())
    })?;
    println!(
        "{n} envelopes ({} bytes each on average, payload {} bytes): parse into RecordedEvent {parse:.3} µs per event",
        bytes / n.max(1),
        payload_bytes / n.max(1),
    );
    // The same envelopes with the payload kept as its raw JSON text (what a store could hand
    // out instead of a parsed tree): how much of the parse is the payload's tree.
    let lean = cpu_per_event(n, || {
        for json in &stored {
            std::hint::black_box(serde_json::from_slice::<RawEnvelope<'_>>(json)?);
        }
        Ok(())
    })?;
    println!("the same envelopes, payload left as raw JSON text: parse {lean:.3} µs per event");

    let mut decoded = 0;
    let from_value = cpu_per_event(n, || {
        decoded = 0;
        for e in &events {
            let event = ApplicantEvent::from_payload(&e.event_type, e.schema_version, &e.payload);
            decoded += usize::from(std::hint::black_box(event).is_ok());
        }
        Ok(())
    })?;
    println!(
        "{decoded} payloads decoded from their Value (from_payload): {from_value:.3} µs per event"
    );

    // The payloads' stored text, as a lean envelope borrows it.
    let texts: Vec<(&str, u32, &str)> = events
        .iter()
        .zip(&stored)
        .map(|(e, json)| {
            let lean: RawEnvelope<'_> = serde_json::from_slice(json)?;
            Ok((e.event_type.as_str(), e.schema_version, lean.payload.get()))
        })
        .collect::<Result<_, serde_json::Error>>()?;
    let from_text = cpu_per_event(n, || {
        decoded = 0;
        for (event_type, version, text) in &texts {
            let event = ApplicantEvent::from_payload_json(event_type, *version, text);
            decoded += usize::from(std::hint::black_box(event).is_ok());
        }
        Ok(())
    })?;
    println!(
        "{decoded} payloads decoded from their JSON text (from_payload_json): {from_text:.3} µs per event"
    );

    // Whole reads, envelope and payload, as a reader does them one event after the other (the
    // payload is in cache when it is decoded, unlike in the two figures above).
    let today = cpu_per_event(n, || {
        decoded = 0;
        for json in &stored {
            let e: RecordedEvent = serde_json::from_slice(json)?;
            let event = ApplicantEvent::from_payload(&e.event_type, e.schema_version, &e.payload);
            decoded += usize::from(std::hint::black_box(event).is_ok());
        }
        Ok(())
    })?;
    println!(
        "{decoded} envelopes parsed into RecordedEvent, payload decoded from its Value: {today:.3} µs per event"
    );
    let lean_read = cpu_per_event(n, || {
        decoded = 0;
        for json in &stored {
            let e: RawEnvelope<'_> = serde_json::from_slice(json)?;
            let event =
                ApplicantEvent::from_payload_json(e.event_type, e.schema_version, e.payload.get());
            decoded += usize::from(std::hint::black_box(event).is_ok());
        }
        Ok(())
    })?;
    println!(
        "{decoded} envelopes parsed lean, payload decoded from its JSON text: {lean_read:.3} µs per event"
    );
    Ok(())
}
