//! The default store: metadata in redb (a pure-Rust ACID database), files as content-addressed blobs beside it.
//!
//! Crash safety rests on one ordering: a blob is written to `tmp/`, fsynced and renamed into `blobs/` *before* the
//! metadata transaction that refers to it commits, and an old blob is deleted only *after* the transaction that
//! dropped its last reference commits. A crash can therefore leave an unreferenced blob (removed at the next
//! start-up) but never metadata that points at a missing or partial one. Reference counts live in the same
//! transactions as the metadata, so identical bytes are stored once and reclaimed when nothing uses them.

mod blobs;

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::Semaphore;

use self::blobs::{BlobDir, clear_dir};
use super::{
    ByteStream, FileMeta, Page, PageRequest, SpecUpdate, StagedBlob, Store, StoreError,
    UploadStream, adopt_file, stage_to_file,
};
use crate::domain::{Component, ComponentFilter, ComponentKey, Kind, ModelKey, StoredFile};

const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
const TRANSFORMATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("transformations");
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const INFERENCERS: TableDefinition<&str, &[u8]> = TableDefinition::new("inferencers");
/// sha256 -> how many components use that blob.
const BLOB_REFS: TableDefinition<&str, u64> = TableDefinition::new("blob_refs");

/// Metadata is small; a modest page cache keeps the server's memory flat.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Read size of downloads: each read is one hop to tokio's blocking pool, so chunks are large enough to keep that
/// overhead small, and small enough that thousands of stalled downloads stay cheap.
const READ_CHUNK: usize = 128 * 1024;
/// Chunks of a download read ahead of the network, so that the disk works while the network sends.
const READ_AHEAD: usize = 2;
/// Blob reads running at once across all downloads: well below tokio's blocking pool (512 threads), so that
/// metadata work (redb) always finds a thread however many downloads are in flight.
const BLOB_READERS: usize = 32;

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
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Backend(format!("a stored record is damaged: {e}")))
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    blobs: BlobDir,
    tmp_dir: PathBuf,
    /// Serialises the short steps that place or reclaim blobs together with their metadata commit, so that a blob
    /// being attached is never reclaimed by a concurrent delete of another component with the same bytes.
    blob_lock: tokio::sync::Mutex<()>,
    /// Permits for blob reads (`BLOB_READERS`): downloads can never take the whole blocking pool.
    readers: Arc<Semaphore>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`, then removes what an earlier crash may have left: staged
    /// uploads and blobs that no metadata refers to.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
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
        txn.commit().or_backend()?;

        let store = Self {
            db: Arc::new(db),
            blobs: BlobDir::new(blob_root),
            tmp_dir,
            blob_lock: tokio::sync::Mutex::new(()),
            readers: Arc::new(Semaphore::new(BLOB_READERS)),
        };
        store.remove_unreferenced_blobs()?;
        Ok(store)
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

    /// Deletes the blob file when no component refers to it any more. Call with `blob_lock` held.
    /// Moves a staged file into `blobs/` under its hash (fsynced, renamed atomically). The caller holds
    /// `blob_lock` until the metadata that refers to the blob has committed.
    async fn place(&self, sha256: &str, temp: tempfile::TempPath) -> Result<(), StoreError> {
        let blobs = self.blobs.clone();
        let digest = sha256.to_string();
        tokio::task::spawn_blocking(move || blobs.place(&digest, temp))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??;
        Ok(())
    }

    async fn reclaim(&self, digests: Vec<String>) -> Result<(), StoreError> {
        if digests.is_empty() {
            return Ok(());
        }
        let unreferenced = self
            .blocking(move |db| {
                let txn = db.begin_read().or_backend()?;
                let refs = txn.open_table(BLOB_REFS).or_backend()?;
                let mut unreferenced = Vec::new();
                for digest in digests {
                    if refs.get(digest.as_str()).or_backend()?.is_none() {
                        unreferenced.push(digest);
                    }
                }
                Ok(unreferenced)
            })
            .await?;
        for digest in unreferenced {
            self.blobs.remove(&digest)?;
        }
        Ok(())
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

fn write_component(txn: &WriteTransaction, component: &Component) -> Result<(), StoreError> {
    let mut table = txn.open_table(table(component.kind())).or_backend()?;
    table
        .insert(
            component.key.sort_key().as_str(),
            encode(component)?.as_slice(),
        )
        .or_backend()?;
    Ok(())
}

/// Streams `range` of `file`: each chunk is one short job on tokio's blocking pool (a positional read) that holds
/// one of `readers`' permits while it runs, and no thread waits on the client. Each read is a task of its own, so it
/// runs to its end (and gives its permit back) even when the client has stopped taking bytes: a stalled download
/// holds at most `READ_AHEAD` chunks in memory, plus the one the connection is sending, and nothing else.
fn read_chunks(file: std::fs::File, range: Range<u64>, readers: Arc<Semaphore>) -> ByteStream {
    let file = Arc::new(file);
    let end = range.end;
    let chunks = futures_util::stream::iter(range.step_by(READ_CHUNK)).map(move |offset| {
        let file = Arc::clone(&file);
        let readers = Arc::clone(&readers);
        let len = (end - offset).min(READ_CHUNK as u64) as usize;
        let read = tokio::spawn(async move {
            let permit = readers
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let mut chunk = BytesMut::zeroed(len);
                file.read_exact_at(&mut chunk, offset)?;
                Ok(chunk.freeze())
            })
            .await
            .map_err(std::io::Error::other)?
        });
        async move { read.await.map_err(std::io::Error::other)? }
    });
    Box::pin(chunks.buffered(READ_AHEAD))
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().or_backend()?;
            txn.open_table(MODELS).or_backend()?;
            Ok(())
        })
        .await
    }

    async fn insert(&self, component: Component) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().or_backend()?;
            if read_component(&txn, &component.key)?.is_some() {
                return Err(StoreError::AlreadyExists(component.key));
            }
            write_component(&txn, &component)?;
            txn.commit().or_backend()
        })
        .await
    }

    async fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        let key = key.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let table = txn.open_table(table(key.kind())).or_backend()?;
            let found = table.get(key.sort_key().as_str()).or_backend()?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn get_models(&self, keys: &[ModelKey]) -> Result<Vec<Component>, StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let table = txn.open_table(MODELS).or_backend()?;
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                let sort_key = ComponentKey::Model(key).sort_key();
                if let Some(v) = table.get(sort_key.as_str()).or_backend()? {
                    found.push(decode(v.value())?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: PageRequest,
    ) -> Result<Page, StoreError> {
        let filter = filter.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let table = txn.open_table(table(kind)).or_backend()?;
            let mut items = Vec::new();
            let mut total = 0u64;
            // The embedded store serves one machine's catalogue (hundreds to thousands of components): a scan in
            // key order is simple and fast enough, and gives an exact totalCount.
            for entry in table.iter().or_backend()? {
                let (key, value) = entry.or_backend()?;
                let component = decode(value.value())?;
                if !filter.matches(&component) {
                    continue;
                }
                total += 1;
                let after_cursor = page
                    .after
                    .as_deref()
                    .is_none_or(|after| key.value() > after);
                if after_cursor && items.len() <= page.limit {
                    items.push(component);
                }
            }
            let has_next = items.len() > page.limit;
            items.truncate(page.limit);
            Ok(Page {
                items,
                has_next,
                total,
            })
        })
        .await
    }

    async fn update(
        &self,
        key: &ComponentKey,
        update: SpecUpdate,
    ) -> Result<Component, StoreError> {
        let key = key.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().or_backend()?;
            let mut component =
                read_component(&txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            update(&mut component.spec)?;
            component.spec.validate()?;
            component.updated_at = crate::domain::now();
            write_component(&txn, &component)?;
            txn.commit().or_backend()?;
            Ok(component)
        })
        .await
    }

    async fn delete(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        let _blobs = self.blob_lock.lock().await;
        let key = key.clone();
        let removed = self
            .blocking(move |db| {
                let txn = db.begin_write().or_backend()?;
                let removed = {
                    let mut table = txn.open_table(table(key.kind())).or_backend()?;
                    let removed = table.remove(key.sort_key().as_str()).or_backend()?;
                    removed.map(|v| decode(v.value())).transpose()?
                };
                if let Some(file) = removed.as_ref().and_then(|c| c.file.as_ref()) {
                    adjust_refs(&txn, &file.blob_id, -1)?;
                }
                txn.commit().or_backend()?;
                Ok(removed)
            })
            .await?;
        let orphan = removed
            .as_ref()
            .and_then(|c| c.file.as_ref())
            .map(|f| f.blob_id.clone());
        self.reclaim(orphan.into_iter().collect()).await?;
        Ok(removed)
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
        let _blobs = self.blob_lock.lock().await;
        self.place(&sha256, temp).await?;
        let file = StoredFile {
            blob_id: sha256.clone(),
            size,
            sha256: sha256.clone(),
            content_type: meta.content_type,
            filename: meta.filename,
            uploaded_at: crate::domain::now(),
        };
        let key = key.clone();
        let committed = self
            .blocking(move |db| {
                let txn = db.begin_write().or_backend()?;
                let mut component =
                    read_component(&txn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                adjust_refs(&txn, &file.blob_id, 1)?;
                let previous = component.file.replace(file);
                if let Some(previous) = &previous {
                    adjust_refs(&txn, &previous.blob_id, -1)?;
                }
                component.updated_at = crate::domain::now();
                write_component(&txn, &component)?;
                txn.commit().or_backend()?;
                Ok((component, previous))
            })
            .await;
        match committed {
            Ok((component, previous)) => {
                self.reclaim(previous.map(|p| p.blob_id).into_iter().collect())
                    .await?;
                Ok(component)
            }
            Err(e) => {
                // Nothing refers to the blob we just placed unless another component has the same bytes.
                self.reclaim(vec![sha256]).await?;
                Err(e)
            }
        }
    }

    async fn insert_with_file(
        &self,
        mut component: Component,
        staged: StagedBlob,
    ) -> Result<(), StoreError> {
        let (sha256, size, temp) = staged.into_file()?;
        adopt_file(&mut component, &sha256, size, sha256.clone())?;
        let _blobs = self.blob_lock.lock().await;
        self.place(&sha256, temp).await?;
        let digest = sha256.clone();
        let committed = self
            .blocking(move |db| {
                let txn = db.begin_write().or_backend()?;
                if read_component(&txn, &component.key)?.is_some() {
                    return Err(StoreError::AlreadyExists(component.key));
                }
                adjust_refs(&txn, &digest, 1)?;
                write_component(&txn, &component)?;
                txn.commit().or_backend()
            })
            .await;
        if committed.is_err() {
            // The placed blob stays only if another component has the same bytes.
            self.reclaim(vec![sha256]).await?;
        }
        committed
    }

    async fn read(
        &self,
        key: &ComponentKey,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<ByteStream, StoreError> {
        let path = self
            .blobs
            .path_of(&file.blob_id)
            .ok_or_else(|| StoreError::BlobMissing(key.clone()))?;
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::BlobMissing(key.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        // An open file stays readable even if a concurrent delete unlinks it, so a download never breaks off.
        Ok(read_chunks(blob, range, Arc::clone(&self.readers)))
    }
}
