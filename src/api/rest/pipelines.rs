//! `POST /pipelines/resolve`: an inference server's configuration files, sent as they are, resolved for one device.
//! The body is `{"setup", "model", "preprocessing", "postprocessing", "device"}`: the first four are the inference
//! server's `setup.json`, `model.json`, `preprocessing_pipeline.json` and `postprocessing_pipeline.json`, unchanged
//! (what the resolution does not use, such as parameters and input formats, is ignored), `device` is GraphQL's
//! `DeviceInput` as JSON. The answer has the field names and codes of GraphQL's `PipelineResolution`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::is_json;
use crate::api::error::ApiError;
use crate::api::state::{AppState, Links};
use crate::domain::parse_pipeline_file;
use crate::domain::pipeline::{Pipeline, ProblemCode, Resolution, Role};

/// Most bytes of a body: the configurations of a pipeline are a few kilobytes; parameters inline leave room.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

pub(super) async fn resolve(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_json(content_type) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON, sent with `content-type: application/json`, not {content_type:?}"
        )));
    }
    let bytes = Bytes::from_request(request, &state).await?;
    let (pipeline, device) = read_body(&bytes)?;
    let resolution = state.service.resolve_pipeline(&pipeline, &device).await?;
    Ok(Json(PipelineResolution::new(resolution, &state.links)).into_response())
}

/// The pipeline and the device a body names, or a 400 that names the field at fault.
fn read_body(bytes: &[u8]) -> Result<(Pipeline, crate::domain::Device), ApiError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    parse_pipeline_file(&body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The answer: GraphQL's `PipelineResolution`, field for field.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineResolution {
    /// True when there are no problems: the pipeline starts on the device with these files.
    fits: bool,
    components: Vec<PipelineComponent>,
    totals: PipelineTotals,
    problems: Vec<PipelineProblem>,
    /// `sha256:` over every part and the file chosen for it: it changes exactly when what the device would fetch
    /// changes.
    lock: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineComponent {
    /// `MODEL`, `PREPROCESSING`, `POSTPROCESSING`, `SERVICE` or `INFERENCER`.
    role: &'static str,
    /// `model`, `transformation`, `service` or `inferencer`.
    kind: String,
    /// The part's key (`model fall-detection version pilot-2-2`); for a model named by an alias, the version it names.
    key: String,
    /// The file the device fetches; null when there is none (see `problems`).
    file: Option<PipelineFile>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineFile {
    sha256: String,
    size: u64,
    filename: String,
    download_url: String,
    /// The build's platform; null for the platform-neutral default file.
    platform: Option<PipelinePlatform>,
    /// The needs the device meets with this file.
    needs: PipelineFileNeeds,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelinePlatform {
    os: String,
    arch: String,
    variant: Option<String>,
    accelerator: Option<String>,
    accelerator_version: Option<String>,
    precision: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineFileNeeds {
    storage: Option<f64>,
    ram: Option<f64>,
    gpu_memory: Option<f64>,
    gpu: Option<bool>,
}

/// Sums over the distinct parts, which share one process on the device.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineTotals {
    ram: f64,
    gpu_memory: f64,
    storage: f64,
    gpu: bool,
    download_bytes: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineProblem {
    /// The part's role; null for the pipeline as a whole (sums, conflicts).
    role: Option<&'static str>,
    /// The part's key; for a conflict, the first of the two parts.
    component: Option<String>,
    /// `MISSING_COMPONENT`, `MISSING_MODEL_VERSION`, `NO_FILE`, `NO_FILE_FOR_PLATFORM`, `GPU_REQUIRED`,
    /// `RAM_EXCEEDED`, `GPU_MEMORY_EXCEEDED`, `STORAGE_EXCEEDED`, `LIBRARY_MISSING`, `LIBRARY_VERSION`,
    /// `LIBRARY_CONFLICT` or `MODEL_ABSENT`.
    code: &'static str,
    message: String,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Model => "MODEL",
        Role::Preprocessing => "PREPROCESSING",
        Role::Postprocessing => "POSTPROCESSING",
        Role::Service => "SERVICE",
        Role::Inferencer => "INFERENCER",
    }
}

fn code_name(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::MissingComponent => "MISSING_COMPONENT",
        ProblemCode::MissingModelVersion => "MISSING_MODEL_VERSION",
        ProblemCode::NoFile => "NO_FILE",
        ProblemCode::NoFileForPlatform => "NO_FILE_FOR_PLATFORM",
        ProblemCode::GpuRequired => "GPU_REQUIRED",
        ProblemCode::RamExceeded => "RAM_EXCEEDED",
        ProblemCode::GpuMemoryExceeded => "GPU_MEMORY_EXCEEDED",
        ProblemCode::StorageExceeded => "STORAGE_EXCEEDED",
        ProblemCode::LibraryMissing => "LIBRARY_MISSING",
        ProblemCode::LibraryVersion => "LIBRARY_VERSION",
        ProblemCode::LibraryConflict => "LIBRARY_CONFLICT",
        ProblemCode::ModelAbsent => "MODEL_ABSENT",
    }
}

impl PipelineResolution {
    fn new(resolution: Resolution, links: &Links) -> Self {
        let components = resolution
            .components
            .into_iter()
            .map(|c| PipelineComponent {
                role: role_name(c.role),
                kind: c
                    .key
                    .as_ref()
                    .map_or("model", |k| k.kind().as_str())
                    .to_string(),
                key: c.key.as_ref().map_or(c.named.clone(), ToString::to_string),
                file: c.file.map(|(file, variant, needs)| PipelineFile {
                    download_url: links.named_blob_url(&file.sha256, &file.filename),
                    sha256: file.sha256,
                    size: file.size,
                    filename: file.filename,
                    platform: variant.map(|v| PipelinePlatform {
                        os: v.platform.os,
                        arch: v.platform.arch,
                        variant: v.platform.variant,
                        accelerator: v.platform.accelerator,
                        accelerator_version: v.platform.accelerator_version,
                        precision: v.platform.precision,
                    }),
                    needs: PipelineFileNeeds {
                        storage: needs.storage,
                        ram: needs.ram,
                        gpu_memory: needs.gpu_memory,
                        gpu: Some(needs.gpu),
                    },
                }),
            })
            .collect();
        let totals = resolution.totals;
        PipelineResolution {
            fits: resolution.fits,
            components,
            totals: PipelineTotals {
                ram: totals.ram,
                gpu_memory: totals.gpu_memory,
                storage: totals.storage,
                gpu: totals.gpu,
                download_bytes: totals.download_bytes,
            },
            problems: resolution
                .problems
                .into_iter()
                .map(|p| PipelineProblem {
                    role: p.role.map(role_name),
                    component: p.component,
                    code: code_name(p.code),
                    message: p.message,
                })
                .collect(),
            lock: resolution.lock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pipeline::ModelRef;

    fn message(body: &str) -> String {
        match read_body(body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => message,
            Err(other) => panic!("{body}: not a 400: {other:?}"),
            Ok(_) => panic!("{body}: accepted"),
        }
    }

    #[test]
    fn the_inference_servers_files_are_read_as_they_are() {
        let (pipeline, device) = read_body(
            br#"{"setup": {"service": {"modules": ["custom"], "method": "m", "servicer": "svc"},
                           "inference": {"inferencer": "inf", "use_cuda": true}},
                 "model": {"model_name": "fall-detection", "model_version": "pilot-2-2", "library": "tflite",
                           "input_format": {"data_types": {}}},
                 "preprocessing": [{"id": "a", "parameters": {}}, {"id": "b", "parameters": {"axis": 0}}],
                 "postprocessing": [{"id": "c", "parameters": {}}],
                 "device": {"ram": 4, "gpuMemory": 8, "libraries": [{"name": "numpy", "version": "1.23.5"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            pipeline,
            Pipeline {
                model: Some(ModelRef::Version {
                    name: "fall-detection".into(),
                    version: "pilot-2-2".into()
                }),
                preprocessing: vec!["a".into(), "b".into()],
                postprocessing: vec!["c".into()],
                services: vec!["svc".into()],
                inferencer: Some("inf".into()),
            }
        );
        assert_eq!((device.ram, device.gpu_memory), (Some(4.0), Some(8.0)));
        // Parts may be left out; an alias may stand for the version.
        let (pipeline, _) = read_body(
            br#"{"model": {"model_name": "m", "model_alias": "production"}, "device": {}}"#,
        )
        .unwrap();
        assert_eq!(
            pipeline.model,
            Some(ModelRef::Alias {
                name: "m".into(),
                alias: "production".into()
            })
        );
        assert!(pipeline.preprocessing.is_empty() && pipeline.inferencer.is_none());
    }

    #[test]
    fn a_body_of_another_shape_names_the_field() {
        for (body, field) in [
            ("{", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"preprocesing": [], "device": {}}"#, "preprocesing:"),
            (r#"{"model": {"model_name": "m"}}"#, "device:"),
            (r#"{"device": {"ram": "lots"}}"#, "device:"),
            (r#"{"device": {"memory": 4}}"#, "device:"),
            (
                r#"{"model": {"model_version": "1"}, "device": {}}"#,
                "model:",
            ),
            (
                r#"{"model": {"model_name": "m", "model_version": "1", "model_alias": "p"}, "device": {}}"#,
                "model:",
            ),
            (r#"{"model": {"model_name": "m"}, "device": {}}"#, "model:"),
            (
                r#"{"preprocessing": [{"id": "a"}, {"parameters": {}}], "device": {}}"#,
                "preprocessing[1]:",
            ),
            (
                r#"{"postprocessing": {"id": "a"}, "device": {}}"#,
                "postprocessing:",
            ),
            (r#"{"setup": [], "device": {}}"#, "setup:"),
            (
                r#"{"preprocessing": [{"id": "a/b"}], "device": {}}"#,
                "preprocessing[0].id:",
            ),
            (
                r#"{"model": {"model_name": "m", "model_version": ".."}, "device": {}}"#,
                "model.model_version:",
            ),
            (
                r#"{"setup": {"service": {"servicer": ""}}, "device": {}}"#,
                "setup.service.servicer:",
            ),
            (
                r#"{"setup": {"inference": {"inferencer": 3}}, "device": {}}"#,
                "setup.inference:",
            ),
        ] {
            let message = message(body);
            assert!(message.contains(field), "{body}: {message}");
        }
    }
}
