//! The catch-up-then-live feed behind every `subscribe_all`.
//!
//! A backend publishes its durable head on a `watch` channel after each flush; the feed reads
//! pages up to that head only, so it can never see position 11 while 10 is still in flight.
use std::collections::VecDeque;

use tokio::sync::watch;

use crate::{EventFeed, RecordedEvent, StoreError};

/// How many events a feed reads per page while catching up.
const PAGE: usize = 512;

/// Reads events with global position in `[from, upto]`, at most `max`, in global order.
pub(crate) type PageReader =
    dyn Fn(u64, usize, u64) -> Result<Vec<RecordedEvent>, StoreError> + Send + Sync + 'static;

struct FeedState {
    read_page: Box<PageReader>,
    durable: watch::Receiver<u64>,
    next: u64,
    buffered: VecDeque<RecordedEvent>,
    done: bool,
}

/// A feed from `from` (positions start at 1) that follows `durable` until its sender is dropped.
pub(crate) fn follow(
    read_page: Box<PageReader>,
    durable: watch::Receiver<u64>,
    from: u64,
) -> EventFeed {
    let state = FeedState {
        read_page,
        durable,
        next: from.max(1),
        buffered: VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(event) = st.buffered.pop_front() {
                return Some((Ok(event), st));
            }
            let head = *st.durable.borrow_and_update();
            if st.next <= head {
                match (st.read_page)(st.next, PAGE, head) {
                    Ok(page) => match page.last() {
                        Some(last) => {
                            st.next = last.global_position.max(st.next) + 1;
                            st.buffered.extend(page);
                        }
                        // Positions below the durable head that read as nothing were removed
                        // behind the store's back; skip them rather than spin (verify reports them).
                        None => st.next = head + 1,
                    },
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                continue;
            }
            if st.durable.changed().await.is_err() {
                // The store closed: deliver what was made durable before it did, then end.
                if *st.durable.borrow() >= st.next {
                    continue;
                }
                return None;
            }
        }
    }))
}
