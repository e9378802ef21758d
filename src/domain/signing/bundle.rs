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
const IN_TOTO_STATEMENT: &str = "https://in-toto.io/Statement/v1";

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
    /// Why the statement contradicts itself (its subject digest is not the hash of its resources' digests), as
    /// model_signing's verifier finds it; `None` when consistent.
    inconsistency: Option<String>,
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
    #[serde(rename = "_type")]
    statement_type: String,
    #[serde(default)]
    subject: Vec<StatementSubject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
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

/// model_signing's verifier (`dsse_payload_to_manifest`): exactly one subject, whose sha256 is the sha256 over the
/// raw bytes of every resource digest in the order listed.
fn inconsistency(statement: &Statement) -> Option<String> {
    let [subject] = statement.subject.as_slice() else {
        return Some(format!(
            "the statement has {} subjects; model_signing writes exactly one",
            statement.subject.len()
        ));
    };
    let Some(expected) = subject.digest.get("sha256") else {
        return Some("the statement's subject has no sha256 digest".into());
    };
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for resource in &statement.predicate.resources {
        match hex::decode(&resource.digest) {
            Ok(bytes) => sha2::Digest::update(&mut hasher, &bytes),
            Err(_) => {
                return Some(format!(
                    "the resource digest {:?} is not hex",
                    resource.digest
                ));
            }
        }
    }
    let obtained = hex::encode(sha2::Digest::finalize(hasher));
    (obtained != *expected).then(|| {
        format!(
            "the statement is inconsistent: its subject digest is {expected} but its resources hash to {obtained}"
        )
    })
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
        if statement.statement_type != IN_TOTO_STATEMENT {
            return Err(BundleError::Malformed(format!(
                "the payload's _type is {:?}; expected {IN_TOTO_STATEMENT}",
                statement.statement_type
            )));
        }
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
        let inconsistency = inconsistency(&statement);
        Ok(Bundle {
            raw: raw.to_string(),
            payload_type: envelope.payload_type,
            payload,
            signatures,
            material,
            digests,
            inconsistency,
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

    /// Why the statement is not what model_signing signs (one subject whose sha256 is the hash of the resources'
    /// digests, in order); `None` when it is.
    pub fn inconsistency(&self) -> Option<&str> {
        self.inconsistency.as_deref()
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

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `model_signing sign key` (1.1.1) over a file holding "hello\n".
    const HELLO: &str = include_str!("testdata/hello.p256.sig.json");

    fn edited(change: impl FnOnce(&mut serde_json::Value)) -> Result<Bundle, BundleError> {
        let mut value: serde_json::Value = serde_json::from_str(HELLO).unwrap();
        change(&mut value);
        Bundle::parse(&value.to_string())
    }

    fn statement_edited(
        change: impl FnOnce(&mut serde_json::Value),
    ) -> Result<Bundle, BundleError> {
        edited(|v| {
            let engine = base64::engine::general_purpose::STANDARD;
            let payload = engine
                .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
                .unwrap();
            let mut statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            change(&mut statement);
            v["dsseEnvelope"]["payload"] = engine.encode(statement.to_string()).into();
        })
    }

    #[track_caller]
    fn malformed(result: Result<Bundle, BundleError>, part: &str) {
        match result {
            Err(BundleError::Malformed(message)) => {
                assert!(message.contains(part), "{message:?} should say {part:?}")
            }
            other => panic!("expected Malformed({part:?}), got {other:?}"),
        }
    }

    #[test]
    fn the_clis_bundle_parses_as_sent() {
        let bundle = Bundle::parse(HELLO).unwrap();
        assert_eq!(bundle.raw(), HELLO);
        let hello =
            Sha256::parse("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
                .unwrap();
        assert!(bundle.names(&hello));
        assert!(bundle.inconsistency().is_none());
        assert!(matches!(bundle.material(), Material::PublicKey { hint } if hint.len() == 64));
        assert_eq!(bundle.signatures().len(), 1);
        assert!(
            bundle
                .signed_bytes()
                .starts_with(b"DSSEv1 28 application/vnd.in-toto+json ")
        );
    }

    #[test]
    fn bundles_that_are_not_model_signatures_are_refused_with_the_reason() {
        assert!(matches!(
            Bundle::parse("not json"),
            Err(BundleError::NotJson(_))
        ));
        assert!(matches!(
            Bundle::parse("{\"mediaType\": "),
            Err(BundleError::NotJson(_))
        ));
        assert!(matches!(
            Bundle::parse("[1, 2]"),
            Err(BundleError::Malformed(_))
        ));
        let padded = format!("{HELLO}{}", " ".repeat(MAX_BUNDLE_BYTES));
        assert_eq!(
            Bundle::parse(&padded).unwrap_err(),
            BundleError::TooLarge(padded.len())
        );
        assert_eq!(
            edited(|v| v["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.2+json".into())
                .unwrap_err(),
            BundleError::MediaType("application/vnd.dev.sigstore.bundle.v0.2+json".into())
        );
        malformed(
            edited(|v| {
                let envelope = v.as_object_mut().unwrap().remove("dsseEnvelope").unwrap();
                v["messageSignature"] = envelope;
            }),
            "no dsseEnvelope",
        );
        malformed(
            edited(|v| v["dsseEnvelope"]["payloadType"] = "text/plain".into()),
            "payloadType",
        );
        malformed(
            edited(|v| v["dsseEnvelope"]["signatures"] = serde_json::json!([])),
            "no signature",
        );
        malformed(
            edited(|v| v["dsseEnvelope"]["signatures"][0]["sig"] = "%%%".into()),
            "dsseEnvelope.signatures.sig is not base64",
        );
        malformed(
            edited(|v| v["dsseEnvelope"]["payload"] = "%%%".into()),
            "dsseEnvelope.payload is not base64",
        );
        malformed(
            edited(|v| v["verificationMaterial"] = serde_json::json!({ "tlogEntries": [] })),
            "neither a public key nor a certificate",
        );
        malformed(
            statement_edited(|s| s["_type"] = "https://in-toto.io/Statement/v0.1".into()),
            "_type",
        );
        malformed(
            statement_edited(|s| s["predicateType"] = "https://slsa.dev/provenance/v1".into()),
            "predicateType",
        );
        malformed(
            statement_edited(|s| s["predicate"]["resources"][0]["algorithm"] = "blake2".into()),
            "no sha256 digest",
        );
        malformed(
            statement_edited(|s| s["predicate"]["resources"][0]["digest"] = "ABC".into()),
            "a resource digest",
        );
    }

    #[test]
    fn a_statement_whose_subject_does_not_hash_its_resources_is_inconsistent() {
        let other = "a".repeat(64);
        let bundle =
            statement_edited(|s| s["predicate"]["resources"][0]["digest"] = other.clone().into())
                .unwrap();
        assert!(
            bundle
                .inconsistency()
                .unwrap()
                .contains("the statement is inconsistent")
        );
        let bundle = statement_edited(|s| s["subject"] = serde_json::json!([])).unwrap();
        assert!(bundle.inconsistency().unwrap().contains("0 subjects"));
    }
}
