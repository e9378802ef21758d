//! `mirror`: where an edge mirror stands with its upstream.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};

use super::types::Long;
use crate::service::mirror::{MirrorSnapshot, SyncState};

/// What an edge mirror's sync is doing.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum MirrorState {
    /// Started; nothing heard from the upstream yet.
    Starting,
    /// Listing the upstream and fetching what the devices can run (the first sync, or a full reconcile).
    Syncing,
    /// Applying the upstream's change feed.
    CatchingUp,
    /// Up to date; waiting for the upstream's next change.
    Following,
    /// The upstream cannot be reached: serving what the mirror holds, retrying with backoff.
    Offline,
}

impl From<SyncState> for MirrorState {
    fn from(s: SyncState) -> Self {
        match s {
            SyncState::Starting => MirrorState::Starting,
            SyncState::Syncing => MirrorState::Syncing,
            SyncState::CatchingUp => MirrorState::CatchingUp,
            SyncState::Following => MirrorState::Following,
            SyncState::Offline => MirrorState::Offline,
        }
    }
}

/// An edge mirror's status.
#[derive(SimpleObject)]
pub struct Mirror {
    /// The repository this one mirrors.
    pub upstream: String,
    pub state: MirrorState,
    /// The upstream feed's sequence applied last; null before the first sync.
    pub last_sequence: Option<Long>,
    /// How far behind the upstream the mirror may be, in seconds: 0 when up to date, else the age of the oldest
    /// upstream change not applied yet (offline: since it was last up to date); null before the first sync.
    pub lag_seconds: Option<f64>,
    /// Files still to fetch.
    pub pending_files: Long,
    /// Bytes still to fetch.
    pub pending_bytes: Long,
    /// When the mirror was last up to date with its upstream.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed; null once the mirror is up to date again.
    pub last_error: Option<String>,
    /// What the upstream offered that the mirror refused and does not keep, one line per component (a file larger
    /// than this server's `--max-upload-size`, or, with `--signatures enforce`, a file no signature verifies).
    pub problems: Vec<String>,
    /// Files the upstream offered whose signatures this mirror's own trust policy does not verify, counted at each
    /// offer since start: not kept with `--signatures enforce`, kept and served (counted) with `audit`.
    pub unverified_files: Long,
}

impl From<MirrorSnapshot> for Mirror {
    fn from(s: MirrorSnapshot) -> Self {
        Mirror {
            lag_seconds: s.lag_seconds(Utc::now()),
            upstream: s.upstream,
            state: s.state.into(),
            last_sequence: s.last_sequence.map(Long),
            pending_files: Long(s.pending_files),
            pending_bytes: Long(s.pending_bytes),
            last_sync_at: s.last_sync_at,
            last_error: s.last_error,
            unverified_files: Long(s.unverified_files),
            problems: s
                .problems
                .into_iter()
                .map(|(key, problem)| format!("{key}: {problem}"))
                .collect(),
        }
    }
}
