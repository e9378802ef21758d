//! What keeps one client from hurting the others or a browser from being used against the server: GraphQL nesting,
//! depth, complexity and alias limits, CSRF prevention, request timeouts and CORS.

use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use crate::service::ServiceError;

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

/// Counts aliased fields, fragments included once each.
pub fn alias_count(document: &ExecutableDocument) -> usize {
    fn count(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + count(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => count(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    document
        .operations
        .iter()
        .map(|(_, op)| count(&op.node.selection_set.node))
        .chain(
            document
                .fragments
                .values()
                .map(|fragment| count(&fragment.node.selection_set.node)),
        )
        .sum()
}

/// Deepest nesting of brackets (`[`, `{`, `(`) a GraphQL document may have. async-graphql's parser recurses once
/// per level, so a few thousand levels in a few kilobytes would overflow the stack: documents are measured before
/// they are parsed. Far above what the depth limit lets a real operation use.
pub const MAX_DOCUMENT_NESTING: usize = 64;

/// Refuses a GraphQL document that nests brackets deeper than [`MAX_DOCUMENT_NESTING`], without parsing it: a
/// linear scan that skips strings, block strings and comments, where brackets do not count.
pub fn check_nesting(document: &str) -> Result<(), ServiceError> {
    let bytes = document.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is the one escape of a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > MAX_DOCUMENT_NESTING {
                    return Err(ServiceError::InvalidInput(format!(
                        "the GraphQL document nests brackets more than {MAX_DOCUMENT_NESTING} levels deep"
                    )));
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Whether an error of reading a request body comes from the body idle timeout.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(error) = current {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// A request body's read error as an `io::Error` for the store: `TimedOut` when the client stalled.
pub fn body_io_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> std::io::Error {
    let kind = if is_body_timeout(&e) {
        std::io::ErrorKind::TimedOut
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, e)
}

/// A request body that could not be read: the client stalled (408), or it sent something unreadable.
pub fn unreadable_body<E: std::error::Error + 'static>(e: &E, what: String) -> ServiceError {
    if is_body_timeout(e) {
        ServiceError::RequestTimeout(format!(
            "the request body stalled for longer than allowed: {what}"
        ))
    } else {
        ServiceError::InvalidInput(what)
    }
}

/// A time limit for everything but uploads, whose length depends on the file (their bodies have the idle timeout).
pub async fn request_timeout(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    // PATCH: the appends of resumable uploads.
    let upload = request.method() == Method::PUT
        || request.method() == Method::PATCH
        || request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/"));
    if upload {
        return next.run(request).await;
    }
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    }
}

/// CORS for browser dashboards on the configured origins; none configured, no CORS headers at all.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::RANGE,
                header::IF_NONE_MATCH,
                header::IF_RANGE,
                header::HeaderName::from_static("apollo-require-preflight"),
                header::HeaderName::from_static("x-apollo-operation-name"),
                // Resumable (tus) uploads.
                header::HeaderName::from_static("tus-resumable"),
                header::HeaderName::from_static("upload-length"),
                header::HeaderName::from_static("upload-metadata"),
                header::HeaderName::from_static("upload-offset"),
                header::HeaderName::from_static("upload-checksum"),
            ])
            .expose_headers([
                header::ETAG,
                header::CONTENT_RANGE,
                header::CONTENT_DISPOSITION,
                header::HeaderName::from_static("x-request-id"),
                header::LOCATION,
                header::HeaderName::from_static("tus-resumable"),
                header::HeaderName::from_static("tus-version"),
                header::HeaderName::from_static("tus-max-size"),
                header::HeaderName::from_static("tus-extension"),
                header::HeaderName::from_static("upload-offset"),
                header::HeaderName::from_static("upload-length"),
                header::HeaderName::from_static("upload-expires"),
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_counted_in_operations_and_fragments() {
        let document = async_graphql::parser::parse_query(
            "{ a: services { totalCount } b: services { c: totalCount } ...F } fragment F on QueryRoot { d: models { totalCount } }",
        )
        .unwrap();
        assert_eq!(alias_count(&document), 4);
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        let deep = |open: &str, close: &str, n: usize| {
            format!(
                "{{ services(filter: {}) {{ totalCount }} }}",
                open.repeat(n) + &close.repeat(n)
            )
        };
        assert!(check_nesting(&deep("[", "]", 10)).is_ok());
        assert!(check_nesting(&deep("[", "]", 5_000)).is_err());
        assert!(check_nesting(&deep("{a: ", "}", 5_000)).is_err());
        // Brackets in strings, block strings and comments are text, not nesting.
        let text = "[".repeat(5_000);
        for quoted in [
            format!("\"{text}\\\"{text}\""),
            format!("\"\"\"{text}\\\"\"\"{text}\"\"\""),
            format!("# {text}\n"),
        ] {
            let document =
                format!("query {{ services(filter: {{ text: {quoted} }}) {{ totalCount }} }}");
            assert!(check_nesting(&document).is_ok(), "{document:.40}");
        }
        // An unterminated string or block string ends the scan without a panic.
        assert!(check_nesting("{ a(b: \"[[[").is_ok());
        assert!(check_nesting("{ a(b: \"\"\"[[[\\").is_ok());
    }

    /// The parser itself survives the deepest document the check lets through, on a thread with less stack than
    /// a Tokio worker (2 MiB).
    #[test]
    fn the_deepest_accepted_document_parses_on_a_small_stack() {
        let n = MAX_DOCUMENT_NESTING - 2;
        let document = format!("{{ a(b: {}1{}) }}", "[".repeat(n), "]".repeat(n));
        assert!(check_nesting(&document).is_ok());
        let parsed = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || async_graphql::parser::parse_query(&document).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(parsed);
    }

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
