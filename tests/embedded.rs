//! The contract suite on the embedded store, plus what only the embedded store can show: its files on disk.

mod common;
mod contract;

use std::future::Future;
use std::pin::Pin;

use common::{Options, TestApp};

fn start(options: Options) -> Pin<Box<dyn Future<Output = TestApp> + Send>> {
    Box::pin(common::embedded(options))
}

contract_suite!(start);

use std::path::{Path, PathBuf};

use component_repository::store::embedded::EmbeddedStore;
use serde_json::{Value, json};

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn blobs(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.data_dir.as_ref().unwrap().join("blobs"))
}

fn staged(app: &TestApp) -> Vec<PathBuf> {
    files_under(&app.data_dir.as_ref().unwrap().join("tmp"))
}

/// Uploads `bytes` as service `id`'s file; returns the HTTP status and the GraphQL response.
async fn upload_service(app: &TestApp, id: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = app
        .upload(
            &format!(
                "mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ file {{ sha256 }} }} }}"
            ),
            json!({}),
            bytes,
            "f.zip",
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads `bytes` as service `id`'s file, which must succeed.
async fn upload_ok(app: &TestApp, id: &str, bytes: Vec<u8>) {
    let sha256 = common::sha256_hex(&bytes);
    let (status, body) = upload_service(app, id, bytes).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["uploadServiceFile"]["file"]["sha256"], sha256,
        "{body}"
    );
}

#[tokio::test]
async fn identical_bytes_are_stored_once_and_reclaimed_when_unused() {
    let app = common::embedded(Options::default()).await;
    for id in ["a", "b"] {
        app.ok(
            &format!("mutation {{ createService(input: {{id: \"{id}\"}}) {{ id }} }}"),
            json!({}),
        )
        .await;
    }
    let shared = common::bytes(4096, 1);
    upload_ok(&app, "a", shared.clone()).await;
    upload_ok(&app, "b", shared.clone()).await;
    let stored = blobs(&app);
    assert_eq!(stored.len(), 1, "one blob for identical bytes");
    assert!(stored[0].ends_with(common::sha256_hex(&shared)));

    // Replacing a's file keeps the shared blob for b and adds a's new one.
    upload_ok(&app, "a", common::bytes(10, 2)).await;
    assert_eq!(blobs(&app).len(), 2);
    // Replacing b's file frees the shared blob.
    upload_ok(&app, "b", common::bytes(10, 2)).await;
    assert_eq!(
        blobs(&app).len(),
        1,
        "the old blob is removed once nothing refers to it"
    );
    app.ok("mutation { deleteService(id: \"a\") }", json!({}))
        .await;
    assert_eq!(blobs(&app).len(), 1, "b still uses it");
    app.ok("mutation { deleteService(id: \"b\") }", json!({}))
        .await;
    assert!(blobs(&app).is_empty());
    assert!(staged(&app).is_empty());
}

#[tokio::test]
async fn refused_uploads_leave_nothing_behind() {
    let app = common::embedded(Options {
        max_upload_size: 1000,
        ..Options::default()
    })
    .await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    let (status, body) = upload_service(&app, "svc", common::bytes(5000, 3)).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = upload_service(&app, "missing", common::bytes(500, 4)).await;
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (200, Some("NOT_FOUND")),
        "GraphQL answers 200 with the error in the body: {body}"
    );
    assert!(blobs(&app).is_empty(), "{:?}", blobs(&app));
    assert!(staged(&app).is_empty(), "{:?}", staged(&app));
}

#[tokio::test]
async fn start_up_removes_interrupted_uploads_and_unreferenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let kept = common::bytes(2048, 5);
    let app = TestApp::start(
        std::sync::Arc::new(EmbeddedStore::open(&data_dir).await.unwrap()),
        tempfile::tempdir().unwrap(),
        Some(data_dir.clone()),
        Options::default(),
    )
    .await;
    app.ok(
        "mutation { createService(input: {id: \"svc\"}) { id } }",
        json!({}),
    )
    .await;
    upload_ok(&app, "svc", kept.clone()).await;
    app.stop().await;
    // What a crash can leave: a half-written upload, and a blob renamed into place whose metadata never committed.
    std::fs::write(data_dir.join("tmp/upload-interrupted"), b"partial").unwrap();
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(data_dir.join("blobs/ab")).unwrap();
    std::fs::write(data_dir.join("blobs/ab").join(&orphan), b"orphan").unwrap();

    let store = EmbeddedStore::open(&data_dir).await.unwrap();
    let app = TestApp::start(
        std::sync::Arc::new(store),
        dir,
        Some(data_dir.clone()),
        Options::default(),
    )
    .await;
    assert!(staged(&app).is_empty());
    let remaining = blobs(&app);
    assert_eq!(remaining.len(), 1);
    assert!(remaining[0].ends_with(common::sha256_hex(&kept)));
    let downloaded = app.get("/service/svc").await.bytes().await.unwrap();
    assert_eq!(
        downloaded.as_ref(),
        kept.as_slice(),
        "referenced files survive the clean-up"
    );
}
