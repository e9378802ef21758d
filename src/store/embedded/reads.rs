//! Reading stored bytes: downloads from the page cache or the blocking pool, lookups by digest, staging.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::future::Either;
use redb::ReadableDatabase;
use tokio::sync::Semaphore;

use super::{BLOB_REFS, EmbeddedStore, MAPPED_CHUNK, OrBackend, READ_AHEAD, READ_CHUNK};
use crate::domain::{Sha256, StoredFile};
use crate::store::{BlobStore, ByteStream, StagedBlob, StoreError, UploadStream, stage_to_file};

/// Streams `range` of `file`. A stretch of up to `MAPPED_CHUNK` bytes that the page cache holds without a gap (at
/// least `READ_CHUNK` of them) is handed on as a mapping of the file, which the connection sends with sendfile(2)
/// and nobody copies (see `crate::zero_copy`); it costs address space, not memory. Any other chunk of `READ_CHUNK`
/// bytes (where a page is missing) is copied: on the spot if it is cached after all (a race, or a file that cannot
/// be mapped), else by one short job on the process's blocking pool (`crate::blocking`: a positional read) that
/// holds one of `readers`' permits while it runs, and no thread waits on the client. Each such read is a task of
/// its own, so it runs to its end (and gives its permit back) even when the client has stopped taking bytes: a
/// stalled download holds at most `READ_AHEAD` chunks in memory (or mapped), plus the one the connection is
/// sending, and nothing else.
fn read_chunks(file: std::fs::File, range: Range<u64>, readers: Arc<Semaphore>) -> ByteStream {
    let file = Arc::new(file);
    let (mut offset, end) = (range.start, range.end);
    let chunks = std::iter::from_fn(move || {
        let left = end.checked_sub(offset).filter(|&left| left > 0)?;
        // Below a read chunk, a mapping (and a second system call on the connection) would not pay.
        if left >= READ_CHUNK as u64 {
            let len = left.min(MAPPED_CHUNK as u64) as usize;
            if let Some(mapped) = crate::zero_copy::map(&file, offset, len, READ_CHUNK, end) {
                offset += mapped.len() as u64;
                return Some(Either::Left(std::future::ready(Ok(mapped))));
            }
        }
        let len = left.min(READ_CHUNK as u64) as usize;
        let at = offset;
        offset += len as u64;
        Some(copy_chunk(&file, at, len, &readers))
    });
    Box::pin(futures_util::stream::iter(chunks).buffered(READ_AHEAD))
}

/// `len` bytes at `offset`, copied: at once from the page cache, or by a read on the blocking pool.
fn copy_chunk(
    file: &Arc<std::fs::File>,
    offset: u64,
    len: usize,
    readers: &Arc<Semaphore>,
) -> Either<
    std::future::Ready<std::io::Result<bytes::Bytes>>,
    impl std::future::Future<Output = std::io::Result<bytes::Bytes>> + use<>,
> {
    let mut chunk = match page_cache::read(file, offset, BytesMut::zeroed(len)) {
        Ok(cached) => return Either::Left(std::future::ready(Ok(cached))),
        Err(buffer) => buffer,
    };
    let file = Arc::clone(file);
    let readers = Arc::clone(readers);
    let read = tokio::spawn(async move {
        let permit = readers
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        crate::blocking::spawn(move || {
            let _permit = permit;
            file.read_exact_at(&mut chunk, offset)?;
            Ok(chunk.freeze())
        })
        .await
        .map_err(std::io::Error::other)?
    });
    Either::Right(async move { read.await.map_err(std::io::Error::other)? })
}

/// Reads that never wait for the disk: `preadv2(RWF_NOWAIT)` copies what the page cache holds and refuses the rest.
#[cfg(target_os = "linux")]
mod page_cache {
    use bytes::{Bytes, BytesMut};
    use rustix::io::{ReadWriteFlags, preadv2};
    use std::io::IoSliceMut;

    /// `chunk.len()` bytes at `offset` if all of them are cached; otherwise the buffer back, for the caller to
    /// read from the disk (a caller reads or overwrites every byte of it).
    pub fn read(file: &std::fs::File, offset: u64, mut chunk: BytesMut) -> Result<Bytes, BytesMut> {
        let read = preadv2(
            file,
            &mut [IoSliceMut::new(&mut chunk)],
            offset,
            ReadWriteFlags::NOWAIT,
        );
        if read == Ok(chunk.len()) {
            Ok(chunk.freeze())
        } else {
            Err(chunk)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod page_cache {
    pub fn read(
        _: &std::fs::File,
        _: u64,
        chunk: bytes::BytesMut,
    ) -> Result<bytes::Bytes, bytes::BytesMut> {
        Err(chunk)
    }
}

#[async_trait]
impl BlobStore for EmbeddedStore {
    async fn stage(&self, body: UploadStream<'_>, limit: u64) -> Result<StagedBlob, StoreError> {
        stage_to_file(&self.tmp_dir, &self.held_uploads, body, limit).await
    }

    async fn read_blob(
        &self,
        file: &StoredFile,
        range: Range<u64>,
    ) -> Result<Option<ByteStream>, StoreError> {
        let Some(path) = self.blobs.path_of(&file.blob_id) else {
            return Ok(None);
        };
        // Opening is a blocking job like the reads, under the same limit: a burst of downloads never takes the pool.
        let permit = Arc::clone(&self.readers)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let opened = crate::blocking::spawn(move || {
            let _permit = permit;
            std::fs::File::open(&path)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        let blob = match opened {
            Ok(blob) => blob,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // An open file stays readable even if a concurrent delete unlinks it, so a download never breaks off.
        Ok(Some(read_chunks(blob, range, Arc::clone(&self.readers))))
    }

    async fn stage_verified(
        &self,
        file: tempfile::TempPath,
        sha256: &Sha256,
        size: u64,
    ) -> Result<StagedBlob, StoreError> {
        Ok(self.adopt_verified(file, sha256, size))
    }

    async fn blob(&self, sha256: &Sha256) -> Result<Option<StoredFile>, StoreError> {
        let path = self.blobs.path(sha256);
        let digest = sha256.to_string();
        self.blocking(move |db| {
            // Only referenced blobs are served: one being reclaimed, or placed by an upload that has not
            // committed, is not there yet for clients.
            let txn = db.begin_read().or_backend()?;
            let refs = txn.open_table(BLOB_REFS).or_backend()?;
            if refs.get(digest.as_str()).or_backend()?.is_none() {
                return Ok(None);
            }
            let stat = match std::fs::metadata(&path) {
                Ok(stat) => stat,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let modified = stat
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_default();
            Ok(Some(crate::store::digest_file(StoredFile {
                blob_id: digest.clone(),
                size: stat.len(),
                sha256: digest,
                content_type: String::new(),
                filename: String::new(),
                uploaded_at: modified,
                signatures: Vec::new(),
            })))
        })
        .await
    }
}

#[cfg(all(test, target_os = "linux"))]
mod download_tests {
    use std::io::Write;

    use rustix::fs::{Advice, fadvise};

    use super::*;

    fn stored(bytes: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().expect("a temporary file");
        file.write_all(bytes).expect("written");
        file.sync_all().expect("synced");
        file
    }

    async fn read(file: &std::fs::File, range: Range<u64>) -> Vec<u8> {
        let file = file.try_clone().expect("a second handle");
        let mut chunks = read_chunks(file, range, Arc::new(Semaphore::new(2)));
        let mut read = Vec::new();
        while let Some(chunk) = chunks.next().await {
            read.extend_from_slice(&chunk.expect("a chunk"));
        }
        read
    }

    #[tokio::test]
    async fn downloads_read_the_same_bytes_from_the_page_cache_and_from_the_disk() {
        let data: Vec<u8> = (0..READ_CHUNK * 3 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let file = stored(&data);
        let (start, end) = (1000, READ_CHUNK * 2 + 17);
        let whole = 0..data.len() as u64;
        let inside = start as u64..end as u64;
        assert_eq!(read(&file, whole.clone()).await, data);
        assert_eq!(read(&file, inside.clone()).await, data[start..end]);
        // Clean pages dropped: the reads that miss the cache go to the blocking pool.
        fadvise(&file, 0, None, Advice::DontNeed).expect("advice taken");
        assert_eq!(read(&file, inside).await, data[start..end]);
        fadvise(&file, 0, None, Advice::DontNeed).expect("advice taken");
        assert_eq!(read(&file, whole.clone()).await, data);
        // Dropped from the middle on: the cached stretch before is mapped (whole folios go, so not one page), the
        // rest read from the disk; were the mapping's length taken for the stretch asked, bytes would go missing.
        let gap = (READ_CHUNK * 2) as u64;
        fadvise(&file, gap, None, Advice::DontNeed).expect("advice taken");
        assert_eq!(read(&file, whole).await, data);
    }

    #[test]
    fn a_page_cache_read_is_all_the_bytes_asked_for_or_nothing() {
        let file = stored(b"0123456789");
        assert_eq!(
            page_cache::read(&file, 2, BytesMut::zeroed(8)).as_deref(),
            Ok(&b"23456789"[..])
        );
        let missed = page_cache::read(&file, 2, BytesMut::zeroed(9));
        assert_eq!(
            missed.map_err(|buffer| buffer.len()),
            Err(9),
            "a short read is not a chunk; the whole buffer comes back for the read from the disk"
        );
    }
}
