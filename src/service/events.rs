//! The change feed's use cases: a page of past events, and a stream that follows the feed live.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::feed_hub::Subscription;
use super::{RepositoryService, ServiceError};
use crate::domain::{Event, EventFilter};
use crate::store::{EventRetention, Store, StoreError};

/// Most events a page returns when the client does not ask.
pub const DEFAULT_EVENT_PAGE: usize = 100;
/// Most events a page may return.
pub const MAX_EVENT_PAGE: usize = 1000;
/// Most events one query reads while looking for matches of a narrow filter; the page then ends early, and its
/// end cursor continues the scan.
const MAX_SCAN: usize = 10_000;
/// Events read from the store at a time by a follower.
const FOLLOW_BATCH: usize = 512;
/// A follower re-reads the store at least this often, even without a signal: an event of another replica that
/// was pending at the last read is then picked up once settled.
const FOLLOW_RECHECK: Duration = Duration::from_secs(1);

/// A page of the feed.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// The sequence to continue after: the last event returned, or further when non-matching events were read.
    pub end: u64,
    pub has_next: bool,
}

/// A live follower of the feed: the backlog after a sequence, then new events as they commit.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, ServiceError>> + Send>>;

/// The same, handing out events shared with every other live follower (no copy per subscriber).
pub type SharedEventStream =
    Pin<Box<dyn Stream<Item = Result<Arc<FeedEvent>, ServiceError>> + Send>>;

/// An event as the live feed hands it out: one allocation shared by every follower it reaches, with its JSON
/// (`Event::to_json`) made by the first one that asks and reused by the rest. Serialising each event once per
/// subscriber was most of the feed's cost at 10,000 subscribers.
#[derive(Debug)]
pub struct FeedEvent {
    pub event: Event,
    json: OnceLock<Bytes>,
    frame: OnceLock<Bytes>,
}

impl FeedEvent {
    pub fn new(event: Event) -> Self {
        FeedEvent {
            event,
            json: OnceLock::new(),
            frame: OnceLock::new(),
        }
    }

    /// The event's JSON, compact (no line breaks), serialised once.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            // A `Value` always serialises.
            Bytes::from(serde_json::to_vec(&self.event.to_json()).unwrap_or_default())
        })
    }

    /// The event as the transport that writes it whole to every subscriber frames it (the SSE route), made by the
    /// first subscriber that asks and shared by the rest: each delivery is then a reference count, not a copy.
    pub fn frame(&self, make: impl FnOnce(&Event, &Bytes) -> Bytes) -> Bytes {
        self.frame
            .get_or_init(|| make(&self.event, self.json()))
            .clone()
    }
}

/// Refuses a cursor beyond the newest event: no event of this feed was ever delivered there, so it is of another
/// feed (the store was rebuilt or reset at the same address), and waiting after it would be silent for ever.
async fn not_ahead(store: &dyn Store, after: u64) -> Result<(), ServiceError> {
    let head = store.feed().last_sequence().await?;
    if after > head {
        return Err(ServiceError::EventsAhead(format!(
            "after {after} is beyond the newest event of this feed ({head}): the cursor is of another feed (the \
             repository was reset); list the components again, then follow the feed from its current sequence"
        )));
    }
    Ok(())
}

/// Where to start: after `after`, or after the oldest retained event when it is `None`.
async fn start(store: &dyn Store, after: Option<u64>) -> Result<u64, ServiceError> {
    match after {
        Some(after) => Ok(after),
        None => match store.feed().events(0, 0).await {
            Ok(_) => Ok(0),
            Err(StoreError::EventsExpired { floor, .. }) => Ok(floor),
            Err(e) => Err(e.into()),
        },
    }
}

impl RepositoryService {
    /// Events after `after` (from the oldest retained when absent) that match `filter`.
    pub async fn events(
        &self,
        after: Option<u64>,
        first: Option<i32>,
        filter: &EventFilter,
    ) -> Result<EventPage, ServiceError> {
        let limit = match first {
            None => DEFAULT_EVENT_PAGE,
            Some(n) if n >= 0 && (n as usize) <= MAX_EVENT_PAGE => n as usize,
            Some(n) => {
                return Err(ServiceError::InvalidInput(format!(
                    "first must be between 0 and {MAX_EVENT_PAGE}, not {n}"
                )));
            }
        };
        if let Some(after) = after {
            not_ahead(self.store.as_ref(), after).await?;
        }
        let mut cursor = start(self.store.as_ref(), after).await?;
        // Refuses an expired `after` even when nothing is read.
        self.store.feed().events(cursor, 0).await?;
        let mut page = EventPage {
            events: Vec::new(),
            end: cursor,
            has_next: false,
        };
        let mut scanned = 0;
        while page.events.len() < limit {
            if scanned >= MAX_SCAN {
                page.has_next = true;
                break;
            }
            let batch = self.store.feed().events(cursor, FOLLOW_BATCH).await?;
            if batch.next_after == cursor {
                break;
            }
            for event in batch.events {
                scanned += 1;
                if page.events.len() == limit {
                    page.has_next = true;
                    break;
                }
                page.end = event.sequence;
                if filter.matches(&event) {
                    page.events.push(event);
                }
            }
            if page.has_next {
                break;
            }
            cursor = batch.next_after;
            page.end = cursor;
        }
        if !page.has_next && page.events.len() == limit {
            page.has_next = self.store.feed().events(page.end, 1).await?.next_after > page.end;
        }
        Ok(page)
    }

    /// The newest sequence every event up to which is settled: where a follower "from now" starts.
    pub async fn last_sequence(&self) -> Result<u64, ServiceError> {
        Ok(self.store.feed().last_sequence().await?)
    }

    /// The change feed's id (see [`Store::feed_id`]).
    pub async fn feed_id(&self) -> Result<String, ServiceError> {
        Ok(self.store.feed().feed_id().await?)
    }

    /// Follows the feed after `after` (from now when absent): the backlog, then live events, in order, each once.
    /// An expired `after` is the stream's first and last item; an `after` beyond the newest event is refused.
    pub async fn follow(
        &self,
        after: Option<u64>,
        filter: EventFilter,
    ) -> Result<EventStream, ServiceError> {
        let shared = self.follow_shared(after, filter).await?;
        Ok(Box::pin(shared.map(|item| {
            item.map(|shared| Arc::try_unwrap(shared).map_or_else(|s| s.event.clone(), |s| s.event))
        })))
    }

    /// `follow`, with the events shared among the followers rather than copied for each: the transport that
    /// encodes every event the same way for all its subscribers (SSE) encodes it once.
    pub async fn follow_shared(
        &self,
        after: Option<u64>,
        filter: EventFilter,
    ) -> Result<SharedEventStream, ServiceError> {
        let signal = self.store.feed().event_signal();
        let head = self.store.feed().last_sequence().await?;
        let after = match after {
            Some(after) => {
                not_ahead(self.store.as_ref(), after).await?;
                after
            }
            None => head,
        };
        let follower = Box::new(Follower {
            store: self.store.clone(),
            hub: self.feed_hub.subscribe(&self.store, head),
            signal,
            after,
            filter,
            ready: VecDeque::new(),
            place: None,
            reader_stopped: false,
        });
        Ok(Box::pin(Following::Live(follower)))
    }

    /// Removes events beyond `retention`; returns how many.
    pub async fn expire_events(&self, retention: &EventRetention) -> Result<u64, ServiceError> {
        Ok(self.store.feed().expire_events(retention).await?)
    }
}

struct Follower {
    store: Arc<dyn Store>,
    /// The process's one reader of the feed: a live follower reads its window, not the store.
    hub: Subscription,
    signal: tokio::sync::watch::Receiver<u64>,
    /// The last sequence read: never read again, so nothing is delivered twice.
    after: u64,
    filter: EventFilter,
    ready: VecDeque<Arc<FeedEvent>>,
    /// Where this follower's task waits among the hub's waiters.
    place: Option<super::feed_waiters::Place>,
    /// The hub's reader stopped (the store is going away): the store is read instead.
    reader_stopped: bool,
}

/// What a look at the hub's window gave.
enum Live {
    /// Events were read (perhaps none that match): look again.
    Read,
    /// Nothing new: the task is woken when the head moves.
    Waiting,
    /// The follower is behind the window, or the reader stopped: the store has what comes next.
    FromStore,
}

impl Follower {
    /// The live path, without a future: reads what the window has after `after`, or registers the task to be woken
    /// when the head moves.
    fn poll_live(&mut self, cx: &std::task::Context<'_>) -> Live {
        if self.reader_stopped {
            return Live::FromStore;
        }
        // Marks the head as seen before reading the window, so a move during the read shows as a change below.
        self.hub.head.mark_unchanged();
        let window = self.hub.window.load();
        if self.after < window.first_after {
            return Live::FromStore;
        }
        if self.after < window.head {
            let filter = &self.filter;
            self.after = window.read_after(
                self.after,
                FOLLOW_BATCH,
                |e| filter.matches(&e.event),
                &mut self.ready,
            );
            return Live::Read;
        }
        drop(window);
        self.hub.waiters.register(cx, &mut self.place);
        match self.hub.head.has_changed() {
            Ok(true) => Live::Read,
            Ok(false) => Live::Waiting,
            Err(_) => {
                self.reader_stopped = true;
                Live::FromStore
            }
        }
    }

    /// One read of the store after `after` (a backlog, a subscriber that stopped reading for a while, or a process
    /// whose reader stopped); with nothing new, waits for the store's signal first.
    async fn read_store(mut self: Box<Self>) -> (Box<Self>, Option<ServiceError>) {
        self.signal.borrow_and_update();
        match self.store.feed().events(self.after, FOLLOW_BATCH).await {
            Ok(batch) => {
                let progressed = batch.next_after > self.after;
                self.after = batch.next_after;
                let filter = &self.filter;
                self.ready.extend(
                    batch
                        .events
                        .into_iter()
                        .filter(|e| filter.matches(e))
                        .map(|e| Arc::new(FeedEvent::new(e))),
                );
                if progressed {
                    return (self, None);
                }
            }
            Err(e) => return (self, Some(e.into())),
        }
        // Waits for a signal; a closed signal (the store went away) falls back to re-reading.
        let changed = tokio::time::timeout(FOLLOW_RECHECK, self.signal.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            tokio::time::sleep(FOLLOW_RECHECK).await;
        }
        (self, None)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(place) = self.place {
            self.hub.waiters.forget(place);
        }
    }
}

/// A follower's read of the store: the follower back, and the error that ends the stream if the read failed.
type StoreRead = Pin<Box<dyn Future<Output = (Box<Follower>, Option<ServiceError>)> + Send>>;

/// A follower as a stream. Live, it reads the hub's window within `poll_next`; only a read of the store is a future,
/// made when one is needed. (An async loop behind `stream::unfold` built a future per delivery and moved the
/// follower in and out of it: at 10,000 subscribers about a tenth of a delivery's CPU.)
enum Following {
    Live(Box<Follower>),
    Reading(StoreRead),
    /// After an error, which was the last item.
    Ended,
}

impl Stream for Following {
    type Item = Result<Arc<FeedEvent>, ServiceError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            // Taken out and put back: a box's pointer moves, not the follower.
            match std::mem::replace(this, Following::Ended) {
                Following::Ended => return Poll::Ready(None),
                Following::Reading(mut read) => match read.as_mut().poll(cx) {
                    Poll::Pending => {
                        *this = Following::Reading(read);
                        return Poll::Pending;
                    }
                    Poll::Ready((_, Some(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready((follower, None)) => *this = Following::Live(follower),
                },
                Following::Live(mut follower) => {
                    if let Some(event) = follower.ready.pop_front() {
                        *this = Following::Live(follower);
                        return Poll::Ready(Some(Ok(event)));
                    }
                    match follower.poll_live(cx) {
                        Live::Read => *this = Following::Live(follower),
                        Live::Waiting => {
                            *this = Following::Live(follower);
                            return Poll::Pending;
                        }
                        Live::FromStore => {
                            *this = Following::Reading(Box::pin(follower.read_store()));
                        }
                    }
                }
            }
        }
    }
}
