//! The original service's JSON shapes: what its clients send and expect back.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::domain::{
    Component, ComponentKey, InferencerSpec, Kind, ModelSpec, Needs, ServiceSpec, Spec,
    TransformationSpec,
};

/// `needs` as the original wrote it: upper-case `RAM` and `GPU`, maps that may be null.
/// What a component needs from the device that runs it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = Needs)]
pub struct OriginalNeeds {
    #[serde(default)]
    storage: Option<f64>,
    #[serde(rename = "RAM", default)]
    ram: Option<f64>,
    #[serde(rename = "GPU", default)]
    gpu: Option<bool>,
    /// GPU memory in GB (an addition of this server; the original has no such field).
    #[serde(default)]
    gpu_memory: Option<f64>,
    #[serde(default)]
    preinstalled_libraries: Option<BTreeMap<String, String>>,
    #[serde(default)]
    available_models: Option<BTreeMap<String, String>>,
}

impl From<OriginalNeeds> for Needs {
    fn from(n: OriginalNeeds) -> Needs {
        Needs {
            storage: n.storage,
            ram: n.ram,
            gpu: n.gpu.unwrap_or(false),
            gpu_memory: n.gpu_memory,
            preinstalled_libraries: n.preinstalled_libraries.unwrap_or_default(),
            available_models: n.available_models.unwrap_or_default(),
        }
    }
}

/// A model's metadata.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = ModelMeta)]
pub struct OriginalMeta {
    #[serde(default)]
    pub library: String,
    #[serde(default)]
    pub description: String,
}

/// A model, keyed by name and version. `model_id` names its stored file (null before an upload); sent, it is ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Model)]
pub struct OriginalModel {
    model_name: String,
    model_version: String,
    #[serde(default)]
    meta: OriginalMeta,
    /// Ignored: the server decides where files go.
    #[serde(default)]
    #[allow(dead_code)]
    model_id: Option<String>,
}

/// A transformation, service or inferencer, keyed by `id`; each kind reads the fields it has (`parameter_types`,
/// `default_values` and `outputs` for transformations; `library` and `use_cuda` for inferencers). `storage_id` names
/// its stored file (null before an upload); sent, it is ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = Component)]
pub struct OriginalComponent {
    id: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameter_types: Option<BTreeMap<String, String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    default_values: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
    #[serde(default)]
    library: String,
    #[serde(default)]
    use_cuda: bool,
    #[serde(default)]
    needs: Option<OriginalNeeds>,
    /// Ignored: the server decides where files go.
    #[serde(default)]
    #[allow(dead_code)]
    storage_id: Option<String>,
}

/// A request body that is not the JSON the route takes: 422, as FastAPI answered.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

/// Key and metadata of a `POST /model` body.
pub fn model(body: &[u8]) -> Result<(ComponentKey, Spec), ApiError> {
    let model: OriginalModel = parse(body)?;
    let key = ComponentKey::model(model.model_name, model.model_version)?;
    let spec = Spec::Model(ModelSpec {
        library: model.meta.library,
        description: model.meta.description,
    });
    Ok((key, spec))
}

/// Key and metadata of a body for `kind`. `path_id`, on `PUT /{kind}/meta/{id}`, is the component's id: a body id
/// that disagrees is refused (the original silently used the body's).
pub fn component(
    kind: Kind,
    body: &[u8],
    path_id: Option<&str>,
) -> Result<(ComponentKey, Spec), ApiError> {
    let original: OriginalComponent = parse(body)?;
    let id = match (path_id, original.id.as_deref()) {
        (Some(path), Some(body)) if path != body => {
            return Err(ApiError::BadRequest(format!(
                "the body's id {body:?} is not the id of the path, {path:?}"
            )));
        }
        (Some(path), _) => path.to_string(),
        (None, Some(body)) => body.to_string(),
        (None, None) => return Err(ApiError::InvalidBody("field `id` is required".into())),
    };
    let needs: Needs = original.needs.unwrap_or_default().into();
    let spec = match kind {
        Kind::Transformation => Spec::Transformation(TransformationSpec {
            description: original.description,
            parameter_types: original.parameter_types.unwrap_or_default(),
            default_values: original.default_values.unwrap_or_default(),
            outputs: original.outputs.unwrap_or_default(),
            needs,
        }),
        Kind::Service => Spec::Service(ServiceSpec {
            description: original.description,
            needs,
        }),
        Kind::Inferencer => Spec::Inferencer(InferencerSpec {
            description: original.description,
            library: original.library,
            use_cuda: original.use_cuda,
            needs,
        }),
        Kind::Model => {
            return Err(ApiError::BadRequest(
                "models are keyed by name and version".into(),
            ));
        }
    };
    Ok((ComponentKey::with_id(kind, id)?, spec))
}

fn needs_json(needs: &Needs) -> Value {
    let mut json = json!({
        "storage": needs.storage,
        "RAM": needs.ram,
        "GPU": needs.gpu,
        "preinstalled_libraries": needs.preinstalled_libraries,
        "available_models": needs.available_models,
    });
    // Only when set, so that the original's clients see exactly the fields they know.
    if let Some(gb) = needs.gpu_memory {
        json["gpu_memory"] = json!(gb);
    }
    json
}

/// A component as the original service answered it. `model_id` / `storage_id` name the stored file (null before
/// an upload); with this server they are its sha256 or GridFS id.
pub fn json(component: &Component) -> Value {
    let file_id = component.file.as_ref().map(|f| f.blob_id.clone());
    match (&component.key, &component.spec) {
        (ComponentKey::Model(key), Spec::Model(spec)) => json!({
            "model_name": key.name,
            "model_version": key.version,
            "meta": { "library": spec.library, "description": spec.description },
            "model_id": file_id,
        }),
        (key, Spec::Transformation(t)) => json!({
            "id": key.path_segments()[0],
            "description": t.description,
            "parameter_types": t.parameter_types,
            "default_values": t.default_values,
            "outputs": t.outputs,
            "needs": needs_json(&t.needs),
            "storage_id": file_id,
        }),
        (key, Spec::Service(s)) => json!({
            "id": key.path_segments()[0],
            "description": s.description,
            "needs": needs_json(&s.needs),
            "storage_id": file_id,
        }),
        (key, Spec::Inferencer(i)) => json!({
            "id": key.path_segments()[0],
            "description": i.description,
            "library": i.library,
            "use_cuda": i.use_cuda,
            "needs": needs_json(&i.needs),
            "storage_id": file_id,
        }),
        _ => Value::Null,
    }
}
