use serde_json::{Value, json};

use super::Starter;
use crate::common::slow::SlowDownload;
use crate::common::{bytes, config_with, sha256_hex, test_config};

const UPLOAD_MODEL: &str = "mutation($file: Upload!) { uploadModelFile(name: \"fall-detection\", version: \"pilot-2-1\", file: $file) {
    file { size sha256 contentType filename uploadedAt downloadUrl } updatedAt } }";

async fn create_model(app: &crate::common::TestApp) {
    app.ok(
        "mutation { createModel(input: {name: \"fall-detection\", version: \"pilot-2-1\", library: \"keras\"}) { name } }",
        json!({}),
    )
    .await;
}

pub async fn uploads_and_downloads_files(start: Starter) {
    let app = start(test_config()).await;
    create_model(&app).await;
    let data = bytes(300_001, 1);
    let response = app
        .upload(
            UPLOAD_MODEL,
            json!({}),
            data.clone(),
            "../weights/model v1.zip",
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let file = &body["data"]["uploadModelFile"]["file"];
    assert_eq!(file["size"], 300_001);
    assert_eq!(file["sha256"], sha256_hex(&data));
    assert_eq!(file["contentType"], "application/zip");
    assert_eq!(file["filename"], "model v1.zip", "directories are dropped");
    assert_eq!(file["downloadUrl"], "/model/fall-detection/pilot-2-1");

    let response = app.get("/model/fall-detection/pilot-2-1").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-length"], "300001");
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(headers["etag"], format!("\"{}\"", sha256_hex(&data)));
    assert_eq!(headers["accept-ranges"], "bytes");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"model v1.zip\""),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());

    // HEAD answers the same headers without the body.
    let head = app
        .client
        .head(app.url("/model/fall-detection/pilot-2-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "300001");

    // Replacing the file serves the new bytes.
    let replacement = bytes(1234, 2);
    let response = app
        .upload(UPLOAD_MODEL, json!({}), replacement.clone(), "model.zip")
        .await;
    assert_eq!(response.status(), 200);
    let downloaded = app
        .get("/model/fall-detection/pilot-2-1")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.as_ref(), replacement.as_slice());

    // Every kind has its upload mutation and download route.
    for (kind, create, upload) in [
        (
            "transformation",
            "createTransformation",
            "uploadTransformationFile",
        ),
        ("service", "createService", "uploadServiceFile"),
        ("inferencer", "createInferencer", "uploadInferencerFile"),
    ] {
        app.ok(
            &format!("mutation {{ {create}(input: {{id: \"{kind}.x\"}}) {{ id }} }}"),
            json!({}),
        )
        .await;
        let content = format!("{kind} code").into_bytes();
        let response = app
            .upload(
                &format!("mutation($file: Upload!) {{ {upload}(id: \"{kind}.x\", file: $file) {{ file {{ downloadUrl }} }} }}"),
                json!({}),
                content.clone(),
                "code.zip",
            )
            .await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["data"][upload]["file"]["downloadUrl"],
            format!("/{kind}/{kind}.x")
        );
        let downloaded = app
            .get(&format!("/{kind}/{kind}.x"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(downloaded.as_ref(), content.as_slice());
    }
}

pub async fn serves_conditional_and_range_requests(start: Starter) {
    let app = start(test_config()).await;
    create_model(&app).await;
    let data = bytes(10_000, 3);
    app.upload(UPLOAD_MODEL, json!({}), data.clone(), "m.zip")
        .await;
    const PATH: &str = "/model/fall-detection/pilot-2-1";
    let etag = format!("\"{}\"", sha256_hex(&data));

    let response = app
        .get_with(PATH, &[("if-none-match", etag.as_str())])
        .await;
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], etag.as_str());
    let response = app.get_with(PATH, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(response.status(), 200);

    let response = app.get_with(PATH, &[("range", "bytes=100-199")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(response.headers()["content-length"], "100");
    assert_eq!(response.bytes().await.unwrap().as_ref(), &data[100..200]);

    let response = app.get_with(PATH, &[("range", "bytes=-10")]).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap().as_ref(), &data[9_990..]);

    let response = app.get_with(PATH, &[("range", "bytes=10000-")]).await;
    assert_eq!(response.status(), 416);
    assert_eq!(response.headers()["content-range"], "bytes */10000");
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "RANGE_NOT_SATISFIABLE"
    );

    // A partial copy of other bytes (stale If-Range) gets the whole file.
    let response = app
        .get_with(PATH, &[("range", "bytes=0-9"), ("if-range", "\"stale\"")])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 10_000);
}

/// Large enough to span several storage chunks (GridFS cuts files into 255 KiB chunks), with ranges that start,
/// end and cross chunk boundaries.
pub async fn serves_ranges_across_chunk_boundaries(start: Starter) {
    let app = start(test_config()).await;
    create_model(&app).await;
    let data = bytes(1024 * 1024 + 17, 21);
    let uploaded = app
        .upload(UPLOAD_MODEL, json!({}), data.clone(), "m.zip")
        .await;
    assert_eq!(uploaded.status(), 200);
    const PATH: &str = "/model/fall-detection/pilot-2-1";
    let chunk = 255 * 1024;
    for (from, to) in [
        (chunk - 10, chunk + 10),
        (chunk, 2 * chunk - 1),
        (chunk + 1, 3 * chunk + 5),
        (0, data.len() - 1),
        (data.len() - 17, data.len() - 1),
    ] {
        let response = app
            .get_with(PATH, &[("range", &format!("bytes={from}-{to}"))])
            .await;
        assert_eq!(response.status(), 206, "{from}-{to}");
        let body = response.bytes().await.unwrap();
        assert!(
            body.as_ref() == &data[from..=to],
            "bytes {from}-{to} differ"
        );
    }
    let whole = app.get(PATH).await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&whole), sha256_hex(&data));
}

pub async fn missing_files_are_clean_404s(start: Starter) {
    let app = start(test_config()).await;
    for path in [
        "/model/none/1",
        "/transformation/none",
        "/service/none",
        "/inferencer/none",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "NOT_FOUND");
        assert!(
            body["detail"].as_str().unwrap().contains("not found"),
            "{body}"
        );
    }
    create_model(&app).await;
    let response = app.get("/model/fall-detection/pilot-2-1").await;
    assert_eq!(
        response.status(),
        404,
        "a component without a file is a 404, not a 500"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("no file"),
        "{body}"
    );
}

pub async fn oversize_uploads_are_refused_and_keep_the_previous_file(start: Starter) {
    let app = start(config_with(|c| c.uploads.max_size = 100_000)).await;
    create_model(&app).await;
    let first = bytes(100_000, 4);
    let response = app
        .upload(UPLOAD_MODEL, json!({}), first.clone(), "m.zip")
        .await;
    assert_eq!(response.status(), 200, "exactly the limit is accepted");

    let response = app
        .upload(UPLOAD_MODEL, json!({}), bytes(100_001, 5), "big.zip")
        .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    let downloaded = app
        .get("/model/fall-detection/pilot-2-1")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        downloaded.as_ref(),
        first.as_slice(),
        "the previous file is intact"
    );
    let meta = app
        .ok(
            "{ model(name: \"fall-detection\", version: \"pilot-2-1\") { file { filename } } }",
            json!({}),
        )
        .await;
    assert_eq!(meta["model"]["file"]["filename"], "m.zip");
}

pub async fn uploads_to_missing_components_are_not_found(start: Starter) {
    let app = start(test_config()).await;
    let response = app
        .upload(UPLOAD_MODEL, json!({}), bytes(1000, 6), "m.zip")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(body["data"], json!(null));
}

pub async fn forged_and_malformed_uploads_are_refused(start: Starter) {
    let app = start(test_config()).await;
    create_model(&app).await;
    // An upload reference smuggled into a JSON request.
    let body = app
        .gql(
            "mutation($file: Upload!) { uploadModelFile(name: \"fall-detection\", version: \"pilot-2-1\", file: $file) { name } }",
            json!({ "file": "#__graphql_file__:0" }),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INVALID_INPUT",
        "{body}"
    );

    let send = |operations: String, map: String, part: Option<&'static str>| {
        let mut form = reqwest::multipart::Form::new()
            .text("operations", operations)
            .text("map", map);
        if let Some(name) = part {
            form = form.part(
                name,
                reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
            );
        }
        app.client
            .post(app.url("/graphql"))
            .header("apollo-require-preflight", "true")
            .multipart(form)
            .send()
    };
    let operations = json!({ "query": UPLOAD_MODEL, "variables": { "file": null } }).to_string();
    for (map, part, why) in [
        (
            json!({ "0": ["variables.nothing"] }),
            Some("0"),
            "path names no variable",
        ),
        (
            json!({ "1": ["variables.file"] }),
            Some("0"),
            "part not in the map",
        ),
        (
            json!({ "0": ["variables.file"] }),
            None,
            "mapped part never sent",
        ),
        (
            json!({ "0": ["variables.file", "variables.file"] }),
            Some("0"),
            "one file, two variables",
        ),
    ] {
        let response = send(operations.clone(), map.to_string(), part)
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "INVALID_INPUT",
            "{why}: {body}"
        );
    }
    let response = send("not json".into(), "{}".into(), None).await.unwrap();
    assert_eq!(response.status(), 400);

    // A body cut off in the middle of the file part.
    let boundary = "XyZ";
    let truncated = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\":[\"variables.file\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.zip\"\r\n\r\npartial bytes"
    );
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("apollo-require-preflight", "true")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(truncated)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let meta = app
        .ok(
            "{ model(name: \"fall-detection\", version: \"pilot-2-1\") { file { size } } }",
            json!({}),
        )
        .await;
    assert_eq!(meta["model"]["file"], json!(null), "nothing was attached");
}

pub async fn identical_bytes_are_deduplicated_per_component(start: Starter) {
    let app = start(test_config()).await;
    let data = bytes(5000, 7);
    for id in ["a", "b"] {
        app.ok(
            &format!("mutation {{ createService(input: {{id: \"{id}\"}}) {{ id }} }}"),
            json!({}),
        )
        .await;
        app.upload(
            &format!("mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ id }} }}"),
            json!({}),
            data.clone(),
            "same.zip",
        )
        .await;
    }
    // Deleting one of two components that share bytes leaves the other's file intact.
    app.ok("mutation { deleteService(id: \"a\") }", json!({}))
        .await;
    let downloaded = app.get("/service/b").await.bytes().await.unwrap();
    assert_eq!(downloaded.as_ref(), data.as_slice());
}

pub async fn model_meta_route_keeps_the_original_shape(start: Starter) {
    let app = start(test_config()).await;
    app.ok(
        "mutation { createModel(input: {name: \"base\", version: \"base2\", library: \"keras\", description: \"CIFAR\"}) { name } }",
        json!({}),
    )
    .await;
    let response = app
        .get("/model/meta?model_name=base&model_version=base2")
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"meta": {"library": "keras", "description": "CIFAR"}, "model_name": "base", "model_version": "base2", "model_id": null})
    );
    let response = app
        .get("/model/meta?model_name=base&model_version=nope")
        .await;
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["detail"].is_string());
    let response = app.get("/model/meta?model_name=base").await;
    assert_eq!(
        response.status(),
        422,
        "a missing parameter, as FastAPI answered"
    );
}

pub async fn graphql_over_get_runs_queries_only(start: Starter) {
    let app = start(test_config()).await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .header("apollo-require-preflight", "true")
        .query(&[("query", "{ models { totalCount } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"]["models"]["totalCount"],
        0
    );
    let response = app
        .client
        .get(app.url("/graphql"))
        .header("apollo-require-preflight", "true")
        .query(&[(
            "query",
            "mutation { createService(input: {id: \"x\"}) { id } }",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_INPUT");
    assert_eq!(
        app.ok("{ services { totalCount } }", json!({})).await["services"]["totalCount"],
        0
    );
}

/// RFC 9110: no range of an empty file is satisfiable (416 with `bytes */0`); several ranges are answered with the
/// whole file, whatever they select.
pub async fn serves_empty_files_and_multiple_ranges(start: Starter) {
    let app = start(test_config()).await;
    create_model(&app).await;
    const PATH: &str = "/model/fall-detection/pilot-2-1";
    let response = app
        .upload(UPLOAD_MODEL, json!({}), Vec::new(), "empty.zip")
        .await;
    assert_eq!(response.status(), 200);
    let response = app.get(PATH).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "0");
    assert!(response.bytes().await.unwrap().is_empty());
    for range in ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=0-1,5-"] {
        let response = app.get_with(PATH, &[("range", range)]).await;
        assert_eq!(response.status(), 416, "{range}");
        assert_eq!(response.headers()["content-range"], "bytes */0", "{range}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "RANGE_NOT_SATISFIABLE", "{range}");
    }
    // The server is still there for the next request on a new connection, and on the same one.
    assert_eq!(app.get(PATH).await.status(), 200);

    let data = bytes(10_000, 5);
    let response = app
        .upload(UPLOAD_MODEL, json!({}), data.clone(), "m.zip")
        .await;
    assert_eq!(response.status(), 200);
    for range in [
        "bytes=0-1,5-6",
        "bytes=0-1,999999-",
        "bytes=999999-,0-1",
        "bytes=50000-,60000-",
    ] {
        let response = app.get_with(PATH, &[("range", range)]).await;
        assert_eq!(response.status(), 200, "{range}");
        assert!(response.headers().get("content-range").is_none(), "{range}");
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            data.as_slice(),
            "{range}"
        );
    }
}

/// A client on a slow link is half way through a download when the file is replaced and then deleted: it still
/// gets every byte of the version it started, while new requests see the new state at once.
pub async fn downloads_in_progress_survive_replace_and_delete(start: Starter) {
    let app = start(test_config()).await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let upload = "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }";
    let old = bytes(16 << 20, 21);
    let response = app.upload(upload, json!({}), old.clone(), "v1.zip").await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.unwrap()["errors"].is_null());

    let mut download = SlowDownload::start(app.addr, "/service/svc", &[]).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.content_length, Some(old.len() as u64));
    download.read_at_least(256 * 1024).await;

    let new = bytes(1 << 20, 22);
    let response = app.upload(upload, json!({}), new.clone(), "v2.zip").await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.unwrap()["errors"].is_null());
    let current = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(
        sha256_hex(&current),
        sha256_hex(&new),
        "new downloads get the new file"
    );
    let deleted = app
        .ok("mutation { deleteService(id: \"svc\") }", json!({}))
        .await;
    assert_eq!(deleted["deleteService"], true);
    assert_eq!(app.get("/service/svc").await.status(), 404);

    let body = download.finish().await;
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&old),
        "the download in progress completes with the version it started"
    );
}
