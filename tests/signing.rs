//! Signatures made by the real OpenSSF Model Signing CLI (PyPI model-signing 1.1.1), checked by the trust policy
//! in-process: what verifies, and the precise reason for each way a signature must not.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use component_repository::domain::signing::{Bundle, Subject, TrustPolicy, Verdict};
use component_repository::domain::{Kind, Sha256};
use testkit::app::report_skip;
use testkit::signing::{
    self, Ca, Key, LeafOptions, Policy, sign_with_certificate, sign_with_key,
    verify_with_certificate, verify_with_key,
};

/// The CLI and a scratch directory, or None after saying SKIPPED.
fn setup(test: &str) -> Option<tempfile::TempDir> {
    match signing::available() {
        Ok(_) => Some(tempfile::tempdir().unwrap()),
        Err(reason) => {
            report_skip(test, &reason);
            None
        }
    }
}

/// A file with its own bytes.
fn file(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, Sha256) {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    (path, Sha256::parse(&testkit::sha256_hex(content)).unwrap())
}

/// Reads the policy as the server does: files relative to the policy file.
fn load(policy: &Path) -> TrustPolicy {
    let dir = policy.parent().unwrap().to_path_buf();
    let text = std::fs::read_to_string(policy).unwrap();
    TrustPolicy::from_toml(&text, &mut |name| {
        std::fs::read(dir.join(name)).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn verify(policy: &TrustPolicy, kind: Kind, name: &str, sha256: &Sha256, bundle: &str) -> Verdict {
    let bundle = Bundle::parse(bundle).expect("model_signing's bundle parses");
    policy.verify(Subject { kind, name, sha256 }, &bundle)
}

#[track_caller]
fn assert_unverified(verdict: &Verdict, reason_part: &str) {
    assert!(!verdict.verified, "{verdict:?}");
    let reason = verdict
        .reason
        .as_deref()
        .expect("an unverified verdict says why");
    assert!(
        reason.contains(reason_part),
        "the reason {reason:?} should say {reason_part:?}"
    );
}

#[test]
fn key_signed_files_verify_with_the_keys_fingerprint_as_signer() {
    let Some(dir) = setup("key_signed_files_verify_with_the_keys_fingerprint_as_signer") else {
        return;
    };
    let dir = dir.path();
    let p256 = Key::p256(dir);
    let p384 = Key::p384(dir);
    let (path, sha256) = file(dir, "fall.onnx", b"model weights");
    let policy = load(
        &Policy::new()
            .rule(&["model"], "fall-*")
            .key(&p256)
            .key(&p384)
            .write(dir),
    );
    for key in [&p256, &p384] {
        let bundle = sign_with_key(&path, key);
        let verdict = verify(&policy, Kind::Model, "fall-detector", &sha256, &bundle);
        assert_eq!(
            verdict,
            Verdict {
                verified: true,
                signer: Some(key.fingerprint.clone()),
                reason: None
            }
        );
        // What we call verified, model_signing's own verifier accepts too.
        let (accepted, output) = verify_with_key(&path, &bundle, key);
        assert!(accepted, "model_signing verify key refused: {output}");
    }
}

#[test]
fn certificate_signed_files_verify_with_the_identity_as_signer() {
    let Some(dir) = setup("certificate_signed_files_verify_with_the_identity_as_signer") else {
        return;
    };
    let dir = dir.path();
    let root = Ca::new(dir);
    let intermediate = root.intermediate("Release Intermediate");
    let (path, sha256) = file(dir, "resize.py", b"def resize(): ...");
    let policy = load(
        &Policy::new()
            .rule(&["transformation"], "resize")
            .certificate(&root, "release@example.org")
            .certificate(&root, "https://ci.example.org/release")
            .write(dir),
    );
    let direct = root.leaf("release@example.org");
    let via_intermediate = intermediate.leaf("https://ci.example.org/release");
    for leaf in [&direct, &via_intermediate] {
        let bundle = sign_with_certificate(&path, leaf);
        let verdict = verify(&policy, Kind::Transformation, "resize", &sha256, &bundle);
        assert_eq!(
            verdict,
            Verdict {
                verified: true,
                signer: Some(leaf.identity.clone()),
                reason: None
            }
        );
        let (accepted, output) = verify_with_certificate(&path, &bundle, &root);
        assert!(
            accepted,
            "model_signing verify certificate refused: {output}"
        );
    }
}

#[test]
fn a_file_changed_after_signing_or_another_files_bundle_is_unverified() {
    let Some(dir) = setup("a_file_changed_after_signing_or_another_files_bundle_is_unverified")
    else {
        return;
    };
    let dir = dir.path();
    let key = Key::p256(dir);
    let policy = load(&Policy::new().rule(&[], "*").key(&key).write(dir));
    let (path, _) = file(dir, "pose.onnx", b"version 1");
    let bundle = sign_with_key(&path, &key);
    let (_, changed) = file(dir, "pose.onnx", b"version 1, changed after signing");
    let verdict = verify(&policy, Kind::Model, "pose", &changed, &bundle);
    assert_unverified(&verdict, "the signature is for other bytes");
    assert_unverified(&verdict, changed.as_str());
    assert_eq!(verdict.signer.as_deref(), Some(key.fingerprint.as_str()));

    let (other_path, other) = file(dir, "other.onnx", b"another file");
    let other_bundle = sign_with_key(&other_path, &key);
    let (_, original) = file(dir, "pose2.onnx", b"version 1");
    assert!(verify(&policy, Kind::Model, "pose", &original, &bundle).verified);
    assert!(verify(&policy, Kind::Model, "pose", &other, &other_bundle).verified);
    assert_unverified(
        &verify(&policy, Kind::Model, "pose", &original, &other_bundle),
        "the signature is for other bytes",
    );
}

#[test]
fn keys_the_policy_does_not_trust_for_this_component_are_unverified() {
    let Some(dir) = setup("keys_the_policy_does_not_trust_for_this_component_are_unverified")
    else {
        return;
    };
    let dir = dir.path();
    let models = Key::p256(dir);
    let services = Key::p256(dir);
    let stranger = Key::p384(dir);
    let policy = load(
        &Policy::new()
            .rule(&["model"], "fall-*")
            .key(&models)
            .rule(&["service", "inferencer"], "*")
            .key(&services)
            .write(dir),
    );
    let (path, sha256) = file(dir, "fall.onnx", b"weights");

    let verdict = verify(
        &policy,
        Kind::Model,
        "fall-detector",
        &sha256,
        &sign_with_key(&path, &stranger),
    );
    assert_unverified(&verdict, "signed with a key the trust policy does not name");
    assert_eq!(verdict.signer, None);

    // A key the policy knows, but for other components.
    let verdict = verify(
        &policy,
        Kind::Model,
        "fall-detector",
        &sha256,
        &sign_with_key(&path, &services),
    );
    assert_unverified(
        &verdict,
        &format!(
            "signed with key {}, which no rule covering model fall-detector trusts",
            services.fingerprint
        ),
    );
    assert_eq!(
        verdict.signer.as_deref(),
        Some(services.fingerprint.as_str())
    );

    // The right file and key under another component's name or kind: no rule covers it.
    let bundle = sign_with_key(&path, &models);
    assert!(verify(&policy, Kind::Model, "fall-detector", &sha256, &bundle).verified);
    assert_unverified(
        &verify(&policy, Kind::Model, "pose-estimator", &sha256, &bundle),
        "no rule of the trust policy covers model pose-estimator",
    );
    assert_unverified(
        &verify(
            &policy,
            Kind::Transformation,
            "fall-detector",
            &sha256,
            &bundle,
        ),
        "no rule of the trust policy covers transformation fall-detector",
    );
}

#[test]
fn certificates_from_another_ca_or_for_another_identity_are_unverified() {
    let Some(dir) = setup("certificates_from_another_ca_or_for_another_identity_are_unverified")
    else {
        return;
    };
    let dir = dir.path();
    let trusted = Ca::named(dir, "Release CA");
    let impostor = Ca::named(dir, "Release CA");
    let other = Ca::new(dir);
    let policy = load(
        &Policy::new()
            .rule(&["model"], "*")
            .certificate(&trusted, "release@example.org")
            .write(dir),
    );
    let (path, sha256) = file(dir, "m.onnx", b"weights");
    let check = |leaf: &signing::Leaf| {
        verify(
            &policy,
            Kind::Model,
            "m",
            &sha256,
            &sign_with_certificate(&path, leaf),
        )
    };

    let verdict = check(&other.leaf("release@example.org"));
    assert_unverified(
        &verdict,
        "the certificate chain does not lead to a CA trusted for model m",
    );
    assert_unverified(&verdict, &format!("issued by CN={}", other.name));
    assert_eq!(
        verdict.signer.as_deref(),
        Some("release@example.org"),
        "who the certificate claims"
    );

    let verdict = check(&impostor.leaf("release@example.org"));
    assert_unverified(
        &verdict,
        "does not verify with the key of the trusted CA CN=Release CA",
    );

    let verdict = check(&trusted.leaf("mallory@example.org"));
    assert_unverified(
        &verdict,
        "the signing certificate certifies mallory@example.org, but the trust policy expects release@example.org",
    );
    assert_eq!(verdict.signer.as_deref(), Some("mallory@example.org"));

    // model_signing refuses leaves that may not sign; so do we.
    let no_usage = trusted.leaf_with(
        "release@example.org",
        LeafOptions {
            no_signing_usage: true,
            ..LeafOptions::default()
        },
    );
    assert_unverified(&check(&no_usage), "may not sign");
    let bundle = sign_with_certificate(&path, &no_usage);
    assert!(
        !verify_with_certificate(&path, &bundle, &trusted).0,
        "model_signing refuses it too"
    );

    // Like model_signing, the chain is checked when the leaf was issued: an expired leaf's signature stands.
    let expired = trusted.leaf_with(
        "release@example.org",
        LeafOptions {
            expired: true,
            ..LeafOptions::default()
        },
    );
    assert!(check(&expired).verified);
    let bundle = sign_with_certificate(&path, &expired);
    let (accepted, output) = verify_with_certificate(&path, &bundle, &trusted);
    assert!(accepted, "model_signing accepts it too: {output}");
    // And the CLI, like the policy, refuses a chain to another CA.
    let bundle = sign_with_certificate(&path, &other.leaf("release@example.org"));
    assert!(!verify_with_certificate(&path, &bundle, &trusted).0);
}

#[test]
fn key_bundles_need_a_key_rule_and_certificate_bundles_a_ca_rule() {
    let Some(dir) = setup("key_bundles_need_a_key_rule_and_certificate_bundles_a_ca_rule") else {
        return;
    };
    let dir = dir.path();
    let key = Key::p256(dir);
    let ca = Ca::new(dir);
    let (path, sha256) = file(dir, "s.bin", b"service");
    let keys_only = load(&Policy::new().rule(&[], "*").key(&key).write(dir));
    let cas_only = load(
        &Policy::new()
            .rule(&[], "*")
            .certificate(&ca, "a@example.org")
            .write(dir),
    );
    assert_unverified(
        &verify(
            &keys_only,
            Kind::Service,
            "s",
            &sha256,
            &sign_with_certificate(&path, &ca.leaf("a@example.org")),
        ),
        "name no certificate authority",
    );
    assert_unverified(
        &verify(
            &cas_only,
            Kind::Service,
            "s",
            &sha256,
            &sign_with_key(&path, &key),
        ),
        "name no key",
    );
}

fn edit(bundle: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(bundle).unwrap();
    change(&mut value);
    value.to_string()
}

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn unb64(bytes: &[u8]) -> serde_json::Value {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into()
}

#[test]
fn tampered_signatures_and_payloads_are_unverified() {
    let Some(dir) = setup("tampered_signatures_and_payloads_are_unverified") else {
        return;
    };
    let dir = dir.path();
    let key = Key::p256(dir);
    let ca = Ca::new(dir);
    let policy = load(
        &Policy::new()
            .rule(&[], "*")
            .key(&key)
            .certificate(&ca, "release@example.org")
            .write(dir),
    );
    let (path, sha256) = file(dir, "x.bin", b"the signed bytes");
    let (_, evil) = file(dir, "evil.bin", b"the bytes an attacker wants served");
    let bundles = [
        sign_with_key(&path, &key),
        sign_with_certificate(&path, &ca.leaf("release@example.org")),
    ];
    for bundle in &bundles {
        assert!(verify(&policy, Kind::Inferencer, "x", &sha256, bundle).verified);

        // One flipped bit in the DER signature's last byte (inside the integer s).
        let flipped = edit(bundle, |v| {
            let mut sig = b64(v["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap());
            *sig.last_mut().unwrap() ^= 1;
            v["dsseEnvelope"]["signatures"][0]["sig"] = unb64(&sig);
        });
        assert_unverified(
            &verify(&policy, Kind::Inferencer, "x", &sha256, &flipped),
            "the DSSE signature does not verify",
        );

        // The statement rewritten to name other bytes, consistently (subject digest recomputed): only the
        // signature can tell.
        let rewritten = edit(bundle, |v| {
            let mut statement: serde_json::Value =
                serde_json::from_slice(&b64(v["dsseEnvelope"]["payload"].as_str().unwrap()))
                    .unwrap();
            statement["predicate"]["resources"][0]["digest"] = evil.as_str().into();
            let root = testkit::sha256_hex(&hex::decode(evil.as_str()).unwrap());
            statement["subject"][0]["digest"]["sha256"] = root.into();
            v["dsseEnvelope"]["payload"] = unb64(statement.to_string().as_bytes());
        });
        assert_unverified(
            &verify(&policy, Kind::Inferencer, "x", &evil, &rewritten),
            "the DSSE signature does not verify",
        );

        // Rewritten carelessly: the statement contradicts itself (as model_signing's verifier finds).
        let inconsistent = edit(bundle, |v| {
            let mut statement: serde_json::Value =
                serde_json::from_slice(&b64(v["dsseEnvelope"]["payload"].as_str().unwrap()))
                    .unwrap();
            statement["predicate"]["resources"][0]["digest"] = evil.as_str().into();
            v["dsseEnvelope"]["payload"] = unb64(statement.to_string().as_bytes());
        });
        assert_unverified(
            &verify(&policy, Kind::Inferencer, "x", &evil, &inconsistent),
            "the statement is inconsistent",
        );
    }

    // A key bundle whose hint is changed to another policy key's: the signature still decides.
    let other = Key::p256(dir);
    let policy = load(
        &Policy::new()
            .rule(&[], "*")
            .key(&key)
            .key(&other)
            .write(dir),
    );
    let other_hint = serde_json::from_str::<serde_json::Value>(&sign_with_key(&path, &other))
        .unwrap()["verificationMaterial"]["publicKey"]["hint"]
        .clone();
    let lying = edit(&bundles[0], |v| {
        v["verificationMaterial"]["publicKey"]["hint"] = other_hint
    });
    assert_unverified(
        &verify(&policy, Kind::Inferencer, "x", &sha256, &lying),
        &format!("does not verify under key {}", other.fingerprint),
    );
}

/// Verification cost per signature (printed; see the report): key and certificate bundles, parse included.
#[test]
fn verification_time_per_signature() {
    let Some(dir) = setup("verification_time_per_signature") else {
        return;
    };
    let dir = dir.path();
    let key = Key::p256(dir);
    let ca = Ca::new(dir);
    let intermediate = ca.intermediate("Bench Intermediate");
    let policy = load(
        &Policy::new()
            .rule(&[], "*")
            .key(&key)
            .certificate(&ca, "bench@example.org")
            .write(dir),
    );
    let (path, sha256) = file(dir, "bench.bin", b"bench");
    for (label, bundle) in [
        ("key (P-256)", sign_with_key(&path, &key)),
        (
            "certificate (leaf + intermediate)",
            sign_with_certificate(&path, &intermediate.leaf("bench@example.org")),
        ),
    ] {
        let rounds = 200;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            assert!(verify(&policy, Kind::Model, "bench", &sha256, &bundle).verified);
        }
        let each = start.elapsed() / rounds;
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        println!("verification of a {label} bundle: {each:?} per signature ({profile} build)");
    }
}
