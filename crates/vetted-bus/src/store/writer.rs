//! The store's single writer task: group commit onto JetStream.
//!
//! Appends queue up while a group is being written; the next group takes all of them (up to a
//! bound), reads the last message of each subject involved (concurrently), checks expected
//! versions, plans every event (version, hash, predicted sequence) and publishes them
//! pipelined. Each message carries two expectations so the server stores it only exactly
//! where it was planned:
//! - `Nats-Expected-Last-Sequence`: the stream ends where the plan says (the subjects' tails
//!   were read after that sequence was known, so they are current when this holds);
//! - `Nats-Expected-Last-Msg-Id` (all but the first): the previous message is the one planned
//!   before it, so nothing can be stored after a message that was not.
//!
//! (`Nats-Expected-Last-Subject-Sequence` is not used: a 2.9 cluster leader checks it only
//! against applied messages, so pipelined messages of one subject would be refused and two
//! in-flight writers could both pass it.)
//!
//! If anything fails mid-group, the unfinished appends are completed one by one in order
//! (re-publishing the planned messages, which dedup if they were in fact stored), and appends
//! whose plan went stale (another process wrote in between) are planned again from scratch.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_nats::jetstream::{context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
use vetted_store::{chain, AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

use super::{log_headers, record, Inner, PublishFailure, Tail};

/// Most appends written as one group.
const MAX_GROUP: usize = 512;
/// Most events written as one group.
const MAX_GROUP_EVENTS: usize = 2048;

/// One caller's append, answered through `reply`.
pub(crate) struct AppendRequest {
    pub(crate) stream_id: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// One planned message.
struct Planned {
    event: RecordedEvent,
    body: Bytes,
    /// Index in the append and the append's size, for the batch headers.
    batch: (usize, usize),
}

/// An append of the group and what became of it.
struct Entry {
    request: AppendRequest,
    subject: String,
    /// `None`: refused before publishing (the answer is already sent).
    plan: Option<Vec<Planned>>,
    /// Acknowledged sequence of each planned message.
    stored: Vec<Option<u64>>,
}

/// Runs until every store handle is gone.
pub(crate) async fn run(inner: Arc<Inner>, mut queue: mpsc::Receiver<AppendRequest>) {
    let mut last_sequence = None;
    while let Some(first) = queue.recv().await {
        let mut events = first.events.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP && events < MAX_GROUP_EVENTS {
            match queue.try_recv() {
                Ok(request) => {
                    events += request.events.len();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        last_sequence = write_group(&inner, group, last_sequence).await;
    }
}

/// Writes one group; returns the stream's last sequence if it is known for sure afterwards.
async fn write_group(
    inner: &Inner,
    group: Vec<AppendRequest>,
    known_last: Option<u64>,
) -> Option<u64> {
    let last = match known_last {
        Some(l) => l,
        None => match inner.last_sequence().await {
            Ok(l) => l,
            Err(e) => {
                fail_all(group, &e);
                return None;
            }
        },
    };
    let subjects: Vec<String> = {
        let mut seen = HashSet::new();
        group
            .iter()
            .map(|r| inner.subject(&r.stream_id))
            .filter(|s| seen.insert(s.clone()))
            .collect()
    };
    let tails = join_all(subjects.iter().map(|s| inner.tail(s))).await;
    let mut heads: HashMap<String, Option<Tail>> = HashMap::with_capacity(subjects.len());
    for (subject, tail) in subjects.into_iter().zip(tails) {
        match tail {
            Ok(t) => {
                heads.insert(subject, t);
            }
            Err(e) => {
                fail_all(group, &e);
                return None;
            }
        }
    }
    // Where each subject's chain stood before the group, for completing appends one by one.
    let before: HashMap<String, u64> = heads
        .iter()
        .map(|(s, t)| (s.clone(), t.as_ref().map_or(0, |t| t.sequence)))
        .collect();

    let recorded_at = chain::truncate_to_micros(chrono::Utc::now());
    let mut next_sequence = last + 1;
    let mut entries = Vec::with_capacity(group.len());
    for request in group {
        let subject = inner.subject(&request.stream_id);
        let head = heads
            .get_mut(&subject)
            .expect("every subject of the group has a head");
        let actual = head.as_ref().map(|t| t.version);
        let matches = match request.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        };
        if !matches {
            let refusal = StoreError::WrongExpectedVersion {
                stream: request.stream_id.clone(),
                expected: request.expected,
                actual,
            };
            let _ = request.reply.send(Err(refusal));
            continue;
        }
        let total = request.events.len();
        let mut plan = Vec::with_capacity(total);
        let mut encode_error = None;
        for (i, new) in request.events.iter().enumerate() {
            let (version, prev_hash) = match head.as_ref() {
                None => (0, chain::GENESIS.to_string()),
                Some(t) => (t.version + 1, t.hash.clone()),
            };
            let event = record(&request.stream_id, version, new, recorded_at, &prev_hash);
            let body = match serde_json::to_vec(&event) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    encode_error = Some(e);
                    break;
                }
            };
            *head = Some(Tail {
                sequence: next_sequence,
                version,
                hash: event.hash.clone(),
            });
            next_sequence += 1;
            plan.push(Planned {
                event,
                body,
                batch: (i, total),
            });
        }
        if let Some(e) = encode_error {
            // Cannot happen for a RecordedEvent; refuse the append rather than panic. The
            // predicted sequences of later appends are then off, so their publishes are refused
            // by the server and they complete one by one.
            let _ = request
                .reply
                .send(Err(StoreError::Backend(format!("encoding event: {e}"))));
            continue;
        }
        let stored = vec![None; total];
        entries.push(Entry {
            request,
            subject,
            plan: Some(plan),
            stored,
        });
    }

    // Publish everything pipelined, then collect the acks in order.
    let mut acks = Vec::new();
    let mut expected_last = last;
    let mut previous_id: Option<String> = None;
    'send: for (e, entry) in entries.iter().enumerate() {
        for (i, planned) in entry.plan.iter().flatten().enumerate() {
            let id = planned.event.event_id.to_string();
            let mut message = PublishMessage::build()
                .payload(planned.body.clone())
                .headers(log_headers(&planned.event, planned.batch))
                .message_id(&id)
                .expected_last_sequence(expected_last);
            if let Some(previous) = &previous_id {
                message = message.expected_last_message_id(previous);
            }
            match inner.js.send_publish(entry.subject.clone(), message).await {
                Ok(ack) => acks.push((e, i, ack)),
                Err(err) => {
                    tracing::debug!(error = %err, "group publish interrupted");
                    break 'send;
                }
            }
            expected_last += 1;
            previous_id = Some(id);
        }
    }
    let planned_count: usize = entries.iter().map(|e| e.stored.len()).sum();
    let mut clean = acks.len() == planned_count;
    for (e, i, ack) in acks {
        match ack.await {
            Ok(ack) => entries[e].stored[i] = Some(ack.sequence),
            Err(err) => {
                if clean && err.kind() != PublishErrorKind::WrongLastSequence {
                    tracing::debug!(error = %err, "group publish not acknowledged");
                }
                clean = false;
            }
        }
    }

    // Answer the appends that landed as planned; complete the others one by one, in order.
    let mut chain_at = before;
    let mut replanned: HashSet<String> = HashSet::new();
    for entry in entries {
        let Entry {
            request,
            subject,
            plan,
            stored,
        } = entry;
        let Some(plan) = plan else { continue };
        if let (Some(Some(first)), Some(Some(last))) = (stored.first(), stored.last()) {
            if stored.iter().all(Option::is_some) {
                chain_at.insert(subject, *last);
                let version = plan.last().map_or(0, |p| p.event.stream_version);
                let _ = request.reply.send(Ok(AppendResult {
                    first_position: *first,
                    last_position: *last,
                    stream_version: version,
                }));
                continue;
            }
        }
        let (result, used_plan) = if replanned.contains(&subject) {
            // An earlier append of this stream was planned again, so this plan is stale.
            (
                inner
                    .append_one(&request.stream_id, request.expected, &request.events)
                    .await,
                false,
            )
        } else {
            let predecessor = chain_at.get(&subject).copied().unwrap_or(0);
            complete(inner, &request, &subject, &plan, stored, predecessor).await
        };
        match &result {
            Ok(r) if used_plan => {
                chain_at.insert(subject, r.last_position);
            }
            _ => {
                replanned.insert(subject);
            }
        }
        let _ = request.reply.send(result);
    }
    if clean {
        Some(expected_last)
    } else {
        None
    }
}

/// Finishes one append whose group publish did not fully succeed: re-publishes its planned
/// events in order (dedup makes already-stored ones no-ops), each expecting the subject's
/// previous sequence; if its first event is refused, the plan is stale and it is planned again.
async fn complete(
    inner: &Inner,
    request: &AppendRequest,
    subject: &str,
    plan: &[Planned],
    mut stored: Vec<Option<u64>>,
    mut predecessor: u64,
) -> (Result<AppendResult, StoreError>, bool) {
    for (i, planned) in plan.iter().enumerate() {
        if let Some(sequence) = stored[i] {
            predecessor = sequence;
            continue;
        }
        match inner
            .publish_after(subject, &planned.event, predecessor, planned.batch)
            .await
        {
            Ok(sequence) => {
                stored[i] = Some(sequence);
                predecessor = sequence;
            }
            Err(PublishFailure::Conflict) if i == 0 => {
                return (
                    inner
                        .append_one(&request.stream_id, request.expected, &request.events)
                        .await,
                    false,
                );
            }
            Err(failure) => {
                let why = match failure {
                    PublishFailure::Conflict => "another writer appended to the stream".to_string(),
                    PublishFailure::Unavailable(e) | PublishFailure::Other(e) => e,
                };
                let written = if i == 0 {
                    String::new()
                } else {
                    format!(
                        " after {i} of {} events were stored (re-read the stream before deciding again)",
                        plan.len()
                    )
                };
                let error = StoreError::Unavailable(format!(
                    "append to {} failed{written}: {why}",
                    request.stream_id
                ));
                return (Err(error), false);
            }
        }
    }
    let result = AppendResult {
        first_position: stored.first().copied().flatten().unwrap_or(predecessor),
        last_position: predecessor,
        stream_version: plan.last().map_or(0, |p| p.event.stream_version),
    };
    (Ok(result), true)
}

fn fail_all(group: Vec<AppendRequest>, error: &StoreError) {
    let why = match error {
        StoreError::Unavailable(why) => why.clone(),
        other => other.to_string(),
    };
    for request in group {
        let _ = request
            .reply
            .send(Err(StoreError::Unavailable(why.clone())));
    }
}
