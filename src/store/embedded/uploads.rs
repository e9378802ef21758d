//! Resumable upload sessions of the embedded store: one record per session in the redb table `upload_sessions`
//! (id -> the session as JSON) and its bytes so far in `uploads/<id>` beside the blobs. A record's offset is
//! written only after the bytes up to it are fsynced, so after a crash the file may be longer than the offset,
//! never shorter: the next append truncates it back.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

use super::{EmbeddedStore, OrBackend};
use crate::store::file_io::{self, Gather};
use crate::store::uploads::{AppendCheck, AppendError, Appended, UploadSession, UploadStore};
use crate::store::{StagedBlob, StagedLocation, StoreError, UploadStream};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("upload_sessions");
/// Directory of the sessions' bytes, inside the data directory.
const DIR: &str = "uploads";

/// The sessions a request of this process is appending to: one writer per session at a time.
#[derive(Default)]
pub(super) struct Active(Arc<Mutex<HashSet<String>>>);

/// A claim on a session, released when dropped.
struct Claim(Arc<Mutex<HashSet<String>>>, String);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.lock().expect("claims lock").remove(&self.1);
    }
}

impl Active {
    fn claim(&self, id: &str) -> Option<Claim> {
        let mut active = self.0.lock().expect("claims lock");
        active
            .insert(id.to_owned())
            .then(|| Claim(self.0.clone(), id.to_owned()))
    }

    fn holds(&self, id: &str) -> bool {
        self.0.lock().expect("claims lock").contains(id)
    }
}

fn encode(session: &UploadSession) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(session).map_err(|e| StoreError::Backend(format!("encoding a session: {e}")))
}

fn decode(bytes: &[u8]) -> Result<UploadSession, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Backend(format!("a stored upload session is damaged: {e}")))
}

/// Session ids are 32 hex digits of our own making, so an id from a request is a file name only when it is one.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn read(db: &Database, id: &str) -> Result<Option<UploadSession>, StoreError> {
    let txn = db.begin_read().or_backend()?;
    let table = match txn.open_table(SESSIONS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(StoreError::Backend(e.to_string())),
    };
    table
        .get(id)
        .or_backend()?
        .map(|v| decode(v.value()))
        .transpose()
}

fn write(db: &Database, session: &UploadSession) -> Result<(), StoreError> {
    let txn = db.begin_write().or_backend()?;
    txn.open_table(SESSIONS)
        .or_backend()?
        .insert(session.id.as_str(), encode(session)?.as_slice())
        .or_backend()?;
    txn.commit().or_backend()
}

/// Moves the offset of a session that still exists; false when it is gone.
fn advance(db: &Database, id: &str, offset: u64) -> Result<bool, StoreError> {
    let txn = db.begin_write().or_backend()?;
    let found = {
        let mut table = txn.open_table(SESSIONS).or_backend()?;
        let session = table
            .get(id)
            .or_backend()?
            .map(|v| decode(v.value()))
            .transpose()?;
        match session {
            Some(mut session) => {
                session.offset = offset;
                table
                    .insert(id, encode(&session)?.as_slice())
                    .or_backend()?;
                true
            }
            None => false,
        }
    };
    txn.commit().or_backend()?;
    Ok(found)
}

fn remove(db: &Database, ids: &[String]) -> Result<u64, StoreError> {
    let txn = db.begin_write().or_backend()?;
    let mut removed = 0;
    {
        let mut table = txn.open_table(SESSIONS).or_backend()?;
        for id in ids {
            removed += u64::from(table.remove(id.as_str()).or_backend()?.is_some());
        }
    }
    txn.commit().or_backend()?;
    Ok(removed)
}

/// Writes `bytes` (a [`Gather`]ed buffer) at `at` in one blocking step, and makes everything written so far durable
/// if `last`.
async fn write_at(
    file: std::fs::File,
    bytes: Bytes,
    at: u64,
    last: bool,
) -> Result<std::fs::File, AppendError> {
    let written = file_io::run(move || -> std::io::Result<std::fs::File> {
        file.write_all_at(&bytes, at)?;
        if last {
            file.sync_data()?;
        }
        Ok(file)
    })
    .await?;
    written.map_err(|e| AppendError::Store(StoreError::Io(e)))
}

fn remove_file(path: PathBuf) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

impl EmbeddedStore {
    fn uploads_dir(&self) -> PathBuf {
        self.tmp_dir.with_file_name(DIR)
    }

    fn partial(&self, id: &str) -> PathBuf {
        self.uploads_dir().join(id)
    }

    /// Hashes a session's complete file and moves it into staging, where attaching places it like any upload.
    async fn stage_partial(&self, id: &str) -> Result<StagedBlob, AppendError> {
        let from = self.partial(id);
        let to = self.tmp_dir.join(format!("session-{id}"));
        let hashed = crate::blocking::spawn(move || -> std::io::Result<_> {
            std::fs::rename(&from, &to)?;
            // From here on the staged file is ours: dropped unattached, it is deleted.
            let staged = tempfile::TempPath::try_from_path(&to)?;
            let mut file = std::fs::File::open(&to)?;
            let mut hasher = Sha256::new();
            let size = std::io::copy(&mut file, &mut hasher)?;
            Ok((hex::encode(hasher.finalize()), size, staged))
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        match hashed {
            Ok((sha256, size, staged)) => Ok(StagedBlob {
                sha256,
                size,
                location: StagedLocation::File(staged),
            }),
            // Another request completed it a moment ago.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AppendError::Gone),
            Err(e) => Err(StoreError::Io(e).into()),
        }
    }
}

#[async_trait]
impl UploadStore for EmbeddedStore {
    async fn create_upload(&self, mut session: UploadSession) -> Result<UploadSession, StoreError> {
        session.id = uuid::Uuid::new_v4().simple().to_string();
        session.offset = 0;
        let dir = self.uploads_dir();
        let path = self.partial(&session.id);
        let record = session.clone();
        self.blocking(move |db| {
            // The record first: a file without a record is an orphan that the sweep removes.
            write(db, &record)?;
            std::fs::create_dir_all(&dir)?;
            std::fs::File::create(&path)?.sync_all()?;
            Ok(())
        })
        .await?;
        Ok(session)
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadSession>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let appending = self.uploads.holds(id);
        let id = id.to_owned();
        let session = self.blocking(move |db| read(db, &id)).await?;
        Ok(session.map(|session| UploadSession {
            appending,
            ..session
        }))
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        mut body: UploadStream<'_>,
        checksum: Option<[u8; 32]>,
    ) -> Result<Appended, AppendError> {
        let _claim = self.uploads.claim(id).ok_or(AppendError::Busy)?;
        let session = self.upload(id).await?.ok_or(AppendError::Gone)?;
        if session.offset != offset {
            return Err(AppendError::OffsetMismatch {
                offset: session.offset,
            });
        }
        let path = self.partial(id);
        // Bytes past the offset are an append that crashed before its offset was recorded.
        let opened = file_io::run(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            file.set_len(offset)?;
            Ok(file)
        })
        .await?;
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(AppendError::Gone),
            Err(e) => return Err(StoreError::Io(e).into()),
        };
        let mut check = AppendCheck::new(session.length - offset, checksum);
        let mut gather = Gather::new();
        let mut written = 0u64;
        let mut broke = None;
        while let Some(piece) = body.next().await {
            match piece {
                Ok(chunk) => {
                    check.take(&chunk)?;
                    if let Some(full) = gather.push(&chunk) {
                        let len = full.len() as u64;
                        file = write_at(file, full, offset + written, false).await?;
                        written += len;
                    }
                }
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        if let Some(source) = broke.as_ref().filter(|_| check.all_or_nothing()) {
            return Err(AppendError::Interrupted {
                offset,
                source: std::io::Error::new(source.kind(), source.to_string()),
            });
        }
        if broke.is_none() && !check.verified() {
            return Err(AppendError::ChecksumMismatch);
        }
        let tail = gather.rest();
        let tail_len = tail.len() as u64;
        write_at(file, tail, offset + written, true).await?;
        written += tail_len;
        let now = offset + written;
        if written > 0 {
            let id = id.to_owned();
            if !self.blocking(move |db| advance(db, &id, now)).await? {
                return Err(AppendError::Gone);
            }
        }
        match broke {
            Some(source) => Err(AppendError::Interrupted {
                offset: now,
                source,
            }),
            None if now == session.length => Ok(Appended::Complete(self.stage_partial(id).await?)),
            None => Ok(Appended::Partial(now)),
        }
    }

    async fn uploads_of(
        &self,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<UploadSession>, StoreError> {
        let created_by = created_by.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().or_backend()?;
            let table = match txn.open_table(SESSIONS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::Backend(e.to_string())),
            };
            let mut found = Vec::new();
            for entry in table.iter().or_backend()? {
                let (_, value) = entry.or_backend()?;
                let session = decode(value.value())?;
                if session.created_by == created_by && session.expires_at > now {
                    found.push(session);
                }
            }
            found.sort_by_key(|s: &UploadSession| s.created_at);
            Ok(found)
        })
        .await
    }

    async fn finish_upload(&self, id: &str) -> Result<(), StoreError> {
        self.delete_upload(id).await.map(drop)
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        if !valid_id(id) {
            return Ok(false);
        }
        let ids = vec![id.to_owned()];
        let path = self.partial(id);
        self.blocking(move |db| {
            let removed = remove(db, &ids)?;
            remove_file(path)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn expire_uploads(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let dir = self.uploads_dir();
        self.blocking(move |db| {
            let (expired, live) = {
                let txn = db.begin_read().or_backend()?;
                let table = match txn.open_table(SESSIONS) {
                    Ok(table) => Some(table),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(StoreError::Backend(e.to_string())),
                };
                let (mut expired, mut live) = (Vec::new(), HashSet::new());
                if let Some(table) = table {
                    for entry in table.iter().or_backend()? {
                        let (id, value) = entry.or_backend()?;
                        let session = decode(value.value())?;
                        if session.expires_at <= now {
                            expired.push(id.value().to_owned());
                        } else {
                            live.insert(id.value().to_owned());
                        }
                    }
                }
                (expired, live)
            };
            let removed = if expired.is_empty() {
                0
            } else {
                remove(db, &expired)?
            };
            // Files of expired sessions, and of sessions whose record went without them (a crash in between).
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if valid_id(&name) && !live.contains(name.as_ref()) {
                        // Created a moment ago, before its record was readable here? Records come first.
                        if read(db, &name)?.is_none() {
                            remove_file(entry.path())?;
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}
