//! Certificate bundles: the chain from the signing certificate to a CA the policy trusts, checked the way
//! `model_signing verify certificate` (1.1.1) checks it, plus the identity the policy asks for.
//!
//! What model_signing checks (model_signing/_signing/sign_certificate.py) and so do we:
//! - the chain (leaf, then the bundle's other certificates) verifies with OpenSSL's X509Store up to a trusted
//!   certificate: each certificate signed by the next, issuers are CAs (basicConstraints cA, keyCertSign when a key
//!   usage is given, path length), no unknown critical extension;
//! - at the time the leaf was issued (its notBefore: the bundle has no trusted timestamp), not now: a signature
//!   made with a since-expired certificate still verifies;
//! - the leaf may sign: key usage digitalSignature, or else extended key usage codeSigning.
//!
//! model_signing checks no identity; the policy does: the leaf's subjectAltName must hold the rule's identity
//! exactly, as an rfc822Name (e-mail) or a URI.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;
use x509_parser::time::ASN1Time;

use super::keys::PublicKey;

/// Longest chain walked above the leaf; real PKIs use one or two intermediates.
const MAX_DEPTH: usize = 8;

/// Most certificates a bundle may carry (leaf, intermediates, and the root that model_signing users often add).
pub const MAX_CERTIFICATES: usize = MAX_DEPTH + 2;

/// Parses one DER certificate, refusing trailing bytes.
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok((&[], certificate)) => Ok(certificate),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

/// A trust anchor must be a CA: checked when the policy is read.
pub fn check_anchor(certificate: &X509Certificate<'_>) -> Result<(), String> {
    issuer_constraints(certificate, 0).map_err(|e| {
        e.replace(
            "is not a CA",
            "is not a CA certificate (basicConstraints cA)",
        )
    })?;
    unknown_critical(certificate)
}

/// The identities a certificate certifies: its subjectAltName e-mails and URIs.
pub fn identities(certificate: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::RFC822Name(email) => Some(email.to_string()),
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The signing certificate's key, if it is one a DSSE signature can be checked with.
pub fn leaf_key(leaf: &X509Certificate<'_>) -> Result<PublicKey, String> {
    PublicKey::from_spki(leaf.public_key())
        .map_err(|e| format!("the signing certificate's key is {e}"))
}

/// model_signing's usage check on the leaf.
pub fn check_leaf_usage(leaf: &X509Certificate<'_>) -> Result<(), String> {
    let digital_signature =
        matches!(leaf.key_usage(), Ok(Some(usage)) if usage.value.digital_signature());
    let code_signing =
        matches!(leaf.extended_key_usage(), Ok(Some(usage)) if usage.value.code_signing);
    if digital_signature || code_signing {
        Ok(())
    } else {
        Err(format!(
            "the signing certificate {} may not sign: it has neither key usage digitalSignature nor extended key usage codeSigning",
            leaf.subject()
        ))
    }
}

/// Walks from `leaf` through `intermediates` (the bundle's other certificates, any order) to `anchor`, checking
/// each step at the leaf's issuing time. The error names the certificate where the walk stopped.
pub fn chain_to(
    leaf: &X509Certificate<'_>,
    intermediates: &[X509Certificate<'_>],
    anchor: &X509Certificate<'_>,
) -> Result<(), String> {
    let at = leaf.validity().not_before;
    valid_at(leaf, at)?;
    unknown_critical(leaf)?;
    let mut current = leaf;
    let mut used = vec![false; intermediates.len()];
    for depth in 0..=MAX_DEPTH {
        if current.issuer().as_raw() == anchor.subject().as_raw() {
            return match current.verify_signature(Some(anchor.public_key())) {
                Ok(()) => {
                    issuer_constraints(anchor, depth)?;
                    valid_at(anchor, at)
                }
                Err(_) => Err(format!(
                    "the signature on {} does not verify with the key of the trusted CA {} (a different CA of the same name?)",
                    current.subject(),
                    anchor.subject()
                )),
            };
        }
        let next = intermediates.iter().enumerate().find(|(i, candidate)| {
            !used[*i]
                && candidate.subject().as_raw() == current.issuer().as_raw()
                && current
                    .verify_signature(Some(candidate.public_key()))
                    .is_ok()
        });
        let Some((i, issuer)) = next else {
            return Err(format!(
                "{} is issued by {}, which is neither the trusted CA {} nor a certificate of the bundle that signed it",
                current.subject(),
                current.issuer(),
                anchor.subject()
            ));
        };
        issuer_constraints(issuer, depth)?;
        valid_at(issuer, at)?;
        unknown_critical(issuer)?;
        used[i] = true;
        current = issuer;
    }
    Err(format!("the chain is longer than {MAX_DEPTH} certificates"))
}

/// What an issuer with `below` intermediates under it (leaf not counted) must be.
fn issuer_constraints(issuer: &X509Certificate<'_>, below: usize) -> Result<(), String> {
    let constraints = issuer
        .basic_constraints()
        .map_err(|e| format!("{}: unreadable basicConstraints: {e}", issuer.subject()))?;
    let Some(constraints) = constraints.filter(|c| c.value.ca) else {
        return Err(format!("{} is not a CA", issuer.subject()));
    };
    if let Some(limit) = constraints.value.path_len_constraint {
        if below > limit as usize {
            return Err(format!(
                "{} allows {limit} intermediate certificates below it; the chain has {below}",
                issuer.subject()
            ));
        }
    }
    // Name constraints limit which identities a CA may certify; they are not evaluated here, so a chain through a
    // CA that has them is refused rather than trusted beyond them (OpenSSL and model_signing enforce them).
    if issuer
        .extensions()
        .iter()
        .any(|e| matches!(e.parsed_extension(), ParsedExtension::NameConstraints(_)))
    {
        return Err(format!(
            "{} has name constraints, which this server does not evaluate: a chain through it is not trusted",
            issuer.subject()
        ));
    }
    if let Ok(Some(usage)) = issuer.key_usage() {
        if !usage.value.key_cert_sign() {
            return Err(format!(
                "{} may not sign certificates (its key usage lacks keyCertSign)",
                issuer.subject()
            ));
        }
    }
    Ok(())
}

fn valid_at(certificate: &X509Certificate<'_>, at: ASN1Time) -> Result<(), String> {
    if certificate.validity().is_valid_at(at) {
        Ok(())
    } else {
        let validity = certificate.validity();
        Err(format!(
            "{} was not valid when the signing certificate was issued ({at}; it is valid from {} to {})",
            certificate.subject(),
            validity.not_before,
            validity.not_after
        ))
    }
}

/// OpenSSL refuses a certificate with a critical extension it does not understand; so do we.
fn unknown_critical(certificate: &X509Certificate<'_>) -> Result<(), String> {
    match certificate.extensions().iter().find(|e| {
        e.critical
            && matches!(
                e.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
            )
    }) {
        Some(extension) => Err(format!(
            "{} has a critical extension {} that is not understood",
            certificate.subject(),
            extension.oid
        )),
        None => Ok(()),
    }
}
