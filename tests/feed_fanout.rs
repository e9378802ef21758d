//! The change feed fans out: one reader per process reads each committed event from the store, however many
//! subscribers follow, and a subscriber that never reads slows nobody. The store is the real embedded store with
//! its feed wrapped to count the reads that reach it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use component_repository::store::embedded::EmbeddedStore;
use component_repository::store::{
    AliasStore, BlobStore, ComponentStore, EventBatch, EventRetention, FeedStore, MirrorStore,
    Store, StoreError, UploadStore, WebhookStore,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The real store, its feed reads counted.
struct CountingFeed {
    inner: EmbeddedStore,
    reads: AtomicUsize,
}

#[async_trait]
impl Store for CountingFeed {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn components(&self) -> &dyn ComponentStore {
        self.inner.components()
    }
    fn blobs(&self) -> &dyn BlobStore {
        self.inner.blobs()
    }
    fn aliases(&self) -> &dyn AliasStore {
        self.inner.aliases()
    }
    fn feed(&self) -> &dyn FeedStore {
        self
    }
    fn webhooks(&self) -> &dyn WebhookStore {
        self.inner.webhooks()
    }
    fn uploads(&self) -> &dyn UploadStore {
        self.inner.uploads()
    }
    fn devices(&self) -> &dyn component_repository::store::DeviceStore {
        self.inner.devices()
    }
    fn rollouts(&self) -> &dyn component_repository::store::RolloutStore {
        self.inner.rollouts()
    }
    fn mirror(&self) -> Option<&dyn MirrorStore> {
        self.inner.mirror()
    }
}

#[async_trait]
impl FeedStore for CountingFeed {
    async fn events(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.feed().events(after, limit).await
    }
    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.inner.feed().last_sequence().await
    }
    async fn feed_id(&self) -> Result<String, StoreError> {
        self.inner.feed().feed_id().await
    }
    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.feed().event_signal()
    }
    async fn expire_events(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        self.inner.feed().expire_events(retention).await
    }
}

/// Counts the events an SSE subscriber receives, until it has `wanted`.
async fn receive(response: reqwest::Response, wanted: usize) -> usize {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let (mut text, mut seen) = (String::new(), 0);
    while seen < wanted {
        let Some(chunk) = body.next().await else {
            break;
        };
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            seen += usize::from(block.lines().any(|l| l.starts_with("data:")));
        }
    }
    seen
}

#[tokio::test]
async fn each_event_is_read_from_the_store_once_whatever_the_number_of_subscribers() {
    const SUBSCRIBERS: usize = 40;
    const CHANGES: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CountingFeed {
        inner: EmbeddedStore::open(&dir.path().join("data")).await.unwrap(),
        reads: AtomicUsize::new(0),
    });
    let app = common::TestApp::start(store.clone(), dir, None, common::test_config()).await;

    // A subscriber that never reads a byte of its stream.
    let mut stalled = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();

    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        // The response (its headers) comes once the subscription follows the feed.
        let response = app.get_with("/events", &[]).await;
        subscribers.push(tokio::spawn(receive(response, CHANGES)));
    }
    let reads_before = store.reads.load(Ordering::SeqCst);
    for i in 0..CHANGES {
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
            json!({ "id": format!("svc-{i}") }),
        )
        .await;
    }
    for subscriber in subscribers {
        let seen = tokio::time::timeout(Duration::from_secs(30), subscriber)
            .await
            .expect("every subscriber got every event in time, the stalled one notwithstanding")
            .unwrap();
        assert_eq!(seen, CHANGES);
    }
    let reads = store.reads.load(Ordering::SeqCst) - reads_before;
    assert!(
        reads <= 2 * CHANGES + 2,
        "{reads} store reads for {CHANGES} events and {SUBSCRIBERS} subscribers: the live feed is read once per \
         commit, not once per subscriber"
    );
    drop(stalled);
}

/// Takes the whole events off the front of an SSE text and gives their `id:`s, in order; a partial event stays.
fn take_event_ids(text: &mut String) -> Vec<u64> {
    let Some(end) = text.rfind("\n\n") else {
        return Vec::new();
    };
    let whole: String = text.drain(..end + 2).collect();
    whole
        .split("\n\n")
        .filter(|block| block.lines().any(|l| l.starts_with("data:")))
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("id: ")))
        .map(|id| id.trim().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_after_a_bounded_backlog_and_resumes_with_last_event_id()
 {
    // Enough events to fill the stalled subscriber's socket buffers and the server's write buffer many times.
    const CHANGES: usize = 20_000;
    const BATCH: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).await.unwrap());
    let config = common::config_with(|c| c.connections.send_idle_timeout = Duration::from_secs(1));
    let app = common::TestApp::start(store, dir, None, config).await;

    // A small receive window, and not one byte read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.addr).await.unwrap();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let live = app.get_with("/events", &[]).await;
    assert!(
        app.until_event_subscribers("sse", 2.0).await,
        "both subscribers follow the feed"
    );
    let live = tokio::spawn(receive(live, CHANGES));

    create_services_in_batches(&app, CHANGES, BATCH).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), live)
        .await
        .expect("the reading subscriber got every event while the other read nothing")
        .unwrap();
    assert_eq!(seen, CHANGES);

    // The stalled subscriber's connection is closed: the gauge shows only nobody (the live one has left too).
    assert!(
        common::eventually(Duration::from_secs(15), async || app
            .event_subscribers("sse")
            .await
            == 0.0)
        .await,
        "the subscriber that read nothing was cut off after the send idle timeout"
    );
    let mut received = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut received),
    )
    .await
    .expect("the cut-off connection ends");
    let before_cut = take_event_ids(&mut String::from_utf8_lossy(&received).into_owned());
    assert!(
        before_cut.len() < CHANGES,
        "the backlog held for a stalled subscriber is bounded: {} of {CHANGES} events reached it",
        before_cut.len()
    );

    // It resumes after the last whole event it got, and gets every other event once, in order.
    let last = before_cut.last().copied().unwrap_or(0);
    let resumed = app
        .get_with("/events", &[("last-event-id", &last.to_string())])
        .await;
    assert_eq!(resumed.status(), 200);
    let mut body = resumed.bytes_stream();
    let mut text = String::new();
    let mut after_cut = Vec::new();
    while before_cut.len() + after_cut.len() < CHANGES {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the resumed stream delivers the rest")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        after_cut.extend(take_event_ids(&mut text));
    }
    let all: Vec<u64> = before_cut.iter().chain(&after_cut).copied().collect();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted, "in order, none twice");
    assert_eq!(all.len(), CHANGES);
}

/// Two WebSocket subscribers to `query`, both following the feed once this returns: one on a connection with a
/// small receive window that reads not one byte after `connection_ack` (tungstenite, as the other WebSocket tests),
/// and one that reads.
async fn stalled_and_reading_subscribers(
    app: &common::TestApp,
    query: &str,
    variables: serde_json::Value,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    common::ws::GraphqlSocket,
) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut request = format!("ws://{}/graphql", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut stalled, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let send = |message: serde_json::Value| Message::text(message.to_string());
    stalled
        .send(send(json!({ "type": "connection_init", "payload": {} })))
        .await
        .unwrap();
    let ack = stalled.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    stalled
        .send(send(json!({
            "type": "subscribe", "id": "1", "payload": { "query": query, "variables": variables },
        })))
        .await
        .unwrap();

    let mut live = common::ws::GraphqlSocket::connect(app.addr, "graphql-transport-ws")
        .await
        .unwrap();
    live.init(json!({})).await.unwrap();
    live.start("1", query, variables).await;
    assert!(
        app.until_event_subscribers("graphql_ws", 2.0).await,
        "both subscribers follow the feed"
    );
    (stalled, live)
}

/// Makes `count` changes (in batches of `batch`) while `live` reads them, each within 10 s of the one before;
/// gives the socket back.
async fn changes_read_by(
    app: &common::TestApp,
    mut live: common::ws::GraphqlSocket,
    count: usize,
    batch: usize,
) -> common::ws::GraphqlSocket {
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < count {
            match live.next_result(Duration::from_secs(10)).await {
                Some(Ok(_)) => seen += 1,
                other => panic!("after {seen} events: {other:?}"),
            }
        }
        live
    });
    create_services_in_batches(app, count, batch).await;
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reading subscriber got every event while the other read nothing")
        .unwrap()
}

/// The sequences of the next `count` results of `query` (which takes `$after`) followed from after `last`, over a
/// new WebSocket connection.
async fn resumed_after(app: &common::TestApp, query: &str, last: u64, count: usize) -> Vec<u64> {
    let mut resumed = common::ws::GraphqlSocket::connect(app.addr, "graphql-transport-ws")
        .await
        .unwrap();
    resumed.init(json!({})).await.unwrap();
    resumed.start("1", query, json!({ "after": last })).await;
    let mut sequences = Vec::with_capacity(count);
    while sequences.len() < count {
        let data = resumed
            .next_result(Duration::from_secs(10))
            .await
            .expect("the resumed subscription delivers the rest")
            .unwrap();
        sequences.push(data["componentEvents"]["sequence"].as_u64().unwrap());
    }
    sequences
}

/// The sequences of the `componentEvents` results among WebSocket messages.
fn sequence_of(message: &serde_json::Value) -> Option<u64> {
    (message["type"] == "next").then(|| {
        message["payload"]["data"]["componentEvents"]["sequence"]
            .as_u64()
            .expect("a result carries its sequence")
    })
}

#[tokio::test]
async fn a_websocket_subscriber_that_never_reads_slows_no_other_is_cut_off_and_resumes_with_after()
{
    use tokio_tungstenite::tungstenite::Message;
    const CHANGES: usize = 20_000;
    const BATCH: usize = 100;
    const FOLLOW: &str =
        "subscription($after: Long) { componentEvents(after: $after) { sequence id } }";
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).await.unwrap());
    let config = common::config_with(|c| c.connections.send_idle_timeout = Duration::from_secs(1));
    let app = common::TestApp::start(store, dir, None, config).await;

    let (mut stalled, live) = stalled_and_reading_subscribers(&app, FOLLOW, json!({})).await;
    drop(changes_read_by(&app, live, CHANGES, BATCH).await);

    // The stalled subscriber's connection is closed (the live one has left too).
    assert!(
        common::eventually(Duration::from_secs(15), async || app
            .event_subscribers("graphql_ws")
            .await
            == 0.0)
        .await,
        "the subscriber that read nothing was cut off after the send idle timeout"
    );
    let mut before_cut = Vec::new();
    // What the kernel still holds for it (up to the server's send buffer) may come slowly: with BBR the closed
    // socket paced it at a message a millisecond, 18 s for the 15,000 messages it held on one host.
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(message)) = stalled.next().await {
            if let Message::Text(text) = message {
                let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                before_cut.extend(sequence_of(&message));
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the cut-off connection ends");
    assert!(
        before_cut.len() < CHANGES,
        "the backlog held for a stalled subscriber is bounded: {} of {CHANGES} events reached it",
        before_cut.len()
    );

    // It resumes after the last event it got, and gets every other event once, in order.
    let last = before_cut.last().copied().unwrap_or(0);
    let after_cut = resumed_after(&app, FOLLOW, last, CHANGES - before_cut.len()).await;
    let all: Vec<u64> = before_cut.iter().chain(&after_cut).copied().collect();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted, "in order, none twice");
    assert_eq!(all.len(), CHANGES);
}

#[tokio::test]
async fn a_websocket_subscriber_that_falls_a_bounded_backlog_behind_is_told_and_the_others_go_on() {
    use tokio_tungstenite::tungstenite::Message;
    // More than the backlog a subscriber may have waiting plus what the socket buffers hold (the kernel lets the
    // server's grow to 4 MiB): results of about 1.5 KiB (the id ten times over), 10,000 of them.
    const CHANGES: usize = 10_000;
    const BATCH: usize = 100;
    const FOLLOW: &str = "subscription { componentEvents { sequence id i1: id i2: id i3: id i4: id i5: id \
        i6: id i7: id i8: id i9: id } }";
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).await.unwrap());
    // The connection itself is not cut for not reading within the test: only the subscription is.
    let config =
        common::config_with(|c| c.connections.send_idle_timeout = Duration::from_secs(600));
    let app = common::TestApp::start(store, dir, None, config).await;

    // The same operation: the two share its execution (when their connections are on one connection thread).
    let (mut stalled, live) = stalled_and_reading_subscribers(&app, FOLLOW, json!({})).await;
    let live = changes_read_by(&app, live, CHANGES, BATCH).await;

    // While it still reads nothing, the stalled subscriber no longer counts: the server let it go.
    assert!(
        app.until_event_subscribers("graphql_ws", 1.0).await,
        "the subscriber that fell behind was cut off"
    );
    drop(live);
    // It reads what was written for it, then learns why it got no more.
    let mut before_cut = Vec::new();
    let told = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("the messages written before the cut arrive")
            .expect("the connection stays open")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let message: serde_json::Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "error" {
            break message;
        }
        before_cut.extend(sequence_of(&message));
    };
    assert_eq!(told["id"], "1");
    assert_eq!(
        told["payload"][0]["extensions"]["code"], "SUBSCRIBER_TOO_SLOW",
        "{told}"
    );
    assert!(
        !before_cut.is_empty() && before_cut.len() < CHANGES,
        "the backlog is bounded: {} of {CHANGES} events reached it",
        before_cut.len()
    );
    assert!(
        before_cut.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );

    // It resumes after the last event it got, and gets every other event once, in order.
    let last = *before_cut.last().unwrap();
    let after_cut = resumed_after(
        &app,
        "subscription($after: Long) { componentEvents(after: $after) { sequence } }",
        last,
        CHANGES - before_cut.len(),
    )
    .await;
    let all: Vec<u64> = before_cut.iter().chain(&after_cut).copied().collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    assert_eq!(all.len(), CHANGES);
}

/// Creates `count` services in GraphQL batches of `batch_size`, with long ids: many bytes of events quickly, as a
/// busy fleet makes them.
async fn create_services_in_batches(app: &common::TestApp, count: usize, batch_size: usize) {
    for batch in 0..count / batch_size {
        let operations: Vec<serde_json::Value> = (0..batch_size)
            .map(|i| {
                json!({
                    "query": "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
                    "variables": { "id": format!("svc-{batch:03}-{i:03}-{}", "x".repeat(100)) },
                })
            })
            .collect();
        let response = app
            .client
            .post(app.url("/graphql"))
            .json(&operations)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}
