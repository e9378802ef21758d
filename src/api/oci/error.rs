//! Errors of the OCI routes, in the distribution spec's shape: `{"errors":[{"code","message","detail"}]}` with its
//! codes, which OCI clients print and act on (a 401 with a challenge makes them fetch a token).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::error::{ApiError, error_code, log_if_server_fault, status_of};
use crate::service::ServiceError;

/// The spec's error codes, plus ours for what it has none for (a store fault, a range, a timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Code {
    BlobUnknown,
    BlobUploadUnknown,
    ManifestBlobUnknown,
    ManifestInvalid,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationNumberInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    NotFound,
    /// Not a spec code: the status and code of the service's own error.
    Other(StatusCode, &'static str),
}

impl Code {
    fn parts(self) -> (StatusCode, &'static str) {
        match self {
            Code::BlobUnknown => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            Code::BlobUploadUnknown => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            Code::ManifestBlobUnknown => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            Code::ManifestInvalid => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            Code::DigestInvalid => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            Code::ManifestUnknown => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            Code::NameInvalid => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            Code::NameUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            Code::PaginationNumberInvalid => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            Code::TagInvalid => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            Code::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Code::Denied => (StatusCode::FORBIDDEN, "DENIED"),
            Code::Unsupported => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::Other(status, code) => (status, code),
        }
    }
}

#[derive(Debug)]
pub struct OciError {
    code: Code,
    message: String,
    /// The `WWW-Authenticate` value of a 401.
    challenge: Option<String>,
    /// `Content-Range: bytes */<size>` of a 416.
    size: Option<u64>,
}

impl OciError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            challenge: None,
            size: None,
        }
    }

    pub fn with_challenge(mut self, challenge: String) -> Self {
        if self.code == Code::Unauthorized {
            self.challenge = Some(challenge);
        }
        self
    }

    /// A service error; `not_found` is the spec's code for what was not found on this route.
    pub fn service(e: ServiceError, not_found: Code) -> Self {
        log_if_server_fault(&e);
        let code = match &e {
            ServiceError::NotFound(_) => not_found,
            other => Code::Other(status_of(other), error_code(other)),
        };
        Self::new(code, e.to_string())
    }

    /// An error of the shared HTTP layer (auth, downloads).
    pub fn from_api(e: ApiError) -> Self {
        match e {
            ApiError::Service(e) => Self::service(e, Code::BlobUnknown),
            ApiError::Unauthenticated(message) => Self::new(Code::Unauthorized, message),
            ApiError::Forbidden(message) => Self::new(Code::Denied, message),
            ApiError::RangeNotSatisfiable { size } => Self {
                size: Some(size),
                ..Self::new(
                    Code::Other(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_NOT_SATISFIABLE"),
                    format!("the requested range is not within the blob's {size} bytes"),
                )
            },
            other => {
                let response = other.into_response();
                let status = response.status();
                Self::new(
                    Code::Other(status, "INVALID_INPUT"),
                    status.canonical_reason().unwrap_or("refused"),
                )
            }
        }
    }
}

impl From<ServiceError> for OciError {
    fn from(e: ServiceError) -> Self {
        Self::service(e, Code::NotFound)
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let (status, code) = self.code.parts();
        let body = json!({ "errors": [{ "code": code, "message": self.message, "detail": null }] });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(size) = self.size
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, value);
        }
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }
}
