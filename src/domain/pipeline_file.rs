//! An inference server's configuration files as it writes them, read into the [`Pipeline`] they name and the
//! [`Device`] to resolve it for: the body of `POST /pipelines/resolve` and the file of `--mirror-pipeline`.
//!
//! `{"setup", "model", "preprocessing", "postprocessing", "device"}`: the first four are `setup.json`, `model.json`,
//! `preprocessing_pipeline.json` and `postprocessing_pipeline.json` unchanged (what resolving does not use, such as
//! parameters and input formats, is ignored; any may be left out); `device` is GraphQL's `DeviceInput` as JSON.
//! What is fetched is what the inference server fetches: the model, each transformation by `id`, the servicer (its
//! zip carries the modules and the method) and the inferencer.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::pipeline::{ModelRef, Pipeline};
use super::{Device, DomainError, parse_device, validate_alias, validate_key_part};

/// The fields of the object; any other is refused (a misspelt `preprocesing` would otherwise resolve nothing).
const FIELDS: [&str; 5] = [
    "setup",
    "model",
    "preprocessing",
    "postprocessing",
    "device",
];

/// The pipeline and the device `value` names, or an error naming the field at fault.
pub fn parse_pipeline_file(value: &Value) -> Result<(Pipeline, Device), DomainError> {
    let Value::Object(body) = value else {
        return Err(DomainError::new(
            "body",
            "must be a JSON object: {\"setup\", \"model\", \"preprocessing\", \"postprocessing\", \"device\"}",
        ));
    };
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(DomainError::new(
            unknown.clone(),
            "is not a field of the body, which takes setup, model, preprocessing, postprocessing and device",
        ));
    }
    let device = match body.get("device") {
        Some(value) if !value.is_null() => {
            parse_device(value).map_err(|e| DomainError::new("device", e))?
        }
        _ => {
            return Err(DomainError::new(
                "device",
                "is required: the device to resolve for, as GraphQL's DeviceInput ({\"ram\": 4, \"libraries\": [...]})",
            ));
        }
    };
    let mut pipeline = Pipeline::default();
    if let Some(model) = part::<ModelFile>(body, "model", "model")? {
        validate_key_part("model.model_name", &model.model_name)?;
        if let Some(version) = &model.model_version {
            validate_key_part("model.model_version", version)?;
        }
        if let Some(alias) = &model.model_alias {
            validate_alias(alias).map_err(|e| DomainError::new("model.model_alias", e.reason))?;
        }
        pipeline.model = Some(match (model.model_version, model.model_alias) {
            (Some(version), None) => ModelRef::Version {
                name: model.model_name,
                version,
            },
            (None, Some(alias)) => ModelRef::Alias {
                name: model.model_name,
                alias,
            },
            _ => {
                return Err(DomainError::new(
                    "model",
                    "give exactly one of `model_version` and `model_alias` (an alias such as `production`)",
                ));
            }
        });
    }
    pipeline.preprocessing = steps(body, "preprocessing")?;
    pipeline.postprocessing = steps(body, "postprocessing")?;
    if let Some(setup) = body.get("setup").filter(|v| !v.is_null()) {
        let Value::Object(setup) = setup else {
            return Err(DomainError::new("setup", "must be the setup.json object"));
        };
        if let Some(servicer) =
            part::<ServiceSetup>(setup, "service", "setup.service")?.and_then(|s| s.servicer)
        {
            validate_key_part("setup.service.servicer", &servicer)?;
            pipeline.services.push(servicer);
        }
        pipeline.inferencer = part::<InferenceSetup>(setup, "inference", "setup.inference")?
            .and_then(|i| i.inferencer);
        if let Some(inferencer) = &pipeline.inferencer {
            validate_key_part("setup.inference.inferencer", inferencer)?;
        }
    }
    Ok((pipeline, device))
}

/// `object[field]` read as `T`; `None` when it is absent or null. `path` names it in errors.
fn part<T: DeserializeOwned>(
    object: &Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<Option<T>, DomainError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| DomainError::new(path, e.to_string())),
    }
}

/// The transformation ids of a pipeline file (`[{"id": ..., "parameters": ...}, ...]`), in order.
fn steps(body: &Map<String, Value>, field: &str) -> Result<Vec<String>, DomainError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let id = Step::deserialize(step)
                    .map_err(|e| DomainError::new(format!("{field}[{i}]"), e.to_string()))?
                    .id;
                validate_key_part(&format!("{field}[{i}].id"), &id)?;
                Ok(id)
            })
            .collect(),
        Some(_) => Err(DomainError::new(
            field,
            "must be the pipeline file's list of steps ([{\"id\": ..., \"parameters\": {...}}])",
        )),
    }
}

/// `model.json`: the model by name and version (or, ours, by alias); `library` and `input_format` are the
/// inference server's.
#[derive(Deserialize)]
struct ModelFile {
    model_name: String,
    model_version: Option<String>,
    model_alias: Option<String>,
}

/// A step of a pre- or postprocessing file; its `parameters` are the inference server's.
#[derive(Deserialize)]
struct Step {
    id: String,
}

/// `setup.service`: the servicer is fetched; its zip carries the `modules` and the `method`.
#[derive(Deserialize)]
struct ServiceSetup {
    servicer: Option<String>,
}

/// `setup.inference`: the inferencer is fetched; `use_cuda` is the inferencer's to read.
#[derive(Deserialize)]
struct InferenceSetup {
    inferencer: Option<String>,
}
