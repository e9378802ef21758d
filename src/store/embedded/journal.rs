//! The blob journal: a small upload's bytes are written into the metadata transaction that refers to them, so that
//! one flush (the commit) makes both durable, instead of the blob's file and directory syncs and then the commit.
//! The blob's file is placed as usual (renamed into `blobs/`, readable at once) but not synced on the upload's
//! path: the syncer thread ([`start_syncer`]) syncs it afterwards and then drops its journal entry. After a crash,
//! start-up writes every journalled blob that a record refers to back to its file, durably, before anything is
//! served ([`recover`]).
//!
//! An entry is `sha256 → sequence ‖ bytes`. The sequence tells the syncer whether the entry it synced is still the
//! one in the table: if the blob was reclaimed and uploaded again meanwhile, the newer entry stays until its own
//! file has been synced.

#[cfg(not(target_os = "linux"))]
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tokio::sync::mpsc;

use super::blobs::BlobDir;
#[cfg(not(target_os = "linux"))]
use super::blobs::sync_dir;
use super::writer::{Applied, Queue, WeakQueue};
use super::{BLOB_REFS, Change, OrBackend};
use crate::store::{HeldBytes, StoreError};

/// sha256 → the sequence of the entry (8 bytes, little-endian) followed by the blob's bytes.
const BLOB_JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("blob_journal");

/// Bytes the journal may hold before its files are synced: past it, uploads sync their file before their commit,
/// as large ones always do, so a disk slower than the uploads never lets the journal grow without bound.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Shortest time between two rounds of the syncer.
const SYNC_PACE: std::time::Duration = std::time::Duration::from_millis(50);

pub(super) fn create_table(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(BLOB_JOURNAL).or_backend()?;
    Ok(())
}

/// What the journal holds now, shared by the uploads that admit entries and the syncer that retires them.
pub(super) struct Journal {
    bytes: AtomicU64,
    sequence: AtomicU64,
    limit: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Self::with_limit(JOURNAL_BYTES)
    }
}

impl Journal {
    fn with_limit(limit: u64) -> Self {
        Self {
            bytes: AtomicU64::default(),
            sequence: AtomicU64::default(),
            limit,
        }
    }

    /// Admits `held` into the journal if it has room; the entry is counted until [`Entry`] is dropped.
    pub fn admit(self: &Arc<Self>, digest: &str, held: HeldBytes) -> Result<Entry, HeldBytes> {
        let len = held.bytes().len() as u64;
        let admitted = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now + len <= self.limit).then_some(now + len)
            })
            .is_ok();
        if !admitted {
            return Err(held);
        }
        Ok(Entry {
            journal: Arc::clone(self),
            digest: digest.to_owned(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            held: Some(held),
            len,
        })
    }

    #[cfg(test)]
    pub fn held_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub fn admitted(&self) -> u64 {
        self.sequence.load(Ordering::Relaxed)
    }
}

/// One blob in the journal, from its upload until its file is synced and its entry removed (or its write fails).
pub(super) struct Entry {
    journal: Arc<Journal>,
    digest: String,
    sequence: u64,
    /// The bytes, until they are written into the transaction.
    held: Option<HeldBytes>,
    len: u64,
}

impl Entry {
    /// The blob's bytes, until they are written into the transaction.
    pub fn bytes(&self) -> &[u8] {
        self.held.as_ref().map_or(&[], HeldBytes::bytes)
    }

    /// Writes the entry into the transaction; its bytes are freed from memory.
    pub fn record(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let mut table = txn.open_table(BLOB_JOURNAL).or_backend()?;
        // Written in place: on the writer thread, which every write waits for, a copy of the bytes into a buffer
        // first would be one more copy of each small upload.
        let mut value = table
            .insert_reserve(self.digest.as_str(), 8 + held.bytes().len())
            .or_backend()?;
        let (sequence, bytes) = value.as_mut().split_at_mut(8);
        sequence.copy_from_slice(&self.sequence.to_le_bytes());
        bytes.copy_from_slice(held.bytes());
        Ok(())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.journal.bytes.fetch_sub(self.len, Ordering::AcqRel);
    }
}

/// Hands the entries of each committed transaction to the syncer.
pub(super) struct Committed(mpsc::UnboundedSender<Vec<Entry>>);

impl Committed {
    pub fn send(&self, entries: Vec<Entry>) {
        if !entries.is_empty() {
            // Fails only once the syncer has stopped: the entries then stay for the next start-up.
            let _ = self.0.send(entries);
        }
    }
}

/// Starts the thread that syncs the files of committed entries and then removes the entries, off every upload's
/// path. It ends once every [`Committed`] is gone (the writer thread has stopped).
pub(super) fn start_syncer(
    blobs: BlobDir,
    writer: WeakQueue,
) -> std::io::Result<(Committed, std::thread::JoinHandle<()>)> {
    let (committed, mut entries) = mpsc::unbounded_channel::<Vec<Entry>>();
    let thread = std::thread::Builder::new()
        .name("blob-syncer".into())
        .spawn(move || {
            // Entries whose file could not be synced: still counted, so that a failing disk sends uploads back to
            // syncing before their commit; their files are written again at the next start-up.
            let mut stuck = Vec::new();
            while let Some(mut batch) = entries.blocking_recv() {
                while let Ok(more) = entries.try_recv() {
                    batch.extend(more);
                }
                let Some(writer) = writer.upgrade() else {
                    return;
                };
                retire(&blobs, &writer, batch, &mut stuck);
                drop(writer);
                // Rounds are paced, so that their flushes stay few whatever the upload rate; the journal holds
                // the bytes meanwhile.
                std::thread::sleep(SYNC_PACE);
            }
        })?;
    Ok((Committed(committed), thread))
}

/// Syncs the entries' files, then removes the entries that are still the ones synced.
fn retire(blobs: &BlobDir, writer: &Queue, entries: Vec<Entry>, stuck: &mut Vec<Entry>) {
    let synced = sync(blobs, entries, stuck);
    if synced.is_empty() {
        return;
    }
    // Lazily: were the removal lost in a crash, start-up would only write these files once more.
    let _ = writer.submit_lazy(move |txn| {
        let mut table = txn.open_table(BLOB_JOURNAL).or_backend()?;
        for entry in &synced {
            let current = table
                .get(entry.digest.as_str())
                .or_backend()?
                .map(|value| sequence_of(value.value()));
            if current == Some(entry.sequence) {
                table.remove(entry.digest.as_str()).or_backend()?;
            }
        }
        // The entries are uncounted once this write has been applied or has failed: they go with the closure.
        Ok(Applied::new((), Change::Put(Vec::new())))
    });
}

/// Syncs the whole file system of the blobs at once: every entry's file and directory with one flush, however
/// many there are (`syncfs(2)`). Entries that cannot be known synced go to `stuck`.
#[cfg(target_os = "linux")]
fn sync(blobs: &BlobDir, entries: Vec<Entry>, stuck: &mut Vec<Entry>) -> Vec<Entry> {
    match std::fs::File::open(blobs.root()).and_then(|root| Ok(rustix::fs::syncfs(&root)?)) {
        Ok(()) => entries,
        Err(e) => {
            tracing::error!(error = %e, "syncing the blobs' file system failed; the journal keeps its entries for the next start-up");
            stuck.extend(entries);
            Vec::new()
        }
    }
}

/// Syncs each entry's file, then each directory among them.
#[cfg(not(target_os = "linux"))]
fn sync(blobs: &BlobDir, entries: Vec<Entry>, stuck: &mut Vec<Entry>) -> Vec<Entry> {
    let mut directories = BTreeSet::new();
    let mut synced = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(path) = blobs.path_of(&entry.digest) else {
            continue;
        };
        match std::fs::File::open(&path).and_then(|file| file.sync_data()) {
            Ok(()) => {
                directories.extend(path.parent().map(std::path::Path::to_path_buf));
                synced.push(entry);
            }
            // Reclaimed since: no record refers to it, and the entry can go.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => synced.push(entry),
            Err(e) => {
                tracing::error!(blob = %entry.digest, error = %e, "syncing a journalled blob failed; the journal keeps it for the next start-up");
                stuck.push(entry);
            }
        }
    }
    for directory in directories {
        if let Err(e) = sync_dir(&directory) {
            tracing::error!(directory = %directory.display(), error = %e, "syncing a blob directory failed; the journal keeps its entries for the next start-up");
            stuck.append(&mut synced);
        }
    }
    synced
}

fn sequence_of(value: &[u8]) -> u64 {
    value
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Writes every journalled blob that a record refers to back to its file, durably, then empties the journal: after
/// a crash, a blob's file may be missing or partial although its record committed. Runs at start-up, before the
/// catalogue loads and before unreferenced blobs are removed.
pub(super) fn recover(db: &Database, blobs: &BlobDir) -> Result<usize, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let journal = txn.open_table(BLOB_JOURNAL).or_backend()?;
    let refs = txn.open_table(BLOB_REFS).or_backend()?;
    if journal.is_empty().or_backend()? {
        return Ok(0);
    }
    let mut written = 0;
    for item in journal.iter().or_backend()? {
        let (digest, value) = item.or_backend()?;
        let digest = digest.value();
        if refs.get(digest).or_backend()?.is_none() {
            continue;
        }
        let Some(bytes) = value.value().get(8..) else {
            continue;
        };
        blobs.write_durably(digest, bytes)?;
        written += 1;
    }
    drop((journal, refs, txn));
    let txn = db.begin_write().or_backend()?;
    txn.delete_table(BLOB_JOURNAL).or_backend()?;
    txn.open_table(BLOB_JOURNAL).or_backend()?;
    txn.commit().or_backend()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sha2::{Digest, Sha256};

    use super::super::EmbeddedStore;
    use super::*;
    use crate::domain::{Component, ComponentKey, FilePolicy, ModelSpec, Spec};
    use crate::store::{FileMeta, Store};

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn a_full_journal_hands_the_bytes_back_until_entries_are_retired() {
        let journal = Arc::new(Journal::with_limit(10 * 1024));
        let memory = crate::store::MemoryBudget::new(1024 * 1024);
        let Ok(first) = journal.admit("a", memory.hold(&[1u8; 6 * 1024]).expect("room")) else {
            panic!("the first entry fits");
        };
        let Err(refused) = journal.admit("b", memory.hold(&[2u8; 6 * 1024]).expect("room")) else {
            panic!("no room for the second: its upload syncs its own file");
        };
        assert_eq!(refused.bytes(), &[2u8; 6 * 1024][..]);
        assert_eq!(journal.held_bytes(), 6 * 1024);
        drop(first);
        assert_eq!(journal.held_bytes(), 0);
        assert!(
            journal.admit("b", refused).is_ok(),
            "room again once retired"
        );
    }

    #[test]
    fn what_an_entry_records_is_what_start_up_writes_back() {
        let dir = tempfile::tempdir().expect("a directory");
        let (root, staging) = (dir.path().join("blobs"), dir.path().join("tmp"));
        std::fs::create_dir_all(&staging).expect("tmp");
        let blobs = BlobDir::new(root, staging);
        let db = Database::create(dir.path().join("metadata.redb")).expect("a database");
        let bytes: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        let digest = sha256_hex(&bytes);
        let budget = crate::store::MemoryBudget::new(1 << 20);
        let mut entry = Arc::new(Journal::default())
            .admit(&digest, budget.hold(&bytes).expect("room"))
            .expect("admitted");
        let txn = db.begin_write().expect("a transaction");
        create_table(&txn).expect("the journal");
        entry.record(&txn).expect("recorded");
        txn.open_table(BLOB_REFS)
            .expect("the references")
            .insert(digest.as_str(), 1)
            .expect("referred to");
        txn.commit().expect("committed");

        // The file never reached the disk (a power cut before the syncer's round).
        assert_eq!(recover(&db, &blobs).expect("recovered"), 1);
        let path = blobs.path_of(&digest).expect("a digest");
        assert_eq!(std::fs::read(&path).expect("written back"), bytes);
    }

    #[test]
    fn start_up_writes_back_the_journalled_blobs_that_records_use_and_empties_the_journal() {
        let dir = tempfile::tempdir().expect("a directory");
        let (root, staging) = (dir.path().join("blobs"), dir.path().join("tmp"));
        std::fs::create_dir_all(&staging).expect("tmp");
        let blobs = BlobDir::new(root, staging.clone());
        let db = Database::create(dir.path().join("metadata.redb")).expect("a database");
        let (used, unused) = (
            b"bytes a record uses".to_vec(),
            b"bytes of a refused write".to_vec(),
        );
        let (used_digest, unused_digest) = (sha256_hex(&used), sha256_hex(&unused));
        let txn = db.begin_write().expect("a transaction");
        {
            let mut journal = txn.open_table(BLOB_JOURNAL).expect("the journal");
            for (digest, bytes) in [(&used_digest, &used), (&unused_digest, &unused)] {
                let mut value = 7u64.to_le_bytes().to_vec();
                value.extend_from_slice(bytes);
                journal
                    .insert(digest.as_str(), value.as_slice())
                    .expect("journalled");
            }
            let mut refs = txn.open_table(BLOB_REFS).expect("the references");
            refs.insert(used_digest.as_str(), 1).expect("referred to");
        }
        txn.commit().expect("committed");
        // What a power cut can leave of a file placed but not synced: a name with part of its bytes, or nothing.
        let used_path = blobs.path_of(&used_digest).expect("a digest");
        std::fs::create_dir_all(used_path.parent().unwrap()).expect("shard");
        std::fs::write(&used_path, &used[..4]).expect("a partial file");

        assert_eq!(recover(&db, &blobs).expect("recovered"), 1);

        assert_eq!(std::fs::read(&used_path).expect("written back"), used);
        assert!(
            !blobs.path_of(&unused_digest).expect("a digest").exists(),
            "bytes no record uses are not written"
        );
        let txn = db.begin_read().expect("a transaction");
        let journal = txn.open_table(BLOB_JOURNAL).expect("the journal");
        assert!(
            journal.is_empty().expect("counted"),
            "the journal is emptied"
        );
        assert_eq!(std::fs::read_dir(&staging).expect("tmp").count(), 0);
    }

    #[tokio::test]
    async fn a_small_upload_is_journalled_readable_at_once_and_retired_once_its_file_is_synced() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = EmbeddedStore::open(dir.path()).await.expect("a store");
        let key = ComponentKey::model("journal", "1.0.0").expect("a key");
        let spec = Spec::Model(ModelSpec {
            library: "onnx".into(),
            description: "journalled".into(),
        });
        let component = Component::new(key.clone(), spec, crate::domain::now()).expect("valid");
        store.components().insert(component).await.expect("created");
        let bytes = vec![42u8; 100 * 1024];
        let body = futures_util::stream::iter([Ok(bytes::Bytes::from(bytes.clone()))]);
        let staged = store
            .blobs()
            .stage(Box::pin(body), u64::MAX)
            .await
            .expect("staged");
        assert!(matches!(
            staged.location,
            crate::store::StagedLocation::Memory(_)
        ));
        let meta = FileMeta {
            filename: "model.onnx".into(),
            content_type: "application/octet-stream".into(),
            policy: FilePolicy::immutable(false),
            platform: None,
            needs: None,
            expected_revision: None,
        };
        let attached = store
            .components()
            .attach(&key, staged, meta)
            .await
            .expect("attached");
        let digest = attached.file.expect("a file").sha256;
        assert_eq!(
            store.journal.admitted(),
            1,
            "the upload went through the journal"
        );

        // Answered: the file is in place with its bytes, and the journal holds them until the file is synced.
        let path = store.blobs.path_of(&digest).expect("a digest");
        assert_eq!(std::fs::read(&path).expect("in place"), bytes);
        let journalled = || {
            let txn = store.db.begin_read().expect("a transaction");
            let journal = txn.open_table(BLOB_JOURNAL).expect("the journal");
            journal.len().expect("counted")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while journalled() > 0 || store.journal.held_bytes() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the syncer retires the entry: {} left, {} bytes counted",
                journalled(),
                store.journal.held_bytes()
            );
            // Polls the condition; the syncer's round is paced at 50 ms.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(std::fs::read(&path).expect("still in place"), bytes);
    }
}
