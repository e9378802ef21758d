//! `POST /graphql` (JSON or multipart) and `GET /graphql` (queries only).

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{BatchRequest, BatchResponse, ErrorExtensionValues, Request, Value};
use async_graphql_axum::GraphQLResponse;
use axum::extract::{RawQuery, Request as HttpRequest, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::budget::RequestBudget;
use super::document::{alias_count, check_nesting};
use super::guard::need_of;
use super::multipart::{self, MAX_OPERATIONS_BYTES};
use crate::api::auth::{Access, Need};
use crate::api::error::ApiError;
use crate::api::error::log_if_server_fault;
use crate::api::error::unreadable_body;
use crate::api::limits::{Limits, check_csrf};
use crate::api::state::AppState;
use crate::service::ServiceError;

/// Hands every request of a batch its sender's access, which the guards inside execution check per operation.
fn with_access(mut batch: BatchRequest, access: &Access) -> BatchRequest {
    for request in batch.iter_mut() {
        request.data.insert(access.clone());
    }
    batch
}

/// A request that could not even be read answers with a GraphQL-shaped error and a 4xx status.
fn request_error(e: ServiceError) -> Response {
    log_if_server_fault(&e);
    ApiError::Service(e).into_graphql_response()
}

fn is_multipart(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

pub async fn graphql_post(State(state): State<AppState>, request: HttpRequest) -> Response {
    if let Err(e) = check_csrf(&state.limits, request.headers(), request.method()) {
        return e.into_graphql_response();
    }
    let access = match state.tokens.access(request.headers()) {
        Ok(access) => access,
        Err(e) => return e.into_graphql_response(),
    };
    // Multipart requests carry uploads, which only mutations take: no byte of them is read without a write token;
    // and nothing a client without the right to read sends is read at all.
    let multipart = is_multipart(&request);
    let need = if multipart { Need::Write } else { Need::Read };
    if let Err(e) = access.allow(need) {
        return e.into_graphql_response();
    }
    let batch = if multipart {
        multipart::read(&state.service, &state.limits, request).await
    } else {
        match read_json(request).await {
            Ok(batch) => check_documents(&state.limits, &batch).map(|()| batch),
            Err(e) => Err(e),
        }
    };
    match batch {
        Ok(batch) => execute(&state, with_access(batch, &access), Writes::Allowed).await,
        Err(e) => request_error(e),
    }
}

async fn read_json(request: HttpRequest) -> Result<BatchRequest, ServiceError> {
    let bytes = axum::body::to_bytes(request.into_body(), MAX_OPERATIONS_BYTES)
        .await
        .map_err(|e| {
            unreadable_body(
                &e,
                format!(
                    "the request body is not a readable JSON document of at most {MAX_OPERATIONS_BYTES} bytes; files go in multipart requests"
                ),
            )
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ServiceError::InvalidInput(format!("the body is not a GraphQL request: {e}")))
}

pub async fn graphql_get(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = check_csrf(&state.limits, &headers, &axum::http::Method::GET) {
        return e.into_graphql_response();
    }
    let access = match state.tokens.access(&headers) {
        Ok(access) => access,
        Err(e) => return e.into_graphql_response(),
    };
    if let Err(e) = access.allow(Need::Read) {
        return e.into_graphql_response();
    }
    let request =
        match async_graphql::http::parse_query_string(query.as_deref().unwrap_or_default()) {
            Ok(request) => request,
            Err(e) => {
                return request_error(ServiceError::InvalidInput(format!("query string: {e}")));
            }
        };
    let batch = BatchRequest::Single(request);
    if let Err(e) = check_documents(&state.limits, &batch) {
        return request_error(e);
    }
    execute(&state, with_access(batch, &access), Writes::Refused).await
}

/// What is checked of a batch before any of its documents is parsed: its length, and the nesting of each document
/// (the parser recurses on it).
pub(super) fn check_documents(limits: &Limits, batch: &BatchRequest) -> Result<(), ServiceError> {
    if let BatchRequest::Batch(requests) = batch {
        if requests.len() > limits.max_batch {
            return Err(ServiceError::InvalidInput(format!(
                "the batch has {} operations; at most {} are allowed",
                requests.len(),
                limits.max_batch
            )));
        }
    }
    batch
        .iter()
        .try_for_each(|request| check_nesting(&request.query))
}

/// Whether a request may change anything: a GET must not (a link or an `<img>` on another site can send one).
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    Allowed,
    Refused,
}

async fn execute(state: &AppState, mut batch: BatchRequest, writes: Writes) -> Response {
    // Each document is parsed once, here, and execution reuses it. The guards hold each operation to the limits; a
    // batch is also held to them as a whole: its aliases, which multiply the work of one request, are counted before
    // any of it runs, and the complexity budget is shared by its operations (`budget`).
    let mut aliases = 0usize;
    let mut names = Vec::new();
    for request in batch.iter_mut() {
        match async_graphql::parser::parse_query(&request.query) {
            Ok(document) => {
                if writes == Writes::Refused && need_of(&document) == Need::Write {
                    return request_error(ServiceError::InvalidInput(
                        "mutations must be sent with POST".into(),
                    ));
                }
                aliases = aliases.saturating_add(alias_count(&document));
                names.push(operation_name(request, &document));
                request.set_parsed_query(document);
            }
            // Execution reports the syntax error.
            Err(_) => names.push("invalid".to_string()),
        }
    }
    if aliases > state.limits.max_aliases {
        // A validation error, answered like the depth and complexity limits: 200 with `errors`.
        let mut error = async_graphql::ServerError::new(
            format!(
                "the request has {aliases} aliases; at most {} are allowed",
                state.limits.max_aliases
            ),
            None,
        );
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", "INVALID_INPUT");
        error.extensions = Some(extensions);
        let response = async_graphql::Response::from_errors(vec![error]);
        return GraphQLResponse::from(response).into_response();
    }
    let budget = RequestBudget::new(state.limits.max_complexity);
    for request in batch.iter_mut() {
        request.data.insert(budget.clone());
    }
    let operation = match (&batch, names.as_slice()) {
        (BatchRequest::Single(_), [name]) => name.clone(),
        _ => "batch".into(),
    };
    let started = std::time::Instant::now();
    let response = state.schema.execute_batch(batch).await;
    record(
        state,
        &operation,
        &response,
        started.elapsed().as_secs_f64(),
    );
    // A single operation that the guards refused as a whole answers with the refusal's status, as HTTP clients
    // expect (401, 403); a batch answers 200 with each operation's outcome.
    let refusal = match &response {
        BatchResponse::Single(single) => ApiError::refusal_of(single),
        BatchResponse::Batch(_) => None,
    };
    let mut http = GraphQLResponse::from(response).into_response();
    if let Some((status, headers)) = refusal {
        *http.status_mut() = status;
        http.headers_mut().extend(headers);
    }
    if http.status() == StatusCode::OK {
        http.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    http
}

/// The operation's name for metrics: one the document defines, never any name the client makes up (it would grow
/// the label set without bound); `Metrics` bounds how many distinct names it keeps.
fn operation_name(request: &Request, document: &ExecutableDocument) -> String {
    use async_graphql::parser::types::DocumentOperations;
    match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Multiple(operations), Some(name)) => {
            if operations.keys().any(|defined| defined.as_str() == name) {
                name.to_string()
            } else {
                "unknown".into()
            }
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => operations
            .keys()
            .next()
            .map_or_else(|| "anonymous".into(), |name| name.to_string()),
        (DocumentOperations::Multiple(_), None) => "unknown".into(),
        (DocumentOperations::Single(_), _) => "anonymous".into(),
    }
}

/// Counts the operation by its outcome, and the errors the store caused.
fn record(state: &AppState, operation: &str, response: &BatchResponse, seconds: f64) {
    let responses: Vec<&async_graphql::Response> = match response {
        BatchResponse::Single(r) => vec![r],
        BatchResponse::Batch(rs) => rs.iter().collect(),
    };
    let code = |error: &async_graphql::ServerError| {
        error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
    };
    let mut outcome = "ok".to_string();
    for error in responses.iter().flat_map(|r| r.errors.iter()) {
        let code = code(error).unwrap_or_else(|| "INTERNAL".into());
        if outcome == "ok" {
            outcome = code.clone();
        }
        if code == "UNAVAILABLE" || code == "INTERNAL" {
            state.metrics.store_error(if code == "INTERNAL" {
                "INTERNAL"
            } else {
                "UNAVAILABLE"
            });
        }
    }
    state.metrics.operation(operation, &outcome, seconds);
}
