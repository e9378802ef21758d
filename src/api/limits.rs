//! What keeps one client from hurting the others or a browser from being used against the server: the limits every
//! transport applies (`Limits`), and the checks that keep other websites' pages from sending requests through a
//! visitor's browser (CSRF prevention, WebSocket origins). GraphQL's document checks are in `graphql::document`,
//! the time limit and CORS layers in `layers`.

use std::time::Duration;

use axum::http::{HeaderMap, Method, header};

use super::error::ApiError;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Deepest selection a GraphQL operation may have.
    pub max_depth: usize,
    /// Largest complexity (fields selected) of a GraphQL request, all operations of a batch together.
    pub max_complexity: usize,
    /// Most aliased fields in one GraphQL request (all operations of a batch together): aliases multiply the work
    /// of one request.
    pub max_aliases: usize,
    /// Most operations in one GraphQL batch (a JSON array of requests).
    pub max_batch: usize,
    /// Most files in one GraphQL multipart request.
    pub max_files: usize,
    /// Whether the schema can be introspected (GraphiQL and code generators need it).
    pub introspection: bool,
    /// Whether GraphQL requests a browser could send cross-site without a preflight (GET, multipart) must carry a
    /// header that forces one.
    pub csrf_prevention: bool,
    /// Longest time to answer a request that is not an upload (downloads then stream without limit).
    pub request_timeout: Duration,
    /// Longest pause in the middle of a request body (slow clients hold connections and staging space).
    pub body_idle_timeout: Duration,
    /// Origins allowed to call the API from a browser; empty for none (no CORS headers), `*` for any.
    pub cors_origins: Vec<String>,
    /// How long a GraphQL WebSocket may take to send `connection_init`.
    pub ws_init_timeout: Duration,
    /// How long a GraphQL WebSocket that runs no operation may stay silent before it is closed.
    pub ws_idle_timeout: Duration,
    /// Most operations running at once on one GraphQL WebSocket.
    pub max_subscriptions_per_connection: usize,
    /// Most GraphQL WebSocket operations running at once for one token (or for all clients without one).
    pub max_subscriptions_per_token: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 16,
            max_complexity: 5_000,
            max_aliases: 30,
            max_batch: 100,
            max_files: 10,
            introspection: true,
            csrf_prevention: true,
            request_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            ws_init_timeout: Duration::from_secs(10),
            ws_idle_timeout: Duration::from_secs(20),
            max_subscriptions_per_connection: 100,
            max_subscriptions_per_token: 20_000,
        }
    }
}

/// Headers whose presence proves a request was preflighted (Apollo's and the GraphQL multipart request spec's
/// convention): a browser sends them cross-site only after the server agreed.
const PREFLIGHT_HEADERS: [&str; 3] = [
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "graphql-require-preflight",
];

/// Refuses a WebSocket that a page of another site opens (browsers open WebSockets cross-site without asking, and
/// a server without tokens would run that page's mutations): this server's own pages and the configured CORS
/// origins may connect; clients other than browsers send no `Origin`.
pub fn check_websocket_origin(limits: &Limits, headers: &HeaderMap) -> Result<(), ApiError> {
    if !limits.csrf_prevention {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same_site = origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(host));
    let configured = limits
        .cors_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin));
    if same_site || configured {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a page of {origin} may not open a WebSocket to this server; add the origin to \
             --cors-allowed-origins to allow it"
        )))
    }
}

/// Refuses a GraphQL request that a browser could have sent from another site without asking first.
pub fn check_csrf(limits: &Limits, headers: &HeaderMap, method: &Method) -> Result<(), ApiError> {
    if !limits.csrf_prevention {
        return Ok(());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let simple = method == Method::GET
        || content_type.is_empty()
        || [
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "text/plain",
        ]
        .iter()
        .any(|simple| content_type.trim_start().starts_with(simple));
    let preflighted = PREFLIGHT_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name));
    if simple && !preflighted {
        return Err(ApiError::BadRequest(
            "this request could have been sent by another website: send it with the header \
             `apollo-require-preflight: true` (or `x-apollo-operation-name`), or as JSON"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The parser itself survives the deepest document the check lets through, on a thread with less stack than
    /// a Tokio worker (2 MiB).

    #[test]
    fn simple_requests_need_a_preflight_header() {
        let limits = Limits::default();
        let mut headers = HeaderMap::new();
        assert!(check_csrf(&limits, &headers, &Method::GET).is_err());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(check_csrf(&limits, &headers, &Method::POST).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        assert!(check_csrf(&limits, &headers, &Method::POST).is_err());
        headers.insert("apollo-require-preflight", HeaderValue::from_static("true"));
        assert!(check_csrf(&limits, &headers, &Method::POST).is_ok());
    }
}
