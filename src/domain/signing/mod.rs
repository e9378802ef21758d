//! Signatures of files: OpenSSF Model Signing bundles (Sigstore bundle v0.3, a DSSE envelope over an in-toto
//! statement) and the trust policy that decides which of them verify. Pure: the policy's key files are read by the
//! caller and handed in as bytes.

mod bundle;
mod glob;
mod keys;
mod policy;
mod x509;

pub use bundle::{Bundle, BundleError, MAX_BUNDLE_BYTES, Material};
pub use policy::{PolicyError, Subject, TrustPolicy, Verdict};

/// Most signatures one file keeps (a publisher, approvers); more is refused rather than growing a document.
pub const MAX_SIGNATURES_PER_FILE: usize = 8;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A signature attached to a file: the bundle exactly as it was sent, and when and by whom. Whether it verifies is
/// not stored: it depends on the trust policy of the server that serves the file, checked when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The sha256 of the bundle: names it, and makes attaching the same bundle twice change nothing.
    pub id: String,
    pub bundle: String,
    pub added_at: DateTime<Utc>,
    /// The label of the token that attached it.
    pub added_by: String,
}

impl Signature {
    pub fn new(bundle: &Bundle, added_by: &str, now: DateTime<Utc>) -> Self {
        Self::new_raw(bundle.raw(), added_by, now)
    }

    /// A signature of bundle text as another server holds it (a mirror's upstream, an archive), parsed or not.
    pub fn new_raw(bundle: &str, added_by: &str, added_at: DateTime<Utc>) -> Self {
        use sha2::Digest as _;
        Self {
            id: hex::encode(sha2::Sha256::digest(bundle.as_bytes())),
            bundle: bundle.to_string(),
            added_at,
            added_by: added_by.to_string(),
        }
    }
}
