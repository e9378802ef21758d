//! The GraphQL multipart request spec (https://github.com/jaydenseric/graphql-multipart-request-spec), read as a
//! stream: each file part goes straight into the store's staging area while its size and sha256 are computed, so a
//! request never sits whole in memory or in a spool that would have to be copied again.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::{BatchRequest, Request, UploadValue};
use axum::extract::multipart::{Field, Multipart};
use axum::extract::{FromRequest, Request as HttpRequest};
use futures_util::TryStreamExt;

use crate::api::error::{body_io_error, unreadable_body};
use crate::api::limits::Limits;
use crate::service::StagedBlob;
use crate::service::{RepositoryService, ServiceError};

/// Largest `operations` or `map` part accepted.
pub const MAX_OPERATIONS_BYTES: usize = 1024 * 1024;

/// The files of one GraphQL request, staged and waiting for their mutation, by upload index. Whatever no mutation
/// takes is dropped with the request, which discards the staged bytes.
#[derive(Default)]
pub struct StagedUploads(Mutex<HashMap<usize, StagedBlob>>);

impl StagedUploads {
    pub fn take(&self, index: usize) -> Option<StagedBlob> {
        self.0.lock().ok()?.remove(&index)
    }
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidInput(msg.into())
}

async fn read_small_part(field: Field<'_>, name: &str) -> Result<Vec<u8>, ServiceError> {
    let mut bytes = Vec::new();
    let mut field = field;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| unreadable_body(&e, format!("multipart: {}", e.body_text())))?
    {
        if bytes.len() + chunk.len() > MAX_OPERATIONS_BYTES {
            return Err(invalid(format!(
                "multipart: the `{name}` part is larger than {MAX_OPERATIONS_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn expect_part(multipart: &mut Multipart, name: &str) -> Result<Vec<u8>, ServiceError> {
    let field = multipart
        .next_field()
        .await
        .map_err(|e| unreadable_body(&e, format!("multipart: {}", e.body_text())))?
        .ok_or_else(|| invalid(format!("multipart: the `{name}` part is missing")))?;
    if field.name() != Some(name) {
        return Err(invalid(format!(
            "multipart: expected the `{name}` part, found `{}` (the spec orders operations, map, files)",
            field.name().unwrap_or_default()
        )));
    }
    read_small_part(field, name).await
}

/// Which request of the batch, and which variable path inside it, a map path names.
fn split_path<'p>(batch: &BatchRequest, path: &'p str) -> Result<(usize, &'p str), ServiceError> {
    match batch {
        BatchRequest::Single(_) => Ok((0, path)),
        BatchRequest::Batch(requests) => {
            let (index, rest) = path.split_once('.').ok_or_else(|| {
                invalid(format!(
                    "map: `{path}` does not name an operation of the batch"
                ))
            })?;
            match index.parse::<usize>() {
                Ok(i) if i < requests.len() => Ok((i, rest)),
                _ => Err(invalid(format!(
                    "map: `{path}` does not name an operation of the batch"
                ))),
            }
        }
    }
}

fn request_mut(batch: &mut BatchRequest, index: usize) -> &mut Request {
    match batch {
        BatchRequest::Single(request) => request,
        BatchRequest::Batch(requests) => &mut requests[index],
    }
}

/// Reads a multipart GraphQL request, staging every file it carries: at most `limits.max_files` files, and at most
/// the upload size limit in all.
pub async fn read(
    service: &RepositoryService,
    limits: &Limits,
    request: HttpRequest,
) -> Result<BatchRequest, ServiceError> {
    // Nothing is kept unless the HTTP body itself ends cleanly, past the multipart's closing delimiter.
    let (request, whole_body) = crate::api::body::Watched::new(request);
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| unreadable_body(&e, format!("multipart: {}", e.body_text())))?;
    let operations = expect_part(&mut multipart, "operations").await?;
    let mut batch: BatchRequest = serde_json::from_slice(&operations)
        .map_err(|e| invalid(format!("operations: not a GraphQL request: {e}")))?;
    super::http::check_documents(limits, &batch)?;
    let map = expect_part(&mut multipart, "map").await?;
    let mut map: HashMap<String, Vec<String>> = serde_json::from_slice(&map)
        .map_err(|e| invalid(format!("map: not an object of paths: {e}")))?;
    if map.len() > limits.max_files {
        return Err(invalid(format!(
            "map: the request has {} files; at most {} are allowed",
            map.len(),
            limits.max_files
        )));
    }
    let mut staged_bytes = 0u64;
    let request_count = match &batch {
        BatchRequest::Single(_) => 1,
        BatchRequest::Batch(requests) => requests.len(),
    };
    let staged: Vec<StagedUploads> = (0..request_count)
        .map(|_| StagedUploads::default())
        .collect();

    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| unreadable_body(&e, format!("multipart: {}", e.body_text())))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let paths = map
            .remove(&name)
            .ok_or_else(|| invalid(format!("map: the file part `{name}` is not in the map")))?;
        let [path] = paths.as_slice() else {
            return Err(invalid(format!(
                "map: the file part `{name}` must be used by exactly one variable"
            )));
        };
        let (index, variable_path) = split_path(&batch, path)?;
        let request = request_mut(&mut batch, index);
        let upload_index = request.uploads.len();
        request.set_upload(
            variable_path,
            UploadValue {
                filename: field.file_name().unwrap_or_default().to_owned(),
                content_type: field.content_type().map(str::to_owned),
                content: Default::default(),
            },
        );
        if request.uploads.len() == upload_index {
            return Err(invalid(format!(
                "map: `{path}` does not name a variable of the operation"
            )));
        }
        let body = field.map_err(body_io_error);
        let blob = service
            .stage_another_upload(Box::pin(body), staged_bytes)
            .await?;
        staged_bytes += blob.size;
        if let Ok(mut slots) = staged[index].0.lock() {
            slots.insert(upload_index, blob);
        }
    }
    if let Some(name) = map.keys().next() {
        return Err(invalid(format!("map: the file part `{name}` was not sent")));
    }
    drop(multipart);
    whole_body.finish().await?;
    for (index, uploads) in staged.into_iter().enumerate() {
        request_mut(&mut batch, index).data.insert(uploads);
    }
    Ok(batch)
}
