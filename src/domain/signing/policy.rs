//! The trust policy: which keys and certificate authorities vouch for which components.
//!
//! ```toml
//! [[rule]]
//! kinds = ["model"]                      # model, transformation, service, inferencer; every kind when left out
//! match = "fall-*"                       # glob on the model name or the component id (required; "*" for all)
//! keys = ["publisher.pub.pem"]           # PEM public keys, paths relative to the policy file
//! certificates = [{ ca = "ca.pem", identity = "release@example.org" }]
//! ```

use std::sync::Arc;

use crate::domain::{Kind, Sha256};

use super::keys::{PublicKey, pem_blocks};
use super::{Bundle, Material, glob, x509};

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

    fn verified(signer: String) -> Self {
        Self {
            verified: true,
            signer: Some(signer),
            reason: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// Empty: every kind.
    kinds: Vec<Kind>,
    glob: String,
    keys: Vec<Arc<PublicKey>>,
    certificates: Vec<CertificateTrust>,
}

#[derive(Debug, Clone)]
struct CertificateTrust {
    /// DER of the CA certificate (parsed again per check: a parse is microseconds and borrows from the bytes).
    ca: Arc<Vec<u8>>,
    identity: String,
}

const RULE_FIELDS: [&str; 4] = ["kinds", "match", "keys", "certificates"];

impl TrustPolicy {
    /// Parses the policy's TOML; `read` returns the bytes of a file the policy names (a path relative to the policy
    /// file, as written there).
    pub fn from_toml(
        text: &str,
        read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<TrustPolicy, PolicyError> {
        let fail = |message: String| PolicyError(format!("trust policy: {message}"));
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.message())))?;
        if let Some(unknown) = table.keys().find(|k| *k != "rule") {
            return Err(fail(format!(
                "unknown top-level field `{unknown}`; a policy is a list of [[rule]] tables"
            )));
        }
        let rules = match table.get("rule") {
            None => {
                return Err(fail(
                    "no [[rule]]: a policy without rules verifies nothing".into(),
                ));
            }
            Some(toml::Value::Array(rules)) => rules,
            Some(_) => return Err(fail("`rule` must be written as [[rule]] tables".into())),
        };
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                Rule::parse(rule, read).map_err(|e| fail(format!("[[rule]] #{}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustPolicy { rules })
    }

    /// Checks one signature of `subject`'s file. Pure and quick (one or two signature checks): no I/O, no clock.
    pub fn verify(&self, subject: Subject<'_>, bundle: &Bundle) -> Verdict {
        let covering: Vec<&Rule> = self.rules.iter().filter(|r| r.covers(&subject)).collect();
        let what = format!("{} {}", subject.kind, subject.name);
        if covering.is_empty() {
            return Verdict::unverified(
                self.known_signer(bundle),
                format!("no rule of the trust policy covers {what}"),
            );
        }
        let signer = self.known_signer(bundle);
        if !bundle.names(subject.sha256) {
            let listed: Vec<&str> = bundle.digests().iter().map(Sha256::as_str).collect();
            return Verdict::unverified(
                signer,
                format!(
                    "the signature is for other bytes: its statement lists sha256 {}, not this file's {}",
                    listed.join(", "),
                    subject.sha256
                ),
            );
        }
        if let Some(why) = bundle.inconsistency() {
            return Verdict::unverified(signer, why);
        }
        match bundle.material() {
            Material::PublicKey { hint } => {
                verify_with_keys(&covering, &what, hint, signer, bundle)
            }
            Material::Certificates(chain) => {
                verify_with_certificates(&covering, &what, chain, signer, bundle)
            }
        }
    }

    /// Who signed, as far as can be told without trusting anything: the fingerprint of the policy key the bundle's
    /// hint names (any rule's), or the signing certificate's first identity.
    fn known_signer(&self, bundle: &Bundle) -> Option<String> {
        match bundle.material() {
            Material::PublicKey { hint } if !hint.is_empty() => self
                .rules
                .iter()
                .flat_map(|r| &r.keys)
                .find(|k| k.hint() == hint)
                .map(|k| k.fingerprint().to_string()),
            Material::PublicKey { .. } => None,
            Material::Certificates(chain) => x509::parse(&chain[0])
                .ok()
                .and_then(|leaf| x509::identities(&leaf).into_iter().next()),
        }
    }
}

fn verify_with_keys(
    covering: &[&Rule],
    what: &str,
    hint: &str,
    signer: Option<String>,
    bundle: &Bundle,
) -> Verdict {
    let mut trusted: Vec<&PublicKey> = Vec::new();
    for key in covering.iter().flat_map(|r| &r.keys) {
        if !trusted.iter().any(|k| k.fingerprint() == key.fingerprint()) {
            trusted.push(key);
        }
    }
    if trusted.is_empty() {
        return Verdict::unverified(
            signer,
            format!(
                "the rules covering {what} name no key, only certificate authorities; this bundle is signed with a bare key"
            ),
        );
    }
    // The hint picks the key (model_signing refuses a bundle whose hint names another key); the signature still
    // has to verify under it. An empty hint (older model_signing) tries every trusted key.
    let candidates: Vec<&PublicKey> = trusted
        .into_iter()
        .filter(|k| hint.is_empty() || k.hint() == hint)
        .collect();
    if candidates.is_empty() {
        return Verdict::unverified(
            signer.clone(),
            match signer {
                Some(fingerprint) => {
                    format!("signed with key {fingerprint}, which no rule covering {what} trusts")
                }
                None => format!(
                    "signed with a key the trust policy does not name (model_signing key hint {hint}); no rule covering {what} trusts it"
                ),
            },
        );
    }
    let message = bundle.signed_bytes();
    for key in &candidates {
        if bundle
            .signatures()
            .iter()
            .any(|sig| key.verifies(&message, sig))
        {
            return Verdict::verified(key.fingerprint().to_string());
        }
    }
    let tried: Vec<&str> = candidates.iter().map(|k| k.fingerprint()).collect();
    Verdict::unverified(
        signer,
        format!(
            "the DSSE signature does not verify under key {}: the envelope was changed after signing or signed with another key",
            tried.join(", ")
        ),
    )
}

fn verify_with_certificates(
    covering: &[&Rule],
    what: &str,
    chain: &[Vec<u8>],
    signer: Option<String>,
    bundle: &Bundle,
) -> Verdict {
    let fail = |reason: String| Verdict::unverified(signer.clone(), reason);
    // Each step of the walk tries the bundle's certificates: a bundle stuffed with them must not cost much.
    if chain.len() > x509::MAX_CERTIFICATES {
        return fail(format!(
            "the bundle carries {} certificates; at most {} are checked",
            chain.len(),
            x509::MAX_CERTIFICATES
        ));
    }
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        match x509::parse(der) {
            Ok(certificate) => parsed.push(certificate),
            Err(e) => return fail(format!("the bundle's certificate #{}: {e}", i + 1)),
        }
    }
    let (leaf, intermediates) = parsed.split_first().expect("a bundle has a certificate");
    let key = match x509::leaf_key(leaf) {
        Ok(key) => key,
        Err(e) => return fail(e),
    };
    let message = bundle.signed_bytes();
    if !bundle
        .signatures()
        .iter()
        .any(|sig| key.verifies(&message, sig))
    {
        return fail(format!(
            "the DSSE signature does not verify under the key of the signing certificate {}: the envelope was changed after signing",
            leaf.subject()
        ));
    }
    let trusts: Vec<&CertificateTrust> = covering.iter().flat_map(|r| &r.certificates).collect();
    if trusts.is_empty() {
        return fail(format!(
            "the rules covering {what} name no certificate authority, only keys; this bundle is signed with a certificate"
        ));
    }
    if let Err(e) = x509::check_leaf_usage(leaf) {
        return fail(e);
    }
    let mut chain_errors: Vec<String> = Vec::new();
    let mut anchored: Vec<&CertificateTrust> = Vec::new();
    for trust in &trusts {
        let anchor = x509::parse(&trust.ca).expect("checked when the policy was read");
        match x509::chain_to(leaf, intermediates, &anchor) {
            Ok(()) => anchored.push(trust),
            Err(e) if !chain_errors.contains(&e) => chain_errors.push(e),
            Err(_) => {}
        }
    }
    if anchored.is_empty() {
        return fail(format!(
            "the certificate chain does not lead to a CA trusted for {what}: {}",
            chain_errors.join("; ")
        ));
    }
    let certified = x509::identities(leaf);
    match anchored.iter().find(|t| certified.contains(&t.identity)) {
        Some(trust) => Verdict::verified(trust.identity.clone()),
        None => {
            let mut expected: Vec<&str> = anchored.iter().map(|t| t.identity.as_str()).collect();
            expected.dedup();
            fail(format!(
                "the signing certificate certifies {}, but the trust policy expects {} for {what} from that CA",
                if certified.is_empty() {
                    "no e-mail or URI identity".to_string()
                } else {
                    certified.join(", ")
                },
                expected.join(" or ")
            ))
        }
    }
}

impl Rule {
    fn covers(&self, subject: &Subject<'_>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&subject.kind))
            && glob::matches(&self.glob, subject.name)
    }

    fn parse(
        value: &toml::Value,
        read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Rule, String> {
        let toml::Value::Table(table) = value else {
            return Err("not a table".into());
        };
        if let Some(unknown) = table.keys().find(|k| !RULE_FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{unknown}` (a rule has {})",
                RULE_FIELDS.join(", ")
            ));
        }
        let kinds = match table.get("kinds") {
            None => Vec::new(),
            Some(value) => {
                let names = strings(value, "kinds")?;
                if names.is_empty() {
                    return Err("`kinds` is empty; leave it out for every kind".into());
                }
                names
                    .iter()
                    .map(|name| {
                        Kind::parse(name).ok_or_else(|| {
                            format!(
                                "`kinds`: unknown kind {name:?} (model, transformation, service, inferencer)"
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let glob = match table.get("match") {
            Some(toml::Value::String(glob)) if glob.is_empty() => {
                return Err(
                    "`match` is empty, which matches nothing; write \"*\" for every one".into(),
                );
            }
            Some(toml::Value::String(glob)) => glob.clone(),
            Some(_) => return Err("`match` must be a string (a glob)".into()),
            None => {
                return Err(
                    "`match` is missing: a glob on the model name or component id (\"*\" for every one)"
                        .into(),
                );
            }
        };
        let mut keys = Vec::new();
        if let Some(value) = table.get("keys") {
            for path in strings(value, "keys")? {
                keys.extend(read_keys(&path, read).map_err(|e| format!("`keys` {path:?}: {e}"))?);
            }
        }
        let mut certificates = Vec::new();
        if let Some(value) = table.get("certificates") {
            let toml::Value::Array(entries) = value else {
                return Err("`certificates` must be a list of { ca, identity } tables".into());
            };
            for (i, entry) in entries.iter().enumerate() {
                let field = format!("`certificates`[{i}]");
                certificates.extend(
                    read_certificate_trust(entry, read).map_err(|e| format!("{field}: {e}"))?,
                );
            }
        }
        if keys.is_empty() && certificates.is_empty() {
            return Err(
                "names no `keys` and no `certificates`: it would trust nobody (leave the rule out instead)".into(),
            );
        }
        Ok(Rule {
            kinds,
            glob,
            keys,
            certificates,
        })
    }
}

fn strings(value: &toml::Value, field: &str) -> Result<Vec<String>, String> {
    let toml::Value::Array(items) = value else {
        return Err(format!("`{field}` must be a list of strings"));
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(s) => Ok(s.clone()),
            _ => Err(format!("`{field}` must be a list of strings")),
        })
        .collect()
}

fn read_keys(
    path: &str,
    read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<Arc<PublicKey>>, String> {
    let bytes = read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut keys = Vec::new();
    for (label, der) in pem_blocks(&bytes)? {
        if label != "PUBLIC KEY" {
            return Err(format!(
                "holds a PEM {label:?} block; a key file holds \"PUBLIC KEY\" blocks (openssl pkey -pubout)"
            ));
        }
        keys.push(Arc::new(PublicKey::from_spki_der(&der)?));
    }
    Ok(keys)
}

fn read_certificate_trust(
    entry: &toml::Value,
    read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<CertificateTrust>, String> {
    let toml::Value::Table(entry) = entry else {
        return Err("must be a table { ca = \"ca.pem\", identity = \"...\" }".into());
    };
    if let Some(unknown) = entry.keys().find(|k| *k != "ca" && *k != "identity") {
        return Err(format!("unknown field `{unknown}` (ca, identity)"));
    }
    let text = |field: &str| match entry.get(field) {
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("`{field}` must be a non-empty string")),
        None => Err(format!("`{field}` is missing")),
    };
    let path = text("ca")?;
    let identity = text("identity")?;
    let bytes = read(&path).map_err(|e| format!("`ca` {path:?} cannot be read: {e}"))?;
    let mut trusts = Vec::new();
    for (label, der) in pem_blocks(&bytes).map_err(|e| format!("`ca` {path:?}: {e}"))? {
        if label != "CERTIFICATE" {
            return Err(format!(
                "`ca` {path:?} holds a PEM {label:?} block; it must hold CA certificates (\"CERTIFICATE\")"
            ));
        }
        let certificate = x509::parse(&der).map_err(|e| format!("`ca` {path:?}: {e}"))?;
        x509::check_anchor(&certificate).map_err(|e| format!("`ca` {path:?}: {e}"))?;
        drop(certificate);
        trusts.push(CertificateTrust {
            ca: Arc::new(der),
            identity: identity.clone(),
        });
    }
    Ok(trusts)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `model_signing sign key` (1.1.1) over a file holding "hello\n", with testdata/p256.key.pem.
    const HELLO_BUNDLE: &str = include_str!("testdata/hello.p256.sig.json");
    const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    fn file(path: &str) -> Result<Vec<u8>, String> {
        match path {
            "p256.pub.pem" => Ok(include_bytes!("testdata/p256.pub.pem").to_vec()),
            "p256.key.pem" => Ok(include_bytes!("testdata/p256.key.pem").to_vec()),
            "p521.pub.pem" => Ok(include_bytes!("testdata/p521.pub.pem").to_vec()),
            "p384.pub.pem" => Ok(include_bytes!("testdata/p384.pub.pem").to_vec()),
            "ed25519.pub.pem" => Ok(b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA1khxpXMjbKsGmn81jeGE0VSouaaH9P221Rv8/fxlzhs=\n-----END PUBLIC KEY-----\n".to_vec()),
            "ca.pem" => Ok(include_bytes!("testdata/ca.pem").to_vec()),
            "not-ca.pem" => Ok(include_bytes!("testdata/not-ca.pem").to_vec()),
            "text.txt" => Ok(b"not a key\n".to_vec()),
            _ => Err("No such file or directory (os error 2)".into()),
        }
    }

    fn parse(text: &str) -> Result<TrustPolicy, String> {
        TrustPolicy::from_toml(text, &mut file).map_err(|e| e.0)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("the policy must be refused")
    }

    #[test]
    fn the_issues_example_parses() {
        let policy = parse(
            r#"
            [[rule]]
            kinds = ["model"]
            match = "fall-*"
            keys = ["p256.pub.pem"]
            certificates = [{ ca = "ca.pem", identity = "release@example.org" }]

            [[rule]]
            match = "*"
            keys = ["p384.pub.pem"]
            "#,
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(policy.rules[0].kinds, vec![Kind::Model]);
        assert_eq!(
            policy.rules[0].certificates[0].identity,
            "release@example.org"
        );
        assert!(policy.rules[1].kinds.is_empty(), "no kinds: every kind");
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let first_ok = "[[rule]]\nmatch = \"*\"\nkeys = [\"p256.pub.pem\"]\n";
        let cases: &[(&str, &[&str])] = &[
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"p256.pub.pem\"]\nsigners = []",
                &["#2", "unknown field `signers`"],
            ),
            (
                "[[rule]]\nkinds = [\"modle\"]\nmatch = \"*\"\nkeys = [\"p256.pub.pem\"]",
                &["#2", "`kinds`", "\"modle\""],
            ),
            (
                "[[rule]]\nkinds = []\nmatch = \"*\"\nkeys = [\"p256.pub.pem\"]",
                &["#2", "`kinds` is empty"],
            ),
            (
                "[[rule]]\nkeys = [\"p256.pub.pem\"]",
                &["#2", "`match` is missing"],
            ),
            (
                "[[rule]]\nmatch = 3\nkeys = [\"p256.pub.pem\"]",
                &["#2", "`match` must be a string"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"missing.pem\"]",
                &[
                    "#2",
                    "`keys` \"missing.pem\"",
                    "cannot be read",
                    "No such file",
                ],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"text.txt\"]",
                &["#2", "`keys` \"text.txt\"", "not PEM"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"p256.key.pem\"]",
                &["#2", "`keys` \"p256.key.pem\"", "\"PRIVATE KEY\""],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"p521.pub.pem\"]",
                &["#2", "`keys` \"p521.pub.pem\"", "P-256 and P-384"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"ed25519.pub.pem\"]",
                &["#2", "`keys` \"ed25519.pub.pem\"", "1.3.101.112", "EC keys"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = [\"ca.pem\"]",
                &["#2", "\"CERTIFICATE\""],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = \"p256.pub.pem\"",
                &["#2", "`keys` must be a list"],
            ),
            (
                "[[rule]]\nmatch = \"*\"",
                &["#2", "no `keys` and no `certificates`"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\nkeys = []\ncertificates = []",
                &["#2", "no `keys` and no `certificates`"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\ncertificates = [{ ca = \"not-ca.pem\", identity = \"a@b\" }]",
                &["#2", "`certificates`[0]", "not-ca.pem", "not a CA"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\ncertificates = [{ ca = \"ca.pem\" }]",
                &["#2", "`certificates`[0]", "`identity` is missing"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\ncertificates = [{ ca = \"ca.pem\", identity = \"a@b\", email = \"x\" }]",
                &["#2", "`certificates`[0]", "unknown field `email`"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\ncertificates = [{ ca = \"gone.pem\", identity = \"a@b\" }]",
                &["#2", "`certificates`[0]", "gone.pem", "cannot be read"],
            ),
            (
                "[[rule]]\nmatch = \"*\"\ncertificates = [{ ca = \"p256.pub.pem\", identity = \"a@b\" }]",
                &["#2", "`certificates`[0]", "\"PUBLIC KEY\""],
            ),
        ];
        for (second, expected) in cases {
            let message = error(&format!("{first_ok}\n{second}"));
            for part in *expected {
                assert!(message.contains(part), "{message:?} should say {part:?}");
            }
        }
    }

    #[test]
    fn files_and_shapes_outside_rules_are_refused() {
        assert!(error("[[rule]\n").contains("not valid TOML"));
        assert!(error("").contains("no [[rule]]"));
        assert!(error("mode = \"enforce\"\n").contains("unknown top-level field `mode`"));
        assert!(error("rule = 1\n").contains("[[rule]] tables"));
    }

    fn hello(policy: &str, kind: Kind, name: &str, sha256: &str) -> Verdict {
        let policy = parse(policy).unwrap();
        let bundle = Bundle::parse(HELLO_BUNDLE).unwrap();
        let sha256 = Sha256::parse(sha256).unwrap();
        policy.verify(
            Subject {
                kind,
                name,
                sha256: &sha256,
            },
            &bundle,
        )
    }

    #[test]
    fn a_real_key_bundle_verifies_only_where_a_rule_trusts_its_key() {
        let trusting =
            "[[rule]]\nkinds = [\"model\"]\nmatch = \"fall-*\"\nkeys = [\"p256.pub.pem\"]\n";
        let verdict = hello(trusting, Kind::Model, "fall-detector", HELLO_SHA256);
        assert!(verdict.verified, "{verdict:?}");
        assert!(verdict.reason.is_none());
        let fingerprint = verdict.signer.unwrap();
        assert!(fingerprint.starts_with("sha256:"));

        let verdict = hello(trusting, Kind::Service, "fall-detector", HELLO_SHA256);
        assert_eq!(
            verdict.reason.as_deref(),
            Some("no rule of the trust policy covers service fall-detector")
        );
        assert_eq!(
            verdict.signer.as_deref(),
            Some(fingerprint.as_str()),
            "a key the policy names is still named"
        );
        let verdict = hello(trusting, Kind::Model, "pose", HELLO_SHA256);
        assert_eq!(
            verdict.reason.as_deref(),
            Some("no rule of the trust policy covers model pose")
        );

        let other = "a".repeat(64);
        let verdict = hello(trusting, Kind::Model, "fall-detector", &other);
        assert!(!verdict.verified);
        assert!(verdict.reason.unwrap().contains("other bytes"));

        let untrusting = "[[rule]]\nmatch = \"*\"\nkeys = [\"p384.pub.pem\"]\n";
        let verdict = hello(untrusting, Kind::Model, "fall-detector", HELLO_SHA256);
        assert!(!verdict.verified);
        assert_eq!(verdict.signer, None, "the policy does not know the key");
        assert!(verdict.reason.unwrap().contains("does not name"));
    }
}
