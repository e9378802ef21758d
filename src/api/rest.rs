//! The REST routes of the original service that inference servers call: downloads and model metadata.

use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::download::download;
use super::error::ApiError;
use crate::domain::{Component, ComponentKey, Kind, Spec};

/// `axum::extract::Path` answering in our JSON error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

/// `axum::extract::Query` answering in our JSON error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct Query<T>(T);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/model/meta", get(model_meta))
        .route("/model/{name}/{version}", get(download_model))
        .route("/transformation/{id}", get(download_transformation))
        .route("/service/{id}", get(download_service))
        .route("/inferencer/{id}", get(download_inferencer))
}

async fn download_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(
        &state.service,
        ComponentKey::model(name, version)?,
        &headers,
    )
    .await
}

async fn download_by_id(
    state: AppState,
    kind: Kind,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(&state.service, ComponentKey::with_id(kind, id)?, &headers).await
}

async fn download_transformation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download_by_id(state, Kind::Transformation, id, headers).await
}

async fn download_service(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download_by_id(state, Kind::Service, id, headers).await
}

async fn download_inferencer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download_by_id(state, Kind::Inferencer, id, headers).await
}

#[derive(Deserialize)]
struct ModelMetaQuery {
    model_name: String,
    model_version: String,
}

/// `GET /model/meta?model_name=&model_version=`: the model object in the original's JSON shape; inference servers
/// read `["meta"]["library"]`.
async fn model_meta(
    State(state): State<AppState>,
    Query(query): Query<ModelMetaQuery>,
) -> Result<Response, ApiError> {
    let key = ComponentKey::model(query.model_name, query.model_version)?;
    let model = state.service.get(&key).await?;
    Ok(Json(original_model_json(&model)).into_response())
}

/// A model as the original service wrote it: `model_id` was the id of the stored binary, null before an upload.
pub fn original_model_json(model: &Component) -> serde_json::Value {
    let (ComponentKey::Model(key), Spec::Model(spec)) = (&model.key, &model.spec) else {
        return serde_json::Value::Null;
    };
    json!({
        "meta": { "library": spec.library, "description": spec.description },
        "model_name": key.name,
        "model_version": key.version,
        "model_id": model.file.as_ref().map(|f| f.blob_id.clone()),
    })
}
