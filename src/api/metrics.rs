//! Prometheus metrics at `/metrics`: requests and latency by route and GraphQL operation, file bytes in and out,
//! and the errors that come from the store.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod mirror;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeOnly {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// Most distinct GraphQL operation names kept as labels; later ones are counted under [`OTHER_OPERATIONS`]. Names
/// come from clients: without a bound they would grow `/metrics` (and the server's memory) without end.
pub const MAX_OPERATION_NAMES: usize = 200;

/// Longest operation name kept as a label, in bytes.
pub const MAX_OPERATION_NAME_BYTES: usize = 100;

/// The label of operations whose names are not kept.
pub const OTHER_OPERATIONS: &str = "other";

/// Labels the server chooses (operations without a name, with a name the document does not define, documents that
/// do not parse, batches), always kept.
const SERVER_LABELS: [&str; 4] = ["anonymous", "unknown", "invalid", "batch"];

type Latency<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Latency<RouteLabels>,
    operations: Family<OutcomeLabels, Counter>,
    operation_seconds: Latency<OperationLabels>,
    file_bytes: Family<DirectionLabels, Counter>,
    store_errors: Family<CodeLabels, Counter>,
    subscribers: Family<TransportLabels, Gauge>,
    event_sequence: Gauge,
    deliveries: Family<DeliveryLabels, Counter>,
    webhook_events_examined: Counter,
    webhook_cursor_saves: Counter,
    unsigned_downloads: Family<OutcomeOnly, Counter>,
    sendfile_bytes: Counter,
    operation_names: Mutex<HashSet<String>>,
    mirror: mirror::MirrorMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("repository");
        let metrics = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            operations: Family::default(),
            operation_seconds: Family::new_with_constructor(latency_histogram),
            file_bytes: Family::default(),
            store_errors: Family::default(),
            subscribers: Family::default(),
            event_sequence: Gauge::default(),
            deliveries: Family::default(),
            webhook_events_examined: Counter::default(),
            webhook_cursor_saves: Counter::default(),
            unsigned_downloads: Family::default(),
            sendfile_bytes: Counter::default(),
            operation_names: Mutex::default(),
            mirror: mirror::MirrorMetrics::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response's headers, by method and route (downloads then stream)",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "graphql_operations",
            "GraphQL operations by name and outcome (ok, or the first error's code)",
            metrics.operations.clone(),
        );
        registry.register(
            "graphql_operation_duration_seconds",
            "GraphQL execution time by operation name",
            metrics.operation_seconds.clone(),
        );
        registry.register(
            "file_bytes",
            "Bytes of files received (upload) and sent (download)",
            metrics.file_bytes.clone(),
        );
        registry.register(
            "store_errors",
            "Requests that failed in the store, by code (UNAVAILABLE, INTERNAL)",
            metrics.store_errors.clone(),
        );
        registry.register(
            "event_subscribers",
            "Change-feed subscribers connected, by transport (graphql_ws, sse)",
            metrics.subscribers.clone(),
        );
        registry.register(
            "events_appended",
            "Events appended to the change feed (its last sequence, across all replicas), as of the last scrape",
            metrics.event_sequence.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered; failed, to be retried; gave_up)",
            metrics.deliveries.clone(),
        );
        registry.register(
            "webhook_events_examined",
            "Events the webhook workers looked at, wanted or filtered out",
            metrics.webhook_events_examined.clone(),
        );
        registry.register(
            "webhook_cursor_saves",
            "Webhook cursor writes (after each delivery, and batched past filtered-out events)",
            metrics.webhook_cursor_saves.clone(),
        );
        registry.register(
            "unverified_downloads",
            "Downloads of files without a signature the trust policy verifies: served (audit mode) or refused \
             (enforce mode, 403 UNSIGNED)",
            metrics.unsigned_downloads.clone(),
        );
        registry.register(
            "download_sendfile_bytes",
            "Bytes of downloads sent by sendfile(2) from page-cached stored files (embedded store, zero-copy), \
             of the process",
            metrics.sendfile_bytes.clone(),
        );
        metrics.mirror.register(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The label of an operation name: the name itself while fewer than [`MAX_OPERATION_NAMES`] are kept.
    fn operation_label(&self, name: &str) -> String {
        if SERVER_LABELS.contains(&name) {
            return name.into();
        }
        if name.len() > MAX_OPERATION_NAME_BYTES {
            return OTHER_OPERATIONS.into();
        }
        let Ok(mut names) = self.operation_names.lock() else {
            return OTHER_OPERATIONS.into();
        };
        if names.contains(name) {
            return name.into();
        }
        if names.len() < MAX_OPERATION_NAMES {
            names.insert(name.to_string());
            return name.into();
        }
        OTHER_OPERATIONS.into()
    }

    pub fn operation(&self, operation: &str, outcome: &str, seconds: f64) {
        let operation = self.operation_label(operation);
        self.operations
            .get_or_create(&OutcomeLabels {
                operation: operation.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.operation_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(seconds);
    }

    pub fn uploaded(&self, bytes: u64) {
        self.file_bytes
            .get_or_create(&DirectionLabels {
                direction: "upload".into(),
            })
            .inc_by(bytes);
    }

    pub fn downloaded(&self, bytes: u64) {
        self.file_bytes
            .get_or_create(&DirectionLabels {
                direction: "download".into(),
            })
            .inc_by(bytes);
    }

    pub fn store_error(&self, code: &str) {
        self.store_errors
            .get_or_create(&CodeLabels { code: code.into() })
            .inc();
    }

    /// A change-feed subscriber connected over `transport`; it counts until the returned guard drops.
    pub fn subscriber(self: &Arc<Self>, transport: &str) -> Subscribed {
        let labels = TransportLabels {
            transport: transport.into(),
        };
        self.subscribers.get_or_create(&labels).inc();
        Subscribed {
            metrics: self.clone(),
            labels,
        }
    }

    /// Brings the counter of webhook deliveries with `outcome` up to `total` (the dispatcher counts them).
    pub fn deliveries_up_to(&self, outcome: &str, total: u64) {
        let counter = self.deliveries.get_or_create(&DeliveryLabels {
            outcome: outcome.into(),
        });
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }

    /// Brings the webhook workers' counters up to their totals.
    pub fn webhook_work_up_to(&self, examined: u64, cursor_saves: u64) {
        for (counter, total) in [
            (&self.webhook_events_examined, examined),
            (&self.webhook_cursor_saves, cursor_saves),
        ] {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    /// Brings the unverified-download counters up to the service's totals.
    pub fn unverified_downloads_up_to(&self, served: u64, refused: u64) {
        for (outcome, total) in [("served", served), ("refused", refused)] {
            let counter = self.unsigned_downloads.get_or_create(&OutcomeOnly {
                outcome: outcome.into(),
            });
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
    }

    /// Brings the zero-copy counter up to the process's total.
    pub fn sendfile_up_to(&self, total: u64) {
        let seen = self.sendfile_bytes.get();
        if total > seen {
            self.sendfile_bytes.inc_by(total - seen);
        }
    }

    pub fn events_appended(&self, last_sequence: u64) {
        self.event_sequence
            .set(i64::try_from(last_sequence).unwrap_or(i64::MAX));
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Counts a connected subscriber while it lives.
pub struct Subscribed {
    metrics: Arc<Metrics>,
    labels: TransportLabels,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.metrics.subscribers.get_or_create(&self.labels).dec();
    }
}

/// Marks an error response that a store failure caused, for [`track`] to count.
#[derive(Clone, Copy, Debug)]
pub struct StoreFault(pub &'static str);

/// `GET /metrics` in the Prometheus text format.
pub async fn endpoint(State(state): State<super::state::AppState>) -> Response {
    if let Ok(last) = state.service.last_sequence().await {
        state.metrics.events_appended(last);
    }
    let counts = state.service.delivery_counts();
    for (outcome, count) in [
        ("delivered", &counts.delivered),
        ("failed", &counts.failed),
        ("gave_up", &counts.gave_up),
    ] {
        state
            .metrics
            .deliveries_up_to(outcome, count.load(std::sync::atomic::Ordering::Relaxed));
    }
    state.metrics.webhook_work_up_to(
        counts
            .events_examined
            .load(std::sync::atomic::Ordering::Relaxed),
        counts
            .cursor_saves
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    if state.service.signing().mode() != crate::service::signing::SignatureMode::Off {
        let (served, refused) = state.service.signing().download_counts();
        state.metrics.unverified_downloads_up_to(served, refused);
    }
    state.metrics.sendfile_up_to(crate::zero_copy::sent_bytes());
    if let Some(mirror) = state.service.mirror_status() {
        state.metrics.mirror.observe(&mirror.snapshot());
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Counts and times every request by its route template (never the raw path: ids would explode the label set).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: status.as_u16(),
        })
        .inc();
    if let Some(StoreFault(code)) = response.extensions().get::<StoreFault>() {
        metrics.store_error(code);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded() {
        let metrics = Metrics::new();
        assert_eq!(metrics.operation_label("a"), "a");
        for i in 0..MAX_OPERATION_NAMES * 2 {
            metrics.operation_label(&format!("op{i}"));
        }
        assert_eq!(metrics.operation_label("a"), "a");
        assert_eq!(metrics.operation_label("op1"), "op1");
        assert_eq!(metrics.operation_label("late"), OTHER_OPERATIONS);
        assert_eq!(metrics.operation_label("batch"), "batch");
        let long = "x".repeat(MAX_OPERATION_NAME_BYTES + 1);
        assert_eq!(Metrics::new().operation_label(&long), OTHER_OPERATIONS);
    }
}
