//! The GraphiQL playground, served from assets embedded in the binary: no CDN, because deployments run on
//! air-gapped edge clusters. `playground/README.md` says how the assets are built from the npm registry.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::error::ApiError;

macro_rules! asset {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/playground/", $path))
    };
}

const PAGE: &[u8] = asset!("index.html");
const SETUP: &[u8] = asset!("playground.js");

/// Name, content type and bytes of every vendored asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        JAVASCRIPT,
        asset!("assets/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        asset!("assets/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        JAVASCRIPT,
        asset!("assets/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        JAVASCRIPT,
        asset!("assets/react-dom.production.min.js"),
    ),
];

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The assets change only with the binary: a day of caching spares edge links, and a new version is picked up
/// the day after an upgrade at the latest (the page itself is never cached).
const ASSET_CACHE: &str = "public, max-age=86400";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(root))
        .route(
            "/playground",
            get(|| async { page(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/playground/playground.js",
            get(|| async { page(SETUP, JAVASCRIPT) }),
        )
        .route("/playground/assets/{name}", get(asset))
}

fn page(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or(ApiError::NoRoute)?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        *body,
    )
        .into_response())
}

/// A browser at the root gets the playground; programs get a small JSON map of the API.
async fn root(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        return Redirect::temporary("/playground").into_response();
    }
    let mut response = (
        StatusCode::OK,
        axum::Json(serde_json::json!({
            "name": "component-repository",
            "version": env!("CARGO_PKG_VERSION"),
            "graphql": "/graphql",
            "playground": "/playground",
            "health": "/healthz",
            "ready": "/readyz",
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}
