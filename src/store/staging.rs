//! Streaming an upload to a temporary file while computing its size and sha256.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::file_io::Gather;
use super::{StoreError, UploadStream};

/// An upload that has been fully received and hashed but that nothing refers to yet.
#[derive(Debug)]
pub struct StagedBlob {
    pub sha256: String,
    pub size: u64,
    pub location: StagedLocation,
}

impl StagedBlob {
    /// Hash, size and bytes of a blob staged by a file-based backend (in a temporary file, or in memory).
    pub fn into_local(self) -> Result<(String, u64, LocalBlob), StoreError> {
        match self.location {
            StagedLocation::File(path) => Ok((self.sha256, self.size, LocalBlob::File(path))),
            StagedLocation::Memory(held) => Ok((self.sha256, self.size, LocalBlob::Memory(held))),
            StagedLocation::Remote(_) => Err(foreign()),
        }
    }

    /// Hash, size and guard of a blob staged in a remote store.
    pub fn into_remote(self) -> Result<(String, u64, RemoteBlob), StoreError> {
        match self.location {
            StagedLocation::Remote(blob) => Ok((self.sha256, self.size, blob)),
            StagedLocation::File(_) | StagedLocation::Memory(_) => Err(foreign()),
        }
    }
}

fn foreign() -> StoreError {
    StoreError::Backend("a blob staged by another backend cannot be attached here".into())
}

/// Where a backend keeps a staged blob until it is attached.
#[derive(Debug)]
pub enum StagedLocation {
    /// A temporary file, written but not yet synced (placing it syncs it); deleted when dropped unless persisted.
    File(TempPath),
    /// A small upload's bytes, written to a file only where the backend places them.
    Memory(HeldBytes),
    /// An object already written to a remote store, discarded when dropped unless it is kept.
    Remote(RemoteBlob),
}

/// A staged blob of a file-based backend, as it goes to its place.
#[derive(Debug)]
pub enum LocalBlob {
    File(TempPath),
    Memory(HeldBytes),
}

/// The bytes of a small upload, counted against the store's budget for them until dropped.
pub struct HeldBytes {
    bytes: Bytes,
    _counted: OwnedSemaphorePermit,
}

impl HeldBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for HeldBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldBytes")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Memory that small uploads may hold between their last byte and their placing, in KiB permits.
#[derive(Debug, Clone)]
pub struct MemoryBudget(Arc<Semaphore>);

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes / 1024)))
    }

    /// Holds `bytes` in memory if the budget has room for them now; never waits.
    pub fn hold(&self, bytes: &[u8]) -> Option<HeldBytes> {
        let kib = u32::try_from(bytes.len().div_ceil(1024)).ok()?;
        let counted = Arc::clone(&self.0).try_acquire_many_owned(kib).ok()?;
        Some(HeldBytes {
            // An exact copy: the gathering buffer is larger than the body, and it is freed here.
            bytes: Bytes::copy_from_slice(bytes),
            _counted: counted,
        })
    }
}

/// A blob written to a remote store that nothing refers to yet. Dropping it runs its discard action (which must
/// not block: remote stores spawn the deletion); [`RemoteBlob::keep`] disarms it once a component refers to it.
pub struct RemoteBlob {
    id: String,
    discard: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl RemoteBlob {
    pub fn new(id: String, discard: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            id,
            discard: Some(Box::new(discard)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The blob is referred to now: it must outlive this guard.
    pub fn keep(mut self) -> String {
        self.discard = None;
        std::mem::take(&mut self.id)
    }
}

impl Drop for RemoteBlob {
    fn drop(&mut self) {
        if let Some(discard) = self.discard.take() {
            discard();
        }
    }
}

impl std::fmt::Debug for RemoteBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBlob").field("id", &self.id).finish()
    }
}

/// Receives `body`, refusing more than `limit` bytes, and stages it: a body that fits in one gathering buffer
/// ([`Gather`], 256 KiB) stays in memory if `memory` has room for it, so that placing it is the only file work it
/// costs (one blocking step instead of two); any other is written to a new temporary file in `dir`, a full buffer
/// at a time. On any error nothing is left. A file is not synced here: the backend syncs it where it places it,
/// with the rename (see the embedded store's `BlobDir::place`).
pub async fn stage_to_file(
    dir: &Path,
    memory: &MemoryBudget,
    mut body: UploadStream<'_>,
    limit: u64,
) -> Result<StagedBlob, StoreError> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut gather = Gather::new();
    let mut file = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(StoreError::BodyInterrupted)?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(StoreError::TooLarge { limit });
        }
        hasher.update(&chunk);
        if let Some(full) = gather.push(&chunk) {
            file = Some(write_out(dir, file, full).await?);
        }
    }
    let rest = gather.rest();
    let held = file.is_none().then(|| memory.hold(&rest)).flatten();
    let location = match held {
        Some(held) => StagedLocation::Memory(held),
        None => StagedLocation::File(write_out(dir, file, rest).await?.into_temp_path()),
    };
    Ok(StagedBlob {
        sha256: hex::encode(hasher.finalize()),
        size,
        location,
    })
}

/// Appends `bytes` to `file` (created in `dir` on the first call).
async fn write_out(
    dir: &Path,
    file: Option<NamedTempFile>,
    bytes: Bytes,
) -> Result<NamedTempFile, StoreError> {
    let dir = dir.to_path_buf();
    super::file_io::run(move || -> std::io::Result<NamedTempFile> {
        let mut file = match file {
            Some(file) => file,
            None => new_staging_file(&dir)?,
        };
        file.write_all(&bytes)?;
        Ok(file)
    })
    .await?
    .map_err(StoreError::from)
}

/// A new temporary file in the staging directory `dir`, removed when dropped unless persisted.
pub fn new_staging_file(dir: &Path) -> std::io::Result<NamedTempFile> {
    tempfile::Builder::new().prefix("upload-").tempfile_in(dir)
}
