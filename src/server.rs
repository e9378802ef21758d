//! Wiring: store -> service -> HTTP application, and serving with graceful shutdown.

mod connection_threads;
mod connections;
mod send_idle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;

use crate::api::{self, ApiConfig, Links};
use crate::config::{Config, StoreConfig, StoreKind};
use crate::service::signing::Signing;
use crate::service::{RepositoryService, ServiceError};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::mongodb::MongoStore;

pub use self::connection_threads::ConnectionThreads;

pub use self::connections::{ConnectionLimits, raise_fd_limit};

/// Opens the store the configuration names (nothing runs in the background yet: see [`app`]).
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<Backend> {
    Ok(match config.kind {
        StoreKind::Embedded => {
            let store = EmbeddedStore::open(&config.data_dir)
                .await
                .with_context(|| {
                    format!(
                        "opening the embedded store in {}",
                        config.data_dir.display()
                    )
                })?;
            Backend::Embedded(Arc::new(store))
        }
        StoreKind::Mongodb => {
            let store = MongoStore::connect(&config.mongodb)
                .await
                .with_context(|| {
                    format!(
                        "connecting to MongoDB at {}",
                        crate::config::redact_uri(&config.mongodb.uri)
                    )
                })?;
            Backend::Mongodb(Arc::new(store))
        }
    })
}

/// An opened store, with its backend known for the housekeeping only that backend needs.
pub enum Backend {
    Embedded(Arc<EmbeddedStore>),
    Mongodb(Arc<MongoStore>),
    /// Any other store (tests wrap the real ones).
    Other(Arc<dyn Store>),
}

impl Backend {
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Embedded(store) => store.clone(),
            Backend::Mongodb(store) => store.clone(),
            Backend::Other(store) => store.clone(),
        }
    }
}

impl From<Arc<dyn Store>> for Backend {
    fn from(store: Arc<dyn Store>) -> Self {
        Backend::Other(store)
    }
}

/// The HTTP application over `backend`, with every background task the configuration asks for started (see
/// [`start_background`]); fails when the configuration contradicts itself or the mirror cannot start.
pub fn app(backend: impl Into<Backend>, config: &Config) -> anyhow::Result<axum::Router> {
    config.check()?;
    let backend = backend.into();
    let store = backend.store();
    let signing = Arc::new(
        Signing::new(
            config.signatures.mode(),
            config.signatures.trust_policy.clone(),
        )
        .context("loading the trust policy (--trust-policy)")?,
    );
    let mut service = RepositoryService::new(store.clone(), config.uploads.max_size)
        .with_signing(signing.clone())
        .with_webhooks(config.webhooks)
        .with_immutable_files(config.immutable_files)
        .with_device_report_ttl(config.device_report_ttl)
        .with_upload_session_ttl(config.uploads.session_ttl)
        .with_max_upload_sessions(config.uploads.max_sessions)
        .with_max_upload_session_bytes(config.uploads.max_session_bytes);
    let mirror = match &config.mirror {
        Some(mirror) => {
            let (status, task) =
                crate::service::mirror::prepare(store, mirror_config(mirror, config, &signing))
                    .context("starting the mirror's HTTP client")?;
            service = service.with_mirror(status);
            Some(task)
        }
        None => None,
    };
    let service = Arc::new(service);
    start_background(&backend, &service, mirror, config);
    Ok(api::router(
        service,
        ApiConfig {
            links: Links {
                public_url: config.public_url.clone(),
            },
            tokens: config.auth.clone(),
            limits: config.limits.clone(),
        },
    ))
}

/// The service's mirror settings: the configuration's, with the partial files beside the store's and the store's
/// own upload limit.
fn mirror_config(
    mirror: &crate::config::Mirror,
    config: &Config,
    signing: &Arc<Signing>,
) -> crate::service::mirror::MirrorConfig {
    crate::service::mirror::MirrorConfig {
        upstream: mirror.upstream.clone(),
        token: mirror.token.as_ref().map(|t| t.0.clone()),
        devices: mirror.devices.clone(),
        include: mirror.include.clone(),
        pipelines: mirror.pipelines.clone(),
        max_rate: mirror.max_rate,
        concurrency: mirror.concurrency.max(1),
        serve_stale: mirror.serve_stale,
        partial_dir: config.store.data_dir.join("mirror-partial"),
        max_file_size: config.uploads.max_size,
        signing: signing.clone(),
    }
}

/// Every task the server runs beside answering requests, started here and nowhere else: the edge mirror's sync,
/// the webhook dispatcher, the retention sweeps, and the backend's housekeeping (MongoDB: hashing the files the
/// original service left without one, periodic garbage collection). Each lives as long as the service.
fn start_background(
    backend: &Backend,
    service: &Arc<RepositoryService>,
    mirror: Option<crate::service::mirror::MirrorTask>,
    config: &Config,
) {
    if let Some(mirror) = mirror {
        mirror.spawn();
    }
    crate::service::webhooks::spawn_dispatcher(service);
    spawn_sweeps(service, config);
    if config.signatures.trust_policy.is_some() {
        spawn_policy_reload(service);
    }
    if let Backend::Mongodb(store) = backend {
        spawn_legacy_hashes(store.clone());
        if let Some(interval) = config.store.gc_interval {
            spawn_periodic_gc(store.clone(), interval, config.store.gc_grace);
        }
    }
}

/// Re-reads the trust policy on SIGHUP; a policy that does not load is logged and the one in force stays.
fn spawn_policy_reload(service: &Arc<RepositoryService>) {
    #[cfg(unix)]
    {
        let service = Arc::downgrade(service);
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: the trust policy is read at start only");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(service) = service.upgrade() else {
                    return;
                };
                match service.signing().reload() {
                    Ok(()) => tracing::info!(
                        "trust policy re-read (SIGHUP): stored signatures are judged by it now"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "the trust policy could not be re-read; the previous one stays in force")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = service;
}

/// Hashes the files the original service stored without a sha256, once.
fn spawn_legacy_hashes(store: Arc<MongoStore>) {
    tokio::spawn(async move {
        match store.backfill_legacy_hashes().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                files = n,
                "hashed files inherited from the original service"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not hash files inherited from the original service")
            }
        }
    });
}

/// Collects unreferenced files every `interval`.
fn spawn_periodic_gc(store: Arc<MongoStore>, interval: Duration, grace: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.blobs().collect_garbage(grace).await {
                Ok(report) => tracing::info!(
                    files = report.files,
                    stray_chunks = report.stray_chunks,
                    "garbage collected"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection failed; retrying at the next interval")
                }
            }
        }
    });
}

/// Runs `sweep` every `every` for as long as the service lives (the task holds it only while a sweep runs), logging
/// what it removed (`what`) and its failures, which the next round retries.
fn spawn_sweep<F>(service: &Arc<RepositoryService>, every: Duration, what: &'static str, sweep: F)
where
    F: Fn(Arc<RepositoryService>) -> BoxFuture<'static, Result<u64, ServiceError>> + Send + 'static,
{
    let service = Arc::downgrade(service);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(service) = service.upgrade() else {
                return;
            };
            // A fault of ours in one round (a panic) is logged and the next round runs: housekeeping must not
            // stop for good behind a healthy `/healthz`.
            let round = std::panic::AssertUnwindSafe(sweep(service));
            match futures_util::FutureExt::catch_unwind(round).await {
                Ok(Ok(0)) => {}
                Ok(Ok(count)) => tracing::info!(count, "{what}"),
                Ok(Err(e)) => tracing::warn!(error = %e, "{what} failed; retrying"),
                Err(_) => tracing::error!("{what} panicked; the next round runs as usual"),
            }
        }
    });
}

/// The service's housekeeping: the change feed's retention and the webhook deliveries' every sweep interval,
/// expired upload sessions a few times per time-to-live (at least every minute, at most every second).
fn spawn_sweeps(service: &Arc<RepositoryService>, config: &Config) {
    let every = config.events.sweep_interval.max(Duration::from_secs(1));
    let retention = config.events.retention;
    spawn_sweep(
        service,
        every,
        "removed expired change-feed events",
        move |s| Box::pin(async move { s.expire_events(&retention).await }),
    );
    spawn_sweep(service, every, "removed pruned webhook deliveries", |s| {
        Box::pin(async move { s.prune_deliveries().await })
    });
    let uploads =
        (service.upload_session_ttl() / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    spawn_sweep(service, uploads, "removed expired upload sessions", |s| {
        Box::pin(async move { s.expire_uploads().await })
    });
    // Reads ignore expired reports already: the sweep only keeps the table small.
    let devices =
        (service.device_report_ttl() / 4).clamp(Duration::from_secs(1), Duration::from_secs(300));
    spawn_sweep(service, devices, "removed expired device reports", |s| {
        Box::pin(async move { s.expire_device_reports().await })
    });
    let tick = config.rollout_tick.max(Duration::from_millis(100));
    spawn_sweep(service, tick, "stepped rollouts", |s| {
        Box::pin(async move { s.tick_rollouts().await })
    });
}

/// How the server accepts, keeps and stops connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub connections: ConnectionLimits,
    /// How long in-flight requests may run after shutdown begins.
    pub grace: Duration,
}

impl ServeOptions {
    /// The options the configuration names; without a connection limit, one that fits the process's
    /// file-descriptor limit now.
    pub fn new(config: &crate::config::Connections) -> Self {
        Self {
            connections: ConnectionLimits {
                max_connections: config
                    .max_connections
                    .unwrap_or_else(|| connections::max_connections_for(connections::fd_limit()))
                    .max(1),
                header_read_timeout: config.header_read_timeout.max(Duration::from_secs(1)),
                send_idle_timeout: config.send_idle_timeout.max(Duration::from_secs(1)),
                connection_threads: config.connection_threads.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |cores| cores.get())
                }),
            },
            grace: config.shutdown_grace,
        }
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish for at most `options.grace`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let threads = match options.connections.connection_threads {
        0 => None,
        count => Some(Arc::new(
            ConnectionThreads::start(count).context("starting the connection threads")?,
        )),
    };
    let server = tokio::spawn(connections::accept_loop(
        listener,
        app,
        options.connections,
        threads.clone(),
        async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        },
    ));
    let grace = options.grace;
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        result = server => result.context("server task"),
        () = deadline => {
            tracing::warn!(?grace, "in-flight requests outlived the shutdown grace period");
            Ok(())
        }
    };
    // The accept loop has ended and dropped its share. Abandoned at the deadline, it still holds it: the threads
    // then stop when it ends (`ConnectionThreads`' drop), or with the process.
    if let Some(threads) = threads.and_then(|threads| Arc::try_unwrap(threads).ok()) {
        threads.stop().await;
    }
    served
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
}
