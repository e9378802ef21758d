//! Where a mirror stands, shared between the sync task and the API (GraphQL `mirror`, metrics, `/readyz`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// What the sync task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Started, nothing heard from the upstream yet.
    Starting,
    /// Listing the upstream and fetching what the devices can run (the first sync, or a full reconcile).
    Syncing,
    /// Applying the upstream's change feed.
    CatchingUp,
    /// Up to date with the upstream's feed; waiting for the next change.
    Following,
    /// The last attempt to reach the upstream failed; serving what the mirror holds, retrying with backoff.
    Offline,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Starting => "starting",
            SyncState::Syncing => "syncing",
            SyncState::CatchingUp => "catching_up",
            SyncState::Following => "following",
            SyncState::Offline => "offline",
        }
    }
}

/// One reading of the status.
#[derive(Debug, Clone)]
pub struct MirrorSnapshot {
    pub upstream: String,
    pub state: SyncState,
    /// The upstream sequence applied last (`None` before the first sync).
    pub last_sequence: Option<u64>,
    /// The oldest upstream change not applied yet, while catching up.
    pub behind_since: Option<DateTime<Utc>>,
    pub pending_files: u64,
    pub pending_bytes: u64,
    /// When the mirror was last known to hold everything the upstream had.
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The first full sync has completed (now or in an earlier run).
    pub synced: bool,
    /// Bytes received from the upstream's `/blobs` since start.
    pub bytes_fetched: u64,
    /// Files verified and stored since start.
    pub files_fetched: u64,
    /// Files the upstream offered whose signatures the mirror's own trust policy does not verify, counted at each
    /// offer since start (not stored in enforce mode; stored and served in audit mode).
    pub unverified_files: u64,
    /// What the upstream offered that the mirror refused (a file over `--max-upload-size`), by component: such a
    /// component is not kept. An entry goes when the component is stored or leaves the upstream.
    pub problems: BTreeMap<String, String>,
}

impl MirrorSnapshot {
    /// How far behind the upstream the mirror may be, in seconds: 0 when up to date, else since the oldest change
    /// not applied yet (or since it was last up to date, when it cannot tell); `None` before the first sync.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<f64> {
        if self.state == SyncState::Following {
            return Some(0.0);
        }
        let since = self.behind_since.or(self.last_sync_at)?;
        Some(((now - since).num_milliseconds().max(0) as f64) / 1000.0)
    }
}

/// The shared status; cheap to clone.
#[derive(Debug, Clone)]
pub struct MirrorStatus {
    inner: Arc<Mutex<MirrorSnapshot>>,
    /// Answer ready before the first sync (`--mirror-serve-stale`).
    pub serve_stale: bool,
}

impl MirrorStatus {
    pub fn new(upstream: &str, serve_stale: bool) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MirrorSnapshot {
                upstream: upstream.to_string(),
                state: SyncState::Starting,
                last_sequence: None,
                behind_since: None,
                pending_files: 0,
                pending_bytes: 0,
                last_sync_at: None,
                last_error: None,
                synced: false,
                bytes_fetched: 0,
                files_fetched: 0,
                unverified_files: 0,
                problems: BTreeMap::new(),
            })),
            serve_stale,
        }
    }

    pub fn snapshot(&self) -> MirrorSnapshot {
        self.lock().clone()
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut MirrorSnapshot)) {
        change(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MirrorSnapshot> {
        // A panic elsewhere never makes the status unreadable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `/readyz` may answer ready.
    pub fn ready(&self) -> bool {
        self.serve_stale || self.lock().synced
    }
}
