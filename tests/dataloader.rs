//! `availableModels { model }` costs a constant number of store round trips per response, not one per reference.
//! The store is the real embedded store, wrapped to count the calls that reach it.

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use component_repository::domain::{
    AliasMove, AliasRecord, Component, ComponentFilter, ComponentKey, Kind, ModelKey, StoredFile,
};
use component_repository::store::embedded::EmbeddedStore;
use component_repository::store::uploads::{AppendError, Appended, UploadSession, UploadStore};
use component_repository::store::{
    ByteStream, ComponentStream, FileMeta, Page, PageRequest, SpecUpdate, StagedBlob, StagedFiles,
    Store, StoreError, UploadStream,
};
use serde_json::json;

struct CountingStore {
    inner: EmbeddedStore,
    gets: AtomicUsize,
    model_batches: AtomicUsize,
}

#[async_trait]
impl UploadStore for CountingStore {
    async fn create_upload(&self, session: UploadSession) -> Result<UploadSession, StoreError> {
        self.inner.create_upload(session).await
    }
    async fn upload(&self, id: &str) -> Result<Option<UploadSession>, StoreError> {
        self.inner.upload(id).await
    }
    async fn uploads_of(
        &self,
        created_by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<UploadSession>, StoreError> {
        self.inner.uploads_of(created_by, now).await
    }
    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: UploadStream<'_>,
        checksum: Option<[u8; 32]>,
    ) -> Result<Appended, AppendError> {
        self.inner.append_upload(id, offset, body, checksum).await
    }
    async fn finish_upload(&self, id: &str) -> Result<(), StoreError> {
        self.inner.finish_upload(id).await
    }
    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_upload(id).await
    }
    async fn expire_uploads(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        self.inner.expire_uploads(now).await
    }
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.inner.insert(component).await
    }
    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        self.model_batches.fetch_add(1, Ordering::SeqCst);
        self.inner.get_models(keys).await
    }
    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        self.inner.list(kind, filter, page).await
    }
    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError> {
        self.inner.scan(kind).await
    }
    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
    ) -> Result<Component, StoreError> {
        self.inner.update(key, update).await
    }
    async fn delete(
        &self,
        key: &ComponentKey,
        immutable: bool,
    ) -> Result<Option<Component>, StoreError> {
        self.inner.delete(key, immutable).await
    }
    async fn lock(&self, key: &ComponentKey) -> Result<Component, StoreError> {
        self.inner.lock(key).await
    }
    async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<&str>,
        by: &str,
    ) -> Result<Option<AliasMove>, StoreError> {
        self.inner.move_alias(name, alias, version, by).await
    }
    async fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<String>, StoreError> {
        self.inner.resolve_alias(name, alias).await
    }
    async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, StoreError> {
        self.inner.alias_history(name, alias).await
    }
    async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError> {
        self.inner.read_blob(file, range).await
    }
    async fn blob(&self, sha256: &str) -> Result<Option<StoredFile>, StoreError> {
        self.inner.blob(sha256).await
    }
    async fn stage(&self, body: UploadStream<'_>, limit: u64) -> Result<StagedBlob, StoreError> {
        self.inner.stage(body, limit).await
    }
    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError> {
        self.inner.attach(key, staged, meta).await
    }
    async fn insert_with_files(
        &self,
        component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError> {
        self.inner.insert_with_files(component, files).await
    }
    async fn alias_records(&self) -> Result<Vec<AliasRecord>, StoreError> {
        self.inner.alias_records().await
    }
    async fn insert_alias(&self, record: AliasRecord) -> Result<(), StoreError> {
        self.inner.insert_alias(record).await
    }
    async fn read(
        &self,
        key: &ComponentKey,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<ByteStream, StoreError> {
        self.inner.read(key, file, range).await
    }
    async fn events(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<component_repository::store::EventBatch, StoreError> {
        self.inner.events(after, limit).await
    }
    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.inner.last_sequence().await
    }
    async fn feed_id(&self) -> Result<String, StoreError> {
        self.inner.feed_id().await
    }
    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.event_signal()
    }
    async fn expire_events(
        &self,
        retention: &component_repository::store::EventRetention,
    ) -> Result<u64, StoreError> {
        self.inner.expire_events(retention).await
    }
    async fn insert_webhook(
        &self,
        webhook: &component_repository::domain::Webhook,
    ) -> Result<(), StoreError> {
        self.inner.insert_webhook(webhook).await
    }
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_webhook(id).await
    }
    async fn webhooks(&self) -> Result<Vec<component_repository::domain::Webhook>, StoreError> {
        self.inner.webhooks().await
    }
    async fn advance_webhook(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        self.inner.advance_webhook(id, cursor).await
    }
    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.lease_webhook(id, owner, until).await
    }
    async fn save_delivery(
        &self,
        delivery: &component_repository::domain::Delivery,
    ) -> Result<(), StoreError> {
        self.inner.save_delivery(delivery).await
    }
    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<component_repository::domain::Delivery>, StoreError> {
        self.inner.deliveries(webhook_id, limit).await
    }

    async fn prune_deliveries(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError> {
        self.inner.prune_deliveries(webhook_id, before, keep).await
    }
}

#[tokio::test]
async fn model_references_of_a_page_are_loaded_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CountingStore {
        inner: EmbeddedStore::open(&dir.path().join("data")).await.unwrap(),
        gets: AtomicUsize::new(0),
        model_batches: AtomicUsize::new(0),
    });
    let app = common::TestApp::start(store.clone(), dir, None, common::test_config()).await;
    for i in 0..10 {
        app.ok(
            "mutation($n: String!) { createModel(input: {name: $n, version: \"1\"}) { name } }",
            json!({ "n": format!("model-{i}") }),
        )
        .await;
    }
    // 30 services, each needing 2 of the 10 models (one of them shared by all) and one model that is absent.
    for i in 0..30 {
        let needs = json!({ "availableModels": [
            {"name": "model-0", "version": "1"},
            {"name": format!("model-{}", 1 + i % 9), "version": "1"},
            {"name": "absent", "version": "1"},
        ]});
        app.ok(
            "mutation($id: ID!, $needs: NeedsInput!) { createService(input: {id: $id, needs: $needs}) { id } }",
            json!({ "id": format!("svc-{i:02}"), "needs": needs }),
        )
        .await;
    }
    let gets_before = store.gets.load(Ordering::SeqCst);
    let data = app
        .ok(
            "{ services(first: 30) { edges { node { id needs { availableModels { name model { name } } } } } } }",
            json!({}),
        )
        .await;
    let edges = data["services"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 30);
    let mut resolved = 0;
    for edge in edges {
        for requirement in edge["node"]["needs"]["availableModels"].as_array().unwrap() {
            if requirement["name"] == "absent" {
                assert_eq!(requirement["model"], json!(null));
            } else {
                assert_eq!(requirement["model"]["name"], requirement["name"]);
                resolved += 1;
            }
        }
    }
    assert_eq!(
        resolved, 60,
        "90 references on the page, 60 of them to stored models"
    );
    assert_eq!(
        store.model_batches.load(Ordering::SeqCst),
        1,
        "one batched lookup for the whole page"
    );
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        gets_before,
        "no lookups one by one"
    );

    // Without asking for `model`, no lookup at all.
    app.ok(
        "{ services(first: 30) { edges { node { needs { availableModels { name } } } } } }",
        json!({}),
    )
    .await;
    assert_eq!(store.model_batches.load(Ordering::SeqCst), 1);
}
