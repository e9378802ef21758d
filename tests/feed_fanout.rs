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
