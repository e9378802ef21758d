//! Wiring: store -> service -> HTTP application, and serving with graceful shutdown.

mod connections;
mod send_idle;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;

use crate::api::auth::Tokens;
use crate::api::limits::Limits;
use crate::api::{self, ApiConfig, Links};
use crate::cli::{ServeArgs, StoreKind};
use crate::service::{RepositoryService, ServiceError};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::mongodb::{MongoConfig, MongoStore};

pub use self::connections::{ConnectionLimits, raise_fd_limit};

mod mirror;
pub use self::mirror::{load_device, mirror_config};

/// Opens the store the configuration names.
pub async fn open_store(args: &ServeArgs) -> anyhow::Result<Arc<dyn Store>> {
    match args.store {
        StoreKind::Embedded => {
            let store = EmbeddedStore::open(&args.data_dir).await.with_context(|| {
                format!("opening the embedded store in {}", args.data_dir.display())
            })?;
            Ok(Arc::new(store))
        }
        StoreKind::Mongodb => {
            let mongo = &args.mongodb;
            let config = MongoConfig {
                uri: mongo.mongodb_uri.clone(),
                database: mongo.mongodb_database.clone(),
                grid_database: mongo.mongodb_grid_database.clone(),
                bucket: mongo.mongodb_bucket.clone(),
                timeout: Duration::from_secs(mongo.mongodb_timeout_secs.max(1)),
            };
            let store =
                Arc::new(MongoStore::connect(&config).await.with_context(|| {
                    format!("connecting to MongoDB at {}", mongo.redacted_uri())
                })?);
            let backfill = store.clone();
            tokio::spawn(async move {
                match backfill.backfill_legacy_hashes().await {
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
            Ok(store)
        }
    }
}

/// Collects unreferenced files every `--gc-interval-secs`, for as long as the returned task runs.
pub fn spawn_periodic_gc(
    store: Arc<dyn Store>,
    args: &ServeArgs,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = Duration::from_secs(args.mongodb.gc_interval_secs);
    let grace = Duration::from_secs(args.mongodb.gc_grace_secs);
    if interval.is_zero() || args.store == StoreKind::Embedded {
        return None;
    }
    Some(tokio::spawn(async move {
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
    }))
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
            match sweep(service).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed {what}"),
                Err(e) => tracing::warn!(error = %e, "removing {what} failed; retrying"),
            }
        }
    });
}

/// The service's housekeeping: the change feed's retention and the webhook deliveries' every
/// `--events-retention-sweep-secs`, expired upload sessions a few times per time-to-live (at least every minute, at
/// most every second).
fn spawn_sweeps(service: &Arc<RepositoryService>, args: &ServeArgs) {
    let every = Duration::from_secs(args.events_retention_sweep_secs.max(1));
    let retention = args.events_retention;
    spawn_sweep(service, every, "expired change-feed events", move |s| {
        Box::pin(async move { s.expire_events(&retention).await })
    });
    spawn_sweep(service, every, "pruned webhook deliveries", |s| {
        Box::pin(async move { s.prune_deliveries().await })
    });
    let uploads =
        (service.upload_session_ttl() / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    spawn_sweep(service, uploads, "expired upload sessions", |s| {
        Box::pin(async move { s.expire_uploads().await })
    });
}

/// The HTTP application over `store`; fails when the configured tokens cannot be read.
pub fn app(store: Arc<dyn Store>, args: &ServeArgs) -> anyhow::Result<axum::Router> {
    let mut service = RepositoryService::new(store.clone(), args.max_upload_size.as_u64())
        .with_webhooks(crate::service::webhooks::WebhookConfig {
            allow_private_networks: args.webhooks_allow_private_networks,
            max_webhooks: args.max_webhooks,
            cursor_save_interval: args.webhook_cursor_save_interval,
            delivery_max_age: args.webhook_delivery_retention.max_age,
            deliveries_kept: usize::try_from(args.webhook_delivery_retention.max_count)
                .unwrap_or(usize::MAX),
        })
        .with_immutable_files(args.immutable_files)
        .with_upload_session_ttl(args.upload_session_ttl)
        .with_max_upload_sessions(usize::try_from(args.max_upload_sessions).unwrap_or(usize::MAX))
        .with_max_upload_session_bytes(args.max_upload_session_bytes.map(|b| b.as_u64()));
    if let Some(config) = mirror_config(args)? {
        let status = crate::service::mirror::spawn(store, config)
            .context("starting the mirror's HTTP client")?;
        service = service.with_mirror(status);
    }
    let service = Arc::new(service);
    spawn_sweeps(&service, args);
    crate::service::webhooks::spawn_dispatcher(&service);
    Ok(api::router(
        service,
        ApiConfig {
            links: Links {
                public_url: args.public_url.clone(),
            },
            tokens: tokens(args)?,
            limits: Limits {
                max_depth: args.graphql_max_depth,
                max_complexity: args.graphql_max_complexity,
                max_aliases: args.graphql_max_aliases,
                max_batch: args.graphql_max_batch,
                max_files: args.graphql_max_files,
                introspection: args.graphql_introspection,
                csrf_prevention: args.csrf_prevention,
                request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
                body_idle_timeout: Duration::from_secs(args.body_idle_timeout_secs.max(1)),
                cors_origins: args
                    .cors_allowed_origins
                    .iter()
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
                ws_init_timeout: Duration::from_secs(args.ws_init_timeout_secs.max(1)),
                // A WebSocket that runs nothing is an idle keep-alive connection by another name.
                ws_idle_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
                max_subscriptions_per_connection: args.max_subscriptions_per_connection.max(1),
                max_subscriptions_per_token: args.max_subscriptions_per_token.max(1),
            },
        },
    ))
}

/// The bearer tokens the configuration names.
pub fn tokens(args: &ServeArgs) -> anyhow::Result<Tokens> {
    let secrets =
        |list: &[crate::cli::Secret]| list.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
    Tokens::new(
        &secrets(&args.read_tokens),
        &secrets(&args.write_tokens),
        args.tokens_file.as_deref(),
        args.public_reads,
    )
}

/// How the server accepts, keeps and stops connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub connections: ConnectionLimits,
    /// How long in-flight requests may run after shutdown begins.
    pub grace: Duration,
}

impl ServeOptions {
    /// The options the configuration names; without `--max-connections`, a limit that fits the process's
    /// file-descriptor limit.
    pub fn from_args(args: &ServeArgs) -> Self {
        Self {
            connections: ConnectionLimits {
                max_connections: args
                    .max_connections
                    .unwrap_or_else(|| connections::max_connections_for(connections::fd_limit()))
                    .max(1),
                header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
                send_idle_timeout: Duration::from_secs(args.send_idle_timeout_secs.max(1)),
            },
            grace: Duration::from_secs(args.shutdown_grace_secs),
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
    let server = tokio::spawn(connections::accept_loop(
        listener,
        app,
        options.connections,
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
    tokio::select! {
        result = server => result.context("server task")?,
        () = deadline => tracing::warn!(?grace, "in-flight requests outlived the shutdown grace period"),
    }
    Ok(())
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
