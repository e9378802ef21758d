//! GraphQL over WebSocket at `GET /graphql` (graphql-transport-ws and the legacy graphql-ws). The bearer token comes
//! in the `connection_init` payload, since browsers cannot set headers on a WebSocket. Operations run through the
//! same guards as over HTTP (`guard.rs`); this module keeps the protocol honest: `connection_init` within a bound
//! (4408), nothing before it (4401), a refused token (4403), unique operation ids (4409), well-formed messages
//! (4400), operations per connection and per token capped (counted for as long as the engine runs them), pings to
//! find peers that vanished, idle connections closed, and a goodbye (1001) when the server stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{ClientMessage, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::AppSchema;
use super::multipart::MAX_OPERATIONS_BYTES;
use super::share::{BACKLOG, Deliveries, Delivery, Membership, SharedFeeds, share_key};
use crate::api::auth::{Access, Tokens};
use crate::api::error::ApiError;
use crate::api::lease::ConnectionLease;
use crate::api::limits::check_websocket_origin;
use crate::api::metrics::Metrics;
use crate::api::state::AppState;

/// The code of the error a client gets for an operation over a cap.
const LIMIT_CODE: &str = "LIMIT_EXCEEDED";
/// How long the close frame may take to leave.
const GOODBYE: Duration = Duration::from_secs(2);
/// How often the server pings (the first time sooner: `api::keepalive`); a peer that answers nothing for two of these
/// is gone.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Most bytes waiting to be written to a client that does not read (pongs to its pings included): then the
/// connection fails instead of growing. Far above the largest answer the limits allow.
const MAX_WRITE_BUFFER: usize = 8 * MAX_OPERATIONS_BYTES;
/// The read buffer a connection allocates up front (tungstenite's default is 128 KiB, filled on the first read):
/// clients send only small operations, a larger message still grows it as needed, and an idle subscriber costs
/// 4 KiB here instead of 128 (10,000 subscribers held 1.5 GiB with the default).
const READ_BUFFER: usize = 4 * 1024;

fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The first GraphQL subprotocol the client offers.
fn protocol_of(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

/// `GET /graphql`: a WebSocket upgrade, otherwise a query in the query string.
pub async fn graphql_ws(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if !wants_websocket(&parts.headers) {
        let query = RawQuery(parts.uri.query().map(str::to_string));
        return super::http::graphql_get(State(state), parts.headers, query).await;
    }
    if let Err(e) = check_websocket_origin(&state.limits, &parts.headers) {
        return e.into_response();
    }
    let Some(protocol) = protocol_of(&parts.headers) else {
        return ApiError::BadRequest(
            "a GraphQL WebSocket needs the subprotocol graphql-transport-ws or graphql-ws".into(),
        )
        .into_response();
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let body = json!({ "detail": rejection.body_text(), "code": "INVALID_INPUT" });
            return (rejection.status(), axum::Json(body)).into_response();
        }
    };
    let connection = Connection {
        schema: state.schema.clone(),
        tokens: state.tokens.clone(),
        per_token: state.subscriptions.clone(),
        per_connection: OperationCounts::new(state.limits.max_subscriptions_per_connection),
        feeds: state.feeds.clone(),
        metrics: state.metrics.clone(),
        protocol,
        init_timeout: state.limits.ws_init_timeout,
        idle_timeout: state.limits.ws_idle_timeout,
        lease: parts.extensions.get::<ConnectionLease>().cloned(),
    };
    upgrade
        .protocols([protocol.sec_websocket_protocol()])
        // A message is one operation: the same bound as a JSON request body.
        .max_message_size(MAX_OPERATIONS_BYTES)
        .max_frame_size(MAX_OPERATIONS_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| connection.serve(socket))
}

/// Operations running over WebSocket, per key (a token's label, or the address of a client without a token),
/// within a cap.
#[derive(Debug)]
pub struct OperationCounts {
    max: usize,
    running: Mutex<HashMap<String, usize>>,
}

impl OperationCounts {
    pub fn new(max: usize) -> Arc<OperationCounts> {
        Arc::new(OperationCounts {
            max,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more operation of `key`, if it has one left.
    fn take(self: &Arc<Self>, key: &str) -> Option<OperationSlot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(key.to_string()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(OperationSlot {
            owner: self.clone(),
            key: key.to_string(),
        })
    }
}

/// One running operation of a key; given back when dropped.
struct OperationSlot {
    owner: Arc<OperationCounts>,
    key: String,
}

impl Drop for OperationSlot {
    fn drop(&mut self) {
        let mut running = self.owner.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.key);
            }
        }
    }
}

/// The ids of a connection's running operations, each with the generation that started it: an id may be used again
/// once the client has completed it, while the engine may still be winding the old one down.
type RunningIds = Arc<Mutex<HashMap<String, u64>>>;

/// What one operation holds while the engine runs it: its places under the caps and its id. It travels in the
/// operation's request data, so it is dropped exactly when the engine drops the operation (completed, stopped, or
/// the connection gone), whatever the messages say.
struct Ticket {
    _per_connection: OperationSlot,
    _per_token: OperationSlot,
    running: RunningIds,
    id: String,
    generation: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(&self.id) == Some(&self.generation) {
            running.remove(&self.id);
        }
    }
}

struct Connection {
    schema: AppSchema,
    tokens: Tokens,
    per_token: Arc<OperationCounts>,
    per_connection: Arc<OperationCounts>,
    feeds: Arc<SharedFeeds>,
    metrics: Arc<Metrics>,
    protocol: WebSocketProtocols,
    init_timeout: Duration,
    idle_timeout: Duration,
    lease: Option<ConnectionLease>,
}

/// What the connection does with a client's message.
enum Step {
    /// Hand it to the protocol engine.
    Forward(Box<ClientMessage>),
    /// Answer it ourselves and go on.
    Answer(String),
    /// Nothing to send now (the operation joined a share).
    Done,
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// The state of one connection as this module polices it; the protocol engine keeps the rest.
struct Session {
    /// The access `connection_init` established, until the engine takes it.
    access: Arc<Mutex<Option<Access>>>,
    /// What the per-token cap counts this connection's operations under, once `connection_init` was accepted.
    counted_as: Option<String>,
    running: RunningIds,
    generations: u64,
    /// The access `connection_init` established, for the operations that join a share.
    shared_access: Option<Access>,
    /// The operations that joined a share, and where their shares deliver.
    shared: Vec<SharedOperation>,
    deliveries: Deliveries,
    /// Whether `connection_ack` went out: nothing of an operation may precede it.
    acked: bool,
    /// Answers to operations that came before `connection_ack` went out, in order: sent right behind it.
    held: Vec<String>,
}

/// An operation of this connection that joined a share: its places under the caps and its membership.
struct SharedOperation {
    id: String,
    /// The id as a JSON string, for the envelope of each result.
    id_json: String,
    membership: Membership,
    _ticket: Ticket,
}

impl Connection {
    async fn serve(self, socket: WebSocket) {
        let (mut sink, incoming) = socket.split();
        // The protocol engine reads the messages this connection lets through.
        // Boxed: the channel allocates its slots up front, and a message (a whole request) is large.
        let (tx, mut rx) = mpsc::channel::<Box<ClientMessage>>(8);
        let messages =
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|m| m.map(|m| Ok(*m))));
        let (deliveries, mut delivered) = mpsc::unbounded_channel();
        let session_access = Arc::new(Mutex::new(None::<Access>));
        let engine_access = session_access.clone();
        let engine = async_graphql::http::WebSocket::from_message_stream(
            self.schema.clone(),
            messages,
            self.protocol,
        )
        .on_connection_init(move |_payload| async move {
            let access = engine_access
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .ok_or_else(|| async_graphql::Error::new("not authenticated"))?;
            let mut data = Data::default();
            data.insert(access);
            Ok(data)
        });
        // The client's messages, each with the place in the engine's queue it will take.
        let reads = futures_util::stream::unfold((tx, incoming), |(tx, mut incoming)| async move {
            let permit = tx.clone().reserve_owned().await.ok()?;
            let message = incoming.next().await;
            Some(((permit, message), (tx, incoming)))
        });
        // Polled only when they have something: a delivery wakes the connection without polling these.
        let mut reads = WokenOnly::new(Box::pin(reads));
        let mut engine = WokenOnly::new(engine);
        let mut session = Session {
            access: session_access,
            counted_as: None,
            running: RunningIds::default(),
            generations: 0,
            shared_access: None,
            shared: Vec::new(),
            deliveries,
            acked: false,
            held: Vec::new(),
        };
        let init_deadline = tokio::time::sleep(self.init_timeout);
        tokio::pin!(init_deadline);
        let idle_deadline = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle_deadline);
        let mut keepalive = tokio::time::interval_at(
            tokio::time::Instant::now() + crate::api::keepalive::first_due(KEEPALIVE),
            KEEPALIVE,
        );
        let mut last_heard = tokio::time::Instant::now();
        let stopping = async {
            match &self.lease {
                Some(lease) => lease.stopping().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopping);

        let close = loop {
            tokio::select! {
                // Deliveries first, and nothing else polled when one is ready: at 10,000 subscribers the wake-up for
                // each result is most of the connection's own cost. (The channel's cooperative budget still lets the
                // other branches in during a long burst.)
                biased;
                Some((slot, delivery)) = delivered.recv(), if session.acked => {
                    // Writes this and whatever else is waiting, then flushes once.
                    let mut next = Some((slot, delivery));
                    let mut written = true;
                    while let Some((slot, delivery)) = next.take() {
                        if let Some(text) = session.frame(slot, delivery, self.protocol) {
                            if sink.feed(Message::text(text)).await.is_err() {
                                written = false;
                                break;
                            }
                        }
                        next = delivered.try_recv().ok();
                    }
                    if !written || sink.flush().await.is_err() {
                        break None;
                    }
                }
                next = reads.next() => {
                    let Some((permit, message)) = next else { break None };
                    last_heard = tokio::time::Instant::now();
                    idle_deadline.as_mut().reset(last_heard + self.idle_timeout);
                    let bytes = match message {
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Err(e)) => break Some(read_failure(&e)),
                        Some(Ok(Message::Close(_))) | None => break None,
                    };
                    match self.step(&mut session, &bytes) {
                        Step::Forward(message) => {
                            permit.send(message);
                        }
                        Step::Done => {}
                        // Before the engine's `connection_ack`, held for it (the client would drop the
                        // connection for any other first message).
                        Step::Answer(text) if !session.acked => session.held.push(text),
                        Step::Answer(text) => {
                            if sink.send(Message::text(text)).await.is_err() {
                                break None;
                            }
                        }
                        Step::Close(code, reason) => break Some((code, reason)),
                    }
                }
                out = engine.next() => match out {
                    Some(WsMessage::Text(text)) => {
                        // Parsed only until the ack: whatever the engine's field order.
                        session.acked = session.acked
                            || serde_json::from_str::<serde_json::Value>(&text)
                                .is_ok_and(|m| m["type"] == "connection_ack");
                        let held = if session.acked { std::mem::take(&mut session.held) } else { Vec::new() };
                        let mut written = sink.feed(Message::text(text)).await.is_ok();
                        for text in held {
                            written = written && sink.feed(Message::text(text)).await.is_ok();
                        }
                        if !written || sink.flush().await.is_err() {
                            break None;
                        }
                    }
                    Some(WsMessage::Close(code, reason)) => break Some((code, reason)),
                    None => break Some((1000, String::new())),
                },
                () = &mut init_deadline, if session.counted_as.is_none() => {
                    break Some((4408, "Connection initialisation timeout".into()));
                }
                () = &mut idle_deadline => {
                    // Like an idle keep-alive connection: a WebSocket that runs nothing gives its slot back.
                    if session.is_idle() {
                        break Some((1000, "idle: no operation running".into()));
                    }
                    idle_deadline.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
                }
                _ = keepalive.tick() => {
                    if last_heard.elapsed() > 2 * KEEPALIVE {
                        break Some((1001, "no answer to pings".into()));
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                }
                () = &mut stopping => break Some((1001, "the server is stopping".into())),
            }
        };
        // A client that reads nothing cannot hold the goodbye up: the socket is dropped after a short wait.
        let goodbye = async {
            if let Some((code, reason)) = close {
                let frame = CloseFrame {
                    code,
                    reason: truncate(&reason).into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
            let _ = sink.close().await;
        };
        let _ = tokio::time::timeout(GOODBYE, goodbye).await;
    }

    /// Decides what to do with one message of the client.
    fn step(&self, session: &mut Session, bytes: &[u8]) -> Step {
        let message = match ClientMessage::from_bytes(bytes) {
            Ok(message) => message,
            Err(e) => return Step::Close(4400, format!("Invalid message received: {e}")),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if session.counted_as.is_some() {
                    return Step::Close(4429, "Too many initialisation requests".into());
                }
                match self.authenticate(payload.as_ref()) {
                    Ok(access) => {
                        // Clients without a token share no budget with strangers: each address has its own.
                        session.counted_as = Some(match (&self.lease, access.caller.as_str()) {
                            (Some(lease), "anonymous") => format!("anonymous@{}", lease.peer_ip()),
                            (_, caller) => caller.to_string(),
                        });
                        session.shared_access = Some(access.clone());
                        *session.access.lock().unwrap_or_else(|e| e.into_inner()) = Some(access);
                        Step::Forward(Box::new(ClientMessage::ConnectionInit { payload }))
                    }
                    Err(e) => Step::Close(4403, e),
                }
            }
            ClientMessage::Start { id, mut payload } => {
                // The engine handles `connection_init` before it reads on, so an operation sent right behind it
                // (as clients that pipeline do) runs once the connection is acknowledged.
                let Some(counted_as) = session.counted_as.as_deref() else {
                    return Step::Close(4401, "Unauthorized".into());
                };
                if session.is_running(&id) {
                    return Step::Close(4409, format!("Subscriber for {id} already exists"));
                }
                let Some(per_connection) = self.per_connection.take("") else {
                    return Step::Answer(self.refusal(
                        &id,
                        format!(
                            "this connection runs {} operations already, the most allowed; complete one first",
                            self.per_connection.max
                        ),
                    ));
                };
                let Some(per_token) = self.per_token.take(counted_as) else {
                    return Step::Answer(self.refusal(
                        &id,
                        format!(
                            "this token runs {} WebSocket operations already, the most allowed",
                            self.per_token.max
                        ),
                    ));
                };
                session.generations += 1;
                session
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), session.generations);
                let ticket = Ticket {
                    _per_connection: per_connection,
                    _per_token: per_token,
                    running: session.running.clone(),
                    id: id.clone(),
                    generation: session.generations,
                };
                let shared = session
                    .shared_access
                    .as_ref()
                    .and_then(|access| Some((share_key(&payload, access)?, access)));
                if let Some((key, access)) = shared {
                    let membership = self.feeds.join(
                        &self.schema,
                        &self.metrics,
                        key,
                        payload,
                        access,
                        &session.deliveries,
                    );
                    session.shared.push(SharedOperation {
                        id_json: json!(id).to_string(),
                        id,
                        membership,
                        _ticket: ticket,
                    });
                    return Step::Done;
                }
                payload.data.insert(ticket);
                Step::Forward(Box::new(ClientMessage::Start { id, payload }))
            }
            ClientMessage::Stop { id } => {
                // The client is done with the id; its places are given back when the engine drops the operation.
                session
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(at) = session.shared.iter().position(|op| op.id == id) {
                    // As the engine does for its own operations: the leaving operation's `complete`.
                    session.shared.swap_remove(at);
                    return Step::Answer(json!({ "type": "complete", "id": id }).to_string());
                }
                Step::Forward(Box::new(ClientMessage::Stop { id }))
            }
            other => Step::Forward(Box::new(other)),
        }
    }

    /// The access a `connection_init` payload's token gives; a connection that may not even read is refused.
    fn authenticate(&self, payload: Option<&serde_json::Value>) -> Result<Access, String> {
        let presented = payload.and_then(|p| p.as_object()).and_then(|fields| {
            fields
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, value)| value.as_str())
        });
        let mut headers = HeaderMap::new();
        if let Some(value) = presented {
            let value = HeaderValue::from_str(value)
                .map_err(|_| "the Authorization value is not a valid header value".to_string())?;
            headers.insert(header::AUTHORIZATION, value);
        }
        if !self.tokens.enabled() {
            return Ok(Access::open());
        }
        let access = self.tokens.access(&headers).map_err(reason)?;
        access.allow(crate::api::auth::Need::Read).map_err(reason)?;
        Ok(access)
    }

    /// The protocol's error message for one operation that is not run.
    fn refusal(&self, id: &str, message: String) -> String {
        error_message(self.protocol, id, LIMIT_CODE, message)
    }
}

/// The protocol's error message for one operation, which ends it.
fn error_message(protocol: WebSocketProtocols, id: &str, code: &str, message: String) -> String {
    let error = json!({ "message": message, "extensions": { "code": code } });
    let payload = match protocol {
        WebSocketProtocols::GraphQLWS => json!([error]),
        WebSocketProtocols::SubscriptionsTransportWS => error,
    };
    json!({ "type": "error", "id": id, "payload": payload }).to_string()
}

impl Session {
    /// The message a share's delivery makes for the client; none when the operation is gone already.
    fn frame(
        &mut self,
        slot: u64,
        delivery: Delivery,
        protocol: WebSocketProtocols,
    ) -> Option<String> {
        let at = self
            .shared
            .iter()
            .position(|op| op.membership.slot == slot)?;
        match delivery {
            Delivery::Next(payload) => {
                let operation = &self.shared[at];
                operation
                    .membership
                    .pending
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let kind = match protocol {
                    WebSocketProtocols::GraphQLWS => "next",
                    WebSocketProtocols::SubscriptionsTransportWS => "data",
                };
                // The shared payload as it is: only the envelope is this subscriber's.
                let id = &operation.id_json;
                let mut text = String::with_capacity(payload.len() + id.len() + 32);
                text.push_str(r#"{"type":""#);
                text.push_str(kind);
                text.push_str(r#"","id":"#);
                text.push_str(id);
                text.push_str(r#","payload":"#);
                text.push_str(&payload);
                text.push('}');
                Some(text)
            }
            Delivery::Complete => {
                let operation = self.shared.swap_remove(at);
                Some(format!(
                    r#"{{"type":"complete","id":{}}}"#,
                    operation.id_json
                ))
            }
            Delivery::CutOff => {
                let operation = self.shared.swap_remove(at);
                Some(error_message(
                    protocol,
                    &operation.id,
                    "SUBSCRIBER_TOO_SLOW",
                    format!(
                        "this subscriber fell {BACKLOG} results behind the feed and was cut off; subscribe again \
                         with `after` set to the last sequence it received"
                    ),
                ))
            }
        }
    }

    fn is_running(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    fn is_idle(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// A stream polled only once something woke it since it last had nothing (or after it yielded): the connection's
/// loop polls every source each time it waits, and at 10,000 subscribers it waits once per event each; polling the
/// socket's reader every time was 8 % of the server's profile (1 % since).
struct WokenOnly<S> {
    inner: S,
    wake: Arc<WakeFlag>,
}

struct WakeFlag {
    woken: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::SeqCst);
        self.waker.wake();
    }
}

impl<S> WokenOnly<S> {
    fn new(inner: S) -> Self {
        WokenOnly {
            inner,
            wake: Arc::new(WakeFlag {
                woken: std::sync::atomic::AtomicBool::new(true),
                waker: futures_util::task::AtomicWaker::new(),
            }),
        }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for WokenOnly<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        self.wake.waker.register(cx.waker());
        if !self
            .wake
            .woken
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return std::task::Poll::Pending;
        }
        let waker = std::task::Waker::from(self.wake.clone());
        let polled = self
            .inner
            .poll_next_unpin(&mut std::task::Context::from_waker(&waker));
        if polled.is_ready() {
            // It may have more at once.
            self.wake
                .woken
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        polled
    }
}

/// How a connection whose message could not be read is closed: 1009 for one over the size bound (axum names no
/// type for it; tungstenite's message says "too long"), 1002 otherwise.
fn read_failure(e: &axum::Error) -> (u16, String) {
    let message = e.to_string();
    let code = if message.contains("too long") {
        1009
    } else {
        1002
    };
    (code, message)
}

fn reason(e: ApiError) -> String {
    match e {
        ApiError::Unauthenticated(m) | ApiError::Forbidden(m) => m,
        _ => "not allowed".into(),
    }
}

/// A close frame's reason has at most 123 bytes.
fn truncate(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(100);
        assert!(truncate(&long).len() <= 123);
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn a_token_runs_at_most_its_share_of_operations() {
        let operations = OperationCounts::new(2);
        let a = operations.take("t").unwrap();
        let _b = operations.take("t").unwrap();
        assert!(operations.take("t").is_none());
        assert!(operations.take("other").is_some());
        drop(a);
        assert!(operations.take("t").is_some());
    }

    #[test]
    fn the_offered_graphql_subprotocol_is_chosen() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, graphql-ws"),
        );
        assert_eq!(
            protocol_of(&headers),
            Some(WebSocketProtocols::SubscriptionsTransportWS)
        );
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat"),
        );
        assert_eq!(protocol_of(&headers), None);
    }
}
