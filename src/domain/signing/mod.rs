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
