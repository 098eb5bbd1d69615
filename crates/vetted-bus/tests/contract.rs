//! `JetStreamStore` passes the same event store contract as the sled backend.
//!
//! One nats-server per test; every case gets a fresh log stream with its own subject prefix.
use std::sync::atomic::{AtomicU32, Ordering};

use vetted_bus::testing::NatsServer;
use vetted_bus::{JetStreamStore, JetStreamStoreConfig};
use vetted_store::contract;

static NEXT: AtomicU32 = AtomicU32::new(1);

async fn fresh(server: &NatsServer) -> JetStreamStore {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let config = JetStreamStoreConfig {
        stream: format!("CONTRACT_LOG_{n}"),
        subject_prefix: format!("contract{n}.log"),
        ..Default::default()
    };
    JetStreamStore::connect(&server.url(), config)
        .await
        .expect("store opens")
}

macro_rules! contract_case {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let server = NatsServer::start().expect("nats-server starts");
            contract::$case(fresh(&server).await).await;
        }
    )*};
}

contract_case!(
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
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_server() {
    let server = NatsServer::start().expect("nats-server starts");
    contract::run_all(|| fresh(&server)).await;
}
