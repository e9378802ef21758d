//! Shared live tails of the change feed over GraphQL WebSocket. Subscriptions that are the same operation (document,
//! operation name, variables) under the same access scope, following `componentEvents` from now (no `after`), share
//! one execution: the engine resolves each event once and its payload is serialised to JSON text once; each
//! subscriber's connection only wraps that text in its own envelope. Resolving the selection per subscriber cost
//! 15–22 µs of server CPU per delivery, which two cores cannot pay 10,000 times per event. A replay (`after`) or any
//! other operation runs on its own, as before. Every subscriber has passed the connection's guards (token, caps)
//! before it joins, and the shared execution passes the schema's guards with the same access scope, so each gets
//! the answer it would have got alone. The share never waits for a subscriber: one that falls [`BACKLOG`] events
//! behind is cut off with `SUBSCRIBER_TOO_SLOW` and resumes with `after:` its last sequence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Request, Response, Value};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::AppSchema;
use super::document::check_nesting;
use crate::api::auth::Access;
use crate::api::metrics::{Metrics, Subscribed};

/// Results a subscriber may have waiting for its connection to write before it is cut off. Each is a pointer to
/// the shared text, so 10,000 stalled subscribers hold little; the socket's own buffers hold more before this.
pub const BACKLOG: usize = 1024;

/// What a share hands a connection for one of its subscribers.
pub enum Delivery {
    /// A result, as the JSON text of the protocol's `payload`.
    Next(Arc<str>),
    /// The execution ended (after its last result).
    Complete,
    /// The subscriber fell [`BACKLOG`] results behind and left the share.
    CutOff,
}

/// Where a connection receives its subscribers' deliveries, each tagged with the subscriber's slot.
pub type Deliveries = mpsc::UnboundedSender<(u64, Delivery)>;

/// The shares of one server.
#[derive(Default)]
pub struct SharedFeeds {
    shares: Mutex<HashMap<String, Arc<Share>>>,
    slots: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key under which `request` is shared by senders with `access`, when it is a live tail of `componentEvents`
/// that can be shared: the root selection is nothing but `componentEvents` fields without an `after` (or with one
/// that is null), and the request carries no extensions.
pub fn share_key(request: &Request, access: &Access) -> Option<String> {
    if !request.extensions.0.is_empty() || !request.uploads.is_empty() {
        return None;
    }
    // The parser recurses on nesting: a deep document is left to the guard that refuses it.
    check_nesting(&request.query).ok()?;
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), None) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        _ => return None,
    };
    if operation.node.ty != OperationType::Subscription {
        return None;
    }
    for selection in &operation.node.selection_set.node.items {
        let Selection::Field(field) = &selection.node else {
            return None;
        };
        if field.node.name.node != "componentEvents" {
            return None;
        }
        let replays = field.node.arguments.iter().any(|(name, value)| {
            // A literal or a variable: null or absent follows from now. A variable left out takes the default
            // its definition gives (`$after: Long = 0` is a replay).
            let given = value.node.clone().into_const_with(|variable| {
                let default = || {
                    operation
                        .node
                        .variable_definitions
                        .iter()
                        .find(|definition| definition.node.name.node == variable)
                        .and_then(|definition| definition.node.default_value().cloned())
                };
                Ok::<_, ()>(
                    request
                        .variables
                        .get(&variable)
                        .cloned()
                        .or_else(default)
                        .unwrap_or_default(),
                )
            });
            name.node == "after" && given != Ok(Value::Null)
        });
        if replays {
            return None;
        }
    }
    let variables = serde_json::to_string(&request.variables).ok()?;
    Some(format!(
        "{}\n{:?}\n{variables}\n{}",
        access.scope(),
        request.operation_name,
        request.query
    ))
}

impl SharedFeeds {
    /// Joins the share of `key`, starting it with `request` under `access` when none runs. The subscriber's
    /// deliveries go to `to` under the slot of the membership returned; it leaves when that is dropped.
    pub fn join(
        self: &Arc<Self>,
        schema: &AppSchema,
        metrics: &Arc<Metrics>,
        key: String,
        request: Request,
        access: &Access,
        to: &Deliveries,
    ) -> Membership {
        let key = on_this_thread(key);
        let slot = self.slots.fetch_add(1, Ordering::Relaxed);
        let pending = Arc::new(AtomicUsize::new(0));
        let member = |live: bool| Member {
            to: to.clone(),
            pending: pending.clone(),
            counted: live.then(|| metrics.subscriber("graphql_ws")),
        };
        let mut shares = lock(&self.shares);
        if let Some(share) = shares.get(&key) {
            let mut state = lock(&share.state);
            if !state.closed {
                let member = member(state.live);
                state.members.insert(slot, member);
                return Membership {
                    share: share.clone(),
                    slot,
                    pending,
                };
            }
        }
        let share = Arc::new(Share::new(
            key.clone(),
            metrics.clone(),
            Arc::downgrade(self),
        ));
        lock(&share.state).members.insert(slot, member(false));
        let request = request
            .data(access.clone())
            .data(SharedRun(Arc::downgrade(&share)));
        let stream = schema.execute_stream(request);
        let task = tokio::spawn(run(share.clone(), stream));
        lock(&share.state).task = Some(task.abort_handle());
        shares.insert(key, share.clone());
        Membership {
            share,
            slot,
            pending,
        }
    }
}

/// `key`, for this thread when it runs a single-threaded runtime (a connection thread): each connection thread has
/// its own share of an operation, whose task runs there and wakes its members' connections from their own thread.
/// Waking a task of another single-threaded runtime costs a lock and a write to its event fd, once per member and
/// result; an execution more per thread costs once per result.
fn on_this_thread(key: String) -> String {
    if !crate::runtime::on_single_threaded_runtime() {
        return key;
    }
    format!("{key}\n{:?}", std::thread::current().id())
}

/// One shared execution and its subscribers.
pub struct Share {
    key: String,
    state: Mutex<ShareState>,
    metrics: Arc<Metrics>,
    feeds: Weak<SharedFeeds>,
}

struct ShareState {
    members: HashMap<u64, Member>,
    /// Whether the execution follows the feed: from then on each member counts as a connected subscriber.
    live: bool,
    /// Ended or left by all: a subscriber that comes now starts a new share.
    closed: bool,
    task: Option<AbortHandle>,
}

struct Member {
    to: Deliveries,
    /// Results handed to the connection and not yet written by it.
    pending: Arc<AtomicUsize>,
    counted: Option<Subscribed>,
}

/// A subscriber's place in a share; it leaves the share when dropped.
pub struct Membership {
    share: Arc<Share>,
    pub slot: u64,
    /// Results handed to the connection and not yet written by it: the connection counts down as it writes.
    pub pending: Arc<AtomicUsize>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let closed = {
            let mut state = lock(&self.share.state);
            state.members.remove(&self.slot);
            state.members.is_empty() && close(&mut state)
        };
        if closed {
            self.share.forget();
        }
    }
}

/// In the shared execution's data: its resolver says when it follows the feed, instead of counting one subscriber.
pub struct SharedRun(Weak<Share>);

impl SharedRun {
    pub fn following(&self) {
        let Some(share) = self.0.upgrade() else {
            return;
        };
        let mut state = lock(&share.state);
        if !state.live {
            state.live = true;
            for member in state.members.values_mut() {
                member.counted = Some(share.metrics.subscriber("graphql_ws"));
            }
        }
    }
}

/// Marks a share closed and stops its execution; true when it was open.
fn close(state: &mut ShareState) -> bool {
    if state.closed {
        return false;
    }
    state.closed = true;
    if let Some(task) = state.task.take() {
        task.abort();
    }
    true
}

impl Share {
    /// A share with no members yet, not yet following the feed.
    fn new(key: String, metrics: Arc<Metrics>, feeds: Weak<SharedFeeds>) -> Self {
        Self {
            key,
            state: Mutex::new(ShareState {
                members: HashMap::new(),
                live: false,
                closed: false,
                task: None,
            }),
            metrics,
            feeds,
        }
    }

    /// Removes the share from the server's shares, unless another took its place already.
    fn forget(&self) {
        let Some(feeds) = self.feeds.upgrade() else {
            return;
        };
        let mut shares = lock(&feeds.shares);
        if shares
            .get(&self.key)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), self))
        {
            shares.remove(&self.key);
        }
    }

    /// Hands a result to every member; one that is [`BACKLOG`] behind is cut off instead, one whose connection is
    /// gone leaves.
    fn broadcast(&self, payload: Arc<str>) {
        let closed = {
            let mut state = lock(&self.state);
            state.members.retain(|slot, member| {
                if member.pending.load(Ordering::Relaxed) >= BACKLOG {
                    let _ = member.to.send((*slot, Delivery::CutOff));
                    return false;
                }
                member.pending.fetch_add(1, Ordering::Relaxed);
                member
                    .to
                    .send((*slot, Delivery::Next(payload.clone())))
                    .is_ok()
            });
            state.members.is_empty() && close(&mut state)
        };
        if closed {
            self.forget();
        }
    }

    /// The execution ended: every member gets its end.
    fn end(&self) {
        let opened = {
            let mut state = lock(&self.state);
            for (slot, member) in state.members.drain() {
                let _ = member.to.send((slot, Delivery::Complete));
            }
            // The task is ending by itself.
            state.task = None;
            close(&mut state)
        };
        if opened {
            self.forget();
        }
    }
}

async fn run(share: Arc<Share>, stream: impl Stream<Item = Response>) {
    let mut stream = std::pin::pin!(stream);
    while let Some(response) = stream.next().await {
        // Errors without data end the execution: from now on a subscriber starts its own, instead of joining
        // this one between its last result and its end and getting a bare `complete`.
        if response.data == Value::Null && response.is_err() {
            share.forget();
        }
        // A `Response` always serialises.
        let payload = serde_json::to_string(&response).unwrap_or_default();
        share.broadcast(payload.into());
    }
    share.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, variables: serde_json::Value) -> Request {
        Request::new(query).variables(async_graphql::Variables::from_json(variables))
    }

    #[test]
    fn each_connection_thread_has_its_own_share_of_an_operation() {
        let on_a_connection_thread = || {
            std::thread::spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                runtime.block_on(async { [on_this_thread("k".into()), on_this_thread("k".into())] })
            })
            .join()
            .unwrap()
        };
        let [first, again] = on_a_connection_thread();
        assert_eq!(first, again, "one share per operation on a thread");
        let [other, _] = on_a_connection_thread();
        assert_ne!(first, other, "another thread, another share");
        // Tasks of a multi-threaded runtime move between its threads: one share for all of them.
        let shared = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        assert_eq!(shared.block_on(async { on_this_thread("k".into()) }), "k");
    }

    #[test]
    fn only_live_tails_of_the_same_operation_and_scope_share() {
        let open = Access::open();
        let key = |query: &str, variables| share_key(&request(query, variables), &open);
        let tail = "subscription { componentEvents { sequence } }";
        assert!(key(tail, serde_json::json!({})).is_some());
        assert_eq!(
            key(tail, serde_json::json!({})),
            key(tail, serde_json::json!({}))
        );
        // A replay starts at its own place: never shared; a null `after` is a live tail.
        assert!(
            key(
                "subscription { componentEvents(after: 3) { sequence } }",
                serde_json::json!({})
            )
            .is_none()
        );
        let with_after = "subscription($a: Long) { componentEvents(after: $a) { sequence } }";
        assert!(key(with_after, serde_json::json!({ "a": 3 })).is_none());
        assert!(key(with_after, serde_json::json!({})).is_some());
        assert!(key(with_after, serde_json::json!({ "a": null })).is_some());
        // A variable left out takes its definition's default; an explicit null overrides it.
        let with_default = "subscription($a: Long = 0) { componentEvents(after: $a) { sequence } }";
        assert!(key(with_default, serde_json::json!({})).is_none());
        assert!(key(with_default, serde_json::json!({ "a": null })).is_some());
        // Other variables, other results.
        let filtered =
            "subscription($k: [ComponentKind!]) { componentEvents(kinds: $k) { sequence } }";
        assert_ne!(
            key(filtered, serde_json::json!({ "k": ["SERVICE"] })),
            key(filtered, serde_json::json!({ "k": ["MODEL"] }))
        );
        // Anything else runs on its own.
        assert!(key("query { lastSequence }", serde_json::json!({})).is_none());
        assert!(
            key(
                "subscription { pipelineResolutions { lock } }",
                serde_json::json!({})
            )
            .is_none()
        );
        assert!(
            key(
                "subscription { ... on SubscriptionRoot { componentEvents { sequence } } }",
                serde_json::json!({})
            )
            .is_none()
        );
        assert!(key("subscription {", serde_json::json!({})).is_none());
        let deep = format!(
            "subscription {}{}",
            "{ a ".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(key(&deep, serde_json::json!({})).is_none());
    }

    #[tokio::test]
    async fn a_subscriber_that_comes_after_the_error_that_ends_a_share_starts_its_own() {
        let feeds = Arc::new(SharedFeeds::default());
        let share = Arc::new(Share::new(
            "k".into(),
            Arc::new(Metrics::new()),
            Arc::downgrade(&feeds),
        ));
        lock(&feeds.shares).insert("k".into(), share.clone());
        let (to, mut delivered) = mpsc::unbounded_channel();
        let member = Member {
            to,
            pending: Arc::new(AtomicUsize::new(0)),
            counted: None,
        };
        lock(&share.state).members.insert(1, member);
        // The error, and the execution has not yet said it ended.
        let error = Response::from_errors(vec![async_graphql::ServerError::new("bad", None)]);
        let stream = futures_util::stream::iter([error]).chain(futures_util::stream::pending());
        let task = tokio::spawn(run(share.clone(), stream));
        let (_, delivery) = delivered.recv().await.unwrap();
        assert!(matches!(delivery, Delivery::Next(text) if text.contains("bad")));
        assert!(
            lock(&feeds.shares).get("k").is_none(),
            "nobody joins the share once its error went out"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_keep_up_is_cut_off_and_the_others_get_everything() {
        let metrics = Arc::new(Metrics::new());
        let share = Share::new(String::new(), metrics.clone(), Weak::new());
        lock(&share.state).live = true;
        let (reader_to, mut reader) = mpsc::unbounded_channel();
        let (stalled_to, mut stalled) = mpsc::unbounded_channel();
        let reader_pending = Arc::new(AtomicUsize::new(0));
        for (slot, to, pending) in [
            (1, reader_to, reader_pending.clone()),
            (2, stalled_to, Arc::new(AtomicUsize::new(0))),
        ] {
            let member = Member {
                to,
                pending,
                counted: None,
            };
            lock(&share.state).members.insert(slot, member);
        }
        for i in 0..BACKLOG + 10 {
            share.broadcast(i.to_string().into());
            // The reader's connection writes each as it comes; the stalled one writes nothing.
            let (slot, delivery) = reader.try_recv().unwrap();
            assert_eq!(slot, 1);
            assert!(matches!(delivery, Delivery::Next(text) if *text == *i.to_string()));
            reader_pending.fetch_sub(1, Ordering::Relaxed);
        }
        let mut held = 0;
        while let Ok((_, delivery)) = stalled.try_recv() {
            match delivery {
                Delivery::Next(_) => held += 1,
                Delivery::CutOff => break,
                Delivery::Complete => panic!("cut off, not completed"),
            }
        }
        assert_eq!(held, BACKLOG, "the backlog held for it is bounded");
        assert!(stalled.try_recv().is_err(), "nothing after the cut");
        assert_eq!(lock(&share.state).members.len(), 1);
    }
}
