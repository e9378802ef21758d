//! Streaming an upload to a temporary file while computing its size and sha256.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};

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
    /// Hash, size and temporary file of a blob staged by a file-based backend.
    pub fn into_file(self) -> Result<(String, u64, TempPath), StoreError> {
        match self.location {
            StagedLocation::File(path) => Ok((self.sha256, self.size, path)),
            StagedLocation::Remote(_) => Err(foreign()),
        }
    }

    /// Hash, size and guard of a blob staged in a remote store.
    pub fn into_remote(self) -> Result<(String, u64, RemoteBlob), StoreError> {
        match self.location {
            StagedLocation::Remote(blob) => Ok((self.sha256, self.size, blob)),
            StagedLocation::File(_) => Err(foreign()),
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
    /// An object already written to a remote store, discarded when dropped unless it is kept.
    Remote(RemoteBlob),
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

/// Writes `body` to a new temporary file in `dir`, refusing more than `limit` bytes. On any error the temporary
/// file is removed before returning. The body is gathered ([`Gather`]) and each full buffer is written in one step,
/// so a small upload blocks once (create and write). The file is not synced here: the backend
/// syncs it where it places it, with the rename (see the embedded store's `BlobDir::place`).
pub async fn stage_to_file(
    dir: &Path,
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
    let file = write_out(dir, file, gather.rest()).await?;
    Ok(StagedBlob {
        sha256: hex::encode(hasher.finalize()),
        size,
        location: StagedLocation::File(file.into_temp_path()),
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
            None => tempfile::Builder::new()
                .prefix("upload-")
                .tempfile_in(&dir)?,
        };
        file.write_all(&bytes)?;
        Ok(file)
    })
    .await?
    .map_err(StoreError::from)
}
