//! The web catalogue at `/ui` and the REST API's explorer at `/docs`: served offline from the binary, and
//! working in a real browser (the scripts in `playground/test/` drive Chromium).

mod common;

use common::{TestApp, browser, config_with, test_config, tokens};
use serde_json::{Value, json};

/// Runs a GraphQL operation with a bearer token and returns its `data`.
async fn ok_as(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let body: Value = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
    body["data"].clone()
}

/// Uploads `bytes` as the file of a component with a GraphQL multipart request and a bearer token.
async fn upload_as(app: &TestApp, token: &str, mutation: &str, bytes: Vec<u8>, filename: &str) {
    let form = testkit::graphql::upload_form(mutation, json!({}), bytes, filename);
    let body: Value = testkit::graphql::post_upload(&app.client, &app.url(""), form)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
}

/// The security headers every response carries; `policy` is its Content-Security-Policy.
fn assert_secure(response: &reqwest::Response) -> String {
    let headers = response.headers();
    let what = response.url().path().to_owned();
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    let policy = headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    policy
}

/// Pages may run only this server's scripts (and the import map, by its hash); everything else (JSON, errors,
/// downloads) may run nothing, so a file uploaded as HTML cannot act as this origin even when opened directly.
#[tokio::test]
async fn every_response_carries_security_headers() {
    let app = common::embedded(test_config()).await;
    for page in [
        "/ui",
        "/docs",
        "/playground",
        "/ui/app.js",
        "/ui/vendor/swagger-ui-bundle.js",
        "/playground/playground.css",
    ] {
        let response = app.get(page).await;
        assert_eq!(response.status(), 200, "{page}");
        let policy = assert_secure(&response);
        assert!(policy.contains("script-src 'self'"), "{page}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{page}: {policy}");
        assert!(!policy.contains("unsafe-eval"), "{page}: {policy}");
    }
    app.create_service("page").await;
    let html = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(html)
            .file_name("page.html")
            .mime_str("text/html")
            .unwrap(),
    );
    let upload = app
        .client
        .put(app.url("/service/page"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 204);
    for path in [
        "/service/page",
        "/healthz",
        "/openapi.json",
        "/no/such/route",
    ] {
        let response = app.get(path).await;
        let policy = assert_secure(&response);
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert!(policy.contains("sandbox"), "{path}: {policy}");
    }
    let download = app.get("/service/page").await;
    assert_eq!(download.headers()["content-type"], "text/html");
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    let graphql = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert!(assert_secure(&graphql).contains("default-src 'none'"));
}

#[tokio::test]
async fn the_pages_and_their_files_come_from_the_binary() {
    let app = common::embedded(test_config()).await;
    for (page, prefix, expected) in [("/ui", "/ui/", 6), ("/docs", "/ui/", 4)] {
        let response = app.get(page).await;
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no outside URL in {page}: {html}"
        );
        // Every file the page names (scripts, styles, the import map's modules) is served.
        let mut referenced = 0;
        for src in html.split('"').filter(|part| part.starts_with(prefix)) {
            let file = app.get(src).await;
            assert_eq!(file.status(), 200, "{src}");
            assert!(
                file.bytes().await.unwrap().len() > 100,
                "{src} is too small"
            );
            referenced += 1;
        }
        assert_eq!(referenced, expected, "files referenced by {page}");
    }
    let vendored = app.get("/ui/vendor/swagger-ui-bundle.js").await;
    assert_eq!(vendored.headers()["cache-control"], "public, max-age=86400");
    assert_eq!(
        vendored.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // The catalogue's download worker: browsers take a service worker only with a JavaScript type. Its
    // addresses under /ui/download/ exist only inside the browser; the server has no route there.
    let worker = app.get("/ui/download-worker.js").await;
    assert_eq!(worker.status(), 200);
    assert_eq!(
        worker.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(worker.headers()["cache-control"], "no-cache");
    for missing in [
        "/ui/download/0b3f5c1e-5d2a-4c41-9a8e-2f1d6c7b9a00",
        "/ui/nothing.js",
        "/ui/vendor/nothing.js",
        "/ui/vendor/app.js",
    ] {
        let response = app.get(missing).await;
        assert_eq!(response.status(), 404, "{missing}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
    }

    // With a slash, the catalogue too; and the icon browsers ask for on every page.
    let slashed = app.get("/ui/").await;
    assert_eq!(slashed.status(), 200);
    assert_eq!(
        slashed.bytes().await.unwrap(),
        app.get("/ui").await.bytes().await.unwrap()
    );
    let icon = app.get("/favicon.ico").await;
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/vnd.microsoft.icon");
    assert_eq!(
        &icon.bytes().await.unwrap()[..4],
        &[0, 0, 1, 0],
        "an ICO header"
    );

    let landing = app
        .get_with("/", &[("accept", "text/html,application/xhtml+xml")])
        .await;
    assert_eq!(
        landing.url().path(),
        "/ui",
        "a browser at / lands on the catalogue"
    );
    let program = app.get("/").await;
    assert_eq!(program.headers()["vary"], "accept");
    let map: Value = program.json().await.unwrap();
    assert_eq!(map["graphql"], "/graphql");
    assert_eq!(map["ui"], "/ui");
    assert_eq!(map["docs"], "/docs");
}

/// A catalogue with something in every kind: 22 services with needs that vary by their number, one service
/// with a file that references a stored and a missing model, two models, a transformation and an inferencer.
async fn seed(app: &TestApp, token: &str) {
    let mut services = Vec::new();
    for i in 0..22 {
        let library = if i % 3 == 0 {
            json!({"name": "tensorflow", "version": "2.13.0"})
        } else {
            json!({"name": "torch", "version": "2.1.0"})
        };
        services.push(format!(
            "s{i}: createService(input: {{id: \"svc-{i:02}\", description: \"service number {i}\", \
             needs: {{gpu: {}, ram: {}, preinstalledLibraries: [{{name: {}, version: {}}}]}}}}) {{ id }}",
            i % 2 == 0,
            i % 8,
            library["name"],
            library["version"]
        ));
    }
    let services = format!("mutation {{ {} }}", services.join(" "));
    ok_as(app, token, &services, json!({})).await;
    ok_as(
        app,
        token,
        r#"mutation {
          a: createModel(input: {name: "fall-detection", version: "pilot-2-1", library: "keras",
                                 description: "detects falls"}) { name }
          b: createModel(input: {name: "yolo", version: "v8", library: "torch"}) { name }
          c: createService(input: {id: "edge.camera-svc", description: "camera pipeline",
               needs: {ram: 2, preinstalledLibraries: [{name: "tensorflow", version: ">=2.12,<3"}],
                       availableModels: [{name: "fall-detection", version: "pilot-2-1"},
                                         {name: "missing-model", version: "v1"}]}}) { id }
          d: createTransformation(input: {id: "resize", description: "resizes frames",
               parameterTypes: {width: "int"}, defaultValues: {width: 224}, outputs: ["frame"]}) { id }
          e: createInferencer(input: {id: "tf-inferencer", library: "tensorflow",
               needs: {ram: 2, preinstalledLibraries: [{name: "tensorflow", version: ""}]}}) { id }
        }"#,
        json!({}),
    )
    .await;
    upload_as(
        app,
        token,
        r#"mutation($file: Upload!) { uploadServiceFile(id: "edge.camera-svc", file: $file) { id } }"#,
        common::bytes(700_000, 17),
        "camera-svc.tar.gz",
    )
    .await;
}

#[tokio::test]
async fn the_catalogue_works_in_a_real_browser() {
    let test = "the_catalogue_works_in_a_real_browser";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let app = common::embedded(test_config()).await;
    seed(&app, "").await;
    // A file of a few MiB: enough for the upload to report progress, small enough for a quick test.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fall-detection.zip");
    let bytes = common::bytes(6 * 1024 * 1024 + 123, 15);
    std::fs::write(&file, &bytes).unwrap();
    browser::run_script(
        &chromium,
        "catalogue.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
            file.display().to_string(),
            common::sha256_hex(&bytes),
        ],
    )
    .await;
    // What the page did reached the store.
    let data = app
        .ok(
            r#"{ model(name: "fall-detection", version: "pilot-2-1") { description file { sha256 } }
                 service(id: "svc-21") { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["model"]["file"]["sha256"], common::sha256_hex(&bytes));
    assert_eq!(
        data["model"]["description"],
        "detects falls, edited in the browser"
    );
    assert!(data["service"].is_null(), "deleted through the page");
}

#[tokio::test]
async fn a_protected_catalogue_asks_for_a_token_and_shows_read_only_views() {
    let test = "a_protected_catalogue_asks_for_a_token_and_shows_read_only_views";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let (read, write) = ("read-token-for-the-browser", "write-token-for-the-browser");
    let private = common::embedded(config_with(|c| {
        c.auth = tokens(&[read], &[write], false);
        c.uploads.max_size = 128 * 1024 * 1024;
    }))
    .await;
    // With a small upload limit, to see the page explain a refused upload.
    let public = common::embedded(config_with(|c| {
        c.auth = tokens(&[], &[write], true);
        c.uploads.max_size = 1024 * 1024;
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let too_large = dir.path().join("too-large.bin");
    std::fs::write(&too_large, common::bytes(3 * 1024 * 1024, 18)).unwrap();
    let bytes = common::bytes(300_000, 16);
    for app in [&private, &public] {
        seed(app, write).await;
        upload_as(
            app,
            write,
            r#"mutation($file: Upload!) { uploadModelFile(name: "yolo", version: "v8", file: $file) { name } }"#,
            bytes.clone(),
            "yolo.pt",
        )
        .await;
    }
    // Large enough that a copy in the page's memory would stand out in its heap: the download must stream.
    let large = common::bytes(64 * 1024 * 1024, 19);
    ok_as(
        &private,
        write,
        r#"mutation { createModel(input: {name: "large-model", version: "v1", library: "torch"}) { name } }"#,
        json!({}),
    )
    .await;
    upload_as(
        &private,
        write,
        r#"mutation($file: Upload!) { uploadModelFile(name: "large-model", version: "v1", file: $file) { name } }"#,
        large.clone(),
        "large-model.bin",
    )
    .await;
    browser::run_script(
        &chromium,
        "protected.mjs",
        &[
            format!("http://{}", private.addr),
            format!("http://{}", public.addr),
            browser::screenshots().display().to_string(),
            read.into(),
            write.into(),
            common::sha256_hex(&bytes),
            too_large.display().to_string(),
            common::sha256_hex(&large),
            large.len().to_string(),
        ],
    )
    .await;
}

#[tokio::test]
async fn docs_explores_the_rest_api_in_a_real_browser() {
    let test = "docs_explores_the_rest_api_in_a_real_browser";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let app = common::embedded(test_config()).await;
    seed(&app, "").await;
    browser::run_script(
        &chromium,
        "docs.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
        ],
    )
    .await;
}

/// Round 2 of the catalogue (issue #27) on a server whose reads need a token: no lost edits, live component
/// pages, aliases, locks, per-platform files named right, "Use this" lines that real clients run, the model page
/// with a safe Markdown card, search across kinds, the device check's platform, tokens shared by tabs.
#[tokio::test]
async fn the_catalogue_edits_without_lost_updates_and_shows_how_to_use_it() {
    let test = "the_catalogue_edits_without_lost_updates_and_shows_how_to_use_it";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let (read, write) = ("read-token-round-2", "write-token-round-2");
    let app = common::embedded(config_with(|c| {
        c.auth = tokens(&[read], &[write], false);
    }))
    .await;
    let card = "# Card of the model\n\nDetects things. <script>window.pwned = true</script>\n\n\
                <img src=x onerror=\"window.pwned = true\">\n\n\
                [click me](javascript:window.pwned=true) and [the paper](https://example.org/paper).";
    ok_as(
        &app,
        write,
        r#"mutation($card: String!) {
          a: createModel(input: {name: "card", version: "1.9", library: "torch", description: "camera model"}) { name }
          b: createModel(input: {name: "card", version: "1.10", library: "torch"}) { name }
          c: createModel(input: {name: "card", version: "1.10rc1", library: "torch"}) { name }
          d: createModel(input: {name: "card", version: "pilot-x", library: "torch"}) { name }
          e: createModel(input: {name: "card", version: "2.0", library: "torch", description: $card}) { name }
          f: createService(input: {id: "edge.camera-svc.long-identifier_v2", description: "camera pipeline",
               needs: {ram: 0.25, availableModels: [{name: "card", version: "1.10"}]}}) { id }
          g: createService(input: {id: "tiny", description: "fits anywhere", needs: {ram: 0.5}}) { id }
        }"#,
        json!({ "card": card }),
    )
    .await;
    let bytes = common::bytes(200_000, 27);
    upload_as(
        &app,
        write,
        r#"mutation($file: Upload!) { uploadModelFile(name: "card", version: "1.10", file: $file) { name } }"#,
        bytes.clone(),
        "card-1.10.bin",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let variant = dir.path().join("card-arm64.bin");
    std::fs::write(&variant, common::bytes(50_000, 28)).unwrap();
    let python = std::env::var("TUSPY_PYTHON").unwrap_or_else(|_| "python3".into());
    browser::run_script(
        &chromium,
        "editing.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
            write.into(),
            variant.display().to_string(),
            common::sha256_hex(&bytes),
            python,
        ],
    )
    .await;
    // What the pages did reached the store: the RAM the other browser saved survived this one's description.
    let data = ok_as(
        &app,
        read,
        r#"{ service(id: "edge.camera-svc.long-identifier_v2") { description needs { ram } }
             model(name: "card", version: "1.9") { locked aliases variants { file { filename } } }
             history: modelAliasHistory(name: "card", alias: "production") { from to } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        data["service"]["description"],
        "Camera pipeline. **Edited** in the first browser."
    );
    assert_eq!(data["service"]["needs"]["ram"], 3.0);
    assert_eq!(data["model"]["locked"], true);
    assert_eq!(data["model"]["aliases"], json!(["production"]));
    assert_eq!(
        data["model"]["variants"][0]["file"]["filename"],
        "card-arm64.bin"
    );
    assert_eq!(
        data["history"],
        json!([{"from": null, "to": "1.10"}, {"from": "1.10", "to": "1.9"}])
    );
}

/// Signatures in the catalogue: attached from the component page, shown with their signer and verdict.
#[tokio::test]
async fn the_catalogue_attaches_and_shows_signatures() {
    let test = "the_catalogue_attaches_and_shows_signatures";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    if let Err(reason) = testkit::signing::available() {
        return common::report_skip(test, &reason);
    }
    use testkit::signing::{Key, Policy, sign_with_key};
    let dir = tempfile::tempdir().unwrap();
    let (publisher, stranger) = (Key::p256(dir.path()), Key::p256(dir.path()));
    let policy = Policy::new()
        .rule(&["model"], "signed-*")
        .key(&publisher)
        .write(dir.path());
    let app = common::embedded(config_with(|c| c.signatures.trust_policy = Some(policy))).await;
    app.ok(
        r#"mutation { createModel(input: {name: "signed-model", version: "1.0", library: "onnx"}) { name } }"#,
        json!({}),
    )
    .await;
    let data = common::bytes(20_000, 29);
    let response = app
        .upload(
            r#"mutation($file: Upload!) { uploadModelFile(name: "signed-model", version: "1.0", file: $file) { name } }"#,
            json!({}),
            data.clone(),
            "model.onnx",
        )
        .await;
    assert_eq!(response.status(), 200);
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &data).unwrap();
    let (trusted, untrusted) = (
        dir.path().join("trusted.sig"),
        dir.path().join("untrusted.sig"),
    );
    std::fs::write(&trusted, sign_with_key(&file, &publisher)).unwrap();
    std::fs::write(&untrusted, sign_with_key(&file, &stranger)).unwrap();
    browser::run_script(
        &chromium,
        "signing.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
            trusted.display().to_string(),
            untrusted.display().to_string(),
            publisher.fingerprint.clone(),
        ],
    )
    .await;
    let listing: Value = app
        .get("/model/signed-model/1.0/signatures")
        .await
        .json()
        .await
        .unwrap();
    let verdicts: Vec<&Value> = listing["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["verified"])
        .collect();
    assert_eq!(verdicts, [&json!(true), &json!(false)], "{listing}");
}

/// Builds and pipelines in the catalogue: a build uploaded with its precision and GPU memory, the builds with their
/// needs, the device check's GPU memory, and a pipeline checked on a device where it fits and on one where it does
/// not, with the reason.
#[tokio::test]
async fn the_catalogue_uploads_builds_and_checks_a_pipeline() {
    let test = "the_catalogue_uploads_builds_and_checks_a_pipeline";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let app = common::embedded(common::test_config()).await;
    app.ok(
        r#"mutation {
          a: createModel(input: {name: "llm", version: "1", library: "vllm"}) { name }
          b: createInferencer(input: {id: "plain-runner", needs: {ram: 2}}) { id }
        }"#,
        json!({}),
    )
    .await;
    app.upload(
        r#"mutation($file: Upload!) { uploadInferencerFile(id: "plain-runner", file: $file) { id } }"#,
        json!({}),
        common::bytes(100, 40),
        "runner.zip",
    )
    .await;
    for (i, (precision, gpu_memory)) in [("4bit", 6), ("8bit", 10), ("16bit", 18)]
        .into_iter()
        .enumerate()
    {
        let response = app
            .upload(
                r#"mutation($file: Upload!, $precision: String, $needs: NeedsInput) {
                  uploadModelFile(name: "llm", version: "1", file: $file, precision: $precision, needs: $needs,
                    platform: {os: "linux", arch: "amd64", accelerator: "cuda"}) { name } }"#,
                json!({ "precision": precision, "needs": {"gpuMemory": gpu_memory} }),
                common::bytes(1000 + i, 41 + i as u64),
                &format!("llm-{precision}.bin"),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("llm-2bit.bin");
    std::fs::write(&build, common::bytes(5_000, 44)).unwrap();
    browser::run_script(
        &chromium,
        "pipeline.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
            build.display().to_string(),
        ],
    )
    .await;
    // The build the page uploaded reached the store with its precision and needs.
    let data = app
        .ok(
            r#"{ model(name: "llm", version: "1") { variants { platform { precision } needs { gpuMemory gpu } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["model"]["variants"][3],
        json!({"platform": {"precision": "2bit"}, "needs": {"gpuMemory": 3.0, "gpu": true}})
    );
}

/// Rollouts in the catalogue (issue #26): a rollout started from a model's page, followed per hardware class while
/// six devices (run by the script) report, one class reverting; pause, resume and abort from the page; the devices
/// running each version; a read token sees it all without the buttons.
#[tokio::test]
async fn the_catalogue_starts_and_follows_a_rollout_per_hardware_class() {
    let test = "the_catalogue_starts_and_follows_a_rollout_per_hardware_class";
    let Some(chromium) = browser::chromium_or_skip(test) else {
        return;
    };
    let (read, write, device) = (
        "read-token-rollout",
        "write-token-rollout",
        "device-token-rollout",
    );
    let app = common::embedded(config_with(|c| {
        c.auth = tokens(&[read], &[write], false).with_device_tokens(&[device.into()]);
    }))
    .await;
    let files = [common::bytes(3_000, 51), common::bytes(3_000, 52)];
    for (version, file) in ["1.0", "2.0"].into_iter().zip(&files) {
        ok_as(
            &app,
            write,
            r#"mutation($version: String!) {
              createModel(input: {name: "fleet-ui", version: $version, library: "onnxruntime"}) { name } }"#,
            json!({ "version": version }),
        )
        .await;
        upload_as(
            &app,
            write,
            &format!(
                r#"mutation($file: Upload!) {{ uploadModelFile(name: "fleet-ui", version: "{version}", file: $file) {{ name }} }}"#
            ),
            file.clone(),
            "fleet-ui.onnx",
        )
        .await;
    }
    ok_as(
        &app,
        write,
        r#"mutation { setModelAlias(name: "fleet-ui", alias: "production", version: "1.0") { name } }"#,
        json!({}),
    )
    .await;
    browser::run_script(
        &chromium,
        "rollout.mjs",
        &[
            format!("http://{}", app.addr),
            browser::screenshots().display().to_string(),
            write.into(),
            read.into(),
            device.into(),
            common::sha256_hex(&files[0]),
            common::sha256_hex(&files[1]),
        ],
    )
    .await;
    // What the page did reached the store: the first rollout completed for the CPU boxes and reverted the
    // Jetsons, the second was aborted, and production moved to 2.0.
    let data = ok_as(
        &app,
        read,
        r#"{ rollouts(model: "fleet-ui") { version state startedBy classes { hardwareClass state } }
             history: modelAliasHistory(name: "fleet-ui", alias: "production") { to } }"#,
        json!({}),
    )
    .await;
    let mut rollouts = data["rollouts"].as_array().unwrap().clone();
    rollouts.sort_by_key(|r| r["version"].as_str().unwrap().to_owned());
    assert_eq!(rollouts[0]["state"], "ABORTED", "{data:#}");
    assert_eq!(rollouts[1]["state"], "COMPLETED", "{data:#}");
    let mut classes: Vec<(String, String)> = rollouts[1]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["hardwareClass"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        [
            ("linux/amd64/v1@ram16g".to_owned(), "COMPLETED".to_owned()),
            (
                "linux/arm64/v8+cuda@gpu8g".to_owned(),
                "REVERTED".to_owned()
            )
        ]
    );
    // The history records each rollout's outcome; the alias never went back to 1.0.
    let moves: Vec<&str> = data["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(moves[..2], ["1.0", "2.0"], "{data:#}");
    assert!(moves[2..].iter().all(|to| *to == "2.0"), "{data:#}");
}
