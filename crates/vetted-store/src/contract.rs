//! The contract every [`EventStore`] backend must pass (feature `contract`).
//!
//! Each case takes a fresh, empty store and panics with a message naming the broken rule.
//! Run them all with [`run_all`], or one by one as separate tests. The concurrent cases need
//! a multi-threaded tokio runtime (`#[tokio::test(flavor = "multi_thread")]`).
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::{
    verify, Actor, ActorKind, EventBatch, EventFeed, EventStore, ExpectedVersion, NewEvent,
    RecordedEvent, StoreError,
};

/// How long a case waits for something that should happen promptly before failing.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs every case, each on a store from `fresh_store`.
pub async fn run_all<S, F, Fut>(fresh_store: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    append_then_read_round_trips_every_envelope_field(fresh_store().await).await;
    expected_versions_guard_the_stream(fresh_store().await).await;
    an_empty_append_is_refused(fresh_store().await).await;
    read_stream_honours_from_version_and_max(fresh_store().await).await;
    read_all_is_in_global_order_across_streams(fresh_store().await).await;
    read_all_batch_holds_exactly_what_read_all_returns(fresh_store().await).await;
    read_stream_batch_holds_exactly_what_read_stream_returns(fresh_store().await).await;
    stream_version_and_head_follow_appends(fresh_store().await).await;
    racing_writers_on_one_stream_win_each_version_once(fresh_store().await).await;
    concurrent_appends_to_different_streams_get_contiguous_positions(fresh_store().await).await;
    subscribe_all_catches_up_then_follows_live_appends(fresh_store().await).await;
    subscribe_all_from_the_middle_starts_there(fresh_store().await).await;
    subscription_ends_when_the_store_closes(fresh_store().await).await;
    hash_chain_verifies_after_mixed_appends(fresh_store().await).await;
}

/// A step result event for `applicant` numbered `n`, with an actor that has an environment.
pub fn step_passed(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "StepPassed".into(),
        schema_version: 1,
        tenant: "app-contract".into(),
        actor: Actor {
            kind: ActorKind::Api,
            id: Some("key-1".into()),
            ip: Some("127.0.0.1".into()),
            user_agent: Some("contract/1".into()),
            os: None,
            browser: None,
        },
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        payload: serde_json::json!({ "step": "document_check", "n": n, "data": { "country": "UTO" } }),
    }
}

fn batch(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count).map(step_passed).collect()
}

async fn assert_chain_intact<S: EventStore>(store: &S) {
    let report = verify(store).await.expect("verify reads the log");
    assert!(
        report.is_intact(),
        "hash chain broken: {:?}",
        report.first_mismatch
    );
}

/// An appended event reads back with the store's fields filled and the caller's kept.
pub async fn append_then_read_round_trips_every_envelope_field<S: EventStore>(store: S) {
    let sent = batch(0, 2);
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let result = store
        .append("applicant-1", ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");
    assert_eq!(result.first_position, 1, "global positions start at 1");
    assert_eq!(result.last_position, 2);
    assert_eq!(result.stream_version, 1, "stream versions start at 0");

    let read = store
        .read_stream("applicant-1", 0, 10)
        .await
        .expect("read_stream");
    assert_eq!(read.len(), 2);
    for (i, (event, new)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(event.global_position, i as u64 + 1);
        assert_eq!(event.stream_id, "applicant-1");
        assert_eq!(event.stream_version, i as u64);
        assert_eq!(event.event_id, new.event_id);
        assert_eq!(event.event_type, new.event_type);
        assert_eq!(event.schema_version, new.schema_version);
        assert_eq!(event.tenant, new.tenant);
        assert_eq!(event.actor, new.actor);
        assert_eq!(event.correlation_id, new.correlation_id);
        assert_eq!(event.causation_id, new.causation_id);
        assert_eq!(event.payload, new.payload);
        assert!(
            event.recorded_at >= before,
            "recorded_at is the append time"
        );
        assert_eq!(
            event.recorded_at,
            crate::chain::truncate_to_micros(event.recorded_at),
            "microsecond precision"
        );
        assert_eq!(
            event.hash,
            crate::chain::compute_hash(&event.prev_hash, event),
            "hash seals the event"
        );
    }
    assert_eq!(
        read[0].prev_hash,
        crate::chain::GENESIS,
        "version 0 chains from genesis"
    );
    assert_eq!(
        read[1].prev_hash, read[0].hash,
        "each event chains from the previous one"
    );
    assert_eq!(
        store.read_all(1, 10).await.expect("read_all"),
        read,
        "both read paths agree"
    );
}

/// NoStream, Exact and Any admit exactly the appends they promise; a refusal carries the actual version.
pub async fn expected_versions_guard_the_stream<S: EventStore>(store: S) {
    let conflict = |r: Result<_, StoreError>| match r {
        Err(StoreError::WrongExpectedVersion { actual, .. }) => actual,
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    };
    let missing = store
        .append("applicant-2", ExpectedVersion::Exact(0), batch(0, 1))
        .await;
    assert_eq!(
        conflict(missing),
        None,
        "Exact on a missing stream reports it does not exist"
    );

    store
        .append("applicant-2", ExpectedVersion::NoStream, batch(0, 1))
        .await
        .expect("NoStream creates");
    let again = store
        .append("applicant-2", ExpectedVersion::NoStream, batch(1, 1))
        .await;
    assert_eq!(
        conflict(again),
        Some(0),
        "NoStream on an existing stream is refused"
    );

    let ok = store
        .append("applicant-2", ExpectedVersion::Exact(0), batch(1, 2))
        .await
        .expect("Exact(current)");
    assert_eq!(ok.stream_version, 2);
    let stale = store
        .append("applicant-2", ExpectedVersion::Exact(0), batch(3, 1))
        .await;
    match stale {
        Err(StoreError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, "applicant-2");
            assert_eq!(expected, ExpectedVersion::Exact(0));
            assert_eq!(actual, Some(2));
        }
        other => panic!("a stale Exact must be refused, got {other:?}"),
    }
    let ahead = store
        .append("applicant-2", ExpectedVersion::Exact(7), batch(3, 1))
        .await;
    assert_eq!(
        conflict(ahead),
        Some(2),
        "Exact ahead of the stream is refused too"
    );

    let any = store
        .append("applicant-2", ExpectedVersion::Any, batch(3, 1))
        .await
        .expect("Any appends");
    assert_eq!(any.stream_version, 3);
    let fresh = store
        .append("applicant-3", ExpectedVersion::Any, batch(0, 1))
        .await
        .expect("Any creates");
    assert_eq!(fresh.stream_version, 0);
    assert_eq!(
        store
            .read_stream("applicant-2", 0, 100)
            .await
            .expect("read")
            .len(),
        4,
        "refused appends wrote nothing"
    );
    assert_eq!(
        store.head().await.expect("head"),
        5,
        "refused appends took no positions"
    );
}

/// An append with no events is refused and changes nothing.
pub async fn an_empty_append_is_refused<S: EventStore>(store: S) {
    let result = store
        .append("applicant-4", ExpectedVersion::Any, Vec::new())
        .await;
    assert!(
        matches!(result, Err(StoreError::EmptyAppend)),
        "got {result:?}"
    );
    assert_eq!(
        store.stream_version("applicant-4").await.expect("version"),
        None
    );
    assert_eq!(store.head().await.expect("head"), 0);
}

/// `read_stream(from_version, max)` returns that window in version order; unknown streams are empty.
pub async fn read_stream_honours_from_version_and_max<S: EventStore>(store: S) {
    store
        .append("applicant-5", ExpectedVersion::NoStream, batch(0, 10))
        .await
        .expect("append");
    // A stream whose id extends this one must not leak into it.
    store
        .append("applicant-5x", ExpectedVersion::NoStream, batch(0, 3))
        .await
        .expect("append");
    let versions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.stream_version).collect::<Vec<_>>();
    assert_eq!(
        versions(
            store
                .read_stream("applicant-5", 0, 100)
                .await
                .expect("read")
        ),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(store.read_stream("applicant-5", 3, 4).await.expect("read")),
        vec![3, 4, 5, 6]
    );
    assert_eq!(
        versions(
            store
                .read_stream("applicant-5", 8, 100)
                .await
                .expect("read")
        ),
        vec![8, 9]
    );
    assert!(store
        .read_stream("applicant-5", 10, 100)
        .await
        .expect("read")
        .is_empty());
    assert!(store
        .read_stream("applicant-5", 0, 0)
        .await
        .expect("read")
        .is_empty());
    assert!(store
        .read_stream("applicant-missing", 0, 10)
        .await
        .expect("read")
        .is_empty());
}

/// `read_all(from, max)` walks all streams in global order from that position.
pub async fn read_all_is_in_global_order_across_streams<S: EventStore>(store: S) {
    for round in 0..4 {
        for stream in ["applicant-a", "applicant-b", "applicant-c"] {
            store
                .append(stream, ExpectedVersion::Any, batch(round, 1))
                .await
                .expect("append");
        }
    }
    let all = store.read_all(1, 100).await.expect("read_all");
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(all[4].stream_id, "applicant-b");
    assert_eq!(all[4].stream_version, 1);
    let window = store.read_all(5, 3).await.expect("read_all");
    assert_eq!(window, all[4..7].to_vec());
    assert_eq!(
        store.read_all(0, 2).await.expect("read_all"),
        all[..2].to_vec(),
        "0 reads from the start"
    );
    assert!(store.read_all(13, 10).await.expect("read_all").is_empty());
}

/// `read_all_batch(from, max)` holds exactly the events `read_all(from, max)` returns, as stored
/// JSON (each frame a `RecordedEvent` whose position is the one beside it) or decoded; past the
/// head it is empty.
pub async fn read_all_batch_holds_exactly_what_read_all_returns<S: EventStore>(store: S) {
    append_rounds(&store, 6, ["applicant-a", "applicant-b", "applicant-c"]).await;
    let head = store.head().await.expect("head");
    assert_eq!(head, 36);
    let reads = [
        (0, 1000),
        (1, 1000),
        (1, 1),
        (1, 0),
        (2, 5),
        (7, 3),
        (13, 24),
        (30, usize::MAX),
        (head, 10),
        (head, 0),
        (head + 1, 10),
        (head + 1000, 10),
        (u64::MAX, 10),
    ];
    for (from, max) in reads {
        let expected = store.read_all(from, max).await.expect("read_all");
        let read = store
            .read_all_batch(from, max)
            .await
            .expect("read_all_batch");
        assert_eq!(read.len(), expected.len(), "from {from}, max {max}");
        assert_eq!(read.is_empty(), expected.is_empty());
        assert_eq!(
            read.last_position(),
            expected.last().map(|e| e.global_position),
            "from {from}, max {max}"
        );
        let events = events_of(read);
        assert_eq!(events, expected, "from {from}, max {max}");
        if from > head {
            assert!(events.is_empty(), "nothing past the head");
        }
    }
}

/// `read_stream_batch(stream, from, max)` holds exactly the events `read_stream(stream, from,
/// max)` returns, as stored JSON (each frame a `RecordedEvent` whose position is the one beside
/// it) or decoded; an unknown stream, or a version past its last, reads as empty.
pub async fn read_stream_batch_holds_exactly_what_read_stream_returns<S: EventStore>(store: S) {
    // A stream whose id extends another's must not leak into it.
    append_rounds(&store, 5, ["applicant-7", "applicant-7x", "applicant-8"]).await;
    let reads = [
        ("applicant-7", 0, 1000),
        ("applicant-7", 0, 1),
        ("applicant-7", 0, 0),
        ("applicant-7", 3, 4),
        ("applicant-7", 9, usize::MAX),
        ("applicant-7", 10, 10),
        ("applicant-7", 1000, 10),
        ("applicant-7x", 2, 5),
        ("applicant-8", 0, 1000),
        ("applicant-9", 0, 1000),
    ];
    for (stream, from, max) in reads {
        let expected = store
            .read_stream(stream, from, max)
            .await
            .expect("read_stream");
        let read = store
            .read_stream_batch(stream, from, max)
            .await
            .expect("read_stream_batch");
        assert_eq!(
            read.len(),
            expected.len(),
            "{stream} from {from}, max {max}"
        );
        assert_eq!(
            read.last_position(),
            expected.last().map(|e| e.global_position),
            "{stream} from {from}, max {max}"
        );
        let events = events_of(read);
        assert_eq!(events, expected, "{stream} from {from}, max {max}");
    }
}

/// Appends to each of `streams` in turn, `rounds` times, one to three events an append (so
/// groups of one append are read across).
async fn append_rounds<S: EventStore>(store: &S, rounds: u64, streams: [&str; 3]) {
    for round in 0..rounds {
        for stream in streams {
            store
                .append(
                    stream,
                    ExpectedVersion::Any,
                    batch(round * 3, 1 + round % 3),
                )
                .await
                .expect("append");
        }
    }
}

/// The events of a batch: its frames decoded (each must be a `RecordedEvent` whose position is
/// the one beside it), or its decoded events.
fn events_of(batch: EventBatch) -> Vec<RecordedEvent> {
    match batch {
        EventBatch::Json(frames) => frames
            .iter()
            .map(|(position, json)| {
                let event: RecordedEvent = serde_json::from_slice(json).unwrap_or_else(|e| {
                    panic!("the frame at {position} is not a RecordedEvent: {e}")
                });
                assert_eq!(
                    event.global_position, position,
                    "a frame holds the position given beside it"
                );
                event
            })
            .collect(),
        EventBatch::Decoded(events) => events,
    }
}

/// `stream_version` and `head` report what the last acknowledged append produced.
pub async fn stream_version_and_head_follow_appends<S: EventStore>(store: S) {
    assert_eq!(store.head().await.expect("head"), 0, "an empty log is at 0");
    assert_eq!(
        store.stream_version("applicant-6").await.expect("version"),
        None
    );
    let r = store
        .append("applicant-6", ExpectedVersion::NoStream, batch(0, 3))
        .await
        .expect("append");
    assert_eq!(
        store.stream_version("applicant-6").await.expect("version"),
        Some(2)
    );
    assert_eq!(store.head().await.expect("head"), r.last_position);
    let r = store
        .append("applicant-7", ExpectedVersion::NoStream, batch(0, 1))
        .await
        .expect("append");
    assert_eq!(store.head().await.expect("head"), 4);
    assert_eq!(r.first_position, 4);
    assert_eq!(
        store.stream_version("applicant-6").await.expect("version"),
        Some(2)
    );
    assert_eq!(
        store.stream_version("applicant-7").await.expect("version"),
        Some(0)
    );
}

/// 64 writers racing with `Exact(v)` on one stream: exactly one wins each version, the rest
/// learn the winner's version, and the stream ends contiguous.
pub async fn racing_writers_on_one_stream_win_each_version_once<S: EventStore>(store: S) {
    const WRITERS: usize = 64;
    const ROUNDS: u64 = 8;
    let store = Arc::new(store);
    for round in 0..ROUNDS {
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(round - 1)
        };
        let start = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::with_capacity(WRITERS);
        for w in 0..WRITERS {
            let (store, start) = (Arc::clone(&store), Arc::clone(&start));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store
                    .append("applicant-race", expected, vec![step_passed(w as u64)])
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("writer task") {
                Ok(r) => {
                    wins += 1;
                    assert_eq!(r.stream_version, round);
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(actual, Some(round), "a loser learns the winner's version");
                }
                Err(e) => panic!("unexpected error while racing: {e}"),
            }
        }
        assert_eq!(
            wins, 1,
            "round {round}: exactly one writer wins version {round}"
        );
    }
    // Free-for-all: everyone retries until the stream reaches 200 events.
    let mut tasks = Vec::with_capacity(WRITERS);
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            loop {
                let current = store
                    .stream_version("applicant-race")
                    .await
                    .expect("version")
                    .unwrap_or(0);
                if current >= 199 {
                    return won;
                }
                match store
                    .append(
                        "applicant-race",
                        ExpectedVersion::Exact(current),
                        vec![step_passed(w as u64)],
                    )
                    .await
                {
                    Ok(r) => won.push(r.stream_version),
                    Err(StoreError::WrongExpectedVersion { .. }) => {}
                    Err(e) => panic!("unexpected error while racing: {e}"),
                }
            }
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(task.await.expect("writer task"));
    }
    won.sort_unstable();
    assert_eq!(
        won,
        (ROUNDS..200).collect::<Vec<_>>(),
        "every version won exactly once"
    );
    let stream = store
        .read_stream("applicant-race", 0, 1000)
        .await
        .expect("read");
    assert_eq!(
        stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    assert_chain_intact(store.as_ref()).await;
}

/// Appends to different streams from many tasks all land, with unique contiguous positions.
pub async fn concurrent_appends_to_different_streams_get_contiguous_positions<S: EventStore>(
    store: S,
) {
    const WRITERS: u64 = 64;
    const APPENDS: u64 = 10;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = format!("applicant-{w}");
            let mut results = Vec::new();
            for n in 0..APPENDS {
                // Every other append carries two events, so multi-event appends interleave too.
                let events = batch(n, 1 + n % 2);
                results.push(
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .expect("append"),
                );
            }
            results
        }));
    }
    let mut claimed = HashSet::new();
    for task in tasks {
        for r in task.await.expect("writer task") {
            for p in r.first_position..=r.last_position {
                assert!(claimed.insert(p), "position {p} handed out twice");
            }
        }
    }
    let total = WRITERS * (APPENDS + APPENDS / 2);
    assert_eq!(claimed.len() as u64, total);
    let all = store.read_all(1, 10_000).await.expect("read_all");
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for w in 0..WRITERS {
        let stream = store
            .read_stream(&format!("applicant-{w}"), 0, 1000)
            .await
            .expect("read");
        let versions: Vec<u64> = stream.iter().map(|e| e.stream_version).collect();
        assert_eq!(
            versions,
            (0..APPENDS + APPENDS / 2).collect::<Vec<_>>(),
            "stream {w} is contiguous"
        );
        assert!(stream
            .windows(2)
            .all(|p| p[0].global_position < p[1].global_position));
    }
    assert_eq!(store.head().await.expect("head"), total);
    assert_chain_intact(store.as_ref()).await;
}

/// Takes `count` events from `feed`, failing if they do not arrive within the deadline.
async fn take(feed: &mut EventFeed, count: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match tokio::time::timeout(DEADLINE, feed.next()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(Some(Err(e))) => panic!("subscription failed after {} events: {e}", out.len()),
            Ok(None) => panic!("subscription ended after {} of {count} events", out.len()),
            Err(_) => panic!("subscription stalled after {} of {count} events", out.len()),
        }
    }
    out
}

/// A subscription from 1 delivers the stored events, then live ones while writers append,
/// with no gap and no duplicate.
pub async fn subscribe_all_catches_up_then_follows_live_appends<S: EventStore>(store: S) {
    const STORED: u64 = 700; // more than a page, so catch-up pages
    const LIVE_WRITERS: u64 = 16;
    const LIVE_EACH: u64 = 25;
    let store = Arc::new(store);
    for n in 0..STORED / 7 {
        store
            .append(
                &format!("applicant-{}", n % 5),
                ExpectedVersion::Any,
                batch(n, 7),
            )
            .await
            .expect("append");
    }
    let mut feed = store.subscribe_all(1);
    let mut writers = Vec::new();
    for w in 0..LIVE_WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            for n in 0..LIVE_EACH {
                store
                    .append(
                        &format!("applicant-live-{w}"),
                        ExpectedVersion::Any,
                        batch(n, 1),
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    let total = STORED + LIVE_WRITERS * LIVE_EACH;
    let seen = take(&mut feed, total as usize).await;
    for w in writers {
        w.await.expect("writer task");
    }
    assert_eq!(
        seen.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(
        seen,
        store.read_all(1, 10_000).await.expect("read_all"),
        "the feed matches the log"
    );

    // Live after catch-up: the next append arrives on the same feed.
    store
        .append("applicant-late", ExpectedVersion::NoStream, batch(0, 1))
        .await
        .expect("append");
    let late = take(&mut feed, 1).await;
    assert_eq!(late[0].global_position, total + 1);
    assert_eq!(late[0].stream_id, "applicant-late");
}

/// A subscription from position n starts exactly at n, then follows live appends.
pub async fn subscribe_all_from_the_middle_starts_there<S: EventStore>(store: S) {
    store
        .append("applicant-m", ExpectedVersion::NoStream, batch(0, 50))
        .await
        .expect("append");
    let mut feed = store.subscribe_all(26);
    let caught_up = take(&mut feed, 25).await;
    assert_eq!(caught_up.first().map(|e| e.global_position), Some(26));
    store
        .append("applicant-n", ExpectedVersion::NoStream, batch(0, 10))
        .await
        .expect("append");
    let live = take(&mut feed, 10).await;
    let positions: Vec<u64> = caught_up
        .iter()
        .chain(&live)
        .map(|e| e.global_position)
        .collect();
    assert_eq!(positions, (26..=60).collect::<Vec<_>>());

    let mut beyond = store.subscribe_all(61);
    store
        .append("applicant-n", ExpectedVersion::Exact(9), batch(10, 1))
        .await
        .expect("append");
    assert_eq!(
        take(&mut beyond, 1).await[0].global_position,
        61,
        "a feed from the future waits for it"
    );
}

/// Dropping the store ends its subscriptions after the events already made durable.
pub async fn subscription_ends_when_the_store_closes<S: EventStore>(store: S) {
    store
        .append("applicant-c", ExpectedVersion::NoStream, batch(0, 3))
        .await
        .expect("append");
    let mut feed = store.subscribe_all(1);
    drop(store);
    let seen = take(&mut feed, 3).await;
    assert_eq!(
        seen.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    match tokio::time::timeout(DEADLINE, feed.next()).await {
        Ok(None) => {}
        Ok(Some(other)) => panic!("a closed store's feed must end, got {other:?}"),
        Err(_) => panic!("a closed store's feed must end, it hung"),
    }
}

/// After refusals, multi-event appends and many streams, every chain still verifies.
pub async fn hash_chain_verifies_after_mixed_appends<S: EventStore>(store: S) {
    for n in 0..30 {
        let stream = format!("applicant-{}", n % 4);
        let _ = store
            .append(&stream, ExpectedVersion::NoStream, batch(n, 1 + n % 3))
            .await;
        store
            .append(&stream, ExpectedVersion::Any, batch(n, 1))
            .await
            .expect("append");
    }
    let report = verify(&store).await.expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_mismatch);
    assert_eq!(report.streams, 4);
    assert_eq!(report.events, store.head().await.expect("head"));
    let one = crate::verify_stream(&store, "applicant-1")
        .await
        .expect("verify_stream");
    assert!(one.is_intact());
    assert_eq!(
        one.events,
        store
            .read_stream("applicant-1", 0, 1000)
            .await
            .expect("read")
            .len() as u64
    );
}
