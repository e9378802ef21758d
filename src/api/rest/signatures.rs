//! `POST` and `GET /{kind}/.../signatures`: attach a signature bundle (as `model_signing` writes it) to a file, and
//! list a file's signatures with their verdicts. `?platform=` (with `accelerator`, `accelerator_version`) names a
//! per-platform file.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::{Body, Path, Query};
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::domain::{ComponentKey, Kind, Platform, split_platform};
use crate::service::ServiceError;
use crate::service::signing::CheckedSignature;

/// The file a signature is for: the default file, or the variant of exactly this platform.
#[derive(Deserialize)]
pub(super) struct FileQuery {
    platform: Option<String>,
    accelerator: Option<String>,
    accelerator_version: Option<String>,
}

impl FileQuery {
    fn platform(&self) -> Result<Option<Platform>, ApiError> {
        let Some(text) = &self.platform else {
            if self.accelerator.is_some() || self.accelerator_version.is_some() {
                return Err(ApiError::BadRequest(
                    "accelerator: needs platform (such as platform=linux/amd64&accelerator=cuda)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let (os, arch, variant) = split_platform(text, "platform")?;
        Ok(Some(Platform::new(
            os,
            arch,
            variant,
            self.accelerator.as_deref(),
            self.accelerator_version.as_deref(),
        )?))
    }
}

/// A signature as REST shows it; `bundle` is the bundle exactly as it was sent, byte for byte.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureBody<'a> {
    id: &'a str,
    verified: bool,
    signer: Option<&'a str>,
    reason: Option<&'a str>,
    added_at: chrono::DateTime<chrono::Utc>,
    added_by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<&'a RawValue>,
}

impl<'a> SignatureBody<'a> {
    fn new(checked: &'a CheckedSignature, with_bundle: bool) -> Self {
        let s = &checked.signature;
        SignatureBody {
            id: &s.id,
            verified: checked.verdict.verified,
            signer: checked.verdict.signer.as_deref(),
            reason: checked.verdict.reason.as_deref(),
            added_at: s.added_at,
            added_by: &s.added_by,
            // Stored only after it parsed as a bundle, so it is JSON.
            bundle: with_bundle
                .then(|| serde_json::from_str::<&RawValue>(&s.bundle).ok())
                .flatten(),
        }
    }
}

async fn add(
    state: &AppState,
    key: ComponentKey,
    query: FileQuery,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let platform = query.platform()?;
    let bundle = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the bundle is not UTF-8 text".into()))?;
    let by = state.tokens.access(headers)?.caller;
    let (component, checked, added) = state
        .service
        .add_signature(&key, platform.clone(), bundle, &by)
        .await?;
    let mut value = serde_json::to_value(SignatureBody::new(&checked, false))
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    value["platform"] = json!(platform.map(|p| p.to_string()));
    value["revision"] = json!(component.revision);
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(value)).into_response())
}

async fn list(state: &AppState, key: ComponentKey, query: FileQuery) -> Result<Response, ApiError> {
    let platform = query.platform()?;
    let (file, signatures) = state.service.signatures(&key, platform.as_ref()).await?;
    #[derive(Serialize)]
    struct Listing<'a> {
        sha256: &'a str,
        platform: Option<String>,
        signatures: Vec<SignatureBody<'a>>,
    }
    Ok(Json(Listing {
        sha256: &file.sha256,
        platform: platform.map(|p| p.to_string()),
        signatures: signatures
            .iter()
            .map(|s| SignatureBody::new(s, true))
            .collect(),
    })
    .into_response())
}

pub(super) async fn add_to_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<FileQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    add(
        &state,
        ComponentKey::model(name, version)?,
        query,
        &headers,
        body,
    )
    .await
}

pub(super) async fn list_of_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<FileQuery>,
) -> Result<Response, ApiError> {
    list(&state, ComponentKey::model(name, version)?, query).await
}

pub(super) async fn add_by_id(
    state: State<AppState>,
    kind: Kind,
    Path(id): Path<String>,
    Query(query): Query<FileQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    add(
        &state,
        ComponentKey::with_id(kind, id)?,
        query,
        &headers,
        body,
    )
    .await
}

pub(super) async fn list_by_id(
    state: State<AppState>,
    kind: Kind,
    Path(id): Path<String>,
    Query(query): Query<FileQuery>,
) -> Result<Response, ApiError> {
    list(&state, ComponentKey::with_id(kind, id)?, query).await
}
