//! The GraphiQL playground, served from assets embedded in the binary: no CDN, because deployments run on
//! air-gapped edge clusters. `playground/README.md` says how the assets are built from the npm registry.

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;

macro_rules! asset {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/playground/", $path))
    };
}

const PAGE: &[u8] = asset!("index.html");
const SETUP: &[u8] = asset!("playground.js");
const STYLE: &[u8] = asset!("playground.css");

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

pub(super) const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The assets change only with the binary: a day of caching spares edge links, and a new version is picked up
/// the day after an upgrade at the latest (the page itself is never cached).
const ASSET_CACHE: &str = "public, max-age=86400";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/playground",
            get(|| async { page(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/playground/playground.js",
            get(|| async { page(SETUP, JAVASCRIPT) }),
        )
        .route(
            "/playground/playground.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/playground/assets/{name}", get(asset))
}

/// A page or a file of ours, revalidated on every load.
pub(super) fn page(body: &'static [u8], content_type: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    super::headers::as_page(&mut response);
    response
}

/// A vendored file, cached for a day.
pub(super) fn vendored(body: &'static [u8], content_type: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        body,
    )
        .into_response();
    super::headers::as_page(&mut response);
    response
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or(ApiError::NoRoute)?;
    Ok(vendored(body, content_type))
}
