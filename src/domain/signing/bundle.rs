//! A Sigstore bundle as `model_signing` writes it, parsed for what the registry needs before any key is involved:
//! the DSSE envelope and the digests its statement lists.

use base64::Engine as _;
use serde::Deserialize;

use crate::domain::Sha256;

/// Largest accepted bundle: a key-signed bundle is about 2 KiB, a certificate chain adds a few more.
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024;

const MEDIA_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
];
const IN_TOTO_PAYLOAD: &str = "application/vnd.in-toto+json";

/// Why a bundle cannot be attached; every variant is the sender's mistake.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is {0} bytes; at most {MAX_BUNDLE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the bundle is not JSON: {0}")]
    NotJson(String),
    #[error(
        "the bundle's mediaType is {0:?}; expected application/vnd.dev.sigstore.bundle.v0.3+json"
    )]
    MediaType(String),
    #[error("the bundle is malformed: {0}")]
    Malformed(String),
}

/// A parsed bundle; `raw` is kept exactly as sent.
#[derive(Debug, Clone)]
pub struct Bundle {
    raw: String,
    payload_type: String,
    payload: Vec<u8>,
    signatures: Vec<Vec<u8>>,
    material: Material,
    digests: Vec<Sha256>,
}

/// What the bundle says about who signed: a hint naming a public key, or a certificate chain (leaf first, DER).
#[derive(Debug, Clone)]
pub enum Material {
    PublicKey { hint: String },
    Certificates(Vec<Vec<u8>>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    public_key: Option<RawHint>,
    x509_certificate_chain: Option<RawChain>,
    certificate: Option<RawCertificate>,
}

#[derive(Deserialize)]
struct RawHint {
    #[serde(default)]
    hint: String,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawSignature>,
}

#[derive(Deserialize)]
struct RawSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Deserialize)]
struct Predicate {
    resources: Vec<Resource>,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    digest: String,
}

fn base64_field(field: &str, text: &str) -> Result<Vec<u8>, BundleError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| BundleError::Malformed(format!("{field} is not base64: {e}")))
}

impl Bundle {
    pub fn parse(raw: &str) -> Result<Bundle, BundleError> {
        if raw.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(raw.len()));
        }
        let bundle: RawBundle = serde_json::from_str(raw).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => BundleError::Malformed(e.to_string()),
            _ => BundleError::NotJson(e.to_string()),
        })?;
        if !MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
            return Err(BundleError::MediaType(bundle.media_type));
        }
        let envelope = bundle.dsse_envelope.ok_or_else(|| {
            BundleError::Malformed(
                "no dsseEnvelope (message signatures are not model signatures)".into(),
            )
        })?;
        if envelope.payload_type != IN_TOTO_PAYLOAD {
            return Err(BundleError::Malformed(format!(
                "the envelope's payloadType is {:?}; expected {IN_TOTO_PAYLOAD}",
                envelope.payload_type
            )));
        }
        if envelope.signatures.is_empty() {
            return Err(BundleError::Malformed(
                "the envelope has no signature".into(),
            ));
        }
        let signatures = envelope
            .signatures
            .iter()
            .map(|s| base64_field("dsseEnvelope.signatures.sig", &s.sig))
            .collect::<Result<Vec<_>, _>>()?;
        let payload = base64_field("dsseEnvelope.payload", &envelope.payload)?;
        let material = match bundle.verification_material {
            RawMaterial {
                x509_certificate_chain: Some(chain),
                ..
            } if !chain.certificates.is_empty() => Material::Certificates(
                chain
                    .certificates
                    .iter()
                    .map(|c| base64_field("x509CertificateChain", &c.raw_bytes))
                    .collect::<Result<_, _>>()?,
            ),
            RawMaterial {
                certificate: Some(certificate),
                ..
            } => Material::Certificates(vec![base64_field("certificate", &certificate.raw_bytes)?]),
            RawMaterial {
                public_key: Some(key),
                ..
            } => Material::PublicKey { hint: key.hint },
            _ => {
                return Err(BundleError::Malformed(
                    "verificationMaterial names neither a public key nor a certificate".into(),
                ));
            }
        };
        let statement: Statement = serde_json::from_slice(&payload).map_err(|e| {
            BundleError::Malformed(format!(
                "the envelope's payload is no in-toto statement: {e}"
            ))
        })?;
        if statement.predicate_type != "https://model_signing/signature/v1.0" {
            return Err(BundleError::Malformed(format!(
                "the statement's predicateType is {:?}; expected https://model_signing/signature/v1.0",
                statement.predicate_type
            )));
        }
        let digests = statement
            .predicate
            .resources
            .iter()
            .filter(|r| r.algorithm == "sha256")
            .map(|r| {
                Sha256::parse(&r.digest)
                    .map_err(|e| BundleError::Malformed(format!("a resource digest: {}", e.reason)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if digests.is_empty() {
            return Err(BundleError::Malformed(
                "the statement lists no sha256 digest of a file".into(),
            ));
        }
        Ok(Bundle {
            raw: raw.to_string(),
            payload_type: envelope.payload_type,
            payload,
            signatures,
            material,
            digests,
        })
    }

    /// The bundle exactly as it was sent.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether the statement lists these bytes among the files it signs.
    pub fn names(&self, sha256: &Sha256) -> bool {
        self.digests.contains(sha256)
    }

    pub fn digests(&self) -> &[Sha256] {
        &self.digests
    }

    pub fn material(&self) -> &Material {
        &self.material
    }

    /// DSSE's pre-authentication encoding: what the signatures sign.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut pae = format!(
            "DSSEv1 {} {} {} ",
            self.payload_type.len(),
            self.payload_type,
            self.payload.len()
        )
        .into_bytes();
        pae.extend_from_slice(&self.payload);
        pae
    }

    pub fn signatures(&self) -> &[Vec<u8>] {
        &self.signatures
    }
}
