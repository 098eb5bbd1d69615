//! Both embedded backends pass the event store contract, case by case.
use vetted_store::{contract, MemoryStore, SledStore};

fn sled() -> SledStore {
    SledStore::temporary().expect("sled store")
}

macro_rules! contract_cases {
    ($backend:ident, $fresh:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    contract::$case($fresh).await;
                }
            )*
        }
    };
}

macro_rules! every_case {
    ($backend:ident, $fresh:expr) => {
        contract_cases!(
            $backend,
            $fresh,
            [
                append_then_read_round_trips_every_envelope_field,
                expected_versions_guard_the_stream,
                an_empty_append_is_refused,
                read_stream_honours_from_version_and_max,
                read_all_is_in_global_order_across_streams,
                read_all_batch_holds_exactly_what_read_all_returns,
                read_stream_batch_holds_exactly_what_read_stream_returns,
                stream_version_and_head_follow_appends,
                racing_writers_on_one_stream_win_each_version_once,
                concurrent_appends_to_different_streams_get_contiguous_positions,
                subscribe_all_catches_up_then_follows_live_appends,
                subscribe_all_from_the_middle_starts_there,
                subscription_ends_when_the_store_closes,
                hash_chain_verifies_after_mixed_appends,
            ]
        );
    };
}

every_case!(memory, MemoryStore::new());
every_case!(sled_backend, sled());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_reads_batches_as_its_stored_json_and_memory_decoded() {
    use vetted_store::{EventBatch, EventStore, ExpectedVersion};
    let sled = sled();
    let memory = MemoryStore::new();
    for n in 0..3 {
        let event = vec![contract::step_passed(n)];
        sled.append("applicant-1", ExpectedVersion::Any, event.clone())
            .await
            .expect("append");
        memory
            .append("applicant-1", ExpectedVersion::Any, event)
            .await
            .expect("append");
    }
    match sled.read_all_batch(2, 10).await.expect("read") {
        EventBatch::Json(frames) => {
            assert_eq!(frames.len(), 2);
            // The very bytes the log holds.
            for (position, json) in &frames {
                assert_eq!(
                    sled.raw_event(position).expect("raw").as_deref(),
                    Some(json)
                );
            }
        }
        other => panic!("sled hands out its stored JSON, got {other:?}"),
    }
    assert!(matches!(
        memory.read_all_batch(2, 10).await.expect("read"),
        EventBatch::Decoded(events) if events.len() == 2
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_passes_on_memory() {
    contract::run_all(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_passes_on_sled() {
    contract::run_all(|| async { sled() }).await;
}
