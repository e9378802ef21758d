//! Opening the embedded store: the database and its tables, what a crash left behind, and the catalogue loaded
//! from redb in the background.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::Semaphore;

use super::blobs::{BlobDir, clear_dir};
use super::catalog::{Builder, Catalog, Snapshot};
use super::writer::{self, Pins, Writer};
use super::{
    ALIAS_HISTORY, ALIASES, BLOB_READERS, BLOB_REFS, CACHE_BYTES, EmbeddedStore, HELD_UPLOAD_BYTES,
    LOAD_BATCH, Loading, OrBackend, damaged, devices, events, journal, table, uploads, webhooks,
};
use crate::domain::Kind;
use crate::store::{EventSignal, MemoryBudget, StoreError};

/// What the catalogue's load reads of a record: the needs, through their own serde code, skipping the rest (key,
/// descriptions, parameters, file) without building it; the key is the table's.
#[derive(serde::Deserialize)]
struct RecordView {
    spec: SpecView,
    #[serde(default)]
    variants: Vec<VariantView>,
}

#[derive(serde::Deserialize)]
struct VariantView {
    #[serde(default)]
    needs: Option<crate::domain::FileNeeds>,
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
    builds_differ: bool,
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
            // As `has_file_needs` on the decoded component.
            builds_differ: view
                .variants
                .iter()
                .any(|v| v.needs.as_ref().is_some_and(|n| !n.is_empty())),
            record: raw.record,
        })
    }
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
                            loaded.builds_differ,
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
    pub(super) async fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
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
        journal::create_table(&txn)?;
        events::create_tables(&txn)?;
        webhooks::create_tables(&txn)?;
        devices::create_tables(&txn)?;
        super::rollouts::create_tables(&txn)?;
        txn.open_table(ALIASES).or_backend()?;
        txn.open_table(ALIAS_HISTORY).or_backend()?;
        txn.commit().or_backend()?;
        let last_event = events::last(&db)?;

        let db = Arc::new(db);
        let catalog = Arc::new(Catalog::default());
        let (loading, loaded) = tokio::sync::watch::channel(Loading::InProgress);
        let blobs = BlobDir::new(blob_root, tmp_dir.clone());
        let restored = journal::recover(&db, &blobs)?;
        if restored > 0 {
            tracing::info!(
                restored,
                "wrote the files of journalled uploads again after an unclean stop"
            );
        }
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
            held_uploads: MemoryBudget::new(HELD_UPLOAD_BYTES),
            journal: Arc::default(),
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
}
