use thiserror::Error;

use crate::domain::{DomainError, Refusal};
use crate::store::StoreError;

/// Everything a use case can answer besides success. Transports map it to HTTP statuses and GraphQL codes in one
/// place each (`api::error`).
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Concurrent changes kept winning over this one: retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    /// The write was made as of a revision the component has moved on from (`expectedRevision`, `If-Match`).
    #[error("{message}")]
    Stale { message: String, current: u64 },
    #[error("{0}")]
    InvalidInput(String),
    /// The bytes of a resumable upload's request do not match the checksum it gave: none of them were kept.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// The file may not change (`--immutable-files` or a locked component).
    #[error("{0}")]
    Immutable(String),
    /// The client paused sending its request for too long.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("the upload is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// The caller holds as many unfinished upload sessions as it may: it must finish or cancel one first.
    #[error("{0}")]
    TooManyUploadSessions(String),
    /// A request body (not an upload) longer than its route takes.
    #[error("{0}")]
    BodyTooLarge(String),
    /// The change feed no longer holds what the client asked for: it must resync.
    #[error("{0}")]
    EventsExpired(String),
    /// A configured cap (such as `--max-webhooks`) is reached: removing something first makes room.
    #[error("{0}")]
    LimitExceeded(String),
    /// A cursor beyond the newest event: it is of another feed (the store was rebuilt or reset): resync.
    #[error("{0}")]
    EventsAhead(String),
    /// `--signatures enforce`: the file has no signature the trust policy verifies, so it is not served.
    #[error("{0}")]
    Unsigned(String),
    /// `--signatures enforce`: an alias may not move to a version with a file no signature verifies.
    #[error("{0}")]
    UnsignedVersion(String),
    /// Live devices report running what a delete names (device reports): `force` deletes it anyway.
    #[error("{message}")]
    InUse { message: String, devices: u64 },
    /// A rollout holds the alias (`ROLLOUT_ACTIVE`), or has ended and cannot change (`ROLLOUT_FINISHED`).
    #[error("{0}")]
    RolloutActive(String),
    #[error("{0}")]
    RolloutFinished(String),
    /// A write to an edge mirror: its content comes from its upstream only.
    #[error("{0}")]
    ReadOnlyMirror(String),
    #[error("the storage backend is unavailable; try again later")]
    Unavailable(#[source] StoreError),
    /// A fault of ours: logged in full, shown to clients only as "internal error".
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl ServiceError {
    /// A fault of ours that no store reported (a record of another kind where one was expected, say).
    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::Internal(StoreError::Backend(message.into()))
    }
}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        ServiceError::InvalidInput(e.to_string())
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(key) => ServiceError::NotFound(format!("{key} not found")),
            StoreError::AlreadyExists(key) => {
                ServiceError::AlreadyExists(format!("{key} already exists"))
            }
            StoreError::Invalid(e) => e.into(),
            StoreError::TooLarge { limit } => ServiceError::PayloadTooLarge { limit },
            StoreError::BodyInterrupted(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                ServiceError::RequestTimeout(format!("the upload stalled: {e}"))
            }
            StoreError::BodyInterrupted(e) => {
                ServiceError::InvalidInput(format!("the upload could not be read: {e}"))
            }
            StoreError::BlobMissing(key) => {
                ServiceError::NotFound(format!("the file of {key} is no longer stored"))
            }
            StoreError::Contended(message) => ServiceError::Conflict(message),
            e @ StoreError::EventsExpired { .. } => ServiceError::EventsExpired(format!(
                "{e}; list the components again, then follow the feed from its current sequence"
            )),
            StoreError::Refused(Refusal::Immutable(message)) => ServiceError::Immutable(message),
            StoreError::Refused(e @ Refusal::Aliased { .. }) => {
                ServiceError::Conflict(e.to_string())
            }
            StoreError::Refused(e @ Refusal::InUse { devices, .. }) => ServiceError::InUse {
                message: e.to_string(),
                devices,
            },
            StoreError::Refused(Refusal::NoFile(message)) => ServiceError::NotFound(message),
            StoreError::Refused(Refusal::Full(message)) => ServiceError::LimitExceeded(message),
            StoreError::Refused(Refusal::RolloutActive(message)) => {
                ServiceError::RolloutActive(message)
            }
            StoreError::Refused(Refusal::RolloutFinished(message)) => {
                ServiceError::RolloutFinished(message)
            }
            StoreError::Refused(e @ Refusal::Stale { actual, .. }) => ServiceError::Stale {
                message: e.to_string(),
                current: actual,
            },
            e @ StoreError::Unavailable(_) => ServiceError::Unavailable(e),
            e @ (StoreError::Io(_) | StoreError::Backend(_)) => ServiceError::Internal(e),
        }
    }
}
