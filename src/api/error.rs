//! The one place where errors become HTTP statuses, JSON bodies and GraphQL error codes.

use async_graphql::ErrorExtensions;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::DomainError;
use crate::service::ServiceError;

/// What an HTTP handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    Service(ServiceError),
    /// A malformed path or body: 400.
    BadRequest(String),
    /// A request that is well-formed but misses or mistypes a parameter: 422, like the original FastAPI service.
    Unprocessable(String),
    /// A `Range` that selects nothing of a file of `size` bytes: 416.
    RangeNotSatisfiable {
        size: u64,
    },
    NoRoute,
    MethodNotAllowed,
    /// A REST request body that is not the JSON the route takes: 422 with FastAPI's `detail` list.
    InvalidBody(String),
    /// A request body of a type the route does not take: 415.
    UnsupportedMediaType(String),
    /// The request took longer than the configured limit: 503, the client may retry.
    Timeout(std::time::Duration),
    /// No valid bearer token where one is needed: 401.
    Unauthenticated(String),
    /// A valid token that does not allow this: 403.
    Forbidden(String),
    /// A precondition of the protocol is not met (a tus request without `Tus-Resumable: 1.0.0`): 412.
    PreconditionFailed(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Service(e)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Service(e.into())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        use axum::extract::rejection::BytesRejection;
        match &e {
            BytesRejection::FailedToBufferBody(inner) if is_body_timeout(inner) => {
                ApiError::Service(ServiceError::RequestTimeout(
                    "the request body stalled for longer than allowed".into(),
                ))
            }
            _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::Service(ServiceError::BodyTooLarge(format!(
                    "the request body is too large: {}",
                    e.body_text()
                )))
            }
            _ => ApiError::BadRequest(e.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::Unprocessable(e.body_text())
    }
}

/// The machine-readable code of a service error: `extensions.code` in GraphQL, `code` in REST bodies.
pub fn error_code(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::NotFound(_) => "NOT_FOUND",
        ServiceError::AlreadyExists(_) => "ALREADY_EXISTS",
        ServiceError::Conflict(_) | ServiceError::Stale { .. } => "CONFLICT",
        ServiceError::Immutable(_) => "IMMUTABLE",
        ServiceError::InvalidInput(_) => "INVALID_INPUT",
        ServiceError::ChecksumMismatch(_) => "CHECKSUM_MISMATCH",
        ServiceError::PayloadTooLarge { .. } | ServiceError::BodyTooLarge(_) => "PAYLOAD_TOO_LARGE",
        ServiceError::RequestTimeout(_) => "REQUEST_TIMEOUT",
        ServiceError::EventsExpired(_) => "EVENTS_EXPIRED",
        ServiceError::TooManyUploadSessions(_) => "TOO_MANY_UPLOAD_SESSIONS",
        ServiceError::EventsAhead(_) => "EVENTS_AHEAD",
        ServiceError::ReadOnlyMirror(_) => "READ_ONLY_MIRROR",
        ServiceError::Unsigned(_) | ServiceError::UnsignedVersion(_) => "UNSIGNED",
        ServiceError::LimitExceeded(_) => "LIMIT_EXCEEDED",
        ServiceError::InUse { .. } => "IN_USE",
        ServiceError::RolloutActive(_) => "ROLLOUT_ACTIVE",
        ServiceError::RolloutFinished(_) => "ROLLOUT_FINISHED",
        ServiceError::Unavailable(_) => "UNAVAILABLE",
        ServiceError::Internal(_) => "INTERNAL",
    }
}

pub fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        // Only `If-Match` (REST) states a revision; GraphQL answers with the code.
        ServiceError::Stale { .. } => StatusCode::PRECONDITION_FAILED,
        // A cap is a conflict with what the server holds: removing something first makes room.
        ServiceError::AlreadyExists(_)
        | ServiceError::Conflict(_)
        | ServiceError::Immutable(_)
        | ServiceError::LimitExceeded(_)
        | ServiceError::InUse { .. }
        | ServiceError::RolloutActive(_)
        | ServiceError::RolloutFinished(_) => StatusCode::CONFLICT,
        ServiceError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        // The tus checksum extension's own status.
        ServiceError::ChecksumMismatch(_) => {
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
        }
        ServiceError::PayloadTooLarge { .. } | ServiceError::BodyTooLarge(_) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ServiceError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        ServiceError::EventsExpired(_) => StatusCode::GONE,
        ServiceError::TooManyUploadSessions(_) => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::EventsAhead(_) => StatusCode::CONFLICT,
        ServiceError::ReadOnlyMirror(_) | ServiceError::Unsigned(_) => StatusCode::FORBIDDEN,
        ServiceError::UnsignedVersion(_) => StatusCode::CONFLICT,
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Server faults are logged once, here, with their cause; clients see only the public message.
pub fn log_if_server_fault(e: &ServiceError) {
    match e {
        ServiceError::Internal(source) => tracing::error!(error = %source, "internal error"),
        ServiceError::Unavailable(source) => tracing::warn!(error = %source, "storage unavailable"),
        _ => {}
    }
}

/// A service error as a GraphQL error with `extensions.code`.
pub fn graphql_error(e: &ServiceError) -> async_graphql::Error {
    log_if_server_fault(e);
    let code = error_code(e);
    let current = match e {
        ServiceError::Stale { current, .. } => Some(*current),
        _ => None,
    };
    let devices = match e {
        ServiceError::InUse { devices, .. } => Some(*devices),
        _ => None,
    };
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
        ext.set("code", code);
        // An in-use refusal says how many live devices run it.
        if let Some(devices) = devices {
            ext.set("devices", devices);
        }
        // A stale write says where the component is now, so a client can show both sides and retry.
        if let Some(current) = current {
            ext.set("currentRevision", current);
        }
    })
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

/// Whether an error of reading a request body comes from a body limit (axum's `DefaultBodyLimit`, `to_bytes`).
pub fn is_body_too_long(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// A request body that could not be read: the client stalled (408), sent more than the route takes (413), or sent
/// something unreadable.
pub fn unreadable_body<E: std::error::Error + 'static>(e: &E, what: String) -> ServiceError {
    if is_body_timeout(e) {
        ServiceError::RequestTimeout(format!(
            "the request body stalled for longer than allowed: {what}"
        ))
    } else if is_body_too_long(e) {
        ServiceError::BodyTooLarge(what)
    } else {
        ServiceError::InvalidInput(what)
    }
}

/// `.gql()` turns our errors into GraphQL errors with a code. (A bare `?` would also compile, through
/// async-graphql's blanket conversion, but would lose the code; resolvers always go through here.)
pub trait GqlResultExt<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResultExt<T> for Result<T, ServiceError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| graphql_error(&e))
    }
}

impl<T> GqlResultExt<T> for Result<T, DomainError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| graphql_error(&e.into()))
    }
}

impl ApiError {
    /// Status, `code` and message: the one mapping both response shapes use.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Service(e) => (status_of(e), error_code(e), e.to_string()),
            ApiError::BadRequest(msg) => (StatusCode::BAD_REQUEST, "INVALID_INPUT", msg.clone()),
            ApiError::Unprocessable(msg) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_INPUT",
                msg.clone(),
            ),
            ApiError::RangeNotSatisfiable { size } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_NOT_SATISFIABLE",
                format!("the requested range is not within the file's {size} bytes"),
            ),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found".to_owned()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method Not Allowed".to_owned(),
            ),
            ApiError::InvalidBody(msg) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_INPUT",
                format!("the request body is not valid: {msg}"),
            ),
            ApiError::UnsupportedMediaType(msg) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                msg.clone(),
            ),
            ApiError::Timeout(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                format!("the request took longer than {} s", limit.as_secs()),
            ),
            ApiError::Unauthenticated(msg) => {
                (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", msg.clone())
            }
            ApiError::Forbidden(msg) => (StatusCode::FORBIDDEN, "FORBIDDEN", msg.clone()),
            ApiError::PreconditionFailed(msg) => (
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED",
                msg.clone(),
            ),
        }
    }

    /// The error as a GraphQL response (`errors[].extensions.code`), for requests refused before execution.
    pub fn into_graphql_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
        let mut response = (status, Json(body)).into_response();
        self.add_headers(&mut response);
        response
    }

    /// The error as a GraphQL error of a whole request (no path), refused before execution. It keeps itself as the
    /// error's source, so that the HTTP transport can answer with its status and headers (`http_refusal`).
    pub fn into_server_error(self) -> async_graphql::ServerError {
        if let ApiError::Service(e) = &self {
            log_if_server_fault(e);
        }
        let (_, code, message) = self.parts();
        let mut error = async_graphql::ServerError::new(message, None);
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", code);
        error.extensions = Some(extensions);
        error.source = Some(std::sync::Arc::new(self));
        error
    }

    /// The status and headers of a GraphQL response that a guard refused as a whole (no data), if it was.
    pub fn refusal_of(response: &async_graphql::Response) -> Option<(StatusCode, HeaderMap)> {
        if !matches!(response.data, async_graphql::Value::Null) {
            return None;
        }
        let refusal = response.errors.iter().find_map(|error| {
            error
                .source
                .as_ref()
                .and_then(|source| source.downcast_ref::<ApiError>())
        })?;
        let mut template = Response::default();
        refusal.add_headers(&mut template);
        Some((refusal.parts().0, template.headers().clone()))
    }

    fn add_headers(&self, response: &mut Response) {
        if let ApiError::Unauthenticated(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RangeNotSatisfiable { size } = self {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Service(e) = &self {
            log_if_server_fault(e);
        }
        let (status, code, detail) = self.parts();
        // `detail` is the original FastAPI service's error field, which existing clients print; for invalid
        // bodies FastAPI gave a list of problems.
        let detail = match &self {
            ApiError::InvalidBody(_) => {
                json!([{ "loc": ["body"], "msg": detail, "type": "value_error" }])
            }
            _ => json!(detail),
        };
        let mut body = json!({ "detail": detail, "code": code });
        if let ApiError::Service(ServiceError::InUse { devices, .. }) = &self {
            body["devices"] = json!(devices);
        }
        let mut response = (status, Json(body)).into_response();
        self.add_headers(&mut response);
        if let ApiError::Service(ServiceError::Unavailable(_) | ServiceError::Internal(_)) = &self {
            response
                .extensions_mut()
                .insert(crate::api::metrics::StoreFault(code));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// A compare-and-set that keeps losing to concurrent writers is the client's to retry, never a fault of ours.
    #[test]
    fn exhausted_update_retries_are_a_conflict() {
        let e = ServiceError::from(StoreError::Contended(
            "service s kept changing under 16 update attempts; try again".into(),
        ));
        assert_eq!(status_of(&e), StatusCode::CONFLICT);
        assert_eq!(error_code(&e), "CONFLICT");
        let response = ApiError::Service(e).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(
            response
                .extensions()
                .get::<crate::api::metrics::StoreFault>()
                .is_none()
        );
    }
}
