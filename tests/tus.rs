//! Resumable uploads over tus 1.0 at `/uploads`, on both stores: clients nobody here wrote (tuspy from PyPI,
//! tus-js-client from npm) cut off half way by the loopback chaos proxy resume and deliver byte-identical files;
//! sessions outlive a restart (and, on MongoDB, continue through another replica); expiry removes their bytes;
//! wrong checksums, tokens, targets and offsets are refused with nothing attached.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::chaos::{ChaosProxy, Fault};
use common::mongo::{self, DropDatabases};
use common::{Config, TestApp, config_with, sha256_hex, tokens};
use component_repository::store::mongodb::{MongoConfig, MongoStore};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where a test's servers keep their data, so that a later server (a restart, another replica) finds it.
enum Stand {
    Embedded(tempfile::TempDir),
    Mongo(MongoConfig, #[allow(dead_code)] DropDatabases),
}

impl Stand {
    /// A stand on `backend`, or `None` (having said SKIPPED) when it cannot run here.
    fn new(backend: &str, test: &str) -> Option<Stand> {
        match backend {
            "embedded" => Some(Stand::Embedded(tempfile::tempdir().unwrap())),
            _ => match mongo::target() {
                Ok(target) => {
                    let config = mongo::config(target);
                    Some(Stand::Mongo(config.clone(), DropDatabases(config)))
                }
                Err(reason) => {
                    println!("SKIPPED {test}: {reason}");
                    None
                }
            },
        }
    }

    /// A server on this stand's data.
    async fn server(&self, change: impl FnOnce(&mut Config)) -> TestApp {
        let config = config_with(|c| {
            c.uploads.max_size = 64 * 1024 * 1024;
            change(c);
        });
        match self {
            Stand::Embedded(dir) => common::embedded_in_with(dir.path(), config).await,
            Stand::Mongo(databases, _) => {
                let store = MongoStore::connect(databases).await.unwrap();
                TestApp::start(Arc::new(store), tempfile::tempdir().unwrap(), None, config).await
            }
        }
    }

    /// How many pieces of upload-session bytes the store holds: files in `uploads/`, or GridFS chunks that no
    /// file of ours accounts for. `sessions` (upload URLs) are looked up by id as well, because nx-27017 cannot
    /// list a GridFS bucket's chunks, only find them by `files_id`.
    async fn session_pieces(&self, sessions: &[&str]) -> usize {
        match self {
            Stand::Embedded(dir) => common::files_in(&dir.path().join("data/uploads")),
            Stand::Mongo(config, _) => {
                use ::mongodb::bson::{Document, doc, oid::ObjectId};
                use futures_util::TryStreamExt;
                let client = ::mongodb::Client::with_uri_str(&config.uri).await.unwrap();
                let grid = client.database(&config.grid_database);
                let files = grid.collection::<Document>(&format!("{}.files", config.bucket));
                let chunks = grid.collection::<Document>(&format!("{}.chunks", config.bucket));
                let find = |filter: Document| {
                    let chunks = chunks.clone();
                    async move {
                        chunks
                            .find(filter)
                            .projection(doc! { "data": 0 })
                            .await
                            .unwrap()
                            .try_collect::<Vec<_>>()
                            .await
                            .unwrap()
                    }
                };
                let mut pieces = std::collections::HashSet::new();
                for piece in find(doc! {}).await {
                    if let (Ok(files_id), Ok(n)) =
                        (piece.get_object_id("files_id"), piece.get_i32("n"))
                    {
                        pieces.insert((files_id, n));
                    }
                }
                for session in sessions {
                    let id = session.rsplit('/').next().unwrap().trim();
                    let id = ObjectId::parse_str(id).unwrap();
                    for piece in find(doc! { "files_id": id, "n": { "$gte": 0i64 } }).await {
                        pieces.insert((id, piece.get_i32("n").unwrap()));
                    }
                }
                let mut stray = 0;
                for (files_id, _) in pieces {
                    // Every file this server writes records its sha256; nx-27017 makes up an empty files document
                    // for chunks that have none.
                    let file = files.find_one(doc! { "_id": files_id }).await.unwrap();
                    if file.is_none_or(|f| {
                        f.get_document("metadata")
                            .is_ok_and(|m| !m.contains_key("sha256"))
                    }) {
                        stray += 1;
                    }
                }
                stray
            }
        }
    }
}

/// Runs `$body(stand, test_name)` as one test per backend.
macro_rules! on_both_stores {
    ($($name:ident => $body:expr;)*) => {
        mod embedded {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let test = concat!("embedded::", stringify!($name));
                if let Some(stand) = Stand::new("embedded", test) {
                    $body(stand).await;
                }
            })*
        }
        mod mongodb {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let test = concat!("mongodb::", stringify!($name));
                if let Some(stand) = Stand::new("mongodb", test) {
                    $body(stand).await;
                }
            })*
        }
    };
}

on_both_stores! {
    tuspy_resumes_a_cut_upload => |stand| crate::third_party_client_resumes(stand, crate::Client::Tuspy);
    tus_js_client_resumes_a_cut_upload => |stand| crate::third_party_client_resumes(stand, crate::Client::TusJs);
    sessions_outlive_a_restart => crate::sessions_outlive_a_restart;
    another_server_continues_a_session => crate::another_server_continues_a_session;
    expired_sessions_lose_their_bytes => crate::expired_sessions_lose_their_bytes;
    wrong_checksums_attach_nothing => crate::wrong_checksums_attach_nothing;
    refusals => crate::refusals;
    sessions_are_bounded_per_token_listed_and_cancelled => crate::sessions_are_bounded_listed_and_cancelled;
}

/// Pseudo-random bytes, so a misplaced chunk cannot go unnoticed.
fn payload(len: usize) -> Vec<u8> {
    common::bytes(len, len as u64)
}

async fn create_model(app: &TestApp, name: &str) {
    let response = app
        .client
        .post(app.url("/model"))
        .json(&json!({ "model_name": name, "model_version": "v1", "meta": { "library": "keras" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `POST /uploads` for model `name`/v1; returns the response.
async fn start_session(
    app: &TestApp,
    name: &str,
    length: usize,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut pairs = vec![
        ("name", name),
        ("version", "v1"),
        ("filename", "weights.bin"),
    ];
    pairs.extend_from_slice(extra);
    app.client
        .post(app.url("/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .header("upload-metadata", metadata(&pairs))
        .send()
        .await
        .unwrap()
}

async fn new_session(app: &TestApp, name: &str, length: usize, extra: &[(&str, &str)]) -> String {
    let response = start_session(app, name, length, extra).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{:?}",
        response.text().await
    );
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");
    assert!(response.headers().contains_key("upload-expires"));
    response.headers()["location"].to_str().unwrap().to_owned()
}

async fn patch(app: &TestApp, location: &str, offset: usize, bytes: &[u8]) -> reqwest::Response {
    app.client
        .patch(app.url(location))
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn head(app: &TestApp, location: &str) -> reqwest::Response {
    app.client
        .head(app.url(location))
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

fn offset_of(response: &reqwest::Response) -> usize {
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn download(app: &TestApp, name: &str) -> (StatusCode, Vec<u8>) {
    let response = app
        .client
        .get(app.url(&format!("/model/{name}/v1")))
        .send()
        .await
        .unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

/// Waits (bounded) until `condition` holds.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Tuspy,
    TusJs,
}

fn tus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tus")
}

/// The command that runs `client`, or why it cannot run here.
fn client_command(client: Client) -> Result<tokio::process::Command, String> {
    match client {
        Client::Tuspy => {
            let python = std::env::var_os("TUSPY_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/tuspy/bin/python")
                });
            if !python.exists() {
                return Err(format!(
                    "no tuspy at {} (scripts/test.sh installs it)",
                    python.display()
                ));
            }
            let mut command = tokio::process::Command::new(python);
            command.arg(tus_dir().join("tuspy_upload.py"));
            Ok(command)
        }
        Client::TusJs => {
            if !tus_dir().join("node_modules/tus-js-client").exists() {
                return Err(
                    "no tests/tus/node_modules (scripts/test.sh installs tus-js-client)".into(),
                );
            }
            let mut command = tokio::process::Command::new("node");
            command.arg(tus_dir().join("tus_js_upload.mjs"));
            Ok(command)
        }
    }
}

/// A client nobody here wrote uploads 3 MiB through a proxy that cuts every connection after 1 MiB: it can only
/// finish by resuming from the server's offset, and the file must arrive byte for byte.
async fn third_party_client_resumes(stand: Stand, client: Client) {
    let mut command = match client_command(client) {
        Ok(command) => command,
        Err(reason) => {
            println!("SKIPPED {client:?} resumes a cut upload: {reason}");
            return;
        }
    };
    let app = stand
        .server(|c| c.auth = tokens(&[], &["writer"], false))
        .await;
    let size = 3 * 1024 * 1024 + 12345;
    let bytes = payload(size);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let response = app
        .client
        .post(app.url("/model"))
        .bearer_auth("writer")
        .json(
            &json!({ "model_name": "big", "model_version": "v1", "meta": { "library": "keras" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let proxy = ChaosProxy::start(app.addr).await;
    proxy.set(Fault::CutAfter(1024 * 1024));
    let meta = json!({ "name": "big", "version": "v1", "filename": "big.bin", "sha256": sha256_hex(&bytes) });
    command
        .arg(format!("{}/uploads", proxy.url()))
        .arg(file.path())
        .arg(meta.to_string())
        .arg("writer")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the client finishes within two minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("done"),
        "{client:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Cut at least twice, yet it sent far less than the file twice over: it resumed rather than restarting.
    assert!(
        proxy.connections() >= 3,
        "{} connections",
        proxy.connections()
    );
    assert!(
        proxy.upstream_bytes() < 2 * size as u64,
        "{} bytes sent for a {size}-byte file",
        proxy.upstream_bytes()
    );
    let downloaded = app
        .client
        .get(app.url("/model/big/v1"))
        .bearer_auth("writer")
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status(), StatusCode::OK);
    let downloaded = downloaded.bytes().await.unwrap();
    assert!(
        downloaded.as_ref() == bytes.as_slice(),
        "the download differs from the upload"
    );
    let url = stdout.lines().next().unwrap();
    assert_eq!(
        stand.session_pieces(&[url]).await,
        0,
        "the session's bytes are the file's now"
    );
}

/// Half a file, a restart, the other half: the session and its bytes were kept by the store.
async fn sessions_outlive_a_restart(stand: Stand) {
    let bytes = payload(700_000);
    let app = stand.server(|_| {}).await;
    create_model(&app, "restarted").await;
    let location = new_session(&app, "restarted", bytes.len(), &[]).await;
    let half = patch(&app, &location, 0, &bytes[..300_001]).await;
    assert_eq!(half.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&half), 300_001);
    app.stop().await;

    let app = stand.server(|_| {}).await;
    let status = head(&app, &location).await;
    assert_eq!(status.status(), StatusCode::OK);
    assert_eq!(offset_of(&status), 300_001);
    assert_eq!(status.headers()["upload-length"], "700000");
    let rest = patch(&app, &location, 300_001, &bytes[300_001..]).await;
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&rest), bytes.len());
    let (status, downloaded) = download(&app, "restarted").await;
    assert_eq!(status, StatusCode::OK);
    assert!(downloaded == bytes, "the download differs from the upload");
    // Finished: the session is gone.
    assert_eq!(head(&app, &location).await.status(), StatusCode::NOT_FOUND);
}

/// Two servers on one store at once (MongoDB's replicas; the embedded store runs one at a time, so there the
/// second starts once the first stopped): a session begun on one is continued on the other, in small pieces
/// that do not line up with storage chunks.
async fn another_server_continues_a_session(stand: Stand) {
    let bytes = payload(600_000);
    let first = stand.server(|_| {}).await;
    create_model(&first, "replicated").await;
    let location = new_session(
        &first,
        "replicated",
        bytes.len(),
        &[("sha256", &sha256_hex(&bytes))],
    )
    .await;
    let mut offset = 0;
    for piece in [1, 100_000, 261_119, 1] {
        let response = patch(&first, &location, offset, &bytes[offset..offset + piece]).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        offset += piece;
    }
    let second = match &stand {
        Stand::Mongo(..) => stand.server(|_| {}).await,
        Stand::Embedded(_) => {
            first.stop().await;
            stand.server(|_| {}).await
        }
    };
    assert_eq!(offset_of(&head(&second, &location).await), offset);
    let response = patch(&second, &location, offset, &bytes[offset..]).await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "{:?}",
        response.text().await
    );
    let (status, downloaded) = download(&second, "replicated").await;
    assert_eq!(status, StatusCode::OK);
    assert!(downloaded == bytes, "the download differs from the upload");
}

/// An unfinished session is refused once its time is up, and the sweep removes its bytes.
async fn expired_sessions_lose_their_bytes(stand: Stand) {
    let app = stand
        .server(|c| c.uploads.session_ttl = Duration::from_secs(2))
        .await;
    create_model(&app, "expiring").await;
    let location = new_session(&app, "expiring", 500_000, &[]).await;
    let response = patch(&app, &location, 0, &payload(300_000)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        stand.session_pieces(&[&location]).await > 0,
        "the session's bytes are stored"
    );
    wait_until("the session expired and its bytes were removed", || async {
        head(&app, &location).await.status() == StatusCode::NOT_FOUND
            && stand.session_pieces(&[&location]).await == 0
    })
    .await;
    let late = patch(&app, &location, 300_000, &payload(200_000)).await;
    assert_eq!(late.status(), StatusCode::NOT_FOUND);
    assert_eq!(download(&app, "expiring").await.0, StatusCode::NOT_FOUND);
}

/// A file whose sha256 is not the announced one is refused, and so is a request whose Upload-Checksum is wrong:
/// nothing is attached, nothing is left staged.
async fn wrong_checksums_attach_nothing(stand: Stand) {
    let app = stand.server(|_| {}).await;
    create_model(&app, "checked").await;
    let bytes = payload(100_000);
    let location = new_session(
        &app,
        "checked",
        bytes.len(),
        &[("sha256", &sha256_hex(b"other bytes"))],
    )
    .await;
    let response = patch(&app, &location, 0, &bytes).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_INPUT");
    assert!(
        body["detail"].as_str().unwrap().contains("sha256"),
        "{body}"
    );
    assert_eq!(download(&app, "checked").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        head(&app, &location).await.status(),
        StatusCode::NOT_FOUND,
        "the session is discarded"
    );
    let probe = app.probe.clone();
    if let Some(probe) = probe {
        assert_eq!(probe.staged_uploads().await, 0);
        assert_eq!(probe.live_files().await, 0);
    }
    wait_until("no session bytes are left", || async {
        stand.session_pieces(&[&location]).await == 0
    })
    .await;

    // Upload-Checksum covers one request: a wrong one keeps none of its bytes (460, the tus status).
    let location = new_session(&app, "checked", bytes.len(), &[]).await;
    let good = patch(&app, &location, 0, &bytes[..40_000]).await;
    assert_eq!(good.status(), StatusCode::NO_CONTENT);
    let wrong = app
        .client
        .patch(app.url(&location))
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "40000")
        .header(
            "upload-checksum",
            format!("sha256 {}", STANDARD.encode(Sha256::digest(b"x"))),
        )
        .body(bytes[40_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 460);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["code"],
        "CHECKSUM_MISMATCH"
    );
    assert_eq!(offset_of(&head(&app, &location).await), 40_000);
    let right = app
        .client
        .patch(app.url(&location))
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "40000")
        .header(
            "upload-checksum",
            format!(
                "sha256 {}",
                STANDARD.encode(Sha256::digest(&bytes[40_000..]))
            ),
        )
        .body(bytes[40_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::NO_CONTENT);
    let (status, downloaded) = download(&app, "checked").await;
    assert_eq!(status, StatusCode::OK);
    assert!(downloaded == bytes);
}

/// What the protocol and the house rules refuse: no `Tus-Resumable`, a missing or read-only token, a target that
/// does not exist, a file over the limit, an offset that is not the session's; and `OPTIONS` says what is served.
async fn refusals(stand: Stand) {
    let app = stand
        .server(|c| c.auth = tokens(&["reader"], &["writer"], false))
        .await;
    let options = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert_eq!(
        options.headers()["tus-extension"],
        "creation,termination,expiration,checksum"
    );
    assert_eq!(
        options.headers()["tus-max-size"],
        (64 * 1024 * 1024).to_string()
    );
    assert_eq!(options.headers()["tus-checksum-algorithm"], "sha256");

    let response = app
        .client
        .post(app.url("/model"))
        .bearer_auth("writer")
        .json(&json!({ "model_name": "guarded", "model_version": "v1", "meta": { "library": "keras" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let create = |token: Option<&'static str>, name: &'static str, length: u64, version: bool| {
        let mut request = app
            .client
            .post(app.url("/uploads"))
            .header("upload-length", length.to_string())
            .header(
                "upload-metadata",
                metadata(&[("name", name), ("version", "v1")]),
            );
        if version {
            request = request.header("tus-resumable", "1.0.0");
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let no_version = create(Some("writer"), "guarded", 10, false).await.unwrap();
    assert_eq!(no_version.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(no_version.headers()["tus-version"], "1.0.0");
    let anonymous = create(None, "guarded", 10, true).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap()["code"],
        "UNAUTHENTICATED"
    );
    assert_eq!(
        create(Some("wrong"), "guarded", 10, true)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        create(Some("reader"), "guarded", 10, true)
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    let missing = create(Some("writer"), "no-such-model", 10, true)
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
    let too_large = create(Some("writer"), "guarded", 64 * 1024 * 1024 + 1, true)
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let created = create(Some("writer"), "guarded", 10, true).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let append = |token: &'static str, offset: u64, content_type: &'static str| {
        app.client
            .patch(app.url(&location))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .header("content-type", content_type)
            .header("upload-offset", offset.to_string())
            .body("01234")
            .send()
    };
    let octets = "application/offset+octet-stream";
    assert_eq!(
        append("reader", 0, octets).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        append("writer", 0, "text/plain").await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        append("writer", 0, octets).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let conflict = append("writer", 0, octets).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(conflict.json::<Value>().await.unwrap()["code"], "CONFLICT");
    let too_long = app
        .client
        .patch(app.url(&location))
        .bearer_auth("writer")
        .header("tus-resumable", "1.0.0")
        .header("content-type", octets)
        .header("upload-offset", "5")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);

    // Termination: the session and its bytes go.
    let terminate = |token: &'static str| {
        app.client
            .delete(app.url(&location))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .send()
    };
    assert_eq!(
        terminate("reader").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        terminate("writer").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        terminate("writer").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(stand.session_pieces(&[&location]).await, 0);
    let status = app
        .client
        .head(app.url(&location))
        .bearer_auth("writer")
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::NOT_FOUND);
}

/// Unfinished sessions are bounded per token, in number (`--max-upload-sessions`) and in announced bytes
/// (`--max-upload-session-bytes`): the next creation is a 429 with a JSON body while another token is unaffected; `GET /uploads` lists the caller's own sessions, and cancelling or finishing one
/// makes room again.
async fn sessions_are_bounded_listed_and_cancelled(stand: Stand) {
    let app = stand
        .server(|c| {
            c.auth = tokens(&["reader"], &["first", "second"], false);
            c.uploads.max_sessions = 3;
            c.uploads.max_session_bytes = Some(100);
        })
        .await;
    let response = app
        .client
        .post(app.url("/model"))
        .bearer_auth("first")
        .json(&json!({ "model_name": "bounded", "model_version": "v1", "meta": { "library": "keras" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let create = |token: &'static str, length: u64| {
        app.client
            .post(app.url("/uploads"))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", length.to_string())
            .header(
                "upload-metadata",
                metadata(&[
                    ("name", "bounded"),
                    ("version", "v1"),
                    ("filename", "m.bin"),
                ]),
            )
            .send()
    };
    let list = |token: &'static str| {
        app.client
            .get(app.url("/uploads"))
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .send()
    };
    let mut locations = Vec::new();
    for length in [10, 20, 30] {
        let created = create("first", length).await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        locations.push(created.headers()["location"].to_str().unwrap().to_owned());
    }
    let refused = create("first", 40).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["tus-resumable"], "1.0.0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_UPLOAD_SESSIONS", "{body}");
    // The limit is per token.
    let other = create("second", 50).await.unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    // So is the limit on the bytes the sessions announce: 50 + 51 > 100.
    let over = create("second", 51).await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_UPLOAD_SESSIONS", "{body}");
    assert_eq!(
        create("second", 50).await.unwrap().status(),
        StatusCode::CREATED
    );

    let listed: Value = list("first").await.unwrap().json().await.unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s["location"].as_str().unwrap())
            .collect::<Vec<_>>(),
        locations,
        "the first token's sessions, oldest first"
    );
    assert_eq!(listed[1]["length"], 20);
    assert_eq!(listed[1]["offset"], 0);
    assert_eq!(
        listed[1]["target"],
        json!({ "kind": "model", "name": "bounded", "version": "v1" })
    );
    assert_eq!(listed[1]["filename"], "m.bin");
    assert!(listed[1]["expiresAt"].is_string());
    let second: Value = list("second").await.unwrap().json().await.unwrap();
    assert_eq!(second.as_array().unwrap().len(), 2);
    assert_eq!(
        list("reader").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // Another token can neither see, append to nor cancel them: to it they do not exist.
    for (method, body) in [
        (reqwest::Method::HEAD, Vec::new()),
        (reqwest::Method::PATCH, b"abc".to_vec()),
        (reqwest::Method::DELETE, Vec::new()),
    ] {
        let foreign = app
            .client
            .request(method.clone(), app.url(&locations[0]))
            .bearer_auth("second")
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), StatusCode::NOT_FOUND, "{method}");
    }

    // Cancelling one makes room; so does finishing one.
    let cancelled = app
        .client
        .delete(app.url(&locations[0]))
        .bearer_auth("first")
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    let again = create("first", 40).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        create("first", 40).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let finished = app
        .client
        .patch(app.url(&locations[1]))
        .bearer_auth("first")
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(payload(20))
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::NO_CONTENT);
    let listed: Value = list("first").await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        create("first", 30).await.unwrap().status(),
        StatusCode::CREATED
    );
}
