//! The MongoDB backend: metadata in the original service's collections, binaries in GridFS.
//!
//! Consistency without multi-document transactions (a standalone server has none) rests on two orders:
//! - an upload is written to GridFS completely before a component refers to it, and the file it replaces is
//!   deleted only after the reference has switched, so a failure at any step leaves the previous file served;
//! - what a crash leaves unreferenced (a finished upload never attached, a replaced file not yet deleted, the
//!   chunks of an interrupted upload) is removed by `collect_garbage` once its grace period is over.
//!
//! Metadata updates are compare-and-set on a revision counter, so concurrent partial updates never lose one
//! another's changes.

mod aliases;
mod components;
mod devices;
mod documents;
mod events;
mod gc;
mod gridfs;
mod legacy;
mod query;
mod reads;
mod rollouts;
mod uploads;
mod webhooks;

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::sync::OnceCell;

use self::aliases::{ALIAS_HISTORY, ALIASES};
use self::documents::{collection_name, key_fields};
use self::events::EventLog;
use self::gridfs::Grid;
use self::webhooks::WebhookCollections;
use super::{
    AliasStore, BlobStore, ComponentStore, FeedStore, RemoteBlob, StagedBlob, Store, StoreError,
    UploadStore, WebhookStore,
};
use crate::domain::{Kind, StoredFile};

/// How often a metadata update is retried when concurrent updates keep changing the component under it.
const UPDATE_ATTEMPTS: usize = 16;
/// Documents decoded at a time while a whole kind is streamed.
const SCAN_BATCH: usize = 256;

/// Where the backend keeps its data.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// A MongoDB connection string; it may carry credentials, so it is never logged.
    pub uri: String,
    /// Database of the metadata collections.
    pub database: String,
    /// Database of the GridFS bucket (the original kept it apart from the metadata).
    pub grid_database: String,
    /// GridFS bucket name.
    pub bucket: String,
    /// Longest wait for a usable server before a request fails as unavailable.
    pub timeout: Duration,
}

pub struct MongoStore {
    metadata: Database,
    grid: Grid,
    events: EventLog,
    webhooks: WebhookCollections,
    timeout: Duration,
    /// Set once the unique indexes exist: inserts wait for it, so no duplicate can slip in before.
    indexes: OnceCell<()>,
}

/// Turns a driver error into ours: anything that means "no usable server" is [`StoreError::Unavailable`].
pub(crate) fn map_err(e: mongodb::error::Error) -> StoreError {
    let unavailable = e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || matches!(
            *e.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::DnsResolve { .. }
                | ErrorKind::Io(_)
        );
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// Hash, size, guard and GridFS id of an upload staged by this backend.
fn staged_grid_file(staged: StagedBlob) -> Result<(String, u64, RemoteBlob, ObjectId), StoreError> {
    let (sha256, size, blob) = staged.into_remote()?;
    let id = ObjectId::parse_str(blob.id())
        .map_err(|_| StoreError::Backend(format!("{} is not a GridFS id", blob.id())))?;
    Ok((sha256, size, blob, id))
}

fn blob_object_id(file: &StoredFile) -> Result<ObjectId, StoreError> {
    ObjectId::parse_str(&file.blob_id)
        .map_err(|_| StoreError::Backend(format!("{} is not a GridFS id", file.blob_id)))
}

impl MongoStore {
    /// Connects lazily: the server starts (and reports not ready) while the database is still coming up, and the
    /// indexes are created as soon as it answers.
    pub async fn connect(config: &MongoConfig) -> Result<Self, StoreError> {
        let store = Self::open_source(config).await?;
        match store.ensure_indexes().await {
            Ok(()) => {}
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "MongoDB is not reachable yet; indexes are created once it is");
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Opens a database only to read from it (the source of an `import`): nothing, not even an index, is
    /// created in it.
    pub async fn open_source(config: &MongoConfig) -> Result<Self, StoreError> {
        Self::open_with(config, None).await
    }

    /// Like [`MongoStore::connect`], with every command and reply reported to `monitor` (the driver's command
    /// monitoring): how a test sees what the store reads.
    pub async fn connect_monitored(
        config: &MongoConfig,
        monitor: EventHandler<CommandEvent>,
    ) -> Result<Self, StoreError> {
        let store = Self::open_with(config, Some(monitor)).await?;
        store.ensure_indexes().await?;
        Ok(store)
    }

    async fn open_with(
        config: &MongoConfig,
        monitor: Option<EventHandler<CommandEvent>>,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(|e| StoreError::Backend(format!("the MongoDB URI is not usable: {e}")))?;
        options.app_name = Some("component-repository".into());
        options.server_selection_timeout = Some(config.timeout);
        options.connect_timeout = Some(config.timeout);
        options.command_event_handler = monitor;
        let client = Client::with_options(options).map_err(map_err)?;
        let store = Self {
            metadata: client.database(&config.database),
            grid: Grid::new(&client.database(&config.grid_database), &config.bucket),
            events: EventLog::new(&client.database(&config.database)),
            webhooks: WebhookCollections::new(&client.database(&config.database)),
            timeout: config.timeout,
            indexes: OnceCell::new(),
        };
        Ok(store)
    }

    fn collection(&self, kind: Kind) -> Collection<Document> {
        self.metadata.collection(collection_name(kind))
    }

    /// Unique indexes on the keys of the four collections (which also serve listing order), once.
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                for kind in Kind::ALL {
                    let keys: Document = key_fields(kind).iter().map(|f| (f.to_string(), Bson::Int32(1))).collect();
                    let index = IndexModel::builder()
                        .keys(keys)
                        .options(IndexOptions::builder().unique(true).build())
                        .build();
                    self.collection(kind).create_index(index).await.map_err(|e| {
                        if is_duplicate_key(&e) {
                            StoreError::Backend(format!(
                                "collection {} holds duplicate keys, so its unique index cannot be created: {e}",
                                collection_name(kind)
                            ))
                        } else {
                            map_err(e)
                        }
                    })?;
                }
                for kind in Kind::ALL {
                    // Serves `/blobs/sha256/{hex}`; not unique, since identical bytes may be uploaded many times.
                    for field in ["file.sha256", "variants.file.sha256"] {
                    let index = IndexModel::builder().keys(doc! { field: 1 }).build();
                    if let Err(e) = self.collection(kind).create_index(index).await {
                        tracing::warn!(error = %e, collection = collection_name(kind), "could not create a sha256 index");
                    }
                    }
                }
                let unique_slot = IndexModel::builder()
                    .keys(doc! { "model_name": 1, "alias": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build();
                self.alias_collection().create_index(unique_slot).await.map_err(map_err)?;
                let history = IndexModel::builder().keys(doc! { "model_name": 1, "alias": 1, "at": 1 }).build();
                self.metadata
                    .collection::<Document>(ALIAS_HISTORY)
                    .create_index(history)
                    .await
                    .map_err(map_err)?;
                self.metadata
                    .collection::<Document>(devices::DEVICE_REPORTS)
                    .create_indexes(devices::indexes())
                    .await
                    .map_err(map_err)?;
                self.metadata
                    .collection::<Document>(rollouts::ROLLOUTS)
                    .create_indexes(rollouts::indexes())
                    .await
                    .map_err(map_err)?;
                self.grid.ensure_indexes().await;
                self.events.ensure_indexes().await?;
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = self.metadata.run_command(doc! { "ping": 1 });
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(result) => result.map_err(map_err)?,
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "MongoDB did not answer a ping in time".into(),
                ));
            }
        };
        self.ensure_indexes().await
    }

    fn components(&self) -> &dyn ComponentStore {
        self
    }

    fn blobs(&self) -> &dyn BlobStore {
        self
    }

    fn aliases(&self) -> &dyn AliasStore {
        self
    }

    fn feed(&self) -> &dyn FeedStore {
        self
    }

    fn webhooks(&self) -> &dyn WebhookStore {
        self
    }

    fn uploads(&self) -> &dyn UploadStore {
        self
    }

    fn devices(&self) -> &dyn super::DeviceStore {
        self
    }

    fn rollouts(&self) -> &dyn super::RolloutStore {
        self
    }
}
