//! The trust policy: which keys and certificate authorities vouch for which components.

use crate::domain::{Kind, Sha256};

use super::Bundle;

/// A policy file that cannot be used: the server refuses to start (or keeps the previous policy on reload).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// What a signature is checked against: the file's component and its bytes as stored.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub kind: Kind,
    /// The model name, or the component id of the other kinds: what a rule's `match` glob is matched with.
    pub name: &'a str,
    pub sha256: &'a Sha256,
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub verified: bool,
    /// Who signed: a key's fingerprint (`sha256:<hex>` of its SubjectPublicKeyInfo) or a certificate's identity.
    pub signer: Option<String>,
    /// Why it did not verify; `None` when it did.
    pub reason: Option<String>,
}

impl Verdict {
    pub fn unverified(signer: Option<String>, reason: impl Into<String>) -> Self {
        Self {
            verified: false,
            signer,
            reason: Some(reason.into()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    _rules: Vec<()>,
}

impl TrustPolicy {
    /// Parses the policy's TOML; `read` returns the bytes of a file the policy names (a path relative to the policy
    /// file, as written there).
    pub fn from_toml(
        _text: &str,
        _read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<TrustPolicy, PolicyError> {
        Err(PolicyError("trust policies are not supported yet".into()))
    }

    /// Checks one signature of `subject`'s file.
    pub fn verify(&self, _subject: Subject<'_>, _bundle: &Bundle) -> Verdict {
        Verdict::unverified(None, "verification is not built yet")
    }
}
