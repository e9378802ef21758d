//! Bad input and faults: each gets a clear 4xx or a consistent result, never a panic, a 5xx for a client mistake,
//! a partial object or an orphaned file. (Keys, truncated multipart bodies, duplicate creates and SIGKILL during an
//! upload are in the contract suite and tests/binary.rs.)

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{Options, TestApp, bytes, sha256_hex};
use serde_json::{Value, json};

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_in(&p) } else { 1 })
            .sum()
    })
}

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
    let app = common::embedded(Options::default()).await;
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
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("INVALID_INPUT"))
    );
    let (status, body) = post_raw(
        &app,
        "/service",
        "application/json",
        huge.to_string().into_bytes(),
    )
    .await;
    assert!(status == 400 || status == 413, "{status} {body}");
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

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let app = common::embedded(Options::default()).await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let first = bytes(50_000, 1);
    app.upload(
        "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
        json!({}),
        first.clone(),
        "f.zip",
    )
    .await;
    let data_dir = app.data_dir.clone().unwrap();
    let blobs_before = files_in(&data_dir.join("blobs"));

    for path in ["/graphql", "/service/svc"] {
        let addr = app.addr;
        tokio::task::spawn_blocking(move || {
            let boundary = "XyZ";
            let operations = r#"{"query": "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }", "variables": {"file": null}}"#;
            let mut head = String::new();
            if path == "/graphql" {
                head.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
                     --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\": [\"variables.file\"]}}\r\n\
                     --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"f.zip\"\r\n\r\n"
                ));
            } else {
                head.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.zip\"\r\n\r\n"
                ));
            }
            let method = if path == "/graphql" { "POST" } else { "PUT" };
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nhost: x\r\napollo-require-preflight: true\r\n\
                 content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: 10000000\r\n\r\n{head}"
            )
            .unwrap();
            // Half a megabyte of the promised ten, then the client goes away.
            stream.write_all(&vec![7u8; 512 * 1024]).unwrap();
            drop(stream);
        })
        .await
        .unwrap();
    }

    // The server notices, drops the partial uploads, and keeps serving the previous file.
    let staging = data_dir.join("tmp");
    for _ in 0..100 {
        if files_in(&staging) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        files_in(&staging),
        0,
        "no partial upload is left in staging"
    );
    assert_eq!(
        files_in(&data_dir.join("blobs")),
        blobs_before,
        "no new blob"
    );
    let served = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&served), sha256_hex(&first));
}

#[tokio::test]
async fn concurrent_upload_download_and_delete_stay_consistent() {
    let app = std::sync::Arc::new(common::embedded(Options::default()).await);
    let versions: Vec<Vec<u8>> = (0..4).map(|i| bytes(40_000 + i * 1000, i as u64)).collect();
    let known: std::collections::HashSet<String> = versions.iter().map(|v| sha256_hex(v)).collect();
    let create = "mutation { createService(input: {id: \"svc\"}) { id } }";
    app.ok(create, json!({})).await;

    let mut tasks = Vec::new();
    for worker in 0..6 {
        let app = app.clone();
        let versions = versions.clone();
        let known = known.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..25 {
                match (worker + round) % 3 {
                    0 => {
                        let data = versions[(worker + round) % versions.len()].clone();
                        let status = app
                            .upload(
                                "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }",
                                json!({}),
                                data,
                                "f.zip",
                            )
                            .await
                            .status();
                        assert_eq!(status, 200, "GraphQL answers 200 even when the component is gone");
                    }
                    1 => {
                        let response = app.get("/service/svc").await;
                        let status = response.status().as_u16();
                        assert!(status == 200 || status == 404, "download answered {status}");
                        if status == 200 {
                            let body = response.bytes().await.unwrap();
                            assert!(known.contains(&sha256_hex(&body)), "a download mixed two versions");
                        }
                    }
                    _ => {
                        let body = app.gql("mutation { deleteService(id: \"svc\") }", json!({})).await;
                        let code = body["errors"][0]["extensions"]["code"].as_str();
                        assert!(code.is_none() || code == Some("NOT_FOUND"), "{body}");
                        let body = app.gql(create, json!({})).await;
                        let code = body["errors"][0]["extensions"]["code"].as_str();
                        assert!(code.is_none() || code == Some("ALREADY_EXISTS"), "{body}");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Whatever the interleaving: the blobs on disk are exactly the files components refer to.
    let data = app
        .ok("{ service(id: \"svc\") { file { sha256 } } }", json!({}))
        .await;
    let referenced = usize::from(!data["service"]["file"].is_null());
    let blobs = files_in(&app.data_dir.as_ref().unwrap().join("blobs"));
    assert_eq!(blobs, referenced, "no orphaned blob, none missing");
    if referenced == 1 {
        assert!(known.contains(data["service"]["file"]["sha256"].as_str().unwrap()));
    }
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
        let app = common::embedded(Options::default()).await;
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
