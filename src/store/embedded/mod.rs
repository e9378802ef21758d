//! The default store: metadata in redb (a pure-Rust ACID database), files as content-addressed blobs beside it.
//!
//! Crash safety rests on one ordering: a blob is written to `tmp/`, renamed into `blobs/` and fsynced (the file and
//! its directory) *before* the metadata transaction that refers to it commits, or its bytes are written in that
//! very transaction ([`journal`], for small uploads: start-up writes their files back), and an old blob is deleted
//! only *after* the transaction that dropped its last reference commits. A crash can therefore leave an
//! unreferenced blob (removed at the next start-up) but never metadata that points at a missing or partial one.
//! Reference counts live in the same transactions as the metadata, so identical bytes are stored once and
//! reclaimed when nothing uses them.
//! Every write goes through one writer thread that commits many writes at once ([`writer`]).

mod aliases;
mod blobs;
mod catalog;
mod components;
mod devices;
mod events;
mod journal;
mod layered;
mod mirror;
mod open;
mod reads;
mod rollouts;
mod summary;
mod uploads;
mod webhooks;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};
use tokio::sync::Semaphore;

use self::blobs::BlobDir;
use self::catalog::Catalog;
use self::components::Change;
use self::writer::{Applied, Pins, Writer};
use super::{
    AliasStore, BlobStore, ComponentStore, EventSignal, FeedStore, LocalBlob, MemoryBudget,
    MirrorStore, Store, StoreError, UploadStore, WebhookStore,
};
use crate::domain::{Component, Kind};

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
/// Largest stretch of a download handed to the connection as one mapping of the file (sent with sendfile):
/// few enough system calls per GiB, and a stalled download maps little.
const MAPPED_CHUNK: usize = 16 * 1024 * 1024;
/// Chunks of a download read ahead of the network, so that the disk works while the network sends.
const READ_AHEAD: usize = 2;
/// Blob reads running at once across all downloads: well below tokio's blocking pool (512 threads), so that
/// metadata work (redb) always finds a thread however many downloads are in flight.
const BLOB_READERS: usize = 32;
/// Memory all small uploads (at most 256 KiB each) may hold between their last byte and their placing: then their
/// file is written where it is placed, in one blocking step, and their bytes can go into the journal. An upload
/// that finds it full is staged in a file.
const HELD_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
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
    /// Memory that small uploads may hold until they are placed (`HELD_UPLOAD_BYTES`); past it they wait in files.
    held_uploads: MemoryBudget,
    /// Small uploads whose bytes are in the journal and whose files are not synced yet; see [`journal`].
    journal: Arc<journal::Journal>,
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
    /// Runs blocking database work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        crate::blocking::spawn(move || work(&db))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    /// Places staged blobs in `blobs/` and queues `work`, which refers to them, with their digests pinned until
    /// `work` has committed. Placing and queueing run as one blocking step, so a caller that goes away in between
    /// cannot leave a placed blob that nothing will check.
    ///
    /// A blob held in memory goes into the journal if it has room: its file is placed without a sync and its bytes
    /// are written in `work`'s transaction, so that the commit alone makes it durable ([`journal`]). Any other is
    /// written out, renamed atomically and fsynced (the file and its directory) before `work` is queued.
    async fn attaching<T: Send + 'static>(
        &self,
        staged: Vec<(String, LocalBlob)>,
        work: impl FnOnce(&WriteTransaction) -> Result<Applied<T>, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (pins, queue) = (Arc::clone(&self.pins), self.writer.queue()?);
        let (blobs, journal) = (self.blobs.clone(), Arc::clone(&self.journal));
        let answer = super::file_io::run(move || {
            let mut held = Vec::with_capacity(staged.len());
            let mut entries = Vec::new();
            for (digest, blob) in staged {
                held.push(pins.pin(&digest));
                let placed = match blob {
                    LocalBlob::Memory(bytes) => match journal.admit(&digest, bytes) {
                        Ok(entry) => {
                            let placed = blobs.place_unsynced(&digest, entry.bytes());
                            entries.push(entry);
                            placed
                        }
                        Err(bytes) => blobs.place(&digest, LocalBlob::Memory(bytes)),
                    },
                    file => blobs.place(&digest, file),
                };
                if let Err(e) = placed {
                    // Blobs placed so far (and a rename that happened before a failed directory sync) are left
                    // to the writer, which reclaims what nothing refers to.
                    let nothing =
                        |_: &WriteTransaction| Ok(Applied::new((), Change::Put(Vec::new())));
                    let _ = queue.submit(held, nothing);
                    return Err(e.into());
                }
            }
            if entries.is_empty() {
                return queue.submit(held, work);
            }
            queue.submit(held, move |txn| {
                // After `work`, which refuses before it writes anything: a refused write leaves no entry.
                let applied = work(txn)?;
                for entry in &mut entries {
                    entry.record(txn)?;
                }
                Ok(applied.journaled(entries))
            })
        })
        .await??;
        writer::wait(answer).await
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

    fn devices(&self) -> &dyn crate::store::DeviceStore {
        self
    }

    fn rollouts(&self) -> &dyn crate::store::RolloutStore {
        self
    }

    fn mirror(&self) -> Option<&dyn MirrorStore> {
        Some(self)
    }
}
