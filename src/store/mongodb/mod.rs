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

mod documents;
mod events;
mod gridfs;
mod query;
mod uploads;
mod webhooks;

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use self::documents::{
    Decoded, collection_name, file_document, file_ref_field, from_document, grid_filename, integer,
    key_fields, key_filter, revision_guard, spec_fields, to_document, variants_document,
};
use self::events::{EventLog, first_sequence, record_sequence};
use self::gridfs::Grid;
use self::query::{Pushdown, and, pushdown, sort_order};
use self::webhooks::WebhookStore;
use super::{
    ByteStream, ComponentStream, EventBatch, EventRetention, FileMeta, GcReport, Page, PageRequest,
    RemoteBlob, SpecUpdate, StagedBlob, StagedFiles, Store, StoreError, UploadStream, immutability,
    replacement_refused,
};
use crate::domain::{
    AliasMove, AliasRecord, Component, ComponentFilter, ComponentKey, Delivery, EventDraft,
    EventType, Kind, ModelKey, Platform, StoredFile, Variant, Webhook,
};

/// Where alias records live: the version each alias points at, and every move.
const ALIASES: &str = "model_aliases";
const ALIAS_HISTORY: &str = "model_alias_history";

/// Puts `file` in as the variant of `platform`, returning the file it replaces.
fn put_variant(
    variants: &mut Vec<Variant>,
    platform: Platform,
    file: StoredFile,
) -> Option<StoredFile> {
    match variants.iter_mut().find(|v| v.platform == platform) {
        Some(existing) => Some(std::mem::replace(&mut existing.file, file)),
        None => {
            variants.push(Variant { platform, file });
            None
        }
    }
}

/// One move of an alias as `model_alias_history` records it.
fn alias_move_of(model: &str, alias: &str, d: &Document) -> AliasMove {
    AliasMove {
        model: model.to_string(),
        alias: alias.to_string(),
        from: d.get_str("from").ok().map(str::to_owned),
        to: d.get_str("to").ok().map(str::to_owned),
        at: d
            .get_datetime("at")
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
            .unwrap_or_default(),
        by: d.get_str("by").unwrap_or_default().to_string(),
    }
}

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
    webhooks: WebhookStore,
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
            webhooks: WebhookStore::new(&client.database(&config.database)),
            timeout: config.timeout,
            indexes: OnceCell::new(),
        };
        Ok(store)
    }

    /// Computes the sha256 of files that the original service stored (it recorded no hash) and records it beside
    /// the reference, so that those files get their hash and ETag. Idempotent; the server runs it in the
    /// background at start-up. Returns how many files it hashed.
    pub async fn backfill_legacy_hashes(&self) -> Result<u64, StoreError> {
        let mut hashed = 0;
        for kind in Kind::ALL {
            let field = file_ref_field(kind);
            let collection = self.collection(kind);
            let mut cursor = collection
                .find(doc! { field: { "$type": "string" }, "file": { "$exists": false } })
                .await
                .map_err(map_err)?;
            while let Some(document) = cursor.try_next().await.map_err(map_err)? {
                let Some((blob, id)) = document
                    .get_str(field)
                    .ok()
                    .and_then(|blob| Some((blob.to_string(), ObjectId::parse_str(blob).ok()?)))
                else {
                    continue;
                };
                let Some(files_document) = self.grid.file(id).await? else {
                    tracing::warn!(%kind, %blob, "a component refers to a GridFS file that does not exist");
                    continue;
                };
                let mut file = legacy_stored_file(id, &files_document);
                let Some(mut bytes) = self.grid.read(id, 0..file.size).await? else {
                    continue;
                };
                let mut hasher = Sha256::new();
                while let Some(chunk) = bytes.try_next().await? {
                    hasher.update(&chunk);
                }
                file.sha256 = hex::encode(hasher.finalize());
                // Only if the reference is still the one hashed: an upload in between wins.
                collection
                    .update_one(
                        doc! { "_id": document.get("_id"), field: &blob, "file": { "$exists": false } },
                        doc! { "$set": { "file": file_document(&file) } },
                    )
                    .await
                    .map_err(map_err)?;
                hashed += 1;
            }
        }
        Ok(hashed)
    }

    /// Adds (`on`) or removes the mark of `alias` on a model version, as a revision-guarded read-modify-write.
    async fn mark_alias(
        &self,
        key: &ComponentKey,
        alias: &str,
        on: bool,
    ) -> Result<(), StoreError> {
        let collection = self.collection(Kind::Model);
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                return Err(StoreError::NotFound(key.clone()));
            };
            let mut marks = component.aliases;
            let changed = if on {
                marks.insert(alias.to_string())
            } else {
                marks.remove(alias)
            };
            if !changed {
                return Ok(());
            }
            let guard = revision_guard(key, rev);
            let marks: Vec<String> = marks.into_iter().collect();
            let result = collection
                .update_one(
                    guard,
                    doc! { "$set": { "aliases": marks, "rev": rev.unwrap_or(0) + 1 } },
                )
                .await
                .map_err(map_err)?;
            if result.matched_count == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Contended(format!(
            "{key} kept changing under {UPDATE_ATTEMPTS} attempts to mark alias {alias}; try again"
        )))
    }

    /// Points `alias` of model `name` from `from` to `to`: marks the target first, so that it refuses deletion
    /// before the alias names it, then writes the alias record, guarded by where the alias pointed (a deleted
    /// alias stays as a record naming no version) and carrying the event's `sequence`: that one write is the
    /// move. Returns the target. A move that stops half-way leaves at most a stale mark, which a delete verifies.
    async fn point_alias(
        &self,
        name: &str,
        alias: &str,
        from: Option<&str>,
        to: Option<&str>,
        sequence: i64,
    ) -> Result<Option<Component>, StoreError> {
        let target = match to {
            Some(to) => {
                let target = ComponentKey::model(name, to)?;
                self.mark_alias(&target, alias, true).await?;
                Some(target)
            }
            None => None,
        };
        let guard = doc! { "model_name": name, "alias": alias, "model_version": from };
        let moved = self
            .aliases()
            .update_one(
                guard,
                doc! {
                    "$set": { "model_version": to },
                    "$push": record_sequence(sequence),
                },
            )
            .upsert(from.is_none())
            .await;
        match moved {
            Ok(r) if r.matched_count == 1 || r.upserted_id.is_some() => {}
            Err(e) if !is_duplicate_key(&e) => return Err(map_err(e)),
            _ => {
                return Err(StoreError::Contended(format!(
                    "alias {alias} of model {name} was moved by someone else at the same time; read it \
                     again and retry"
                )));
            }
        }
        match &target {
            Some(key) => self.get(key).await,
            None => Ok(None),
        }
    }

    fn aliases(&self) -> Collection<Document> {
        self.metadata.collection(ALIASES)
    }

    /// The aliases that name the model version `key`, from the alias records (a version's own marks may be stale).
    async fn aliases_naming(&self, key: &ComponentKey) -> Result<Vec<String>, StoreError> {
        let ComponentKey::Model(model) = key else {
            return Err(StoreError::Backend(format!(
                "{key} has aliases but is no model"
            )));
        };
        self.aliases()
            .find(doc! { "model_name": &model.name, "model_version": &model.version })
            .await
            .map_err(map_err)?
            .try_filter_map(|d| std::future::ready(Ok(d.get_str("alias").ok().map(str::to_owned))))
            .try_collect()
            .await
            .map_err(map_err)
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
                self.aliases().create_index(unique_slot).await.map_err(map_err)?;
                let history = IndexModel::builder().keys(doc! { "model_name": 1, "alias": 1, "at": 1 }).build();
                self.metadata
                    .collection::<Document>(ALIAS_HISTORY)
                    .create_index(history)
                    .await
                    .map_err(map_err)?;
                self.grid.ensure_indexes().await;
                self.events.ensure_indexes().await?;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Decodes documents and fills in, with one GridFS query, the files that the original service referenced
    /// without our record of them.
    async fn decode_all(
        &self,
        kind: Kind,
        documents: &[Document],
    ) -> Result<Vec<Decoded>, StoreError> {
        decode_with_files(&self.grid, kind, documents).await
    }
}

/// Decodes documents and fills in, with one GridFS query, the files that the original service referenced
/// without our record of them.
async fn decode_with_files(
    grid: &Grid,
    kind: Kind,
    documents: &[Document],
) -> Result<Vec<Decoded>, StoreError> {
    {
        let mut decoded = documents
            .iter()
            .map(|d| from_document(kind, d))
            .collect::<Result<Vec<_>, _>>()?;
        let legacy: Vec<ObjectId> = decoded.iter().filter_map(|d| d.legacy_file).collect();
        if !legacy.is_empty() {
            let files = grid.files_by_id(&legacy).await?;
            for item in &mut decoded {
                let Some(id) = item.legacy_file else { continue };
                let Some(file) = files
                    .iter()
                    .find(|f| f.get_object_id("_id").ok() == Some(id))
                else {
                    continue;
                };
                item.component.file = Some(legacy_stored_file(id, file));
            }
        }
        Ok(decoded)
    }
}

impl MongoStore {
    async fn find_one(&self, key: &ComponentKey) -> Result<Option<Decoded>, StoreError> {
        let found = self
            .collection(key.kind())
            .find_one(key_filter(key))
            .await
            .map_err(map_err)?;
        match found {
            Some(document) => Ok(self.decode_all(key.kind(), &[document]).await?.pop()),
            None => Ok(None),
        }
    }

    async fn collect_page(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: &PageRequest,
    ) -> Result<Page, StoreError> {
        let Pushdown { query, exact } = pushdown(kind, filter);
        let page_query = match &page.after {
            Some(after) => and(vec![
                query.clone(),
                query::after(&ComponentKey::from_sort_key(kind, after)?),
            ]),
            None => query.clone(),
        };
        let collection = self.collection(kind);
        let wanted = page.limit + 1;
        let mut find = collection.find(page_query).sort(sort_order(kind));
        if exact {
            find = find.limit(wanted as i64);
        }
        let mut cursor = find.await.map_err(map_err)?;
        let mut documents = Vec::with_capacity(wanted);
        let mut items = Vec::with_capacity(wanted);
        let mut matcher = filter.matcher();
        // Inexact queries return candidates: keep reading until a page of real matches is found.
        while items.len() < wanted {
            documents.clear();
            while documents.len() < wanted {
                match cursor.try_next().await.map_err(map_err)? {
                    Some(document) => documents.push(document),
                    None => break,
                }
            }
            let exhausted = documents.len() < wanted;
            for decoded in self.decode_all(kind, &documents).await? {
                if (exact || matcher.matches(&decoded.component)) && items.len() < wanted {
                    items.push(decoded.component);
                }
            }
            if exhausted {
                break;
            }
        }
        let has_next = items.len() > page.limit;
        items.truncate(page.limit);
        let total = match (page.count, exact) {
            (false, _) => None,
            (true, true) => Some(collection.count_documents(query).await.map_err(map_err)?),
            (true, false) => Some(self.count_matches(kind, &collection, query, filter).await?),
        };
        Ok(Page {
            items,
            has_next,
            total,
        })
    }

    /// Counts candidates that really match, streaming them: nothing is collected.
    async fn count_matches(
        &self,
        kind: Kind,
        collection: &Collection<Document>,
        query: Document,
        filter: &ComponentFilter,
    ) -> Result<u64, StoreError> {
        let mut cursor = collection.find(query).await.map_err(map_err)?;
        let mut total = 0;
        let mut matcher = filter.matcher();
        while let Some(document) = cursor.try_next().await.map_err(map_err)? {
            if matcher.matches(&from_document(kind, &document)?.component) {
                total += 1;
            }
        }
        Ok(total)
    }

    /// The compare-and-set loop of a metadata update, recording `sequence` in the document with the change.
    /// Returns the component before and after.
    async fn update_recorded(
        &self,
        key: &ComponentKey,
        collection: &Collection<Document>,
        update: SpecUpdate,
        sequence: i64,
    ) -> Result<(Component, Component), StoreError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                return Err(StoreError::NotFound(key.clone()));
            };
            // The revision guard below makes this hold against a lock taken meanwhile (a lock bumps `rev`).
            if let Some(refused) = component.metadata_change_refused() {
                return Err(StoreError::Immutable(refused));
            }
            let mut spec = component.spec.clone();
            update(&mut spec)?;
            spec.validate()?;
            let now = crate::domain::now();
            let next_rev = rev.unwrap_or(0) + 1;
            let mut set = spec_fields(&spec)?;
            set.insert(
                "updated_at",
                mongodb::bson::DateTime::from_millis(now.timestamp_millis()),
            );
            set.insert("rev", next_rev);
            let guard = revision_guard(key, rev);
            let result = collection
                .update_one(
                    guard,
                    doc! { "$set": set, "$push": record_sequence(sequence) },
                )
                .await
                .map_err(map_err)?;
            if result.matched_count == 1 {
                let after = Component {
                    spec,
                    updated_at: now,
                    ..component.clone()
                };
                return Ok((component, after));
            }
        }
        Err(StoreError::Contended(format!(
            "{key} kept changing under {UPDATE_ATTEMPTS} update attempts; try again"
        )))
    }
}

/// A file the original service stored: its size and date come from GridFS; its hash stays empty until the
/// backfill has computed it (the download's ETag is then the GridFS id).
fn legacy_stored_file(id: ObjectId, file: &Document) -> StoredFile {
    let metadata = file.get_document("metadata").ok();
    let text = |name: &str| {
        metadata
            .and_then(|m| m.get_str(name).ok())
            .unwrap_or_default()
            .to_string()
    };
    let size = integer(file.get("length"))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_default();
    let filename = file
        .get_str("filename")
        .ok()
        .and_then(|name| name.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    StoredFile {
        blob_id: id.to_hex(),
        size,
        sha256: text("sha256"),
        content_type: match text("content_type") {
            t if t.is_empty() => "application/octet-stream".to_string(),
            t => t,
        },
        filename,
        uploaded_at: file
            .get_datetime("uploadDate")
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
            .unwrap_or_default(),
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

    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        let mut document = to_document(&component)?;
        let collection = self.collection(component.kind());
        let key = component.key.clone();
        self.events
            .recorded(EventType::Created, &key, |sequence| async move {
                let (field, value) = first_sequence(sequence);
                document.insert(field, value);
                match collection.insert_one(document).await {
                    Ok(_) => Ok(((), Some(EventDraft::created(&component)))),
                    Err(e) if is_duplicate_key(&e) => Err(StoreError::AlreadyExists(component.key)),
                    Err(e) => Err(map_err(e)),
                }
            })
            .await
    }

    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        Ok(self.find_one(key).await?.map(|d| d.component))
    }

    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: HashSet<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        let versions: HashSet<&str> = keys.iter().map(|k| k.version.as_str()).collect();
        let documents: Vec<Document> = self
            .collection(Kind::Model)
            .find(doc! {
                "model_name": { "$in": names.into_iter().collect::<Vec<_>>() },
                "model_version": { "$in": versions.into_iter().collect::<Vec<_>>() },
            })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let wanted: HashSet<&ModelKey> = keys.iter().collect();
        Ok(self
            .decode_all(Kind::Model, &documents)
            .await?
            .into_iter()
            .map(|d| d.component)
            .filter(|c| matches!(&c.key, ComponentKey::Model(m) if wanted.contains(m)))
            .collect())
    }

    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        self.collect_page(kind, filter, &page).await
    }

    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError> {
        let cursor = self
            .collection(kind)
            .find(Document::new())
            .sort(sort_order(kind))
            .await
            .map_err(map_err)?;
        let grid = self.grid.clone();
        // One cursor, decoded a batch at a time (files written by the original are looked up per batch).
        let batches = futures_util::stream::try_unfold(
            (cursor, grid),
            move |(mut cursor, grid)| async move {
                let mut documents = Vec::with_capacity(SCAN_BATCH);
                while documents.len() < SCAN_BATCH {
                    match cursor.try_next().await.map_err(map_err)? {
                        Some(document) => documents.push(document),
                        None => break,
                    }
                }
                if documents.is_empty() {
                    return Ok::<_, StoreError>(None);
                }
                let decoded = decode_with_files(&grid, kind, &documents).await?;
                Ok(Some((decoded, (cursor, grid))))
            },
        );
        Ok(Box::pin(
            batches
                .map_ok(|decoded| {
                    futures_util::stream::iter(decoded.into_iter().map(|d| Ok(d.component)))
                })
                .try_flatten(),
        ))
    }

    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
    ) -> Result<Component, StoreError> {
        let collection = self.collection(key.kind());
        self.events
            .recorded(EventType::Updated, key, |sequence| async move {
                let updated = self
                    .update_recorded(key, &collection, update, sequence)
                    .await?;
                let draft = EventDraft::updated(&updated.0, &updated.1);
                Ok((updated.1, Some(draft)))
            })
            .await
    }

    async fn delete(
        &self,
        key: &ComponentKey,
        immutable: bool,
    ) -> Result<Option<Component>, StoreError> {
        let collection = self.collection(key.kind());
        let removed = self
            .events
            .recorded(EventType::Deleted, key, |_| async move {
                for _ in 0..UPDATE_ATTEMPTS {
                    let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                        return Ok((Ok(None), None));
                    };
                    if let Some(refused) = immutability(&component, immutable) {
                        return Err(refused);
                    }
                    if !component.aliases.is_empty() {
                        let aliases = self.aliases_naming(key).await?;
                        if !aliases.is_empty() {
                            return Err(StoreError::Aliased {
                                key: key.clone(),
                                aliases,
                            });
                        }
                        // Marks left by a move that stopped half-way name no alias: they do not keep the version.
                    }
                    // The revision guard makes the checks above hold for what is deleted: an alias mark, a lock or
                    // an upload in between changes the revision, and the delete is tried again on the fresh
                    // document.
                    let guard = revision_guard(key, rev);
                    let Some(document) = collection
                        .find_one_and_delete(guard)
                        .await
                        .map_err(map_err)?
                    else {
                        continue;
                    };
                    let decoded = self.decode_all(key.kind(), &[document]).await;
                    // The deletion happened even if the document cannot be read back: announce it regardless.
                    let draft = match &decoded {
                        Ok(d) => d.last().map(|d| EventDraft::deleted(&d.component)),
                        Err(_) => None,
                    }
                    .unwrap_or_else(|| EventDraft::bare(EventType::Deleted, key.clone()));
                    return Ok((
                        decoded.map(|mut d| d.pop().map(|d| d.component)),
                        Some(draft),
                    ));
                }
                Err(StoreError::Contended(format!(
                    "{key} kept changing under {UPDATE_ATTEMPTS} delete attempts; try again"
                )))
            })
            .await?;
        let component = removed?;
        let files: Vec<StoredFile> = component
            .iter()
            .flat_map(|c| {
                c.file
                    .iter()
                    .cloned()
                    .chain(c.variants.iter().map(|v| v.file.clone()))
            })
            .collect();
        for file in &files {
            self.grid.supersede(blob_object_id(file)?).await;
        }
        Ok(component)
    }

    async fn lock(&self, key: &ComponentKey) -> Result<Component, StoreError> {
        let collection = self.collection(key.kind());
        self.events
            .recorded(EventType::Locked, key, |sequence| async move {
                for _ in 0..UPDATE_ATTEMPTS {
                    let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                        return Err(StoreError::NotFound(key.clone()));
                    };
                    if component.locked {
                        // Locked already: nothing changes, so nothing goes on the feed.
                        return Ok((component, None));
                    }
                    let result = collection
                        .update_one(
                            revision_guard(key, rev),
                            doc! {
                                "$set": { "locked": true, "rev": rev.unwrap_or(0) + 1 },
                                "$push": record_sequence(sequence),
                            },
                        )
                        .await
                        .map_err(map_err)?;
                    if result.matched_count == 1 {
                        let locked = Component {
                            locked: true,
                            ..component
                        };
                        let draft = EventDraft::locked(&locked);
                        return Ok((locked, Some(draft)));
                    }
                }
                Err(StoreError::Contended(format!(
                    "{key} kept changing under {UPDATE_ATTEMPTS} attempts to lock it; try again"
                )))
            })
            .await
    }

    async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<&str>,
        by: &str,
    ) -> Result<Option<AliasMove>, StoreError> {
        let aliases = self.aliases();
        let slot = doc! { "model_name": name, "alias": alias };
        let from = aliases
            .find_one(slot.clone())
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_str("model_version").ok().map(str::to_owned));
        if from.as_deref() == version {
            return Ok(None);
        }
        let mut record = AliasMove {
            model: name.to_string(),
            alias: alias.to_string(),
            from,
            to: version.map(str::to_owned),
            at: crate::domain::now(),
            by: by.to_string(),
        };
        let reservation = EventDraft::alias_moved(None, &record)?;
        let record = self
            .events
            .recorded_as(reservation, |sequence| {
                let record = &mut record;
                async move {
                    // The previous target is unmarked last, once the alias no longer names it.
                    let target = self
                        .point_alias(name, alias, record.from.as_deref(), version, sequence)
                        .await?;
                    if let Some(old) = &record.from {
                        match self
                            .mark_alias(&ComponentKey::model(name, old.as_str())?, alias, false)
                            .await
                        {
                            Ok(()) | Err(StoreError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    record.at = crate::domain::now();
                    let draft = EventDraft::alias_moved(target.as_ref(), record)?;
                    Ok((record.clone(), Some(draft)))
                }
            })
            .await?;
        self.metadata
            .collection::<Document>(ALIAS_HISTORY)
            .insert_one(doc! {
                "model_name": name,
                "alias": alias,
                "from": record.from.as_deref(),
                "to": record.to.as_deref(),
                "at": mongodb::bson::DateTime::from_millis(record.at.timestamp_millis()),
                "by": by,
            })
            .await
            .map_err(map_err)?;
        Ok(Some(record))
    }

    async fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .aliases()
            .find_one(doc! { "model_name": name, "alias": alias })
            .await
            .map_err(map_err)?
            .and_then(|d| d.get_str("model_version").ok().map(str::to_owned)))
    }

    async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, StoreError> {
        let documents: Vec<Document> = self
            .metadata
            .collection::<Document>(ALIAS_HISTORY)
            .find(doc! { "model_name": name, "alias": alias })
            .sort(doc! { "at": 1, "_id": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        Ok(documents
            .iter()
            .map(|d| alias_move_of(name, alias, d))
            .collect())
    }

    async fn stage(&self, body: UploadStream<'_>, limit: u64) -> Result<StagedBlob, StoreError> {
        self.grid.stage(body, limit).await
    }

    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError> {
        let (sha256, size, blob, id) = staged_grid_file(staged)?;
        let now = crate::domain::now();
        let file = StoredFile {
            blob_id: id.to_hex(),
            size,
            sha256: sha256.clone(),
            content_type: meta.content_type.clone(),
            filename: meta.filename.clone(),
            uploaded_at: now,
        };
        self.grid
            .label(
                id,
                &grid_filename(key),
                doc! {
                    "sha256": &sha256,
                    "content_type": &meta.content_type,
                    "original_filename": &meta.filename,
                },
            )
            .await?;
        let collection = self.collection(key.kind());
        let attached = &file;
        let platform = &meta.platform;
        let immutable = meta.immutable;
        let outcome = self
            .events
            .recorded(EventType::FileUploaded, key, |sequence| async move {
                for _ in 0..UPDATE_ATTEMPTS {
                    let Some(Decoded { component, rev, .. }) = self.find_one(key).await? else {
                        return Ok((None, None));
                    };
                    if let Some(refused) =
                        replacement_refused(&component, platform.as_ref(), immutable)
                    {
                        return Err(refused);
                    }
                    let mut set = doc! {
                        "updated_at": mongodb::bson::DateTime::from_millis(now.timestamp_millis()),
                        "rev": rev.unwrap_or(0) + 1,
                    };
                    let mut after = Component {
                        updated_at: now,
                        ..component
                    };
                    let replaced = match platform {
                        None => {
                            set.insert(file_ref_field(key.kind()), id.to_hex());
                            set.insert("file", file_document(attached));
                            after.file.replace(attached.clone())
                        }
                        Some(platform) => {
                            let replaced = put_variant(
                                &mut after.variants,
                                platform.clone(),
                                attached.clone(),
                            );
                            set.insert("variants", variants_document(&after.variants));
                            replaced
                        }
                    };
                    // Guarded by the revision, so that the check above holds for the document replaced.
                    let guard = revision_guard(key, rev);
                    let updated = collection
                        .find_one_and_update(
                            guard,
                            doc! { "$set": set, "$push": record_sequence(sequence) },
                        )
                        .await
                        .map_err(map_err)?;
                    if updated.is_some() {
                        let draft = EventDraft::attached(&after, attached, replaced.is_some());
                        return Ok((Some((after, replaced)), Some(draft)));
                    }
                }
                Err(StoreError::Contended(format!(
                    "{key} kept changing under {UPDATE_ATTEMPTS} upload attempts; try again"
                )))
            })
            .await?;
        let Some((component, replaced)) = outcome else {
            // `blob` is dropped here, which deletes the upload: no component refers to it.
            return Err(StoreError::NotFound(key.clone()));
        };
        blob.keep();
        if let Some(old) = replaced
            && old.blob_id != file.blob_id
        {
            self.grid.supersede(blob_object_id(&old)?).await;
        }
        Ok(component)
    }

    async fn insert_with_files(
        &self,
        mut component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError> {
        self.ensure_indexes().await?;
        files.check(&component)?;
        let has_default = files.default.is_some();
        let mut blobs = Vec::new();
        let mut ids = Vec::new();
        for staged in files.default.into_iter().chain(files.variants) {
            let (_, _, blob, id) = staged_grid_file(staged)?;
            blobs.push(blob);
            ids.push(id);
        }
        // The records point at this store's GridFS files, in the order they were staged.
        let records = component
            .file
            .iter_mut()
            .filter(|_| has_default)
            .chain(component.variants.iter_mut().map(|v| &mut v.file));
        for (file, id) in records.zip(&ids) {
            file.blob_id = id.to_hex();
            self.grid
                .label(
                    *id,
                    &grid_filename(&component.key),
                    doc! {
                        "sha256": &file.sha256,
                        "content_type": &file.content_type,
                        "original_filename": &file.filename,
                    },
                )
                .await?;
        }
        // Aliases come over with their own records.
        component.aliases.clear();
        let mut document = to_document(&component)?;
        let collection = self.collection(component.kind());
        let key = component.key.clone();
        self.events
            .recorded(EventType::Created, &key, |sequence| async move {
                let (field, value) = first_sequence(sequence);
                document.insert(field, value);
                match collection.insert_one(document).await {
                    Ok(_) => {
                        for blob in blobs {
                            blob.keep();
                        }
                        Ok(((), Some(EventDraft::created(&component))))
                    }
                    // Dropping `blobs` deletes the uploads: nothing refers to them.
                    Err(e) if is_duplicate_key(&e) => Err(StoreError::AlreadyExists(component.key)),
                    Err(e) => Err(map_err(e)),
                }
            })
            .await
    }

    async fn alias_records(&self) -> Result<Vec<AliasRecord>, StoreError> {
        let mut records: std::collections::BTreeMap<(String, String), AliasRecord> =
            std::collections::BTreeMap::new();
        let mut history = self
            .metadata
            .collection::<Document>(ALIAS_HISTORY)
            .find(doc! {})
            .sort(doc! { "model_name": 1, "alias": 1, "at": 1, "_id": 1 })
            .await
            .map_err(map_err)?;
        while let Some(d) = history.try_next().await.map_err(map_err)? {
            let (model, alias) = (
                d.get_str("model_name").unwrap_or_default(),
                d.get_str("alias").unwrap_or_default(),
            );
            records
                .entry((model.to_string(), alias.to_string()))
                .or_insert_with(|| AliasRecord::empty(model, alias))
                .history
                .push(alias_move_of(model, alias, &d));
        }
        let mut pointers = self.aliases().find(doc! {}).await.map_err(map_err)?;
        while let Some(d) = pointers.try_next().await.map_err(map_err)? {
            let (model, alias) = (
                d.get_str("model_name").unwrap_or_default(),
                d.get_str("alias").unwrap_or_default(),
            );
            let Ok(version) = d.get_str("model_version") else {
                continue; // deleted: its history says so
            };
            records
                .entry((model.to_string(), alias.to_string()))
                .or_insert_with(|| AliasRecord::empty(model, alias))
                .version = Some(version.to_string());
        }
        Ok(records.into_values().collect())
    }

    async fn insert_alias(&self, record: AliasRecord) -> Result<(), StoreError> {
        let (name, alias) = (record.model.as_str(), record.alias.as_str());
        if crate::store::alias_known(self, name, alias).await? {
            return Err(StoreError::Invalid(crate::domain::DomainError::new(
                "alias",
                format!(
                    "alias {alias} of model {name} already exists in the target store: restore only adds"
                ),
            )));
        }
        let moves: Vec<Document> = record
            .history
            .iter()
            .map(|m| {
                doc! {
                    "model_name": name,
                    "alias": alias,
                    "from": m.from.as_deref(),
                    "to": m.to.as_deref(),
                    "at": mongodb::bson::DateTime::from_millis(m.at.timestamp_millis()),
                    "by": &m.by,
                }
            })
            .collect();
        if !moves.is_empty() {
            self.metadata
                .collection::<Document>(ALIAS_HISTORY)
                .insert_many(moves)
                .await
                .map_err(map_err)?;
        }
        let Some(version) = record.version.as_deref() else {
            return Ok(());
        };
        let last = record.last_move();
        self.events
            .recorded_as(EventDraft::alias_moved(None, &last)?, |sequence| {
                let last = &last;
                async move {
                    let target = self
                        .point_alias(name, alias, None, Some(version), sequence)
                        .await?;
                    Ok(((), Some(EventDraft::alias_moved(target.as_ref(), last)?)))
                }
            })
            .await
    }

    async fn collect_garbage(&self, grace: Duration) -> Result<GcReport, StoreError> {
        self.grid.collect_garbage(&self.metadata, grace).await
    }

    async fn events(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        self.events
            .read(after, limit, |key| async move {
                let Some(document) = self
                    .collection(key.kind())
                    .find_one(key_filter(&key))
                    .await
                    .map_err(map_err)?
                else {
                    return Ok(None);
                };
                let decoded = self
                    .decode_all(key.kind(), std::slice::from_ref(&document))
                    .await?;
                Ok(decoded.into_iter().next().map(|d| (document, d)))
            })
            .await
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.events.last_settled().await
    }

    async fn feed_id(&self) -> Result<String, StoreError> {
        self.events.feed_id().await
    }

    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    async fn expire_events(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        self.events.expire(retention).await
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        self.webhooks.insert(webhook).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        self.webhooks.delete(id).await
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.webhooks.list().await
    }

    async fn advance_webhook(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        self.webhooks.advance(id, cursor).await
    }

    async fn lease_webhook(
        &self,
        id: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        self.webhooks.lease(id, owner, until).await
    }

    async fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.webhooks.save_delivery(delivery).await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.webhooks.deliveries(webhook_id, limit).await
    }

    async fn prune_deliveries(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError> {
        self.webhooks.prune(webhook_id, before, keep).await
    }

    async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError> {
        self.grid.read(blob_object_id(file)?, range).await
    }

    async fn blob(&self, sha256: &str) -> Result<Option<StoredFile>, StoreError> {
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Ok(None);
        }
        // Only bytes a component refers to are served, never an upload that is not attached (yet or any more).
        // `$elemMatch` on the array of variants: MongoDB serves it with the multikey index on
        // `variants.file.sha256` as it serves the dotted path.
        let queries = [
            doc! { "file.sha256": sha256 },
            doc! { "variants": { "$elemMatch": { "file.sha256": sha256 } } },
        ];
        for kind in Kind::ALL {
            for query in &queries {
                let Some(document) = self
                    .collection(kind)
                    .find_one(query.clone())
                    .await
                    .map_err(map_err)?
                else {
                    continue;
                };
                let component = self
                    .decode_all(kind, &[document])
                    .await?
                    .pop()
                    .map(|d| d.component);
                let found = component.and_then(|c| {
                    c.file
                        .into_iter()
                        .chain(c.variants.into_iter().map(|v| v.file))
                        .find(|f| f.sha256 == sha256)
                });
                if let Some(file) = found {
                    return Ok(Some(super::digest_file(file)));
                }
            }
        }
        Ok(None)
    }
}
