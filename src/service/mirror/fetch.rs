//! Bytes from the upstream's `/blobs/sha256/{hex}`: into a partial file named by digest and length (kept across
//! restarts and resumed with `Range`), under the bandwidth cap and the transfer limit, and verified by sha256
//! before anything can refer to them.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::status::MirrorStatus;
use super::upstream::{Upstream, UpstreamError};
use crate::domain::Sha256 as Digest256;

/// Attempts at one file before the sync step gives up (and retries later with backoff); each resumes where the
/// last one broke off.
const ATTEMPTS: usize = 4;
/// Most bytes drawn from the rate limiter at once: small enough to keep the cap smooth.
const MAX_BURST: u32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("reading the file from the upstream failed: {0}")]
    Body(#[from] reqwest::Error),
    #[error("the partial file failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the bytes of sha256 {0} from the upstream do not hash to it; discarded")]
    Corrupt(String),
}

pub struct Fetcher {
    upstream: Upstream,
    dir: PathBuf,
    limiter: Option<DefaultDirectRateLimiter>,
    burst: u32,
    transfers: Semaphore,
    status: MirrorStatus,
}

impl Fetcher {
    pub fn new(
        upstream: Upstream,
        dir: PathBuf,
        max_rate: Option<u64>,
        concurrency: usize,
        status: MirrorStatus,
    ) -> Arc<Self> {
        let rate = max_rate.map(|r| r.clamp(1, u64::from(u32::MAX)) as u32);
        let burst = rate.map_or(MAX_BURST, |r| r.clamp(1, MAX_BURST));
        let limiter = rate.map(|r| {
            let quota = Quota::per_second(NonZeroU32::new(r).expect("clamped to at least 1"))
                .allow_burst(NonZeroU32::new(burst).expect("at least 1"));
            RateLimiter::direct(quota)
        });
        Arc::new(Self {
            upstream,
            dir,
            limiter,
            burst,
            transfers: Semaphore::new(concurrency.max(1)),
            status,
        })
    }

    /// Where the partial (or complete, not yet stored) bytes of a file live.
    /// Only a parsed digest names a file here, so nothing the upstream says reaches outside `dir`.
    fn partial_path(&self, sha256: &Digest256, size: u64) -> PathBuf {
        self.dir.join(format!("{sha256}-{size}"))
    }

    /// Removes every partial file. Called when no transfer is in flight and every change so far is applied: what
    /// is left belongs to files no component in scope needs any more.
    pub async fn discard_partials(&self) -> std::io::Result<u64> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_type().await?.is_file() {
                tokio::fs::remove_file(entry.path()).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Fetches the file (resuming any partial copy) and returns it verified, as a temporary file the store takes.
    pub async fn fetch(
        &self,
        sha256: &Digest256,
        size: u64,
    ) -> Result<tempfile::TempPath, FetchError> {
        let _permit = self
            .transfers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::fs::create_dir_all(&self.dir).await?;
        let path = self.partial_path(sha256, size);
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            match self.attempt(&path, sha256, size).await {
                Ok(()) => {
                    self.status.update(|s| s.files_fetched += 1);
                    return Ok(tempfile::TempPath::try_from_path(path)?);
                }
                Err(e @ FetchError::Corrupt(_)) => return Err(e),
                Err(e) => {
                    tracing::info!(%sha256, error = %e, "file transfer broke off; resuming");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn attempt(&self, path: &Path, sha256: &Digest256, size: u64) -> Result<(), FetchError> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .await?;
        let mut have = file.metadata().await?.len();
        if have > size {
            file.set_len(0).await?;
            have = 0;
        }
        // The bytes already here are hashed again, not fetched again.
        let mut hasher = Sha256::new();
        hash_prefix(path, have, &mut hasher).await?;
        if have < size {
            let response = self.upstream.blob(sha256, have).await?;
            if have > 0 && response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
                // The upstream sent the whole file: start over.
                file.set_len(0).await?;
                have = 0;
                hasher = Sha256::new();
            }
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                if have + chunk.len() as u64 > size {
                    // Never more than declared: a longer body is a lie, not a file.
                    drop(file);
                    tokio::fs::remove_file(path).await?;
                    return Err(FetchError::Corrupt(sha256.to_string()));
                }
                self.throttle(chunk.len()).await;
                file.write_all(&chunk).await?;
                hasher.update(&chunk);
                have += chunk.len() as u64;
                let n = chunk.len() as u64;
                self.status.update(|s| {
                    s.bytes_fetched += n;
                    s.pending_bytes = s.pending_bytes.saturating_sub(n);
                });
            }
            file.flush().await?;
            file.sync_all().await?;
            if have < size {
                return Err(FetchError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the upstream sent {have} of {size} bytes"),
                )));
            }
        }
        if hex::encode(hasher.finalize()) != sha256.as_str() {
            drop(file);
            tokio::fs::remove_file(path).await?;
            return Err(FetchError::Corrupt(sha256.to_string()));
        }
        Ok(())
    }

    /// Waits until `n` more bytes fit under `--mirror-max-rate`.
    async fn throttle(&self, mut n: usize) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        while n > 0 {
            let take = n.min(self.burst as usize);
            let cells = NonZeroU32::new(take as u32).expect("take > 0");
            // `take` never exceeds the burst, so the limiter can always grant it.
            let _ = limiter.until_n_ready(cells).await;
            n -= take;
        }
    }
}

async fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut file = tokio::fs::File::open(path).await?;
    let mut left = len;
    let mut buffer = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buffer.len().min(left as usize);
        let read = file.read(&mut buffer[..want]).await?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        left -= read as u64;
    }
    Ok(())
}
