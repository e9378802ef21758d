//! The components themselves and the rules their metadata obeys.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ComponentKey, DomainError, Kind, validate_key_part};

/// Longest accepted free text (descriptions), in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most entries in one map or list of a component (libraries, parameters, outputs...).
pub const MAX_ENTRIES: usize = 1024;

/// What a transformation, service or inferencer needs from the device that runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Needs {
    /// Extra storage in GB; absent means none.
    pub storage: Option<f64>,
    /// RAM in GB; absent means none.
    pub ram: Option<f64>,
    pub gpu: bool,
    /// GPU memory in GB; absent means none (or unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<f64>,
    /// Library name -> required version (a PEP 440 version or specifier set, see [`super::version`]).
    pub preinstalled_libraries: BTreeMap<String, String>,
    /// Model name -> model version that must be present on the device.
    pub available_models: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub library: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransformationSpec {
    pub description: String,
    /// Parameter name -> type name (free text such as `int` or `np.ndarray`).
    pub parameter_types: BTreeMap<String, String>,
    /// Parameter name -> default value, any JSON.
    pub default_values: serde_json::Map<String, serde_json::Value>,
    pub outputs: Vec<String>,
    pub needs: Needs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub description: String,
    pub needs: Needs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InferencerSpec {
    pub description: String,
    pub library: String,
    pub use_cuda: bool,
    pub needs: Needs,
}

/// A change to a component's metadata, applied inside the store's own transaction so that concurrent uploads and
/// updates never overwrite each other. A store that detects a concurrent change re-applies it to the fresh
/// metadata, so it may run more than once.
pub type SpecUpdate = Box<dyn Fn(&mut Spec) -> Result<(), DomainError> + Send + Sync>;

/// The metadata of a component, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spec {
    Model(ModelSpec),
    Transformation(TransformationSpec),
    Service(ServiceSpec),
    Inferencer(InferencerSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Model(_) => Kind::Model,
            Spec::Transformation(_) => Kind::Transformation,
            Spec::Service(_) => Kind::Service,
            Spec::Inferencer(_) => Kind::Inferencer,
        }
    }

    pub fn description(&self) -> &str {
        match self {
            Spec::Model(m) => &m.description,
            Spec::Transformation(t) => &t.description,
            Spec::Service(s) => &s.description,
            Spec::Inferencer(i) => &i.description,
        }
    }

    /// The needs of the kinds that have them; models run wherever their inferencer runs.
    pub fn needs(&self) -> Option<&Needs> {
        match self {
            Spec::Model(_) => None,
            Spec::Transformation(t) => Some(&t.needs),
            Spec::Service(s) => Some(&s.needs),
            Spec::Inferencer(i) => Some(&i.needs),
        }
    }

    /// The library of a model or an inferencer.
    pub fn library(&self) -> Option<&str> {
        match self {
            Spec::Model(m) => Some(&m.library),
            Spec::Inferencer(i) => Some(&i.library),
            Spec::Transformation(_) | Spec::Service(_) => None,
        }
    }

    pub fn validate(&self) -> Result<(), DomainError> {
        validate_text("description", self.description())?;
        if let Some(library) = self.library() {
            validate_text("library", library)?;
        }
        if let Some(needs) = self.needs() {
            needs.validate()?;
        }
        if let Spec::Transformation(t) = self {
            validate_count("parameterTypes", t.parameter_types.len())?;
            validate_count("defaultValues", t.default_values.len())?;
            validate_count("outputs", t.outputs.len())?;
            for (name, ty) in &t.parameter_types {
                validate_name("parameterTypes", name)?;
                validate_text("parameterTypes", ty)?;
            }
            for name in t.default_values.keys() {
                validate_name("defaultValues", name)?;
            }
            for output in &t.outputs {
                validate_text("outputs", output)?;
            }
        }
        Ok(())
    }
}

impl Needs {
    pub fn validate(&self) -> Result<(), DomainError> {
        validate_gigabytes("needs.storage", self.storage)?;
        validate_gigabytes("needs.ram", self.ram)?;
        validate_gigabytes("needs.gpuMemory", self.gpu_memory)?;
        validate_count(
            "needs.preinstalledLibraries",
            self.preinstalled_libraries.len(),
        )?;
        validate_count("needs.availableModels", self.available_models.len())?;
        for (name, version) in &self.preinstalled_libraries {
            validate_name("needs.preinstalledLibraries", name)?;
            validate_text("needs.preinstalledLibraries", version)?;
            super::version::check_requirement(version).map_err(|reason| {
                DomainError::new(format!("needs.preinstalledLibraries.{name}"), reason)
            })?;
        }
        for (name, version) in &self.available_models {
            validate_key_part("needs.availableModels.name", name)?;
            validate_key_part("needs.availableModels.version", version)?;
        }
        Ok(())
    }
}

pub(super) fn validate_gigabytes(field: &str, value: Option<f64>) -> Result<(), DomainError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(DomainError::new(
            field,
            "must be a non-negative number of GB",
        )),
        _ => Ok(()),
    }
}

fn validate_text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(DomainError::new(
            field,
            format!("must be at most {MAX_TEXT_BYTES} bytes long"),
        ));
    }
    Ok(())
}

fn validate_name(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(DomainError::new(field, "names must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::new(
            field,
            "names must not contain control characters",
        ));
    }
    validate_text(field, value)
}

fn validate_count(field: &str, count: usize) -> Result<(), DomainError> {
    if count > MAX_ENTRIES {
        return Err(DomainError::new(
            field,
            format!("must have at most {MAX_ENTRIES} entries"),
        ));
    }
    Ok(())
}

/// The binary object of a component, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Backend-specific locator of the bytes: the sha256 for the embedded store, a GridFS id for MongoDB.
    pub blob_id: String,
    pub size: u64,
    /// Lower-case hex sha256 of the bytes; also the download's ETag.
    pub sha256: String,
    pub content_type: String,
    pub filename: String,
    pub uploaded_at: DateTime<Utc>,
    /// Signatures of these bytes (OpenSSF Model Signing bundles); they go with the file: a replacement has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<super::signing::Signature>,
}

/// One stored component: key, metadata and, once uploaded, its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub key: ComponentKey,
    pub spec: Spec,
    pub file: Option<StoredFile>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The aliases that name this model version; kept on the component so that a delete sees them in the same
    /// transaction (or document) and refuses to leave an alias pointing at nothing.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub aliases: BTreeSet<String>,
    /// Locked components keep their file and cannot be deleted, like every component under `--immutable-files`.
    /// A lock is permanent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    /// Files for particular platforms, besides the platform-neutral default `file`; one per platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<super::Variant>,
    /// Changes with every write of the component (metadata, files, lock, the aliases naming it): a client that
    /// read revision N writes "as of N" and is refused when someone else wrote in between (see [`Refusal::Stale`]).
    ///
    /// [`Refusal::Stale`]: super::Refusal::Stale
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Component {
    /// A new component without a file. Key and spec must be of the same kind.
    pub fn new(key: ComponentKey, spec: Spec, now: DateTime<Utc>) -> Result<Self, DomainError> {
        if key.kind() != spec.kind() {
            return Err(DomainError::new(
                "kind",
                format!("a {} key cannot hold {} metadata", key.kind(), spec.kind()),
            ));
        }
        spec.validate()?;
        Ok(Self {
            key,
            spec,
            file: None,
            created_at: now,
            updated_at: now,
            aliases: BTreeSet::new(),
            locked: false,
            variants: Vec::new(),
            revision: 0,
        })
    }

    pub fn kind(&self) -> Kind {
        self.key.kind()
    }

    /// Why this component's metadata may not change, or `None` when it may. A lock freezes the whole component
    /// (metadata, files, existence): what was locked is exactly what devices keep getting.
    pub fn metadata_change_refused(&self) -> Option<String> {
        self.locked.then(|| {
            format!(
                "{} is locked: its metadata cannot change, its files cannot be replaced and it cannot be deleted",
                self.key
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_or_nan_resources_are_refused() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let needs = Needs {
                ram: Some(bad),
                ..Needs::default()
            };
            assert!(needs.validate().is_err(), "{bad}");
        }
        let ok = Needs {
            ram: Some(0.0),
            storage: Some(2.5),
            ..Needs::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn key_and_spec_must_agree() {
        let key = ComponentKey::with_id(Kind::Service, "svc").unwrap();
        let spec = Spec::Model(ModelSpec::default());
        assert!(Component::new(key, spec, Utc::now()).is_err());
    }
}
