//! Components as MongoDB documents, in the original service's layout.
//!
//! The original's field names are kept exactly (`model_name`, `meta`, `RAM`, `GPU`, `model_id` / `storage_id` as
//! hex ObjectId strings), so a database it wrote is served as it is and what we write stays readable by it. Our
//! additions are fields the original never reads: `file` (size, sha256, content type, filename, upload time),
//! `created_at`, `updated_at` and `rev` (the optimistic-concurrency counter of metadata updates).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self as bson, Bson, DateTime as BsonDateTime, Document, doc};

use crate::domain::{
    Component, ComponentKey, FileNeeds, InferencerSpec, Kind, ModelSpec, Needs, Platform,
    ServiceSpec, Spec, StoredFile, TransformationSpec, Variant, signing::Signature,
};
use crate::store::StoreError;

/// The collection of each kind, named as in the original.
pub fn collection_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Model => "models",
        Kind::Transformation => "transformations",
        Kind::Service => "services",
        Kind::Inferencer => "inferencers",
    }
}

/// The field holding the GridFS id of a component's binary: the original named it differently for models.
pub fn file_ref_field(kind: Kind) -> &'static str {
    match kind {
        Kind::Model => "model_id",
        _ => "storage_id",
    }
}

/// The fields a listing of `kind` is sorted by, which are also its unique key.
pub fn key_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Model => &["model_name", "model_version"],
        _ => &["id"],
    }
}

/// The query selecting one component.
pub fn key_filter(key: &ComponentKey) -> Document {
    match key {
        ComponentKey::Model(m) => doc! { "model_name": &m.name, "model_version": &m.version },
        ComponentKey::Transformation { id }
        | ComponentKey::Service { id }
        | ComponentKey::Inferencer { id } => doc! { "id": id },
    }
}

/// The query selecting one component only while its revision is still `rev`: a compare-and-set guard. Documents the
/// original wrote have no revision yet, and `null` matches them (and only them).
pub fn revision_guard(key: &ComponentKey, rev: Option<i64>) -> Document {
    let mut guard = key_filter(key);
    guard.insert(
        "rev",
        rev.map_or(mongodb::bson::Bson::Null, mongodb::bson::Bson::Int64),
    );
    guard
}

/// The GridFS file name the original gave a component's binary: `model/{name}/{version}` or `{kind}/{id}`.
pub fn grid_filename(key: &ComponentKey) -> String {
    format!("{}/{}", key.kind().as_str(), key.path_segments().join("/"))
}

fn to_bson_date(t: DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(t.timestamp_millis())
}

fn string_map(map: &BTreeMap<String, String>) -> Document {
    map.iter()
        .map(|(k, v)| (k.clone(), Bson::String(v.clone())))
        .collect()
}

fn needs_document(needs: &Needs) -> Document {
    doc! {
        "storage": needs.storage,
        "RAM": needs.ram,
        "GPU": needs.gpu,
        "gpu_memory": needs.gpu_memory,
        "preinstalled_libraries": string_map(&needs.preinstalled_libraries),
        "available_models": string_map(&needs.available_models),
    }
}

/// The metadata fields of a spec, as `$set` by updates and written by inserts.
pub fn spec_fields(spec: &Spec) -> Result<Document, StoreError> {
    Ok(match spec {
        Spec::Model(m) => doc! {
            "meta": { "library": &m.library, "description": &m.description },
        },
        Spec::Transformation(t) => {
            let defaults = bson::to_bson(&t.default_values)
                .map_err(|e| StoreError::Backend(format!("encoding default values: {e}")))?;
            doc! {
                "description": &t.description,
                "parameter_types": string_map(&t.parameter_types),
                "default_values": defaults,
                "outputs": &t.outputs,
                "needs": needs_document(&t.needs),
            }
        }
        Spec::Service(s) => doc! {
            "description": &s.description,
            "needs": needs_document(&s.needs),
        },
        Spec::Inferencer(i) => doc! {
            "description": &i.description,
            "library": &i.library,
            "use_cuda": i.use_cuda,
            "needs": needs_document(&i.needs),
        },
    })
}

/// The `variants` field: per platform, the GridFS id and our record of the file.
pub fn variants_document(variants: &[Variant]) -> Vec<Document> {
    variants
        .iter()
        .map(|v| {
            let mut variant = doc! {
                "platform": {
                    "os": &v.platform.os,
                    "arch": &v.platform.arch,
                    "variant": v.platform.variant.as_deref(),
                    "accelerator": v.platform.accelerator.as_deref(),
                    "accelerator_version": v.platform.accelerator_version.as_deref(),
                    "precision": v.platform.precision.as_deref(),
                },
                "blob_id": &v.file.blob_id,
                "file": file_document(&v.file),
            };
            // Only builds that state needs have the field: `runnableOn` queries select them by its presence.
            if let Some(n) = &v.needs {
                variant.insert(
                    "needs",
                    doc! {
                        "storage": n.storage,
                        "RAM": n.ram,
                        "gpu_memory": n.gpu_memory,
                        "GPU": n.gpu,
                    },
                );
            }
            variant
        })
        .collect()
}

fn read_variants(document: &Document) -> Vec<Variant> {
    let Ok(items) = document.get_array("variants") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let item = item.as_document()?;
            let platform = item.get_document("platform").ok()?;
            let text = |name: &str| platform.get_str(name).ok().map(str::to_owned);
            let file = item.get_document("file").ok()?;
            Some(Variant {
                platform: Platform {
                    os: text("os")?,
                    arch: text("arch")?,
                    variant: text("variant"),
                    accelerator: text("accelerator"),
                    accelerator_version: text("accelerator_version"),
                    precision: text("precision"),
                },
                needs: item.get_document("needs").ok().map(|n| FileNeeds {
                    storage: number(n.get("storage")),
                    ram: number(n.get("RAM")),
                    gpu_memory: number(n.get("gpu_memory")),
                    gpu: n.get_bool("GPU").ok(),
                }),
                file: StoredFile {
                    blob_id: item.get_str("blob_id").ok()?.to_owned(),
                    size: u64::try_from(integer(file.get("size"))?).ok()?,
                    sha256: string(file, "sha256"),
                    content_type: string(file, "content_type"),
                    filename: string(file, "filename"),
                    uploaded_at: read_date(file.get("uploaded_at"))?,
                    signatures: read_signatures(file),
                },
            })
        })
        .collect()
}

/// Our record of a stored binary, kept beside the original's file reference.
pub fn file_document(file: &StoredFile) -> Document {
    let mut document = doc! {
        "size": file.size as i64,
        "sha256": &file.sha256,
        "content_type": &file.content_type,
        "filename": &file.filename,
        "uploaded_at": to_bson_date(file.uploaded_at),
    };
    if !file.signatures.is_empty() {
        let signatures: Vec<Document> = file
            .signatures
            .iter()
            .map(|s| {
                doc! {
                    "id": &s.id,
                    // Kept as the text that was sent, byte for byte (a BSON document would reorder nothing but
                    // could not promise the same bytes back).
                    "bundle": &s.bundle,
                    "added_at": to_bson_date(s.added_at),
                    "added_by": &s.added_by,
                }
            })
            .collect();
        document.insert("signatures", signatures);
    }
    document
}

fn read_signatures(file: &Document) -> Vec<Signature> {
    let Ok(items) = file.get_array("signatures") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let item = item.as_document()?;
            Some(Signature {
                id: item.get_str("id").ok()?.to_owned(),
                bundle: item.get_str("bundle").ok()?.to_owned(),
                added_at: read_date(item.get("added_at"))?,
                added_by: string(item, "added_by"),
            })
        })
        .collect()
}

/// A whole new component document.
pub fn to_document(component: &Component) -> Result<Document, StoreError> {
    let mut document = key_filter(&component.key);
    document.extend(spec_fields(&component.spec)?);
    let field = file_ref_field(component.kind());
    match &component.file {
        Some(file) => {
            document.insert(field, &file.blob_id);
            document.insert("file", file_document(file));
        }
        None => {
            document.insert(field, Bson::Null);
        }
    }
    document.insert("created_at", to_bson_date(component.created_at));
    document.insert("updated_at", to_bson_date(component.updated_at));
    document.insert("rev", component.revision as i64);
    if component.locked {
        document.insert("locked", true);
    }
    if !component.variants.is_empty() {
        document.insert("variants", variants_document(&component.variants));
    }
    // Aliases are never inserted with a component: they are set on it afterwards, with their own record.
    Ok(document)
}

/// The `$set` of a write: the fields of `after` that differ from `before`, and only fields this service knows, so
/// whatever else a document holds (fields the original service wrote) survives every write.
pub fn changed_fields(before: &Component, after: &Component) -> Result<Document, StoreError> {
    let mut set = Document::new();
    if before.spec != after.spec {
        set.extend(spec_fields(&after.spec)?);
    }
    if before.file != after.file {
        let field = file_ref_field(after.kind());
        match &after.file {
            Some(file) => {
                set.insert(field, &file.blob_id);
                set.insert("file", file_document(file));
            }
            None => {
                set.insert(field, Bson::Null);
            }
        }
    }
    if before.variants != after.variants {
        set.insert("variants", variants_document(&after.variants));
    }
    if before.locked != after.locked {
        set.insert("locked", after.locked);
    }
    if before.aliases != after.aliases {
        let marks: Vec<&String> = after.aliases.iter().collect();
        set.insert("aliases", marks);
    }
    if before.updated_at != after.updated_at {
        set.insert("updated_at", to_bson_date(after.updated_at));
    }
    Ok(set)
}

/// A component read back, with what the store must still look up about it.
pub struct Decoded {
    pub component: Component,
    /// The document's `rev` (absent in documents the original wrote).
    pub rev: Option<i64>,
    /// A GridFS file that the original referenced without our `file` record: the store fills in size and date
    /// from GridFS.
    pub legacy_file: Option<ObjectId>,
}

fn damaged(kind: Kind, what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("a stored {kind} document is damaged: {what}"))
}

fn string(document: &Document, field: &str) -> String {
    match document.get(field) {
        Some(Bson::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn number(value: Option<&Bson>) -> Option<f64> {
    match value {
        Some(Bson::Double(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(f64::from(*v)),
        Some(Bson::Int64(v)) => Some(*v as f64),
        _ => None,
    }
}

/// An integer, whichever BSON width the server chose for it (servers built on JSON storage narrow small ones).
pub fn integer(value: Option<&Bson>) -> Option<i64> {
    match value {
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Double(v)) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(*v as i64),
        _ => None,
    }
}

/// A boolean; servers built on SQLite may hand back integers for booleans they stored.
fn boolean(value: Option<&Bson>) -> bool {
    match value {
        Some(Bson::Boolean(b)) => *b,
        Some(Bson::Int32(n)) => *n != 0,
        Some(Bson::Int64(n)) => *n != 0,
        _ => false,
    }
}

/// A map of strings; the original stored missing maps as null, and versions may have been written as numbers.
fn read_string_map(value: Option<&Bson>) -> BTreeMap<String, String> {
    let Some(Bson::Document(map)) = value else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(k, v)| {
            let text = match v {
                Bson::String(s) => s.clone(),
                Bson::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

fn read_needs(document: &Document) -> Needs {
    let Ok(needs) = document.get_document("needs") else {
        return Needs::default();
    };
    Needs {
        storage: number(needs.get("storage")),
        ram: number(needs.get("RAM")),
        gpu: boolean(needs.get("GPU")),
        gpu_memory: number(needs.get("gpu_memory")),
        preinstalled_libraries: read_string_map(needs.get("preinstalled_libraries")),
        available_models: read_string_map(needs.get("available_models")),
    }
}

fn read_date(value: Option<&Bson>) -> Option<DateTime<Utc>> {
    match value {
        Some(Bson::DateTime(t)) => DateTime::from_timestamp_millis(t.timestamp_millis()),
        _ => None,
    }
}

fn read_key(kind: Kind, document: &Document) -> Result<ComponentKey, StoreError> {
    match kind {
        Kind::Model => ComponentKey::model(
            string(document, "model_name"),
            string(document, "model_version"),
        ),
        other => ComponentKey::with_id(other, string(document, "id")),
    }
    .map_err(|e| damaged(kind, e))
}

fn read_spec(kind: Kind, document: &Document) -> Result<Spec, StoreError> {
    Ok(match kind {
        Kind::Model => {
            let meta = document.get_document("meta").ok();
            let field = |name: &str| meta.map(|m| string(m, name)).unwrap_or_default();
            Spec::Model(ModelSpec {
                library: field("library"),
                description: field("description"),
            })
        }
        Kind::Transformation => Spec::Transformation(TransformationSpec {
            description: string(document, "description"),
            parameter_types: read_string_map(document.get("parameter_types")),
            default_values: match document.get("default_values") {
                Some(Bson::Document(values)) => {
                    bson::from_document(values.clone()).map_err(|e| damaged(kind, e))?
                }
                _ => serde_json::Map::new(),
            },
            outputs: match document.get("outputs") {
                Some(Bson::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Bson::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
                _ => Vec::new(),
            },
            needs: read_needs(document),
        }),
        Kind::Service => Spec::Service(ServiceSpec {
            description: string(document, "description"),
            needs: read_needs(document),
        }),
        Kind::Inferencer => Spec::Inferencer(InferencerSpec {
            description: string(document, "description"),
            library: string(document, "library"),
            use_cuda: boolean(document.get("use_cuda")),
            needs: read_needs(document),
        }),
    })
}

fn read_file(kind: Kind, document: &Document) -> (Option<StoredFile>, Option<ObjectId>) {
    let Some(Bson::String(blob_id)) = document.get(file_ref_field(kind)) else {
        return (None, None);
    };
    let recorded = document.get_document("file").ok().and_then(|file| {
        Some(StoredFile {
            blob_id: blob_id.clone(),
            size: u64::try_from(integer(file.get("size"))?).ok()?,
            sha256: string(file, "sha256"),
            content_type: string(file, "content_type"),
            filename: string(file, "filename"),
            uploaded_at: read_date(file.get("uploaded_at"))?,
            signatures: read_signatures(file),
        })
    });
    match recorded {
        Some(file) => (Some(file), None),
        None => (None, ObjectId::parse_str(blob_id).ok()),
    }
}

pub fn from_document(kind: Kind, document: &Document) -> Result<Decoded, StoreError> {
    let key = read_key(kind, document)?;
    let spec = read_spec(kind, document)?;
    let (file, legacy_file) = read_file(kind, document);
    // Documents the original wrote have no dates of ours: their ObjectId tells when they were created.
    let created_at = read_date(document.get("created_at"))
        .or_else(|| {
            document
                .get_object_id("_id")
                .ok()
                .and_then(|id| DateTime::from_timestamp_millis(id.timestamp().timestamp_millis()))
        })
        .unwrap_or_default();
    let updated_at = read_date(document.get("updated_at")).unwrap_or(created_at);
    Ok(Decoded {
        component: Component {
            key,
            spec,
            file,
            created_at,
            updated_at,
            aliases: document
                .get_array("aliases")
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            locked: boolean(document.get("locked")),
            variants: read_variants(document),
            // The optimistic-concurrency counter is the component's revision (0 in documents the original wrote).
            revision: integer(document.get("rev"))
                .and_then(|rev| u64::try_from(rev).ok())
                .unwrap_or(0),
        },
        rev: integer(document.get("rev")),
        legacy_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Component {
        let key = ComponentKey::with_id(Kind::Service, "inference.svc").unwrap();
        let spec = Spec::Service(ServiceSpec {
            description: "gRPC servicer".into(),
            needs: Needs {
                gpu_memory: None,
                ram: Some(1.5),
                storage: None,
                gpu: true,
                preinstalled_libraries: [("grpcio".to_string(), ">=1.50".to_string())].into(),
                available_models: [("fall-detection".to_string(), "pilot-2-1".to_string())].into(),
            },
        });
        Component::new(key, spec, Utc::now()).unwrap()
    }

    #[test]
    fn documents_use_the_original_field_names() {
        let document = to_document(&service()).unwrap();
        assert_eq!(document.get_str("id").unwrap(), "inference.svc");
        let needs = document.get_document("needs").unwrap();
        assert_eq!(needs.get_f64("RAM").unwrap(), 1.5);
        assert!(needs.get_bool("GPU").unwrap());
        assert_eq!(document.get("storage_id"), Some(&Bson::Null));
    }

    #[test]
    fn a_component_survives_the_round_trip() {
        let mut component = service();
        // BSON dates keep milliseconds.
        component.created_at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        component.updated_at = component.created_at;
        let decoded = from_document(Kind::Service, &to_document(&component).unwrap()).unwrap();
        assert_eq!(decoded.component, component);
        assert_eq!(decoded.rev, Some(0));
    }

    #[test]
    fn documents_of_the_original_are_read_leniently() {
        let id = ObjectId::new();
        let document = doc! {
            "_id": id,
            "id": "custom.img_transpose",
            "description": "transpose",
            "parameter_types": { "axes": "list" },
            "default_values": { "axes": [1, 0, 2] },
            "outputs": ["image"],
            "needs": { "storage": 1, "RAM": null, "GPU": false, "preinstalled_libraries": null, "available_models": null },
            "storage_id": id.to_hex(),
        };
        let decoded = from_document(Kind::Transformation, &document).unwrap();
        let Spec::Transformation(spec) = &decoded.component.spec else {
            panic!("not a transformation");
        };
        assert_eq!(spec.needs.storage, Some(1.0));
        assert_eq!(spec.needs.ram, None);
        assert_eq!(spec.default_values["axes"], serde_json::json!([1, 0, 2]));
        assert_eq!(
            decoded.legacy_file,
            Some(id),
            "the file is looked up in GridFS"
        );
        assert_eq!(decoded.rev, None);
    }
}
