//! The default store: metadata in redb (a pure-Rust ACID database), files as content-addressed blobs beside it.
//!
//! Crash safety rests on one ordering: a blob is written to `tmp/`, renamed into `blobs/` and fsynced (the file and
//! its directory) *before* the metadata transaction that refers to it commits, and an old blob is deleted only
//! *after* the transaction that dropped its last reference commits. A crash can therefore leave an unreferenced
//! blob (removed at the next start-up) but never metadata that points at a missing or partial one. Reference counts
//! live in the same transactions as the metadata, so identical bytes are stored once and reclaimed when nothing
//! uses them.
//! Every write goes through one writer thread that commits many writes at once ([`writer`]).

mod aliases;
mod blobs;
mod catalog;
mod events;
mod layered;
mod mirror;
mod summary;
mod uploads;
mod webhooks;
mod writer;

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::future::Either;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::Semaphore;

use self::blobs::{BlobDir, clear_dir};
use self::catalog::{Builder, Catalog, Snapshot};
use self::writer::{Applied, Pins, Writer};
use super::{
    ByteStream, ComponentStream, EventBatch, EventRetention, EventSignal, FileMeta, Page,
    PageRequest, SpecUpdate, StagedBlob, StagedFiles, Store, StoreError, UploadStream,
    immutability, replacement_refused, stage_to_file,
};
use crate::domain::{
    AliasMove, AliasRecord, Component, ComponentFilter, ComponentKey, Delivery, EventDraft, Kind,
    ModelKey, StoredFile, Webhook,
};

const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
const TRANSFORMATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("transformations");
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const INFERENCERS: TableDefinition<&str, &[u8]> = TableDefinition::new("inferencers");
/// sha256 -> how many components use that blob.
pub(super) const BLOB_REFS: TableDefinition<&str, u64> = TableDefinition::new("blob_refs");
/// `{model name}\0{alias}` -> the version the alias points at.
const ALIASES: TableDefinition<&str, &str> = TableDefinition::new("model_aliases");
/// `{model name}\0{alias}\0{sequence, 20 digits}` -> one [`AliasMove`] as JSON.
const ALIAS_HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("model_alias_history");

/// Metadata is small; a modest page cache keeps the server's memory flat.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Read size of downloads: a read that misses the page cache is one hop to tokio's blocking pool, so chunks are
/// large enough to keep that overhead small, and small enough that thousands of stalled downloads stay cheap.
const READ_CHUNK: usize = 128 * 1024;
/// Chunks of a download read ahead of the network, so that the disk works while the network sends.
const READ_AHEAD: usize = 2;
/// Blob reads running at once across all downloads: well below tokio's blocking pool (512 threads), so that
/// metadata work (redb) always finds a thread however many downloads are in flight.
const BLOB_READERS: usize = 32;
/// Records per batch handed from the reader to the decoders while the catalogue loads.
const LOAD_BATCH: usize = 1024;
/// Components per step of a scan: each step looks its start up again in the snapshot, O(log n).
const SCAN_STEP: usize = 256;

fn table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match kind {
        Kind::Model => MODELS,
        Kind::Transformation => TRANSFORMATIONS,
        Kind::Service => SERVICES,
        Kind::Inferencer => INFERENCERS,
    }
}

/// Turns redb's many error types into ours.
trait OrBackend<T> {
    fn or_backend(self) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> OrBackend<T> for Result<T, E> {
    fn or_backend(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Backend(e.into().to_string()))
    }
}

fn encode(component: &Component) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(component)
        .map_err(|e| StoreError::Backend(format!("encoding a record: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Component, StoreError> {
    serde_json::from_slice(bytes).map_err(damaged)
}

fn damaged(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("a stored record is damaged: {e}"))
}

/// What the catalogue's load reads of a record: the needs, through their own serde code, skipping the rest (key,
/// descriptions, parameters, file) without building it; the key is the table's.
#[derive(serde::Deserialize)]
struct RecordView {
    spec: SpecView,
}

#[derive(serde::Deserialize)]
struct SpecView {
    #[serde(default)]
    needs: Option<crate::domain::Needs>,
}

/// A record read at load time, ready for the catalogue.
struct Loaded {
    kind: Kind,
    sort_key: Arc<str>,
    needs: Option<crate::domain::Needs>,
    record: Arc<[u8]>,
}

/// A record as read from its table.
struct Raw {
    kind: Kind,
    sort_key: Arc<str>,
    record: Arc<[u8]>,
}

impl Loaded {
    fn read(raw: Raw) -> Result<Self, StoreError> {
        let view: RecordView = serde_json::from_slice(&raw.record).map_err(damaged)?;
        // Models have no needs: the same as `Spec::needs` on the decoded component.
        let needs = match raw.kind {
            Kind::Model => None,
            _ => Some(view.spec.needs.unwrap_or_default()),
        };
        Ok(Self {
            kind: raw.kind,
            sort_key: raw.sort_key,
            needs,
            record: raw.record,
        })
    }
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    blobs: BlobDir,
    tmp_dir: PathBuf,
    /// Digests of blobs placed by uploads whose metadata has not committed yet: never reclaimed meanwhile.
    pins: Arc<Pins>,
    /// The one thread that commits writes, many in one transaction; see [`writer`].
    writer: Writer,
    /// Every component in memory, for reads; see [`catalog`].
    catalog: Arc<Catalog>,
    loaded: tokio::sync::watch::Receiver<Loading>,
    /// Raised after each commit that appended an event (once the catalogue shows the change).
    signal: Arc<EventSignal>,
    /// Permits for blob reads (`BLOB_READERS`): downloads can never take the whole blocking pool.
    readers: Arc<Semaphore>,
    /// Resumable upload sessions being appended to now.
    uploads: uploads::Active,
}

/// Where loading the catalogue from redb stands; the store starts answering reads once it is loaded.
#[derive(Debug, Clone)]
enum Loading {
    InProgress,
    Done,
    Failed(String),
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`, then removes what an earlier crash may have left: staged
    /// uploads and blobs that no metadata refers to. The catalogue loads in the background: reads wait for it and
    /// [`Store::ping`] reports the store unavailable until it is loaded.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let data_dir = data_dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??;
        Ok(store)
    }

    /// Builds the catalogue from a redb snapshot taken under the writers' lock, so that writes committed before are
    /// in it and writes after wait for it to be published. Records are read in one thread, decoded on every core
    /// and pushed into the indexes here in key order (a push each: no tree is built one insert at a time), so that a
    /// cold start takes about as long as decoding the needs of every record.
    fn load(db: &Database, catalog: &Catalog) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let writer = catalog.writer();
        let txn = db.begin_read().or_backend()?;
        let decoders = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Batches are numbered, so that the builder takes them in the order redb returned them whichever decoder
        // finishes first.
        let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<(usize, Vec<Raw>)>(2 * decoders);
        let (decoded_tx, decoded_rx) =
            std::sync::mpsc::sync_channel::<(usize, Result<Vec<Loaded>, StoreError>)>(2 * decoders);
        let raw_rx = std::sync::Mutex::new(raw_rx);
        let mut builder = Builder::default();
        let mut count = 0u64;
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let reader = scope.spawn(move || -> Result<(), StoreError> {
                let mut number = 0;
                let mut send = |batch: Vec<Raw>| {
                    number += 1;
                    raw_tx.send((number - 1, batch)).is_ok()
                };
                for kind in Kind::ALL {
                    let table = txn.open_table(table(kind)).or_backend()?;
                    let mut batch = Vec::with_capacity(LOAD_BATCH);
                    for entry in table.iter().or_backend()? {
                        let (key, value) = entry.or_backend()?;
                        batch.push(Raw {
                            kind,
                            sort_key: key.value().into(),
                            record: value.value().into(),
                        });
                        if batch.len() == LOAD_BATCH
                            && !send(std::mem::replace(
                                &mut batch,
                                Vec::with_capacity(LOAD_BATCH),
                            ))
                        {
                            return Ok(());
                        }
                    }
                    if !batch.is_empty() && !send(batch) {
                        return Ok(());
                    }
                }
                Ok(())
            });
            for _ in 0..decoders {
                let decoded_tx = decoded_tx.clone();
                let raw_rx = &raw_rx;
                scope.spawn(move || {
                    loop {
                        let next = raw_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((number, batch))) = next else {
                            return;
                        };
                        let decoded = batch.into_iter().map(Loaded::read).collect();
                        if decoded_tx.send((number, decoded)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(decoded_tx);
            let mut waiting = std::collections::BTreeMap::new();
            let mut next = 0;
            for (number, batch) in decoded_rx {
                // An error drops the receiver on return, which stops the decoders and then the reader.
                waiting.insert(number, batch?);
                while let Some(batch) = waiting.remove(&next) {
                    next += 1;
                    for loaded in batch {
                        builder.push(
                            loaded.kind,
                            loaded.sort_key,
                            loaded.needs.as_ref(),
                            loaded.record,
                        );
                        count += 1;
                    }
                }
            }
            reader
                .join()
                .map_err(|_| StoreError::Backend("the catalogue reader panicked".into()))?
        })?;
        let snapshot = builder.finish();
        writer.publish(move |published| *published = snapshot);
        tracing::info!(
            components = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "catalogue loaded"
        );
        Ok(())
    }

    /// The current catalogue, once loaded.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let mut loaded = self.loaded.clone();
        let state = loaded
            .wait_for(|state| !matches!(state, Loading::InProgress))
            .await
            .map_err(|_| StoreError::Backend("the catalogue loader stopped".into()))?
            .clone();
        match state {
            Loading::Failed(reason) => Err(StoreError::Backend(reason)),
            _ => Ok(self.catalog.snapshot()),
        }
    }

    fn open_blocking(data_dir: &Path) -> Result<Self, StoreError> {
        let tmp_dir = data_dir.join("tmp");
        let blob_root = data_dir.join("blobs");
        std::fs::create_dir_all(&tmp_dir)?;
        std::fs::create_dir_all(&blob_root)?;
        let stray = clear_dir(&tmp_dir)?;
        if stray > 0 {
            tracing::info!(
                stray,
                "removed interrupted uploads from the staging directory"
            );
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(data_dir.join("metadata.redb"))
            .or_backend()?;
        let txn = db.begin_write().or_backend()?;
        for kind in Kind::ALL {
            txn.open_table(table(kind)).or_backend()?;
        }
        txn.open_table(BLOB_REFS).or_backend()?;
        events::create_tables(&txn)?;
        webhooks::create_tables(&txn)?;
        txn.open_table(ALIASES).or_backend()?;
        txn.open_table(ALIAS_HISTORY).or_backend()?;
        txn.commit().or_backend()?;
        let last_event = events::last(&db)?;

        let db = Arc::new(db);
        let catalog = Arc::new(Catalog::default());
        let (loading, loaded) = tokio::sync::watch::channel(Loading::InProgress);
        let blobs = BlobDir::new(blob_root);
        let pins = Arc::new(Pins::default());
        let signal = Arc::new(EventSignal::new(last_event));
        let writer = Writer::start(writer::Shared {
            db: db.clone(),
            catalog: catalog.clone(),
            signal: signal.clone(),
            blobs: blobs.clone(),
            pins: pins.clone(),
        })?;
        let store = Self {
            db: db.clone(),
            blobs,
            tmp_dir,
            pins,
            writer,
            catalog: catalog.clone(),
            loaded,
            signal,
            readers: Arc::new(Semaphore::new(BLOB_READERS)),
            uploads: uploads::Active::default(),
        };
        store.remove_unreferenced_blobs()?;
        std::thread::Builder::new()
            .name("catalogue-loader".into())
            .spawn(move || {
                let state = match Self::load(&db, &catalog) {
                    Ok(()) => Loading::Done,
                    Err(e) => {
                        tracing::error!(error = %e, "loading the catalogue failed");
                        Loading::Failed(format!("loading the catalogue failed: {e}"))
                    }
                };
                loading.send_replace(state);
            })?;
        Ok(store)
    }

    /// Inserts many new components in one transaction, for bulk loading (the catalogue benchmark): all or none,
    /// [`StoreError::AlreadyExists`] when a key is taken.
    pub async fn insert_many(&self, components: Vec<Component>) -> Result<(), StoreError> {
        self.writer
            .write(Vec::new(), move |txn| {
                // Every key is checked before anything is written, repeats within the batch included.
                let mut keys = std::collections::HashSet::new();
                for component in &components {
                    let fresh = keys.insert((component.kind(), component.key.sort_key()));
                    if !fresh || read_component(txn, &component.key)?.is_some() {
                        return Err(StoreError::AlreadyExists(component.key.clone()));
                    }
                }
                let mut puts = Vec::with_capacity(components.len());
                let mut last = None;
                for component in components {
                    let record = write_component(txn, &component)?;
                    last = Some(events::append(txn, EventDraft::created(&component))?);
                    puts.push((component, record));
                }
                let applied = Applied::new((), Change::Put(puts));
                Ok(match last {
                    Some(sequence) => applied.event(sequence),
                    None => applied,
                })
            })
            .await
    }

    fn remove_unreferenced_blobs(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().or_backend()?;
        let refs = txn.open_table(BLOB_REFS).or_backend()?;
        let mut removed = 0;
        for digest in self.blobs.list()? {
            if refs.get(digest.as_str()).or_backend()?.is_none() {
                self.blobs.remove(&digest)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed blobs that no component refers to");
        }
        Ok(())
    }

    /// Runs blocking database work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    /// Places staged blobs in `blobs/` (renamed atomically, then fsynced) and queues `work`, which refers to them,
    /// with their digests pinned until `work` has committed. Placing and queueing run as one blocking step, so a
    /// caller that goes away in between cannot leave a placed blob that nothing will check.
    async fn attaching<T: Send + 'static>(
        &self,
        staged: Vec<(String, tempfile::TempPath)>,
        work: impl FnOnce(&WriteTransaction) -> Result<Applied<T>, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (pins, queue) = (Arc::clone(&self.pins), self.writer.queue()?);
        let blobs = self.blobs.clone();
        let answer = super::file_io::run(move || {
            let mut held = Vec::with_capacity(staged.len());
            for (digest, temp) in staged {
                held.push(pins.pin(&digest));
                if let Err(e) = blobs.place(&digest, temp) {
                    // Blobs placed so far (and a rename that happened before a failed directory sync) are left
                    // to the writer, which reclaims what nothing refers to.
                    let nothing =
                        |_: &WriteTransaction| Ok(Applied::new((), Change::Put(Vec::new())));
                    let _ = queue.submit(held, nothing);
                    return Err(e.into());
                }
            }
            queue.submit(held, work)
        })
        .await??;
        writer::wait(answer).await
    }
}

/// What a committed write changed, for the catalogue: components put, with their records as written.
enum Change {
    Put(Vec<(Component, Vec<u8>)>),
    Remove(ComponentKey),
}

impl Change {
    fn apply_to(self, snapshot: &mut Snapshot) {
        match self {
            Change::Put(puts) => {
                for (component, record) in puts {
                    snapshot.insert(&component.key, component.spec.needs(), record.into());
                }
            }
            Change::Remove(key) => snapshot.remove(&key),
        }
    }
}

/// Every stored file of a component: the default one and those of its variants.
fn files_of(component: &Component) -> impl Iterator<Item = &StoredFile> {
    component
        .file
        .iter()
        .chain(component.variants.iter().map(|v| &v.file))
}

/// Puts `file` in as the variant of `platform`, returning the file it replaces.
fn replace_variant(
    variants: &mut Vec<crate::domain::Variant>,
    platform: crate::domain::Platform,
    file: StoredFile,
) -> Option<StoredFile> {
    match variants.iter_mut().find(|v| v.platform == platform) {
        Some(existing) => Some(std::mem::replace(&mut existing.file, file)),
        None => {
            variants.push(crate::domain::Variant { platform, file });
            None
        }
    }
}

/// Adds `delta` to the reference count of a blob, dropping the entry at zero.
fn adjust_refs(txn: &WriteTransaction, digest: &str, delta: i64) -> Result<(), StoreError> {
    let mut refs = txn.open_table(BLOB_REFS).or_backend()?;
    let current = refs
        .get(digest)
        .or_backend()?
        .map(|v| v.value())
        .unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    if next == 0 {
        refs.remove(digest).or_backend()?;
    } else {
        refs.insert(digest, next).or_backend()?;
    }
    Ok(())
}

fn read_component(
    txn: &WriteTransaction,
    key: &ComponentKey,
) -> Result<Option<Component>, StoreError> {
    let table = txn.open_table(table(key.kind())).or_backend()?;
    let found = table.get(key.sort_key().as_str()).or_backend()?;
    found.map(|v| decode(v.value())).transpose()
}

/// Writes a component's record and returns it, for the catalogue.
fn write_component(txn: &WriteTransaction, component: &Component) -> Result<Vec<u8>, StoreError> {
    let mut table = txn.open_table(table(component.kind())).or_backend()?;
    let record = encode(component)?;
    table
        .insert(component.key.sort_key().as_str(), record.as_slice())
        .or_backend()?;
    Ok(record)
}

/// Streams `range` of `file`. A chunk already in the page cache is copied on the spot (the common case for a
/// catalogue's popular files); any other is one short job on tokio's blocking pool (a positional read) that holds
/// one of `readers`' permits while it runs, and no thread waits on the client. Each such read is a task of its own,
/// so it runs to its end (and gives its permit back) even when the client has stopped taking bytes: a stalled
/// download holds at most `READ_AHEAD` chunks in memory, plus the one the connection is sending, and nothing else.
fn read_chunks(file: std::fs::File, range: Range<u64>, readers: Arc<Semaphore>) -> ByteStream {
    let file = Arc::new(file);
    let end = range.end;
    let chunks = futures_util::stream::iter(range.step_by(READ_CHUNK)).map(move |offset| {
        let len = (end - offset).min(READ_CHUNK as u64) as usize;
        let mut chunk = match page_cache::read(&file, offset, BytesMut::zeroed(len)) {
            Ok(cached) => return Either::Left(std::future::ready(Ok(cached))),
            Err(buffer) => buffer,
        };
        let file = Arc::clone(&file);
        let readers = Arc::clone(&readers);
        let read = tokio::spawn(async move {
            let permit = readers
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                file.read_exact_at(&mut chunk, offset)?;
                Ok(chunk.freeze())
            })
            .await
            .map_err(std::io::Error::other)?
        });
        Either::Right(async move { read.await.map_err(std::io::Error::other)? })
    });
    Box::pin(chunks.buffered(READ_AHEAD))
}

/// Reads that never wait for the disk: `preadv2(RWF_NOWAIT)` copies what the page cache holds and refuses the rest.
#[cfg(target_os = "linux")]
mod page_cache {
    use bytes::{Bytes, BytesMut};
    use rustix::io::{ReadWriteFlags, preadv2};
    use std::io::IoSliceMut;

    /// `chunk.len()` bytes at `offset` if all of them are cached; otherwise the buffer back, for the caller to
    /// read from the disk (a caller reads or overwrites every byte of it).
    pub fn read(file: &std::fs::File, offset: u64, mut chunk: BytesMut) -> Result<Bytes, BytesMut> {
        let read = preadv2(
            file,
            &mut [IoSliceMut::new(&mut chunk)],
            offset,
            ReadWriteFlags::NOWAIT,
        );
        if read == Ok(chunk.len()) {
            Ok(chunk.freeze())
        } else {
            Err(chunk)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod page_cache {
    pub fn read(
        _: &std::fs::File,
        _: u64,
        chunk: bytes::BytesMut,
    ) -> Result<bytes::Bytes, bytes::BytesMut> {
        Err(chunk)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match &*self.loaded.borrow() {
            Loading::InProgress => {
                return Err(StoreError::Unavailable(
                    "the catalogue is still loading".into(),
                ));
            }
            Loading::Failed(reason) => return Err(StoreError::Backend(reason.clone())),
            Loading::Done => {}
        }
        self.blocking(|db| {
            let txn = db.begin_read().or_backend()?;
            txn.open_table(MODELS).or_backend()?;
            Ok(())
        })
        .await
    }

    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.writer
            .write(Vec::new(), move |txn| {
                if read_component(txn, &component.key)?.is_some() {
                    return Err(StoreError::AlreadyExists(component.key));
                }
                let record = write_component(txn, &component)?;
                let sequence = events::append(txn, EventDraft::created(&component))?;
                Ok(Applied::new((), Change::Put(vec![(component, record)])).event(sequence))
            })
            .await
    }

    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        let snapshot = self.snapshot().await?;
        snapshot.get(key)
    }

    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        let snapshot = self.snapshot().await?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.extend(snapshot.get(&ComponentKey::Model(key.clone()))?);
        }
        Ok(found)
    }

    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        let snapshot = self.snapshot().await?;
        snapshot.list(kind, filter, &page)
    }

    async fn scan(&self, kind: Kind) -> Result<ComponentStream, StoreError> {
        let snapshot = self.snapshot().await?;
        // One snapshot for the whole scan: the list is one consistent state however long the client takes.
        let steps = futures_util::stream::unfold(
            (snapshot, None::<Arc<str>>, false),
            move |(snapshot, after, done)| async move {
                if done {
                    return None;
                }
                let chunk = snapshot.range(kind, after.as_deref(), SCAN_STEP);
                let done = chunk.len() < SCAN_STEP;
                let after = chunk.last().map(|(key, _)| key.clone());
                Some((chunk, (snapshot, after, done)))
            },
        );
        Ok(Box::pin(futures_util::StreamExt::flat_map(
            steps,
            |chunk| futures_util::stream::iter(chunk.into_iter().map(|(_, item)| item.component())),
        )))
    }

    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
    ) -> Result<Component, StoreError> {
        let key = key.clone();
        self.writer
            .write(Vec::new(), move |txn| {
                let before =
                    read_component(txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                if let Some(refused) = before.metadata_change_refused() {
                    return Err(StoreError::Immutable(refused));
                }
                let mut component = before.clone();
                update(&mut component.spec)?;
                component.spec.validate()?;
                component.updated_at = crate::domain::now();
                let record = write_component(txn, &component)?;
                let sequence = events::append(txn, EventDraft::updated(&before, &component))?;
                Ok(
                    Applied::new(component.clone(), Change::Put(vec![(component, record)]))
                        .event(sequence),
                )
            })
            .await
    }

    async fn delete(
        &self,
        key: &ComponentKey,
        immutable: bool,
    ) -> Result<Option<Component>, StoreError> {
        let key = key.clone();
        self.writer
            .write(Vec::new(), move |txn| {
                let Some(component) = read_component(txn, &key)? else {
                    return Ok(Applied::new(None, Change::Put(Vec::new())));
                };
                if let Some(refused) = immutability(&component, immutable) {
                    return Err(refused);
                }
                if !component.aliases.is_empty() {
                    return Err(StoreError::Aliased {
                        key: key.clone(),
                        aliases: component.aliases.iter().cloned().collect(),
                    });
                }
                txn.open_table(table(key.kind()))
                    .or_backend()?
                    .remove(key.sort_key().as_str())
                    .or_backend()?;
                let released: Vec<String> =
                    files_of(&component).map(|f| f.blob_id.clone()).collect();
                for digest in &released {
                    adjust_refs(txn, digest, -1)?;
                }
                let sequence = events::append(txn, EventDraft::deleted(&component))?;
                Ok(Applied::new(Some(component), Change::Remove(key))
                    .event(sequence)
                    .released(released))
            })
            .await
    }

    async fn lock(&self, key: &ComponentKey) -> Result<Component, StoreError> {
        let key = key.clone();
        self.writer
            .write(Vec::new(), move |txn| {
                let mut component =
                    read_component(txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                if component.locked {
                    // Locked already: nothing changes, so nothing goes on the feed.
                    return Ok(Applied::new(component, Change::Put(Vec::new())));
                }
                component.locked = true;
                let record = write_component(txn, &component)?;
                let sequence = events::append(txn, EventDraft::locked(&component))?;
                Ok(
                    Applied::new(component.clone(), Change::Put(vec![(component, record)]))
                        .event(sequence),
                )
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
        let (name, alias, by) = (name.to_string(), alias.to_string(), by.to_string());
        let version = version.map(str::to_string);
        self.writer
            .write(Vec::new(), move |txn| {
                let slot = format!("{name}\0{alias}");
                let from = {
                    let aliases = txn.open_table(ALIASES).or_backend()?;
                    let found = aliases.get(slot.as_str()).or_backend()?;
                    found.map(|v| v.value().to_string())
                };
                if from == version {
                    return Ok(Applied::new(None, Change::Put(Vec::new())));
                }
                // Everything that can refuse the move is read (and its event drawn up) before anything is written.
                let target = match &version {
                    Some(to) => {
                        let key = ComponentKey::model(name.clone(), to.clone())?;
                        let mut target =
                            read_component(txn, &key)?.ok_or(StoreError::NotFound(key))?;
                        target.aliases.insert(alias.clone());
                        Some(target)
                    }
                    None => None,
                };
                let previous = match &from {
                    Some(old) => {
                        read_component(txn, &ComponentKey::model(name.clone(), old.clone())?)?
                    }
                    None => None,
                };
                let record = AliasMove {
                    model: name,
                    alias: alias.clone(),
                    from,
                    to: version.clone(),
                    at: crate::domain::now(),
                    by,
                };
                let draft = EventDraft::alias_moved(target.as_ref(), &record)?;
                let mut changed = Vec::new();
                if let Some(target) = target {
                    let written = write_component(txn, &target)?;
                    changed.push((target, written));
                }
                if let Some(mut previous) = previous {
                    previous.aliases.remove(&alias);
                    let written = write_component(txn, &previous)?;
                    changed.push((previous, written));
                }
                {
                    let mut aliases = txn.open_table(ALIASES).or_backend()?;
                    match &version {
                        Some(to) => aliases.insert(slot.as_str(), to.as_str()).or_backend()?,
                        None => aliases.remove(slot.as_str()).or_backend()?,
                    };
                }
                {
                    let mut history = txn.open_table(ALIAS_HISTORY).or_backend()?;
                    let (start, end) = (format!("{slot}\0"), format!("{slot}\u{1}"));
                    let last = history
                        .range(start.as_str()..end.as_str())
                        .or_backend()?
                        .next_back()
                        .transpose()
                        .or_backend()?
                        .and_then(|(k, _)| k.value().rsplit('\0').next()?.parse::<u64>().ok());
                    let entry = format!("{start}{:020}", last.map_or(0, |n| n + 1));
                    let json = serde_json::to_vec(&record)
                        .map_err(|e| StoreError::Backend(format!("encoding an alias move: {e}")))?;
                    history
                        .insert(entry.as_str(), json.as_slice())
                        .or_backend()?;
                }
                let sequence = events::append(txn, draft)?;
                Ok(Applied::new(Some(record), Change::Put(changed)).event(sequence))
            })
            .await
    }

    async fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<String>, StoreError> {
        let slot = format!("{name}\0{alias}");
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let aliases = txn.open_table(ALIASES).or_backend()?;
            let found = aliases.get(slot.as_str()).or_backend()?;
            Ok(found.map(|v| v.value().to_string()))
        })
        .await
    }

    async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, StoreError> {
        let slot = format!("{name}\0{alias}");
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let history = txn.open_table(ALIAS_HISTORY).or_backend()?;
            let (start, end) = (format!("{slot}\0"), format!("{slot}\u{1}"));
            let mut moves = Vec::new();
            for entry in history.range(start.as_str()..end.as_str()).or_backend()? {
                let (_, value) = entry.or_backend()?;
                moves.push(serde_json::from_slice(value.value()).map_err(|e| {
                    StoreError::Backend(format!("a stored alias move is damaged: {e}"))
                })?);
            }
            Ok(moves)
        })
        .await
    }

    async fn stage(&self, body: UploadStream<'_>, limit: u64) -> Result<StagedBlob, StoreError> {
        stage_to_file(&self.tmp_dir, body, limit).await
    }

    async fn attach(
        &self,
        key: &ComponentKey,
        staged: StagedBlob,
        meta: FileMeta,
    ) -> Result<Component, StoreError> {
        let (sha256, size, temp) = staged.into_file()?;
        let immutable = meta.immutable;
        let platform = meta.platform.clone();
        let file = StoredFile {
            blob_id: sha256.clone(),
            size,
            sha256: sha256.clone(),
            content_type: meta.content_type,
            filename: meta.filename,
            uploaded_at: crate::domain::now(),
        };
        let key = key.clone();
        self.attaching(vec![(sha256.clone(), temp)], move |txn| {
            let mut component =
                read_component(txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            if let Some(refused) = replacement_refused(&component, platform.as_ref(), immutable) {
                return Err(refused);
            }
            adjust_refs(txn, &file.blob_id, 1)?;
            let attached = file.clone();
            let previous = match platform {
                None => component.file.replace(file),
                Some(platform) => replace_variant(&mut component.variants, platform, file),
            };
            if let Some(previous) = &previous {
                adjust_refs(txn, &previous.blob_id, -1)?;
            }
            component.updated_at = crate::domain::now();
            let record = write_component(txn, &component)?;
            let sequence = events::append(
                txn,
                EventDraft::attached(&component, &attached, previous.is_some()),
            )?;
            Ok(
                Applied::new(component.clone(), Change::Put(vec![(component, record)]))
                    .event(sequence)
                    .released(previous.map(|p| p.blob_id)),
            )
        })
        .await
    }

    async fn insert_with_files(
        &self,
        mut component: Component,
        files: StagedFiles,
    ) -> Result<(), StoreError> {
        files.check(&component)?;
        let mut temps = Vec::new();
        for staged in files.default.into_iter().chain(files.variants) {
            let (sha256, _, temp) = staged.into_file()?;
            temps.push((sha256, temp));
        }
        // This store names blobs by their sha256; aliases come with their own records.
        for file in component
            .file
            .iter_mut()
            .chain(component.variants.iter_mut().map(|v| &mut v.file))
        {
            file.blob_id = file.sha256.clone();
        }
        component.aliases.clear();
        let digests: Vec<String> = temps.iter().map(|(sha256, _)| sha256.clone()).collect();
        self.attaching(temps, move |txn| {
            if read_component(txn, &component.key)?.is_some() {
                return Err(StoreError::AlreadyExists(component.key));
            }
            for digest in &digests {
                adjust_refs(txn, digest, 1)?;
            }
            let record = write_component(txn, &component)?;
            let sequence = events::append(txn, EventDraft::created(&component))?;
            Ok(Applied::new((), Change::Put(vec![(component, record)])).event(sequence))
        })
        .await
    }

    async fn alias_records(&self) -> Result<Vec<AliasRecord>, StoreError> {
        self.blocking(aliases::records).await
    }

    async fn insert_alias(&self, record: AliasRecord) -> Result<(), StoreError> {
        self.writer
            .write(Vec::new(), move |txn| {
                let (sequence, change) = aliases::insert(txn, &record)?;
                let applied = Applied::new((), change);
                Ok(match sequence {
                    Some(sequence) => applied.event(sequence),
                    None => applied,
                })
            })
            .await
    }

    async fn events(&self, after: u64, limit: usize) -> Result<EventBatch, StoreError> {
        self.blocking(move |db| events::read(db, after, limit))
            .await
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        self.blocking(events::last).await
    }

    async fn feed_id(&self) -> Result<String, StoreError> {
        self.blocking(events::feed_id).await
    }

    fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signal.subscribe()
    }

    async fn expire_events(&self, retention: &EventRetention) -> Result<u64, StoreError> {
        let retention = *retention;
        self.blocking(move |db| events::expire(db, &retention))
            .await
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let webhook = webhook.clone();
        self.blocking(move |db| webhooks::insert(db, &webhook))
            .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.blocking(move |db| webhooks::delete(db, &id)).await
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.blocking(webhooks::list).await
    }

    async fn advance_webhook(&self, id: &str, cursor: u64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.blocking(move |db| webhooks::advance(db, &id, cursor))
            .await
    }

    async fn lease_webhook(
        &self,
        _id: &str,
        _owner: &str,
        _until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        // The database is open in this process only.
        Ok(true)
    }

    async fn save_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.blocking(move |db| webhooks::save_delivery(db, &delivery))
            .await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.blocking(move |db| webhooks::deliveries(db, &webhook_id, limit))
            .await
    }

    async fn prune_deliveries(
        &self,
        webhook_id: &str,
        before: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, StoreError> {
        let webhook_id = webhook_id.to_string();
        self.blocking(move |db| webhooks::prune(db, &webhook_id, before, keep))
            .await
    }

    async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError> {
        let Some(path) = self.blobs.path_of(&file.blob_id) else {
            return Ok(None);
        };
        // Opening is a blocking job like the reads, under the same limit: a burst of downloads never takes the pool.
        let permit = Arc::clone(&self.readers)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let opened = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            std::fs::File::open(&path)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        let blob = match opened {
            Ok(blob) => blob,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // An open file stays readable even if a concurrent delete unlinks it, so a download never breaks off.
        Ok(Some(read_chunks(blob, range, Arc::clone(&self.readers))))
    }

    async fn put_mirrored(
        &self,
        key: &ComponentKey,
        component: Option<Component>,
        staged: Vec<StagedBlob>,
    ) -> Result<(), StoreError> {
        self.put_mirrored_component(key, component, staged).await
    }

    async fn stage_verified(
        &self,
        file: tempfile::TempPath,
        sha256: &str,
        size: u64,
    ) -> Result<StagedBlob, StoreError> {
        Ok(self.adopt_verified(file, sha256, size))
    }

    async fn mirror_state(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.read_mirror_state().await
    }

    async fn save_mirror_state(&self, state: &serde_json::Value) -> Result<(), StoreError> {
        self.write_mirror_state(state).await
    }

    async fn blob(&self, sha256: &str) -> Result<Option<StoredFile>, StoreError> {
        let Some(path) = self.blobs.path_of(sha256) else {
            return Ok(None);
        };
        let digest = sha256.to_string();
        self.blocking(move |db| {
            // Only referenced blobs are served: one being reclaimed, or placed by an upload that has not
            // committed, is not there yet for clients.
            let txn = db.begin_read().or_backend()?;
            let refs = txn.open_table(BLOB_REFS).or_backend()?;
            if refs.get(digest.as_str()).or_backend()?.is_none() {
                return Ok(None);
            }
            let stat = match std::fs::metadata(&path) {
                Ok(stat) => stat,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let modified = stat
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_default();
            Ok(Some(super::digest_file(StoredFile {
                blob_id: digest.clone(),
                size: stat.len(),
                sha256: digest,
                content_type: String::new(),
                filename: String::new(),
                uploaded_at: modified,
            })))
        })
        .await
    }
}

#[cfg(all(test, target_os = "linux"))]
mod download_tests {
    use std::io::Write;

    use rustix::fs::{Advice, fadvise};

    use super::*;

    fn stored(bytes: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().expect("a temporary file");
        file.write_all(bytes).expect("written");
        file.sync_all().expect("synced");
        file
    }

    async fn read(file: &std::fs::File, range: Range<u64>) -> Vec<u8> {
        let file = file.try_clone().expect("a second handle");
        let mut chunks = read_chunks(file, range, Arc::new(Semaphore::new(2)));
        let mut read = Vec::new();
        while let Some(chunk) = chunks.next().await {
            read.extend_from_slice(&chunk.expect("a chunk"));
        }
        read
    }

    #[tokio::test]
    async fn downloads_read_the_same_bytes_from_the_page_cache_and_from_the_disk() {
        let data: Vec<u8> = (0..READ_CHUNK * 3 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let file = stored(&data);
        let (start, end) = (1000, READ_CHUNK * 2 + 17);
        let whole = 0..data.len() as u64;
        let inside = start as u64..end as u64;
        assert_eq!(read(&file, whole.clone()).await, data);
        assert_eq!(read(&file, inside.clone()).await, data[start..end]);
        // Clean pages dropped: the reads that miss the cache go to the blocking pool.
        fadvise(&file, 0, None, Advice::DontNeed).expect("advice taken");
        assert_eq!(read(&file, inside).await, data[start..end]);
        fadvise(&file, 0, None, Advice::DontNeed).expect("advice taken");
        assert_eq!(read(&file, whole).await, data);
    }

    #[test]
    fn a_page_cache_read_is_all_the_bytes_asked_for_or_nothing() {
        let file = stored(b"0123456789");
        assert_eq!(
            page_cache::read(&file, 2, BytesMut::zeroed(8)).as_deref(),
            Ok(&b"23456789"[..])
        );
        let missed = page_cache::read(&file, 2, BytesMut::zeroed(9));
        assert_eq!(
            missed.map_err(|buffer| buffer.len()),
            Err(9),
            "a short read is not a chunk; the whole buffer comes back for the read from the disk"
        );
    }
}
