//! Resumable uploads over the tus 1.0 protocol (<https://tus.io/protocols/resumable-upload>) at `/uploads`: core,
//! creation, termination, expiration and checksum (sha256). The protocol is small and no maintained crate serves
//! it on axum over our stores, so it is here: headers in, [`RepositoryService`](crate::service::RepositoryService)
//! calls out.
//!
//! Every request but `OPTIONS` must carry `Tus-Resumable: 1.0.0` (412 otherwise). A browser cannot send that
//! header cross-site without a CORS preflight, and `PATCH` bodies must be `application/offset+octet-stream`, so
//! another website cannot drive uploads through a visitor's browser.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{options, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::TryStreamExt;

use super::auth::Need;
use super::error::ApiError;
use super::error::body_io_error;
use super::state::AppState;
use crate::domain::{ComponentKey, DomainError, Kind, Platform, split_platform};
use crate::service::UploadSession;
use crate::service::uploads::NewUpload;

pub const TUS_VERSION: &str = "1.0.0";
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration,checksum";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` accepted: names, a platform and a digest fit many times over.
const MAX_METADATA_BYTES: usize = 4096;

static TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
static UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
static UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
static UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/uploads", post(create).get(list).options(describe))
        .route(
            "/uploads/{id}",
            options(describe)
                .head(status)
                .patch(append)
                .delete(terminate)
                // Appends are limited by the session's length while they stream, not by a body limit.
                .layer(DefaultBodyLimit::disable()),
        )
        .layer(axum::middleware::map_response(versioned))
}

/// Every tus response says which protocol version it speaks.
async fn versioned(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(TUS_RESUMABLE.clone(), HeaderValue::from_static(TUS_VERSION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if response.status() == StatusCode::PRECONDITION_FAILED {
        response.headers_mut().insert(
            HeaderName::from_static("tus-version"),
            HeaderValue::from_static(TUS_VERSION),
        );
    }
    response
}

/// `OPTIONS`: what this server supports, open to everyone like `/openapi.json`.
async fn describe(State(state): State<AppState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert("tus-max-size", number(state.service.max_upload_bytes()));
    headers.insert("tus-checksum-algorithm", HeaderValue::from_static("sha256"));
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// The protocol version, then a write token: every session is the beginning of a write.
fn admit(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let version = headers.get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok());
    if version != Some(TUS_VERSION) {
        return Err(ApiError::PreconditionFailed(format!(
            "a tus request must carry `Tus-Resumable: {TUS_VERSION}` (got {version:?})"
        )));
    }
    state.tokens.check(headers, Need::Write)
}

/// [`admit`], for a request on session `id`: only the token that created a session may see, append to or cancel it.
async fn admit_to(state: &AppState, headers: &HeaderMap, id: &str) -> Result<(), ApiError> {
    admit(state, headers)?;
    let caller = state.tokens.label(headers);
    Ok(state.service.check_upload_owner(id, &caller).await?)
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// `Upload-Expires` is an HTTP date (RFC 9110).
fn http_date(t: chrono::DateTime<chrono::Utc>) -> HeaderValue {
    HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn session_headers(session: &UploadSession) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(UPLOAD_OFFSET.clone(), number(session.offset));
    headers.insert(UPLOAD_LENGTH.clone(), number(session.length));
    headers.insert(UPLOAD_EXPIRES.clone(), http_date(session.expires_at));
    headers
}

fn header_u64(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{name}: must be a non-negative integer"))
                })
        })
        .transpose()
}

/// `POST /uploads` (creation): `Upload-Length` and `Upload-Metadata` name the file and its target.
async fn create(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    admit(&state, &headers)?;
    let length = header_u64(&headers, &UPLOAD_LENGTH)?.ok_or_else(|| {
        ApiError::BadRequest(if headers.contains_key("upload-defer-length") {
            "this server needs the Upload-Length up front (no creation-defer-length)".into()
        } else {
            "Upload-Length: required".into()
        })
    })?;
    let metadata = headers
        .get("upload-metadata")
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .unwrap_or_default();
    let mut new = new_upload(parse_metadata(metadata)?, length)?;
    new.created_by = state.tokens.label(&headers);
    let session = state.service.create_upload(new).await?;
    let mut headers = session_headers(&session);
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/uploads/{}", session.id))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
    );
    Ok((StatusCode::CREATED, headers).into_response())
}

/// `GET /uploads` (ours, not tus): the caller's unfinished sessions, oldest first, as JSON; `DELETE` on a session's
/// `location` cancels it.
async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    admit(&state, &headers)?;
    let sessions = state
        .service
        .uploads_of(&state.tokens.label(&headers))
        .await?;
    let listed: Vec<serde_json::Value> = sessions.iter().map(listed).collect();
    Ok(axum::Json(listed).into_response())
}

/// A session as `GET /uploads` lists it: its target named as in `Upload-Metadata`.
fn listed(session: &UploadSession) -> serde_json::Value {
    let mut target = serde_json::Map::new();
    target.insert("kind".into(), session.target.kind().as_str().into());
    let names: &[&str] = match session.target.kind() {
        Kind::Model => &["name", "version"],
        _ => &["id"],
    };
    for (name, value) in names.iter().zip(session.target.path_segments()) {
        target.insert((*name).into(), value.into());
    }
    serde_json::json!({
        "id": session.id,
        "location": format!("/uploads/{}", session.id),
        "target": target,
        "platform": session.platform.as_ref().map(ToString::to_string),
        "filename": session.filename,
        "contentType": session.content_type,
        "length": session.length,
        "offset": session.offset,
        "createdAt": session.created_at,
        "expiresAt": session.expires_at,
    })
}

/// `HEAD /uploads/{id}`: where the session stands.
async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit_to(&state, &headers, &id).await?;
    let session = state.service.upload_status(&id).await?;
    Ok((StatusCode::OK, session_headers(&session)).into_response())
}

/// `PATCH /uploads/{id}`: appends the body at `Upload-Offset`, streaming it to storage. A refusal may leave the body
/// unread, so it closes the connection: a client must not send its next request after the rest of this body.
async fn append(
    state: State<AppState>,
    id: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match append_body(state, id, headers, body).await {
        Ok(response) => response,
        Err(e) => {
            let mut response = e.into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn append_body(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admit_to(&state, &headers, &id).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.eq_ignore_ascii_case(OFFSET_OCTET_STREAM) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a PATCH body must be sent as `content-type: {OFFSET_OCTET_STREAM}`, not {content_type:?}"
        )));
    }
    let offset = header_u64(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::BadRequest("Upload-Offset: required".into()))?;
    let checksum = headers
        .get("upload-checksum")
        .map(|v| parse_checksum(v.to_str().unwrap_or_default()))
        .transpose()?;
    let body = body.into_data_stream().map_err(body_io_error);
    let progress = state
        .service
        .append_upload(&id, offset, Box::pin(body), checksum)
        .await?;
    if progress.attached.is_some() {
        state.metrics.uploaded(progress.session.length);
    }
    Ok((StatusCode::NO_CONTENT, session_headers(&progress.session)).into_response())
}

/// `DELETE /uploads/{id}` (termination): the session and its bytes go.
async fn terminate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admit_to(&state, &headers, &id).await?;
    state.service.delete_upload(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `Upload-Checksum: sha256 <base64 digest>`; other algorithms are a 400, as the checksum extension says.
fn parse_checksum(value: &str) -> Result<[u8; 32], ApiError> {
    let (algorithm, digest) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(ApiError::BadRequest(format!(
            "Upload-Checksum: the algorithm {algorithm:?} is not supported; use sha256"
        )));
    }
    STANDARD
        .decode(digest.trim())
        .ok()
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| {
            ApiError::BadRequest("Upload-Checksum: a sha256 digest is 32 bytes in base64".into())
        })
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (a key may come without a value).
fn parse_metadata(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let invalid = |why: String| ApiError::BadRequest(format!("Upload-Metadata: {why}"));
    if text.len() > MAX_METADATA_BYTES {
        return Err(invalid(format!("at most {MAX_METADATA_BYTES} bytes")));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| invalid(format!("the value of {key:?} is not base64 of UTF-8 text")))?;
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(invalid(format!("{key:?} is given twice")));
        }
        // Values become file names, content types and identifiers: no control characters (a line break in a
        // type would be a header injected into a later answer).
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "the value of {key:?} holds a control character"
            )));
        }
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// The target and file of a session from its metadata: `kind` and `id`, or (`kind` model or left out) `name` and
/// `version`; `platform` as `os/arch[/variant]` with optional `accelerator` and `accelerator_version`;
/// `filename`, `filetype` (or `content_type`) and `sha256`.
fn new_upload(metadata: Vec<(String, String)>, length: u64) -> Result<NewUpload, ApiError> {
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let kind = match get("kind") {
        Some(kind) => Kind::parse(kind).ok_or_else(|| {
            DomainError::new(
                "Upload-Metadata kind",
                "must be model, transformation, service or inferencer",
            )
        })?,
        None if get("version").is_some() => Kind::Model,
        None => {
            return Err(ApiError::BadRequest(
                "Upload-Metadata: name the target with `kind` and `id`, or `name` and `version` for a model"
                    .into(),
            ));
        }
    };
    let required = |key: &'static str| {
        get(key).ok_or_else(|| {
            DomainError::new(
                format!("Upload-Metadata {key}"),
                format!("required for a {kind}"),
            )
        })
    };
    let target = match kind {
        Kind::Model => ComponentKey::model(required("name")?, required("version")?)?,
        _ => ComponentKey::with_id(kind, required("id")?)?,
    };
    let platform = get("platform")
        .map(|text| {
            let (os, arch, variant) = split_platform(text, "Upload-Metadata platform")?;
            Platform::new(
                os,
                arch,
                variant,
                get("accelerator"),
                get("accelerator_version"),
            )?
            .with_precision(get("precision"))
        })
        .transpose()?;
    if platform.is_none() && get("precision").is_some() {
        return Err(DomainError::new("Upload-Metadata precision", "needs a platform").into());
    }
    // The build's own needs, as JSON: `{"ram": 8, "gpuMemory": 10, "storage": 2, "gpu": true}`.
    let needs = get("needs")
        .map(|text| {
            serde_json::from_str::<TusNeeds>(text).map_err(|e| {
                DomainError::new(
                    "Upload-Metadata needs",
                    format!("must be a JSON object with ram, gpuMemory, storage (GB) and gpu: {e}"),
                )
            })
        })
        .transpose()?
        .map(|n| crate::domain::FileNeeds {
            ram: n.ram,
            gpu_memory: n.gpu_memory,
            storage: n.storage,
            gpu: n.gpu,
        });
    Ok(NewUpload {
        target,
        platform,
        needs,
        filename: get("filename").map(str::to_owned),
        content_type: get("filetype").or(get("content_type")).map(str::to_owned),
        length,
        sha256: get("sha256").map(str::to_owned),
        created_by: String::new(),
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TusNeeds {
    ram: Option<f64>,
    gpu_memory: Option<f64>,
    storage: Option<f64>,
    gpu: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn metadata_names_models_components_and_platforms() {
        let text = encoded(&[
            ("name", "fall-detection"),
            ("version", "v1"),
            ("platform", "linux/arm64/v8"),
            ("filename", "m.zip"),
        ]);
        let new = new_upload(parse_metadata(&text).unwrap(), 10).unwrap();
        assert_eq!(
            new.target,
            ComponentKey::model("fall-detection", "v1").unwrap()
        );
        assert_eq!(new.platform.unwrap().to_string(), "linux/arm64/v8");
        assert_eq!(new.filename.as_deref(), Some("m.zip"));
        let text = encoded(&[("kind", "service"), ("id", "a.b")]);
        let new = new_upload(parse_metadata(&text).unwrap(), 10).unwrap();
        assert_eq!(
            new.target,
            ComponentKey::with_id(Kind::Service, "a.b").unwrap()
        );
    }

    #[test]
    fn bad_metadata_is_refused() {
        assert!(parse_metadata("name !!!").is_err());
        assert!(parse_metadata(&encoded(&[("id", "a"), ("id", "b")])).is_err());
        assert!(parse_metadata(&encoded(&[("filetype", "text/html\r\nX-Evil: 1")])).is_err());
        for pairs in [
            &[("kind", "service")][..],
            &[("filename", "x")][..],
            &[("kind", "gadget"), ("id", "x")][..],
            &[("name", "m"), ("version", "1"), ("platform", "linux")][..],
        ] {
            let parsed = parse_metadata(&encoded(pairs)).unwrap();
            assert!(new_upload(parsed, 1).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn checksums_are_sha256_in_base64() {
        let digest = [7u8; 32];
        let header = format!("sha256 {}", STANDARD.encode(digest));
        assert_eq!(parse_checksum(&header).unwrap(), digest);
        assert!(parse_checksum("md5 AAAA").is_err());
        assert!(parse_checksum("sha256 AAAA").is_err());
    }
}
