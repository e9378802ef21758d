//! `POST /graphql` (JSON or multipart) and `GET /graphql` (queries only).

use async_graphql::dataloader::DataLoader;
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{BatchRequest, BatchResponse, ErrorExtensionValues, Request, Value};
use async_graphql_axum::GraphQLResponse;
use axum::extract::{RawQuery, Request as HttpRequest, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::budget::RequestBudget;
use super::loader::ModelLoader;
use super::multipart::{self, MAX_OPERATIONS_BYTES};
use crate::api::AppState;
use crate::api::auth::Need;
use crate::api::error::ApiError;
use crate::api::error::log_if_server_fault;
use crate::api::limits::{Limits, alias_count, check_csrf, check_nesting, unreadable_body};
use crate::service::ServiceError;

/// Tells resolvers that need a write token beyond mutations (`webhooks`) whether the request has one.
fn with_write_access(mut batch: BatchRequest, write: bool) -> BatchRequest {
    for request in batch.iter_mut() {
        request.data.insert(super::webhooks::WriteAccess(write));
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
    let caller = Caller(state.tokens.label(request.headers()));
    let batch = if is_multipart(&request) {
        // Multipart requests carry uploads, which only mutations take: no byte of them is read without a write
        // token.
        if let Err(e) = state.tokens.check(request.headers(), Need::Write) {
            return e.into_graphql_response();
        }
        multipart::read(&state.service, &state.limits, request)
            .await
            .map(|batch| with_write_access(batch, true))
    } else {
        let headers = request.headers().clone();
        match read_json(request).await {
            Ok(batch) => {
                // What a client without the right to read sends is not even parsed.
                if let Err(e) = state.tokens.check(&headers, Need::Read) {
                    return e.into_graphql_response();
                }
                if let Err(e) = check_documents(&state.limits, &batch) {
                    return request_error(e);
                }
                let need = if batch.iter().any(is_mutation) {
                    Need::Write
                } else {
                    Need::Read
                };
                if let Err(e) = state.tokens.check(&headers, need) {
                    return e.into_graphql_response();
                }
                Ok(with_write_access(
                    batch,
                    state.tokens.check(&headers, Need::Write).is_ok(),
                ))
            }
            Err(e) => Err(e),
        }
    };
    match batch {
        Ok(batch) => execute(&state, batch, caller).await,
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
    if let Err(e) = state.tokens.check(&headers, Need::Read) {
        return e.into_graphql_response();
    }
    let request =
        match async_graphql::http::parse_query_string(query.as_deref().unwrap_or_default()) {
            Ok(request) => request,
            Err(e) => {
                return request_error(ServiceError::InvalidInput(format!("query string: {e}")));
            }
        };
    let write = state.tokens.check(&headers, Need::Write).is_ok();
    let batch = with_write_access(BatchRequest::Single(request), write);
    if let Err(e) = check_documents(&state.limits, &batch) {
        return request_error(e);
    }
    if batch.iter().any(is_mutation) {
        // A GET must not change anything: it can be triggered by a link or an <img> on another site.
        return request_error(ServiceError::InvalidInput(
            "mutations must be sent with POST".into(),
        ));
    }
    let caller = Caller(state.tokens.label(&headers));
    execute(&state, batch, caller).await
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

fn is_mutation(request: &Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false; // execution reports the syntax error
    };
    document
        .operations
        .iter()
        .any(|(_, operation)| operation.node.ty == OperationType::Mutation)
}

/// The label of the token that sent a request (`anonymous` without one): who made a change, for its records.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

async fn execute(state: &AppState, mut batch: BatchRequest, caller: Caller) -> Response {
    // async-graphql limits depth and complexity per operation; aliases, which multiply the work of one request, are
    // counted here over the whole batch, and the complexity budget is shared by it (`budget`).
    let mut aliases = 0;
    let mut names = Vec::new();
    for request in batch.iter() {
        match async_graphql::parser::parse_query(&request.query) {
            Ok(document) => {
                aliases += alias_count(&document);
                names.push(operation_name(request, &document));
            }
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
        // One loader per request: batching within a response, no cache shared between clients.
        let loader = DataLoader::new(
            ModelLoader {
                service: state.service.clone(),
            },
            tokio::spawn,
        );
        request.data.insert(loader);
        request.data.insert(budget.clone());
        request.data.insert(caller.clone());
    }
    let operation = match (&batch, names.as_slice()) {
        (BatchRequest::Single(_), [name]) => name.clone(),
        _ => "batch".into(),
    };
    let started = std::time::Instant::now();
    let mut response = state.schema.execute_batch(batch).await;
    label_uncoded_errors(&mut response);
    record(
        state,
        &operation,
        &response,
        started.elapsed().as_secs_f64(),
    );
    let mut http = GraphQLResponse::from(response).into_response();
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

/// Errors raised by async-graphql itself (syntax, validation, variable coercion) are the client's; give them a code
/// too, so that every error a client sees has `extensions.code`.
fn label_uncoded_errors(response: &mut BatchResponse) {
    let responses: Vec<&mut async_graphql::Response> = match response {
        BatchResponse::Single(r) => vec![r],
        BatchResponse::Batch(rs) => rs.iter_mut().collect(),
    };
    for r in responses {
        for error in &mut r.errors {
            let extensions = error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default);
            if extensions.get("code").is_none() {
                extensions.set("code", Value::from("INVALID_INPUT"));
            }
        }
    }
}
