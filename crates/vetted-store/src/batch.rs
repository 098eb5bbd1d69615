//! Events read in bulk as the backend keeps them: [`EventBatch`], from
//! [`EventStore::read_all_batch`](crate::EventStore::read_all_batch).
//!
//! Why: parsing an envelope into a [`RecordedEvent`] (its payload into a `serde_json::Value`
//! tree) costs more than everything else a rebuild does with most events. A backend that keeps
//! each event's JSON hands the bytes out instead ([`JsonEvents`]), so a reader can parse only
//! the fields it needs (borrowing strings, leaving the payload as raw JSON text) and do it on
//! several threads.
use std::ops::Range;

use crate::RecordedEvent;

/// Events from [`EventStore::read_all_batch`](crate::EventStore::read_all_batch), in global
/// order.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBatch {
    /// The stored JSON of each event, not decoded.
    Json(JsonEvents),
    /// Decoded events (a backend with no stored JSON to hand out).
    Decoded(Vec<RecordedEvent>),
}

impl EventBatch {
    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        match self {
            EventBatch::Json(events) => events.len(),
            EventBatch::Decoded(events) => events.len(),
        }
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global position of the last event, where the next read starts after it (+1).
    pub fn last_position(&self) -> Option<u64> {
        match self {
            EventBatch::Json(events) => events.last_position(),
            EventBatch::Decoded(events) => events.last().map(|e| e.global_position),
        }
    }
}

/// One frame's place in [`JsonEvents::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    position: u64,
    /// Where the frame ends; it starts where the previous one ends (or at 0).
    end: usize,
}

/// Stored JSON frames: one [`RecordedEvent`] JSON object each, in global order, every frame's
/// `globalPosition` the position given beside it. All frames share one buffer, so a batch of
/// thousands of events is two allocations.
///
/// The bytes are what the backend checked (the embedded log: the frame's CRC), not parsed: a
/// frame that does not parse is damage in the store, for its reader to report (as
/// [`StoreError::Corrupt`](crate::StoreError::Corrupt), or its own error naming the position).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonEvents {
    bytes: Vec<u8>,
    frames: Vec<Frame>,
}

impl JsonEvents {
    /// No frames.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `frames` more frames of `bytes` more bytes in all.
    pub fn reserve(&mut self, frames: usize, bytes: usize) {
        self.frames.reserve(frames);
        self.bytes.reserve(bytes);
    }

    /// Adds the frame of the event at `position` (after every frame already in: positions
    /// must ascend).
    pub fn push(&mut self, position: u64, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
        self.frames.push(Frame {
            position,
            end: self.bytes.len(),
        });
    }

    /// Adds the frame of the event at `position` as `write` appends it to the buffer; if
    /// `write` fails, nothing is added.
    pub fn push_with<E>(
        &mut self,
        position: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        self.frames.push(Frame {
            position,
            end: self.bytes.len(),
        });
        Ok(())
    }

    /// How many frames there are.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether there is no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// All frames' bytes, back to back (frame `i` is [`JsonEvents::get`]`(i)`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every frame's global position and byte range in [`JsonEvents::bytes`], then the bytes
    /// themselves, without copying them (a reader that checks the whole buffer as UTF-8 once
    /// keeps it as one `String`).
    pub fn into_parts(self) -> (Vec<(u64, Range<usize>)>, Vec<u8>) {
        let frames = (0..self.len())
            .map(|i| {
                (
                    self.frames[i].position,
                    self.start_of(i)..self.frames[i].end,
                )
            })
            .collect();
        (frames, self.bytes)
    }

    fn start_of(&self, i: usize) -> usize {
        match i.checked_sub(1) {
            Some(previous) => self.frames.get(previous).map_or(0, |f| f.end),
            None => 0,
        }
    }

    /// The `i`-th frame: its global position and JSON.
    pub fn get(&self, i: usize) -> Option<(u64, &[u8])> {
        let frame = self.frames.get(i)?;
        let bytes = self.bytes.get(self.start_of(i)..frame.end)?;
        Some((frame.position, bytes))
    }

    /// Every frame in order: global position and JSON.
    pub fn iter(&self) -> Frames<'_> {
        Frames {
            events: self,
            range: 0..self.len(),
            start: 0,
        }
    }

    /// The global position of the first frame.
    pub fn first_position(&self) -> Option<u64> {
        self.frames.first().map(|f| f.position)
    }

    /// The global position of the last frame.
    pub fn last_position(&self) -> Option<u64> {
        self.frames.last().map(|f| f.position)
    }
}

impl<'a> IntoIterator for &'a JsonEvents {
    type Item = (u64, &'a [u8]);
    type IntoIter = Frames<'a>;

    fn into_iter(self) -> Frames<'a> {
        self.iter()
    }
}

/// Frames in order: global position and JSON (see [`JsonEvents::iter`]).
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    events: &'a JsonEvents,
    range: Range<usize>,
    /// Where the next frame starts.
    start: usize,
}

impl<'a> Iterator for Frames<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<(u64, &'a [u8])> {
        let i = self.range.next()?;
        let frame = self.events.frames.get(i)?;
        let bytes = self.events.bytes.get(self.start..frame.end)?;
        self.start = frame.end;
        Some((frame.position, bytes))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Frames<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(sizes: &[usize]) -> JsonEvents {
        let mut events = JsonEvents::new();
        for (i, size) in sizes.iter().enumerate() {
            events.push(10 + i as u64, &vec![b'a' + (i % 26) as u8; *size]);
        }
        events
    }

    #[test]
    fn frames_read_back_by_index_and_in_order_with_their_positions() {
        let events = frames(&[3, 1, 4]);
        assert_eq!(events.len(), 3);
        assert_eq!(events.get(0), Some((10, &b"aaa"[..])));
        assert_eq!(events.get(1), Some((11, &b"b"[..])));
        assert_eq!(events.get(2), Some((12, &b"cccc"[..])));
        assert_eq!(events.get(3), None);
        assert_eq!(events.iter().len(), 3);
        assert_eq!(
            events.iter().collect::<Vec<_>>(),
            (0..3).filter_map(|i| events.get(i)).collect::<Vec<_>>()
        );
        assert_eq!(events.first_position(), Some(10));
        assert_eq!(events.last_position(), Some(12));
        assert_eq!(events.bytes(), b"aaabcccc");
        assert!(JsonEvents::new().is_empty());
        assert_eq!(JsonEvents::new().last_position(), None);
    }

    #[test]
    fn a_failed_write_adds_nothing() {
        let mut events = frames(&[2]);
        let failed = events.push_with(11, |buf| {
            buf.extend_from_slice(b"half");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        assert_eq!(events, frames(&[2]));
        events
            .push_with(11, |buf| {
                buf.extend_from_slice(b"bb");
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(events, frames(&[2, 2]));
    }
}
