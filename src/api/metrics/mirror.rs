//! The edge mirror's status as Prometheus gauges, read from the sync's status at each scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::service::mirror::{MirrorSnapshot, SyncState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Default)]
pub struct MirrorMetrics {
    state: Family<StateLabels, Gauge>,
    last_sequence: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    pending_files: Gauge,
    pending_bytes: Gauge,
    last_sync: Gauge<f64, AtomicU64>,
    failing: Gauge,
    fetched_bytes: Counter,
    fetched_files: Counter,
    unverified_files: Counter,
}

const STATES: [SyncState; 5] = [
    SyncState::Starting,
    SyncState::Syncing,
    SyncState::CatchingUp,
    SyncState::Following,
    SyncState::Offline,
];

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn bring_up_to(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

impl MirrorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let mut sub = registry.sub_registry_with_prefix("mirror");
        let registry = &mut sub;
        registry.register(
            "state",
            "1 for the sync's current state (starting, syncing, catching_up, following, offline)",
            self.state.clone(),
        );
        registry.register(
            "last_sequence",
            "The upstream feed's sequence applied last",
            self.last_sequence.clone(),
        );
        registry.register(
            "lag_seconds",
            "How far behind the upstream the mirror may be (0 when up to date)",
            self.lag_seconds.clone(),
        );
        registry.register(
            "pending_files",
            "Files still to fetch from the upstream",
            self.pending_files.clone(),
        );
        registry.register(
            "pending_bytes",
            "Bytes still to fetch from the upstream",
            self.pending_bytes.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "When the mirror was last up to date with its upstream (Unix time)",
            self.last_sync.clone(),
        );
        registry.register(
            "failing",
            "1 while the last attempt to reach the upstream failed",
            self.failing.clone(),
        );
        registry.register(
            "fetched_bytes",
            "Bytes received from the upstream's files",
            self.fetched_bytes.clone(),
        );
        registry.register(
            "fetched_files",
            "Files fetched, verified and stored",
            self.fetched_files.clone(),
        );
        registry.register(
            "unverified_files",
            "Files the upstream offered whose signatures this mirror's trust policy does not verify (not kept in \
             enforce mode)",
            self.unverified_files.clone(),
        );
    }

    pub fn observe(&self, s: &MirrorSnapshot) {
        for state in STATES {
            self.state
                .get_or_create(&StateLabels {
                    state: state.as_str().into(),
                })
                .set(i64::from(state == s.state));
        }
        self.last_sequence.set(gauge(s.last_sequence.unwrap_or(0)));
        self.lag_seconds
            .set(s.lag_seconds(chrono::Utc::now()).unwrap_or(f64::NAN));
        self.pending_files.set(gauge(s.pending_files));
        self.pending_bytes.set(gauge(s.pending_bytes));
        self.last_sync.set(
            s.last_sync_at
                .map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0),
        );
        self.failing.set(i64::from(s.last_error.is_some()));
        bring_up_to(&self.fetched_bytes, s.bytes_fetched);
        bring_up_to(&self.fetched_files, s.files_fetched);
        bring_up_to(&self.unverified_files, s.unverified_files);
    }
}
