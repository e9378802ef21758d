use thiserror::Error;

/// A value that breaks a rule of the domain: a bad key, a negative RAM figure, an unknown cursor...
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{field}: {reason}")]
pub struct DomainError {
    pub field: String,
    pub reason: String,
}

impl DomainError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
