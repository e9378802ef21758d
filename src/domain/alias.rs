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
