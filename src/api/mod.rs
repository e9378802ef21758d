//! Transports: GraphQL, the REST routes of the original service, health checks, and the pages for people (the
//! playground, the web catalogue, the REST API's explorer).

pub mod auth;
mod body;
mod download;
pub mod error;
pub mod graphql;
pub mod headers;
mod keepalive;
pub mod layers;
pub mod lease;
pub mod limits;
pub mod metrics;
mod oci;
mod playground;
mod rest;
mod sse;
pub mod state;
mod tus;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use self::error::ApiError;
pub use self::state::{AppState, Links};
use crate::service::RepositoryService;

/// How the HTTP layer is set up.
pub struct ApiConfig {
    pub links: Links,
    pub tokens: auth::Tokens,
    pub limits: limits::Limits,
}

/// The whole HTTP application.
pub fn router(service: Arc<RepositoryService>, config: ApiConfig) -> Router {
    let ApiConfig {
        links,
        tokens,
        limits,
    } = config;
    let metrics = Arc::new(metrics::Metrics::new());
    let oci_routes = oci::routes(links.clone());
    let schema = graphql::schema(service.clone(), links.clone(), &limits, metrics.clone());
    let cors = layers::cors(&limits.cors_origins);
    let (request_timeout, body_idle_timeout) = (limits.request_timeout, limits.body_idle_timeout);
    let state = AppState {
        service,
        schema,
        subscriptions: graphql::OperationCounts::new(limits.max_subscriptions_per_token),
        feeds: Arc::default(),
        tokens: tokens.clone(),
        limits: Arc::new(limits),
        metrics: metrics.clone(),
        links,
    };
    let router = Router::new()
        .route(
            "/graphql",
            // Multipart uploads are limited per file by the service while they stream, not by a body limit.
            get(graphql::graphql_ws)
                .post(graphql::graphql_post)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The GraphQL handlers check tokens themselves: what an operation needs is known only once it is read.
        .merge(
            rest::routes()
                .merge(sse::routes())
                .layer(axum::middleware::from_fn_with_state(
                    tokens,
                    auth::rest_guard,
                )),
        )
        // Resumable uploads check their tokens themselves: every request of a session needs a write token.
        .merge(tus::routes())
        // The OCI distribution API checks tokens itself: its refusals carry a registry's challenge.
        .merge(oci_routes)
        .merge(playground::routes())
        .merge(ui::routes())
        .merge(rest::documentation())
        .route("/metrics", get(metrics::endpoint))
        // Per matched route, so that the label is the route's template.
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            layers::request_timeout,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_idle_timeout,
        ));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    let router = router
        .layer(axum::middleware::map_response(headers::secure))
        .layer(axum::middleware::from_fn(layers::close_if_body_unread));
    router.layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // An event stream's body enters its span on every poll: at 10,000 subscribers that was 4 % of a
                    // delivery's CPU, so event streams get a span only when debug logging asks for one.
                    if request.uri().path() == sse::PATH {
                        return tracing::debug_span!("request", method = %request.method(), uri = %request.uri(), request_id);
                    }
                    tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
}

/// Alive: the process answers.
async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Ready: the store answers too.
async fn readyz(State(state): State<AppState>) -> Response {
    let backend = state.service.backend();
    match state.service.ready().await {
        Ok(()) => axum::Json(json!({ "status": "ready", "backend": backend })).into_response(),
        Err(e) => {
            error::log_if_server_fault(&e);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(
                    json!({ "status": "unavailable", "backend": backend, "detail": e.to_string() }),
                ),
            )
                .into_response()
        }
    }
}
