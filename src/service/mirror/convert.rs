//! The upstream's GraphQL answers, turned back into components exactly as the upstream holds them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::signing::Signature;
use crate::domain::{
    Component, ComponentKey, FileNeeds, InferencerSpec, Kind, ModelSpec, Needs, Platform,
    ServiceSpec, Sha256, Spec, StoredFile, TransformationSpec, Variant,
};

/// The fields of a file, selected on every component.
const FILE: &str =
    "size sha256 contentType filename uploadedAt signatures { bundle addedAt addedBy }";
const NEEDS: &str = "needs { storage ram gpu gpuMemory preinstalledLibraries { name version } \
                     availableModels { name version } }";

/// The fields a mirror keeps of a component of `kind`, with `__typename`.
pub fn fields(kind: Kind) -> String {
    let common = format!(
        "locked createdAt updatedAt file {{ {FILE} }} \
         variants {{ platform {{ os arch variant accelerator acceleratorVersion precision }} \
         needs {{ storage ram gpuMemory gpu }} file {{ {FILE} }} }}"
    );
    let own = match kind {
        Kind::Model => "name version library description aliases".to_string(),
        Kind::Transformation => {
            format!("id description parameterTypes defaultValues outputs {NEEDS}")
        }
        Kind::Service => format!("id description {NEEDS}"),
        Kind::Inferencer => format!("id description library useCuda {NEEDS}"),
    };
    format!("__typename {own} {common}")
}

/// The same for every kind, on the `Component` union (`runnableOn`).
pub fn selection() -> String {
    Kind::ALL
        .iter()
        .map(|kind| format!("... on {} {{ {} }}", type_name(*kind), fields(*kind)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Model => "Model",
        Kind::Transformation => "Transformation",
        Kind::Service => "Service",
        Kind::Inferencer => "Inferencer",
    }
}

/// Why an answer could not be read as a component.
#[derive(Debug, thiserror::Error)]
#[error("the upstream answered a component this mirror cannot read: {0}")]
pub struct Unreadable(String);

fn bad(what: impl Into<String>) -> Unreadable {
    Unreadable(what.into())
}

fn text(node: &Value, field: &str) -> Result<String, Unreadable> {
    node.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{field} is missing")))
}

fn opt_text(node: &Value, field: &str) -> Option<String> {
    node.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn time(node: &Value, field: &str) -> Result<chrono::DateTime<chrono::Utc>, Unreadable> {
    let raw = text(node, field)?;
    chrono::DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| bad(format!("{field}: {e}")))
}

fn file(node: &Value) -> Result<Option<StoredFile>, Unreadable> {
    if node.is_null() {
        return Ok(None);
    }
    // A file whose hash the upstream has not computed yet cannot be verified: the mirror waits for its hash.
    let sha256 = opt_text(node, "sha256").ok_or_else(|| {
        bad("a file has no sha256 yet (the upstream computes it in the background)")
    })?;
    // The digest names the file on disk: whatever the upstream says must be a digest, nothing else.
    let sha256 = Sha256::parse(&sha256)
        .map_err(|e| bad(format!("file.{e}")))?
        .as_str()
        .to_string();
    Ok(Some(StoredFile {
        blob_id: sha256.clone(),
        size: node
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("file.size is missing"))?,
        sha256,
        content_type: text(node, "contentType")?,
        filename: text(node, "filename")?,
        uploaded_at: time(node, "uploadedAt")?,
        signatures: signatures(node)?,
    }))
}

/// The signatures of a file as the upstream holds them: bundles only, which the mirror judges with its own trust
/// policy. A bundle that does not parse is kept (it verifies nowhere); its id is computed here, not taken.
fn signatures(node: &Value) -> Result<Vec<Signature>, Unreadable> {
    let Some(list) = node.get("signatures").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|s| {
            let bundle = text(s, "bundle")?;
            Ok(Signature::new_raw(
                &bundle,
                &text(s, "addedBy")?,
                time(s, "addedAt")?,
            ))
        })
        .collect()
}

fn pairs(node: &Value, field: &str) -> Result<BTreeMap<String, String>, Unreadable> {
    let list = node
        .get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{field} is missing")))?;
    list.iter()
        .map(|item| Ok((text(item, "name")?, text(item, "version")?)))
        .collect()
}

fn needs(node: &Value) -> Result<Needs, Unreadable> {
    let n = node.get("needs").ok_or_else(|| bad("needs is missing"))?;
    Ok(Needs {
        storage: n.get("storage").and_then(Value::as_f64),
        ram: n.get("ram").and_then(Value::as_f64),
        gpu: n.get("gpu").and_then(Value::as_bool).unwrap_or(false),
        gpu_memory: n.get("gpuMemory").and_then(Value::as_f64),
        preinstalled_libraries: pairs(n, "preinstalledLibraries")?,
        available_models: pairs(n, "availableModels")?,
    })
}

fn variants(node: &Value) -> Result<Vec<Variant>, Unreadable> {
    let Some(list) = node.get("variants").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|v| {
            let p = v.get("platform").ok_or_else(|| bad("variant.platform"))?;
            let platform = Platform::new(
                &text(p, "os")?,
                &text(p, "arch")?,
                opt_text(p, "variant").as_deref(),
                opt_text(p, "accelerator").as_deref(),
                opt_text(p, "acceleratorVersion").as_deref(),
            )
            .and_then(|p| {
                p.with_precision(
                    opt_text(v.get("platform").unwrap_or(&Value::Null), "precision").as_deref(),
                )
            })
            .map_err(|e| bad(e.to_string()))?;
            let needs = v.get("needs").filter(|n| !n.is_null()).map(|n| FileNeeds {
                storage: n.get("storage").and_then(Value::as_f64),
                ram: n.get("ram").and_then(Value::as_f64),
                gpu_memory: n.get("gpuMemory").and_then(Value::as_f64),
                gpu: n.get("gpu").and_then(Value::as_bool),
            });
            let file = file(v.get("file").unwrap_or(&Value::Null))?
                .ok_or_else(|| bad("variant.file is missing"))?;
            Ok(Variant {
                platform,
                file,
                needs,
            })
        })
        .collect()
}

/// A component from a node selected with [`selection`].
pub fn component(node: &Value) -> Result<Component, Unreadable> {
    let typename = text(node, "__typename")?;
    let (key, spec) = match typename.as_str() {
        "Model" => (
            ComponentKey::model(text(node, "name")?, text(node, "version")?),
            Spec::Model(ModelSpec {
                library: text(node, "library")?,
                description: text(node, "description")?,
            }),
        ),
        "Transformation" => (
            ComponentKey::with_id(Kind::Transformation, text(node, "id")?),
            Spec::Transformation(TransformationSpec {
                description: text(node, "description")?,
                parameter_types: node
                    .get("parameterTypes")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                default_values: node
                    .get("defaultValues")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                outputs: node
                    .get("outputs")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(|o| o.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                needs: needs(node)?,
            }),
        ),
        "Service" => (
            ComponentKey::with_id(Kind::Service, text(node, "id")?),
            Spec::Service(ServiceSpec {
                description: text(node, "description")?,
                needs: needs(node)?,
            }),
        ),
        "Inferencer" => (
            ComponentKey::with_id(Kind::Inferencer, text(node, "id")?),
            Spec::Inferencer(InferencerSpec {
                description: text(node, "description")?,
                library: text(node, "library")?,
                use_cuda: node
                    .get("useCuda")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                needs: needs(node)?,
            }),
        ),
        other => return Err(bad(format!("unknown component type {other}"))),
    };
    let key = key.map_err(|e| bad(e.to_string()))?;
    Ok(Component {
        key,
        spec,
        file: file(node.get("file").unwrap_or(&Value::Null))?,
        revision: node.get("revision").and_then(Value::as_u64).unwrap_or(0),
        created_at: time(node, "createdAt")?,
        updated_at: time(node, "updatedAt")?,
        aliases: node
            .get("aliases")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        locked: node.get("locked").and_then(Value::as_bool).unwrap_or(false),
        variants: variants(node)?,
    })
}
