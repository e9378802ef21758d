//! `availableModels { model }` costs a constant number of store round trips per response, not one per reference.
//! The store is the real embedded store, wrapped to count the calls that reach it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use component_repository::domain::{
    Component, ComponentFilter, ComponentKey, FilePolicy, Kind, ModelKey,
};
use component_repository::store::embedded::EmbeddedStore;
use component_repository::store::{
    AliasStore, BlobStore, ComponentStore, ComponentStream, FeedStore, FileMeta, MirrorStore, Page,
    PageRequest, SpecUpdate, StagedBlob, StagedFiles, Store, StoreError, UploadStore, WebhookStore,
};
use serde_json::json;

/// The real store with its components wrapped: every other aggregate is the embedded store's own.
struct CountingStore {
    inner: EmbeddedStore,
    gets: AtomicUsize,
    model_batches: AtomicUsize,
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn components(&self) -> &dyn ComponentStore {
        self
    }
    fn blobs(&self) -> &dyn BlobStore {
        self.inner.blobs()
    }
    fn aliases(&self) -> &dyn AliasStore {
        self.inner.aliases()
    }
    fn feed(&self) -> &dyn FeedStore {
        self.inner.feed()
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
impl ComponentStore for CountingStore {
    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.components().get(key).await
    }
    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        self.model_batches.fetch_add(1, Ordering::SeqCst);
        self.inner.components().get_models(keys).await
    }
    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.inner.components().insert(component).await
    }
    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        self.inner.components().list(kind, filter, page).await
    }
    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError> {
        self.inner.components().scan(kind).await
    }
    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
        expected: Option<u64>,
    ) -> Result<Component, StoreError> {
        self.inner.components().update(key, update, expected).await
    }
    async fn delete(
        &self,
        key: &ComponentKey,
        policy: FilePolicy,
    ) -> Result<Option<Component>, StoreError> {
        self.inner.components().delete(key, policy).await
    }
    async fn lock(
        &self,
        key: &ComponentKey,
        expected: Option<u64>,
    ) -> Result<Component, StoreError> {
        self.inner.components().lock(key, expected).await
    }
    async fn change(
        &self,
        key: &ComponentKey,
        event_type: component_repository::domain::EventType,
        decide: component_repository::store::Decide,
    ) -> Result<Component, StoreError> {
        self.inner
            .components()
            .change(key, event_type, decide)
            .await
    }
    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError> {
        self.inner.components().attach(key, staged, meta).await
    }
    async fn insert_with_files(
        &self,
        component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError> {
        self.inner
            .components()
            .insert_with_files(component, files)
            .await
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
