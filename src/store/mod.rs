//! Storage behind one trait. Each backend lives in its own module; the service layer is the only caller.

pub mod embedded;
mod feed;
pub(crate) mod file_io;
pub mod mongodb;
mod staging;
pub mod uploads;

use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use thiserror::Error;

use crate::domain::rollout::Rollout;
use crate::domain::{
    AliasMove, AliasRecord, Component, ComponentFilter, ComponentKey, Delivery, DeviceReport,
    DomainError, EventDraft, EventType, FilePolicy, Kind, ModelKey, Refusal, Sha256, StoredFile,
    UpdateError, Webhook,
};

pub use feed::{EventBatch, EventRetention, EventSignal};

pub use staging::{
    HeldBytes, LocalBlob, MemoryBudget, RemoteBlob, StagedBlob, StagedLocation, new_staging_file,
    stage_to_file,
};
pub use uploads::UploadStore;

/// A stream of bytes coming out of a store.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Every component of a kind, in sort-key order, as a store reads them.
pub type ComponentStream = Pin<Box<dyn Stream<Item = Result<Component, StoreError>> + Send>>;

/// A stream of bytes going into a store; it may borrow from the request it is read from.
pub type UploadStream<'a> = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;

pub use crate::domain::SpecUpdate;

/// The domain's ruling on a component for a change that moves no bytes: the component after and its event, or
/// `None` when nothing changes. A store may run it more than once (after a concurrent write).
pub type Decide =
    Box<dyn Fn(&Component) -> Result<Option<(Component, EventDraft)>, UpdateError> + Send + Sync>;

impl From<UpdateError> for StoreError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Refused(refusal) => Self::Refused(refusal),
            UpdateError::Invalid(invalid) => Self::Invalid(invalid),
        }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(ComponentKey),
    #[error("{0} already exists")]
    AlreadyExists(ComponentKey),
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The client's body broke off or could not be read: the client's fault, nothing was stored.
    #[error("the upload could not be read: {0}")]
    BodyInterrupted(#[source] io::Error),
    #[error("the stored file of {0} is missing")]
    BlobMissing(ComponentKey),
    #[error("the storage backend is unavailable: {0}")]
    Unavailable(String),
    /// Concurrent writers kept changing the component: the client may retry.
    #[error("{0}")]
    Contended(String),
    /// Events after `after` were removed by the retention policy: the consumer must resync.
    #[error(
        "events after sequence {after} are no longer retained (the oldest retained follows {floor})"
    )]
    EventsExpired { after: u64, floor: u64 },
    /// The component's own rules refuse the write (immutable, locked, aliased).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// Which slice of a listing to return, in sort-key order.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Return only components whose sort key is greater than this.
    pub after: Option<String>,
    pub limit: usize,
    /// Whether to count every match ([`Page::total`]); counting costs a pass over the matches, so only when asked.
    pub count: bool,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Component>,
    pub has_next: bool,
    /// How many components match the filter in all, regardless of the page; `None` unless
    /// [`PageRequest::count`] asked for it.
    pub total: Option<u64>,
}

/// What an upload records about the file besides its bytes.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub filename: String,
    pub content_type: String,
    /// Whether a file already there may be replaced (`--immutable-files`); a locked component refuses anyway.
    pub policy: FilePolicy,
    /// The platform the file is built for: it becomes (or replaces) that platform's variant. `None` is the
    /// platform-neutral default file.
    pub platform: Option<crate::domain::Platform>,
    /// What that platform's build needs instead of the component's needs.
    pub needs: Option<crate::domain::FileNeeds>,
    /// The revision the upload was made as of: refused as stale when the component has moved on.
    pub expected_revision: Option<u64>,
}

/// The staged bytes of a component brought over from elsewhere: its default file's, and each variant's in the
/// order of the component's variants.
#[derive(Debug, Default)]
pub struct StagedFiles {
    pub default: Option<StagedBlob>,
    pub variants: Vec<StagedBlob>,
}

impl StagedFiles {
    /// Checks that the staged blobs are the bytes `component`'s file records describe, one for one.
    pub fn check(&self, component: &Component) -> Result<(), StoreError> {
        let same = |file: Option<&StoredFile>, staged: Option<&StagedBlob>| match (file, staged) {
            (None, None) => true,
            (Some(f), Some(s)) => f.sha256 == s.sha256 && f.size == s.size,
            _ => false,
        };
        let matches = same(component.file.as_ref(), self.default.as_ref())
            && component.variants.len() == self.variants.len()
            && component
                .variants
                .iter()
                .zip(&self.variants)
                .all(|(v, s)| same(Some(&v.file), Some(s)));
        if matches {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "the file records of {} do not describe the staged bytes",
                component.key
            )))
        }
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Stored files that no component referred to.
    pub files: u64,
    /// Pieces of uploads that never finished.
    pub stray_chunks: u64,
}

/// A store: one trait per aggregate, each backend implementing those it holds. Callers reach an aggregate
/// through its accessor (`store.components().get(..)`), so a wrapper (a test that counts reads, say) replaces one
/// aggregate and hands the others on.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;

    fn components(&self) -> &dyn ComponentStore;
    fn blobs(&self) -> &dyn BlobStore;
    fn aliases(&self) -> &dyn AliasStore;
    fn feed(&self) -> &dyn FeedStore;
    fn webhooks(&self) -> &dyn WebhookStore;
    fn uploads(&self) -> &dyn UploadStore;
    fn devices(&self) -> &dyn DeviceStore;
    fn rollouts(&self) -> &dyn RolloutStore;

    /// What an edge mirror needs of its store; `None` for a backend that cannot hold one.
    fn mirror(&self) -> Option<&dyn MirrorStore> {
        None
    }

    /// The error a mirror gets from a backend that cannot hold one.
    fn mirror_or_refuse(&self) -> Result<&dyn MirrorStore, StoreError> {
        self.mirror().ok_or_else(|| {
            StoreError::Backend(format!(
                "the {} store cannot hold an edge mirror (use the embedded store)",
                self.backend()
            ))
        })
    }
}

/// Components: their metadata and which stored files they hold. Every write runs the domain's decision
/// ([`Component::put_file`], [`Component::apply_update`], [`Component::deletion`], [`Component::lock`]) inside
/// one atomic read-decide-write step and appends the event the decision names with it.
#[async_trait]
pub trait ComponentStore: Send + Sync {
    /// Inserts a new component; [`StoreError::AlreadyExists`] when the key is taken.
    async fn insert(&self, component: Component) -> Result<(), StoreError>;

    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError>;

    /// Fetches many models in one round trip; absent keys are left out of the answer.
    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError>;

    /// One page of the components of `kind` that match `filter`, in sort-key order.
    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError>;

    /// Every component of `kind` in sort-key order, read in one pass (one snapshot or one cursor) rather than page
    /// by page.
    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError>;

    /// Applies `update` to the metadata of a component atomically and returns the result; refused as stale when
    /// `expected` is given and the component is at another revision.
    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
        expected: Option<u64>,
    ) -> Result<Component, StoreError>;

    /// Deletes the component and its files; `None` when there was no such component. Refused as
    /// [`Component::deletion`] decides (immutable, locked, aliased).
    async fn delete(
        &self,
        key: &ComponentKey,
        policy: FilePolicy,
    ) -> Result<Option<Component>, StoreError>;

    /// Locks a component for good: its file can no longer be replaced, nor the component deleted once it has one.
    /// Refused as stale when `expected` is given and the component is at another revision.
    async fn lock(
        &self,
        key: &ComponentKey,
        expected: Option<u64>,
    ) -> Result<Component, StoreError>;

    /// Commits what `decide` rules on the component as stored, for a change that moves no bytes (a signature):
    /// the component after and its event, atomically. `event_type` is that event's type, for stores that reserve
    /// the event ahead. Answers the component as it is afterwards.
    async fn change(
        &self,
        key: &ComponentKey,
        event_type: EventType,
        decide: Decide,
    ) -> Result<Component, StoreError>;

    /// Makes a staged blob a file of a component ([`Component::put_file`]), reclaiming the one it replaces.
    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError>;

    /// Inserts a component exactly as given, timestamps, file record and variants included, with `files` as the
    /// bytes of its default file and of each variant: how restore and import bring components over from
    /// elsewhere. Each file record's size and sha256 must be its staged blob's; its `blob_id` is replaced by this
    /// store's own. Alias marks are dropped: aliases come over with their own records ([`AliasStore::insert_alias`]).
    /// [`StoreError::AlreadyExists`] when the key is taken, and then nothing is kept.
    async fn insert_with_files(
        &self,
        component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError>;
}

/// Stored bytes: staged uploads, reads, lookups by digest and collection of what nothing refers to.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Streams an upload into a staging area, hashing it on the way. Nothing refers to it yet: dropping the staged
    /// blob discards it.
    async fn stage(&self, body: UploadStream<'_>, limit: u64) -> Result<StagedBlob, StoreError>;

    /// Turns a complete file whose `sha256` and `size` were verified into a staged blob. The default streams a
    /// copy through [`BlobStore::stage`] (which hashes it again); a file-based store moves it instead.
    async fn stage_verified(
        &self,
        file: tempfile::TempPath,
        sha256: &Sha256,
        size: u64,
    ) -> Result<StagedBlob, StoreError> {
        let opened = tokio::fs::File::open(&file).await?;
        let body = tokio_util::io::ReaderStream::new(opened);
        let staged = self.stage(Box::pin(body), size).await?;
        if staged.sha256 != sha256.as_str() {
            return Err(StoreError::Backend(format!(
                "{} changed while it was staged",
                file.display()
            )));
        }
        Ok(staged)
    }

    /// Streams `range` of a component's stored file.
    async fn read(
        &self,
        key: &ComponentKey,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<ByteStream, StoreError> {
        self.read_blob(file, range)
            .await?
            .ok_or_else(|| StoreError::BlobMissing(key.clone()))
    }

    /// Streams `range` of stored bytes; `None` when they are no longer stored.
    async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError>;

    /// The stored file whose bytes have this sha256, whichever component or variant holds it. Its content type and
    /// name are generic: the digest names bytes, not a component.
    async fn blob(&self, sha256: &Sha256) -> Result<Option<StoredFile>, StoreError>;

    /// Removes stored files that no component refers to and that are older than `grace`. The embedded store
    /// reclaims files as their last reference goes and cleans up after crashes at start-up, so it has nothing
    /// left to do here.
    async fn collect_garbage(&self, grace: std::time::Duration) -> Result<GcReport, StoreError> {
        let _ = grace;
        Ok(GcReport::default())
    }
}

/// Model aliases: where each points and every move.
#[async_trait]
pub trait AliasStore: Send + Sync {
    /// Points `alias` of model `name` at `version` (`None` removes the alias) and appends the move to the
    /// alias's history, atomically with respect to the versions: the target must exist, and a version an alias
    /// names refuses deletion ([`Refusal::Aliased`]). Moving an alias to where it already points records
    /// nothing and returns `None`. This is the one write an alias move makes, so a change feed joins it here.
    /// `expected` is the revision of the version the move is made as of (the target; deleting, the version the
    /// alias names): refused as [`Refusal::Stale`] when that version has changed since.
    async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<&str>,
        by: &str,
        expected: Option<u64>,
    ) -> Result<Option<AliasMove>, StoreError>;

    /// The version `alias` of model `name` points at.
    async fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<String>, StoreError>;

    /// Every move of `alias` of model `name`, oldest first.
    async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, StoreError>;

    /// Every alias this store has held, with where it points and its whole history.
    async fn alias_records(&self) -> Result<Vec<AliasRecord>, StoreError>;

    /// Adds an alias brought over from elsewhere, its history as given; it names `record.version` (which must
    /// exist) with one `ALIAS_SET` event, or nothing when it was deleted. Refused when this store already knows
    /// the alias.
    async fn insert_alias(&self, record: AliasRecord) -> Result<(), StoreError>;

    /// Records how a rollout of the alias ended in its history, beside the move it made (if any): once per
    /// rollout, so a replica that finishes the same rollout again records nothing.
    async fn record_rollout(
        &self,
        name: &str,
        alias: &str,
        outcome: &crate::domain::rollout::RolloutOutcome,
        by: &str,
    ) -> Result<(), StoreError>;

    /// Whether this store already knows an alias (it points somewhere, or has a history): restore only adds.
    async fn alias_known(&self, model: &str, alias: &str) -> Result<bool, StoreError> {
        Ok(self.resolve_alias(model, alias).await?.is_some()
            || !self.alias_history(model, alias).await?.is_empty())
    }
}

/// The change feed: events committed with their changes.
#[async_trait]
pub trait FeedStore: Send + Sync {
    /// Up to `limit` events of the change feed with a sequence above `after`, in sequence order, each committed
    /// with its change. [`StoreError::EventsExpired`] when some of them were removed by retention.
    async fn events(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError>;

    /// The highest sequence appended so far (0 for none).
    async fn last_sequence(&self) -> Result<u64, StoreError>;

    /// The change feed's id: random, made once with the store and kept with it. Sequences mean something only
    /// with it: a store rebuilt at the same address starts another feed, and its clients can tell.
    async fn feed_id(&self) -> Result<String, StoreError>;

    /// Changes whenever events may have been appended (by this process or, for shared stores, another one).
    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Removes the events that `retention` no longer keeps; returns how many.
    async fn expire_events(&self, retention: &EventRetention) -> Result<u64, StoreError>;
}

/// Webhooks, their cursors and their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Adds a webhook.
    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;

    /// Removes a webhook and its deliveries; false when there was none.
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError>;

    /// Moves a webhook's cursor forward (never back; nothing when the webhook is gone).
    async fn advance_webhook(&self, id: &str, cursor: u64) -> Result<(), StoreError>;

    /// Takes (or extends) the right to deliver a webhook's events until `until`, so that with several servers on
    /// one database each webhook is served by one of them at a time: in order, each delivery sent once. False
    /// when another owner holds it.
    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError>;

    /// Records a delivery (inserted or replaced by id).
    async fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError>;

    /// A webhook's latest deliveries, newest first.
    async fn deliveries(&self, webhook_id: &str, limit: usize)
    -> Result<Vec<Delivery>, StoreError>;

    /// Removes a webhook's settled (delivered or failed) deliveries created before `before`, and all but its
    /// `keep` newest; returns how many went. A pending delivery is the worker's state and always stays.
    async fn prune_deliveries(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError>;
}

/// Which device reports a listing returns.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Only devices of this hardware class.
    pub hardware_class: Option<String>,
    /// Only devices running this key ([`crate::domain::device_report::running_slot`]).
    pub running_slot: Option<String>,
    /// Only reports received at or after this time (older ones have expired).
    pub since: chrono::DateTime<chrono::Utc>,
    /// At most this many, by device id.
    pub limit: usize,
}

impl DeviceQuery {
    /// The live devices (reported at or after `since`) running the key of `running_slot`, as every backend counts
    /// them for [`DeviceStore::count_running`].
    pub fn running(running_slot: &str, since: chrono::DateTime<chrono::Utc>) -> Self {
        DeviceQuery {
            running_slot: Some(running_slot.to_string()),
            since,
            ..DeviceQuery::default()
        }
    }
}

/// The latest report of each device (`POST /devices/{id}/report`); one record per device.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Replaces the device's report with `report` (or adds it).
    async fn put_report(&self, report: &DeviceReport) -> Result<(), StoreError>;

    /// The device's latest report, however old.
    async fn report(&self, id: &str) -> Result<Option<DeviceReport>, StoreError>;

    /// Reports that match `query`, by device id.
    async fn reports(&self, query: &DeviceQuery) -> Result<Vec<DeviceReport>, StoreError>;

    /// How many devices reported running the key of `running_slot` at or after `since`.
    async fn count_running(
        &self,
        running_slot: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError>;

    /// Removes reports received before `before`; returns how many.
    async fn expire_reports(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError>;
}

/// Staged alias moves. A rollout is open from its start until its end has been applied to the alias (its
/// `settled` flag); an alias has at most one open rollout.
#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// Adds `rollout`, open, with its `ROLLOUT_STARTED` event; refused ([`Refusal::RolloutActive`]) when another
    /// rollout of the alias is open.
    async fn insert_rollout(&self, rollout: &Rollout, event: EventDraft) -> Result<(), StoreError>;

    async fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError>;

    /// The rollouts of `model`, newest first.
    async fn rollouts(&self, model: &str) -> Result<Vec<Rollout>, StoreError>;

    /// The newest rollout of an alias, open or not.
    async fn latest_rollout(&self, model: &str, alias: &str)
    -> Result<Option<Rollout>, StoreError>;

    /// Every open rollout: those that still step, and those whose end is not applied to the alias yet.
    async fn open_rollouts(&self) -> Result<Vec<Rollout>, StoreError>;

    /// Saves `rollout` (its revision one above the stored one's) with `events`, all or nothing; `false` when the
    /// stored rollout is no longer at `rollout.revision - 1` (another replica saved first) and nothing was saved.
    /// `settled` closes it: the alias is free for the next rollout.
    async fn save_rollout(
        &self,
        rollout: &Rollout,
        settled: bool,
        events: Vec<EventDraft>,
    ) -> Result<bool, StoreError>;
}

/// What an edge mirror keeps in its store; only a backend that can hold a mirror implements it.
#[async_trait]
pub trait MirrorStore: Send + Sync {
    /// Puts `component` exactly as its upstream has it (timestamps, lock, file records), replacing whatever `key`
    /// held, or removes `key` when `component` is `None` (locks do not stop it: the upstream decided). `staged`
    /// holds the verified bytes of the files this store does not hold yet; every other file of the component must
    /// already be stored. One event is appended, so the mirror has a feed of its own.
    async fn put_mirrored(
        &self,
        key: &ComponentKey,
        component: Option<Component>,
        staged: Vec<StagedBlob>,
    ) -> Result<(), StoreError>;

    /// The edge mirror's own state (where it follows its upstream's feed), as it was last saved.
    async fn mirror_state(&self) -> Result<Option<serde_json::Value>, StoreError>;

    async fn save_mirror_state(&self, state: &serde_json::Value) -> Result<(), StoreError>;
}

/// The record of bytes served by digest: a generic type and name, since many components may share them.
pub fn digest_file(file: StoredFile) -> StoredFile {
    StoredFile {
        filename: format!("sha256-{}", file.sha256),
        content_type: "application/octet-stream".into(),
        ..file
    }
}
