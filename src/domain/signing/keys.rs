//! Public keys as the policy names them (PEM "PUBLIC KEY", SubjectPublicKeyInfo) and as certificates carry them,
//! reduced to what checks a DSSE signature: the curve, the raw key, and two names for it.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384};
use x509_parser::prelude::{FromDer as _, SubjectPublicKeyInfo};

/// The algorithms `model_signing` 1.1.1 signs with that `ring` verifies. model_signing signs with EC keys only;
/// its third curve, P-521, ring cannot verify: such keys (and Ed25519, RSA) are refused when the policy is read,
/// rather than silently never verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256, ASN.1 DER signatures (model_signing picks the hash by curve).
    P256,
    /// ECDSA over P-384 with SHA-384.
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    /// The key as `ring` takes it: the uncompressed EC point.
    raw: Vec<u8>,
    /// `sha256:<hex>` of the SubjectPublicKeyInfo DER: the signer name the registry shows.
    fingerprint: String,
    /// What model_signing writes as `verificationMaterial.publicKey.hint`: the hex sha256 of the key's PEM text.
    hint: String,
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo; the error says what is wrong in a few words.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the SubjectPublicKeyInfo".into());
        }
        Self::from_spki(&spki)
    }

    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, String> {
        let oid = &spki.algorithm.algorithm;
        let algorithm = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or("an EC key without a named curve")?;
            if curve == OID_EC_P256 {
                Algorithm::P256
            } else if curve == OID_NIST_EC_P384 {
                Algorithm::P384
            } else {
                return Err(format!(
                    "an EC key on curve {curve}; P-256 and P-384 are supported"
                ));
            }
        } else {
            return Err(format!(
                "a key of algorithm {oid}; model_signing signs with EC keys, of which P-256 and P-384 are supported"
            ));
        };
        let der = spki.raw;
        Ok(PublicKey {
            algorithm,
            raw: spki.subject_public_key.data.to_vec(),
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(der))),
            hint: hex::encode(Sha256::digest(pem_text(der))),
        })
    }

    #[cfg(test)]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// Whether `signature` (ASN.1 DER) signs `message` under this key.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature;
        let algorithm: &dyn signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        };
        signature::UnparsedPublicKey::new(algorithm, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// The PEM text Python's `cryptography` writes for a public key (64-column base64, `\n` line ends): model_signing
/// hashes exactly that for its key hint.
fn pem_text(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str("-----END PUBLIC KEY-----\n");
    text
}

/// The blocks of a PEM file with their labels; an error when there is none or one is broken.
pub fn pem_blocks(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut blocks = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        blocks.push((block.label, block.contents));
    }
    if blocks.is_empty() {
        return Err("not PEM: no -----BEGIN ...----- block".into());
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A P-256 key and the hint `model_signing sign key` wrote for it (sha256 of this exact PEM text).
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEMtwE5DHtX35+vXzQ8+iFFxo88je\n\
qr7p1Kd6lsYcupQh4K1OyiyvApFiaxfPksh3PK01L0vbFEn6dXItiUefag==\n\
-----END PUBLIC KEY-----\n";
    const P256_HINT: &str = "1023a05956ccf900f41e3f48184d6f577f1fa2826dae0ff6a1063c192a5562ad";

    #[test]
    fn pem_text_round_trips_the_file_layout() {
        let blocks = pem_blocks(P256_PEM.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].0, "PUBLIC KEY");
        assert_eq!(pem_text(&blocks[0].1), P256_PEM);
        let key = PublicKey::from_spki_der(&blocks[0].1).unwrap();
        assert_eq!(key.algorithm(), Algorithm::P256);
        assert_eq!(key.hint(), P256_HINT);
        assert!(key.fingerprint().starts_with("sha256:") && key.fingerprint().len() == 71);
    }

    #[test]
    fn text_without_pem_is_refused() {
        assert!(pem_blocks(b"just text").unwrap_err().contains("not PEM"));
        assert!(pem_blocks(b"").is_err());
    }
}
