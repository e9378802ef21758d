//! `oras push` of a single-file artifact to `models/<name>:<version>`: blob uploads (a monolithic `POST ?digest=`,
//! `POST` then `PUT ?digest=` with the bytes, or chunks `PATCH`ed in order then the `PUT`) stage the bytes in the
//! store with the upload size limit and check their digest; the manifest `PUT` then creates the model version if it is missing and makes the one layer
//! its file, as any upload does (same events, same immutability and lock rules). Staged blobs wait for their
//! manifest in this process only, at most [`MAX_PENDING`] of them for [`PENDING_TTL`]; a client that loses the
//! server in between pushes again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::error::{Code, OciError};
use super::{set, sha256_of};
use crate::api::error::body_io_error;
use crate::api::state::AppState;
use crate::domain::oci::{self, Repository};
use crate::domain::{ComponentKey, Kind, ModelSpec, Spec};
use crate::service::{ServiceError, StagedBlob};

/// Most upload sessions and uploaded blobs waiting for their manifest (or being received), all clients together.
const MAX_PENDING: usize = 256;
/// Most of them one caller (a token's label, or `anonymous`) may hold: one client cannot take every place.
const MAX_PENDING_PER_CALLER: usize = 32;
/// How long an upload session or an uploaded blob waits for its manifest.
const PENDING_TTL: Duration = Duration::from_secs(3600);
/// Largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Upload sessions and uploaded blobs, by id and by (repository, digest).
#[derive(Default)]
pub struct Pending {
    sessions: Mutex<HashMap<String, Session>>,
    blobs: Mutex<HashMap<(String, String), Upload>>,
    /// Requests receiving bytes right now (a session being appended to is out of `sessions` meanwhile), by caller.
    receiving: Mutex<HashMap<String, usize>>,
}

/// A place held by a request while it receives bytes; given back when dropped.
struct Receiving<'a> {
    pending: &'a Pending,
    caller: String,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if let Ok(mut receiving) = self.pending.receiving.lock()
            && let Some(count) = receiving.get_mut(&self.caller)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                receiving.remove(&self.caller);
            }
        }
    }
}

/// An uploaded blob waiting for its manifest.
struct Upload {
    staged: StagedBlob,
    since: Instant,
    caller: String,
}

/// An upload session: the chunks `PATCH`ed so far, in a temporary file (the one copy a chunked upload costs; a
/// blob sent whole streams straight into the store).
struct Session {
    repo: String,
    chunks: Option<tempfile::TempPath>,
    size: u64,
    since: Instant,
    caller: String,
}

impl Pending {
    fn prune(&self) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, s| s.since.elapsed() < PENDING_TTL);
        }
        if let Ok(mut blobs) = self.blobs.lock() {
            blobs.retain(|_, u| u.since.elapsed() < PENDING_TTL);
        }
    }

    /// Places taken, all callers together and `caller`'s own.
    fn count(&self, caller: &str) -> (usize, usize) {
        let (mut all, mut own) = (0, 0);
        if let Ok(sessions) = self.sessions.lock() {
            all += sessions.len();
            own += sessions.values().filter(|s| s.caller == caller).count();
        }
        if let Ok(blobs) = self.blobs.lock() {
            all += blobs.len();
            own += blobs.values().filter(|u| u.caller == caller).count();
        }
        if let Ok(receiving) = self.receiving.lock() {
            all += receiving.values().sum::<usize>();
            own += receiving.get(caller).copied().unwrap_or(0);
        }
        (all, own)
    }

    fn room(&self, caller: &str) -> Result<(), OciError> {
        self.prune();
        let (all, own) = self.count(caller);
        let full = |message: String| {
            Err(OciError::new(
                Code::Other(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
                message,
            ))
        };
        if own >= MAX_PENDING_PER_CALLER {
            return full(format!(
                "you hold {MAX_PENDING_PER_CALLER} uploads waiting for their manifests: finish (PUT the manifest) \
                 or cancel (DELETE the upload) one first"
            ));
        }
        if all >= MAX_PENDING {
            return full(format!(
                "{MAX_PENDING} uploads are waiting for their manifests: try again later"
            ));
        }
        Ok(())
    }

    /// Takes a place, if there is room, while a request receives bytes that no session or blob holds yet.
    fn receiving(&self, caller: &str) -> Result<Receiving<'_>, OciError> {
        self.room(caller)?;
        Ok(self.hold(caller))
    }

    /// Keeps the place of a session taken out of the map while a request appends to it or closes it.
    fn hold(&self, caller: &str) -> Receiving<'_> {
        if let Ok(mut receiving) = self.receiving.lock() {
            *receiving.entry(caller.to_string()).or_default() += 1;
        }
        Receiving {
            pending: self,
            caller: caller.to_string(),
        }
    }

    fn keep_blob(&self, repo: &str, digest: &str, staged: StagedBlob, caller: &str) {
        if let Ok(mut blobs) = self.blobs.lock() {
            blobs.insert(
                (repo.to_string(), digest.to_string()),
                Upload {
                    staged,
                    since: Instant::now(),
                    caller: caller.to_string(),
                },
            );
        }
    }

    /// The size of an uploaded blob waiting for its manifest.
    pub fn blob_size(&self, repo: &str, digest: &str) -> Option<u64> {
        let blobs = self.blobs.lock().ok()?;
        let upload = blobs.get(&(repo.to_string(), digest.to_string()))?;
        Some(upload.staged.size)
    }

    fn take_blob(&self, repo: &str, digest: &str) -> Option<StagedBlob> {
        let mut blobs = self.blobs.lock().ok()?;
        blobs
            .remove(&(repo.to_string(), digest.to_string()))
            .map(|u| u.staged)
    }
}

/// Streams a request body into the store's staging, within the upload size limit.
async fn stage(state: &AppState, body: Body) -> Result<StagedBlob, OciError> {
    let stream = body.into_data_stream().map_err(body_io_error);
    let staged = state
        .service
        .stage_upload(Box::pin(stream))
        .await
        .map_err(|e| OciError::service(e, Code::BlobUnknown))?;
    state.metrics.uploaded(staged.size);
    Ok(staged)
}

/// Keeps a staged blob whose digest is what the client said, or refuses it.
fn check_digest(staged: &StagedBlob, digest: &str) -> Result<(), OciError> {
    let sha256 = sha256_of(digest)?;
    if staged.sha256 != sha256.as_str() {
        return Err(OciError::new(
            Code::DigestInvalid,
            format!(
                "the uploaded bytes have the digest sha256:{}, not {digest}",
                staged.sha256
            ),
        ));
    }
    Ok(())
}

fn created(location: &str, digest: &str) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    set(&mut response, header::LOCATION.as_str(), location);
    set(&mut response, "docker-content-digest", digest);
    response
}

fn session_response(status: StatusCode, repo: &str, id: &str, size: u64) -> Response {
    let mut response = status.into_response();
    set(
        &mut response,
        header::LOCATION.as_str(),
        &format!("/v2/{repo}/blobs/uploads/{id}"),
    );
    set(&mut response, "docker-upload-uuid", id);
    // The spec's `Range` of an upload: the bytes received so far, inclusive.
    set(
        &mut response,
        header::RANGE.as_str(),
        &format!("0-{}", size.saturating_sub(1)),
    );
    set(&mut response, header::CONTENT_LENGTH.as_str(), "0");
    response
}

fn models_only(repo: &Repository) -> Result<(), OciError> {
    if repo.kind == Kind::Model {
        Ok(())
    } else {
        Err(OciError::new(
            Code::Unsupported,
            "only models are pushed over OCI (to models/<name>:<version>); other kinds go through GraphQL or REST",
        ))
    }
}

/// `POST`, `PATCH`, `PUT`, `GET` and `DELETE` under `/v2/<name>/blobs/uploads/`.
#[allow(clippy::too_many_arguments)]
pub async fn upload(
    state: &AppState,
    pending: &Pending,
    caller: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    name: &str,
    session: Option<&str>,
    digest: Option<&str>,
    body: Body,
) -> Result<Response, OciError> {
    use axum::http::Method;
    let repo = super::repository(name)?;
    models_only(&repo)?;
    let missing = || OciError::new(Code::BlobUploadUnknown, "no such upload session");
    match (method, session) {
        (&Method::POST, None) => {
            pending.room(caller)?;
            if let Some(digest) = digest {
                // A monolithic upload: the whole blob in this request, which holds a place while it streams.
                sha256_of(digest)?;
                let place = pending.receiving(caller)?;
                let staged = stage(state, body).await?;
                check_digest(&staged, digest)?;
                drop(place);
                pending.keep_blob(name, digest, staged, caller);
                return Ok(created(&format!("/v2/{name}/blobs/{digest}"), digest));
            }
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(mut sessions) = pending.sessions.lock() {
                sessions.insert(
                    id.clone(),
                    Session {
                        repo: name.to_string(),
                        chunks: None,
                        size: 0,
                        since: Instant::now(),
                        caller: caller.to_string(),
                    },
                );
            }
            Ok(session_response(StatusCode::ACCEPTED, name, &id, 0))
        }
        (&Method::PATCH, Some(id)) => {
            let mut session = take_session(pending, id, name).ok_or_else(missing)?;
            // The session is out of the map while this request appends: its place is held meanwhile.
            let _place = pending.hold(&session.caller);
            if let Some(start) = range_start(headers)
                && start != session.size
            {
                let next = session.size;
                // A chunk out of order is refused, and the upload stays where it was for the client to resume.
                put_session(pending, id, session);
                return Err(OciError::new(
                    Code::Other(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
                    format!("chunks go in order: the next starts at {next}"),
                ));
            }
            append(state, &mut session, body).await?;
            let size = session.size;
            put_session(pending, id, session);
            Ok(session_response(StatusCode::ACCEPTED, name, id, size))
        }
        (&Method::PUT, Some(id)) => {
            let digest = digest.ok_or_else(|| {
                OciError::new(Code::DigestInvalid, "closing an upload needs ?digest=")
            })?;
            sha256_of(digest)?;
            let session = take_session(pending, id, name).ok_or_else(missing)?;
            let _place = pending.hold(&session.caller);
            let rest = body.into_data_stream().map_err(body_io_error);
            let staged = match session.chunks {
                // The chunks, then whatever this request carries.
                Some(chunks) => {
                    let file = tokio::fs::File::open(&chunks).await.map_err(|e| {
                        OciError::service(ServiceError::Internal(e.into()), Code::BlobUnknown)
                    })?;
                    let stream = tokio_util::io::ReaderStream::new(file).chain(rest);
                    let staged = state
                        .service
                        .stage_upload(Box::pin(stream))
                        .await
                        .map_err(|e| OciError::service(e, Code::BlobUnknown))?;
                    state
                        .metrics
                        .uploaded(staged.size.saturating_sub(session.size));
                    staged
                }
                None => stage(state, Body::from_stream(rest)).await?,
            };
            check_digest(&staged, digest)?;
            pending.keep_blob(name, digest, staged, &session.caller);
            Ok(created(&format!("/v2/{name}/blobs/{digest}"), digest))
        }
        (&Method::GET, Some(id)) => {
            let sessions = pending.sessions.lock().map_err(|_| missing())?;
            let size = sessions
                .get(id)
                .filter(|s| s.repo == name)
                .ok_or_else(missing)?
                .size;
            Ok(session_response(StatusCode::NO_CONTENT, name, id, size))
        }
        (&Method::DELETE, Some(id)) => {
            take_session(pending, id, name).ok_or_else(missing)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(OciError::new(
            Code::Unsupported,
            "not an upload request this registry takes",
        )),
    }
}

fn take_session(pending: &Pending, id: &str, repo: &str) -> Option<Session> {
    let mut sessions = pending.sessions.lock().ok()?;
    match sessions.get(id) {
        Some(session) if session.repo == repo && session.since.elapsed() < PENDING_TTL => {
            sessions.remove(id)
        }
        _ => None,
    }
}

fn put_session(pending: &Pending, id: &str, mut session: Session) {
    session.since = Instant::now();
    if let Ok(mut sessions) = pending.sessions.lock() {
        sessions.insert(id.to_string(), session);
    }
}

/// The first byte of a chunk's `Content-Range: <start>-<end>`, when the client sends one.
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let value = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    value.split('-').next()?.trim().parse().ok()
}

/// Appends a chunk to a session's file, within the upload size limit.
async fn append(state: &AppState, session: &mut Session, body: Body) -> Result<(), OciError> {
    use tokio::io::AsyncWriteExt;
    let fault =
        |e: std::io::Error| OciError::service(ServiceError::Internal(e.into()), Code::BlobUnknown);
    let path = match session.chunks.take() {
        Some(path) => path,
        None => tempfile::NamedTempFile::new()
            .map_err(fault)?
            .into_temp_path(),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .await
        .map_err(fault)?;
    let limit = state.service.max_upload_bytes();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            OciError::service(
                crate::api::error::unreadable_body(&e, "the chunk could not be read".into()),
                Code::BlobUnknown,
            )
        })?;
        session.size += chunk.len() as u64;
        if session.size > limit {
            return Err(OciError::service(
                ServiceError::PayloadTooLarge { limit },
                Code::BlobUnknown,
            ));
        }
        file.write_all(&chunk).await.map_err(fault)?;
    }
    file.flush().await.map_err(fault)?;
    session.chunks = Some(path);
    Ok(())
}

/// `PUT /v2/models/<name>/manifests/<version>`: the one layer becomes the file of that model version.
pub async fn manifest(
    state: &AppState,
    pending: &Pending,
    caller_headers: &HeaderMap,
    name: &str,
    reference: &str,
    body: Body,
) -> Result<Response, OciError> {
    let repo = super::repository(name)?;
    models_only(&repo)?;
    let invalid = |why: &str| OciError::new(Code::ManifestInvalid, why.to_string());
    let version = oci::decode_tag(reference).ok_or_else(|| {
        OciError::new(
            Code::TagInvalid,
            "push to a tag (the model version), not a digest",
        )
    })?;
    let key = ComponentKey::model(&repo.name, &version)
        .map_err(|e| OciError::new(Code::TagInvalid, e.to_string()))?;
    let content_type = caller_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|_| invalid("the manifest is not a readable body of at most 4 MiB"))?;
    let manifest: Value =
        serde_json::from_slice(&bytes).map_err(|_| invalid("the manifest is not JSON"))?;
    let media_type = manifest["mediaType"].as_str().unwrap_or(content_type);
    if media_type != oci::MANIFEST {
        return Err(invalid(&format!(
            "a component is one file: push an image manifest ({}) with one layer, not {media_type:?}",
            oci::MANIFEST
        )));
    }
    let layers = manifest["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [layer] = layers else {
        return Err(invalid(&format!(
            "a model version has one file: this manifest has {} layers",
            layers.len()
        )));
    };
    let digest = layer["digest"]
        .as_str()
        .ok_or_else(|| invalid("the layer has no digest"))?;
    let sha256 = sha256_of(digest)?;
    let filename = ["org.opencontainers.image.title", oci::MODEL_FILEPATH]
        .iter()
        .find_map(|a| layer["annotations"][a].as_str())
        .map(str::to_string);
    let staged = match pending.take_blob(name, digest) {
        Some(staged) => staged,
        // Bytes the store already holds (another version's file) are staged again from the store.
        None => match state.service.blob(&sha256).await {
            Ok(file) => {
                let bytes = state
                    .service
                    .read_blob(&file, 0..file.size)
                    .await
                    .map_err(|e| OciError::service(e, Code::BlobUnknown))?;
                state
                    .service
                    .stage_upload(bytes)
                    .await
                    .map_err(|e| OciError::service(e, Code::BlobUnknown))?
            }
            Err(ServiceError::NotFound(_)) => {
                return Err(OciError::new(
                    Code::ManifestBlobUnknown,
                    format!("the layer {digest} was not uploaded"),
                ));
            }
            Err(e) => return Err(OciError::service(e, Code::BlobUnknown)),
        },
    };
    // The config was uploaded for the client's sake: the registry serves the config it generates.
    if let Some(config) = manifest["config"]["digest"].as_str() {
        drop(pending.take_blob(name, config));
    }
    let description = manifest["annotations"]["org.opencontainers.image.description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let created_here = match state.service.find(&key).await? {
        Some(_) => false,
        None => {
            let spec = Spec::Model(ModelSpec {
                library: String::new(),
                description,
            });
            match state.service.create(key.clone(), spec).await {
                Ok(_) => true,
                // Created by a concurrent push in between: fill it.
                Err(ServiceError::AlreadyExists(_)) => false,
                Err(e) => return Err(OciError::service(e, Code::NameUnknown)),
            }
        }
    };
    let attached = state
        .service
        .attach_file(
            &key,
            staged,
            filename.as_deref(),
            None,
            Default::default(),
            None,
        )
        .await;
    let component = match attached {
        Ok(component) => component,
        Err(e) => {
            if created_here {
                // Never a version without the file it was pushed for.
                let _ = state.service.delete(&key).await;
            }
            return Err(OciError::service(e, Code::ManifestUnknown));
        }
    };
    let document = oci::artifact(&component)
        .map(|a| a.top)
        .ok_or_else(|| invalid("the pushed file has no digest"))?;
    Ok(created(
        &format!("/v2/{name}/manifests/{}", document.digest),
        &document.digest,
    ))
}
