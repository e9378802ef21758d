//! Resumable upload sessions in MongoDB: one document per session in `upload_sessions` and the bytes written
//! straight into the GridFS bucket's chunks as they arrive, under the session's id, so that any replica can
//! continue a session and completing it costs one `files` document, not a copy.
//!
//! One request appends at a time, under a lease in the session document (taken and renewed with a
//! compare-and-set). The offset is recorded after the chunks up to it are written; chunks past the offset are
//! an append that broke off before recording it, and the next append replaces them.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{self, Binary, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::ReplaceOptions;
use mongodb::{Collection, Database};
use sha2::{Digest, Sha256};

use super::gridfs::{CHUNK_SIZE, Grid, STAGING_FILENAME};
use super::{MongoStore, is_duplicate_key, map_err};
use crate::store::uploads::{AppendCheck, AppendError, Appended, UploadSession, UploadStore};
use crate::store::{RemoteBlob, StagedBlob, StagedLocation, StoreError, UploadStream};

const SESSIONS: &str = "upload_sessions";
/// How long an append may go without renewing its lease before another request may take the session over: a
/// request whose client vanished must not block the session for long. Renewed with every batch of chunks.
const LEASE_MILLIS: i64 = 60_000;
/// Chunks written per insert, as one-shot uploads do.
const CHUNKS_PER_INSERT: usize = 4;

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

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(mut document: Document) -> Result<UploadSession, StoreError> {
    let offset = document.get_i64("offset").unwrap_or(0);
    for field in ["_id", "lease_owner", "lease_until", "expires", "offset"] {
        document.remove(field);
    }
    let mut session: UploadSession = bson::from_document(document)
        .map_err(|e| StoreError::Backend(format!("a stored upload session is damaged: {e}")))?;
    session.offset = u64::try_from(offset).unwrap_or(0);
    Ok(session)
}

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
    /// The first write replaces a short last chunk instead of adding one.
    replace_first: bool,
}

impl Appender<'_> {
    /// Writes the full chunks of `buffer` (and with `last`, the short rest too), removing them from it.
    async fn write(&mut self, buffer: &mut Vec<u8>, last: bool) -> Result<(), StoreError> {
        let mut taken = 0;
        let mut documents = Vec::new();
        while buffer.len() - taken >= CHUNK_SIZE || (last && taken < buffer.len()) {
            let end = (taken + CHUNK_SIZE).min(buffer.len());
            documents.push(chunk(self.id, self.next, &buffer[taken..end]));
            self.next += 1;
            taken = end;
        }
        let mut documents = documents.into_iter();
        if self.replace_first {
            if let Some(first) = documents.next() {
                let n = first.get_i32("n").unwrap_or(0);
                self.grid
                    .chunks
                    .replace_one(doc! { "files_id": self.id, "n": n }, first)
                    .with_options(ReplaceOptions::builder().upsert(true).build())
                    .await
                    .map_err(map_err)?;
                self.replace_first = false;
            }
        }
        let rest: Vec<Document> = documents.collect();
        if !rest.is_empty() {
            self.grid.chunks.insert_many(rest).await.map_err(map_err)?;
        }
        buffer.drain(..taken);
        Ok(())
    }

    /// Records the offset and renews the lease; false when the lease was lost or the session is gone.
    async fn record(&self, offset: u64, release: bool) -> Result<bool, StoreError> {
        let until = if release {
            BsonDateTime::from_millis(0)
        } else {
            BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis() + LEASE_MILLIS)
        };
        let updated = self
            .sessions
            .update_one(
                doc! { "_id": self.id, "lease_owner": &self.owner },
                doc! { "$set": { "offset": to_i64(offset), "lease_until": until } },
            )
            .await
            .map_err(map_err)?;
        Ok(updated.matched_count == 1)
    }

    async fn release(&self, offset: u64) {
        if let Err(e) = self.record(offset, true).await {
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
                .find(doc! { "files_id": id, "n": { "$gte": n as i32, "$lt": window_end as i32 } })
                .sort(doc! { "n": 1 })
                .await
                .map_err(map_err)?;
            while let Some(document) = window.try_next().await.map_err(map_err)? {
                let found = document.get_i32("n").map(i64::from).unwrap_or(-1);
                let Some(Bson::Binary(data)) = document.get("data") else {
                    return Err(StoreError::Backend(format!("upload chunk {found} of {id} has no data")).into());
                };
                if found != n as i64 {
                    return Err(StoreError::Backend(format!("upload {id} is missing chunk {n}")).into());
                }
                hasher.update(&data.bytes);
                size += data.bytes.len() as u64;
                n += 1;
            }
            if n < window_end {
                return Err(StoreError::Backend(format!("upload {id} is missing chunk {n}")).into());
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
    async fn create_upload(
        &self,
        mut session: UploadSession,
    ) -> Result<UploadSession, StoreError> {
        let id = ObjectId::new();
        session.id = id.to_hex();
        session.offset = 0;
        let mut document = bson::to_document(&session)
            .map_err(|e| StoreError::Backend(format!("encoding a session: {e}")))?;
        document.insert("_id", id);
        document.insert("offset", 0i64);
        document.insert("expires", millis(session.expires_at));
        document.insert("lease_owner", "");
        document.insert("lease_until", BsonDateTime::from_millis(0));
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
        let now = BsonDateTime::now();
        let taken = self
            .sessions()
            .update_one(
                doc! { "_id": oid, "offset": to_i64(offset), "lease_until": { "$lt": now } },
                doc! { "$set": {
                    "lease_owner": &owner,
                    "lease_until": BsonDateTime::from_millis(now.timestamp_millis() + LEASE_MILLIS),
                } },
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
        let mut appender = Appender {
            grid: &self.grid,
            sessions: self.sessions(),
            id: oid,
            owner,
            next: offset / CHUNK_SIZE as u64,
            replace_first: false,
        };
        let outcome = append(&mut appender, &session, offset, &mut body, checksum).await;
        let recorded = match &outcome {
            Ok(now) | Err((now, _)) => *now,
        };
        appender.release(recorded).await;
        match outcome {
            Err((_, e)) => Err(e),
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
        // Chunks that a `files` document claims are a file's (completed, maybe attached): `gc` decides on them.
        if self.grid.file(id).await?.is_none() {
            self.grid
                .chunks
                .delete_many(doc! { "files_id": id })
                .await
                .map_err(map_err)?;
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

/// Streams `body` into the session's chunks from `offset`; returns the offset reached, or with an error the
/// offset recorded. Without a checksum the offset is recorded as whole chunks are written, so a request that
/// breaks off (or a server that dies) keeps what arrived.
async fn append(
    appender: &mut Appender<'_>,
    session: &UploadSession,
    offset: u64,
    body: &mut UploadStream<'_>,
    checksum: Option<[u8; 32]>,
) -> Result<u64, (u64, AppendError)> {
    let fail = |at: u64| move |e: StoreError| (at, AppendError::Store(e));
    let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK_SIZE * CHUNKS_PER_INSERT);
    // A short last chunk is read back and rewritten with the bytes that follow it.
    let partial = (offset % CHUNK_SIZE as u64) as usize;
    let first = appender.next;
    let stale = if partial > 0 {
        let found = appender
            .grid
            .chunks
            .find_one(doc! { "files_id": appender.id, "n": first as i32 })
            .await
            .map_err(|e| (offset, AppendError::Store(map_err(e))))?;
        match found.as_ref().and_then(|c| c.get("data")) {
            Some(Bson::Binary(data)) if data.bytes.len() >= partial => {
                buffer.extend_from_slice(&data.bytes[..partial]);
            }
            _ => {
                let e = StoreError::Backend(format!("upload {} lost chunk {first}", appender.id));
                return Err((offset, e.into()));
            }
        }
        appender.replace_first = true;
        doc! { "$gt": first as i32 }
    } else {
        doc! { "$gte": first as i32 }
    };
    appender
        .grid
        .chunks
        .delete_many(doc! { "files_id": appender.id, "n": stale })
        .await
        .map_err(|e| (offset, AppendError::Store(map_err(e))))?;
    // The session's offset once what is in `buffer` is written.
    let mut reached = offset;
    let mut check = AppendCheck::new(session.length - offset, checksum);
    let mut recorded = offset;
    loop {
        let piece = body.next().await;
        match piece {
            Some(Ok(bytes)) => {
                check.take(&bytes).map_err(|e| (recorded, e))?;
                reached += bytes.len() as u64;
                buffer.extend_from_slice(&bytes);
                if buffer.len() >= CHUNK_SIZE * CHUNKS_PER_INSERT {
                    appender.write(&mut buffer, false).await.map_err(fail(recorded))?;
                    if !check.all_or_nothing() {
                        let at = reached - buffer.len() as u64;
                        if !appender.record(at, false).await.map_err(fail(recorded))? {
                            return Err((recorded, AppendError::Gone));
                        }
                        recorded = at;
                    }
                }
            }
            Some(Err(source)) => {
                if check.all_or_nothing() {
                    return Err((offset, AppendError::Interrupted { offset, source }));
                }
                appender.write(&mut buffer, true).await.map_err(fail(recorded))?;
                return Err((reached, AppendError::Interrupted { offset: reached, source }));
            }
            None => {
                if !check.verified() {
                    return Err((offset, AppendError::ChecksumMismatch));
                }
                break;
            }
        }
    }
    appender.write(&mut buffer, true).await.map_err(fail(recorded))?;
    Ok(reached)
}
