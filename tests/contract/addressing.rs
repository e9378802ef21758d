//! From a name to the right bytes: downloads by digest, model aliases, immutable files and per-platform variants.

use serde_json::{Value, json};

use super::Starter;
use crate::common::{Options, TestApp, bytes, sha256_hex};

async fn create_model(app: &TestApp, version: &str) {
    app.ok(
        "mutation($v: String!) { createModel(input: {name: \"fall-detection\", version: $v, library: \"keras\"}) { name } }",
        json!({ "v": version }),
    )
    .await;
}

async fn upload_model(app: &TestApp, version: &str, data: Vec<u8>) -> reqwest::Response {
    app.upload(
        "mutation($v: String!, $file: Upload!) { uploadModelFile(name: \"fall-detection\", version: $v, file: $file) { file { sha256 } } }",
        json!({ "v": version }),
        data,
        "model.zip",
    )
    .await
}

pub async fn blobs_are_served_by_digest(start: Starter) {
    let app = start(Options::default()).await;
    create_model(&app, "1").await;
    let data = bytes(70_000, 41);
    let digest = sha256_hex(&data);
    assert_eq!(upload_model(&app, "1", data.clone()).await.status(), 200);

    let response = app.get(&format!("/blobs/sha256/{digest}")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["etag"], format!("\"{digest}\""));
    assert_eq!(headers["content-length"], "70000");
    assert_eq!(response.bytes().await.unwrap().as_ref(), data.as_slice());

    // Upper-case hex names the same bytes; HEAD, ranges and revalidation work as on every download.
    let head = app
        .client
        .head(app.url(&format!("/blobs/sha256/{}", digest.to_uppercase())))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "70000");
    let ranged = app
        .get_with(
            &format!("/blobs/sha256/{digest}"),
            &[("range", "bytes=10-19")],
        )
        .await;
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &data[10..20]);
    let cached = app
        .get_with(
            &format!("/blobs/sha256/{digest}"),
            &[("if-none-match", &format!("\"{digest}\""))],
        )
        .await;
    assert_eq!(cached.status(), 304);

    // Unknown digests are 404s, malformed ones 400s, both with a JSON body.
    let unknown = app.get(&format!("/blobs/sha256/{}", "0".repeat(64))).await;
    assert_eq!(unknown.status(), 404);
    assert!(unknown.json::<Value>().await.unwrap()["code"].is_string());
    assert_eq!(app.get("/blobs/sha256/xyz").await.status(), 400);

    // Once nothing refers to the bytes, they are gone from the digest URL too.
    app.ok(
        "mutation { deleteModel(name: \"fall-detection\", version: \"1\") }",
        json!({}),
    )
    .await;
    assert_eq!(
        app.get(&format!("/blobs/sha256/{digest}")).await.status(),
        404
    );
}
