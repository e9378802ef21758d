//! Component keys: what identifies a component, and the rules every key obeys.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Longest accepted key part, in bytes. Real ids are dotted Python module paths, far below this.
pub const MAX_KEY_BYTES: usize = 256;

/// The four kinds of component the repository stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Model,
    Transformation,
    Service,
    Inferencer,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Model,
        Kind::Transformation,
        Kind::Service,
        Kind::Inferencer,
    ];

    /// The kinds that carry `needs`, in the order mixed listings return them.
    pub const WITH_NEEDS: [Kind; 3] = [Kind::Transformation, Kind::Service, Kind::Inferencer];

    /// The path segment of the REST routes (`/model/...`, `/service/...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Transformation => "transformation",
            Kind::Service => "service",
            Kind::Inferencer => "inferencer",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Human label used in error messages, matching the original service ("Service not found").
    pub fn label(self) -> &'static str {
        match self {
            Kind::Model => "Model",
            Kind::Transformation => "Transformation",
            Kind::Service => "Service",
            Kind::Inferencer => "Inferencer",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model is identified by name and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey {
    pub name: String,
    pub version: String,
}

impl ModelKey {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Result<Self, DomainError> {
        let key = Self {
            name: name.into(),
            version: version.into(),
        };
        validate_key_part("name", &key.name)?;
        validate_key_part("version", &key.version)?;
        Ok(key)
    }
}

/// What identifies one component of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComponentKey {
    Model(ModelKey),
    Transformation { id: String },
    Service { id: String },
    Inferencer { id: String },
}

/// Separates name and version in sort keys. Control characters are refused in keys, so it is unambiguous,
/// and as the lowest code point it sorts every version of a name together, right after the bare name.
const SORT_SEPARATOR: char = '\u{0}';

impl ComponentKey {
    /// Builds the key of an id-keyed component, validating the id.
    pub fn with_id(kind: Kind, id: impl Into<String>) -> Result<Self, DomainError> {
        let id = id.into();
        validate_key_part("id", &id)?;
        Ok(match kind {
            Kind::Model => {
                return Err(DomainError::new(
                    "id",
                    "models are keyed by name and version",
                ));
            }
            Kind::Transformation => ComponentKey::Transformation { id },
            Kind::Service => ComponentKey::Service { id },
            Kind::Inferencer => ComponentKey::Inferencer { id },
        })
    }

    pub fn model(name: impl Into<String>, version: impl Into<String>) -> Result<Self, DomainError> {
        ModelKey::new(name, version).map(ComponentKey::Model)
    }

    /// Checks every part of a key that did not come through a constructor (read from an archive, for one).
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            ComponentKey::Model(m) => {
                validate_key_part("name", &m.name)?;
                validate_key_part("version", &m.version)
            }
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => validate_key_part("id", id),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            ComponentKey::Model(_) => Kind::Model,
            ComponentKey::Transformation { .. } => Kind::Transformation,
            ComponentKey::Service { .. } => Kind::Service,
            ComponentKey::Inferencer { .. } => Kind::Inferencer,
        }
    }

    /// The key's position in listings: ids sort as strings, models by name then version.
    pub fn sort_key(&self) -> String {
        match self {
            ComponentKey::Model(m) => format!("{}{SORT_SEPARATOR}{}", m.name, m.version),
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => id.clone(),
        }
    }

    /// Inverse of [`ComponentKey::sort_key`], validating what it reads.
    pub fn from_sort_key(kind: Kind, sort_key: &str) -> Result<Self, DomainError> {
        match kind {
            Kind::Model => {
                let (name, version) = sort_key
                    .split_once(SORT_SEPARATOR)
                    .ok_or_else(|| DomainError::new("key", "not a model key"))?;
                ComponentKey::model(name, version)
            }
            other => ComponentKey::with_id(other, sort_key),
        }
    }

    /// The text search looks at these: the id, or a model's name and version.
    pub fn search_text(&self) -> [&str; 2] {
        match self {
            ComponentKey::Model(m) => [&m.name, &m.version],
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => [id, ""],
        }
    }

    /// What a trust policy's `match` glob is matched with: a model's name (every version alike), or the id.
    pub fn subject_name(&self) -> &str {
        self.search_text()[0]
    }

    /// Path segments after the kind in REST routes: `[name, version]` or `[id]`.
    pub fn path_segments(&self) -> Vec<&str> {
        match self {
            ComponentKey::Model(m) => vec![&m.name, &m.version],
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => vec![id],
        }
    }
}

impl fmt::Display for ComponentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentKey::Model(m) => write!(f, "model {} version {}", m.name, m.version),
            ComponentKey::Transformation { id }
            | ComponentKey::Service { id }
            | ComponentKey::Inferencer { id } => write!(f, "{} {id}", self.kind()),
        }
    }
}

/// Rules for every part of a key. Keys end up in URL paths, file names of the original's GridFS layout and log
/// lines, so anything that could escape a path or forge a log line is refused.
pub fn validate_key_part(field: &str, value: &str) -> Result<(), DomainError> {
    let refuse = |reason: &str| Err(DomainError::new(field, reason));
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > MAX_KEY_BYTES {
        return refuse(&format!("must be at most {MAX_KEY_BYTES} bytes long"));
    }
    if value.contains(['/', '\\']) {
        return refuse("must not contain path separators ('/' or '\\')");
    }
    if value.contains("..") {
        return refuse("must not contain '..'");
    }
    if value == "." {
        // `/service/.` is normalised to `/service/` by every HTTP client: such a component could not be reached.
        return refuse("must not be '.'");
    }
    if value.chars().any(char::is_control) {
        return refuse("must not contain control characters");
    }
    if value.trim() != value {
        return refuse("must not start or end with whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_world_keys_are_accepted() {
        for id in [
            "inference_application.code.services.extended_inference_svc",
            "custom.img_transpose",
            "fall-detection",
            "pilot-2-1",
            "base2",
            "model v1 (final)",
        ] {
            assert_eq!(validate_key_part("id", id), Ok(()), "{id}");
        }
    }

    #[test]
    fn dangerous_keys_are_refused_with_a_reason() {
        let long = "a".repeat(MAX_KEY_BYTES + 1);
        for (id, reason) in [
            ("", "empty"),
            ("a/b", "path separators"),
            ("a\\b", "path separators"),
            ("..", "'..'"),
            ("a..b", "'..'"),
            (".", "'.'"),
            ("a\nb", "control"),
            ("a\u{0}b", "control"),
            (" a", "whitespace"),
            (long.as_str(), "at most"),
        ] {
            let err = validate_key_part("id", id).unwrap_err();
            assert!(err.reason.contains(reason), "{id:?}: {err}");
        }
    }

    #[test]
    fn sort_keys_round_trip_and_group_versions_by_name() {
        let a = ComponentKey::model("fall", "z").unwrap();
        let b = ComponentKey::model("fall-detection", "a").unwrap();
        assert!(a.sort_key() < b.sort_key());
        assert_eq!(
            ComponentKey::from_sort_key(Kind::Model, &a.sort_key()).unwrap(),
            a
        );
        let s = ComponentKey::with_id(Kind::Service, "x.y").unwrap();
        assert_eq!(
            ComponentKey::from_sort_key(Kind::Service, &s.sort_key()).unwrap(),
            s
        );
    }
}
