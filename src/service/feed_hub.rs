//! One reader of the change feed per process. It follows the store and keeps the newest events in memory (the
//! window); every live follower reads them there. A committed event then costs one store read however many
//! subscribers follow, and a subscriber that stops reading holds nothing: it only falls behind the window, and
//! catches up from the store when it reads again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::events::FeedEvent;
use super::feed_waiters::{CloseAndWake, Waiters};
use crate::store::{Store, StoreError};

/// Events kept in memory: a follower this far behind reads the store instead.
const WINDOW: usize = 4096;
/// How far behind the head a follower is looked for from the end of the window before a binary search.
const NEAR_HEAD: usize = 8;
/// Events read from the store at a time.
const READ_BATCH: usize = 512;
/// The reader re-reads the store at least this often, even without a signal: an event of another replica that
/// was pending at the last read is then picked up once settled.
const RECHECK: Duration = Duration::from_secs(1);

/// The newest events, in sequence order: every event with a sequence in `(first_after, head]`.
#[derive(Clone, Default)]
pub(super) struct Window {
    pub first_after: u64,
    pub head: u64,
    pub events: imbl::Vector<Arc<FeedEvent>>,
}

impl Window {
    /// Appends to `out` those of the next `limit` events after `after` (which must be in the window) that `keep`
    /// accepts, and gives the sequence to continue after. Straight into the follower's queue: a list in between was
    /// one more allocation per subscriber and event.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&FeedEvent) -> bool,
        out: &mut impl Extend<Arc<FeedEvent>>,
    ) -> u64 {
        let events = &self.events;
        let sequence = |i: usize| events[i].event.sequence;
        // Nearly every follower woken is at or just behind the head, whose events the vector keeps in its last chunk:
        // a few steps back from the end find the start without the binary search's walks down the tree.
        let mut start = events.len();
        let mut steps = 0;
        while start > 0 && steps < NEAR_HEAD && sequence(start - 1) > after {
            start -= 1;
            steps += 1;
        }
        if start > 0 && sequence(start - 1) > after {
            start = match events.binary_search_by(|e| e.event.sequence.cmp(&after)) {
                Ok(at) => at + 1,
                Err(at) => at,
            };
        }
        let end = events.len().min(start.saturating_add(limit));
        let mut take = |event: &Arc<FeedEvent>| {
            if keep(event) {
                out.extend(std::iter::once(event.clone()));
            }
        };
        if end - start <= NEAR_HEAD {
            // Indexed: a focus clones the tree's root and chunk pointers, shared counts every follower would touch.
            (start..end).for_each(|i| take(&events[i]));
        } else {
            // Through a focus rather than `skip`, which copies the tree's path for every follower woken.
            let mut focus = events.focus();
            (start..end).for_each(|i| take(focus.index(i)));
        }
        let next = if end == events.len() {
            self.head
        } else if end > start {
            sequence(end - 1)
        } else {
            after
        };
        next.max(after)
    }
}

/// What a follower holds of the hub: the window, a signal raised when its head moves (closed when the reader
/// stops), and the tasks woken when it is raised. Holding one keeps the reader running; the reader stops when
/// nobody follows.
#[derive(Clone)]
pub(super) struct Subscription {
    pub window: Arc<ArcSwap<Window>>,
    pub head: watch::Receiver<u64>,
    pub waiters: Arc<Waiters>,
}

#[derive(Default)]
pub(super) struct FeedHub {
    running: Mutex<Option<Subscription>>,
}

impl FeedHub {
    /// A subscription to the window, starting the reader (after `from`, the store's newest settled sequence) when
    /// none runs. On a single-threaded runtime (a connection thread) its head signal comes through that thread's
    /// relay ([`super::feed_relay`]).
    pub fn subscribe(&self, store: &Arc<dyn Store>, from: u64) -> Subscription {
        super::feed_relay::on_this_thread(self.shared(store, from))
    }

    /// A subscription to the reader's own head signal.
    fn shared(&self, store: &Arc<dyn Store>, from: u64) -> Subscription {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(subscription) = running.as_ref()
            && subscription.head.has_changed().is_ok()
        {
            return subscription.clone();
        }
        let window = Arc::new(ArcSwap::from_pointee(Window {
            first_after: from,
            head: from,
            events: imbl::Vector::new(),
        }));
        let (head_tx, head) = watch::channel(from);
        let subscription = Subscription {
            window: window.clone(),
            head,
            waiters: Arc::default(),
        };
        // The guard is made here, not in the task: a task dropped before it first runs still wakes the followers.
        let closing = CloseAndWake::new(head_tx, subscription.waiters.clone());
        tokio::spawn(read(Arc::downgrade(store), window, closing, from));
        // The hub keeps no receiver of its own for long: a clone handed out keeps the reader alive, and the one kept
        // here is only to hand out more; it is replaced once the reader has stopped.
        *running = Some(subscription.clone());
        subscription
    }
}

/// The reader: appends what the store commits to the window until no follower is left (only the hub's own
/// receiver) or the store is gone; however it ends, the followers are woken and find the signal closed.
async fn read(
    store: std::sync::Weak<dyn Store>,
    window: Arc<ArcSwap<Window>>,
    closing: CloseAndWake<watch::Sender<u64>>,
    after: u64,
) {
    follow_store(store, &window, closing.sender(), closing.waiters(), after).await;
}

async fn follow_store(
    store: std::sync::Weak<dyn Store>,
    window: &ArcSwap<Window>,
    head: &watch::Sender<u64>,
    waiters: &Waiters,
    mut after: u64,
) {
    let Some(mut signal) = store.upgrade().map(|s| s.feed().event_signal()) else {
        return;
    };
    loop {
        // Only the hub's receiver left: nobody follows.
        if head.receiver_count() <= 1 {
            return;
        }
        signal.borrow_and_update();
        let Some(strong) = store.upgrade() else {
            return;
        };
        let read = strong.feed().events(after, READ_BATCH).await;
        drop(strong);
        match read {
            Ok(batch) if batch.next_after > after => {
                let mut next = Window::clone(&window.load());
                for event in batch.events {
                    next.events.push_back(Arc::new(FeedEvent::new(event)));
                }
                while next.events.len() > WINDOW {
                    if let Some(dropped) = next.events.pop_front() {
                        next.first_after = dropped.event.sequence;
                    }
                }
                after = batch.next_after;
                next.head = after;
                window.store(Arc::new(next));
                head.send_replace(after);
                waiters.wake_all();
                continue;
            }
            Ok(_) => {}
            // Retention passed the reader (it was far behind): the window starts again at the oldest retained.
            Err(StoreError::EventsExpired { floor, .. }) => {
                after = floor;
                window.store(Arc::new(Window {
                    first_after: floor,
                    head: floor,
                    events: imbl::Vector::new(),
                }));
                head.send_replace(floor);
                waiters.wake_all();
                continue;
            }
            Err(e) => tracing::warn!(error = %e, "reading the change feed failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::timeout(RECHECK, signal.changed()) => {}
            _ = head.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::task::{Context, Poll, Wake, Waker};

    use super::*;
    use crate::domain::{ComponentKey, EventDraft, Kind};

    /// A follower's task that records, when woken, whether the head signal had closed by then.
    struct Follower {
        head: Mutex<watch::Receiver<u64>>,
        woken_closed: Mutex<Option<bool>>,
    }

    impl Wake for Follower {
        fn wake(self: Arc<Self>) {
            let closed = self.head.lock().unwrap().has_changed().is_err();
            *self.woken_closed.lock().unwrap() = Some(closed);
        }
    }

    /// A reader whose store is gone, and a follower registered with its waiters.
    fn reader_and_follower() -> (impl Future<Output = ()>, Arc<Follower>) {
        let (head, receiver) = watch::channel(0);
        let waiters = Arc::new(Waiters::default());
        let follower = Arc::new(Follower {
            head: Mutex::new(receiver),
            woken_closed: Mutex::new(None),
        });
        waiters.register(
            &Context::from_waker(&Waker::from(follower.clone())),
            &mut None,
        );
        let gone: std::sync::Weak<dyn Store> =
            std::sync::Weak::<crate::store::embedded::EmbeddedStore>::new();
        let reader = read(gone, Arc::default(), CloseAndWake::new(head, waiters), 0);
        (reader, follower)
    }

    #[test]
    fn followers_are_woken_with_the_signal_closed_however_the_reader_ends() {
        // It returns (its store is gone).
        let (reader, follower) = reader_and_follower();
        let mut reader = std::pin::pin!(reader);
        let polled = reader
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(polled, Poll::Ready(()));
        assert_eq!(*follower.woken_closed.lock().unwrap(), Some(true));
        // It is dropped before it ever ran (a runtime shutting down, a panic elsewhere in its task).
        let (reader, follower) = reader_and_follower();
        drop(reader);
        assert_eq!(*follower.woken_closed.lock().unwrap(), Some(true));
    }

    fn event(sequence: u64) -> Arc<FeedEvent> {
        let key = ComponentKey::with_id(Kind::Service, "svc").unwrap();
        Arc::new(FeedEvent::new(
            EventDraft::bare(crate::domain::EventType::Created, key)
                .at(sequence, crate::domain::now()),
        ))
    }

    proptest::proptest! {
        /// From the end, through the binary search, indexed or through a focus: the same events as a plain scan.
        #[test]
        fn reading_a_window_agrees_with_a_scan(
            gaps in proptest::collection::vec(1u64..4, 0..300),
            behind in 0u64..400,
            limit in 1usize..40,
            odd_only: bool,
        ) {
            let sequences: Vec<u64> = gaps.iter().scan(10, |at, gap| { *at += gap; Some(*at) }).collect();
            let head = sequences.last().copied().unwrap_or(10) + 1;
            let window = Window { first_after: 10, head, events: sequences.iter().map(|&s| event(s)).collect() };
            let after = head.saturating_sub(behind).max(10);
            let keep = |s: u64| !odd_only || s % 2 == 1;

            let mut read = Vec::new();
            let next = window.read_after(after, limit, |e| keep(e.event.sequence), &mut read);
            let read: Vec<u64> = read.iter().map(|e| e.event.sequence).collect();

            let following: Vec<u64> = sequences.iter().copied().filter(|&s| s > after).collect();
            let taken = &following[..following.len().min(limit)];
            let expected: Vec<u64> = taken.iter().copied().filter(|&s| keep(s)).collect();
            let expected_next = if taken.len() == following.len() { head } else { *taken.last().unwrap() };
            proptest::prop_assert_eq!(read, expected);
            proptest::prop_assert_eq!(next, expected_next);
        }
    }

    #[test]
    fn a_window_hands_out_what_follows_a_sequence_and_where_to_continue() {
        let window = Window {
            first_after: 10,
            head: 20,
            events: [11, 12, 15].into_iter().map(event).collect(),
        };
        let read = |after, limit, keep: fn(u64) -> bool| {
            let mut out = Vec::new();
            let next = window.read_after(after, limit, |e| keep(e.event.sequence), &mut out);
            let sequences: Vec<u64> = out.iter().map(|e| e.event.sequence).collect();
            (sequences, next)
        };
        assert_eq!(read(10, 10, |_| true), (vec![11, 12, 15], 20));
        assert_eq!(read(11, 1, |_| true), (vec![12], 12));
        assert_eq!(read(15, 10, |_| true), (vec![], 20));
        assert_eq!(read(20, 10, |_| true), (vec![], 20));
        // What the filter leaves out is still read past.
        assert_eq!(read(10, 2, |s| s != 11), (vec![12], 12));
        assert_eq!(read(10, 10, |s| s == 11), (vec![11], 20));
    }
}
