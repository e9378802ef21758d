//! Resumable uploads (the tus protocol's use cases): a session names its target and size up front, takes its
//! bytes over as many requests as the network needs, and once complete is verified and attached exactly like a
//! one-shot upload, through [`RepositoryService::attach_file`].

use std::time::Duration;

use super::{RepositoryService, ServiceError};
use crate::domain::{Component, ComponentKey, FilePolicy, Platform, Sha256};
use crate::store::uploads::{AppendError, Appended, UploadSession};
use crate::store::{StoreError, UploadStream};

/// How long an unfinished session lives when the server is not told otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most unfinished sessions a token may hold when the server is not told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 100;
/// The bounds of a session's time to live: a session must outlive a network hiccup, and the bytes of abandoned
/// ones must not stay for months.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(1);
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a request waits for another request's append to a session to end. A client whose connection broke
/// asks again at once, while the server may still be recording what arrived; its answer must include those bytes.
const SETTLE: Duration = Duration::from_secs(3);

/// What a client asks for when it starts a session.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub target: ComponentKey,
    pub platform: Option<Platform>,
    /// What the build for `platform` needs instead of the component's needs.
    pub needs: Option<crate::domain::FileNeeds>,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub length: u64,
    /// The whole file's sha256, lower-case hex, checked once every byte has arrived.
    pub sha256: Option<String>,
    /// The label of the caller's token: sessions are limited and listed per token.
    pub created_by: String,
}

/// Where a session stands after a request; `attached` once its file became the target's.
#[derive(Debug)]
pub struct UploadProgress {
    pub session: UploadSession,
    pub attached: Option<Component>,
}

fn session_missing(id: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "there is no upload session {id}: it finished, expired or was deleted; start a new one"
    ))
}

impl RepositoryService {
    /// Sets how long unfinished upload sessions live.
    pub fn with_upload_session_ttl(mut self, ttl: Duration) -> Self {
        self.upload_session_ttl = ttl;
        self
    }

    pub fn upload_session_ttl(&self) -> Duration {
        self.upload_session_ttl
    }

    /// Sets how many unfinished upload sessions a token may hold.
    pub fn with_max_upload_sessions(mut self, max: usize) -> Self {
        self.max_upload_sessions = max;
        self
    }

    /// Sets how many bytes a token's unfinished upload sessions may announce together.
    pub fn with_max_upload_session_bytes(mut self, max: Option<u64>) -> Self {
        self.max_upload_session_bytes = max;
        self
    }

    /// The unfinished sessions `created_by` holds, oldest first.
    pub async fn uploads_of(&self, created_by: &str) -> Result<Vec<UploadSession>, ServiceError> {
        Ok(self
            .store
            .uploads()
            .uploads_of(created_by, crate::domain::now())
            .await?)
    }

    /// Starts a session; the target must exist and accept a file, and the file must fit the upload limit.
    pub async fn create_upload(&self, new: NewUpload) -> Result<UploadSession, ServiceError> {
        self.writable()?;
        if new.length > self.max_upload_bytes {
            return Err(ServiceError::PayloadTooLarge {
                limit: self.max_upload_bytes,
            });
        }
        let sha256 = new.sha256.as_ref().map(|s| s.to_ascii_lowercase());
        if let Some(sha256) = &sha256
            && Sha256::parse(sha256).is_err()
        {
            return Err(ServiceError::InvalidInput(
                "Upload-Metadata sha256: must be 64 hexadecimal digits".into(),
            ));
        }
        let new = NewUpload {
            needs: super::build_needs(new.platform.as_ref(), new.needs.clone())?,
            ..new
        };
        // Refused now rather than after gigabytes: a missing target, or a file that may not be replaced.
        let component = self.get(&new.target).await?;
        let policy = FilePolicy::immutable(self.immutable_files);
        if let Some(refused) = component.replacement_refused(new.platform.as_ref(), policy) {
            return Err(StoreError::from(refused).into());
        }
        // Counted and created under one lock, so that concurrent creations on this server cannot overshoot the
        // limit (replicas sharing a database each count for themselves).
        let _creating = self.creating_upload.lock().await;
        let held = self.uploads_of(&new.created_by).await?;
        let advice = "finish or cancel one (GET /uploads lists them, DELETE /uploads/{id} cancels one) or let it \
                      expire";
        if held.len() >= self.max_upload_sessions {
            return Err(ServiceError::TooManyUploadSessions(format!(
                "{} holds {} unfinished upload sessions, the most a token may: {advice}",
                new.created_by,
                held.len()
            )));
        }
        let announced: u64 = held.iter().map(|s| s.length).sum();
        if let Some(max) = self.max_upload_session_bytes
            && announced.saturating_add(new.length) > max
        {
            return Err(ServiceError::TooManyUploadSessions(format!(
                "{}'s unfinished upload sessions announce {announced} bytes; {} more would pass the {max} a token \
                 may hold: {advice}",
                new.created_by, new.length
            )));
        }
        let now = crate::domain::now();
        let ttl =
            chrono::Duration::from_std(self.upload_session_ttl).unwrap_or(chrono::Duration::MAX);
        let session = UploadSession {
            id: String::new(),
            target: new.target,
            platform: new.platform,
            needs: new.needs,
            filename: new.filename,
            content_type: new.content_type,
            length: new.length,
            offset: 0,
            sha256,
            created_at: now,
            expires_at: now.checked_add_signed(ttl).unwrap_or(now),
            created_by: new.created_by,
            appending: false,
        };
        Ok(self.store.uploads().create_upload(session).await?)
    }

    /// A session that has not expired. One that holds every byte but was not attached (the server stopped in
    /// between) is completed now, so a client that asks where it stands finds its file attached.
    pub async fn upload_status(&self, id: &str) -> Result<UploadSession, ServiceError> {
        let session = self.settled_upload(id).await?;
        if session.offset == session.length {
            let empty: UploadStream<'static> = Box::pin(futures_util::stream::empty());
            match self.append_upload(id, session.offset, empty, None).await {
                Ok(_) | Err(ServiceError::NotFound(_)) | Err(ServiceError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(session)
    }

    /// A live session once no request is appending to it, or as it is after [`SETTLE`].
    async fn settled_upload(&self, id: &str) -> Result<UploadSession, ServiceError> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut pause = Duration::from_millis(5);
        loop {
            let session = self.live_upload(id).await?;
            if !session.appending || tokio::time::Instant::now() + pause > deadline {
                return Ok(session);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Refuses a session to anyone but the token that created it: to them it does not exist. (Sessions recorded
    /// before sessions had owners are anyone's.)
    pub async fn check_upload_owner(&self, id: &str, caller: &str) -> Result<(), ServiceError> {
        let session = self.live_upload(id).await?;
        if session.created_by.is_empty() || session.created_by == caller {
            Ok(())
        } else {
            Err(session_missing(id))
        }
    }

    async fn live_upload(&self, id: &str) -> Result<UploadSession, ServiceError> {
        match self.store.uploads().upload(id).await? {
            Some(session) if session.expires_at > crate::domain::now() => Ok(session),
            _ => Err(session_missing(id)),
        }
    }

    /// Appends a request's bytes at `offset`; the last ones complete the session: the file is verified (size,
    /// and sha256 when announced) and attached. A failed completion attaches nothing and discards the session.
    pub async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        body: UploadStream<'_>,
        checksum: Option<[u8; 32]>,
    ) -> Result<UploadProgress, ServiceError> {
        self.writable()?;
        let mut session = self.settled_upload(id).await?;
        let staged = match self
            .store
            .uploads()
            .append_upload(id, offset, body, checksum)
            .await
        {
            Ok(Appended::Partial(now)) => {
                session.offset = now;
                return Ok(UploadProgress {
                    session,
                    attached: None,
                });
            }
            Ok(Appended::Complete(staged)) => staged,
            Err(e) => return Err(append_error(id, e)),
        };
        session.offset = session.length;
        let verified = if staged.size != session.length {
            Err(ServiceError::Internal(crate::store::StoreError::Backend(
                format!(
                    "upload session {id} holds {} bytes, not its length {}",
                    staged.size, session.length
                ),
            )))
        } else {
            match &session.sha256 {
                Some(expected) if *expected != staged.sha256 => {
                    Err(ServiceError::InvalidInput(format!(
                        "the uploaded file's sha256 is {}, not the {expected} of its Upload-Metadata: nothing was \
                         attached and the upload session is deleted; start a new one",
                        staged.sha256
                    )))
                }
                _ => Ok(()),
            }
        };
        let attached = match verified {
            Ok(()) => {
                self.attach_file(
                    &session.target,
                    staged,
                    session.filename.as_deref(),
                    session.content_type.as_deref(),
                    super::FileTarget {
                        platform: session.platform.clone(),
                        needs: session.needs.clone(),
                    },
                    None,
                )
                .await
            }
            Err(e) => {
                drop(staged);
                Err(e)
            }
        };
        match attached {
            Ok(component) => {
                self.store.uploads().finish_upload(id).await?;
                Ok(UploadProgress {
                    session,
                    attached: Some(component),
                })
            }
            Err(e) => {
                if let Err(cleanup) = self.store.uploads().delete_upload(id).await {
                    tracing::warn!(error = %cleanup, id, "could not discard a failed upload session; it expires");
                }
                Err(e)
            }
        }
    }

    /// Ends a session and removes its bytes (the tus termination extension).
    pub async fn delete_upload(&self, id: &str) -> Result<(), ServiceError> {
        if self.store.uploads().delete_upload(id).await? {
            Ok(())
        } else {
            Err(session_missing(id))
        }
    }

    /// Removes the sessions that expired, with their bytes; returns how many.
    pub async fn expire_uploads(&self) -> Result<u64, ServiceError> {
        Ok(self
            .store
            .uploads()
            .expire_uploads(crate::domain::now())
            .await?)
    }
}

fn append_error(id: &str, e: AppendError) -> ServiceError {
    match e {
        AppendError::Gone => session_missing(id),
        AppendError::OffsetMismatch { offset } => ServiceError::Conflict(format!(
            "the upload is at offset {offset}, not at the Upload-Offset of the request: ask with HEAD and \
             continue from there"
        )),
        e @ AppendError::Busy => ServiceError::Conflict(format!("{e}; try again shortly")),
        e @ AppendError::TooLong { .. } => ServiceError::InvalidInput(e.to_string()),
        e @ AppendError::ChecksumMismatch => ServiceError::ChecksumMismatch(e.to_string()),
        AppendError::Interrupted { source, .. } => {
            crate::store::StoreError::BodyInterrupted(source).into()
        }
        AppendError::Store(e) => e.into(),
    }
}
