//! The original service's REST API, route for route: create, upload, update metadata, list, download and delete
//! for all four kinds, with the original's bodies and status codes, served by the same service layer as GraphQL.

mod devices;
mod openapi;
mod original;
mod pipelines;
mod signatures;

/// The kinds keyed by id, whose routes are the same but for the kind: the router and the OpenAPI document both
/// read this list.
pub const ID_KINDS: [Kind; 3] = [Kind::Transformation, Kind::Service, Kind::Inferencer];

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;

use super::body::Watched;
use super::download::{Source, download, download_blob, serve};
use super::error::ApiError;
use super::error::{body_io_error, unreadable_body};
use super::state::AppState;
use crate::domain::signing::MAX_BUNDLE_BYTES;
use crate::domain::{ComponentKey, DomainError, Kind, Sha256, Spec};
use crate::service::ServiceError;

/// Most components written as one chunk of a streamed list: large enough to keep per-chunk overhead small.
const LIST_CHUNK: usize = 256;

/// `axum::extract::Path` answering in our JSON error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

/// A JSON object body read whole (at most axum's default 2 MiB), answering in our JSON error format. A JSON
/// content type is required: the types a cross-site HTML form can send (`text/plain`, form encodings) are refused,
/// so another website cannot create or change components through a visitor's browser.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        require_json(request.headers())?;
        let bytes = Bytes::from_request(request, state).await?;
        // Arrays would be read as positional objects: `[]` would be a model with empty metadata.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::InvalidBody(
                "the body must be a JSON object".into(),
            ));
        }
        Ok(Body(bytes))
    }
}

/// Refuses a body not sent as JSON (415): the types a cross-site HTML form can send never reach a handler.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if is_json(content_type) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON, sent with `content-type: application/json`, not {content_type:?}"
        )))
    }
}

/// `application/json` or a `+json` type such as `application/merge-patch+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && sub.ends_with("+json"))
}

/// `axum::extract::Query` answering in our JSON error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct Query<T>(T);

/// `/openapi.json`, open to everyone like the playground: it describes the API, it holds no data.
pub fn documentation() -> Router<AppState> {
    let document = openapi::document();
    Router::new().route(
        "/openapi.json",
        get(move || async move { Json(document.clone()) }),
    )
}

pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/model", post(create_model).get(|s| list(s, Kind::Model)))
        .route("/model/meta", get(model_meta))
        .route("/blobs/sha256/{hex}", get(blob))
        // A read that takes its question as a body (`auth::POST_READS`).
        .route(
            "/pipelines/resolve",
            post(pipelines::resolve).layer(DefaultBodyLimit::max(pipelines::MAX_BODY)),
        )
        .route("/model/meta/{name}/{version}", put(update_model_meta))
        .route(
            "/model/{name}/{version}",
            get(download_model)
                .put(upload_model)
                .delete(delete_model)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/devices/{id}/report",
            post(devices::report).layer(DefaultBodyLimit::max(
                crate::domain::device_report::MAX_REPORT_BYTES,
            )),
        )
        .route(
            "/model/{name}/{version}/signatures",
            post(signatures::add_to_model)
                .get(signatures::list_of_model)
                .layer(DefaultBodyLimit::max(MAX_BUNDLE_BYTES)),
        );
    for kind in ID_KINDS {
        router = router
            .route(
                &format!("/{kind}"),
                post(move |s, body| create(s, kind, body)).get(move |s| list(s, kind)),
            )
            .route(
                &format!("/{kind}/meta/{{id}}"),
                put(move |s, p, h, body| update_meta(s, kind, p, h, body)),
            )
            .route(
                &format!("/{kind}/{{id}}"),
                get(move |s, p, q, h| download_by_id(s, kind, p, q, h))
                    .put(move |s, p, m| upload_by_id(s, kind, p, m))
                    .delete(move |s, p, q| delete_by_id(s, kind, p, q))
                    // Uploads are limited per file by the service while they stream, not by a body limit.
                    .layer(DefaultBodyLimit::disable()),
            )
            .route(
                &format!("/{kind}/{{id}}/signatures"),
                post(move |s, p, q, h, b| signatures::add_by_id(s, kind, p, q, h, b))
                    .get(move |s, p, q| signatures::list_by_id(s, kind, p, q))
                    .layer(DefaultBodyLimit::max(MAX_BUNDLE_BYTES)),
            );
    }
    router
}

/// A duplicate key is a 400 here, as the original answered (elsewhere it is a 409 / ALREADY_EXISTS).
fn original_status(e: ServiceError) -> ApiError {
    match e {
        ServiceError::AlreadyExists(message) => ApiError::BadRequest(message),
        other => ApiError::Service(other),
    }
}

async fn created(state: &AppState, key: ComponentKey, spec: Spec) -> Result<Response, ApiError> {
    let created = state
        .service
        .create(key, spec)
        .await
        .map_err(original_status)?;
    Ok((StatusCode::CREATED, Json(original::json(&created))).into_response())
}

async fn create_model(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (key, spec) = original::model(&body)?;
    created(&state, key, spec).await
}

async fn create(
    State(state): State<AppState>,
    kind: Kind,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (key, spec) = original::component(kind, &body, None)?;
    created(&state, key, spec).await
}

/// Every component of a kind as one JSON array, written as the store reads it in one pass: a large catalogue is
/// never held whole, and nothing is counted or read twice.
async fn list(State(state): State<AppState>, kind: Kind) -> Result<Response, ApiError> {
    // The scan starts before answering, so that a store that is down gets a clean error status.
    let components = state.service.list_all(kind).await?;
    let mut first_item = true;
    let items = components.ready_chunks(LIST_CHUNK).map(move |chunk| {
        let mut text = Vec::with_capacity(chunk.len() * 512);
        for component in chunk {
            let component = component.map_err(std::io::Error::other)?;
            if !first_item {
                text.push(b',');
            }
            first_item = false;
            serde_json::to_writer(&mut text, &original::json(&component))
                .map_err(std::io::Error::other)?;
        }
        Ok::<_, std::io::Error>(Bytes::from(text))
    });
    let body = futures_util::stream::once(async { Ok(Bytes::from_static(b"[")) })
        .chain(items)
        .chain(futures_util::stream::once(async {
            Ok(Bytes::from_static(b"]"))
        }));
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The revision an `If-Match` header states (`"3"`); `None` without one or for `*`. If-Match compares strongly
/// (RFC 9110): a weak tag (`W/"3"`) matches nothing, nor does a tag that is no revision of ours (`"03"`, `"x"`), so
/// the precondition fails. One revision is expected: a list of several is refused the same way.
fn expected_revision(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let revision = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| {
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && (*t == "0" || !t.starts_with('0'))
        })
        .and_then(|t| t.parse().ok());
    match revision {
        Some(revision) => Ok(Some(revision)),
        None => Err(ApiError::Service(ServiceError::Stale {
            message: format!(
                "If-Match {text:?} matches no revision of this component: send its revision in quotes, as its \
                 ETag gives it (`\"3\"`; weak tags never match)"
            ),
            current: 0,
        })),
    }
}

/// `204 No Content` with the component's new revision as its ETag, for the next `If-Match`.
fn updated(component: &crate::domain::Component) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(tag) = header::HeaderValue::from_str(&format!("\"{}\"", component.revision)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

async fn update_model_meta(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let meta: original::OriginalMeta = original::parse(&body)?;
    let key = ComponentKey::model(name, version)?;
    let (library, description) = (meta.library, meta.description);
    let component = state
        .service
        .update(
            &key,
            Box::new(move |spec| match spec {
                Spec::Model(model) => {
                    model.library = library.clone();
                    model.description = description.clone();
                    Ok(())
                }
                _ => Err(DomainError::new("kind", "not a model")),
            }),
            expected,
        )
        .await?;
    Ok(updated(&component))
}

/// `PUT /{kind}/meta/{id}`: the body is the whole object, which replaces the metadata.
async fn update_meta(
    State(state): State<AppState>,
    kind: Kind,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let (key, replacement) = original::component(kind, &body, Some(&id))?;
    let component = state
        .service
        .update(
            &key,
            Box::new(move |spec| {
                *spec = replacement.clone();
                Ok(())
            }),
            expected,
        )
        .await?;
    Ok(updated(&component))
}

async fn upload_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<StatusCode, ApiError> {
    upload(&state, ComponentKey::model(name, version)?, request).await
}

async fn upload_by_id(
    State(state): State<AppState>,
    kind: Kind,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<StatusCode, ApiError> {
    upload(&state, ComponentKey::with_id(kind, id)?, request).await
}

/// `PUT` with a multipart form whose field `file` is streamed to storage; other fields are ignored.
async fn upload(
    state: &AppState,
    key: ComponentKey,
    request: axum::extract::Request,
) -> Result<StatusCode, ApiError> {
    let (request, whole_body) = Watched::new(request);
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // A missing component is reported before a byte of the file is stored.
    state.service.get(&key).await?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        let what = format!("the multipart body could not be read: {}", e.body_text());
        ApiError::Service(unreadable_body(&e, what))
    };
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let body = field.map(|chunk| chunk.map_err(body_io_error)).boxed();
        let staged = state.service.stage_upload(body).await?;
        // The rest of the body is read to its closing delimiter before the file is kept: a body cut short after
        // the file part (connection closed early, no closing delimiter, no last chunk) is refused, as in GraphQL.
        while let Some(mut rest) = multipart.next_field().await.map_err(unreadable)? {
            while rest.chunk().await.map_err(unreadable)?.is_some() {}
        }
        // And the HTTP body to its end: a complete multipart inside a body that then breaks off is refused too.
        drop(multipart);
        whole_body.finish().await?;
        let size = staged.size;
        state
            .service
            .attach_file(
                &key,
                staged,
                filename.as_deref(),
                content_type.as_deref(),
                Default::default(),
                None,
            )
            .await?;
        state.metrics.uploaded(size);
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(ApiError::InvalidBody(
        "the multipart form has no field `file`".into(),
    ))
}

/// `?force=true` deletes what live devices report running (otherwise 409 `IN_USE`).
#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .delete_unless_in_use(&ComponentKey::model(name, version)?, query.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_by_id(
    State(state): State<AppState>,
    kind: Kind,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .delete_unless_in_use(&ComponentKey::with_id(kind, id)?, query.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn download_model(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Query(mut wanted): Query<PlatformQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // `/model/{name}/@{alias}` downloads the version the alias points at (for `?device=`, its cohort's).
    let device = wanted.device.take();
    let Some(alias) = version.strip_prefix('@') else {
        if device.is_some() {
            return Err(ApiError::BadRequest(
                "device= goes with an alias (/model/{name}/@{alias}?device=…): a version names its file already"
                    .into(),
            ));
        }
        return download_for(
            &state,
            ComponentKey::model(name, version)?,
            wanted,
            &headers,
        )
        .await;
    };
    let key = state
        .service
        .resolve_alias_for(&name, alias, device.as_deref())
        .await?;
    let served = match &key {
        ComponentKey::Model(model) => HeaderValue::from_str(&model.version).ok(),
        _ => None,
    };
    let mut response = download_for(&state, key, wanted, &headers).await?;
    if let Some(version) = served {
        response.headers_mut().insert("x-model-version", version);
    }
    Ok(response)
}

async fn download_by_id(
    State(state): State<AppState>,
    kind: Kind,
    Path(id): Path<String>,
    Query(wanted): Query<PlatformQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download_for(&state, ComponentKey::with_id(kind, id)?, wanted, &headers).await
}

/// `?platform=linux/arm64` picks the variant a device of that platform runs; `&accelerator=cuda&accelerator_version=8.6`
/// says which accelerators it has (comma-separated lists, paired in order, for several); `&gpu_memory=12&ram=16`
/// (GB) pick among builds of one platform the biggest that fits.
#[derive(Deserialize)]
struct PlatformQuery {
    /// The id of the device asking for an alias (rollout cohorts); not a property of the file.
    device: Option<String>,
    platform: Option<String>,
    accelerator: Option<String>,
    accelerator_version: Option<String>,
    gpu_memory: Option<f64>,
    ram: Option<f64>,
}

impl PlatformQuery {
    /// The device the query describes, or `None` for the default file.
    fn device(self) -> Result<Option<crate::domain::Device>, ApiError> {
        let Some(platform) = self.platform else {
            if self.accelerator.is_some()
                || self.accelerator_version.is_some()
                || self.gpu_memory.is_some()
                || self.ram.is_some()
            {
                return Err(ApiError::BadRequest(
                    "accelerator, accelerator_version, gpu_memory and ram describe a device of a platform: give \
                     platform too (such as platform=linux/amd64&accelerator=cuda&accelerator_version=8.6&gpu_memory=12)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let list = |text: Option<String>| -> Vec<String> {
            text.map(|t| t.split(',').map(|p| p.trim().to_string()).collect())
                .unwrap_or_default()
        };
        let (names, versions) = (list(self.accelerator), list(self.accelerator_version));
        if names.len() != versions.len() || versions.iter().any(String::is_empty) {
            return Err(ApiError::BadRequest(format!(
                "accelerator_version: give the device's version of each accelerator, in the same order \
                 ({} accelerators, {} versions), such as accelerator=cuda,tensorrt&accelerator_version=8.6,10.2",
                names.len(),
                versions.len()
            )));
        }
        let mut device = crate::domain::DevicePlatform::parse(&platform)?;
        let given = crate::domain::DevicePlatform::new(
            &device.os,
            &device.arch,
            device.variant.as_deref(),
            names.into_iter().zip(versions).collect(),
        )?;
        device.accelerators = given.accelerators;
        for (field, gb) in [("gpu_memory", self.gpu_memory), ("ram", self.ram)] {
            if gb.is_some_and(|gb| !gb.is_finite() || gb < 0.0) {
                return Err(ApiError::BadRequest(format!(
                    "{field}: must be a non-negative number of GB"
                )));
            }
        }
        let mut device = crate::domain::Device::of_platform(device);
        device.gpu_memory = self.gpu_memory;
        device.ram = self.ram;
        Ok(Some(device))
    }
}

async fn download_for(
    state: &AppState,
    key: ComponentKey,
    wanted: PlatformQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some(device) = wanted.device()? else {
        return download(&state.service, &state.metrics, key, headers).await;
    };
    let file = state.service.file_for(&key, &device).await?;
    serve(
        &state.service,
        &state.metrics,
        Source::Component(&key),
        &file,
        headers,
    )
    .await
}

/// `GET /blobs/sha256/{hex}`: any stored file by its digest.
async fn blob(
    State(state): State<AppState>,
    Path(hex): Path<String>,
    Query(query): Query<BlobQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let digest = Sha256::parse(&hex.to_ascii_lowercase())
        .map_err(|_| ApiError::BadRequest("a sha256 digest is 64 hexadecimal digits".into()))?;
    download_blob(
        &state.service,
        &state.metrics,
        &digest,
        query.filename,
        &headers,
    )
    .await
}

#[derive(Deserialize)]
struct BlobQuery {
    filename: Option<String>,
}

#[derive(Deserialize)]
struct ModelMetaQuery {
    model_name: String,
    model_version: Option<String>,
    model_alias: Option<String>,
    /// With `model_alias`: the device asking, for its rollout cohort's version.
    device: Option<String>,
}

/// `GET /model/meta?model_name=&model_version=`: the model object in the original's JSON shape; inference servers
/// read `["meta"]["library"]`.
async fn model_meta(
    State(state): State<AppState>,
    Query(query): Query<ModelMetaQuery>,
) -> Result<Response, ApiError> {
    let key = match (query.model_version, query.model_alias) {
        (Some(version), None) => ComponentKey::model(query.model_name, version)?,
        (None, Some(alias)) => {
            state
                .service
                .resolve_alias_for(&query.model_name, &alias, query.device.as_deref())
                .await?
        }
        _ => {
            // A missing parameter is a 422, as FastAPI answered.
            return Err(ApiError::Unprocessable(
                "give either `model_version` or `model_alias`".into(),
            ));
        }
    };
    let model = state.service.get(&key).await?;
    Ok(Json(original::json(&model)).into_response())
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "+json",
        ] {
            assert!(!is_json(other), "{other}");
        }
    }
}
