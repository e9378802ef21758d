//! Binaries in GridFS: streaming uploads through the driver's bucket, downloads and ranges straight from the
//! chunks collection (so a range reads only the chunks it covers). What nothing references any more is collected
//! by [`super::gc`].

use std::io;
use std::ops::Range;

use bytes::BytesMut;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime as BsonDateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use sha2::{Digest, Sha256};

use super::documents::integer;
use super::map_err;
use crate::store::{ByteStream, RemoteBlob, StagedBlob, StagedLocation, StoreError, UploadStream};

/// Suffix of the collection (beside the bucket's) that records when a file stopped being any component's file.
/// A collection of our own rather than a field of the files document: GridFS readers (the original service's
/// among them) see the bucket exactly as GridFS defines it.
pub const SUPERSEDED_SUFFIX: &str = "_superseded";
/// The file name of an upload until a component refers to it.
pub const STAGING_FILENAME: &str = "staging";
/// Chunks fetched per query of a download: with GridFS's default 255 KiB chunks, about 2 MiB at a time.
const CHUNKS_PER_WINDOW: u64 = 8;

/// GridFS's default chunk size, as the original service's driver wrote them.
pub const CHUNK_SIZE: usize = 255 * 1024;
/// Chunks sent per insert: fewer round trips, and still a bounded buffer (about 1 MiB) per upload.
const CHUNKS_PER_INSERT: usize = 4;

/// The collections of one GridFS bucket.
///
/// Files are written and read here in the GridFS layout (a `files` document plus numbered `chunks`), which any
/// GridFS reader, the original service's included, understands. The driver's bucket API is not used: ranges need
/// chunk-level reads it does not offer, and its first upload issues an explicit `create` for `fs.files`, a name
/// that MongoDB-compatible servers we test against refuse.
#[derive(Clone)]
pub struct Grid {
    pub files: Collection<Document>,
    pub chunks: Collection<Document>,
    /// `{_id: <file id>, at: <date>}` for each file replaced or deleted and not yet collected.
    pub superseded: Collection<Document>,
}

impl Grid {
    pub fn new(database: &Database, bucket_name: &str) -> Self {
        Self {
            files: database.collection(&format!("{bucket_name}.files")),
            chunks: database.collection(&format!("{bucket_name}.chunks")),
            superseded: database.collection(&format!("{bucket_name}{SUPERSEDED_SUFFIX}")),
        }
    }

    /// The indexes GridFS readers expect. A server that cannot build them still works, only slower, so a failure
    /// is a warning.
    pub async fn ensure_indexes(&self) {
        let indexes = [
            (&self.chunks, doc! { "files_id": 1, "n": 1 }, true),
            (&self.files, doc! { "filename": 1, "uploadDate": 1 }, false),
        ];
        for (collection, keys, unique) in indexes {
            let index = IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(unique).build())
                .build();
            if let Err(e) = collection.create_index(index).await {
                tracing::warn!(error = %e, collection = collection.name(), "could not create a GridFS index");
            }
        }
    }

    /// Streams `body` into a new GridFS file, hashing it on the way and refusing more than `limit` bytes. Chunks
    /// are written as they fill, so memory stays at a few chunks; on any error the chunks written so far are
    /// deleted. The files document is written last: until then the upload is invisible to GridFS readers.
    pub async fn stage(
        &self,
        mut body: UploadStream<'_>,
        limit: u64,
    ) -> Result<StagedBlob, StoreError> {
        let id = ObjectId::new();
        // Deletes whatever was written unless the upload completes: on an error, and also when the request is
        // dropped half way (a client that disconnects).
        let grid = self.clone();
        let guard = RemoteBlob::new(id.to_hex(), move || {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { grid.delete(id).await });
            }
        });
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut next_chunk: i64 = 0;
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK_SIZE * CHUNKS_PER_INSERT);
        let outcome: Result<(), StoreError> = async {
            loop {
                let item = body.next().await;
                let finished = item.is_none();
                if let Some(chunk) = item {
                    let chunk = chunk.map_err(StoreError::BodyInterrupted)?;
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(StoreError::TooLarge { limit });
                    }
                    hasher.update(&chunk);
                    buffer.extend_from_slice(&chunk);
                }
                if buffer.len() >= CHUNK_SIZE * CHUNKS_PER_INSERT
                    || (finished && !buffer.is_empty())
                {
                    next_chunk = self
                        .write_chunks(id, next_chunk, &mut buffer, finished)
                        .await?;
                }
                if finished {
                    break;
                }
            }
            let files_document = doc! {
                "_id": id,
                "length": size as i64,
                "chunkSize": CHUNK_SIZE as i32,
                "uploadDate": BsonDateTime::now(),
                "filename": STAGING_FILENAME,
                "metadata": { "sha256": hex::encode(hasher.clone().finalize()) },
            };
            self.files
                .insert_one(files_document)
                .await
                .map_err(map_err)?;
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            // Deleted before the client hears of the error (best effort: `gc` collects what a failure leaves).
            guard.keep();
            self.delete(id).await;
            return Err(e);
        }
        Ok(StagedBlob {
            sha256: hex::encode(hasher.finalize()),
            size,
            location: StagedLocation::Remote(guard),
        })
    }

    /// Writes the full chunks in `buffer` (and, at the end of the file, the short last one) as chunks `first...`;
    /// returns the number of the next chunk and leaves the rest in `buffer`.
    async fn write_chunks(
        &self,
        id: ObjectId,
        first: i64,
        buffer: &mut Vec<u8>,
        last: bool,
    ) -> Result<i64, StoreError> {
        let mut n = first;
        let mut documents = Vec::with_capacity(CHUNKS_PER_INSERT + 1);
        let mut taken = 0;
        while buffer.len() - taken >= CHUNK_SIZE || (last && taken < buffer.len()) {
            let end = (taken + CHUNK_SIZE).min(buffer.len());
            documents.push(doc! {
                "_id": ObjectId::new(),
                "files_id": id,
                "n": n as i32,
                "data": Binary { subtype: BinarySubtype::Generic, bytes: buffer[taken..end].to_vec() },
            });
            taken = end;
            n += 1;
        }
        if !documents.is_empty() {
            self.chunks.insert_many(documents).await.map_err(map_err)?;
        }
        buffer.drain(..taken);
        Ok(n)
    }

    /// Gives a staged file the name the original service would have given it, and records its hash.
    pub async fn label(
        &self,
        id: ObjectId,
        filename: &str,
        metadata: Document,
    ) -> Result<(), StoreError> {
        self.files
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "filename": filename, "metadata": metadata } },
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Records that no component refers to a file any more (it was replaced or deleted), and when. The file stays
    /// readable, so downloads that began before are never cut, and `gc` removes it once it has been superseded for
    /// longer than the grace period.
    pub async fn supersede(&self, id: ObjectId) {
        let recorded = self
            .superseded
            .insert_one(doc! { "_id": id, "at": BsonDateTime::now() })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, %id, "could not record a replaced GridFS file; gc may collect it early");
        }
    }

    /// Deletes a file and its chunks; a file that is already gone is fine.
    pub async fn delete(&self, id: ObjectId) {
        if let Err(e) = self.delete_now(id).await.map(drop) {
            tracing::warn!(error = %e, %id, "could not delete a GridFS file; gc will collect it");
        }
    }

    /// Deletes a file, its chunks and any record of it; says whether there was a file.
    pub(super) async fn delete_now(&self, id: ObjectId) -> Result<bool, StoreError> {
        // Chunks first: a crash in between leaves a files document without chunks rather than chunks that no
        // files document accounts for, and gc removes either.
        self.chunks
            .delete_many(doc! { "files_id": id })
            .await
            .map_err(map_err)?;
        let deleted = self
            .files
            .delete_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        self.superseded
            .delete_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        Ok(deleted.deleted_count > 0)
    }

    /// The files document of `id`, if there is one.
    pub async fn file(&self, id: ObjectId) -> Result<Option<Document>, StoreError> {
        self.files
            .find_one(doc! { "_id": id })
            .await
            .map_err(map_err)
    }

    /// The files documents of many ids, in one query.
    pub async fn files_by_id(&self, ids: &[ObjectId]) -> Result<Vec<Document>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.files
            .find(doc! { "_id": { "$in": ids } })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)
    }

    /// Streams `range` of file `id`, reading only the chunks the range covers, a few at a time.
    pub async fn read(
        &self,
        id: ObjectId,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError> {
        let Some(file) = self.file(id).await? else {
            return Ok(None);
        };
        let chunk_size = match integer(file.get("chunkSize")) {
            Some(n) if n > 0 => n as u64,
            _ => {
                return Err(StoreError::Backend(format!(
                    "GridFS file {id} has no chunk size"
                )));
            }
        };
        if range.is_empty() {
            return Ok(Some(Box::pin(futures_util::stream::empty())));
        }
        let first = range.start / chunk_size;
        let last = (range.end - 1) / chunk_size;
        let (start, end) = (range.start, range.end);
        let chunks = self.chunks.clone();
        // One query per window of chunks rather than one cursor: the memory a download holds stays at one window
        // even with servers that ignore a cursor's batch size.
        let stream = futures_util::stream::try_unfold(first, move |n| {
            let chunks = chunks.clone();
            async move {
                if n > last {
                    return Ok(None);
                }
                let window_end = (n + CHUNKS_PER_WINDOW - 1).min(last);
                let window: Vec<Document> = chunks
                    .find(doc! { "files_id": id, "n": { "$gte": n as i64, "$lte": window_end as i64 } })
                    .sort(doc! { "n": 1 })
                    .await
                    .map_err(io::Error::other)?
                    .try_collect()
                    .await
                    .map_err(io::Error::other)?;
                let mut bytes =
                    BytesMut::with_capacity(((window_end - n + 1) * chunk_size) as usize);
                for (i, chunk) in window.iter().enumerate() {
                    bytes.extend_from_slice(chunk_slice(
                        chunk,
                        id,
                        n + i as u64,
                        chunk_size,
                        start..end,
                    )?);
                }
                if window.len() as u64 != window_end - n + 1 {
                    let missing = n + window.len() as u64;
                    return Err(io::Error::other(format!(
                        "GridFS file {id} is missing chunk {missing}"
                    )));
                }
                Ok(Some((bytes.freeze(), window_end + 1)))
            }
        });
        Ok(Some(Box::pin(stream)))
    }
}

/// The part of chunk `n` that falls in `range`, checking that the chunk is the one expected.
fn chunk_slice(
    chunk: &Document,
    id: ObjectId,
    n: u64,
    chunk_size: u64,
    range: Range<u64>,
) -> io::Result<&[u8]> {
    let found = integer(chunk.get("n")).and_then(|found| u64::try_from(found).ok());
    if found != Some(n) {
        return Err(io::Error::other(format!(
            "GridFS file {id} is missing chunk {n}"
        )));
    }
    let Some(Bson::Binary(binary)) = chunk.get("data") else {
        return Err(io::Error::other(format!(
            "GridFS chunk {n} of {id} has no data"
        )));
    };
    let data = binary.bytes.as_slice();
    let chunk_start = n * chunk_size;
    let from = range.start.saturating_sub(chunk_start) as usize;
    let to = (range.end.min(chunk_start + chunk_size) - chunk_start) as usize;
    if from >= to || data.len() < to {
        return Err(io::Error::other(format!(
            "GridFS chunk {n} of {id} is short"
        )));
    }
    Ok(&data[from..to])
}
