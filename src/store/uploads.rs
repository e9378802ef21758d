//! Resumable upload sessions (the tus protocol's state): a record per session and its bytes so far, kept by the
//! store so that a session survives a restart and, on a shared database, continues through any replica.

use std::io;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{StagedBlob, StoreError, UploadStream};
use crate::domain::{ComponentKey, Platform};

/// What a session will upload, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    /// Chosen by the store; URL-safe.
    pub id: String,
    pub target: ComponentKey,
    #[serde(default)]
    pub platform: Option<Platform>,
    /// What the build for `platform` needs instead of the component's needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<crate::domain::FileNeeds>,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// The whole file's size, announced at creation.
    pub length: u64,
    /// Bytes received and kept so far.
    pub offset: u64,
    /// The whole file's sha256 (lower-case hex) when the client announced it.
    #[serde(default)]
    pub sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Who started it: the label of the caller's token (`anonymous` without tokens). Limits and lists are per
    /// creator; sessions from before this field have none.
    #[serde(default)]
    pub created_by: String,
    /// Whether a request is appending to it right now (not stored: read from the store's claim or lease).
    #[serde(skip)]
    pub appending: bool,
}

/// Where an append left a session.
#[derive(Debug)]
pub enum Appended {
    /// More bytes are expected; the offset now.
    Partial(u64),
    /// Every byte arrived: the whole file, ready to attach.
    Complete(StagedBlob),
}

/// Why bytes could not be appended to a session.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("no such upload session")]
    Gone,
    #[error("the upload is at offset {offset}, not at the offset the request gave")]
    OffsetMismatch { offset: u64 },
    #[error("another request is appending to this upload right now")]
    Busy,
    #[error("the request carries more bytes than the upload's length leaves room for ({room})")]
    TooLong { room: u64 },
    /// The per-request checksum disagrees with the bytes received: none of them were kept.
    #[error("the request's bytes do not match its Upload-Checksum; none of them were kept")]
    ChecksumMismatch,
    /// The body broke off; what arrived before was kept (the session's offset moved).
    #[error("the request body broke off at offset {offset}: {source}")]
    Interrupted {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Session storage, implemented by every store beside [`super::Store`].
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a new session (its `id` is replaced by one the store chooses) with no bytes yet.
    async fn create_upload(&self, session: UploadSession) -> Result<UploadSession, StoreError>;

    async fn upload(&self, id: &str) -> Result<Option<UploadSession>, StoreError>;

    /// The sessions `created_by` started that expire after `now`, oldest first.
    async fn uploads_of(
        &self,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<UploadSession>, StoreError>;

    /// Appends `body` at `offset` (which must be the session's). With `checksum` (the sha256 of this request's
    /// bytes) the bytes are kept only when they match; without it, a body that breaks off keeps what arrived
    /// ([`AppendError::Interrupted`]). Once the session holds all its bytes they move out of it, hashed, into a
    /// staged blob ([`Appended::Complete`]; an empty body at the end offset does that too): the session record
    /// stays until [`UploadStore::finish_upload`] or [`UploadStore::delete_upload`], and dropping the blob
    /// discards the bytes.
    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: UploadStream<'_>,
        checksum: Option<[u8; 32]>,
    ) -> Result<Appended, AppendError>;

    /// Forgets a session whose bytes were just attached (they belong to the file now).
    async fn finish_upload(&self, id: &str) -> Result<(), StoreError>;

    /// Removes a session and its bytes; false when there was none.
    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError>;

    /// Removes the sessions that expired before `now`, with their bytes; returns how many.
    async fn expire_uploads(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The checks on one request's bytes while they stream to storage: at most `room` bytes, and the sha256 of
/// `Upload-Checksum` when given. Both stores run their appends through it.
pub struct AppendCheck {
    room: u64,
    received: u64,
    expected: Option<([u8; 32], Sha256)>,
}

impl AppendCheck {
    pub fn new(room: u64, checksum: Option<[u8; 32]>) -> Self {
        Self {
            room,
            received: 0,
            expected: checksum.map(|c| (c, Sha256::new())),
        }
    }

    /// Takes the next piece of the body, or says why the request must stop.
    pub fn take(&mut self, chunk: &[u8]) -> Result<(), AppendError> {
        self.received += chunk.len() as u64;
        if self.received > self.room {
            return Err(AppendError::TooLong { room: self.room });
        }
        if let Some((_, hasher)) = &mut self.expected {
            hasher.update(chunk);
        }
        Ok(())
    }

    /// Whether a request with a checksum must keep nothing of a body that broke off (it cannot be verified).
    pub fn all_or_nothing(&self) -> bool {
        self.expected.is_some()
    }

    /// At the end of the body: whether the bytes match the checksum (true without one).
    pub fn verified(self) -> bool {
        match self.expected {
            Some((expected, hasher)) => hasher.finalize().as_slice() == expected,
            None => true,
        }
    }
}
