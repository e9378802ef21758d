//! Signatures on every store: bundles written by the real `model_signing` CLI are attached, kept byte for byte,
//! judged by the trust policy, and in enforce mode decide what is served.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use testkit::signing::{Ca, Key, Policy, available, sign_with_certificate, sign_with_key};

use super::Starter;
use crate::common::{TestApp, bytes, config_with, report_skip, sha256_hex};
use component_repository::config::Signatures;
use component_repository::service::signing::SignatureMode;

fn policy_config(policy: PathBuf, mode: Option<SignatureMode>) -> crate::common::Config {
    config_with(|c| {
        c.signatures = Signatures {
            mode,
            trust_policy: Some(policy),
        }
    })
}

/// Creates model `name` `version` whose file is `data`, and writes the same bytes to a file to sign.
async fn model_with_file(
    app: &TestApp,
    dir: &Path,
    name: &str,
    version: &str,
    data: &[u8],
) -> PathBuf {
    app.ok(
        "mutation($n: String!, $v: String!) { createModel(input: {name: $n, version: $v, library: \"onnx\", description: \"d\"}) { name } }",
        json!({ "n": name, "v": version }),
    )
    .await;
    upload_model_file(app, name, version, data).await;
    let path = dir.join(format!("{name}-{version}.onnx"));
    std::fs::write(&path, data).unwrap();
    path
}

async fn upload_model_file(app: &TestApp, name: &str, version: &str, data: &[u8]) {
    let response = app
        .upload(
            "mutation($n: String!, $v: String!, $file: Upload!) { uploadModelFile(name: $n, version: $v, file: $file) { name } }",
            json!({ "n": name, "v": version }),
            data.to_vec(),
            "model.onnx",
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn attach(app: &TestApp, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_and_code(app: &TestApp, path: &str) -> (u16, String) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["code"]
        .as_str()
        .or(body["errors"][0]["code"].as_str())
        .unwrap_or_default()
        .to_string();
    (status, code)
}

const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Attach, list and check: several signatures per file, each bundle kept exactly, verdicts from the policy, bad
/// bundles refused with nothing stored, and the feed told.
pub async fn signatures_are_attached_kept_and_judged(start: Starter) {
    let tool = match available() {
        Ok(tool) => tool,
        Err(reason) => return report_skip("signatures_are_attached_kept_and_judged", &reason),
    };
    let _ = tool;
    let dir = tempfile::tempdir().unwrap();
    let (publisher, stranger) = (Key::p256(dir.path()), Key::p384(dir.path()));
    let policy = Policy::new()
        .rule(&["model"], "fall-*")
        .key(&publisher)
        .write(dir.path());
    let app = start(policy_config(policy, None)).await;
    let data = bytes(100_000, 41);
    let file = model_with_file(&app, dir.path(), "fall-detector", "1", &data).await;
    let route = "/model/fall-detector/1/signatures";

    let bundle = sign_with_key(&file, &publisher);
    let (status, first) = attach(&app, route, "application/json", &bundle).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["verified"], true, "{first}");
    assert_eq!(first["signer"], publisher.fingerprint.as_str());
    assert!(first["reason"].is_null());
    // The same bundle again changes nothing.
    let (status, again) = attach(&app, route, BUNDLE_TYPE, &bundle).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");

    // A second signer whose key the policy does not name: kept, not verified, and said why.
    let (status, unknown) = attach(
        &app,
        route,
        "application/json",
        &sign_with_key(&file, &stranger),
    )
    .await;
    assert_eq!(status, 201, "{unknown}");
    assert_eq!(unknown["verified"], false);
    assert!(!unknown["reason"].as_str().unwrap().is_empty(), "{unknown}");

    // Bad bundles: a clear 4xx, nothing stored.
    let other = dir.path().join("other.onnx");
    std::fs::write(&other, bytes(5_000, 42)).unwrap();
    let for_other_bytes = sign_with_key(&other, &publisher);
    let wrong_type = bundle.replacen(
        BUNDLE_TYPE,
        "application/vnd.dev.sigstore.bundle.v0.1+json",
        1,
    );
    let oversized = format!("{{\"padding\": \"{}\"}}", "x".repeat(40 * 1024));
    for (body, content_type, expected, what) in [
        ("{ not json", "application/json", 400, "not JSON"),
        (
            wrong_type.as_str(),
            "application/json",
            400,
            "another media type",
        ),
        (
            for_other_bytes.as_str(),
            "application/json",
            400,
            "a bundle of other bytes",
        ),
        (
            oversized.as_str(),
            "application/json",
            413,
            "an oversized bundle",
        ),
        (
            bundle.as_str(),
            "text/plain",
            415,
            "a form-encodable content type",
        ),
    ] {
        let (status, body) = attach(&app, route, content_type, body).await;
        assert_eq!(status, expected, "{what}: {body}");
        assert!(
            body["detail"].is_string() && body["code"].is_string(),
            "{what}: {body}"
        );
    }
    let (status, body) = attach(&app, route, "application/json", &for_other_bytes).await;
    assert!(
        status == 400
            && body["detail"]
                .as_str()
                .unwrap()
                .contains(&sha256_hex(&data)),
        "the refusal names the file's digest: {body}"
    );

    let listing = app.get(route).await.text().await.unwrap();
    assert!(
        listing.contains(&bundle),
        "the bundle comes back byte for byte"
    );
    let listing: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["sha256"], sha256_hex(&data));
    let signatures = listing["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 2, "{listing}");
    assert_eq!(signatures[0]["verified"], true);
    assert_eq!(signatures[1]["verified"], false);

    // GraphQL shows the same.
    let model = app
        .ok(
            "{ model(name: \"fall-detector\", version: \"1\") { file { signatures { id verified signer reason bundle addedBy } } } }",
            json!({}),
        )
        .await;
    let shown = &model["model"]["file"]["signatures"];
    assert_eq!(shown[0]["bundle"], bundle.as_str());
    assert_eq!(shown[0]["verified"], true);
    assert_eq!(shown[0]["signer"], publisher.fingerprint.as_str());
    assert_eq!(shown[1]["verified"], false);

    // The mutation, on a per-platform file, with its own bundle.
    let arm = bytes(3_000, 43);
    let response = app
        .upload(
            "mutation($file: Upload!) { uploadModelFile(name: \"fall-detector\", version: \"1\", file: $file, platform: {os: \"linux\", arch: \"arm64\"}) { name } }",
            json!({}),
            arm.clone(),
            "arm.onnx",
        )
        .await;
    assert_eq!(response.status(), 200);
    let arm_file = dir.path().join("arm.onnx");
    std::fs::write(&arm_file, &arm).unwrap();
    let added = app
        .ok(
            "mutation($b: String!) { addSignature(kind: MODEL, name: \"fall-detector\", version: \"1\", platform: {os: \"linux\", arch: \"arm64\"}, bundle: $b) { verified signer } }",
            json!({ "b": sign_with_key(&arm_file, &publisher) }),
        )
        .await;
    assert_eq!(added["addSignature"]["verified"], true);
    let variants = app
        .ok(
            "{ model(name: \"fall-detector\", version: \"1\") { variants { signatures { verified } file { signatures { verified } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        variants["model"]["variants"][0]["signatures"],
        json!([{ "verified": true }])
    );
    assert_eq!(
        variants["model"]["variants"][0]["file"]["signatures"],
        json!([{ "verified": true }])
    );
    let (status, variant) = (
        app.get(&format!("{route}?platform=linux/arm64"))
            .await
            .status(),
        app.get(&format!("{route}?platform=linux/arm64"))
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(variant["sha256"], sha256_hex(&arm));
    assert_eq!(variant["signatures"].as_array().unwrap().len(), 1);
    let refused = app
        .gql(
            "mutation($b: String!) { addSignature(kind: SERVICE, name: \"x\", bundle: $b) { id } }",
            json!({ "b": bundle }),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "INVALID_INPUT",
        "{refused}"
    );

    // The feed says what was signed.
    let events = app
        .ok(
            "{ events(filter: {types: [SIGNATURE_ADDED]}) { edges { node { type file { sha256 } } } } }",
            json!({}),
        )
        .await;
    let signed: Vec<&str> = events["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["file"]["sha256"].as_str().unwrap())
        .collect();
    let (data_sha, arm_sha) = (sha256_hex(&data), sha256_hex(&arm));
    assert_eq!(
        signed,
        [data_sha.as_str(), data_sha.as_str(), arm_sha.as_str()]
    );
}

/// Enforce mode: only files with a signature the policy verifies leave the server, on every byte route, and aliases
/// move only to such versions.
pub async fn enforce_mode_serves_only_verified_files(start: Starter) {
    let tool = match available() {
        Ok(tool) => tool,
        Err(reason) => return report_skip("enforce_mode_serves_only_verified_files", &reason),
    };
    let _ = tool;
    let dir = tempfile::tempdir().unwrap();
    let (publisher, stranger) = (Key::p256(dir.path()), Key::p256(dir.path()));
    let ca = Ca::new(dir.path());
    let policy = Policy::new()
        .rule(&["model"], "fall-*")
        .key(&publisher)
        .rule(&["model"], "prod")
        .key(&publisher)
        .rule(&["service"], "svc-*")
        .certificate(&ca, "release@example.org")
        .write(dir.path());
    let app = start(policy_config(policy, Some(SignatureMode::Enforce))).await;

    let signed = bytes(20_000, 51);
    let file = model_with_file(&app, dir.path(), "fall-a", "1", &signed).await;
    let (status, body) = attach(
        &app,
        "/model/fall-a/1/signatures",
        "application/json",
        &sign_with_key(&file, &publisher),
    )
    .await;
    assert_eq!((status, &body["verified"]), (201, &json!(true)), "{body}");
    let unsigned = bytes(20_000, 52);
    model_with_file(&app, dir.path(), "fall-a", "2", &unsigned).await;
    let strangers = bytes(20_000, 53);
    let stranger_file = model_with_file(&app, dir.path(), "fall-a", "3", &strangers).await;
    attach(
        &app,
        "/model/fall-a/3/signatures",
        "application/json",
        &sign_with_key(&stranger_file, &stranger),
    )
    .await;
    // The right key, for a component no rule of that key covers.
    let elsewhere = bytes(20_000, 54);
    let elsewhere_file = model_with_file(&app, dir.path(), "other-model", "1", &elsewhere).await;
    attach(
        &app,
        "/model/other-model/1/signatures",
        "application/json",
        &sign_with_key(&elsewhere_file, &publisher),
    )
    .await;

    let served = |sha: &str, path: &str| [path.to_string(), format!("/blobs/sha256/{sha}")];
    let (good, bad) = (sha256_hex(&signed), sha256_hex(&unsigned));
    for path in served(&good, "/model/fall-a/1") {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.bytes().await.unwrap().as_ref(), signed.as_slice());
    }
    for (sha, path) in [
        (bad.clone(), "/model/fall-a/2"),
        (sha256_hex(&strangers), "/model/fall-a/3"),
        (sha256_hex(&elsewhere), "/model/other-model/1"),
    ] {
        for path in served(&sha, path) {
            assert_eq!(
                status_and_code(&app, &path).await,
                (403, "UNSIGNED".into()),
                "{path}"
            );
        }
    }
    // The OCI route too, in its own error shape.
    let oci = app
        .get(&format!("/v2/models/fall-a/blobs/sha256:{bad}"))
        .await;
    assert_eq!(oci.status(), 403);
    let oci: Value = oci.json().await.unwrap();
    assert_eq!(oci["errors"][0]["code"], "UNSIGNED", "{oci}");
    assert_eq!(
        app.get(&format!("/v2/models/fall-a/blobs/sha256:{good}"))
            .await
            .status(),
        200
    );

    // Aliases move to verified versions only.
    let set = |version: &str| {
        format!(
            "mutation {{ setModelAlias(name: \"fall-a\", alias: \"production\", version: \"{version}\") {{ version }} }}"
        )
    };
    app.ok(&set("1"), json!({})).await;
    let refused = app.gql(&set("2"), json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNSIGNED",
        "{refused}"
    );
    let alias = app
        .ok(
            "{ model(name: \"fall-a\", alias: \"production\") { version } }",
            json!({}),
        )
        .await;
    assert_eq!(
        alias["model"]["version"], "1",
        "the refused move left the alias"
    );

    // Services signed by certificate: the identity must be the rule's.
    for (id, identity, expected) in [
        ("svc-release", "release@example.org", 200),
        ("svc-intern", "intern@example.org", 403),
    ] {
        app.ok(
            "mutation($id: ID!) { createService(input: {id: $id}) { id } }",
            json!({ "id": id }),
        )
        .await;
        let data = bytes(4_000, id.len() as u64);
        app.upload_service_file(id, data.clone()).await;
        let path = dir.path().join(format!("{id}.zip"));
        std::fs::write(&path, &data).unwrap();
        let bundle = sign_with_certificate(&path, &ca.leaf(identity));
        let (status, body) = attach(
            &app,
            &format!("/service/{id}/signatures"),
            "application/json",
            &bundle,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            app.get(&format!("/service/{id}")).await.status(),
            expected,
            "{id}"
        );
    }

    // The same bytes uploaded again keep their signatures; other bytes lose them.
    upload_model_file(&app, "fall-a", "1", &signed).await;
    assert_eq!(
        app.get("/model/fall-a/1").await.status(),
        200,
        "a retried upload"
    );
    upload_model_file(&app, "fall-a", "1", &bytes(20_000, 55)).await;
    assert_eq!(
        status_and_code(&app, "/model/fall-a/1").await,
        (403, "UNSIGNED".into())
    );

    // By digest, bytes go out only when every component holding them is verified for them: a signature trusted
    // for one component never unlocks another's copy.
    let shared = bytes(20_000, 56);
    let shared_file = model_with_file(&app, dir.path(), "fall-b", "1", &shared).await;
    attach(
        &app,
        "/model/fall-b/1/signatures",
        "application/json",
        &sign_with_key(&shared_file, &publisher),
    )
    .await;
    let shared_blob = format!("/blobs/sha256/{}", sha256_hex(&shared));
    assert_eq!(app.get(&shared_blob).await.status(), 200);
    model_with_file(&app, dir.path(), "fall-c", "1", &shared).await;
    assert_eq!(
        status_and_code(&app, &shared_blob).await,
        (403, "UNSIGNED".into())
    );
    assert_eq!(
        app.get("/model/fall-b/1").await.status(),
        200,
        "its own route still serves it"
    );

    // Keys are compared whole: `prod` `v version 1` and `prod version v` `1` are two models, one covered.
    let prod = bytes(5_000, 57);
    let prod_file = model_with_file(&app, dir.path(), "prod", "v version 1", &prod).await;
    model_with_file(&app, dir.path(), "prod version v", "1", &prod).await;
    let prod_bundle = sign_with_key(&prod_file, &publisher);
    attach(
        &app,
        "/model/prod/v%20version%201/signatures",
        "application/json",
        &prod_bundle,
    )
    .await;
    attach(
        &app,
        "/model/prod%20version%20v/1/signatures",
        "application/json",
        &prod_bundle,
    )
    .await;
    assert_eq!(app.get("/model/prod/v%20version%201").await.status(), 200);
    assert_eq!(
        status_and_code(&app, "/model/prod%20version%20v/1").await,
        (403, "UNSIGNED".into())
    );

    // Unverified bundles cannot crowd out the publisher's: at the cap, a verified one takes an unverified one's
    // place; another unverified one is refused.
    let crowded = bytes(6_000, 58);
    let crowded_file = model_with_file(&app, dir.path(), "fall-d", "1", &crowded).await;
    let junk = sign_with_key(&crowded_file, &stranger);
    for n in 0..8 {
        let (status, body) = attach(
            &app,
            "/model/fall-d/1/signatures",
            "application/json",
            &format!("{junk}{}", " ".repeat(n)),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = attach(
        &app,
        "/model/fall-d/1/signatures",
        "application/json",
        &format!("{junk}         "),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("LIMIT_EXCEEDED")),
        "{body}"
    );
    let (status, body) = attach(
        &app,
        "/model/fall-d/1/signatures",
        "application/json",
        &sign_with_key(&crowded_file, &publisher),
    )
    .await;
    assert_eq!((status, &body["verified"]), (201, &json!(true)), "{body}");
    let listing: Value = app
        .get("/model/fall-d/1/signatures")
        .await
        .json()
        .await
        .unwrap();
    let verdicts: Vec<bool> = listing["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["verified"].as_bool().unwrap())
        .collect();
    assert_eq!(
        (verdicts.len(), verdicts.iter().filter(|v| **v).count()),
        (8, 1),
        "{listing}"
    );
    assert_eq!(app.get("/model/fall-d/1").await.status(), 200);

    // An alias does not move to a version with nothing signed to serve.
    app.ok(
        "mutation { createModel(input: {name: \"fall-a\", version: \"empty\"}) { name } }",
        json!({}),
    )
    .await;
    let refused = app.gql(&set("empty"), json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNSIGNED",
        "{refused}"
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let refused_line = metrics
        .lines()
        .find(|l| l.starts_with("repository_unverified_downloads_total{outcome=\"refused\"}"))
        .unwrap_or_else(|| panic!("no refused-download counter in {metrics}"));
    let count: f64 = refused_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 8.0, "{refused_line}");
}
