//! The OCI distribution API (`/v2/`): what registries' clients pull is what the REST API downloads, on every store.

use serde_json::{Value, json};

use super::Starter;
use crate::common::oci::{clients, oras_pull, oras_push, registry, skopeo_run};
use crate::common::{TestApp, bytes, report_skip, sha256_hex, test_config};

async fn model_with_file(app: &TestApp, name: &str, version: &str, data: Vec<u8>) {
    app.ok(
        "mutation($n: String!, $v: String!) { createModel(input: {name: $n, version: $v, library: \"onnx\", description: \"falls\"}) { name } }",
        json!({ "n": name, "v": version }),
    )
    .await;
    let response = app
        .upload(
            "mutation($n: String!, $v: String!, $file: Upload!) { uploadModelFile(name: $n, version: $v, file: $file) { name } }",
            json!({ "n": name, "v": version }),
            data,
            "model.onnx",
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn json_of(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().unwrap_or_default()
}

/// oras pulls by tag, alias and digest, and skopeo inspects and copies to an `oci:` layout: the bytes are the
/// REST download's, the manifest and config are the registry's own.
pub async fn oci_clients_pull_what_rest_serves(start: Starter) {
    let python = match clients() {
        Ok(python) => python,
        Err(reason) => return report_skip("oci_clients_pull_what_rest_serves", &reason),
    };
    let _ = python;
    let app = start(test_config()).await;
    let data = bytes(300_000, 24);
    model_with_file(&app, "fall-detection", "1.0", data.clone()).await;
    app.ok(
        "mutation { setModelAlias(name: \"fall-detection\", alias: \"production\", version: \"1.0\") { version } }",
        json!({}),
    )
    .await;
    // A name and version OCI's grammar cannot carry, reachable through the documented escape.
    let odd = bytes(1_000, 25);
    model_with_file(&app, "Fall Detection", "2 final", odd.clone()).await;
    let rest = app
        .get("/model/fall-detection/1.0")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(rest.as_ref(), data.as_slice());

    let manifest = app
        .get("/v2/models/fall-detection/manifests/1.0")
        .await
        .bytes()
        .await
        .unwrap();
    let digest = format!("sha256:{}", sha256_hex(&manifest));
    let dir = tempfile::tempdir().unwrap();
    for (n, reference) in [
        "models/fall-detection:1.0".to_string(),
        "models/fall-detection:production".to_string(),
        format!("models/fall-detection@{digest}"),
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(n.to_string());
        let files = oras_pull(&app, reference, &out, None)
            .await
            .unwrap_or_else(|e| panic!("oras pull {reference}: {e}"));
        assert_eq!(files, vec![out.join("model.onnx")], "{reference}");
        assert!(
            std::fs::read(&files[0]).unwrap() == rest.as_ref(),
            "oras pull {reference} differs from the REST download"
        );
    }
    let escaped = format!(
        "models/x--{}:x--{}",
        hex::encode("Fall Detection"),
        base64_url("2 final")
    );
    let out = dir.path().join("escaped");
    let files = oras_pull(&app, &escaped, &out, None).await.unwrap();
    assert_eq!(std::fs::read(&files[0]).unwrap(), odd, "{escaped}");

    // skopeo: the raw manifest and config are the registry's bytes; `copy` writes an OCI layout with the file.
    let target = format!(
        "docker://{}/models/fall-detection:production",
        registry(&app)
    );
    let raw = skopeo_run(&["inspect", "--tls-verify=false", "--raw", &target])
        .await
        .unwrap();
    assert_eq!(
        raw,
        manifest.as_ref(),
        "the alias names the version's manifest"
    );
    let parsed: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        parsed["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        parsed["layers"][0]["annotations"]["org.cncf.model.filepath"],
        "model.onnx"
    );
    let config = skopeo_run(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        "--raw",
        &target,
    ])
    .await
    .unwrap();
    let config: Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["descriptor"]["name"], "fall-detection");
    assert_eq!(config["descriptor"]["version"], "1.0");
    assert_eq!(config["config"]["format"], "onnx");
    assert_eq!(
        config["modelfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&data))
    );
    let layout = dir.path().join("layout");
    skopeo_run(&[
        "copy",
        "--src-tls-verify=false",
        &target,
        &format!("oci:{}:production", layout.display()),
    ])
    .await
    .unwrap();
    let copied = std::fs::read(layout.join("blobs/sha256").join(sha256_hex(&data))).unwrap();
    assert!(copied == data, "the layout's layer is the file");
    let copied_manifest =
        std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
    assert_eq!(copied_manifest, manifest.as_ref(), "copied unchanged");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Per-platform variants are an image index: a client asking for linux/arm64 gets that file.
pub async fn oci_platform_pull_gets_the_variant(start: Starter) {
    if let Err(reason) = clients() {
        return report_skip("oci_platform_pull_gets_the_variant", &reason);
    }
    let app = start(test_config()).await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let (arm, amd) = (bytes(5_000, 1), bytes(6_000, 2));
    for (arch, data) in [("arm64", &arm), ("amd64", &amd)] {
        let response = app
            .upload(
                "mutation($p: PlatformInput, $file: Upload!) { uploadServiceFile(id: \"svc\", file: $file, platform: $p) { id } }",
                json!({ "p": {"os": "linux", "arch": arch} }),
                data.clone(),
                "svc.bin",
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let (status, index) = json_of(&app, "/v2/services/svc/manifests/latest").await;
    assert_eq!(status, 200);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["platform"])
        .collect();
    assert_eq!(
        platforms,
        [
            &json!({"os": "linux", "architecture": "arm64"}),
            &json!({"os": "linux", "architecture": "amd64"})
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    for (arch, data) in [("arm64", &arm), ("amd64", &amd)] {
        let layout = dir.path().join(arch);
        skopeo_run(&[
            "copy",
            "--src-tls-verify=false",
            "--override-os",
            "linux",
            "--override-arch",
            arch,
            &format!("docker://{}/services/svc:latest", registry(&app)),
            &format!("oci:{}:latest", layout.display()),
        ])
        .await
        .unwrap_or_else(|e| panic!("skopeo copy {arch}: {e}"));
        let layer = layout.join("blobs/sha256").join(sha256_hex(data));
        assert!(layer.exists(), "{arch} got its variant");
        assert!(std::fs::read(layer).unwrap() == *data);
        let other = if arch == "arm64" { &amd } else { &arm };
        assert!(
            !layout.join("blobs/sha256").join(sha256_hex(other)).exists(),
            "{arch} got only its variant"
        );
    }
}

/// The routes themselves, without a client: version header, tags and catalog with paging, blobs with ranges,
/// referrers, and the spec's error codes.
pub async fn oci_routes_answer_in_the_spec_shape(start: Starter) {
    let app = start(test_config()).await;
    let base = app.get("/v2/").await;
    assert_eq!(base.status(), 200);
    assert_eq!(
        base.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let data = bytes(10_000, 7);
    for version in ["1", "2", "3"] {
        model_with_file(&app, "m", version, data.clone()).await;
    }
    app.ok(
        "mutation { setModelAlias(name: \"m\", alias: \"prod\", version: \"2\") { version } }",
        json!({}),
    )
    .await;
    app.ok(
        "mutation { createService(input: {id: \"no.file\"}) { id } }",
        json!({}),
    )
    .await;
    model_with_file(&app, "n", "1", bytes(10, 1)).await;

    let (status, tags) = json_of(&app, "/v2/models/m/tags/list").await;
    assert_eq!(status, 200);
    assert_eq!(
        tags,
        json!({"name": "models/m", "tags": ["1", "2", "3", "prod"]})
    );
    let page = app.get("/v2/models/m/tags/list?n=2").await;
    let link = page.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(link, "</v2/models/m/tags/list?n=2&last=2>; rel=\"next\"");
    assert_eq!(
        page.json::<Value>().await.unwrap()["tags"],
        json!(["1", "2"])
    );
    let (_, rest) = json_of(&app, "/v2/models/m/tags/list?n=2&last=2").await;
    assert_eq!(rest["tags"], json!(["3", "prod"]));
    let (_, catalog) = json_of(&app, "/v2/_catalog").await;
    assert_eq!(
        catalog["repositories"],
        json!(["models/m", "models/n"]),
        "a component without a file has nothing to pull"
    );
    let (_, catalog) = json_of(&app, "/v2/_catalog?n=1&last=models/m").await;
    assert_eq!(catalog["repositories"], json!(["models/n"]));
    let (status, body) = json_of(&app, "/v2/_catalog?n=100000").await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "PAGINATION_NUMBER_INVALID")
    );

    // An alias resolves to its version's manifest; the manifest carries its digest.
    let by_alias = app.get("/v2/models/m/manifests/prod").await;
    assert_eq!(
        by_alias.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let digest = by_alias.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes_by_alias = by_alias.bytes().await.unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&bytes_by_alias)));
    let by_version = app
        .get("/v2/models/m/manifests/2")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes_by_alias, by_version);
    let by_digest = app
        .get(&format!("/v2/models/m/manifests/{digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(by_digest, by_version);
    let head = app
        .client
        .head(app.url("/v2/models/m/manifests/prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(
        head.headers()["content-length"],
        by_version.len().to_string().as_str()
    );

    // Blobs: the file with ranges, and the generated config by its digest.
    let manifest: Value = serde_json::from_slice(&by_version).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let range = app
        .get_with(
            &format!("/v2/models/m/blobs/{layer}"),
            &[("range", "bytes=100-199")],
        )
        .await;
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.unwrap().as_ref(), &data[100..200]);
    let head = app
        .client
        .head(app.url(&format!("/v2/models/m/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "10000");
    assert_eq!(head.headers()["docker-content-digest"], layer);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = app
        .get(&format!("/v2/models/m/blobs/{config_digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&config)), config_digest);
    assert_eq!(
        app.get(&format!("/v2/models/n/blobs/{config_digest}"))
            .await
            .status(),
        404,
        "a config belongs to its repository"
    );

    // Referrers: an empty index until signatures are stored, filtered or not.
    let referrers = app
        .get(&format!(
            "/v2/models/m/referrers/{digest}?artifactType=application/vnd.dev.sigstore.bundle.v0.3%2Bjson"
        ))
        .await;
    assert_eq!(referrers.status(), 200);
    assert_eq!(referrers.headers()["oci-filters-applied"], "artifactType");
    let index: Value = referrers.json().await.unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"], json!([]));

    // The spec's error codes.
    let zeros = format!("sha256:{}", "0".repeat(64));
    for (path, status, code) in [
        (
            "/v2/models/m/manifests/9".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/models/m/manifests/{zeros}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/services/no.file/manifests/latest".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/services/no.file/manifests/1".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (format!("/v2/models/m/blobs/{zeros}"), 404, "BLOB_UNKNOWN"),
        (
            "/v2/models/m/blobs/sha256:abc".into(),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/models/m/blobs/md5:abc".into(), 400, "DIGEST_INVALID"),
        ("/v2/widgets/m/tags/list".into(), 400, "NAME_INVALID"),
        ("/v2/models/Upper/tags/list".into(), 400, "NAME_INVALID"),
        ("/v2/models/nothing/tags/list".into(), 404, "NAME_UNKNOWN"),
        (
            "/v2/models/m/manifests/bad%20tag".into(),
            400,
            "TAG_INVALID",
        ),
    ] {
        let (got, body) = json_of(&app, &path).await;
        assert_eq!((got, error_code(&body)), (status, code), "{path}: {body}");
    }
    let out_of_range = app
        .get_with(
            &format!("/v2/models/m/blobs/{layer}"),
            &[("range", "bytes=20000-")],
        )
        .await;
    assert_eq!(out_of_range.status(), 416);
    assert_eq!(out_of_range.headers()["content-range"], "bytes */10000");
}

/// `oras push` of one file to `models/<name>:<version>` creates that version (or fills an existing one) with the
/// file, as any upload does: the REST download is the pushed bytes, the feed has the events, and a pull gets
/// them back. Uploads with a wrong digest and manifests that cannot be a model version are refused.
pub async fn oras_push_creates_the_model_version(start: Starter) {
    if let Err(reason) = clients() {
        return report_skip("oras_push_creates_the_model_version", &reason);
    }
    let app = start(test_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weights.onnx");
    let data = bytes(400_000, 31);
    std::fs::write(&file, &data).unwrap();
    oras_push(&app, "models/pushed:1.0", &file, None, None)
        .await
        .unwrap();
    let rest = app.get("/model/pushed/1.0").await;
    assert_eq!(rest.status(), 200);
    assert!(
        rest.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("weights.onnx")
    );
    assert!(
        rest.bytes().await.unwrap() == data,
        "REST serves the pushed bytes"
    );
    let events = app
        .ok(
            "{ events(filter: {kinds: [MODEL]}) { edges { node { type name version file { sha256 } } } } }",
            json!({}),
        )
        .await;
    let types: Vec<&str> = events["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["CREATED", "FILE_UPLOADED"], "{events}");

    // An existing version is filled; a pull gets the pushed bytes back.
    model_with_file(&app, "pushed", "2.0", bytes(10, 1)).await;
    let replacement = bytes(20_000, 32);
    std::fs::write(&file, &replacement).unwrap();
    oras_push(&app, "models/pushed:2.0", &file, None, None)
        .await
        .unwrap();
    let out = dir.path().join("pulled");
    let files = oras_pull(&app, "models/pushed:2.0", &out, None)
        .await
        .unwrap();
    assert!(std::fs::read(&files[0]).unwrap() == replacement);

    // In chunks (PATCH after PATCH, then the PUT with the digest).
    let chunked = bytes(250_000, 33);
    std::fs::write(&file, &chunked).unwrap();
    oras_push(&app, "models/pushed:chunked", &file, None, Some(64 * 1024))
        .await
        .unwrap();
    let rest = app
        .get("/model/pushed/chunked")
        .await
        .bytes()
        .await
        .unwrap();
    assert!(rest == chunked, "chunks arrive in order, whole");

    // A blob whose bytes are not the digest announced, a manifest with two layers, a push to another kind.
    let wrong = app
        .client
        .post(app.url(&format!(
            "/v2/models/pushed/blobs/uploads/?digest=sha256:{}",
            "0".repeat(64)
        )))
        .body(b"not those bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    assert_eq!(error_code(&wrong.json().await.unwrap()), "DIGEST_INVALID");
    let layer = json!({"mediaType": "application/octet-stream", "digest": format!("sha256:{}", sha256_hex(&data)), "size": data.len()});
    let two = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [layer, layer],
    });
    for (path, code) in [
        ("/v2/models/pushed/manifests/3.0", "MANIFEST_INVALID"),
        ("/v2/services/svc/manifests/latest", "UNSUPPORTED"),
    ] {
        let refused = app
            .client
            .put(app.url(path))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(two.to_string())
            .send()
            .await
            .unwrap();
        let status = refused.status().as_u16();
        let body: Value = refused.json().await.unwrap();
        assert_eq!(error_code(&body), code, "{path}: {status} {body}");
    }
    let mut unknown = two.clone();
    unknown["layers"] = json!([{"mediaType": "application/octet-stream", "digest": format!("sha256:{}", "1".repeat(64)), "size": 1}]);
    let refused = app
        .client
        .put(app.url("/v2/models/pushed/manifests/3.0"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(unknown.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        error_code(&refused.json().await.unwrap()),
        "MANIFEST_BLOB_UNKNOWN"
    );
    assert_eq!(
        app.get("/model/pushed/3.0").await.status(),
        404,
        "a refused push leaves no version behind"
    );
}

/// A file's signatures are the OCI referrers of its manifest (Sigstore bundle artifacts): a device that pulls by
/// digest finds them with the referrers API and verifies the pulled bytes with `model_signing` itself.
pub async fn signatures_are_referrers_of_the_signed_manifest(start: Starter) {
    use testkit::signing::{Key, available, sign_with_key, verify_with_key};
    if let Err(reason) = available() {
        return report_skip("signatures_are_referrers_of_the_signed_manifest", &reason);
    }
    let app = start(test_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(50_000, 91);
    model_with_file(&app, "signed-model", "1.0", data.clone()).await;
    let key = Key::p256(dir.path());
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &data).unwrap();
    let bundle = sign_with_key(&file, &key);
    let attached = app
        .attach_signature("/model/signed-model/1.0", &bundle)
        .await;
    assert_eq!(attached.status(), 201);

    let manifest = app
        .get("/v2/models/signed-model/manifests/1.0")
        .await
        .bytes()
        .await
        .unwrap();
    let subject = format!("sha256:{}", sha256_hex(&manifest));
    let (status, index) = json_of(
        &app,
        &format!("/v2/models/signed-model/referrers/{subject}"),
    )
    .await;
    assert_eq!(status, 200, "{index}");
    let referrers = index["manifests"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{index}");
    assert_eq!(
        referrers[0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let signature_digest = referrers[0]["digest"].as_str().unwrap();
    let signature_manifest = app
        .get(&format!(
            "/v2/models/signed-model/manifests/{signature_digest}"
        ))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        format!("sha256:{}", sha256_hex(&signature_manifest)),
        signature_digest
    );
    let signature_manifest: Value = serde_json::from_slice(&signature_manifest).unwrap();
    assert_eq!(signature_manifest["subject"]["digest"], subject.as_str());
    let layer = signature_manifest["layers"][0]["digest"].as_str().unwrap();
    let pulled = app
        .get(&format!("/v2/models/signed-model/blobs/{layer}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        pulled.as_ref(),
        bundle.as_bytes(),
        "the bundle, byte for byte"
    );
    let config = signature_manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v2/models/signed-model/blobs/{config}"))
            .await
            .status(),
        200
    );

    // The device's check, on what it pulled: the model layer and the referrer's bundle.
    let layer_digest = serde_json::from_slice::<Value>(&manifest).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let weights = app
        .get(&format!("/v2/models/signed-model/blobs/{layer_digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    let pulled_file = dir.path().join("pulled.onnx");
    std::fs::write(&pulled_file, &weights).unwrap();
    let (verified, said) =
        verify_with_key(&pulled_file, std::str::from_utf8(&pulled).unwrap(), &key);
    assert!(verified, "model_signing verify: {said}");

    // Filtered by another artifact type: none, and the filter is said to be applied.
    let filtered = app
        .get(&format!(
            "/v2/models/signed-model/referrers/{subject}?artifactType=application/vnd.example"
        ))
        .await;
    assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
    let filtered: Value = filtered.json().await.unwrap();
    assert_eq!(filtered["manifests"], json!([]));
}
