//! `POST /pipelines/resolve`: an inference server's configuration files, sent as they are, resolved for one device.
//! The body is `{"setup", "model", "preprocessing", "postprocessing", "device"}`: the first four are the inference
//! server's `setup.json`, `model.json`, `preprocessing_pipeline.json` and `postprocessing_pipeline.json`, unchanged
//! (what the resolution does not use, such as parameters and input formats, is ignored), `device` is GraphQL's
//! `DeviceInput` as JSON. The answer has the field names and codes of GraphQL's `PipelineResolution`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::require_json;
use crate::api::error::ApiError;
use crate::api::graphql::pipeline::PipelineResolution;
use crate::api::state::AppState;
use crate::domain::parse_pipeline_file;
use crate::domain::pipeline::Pipeline;

/// Most bytes of a body: the configurations of a pipeline are a few kilobytes; parameters inline leave room.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

pub(super) async fn resolve(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    // Not the `Body` extractor: a top-level array is this route's 400 naming the shape, not a 422.
    require_json(request.headers())?;
    let bytes = Bytes::from_request(request, &state).await?;
    let (pipeline, device) = read_body(&bytes)?;
    let resolution = state.service.resolve_pipeline(&pipeline, &device).await?;
    // The answer is GraphQL's `PipelineResolution`, the same type serialised: one mapping for both transports.
    Ok(Json(PipelineResolution::new(resolution, &state.links)).into_response())
}

/// The pipeline and the device a body names, or a 400 that names the field at fault.
fn read_body(bytes: &[u8]) -> Result<(Pipeline, crate::domain::Device), ApiError> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    parse_pipeline_file(&body).map_err(|e| ApiError::BadRequest(e.to_string()))
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
