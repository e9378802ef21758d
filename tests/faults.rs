//! Bad input and faults: each gets a clear 4xx or a consistent result, never a panic, a 5xx for a client mistake,
//! a partial object or an orphaned file. (Keys, truncated multipart bodies, duplicate creates, clients that
//! disconnect mid-upload and concurrent upload/download/delete are in the contract suite, which runs on every
//! store; SIGKILL during an upload is in tests/binary.rs.)

mod common;

use common::{TestApp, bytes, sha256_hex, test_config};
use serde_json::{Value, json};

async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn huge_deep_and_broken_json_is_refused_cleanly() {
    let app = common::embedded(test_config()).await;
    // 3 MiB of GraphQL document.
    let huge =
        json!({ "query": format!("{{ services {{ totalCount }} }} #{}", "x".repeat(3 << 20)) });
    let (status, body) = post_raw(
        &app,
        "/graphql",
        "application/json",
        huge.to_string().into_bytes(),
    )
    .await;
    // Too large is a 413 with the error in the route's JSON shape, not a 400.
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{body}"
    );
    let (status, body) = post_raw(
        &app,
        "/service",
        "application/json",
        huge.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert!(body["detail"].is_string());

    // Nesting deeper than any parser should follow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let document = format!(
        "{{\"query\": \"mutation($v: JSON!) {{ createTransformation(input: {{id: \\\"t\\\", defaultValues: $v}}) {{ id }} }}\", \"variables\": {{\"v\": {deep}}}}}"
    );
    let (status, body) =
        post_raw(&app, "/graphql", "application/json", document.into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    let rest = format!("{{\"id\": \"t\", \"default_values\": {{\"v\": {deep}}}}}");
    let (status, body) = post_raw(
        &app,
        "/transformation",
        "application/json",
        rest.into_bytes(),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Bytes that are not UTF-8, in a body and in a path.
    let (status, _) = post_raw(
        &app,
        "/graphql",
        "application/json",
        b"{\"query\": \"\xff\xfe\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = post_raw(
        &app,
        "/service",
        "application/json",
        b"{\"id\": \"\xff\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let response = app.get("/service/%FF%FE").await;
    assert_eq!(response.status(), 400);
    assert!(response.json::<Value>().await.unwrap()["detail"].is_string());

    // Nothing was created by any of it, and the server still answers.
    let data = app
        .ok(
            "{ transformations { totalCount } services { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data,
        json!({"transformations": {"totalCount": 0}, "services": {"totalCount": 0}})
    );
}

/// 200 downloads whose clients read nothing, while ordinary clients query, create, upload and download: every
/// ordinary request succeeds. The runtime's blocking pool is kept far smaller than the stalled downloads, so a
/// design that parks a thread per download would starve the store here.
#[test]
fn stalled_downloads_leave_the_server_to_everyone_else() {
    component_repository::server::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = common::embedded(test_config()).await;
        let large = bytes(16 << 20, 7);
        let small = bytes(10_000, 8);
        for (id, data) in [("large", &large), ("small", &small)] {
            app.ok(
                &format!("mutation {{ createService(input: {{id: \"{id}\"}}) {{ id }} }}"),
                json!({}),
            )
            .await;
            let response = app
                .upload(
                    &format!("mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ id }} }}"),
                    json!({}),
                    data.clone(),
                    "f.zip",
                )
                .await;
            assert_eq!(response.status(), 200);
            assert!(response.json::<Value>().await.unwrap()["errors"].is_null());
        }

        let mut stalled = Vec::new();
        for _ in 0..200 {
            let download = common::slow::SlowDownload::start(app.addr, "/service/large", &[]).await;
            assert_eq!(download.status, 200);
            stalled.push(download);
        }

        for round in 0..5 {
            let id = format!("new-{round}");
            app.ok(
                &format!("mutation {{ createService(input: {{id: \"{id}\"}}) {{ id }} }}"),
                json!({}),
            )
            .await;
            let response = app
                .upload(
                    &format!("mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ file {{ sha256 }} }} }}"),
                    json!({}),
                    small.clone(),
                    "f.zip",
                )
                .await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["data"]["uploadServiceFile"]["file"]["sha256"], sha256_hex(&small));
            let data = app.ok("{ services { totalCount } }", json!({})).await;
            assert_eq!(data["services"]["totalCount"], 3 + round);
            let response = app.get("/service/small").await;
            assert_eq!(response.status(), 200);
            assert_eq!(sha256_hex(&response.bytes().await.unwrap()), sha256_hex(&small));
            assert_eq!(app.get("/readyz").await.status(), 200);
        }

        // The stalled clients are served in full once they read.
        for download in stalled.drain(..3) {
            assert_eq!(sha256_hex(&download.finish().await), sha256_hex(&large));
        }
    });
}
