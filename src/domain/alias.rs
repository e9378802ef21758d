//! Model aliases: a name such as `production` that points at one version of a model and moves over time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DomainError, validate_key_part};

/// Longest alias, in bytes.
pub const MAX_ALIAS_BYTES: usize = 128;

/// One move of an alias: set (`from` empty), moved, or removed (`to` empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    pub model: String,
    pub alias: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub at: DateTime<Utc>,
    /// The label of the token that made the move (never the token itself).
    pub by: String,
    /// A rollout's end: the move it made (or, when it left the alias where it was, a record of the alias staying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::RolloutOutcome>,
}

/// An alias as a store holds it, for moving it to another store: where it points (`None` once deleted) and
/// every move, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub model: String,
    pub alias: String,
    pub version: Option<String>,
    pub history: Vec<AliasMove>,
}

impl AliasRecord {
    /// An alias known by name only, before its pointer and history are filled in.
    pub fn empty(model: &str, alias: &str) -> Self {
        Self {
            model: model.to_string(),
            alias: alias.to_string(),
            version: None,
            history: Vec::new(),
        }
    }

    /// The move that put the alias where it points, for its event: the last of its history when that is it.
    pub fn last_move(&self) -> AliasMove {
        match self.history.last() {
            Some(last) if last.to == self.version => last.clone(),
            last => AliasMove {
                model: self.model.clone(),
                alias: self.alias.clone(),
                from: None,
                to: self.version.clone(),
                at: super::now(),
                by: last.map(|m| m.by.clone()).unwrap_or_default(),
                rollout: None,
            },
        }
    }
}

/// An alias is written after `@` in URLs (`/model/{name}/@{alias}`), so it obeys the rules of key parts and holds
/// no `@` itself.
pub fn validate_alias(alias: &str) -> Result<(), DomainError> {
    validate_key_part("alias", alias)?;
    if alias.len() > MAX_ALIAS_BYTES {
        return Err(DomainError::new(
            "alias",
            format!("must be at most {MAX_ALIAS_BYTES} bytes long"),
        ));
    }
    if alias.contains('@') {
        return Err(DomainError::new("alias", "must not contain '@'"));
    }
    Ok(())
}

/// Versions starting with `@` would read as aliases in URLs, so new models cannot have one.
pub fn validate_new_version(version: &str) -> Result<(), DomainError> {
    if version.starts_with('@') {
        return Err(DomainError::new(
            "version",
            "must not start with '@', which marks an alias in URLs",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_plain_names() {
        assert!(validate_alias("production").is_ok());
        for bad in ["", "a/b", "@prod", "pro@d", " x", &"a".repeat(129)] {
            assert!(validate_alias(bad).is_err(), "{bad:?}");
        }
        assert!(validate_new_version("@prod").is_err());
        assert!(validate_new_version("pilot-2-1").is_ok());
    }
}
