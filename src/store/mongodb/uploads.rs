//! Resumable upload sessions in MongoDB: one document per session in `upload_sessions` and the bytes written
//! straight into the GridFS bucket's chunks as they arrive, under the session's id, so that any replica can
//! continue a session and completing it costs one `files` document, not a copy.
//!
//! One request appends at a time, under a lease in the session document (taken and renewed with a
//! compare-and-set). Only full chunks are written while bytes arrive; the bytes past the last full chunk are kept
//! in the session document with the offset, recorded after the chunks before them are written. Chunks past the
//! recorded offset are an append that broke off before recording it, and the next append deletes them first.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{self, Binary, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::{Collection, Database};
use sha2::{Digest, Sha256};

use super::documents::integer;
use super::gridfs::{CHUNK_SIZE, Grid, STAGING_FILENAME};
use super::{MongoStore, is_duplicate_key, map_err};
use crate::store::uploads::{AppendCheck, AppendError, Appended, UploadSession, UploadStore};
use crate::store::{RemoteBlob, StagedBlob, StagedLocation, StoreError, UploadStream};

const SESSIONS: &str = "upload_sessions";
/// How long an append may go without renewing its lease before another request may take the session over: a
/// request whose client vanished must not block the session for long. Renewed with every batch of chunks.
const LEASE_MILLIS: i64 = 60_000;
/// Chunks buffered between two records of the offset (about 1 MiB).
const CHUNKS_PER_RECORD: usize = 4;

pub fn sessions(metadata: &Database) -> Collection<Document> {
    metadata.collection(SESSIONS)
}

/// The ids of every session, whose chunks garbage collection must leave alone.
pub async fn live_sessions(metadata: &Database) -> Result<HashSet<ObjectId>, StoreError> {
    let mut ids = HashSet::new();
    let mut cursor = sessions(metadata)
        .find(doc! {})
        .projection(doc! { "_id": 1 })
        .await
        .map_err(map_err)?;
    while let Some(document) = cursor.try_next().await.map_err(map_err)? {
        if let Ok(id) = document.get_object_id("_id") {
            ids.insert(id);
        }
    }
    Ok(ids)
}

fn millis(t: DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(t.timestamp_millis())
}

/// Leases are plain numbers of milliseconds since the epoch: compared and set like any number.
fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(mut document: Document) -> Result<UploadSession, StoreError> {
    let offset = integer(document.get("offset")).unwrap_or(0);
    let appending = integer(document.get("lease_until")).is_some_and(|until| until > now_millis());
    for field in ["_id", "lease_owner", "lease_until", "expires", "tail"] {
        document.remove(field);
    }
    let mut session: UploadSession = bson::from_document(document)
        .map_err(|e| StoreError::Backend(format!("a stored upload session is damaged: {e}")))?;
    session.offset = u64::try_from(offset).unwrap_or(0);
    session.appending = appending;
    Ok(session)
}

/// A chunk as GridFS lays it out, with its `_id` set here as GridFS drivers do.
fn chunk(id: ObjectId, n: u64, bytes: &[u8]) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "files_id": id,
        "n": n as i32,
        "data": Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() },
    }
}

/// One append in progress: its lease, and the chunks it writes.
struct Appender<'a> {
    grid: &'a Grid,
    sessions: Collection<Document>,
    id: ObjectId,
    owner: String,
    /// The chunk that the next write starts with.
    next: u64,
}

impl<'a> Appender<'a> {
    fn new(store: &'a MongoStore, id: ObjectId, owner: String) -> Self {
        Self {
            grid: &store.grid,
            sessions: store.sessions(),
            id,
            owner,
            next: 0,
        }
    }

    /// Inserts the full chunks of `buffer` (and with `last`, the short rest too), removing them from it.
    async fn write(&mut self, buffer: &mut Vec<u8>, last: bool) -> Result<(), StoreError> {
        let mut taken = 0;
        let mut documents = Vec::new();
        while buffer.len() - taken >= CHUNK_SIZE || (last && taken < buffer.len()) {
            let end = (taken + CHUNK_SIZE).min(buffer.len());
            documents.push(chunk(self.id, self.next, &buffer[taken..end]));
            self.next += 1;
            taken = end;
        }
        if !documents.is_empty() {
            self.grid
                .chunks
                .insert_many(documents)
                .await
                .map_err(map_err)?;
        }
        buffer.drain(..taken);
        Ok(())
    }

    /// Records the offset and the bytes past the last full chunk (`tail`), and renews the lease; false when the
    /// lease was lost or the session is gone.
    async fn record(&self, offset: u64, tail: &[u8]) -> Result<bool, StoreError> {
        let updated = self
            .sessions
            .update_one(
                doc! { "_id": self.id, "lease_owner": &self.owner },
                doc! { "$set": {
                    "offset": to_i64(offset),
                    "tail": Binary { subtype: BinarySubtype::Generic, bytes: tail.to_vec() },
                    "lease_until": now_millis() + LEASE_MILLIS,
                } },
            )
            .await
            .map_err(map_err)?;
        Ok(updated.matched_count == 1)
    }

    /// Lets the lease lapse now.
    async fn release(&self) {
        let released = self
            .sessions
            .update_one(
                doc! { "_id": self.id, "lease_owner": &self.owner },
                doc! { "$set": { "lease_until": now_millis() } },
            )
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release an upload session's lease; it lapses by itself");
        }
    }
}

impl MongoStore {
    fn sessions(&self) -> Collection<Document> {
        sessions(&self.metadata)
    }

    /// Hashes a complete session's chunks and gives them a `files` document: a staged GridFS file.
    async fn stage_session(&self, id: ObjectId, length: u64) -> Result<StagedBlob, AppendError> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let chunks = length.div_ceil(CHUNK_SIZE as u64);
        let mut n = 0u64;
        while n < chunks {
            let window_end = (n + 8).min(chunks);
            let mut window = self
                .grid
                .chunks
                .find(doc! { "files_id": id, "n": { "$gte": n as i64, "$lt": window_end as i64 } })
                .sort(doc! { "n": 1 })
                .await
                .map_err(map_err)?;
            while let Some(document) = window.try_next().await.map_err(map_err)? {
                let found = document.get_i32("n").map(i64::from).unwrap_or(-1);
                let Some(Bson::Binary(data)) = document.get("data") else {
                    return Err(StoreError::Backend(format!(
                        "upload chunk {found} of {id} has no data"
                    ))
                    .into());
                };
                if found != n as i64 {
                    return Err(
                        StoreError::Backend(format!("upload {id} is missing chunk {n}")).into(),
                    );
                }
                hasher.update(&data.bytes);
                size += data.bytes.len() as u64;
                n += 1;
            }
            if n < window_end {
                return Err(
                    StoreError::Backend(format!("upload {id} is missing chunk {n}")).into(),
                );
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        let files_document = doc! {
            "_id": id,
            "length": to_i64(size),
            "chunkSize": CHUNK_SIZE as i32,
            "uploadDate": BsonDateTime::now(),
            "filename": STAGING_FILENAME,
            "metadata": { "sha256": &sha256 },
        };
        match self.grid.files.insert_one(files_document).await {
            Ok(_) => {}
            // Another request completed it a moment ago.
            Err(e) if is_duplicate_key(&e) => return Err(AppendError::Gone),
            Err(e) => return Err(map_err(e).into()),
        }
        let grid = self.grid.clone();
        let guard = RemoteBlob::new(id.to_hex(), move || {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { grid.delete(id).await });
            }
        });
        Ok(StagedBlob {
            sha256,
            size,
            location: StagedLocation::Remote(guard),
        })
    }
}

#[async_trait]
impl UploadStore for MongoStore {
    async fn create_upload(&self, mut session: UploadSession) -> Result<UploadSession, StoreError> {
        let id = ObjectId::new();
        session.id = id.to_hex();
        session.offset = 0;
        let mut document = bson::to_document(&session)
            .map_err(|e| StoreError::Backend(format!("encoding a session: {e}")))?;
        document.insert("_id", id);
        document.insert("offset", 0i64);
        document.insert("expires", millis(session.expires_at));
        document.insert("lease_owner", "");
        document.insert("lease_until", session.created_at.timestamp_millis());
        self.sessions()
            .insert_one(document)
            .await
            .map_err(map_err)?;
        Ok(session)
    }

    async fn upload(&self, id: &str) -> Result<Option<UploadSession>, StoreError> {
        let Ok(id) = ObjectId::parse_str(id) else {
            return Ok(None);
        };
        self.sessions()
            .find_one(doc! { "_id": id })
            .await
            .map_err(map_err)?
            .map(decode)
            .transpose()
    }

    async fn uploads_of(
        &self,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<UploadSession>, StoreError> {
        let documents: Vec<Document> = self
            .sessions()
            .find(doc! { "created_by": created_by, "expires": { "$gt": millis(now) } })
            .projection(doc! { "tail": 0 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut found = documents
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        found.sort_by_key(|s| s.created_at);
        Ok(found)
    }

    async fn append_upload(
        &self,
        id: &str,
        offset: u64,
        mut body: UploadStream<'_>,
        checksum: Option<[u8; 32]>,
    ) -> Result<Appended, AppendError> {
        let session = self.upload(id).await?.ok_or(AppendError::Gone)?;
        let oid = ObjectId::parse_str(id).map_err(|_| AppendError::Gone)?;
        if session.offset != offset {
            return Err(AppendError::OffsetMismatch {
                offset: session.offset,
            });
        }
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let now = now_millis();
        let taken = self
            .sessions()
            .update_one(
                doc! { "_id": oid, "lease_until": { "$lt": now } },
                doc! { "$set": { "lease_owner": &owner, "lease_until": now + LEASE_MILLIS } },
            )
            .await
            .map_err(map_err)?;
        if taken.matched_count != 1 {
            return Err(match self.upload(id).await? {
                None => AppendError::Gone,
                Some(s) if s.offset != offset => AppendError::OffsetMismatch { offset: s.offset },
                Some(_) => AppendError::Busy,
            });
        }
        // The offset may have moved while another request held the lease.
        let document = self
            .sessions()
            .find_one(doc! { "_id": oid })
            .await
            .map_err(map_err)?;
        let tail = match document.as_ref().and_then(|d| d.get("tail")) {
            Some(Bson::Binary(tail)) => tail.bytes.clone(),
            _ => Vec::new(),
        };
        let session = match document.map(decode).transpose()? {
            Some(session) if session.offset == offset => session,
            other => {
                let appender = Appender::new(self, oid, owner);
                appender.release().await;
                return Err(match other {
                    None => AppendError::Gone,
                    Some(s) => AppendError::OffsetMismatch { offset: s.offset },
                });
            }
        };
        let mut appender = Appender::new(self, oid, owner);
        appender.next = offset / CHUNK_SIZE as u64;
        let outcome = append(&mut appender, &session, tail, offset, &mut body, checksum).await;
        appender.release().await;
        match outcome {
            Err(e) => Err(e),
            Ok(now) if now == session.length => {
                Ok(Appended::Complete(self.stage_session(oid, now).await?))
            }
            Ok(now) => Ok(Appended::Partial(now)),
        }
    }

    async fn finish_upload(&self, id: &str) -> Result<(), StoreError> {
        // The chunks belong to the attached file now: only the session document goes.
        if let Ok(id) = ObjectId::parse_str(id) {
            self.sessions()
                .delete_one(doc! { "_id": id })
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        let Ok(id) = ObjectId::parse_str(id) else {
            return Ok(false);
        };
        let deleted = self
            .sessions()
            .delete_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        // The chunks of a completed session are a file's (maybe attached): `gc` decides on them. A completed
        // file records its sha256; nx-27017 makes up an empty files document for chunks that have none.
        let completed = self.grid.file(id).await?.is_some_and(|file| {
            file.get_document("metadata")
                .is_ok_and(|metadata| metadata.contains_key("sha256"))
        });
        if !completed {
            self.grid.delete(id).await;
        }
        Ok(deleted.deleted_count > 0)
    }

    async fn expire_uploads(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let expired: Vec<Document> = self
            .sessions()
            .find(doc! { "expires": { "$lte": millis(now) } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut removed = 0;
        for document in expired {
            if let Ok(id) = document.get_object_id("_id") {
                removed += u64::from(self.delete_upload(&id.to_hex()).await?);
            }
        }
        Ok(removed)
    }
}

/// Streams `body` into the session from `offset`; returns the offset reached. Full chunks are inserted as they
/// fill and the bytes past the last full one (the tail) are kept in the session document with the offset, so no
/// chunk is ever rewritten. Without a checksum the offset is recorded about every MiB, so a request that breaks
/// off (or a server that dies) keeps what arrived. Once the last byte arrived, the tail becomes the last chunk.
async fn append(
    appender: &mut Appender<'_>,
    session: &UploadSession,
    tail: Vec<u8>,
    offset: u64,
    body: &mut UploadStream<'_>,
    checksum: Option<[u8; 32]>,
) -> Result<u64, AppendError> {
    if tail.len() as u64 != offset % CHUNK_SIZE as u64 {
        let e = StoreError::Backend(format!("upload {} has a damaged tail", appender.id));
        return Err(e.into());
    }
    // Chunks from here on are an append that broke off before recording its offset. Looked for before deleting:
    // they are rare, and nx-27017 (the wire server CI tests against) deletes all of a file's chunks for any range.
    let stale = doc! { "files_id": appender.id, "n": { "$gte": appender.next as i64 } };
    let grid = appender.grid;
    if grid
        .chunks
        .find_one(stale.clone())
        .await
        .map_err(map_err)?
        .is_some()
    {
        grid.chunks.delete_many(stale).await.map_err(map_err)?;
    }
    let mut buffer = tail;
    buffer.reserve(CHUNK_SIZE * CHUNKS_PER_RECORD);
    let mut reached = offset;
    let mut check = AppendCheck::new(session.length - offset, checksum);
    loop {
        match body.next().await {
            Some(Ok(bytes)) => {
                check.take(&bytes)?;
                reached += bytes.len() as u64;
                buffer.extend_from_slice(&bytes);
                if buffer.len() >= CHUNK_SIZE * CHUNKS_PER_RECORD {
                    appender.write(&mut buffer, false).await?;
                    if !check.all_or_nothing() && !appender.record(reached, &buffer).await? {
                        return Err(AppendError::Gone);
                    }
                }
            }
            Some(Err(source)) => {
                if check.all_or_nothing() {
                    return Err(AppendError::Interrupted { offset, source });
                }
                appender.write(&mut buffer, false).await?;
                appender.record(reached, &buffer).await?;
                return Err(AppendError::Interrupted {
                    offset: reached,
                    source,
                });
            }
            None if !check.verified() => return Err(AppendError::ChecksumMismatch),
            None => break,
        }
    }
    let complete = reached == session.length;
    appender.write(&mut buffer, complete).await?;
    if !appender.record(reached, &buffer).await? {
        return Err(AppendError::Gone);
    }
    Ok(reached)
}
