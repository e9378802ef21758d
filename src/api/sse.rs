//! `GET /events`: the change feed as Server-Sent Events, for inference servers and shell scripts (`curl -N`).
//!
//! Each event carries `id: <sequence>`, so a client that reconnects with `Last-Event-ID` resumes right after the
//! last event it received. Comment lines keep an idle stream open through proxies. An `after` older than the
//! retained feed answers `410 Gone` with an `EVENTS_EXPIRED` JSON body before any stream starts; one beyond the
//! newest event (a cursor of another feed) `409 Conflict` with `EVENTS_AHEAD`. The `Feed-Id` header names the feed
//! the sequences belong to. Streams end as soon as the server begins to shut down.

use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use crate::api::lease::ConnectionLease;
use crate::domain::{EventFilter, EventType, Kind};
use crate::service::ServiceError;

/// How often a stream sends a comment line (an idle one needs it; a busy one gets it anyway).
const HEARTBEAT: Duration = Duration::from_secs(15);
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
    Router::new().route("/events", get(events))
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
    let stream = state.service.follow_shared(after, filter).await?;
    let stream = match lease {
        Some(Extension(lease)) => stream.take_until(lease.stopping()).boxed(),
        None => stream,
    };
    let subscribed = state.metrics.subscriber("sse");
    let frames = stream.map(move |item| {
        let _subscribed = &subscribed;
        match item {
            // The JSON is the one every subscriber shares; only the few header bytes are this stream's.
            Ok(event) => frame(
                &event.event.sequence.to_string(),
                event.event.draft.event_type.as_str(),
                event.json(),
            ),
            Err(e) => {
                super::error::log_if_server_fault(&e);
                let body =
                    json!({ "code": super::error::error_code(&e), "message": e.to_string() });
                frame("", "error", body.to_string().as_bytes())
            }
        }
    });
    let mut response = Response::new(Body::from_stream(with_heartbeats(frames, HEARTBEAT)));
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

/// The frames, with a comment line `every` so often that keeps an idle stream open through proxies. The timer is
/// not reset by events (a reset per event and subscriber was a measurable cost of fanning out): a busy stream gets
/// a spare comment now and then. Ends when the frames end.
fn with_heartbeats(
    frames: impl Stream<Item = Bytes> + Send + 'static,
    every: Duration,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
    let heartbeat = Box::pin(tokio::time::sleep(every));
    futures_util::stream::unfold(
        (Box::pin(frames), heartbeat),
        move |(mut frames, mut heartbeat)| async move {
            let next = tokio::select! {
                biased;
                frame = frames.next() => frame?,
                () = &mut heartbeat => {
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + every);
                    Bytes::from_static(b": heartbeat\n\n")
                }
            };
            Some((Ok(next), (frames, heartbeat)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(
        stream: &mut (impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Unpin),
    ) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream yields or ends")
            .map(|item| item.unwrap())
    }

    #[tokio::test]
    async fn an_idle_stream_gets_heartbeats_and_a_busy_one_its_frames_in_order() {
        let mut idle = Box::pin(with_heartbeats(
            futures_util::stream::pending(),
            Duration::from_millis(20),
        ));
        for _ in 0..2 {
            assert_eq!(next(&mut idle).await.unwrap(), &b": heartbeat\n\n"[..]);
        }
        let frames = [
            frame("1", "created", b"{}"),
            frame("", "error", b"{\"code\":\"X\"}"),
        ];
        let mut busy = Box::pin(with_heartbeats(
            futures_util::stream::iter(frames.clone()),
            Duration::from_secs(3600),
        ));
        assert_eq!(
            next(&mut busy).await.unwrap(),
            &b"id: 1\nevent: created\ndata: {}\n\n"[..]
        );
        assert_eq!(
            next(&mut busy).await.unwrap(),
            &b"event: error\ndata: {\"code\":\"X\"}\n\n"[..]
        );
        assert!(next(&mut busy).await.is_none(), "ends with its frames");
    }
}
