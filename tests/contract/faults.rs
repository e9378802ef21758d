//! Faults every store must survive: clients that go away mid-upload, and uploads, downloads and deletes racing.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Starter;
use crate::common::{StorageProbe, TestApp, bytes, sha256_hex, test_config};

const UPLOAD: &str =
    "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }";

fn probe(app: &TestApp) -> &dyn StorageProbe {
    app.probe
        .as_deref()
        .expect("the starter gives the app a storage probe")
}

/// Waits until `probe` shows `(live, staged)`, for at most 30 s; returns what it showed last.
async fn settles_at(app: &TestApp, live: usize, staged: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = (
            probe(app).live_files().await,
            probe(app).staged_uploads().await,
        );
        if seen == (live, staged) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends an upload that promises 10 MB, sends half a megabyte, and goes away.
fn disconnect_mid_upload(addr: std::net::SocketAddr, path: &'static str) {
    let boundary = "XyZ";
    let operations = r#"{"query": "mutation($file: Upload!) { uploadServiceFile(id: \"svc\", file: $file) { id } }", "variables": {"file": null}}"#;
    let head = if path == "/graphql" {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\": [\"variables.file\"]}}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"f.zip\"\r\n\r\n"
        )
    } else {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.zip\"\r\n\r\n"
        )
    };
    let method = if path == "/graphql" { "POST" } else { "PUT" };
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\napollo-require-preflight: true\r\n\
         content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: 10000000\r\n\r\n{head}"
    )
    .unwrap();
    stream.write_all(&vec![7u8; 512 * 1024]).unwrap();
}

pub async fn a_client_that_disconnects_mid_upload_leaves_nothing(start: Starter) {
    let app = start(test_config()).await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let first = bytes(50_000, 1);
    let response = app.upload(UPLOAD, json!({}), first.clone(), "f.zip").await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<serde_json::Value>().await.unwrap()["errors"].is_null());
    assert_eq!(settles_at(&app, 1, 0).await, (1, 0));

    for path in ["/graphql", "/service/svc"] {
        let addr = app.addr;
        tokio::task::spawn_blocking(move || disconnect_mid_upload(addr, path))
            .await
            .unwrap();
    }

    // The server notices, drops the partial uploads, and keeps serving the previous file.
    assert_eq!(
        settles_at(&app, 1, 0).await,
        (1, 0),
        "(files in use, staged uploads): no partial upload is left, no new file"
    );
    let served = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(sha256_hex(&served), sha256_hex(&first));
}

pub async fn concurrent_upload_download_and_delete_stay_consistent(start: Starter) {
    let app = std::sync::Arc::new(start(test_config()).await);
    let versions: Vec<Vec<u8>> = (0..4).map(|i| bytes(40_000 + i * 1000, i as u64)).collect();
    let known: HashSet<String> = versions.iter().map(|v| sha256_hex(v)).collect();
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
                        let response = app.upload(UPLOAD, json!({}), data, "f.zip").await;
                        assert_eq!(
                            response.status(),
                            200,
                            "GraphQL answers 200 even when the component is gone"
                        );
                        let body: serde_json::Value = response.json().await.unwrap();
                        let code = body["errors"][0]["extensions"]["code"].as_str();
                        assert!(code.is_none() || code == Some("NOT_FOUND"), "{body}");
                    }
                    1 => {
                        let response = app.get("/service/svc").await;
                        let status = response.status().as_u16();
                        assert!(status == 200 || status == 404, "download answered {status}");
                        if status == 200 {
                            let body = response.bytes().await.unwrap();
                            assert!(
                                known.contains(&sha256_hex(&body)),
                                "a download mixed two versions"
                            );
                        }
                    }
                    _ => {
                        let body = app
                            .gql("mutation { deleteService(id: \"svc\") }", json!({}))
                            .await;
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
    // Whatever the interleaving: the stored files in use are exactly the files components refer to.
    let data = app
        .ok("{ service(id: \"svc\") { file { sha256 } } }", json!({}))
        .await;
    let referenced = usize::from(!data["service"]["file"].is_null());
    assert_eq!(
        settles_at(&app, referenced, 0).await,
        (referenced, 0),
        "(files in use, staged uploads): no orphaned file, none missing"
    );
    if referenced == 1 {
        assert!(known.contains(data["service"]["file"]["sha256"].as_str().unwrap()));
        let served = app.get("/service/svc").await.bytes().await.unwrap();
        assert_eq!(
            sha256_hex(&served),
            data["service"]["file"]["sha256"].as_str().unwrap()
        );
    }
}
