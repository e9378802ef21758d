//! The binary as operators run it: start-up, signals, crashes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::ServerProcess;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

async fn gql(base: &str, query: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `condition` holds, for at most 30 s; says whether it did.
async fn eventually(condition: impl AsyncFnMut() -> bool) -> bool {
    common::eventually(Duration::from_secs(30), condition).await
}

/// Uploads being staged in an embedded store's data directory.
fn staged_uploads(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("tmp")).map_or(0, |entries| entries.count())
}

/// Starts an upload of `first` to service `id` whose remaining bytes are sent through the returned channel.
fn slow_upload(
    base: &str,
    id: &str,
    first: Vec<u8>,
) -> (
    mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let body = futures_util::stream::once(async move { first })
        .chain(rest)
        .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)));
    let form = testkit::graphql::files_form(
        &format!(
            "mutation($file: Upload!) {{ uploadServiceFile(id: \"{id}\", file: $file) {{ file {{ size sha256 }} }} }}"
        ),
        json!({}),
        vec![(
            "file".into(),
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body)).file_name("big.zip"),
        )],
    );
    let base = base.to_owned();
    let request = tokio::spawn(async move {
        testkit::graphql::post_upload(&reqwest::Client::new(), &base, form)
            .send()
            .await
    });
    (tx, request)
}

#[tokio::test]
async fn sigterm_lets_in_flight_uploads_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let base = server.base.clone();
    gql(
        &base,
        "mutation { createService(input: {id: \"svc\"}) { id } }",
    )
    .await;

    let data = common::bytes(2_000_000, 1);
    let (tx, upload) = slow_upload(&base, "svc", data[..1_000_000].to_vec());
    assert!(
        eventually(async || staged_uploads(dir.path()) == 1).await,
        "the upload is being staged"
    );
    server.signal("TERM");
    assert!(
        eventually(async || reqwest::get(format!("{base}/healthz")).await.is_err()).await,
        "after SIGTERM the server accepts no new connections"
    );
    tx.send(data[1_000_000..].to_vec()).await.unwrap();
    drop(tx);
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["uploadServiceFile"]["file"]["sha256"],
        common::sha256_hex(&data),
        "{body}"
    );
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "a clean exit"
    );

    let restarted = ServerProcess::start(dir.path(), &[]);
    let downloaded = reqwest::get(format!("{}/service/svc", restarted.base))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        downloaded.as_ref(),
        data.as_slice(),
        "the upload that finished during shutdown is stored"
    );
}

#[tokio::test]
async fn sigkill_during_an_upload_keeps_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let base = server.base.clone();
    gql(
        &base,
        "mutation { createService(input: {id: \"svc\"}) { id } }",
    )
    .await;
    let previous = common::bytes(300_000, 2);
    let (tx, upload) = slow_upload(&base, "svc", previous.clone());
    drop(tx);
    assert_eq!(upload.await.unwrap().unwrap().status(), 200);

    let (tx, upload) = slow_upload(&base, "svc", common::bytes(3_000_000, 3));
    let staging = dir.path().join("tmp");
    assert!(
        eventually(async || staged_uploads(dir.path()) == 1).await,
        "the upload is being staged"
    );
    server.signal("KILL");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        None,
        "killed by the signal"
    );
    drop(tx);
    assert!(
        upload.await.unwrap().is_err(),
        "the client sees the connection break"
    );

    let restarted = ServerProcess::start(dir.path(), &[]);
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "start-up removed the partial upload"
    );
    let meta = gql(
        &restarted.base,
        "{ service(id: \"svc\") { file { size sha256 } } }",
    )
    .await;
    assert_eq!(
        meta["data"]["service"]["file"],
        json!({"size": 300_000, "sha256": common::sha256_hex(&previous)})
    );
    let downloaded = reqwest::get(format!("{}/service/svc", restarted.base))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.as_ref(), previous.as_slice());
}

#[test]
fn schema_subcommand_prints_the_committed_schema() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_component-repository"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(output.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), committed);
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_component-repository"))
        .args(["--max-upload-size", "lots"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-upload-size"), "{stderr}");
    // Upload sessions that would expire as they start, or stay for a year, and no sessions at all.
    for (flag, value, says) in [
        ("--upload-session-ttl", "0s", "at least 1s"),
        ("--upload-session-ttl", "365d", "at most 30d"),
        ("--max-upload-sessions", "0", "--max-upload-sessions"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_component-repository"))
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{flag} {value}: {stderr}"
        );
    }
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--write-tokens",
            "tok-write-5ecret",
            "--read-tokens",
            "tok-read-5ecret",
            "--mongodb-uri",
            "mongodb://admin:pw-5ecret@db-0:27017/",
            "--log-level",
            "debug",
        ],
    );
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", server.base))
        .bearer_auth("tok-write-5ecret")
        .json(&json!({ "query": "mutation { createService(input: {id: \"svc\"}) { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(10));
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains("1 write and 1 read tokens"),
        "the log says how many tokens: {log}"
    );
    assert!(log.contains("mongodb://***@db-0:27017/"), "{log}");
    assert!(!log.contains("5ecret"), "a secret was logged:\n{log}");
}

/// An idle `/events` subscriber never ends its stream by itself: on SIGTERM the server ends it at once and exits
/// well before the grace period. The feed's id is kept with the data across the restart.
#[tokio::test]
async fn sigterm_ends_idle_event_streams_without_waiting_out_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(60);
    let mut server = ServerProcess::start(dir.path(), &["--shutdown-grace-secs", "60"]);
    let base = server.base.clone();
    let feed_id = gql(&base, "{ feedId }").await["data"]["feedId"].clone();
    assert!(feed_id.is_string(), "{feed_id}");
    let response = reqwest::get(format!("{base}/events")).await.unwrap();
    // The headers arrived: the stream is open, and idle from here on.
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["feed-id"], feed_id.as_str().unwrap());
    let mut body = response.bytes_stream();

    let stopping = Instant::now();
    server.signal("TERM");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended when shutdown began");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let took = stopping.elapsed();
    assert!(
        took < grace / 6,
        "exited after {took:?}, not after the grace period"
    );

    let restarted = ServerProcess::start(dir.path(), &[]);
    assert_eq!(
        gql(&restarted.base, "{ feedId }").await["data"]["feedId"],
        feed_id,
        "the feed keeps its id across restarts"
    );
}
