//! `GET /events`: the change feed as Server-Sent Events, for inference servers and shell scripts (`curl -N`).
//!
//! Each event carries `id: <sequence>`, so a client that reconnects with `Last-Event-ID` resumes right after the
//! last event it received. Comment lines keep an idle stream open through proxies. An `after` older than the
//! retained feed answers `410 Gone` with an `EVENTS_EXPIRED` JSON body before any stream starts; one beyond the
//! newest event (a cursor of another feed) `409 Conflict` with `EVENTS_AHEAD`. The `Feed-Id` header names the feed
//! the sequences belong to. Streams end as soon as the server begins to shut down.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Sleep;

use super::error::ApiError;
use super::state::AppState;
use crate::api::lease::{ConnectionLease, Stopped};
use crate::api::metrics::Subscribed;
use crate::domain::{EventFilter, EventType, Kind};
use crate::service::ServiceError;
use crate::service::{FeedEvent, SharedEventStream};

/// How often a stream sends a comment line (an idle one needs it; a busy one gets it anyway).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The route's path (the request span is chosen by it, see `api::router`).
pub const PATH: &str = "/events";
/// The response header that carries the feed's id.
pub const FEED_ID_HEADER: &str = "feed-id";

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Start after this sequence; absent, from now.
    after: Option<u64>,
    /// Comma-separated component kinds (`model,service`); absent, all.
    kinds: Option<String>,
    /// Comma-separated event types (`created,deleted`); absent, all.
    types: Option<String>,
}

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(events))
}

fn parse_list<T>(
    name: &str,
    list: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    known: &str,
) -> Result<Vec<T>, ApiError> {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse(item).ok_or_else(|| {
                ApiError::Service(ServiceError::InvalidInput(format!(
                    "{name}: {item:?} is not one of {known}"
                )))
            })
        })
        .collect()
}

async fn events(
    State(state): State<AppState>,
    // Event streams never end by themselves: they end when the server begins to stop, so that shutting down does
    // not wait out its grace period for subscribers that never leave.
    lease: Option<Extension<ConnectionLease>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::Service(ServiceError::InvalidInput(
                    "Last-Event-ID is not an event sequence".into(),
                ))
            })
        })
        .transpose()?;
    let filter = EventFilter {
        kinds: parse_list(
            "kinds",
            query.kinds.as_deref(),
            Kind::parse,
            "model, transformation, service, inferencer",
        )?,
        types: parse_list(
            "types",
            query.types.as_deref(),
            EventType::parse,
            "created, updated, file_uploaded, file_replaced, deleted",
        )?,
        runnable_on: None,
    };
    // A reconnect resumes where the stream broke off, whatever the original request asked.
    let after = resume.or(query.after);
    if let Some(after) = after {
        // Refused before the stream starts, so the client gets a status it can act on.
        state.service.events(Some(after), Some(0), &filter).await?;
    }
    let feed_id = state.service.feed_id().await?;
    let events = state.service.follow_shared(after, filter).await?;
    let body = EventsBody::new(
        events,
        HEARTBEAT,
        lease.map(|Extension(lease)| lease.stopping()),
        state.metrics.subscriber("sse"),
    );
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&feed_id) {
        headers.insert(FEED_ID_HEADER, value);
    }
    Ok(response)
}

/// One SSE event: `id` (omitted when empty), `event`, and `data` (one line: compact JSON has no line breaks).
fn frame(id: &str, event: &str, data: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(id.len() + event.len() + data.len() + 24);
    if !id.is_empty() {
        frame.put_slice(b"id: ");
        frame.put_slice(id.as_bytes());
        frame.put_u8(b'\n');
    }
    frame.put_slice(b"event: ");
    frame.put_slice(event.as_bytes());
    frame.put_slice(b"\ndata: ");
    frame.put_slice(data);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// Frames an item of the feed: an event, or the error that ended the stream.
fn frame_of(item: Result<Arc<FeedEvent>, ServiceError>) -> Bytes {
    match item {
        // Framed once per event, whatever the number of subscribers.
        Ok(event) => event.frame(|event, json| {
            frame(
                &event.sequence.to_string(),
                event.draft.event_type.as_str(),
                json,
            )
        }),
        Err(e) => {
            super::error::log_if_server_fault(&e);
            let body = json!({ "code": super::error::error_code(&e), "message": e.to_string() });
            frame("", "error", body.to_string().as_bytes())
        }
    }
}

/// One subscriber's response body: its events as SSE frames, and a comment line when [`HEARTBEAT`] passed without
/// one, which keeps an idle stream open through proxies. Ends with the events or when the server begins to stop.
/// Written out rather than composed from stream combinators: at 10,000 subscribers their boxes, and polling the
/// timer and the stop signal on every event, cost 8 % of a delivery's CPU.
///
/// The timer is not reset by events (a reset per event and subscriber was a measurable cost of fanning out): an
/// event sets a flag, and a heartbeat due on a stream that sent something since the last one is skipped. Written
/// to 10,000 busy streams at once, those spare comments had been a burst that delayed the event it met by a fan-out's
/// length. The first one is due somewhere in the second half of the period ([`super::keepalive`]).
struct EventsBody {
    events: SharedEventStream,
    heartbeat: Pin<Box<Sleep>>,
    /// When `heartbeat` is due.
    heartbeat_due: tokio::time::Instant,
    every: Duration,
    /// The waker the heartbeat last registered: polled again only when the task's waker changes or it fires.
    heartbeat_waker: Option<Waker>,
    /// An event was sent since the last heartbeat was due: the next is not needed.
    sent: bool,
    stopping: Option<Stopped>,
    _subscribed: Subscribed,
}

impl EventsBody {
    fn new(
        events: SharedEventStream,
        every: Duration,
        stopping: Option<Stopped>,
        subscribed: Subscribed,
    ) -> Self {
        let due = tokio::time::Instant::now() + super::keepalive::first_due(every);
        EventsBody {
            events,
            heartbeat: Box::pin(tokio::time::sleep_until(due)),
            heartbeat_due: due,
            every,
            heartbeat_waker: None,
            sent: false,
            stopping,
            _subscribed: subscribed,
        }
    }
}

impl Stream for EventsBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(stopping) = &mut this.stopping
            && Pin::new(stopping).poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        match this.events.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                this.sent = true;
                return Poll::Ready(Some(Ok(frame_of(item))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        // The clock, not the timer, is read on a poll: the timer's state would be one more line of memory per
        // subscriber to fetch on every event.
        let registered = this
            .heartbeat_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !registered || tokio::time::Instant::now() >= this.heartbeat_due {
            while this.heartbeat.as_mut().poll(cx).is_ready() {
                this.heartbeat_due = tokio::time::Instant::now() + this.every;
                this.heartbeat.as_mut().reset(this.heartbeat_due);
                if !std::mem::take(&mut this.sent) {
                    this.heartbeat_waker = None;
                    return Poll::Ready(Some(Ok(Bytes::from_static(b": heartbeat\n\n"))));
                }
            }
            this.heartbeat_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::lease::StopSignal;
    use crate::domain::{ComponentKey, EventDraft};
    use futures_util::StreamExt;

    fn body(
        events: SharedEventStream,
        every: Duration,
        stopping: Option<StopSignal>,
    ) -> EventsBody {
        EventsBody::new(
            events,
            every,
            stopping.map(|signal| signal.stopped()),
            Arc::new(crate::api::metrics::Metrics::new()).subscriber("sse"),
        )
    }

    fn created(sequence: u64) -> Result<Arc<FeedEvent>, ServiceError> {
        let key = ComponentKey::with_id(Kind::Service, "svc").unwrap();
        Ok(Arc::new(FeedEvent::new(
            EventDraft::bare(EventType::Created, key).at(sequence, crate::domain::now()),
        )))
    }

    async fn next(stream: &mut EventsBody) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream yields or ends")
            .map(|item| item.unwrap())
    }

    #[tokio::test]
    async fn an_idle_stream_gets_heartbeats_and_a_busy_one_its_frames_in_order() {
        let mut idle = body(
            Box::pin(futures_util::stream::pending()),
            Duration::from_millis(20),
            None,
        );
        for _ in 0..2 {
            assert_eq!(next(&mut idle).await.unwrap(), &b": heartbeat\n\n"[..]);
        }
        let items = vec![
            created(1),
            Err(ServiceError::InvalidInput("bad cursor".into())),
        ];
        let mut busy = body(
            Box::pin(futures_util::stream::iter(items)),
            Duration::from_secs(3600),
            None,
        );
        let first = next(&mut busy).await.unwrap();
        assert!(
            first.starts_with(b"id: 1\nevent: created\ndata: {") && first.ends_with(b"}\n\n"),
            "{first:?}"
        );
        let error = next(&mut busy).await.unwrap();
        assert!(
            error.starts_with(b"event: error\ndata: {\"code\":"),
            "{error:?}"
        );
        assert!(next(&mut busy).await.is_none(), "ends with its frames");
    }

    /// A waker that says when it was woken.
    struct Woken(tokio::sync::Notify);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.notify_one();
        }
    }

    /// What the stream has ready now (`None`: it would wait), polled with `woken`'s waker.
    fn ready(stream: &mut EventsBody, woken: &Arc<Woken>) -> Option<Bytes> {
        let waker = Waker::from(woken.clone());
        match Pin::new(stream).poll_next(&mut Context::from_waker(&waker)) {
            Poll::Ready(item) => Some(item.expect("a frame, not the end").unwrap()),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_stream_that_sent_an_event_skips_the_next_heartbeat() {
        let (events, mut feed) = tokio::sync::mpsc::unbounded_channel();
        let feed = futures_util::stream::poll_fn(move |cx| feed.poll_recv(cx));
        let mut stream = body(Box::pin(feed), Duration::from_millis(200), None);
        let woken = Arc::new(Woken(tokio::sync::Notify::new()));
        let wake_up = || async {
            tokio::time::timeout(Duration::from_secs(5), woken.0.notified())
                .await
                .expect("woken by the event or the heartbeat's timer")
        };
        assert_eq!(ready(&mut stream, &woken), None);
        events.send(created(1)).unwrap();
        wake_up().await;
        let frame = ready(&mut stream, &woken).expect("the event");
        assert!(frame.starts_with(b"id: 1\n"), "{frame:?}");
        assert_eq!(ready(&mut stream, &woken), None);
        // The heartbeat falls due: an event went out since, so nothing is sent.
        wake_up().await;
        assert_eq!(
            ready(&mut stream, &woken),
            None,
            "a busy stream needs no heartbeat"
        );
        // A whole period without an event: the heartbeat, and again the period after.
        for _ in 0..2 {
            wake_up().await;
            assert_eq!(
                ready(&mut stream, &woken).as_deref(),
                Some(&b": heartbeat\n\n"[..])
            );
            assert_eq!(ready(&mut stream, &woken), None);
        }
    }

    #[tokio::test]
    async fn the_subscribers_of_an_event_are_written_one_shared_frame() {
        let event = created(7).unwrap();
        let mut streams = [(); 2].map(|()| {
            body(
                Box::pin(futures_util::stream::iter([Ok(event.clone())])),
                Duration::from_secs(3600),
                None,
            )
        });
        let first = next(&mut streams[0]).await.unwrap();
        let second = next(&mut streams[1]).await.unwrap();
        assert!(
            first.starts_with(b"id: 7\nevent: created\ndata: {"),
            "{first:?}"
        );
        assert_eq!(first, second);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "framed once, not per subscriber"
        );
    }

    #[tokio::test]
    async fn a_stream_ends_when_the_server_begins_to_stop_though_it_was_waiting() {
        let signal = StopSignal::new();
        let mut stream = body(
            Box::pin(futures_util::stream::pending()),
            Duration::from_secs(3600),
            Some(signal.clone()),
        );
        // The stream first waits (its task registered with the signal), then the server stops.
        let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
        let ended = tokio::spawn(async move {
            let mut waiting_tx = Some(waiting_tx);
            futures_util::future::poll_fn(|cx| {
                let polled = stream.poll_next_unpin(cx);
                if polled.is_pending()
                    && let Some(tx) = waiting_tx.take()
                {
                    let _ = tx.send(());
                }
                polled
            })
            .await
        });
        waiting_rx.await.unwrap();
        signal.stop();
        let ended = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the stop wakes the stream")
            .unwrap();
        assert!(ended.is_none(), "ended, not a frame");
    }
}
